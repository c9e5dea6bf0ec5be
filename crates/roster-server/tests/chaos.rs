//! A bounded `roster-chaos` run in the test suite: three real `roster` processes with a fault
//! proxy on every link, the seeded workload and fault schedule of `roster_testkit::chaos`
//! (three bursts, every kind of fault at least once: SIGKILL and restart, SIGSTOP past `lease_ms`, a cut, a
//! hung link, a one-way cut, a delay, a rolling restart), judged on P1 (the nodes' record logs)
//! and P2–P5 (the clients' history). About 75 s; multi-process, so it is this binary's only
//! test and runs alone. A longer run by hand: `docs/testing.md`, "Chaos: roster-chaos".

use roster_testkit::chaos::{self, ChaosSpec};
use std::time::Duration;

const ROSTER: &str = env!("CARGO_BIN_EXE_roster");
/// The fixed seed of the suite's run (any failure prints it with the schedule).
const SEED: u64 = 15;

#[test]
fn a_bounded_chaos_run_keeps_every_promise() {
    let spec = ChaosSpec::new(ROSTER, 3, SEED, Duration::from_secs(30));
    let outcome = chaos::run(&spec, &mut |line| println!("{line}")).expect("the run could be made");
    println!("{}", outcome.summary.table());
    let kinds: Vec<&String> = outcome.summary.faults.keys().collect();
    assert_eq!(kinds, ["cut", "delay", "hang", "kill", "one_way", "pause", "rolling"], "every kind of fault ran");
    assert!(outcome.summary.granted > 50, "the workload was granted joins: {}", outcome.summary.granted);
    assert!(outcome.summary.quiet_checks >= 2);
    // Every policy held slots on more than one node: `reject`, `wait`, `wait` with
    // `reserve_ms`, `max_slots = 2`, the global scope (one user's tabs on two nodes, too) and
    // `reserve_ms`; P1 judges them all from the records.
    for policy in ["call:*", "game:*", "line:*", "pair:*", "queue:*", "room:*"] {
        let used = outcome.summary.policies.get(policy).cloned().unwrap_or_default();
        assert!(used.nodes.len() >= 2, "{policy} granted on {:?}", used.nodes);
    }
    assert!(outcome.summary.policies["game:*"].users_across_nodes >= 1, "a global scope across nodes");
    if !outcome.passed() {
        let path = std::env::temp_dir().join(format!("roster-chaos-{SEED}.jsonl"));
        let _ = std::fs::write(&path, outcome.history_lines());
        panic!("{}\nhistory: {}", outcome.failure_report(3000), path.display());
    }
}
