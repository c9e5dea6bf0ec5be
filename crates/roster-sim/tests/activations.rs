//! User actors in the deterministic simulation: the checker (`sim::activations`) judges every
//! run from the records alone — never two activations of one user at once, tokens that grow,
//! activations inside their node's lease, handed-over states from the predecessor only.
//!
//! - `random_runs_…`: random runs (the standard faults) have activations, handovers and
//!   failovers, and no violation.
//! - `ablation_activations_follow_lease`: activations that outlive their lease (what a
//!   registry without leases does during a split) are caught as two activations at once.
//! - `scenario_…`: scripts: a paused home is fenced at its lease's deadline (and, without the
//!   fence, overlaps the next home); a handover passes the state, a failover starts fresh,
//!   and a state handed over before another home ran the user is stale (without the rule
//!   `handover_state_needs_succession` the checker finds `stale-handover`);
//!   calls from every node reach the one activation.
//!
//! `SEEDS=N` runs N random seeds instead of the default.

use roster_core::{ActivationEnd, NodeState, Safeguards, UserAnswer, UserId};
use roster_sim::activations::{activation_spans, ActivationSpan, ActivationViolation};
use roster_sim::checker::JoinKind;
use roster_sim::scenario::{run_scenario, ScenarioReport, Step, Step::*};
use roster_sim::{FaultMix, RunReport, SimParams, Simulation, Violation};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Run `make(seed)` for every seed, on the available cores; stop early once `stop` holds.
fn run_seeds(
    seeds: std::ops::Range<u64>,
    make: impl Fn(u64) -> SimParams + Sync,
    stop: impl Fn(&RunReport) -> bool + Sync,
) -> Vec<RunReport> {
    let next = Mutex::new(seeds);
    let found = Mutex::new(Vec::new());
    let halt = AtomicU64::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if halt.load(Ordering::Relaxed) > 0 {
                    return;
                }
                let Some(seed) = next.lock().unwrap().next() else { return };
                let report = Simulation::<NodeState>::run(make(seed));
                if stop(&report) {
                    halt.store(1, Ordering::Relaxed);
                }
                found.lock().unwrap().push(report);
            });
        }
    });
    let mut found = found.into_inner().unwrap();
    found.sort_by_key(|r| r.seed);
    found
}

fn overlap(r: &RunReport) -> Option<&ActivationViolation> {
    r.violations.iter().find_map(|v| match v {
        Violation::Activation(a @ ActivationViolation::Overlap { .. }) => Some(a),
        _ => None,
    })
}

#[test]
fn random_runs_have_activations_handovers_and_failovers_and_break_no_activation_rule() {
    let seeds = env_u64("SEEDS").unwrap_or(40);
    let reports = run_seeds(0..seeds, |seed| SimParams::random(seed, 3), |_| false);
    let (mut starts, mut handed, mut lost, mut idle) = (0, 0, 0, 0);
    for r in &reports {
        let failures: Vec<String> = r
            .violations
            .iter()
            .filter(|v| matches!(v, Violation::Activation(_)))
            .map(|v| format!("seed {}: {v}", r.seed))
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        for s in activation_spans(&r.history) {
            starts += 1;
            handed += u64::from(s.handed_from.is_some());
            lost += u64::from(s.ended_by == Some(ActivationEnd::LeaseLost));
            idle += u64::from(s.ended_by == Some(ActivationEnd::Idle));
        }
    }
    println!("{seeds} seeds: {starts} activations, {handed} from a handed-over state, {lost} ended by a lost lease, {idle} idle");
    // The checker has something to judge: every kind of start and end happens.
    assert!(starts > 100 && handed > 0 && lost > 0 && idle > 0, "{starts} {handed} {lost} {idle}");
}

#[test]
fn ablation_activations_follow_lease() {
    // Restarts bring homes back, so partitions move by handover while both nodes run.
    let make = |seed| SimParams { faults: FaultMix::restarts(3), ..SimParams::random(seed, 3) };
    let weak = |seed| {
        let mut p = make(seed);
        p.safeguards.activations_follow_lease = false;
        p
    };
    let found = run_seeds(0..200, weak, |r| overlap(r).is_some());
    let hit = found.iter().find(|r| overlap(r).is_some()).expect("activations that outlive their lease overlap");
    let v = overlap(hit).expect("found");
    eprintln!("ablation activations_follow_lease: two activations at seed {}:\n{v}", hit.seed);
    let whole = Simulation::<NodeState>::run(make(hit.seed));
    assert!(whole.passed(), "the same seed with every safeguard on:\n{}", whole.failure_text());
}

/// Play `steps` with every safeguard, then with `off` applied: (with, without).
fn scenario_pair(steps: &[Step], off: fn(&mut Safeguards)) -> (ScenarioReport, ScenarioReport) {
    let whole = run_scenario::<NodeState>(SimParams::scripted(1, 3), steps);
    let mut params = SimParams::scripted(1, 3);
    off(&mut params.safeguards);
    let weak = run_scenario::<NodeState>(params, steps);
    (whole, weak)
}

