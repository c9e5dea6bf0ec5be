//! `roster-chaos`: real `roster` processes with a fault proxy on every node-to-node link, a
//! seeded workload of users × tabs over the real Phoenix protocol, a seeded fault schedule
//! (SIGKILL and restart, SIGSTOP/SIGCONT past `lease_ms`, links cut both ways and one way,
//! hung and delayed, rolling restarts), a history of everything on one clock, and a verdict on
//! P1–P5 over the whole of it. The binary is `src/bin/roster-chaos.rs`; tests call [`run`].
//!
//! # Layout
//!
//! | module | what it holds |
//! |---|---|
//! | `schedule` | the seeded plan: bursts of faults, calm stretches, quiet checks ([`Step`], [`Fault`]) |
//! | `workload` | users × tabs and anonymous viewers doing seeded operations ([`WorkloadSpec`]) |
//! | `client` | one WebSocket client: commands in, observations (replies, revokes, views) out |
//! | `history` | [`Event`]s on one clock, the [`Recorder`], JSON lines |
//! | `checker` | P2–P5 from the clients' side, and the waits ([`check`], [`Params`]) |
//! | `report` | the [`Summary`] table |
//! | `run` | the coordinator |
//!
//! P1 is judged by the simulation's checker over the nodes' record logs
//! ([`crate::records`]), the same judge as the cluster tests'.

mod checker;
mod client;
mod history;
mod report;
mod rng;
mod run;
mod schedule;
mod workload;

pub use checker::{check, waits, ChaosViolation, Params, Waits};
pub use history::{Event, JoinKind, ListSnap, MetaObs, Ms, Recorder, ViewSnap};
pub use report::{policy_of, PolicyUse, Summary};
pub use run::run;
pub use schedule::{plan, stable_ms, Fault, Step};
pub use workload::{policies, WorkloadSpec, TOPICS};

use crate::cluster::Timings;
use std::path::PathBuf;
use std::time::Duration;

/// Why a run could not be made (a run that found violations is an [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The cluster's config or the runtime could not be set up.
    #[error("setting up the run failed: {0}")]
    Setup(String),
    /// A node's record log could not be read.
    #[error("reading the record logs failed: {0}")]
    Records(String),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct ChaosSpec {
    /// The `roster` executable.
    pub binary: PathBuf,
    /// Nodes (3 or 5).
    pub nodes: usize,
    /// The seed of the workload and the schedule.
    pub seed: u64,
    /// About how long the schedule runs (the final quiet check and the verdict come after).
    pub duration: Duration,
    /// The nodes' timings.
    pub timings: Timings,
    /// `[server] join_wait_ms`.
    pub join_wait_ms: u64,
    /// The workload.
    pub workload: WorkloadSpec,
    /// Added to every timing bound the checker judges (the machine is shared).
    pub margin_ms: u64,
}

impl ChaosSpec {
    /// A run of `nodes` nodes for `duration` from `seed`, with [`Timings::FAST`], 12 users × 2
    /// tabs (every fourth an admin), 3 anonymous viewers, 8 operations per second,
    /// `ping_ms = 1000`, `join_wait_ms = 5000` and a 500 ms margin.
    pub fn new(binary: impl Into<PathBuf>, nodes: usize, seed: u64, duration: Duration) -> ChaosSpec {
        ChaosSpec {
            binary: binary.into(),
            nodes,
            seed,
            duration,
            timings: Timings::FAST,
            join_wait_ms: 5000,
            workload: WorkloadSpec {
                users: 12,
                tabs: 2,
                anonymous: 3,
                admin_every: 4,
                ops_per_second: 8.0,
                ping_ms: 1000,
            },
            margin_ms: 500,
        }
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Its seed.
    pub seed: u64,
    /// Its fault schedule.
    pub steps: Vec<Step>,
    /// Its history, in time order.
    pub events: Vec<Event>,
    /// Every violation, earliest first (P1 from the records, P2–P5 from the clients).
    pub violations: Vec<ChaosViolation>,
    /// What it did.
    pub summary: Summary,
}

impl Outcome {
    /// No violation.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The history as JSON lines.
    pub fn history_lines(&self) -> String {
        self.events.iter().map(|e| e.to_line() + "\n").collect()
    }

    /// The report of a failed run: the seed, the schedule, each violation and the slice of
    /// history around it (`window_ms` either side).
    pub fn failure_report(&self, window_ms: u64) -> String {
        let mut out = format!("VIOLATIONS: {} (seed {})\nschedule:\n", self.violations.len(), self.seed);
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!("  {:>3}. {s}\n", i + 1));
        }
        for v in self.violations.iter().take(10) {
            out.push_str(&format!("\n{v}\nhistory from {} to {}:\n", v.at.saturating_sub(window_ms), v.at + window_ms));
            for e in self.events.iter().filter(|e| {
                e.at() + window_ms >= v.at && e.at() <= v.at + window_ms && !matches!(e, Event::Sample { .. })
            }) {
                out.push_str(&format!("  {}\n", e.to_line()));
            }
        }
        if self.violations.len() > 10 {
            out.push_str(&format!("\n… and {} more violations\n", self.violations.len() - 10));
        }
        out
    }
}
