//! The deterministic simulation of `NodeState` clusters (DESIGN.md, "Tests, in layers", 2).
//!
//! - `seeds_3_nodes`, `seeds_5_nodes`: random runs (faults, loss, drift, clients) checked for
//!   P1 and the lease invariants. `SEEDS=N` runs N seeds instead of the default; `SEED=k`
//!   runs seed k alone and prints its whole trace (`NODES=5` for five nodes).
//! - `ablation_*`: each safeguard of DESIGN.md switched off, and the simulation must find the
//!   P1 violation it prevents within a bounded number of seeds; the seed is printed. Rule 9's
//!   duplicate-tab cleanup, which random seeds do not reach, is shown by a script instead.
//! - `scenario_*`: DESIGN.md's "Why each rule" runs as scripts; P1 holds with the safeguard on
//!   and breaks with it off.
//!
//! A failure prints the seed, the violation and the last trace lines. Figures print with
//! `--nocapture`; a summary line always goes to stderr.

use roster_core::{NodeState, OnConflict, Record, Safeguards};
use roster_sim::batch::{run_batch, BatchOptions, SeedFailure};
use roster_sim::scenario::{run_scenario, ScenarioReport, Step, Step::*};
use roster_sim::{FaultMix, Figures, NetworkParams, RunReport, SimParams, Simulation, Violation, WorkloadMix};
use std::io::Write;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// A line that reaches the terminal or the CI log even while the test harness captures
/// output (`eprintln!` is captured; a write to the stderr handle is not).
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Run `make(seed)` for `seeds`, spread over the available cores, until `stop` says a report is
/// what was searched for or `max_failures` runs failed. Returns the failing
/// reports, earliest seed first, and the merged figures. A seed whose run panics fails the
/// test at once, naming the seed.
fn run_seeds(
    seeds: impl Iterator<Item = u64> + Send,
    make: impl Fn(u64) -> SimParams + Sync,
    stop: impl Fn(&RunReport) -> bool + Sync,
    max_failures: usize,
) -> (Vec<RunReport>, Figures) {
    let options = BatchOptions { max_failures, stop: &stop, ..BatchOptions::default() };
    let batch = run_batch(seeds, make, &options);
    let mut reports = Vec::new();
    for f in batch.failures {
        match f {
            SeedFailure::Violations(r) => reports.push(*r),
            SeedFailure::Panicked { seed, message } => panic!("seed {seed} panicked: {message}"),
        }
    }
    (reports, batch.figures)
}

/// Replay a run with its whole trace (routine traffic too with `routine`).
fn replay(params: SimParams, routine: bool) -> RunReport {
    Simulation::<NodeState>::run(SimParams { trace_lines: usize::MAX, trace_routine: routine, ..params })
}

fn print_figures(name: &str, figures: &Figures) {
    println!("== {name}\n{}", figures.summary());
    eprintln!(
        "{name}: {} runs, {} grants, new-tab wait after home death p50 {:?} ms, node_isolated with healthy gateway {}, killed gateway's slots free after p50 {:?} ms",
        figures.runs,
        figures.grants,
        roster_sim::checker::percentile(&figures.new_tab_wait_after_home_death_ms, 50),
        figures.isolated_healthy_gateway,
        roster_sim::checker::percentile(&figures.killed_gateway_slot_free_ms, 50),
    );
}

/// Seeds that once broke a rule, kept in every run: 3 nodes.
const REGRESSIONS_3: &[u64] = &[
    2436,       // a grant given back, then a late copy of it accepted (rule 14)
    44057,      // a scan that saw one tab twice closed the older only at its end (rule 9, soak)
    3384660610, // a goodbye from a life up less than isolation_ms let a scan skip its earlier life (rule 16)
    // Presence: an unanswered snapshot ask waited a whole window (soak).
    5823,
    6632,
    10063,
    11893,
    12482,
    15144,
    16970,
    30317,
    32562,
    35083,
    47493,
    // User actors: a new home started a user from a state handed over before another home ran
    // it (stale-handover; docs/slots-and-leases.md, "User activations under the lease"). Found
    // on main before rule 15 (seeds 1002893 and 2000701; 3384660713 and 3384661252 of the
    // window 3384660000); they no longer reach that path since, and the rule's own test is
    // scenario_a_state_handed_over_before_another_home_ran_the_user_is_stale (activations.rs).
    1002893,
    2000701,
    3384660713,
    3384661252,
    // The checker: a validation answered in the millisecond its home then dropped the lease
    // (records in that order) was judged as answered without the lease (window 2777370000).
    2777370438,
    // The checker: one tab on two connections after a change of home, within what a change of
    // home allows but beyond the bound for a home that stays (docs/simulation.md, "How long
    // one tab may have two connections"; windows of de95508 and 1b1371b).
    5119700793,
    10089310547,
];
/// Seeds that once broke a rule, kept in every run: 5 nodes.
const REGRESSIONS_5: &[u64] = &[
    12442, // a scan that saw one tab twice closed the older only at its end (rule 9, soak)
    // Presence: an unanswered snapshot ask waited a whole window (soak).
    8571, 9673, 10839, 14164, 14742, 16552, 19063, 19654, 19951, 22237, 22964, 23376, 26184, 26480, 40647, 40714, 41775,
    42121, 43186, 44965,
];

/// Seeds of the moving window each run adds to the fixed set. Both seeds tests, fixed sets and
/// windows, measured at `b773b53` in the test profile: 50.8 s wall and 99 s of CPU on the
/// 2-core machine (load about 3), within the 60 s allowed (docs/simulation.md).
const WINDOW_3: u64 = 3000;
const WINDOW_5: u64 = 1000;

/// Where this run's window of new seeds starts, and why: `SIM_SEED_WINDOW` if set (to replay
/// another run's window), else derived from the commit checked out (`git rev-parse HEAD`),
/// else from the date. Windows start at `10⁹ + k × 10⁴` (k < 10⁶), above the fixed set and
/// any soak range, and never overlap.
fn seed_window() -> (u64, String) {
    if let Some(base) = env_u64("SIM_SEED_WINDOW") {
        return (base, "SIM_SEED_WINDOW".into());
    }
    let base = |k: u64| 1_000_000_000 + (k % 1_000_000) * 10_000;
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| h.len() >= 15);
    if let Some(head) = head {
        if let Ok(k) = u64::from_str_radix(&head[..15], 16) {
            return (base(k), format!("commit {}", &head[..12]));
        }
    }
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let day = secs / 86_400;
    (base(day.wrapping_mul(2_654_435_761)), format!("day {day} since 1970"))
}

/// The command that replays one seed of a seeds test with its whole trace.
fn replay_command(seed: u64, nodes: usize) -> String {
    let env = if nodes == 3 { format!("SEED={seed}") } else { format!("SEED={seed} NODES={nodes}") };
    format!("{env} cargo test -p roster-sim --test simulation seeds_{nodes}_nodes -- --nocapture")
}

