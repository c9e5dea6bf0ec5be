//! The embedding API on one node: every slot policy outcome, connection ends of every kind,
//! presence lists and diffs, and no leaks after many cycles. Events are awaited, never slept for.

mod support;

use roster_core::{MetaValue, SlotToken};
use roster_runtime::{ConnEvent, JoinError, JoinRequest, PushError};
use std::collections::BTreeMap;
use support::*;

const TAKEOVER: &str = "[[policy]]\ntopic = \"*\"\n";

#[tokio::test]
async fn takeover_revokes_the_older_session_and_the_list_shows_one_meta() {
    let node = start(config(TAKEOVER)).await;
    let mut laptop = node.join(JoinRequest::user("alice", "room:1").tab("laptop")).await.unwrap();
    let phone = node.join(JoinRequest::user("alice", "room:1").tab("phone")).await.unwrap();
    assert_eq!(
        next_non_diff(&mut laptop).await,
        ConnEvent::Revoked { topic: "room:1".into(), reason: "logged_in_elsewhere".into() }
    );
    assert!(phone.token().unwrap() > laptop.token().unwrap());
    let list = node.presence("room:1").current().await;
    assert_eq!(shape(&list), BTreeMap::from([("alice".to_owned(), 1)]));
    node.shutdown().await;
}

#[tokio::test]
async fn reject_answers_already_joined() {
    let node = start(config("[[policy]]\ntopic = \"call:*\"\non_conflict = \"reject\"\n")).await;
    let _first = node.join(JoinRequest::user("bob", "call:7").tab("a")).await.unwrap();
    let second = node.join(JoinRequest::user("bob", "call:7").tab("b")).await;
    assert_eq!(second.err(), Some(JoinError::AlreadyJoined));
    node.shutdown().await;
}

#[tokio::test]
async fn wait_grants_when_the_holder_leaves_in_time() {
    let node = start(config("[[policy]]\ntopic = \"*\"\non_conflict = \"wait\"\nwait_ms = 5000\n")).await;
    let first = node.join(JoinRequest::user("carol", "room:1").tab("a")).await.unwrap();
    let waiter = {
        let node = node.clone();
        tokio::spawn(async move { node.join(JoinRequest::user("carol", "room:1").tab("b")).await })
    };
    // The waiter is queued at the home before the holder leaves.
    wait_until(|| async { node.status().await.unwrap().counts.waiting_joins == 1 }).await;
    first.leave();
    let second = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap().expect("granted after the leave");
    assert!(second.token().is_some());
    node.shutdown().await;
}

#[tokio::test]
async fn wait_rejects_after_wait_ms() {
    let node = start(config("[[policy]]\ntopic = \"*\"\non_conflict = \"wait\"\nwait_ms = 300\n")).await;
    let _first = node.join(JoinRequest::user("dave", "room:1").tab("a")).await.unwrap();
    let started = std::time::Instant::now();
    let second = node.join(JoinRequest::user("dave", "room:1").tab("b")).await;
    assert_eq!(second.err(), Some(JoinError::WaitTimedOut));
    // The node's clock counts whole milliseconds (a join at 10.9 ms reads 10), so a wait of
    // 300 of them can end 299.x ms of real time after the join was sent.
    assert!(started.elapsed() >= std::time::Duration::from_millis(299), "it waited wait_ms first");
    node.shutdown().await;
}

#[tokio::test]
async fn a_join_with_the_holders_tab_resumes_at_once() {
    let node = start(config("[[policy]]\ntopic = \"*\"\non_conflict = \"reject\"\n")).await;
    let mut old = node.join(JoinRequest::user("erin", "room:1").tab("t1")).await.unwrap();
    let new = node.join(JoinRequest::user("erin", "room:1").tab("t1")).await.expect("a resume, not a second tab");
    assert!(new.token() > old.token());
    assert_eq!(next_non_diff(&mut old).await, ConnEvent::Closed { topic: "room:1".into() });
    node.shutdown().await;
}

#[tokio::test]
async fn reserve_ms_keeps_the_slot_for_the_same_tab_after_an_unclean_drop() {
    let node = start(config("[[policy]]\ntopic = \"*\"\non_conflict = \"reject\"\nreserve_ms = 60000\n")).await;
    let s = node.join(JoinRequest::user("fay", "room:1").tab("t1")).await.unwrap();
    let mut sub = node.presence("room:1").subscribe();
    next_feed(&mut sub).await; // its presence_state: a leave after it is a diff
    s.disconnect();
    // The presence leaves at once; the slot stays reserved.
    let diff = next_diff(&mut sub).await;
    assert!(serde_json::to_value(&*diff).unwrap()["leaves"]["fay"].is_object());
    let other = node.join(JoinRequest::user("fay", "room:1").tab("t2")).await;
    assert_eq!(other.err(), Some(JoinError::AlreadyJoined), "another tab meets the reservation");
    let back = node.join(JoinRequest::user("fay", "room:1").tab("t1")).await;
    assert!(back.is_ok(), "the same tab gets its slot back");
    node.shutdown().await;
}

