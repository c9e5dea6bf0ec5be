//! The record log: every [`Record`] the core emits (grants, horizons, re-attachments, ends,
//! lease changes), one JSON line each, with its times moved from the node's monotonic clock to
//! Unix milliseconds, so a checker can rebuild every holding interval of a real cluster from
//! its nodes' logs (`roster serve --records FILE`).
//!
//! ```text
//! {"node":{"node":"a","boot":…},"record":{"Accepted":{"at":1795345397077,…}}}
//! ```
//!
//! Each line is written with one `write` call and no buffer in this process, so a node killed
//! with `kill -9` loses none of the records it emitted.

use roster_core::{Incarnation, Millis, Record};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// An open record log. See the module documentation.
pub struct RecordLog {
    file: File,
    node: Incarnation,
    /// Unix milliseconds minus the node clock's reading (see `Clock::unix_offset_ms`).
    wall_offset: i128,
    /// The Unix nanosecond of the node clock's base, when known (`at_us`).
    base_unix_ns: i128,
    failed: bool,
}

#[derive(Serialize)]
struct Line<'a> {
    node: &'a Incarnation,
    record: &'a Record,
    /// When the core step that emitted the record began, in Unix microseconds (the record's
    /// `at` is that step's millisecond): orders records of different nodes finer than the
    /// core's clock can.
    #[serde(skip_serializing_if = "Option::is_none")]
    at_us: Option<u64>,
}

impl RecordLog {
    /// Append to `path` (created if missing) for incarnation `node`, whose clock readings plus
    /// `wall_offset` are Unix milliseconds ([`Clock::unix_offset_ms`](crate::Clock::unix_offset_ms)).
    pub fn open(path: &Path, node: Incarnation, wall_offset: i128) -> std::io::Result<RecordLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(RecordLog { file, node, wall_offset, base_unix_ns: 0, failed: false })
    }

    /// [`open`](Self::open) for a node whose clock's base was at Unix nanosecond
    /// `base_unix_ns` ([`Clock::base_unix_ns`](crate::Clock::base_unix_ns)): readings map to
    /// the Unix millisecond their interval starts in, and steps to their Unix microsecond.
    pub fn open_at(path: &Path, node: Incarnation, base_unix_ns: i128) -> std::io::Result<RecordLog> {
        let mut log = Self::open(path, node, base_unix_ns.div_euclid(1_000_000) - 1)?;
        log.base_unix_ns = base_unix_ns;
        Ok(log)
    }

    /// See [`open_at`](Self::open_at); 0 when opened with [`open`](Self::open).
    pub fn base_unix_ns(&self) -> i128 {
        self.base_unix_ns
    }

    /// Write one record, its times in Unix milliseconds, and `at_us`, the Unix microsecond its
    /// step began. A failed write is logged once and never stops the node: the log is
    /// evidence, not state.
    pub fn write(&mut self, record: &Record, at_us: Option<u64>) {
        let offset = self.wall_offset;
        let record = record.clone().map_times(|t| (i128::from(t) + offset).max(0) as Millis);
        let mut line = match serde_json::to_vec(&Line { node: &self.node, record: &record, at_us }) {
            Ok(l) => l,
            Err(e) => return self.fail(&e.to_string()),
        };
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            self.fail(&e.to_string());
        }
    }

    fn fail(&mut self, error: &str) {
        if !self.failed {
            self.failed = true;
            tracing::error!(error, "cannot write the record log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_core::{ConnId, ScopeKey, SocketId};

    #[test]
    fn records_are_written_in_wall_milliseconds_one_line_each() {
        let dir = std::env::temp_dir().join(format!("roster-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.jsonl");
        let _ = std::fs::remove_file(&path);
        let node = Incarnation::new("a", 7);
        let mut log = RecordLog::open(&path, node.clone(), 1_000_000 - 10).unwrap();
        let conn = ConnId { gateway: node.clone(), socket: SocketId(3) };
        log.write(&Record::Ended { at: 25, conn, scope: ScopeKey::topic("room:1".into()), why: "left".into() }, None);
        log.write(
            &Record::LeaseDropped { at: 30, partition: roster_core::PartitionId(4), epoch: 9 },
            Some(1_000_020_500),
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["record"]["Ended"]["at"], 1_000_015);
        assert_eq!(lines[1]["record"]["LeaseDropped"]["at"], 1_000_020);
        assert_eq!(lines[1]["node"]["node"], "a");
        assert_eq!(lines[0].get("at_us"), None);
        assert_eq!(lines[1]["at_us"], 1_000_020_500u64);
        let back: Record = serde_json::from_value(lines[1]["record"].clone()).unwrap();
        assert_eq!(back, Record::LeaseDropped { at: 1_000_020, partition: roster_core::PartitionId(4), epoch: 9 });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