/// The seeds test: a fixed set (`0..fixed` and the regression seeds) plus a window of new
/// seeds that moves with every commit; or what `SEEDS` (with `SEEDS_FROM`) / `SEED` ask for.
fn seeds_test(nodes: usize, fixed: u64, regressions: &[u64], window: u64) {
    if let Some(seed) = env_u64("SEED") {
        if env_u64("NODES").unwrap_or(3) as usize != nodes {
            return;
        }
        let report = replay(SimParams::random(seed, nodes), true);
        for line in &report.trace {
            println!("{line}");
        }
        for v in &report.violations {
            println!("VIOLATION {v}");
        }
        print_figures(&format!("seed {seed}, {nodes} nodes"), &report.figures);
        assert!(
            report.passed(),
            "seed {seed}: {} violations, first: {}",
            report.violations.len(),
            report.violations[0]
        );
        return;
    }
    let seeds: Vec<u64> = match env_u64("SEEDS") {
        Some(count) => {
            let from = env_u64("SEEDS_FROM").unwrap_or(0);
            announce(&format!("seeds_{nodes}_nodes: seeds {from}..{} (SEEDS, SEEDS_FROM)", from + count));
            (from..from + count).collect()
        }
        None => {
            let (base, why) = seed_window();
            announce(&format!(
                "seeds_{nodes}_nodes: fixed seeds 0..{fixed} and {regressions:?}; new seeds {base}..{} \
                 (from {why}; SIM_SEED_WINDOW={base} plays this window again)",
                base + window
            ));
            (0..fixed).chain(regressions.iter().copied()).chain(base..base + window).collect()
        }
    };
    let count = seeds.len();
    let max_failures = env_u64("MAX_FAILURES").unwrap_or(20) as usize;
    let (failures, figures) =
        run_seeds(seeds.into_iter(), |seed| SimParams::random(seed, nodes), |_| false, max_failures);
    print_figures(&format!("{count} seeds, {nodes} nodes"), &figures);
    if let Some(first) = failures.first() {
        let listed: Vec<String> = failures
            .iter()
            .map(|r| {
                let mut kinds: Vec<&str> = r.violations.iter().map(|v| v.kind()).collect();
                kinds.sort();
                kinds.dedup();
                format!("seed {} ({}): replay with {}", r.seed, kinds.join("+"), replay_command(r.seed, nodes))
            })
            .collect();
        for line in &listed {
            announce(&format!("FAILED {line}"));
        }
        let replayed = replay(SimParams::random(first.seed, nodes), false);
        panic!(
            "{} failing seeds (of {count}; at most MAX_FAILURES={max_failures} collected):\n{}\n\nfirst failure, replayed:\n{}",
            failures.len(),
            listed.join("\n"),
            replayed.failure_text(),
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    // Seeds are only worth printing if they replay: nothing in the nodes or the simulator may
    // depend on hash order, addresses or time.
    let run = || replay(SimParams::random(7, 3), true);
    let (a, b) = (run(), run());
    assert_eq!(a.stats, b.stats);
    assert_eq!(a.trace.len(), b.trace.len());
    if let Some(i) = (0..a.trace.len()).find(|&i| a.trace[i] != b.trace[i]) {
        panic!("seed 7 diverged at trace line {i}:\n{}\n{}", a.trace[i], b.trace[i]);
    }
    assert_eq!(a.history.records, b.history.records);
}

#[test]
fn seeds_3_nodes() {
    seeds_test(3, 1000, REGRESSIONS_3, WINDOW_3);
}

#[test]
fn seeds_5_nodes() {
    seeds_test(5, 200, REGRESSIONS_5, WINDOW_5);
}

/// The regression seeds as they were found: validations and broadcasts came later, and their
/// messages change every random run, so the seeds tests above replay other runs under these
/// numbers. Here they run without that traffic (the runs that broke a rule, still checked).
#[test]
fn regression_seeds_replay_as_found() {
    let as_found = |seed: u64, nodes: usize| {
        let params = SimParams::random(seed, nodes);
        SimParams { workload: WorkloadMix { api_step_ms: None, ..params.workload }, ..params }
    };
    for (nodes, seeds) in [(3, REGRESSIONS_3), (5, REGRESSIONS_5)] {
        let (failures, figures) =
            run_seeds(seeds.iter().copied(), |seed| as_found(seed, nodes), |_| false, seeds.len());
        assert_eq!(figures.runs, seeds.len() as u64, "every regression seed ran ({nodes} nodes)");
        let failed: Vec<u64> = failures.iter().map(|r| r.seed).collect();
        assert!(failed.is_empty(), "regression seeds failing as found ({nodes} nodes): {failed:?}");
    }
}

/// One node's restart leaves the other nodes' leases alone. A restarted grantor refuses
/// renewals with its boot floor (above the wall clock, so above every epoch in use); holders
/// learned that epoch and then refused their own renewals, so every lease in the cluster ended
/// about `lease_ms` after any restart and every partition changed home.
#[test]
fn a_restart_ends_no_other_lease() {
    let steps = [FORM, Crash("n2"), Advance(50), Restart("n2"), Advance(8000)];
    let r = run_scenario::<NodeState>(SimParams::scripted(1, 3), &steps);
    assert!(r.report.passed() && r.failed_expectations.is_empty(), "{}", r.text());
    let others = |n: &roster_core::Incarnation| n.node.as_str() != "n2";
    let held_before: Vec<(roster_core::PartitionId, u64)> = r
        .report
        .history
        .records
        .iter()
        .filter(|nr| others(&nr.node))
        .filter_map(|nr| match nr.record {
            Record::LeaseHeld { at, partition, epoch, .. } if at <= 5000 => Some((partition, epoch)),
            _ => None,
        })
        .collect();
    assert!(!held_before.is_empty(), "n0 and n1 hold leases once the cluster formed");
    let dropped: Vec<String> = r
        .report
        .history
        .records
        .iter()
        .filter(|nr| others(&nr.node))
        .filter_map(|nr| match nr.record {
            Record::LeaseDropped { at, partition, epoch } if held_before.contains(&(partition, epoch)) => {
                Some(format!("{} dropped {partition:?}@{epoch} at {at}", nr.node.node.as_str()))
            }
            _ => None,
        })
        .collect();
    assert!(dropped.is_empty(), "n2's restart ended leases of n0 and n1: {dropped:?}");
}

// ---- ablation ---------------------------------------------------------------------------

/// One safeguard switched off: its name, the switch, the fault mix biased towards the runs it
/// protects, and how many seeds the search may take.
struct Ablation {
    name: &'static str,
    off: fn(&mut Safeguards),
    make: fn(u64) -> SimParams,
    max_seeds: u64,
    /// The violations that count as this safeguard's failure: P1 for most.
    caught: fn(&Violation) -> bool,
}

fn biased(seed: u64, nodes: usize, faults: FaultMix) -> SimParams {
    SimParams { faults, ..SimParams::random(seed, nodes) }
}

const ABLATIONS: &[Ablation] = &[
    Ablation {
        name: "revoke_before_grant",
        off: |s| s.revoke_before_grant = false,
        // No faults at all: every cross-node takeover overlaps without the rule.
        make: |seed| {
            let mut p = biased(seed, 3, FaultMix::none());
            p.config = roster_sim::sim_config(3, OnConflict::Takeover, 0, 1);
            p
        },
        max_seeds: 200,
        caught: Violation::is_p1,
    },
    Ablation {
        name: "keep_replaced",
        off: |s| s.keep_replaced = false,
        make: |seed| biased(seed, 3, FaultMix::cuts(3)),
        max_seeds: 2000,
        caught: Violation::is_p1,
    },
    Ablation {
        name: "quiet_after_restart",
        off: |s| s.quiet_after_restart = false,
        make: |seed| biased(seed, 3, FaultMix::restarts(3)),
        max_seeds: 2000,
        caught: Violation::is_p1,
    },
    Ablation {
        name: "scan_wait_from_last_heartbeat",
        off: |s| s.scan_wait_from_last_heartbeat = false,
        // Homes that change (restarts, handovers) and gateways whose answers stop reaching
        // the new home after its lease started (one-way cuts).
        make: |seed| biased(seed, 3, FaultMix { cut_one_way: 8, ..FaultMix::restarts(3) }),
        max_seeds: 2000,
        caught: Violation::is_p1,
    },
    Ablation {
        name: "scan_dedup_tabs",
        off: |s| s.scan_dedup_tabs = false,
        // Many reconnects whose closes are lost, and homes that change soon after.
        make: |seed| {
            let mut p = biased(seed, 3, FaultMix { cut_one_way: 4, ..FaultMix::restarts(3) });
            p.network.loss = 0.2;
            p.workload.weights.resume = 80;
            p.workload.step_ms = (20, 400);
            p
        },
        max_seeds: 2000,
        caught: Violation::is_p1,
    },
    Ablation {
        name: "fence_stale_epochs",
        off: |s| s.fence_stale_epochs = false,
        // Homes that change while alive (handover to a restarted preferred node), grants late
        // on the wire, and a few users with many tabs joining often.
        make: |seed| {
            let mut p = biased(seed, 3, FaultMix { pause: 0, cut_one_way: 0, cut_both: 0, ..FaultMix::restarts(3) });
            p.network = NetworkParams { spike_chance: 0.15, fifo: false, ..p.network };
            p.workload.users = 3;
            p.workload.tabs_per_user = 3;
            p.workload.step_ms = (20, 300);
            p
        },
        max_seeds: 2000,
        caught: Violation::is_p1,
    },
    Ablation {
        name: "scan_quiet_after_start",
        off: |s| s.scan_quiet_after_start = false,
        make: |seed| biased(seed, 3, FaultMix::restarts(3)),
        max_seeds: 2000,
        caught: Violation::is_p1,
    },
    Ablation {
        name: "lease_needs_majority",
        off: |s| s.lease_needs_majority = false,
        // Splits and cuts: a node that hears nobody takes its preferred partitions alone.
        make: |seed| biased(seed, 3, FaultMix::cuts(3)),
        max_seeds: 500,
        caught: Violation::is_p1,
    },
    Ablation {
        name: "keep_in_doubt",
        off: |s| s.keep_in_doubt = false,
        // Gateways cut off from homes while their clients hold, then other tabs join.
        make: |seed| biased(seed, 3, FaultMix::cuts(3)),
        max_seeds: 1000,
        caught: Violation::is_p1,
    },
    Ablation {
        name: "horizon_from_send_time",
        off: |s| s.horizon_from_send_time = false,
        // Gateways cut off from a home (spikes make an echo arrive late) while other tabs join.
        make: |seed| biased(seed, 3, FaultMix::cuts(3)),
        max_seeds: 1000,
        caught: Violation::is_p1,
    },
    Ablation {
        name: "epochs_start_above_floor",
        off: |s| s.epochs_start_above_floor = false,
        // Restarts, quick ones too: a node that forgot every epoch grants again.
        make: |seed| biased(seed, 3, FaultMix::restarts(3)),
        max_seeds: 1000,
        caught: |v| v.is_p1() || matches!(v, Violation::EpochNotIncreasing { .. } | Violation::DuplicateToken { .. }),
    },
    Ablation {
        name: "validate_reads_current_slots",
        off: |s| s.validate_reads_current_slots = false,
        // No faults: takeovers, and validations of tokens clients were granted (the old
        // ones too) on random nodes.
        make: |seed| {
            let mut p = biased(seed, 3, FaultMix::none());
            p.config = roster_sim::sim_config(3, OnConflict::Takeover, 0, 1);
            p.workload.api_step_ms = Some((20, 200));
            p
        },
        max_seeds: 200,
        caught: |v| matches!(v, Violation::WrongValidation { .. }),
    },
];

fn ablation_named(name: &str) -> &'static Ablation {
    ABLATIONS.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("no ablation named {name}"))
}

