//! User actors on one node, through the embedding API: an application's behaviour gets its
//! user's sessions as events, its own messages by call and cast, and kicks; a user with no
//! session is not active; a panic fails one activation, which starts again fresh; an
//! activation past its lease runs nothing. Several nodes (remote calls, handover, failover,
//! cuts) are `crates/roster-server/tests/user_actors.rs`; the rules are the simulation's.

mod support;

use roster_core::{ActivationEnd, NodeName, SessionEnd, SessionStart, SessionState, SessionView, SlotToken};
use roster_runtime::{
    ConnEvent, JoinRequest, Node, NodeOptions, UserBehaviour, UserCtx, UserError, DEFAULT_CALL_TIMEOUT,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// What the test behaviour saw, in order, as text.
type Journal = Arc<Mutex<Vec<String>>>;

/// A player: counts messages, remembers the sessions it was told of, panics on request.
struct Player {
    journal: Journal,
}

#[derive(Default, Serialize, Deserialize)]
struct PlayerState {
    counter: u64,
    started_from: Option<u64>,
}

#[derive(Serialize, Deserialize)]
enum PlayerMsg {
    Add(u64),
    Get,
    Sessions,
    Panic,
    KickFirst(String),
    KickAll(String),
    Slow(u64),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum PlayerReply {
    Counter(u64),
    Sessions(Vec<SessionView>),
    Token(SlotToken),
    Kicked(bool),
}

impl Player {
    fn log(&self, line: String) {
        self.journal.lock().unwrap().push(line);
    }
}

impl UserBehaviour for Player {
    type State = PlayerState;
    type Msg = PlayerMsg;
    type Reply = PlayerReply;

    fn start(&self, ctx: &UserCtx, handed_over: Option<PlayerState>) -> PlayerState {
        self.log(format!("start {} sessions={} handed={}", ctx.user(), ctx.sessions().len(), handed_over.is_some()));
        let state = handed_over.unwrap_or_default();
        PlayerState { started_from: Some(state.counter), ..state }
    }

    fn session_started(&self, ctx: &UserCtx, _state: &mut PlayerState, session: &SessionView, how: SessionStart) {
        self.log(format!("started {} {how:?} tab={:?}", ctx.user(), session.tab));
    }

    fn session_changed(&self, ctx: &UserCtx, _state: &mut PlayerState, session: &SessionView) {
        self.log(format!("changed {} {}", ctx.user(), session.state.as_str()));
    }

    fn session_ended(&self, ctx: &UserCtx, _state: &mut PlayerState, _session: &SessionView, end: &SessionEnd) {
        self.log(format!("ended {} {end:?}", ctx.user()));
    }

    async fn handle(&self, ctx: &UserCtx, state: &mut PlayerState, msg: PlayerMsg) -> PlayerReply {
        match msg {
            PlayerMsg::Add(n) => {
                state.counter += n;
                PlayerReply::Counter(state.counter)
            }
            PlayerMsg::Get => PlayerReply::Counter(state.counter),
            PlayerMsg::Sessions => PlayerReply::Sessions(ctx.sessions().to_vec()),
            PlayerMsg::Panic => panic!("the application's bug"),
            PlayerMsg::KickFirst(reason) => {
                if let Some(s) = ctx.sessions().first() {
                    ctx.kick(s, reason);
                }
                PlayerReply::Token(ctx.token())
            }
            PlayerMsg::KickAll(reason) => PlayerReply::Kicked(ctx.kick_all(reason)),
            PlayerMsg::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                PlayerReply::Token(ctx.token())
            }
        }
    }

    fn stop(&self, ctx: &UserCtx, _state: &mut PlayerState, why: &ActivationEnd) {
        self.log(format!("stop {} {}", ctx.user(), why.as_str()));
    }
}

async fn start_player(policies: &str) -> (Node, Journal) {
    let journal: Journal = Arc::default();
    let dir = std::env::temp_dir().join(format!("roster-test-{}", uuid::Uuid::new_v4()));
    let opts = NodeOptions::for_node(config(policies), NodeName::from("local"))
        .data_dir(dir)
        .users(Player { journal: journal.clone() });
    let node = Node::start(opts).await.expect("start");
    assert!(node.ready(WAIT).await);
    (node, journal)
}

async fn journal_has(journal: &Journal, line: &str) {
    let j = journal.clone();
    let line = line.to_owned();
    wait_until(move || {
        let j = j.clone();
        let line = line.clone();
        async move { j.lock().unwrap().contains(&line) }
    })
    .await;
}

const TAKEOVER: &str = "[[policy]]\ntopic = \"*\"\n";

#[tokio::test]
async fn a_users_first_join_starts_its_actor_which_counts_calls_and_casts_and_stops_when_idle() {
    let (node, journal) = start_player(TAKEOVER).await;
    let alice = node.user("alice");
    assert_eq!(alice.call::<Player>(PlayerMsg::Get).await.err(), Some(UserError::NotActive), "offline: not active");
    assert_eq!(node.stats().await.unwrap().user_activations, 0, "a message does not activate a user");

    let session = node.join(JoinRequest::user("alice", "room:1").tab("t1")).await.unwrap();
    assert_eq!(alice.call::<Player>(PlayerMsg::Add(2)).await.unwrap(), PlayerReply::Counter(2));
    alice.cast::<Player>(PlayerMsg::Add(3)).await.unwrap();
    assert_eq!(alice.call::<Player>(PlayerMsg::Get).await.unwrap(), PlayerReply::Counter(5), "casts run in order");
    let info = alice.info().await.unwrap();
    assert_eq!((info.home.as_str(), info.sessions.len()), ("local", 1));
    assert_eq!(info.sessions[0].token, session.token().unwrap());
    let activation = info.activation.expect("alice is active");
    assert_eq!(node.stats().await.unwrap().user_activations, 1);
    journal_has(&journal, "start alice sessions=1 handed=false").await;

    session.leave();
    journal_has(&journal, "ended alice Closed { clean: true }").await;
    journal_has(&journal, "stop alice idle").await;
    assert_eq!(alice.call::<Player>(PlayerMsg::Get).await.err(), Some(UserError::NotActive));
    assert_eq!(alice.info().await.unwrap().activation, None);

    // Back: a fresh activation, a larger token, the counter from zero.
    let _again = node.join(JoinRequest::user("alice", "room:1").tab("t1")).await.unwrap();
    assert_eq!(alice.call::<Player>(PlayerMsg::Get).await.unwrap(), PlayerReply::Counter(0));
    assert!(alice.info().await.unwrap().activation.unwrap() > activation);
    node.shutdown().await;
}

#[tokio::test]
async fn the_actor_hears_of_every_session_start_and_end_and_keeps_the_list() {
    let (node, journal) = start_player("[[policy]]\ntopic = \"*\"\nmax_slots = 2\non_conflict = \"takeover\"\n").await;
    let bob = node.user("bob");
    let laptop = node.join(JoinRequest::user("bob", "room:1").tab("laptop")).await.unwrap();
    let phone = node.join(JoinRequest::user("bob", "room:1").tab("phone")).await.unwrap();
    journal_has(&journal, "started bob Granted tab=Tab(TabId(\"phone\"))").await;
    let PlayerReply::Sessions(list) = bob.call::<Player>(PlayerMsg::Sessions).await.unwrap() else { panic!() };
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|s| s.state == SessionState::Held && !s.in_doubt));

    // A third tab takes over the oldest (the laptop).
    let mut laptop = laptop;
    let _tablet = node.join(JoinRequest::user("bob", "room:1").tab("tablet")).await.unwrap();
    assert_eq!(
        next_non_diff(&mut laptop).await,
        ConnEvent::Revoked { topic: "room:1".into(), reason: "logged_in_elsewhere".into() }
    );
    journal_has(&journal, "changed bob revoking").await;
    journal_has(&journal, "ended bob Revoked { reason: \"logged_in_elsewhere\" }").await;
    journal_has(&journal, "started bob Granted tab=Tab(TabId(\"tablet\"))").await;

    // The phone's browser reconnects the same tab: a resume.
    let _phone2 = node.join(JoinRequest::user("bob", "room:1").tab("phone")).await.unwrap();
    journal_has(&journal, "started bob Resumed tab=Tab(TabId(\"phone\"))").await;
    journal_has(&journal, "ended bob Replaced").await;
    drop(phone);

    // The actor kicks one session itself.
    let PlayerReply::Sessions(list) = bob.call::<Player>(PlayerMsg::Sessions).await.unwrap() else { panic!() };
    assert_eq!(list.len(), 2, "{list:?}");
    bob.call::<Player>(PlayerMsg::KickFirst("cheating".into())).await.unwrap();
    journal_has(&journal, "ended bob Revoked { reason: \"cheating\" }").await;
    let info = bob.info().await.unwrap();
    assert_eq!(info.sessions.len(), 1, "one kicked, one left: {:?}", info.sessions);
    node.shutdown().await;
}

