//! A small chat backend embedding Roster: named users are listed, anonymous viewers are
//! counted, messages are broadcast, and a second tab of the same user takes the slot over.
//!
//! `cargo run --example embedded_chat`

use roster::core::{Config, MetaValue, NodeName};
use roster::{ConnEvent, JoinRequest, Node, NodeOptions, Session};
use std::time::Duration;

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
    let node = Node::start(NodeOptions::for_node(config, NodeName::from("chat")).data_dir(data_dir)).await?;

    let mut alice =
        node.join(JoinRequest::user("alice", "room:lobby").tab("alice-laptop").meta("name", named("Alice"))).await?;
    let _bob = node.join(JoinRequest::user("bob", "room:lobby").tab("bob-phone").meta("name", named("Bob"))).await?;
    let _viewer1 = node.join(JoinRequest::anonymous("room:lobby")).await?;
    let _viewer2 = node.join(JoinRequest::anonymous("room:lobby")).await?;
    println!("alice, bob and two anonymous viewers are in room:lobby");
    print_room(&node).await;

    _bob.push("message", named("hello from bob")).await?;
    if let ConnEvent::Broadcast { from, event, body, .. } = next_message(&mut alice).await {
        println!("alice received {event} from {from}: {body:?}");
    }

    println!("alice opens a second tab");
    let _alice_tab2 =
        node.join(JoinRequest::user("alice", "room:lobby").tab("alice-tab-2").meta("name", named("Alice"))).await?;
    if let ConnEvent::Revoked { reason, .. } = next_message(&mut alice).await {
        println!("alice's first tab was told: slot_revoked ({reason})");
    }
    print_room(&node).await;
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