/// Search seeds until one breaks P1 with the safeguard off while the same seed passes with
/// every safeguard on (so the break is this safeguard's doing, not another bug's); print it.
/// `ABLATION_FROM=k` starts the search at seed k.
fn ablation(name: &str) {
    let a = ablation_named(name);
    let first = env_u64("ABLATION_FROM").unwrap_or(0);
    let weakened = |seed| {
        let mut p = (a.make)(seed);
        (a.off)(&mut p.safeguards);
        p
    };
    let whole_passes = |seed| Simulation::<NodeState>::run((a.make)(seed)).passed();
    let caught = |r: &RunReport| r.violations.iter().any(a.caught);
    let attributable = |r: &RunReport| caught(r) && whole_passes(r.seed);
    let (found, _) = run_seeds(first..first + a.max_seeds, weakened, attributable, usize::MAX);
    let Some(hit) = found.iter().find(|r| caught(r) && whole_passes(r.seed)) else {
        let mut other: Vec<&str> = found.iter().flat_map(|r| r.violations.iter().map(Violation::kind)).collect();
        other.sort();
        other.dedup();
        let both: Vec<u64> = found.iter().filter(|r| caught(r)).map(|r| r.seed).collect();
        panic!(
            "{name} off: no violation of its own in {} seeds (violations seen: {other:?}; \
             also with every safeguard on at seeds {both:?})",
            a.max_seeds
        );
    };
    let v = hit.violations.iter().find(|v| (a.caught)(v));
    println!("{name} off: seed {} is caught (and passes with every safeguard on):\n{}", hit.seed, v.expect("caught"));
    eprintln!("ablation {name}: caught at seed {} (replay: ABLATION={name} SEED={} [WEAK=1])", hit.seed, hit.seed);
}

/// `ABLATION=name SEED=k [WEAK=1] cargo test --test simulation replay_ablation_seed -- --nocapture`
/// prints the whole trace of one ablation run (with the safeguard off if `WEAK=1`).
#[test]
fn replay_ablation_seed() {
    let (Ok(name), Some(seed)) = (std::env::var("ABLATION"), env_u64("SEED")) else { return };
    let a = ablation_named(&name);
    let mut params = (a.make)(seed);
    if env_u64("WEAK") == Some(1) {
        (a.off)(&mut params.safeguards);
    }
    let report = replay(params, true);
    for line in &report.trace {
        println!("{line}");
    }
    for v in &report.violations {
        println!("VIOLATION {v}");
    }
}

/// A home that answers validations from the tokens it granted rather than its current slots
/// says `true` for a token taken over since: the checker judges every `true` answer.
#[test]
fn ablation_validate_reads_current_slots() {
    ablation("validate_reads_current_slots");
}

#[test]
fn ablation_lease_needs_majority() {
    ablation("lease_needs_majority");
}

#[test]
fn ablation_keep_in_doubt() {
    ablation("keep_in_doubt");
}

#[test]
fn ablation_horizon_from_send_time() {
    ablation("horizon_from_send_time");
}

#[test]
fn ablation_epochs_start_above_floor() {
    ablation("epochs_start_above_floor");
}

#[test]
fn ablation_revoke_before_grant() {
    ablation("revoke_before_grant");
}

#[test]
fn ablation_keep_replaced() {
    ablation("keep_replaced");
}

#[test]
fn ablation_quiet_after_restart() {
    ablation("quiet_after_restart");
}

#[test]
fn ablation_scan_wait_from_last_heartbeat() {
    ablation("scan_wait_from_last_heartbeat");
}

/// Rule 9's duplicate-tab cleanup off. Random seeds rarely build the case (a resume's close
/// must miss every retry and the home must die before the next one, while the old gateway
/// stays healthy): 2,000 biased seeds find none. So this ablation plays it as a script, with
/// the close held on the wire (late, not lost) across the home's death: alice's tab a resumes
/// from n1 onto n2, and her home n0 dies before its close reaches n1; the new home n2 scans n1
/// (tab a, token `.1`) and n2 (tab a, token `.2`). With the dedup it closes the `.1` connection when
/// its scan ends (6.6 s after the resume, within the 7,560 ms a resume may take); without it
/// both connections hold until the old close finally arrives: at seed 1, 11,491 ms (8,035 ms
/// are allowed once n2 has both answers: `checker::duplicate_tab_allowed_until`).
/// `ABLATION_SEARCH=1` also runs the random-seed search.
#[test]
fn ablation_scan_dedup_tabs() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: Some("n2"), preferred: None },
        Join { client: "A", node: "n1", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        HoldAll { from: "n0", to: "n1", kind: "SlotClose" },
        Resume { client: "A", node: "n2", new: "A2" },
        AwaitJoined { client: "A2", max_ms: 1000 },
        Advance(100),
        Crash("n0"),
        AwaitHome { user: "alice", node: "n2", max_ms: 5000 },
        Advance(9000),
        // Only the scan can have closed A by now: the dead home's close is still held.
        ExpectEnded("A"),
        ExpectJoined("A2"),
        ReleaseHeld,
        Advance(5000),
    ];
    let weak = scenario_pair("rule 9 (duplicate tabs, close late)", 3, &steps, |s| s.scan_dedup_tabs = false);
    assert!(duplicate_tab_of(&weak, "alice"), "without the dedup one tab lives on two connections\n{}", weak.text());
    eprintln!("ablation scan_dedup_tabs: scripted duplicate tab found with the dedup off");
    if env_u64("ABLATION_SEARCH") == Some(1) {
        ablation("scan_dedup_tabs");
    }
}

#[test]
fn ablation_scan_quiet_after_start() {
    ablation("scan_quiet_after_start");
}

// ---- scripted scenarios ---------------------------------------------------------------------

/// Play a script with every safeguard on (P1 must hold, expectations must be met), and with
/// `off` applied; returns the weakened run's report for the caller to judge.
fn scenario_pair(name: &str, nodes: usize, steps: &[Step], off: fn(&mut Safeguards)) -> ScenarioReport {
    let params = SimParams::scripted(1, nodes);
    let safe = run_scenario::<NodeState>(params.clone(), steps);
    println!("== {name}, every safeguard on\n  {}", safe.script.join("\n  "));
    assert!(safe.report.passed(), "{name}: P1 must hold with every safeguard on\n{}", safe.text());
    assert!(safe.failed_expectations.is_empty(), "{name}: expectations\n{}", safe.text());
    let mut weak_params = params;
    off(&mut weak_params.safeguards);
    let weak = run_scenario::<NodeState>(weak_params, steps);
    let found: Vec<String> = weak.report.violations.iter().map(|v| v.to_string()).collect();
    println!("== {name}, safeguard off: {} violations\n{}", found.len(), found.join("\n"));
    weak
}

/// The cluster forms: leases held, start-up quiet over.
const FORM: Step = Advance(5000);

#[test]
fn scenario_rule_6_takeover_revokes_before_it_grants() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: None, preferred: None },
        Join { client: "A", node: "n1", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        Join { client: "B", node: "n0", user: "alice", tab: "b", topic: "room:1" },
        AwaitJoined { client: "B", max_ms: 1000 },
        ExpectEnded("A"),
        Advance(1000),
    ];
    let weak = scenario_pair("rule 6", 3, &steps, |s| s.revoke_before_grant = false);
    assert!(weak.report.found_p1(), "without rule 6 the takeover must overlap\n{}", weak.text());
}