#[tokio::test]
async fn a_backend_kicks_one_session_and_the_actor_kicks_all_of_them_in_every_scope() {
    let (node, journal) = start_player(TAKEOVER).await;
    let jo = node.user("jo");
    // One slot per topic: three sessions in three scopes.
    let mut one = node.join(JoinRequest::user("jo", "room:1").tab("t")).await.unwrap();
    let mut two = node.join(JoinRequest::user("jo", "room:2").tab("t")).await.unwrap();
    let mut three = node.join(JoinRequest::user("jo", "room:3").tab("t")).await.unwrap();
    let info = jo.info().await.unwrap();
    assert_eq!(info.sessions.len(), 3, "{:?}", info.sessions);

    // From the backend: the session in room:2 only.
    let target =
        info.sessions.iter().find(|s| s.topic.as_ref().map(|t| t.as_str()) == Some("room:2")).expect("room:2").clone();
    jo.kick(&target, "muted");
    assert_eq!(next_non_diff(&mut two).await, ConnEvent::Revoked { topic: "room:2".into(), reason: "muted".into() });
    journal_has(&journal, "ended jo Revoked { reason: \"muted\" }").await;
    let mut left: Vec<Option<String>> =
        jo.info().await.unwrap().sessions.iter().map(|s| s.topic.as_ref().map(|t| t.as_str().to_owned())).collect();
    left.sort();
    assert_eq!(left, [Some("room:1".to_owned()), Some("room:3".to_owned())]);

    // From the actor itself: every session left, then it stops, idle.
    assert_eq!(jo.call::<Player>(PlayerMsg::KickAll("banned".into())).await.unwrap(), PlayerReply::Kicked(true));
    for (s, topic) in [(&mut one, "room:1"), (&mut three, "room:3")] {
        assert_eq!(next_non_diff(s).await, ConnEvent::Revoked { topic: topic.into(), reason: "banned".into() });
    }
    journal_has(&journal, "stop jo idle").await;
    let ended = journal.lock().unwrap().iter().filter(|l| *l == "ended jo Revoked { reason: \"banned\" }").count();
    assert_eq!(ended, 2);
    let info = jo.info().await.unwrap();
    assert_eq!((info.activation, info.sessions.len()), (None, 0));
    node.shutdown().await;
}

