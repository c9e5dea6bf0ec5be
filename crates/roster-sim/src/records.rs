//! P1 over real record logs: the judge for anything that runs real nodes (the multi-process
//! tests, a chaos run), with the same checker as the simulation.
//!
//! Every node started with `roster serve --records FILE` appends one JSON line per
//! [`Record`], its times already in Unix milliseconds:
//!
//! ```text
//! {"node":{"node":"a","boot":"…"},"record":{"Accepted":{"at":1795345397077,…}}}
//! ```
//!
//! [`read_log`] parses one such file, [`history_from_records`] merges the records of every
//! node in time order and builds each incarnation's life (a `kill -9` named by the caller ends
//! one; its slots then count as held until their horizons), and [`check`](crate::check)
//! judges it: at most `max_slots` tabs hold per user and scope at any instant, one lease
//! holder per partition, epochs increasing, no token granted twice, activations inside
//! leases. [`check_logs`] does all three.
//!
//! ```no_run
//! use roster_sim::records::check_logs;
//! let config = roster_core::Config::single_node();
//! let verdict = check_logs(&config, &["a.records".as_ref()], &[], 1_800_000_000_000).unwrap();
//! assert!(verdict.passed(), "{:?}", verdict.violations);
//! ```

use crate::checker::{check, History, Life, LifeEnd, NodeRecord, Verdict};
use roster_core::{Config, Incarnation, Millis, Record};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One line of a `--records` log.
#[derive(Deserialize)]
struct Line {
    node: Incarnation,
    record: Record,
}

/// A record log that cannot be read.
#[derive(Debug)]
pub enum LogError {
    /// The file could not be read.
    Io(PathBuf, std::io::Error),
    /// A line is not a record.
    BadLine {
        /// The file.
        path: PathBuf,
        /// Its line number, from 1.
        line: usize,
        /// The parser's complaint.
        error: String,
    },
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            LogError::BadLine { path, line, error } => write!(f, "{}:{line}: not a record: {error}", path.display()),
        }
    }
}

impl std::error::Error for LogError {}

/// The instant a record happened at.
pub fn record_time(record: &Record) -> Millis {
    match record {
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

/// Parse one record log. A missing file is an empty log (a node that never started writes
/// none); a line that is not a record is an error naming it. A last line cut short (the node
/// was killed mid-write) cannot happen: each line is written with one `write` call.
pub fn read_log(path: &Path) -> Result<Vec<NodeRecord>, LogError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LogError::Io(path.to_owned(), e)),
    };
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let l: Line = serde_json::from_str(line).map_err(|e| LogError::BadLine {
            path: path.to_owned(),
            line: i + 1,
            error: e.to_string(),
        })?;
        records.push(NodeRecord { node: l.node, record: l.record });
    }
    Ok(records)
}

/// A history from the records of every node (any order). `killed` lists `(node name, instant)`
/// of every crash (`kill -9`): the incarnation of that node alive at that instant ended then.
/// `end` is the run's last instant. Incarnations start at their first record.
pub fn history_from_records(
    config: &Config,
    mut records: Vec<NodeRecord>,
    killed: &[(String, Millis)],
    end: Millis,
) -> History {
    // One order for all nodes; a stable sort keeps each node's own order for equal times.
    records.sort_by_key(|r| record_time(&r.record));
    let mut lives: Vec<Life> = Vec::new();
    for r in &records {
        if !lives.iter().any(|l| l.incarnation == r.node) {
            lives.push(Life { incarnation: r.node.clone(), started: record_time(&r.record), ended: None });
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

/// Read every log and judge the run (see the module's documentation).
pub fn check_logs(
    config: &Config,
    logs: &[&Path],
    killed: &[(String, Millis)],
    end: Millis,
) -> Result<Verdict, LogError> {
    let mut records = Vec::new();
    for path in logs {
        records.extend(read_log(path)?);
    }
    Ok(check(&history_from_records(config, records, killed, end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Violation;
    use roster_core::{ConnId, ScopeKey, SlotToken, SocketId, TabId, TabKey, UserId};

    fn line(node: &Incarnation, record: &Record) -> String {
        serde_json::json!({ "node": node, "record": record }).to_string()
    }

    fn accepted(node: &Incarnation, socket: u64, tab: &str, generation: u64, at: Millis) -> Record {
        let user = UserId::from("u1");
        Record::Accepted {
            at,
            partition: roster_core::partition_of(&user, 8),
            user,
            scope: ScopeKey::Topic("room:1".into()),
            conn: ConnId { gateway: node.clone(), socket: SocketId(socket) },
            tab: TabKey::Tab(TabId::from(tab)),
            token: SlotToken { epoch: 5, generation },
            horizon: 1_000_000,
        }
    }

    /// Two nodes' logs each granting user u1 a different tab in the same scope at the same
    /// time: the judge finds the double hold; each log alone passes.
    #[test]
    fn two_logs_that_each_pass_alone_break_p1_together() {
        let dir = std::env::temp_dir().join(format!("roster-sim-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = Incarnation::new("a", 1);
        let b = Incarnation::new("b", 2);
        let (pa, pb) = (dir.join("a.records"), dir.join("b.records"));
        std::fs::write(&pa, line(&a, &accepted(&a, 1, "t1", 1, 1_000)) + "\n").unwrap();
        std::fs::write(&pb, line(&b, &accepted(&b, 2, "t2", 2, 1_500)) + "\n").unwrap();
        let config = crate::sim_config(2, roster_core::OnConflict::Takeover, 0, 1);
        let alone = check_logs(&config, &[&pa], &[], 5_000).unwrap();
        assert!(alone.passed(), "{:?}", alone.violations);
        let both = check_logs(&config, &[&pa, &pb], &[], 5_000).unwrap();
        assert!(both.violations.iter().any(|v| matches!(v, Violation::SingleSlot { .. })), "{:?}", both.violations);
        std::fs::write(&pb, "{\"node\": 3}\n").unwrap();
        let err = check_logs(&config, &[&pa, &pb], &[], 5_000).unwrap_err();
        assert!(matches!(err, LogError::BadLine { line: 1, .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
