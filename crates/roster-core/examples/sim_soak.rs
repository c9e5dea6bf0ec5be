//! The simulation soak: many random seeds of one cluster size, each the same run as the test
//! suite's seeds tests play (`SimParams::random`), spread over every core. Run it in release
//! mode through `scripts/soak.sh` (docs/simulation.md, "Soak").
//!
//! Prints a progress line every `--every` seeds, every failing seed at once with the command
//! that replays it, and a summary; exits with status 1 if any seed failed.

use clap::Parser;
use roster_core::sim::batch::{run_batch, BatchOptions, SeedFailure};
use roster_core::sim::SimParams;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

/// Soak the simulation with many seeds.
#[derive(Parser, Debug)]
struct Args {
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// How many seeds.
    #[arg(long, default_value_t = 50_000)]
    count: u64,
    /// Worker threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Stop after this many failing seeds.
    #[arg(long, default_value_t = 1_000)]
    max_failures: usize,
    /// A progress line every this many seeds.
    #[arg(long, default_value_t = 5_000)]
    every: u64,
    /// Append every failing seed (one line each) to this file.
    #[arg(long)]
    failures_file: Option<std::path::PathBuf>,
}

fn replay_command(seed: u64, nodes: usize) -> String {
    let env = if nodes == 3 { format!("SEED={seed}") } else { format!("SEED={seed} NODES={nodes}") };
    format!("{env} cargo test -p roster-core --test simulation seeds_{nodes}_nodes -- --nocapture")
}

fn main() {
    let args = Args::parse();
    let started = Instant::now();
    let out = Mutex::new(std::io::stdout());
    let failures_file = args.failures_file.as_ref().map(|path| {
        Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display())),
        )
    });
    let nodes = args.nodes;
    let last = args.from + args.count;
    let say = |line: String| {
        let mut out = out.lock().expect("stdout");
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    say(format!("soak: {} seeds {}..{last}, {nodes} nodes", args.count, args.from));
    let progress = |done: u64, failure: Option<&SeedFailure>| {
        if let Some(f) = failure {
            let line = format!(
                "FAILED seed {} ({} nodes, {}): {}\n  replay: {}",
                f.seed(),
                nodes,
                f.kinds().join("+"),
                f.first().lines().next().unwrap_or_default(),
                replay_command(f.seed(), nodes)
            );
            say(line);
            if let Some(file) = &failures_file {
                let mut file = file.lock().expect("failures file");
                let _ = writeln!(file, "{nodes} {} {}", f.seed(), f.kinds().join("+"));
            }
        }
        if done.is_multiple_of(args.every) {
            let secs = started.elapsed().as_secs_f64();
            say(format!("  {done} seeds in {secs:.0} s ({:.1} ms per seed)", secs * 1000.0 / done as f64));
        }
    };
    let mut options = BatchOptions { max_failures: args.max_failures, progress: &progress, ..BatchOptions::default() };
    if let Some(t) = args.threads {
        options.threads = t;
    }
    let batch = run_batch(args.from..last, |seed| SimParams::random(seed, nodes), &options);
    let secs = started.elapsed().as_secs_f64();
    let failed: Vec<String> =
        batch.failures.iter().map(|f| format!("{} ({})", f.seed(), f.kinds().join("+"))).collect();
    say(format!(
        "soak done: {} seeds, {nodes} nodes, {} threads, {secs:.0} s wall, {} failing seeds{}{}",
        batch.runs,
        options.threads,
        failed.len(),
        if failed.is_empty() { "" } else { ": " },
        failed.join(", ")
    ));
    say(format!("figures:\n{}", batch.figures.summary()));
    if !batch.failures.is_empty() {
        std::process::exit(1);
    }
}
