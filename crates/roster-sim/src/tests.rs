//! Tests of the simulator itself, with a toy node machine: determinism, delivery, pauses,
//! crashes, restarts, clock mapping of records, clients.

use super::*;
use roster_core::ClientEvent;
use roster_core::ScopeKey;
use roster_core::TabKey;
use roster_core::{ConnId, SlotToken};

/// Heartbeats every 100 ms to every peer, persists a growing epoch, grants every join at once
/// with a 4 s horizon, and remembers every input with its local time.
struct Toy {
    me: Incarnation,
    peers: Vec<NodeName>,
    next: Millis,
    epoch: u64,
    booted_with: u64,
    seen: Vec<(Millis, Input)>,
    /// Presences it shows: its own joins, never removed (a ghost factory).
    shown: Vec<(ConnId, Topic, String)>,
}

impl NodeMachine for Toy {
    fn boot(boot: NodeBoot, _safeguards: &Safeguards, now: Millis) -> Self {
        let peers = boot.config.cluster.nodes.iter().map(|n| n.name.clone()).filter(|n| *n != boot.me.node).collect();
        Toy {
            me: boot.me,
            peers,
            next: now + 100,
            epoch: boot.stored_epoch,
            booted_with: boot.stored_epoch,
            seen: Vec::new(),
            shown: Vec::new(),
        }
    }

    fn handle(&mut self, input: Input, now: Millis) -> Vec<Effect> {
        self.seen.push((now, input.clone()));
        let mut fx = Vec::new();
        match input {
            Input::Tick if now >= self.next => {
                self.next = now + 100;
                self.epoch += 1;
                fx.push(Effect::PersistEpoch(self.epoch));
                for p in &self.peers {
                    fx.push(Effect::Send {
                        to: p.clone(),
                        msg: PeerMsg::Heartbeat {
                            from: self.me.clone(),
                            sent_at: now,
                            leases: vec![],
                            echoes: vec![],
                            presence_seq: 0,
                        },
                    });
                }
            }
            Input::Join(j) if j.user.as_ref().is_some_and(|u| u.as_str() == "mute") => {}
            Input::Join(j) => {
                let token = SlotToken { epoch: self.epoch, generation: 1 };
                let conn = ConnId { gateway: self.me.clone(), socket: j.socket };
                let key = j.user.as_ref().map_or("anonymous".to_owned(), |u| u.to_string());
                self.shown.push((conn.clone(), j.topic.clone(), key));
                fx.push(Effect::Client {
                    socket: j.socket,
                    topic: j.topic.clone(),
                    event: ClientEvent::Joined { token: Some(token) },
                });
                if let Some(user) = j.user {
                    fx.push(Effect::Record(Record::Accepted {
                        at: now,
                        user,
                        scope: ScopeKey::topic(j.topic),
                        tab: TabKey::of(j.tab.as_ref(), &conn),
                        conn,
                        token,
                        partition: roster_core::PartitionId(0),
                        horizon: now + 4000,
                    }));
                }
            }
            _ => {}
        }
        fx
    }

    fn next_wake(&self) -> Millis {
        self.next
    }

    fn incarnation(&self) -> &Incarnation {
        &self.me
    }

    fn presence_digest(&self) -> Option<PresenceDigest> {
        let mut by_topic: std::collections::BTreeMap<Topic, Vec<(String, PhxRef, NodeName)>> = Default::default();
        for (conn, topic, key) in &self.shown {
            let phx_ref = PhxRef::from(conn.to_string());
            by_topic.entry(topic.clone()).or_default().push((key.clone(), phx_ref, conn.gateway.node.clone()));
        }
        Some(by_topic.into_iter().collect())
    }

    fn presence_of(&self, conn: &ConnId) -> Vec<Topic> {
        self.shown.iter().filter(|(c, _, _)| c == conn).map(|(_, t, _)| t.clone()).collect()
    }
}

fn params(seed: u64) -> SimParams {
    SimParams { trace_lines: 10_000, ..SimParams::scripted(seed, 3) }
}

fn received(toy: &Toy) -> Vec<&Input> {
    toy.seen.iter().map(|(_, i)| i).filter(|i| matches!(i, Input::Receive { .. })).collect()
}

