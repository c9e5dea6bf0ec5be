//! Self-tests of the checker: synthetic histories, each clean or with one kind of violation,
//! and the exact verdict each must get.

use super::*;
use crate::chaos::history::{ListSnap, MetaObs, ViewSnap};

fn params() -> Params {
    Params {
        heartbeat_timeout_ms: 500,
        ping_ms: 1000,
        join_wait_ms: 5000,
        resume_bound_ms: 500,
        purge_bound_ms: 1000,
        stable_ms: 5000,
        margin_ms: 200,
    }
}

/// Two users in `room:1`: join 10 on socket 1 (node a, tab t1), join 20 on socket 2 (node
/// b); both acknowledged at 1100 and each sees both from 1200.
fn base() -> Vec<Event> {
    let mut h = Vec::new();
    for (socket, node, user, join) in [(1u32, "a", "u1", 10u32), (2, "b", "u2", 20)] {
        h.push(Event::Connected {
            at: 1000,
            socket,
            node: node.into(),
            user: Some(user.into()),
            role: "user".into(),
            tab: Some(format!("t{socket}")),
        });
        h.push(Event::Join {
            at: 1001,
            socket,
            join,
            topic: "room:1".into(),
            tab: Some(format!("t{socket}")),
            kind: JoinKind::Open,
        });
        h.push(Event::Reply { at: 1100, join, ok: true, detail: Some("1.1".into()) });
        h.push(Event::View { at: 1200, join, add: vec![10, 20], del: vec![] });
    }
    h
}

fn meta(key: &str, c: u32) -> MetaObs {
    MetaObs { key: key.into(), phx_ref: format!("r{c}"), c: Some(c) }
}

fn quiet(at: Ms, a: Vec<MetaObs>, b: Vec<MetaObs>, views: Vec<ViewSnap>) -> Event {
    Event::Quiet {
        at,
        lists: vec![
            ListSnap { node: "a".into(), topic: "room:1".into(), metas: a },
            ListSnap { node: "b".into(), topic: "room:1".into(), metas: b },
        ],
        views,
    }
}

fn run(mut h: Vec<Event>) -> Vec<ChaosViolation> {
    h.sort_by_key(Event::at);
    check(&h, &params())
}

fn promises(v: &[ChaosViolation]) -> Vec<&'static str> {
    v.iter().map(|v| v.promise).collect()
}

#[test]
fn a_clean_history_passes() {
    let mut h = base();
    h.push(Event::SocketEnd { at: 5000, socket: 1, by: "client_close".into() });
    h.push(Event::View { at: 5100, join: 20, add: vec![], del: vec![10] });
    let view = ViewSnap { join: 20, topic: "room:1".into(), metas: vec![meta("u2", 20)] };
    h.push(quiet(9000, vec![meta("u2", 20)], vec![meta("u2", 20)], vec![view]));
    h.push(Event::Sample { at: 9500, node: "a".into(), topic: "room:1".into(), cs: vec![20] });
    assert_eq!(run(h), vec![]);
}

#[test]
fn a_view_that_keeps_a_closed_connection_is_a_p3_ghost() {
    let mut h = base();
    h.push(Event::SocketEnd { at: 5000, socket: 1, by: "client_close".into() });
    h.push(Event::Sample { at: 9000, node: "b".into(), topic: "room:1".into(), cs: vec![20] });
    let v = run(h);
    assert_eq!(promises(&v), ["P3"], "{v:?}");
    assert_eq!(v[0].at, 5000 + 1000 + 200);
    assert!(v[0].what.contains("join 20's view on b still shows join 10"), "{}", v[0].what);
}

#[test]
fn a_late_leave_in_a_view_is_a_p3_ghost_and_a_timely_one_is_not() {
    for (del_at, expect) in [(6150u64, 0usize), (6300, 1)] {
        let mut h = base();
        h.push(Event::SocketEnd { at: 5000, socket: 1, by: "client_drop".into() });
        h.push(Event::View { at: del_at, join: 20, add: vec![], del: vec![10] });
        assert_eq!(run(h).len(), expect, "leave seen at {del_at}");
    }
}

