//! A small chat backend embedding Roster: named users are listed, anonymous viewers are
//! counted, messages are broadcast, and a second tab of the same user takes the slot over.
//!
//! Each signed-in user also has a *user actor* (`ChatUser`) on its home node that counts the
//! messages it has not read: the backend casts every message to each member's actor, and a
//! member reading the room resets its counter. `node.user(id)` reaches it from any node.
//!
//! `cargo run --example embedded_chat`

use roster::core::{Config, MetaValue, NodeName};
use roster::{ConnEvent, JoinRequest, Node, NodeOptions, Session, UserBehaviour, UserCtx};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A chat user's actor: an unread counter.
struct ChatUser;

#[derive(Serialize, Deserialize)]
enum ChatMsg {
    /// A message arrived in one of the user's rooms.
    Arrived { from: String },
    /// The user read everything: how many were unread.
    Read,
    /// How many are unread, without reading.
    Unread,
}

impl UserBehaviour for ChatUser {
    /// Unread messages.
    type State = u64;
    type Msg = ChatMsg;
    type Reply = u64;

    fn start(&self, _ctx: &UserCtx, handed_over: Option<u64>) -> u64 {
        handed_over.unwrap_or(0)
    }

    async fn handle(&self, ctx: &UserCtx, unread: &mut u64, msg: ChatMsg) -> u64 {
        match msg {
            // One's own messages are never unread.
            ChatMsg::Arrived { from } if from == ctx.user().as_str() => {}
            ChatMsg::Arrived { .. } => *unread += 1,
            ChatMsg::Read => return std::mem::take(unread),
            ChatMsg::Unread => {}
        }
        *unread
    }
}

/// Send `text` as `from` in the room, and tell every signed-in member's actor.
async fn post(node: &Node, from: &Session, sender: &str, text: &str) -> Result<(), Box<dyn std::error::Error>> {
    from.push("message", named(text)).await?;
    let list = node.presence("room:lobby").current().await;
    for member in list.keys().filter(|k| *k != "anonymous") {
        node.user(member).cast::<ChatUser>(ChatMsg::Arrived { from: sender.to_owned() }).await?;
    }
    Ok(())
}

const CONFIG: &str = r#"
[[cluster.nodes]]
name = "chat"
cluster_addr = "127.0.0.1:4370"
http_addr = "127.0.0.1:4000"

[[policy]]
topic = "room:*"
on_conflict = "takeover"   # newest tab wins
anonymous = "count"
"#;

fn named(name: &str) -> MetaValue {
    MetaValue::Str(name.to_owned())
}

/// The next event that is not presence (the list and its diffs keep a UI current; here we only
/// print the list when we want it).
async fn next_message(s: &mut Session) -> ConnEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), s.next_event()).await;
        match event.expect("an event within 5 s").expect("the session is open") {
            ConnEvent::State { .. } | ConnEvent::Diff { .. } => continue,
            other => return other,
        }
    }
}

async fn print_room(node: &Node) {
    let list = node.presence("room:lobby").current().await;
    println!("  presence: {}", serde_json::to_string(&*list).expect("a list serializes"));
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_toml_str(CONFIG)?;
    let data_dir = std::env::temp_dir().join("roster-embedded-chat");
    let opts = NodeOptions::for_node(config, NodeName::from("chat")).data_dir(data_dir).users(ChatUser);
    let node = Node::start(opts).await?;

    let mut alice =
        node.join(JoinRequest::user("alice", "room:lobby").tab("alice-laptop").meta("name", named("Alice"))).await?;
    let _bob = node.join(JoinRequest::user("bob", "room:lobby").tab("bob-phone").meta("name", named("Bob"))).await?;
    let _viewer1 = node.join(JoinRequest::anonymous("room:lobby")).await?;
    let _viewer2 = node.join(JoinRequest::anonymous("room:lobby")).await?;
    println!("alice, bob and two anonymous viewers are in room:lobby");
    print_room(&node).await;

    post(&node, &_bob, "bob", "hello from bob").await?;
    if let ConnEvent::Broadcast { from, event, body, .. } = next_message(&mut alice).await {
        println!("alice received {event} from {from}: {body:?}");
    }
    post(&node, &_bob, "bob", "anyone there?").await?;
    let _ = next_message(&mut alice).await;
    let unread = node.user("alice").call::<ChatUser>(ChatMsg::Unread).await?;
    let bobs = node.user("bob").call::<ChatUser>(ChatMsg::Unread).await?;
    println!("unread: alice {unread}, bob {bobs} (his own messages do not count)");

    println!("alice opens a second tab");
    let _alice_tab2 =
        node.join(JoinRequest::user("alice", "room:lobby").tab("alice-tab-2").meta("name", named("Alice"))).await?;
    if let ConnEvent::Revoked { reason, .. } = next_message(&mut alice).await {
        println!("alice's first tab was told: slot_revoked ({reason})");
    }
    print_room(&node).await;
    // The same actor went on through the takeover: alice's counter is still there.
    let read = node.user("alice").call::<ChatUser>(ChatMsg::Read).await?;
    let after = node.user("alice").call::<ChatUser>(ChatMsg::Unread).await?;
    println!("alice reads the room in her new tab: {read} unread before, {after} after");
    let list = node.presence("room:lobby").current().await;
    let json = serde_json::to_value(&*list)?;
    println!(
        "named users: {}, alice's metas: {}, anonymous count: {}",
        json.as_object().map_or(0, |o| o.keys().filter(|k| *k != "anonymous").count()),
        json["alice"]["metas"].as_array().map_or(0, Vec::len),
        json["anonymous"]["metas"][0]["count"]
    );
    node.shutdown().await;
    Ok(())
}
