//! P1 over a real cluster's record logs: every node runs with `roster serve --records FILE`;
//! the logs are read, merged in time order and judged by the same checker the simulation uses
//! (`roster_core::sim::check`): at most `max_slots` tabs hold per user and scope at any
//! instant, one lease holder per partition, epochs increasing, no token granted twice. Times
//! are Unix milliseconds: the processes share this machine's clock.
//!
//! Used by `roster-server`'s cluster tests and by `roster-chaos`.

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

/// When a record happened (global ms).
pub fn record_at(r: &Record) -> Millis {
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

/// How a node process ended, for [`read_history`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessEnd {
    /// The node's name.
    pub node: String,
    /// When (Unix ms), taken once the process was reaped.
    pub at: Millis,
    /// `kill -9` (its slots hold until their horizons) or a graceful exit.
    pub graceful: bool,
}

/// Read the record logs of a run. `ended` lists every end of a node process that the run
/// caused: the incarnation of that node alive at that instant ended then. `end` is the run's
/// last instant. A line that is not a record is an error naming the file.
pub fn read_history(config: &Config, logs: &[&Path], ended: &[ProcessEnd], end: Millis) -> Result<History, String> {
    let mut records: Vec<NodeRecord> = Vec::new();
    for path in logs {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let l: Line =
                serde_json::from_str(line).map_err(|e| format!("{}: bad record {line}: {e}", path.display()))?;
            records.push(NodeRecord { node: l.node, record: l.record });
        }
    }
    // One order for all nodes; a stable sort keeps each node's own order for equal times.
    records.sort_by_key(|r| record_at(&r.record));
    let mut lives: Vec<Life> = Vec::new();
    for r in &records {
        if !lives.iter().any(|l| l.incarnation == r.node) {
            lives.push(Life { incarnation: r.node.clone(), started: record_at(&r.record), ended: None });
        }
    }
    for e in ended {
        let victim = lives
            .iter_mut()
            .filter(|l| l.incarnation.node.as_str() == e.node && l.started <= e.at && l.ended.is_none())
            .max_by_key(|l| l.started);
        if let Some(l) = victim {
            l.ended = Some((e.at, if e.graceful { LifeEnd::ShutDown } else { LifeEnd::Crashed }));
        }
    }
    let mut h = History::new(config.clone());
    h.records = records;
    h.lives = lives;
    h.end = end;
    Ok(h)
}

/// `(node name, Unix ms)` of `kill -9`s as [`ProcessEnd`]s.
pub fn kills(killed: &[(String, Millis)]) -> Vec<ProcessEnd> {
    killed.iter().map(|(node, at)| ProcessEnd { node: node.clone(), at: *at, graceful: false }).collect()
}

/// Judge a run: panics with every violation if P1 (or a lease, epoch or token rule) broke, or
/// if the nodes wrote no record. Returns the verdict (holding intervals and lease spans) for
/// further checks.
pub fn assert_p1(config: &Config, logs: &[&Path], killed: &[(String, Millis)], end: Millis) -> Verdict {
    let h = read_history(config, logs, &kills(killed), end).unwrap_or_else(|e| panic!("{e}"));
    let verdict = check(&h);
    assert!(!h.records.is_empty(), "the nodes wrote no records");
    if !verdict.passed() {
        let list: Vec<String> = verdict.violations.iter().map(|v| format!("  {v}")).collect();
        panic!("{} violation(s) in the nodes' records:\n{}", list.len(), list.join("\n"));
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_core::{ConnId, PartitionId, ScopeKey, SlotToken, SocketId, TabKey};
    use serde::Serialize;

    #[derive(Serialize)]
    struct Out<'a> {
        node: &'a Incarnation,
        record: &'a Record,
    }

    fn accepted(at: Millis, gateway: &Incarnation, socket: u64, tab: &str, generation: u64) -> Record {
        Record::Accepted {
            at,
            user: "u1".into(),
            scope: ScopeKey::Topic("room:1".into()),
            conn: ConnId { gateway: gateway.clone(), socket: SocketId(socket) },
            tab: TabKey::Tab(tab.into()),
            token: SlotToken { epoch: 7, generation },
            partition: PartitionId(3),
            horizon: at + 5_000,
        }
    }

    /// A record log of two gateways: `a`'s tab `t1` holds from 1000; `b`'s tab `t2` is
    /// granted at `second_at`; `a`'s slot ends at 2000.
    fn logs(dir: &Path, second_at: Millis) -> Vec<std::path::PathBuf> {
        let a = Incarnation::new("a", 1);
        let b = Incarnation::new("b", 2);
        let ended = Record::Ended {
            at: 2000,
            conn: ConnId { gateway: a.clone(), socket: SocketId(1) },
            scope: ScopeKey::Topic("room:1".into()),
            why: "logged_in_elsewhere".into(),
        };
        let mut paths = Vec::new();
        for (name, node, records) in [
            ("a", &a, vec![accepted(1000, &a, 1, "t1", 1), ended]),
            ("b", &b, vec![accepted(second_at, &b, 1, "t2", 2)]),
        ] {
            let text: String =
                records.iter().map(|record| serde_json::to_string(&Out { node, record }).unwrap() + "\n").collect();
            let path = dir.join(format!("{name}.records.jsonl"));
            std::fs::write(&path, text).unwrap();
            paths.push(path);
        }
        paths
    }

    #[test]
    fn two_tabs_holding_one_slot_at_once_in_the_record_logs_break_p1() {
        let dir = std::env::temp_dir().join(format!("roster-testkit-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = Config::single_node();
        for (second_at, broken) in [(2000, false), (1500, true)] {
            let paths = logs(&dir, second_at);
            let paths: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
            let h = read_history(&config, &paths, &[], 10_000).unwrap();
            assert_eq!(h.records.len(), 3);
            let verdict = check(&h);
            let p1: Vec<_> = verdict.violations.iter().filter(|v| v.is_p1()).collect();
            assert_eq!(p1.len(), usize::from(broken), "second grant at {second_at}: {:?}", verdict.violations);
            if broken {
                assert_eq!(p1[0].at(), 1500);
            }
        }
        std::fs::write(dir.join("bad.records.jsonl"), "{not a record}\n").unwrap();
        let err = read_history(&config, &[&dir.join("bad.records.jsonl")], &[], 0).unwrap_err();
        assert!(err.contains("bad.records.jsonl: bad record"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
