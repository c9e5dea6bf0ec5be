//! User actors on one node (a node alone serves every partition at once): when activations
//! start and stop, what they are told, and where calls go. Several nodes, handovers and
//! faults are the simulation's (`tests/activations.rs`).

use super::*;
use crate::ids::{SocketId, Topic};
use crate::node::tests::client_join;
use crate::node::{ClientEvent, NodeBoot};
use crate::{Config, OnConflict, PolicyConfig, SlotRules};

struct One {
    node: NodeState,
    now: Millis,
    /// Every effect so far, in order.
    effects: Vec<Effect>,
}

fn policy(on_conflict: OnConflict, reserve_ms: Millis, max_slots: u32) -> PolicyConfig {
    PolicyConfig { on_conflict, reserve_ms, max_slots, ..PolicyConfig::new("*") }
}

impl One {
    fn new(policy: PolicyConfig) -> Self {
        let mut config = Config::single_node();
        config.policy = vec![policy];
        config.validate().expect("valid");
        let boot = NodeBoot { me: Incarnation::new("local", 1), config, stored_epoch: 0, wall_clock_ms: 1_000 };
        let mut one = One { node: NodeState::new(boot, 0), now: 0, effects: Vec::new() };
        // A node alone takes every lease at its first lease round, answering itself.
        for _ in 0..50 {
            one.step(Input::Tick);
            if one.node.all_homed(one.now) {
                return one;
            }
            one.now += 10;
        }
        panic!("a node alone serves every partition at once");
    }

    /// Handle one input, delivering what the node sends itself in the same turn (as the
    /// runtime does).
    fn step(&mut self, input: Input) -> Vec<Effect> {
        let mut queue = vec![input];
        let mut out = Vec::new();
        while !queue.is_empty() {
            let input = queue.remove(0);
            for e in self.node.handle(input, self.now) {
                match e {
                    Effect::Send { to, msg } => queue.push(Input::Receive { from: to, msg }),
                    other => out.push(other),
                }
            }
        }
        self.effects.extend(out.iter().cloned());
        out
    }

    fn join(&mut self, socket: u64, user: &str, tab: &str) -> Vec<Effect> {
        self.join_topic(socket, user, tab, "room:1")
    }

    fn join_topic(&mut self, socket: u64, user: &str, tab: &str, topic: &str) -> Vec<Effect> {
        self.step(Input::Join(client_join(socket, topic, user, tab)))
    }

    fn close(&mut self, socket: u64, clean: bool) -> Vec<Effect> {
        self.step(Input::SocketClosed { socket: SocketId(socket), clean })
    }

    fn advance(&mut self, ms: Millis) {
        let until = self.now + ms;
        while self.now < until {
            self.now = (self.now + 10).min(until).max(self.node.next_wake().min(until));
            self.step(Input::Tick);
        }
    }

    fn conn(&self, socket: u64) -> ConnId {
        ConnId { gateway: self.node.incarnation().clone(), socket: SocketId(socket) }
    }
}

fn user_effects(fx: &[Effect]) -> Vec<&UserEffect> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::User(u) if !matches!(u, UserEffect::Fence { .. }) => Some(u),
            _ => None,
        })
        .collect()
}

fn events(fx: &[Effect]) -> Vec<SessionEvent> {
    user_effects(fx)
        .into_iter()
        .filter_map(|u| match u {
            UserEffect::Session { event, .. } => Some(event.clone()),
            _ => None,
        })
        .collect()
}

fn started(fx: &[Effect]) -> Vec<(SlotToken, Vec<SessionView>)> {
    user_effects(fx)
        .into_iter()
        .filter_map(|u| match u {
            UserEffect::Start { token, sessions, .. } => Some((*token, sessions.clone())),
            _ => None,
        })
        .collect()
}