#[test]
fn a_node_list_that_keeps_a_closed_connection_is_a_p3_ghost() {
    let mut h = base();
    h.push(Event::SocketEnd { at: 5000, socket: 1, by: "client_close".into() });
    h.push(Event::View { at: 5100, join: 20, add: vec![], del: vec![10] });
    h.push(Event::Sample { at: 5500, node: "b".into(), topic: "room:1".into(), cs: vec![10, 20] });
    assert_eq!(run(h.clone()), vec![], "within the bound");
    h.push(Event::Sample { at: 8000, node: "b".into(), topic: "room:1".into(), cs: vec![10, 20] });
    let v = run(h);
    assert_eq!(promises(&v), ["P3"]);
    assert!(v[0].what.contains("node b's list of room:1 still shows join 10"), "{}", v[0].what);
}

#[test]
fn a_cut_link_around_the_end_allows_heartbeat_timeout_plus_one_second() {
    let mut h = base();
    h.push(Event::LinkFault { at: 4800, a: "a".into(), b: "b".into(), mode: "cut".into() });
    h.push(Event::SocketEnd { at: 5000, socket: 1, by: "client_close".into() });
    h.push(Event::LinkHealed { at: 5300, a: "a".into(), b: "b".into() });
    // 1 s + margin has passed, 500 + 1000 + margin has not.
    h.push(Event::View { at: 6600, join: 20, add: vec![], del: vec![10] });
    assert_eq!(run(h.clone()), vec![]);
    h.retain(|e| !matches!(e, Event::View { at: 6600, .. }));
    h.push(Event::View { at: 6800, join: 20, add: vec![], del: vec![10] });
    assert_eq!(promises(&run(h)), ["P3"]);
}

#[test]
fn a_hung_gateway_must_vanish_from_other_nodes_within_heartbeat_timeout_plus_one_second() {
    let mut h = base();
    h.push(Event::NodeStopped { at: 5000, node: "a".into() });
    h.push(Event::NodeContinued { at: 9000, node: "a".into() });
    let v = run(h.clone());
    assert_eq!(promises(&v), ["P3"], "{v:?}");
    assert_eq!(v[0].at, 5000 + 500 + 1000 + 200);
    assert!(v[0].what.contains("a stopped"), "{}", v[0].what);
    // Gone in time, back after the node continues: no violation.
    h.push(Event::View { at: 5600, join: 20, add: vec![], del: vec![10] });
    h.push(Event::View { at: 9100, join: 20, add: vec![10], del: vec![] });
    assert_eq!(run(h), vec![]);
}

#[test]
fn a_one_way_cut_judges_only_the_side_that_stops_hearing() {
    for (mode, observer) in [("one_way b->a", "join 10's view on a"), ("one_way a->b", "join 20's view on b")] {
        let mut h = base();
        h.push(Event::LinkFault { at: 5000, a: "a".into(), b: "b".into(), mode: mode.into() });
        h.push(Event::LinkHealed { at: 9000, a: "a".into(), b: "b".into() });
        let v = run(h);
        assert_eq!(promises(&v), ["P3"], "{mode}: {v:?}");
        assert!(v[0].what.contains(observer), "{mode}: {}", v[0].what);
    }
}

#[test]
fn a_stalled_client_may_stay_two_pings_and_a_second() {
    let mut h = base();
    h.push(Event::Stalled { at: 5000, socket: 1 });
    h.push(Event::View { at: 8100, join: 20, add: vec![], del: vec![10] });
    h.push(Event::SocketEnd { at: 8500, socket: 1, by: "client_drop".into() });
    assert_eq!(run(h.clone()), vec![]);
    h.retain(|e| !matches!(e, Event::View { at: 8100, .. }));
    h.push(Event::View { at: 8300, join: 20, add: vec![], del: vec![10] });
    assert_eq!(promises(&run(h)), ["P3"]);
}

/// Seed 7 of the 10-minute 5-node run: the observer's client stalled, a member left after,
/// and the observer's gateway shut down before the stall's two pings were over. The view of a
/// client that stopped reading is judged only until the stall, not until its socket's end.
#[test]
fn a_stalled_observers_view_is_judged_until_its_stall() {
    let mut h = base();
    h.push(Event::Stalled { at: 5000, socket: 2 });
    h.push(Event::SocketEnd { at: 5100, socket: 1, by: "client_close".into() });
    h.push(Event::NodeTerminated { at: 6700, node: "b".into() });
    assert_eq!(run(h.clone()), vec![], "the view froze at the stall, before the leave");
    // Had the observer stalled only after the leave's bound, its view is judged until then.
    h.retain(|e| !matches!(e, Event::Stalled { .. }));
    h.push(Event::Stalled { at: 6500, socket: 2 });
    assert_eq!(promises(&run(h)), ["P3"]);
}