fn spans_of(r: &ScenarioReport, alias: &str) -> Vec<ActivationSpan> {
    let user = &r.users[alias];
    activation_spans(&r.report.history).into_iter().filter(|s| &s.user == user).collect()
}

const FORM: Step = Advance(5000);

#[test]
fn scenario_a_paused_home_is_fenced_at_its_deadline_and_unfenced_would_overlap_the_next() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: Some("n1"), preferred: None },
        Join { client: "A", node: "n2", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        // n0 stops (SIGSTOP) past its lease; n1 takes alice's partition over, re-attaches her
        // slot on n2 by its scan and starts her activation; then n0 wakes.
        Pause("n0", 9000),
        Advance(12_000),
        ExpectJoined("A"),
    ];
    let (whole, weak) = scenario_pair(&steps, |s| s.fence_activations_at_deadline = false);
    assert!(whole.report.passed() && whole.failed_expectations.is_empty(), "{}", whole.text());
    let spans = spans_of(&whole, "alice");
    let homes: Vec<&str> = spans.iter().map(|s| s.node.node.as_str()).collect();
    assert_eq!(homes, ["n0", "n1"], "{spans:#?}");
    assert_eq!(spans[0].ended_by, Some(ActivationEnd::LeaseLost));
    assert!(spans[0].end <= spans[1].start, "fenced at its deadline, before n1 began: {spans:#?}");
    assert_eq!(spans[1].handed_from, None, "a failover starts fresh");
    assert!(spans[1].token > spans[0].token);

    let v = weak.report.violations.iter().find_map(|v| match v {
        Violation::Activation(a @ ActivationViolation::Overlap { .. }) => Some(a),
        _ => None,
    });
    let v = v.unwrap_or_else(|| panic!("without the fence n0's activation runs on after it wakes\n{}", weak.text()));
    eprintln!("without the fence at the deadline: {v}");
}

#[test]
fn scenario_a_handover_passes_the_state_and_a_failover_starts_fresh() {
    let steps = [
        FORM,
        PickUser { alias: "bob", home: "n2", next: Some("n0"), preferred: Some("n2") },
        Join { client: "B", node: "n1", user: "bob", tab: "b", topic: "room:1" },
        AwaitJoined { client: "B", max_ms: 1000 },
        Crash("n2"),
        AwaitHome { user: "bob", node: "n0", max_ms: 10_000 },
        Advance(5000),
        Restart("n2"),
        // n0 hands bob's partition back once n2 has been up for two leases.
        AwaitHome { user: "bob", node: "n2", max_ms: 20_000 },
        Advance(3000),
        ExpectJoined("B"),
    ];
    let r = run_scenario::<NodeState>(SimParams::scripted(1, 3), &steps);
    assert!(r.report.passed() && r.failed_expectations.is_empty(), "{}", r.text());
    let spans = spans_of(&r, "bob");
    let homes: Vec<&str> = spans.iter().map(|s| s.node.node.as_str()).collect();
    assert_eq!(homes, ["n2", "n0", "n2"], "{spans:#?}");
    assert_eq!(spans[0].ended_by, None, "the first ended with its node (killed)");
    assert_eq!(spans[1].handed_from, None, "after the failover: fresh");
    assert_eq!(spans[1].ended_by, Some(ActivationEnd::HandedOver { to: "n2".into() }));
    assert_eq!(spans[2].handed_from, Some(spans[1].token), "after the handover: the state of n0's activation");
    assert!(spans[1].end <= spans[2].start);
    assert!(spans[0].token < spans[1].token && spans[1].token < spans[2].token);
}

/// The steps of `scenario_a_state_handed_over_before_another_home_ran_the_user_is_stale`.
const STALE_HANDOVER: [Step; 24] = [
    FORM,
    PickUser { alias: "bob", home: "n2", next: Some("n0"), preferred: Some("n2") },
    Join { client: "B", node: "n1", user: "bob", tab: "b", topic: "room:1" },
    AwaitJoined { client: "B", max_ms: 1000 },
    Crash("n2"),
    AwaitHome { user: "bob", node: "n0", max_ms: 10_000 },
    Advance(5000),
    Restart("n2"),
    // n2 can take no lease (the other grants never reach it), and what n0 hands over to it
    // stays on the wire.
    DropAll { from: "n0", to: "n2", kind: "LeaseReply" },
    DropAll { from: "n1", to: "n2", kind: "LeaseReply" },
    HoldAll { from: "n0", to: "n2", kind: "HandoverPlan" },
    HoldAll { from: "n0", to: "n2", kind: "UserHandover" },
    // n0 hands bob's partition over to n2 once n2 has been up for two leases (bob's first
    // activation on n0 ends, handed over) and releases it; n2 cannot take it, and is cut off.
    Advance(4700),
    Cut("n2", "*"),
    // n0 and n1 declare n2 down; n0 takes the partition again (an epoch above the
    // handover's), re-attaches bob's slot on n1 and, its scan over, starts bob fresh.
    AwaitHome { user: "bob", node: "n0", max_ms: 3000 },
    Advance(4200),
    // n0 keeps running but its renewals go unanswered, so its lease lapses; n2 is back and
    // now gets the plan and the state n0 handed over before its second lease.
    StopDropping,
    DropAll { from: "n1", to: "n0", kind: "LeaseReply" },
    DropAll { from: "n2", to: "n0", kind: "LeaseReply" },
    HealAll,
    ReleaseHeld,
    // n2 takes the partition once n1's grant to n0 has expired, and starts bob.
    AwaitHome { user: "bob", node: "n2", max_ms: 4000 },
    Advance(200),
    ExpectJoined("B"),
];