fn stopped(fx: &[Effect]) -> Vec<(SlotToken, ActivationEnd)> {
    user_effects(fx)
        .into_iter()
        .filter_map(|u| match u {
            UserEffect::Stop { token, why, .. } => Some((*token, why.clone())),
            _ => None,
        })
        .collect()
}

fn answer(fx: &[Effect]) -> Option<UserAnswer> {
    user_effects(fx).into_iter().find_map(|u| match u {
        UserEffect::Answer { answer, .. } => Some(answer.clone()),
        _ => None,
    })
}

#[test]
fn the_first_join_starts_one_activation_and_the_last_leave_stops_it() {
    let mut one = One::new(policy(OnConflict::Takeover, 0, 1));
    let fx = one.join(1, "alice", "t1");
    let starts = started(&fx);
    assert_eq!(starts.len(), 1, "{fx:?}");
    let (token, sessions) = &starts[0];
    assert_eq!(sessions.len(), 1);
    assert_eq!((sessions[0].conn.clone(), sessions[0].state.clone()), (one.conn(1), SessionState::Held));
    assert_eq!(sessions[0].topic, Some(Topic::from("room:1")));
    assert_eq!(one.node.activation_of(&UserId::from("alice")), Some(*token));
    let slot = match fx.iter().find_map(|e| match e {
        Effect::Client { event: ClientEvent::Joined { token }, .. } => *token,
        _ => None,
    }) {
        Some(t) => t,
        None => panic!("alice joined: {fx:?}"),
    };
    assert_eq!(token.epoch, slot.epoch, "the activation's token comes from the partition's mint");
    assert!(*token > slot, "minted at the end of the turn that granted the slot");

    // A second topic of the same user: the same activation, told of the new session.
    let fx = one.join_topic(1, "alice", "t1", "room:2");
    assert!(started(&fx).is_empty(), "one activation per user, whatever the scopes");
    assert!(matches!(&events(&fx)[..], [SessionEvent::Started { how: SessionStart::Granted, session }]
        if session.scope == crate::ScopeKey::topic("room:2".into())));

    let fx = one.close(1, true);
    let ends: Vec<SessionEnd> = events(&fx)
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::Ended { end, .. } => Some(end),
            _ => None,
        })
        .collect();
    assert_eq!(ends, vec![SessionEnd::Closed { clean: true }, SessionEnd::Closed { clean: true }]);
    assert_eq!(stopped(&fx), vec![(*token, ActivationEnd::Idle)]);
    assert_eq!(one.node.activations(), 0);
    let records: Vec<&Record> = one
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record(r @ (Record::ActivationStarted { .. } | Record::ActivationEnded { .. })) => Some(r),
            _ => None,
        })
        .collect();
    assert!(matches!(&records[..], [
        Record::ActivationStarted { token: t1, handed_from: None, .. },
        Record::ActivationEnded { token: t2, why: ActivationEnd::Idle, .. },
    ] if t1 == token && t2 == token));

    // Back again: a new activation with a larger token.
    let fx = one.join(2, "alice", "t1");
    assert!(started(&fx)[0].0 > *token);
}

#[test]
fn a_start_lists_no_sessions_when_the_runtime_keeps_none_and_the_events_and_view_are_unchanged() {
    let mut one = One::new(policy(OnConflict::Takeover, 0, 2));
    one.node.set_activation_sessions(false);
    let fx = one.join(1, "erin", "t1");
    let starts = started(&fx);
    assert_eq!(starts.len(), 1, "{fx:?}");
    assert!(starts[0].1.is_empty(), "no session list in the start: {:?}", starts[0].1);
    // The home still knows the session, and the activation is still told of each change.
    let view = one.node.user_view(&UserId::from("erin"), one.now).expect("served here");
    assert_eq!(view.sessions.len(), 1);
    assert_eq!(view.sessions[0].conn, one.conn(1));
    let fx = one.join(2, "erin", "t2");
    assert!(matches!(&events(&fx)[..], [SessionEvent::Started { how: SessionStart::Granted, session }]
        if session.conn == one.conn(2)));
    let fx = one.close(1, true);
    assert!(matches!(&events(&fx)[..], [SessionEvent::Ended { end: SessionEnd::Closed { clean: true }, session }]
        if session.conn == one.conn(1)));
    let fx = one.close(2, true);
    assert!(matches!(&events(&fx)[..], [SessionEvent::Ended { end: SessionEnd::Closed { clean: true }, session }]
        if session.conn == one.conn(2)));
    assert_eq!(stopped(&fx), vec![(starts[0].0, ActivationEnd::Idle)]);
}