#[tokio::test]
async fn an_unclean_drop_is_told_apart_from_a_clean_close() {
    let (node, journal) = start_player(TAKEOVER).await;
    let s = node.join(JoinRequest::user("carl", "room:1").tab("t")).await.unwrap();
    s.disconnect();
    journal_has(&journal, "ended carl Closed { clean: false }").await;
    // A connection task that crashes (is aborted) ends its session uncleanly too.
    let (joined_tx, joined) = tokio::sync::oneshot::channel();
    let task = node
        .spawn_connection(Some("dora".into()), None, 64, move |conn| async move {
            let ok = conn.join("room:1", Some("t".into()), Default::default()).await.is_ok();
            let _ = joined_tx.send(ok);
            std::future::pending::<()>().await;
        })
        .unwrap();
    assert!(joined.await.unwrap(), "dora joined");
    journal_has(&journal, "start dora sessions=1 handed=false").await;
    task.abort();
    journal_has(&journal, "ended dora Closed { clean: false }").await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_panic_fails_the_call_and_a_fresh_actor_with_a_larger_token_follows() {
    let (node, journal) = start_player(TAKEOVER).await;
    let _s = node.join(JoinRequest::user("eve", "room:1").tab("t")).await.unwrap();
    let eve = node.user("eve");
    eve.call::<Player>(PlayerMsg::Add(7)).await.unwrap();
    let before = eve.info().await.unwrap().activation.unwrap();
    match eve.call::<Player>(PlayerMsg::Panic).await {
        Err(UserError::Failed(why)) => assert!(why.contains("panicked"), "{why}"),
        other => panic!("a panic fails the call: {other:?}"),
    }
    // The next call waits for the fresh activation (it is told to ask again meanwhile).
    assert_eq!(eve.call::<Player>(PlayerMsg::Get).await.unwrap(), PlayerReply::Counter(0), "fresh state");
    let after = eve.info().await.unwrap().activation.unwrap();
    assert!(after > before);
    let starts = journal.lock().unwrap().iter().filter(|l| l.starts_with("start eve")).count();
    assert_eq!(starts, 2);
    node.shutdown().await;
}

#[tokio::test]
async fn a_message_the_behaviour_cannot_decode_is_an_error_not_a_crash() {
    let (node, _journal) = start_player(TAKEOVER).await;
    let _s = node.join(JoinRequest::user("finn", "room:1").tab("t")).await.unwrap();
    // The default behaviour's message `()` is not a PlayerMsg.
    match node.user("finn").call::<roster_runtime::KeepSessions>(()).await {
        Err(UserError::Failed(why)) => assert!(why.contains("decode"), "{why}"),
        other => panic!("{other:?}"),
    }
    let reply = node.user("finn").call::<Player>(PlayerMsg::Add(1)).await.unwrap();
    assert_eq!(reply, PlayerReply::Counter(1), "the actor lives on");
    node.shutdown().await;
}

#[tokio::test]
async fn a_call_times_out_when_the_actor_is_busy_longer_than_the_timeout() {
    let (node, _journal) = start_player(TAKEOVER).await;
    let _s = node.join(JoinRequest::user("gil", "room:1").tab("t")).await.unwrap();
    let gil = node.user("gil").timeout(Duration::from_millis(200));
    let slow = gil.call::<Player>(PlayerMsg::Slow(1_000)).await;
    assert_eq!(slow.err(), Some(UserError::Timeout(Duration::from_millis(200))));
    assert_eq!(DEFAULT_CALL_TIMEOUT, Duration::from_secs(5));
    node.shutdown().await;
}

#[tokio::test]
async fn without_user_actors_nobody_is_active() {
    let dir = std::env::temp_dir().join(format!("roster-test-{}", uuid::Uuid::new_v4()));
    let opts = NodeOptions::for_node(config(TAKEOVER), NodeName::from("local")).data_dir(dir).without_user_actors();
    let node = Node::start(opts).await.unwrap();
    assert!(node.ready(WAIT).await);
    let _s = node.join(JoinRequest::user("hal", "room:1").tab("t")).await.unwrap();
    let info = node.user("hal").info().await.unwrap();
    assert_eq!((info.activation, info.sessions.len()), (None, 1), "the home still lists the sessions");
    assert_eq!(node.user("hal").call::<Player>(PlayerMsg::Get).await.err(), Some(UserError::NotActive));
    node.shutdown().await;
}

#[tokio::test]
async fn the_default_actor_keeps_the_sessions() {
    let node = start(config(TAKEOVER)).await;
    let _s = node.join(JoinRequest::user("ida", "room:1").tab("t")).await.unwrap();
    let ida = node.user("ida");
    ida.call::<roster_runtime::KeepSessions>(()).await.unwrap();
    let info = ida.info().await.unwrap();
    assert!(info.activation.is_some());
    assert_eq!(info.sessions.len(), 1);
    node.shutdown().await;
}