#[test]
fn a_seed_replays_exactly_and_another_seed_differs() {
    let run = |seed| {
        let mut p = SimParams { workload: WorkloadMix::random(&mut SimRng::new(seed, 9)), ..params(seed) };
        p.network = NetworkParams { loss: 0.1, spike_chance: 0.05, fifo: false, ..NetworkParams::calm() };
        p.faults = FaultMix::standard(3);
        p.active_ms = 20_000;
        p.quiet_ms = 2000;
        Simulation::<Toy>::run(p)
    };
    let (a, b, c) = (run(5), run(5), run(6));
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.stats, b.stats);
    assert_ne!(a.trace, c.trace);
    assert!(a.stats.lost > 0 && a.stats.delivered > 0);
    assert!(!a.history.joins.is_empty());
}

#[test]
fn heartbeats_arrive_and_timers_fire_on_the_local_clock() {
    let mut sim = Simulation::<Toy>::new(params(1));
    sim.advance(1000);
    for i in 0..3 {
        let toy = sim.machine(i).unwrap();
        // 100 ms on the local clock, which runs within 0.5 % of global time.
        let ticks = toy.seen.iter().filter(|(_, i)| matches!(i, Input::Tick)).count();
        assert!((9..=11).contains(&ticks), "{ticks} ticks");
        assert!(received(toy).len() >= 16, "node {i} got {} heartbeats", received(toy).len());
    }
}

#[test]
fn a_paused_node_handles_a_tick_first_then_its_backlog_at_wake_up() {
    let mut sim = Simulation::<Toy>::new(params(2));
    sim.advance(500);
    sim.pause(1, 2000);
    let before = sim.machine(1).unwrap().seen.len();
    sim.advance(1999);
    assert_eq!(sim.machine(1).unwrap().seen.len(), before, "a paused node handles nothing");
    sim.advance(1);
    let toy = sim.machine(1).unwrap();
    let burst = &toy.seen[before..];
    assert!(matches!(burst[0].1, Input::Tick));
    assert!(burst.len() > 30, "the heartbeats of two seconds arrive in a burst: {}", burst.len());
    assert!(burst.iter().all(|(t, _)| *t == burst[0].0), "all handled at the wake-up instant");
}

#[test]
fn a_crash_loses_messages_tells_peers_and_a_restart_keeps_the_stored_epoch() {
    let mut sim = Simulation::<Toy>::new(params(3));
    sim.advance(1000);
    let old = sim.machine(2).unwrap().incarnation().clone();
    let epoch = sim.machine(2).unwrap().epoch;
    sim.crash(2, true);
    sim.advance(20);
    for i in 0..2 {
        let toy = sim.machine(i).unwrap();
        assert!(toy.seen.iter().any(|(_, inp)| matches!(inp, Input::LinkDown { peer } if peer.as_str() == "n2")));
    }
    sim.advance(500);
    sim.restart(2);
    let toy = sim.machine(2).unwrap();
    assert_ne!(toy.incarnation(), &old);
    assert_eq!(toy.booted_with, epoch);
    let h = sim.history();
    assert_eq!(h.lives.len(), 4);
    assert!(matches!(h.lives[2].ended, Some((1000, LifeEnd::Crashed))));
    assert!(h.troubles.iter().any(|t| t.node.as_str() == "n2" && t.what == "down" && t.from == 1000));
}

#[test]
fn cut_links_carry_nothing_and_one_way_cuts_one_way() {
    let mut sim = Simulation::<Toy>::new(params(4));
    sim.cut(0, 1);
    sim.advance(1000);
    let from = |toy: &Toy, name: &str| {
        toy.seen.iter().filter(|(_, i)| matches!(i, Input::Receive { from, .. } if from.as_str() == name)).count()
    };
    assert_eq!(from(sim.machine(1).unwrap(), "n0"), 0);
    assert!(from(sim.machine(0).unwrap(), "n1") >= 8);
    sim.heal_all();
    sim.advance(500);
    assert!(from(sim.machine(1).unwrap(), "n0") >= 4);
}

