//! P1 over a real cluster's record logs: every node runs with `roster serve --records FILE`;
//! at the end of a test the logs are read, merged in time order and judged by the same checker
//! the simulation uses (`roster_core::sim::check`): at most `max_slots` tabs hold per user and
//! scope at any instant, one lease holder per partition, epochs increasing, no token granted
//! twice. Times are Unix milliseconds: the processes share this machine's clock.

#![allow(dead_code)]

use roster_core::sim::checker::{Life, LifeEnd, NodeRecord};
use roster_core::sim::{check, History, Verdict};
use roster_core::{Config, Incarnation, Millis, Record};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct Line {
    node: Incarnation,
    record: Record,
}

fn at(r: &Record) -> Millis {
    match r {
        Record::Accepted { at, .. }
        | Record::Horizon { at, .. }
        | Record::Reattached { at, .. }
        | Record::Ended { at, .. }
        | Record::LeaseHeld { at, .. }
        | Record::LeaseDropped { at, .. }
        | Record::ActivationStarted { at, .. }
        | Record::ActivationEnded { at, .. } => *at,
    }
}

/// Read the record logs of a run. `killed` lists `(node name, Unix ms)` of every `kill -9`:
/// the incarnation of that node alive at that instant ended then (its slots count as held
/// until their horizons). `end` is the run's last instant.
pub fn history(config: &Config, logs: &[&Path], killed: &[(String, Millis)], end: Millis) -> History {
    let mut records: Vec<NodeRecord> = Vec::new();
    for path in logs {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let l: Line =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: bad record {line}: {e}", path.display()));
            records.push(NodeRecord { node: l.node, record: l.record });
        }
    }
    // One order for all nodes; a stable sort keeps each node's own order for equal times.
    records.sort_by_key(|r| at(&r.record));
    let mut lives: Vec<Life> = Vec::new();
    for r in &records {
        if !lives.iter().any(|l| l.incarnation == r.node) {
            lives.push(Life { incarnation: r.node.clone(), started: at(&r.record), ended: None });
        }
    }
    for (name, t) in killed {
        let victim = lives
            .iter_mut()
            .filter(|l| l.incarnation.node.as_str() == name && l.started <= *t && l.ended.is_none())
            .max_by_key(|l| l.started);
        if let Some(l) = victim {
            l.ended = Some((*t, LifeEnd::Crashed));
        }
    }
    let mut h = History::new(config.clone());
    h.records = records;
    h.lives = lives;
    h.end = end;
    h
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