#[test]
fn a_takeover_is_told_as_revoking_then_revoked_then_granted() {
    let mut one = One::new(policy(OnConflict::Takeover, 0, 1));
    one.join(1, "bob", "old");
    let fx = one.join(2, "bob", "new");
    // On one node the revoke is confirmed by the next turn, so the three come at once.
    let ev = events(&fx);
    assert!(
        matches!(&ev[..], [
            SessionEvent::Changed { session: revoking },
            SessionEvent::Ended { session, end: SessionEnd::Revoked { reason } },
            SessionEvent::Started { how: SessionStart::Granted, session: new },
        ] if revoking.state == SessionState::Revoking { reason: "logged_in_elsewhere".into() }
            && session.conn == one.conn(1) && reason == "logged_in_elsewhere" && new.conn == one.conn(2)),
        "{ev:?}"
    );
}

#[test]
fn a_resume_replaces_the_old_session_and_an_unclean_drop_keeps_a_reservation_until_it_lapses() {
    let mut one = One::new(policy(OnConflict::Reject, 500, 1));
    one.join(1, "carol", "tab");
    let fx = one.join(2, "carol", "tab");
    let ev = events(&fx);
    assert!(
        ev.iter().any(|e| matches!(e, SessionEvent::Started { how: SessionStart::Resumed, session } if session.conn == one.conn(2))),
        "{ev:?}"
    );
    assert!(ev.iter().any(|e| matches!(e, SessionEvent::Ended { session, end: SessionEnd::Replaced } if session.conn == one.conn(1))
        || matches!(e, SessionEvent::Changed { session } if session.conn == one.conn(1) && session.state == SessionState::Replaced)),
        "{ev:?}");

    let fx = one.close(2, false);
    let ev = events(&fx);
    assert!(
        matches!(&ev[..], [SessionEvent::Changed { session }] if session.state == SessionState::Reserved),
        "an unclean drop with reserve_ms keeps the slot: {ev:?}"
    );
    assert!(stopped(&fx).is_empty(), "a reservation keeps the user live");
    one.advance(600);
    let ends: Vec<SessionEnd> = events(&one.effects)
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::Ended { session, end } if session.conn == one.conn(2) => Some(end),
            _ => None,
        })
        .collect();
    assert_eq!(ends, vec![SessionEnd::ReservationLapsed]);
    assert_eq!(one.node.activations(), 0, "idle once the reservation lapsed");
}