#[test]
fn records_are_mapped_to_global_time_and_horizons_round_later() {
    let mut sim = Simulation::<Toy>::new(params(5));
    sim.advance(300);
    let id = sim.client_join(1, Some("alice".into()), Some("t1".into()), "room:1".into(), JoinKind::NewTab).unwrap();
    let clock = sim.clock(1);
    let h = sim.history();
    let Record::Accepted { at, horizon, .. } = &h.records[0].record else { panic!("{:?}", h.records) };
    assert_eq!(*at, 300);
    // The node's horizon is its local reading + 4000; globally the first instant it reads that.
    let local_horizon = clock.local(300) + 4000;
    assert_eq!(*horizon, clock.first_global_reaching(local_horizon));
    assert!(clock.local(*horizon) >= local_horizon && clock.local(*horizon - 1) < local_horizon);
    assert!(sim.workload().get(id).joined(&"room:1".into()));
    assert_eq!(h.joins[0].outcome, Some((300, JoinOutcome::Joined)));
}

#[test]
fn clients_on_a_killed_gateway_are_gone() {
    let mut sim = Simulation::<Toy>::new(params(6));
    sim.advance(100);
    let id = sim.client_join(0, Some("bob".into()), None, "room:2".into(), JoinKind::NewTab).unwrap();
    sim.crash(0, false);
    let c = sim.workload().get(id);
    assert!(!c.open && !c.active());
    assert!(sim.client_join(0, None, None, "room:2".into(), JoinKind::Anonymous).is_none());
}

#[test]
fn held_messages_wait_for_release_and_dropped_kinds_never_arrive() {
    let mut sim = Simulation::<Toy>::new(params(7));
    sim.hold_next(0, 1, "Heartbeat");
    sim.drop_all(2, 1, "Heartbeat");
    sim.advance(1000);
    let count = |sim: &Simulation<Toy>, name: &str| {
        let toy = sim.machine(1).unwrap();
        toy.seen.iter().filter(|(_, i)| matches!(i, Input::Receive { from, .. } if from.as_str() == name)).count()
    };
    let from_n0 = count(&sim, "n0");
    assert_eq!(count(&sim, "n2"), 0);
    sim.release_held();
    sim.advance(0);
    assert_eq!(count(&sim, "n0"), from_n0 + 1);
}

#[test]
fn every_message_survives_the_codec_round_trip() {
    let msg = PeerMsg::Heartbeat {
        from: Incarnation::new("n0", 5),
        sent_at: 7,
        leases: vec![],
        echoes: vec![],
        presence_seq: 0,
    };
    assert_eq!(codec_round_trip(&msg), msg);
    assert_eq!(trace::msg_kind(&msg), "Heartbeat");
}

#[test]
fn a_join_never_answered_is_a_p5_violation() {
    let mut sim = Simulation::<Toy>::new(params(8));
    sim.advance(100);
    sim.client_join(1, Some("mute".into()), Some("t".into()), "room:1".into(), JoinKind::NewTab).unwrap();
    sim.advance(10_000);
    assert!(sim.finish().passed(), "not yet beyond join_wait_ms + 1 s");
    let mut sim = Simulation::<Toy>::new(params(8));
    sim.advance(100);
    sim.client_join(1, Some("mute".into()), Some("t".into()), "room:1".into(), JoinKind::NewTab).unwrap();
    sim.advance(12_000);
    let report = sim.finish();
    let kinds: Vec<&str> = report.violations.iter().map(Violation::kind).collect();
    assert_eq!(kinds, ["P5-unanswered-join"]);
}

#[test]
fn presence_is_checked_after_a_quiet_period_for_ghosts_and_divergence() {
    let mut sim = Simulation::<Toy>::new(params(9));
    sim.advance(100);
    let a = sim.client_join(0, Some("alice".into()), Some("a".into()), "room:1".into(), JoinKind::NewTab).unwrap();
    sim.client_join(1, Some("bob".into()), Some("b".into()), "room:1".into(), JoinKind::NewTab).unwrap();
    sim.client_close(a, true);
    sim.settle();
    sim.advance(5000);
    let report = sim.finish();
    assert!(report.presence_checked);
    let kinds: std::collections::BTreeSet<&str> = report.violations.iter().map(Violation::kind).collect();
    // Each toy shows only its own joins (P4), never drops a closed one (P3), and so misses
    // the other node's joined bob (P5).
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["P3-ghost-presence", "P4-presence-diverged", "P5-missing-presence"]
    );
}
