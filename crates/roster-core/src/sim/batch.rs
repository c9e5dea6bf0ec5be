//! Many seeds at once, spread over threads: what the test suite's seed tests, the ablation
//! searches and the soak (`examples/sim_soak.rs`) run.
//!
//! A seed whose run panics (a bug in a node or in the simulator) is reported with its seed
//! like any failing seed, instead of taking the whole batch down with an anonymous panic.

use super::{Figures, RunReport, SimParams, Simulation};
use crate::NodeState;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// How one failing seed failed.
#[derive(Debug)]
pub enum SeedFailure {
    /// The run ended and its checks found violations.
    Violations(Box<RunReport>),
    /// The run panicked; the message.
    Panicked {
        /// The seed.
        seed: u64,
        /// The panic message.
        message: String,
    },
}

impl SeedFailure {
    /// The failing seed.
    pub fn seed(&self) -> u64 {
        match self {
            SeedFailure::Violations(r) => r.seed,
            SeedFailure::Panicked { seed, .. } => *seed,
        }
    }

    /// The kinds of violation found (`P1`, `P5-unanswered`, ...), or `panic`.
    pub fn kinds(&self) -> Vec<&'static str> {
        match self {
            SeedFailure::Violations(r) => {
                let mut kinds: Vec<&str> = r.violations.iter().map(|v| v.kind()).collect();
                kinds.sort();
                kinds.dedup();
                kinds
            }
            SeedFailure::Panicked { .. } => vec!["panic"],
        }
    }

    /// The first violation (or the panic message), one line per holder.
    pub fn first(&self) -> String {
        match self {
            SeedFailure::Violations(r) => r.violations.first().map(|v| v.to_string()).unwrap_or_default(),
            SeedFailure::Panicked { message, .. } => format!("panicked: {message}"),
        }
    }
}

/// What a batch found.
#[derive(Debug, Default)]
pub struct Batch {
    /// Seeds run to the end (or to a panic).
    pub runs: u64,
    /// The failing seeds, earliest first.
    pub failures: Vec<SeedFailure>,
    /// The figures of every run that ended, merged.
    pub figures: Figures,
}

/// The options of a batch.
pub struct BatchOptions<'a> {
    /// Worker threads (at least 1).
    pub threads: usize,
    /// Stop once this many seeds failed.
    pub max_failures: usize,
    /// Stop at the first failure this says is what was searched for.
    pub stop: &'a (dyn Fn(&RunReport) -> bool + Sync),
    /// Called after every seed with the number of seeds done and the seed's failure, if any
    /// (from the worker thread: keep it short).
    pub progress: &'a (dyn Fn(u64, Option<&SeedFailure>) + Sync),
    /// Merge every run's figures (they keep every sample: memory grows with the batch).
    pub figures: bool,
}

impl Default for BatchOptions<'_> {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()).min(8),
            max_failures: usize::MAX,
            stop: &|_| false,
            progress: &|_, _| {},
            figures: true,
        }
    }
}

/// Run `make(seed)` for every seed (in order of taking, spread over the threads) until the
/// seeds run out, `max_failures` seeds failed, or `stop` accepts a failure.
pub fn run_batch(
    seeds: impl Iterator<Item = u64> + Send,
    make: impl Fn(u64) -> SimParams + Sync,
    options: &BatchOptions<'_>,
) -> Batch {
    let seeds = Mutex::new(seeds);
    let batch = Mutex::new(Batch::default());
    let halt = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..options.threads.max(1) {
            s.spawn(|| loop {
                if halt.load(Ordering::Relaxed) {
                    return;
                }
                let Some(seed) = seeds.lock().expect("no worker panics holding it").next() else { return };
                let outcome = catch_unwind(AssertUnwindSafe(|| Simulation::<NodeState>::run(make(seed))));
                let failure = match outcome {
                    Ok(report) if report.passed() => {
                        if options.figures {
                            batch.lock().expect("no worker panics holding it").figures.merge(&report.figures);
                        }
                        None
                    }
                    Ok(report) => Some(SeedFailure::Violations(Box::new(report))),
                    Err(panic) => {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_else(|| "a panic without a message".to_owned());
                        Some(SeedFailure::Panicked { seed, message })
                    }
                };
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                (options.progress)(n, failure.as_ref());
                let mut b = batch.lock().expect("no worker panics holding it");
                b.runs += 1;
                if let Some(f) = failure {
                    let wanted = matches!(&f, SeedFailure::Violations(r) if (options.stop)(r));
                    b.failures.push(f);
                    if wanted || b.failures.len() >= options.max_failures {
                        halt.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let mut batch = batch.into_inner().expect("no worker panics holding it");
    batch.failures.sort_by_key(SeedFailure::seed);
    batch
}
