//! `roster-chaos`: start 3 or 5 `roster` nodes with a fault proxy on every link, run a seeded
//! workload and a seeded fault schedule against them, and judge P1–P5 over the whole history.
//! The engine is `roster_testkit::chaos`; how to use it and how to reproduce a failure:
//! `docs/testing.md`, "Chaos: roster-chaos".

use clap::Parser;
use roster_testkit::chaos::{self, ChaosSpec};
use roster_testkit::Timings;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Kill, hang and cut real Roster nodes under a real client workload; check P1–P5.
///
/// Prints a line per fault, then a summary table; writes the history as JSON lines. Exit
/// status: 0 no violation, 1 violations (the seed, the schedule and the history around each
/// are printed), 2 bad flags or a run that could not be made.
#[derive(Debug, Parser)]
#[command(name = "roster-chaos", version)]
struct Args {
    /// Nodes: 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The seed of the workload and the fault schedule (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How long the fault schedule runs, in minutes (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Users.
    #[arg(long, default_value_t = 12)]
    users: usize,
    /// Tabs per user.
    #[arg(long, default_value_t = 2)]
    tabs: usize,
    /// Anonymous viewers.
    #[arg(long, default_value_t = 3)]
    anonymous: usize,
    /// Workload operations per second.
    #[arg(long, default_value_t = 8.0)]
    ops_per_second: f64,
    /// Added to every timing bound the checker judges, in ms.
    #[arg(long, default_value_t = 500)]
    margin_ms: u64,
    /// The product's default timings instead of the fast test timings.
    #[arg(long)]
    default_timings: bool,
    /// Where to write the history (JSON lines); default: `roster-chaos-<seed>.jsonl` in the
    /// current directory.
    #[arg(long)]
    history: Option<PathBuf>,
    /// The `roster` executable (default: the one beside this executable).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Judge a history file written by an earlier run again (P2–P5, with this run's timing
    /// flags) and list every violation, one line each; starts no node.
    #[arg(long, value_name = "HISTORY")]
    check: Option<PathBuf>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    if a.nodes != 3 && a.nodes != 5 {
        eprintln!("roster-chaos: --nodes must be 3 or 5");
        return ExitCode::from(2);
    }
    if !a.minutes.is_finite() || a.minutes <= 0.0 || a.users == 0 || a.tabs == 0 {
        eprintln!("roster-chaos: --minutes, --users and --tabs must be above 0");
        return ExitCode::from(2);
    }
    if let Some(path) = &a.check {
        return recheck(path, &a);
    }
    let binary = match a.server_bin.clone() {
        Some(b) => b,
        None => match std::env::current_exe() {
            Ok(exe) => exe.with_file_name("roster"),
            Err(e) => {
                eprintln!("roster-chaos: cannot find this executable ({e}): pass --server-bin");
                return ExitCode::from(2);
            }
        },
    };
    if !binary.exists() {
        eprintln!("roster-chaos: no roster binary at {} (cargo build --bin roster, or --server-bin)", binary.display());
        return ExitCode::from(2);
    }
    let seed = a.seed.unwrap_or_else(|| roster_testkit::unix_ms() % 1_000_000);
    let mut spec = ChaosSpec::new(binary, a.nodes, seed, Duration::from_secs_f64(a.minutes * 60.0));
    if a.default_timings {
        spec.timings = Timings::DEFAULT;
    }
    spec.workload.users = a.users;
    spec.workload.tabs = a.tabs;
    spec.workload.anonymous = a.anonymous;
    spec.workload.ops_per_second = a.ops_per_second;
    spec.margin_ms = a.margin_ms;
    let outcome = match chaos::run(&spec, &mut |line| println!("{line}")) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("roster-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let path = a.history.unwrap_or_else(|| PathBuf::from(format!("roster-chaos-{seed}.jsonl")));
    match std::fs::write(&path, outcome.history_lines()) {
        Ok(()) => println!("history: {} ({} events)", path.display(), outcome.events.len()),
        Err(e) => eprintln!("roster-chaos: cannot write the history to {}: {e}", path.display()),
    }
    println!("\n{}", outcome.summary.table());
    if outcome.passed() {
        println!("seed {seed}: 0 violations of P1–P5");
        ExitCode::SUCCESS
    } else {
        println!("{}", outcome.failure_report(3000));
        println!(
            "seed {seed}: {} violation(s). Repeat: cargo run -p roster-testkit --bin roster-chaos -- --nodes {} --seed {seed} --minutes {}",
            outcome.violations.len(),
            a.nodes,
            a.minutes
        );
        ExitCode::from(1)
    }
}

/// `--check HISTORY`: read the JSON lines back and judge them again.
fn recheck(path: &std::path::Path, a: &Args) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("roster-chaos: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str::<chaos::Event>(line) {
            Ok(e) => events.push(e),
            Err(e) => {
                eprintln!("roster-chaos: {}:{}: not an event: {e}", path.display(), n + 1);
                return ExitCode::from(2);
            }
        }
    }
    let t = if a.default_timings { Timings::DEFAULT } else { Timings::FAST };
    let params = chaos::Params {
        heartbeat_timeout_ms: t.heartbeat_timeout_ms,
        ping_ms: 1000,
        join_wait_ms: 5000,
        resume_bound_ms: 500,
        purge_bound_ms: 1000,
        stable_ms: chaos::stable_ms(&t),
        margin_ms: a.margin_ms,
    };
    let violations = chaos::check(&events, &params);
    for v in &violations {
        println!("{v}");
    }
    println!("{} events, {} violation(s) of P2–P5", events.len(), violations.len());
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
