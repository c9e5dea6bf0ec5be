//! P1 over a real cluster's record logs: every node runs with `roster serve --records FILE`;
//! at the end of a test the logs are read, merged in time order and judged by the same checker
//! the simulation uses (`roster_sim::records`): at most `max_slots` tabs hold per user and
//! scope at any instant, one lease holder per partition, epochs increasing, no token granted
//! twice. Times are Unix milliseconds: the processes share this machine's clock.

#![allow(dead_code)]

use roster_core::{Config, Millis};
use roster_sim::records::{history_from_records, read_log};
use roster_sim::{check, History, Verdict};
use std::path::Path;

/// Read the record logs of a run. `killed` lists `(node name, Unix ms)` of every `kill -9`:
/// the incarnation of that node alive at that instant ended then (its slots count as held
/// until their horizons). `end` is the run's last instant.
pub fn history(config: &Config, logs: &[&Path], killed: &[(String, Millis)], end: Millis) -> History {
    let mut records = Vec::new();
    for path in logs {
        records.extend(read_log(path).unwrap_or_else(|e| panic!("{e}")));
    }
    history_from_records(config, records, killed, end)
}

/// Judge a run: panics with every violation if P1 (or a lease, epoch or token rule) broke.
/// Returns the verdict (holding intervals and lease spans) for further checks.
pub fn assert_p1(config: &Config, logs: &[&Path], killed: &[(String, Millis)], end: Millis) -> Verdict {
    let h = history(config, logs, killed, end);
    let verdict = check(&h);
    assert!(!h.records.is_empty(), "the nodes wrote no records");
    if !verdict.passed() {
        let list: Vec<String> = verdict.violations.iter().map(|v| format!("  {v}")).collect();
        panic!("{} violation(s) in the nodes' records:\n{}", list.len(), list.join("\n"));
    }
    verdict
}