/// Socket 1 (tab t1, holding room:1) dropped at 20,000; the tab resumes on socket 3.
fn resume(reply_after: u64) -> Vec<Event> {
    let mut h = base();
    h.push(Event::SocketEnd { at: 20_000, socket: 1, by: "client_drop".into() });
    h.push(Event::View { at: 20_100, join: 20, add: vec![], del: vec![10] });
    h.push(Event::Connected {
        at: 20_010,
        socket: 3,
        node: "b".into(),
        user: Some("u1".into()),
        role: "user".into(),
        tab: Some("t1".into()),
    });
    h.push(Event::Join {
        at: 20_020,
        socket: 3,
        join: 30,
        topic: "room:1".into(),
        tab: Some("t1".into()),
        kind: JoinKind::Resume,
    });
    h.push(Event::Reply { at: 20_020 + reply_after, join: 30, ok: true, detail: Some("1.2".into()) });
    h
}

#[test]
fn a_slow_resume_in_a_stable_stretch_breaks_p2() {
    assert_eq!(run(resume(300)), vec![]);
    let v = run(resume(900));
    assert_eq!(promises(&v), ["P2"], "{v:?}");
    assert!(v[0].what.contains("resume join 30 of tab t1"), "{}", v[0].what);
}

#[test]
fn a_resume_near_a_fault_is_not_judged_by_p2() {
    let mut h = resume(900);
    h.push(Event::NodeKilled { at: 17_000, node: "c".into() });
    h.push(Event::NodeStarted { at: 17_500, node: "c".into() });
    assert_eq!(run(h), vec![]);
}

#[test]
fn a_refused_resume_in_a_stable_stretch_breaks_p2() {
    let mut h = resume(100);
    h.retain(|e| !matches!(e, Event::Reply { join: 30, .. }));
    h.push(Event::Reply { at: 20_100, join: 30, ok: false, detail: Some("already_joined".into()) });
    assert_eq!(promises(&run(h)), ["P2"]);
}

#[test]
fn nodes_that_disagree_after_quiet_break_p4() {
    let mut h = base();
    let views = vec![
        ViewSnap { join: 10, topic: "room:1".into(), metas: vec![meta("u1", 10), meta("u2", 20)] },
        ViewSnap { join: 20, topic: "room:1".into(), metas: vec![meta("u1", 10), meta("u2", 20)] },
    ];
    h.push(quiet(9000, vec![meta("u1", 10), meta("u2", 20)], vec![meta("u1", 10), meta("u2", 20)], views.clone()));
    assert_eq!(run(h.clone()), vec![]);
    let extra = MetaObs { key: "u9".into(), phx_ref: "x".into(), c: None };
    h.push(quiet(9500, vec![meta("u1", 10), meta("u2", 20)], vec![meta("u1", 10), meta("u2", 20), extra], views));
    let v = run(h);
    // b's list differs from a's, and join 20's view (on b) differs from b's list.
    assert_eq!(promises(&v), ["P4", "P4"], "{v:?}");
    assert!(v[0].what.contains("only on b"), "{}", v[0].what);
}

#[test]
fn a_view_that_differs_from_its_node_after_quiet_breaks_p4() {
    let mut h = base();
    let both = vec![meta("u1", 10), meta("u2", 20)];
    let views = vec![ViewSnap { join: 20, topic: "room:1".into(), metas: vec![meta("u2", 20)] }];
    h.push(quiet(9000, both.clone(), both, views));
    let v = run(h);
    assert_eq!(promises(&v), ["P4"], "{v:?}");
    assert!(v[0].what.contains("join 20's view of room:1 differs from node b's list"), "{}", v[0].what);
}