#[test]
fn scenario_rule_7_resume_keeps_the_replaced_record() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: None, preferred: None },
        Join { client: "A", node: "n1", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        Cut("n1", "*"),
        Resume { client: "A", node: "n2", new: "A2" },
        AwaitJoined { client: "A2", max_ms: 1000 },
        Join { client: "B", node: "n2", user: "alice", tab: "b", topic: "room:1" },
        Advance(1500),
        ExpectNotJoined("B"),
        Advance(8000),
    ];
    let weak = scenario_pair("rule 7", 3, &steps, |s| s.keep_replaced = false);
    assert!(weak.report.found_p1(), "without rule 7 B overlaps A@n1\n{}", weak.text());
}

#[test]
fn scenario_rule_9_waits_from_the_last_heartbeat_of_a_silent_gateway() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: Some("n2"), preferred: None },
        Join { client: "A", node: "n1", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        // n1 hears the new home and answers its scans, but the answers never arrive: the new
        // home keeps hearing (and echoing) a gateway that, to it, never answered.
        DropAll { from: "n1", to: "n2", kind: "ScanReply" },
        Crash("n0"),
        AwaitHome { user: "alice", node: "n2", max_ms: 5000 },
        Join { client: "B", node: "n2", user: "alice", tab: "b", topic: "room:1" },
        Advance(9000),
    ];
    let weak = scenario_pair("rule 9 (later of)", 3, &steps, |s| s.scan_wait_from_last_heartbeat = false);
    assert!(weak.report.found_p1(), "counting from the lease start frees A early\n{}", weak.text());
}

/// The old home's grant, late on the wire, reaches a gateway after the new home's scan.
///
/// n2 is cut off while the cluster runs, so n0 takes alice's partition, which prefers n2; when
/// the cut heals, n2 answers n0's scan at once (it did not restart, so it has no start-up
/// quiet), and n0 hands the partition over two leases later. In between, tab A joins on n1 and
/// n0 grants it, but the grant is held on the wire (and n1's joins never reach n2). n2 takes the
/// partition, scans n0 and n1 (nobody holds alice's slot), and only then does the old grant
/// arrive; B joins on n2 and is granted. With the fence off, n1 accepts the stale grant: at
/// seed 1, A (token `.1` of n0's epoch) and B (n2's epoch) both hold for 2,057 ms, until A's
/// horizon passes. With the fence, n1 ignores it and A keeps waiting.
#[test]
fn scenario_rule_10_a_stale_grant_is_ignored_after_a_scan() {
    let steps = [
        FORM,
        Cut("n2", "*"),
        Advance(3000),
        PickUser { alias: "alice", home: "n0", next: Some("n2"), preferred: Some("n2") },
        HealAll,
        // n0 hands the partition to n2 about 2 × lease_ms after it hears n2 again.
        Advance(3000),
        // n0's grants to n1 are late on the wire; n1's joins never reach the new home.
        HoldAll { from: "n0", to: "n1", kind: "SlotGrant" },
        DropAll { from: "n1", to: "n2", kind: "SlotJoin" },
        Join { client: "A", node: "n1", user: "alice", tab: "a", topic: "room:1" },
        AwaitHome { user: "alice", node: "n2", max_ms: 3000 },
        // n2 scans n0 and n1: nobody holds alice's slot. Then the old grant arrives.
        Advance(300),
        ReleaseHeld,
        Advance(20),
        Join { client: "B", node: "n2", user: "alice", tab: "b", topic: "room:1" },
        AwaitJoined { client: "B", max_ms: 1000 },
        ExpectNotJoined("A"),
        Advance(6000),
    ];
    let weak = scenario_pair("rule 10 (stale grant)", 3, &steps, |s| s.fence_stale_epochs = false);
    let two_tabs = weak.report.violations.iter().any(|v| matches!(v, Violation::SingleSlot { .. }));
    assert!(two_tabs, "without the fence the stale grant is accepted and two tabs hold\n{}", weak.text());
    // The random search no longer finds this in 2,000 biased seeds: a waiting join is sent
    // to a new home at once, whose grant usually arrives before the stale one (the script
    // above loses those joins). `ABLATION_SEARCH=1` runs it anyway.
    if env_u64("ABLATION_SEARCH") == Some(1) {
        ablation("fence_stale_epochs");
    }
}

/// A grantor killed and restarted at once has forgotten its grants.
///
/// n0 is alice's home, granted by n0, n1 and n2. n2 is cut off from n0, so n0 renews with n1
/// alone while n2's grant to n0 expires. n1 is killed and restarted 50 ms later: its new
/// incarnation hears nobody yet, asks for every partition, and grants itself; n2, whose grant
/// to n0 has expired, grants it too. With rule 2 off that is a majority while n0's lease (renewed
/// by n1's previous life) is still valid: at seed 1, n0 and n1 both hold alice's partition p5
/// (and p0) for 1,765 ms. With rule 2, n1 grants nothing for `lease_ms × (1 + max_drift)`, n0's
/// lease runs out unrenewed, and only then does the partition move.
#[test]
fn scenario_rule_2_a_restarted_grantor_grants_nothing_at_first() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: Some("n2"), preferred: None },
        Join { client: "A", node: "n0", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        // n2 stops hearing n0 and stops renewing it; n1 still renews n0 until it is killed,
        // after n2's last grant to n0 has expired.
        Cut("n0", "n2"),
        Advance(1700),
        Crash("n1"),
        Advance(50),
        Restart("n1"),
        Advance(8000),
    ];
    let weak = scenario_pair("rule 2", 3, &steps, |s| s.quiet_after_restart = false);
    let alice = weak.partition_of("alice").expect("alice is named");
    let two_homes = weak
        .report
        .violations
        .iter()
        .any(|v| matches!(v, Violation::TwoLeaseHolders { partition, .. } if *partition == alice));
    assert!(two_homes, "without rule 2 two nodes hold alice's partition\n{}", weak.text());
}

#[test]
fn scenario_rule_10_scan_answers_vouch_for_one_incarnation() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: None, preferred: None },
        Join { client: "A", node: "n0", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        Crash("n0"),
        Restart("n0"),
        Advance(3500),
        Join { client: "B", node: "n1", user: "alice", tab: "b", topic: "room:1" },
        Advance(8000),
    ];
    let weak = scenario_pair("rule 10 (per incarnation)", 3, &steps, |s| s.scan_quiet_after_start = false);
    assert!(weak.report.found_p1(), "the new incarnation vouches for the old one's slot\n{}", weak.text());
}

/// Whether the run shows one tab of `alias` on two connections beyond the resume bound.
fn duplicate_tab_of(r: &ScenarioReport, alias: &str) -> bool {
    let user = r.users.get(alias).expect("the script names the user");
    r.report.violations.iter().any(|v| matches!(v, Violation::StaleDuplicateTab { user: u, .. } if u == user))
}

/// The longest time two connections of one tab of `alias` both held, by the records.
fn one_tab_overlap_ms(r: &ScenarioReport, alias: &str) -> u64 {
    let user = r.users.get(alias).expect("the script names the user");
    let (intervals, _) = roster_sim::checker::holding_intervals(&r.report.history);
    let mine: Vec<_> = intervals.iter().filter(|i| &i.user == user && i.start < i.end).collect();
    let mut longest = 0;
    for (k, a) in mine.iter().enumerate() {
        for b in &mine[k + 1..] {
            if a.tab == b.tab && a.scope == b.scope && a.conn != b.conn {
                longest = longest.max(a.end.min(b.end).saturating_sub(a.start.max(b.start)));
            }
        }
    }
    longest
}

/// A resume's close to the old socket is lost, then the home dies: the new home's scan finds
/// tab a on n1 (token `.1`) and on n2 (token `.2`) and closes the older one. Without the
/// dedup both live on: at seed 1, 18,144 ms (8,035 ms are allowed once n2 has both answers).
#[test]
fn scenario_rule_9_a_scan_closes_duplicate_tabs() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: Some("n2"), preferred: None },
        Join { client: "A", node: "n1", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        // The resume's close to the old socket is lost, then the home changes.
        DropAll { from: "n0", to: "n1", kind: "SlotClose" },
        Resume { client: "A", node: "n2", new: "A2" },
        AwaitJoined { client: "A2", max_ms: 1000 },
        Advance(100),
        Crash("n0"),
        AwaitHome { user: "alice", node: "n2", max_ms: 5000 },
        Advance(12_000),
        // The new home's scan closed the old socket (and only it).
        ExpectEnded("A"),
        ExpectJoined("A2"),
    ];
    let weak = scenario_pair("rule 9 (duplicate tabs)", 3, &steps, |s| s.scan_dedup_tabs = false);
    assert!(duplicate_tab_of(&weak, "alice"), "without the dedup one tab lives on two connections\n{}", weak.text());
}

// ---- rule 14: a gateway never takes back a token it gave up ------------------------------

/// Whether the run shows two tabs of `alias` holding one slot at once.
fn two_tabs_of(r: &ScenarioReport, alias: &str) -> bool {
    let user = r.users.get(alias).expect("the script names the user");
    r.report.violations.iter().any(|v| matches!(v, Violation::SingleSlot { user: u, .. } if u == user))
}