#[tokio::test]
async fn exempt_roles_skip_the_slot_check() {
    let node = start(config("[[policy]]\ntopic = \"*\"\non_conflict = \"reject\"\nexempt_roles = [\"admin\"]\n")).await;
    let _a = node.join(JoinRequest::user("gus", "room:1").tab("a").role("admin")).await.unwrap();
    let _b = node.join(JoinRequest::user("gus", "room:1").tab("b").role("admin")).await.unwrap();
    assert_eq!(shape(&*node.presence("room:1").current().await), BTreeMap::from([("gus".to_owned(), 2)]));
    node.shutdown().await;
}

#[tokio::test]
async fn anonymous_viewers_are_counted_and_cannot_push() {
    let node = start(config(TAKEOVER)).await;
    let v1 = node.join(JoinRequest::anonymous("room:1")).await.unwrap();
    let _v2 = node.join(JoinRequest::anonymous("room:1")).await.unwrap();
    assert_eq!(v1.token(), None);
    let list = node.presence("room:1").current().await;
    let json = serde_json::to_value(&*list).unwrap();
    assert_eq!(json["anonymous"]["metas"][0]["count"], 2);
    assert_eq!(v1.push("shout", MetaValue::Str("hi".into())).await, Err(PushError::Unauthorized));
    assert_eq!(v1.update_meta(Default::default()).await, Err(PushError::Unauthorized));
    node.shutdown().await;
}

#[tokio::test]
async fn a_counted_room_shows_the_number_of_distinct_users_and_its_diffs_move_the_count() {
    let node =
        start(config("[[policy]]\ntopic = \"stream:*\"\npresence = \"count\"\nexempt_roles = [\"admin\"]\n")).await;
    let _a = node.join(JoinRequest::user("ann", "stream:1").tab("a")).await.unwrap();
    let _a2 = node.join(JoinRequest::user("ann", "stream:1").tab("b").role("admin")).await.unwrap();
    let b = node.join(JoinRequest::user("ben", "stream:1").tab("a")).await.unwrap();
    let _v = node.join(JoinRequest::anonymous("stream:1")).await.unwrap();
    let mut sub = node.presence("stream:1").subscribe();
    let roster_runtime::PresenceFeed::State(state) = next_feed(&mut sub).await else { panic!("a state first") };
    assert_eq!(
        serde_json::to_value(&*state).unwrap(),
        serde_json::json!({
            "anonymous": {"metas": [{"count": 1, "phx_ref": "anonymous:1"}]},
            "users": {"metas": [{"count": 2, "phx_ref": "users:2"}]},
        })
    );
    b.leave();
    let diff = serde_json::to_value(&*next_diff(&mut sub).await).unwrap();
    assert_eq!(
        diff,
        serde_json::json!({
            "joins": {"users": {"metas": [{"count": 1, "phx_ref": "users:1"}]}},
            "leaves": {"users": {"metas": [{"count": 2, "phx_ref": "users:2"}]}},
        })
    );
    node.shutdown().await;
}

#[tokio::test]
async fn anonymous_is_refused_where_the_policy_denies_it() {
    let node = start(config("[[policy]]\ntopic = \"*\"\nanonymous = \"deny\"\n")).await;
    assert_eq!(node.join(JoinRequest::anonymous("room:1")).await.err(), Some(JoinError::Unauthorized));
    node.shutdown().await;
}

#[tokio::test]
async fn max_slots_two_admits_exactly_two() {
    let node = start(config("[[policy]]\ntopic = \"*\"\non_conflict = \"reject\"\nmax_slots = 2\n")).await;
    let _a = node.join(JoinRequest::user("hal", "room:1").tab("a")).await.unwrap();
    let _b = node.join(JoinRequest::user("hal", "room:1").tab("b")).await.unwrap();
    let c = node.join(JoinRequest::user("hal", "room:1").tab("c")).await;
    assert_eq!(c.err(), Some(JoinError::AlreadyJoined));
    node.shutdown().await;
}

/// A connection task joins `room:1` as ivy, then `end` makes it end without closing: the
/// Gateway's supervision must untrack the presence and free the slot.
async fn freed_after(panics: bool) {
    let node = start(config("[[policy]]\ntopic = \"*\"\non_conflict = \"reject\"\n")).await;
    let (joined_tx, joined) = tokio::sync::oneshot::channel();
    let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
    let task = node
        .spawn_connection(Some("ivy".into()), None, 64, move |conn| async move {
            let joined = conn.join("room:1", Some("a".into()), Default::default()).await;
            let _ = joined_tx.send(joined.is_ok());
            let _ = go.await;
            if panics {
                panic!("a bug in a connection task");
            }
            std::future::pending::<()>().await;
        })
        .unwrap();
    assert!(tokio::time::timeout(WAIT, joined).await.unwrap().unwrap(), "joined");
    let mut sub = node.presence("room:1").subscribe();
    assert!(matches!(next_feed(&mut sub).await, roster_runtime::PresenceFeed::State(s) if s.len() == 1));
    if panics {
        go_tx.send(()).unwrap();
    } else {
        task.abort();
    }
    let diff = next_diff(&mut sub).await;
    assert!(serde_json::to_value(&*diff).unwrap()["leaves"]["ivy"].is_object(), "untracked");
    let again = node.join(JoinRequest::user("ivy", "room:1").tab("b")).await;
    assert!(again.is_ok(), "the slot is free: {:?}", again.err());
    assert_eq!(node.stats().await.unwrap().presence_entries, 1);
    node.shutdown().await;
}