#[test]
fn an_acknowledged_join_missing_after_quiet_with_no_end_seen_breaks_p5() {
    let mut h = base();
    h.push(quiet(9000, vec![meta("u2", 20)], vec![meta("u2", 20)], vec![]));
    let v = run(h);
    assert_eq!(promises(&v), ["P5", "P5"], "missing on both nodes: {v:?}");
    assert!(v[0].what.contains("join 10 to room:1"), "{}", v[0].what);
    // The same, after the client saw its slot revoked: nothing lost silently.
    let mut h = base();
    h.push(Event::ChannelEnd { at: 5000, join: 10, how: "slot_revoked logged_in_elsewhere".into() });
    h.push(Event::View { at: 5100, join: 20, add: vec![], del: vec![10] });
    h.push(quiet(9000, vec![meta("u2", 20)], vec![meta("u2", 20)], vec![]));
    assert_eq!(run(h), vec![]);
}

#[test]
fn a_join_never_answered_on_an_open_socket_breaks_p5() {
    let mut h = base();
    h.push(Event::Join {
        at: 2000,
        socket: 2,
        join: 21,
        topic: "queue:1".into(),
        tab: Some("t2".into()),
        kind: JoinKind::SameSocket,
    });
    h.push(Event::Sample { at: 7100, node: "a".into(), topic: "room:1".into(), cs: vec![10, 20] });
    assert_eq!(run(h.clone()), vec![], "the run ended before join_wait_ms + margin");
    h.push(Event::Sample { at: 7300, node: "a".into(), topic: "room:1".into(), cs: vec![10, 20] });
    let v = run(h.clone());
    assert_eq!(promises(&v), ["P5"], "{v:?}");
    assert_eq!(v[0].at, 2000 + 5000 + 200);
    // Its gateway stopped for 3 s meanwhile: the wait stretches by that much.
    h.push(Event::NodeStopped { at: 3000, node: "b".into() });
    h.push(Event::NodeContinued { at: 6000, node: "b".into() });
    let v = run(h.clone());
    assert!(v.iter().all(|v| v.promise != "P5"), "{v:?}");
    h.push(Event::Sample { at: 10_300, node: "a".into(), topic: "room:1".into(), cs: vec![20] });
    assert!(run(h).iter().any(|v| v.promise == "P5"));
}

#[test]
fn waits_measure_resumes() {
    let mut h = resume(120);
    h.sort_by_key(Event::at);
    assert_eq!(waits(&h, &params()).resume, vec![120]);
}

#[test]
fn a_resume_raced_by_another_tab_of_the_user_is_not_judged_by_p2() {
    let mut h = resume(900);
    h.push(Event::Connected {
        at: 19_990,
        socket: 4,
        node: "a".into(),
        user: Some("u1".into()),
        role: "user".into(),
        tab: Some("t9".into()),
    });
    h.push(Event::Join {
        at: 20_005,
        socket: 4,
        join: 40,
        topic: "room:1".into(),
        tab: Some("t9".into()),
        kind: JoinKind::Open,
    });
    h.push(Event::Reply { at: 20_010, join: 40, ok: true, detail: None });
    assert!(run(h).iter().all(|v| v.promise != "P2"));
}

#[test]
fn a_join_left_before_its_answer_needs_none() {
    let mut h = base();
    h.push(Event::Join {
        at: 2000,
        socket: 2,
        join: 21,
        topic: "call:1".into(),
        tab: Some("t2".into()),
        kind: JoinKind::SameSocket,
    });
    h.push(Event::Leave { at: 3000, join: 21 });
    h.push(Event::Sample { at: 9000, node: "a".into(), topic: "room:1".into(), cs: vec![10, 20] });
    assert_eq!(run(h), vec![]);
}

#[test]
fn a_resume_that_finds_the_slot_given_to_a_waiting_tab_is_not_judged_by_p2() {
    let mut h = resume(900);
    // Another tab of u1 waits for room:1 from 18,000 and gets it as the drop frees it.
    h.push(Event::Connected {
        at: 17_990,
        socket: 4,
        node: "a".into(),
        user: Some("u1".into()),
        role: "user".into(),
        tab: Some("t9".into()),
    });
    h.push(Event::Join {
        at: 18_000,
        socket: 4,
        join: 40,
        topic: "room:1".into(),
        tab: Some("t9".into()),
        kind: JoinKind::Open,
    });
    h.push(Event::Reply { at: 20_005, join: 40, ok: true, detail: None });
    assert!(run(h).iter().all(|v| v.promise != "P2"));
}