/// Seed 2436 (3 nodes), as a script: a grant that nobody waits for is given back, and a
/// second copy of it, late on the wire, reaches the same socket while it joins again.
///
/// Tab A's join on n1 is sent twice (the retry after `heartbeat_ms`) and both grants of `.1`
/// are held on the wire; A leaves before either arrives. The first copy finds nobody waiting:
/// n1 gives `.1` back and n0 forgets it. A joins room:1 again on the same socket (n0 grants
/// `.2`, held too), and the second copy of `.1` arrives while that join waits. Without the
/// rule n1 accepts `.1`, a token n0 no longer knows; B's takeover on n2 revokes `.2` (which
/// n1 never held) and is granted: A and B hold together until the run ends. With the rule
/// n1 refuses `.1`; the revoke of `.2` ends A's join and B alone holds.
#[test]
fn scenario_rule_14_a_grant_given_back_is_never_accepted_later() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: None, preferred: None },
        HoldAll { from: "n0", to: "n1", kind: "SlotGrant" },
        Join { client: "A", node: "n1", user: "alice", tab: "a", topic: "room:1" },
        // The join is sent, then sent again one heartbeat later: two grants of .1 are held.
        Advance(300),
        Leave("A"),
        // The first copy finds nobody waiting and is given back; n0 forgets .1.
        ReleaseFirstHeld,
        Advance(50),
        Rejoin("A"),
        Advance(20),
        // The second copy arrives while the new join waits (its own grant, .2, is held).
        ReleaseFirstHeld,
        Advance(20),
        ExpectNotJoined("A"),
        Join { client: "B", node: "n2", user: "alice", tab: "b", topic: "room:1" },
        AwaitJoined { client: "B", max_ms: 1000 },
        ExpectEnded("A"),
        ReleaseHeld,
        Advance(6000),
    ];
    let weak = scenario_pair("rule 14 (grant given back)", 3, &steps, |s| s.fence_released_tokens = false);
    assert!(two_tabs_of(&weak, "alice"), "without the rule n1 takes .1 back and two tabs hold\n{}", weak.text());
}

/// A leave's release is late on the wire and the same socket joins again: the join overtakes
/// the release, and n0, which still counts `.1` for that socket, grants `.1` again. Without
/// the rule n1 accepts it; then the release arrives, n0 forgets `.1`, and B is granted on n2
/// while A still holds `.1`. With the rule n1 refuses `.1` (it released it), asks again once
/// n0 has the release, and is granted `.2`, which B's takeover then revokes.
#[test]
fn scenario_rule_14_a_left_slot_is_not_taken_back_before_its_release_lands() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: None, preferred: None },
        Join { client: "A", node: "n1", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        HoldAll { from: "n1", to: "n0", kind: "SlotReleased" },
        Leave("A"),
        Advance(20),
        Rejoin("A"),
        Advance(100),
        ExpectNotJoined("A"),
        ReleaseHeld,
        AwaitJoined { client: "A", max_ms: 4000 },
        Join { client: "B", node: "n2", user: "alice", tab: "b", topic: "room:1" },
        AwaitJoined { client: "B", max_ms: 1000 },
        ExpectEnded("A"),
        Advance(6000),
    ];
    let weak = scenario_pair("rule 14 (left slot)", 3, &steps, |s| s.fence_released_tokens = false);
    assert!(two_tabs_of(&weak, "alice"), "without the rule n1 takes .1 back and two tabs hold\n{}", weak.text());
}

/// A slot whose horizon passed is released, and the same socket joins again before the home
/// has that release: n1 stops hearing n0 (a one-way cut), so A's horizon passes
/// (`node_isolated`) while n0, which still hears n1, keeps `.1` held. A joins again; once the
/// cut heals the join reaches n0 before the release (held on the wire), and n0 grants `.1`
/// again with a fresh echo. Without the rule n1 accepts it; the release then lands, n0 forgets
/// `.1`, and B is granted while A holds. With the rule n1 refuses `.1` and is granted `.2` once
/// n0 has the release.
#[test]
fn scenario_rule_14_an_expired_slot_is_not_taken_back_before_its_release_lands() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: None, preferred: None },
        Join { client: "A", node: "n1", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        CutOneWay("n0", "n1"),
        Advance(4500),
        ExpectEnded("A"),
        HoldAll { from: "n1", to: "n0", kind: "SlotReleased" },
        Rejoin("A"),
        Advance(100),
        HealAll,
        Advance(600),
        ExpectNotJoined("A"),
        ReleaseHeld,
        AwaitJoined { client: "A", max_ms: 4000 },
        Join { client: "B", node: "n2", user: "alice", tab: "b", topic: "room:1" },
        AwaitJoined { client: "B", max_ms: 1000 },
        ExpectEnded("A"),
        Advance(6000),
    ];
    let weak = scenario_pair("rule 14 (expired slot)", 3, &steps, |s| s.fence_released_tokens = false);
    assert!(two_tabs_of(&weak, "alice"), "without the rule n1 takes .1 back and two tabs hold\n{}", weak.text());
}

// ---- rules 7 and 8, found by seed 1522 of the fence_stale_epochs search -------------------

/// Rule 7 holds for every grant of a tab, not only for a resume: a tab that is being revoked
/// (a takeover waits for it) is not resumed, yet a join of that tab is granted at once, since
/// the tab already counts. Tab a holds on n1; B's takeover revokes it, and the revoke is slow;
/// a reconnects on n2 (A2) and again on n0 (A3). Without the rule both A2 and A3 hold, one tab
/// on two live connections with nothing to close either (at seed 1, until the run ends). With
/// it, A3's grant closes A2 as a resume does.
#[test]
fn scenario_rule_7_every_grant_of_a_tab_closes_its_other_connections() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: None, preferred: None },
        Join { client: "A", node: "n1", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        HoldAll { from: "n0", to: "n1", kind: "SlotRevoke" },
        Join { client: "B", node: "n2", user: "alice", tab: "b", topic: "room:1" },
        Advance(50),
        ExpectNotJoined("B"),
        Resume { client: "A", node: "n2", new: "A2" },
        AwaitJoined { client: "A2", max_ms: 1000 },
        Resume { client: "A2", node: "n0", new: "A3" },
        AwaitJoined { client: "A3", max_ms: 1000 },
        Advance(100),
        ExpectEnded("A2"),
        ReleaseHeld,
        Advance(9000),
    ];
    let weak = scenario_pair("rule 7 (every grant)", 3, &steps, |s| s.close_tab_elsewhere_on_grant = false);
    assert!(duplicate_tab_of(&weak, "alice"), "without the rule tab a lives on A2 and A3\n{}", weak.text());
}

/// Rule 8: a home that stops hearing a gateway drops that gateway's waiting joins. B's
/// takeover waits at n0 for A's revoke (held on the wire) when B's gateway n1 is killed and
/// restarted. Without the rule n0 admits B's join once A's revoke is confirmed, granting tab b
/// to a dead incarnation: nobody confirms that record and, made after n1 went unheard, it is
/// never in doubt; C's takeover then waits for it and times out (`wait_timed_out`), and so
/// would every other tab of alice's at this home. With the rule C is granted at once.
#[test]
fn scenario_rule_8_a_home_drops_the_waiting_joins_of_a_gateway_it_stops_hearing() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: None, preferred: None },
        Join { client: "A", node: "n2", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        HoldAll { from: "n0", to: "n2", kind: "SlotRevoke" },
        Join { client: "B", node: "n1", user: "alice", tab: "b", topic: "room:1" },
        Advance(50),
        ExpectNotJoined("B"),
        Crash("n1"),
        Advance(50),
        Restart("n1"),
        Advance(1500),
        ReleaseHeld,
        Advance(500),
        ExpectEnded("A"),
        Join { client: "C", node: "n2", user: "alice", tab: "c", topic: "room:1" },
        AwaitJoined { client: "C", max_ms: 3000 },
        Advance(6000),
    ];
    let params = SimParams::scripted(1, 3);
    let safe = run_scenario::<NodeState>(params.clone(), &steps);
    println!("== rule 8 (waiting joins), every safeguard on\n  {}", safe.script.join("\n  "));
    assert!(safe.report.passed() && safe.failed_expectations.is_empty(), "{}", safe.text());
    let mut weak_params = params;
    weak_params.safeguards.drop_joins_of_unheard_gateways = false;
    let weak = run_scenario::<NodeState>(weak_params, &steps);
    println!("== rule 8 (waiting joins), safeguard off\n  {}", weak.script.join("\n  "));
    let c_waits = weak.failed_expectations.iter().any(|e| e.contains("C not joined"));
    assert!(c_waits, "without the rule C waits for a record of a dead gateway\n{}", weak.text());
}