#[test]
fn kicking_one_session_revokes_it_alone() {
    let mut one = One::new(policy(OnConflict::Reject, 0, 2));
    one.join(1, "dan", "a");
    one.join(2, "dan", "b");
    let scope = crate::ScopeKey::topic("room:1".into());
    let fx =
        one.step(Input::KickSession { user: UserId::from("dan"), conn: one.conn(1), scope, reason: "spam".into() });
    let revoked: Vec<(SocketId, String)> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Client { socket, event: ClientEvent::Revoked { reason }, .. } => Some((*socket, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(revoked, vec![(SocketId(1), "spam".to_owned())]);
    let ev = events(&fx);
    assert!(
        matches!(&ev[..], [
            SessionEvent::Changed { session: revoking },
            SessionEvent::Ended { session, end: SessionEnd::Revoked { reason } },
        ] if revoking.state == SessionState::Revoking { reason: "spam".into() }
            && session.conn == one.conn(1) && reason == "spam"),
        "{ev:?}"
    );
    assert_eq!(one.node.user_view(&UserId::from("dan"), one.now).map(|v| v.sessions.len()), Some(1));
}

#[test]
fn a_call_reaches_the_live_activation_and_an_offline_user_is_not_active() {
    let mut one = One::new(policy(OnConflict::Takeover, 0, 1));
    let fx = one.step(Input::UserCall { call: 7, user: UserId::from("erin"), body: vec![1], reply: true });
    assert_eq!(answer(&fx), Some(UserAnswer::NotActive), "a message never activates a user");
    assert!(started(&fx).is_empty());

    one.join(1, "erin", "t");
    let token = one.node.activation_of(&UserId::from("erin")).expect("active");
    let fx = one.step(Input::UserCall { call: 8, user: UserId::from("erin"), body: vec![2], reply: true });
    assert_eq!(
        user_effects(&fx),
        vec![&UserEffect::Deliver { user: UserId::from("erin"), token, body: vec![2], reply: Some(ReplyTo::Local(8)) }]
    );
    let fx = one.step(Input::UserCall { call: 9, user: UserId::from("erin"), body: vec![3], reply: false });
    assert!(matches!(user_effects(&fx)[..], [UserEffect::Deliver { reply: None, .. }]), "a cast wants no answer");

    let fx = one.step(Input::UserInfo { call: 10, user: UserId::from("erin") });
    let view = user_effects(&fx).into_iter().find_map(|u| match u {
        UserEffect::Info { call: 10, view } => view.clone(),
        _ => None,
    });
    let view = view.expect("the home answers");
    assert_eq!((view.activation, view.sessions.len(), view.home.as_str()), (Some(token), 1, "local"));
}

#[test]
fn an_activation_that_failed_restarts_fresh_after_a_pause_with_a_larger_token() {
    let mut one = One::new(policy(OnConflict::Takeover, 0, 1));
    one.join(1, "fay", "t");
    let user = UserId::from("fay");
    let first = one.node.activation_of(&user).expect("active");
    let fx = one.step(Input::ActivationStopped { user: user.clone(), token: first, state: None, failed: true });
    assert_eq!(stopped(&fx), vec![(first, ActivationEnd::Failed)]);
    let fx = one.step(Input::UserCall { call: 1, user: user.clone(), body: vec![], reply: true });
    assert_eq!(answer(&fx), Some(UserAnswer::Moving), "callers are told to ask again, not that fay is offline");
    one.advance(RESTART_AFTER_FAILURE_MS + 20);
    let second = one.node.activation_of(&user).expect("restarted");
    assert!(second > first);
    let again: Vec<_> = started(&one.effects).into_iter().filter(|(t, _)| *t == second).collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.len(), 1, "the new activation is told the user's sessions");
    // A stale report about the old activation changes nothing.
    let fx = one.step(Input::ActivationStopped { user: user.clone(), token: first, state: None, failed: true });
    assert!(stopped(&fx).is_empty());
}

#[test]
fn without_user_actors_nothing_is_decided() {
    let mut one = One::new(policy(OnConflict::Takeover, 0, 1));
    one.node.set_user_actors(false);
    let fx = one.join(1, "gus", "t");
    assert!(user_effects(&fx).is_empty());
    assert_eq!(one.node.activations(), 0);
    let _ = SlotRules::default();
}

/// The activation's view as the runtime keeps it: the sessions it started with, with every
/// event applied in order (as `roster-runtime`'s activation does).
struct Model {
    sessions: Vec<SessionView>,
}

impl Model {
    fn apply(&mut self, fx: &[Effect]) {
        for u in user_effects(fx) {
            match u {
                UserEffect::Start { sessions, .. } => self.sessions = sessions.clone(),
                UserEffect::Stop { .. } => self.sessions.clear(),
                UserEffect::Session { event, .. } => {
                    let same =
                        |a: &SessionView, b: &SessionView| a.conn == b.conn && a.scope == b.scope && a.token == b.token;
                    match event {
                        SessionEvent::Started { session, .. } => {
                            assert!(!self.sessions.iter().any(|s| same(s, session)), "started twice: {session:?}");
                            self.sessions.push(session.clone());
                        }
                        SessionEvent::Changed { session } => {
                            let s = self.sessions.iter_mut().find(|s| same(s, session));
                            *s.unwrap_or_else(|| panic!("a change of an unknown session: {session:?}")) =
                                session.clone();
                        }
                        SessionEvent::Ended { session, .. } => {
                            let before = self.sessions.len();
                            self.sessions.retain(|s| !same(s, session));
                            assert_eq!(self.sessions.len(), before - 1, "an end of an unknown session: {session:?}");
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The model is exactly the home's view (`GET /user`), order aside.
    fn check(&self, one: &One, user: &UserId) {
        let key = |s: &SessionView| (s.scope.clone(), s.token);
        let mut home = one.node.user_view(user, one.now).map(|v| v.sessions).unwrap_or_default();
        let mut mine = self.sessions.clone();
        home.sort_by_key(key);
        mine.sort_by_key(key);
        assert_eq!(mine, home, "the activation's view is the home's");
    }
}

#[test]
fn a_user_with_a_thousand_sessions_is_told_each_change_exactly() {
    const TOPICS: u64 = 1_000;
    let mut one = One::new(policy(OnConflict::Takeover, 500, 1));
    let user = UserId::from("hub");
    let topic = |i: u64| format!("burst:{i}");
    let scope = |i: u64| crate::ScopeKey::topic(topic(i).as_str().into());
    let mut model = Model { sessions: Vec::new() };

    // A thousand topics on one socket: one start, then one granted session per join.
    for i in 0..TOPICS {
        let fx = one.join_topic(1, "hub", "t", &topic(i));
        model.apply(&fx);
        if i == 0 {
            assert_eq!(started(&fx).len(), 1, "{fx:?}");
            continue;
        }
        let ev = events(&fx);
        assert!(
            matches!(&ev[..], [SessionEvent::Started { how: SessionStart::Granted, session }]
                if session.scope == scope(i) && session.conn == one.conn(1) && session.state == SessionState::Held),
            "join {i}: {ev:?}"
        );
        if i % 100 == 99 {
            model.check(&one, &user);
        }
    }
    assert_eq!(model.sessions.len(), TOPICS as usize);
    model.check(&one, &user);

    // Another tab takes ten of them over: each is revoking, revoked, then the new one granted,
    // and nothing is said of the other 990.
    for i in (0..TOPICS).step_by(100) {
        let fx = one.join_topic(2, "hub", "u", &topic(i));
        model.apply(&fx);
        let ev = events(&fx);
        assert!(
            matches!(&ev[..], [
                SessionEvent::Changed { session: revoking },
                SessionEvent::Ended { session: old, end: SessionEnd::Revoked { reason } },
                SessionEvent::Started { how: SessionStart::Granted, session: new },
            ] if revoking.scope == scope(i) && old.conn == one.conn(1) && reason == "logged_in_elsewhere"
                && new.scope == scope(i) && new.conn == one.conn(2)),
            "takeover of {i}: {ev:?}"
        );
    }
    model.check(&one, &user);

    // Leaving one topic ends that session alone.
    let fx = one.step(Input::Leave { socket: SocketId(1), topic: Topic::from(topic(1).as_str()) });
    model.apply(&fx);
    assert!(
        matches!(&events(&fx)[..], [SessionEvent::Ended { session, end: SessionEnd::Closed { clean: true } }]
            if session.scope == scope(1)),
        "{fx:?}"
    );
    model.check(&one, &user);

    // The first socket drops uncleanly: its 989 sessions are reserved (one change each), then
    // lapse together; the user stays live through the second socket's ten.
    let fx = one.close(1, false);
    model.apply(&fx);
    let ev = events(&fx);
    assert_eq!(ev.len(), 989, "one change per session of the socket");
    assert!(ev.iter().all(|e| matches!(e, SessionEvent::Changed { session }
        if session.conn == one.conn(1) && session.state == SessionState::Reserved)));
    model.check(&one, &user);
    let seen = one.effects.len();
    one.advance(600);
    model.apply(&one.effects[seen..]);
    let lapsed = events(&one.effects[seen..])
        .into_iter()
        .filter(|e| matches!(e, SessionEvent::Ended { end: SessionEnd::ReservationLapsed, .. }))
        .count();
    assert_eq!(lapsed, 989);
    assert_eq!(model.sessions.len(), 10);
    model.check(&one, &user);
    assert!(one.node.activation_of(&user).is_some());

    // The last socket closes cleanly: ten ends, then the activation stops as idle.
    let fx = one.close(2, true);
    model.apply(&fx);
    let ends = events(&fx).into_iter().filter(|e| matches!(e, SessionEvent::Ended { .. })).count();
    assert_eq!(ends, 10);
    assert!(matches!(&stopped(&fx)[..], [(_, ActivationEnd::Idle)]), "{fx:?}");
    assert_eq!(one.node.activations(), 0);
}

/// Two nodes given the same inputs turn by turn, one telling activations of their sessions,
/// the other not ([`NodeState::set_session_events`]): what the runtime and `GET /user` see
/// must not differ, but for the session events.
struct Lockstep {
    on: One,
    off: One,
}

impl Lockstep {
    fn new(policy: PolicyConfig) -> Self {
        let mut on = One::new(policy.clone());
        let mut off = One::new(policy);
        // As the runtime sets a behaviour that keeps no sessions (and, off, has no hooks).
        on.node.set_activation_sessions(false);
        off.node.set_activation_sessions(false);
        off.node.set_session_events(false);
        Lockstep { on, off }
    }

    /// One turn of each; their sends, as the inputs they become.
    fn turn(&mut self, input: Input, users: &[&str]) -> Vec<Input> {
        let now = self.on.now;
        let on: Vec<Effect> = self.on.node.handle(input.clone(), now);
        let off: Vec<Effect> = self.off.node.handle(input, now);
        let not_session = |e: &&Effect| !matches!(e, Effect::User(UserEffect::Session { .. }));
        assert!(off.iter().all(|e| not_session(&e)), "no session events: {off:?}");
        assert_eq!(on.iter().filter(not_session).collect::<Vec<_>>(), off.iter().collect::<Vec<_>>());
        for user in users {
            let user = UserId::from(*user);
            assert_eq!(self.on.node.user_view(&user, now), self.off.node.user_view(&user, now), "{user}");
            // Off, an activation's view keeps the sessions being revoked alone.
            if let Some(a) = self.off.node.users.active.get(&user) {
                assert!(a.view.iter().all(|s| matches!(s.state, SessionState::Revoking { .. })), "{:?}", a.view);
            }
        }
        on.into_iter()
            .filter_map(|e| match e {
                Effect::Send { to, msg } => Some(Input::Receive { from: to, msg }),
                _ => None,
            })
            .collect()
    }

    /// `input`, then every send it leads to, turn by turn.
    fn run(&mut self, input: Input, users: &[&str]) {
        let mut queue = vec![input];
        while !queue.is_empty() {
            let next = queue.remove(0);
            queue.extend(self.turn(next, users));
        }
    }

    fn join(socket: u64, user: &str, tab: &str, topic: &str) -> Input {
        Input::Join(client_join(socket, topic, user, tab))
    }
}

#[test]
fn without_session_events_the_home_keeps_only_revokes_and_shows_the_same_sessions() {
    let mut both = Lockstep::new(policy(OnConflict::Takeover, 200, 2));
    let users = ["ann", "ben"];
    for i in 0..5u64 {
        both.run(Lockstep::join(1, "ann", "a", &format!("room:{i}")), &users);
        both.run(Lockstep::join(2, "ben", "b", &format!("room:{i}")), &users);
    }
    let ann = UserId::from("ann");
    assert_eq!(both.off.node.user_view(&ann, both.off.now).map(|v| v.sessions.len()), Some(5));
    assert!(both.off.node.users.active.get(&ann).is_some_and(|a| a.view.is_empty() && a.view.capacity() == 0));

    // A kick whose revoke is still on its way when another turn looks at the scope again: the
    // session is told (and shown) as revoked for the kick's reason, not a takeover's.
    let scope = crate::ScopeKey::topic("room:0".into());
    let kick = Input::KickSession { user: ann.clone(), conn: both.on.conn(1), scope, reason: "spam".into() };
    // The kick reaches the home (a message to itself), which revokes the session at its
    // gateway (another message).
    let mut pending = Vec::new();
    for input in both.turn(kick, &users) {
        pending.extend(both.turn(input, &users));
    }
    assert!(!pending.is_empty(), "the revoke goes to the gateway");
    let revoking = both.off.node.user_view(&ann, both.off.now).expect("served");
    assert!(revoking.sessions.iter().any(|s| s.state == SessionState::Revoking { reason: "spam".into() }));
    // Another tab of hers joins room:0 (a second slot: nothing revoked) before the revoke
    // arrives.
    both.run(Lockstep::join(3, "ann", "c", "room:0"), &users);
    let revoking = both.off.node.user_view(&ann, both.off.now).expect("served");
    assert!(revoking.sessions.iter().any(|s| s.state == SessionState::Revoking { reason: "spam".into() }));
    for input in pending {
        both.run(input, &users);
    }

    // Takeovers, a leave, an unclean drop kept as reservations that lapse, and the last leave.
    both.run(Lockstep::join(4, "ann", "d", "room:1"), &users);
    both.run(Lockstep::join(5, "ann", "e", "room:1"), &users);
    both.run(Input::Leave { socket: SocketId(1), topic: Topic::from("room:2") }, &users);
    both.run(Input::SocketClosed { socket: SocketId(2), clean: false }, &users);
    for _ in 0..40 {
        both.on.now += 10;
        both.off.now += 10;
        both.run(Input::Tick, &users);
    }
    for socket in [1, 3, 4, 5] {
        both.run(Input::SocketClosed { socket: SocketId(socket), clean: true }, &users);
    }
    assert_eq!(both.off.node.activations(), 0);
    assert_eq!(both.on.node.activations(), 0);
}

#[test]
fn a_turns_touches_are_taken_sorted_once_each_and_the_kept_list_keeps_bounded_room() {
    let mut one = One::new(policy(OnConflict::Takeover, 0, 1));
    let scope = |t: &str| Some(crate::ScopeKey::topic(Topic::from(t)));
    let (p1, p2) = (PartitionId(1), PartitionId(2));
    let touch = |p: PartitionId, u: &str, s: Option<crate::ScopeKey>| (p, UserId::from(u), s);
    // In no order, with repeats, as homes mark them during a turn.
    let marked = vec![
        touch(p2, "b", scope("x")),
        touch(p1, "z", None),
        touch(p1, "a", scope("s2")),
        touch(p1, "a", scope("s1")),
        touch(p2, "b", scope("x")),
        touch(p1, "a", None),
    ];
    one.node.touches.lock().expect("not poisoned").extend(marked);
    let taken = one.node.take_touches();
    // Partition, then user, then scope (a user touched alone first): the order of the trees
    // of users and of their scopes per home that the list replaced.
    assert_eq!(
        taken,
        vec![
            touch(p1, "a", None),
            touch(p1, "a", scope("s1")),
            touch(p1, "a", scope("s2")),
            touch(p1, "z", None),
            touch(p2, "b", scope("x")),
        ]
    );
    assert!(one.node.touches.lock().expect("not poisoned").is_empty(), "the next turn starts empty");

    // A small turn's list keeps its room: the next turn's marks go into it.
    one.node.put_back_touches(taken);
    assert!(one.node.users.touched.is_empty() && one.node.users.touched.capacity() >= 5);
    one.node.touches.lock().expect("not poisoned").push(touch(p1, "a", None));
    let taken = one.node.take_touches();
    assert_eq!(taken, vec![touch(p1, "a", None)]);
    assert!(one.node.touches.lock().expect("not poisoned").capacity() >= 5, "the kept room is where homes mark");
    one.node.put_back_touches(taken);

    // A turn that touched thousands keeps room for at most KEPT_TOUCHES.
    let many: Vec<_> = (0..5_000).map(|i| touch(PartitionId(i % 7), &format!("u{i}"), None)).collect();
    one.node.touches.lock().expect("not poisoned").extend(many);
    let taken = one.node.take_touches();
    assert_eq!(taken.len(), 5_000);
    assert!(taken.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
    one.node.put_back_touches(taken);
    assert!(one.node.users.touched.is_empty());
    assert!(one.node.users.touched.capacity() <= KEPT_TOUCHES, "{}", one.node.users.touched.capacity());
}

#[test]
fn a_turns_notes_keep_their_room_up_to_a_bound_and_are_forgotten() {
    let mut one = One::new(policy(OnConflict::Takeover, 0, 1));
    let note = |i: u64| (one_conn(i), SlotToken { epoch: 1, generation: i });
    fn one_conn(i: u64) -> ConnId {
        ConnId { gateway: Incarnation::new("local", 1), socket: SocketId(i) }
    }
    for i in 0..10 {
        one.node.users.notes.insert(note(i), Note::Freed);
    }
    one.node.users.clear_notes();
    assert!(one.node.users.notes.is_empty());
    assert!(one.node.users.notes.capacity() >= 10, "a small turn's room stays for the next");
    for i in 0..5_000 {
        one.node.users.notes.insert(note(i), Note::Freed);
    }
    one.node.users.clear_notes();
    assert!(one.node.users.notes.is_empty());
    // A hash map keeps room for at least what it was asked (64 notes: 112 places).
    assert!(one.node.users.notes.capacity() < 2 * KEPT_NOTES, "{}", one.node.users.notes.capacity());
}

#[test]
fn a_scope_with_many_sessions_is_gathered_whole_and_the_kept_list_lets_its_room_go() {
    const TABS: u64 = 40;
    let mut one = One::new(policy(OnConflict::Takeover, 0, TABS as u32));
    for i in 0..TABS {
        one.join(i + 1, "many", &format!("t{i}"));
    }
    let user = UserId::from("many");
    // The activation's own view (brought up to date join by join), not the home's records.
    let view = &one.node.users.active[&user].view;
    assert_eq!(view.len(), TABS as usize, "{view:?}");
    assert!(view
        .iter()
        .all(|s| s.state == SessionState::Held && s.scope == crate::ScopeKey::topic(Topic::from("room:1"))));
    let mut conns: Vec<_> = view.iter().map(|s| s.conn.socket.0).collect();
    conns.sort_unstable();
    assert_eq!(conns, (1..=TABS).collect::<Vec<_>>());
    assert!(one.node.users.gathered.is_empty());
    assert!(one.node.users.gathered.capacity() <= KEPT_SESSIONS, "{}", one.node.users.gathered.capacity());
    // The list each join's slot effects were written into is empty, its room kept and bounded.
    let effects = &one.node.slot_effects;
    assert!(effects.is_empty() && (1..=crate::node::home::KEPT_SLOT_EFFECTS).contains(&effects.capacity()));
}