#[tokio::test]
async fn a_panicking_connection_task_untracks_and_frees_the_slot() {
    freed_after(true).await;
}

#[tokio::test]
async fn an_aborted_connection_task_untracks_and_frees_the_slot() {
    freed_after(false).await;
}

#[tokio::test]
async fn a_dropped_session_untracks_and_frees_the_slot() {
    let node = start(config("[[policy]]\ntopic = \"*\"\non_conflict = \"reject\"\n")).await;
    let s = node.join(JoinRequest::user("jo", "room:1").tab("a")).await.unwrap();
    let mut sub = node.presence("room:1").subscribe();
    next_feed(&mut sub).await;
    drop(s);
    next_diff(&mut sub).await;
    assert!(node.join(JoinRequest::user("jo", "room:1").tab("b")).await.is_ok());
    node.shutdown().await;
}

#[tokio::test]
async fn tokens_validate_while_held_and_not_after() {
    let node = start(config(TAKEOVER)).await;
    let s = node.join(JoinRequest::user("kim", "room:1").tab("a")).await.unwrap();
    let token = s.token().unwrap();
    assert_eq!(node.validate(&"kim".into(), &"room:1".into(), token).await, Some(true));
    let stale = SlotToken { epoch: token.epoch, generation: token.generation + 100 };
    assert_eq!(node.validate(&"kim".into(), &"room:1".into(), stale).await, Some(false));
    let mut sub = node.presence("room:1").subscribe();
    next_feed(&mut sub).await;
    s.leave();
    next_diff(&mut sub).await;
    assert_eq!(node.validate(&"kim".into(), &"room:1".into(), token).await, Some(false));
    node.shutdown().await;
}

#[tokio::test]
async fn kick_revokes_with_the_given_reason() {
    let node = start(config(TAKEOVER)).await;
    let mut s = node.join(JoinRequest::user("lee", "room:1").tab("a")).await.unwrap();
    node.kick("lee".into(), None, "banned");
    assert_eq!(next_non_diff(&mut s).await, ConnEvent::Revoked { topic: "room:1".into(), reason: "banned".into() });
    node.shutdown().await;
}

#[tokio::test]
async fn subscribers_diffs_applied_in_order_equal_the_list_and_a_burst_is_coalesced() {
    let node = start(config("[[policy]]\ntopic = \"*\"\nmax_slots = 1\n")).await;
    let mut sub = node.presence("lobby").subscribe();
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let node = node.clone();
        burst.spawn(async move { node.join(JoinRequest::user(format!("u{i}"), "lobby").tab("t")).await.unwrap() });
    }
    let mut sessions = Vec::new();
    while let Some(s) = burst.join_next().await {
        sessions.push(s.unwrap());
    }
    // Some leave, one updates its meta.
    for s in sessions.drain(..100) {
        s.leave();
    }
    sessions[0].update_meta([("mood".to_owned(), MetaValue::Str("happy".into()))].into()).await.unwrap();
    // Leaves are asynchronous: the list to compare with is the one after all of them.
    wait_until(|| async { node.stats().await.unwrap().presence_entries == 900 }).await;
    let want = refs_of(&*node.presence("lobby").current().await);
    let mut view = BTreeMap::new();
    let mut frames = 0;
    while refs_of_view(&view) != want {
        let item = tokio::time::timeout(WAIT, sub.next()).await.expect("diffs until the view matches").unwrap();
        frames += 1;
        apply_feed(&mut view, &item);
    }
    assert_eq!(want.len(), 900);
    assert!(frames < 200, "1,000 joins and 100 leaves arrived in {frames} frames");
    node.shutdown().await;
}

fn refs_of_view(view: &BTreeMap<String, Vec<BTreeMap<String, MetaValue>>>) -> BTreeMap<String, Vec<String>> {
    view.iter()
        .map(|(k, metas)| {
            let mut refs: Vec<String> = metas
                .iter()
                .filter_map(|m| match m.get("phx_ref") {
                    Some(MetaValue::Str(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            refs.sort();
            (k.clone(), refs)
        })
        .collect()
}

#[tokio::test]
async fn the_published_list_catches_up_with_the_replica_without_asking_the_node() {
    let node = start(config(TAKEOVER)).await;
    let _a = node.join(JoinRequest::user("pam", "room:pub").tab("a")).await.unwrap();
    let _b = node.join(JoinRequest::user("quinn", "room:pub").tab("b")).await.unwrap();
    let presence = node.presence("room:pub");
    wait_until(|| async { presence.list().len() == 2 }).await;
    assert_eq!(*presence.list(), *presence.current().await);
    node.shutdown().await;
}