/// A scan closes a tab's older connection as soon as its answers show the tab twice, not only
/// when the scan is over (3-node soak seed 44057, 7,968 ms; 5-node seed 12442, 7,742 ms).
///
/// n2 is cut off, so n0 takes alice's partition, which prefers n2; once the cut heals n0 hands
/// it over to n2 two leases later. Meanwhile tab a holds on n2 and resumes on n1; n0's close
/// to the old socket on n2 is lost. n2 becomes home and scans: n2 reports a (`.1`), n1 reports
/// a (`.2`), n0's answer never arrives, so the scan runs `isolation_ms`. n2 re-attached its own
/// old socket and its echoes keep it valid; n2 dies 2.3 s later, before its scan ends, and the
/// old socket holds until its horizon. Without the rule both connections hold for 10,343 ms
/// (9,634 ms are allowed: `isolation_ms` and a little after n2 heard both, which is how long
/// the old socket may outlive a home that knows both; it died 800 ms in when the checker
/// allowed 7,560 ms from the resume whatever the homes did); with it n2 closes the old one as
/// soon as both answers are in.
#[test]
fn scenario_rule_9_a_scan_closes_a_duplicate_tab_as_soon_as_it_sees_it() {
    let steps = handed_over_to_n2_after_a_lost_close(
        "n2",
        "n1",
        &[],
        &[Advance(200), ExpectEnded("A"), ExpectJoined("A2"), Advance(2300), Crash("n2"), Advance(10_000)],
    );
    let weak = scenario_pair("rule 9 (dedup at once)", 3, &steps, |s| s.scan_dedup_at_once = false);
    assert!(duplicate_tab_of(&weak, "alice"), "without the rule one tab lives on two connections\n{}", weak.text());
}

/// A scan's early close of a tab's older connection is sent again every heartbeat while the
/// scan runs (found while proving how long one tab may have two connections: 3-node seed
/// 10089310547 lost its early close and the retry came only with the scan's end, 1.5 s later).
///
/// As above, but the old connection is on n1 and the new one on n2: n0's close to n1 is lost,
/// the partition is handed over to n2, whose scan hears both at once while n0's answer never
/// comes (the scan runs `isolation_ms`); its early close to n1 is held on the wire (lost); n1
/// keeps getting n2's echoes, and is paused 3 s into the scan. Without the retry the old
/// connection holds until its horizon, 4 s after the pause: both held for about 7.5 s after
/// n2 heard both, where 5,540 ms are allowed; with it the next heartbeat's close ends it.
#[test]
fn scenario_rule_9_an_early_close_is_retried_while_the_scan_runs() {
    let steps = handed_over_to_n2_after_a_lost_close(
        "n1",
        "n2",
        &[HoldNext { from: "n2", to: "n1", kind: "SlotClose" }],
        &[Advance(1000), ExpectEnded("A"), ExpectJoined("A2"), Advance(2000), Pause("n1", 6000), Advance(10_000)],
    );
    let weak = scenario_pair("rule 9 (early close retried)", 3, &steps, |s| s.retry_early_closes = false);
    assert!(duplicate_tab_of(&weak, "alice"), "without the retry one tab lives on two connections\n{}", weak.text());
}

