//! P1 over a real cluster's record logs: every node runs with `roster serve --records FILE`;
//! the logs are read, merged in time order and judged by the same checker the simulation uses
//! (`roster_sim::check`): at most `max_slots` tabs hold per user and scope at any
//! instant, one lease holder per partition, epochs increasing, no token granted twice. Times
//! are Unix milliseconds: the processes share this machine's clock.
//!
//! Used by `roster-server`'s cluster tests and by `roster-chaos`.

use roster_core::{Config, Incarnation, Millis, Record};
use roster_sim::checker::{Life, LifeEnd, NodeRecord};
use roster_sim::{check, History, Verdict};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct Line {
    node: Incarnation,
    record: serde_json::Value,
    /// The Unix microsecond the record's step began, when the node wrote it.
    #[serde(default)]
    at_us: Option<u64>,
}

/// A line's record, its `at` taken from `at_us` when the line has one. A node's `at` is its
/// core clock's millisecond, which starts at an unknown fraction of a Unix millisecond, so two
/// nodes' `at`s order their steps only to within a millisecond or so; `at_us` is read from the
/// same base to the microsecond, so a step that caused another (a revoke confirmed, then a grant
/// on another node) never looks later than it (chaos seed 7, 5 nodes: 11 takeovers whose grant
/// looked 1 ms earlier than the revoke it waited for).
fn record_of(mut record: serde_json::Value, at_us: Option<u64>) -> Result<Record, serde_json::Error> {
    // An activation's end may be dated at its lease's deadline, which can lie within 2 ms of
    // the step that noticed it: never re-dated (chaos seed 15 in the suite: an end dated at the
    // deadline, moved 2 ms later to its step, looked like an activation outliving its lease).
    let dated_otherwise = record.get("ActivationEnded").is_some();
    if let (Some(us), false, Some(fields)) =
        (at_us, dated_otherwise, record.as_object_mut().and_then(|m| m.values_mut().next()))
    {
        if let Some(at) = fields.get_mut("at") {
            // Only where `at` is the step's own instant: some records are dated otherwise (an
            // activation fenced at its lease's deadline ends at that deadline).
            if at.as_u64().is_some_and(|ms| ms.abs_diff(us / 1000) <= 2) {
                *at = serde_json::Value::from(us / 1000);
            }
        }
    }
    serde_json::from_value(record)
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
            let bad = |e: serde_json::Error| format!("{}: bad record {line}: {e}", path.display());
            let l: Line = serde_json::from_str(line).map_err(bad)?;
            let record = record_of(l.record, l.at_us).map_err(bad)?;
            records.push(NodeRecord { node: l.node, record });
        }
    }
    // One order for all nodes; a stable sort keeps each node's own order for equal times.
    records.sort_by_key(|r| r.record.at());
    let mut lives: Vec<Life> = Vec::new();
    for r in &records {
        if !lives.iter().any(|l| l.incarnation == r.node) {
            lives.push(Life { incarnation: r.node.clone(), started: r.record.at(), ended: None });
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
            scope: ScopeKey::topic("room:1".into()),
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
            scope: ScopeKey::topic("room:1".into()),
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
    fn microsecond_stamps_order_a_revoke_and_the_grant_it_let_through_across_nodes() {
        // a's slot is revoked at 1000.9 ms (a's clock says 1001), b is granted at 1001.2 ms (b's
        // clock, starting at another fraction of a millisecond, says 1000).
        let dir = std::env::temp_dir().join(format!("roster-testkit-records-us-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = Incarnation::new("a", 1);
        let b = Incarnation::new("b", 2);
        let ended = Record::Ended {
            at: 1001,
            conn: ConnId { gateway: a.clone(), socket: SocketId(1) },
            scope: ScopeKey::topic("room:1".into()),
            why: "logged_in_elsewhere".into(),
        };
        let config = Config::single_node();
        // Stamped: ordered right; a grant a whole millisecond before the revoke is caught.
        // Not stamped (the milliseconds alone): the grant looks 1 ms early.
        for (stamped, granted_us, broken) in [(true, 1_001_200, false), (true, 999_700, true), (false, 1_001_200, true)]
        {
            let line = |node: &Incarnation, record: &Record, at_us: Option<u64>| {
                let mut v = serde_json::to_value(Out { node, record }).unwrap();
                if let Some(us) = at_us {
                    v["at_us"] = us.into();
                }
                v.to_string() + "\n"
            };
            let us = |v: u64| stamped.then_some(v);
            let la = line(&a, &accepted(500, &a, 1, "t1", 1), us(500_000)) + &line(&a, &ended, us(1_000_900));
            let lb = line(&b, &accepted(1000, &b, 1, "t2", 2), us(granted_us));
            let (pa, pb) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
            std::fs::write(&pa, la).unwrap();
            std::fs::write(&pb, lb).unwrap();
            let h = read_history(&config, &[&pa, &pb], &[], 10_000).unwrap();
            let p1 = check(&h).violations.iter().filter(|v| v.is_p1()).count();
            assert_eq!(p1, usize::from(broken), "stamped {stamped}, grant at {granted_us} us");
        }
        // A record dated otherwise than its step (more than 2 ms apart) keeps its own time.
        let late = serde_json::to_value(&ended).unwrap();
        assert_eq!(record_of(late.clone(), Some(1_000_900)).unwrap().at(), 1000, "its step's instant");
        assert_eq!(record_of(late, Some(1_015_000)).unwrap().at(), 1001, "dated 14 ms before its step");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_activation_that_ended_within_a_millisecond_of_its_start_is_not_taken_for_one_still_running() {
        // Node a's core clock runs 0.9 ms behind the Unix clock: its steps at core ms 999 are
        // stamped 1_000_100 us. u0's activation .1 starts (its date taken from the stamp: 1000)
        // and ends idle in the next step at core ms 999 (an end keeps its own date), so the
        // merged log lists the end first; .3 starts at 1047 and ends at shutdown, 2000.
        let dir = std::env::temp_dir().join(format!("roster-testkit-records-act-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = Incarnation::new("a", 1);
        let token = |generation| SlotToken { epoch: 7, generation };
        let started = |at, generation| Record::ActivationStarted {
            at,
            user: "u0".into(),
            partition: PartitionId(3),
            token: token(generation),
            until: at + 5_000,
            handed_from: None,
            fenced: false,
        };
        let ended =
            |at, generation, why| Record::ActivationEnded { at, user: "u0".into(), token: token(generation), why };
        let text: String = [
            (started(999, 1), 1_000_100),
            (ended(999, 1, roster_core::ActivationEnd::Idle), 1_000_600),
            (started(1047, 3), 1_047_200),
            (ended(2000, 3, roster_core::ActivationEnd::Shutdown), 2_000_200),
        ]
        .iter()
        .map(|(record, us)| {
            let mut v = serde_json::to_value(Out { node: &a, record }).unwrap();
            v["at_us"] = (*us).into();
            v.to_string() + "\n"
        })
        .collect();
        let path = dir.join("a.records.jsonl");
        std::fs::write(&path, text).unwrap();
        let h = read_history(&Config::single_node(), &[&path], &[], 10_000).unwrap();
        let order: Vec<Millis> = h.records.iter().map(|r| r.record.at()).collect();
        assert_eq!(order, [999, 1000, 1047, 2000], "the end sorts before its start");
        let spans: Vec<(u64, Millis, Millis, Option<roster_core::ActivationEnd>)> =
            roster_sim::activations::activation_spans(&h)
                .into_iter()
                .map(|s| (s.token.generation, s.start, s.end, s.ended_by))
                .collect();
        assert_eq!(
            spans,
            [
                (1, 1000, 1000, Some(roster_core::ActivationEnd::Idle)),
                (3, 1047, 2000, Some(roster_core::ActivationEnd::Shutdown))
            ],
            "each activation ends at its own end: no two at once"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn two_logs_that_each_pass_alone_break_p1_together_when_two_tabs_hold_one_slot() {
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
                // Each log alone passes: only the two together show the second tab.
                for alone in &paths {
                    let h = read_history(&config, &[*alone], &[], 10_000).unwrap();
                    let alone_p1 = check(&h).violations.iter().filter(|v| v.is_p1()).count();
                    assert_eq!(alone_p1, 0, "{} alone must pass", alone.display());
                }
            }
        }
        std::fs::write(dir.join("bad.records.jsonl"), "{not a record}\n").unwrap();
        let err = read_history(&config, &[&dir.join("bad.records.jsonl")], &[], 0).unwrap_err();
        assert!(err.contains("bad.records.jsonl: bad record"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