/// A handover passes the state only to the activation that directly follows: n0 hands bob
/// over to n2, but n2 cannot take the lease, n0 takes it again and runs bob fresh, loses it,
/// and only then does n2 start bob, with n0's first state on hand. It must start fresh (its
/// grantor n1 reports n0's second epoch); without the rule it uses the stale state.
#[test]
fn scenario_a_state_handed_over_before_another_home_ran_the_user_is_stale() {
    let (whole, weak) = scenario_pair(&STALE_HANDOVER, |s| s.handover_state_needs_succession = false);
    let spans = spans_of(&whole, "bob");
    let homes: Vec<&str> = spans.iter().map(|s| s.node.node.as_str()).collect();
    assert_eq!(homes, ["n2", "n0", "n0", "n2"], "{spans:#?}");
    assert!(whole.report.passed() && whole.failed_expectations.is_empty(), "{}", whole.text());
    assert_eq!(spans[1].ended_by, Some(ActivationEnd::HandedOver { to: "n2".into() }));
    assert_eq!(spans[2].handed_from, None, "n0's second lease: a failover, fresh");
    assert_eq!(spans[3].handed_from, None, "n2 after n0's second activation: fresh, not n0's first state");
    // Without the rule, n2 starts bob from the state n0's first activation handed over,
    // although n0's second activation ran in between: the checker finds it.
    let stale = weak.report.violations.iter().find_map(|v| match v {
        Violation::Activation(a @ ActivationViolation::StaleHandover { .. }) => Some(a),
        _ => None,
    });
    let stale = stale.unwrap_or_else(|| panic!("a stale handover without the rule:\n{}", weak.text()));
    let weak_spans = spans_of(&weak, "bob");
    assert_eq!(weak_spans.len(), 4, "{weak_spans:#?}");
    assert_eq!(weak_spans[3].handed_from, Some(weak_spans[1].token), "n0's first state, used by n2");
    eprintln!("without handover_state_needs_succession: {stale}");
}

#[test]
fn calls_from_every_node_reach_the_one_activation_and_an_offline_user_is_not_active() {
    let mut sim = Simulation::<NodeState>::new(SimParams::scripted(3, 3));
    sim.advance(5000);
    let carol = sim.user_homed_on("n1", 0).expect("n1 homes some users");
    let offline = sim.user_call(0, carol.clone());
    sim.advance(50);
    assert_eq!(sim.user_answer(offline).map(|a| &a.1), Some(&UserAnswer::NotActive));

    let client = sim.client_join(2, Some(carol.clone()), Some("t".into()), "room:1".into(), JoinKind::NewTab);
    assert!(client.is_some());
    sim.advance(100);
    let token = sim.machine(1).and_then(|m| m.activation_of(&carol)).expect("carol's activation is on her home n1");
    let calls: Vec<u64> = (0..3).map(|i| sim.user_call(i, carol.clone())).collect();
    sim.advance(50);
    for (i, call) in calls.iter().enumerate() {
        let answer = sim.user_answer(*call).map(|a| a.1.clone());
        assert_eq!(answer, Some(UserAnswer::Reply(token.to_string().into_bytes())), "a call from n{i}");
    }
    let delivered: Vec<&str> = sim.sim_users().deliveries.iter().map(|d| d.1.node.as_str()).collect();
    assert_eq!(delivered, ["n1", "n1", "n1"], "every call ran on the home");

    let info = sim.user_info(0, carol.clone());
    sim.advance(50);
    let view = sim.user_info_answer(info).and_then(|a| a.1.clone()).expect("n1 answers for carol");
    assert_eq!((view.home.as_str(), view.activation, view.sessions.len()), ("n1", Some(token), 1));
    assert_eq!(view.sessions[0].conn.gateway.node.as_str(), "n2");
    let _: &UserId = &view.user;
}