/// The two scripts above: n2 is cut off, so n0 takes alice's partition, which prefers n2, and
/// hands it over to n2 once the cut heals. Tab a holds on `old` and resumes on `new`, n0's
/// close to `old` is lost, and n0's scan answers to n2 too (so n2's scan runs `isolation_ms`);
/// `hold` comes before the resume and `then` after n2 has become alice's home.
fn handed_over_to_n2_after_a_lost_close(
    old: &'static str,
    new: &'static str,
    hold: &[Step],
    then: &[Step],
) -> Vec<Step> {
    let mut steps = vec![
        FORM,
        Cut("n2", "*"),
        Advance(3000),
        PickUser { alias: "alice", home: "n0", next: None, preferred: Some("n2") },
        HealAll,
        Join { client: "A", node: old, user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        DropAll { from: "n0", to: old, kind: "SlotClose" },
        DropAll { from: "n0", to: "n2", kind: "ScanReply" },
    ];
    steps.extend_from_slice(hold);
    steps.extend([
        Resume { client: "A", node: new, new: "A2" },
        AwaitJoined { client: "A2", max_ms: 1000 },
        AwaitHome { user: "alice", node: "n2", max_ms: 6000 },
    ]);
    steps.extend_from_slice(then);
    steps
}

// ---- presence, found by the soak ------------------------------------------------------------

/// A node whose snapshot ask goes unanswered asks again once the peer has echoed a heartbeat
/// sent after the ask, not only after `heartbeat_timeout_ms` (3-node soak seeds 5823, 6632,
/// 10063, 11893, 12482, 15144, 16970, 30317, 32562, 35083 and 47493: under 20 % loss a lost
/// delta late in the quiet period left a ghost or a missing entry past the check).
///
/// A's socket on n1 closes while n1's deltas to n0 are lost, so n0 still shows A; n0 finds
/// the gap from n1's heartbeats and asks for n1's snapshot, whose answer is lost too. With
/// the rule n0 asks again one echo later (at seed 1: asks 265 ms after the close, again 200 ms
/// later, and no longer shows A 470 ms after the close);
/// without it the next ask waits for the window, and at 1.1 s n0 still shows the ghost.
#[test]
fn scenario_presence_an_unanswered_snapshot_ask_is_repeated_after_one_echo() {
    let steps = [
        FORM,
        Join { client: "A", node: "n1", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        Advance(300),
        ExpectPresence { node: "n0", client: "A", shown: true },
        DropAll { from: "n1", to: "n0", kind: "Delta" },
        HoldNext { from: "n1", to: "n0", kind: "SnapshotChunk" },
        Close("A"),
        Advance(50),
        StopDropping,
        Advance(1100),
        ExpectPresence { node: "n0", client: "A", shown: false },
        Advance(3000),
        ExpectPresence { node: "n0", client: "A", shown: false },
        ExpectPresence { node: "n2", client: "A", shown: false },
    ];
    let params = SimParams::scripted(1, 3);
    let safe = run_scenario::<NodeState>(params.clone(), &steps);
    println!("== presence (ask again), every safeguard on\n  {}", safe.script.join("\n  "));
    assert!(safe.report.passed() && safe.failed_expectations.is_empty(), "{}", safe.text());
    let mut weak_params = params;
    weak_params.safeguards.ask_again_after_echo = false;
    let weak = run_scenario::<NodeState>(weak_params, &steps);
    println!("== presence (ask again), safeguard off\n  {}", weak.script.join("\n  "));
    let ghost = weak.failed_expectations.iter().any(|e| e.contains("n0 still shows A"));
    assert!(ghost, "without the rule n0 still shows A at 1.1 s\n{}", weak.text());
    assert_eq!(weak.failed_expectations.len(), 1, "and converges later\n{}", weak.text());
}

// ---- rule 11 ------------------------------------------------------------------------------

/// Live connections on healthy gateways whose users' home is killed: count their slots lost
/// to `node_isolated`, over a few crash instants (the loss depends on where in the lease and
/// heartbeat cycles the home dies).
fn isolated_after_home_death(isolation_ms: u64) -> (usize, Vec<ScenarioReport>) {
    let mut lost = 0;
    let mut reports = Vec::new();
    for offset in [0, 70, 140, 210, 280, 350, 420] {
        let mut params = SimParams::scripted(11 + offset, 3);
        params.config.cluster.isolation_ms = isolation_ms;
        let steps = [
            Advance(isolation_ms.max(4000) + 1000),
            PickUser { alias: "alice", home: "n0", next: None, preferred: None },
            Join { client: "A", node: "n1", user: "alice", tab: "a", topic: "room:1" },
            Join { client: "B", node: "n2", user: "alice", tab: "b", topic: "room:2" },
            AwaitJoined { client: "A", max_ms: 1000 },
            AwaitJoined { client: "B", max_ms: 1000 },
            Advance(1000 + offset),
            Crash("n0"),
            Advance(15_000),
        ];
        let report = run_scenario::<NodeState>(params, &steps);
        lost += report
            .report
            .history
            .records
            .iter()
            .filter(|r| matches!(&r.record, Record::Ended { why, .. } if why == "node_isolated"))
            .filter(|r| r.node.node.as_str() != "n0")
            .count();
        reports.push(report);
    }
    (lost, reports)
}

#[test]
fn rule_11_live_connections_keep_their_slots_through_a_home_death() {
    let (lost, reports) = isolated_after_home_death(4000);
    for r in &reports {
        assert!(r.report.passed() && r.failed_expectations.is_empty(), "{}", r.text());
    }
    assert_eq!(lost, 0, "with the timing rule, no live connection loses its slot\n{}", reports[0].text());
}

#[test]
fn ablation_timing_rule_loses_live_connections() {
    let isolation_ms = env_u64("ISOLATION_MS").unwrap_or(2400);
    let mut config = roster_sim::sim_config(3, OnConflict::Takeover, 0, 1);
    config.cluster.isolation_ms = isolation_ms;
    assert!(config.validate().is_err(), "{isolation_ms} ms must break the timing rule");
    let (lost, reports) = isolated_after_home_death(isolation_ms);
    println!("isolation_ms {isolation_ms}: {lost} live connections lost their slots when their home died");
    eprintln!("ablation timing rule: {lost} live connections lost their slots with isolation_ms {isolation_ms}");
    assert!(lost > 0, "below the timing rule live connections must lose their slots\n{}", reports[0].text());
}

// ---- a restarted gateway's first isolation_ms -----------------------------------------------

/// A rolling restart, with the multi-process tests' timings (heartbeats 100 ms, leases 1 s,
/// `isolation_ms` 1,677 ms). n1 is shut down and n0 takes alice's partition, which prefers n1;
/// n1 comes back, and n0 will hand the partition back two leases after it hears n1 again.
/// `gap_ms` later n2 (alice's gateway) is shut down and restarted, and alice's tab resumes on
/// n2 at once. With a gap just under two leases, n0 grants the resume and hands the partition
/// to n1 about 100 ms later, while n2 is in its first `isolation_ms` (rule 10: its scan answers
/// cannot vouch for its previous life yet).
fn restart_resume_steps(gap_ms: u64) -> Vec<Step> {
    vec![
        FORM,
        PickUser { alias: "alice", home: "n1", next: Some("n0"), preferred: Some("n1") },
        Join { client: "A", node: "n2", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        Shutdown("n1"),
        AwaitHome { user: "alice", node: "n0", max_ms: 2000 },
        Restart("n1"),
        Advance(gap_ms),
        Shutdown("n2"),
        Restart("n2"),
        Resume { client: "A", node: "n2", new: "A2" },
        AwaitJoined { client: "A2", max_ms: 3000 },
        AwaitHome { user: "alice", node: "n1", max_ms: 3000 },
        // Long past the resumed slot's first horizon (`isolation_ms` after the grant).
        Advance(5000),
        ExpectJoined("A2"),
        ExpectPresence { node: "n1", client: "A2", shown: true },
    ]
}

/// The multi-process tests' timings (`roster_testkit::Timings::FAST`).
fn fast_params(seed: u64) -> SimParams {
    let mut params = SimParams::scripted(seed, 3);
    let c = &mut params.config.cluster;
    (c.heartbeat_ms, c.heartbeat_timeout_ms, c.lease_ms, c.isolation_ms) = (100, 500, 1000, 1677);
    params.config.validate().expect("the multi-process tests' timings are valid");
    params
}

/// The slots of a run that ended `node_isolated`.
fn isolated_slots(r: &ScenarioReport) -> Vec<String> {
    let records = r.report.history.records.iter();
    records
        .filter(|x| matches!(&x.record, Record::Ended { why, .. } if why == "node_isolated"))
        .map(|x| format!("{} {:?}", x.node, x.record))
        .collect()
}

/// Whether n2's last incarnation re-attached a slot of alice's partition to a new home's
/// epoch while it was still in its first `isolation_ms` (a partial scan answer, rule 15).
fn reattached_in_first_isolation(r: &ScenarioReport) -> bool {
    let alice = r.partition_of("alice").expect("the script names alice");
    let isolation_ms = r.report.history.config.cluster.isolation_ms;
    let Some(n2) = r.report.history.lives.iter().rfind(|l| l.incarnation.node.as_str() == "n2") else {
        return false;
    };
    r.report.history.records.iter().any(|x| {
        x.node == n2.incarnation
            && matches!(x.record, Record::Reattached { at, partition, .. }
                if partition == alice && at < n2.started + isolation_ms)
    })
}

/// Rule 15 (found by `a_rolling_restart_brings_every_phoenix_client_back_by_itself_and_doubles_no_slot`
/// in `crates/roster-server/tests/cluster_slots.rs`): a slot granted to a restarted gateway in
/// its first `isolation_ms` survives its partition's move to another home. The gap between
/// the two restarts is swept over the 150 ms before the handover, as the window where the
/// resume is granted by n0 just before it hands over moves with the cluster's start-up.
/// Without the partial scan answer, n2 ignores n1's scans until its `isolation_ms` is over, the
/// slot stays attached to n0's epoch, which nobody announces any more, and its horizon (n0's
/// last echo plus `isolation_ms`) passes before n2 may answer: A2 is revoked `node_isolated`
/// with no fault anywhere and, by phoenix.js semantics, never rejoins (P2, P5). With it, no
/// gap loses a slot, and in some the slot is re-attached in n2's first `isolation_ms`.
#[test]
fn scenario_rule_15_a_slot_resumed_on_a_restarted_gateway_survives_its_home_moving() {
    let gaps: Vec<u64> = (1850..=2000).step_by(10).collect();
    let (mut lost, mut reattached_early) = (Vec::new(), Vec::new());
    for &gap_ms in &gaps {
        let steps = restart_resume_steps(gap_ms);
        let params = fast_params(1);
        let name = format!("rule 15 (gap {gap_ms} ms)");
        let safe = run_scenario::<NodeState>(params.clone(), &steps);
        assert!(safe.report.passed(), "{name}: every promise holds\n{}", safe.text());
        assert!(safe.failed_expectations.is_empty(), "{name}: expectations\n{}", safe.text());
        assert_eq!(isolated_slots(&safe), Vec::<String>::new(), "{name}: no slot is revoked node_isolated");
        if reattached_in_first_isolation(&safe) {
            reattached_early.push(gap_ms);
        }
        let mut weak_params = params;
        weak_params.safeguards.answer_scans_partly_at_start = false;
        let weak = run_scenario::<NodeState>(weak_params, &steps);
        let a2_isolated =
            weak.failed_expectations.iter().any(|e| e.contains("A2 is not joined") && e.contains("node_isolated"));
        if a2_isolated {
            assert!(weak.report.passed(), "{name}: P1 holds without rule 15 too\n{}", weak.text());
            assert_eq!(isolated_slots(&weak).len(), 1, "{name}: A2's slot alone is lost\n{}", weak.text());
            if lost.is_empty() {
                println!("== {name}, rule 15 off\n  {}\n{:?}", weak.script.join("\n  "), isolated_slots(&weak));
            }
            lost.push(gap_ms);
        }
    }
    println!("gaps {gaps:?}\nwithout rule 15, A2 lost node_isolated at {lost:?}\nwith it, re-attached in n2's first isolation_ms at {reattached_early:?}");
    assert!(!lost.is_empty(), "without rule 15 some gap must lose A2 to node_isolated");
    assert!(!reattached_early.is_empty(), "with rule 15 some gap must re-attach A2 in n2's first isolation_ms");
}

// ---- rule 16: goodbye ---------------------------------------------------------------------

/// The instant (simulated ms) of the first script line containing `what`.
fn instant_of(r: &ScenarioReport, what: &str) -> u64 {
    let line = r.script.iter().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no line {what:?}\n{}", r.text()));
    line.split_whitespace().next().and_then(|t| t.parse().ok()).expect("a script line starts with its instant")
}

/// A graceful shutdown of a node that is both home and gateway (rule 16). alice is homed on
/// n0 and joined there; bob, homed on n0 too, holds a slot through n1; carol, homed on n1,
/// is joined on n0. n0 shuts down: alice and carol rejoin their tab on n2. With the goodbye,
/// the new home (n1, the direct successor of n0's lease) does not wait for n0 in its scan,
/// and alice is back within a few heartbeats; without it, n1 waits `isolation_ms` for an
/// answer that never comes and then until n0's slots surely expired. bob's slot, held
/// elsewhere, is re-attached by the scan and never revoked; carol (whose home lives) rejoins
/// at once either way. Returns the report and alice's rejoin wait.
fn graceful_shutdown(say_goodbye: bool) -> (ScenarioReport, u64) {
    let mut params = SimParams::scripted(15, 3);
    params.safeguards.say_goodbye = say_goodbye;
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n0", next: Some("n1"), preferred: None },
        PickUser { alias: "carol", home: "n1", next: None, preferred: None },
        Join { client: "A", node: "n0", user: "alice", tab: "a", topic: "room:1" },
        Join { client: "B", node: "n1", user: "alice", tab: "b", topic: "room:2" },
        Join { client: "C", node: "n0", user: "carol", tab: "c", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        AwaitJoined { client: "B", max_ms: 1000 },
        AwaitJoined { client: "C", max_ms: 1000 },
        Shutdown("n0"),
        Join { client: "A2", node: "n2", user: "alice", tab: "a", topic: "room:1" },
        Join { client: "C2", node: "n2", user: "carol", tab: "c", topic: "room:1" },
        AwaitJoined { client: "C2", max_ms: 1000 },
        AwaitJoined { client: "A2", max_ms: 10_000 },
        ExpectJoined("B"),
        Advance(5000),
        ExpectJoined("B"),
        ExpectJoined("A2"),
    ];
    let report = run_scenario::<NodeState>(params, &steps);
    let wait = instant_of(&report, "A2 joined") - instant_of(&report, "shut down n0");
    (report, wait)
}

#[test]
fn scenario_rule_16_a_goodbye_lets_the_users_of_a_shut_down_home_rejoin_at_once() {
    let (with, fast) = graceful_shutdown(true);
    assert!(with.report.passed() && with.failed_expectations.is_empty(), "{}", with.text());
    let (without, slow) = graceful_shutdown(false);
    assert!(without.report.passed() && without.failed_expectations.is_empty(), "{}", without.text());
    println!("alice's rejoin after n0's graceful shutdown: {fast} ms with the goodbye, {slow} ms without");
    eprintln!("rule 16: rejoin after a graceful shutdown {fast} ms with the goodbye, {slow} ms without");
    let isolation_ms = with.report.history.config.cluster.isolation_ms;
    // Without it the new home's scan waits `isolation_ms` for n0; with it, nothing does.
    assert!(slow >= isolation_ms, "without the goodbye the scan waits isolation_ms: {slow} ms\n{}", without.text());
    assert!(fast < isolation_ms / 2, "with the goodbye nothing waits for n0: {fast} ms\n{}", with.text());
    let revoked = |r: &ScenarioReport| {
        r.report
            .history
            .records
            .iter()
            .any(|x| matches!(&x.record, Record::Ended { why, .. } if why == "node_isolated"))
    };
    assert!(!revoked(&with), "no slot is revoked node_isolated\n{}", with.text());
}

/// A goodbye vouches for the incarnation that sent it, not for the node's next life (rule
/// 15). n0, a gateway of alice (homed on n1), shuts down; its goodbye to n1 is late on the
/// wire. n0 restarts and alice's tab a joins on it again. Then the old goodbye arrives. With
/// the safeguard, n1 frees the old life's records (none are left) and the takeover by tab b
/// on n2 revokes the new one first; acting on the node by name instead, n1 frees the new
/// life's record and grants b while a still holds on n0.
#[test]
fn scenario_rule_16_a_late_goodbye_frees_nothing_of_the_next_life() {
    let steps = [
        FORM,
        PickUser { alias: "alice", home: "n1", next: None, preferred: None },
        Join { client: "A", node: "n0", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        HoldAll { from: "n0", to: "n1", kind: "Goodbye" },
        Shutdown("n0"),
        Advance(200),
        Restart("n0"),
        Advance(4000),
        Join { client: "A2", node: "n0", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A2", max_ms: 3000 },
        ReleaseHeld,
        Advance(50),
        Join { client: "B", node: "n2", user: "alice", tab: "b", topic: "room:1" },
        AwaitJoined { client: "B", max_ms: 3000 },
        ExpectEnded("A2"),
        Advance(5000),
    ];
    let weak = scenario_pair("rule 16 (one incarnation)", 3, &steps, |s| s.goodbye_for_one_incarnation = false);
    assert!(weak.report.found_p1(), "a goodbye acting by name frees the next life's slot\n{}", weak.text());
}

/// Rule 16's scan skip, switched off: a new home skips any gateway that said goodbye. Seed
/// 3384660610 of the 3-node seeds (found by an earlier version of the rule that did not ask
/// whether the departed life had been up `isolation_ms`): n1 crashed while its tab of u1 held
/// a slot of another home, restarted, took that partition, and shut down 3 s later with a
/// goodbye; the next home skipped n1 in its scan and granted a third tab of u1 (`max_slots`
/// 2) while the crashed life's slot was valid until its horizon, 134 ms later. With the
/// safeguard the departed life, up less than `isolation_ms`, vouches for no earlier one, and
/// the scan waits as after a crash.
#[test]
fn ablation_goodbye_scan_needs_direct_successor() {
    let seed = 3384660610;
    // The seed's run as it was found: without validations and broadcasts (their messages
    // would change the run).
    let found = || SimParams {
        workload: WorkloadMix { api_step_ms: None, ..SimParams::random(seed, 3).workload },
        ..SimParams::random(seed, 3)
    };
    let whole = Simulation::<NodeState>::run(found());
    assert!(whole.passed(), "seed {seed} must pass with every safeguard on:\n{}", whole.failure_text());
    let mut params = found();
    params.safeguards.goodbye_scan_needs_direct_successor = false;
    let weak = Simulation::<NodeState>::run(params);
    assert!(weak.found_p1(), "seed {seed}: skipping any departed gateway must break P1:\n{}", weak.failure_text());
    eprintln!("ablation goodbye_scan_needs_direct_successor: caught at seed {seed}");
}

/// 3-node seed 5119700793 as a script (`docs/simulation.md`, "How long one tab may have two
/// connections"): tab a of alice holds on n0 (home n1); n1 is cut off from both peers, and
/// 230 ms later the tab resumes on n1, which grants it at once from its still-valid lease
/// (rule 7); the close to n0 is lost in the cut. n1's lease lapses, n2 takes the partition
/// and n0 answers its scan, so the old connection is re-attached and renewed by n2's echoes
/// (n2 cannot know the new one). The cut heals 3,880 ms after the resume, just before the new
/// connection's horizon: n1 answers n2's scan, n2 closes the old connection, but n0 is paused
/// 28 ms later and holds it to its horizon: one tab on two connections for 7,688 ms, longer
/// than a resume may take while its home stays (7,560 ms), within what the change of home
/// allows (`isolation_ms` and a little after n1's answer re-attached the new connection to n2:
/// `checker::duplicate_tab_allowed_until`).
#[test]
fn scenario_seed_5119700793_a_resume_granted_by_a_cut_off_home_meets_a_late_scan_answer() {
    resume_on_a_cut_off_home_then_pause_the_old_gateway(&[Cut("n1", "*")], &[Advance(3880)]);
}

/// The same race at its widest, found by sweeping this script's two delays: the cut from n1 to
/// n0 is one-way at first, so n1 keeps its lease (n2 renews it) while its close and its echoes
/// to n0 are lost; n1 is cut off entirely 1,300 ms after the resume, n2 takes the partition
/// and re-attaches the old connection just before its horizon, and the cut heals 5,100 ms
/// later, just before the new connection's horizon; n0 is paused 28 ms after: 10,101 ms with
/// one tab on two connections, about `lease_ms × (1 + max_drift) + 2 × isolation_ms × (1 +
/// max_drift)` (10,100 ms), within the change of home's allowance.
#[test]
fn scenario_seed_5119700793_at_its_widest_with_a_one_way_cut_first() {
    resume_on_a_cut_off_home_then_pause_the_old_gateway(
        &[CutOneWay("n1", "n0")],
        &[Advance(1300), Cut("n1", "*"), Advance(5100)],
    );
}

/// The two scripts of seed 5119700793: alice's tab holds on n0 (home n1), n1 is `cut` off, the
/// tab resumes on n1, `then` the cut heals and n0 is paused 28 ms later. The overlap must go
/// past the bound for a home that stays (the race happened) and stay within what the change of
/// home allows (the run passes).
fn resume_on_a_cut_off_home_then_pause_the_old_gateway(cut: &[Step], then: &[Step]) {
    let mut steps = vec![
        FORM,
        PickUser { alias: "alice", home: "n1", next: Some("n2"), preferred: None },
        Join { client: "A", node: "n0", user: "alice", tab: "a", topic: "room:1" },
        AwaitJoined { client: "A", max_ms: 1000 },
        Advance(100),
    ];
    steps.extend_from_slice(cut);
    steps.extend([
        Advance(230),
        Resume { client: "A", node: "n1", new: "A2" },
        AwaitJoined { client: "A2", max_ms: 500 },
    ]);
    steps.extend_from_slice(then);
    steps.extend([HealAll, Advance(28), Pause("n0", 4800), Advance(10_000)]);
    let run = run_scenario::<NodeState>(SimParams::scripted(1, 3), &steps);
    println!("{}", run.script.join("\n"));
    assert!(run.failed_expectations.is_empty(), "{}", run.text());
    let overlap = one_tab_overlap_ms(&run, "alice");
    let kept_home = roster_sim::checker::resume_overlap_bound_ms(&run.report.history.config);
    assert!(overlap > kept_home, "the race needs the change of home: {overlap} ms\n{}", run.text());
    assert!(run.report.passed(), "one tab on two connections beyond the bound\n{}", run.text());
    assert_eq!(run.report.figures.one_tab_overlap_after_new_home_ms, vec![overlap]);
}
