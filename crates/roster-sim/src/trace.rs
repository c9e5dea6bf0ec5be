//! A run's human-readable trace: the last lines before a failure, or all of it for one seed.

use roster_core::Millis;
use roster_core::{Input, PeerMsg, PresenceMsg, Record};
use std::collections::VecDeque;

/// The last `capacity` lines of a run (0: no trace, `usize::MAX`: everything).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    capacity: usize,
    lines: VecDeque<String>,
}

impl Trace {
    /// A trace keeping the last `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, lines: VecDeque::new() }
    }

    /// Whether lines are kept at all (callers skip formatting when not).
    pub fn on(&self) -> bool {
        self.capacity > 0
    }

    /// Add a line at global time `at` (formatted only when the trace is on).
    pub fn log(&mut self, at: Millis, line: impl FnOnce() -> String) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(format!("{at:>7} {}", line()));
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

fn shorten(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The variant name of a peer message (`Heartbeat`, `SlotGrant`, ...), from its encoding, so
/// variants added later are named too.
pub fn msg_kind(msg: &PeerMsg) -> String {
    let json = serde_json::to_string(msg).unwrap_or_default();
    let tag = json.trim_start_matches(['{', '"']);
    tag.split('"').next().unwrap_or("?").to_owned()
}

/// The kind of a presence message (`Delta`, `SnapshotRequest`, `SnapshotChunk`), which
/// scripts may name instead of the outer `Presence`.
pub fn presence_kind(msg: &PeerMsg) -> Option<&'static str> {
    match msg {
        PeerMsg::Presence(PresenceMsg::Delta(_)) => Some("Delta"),
        PeerMsg::Presence(PresenceMsg::SnapshotRequest { .. }) => Some("SnapshotRequest"),
        PeerMsg::Presence(PresenceMsg::SnapshotChunk(_)) => Some("SnapshotChunk"),
        _ => None,
    }
}

/// One line about a peer message.
#[allow(unreachable_patterns)] // PeerMsg grows (presence replication): unknown variants print in full.
pub fn msg_summary(msg: &PeerMsg) -> String {
    match msg {
        PeerMsg::Heartbeat { from, sent_at, leases, echoes, .. } => {
            let leases: Vec<String> = leases.iter().map(|a| format!("{}@{}", a.partition, a.epoch)).collect();
            let echoes: Vec<String> = echoes.iter().map(|e| format!("{}:{}", e.of, e.sent_at)).collect();
            format!("Heartbeat {from} sent_at={sent_at} leases=[{}] echoes=[{}]", leases.join(" "), echoes.join(" "))
        }
        PeerMsg::LeaseRequest { from, round, asks } => {
            let asks: Vec<String> = asks.iter().map(|a| format!("{}@{}", a.partition, a.epoch)).collect();
            format!("LeaseRequest {from} round={round} [{}]", asks.join(" "))
        }
        PeerMsg::LeaseReply { from, round, granted, refused, before } => {
            let g: Vec<String> = granted.iter().map(|a| format!("{}@{}", a.partition, a.epoch)).collect();
            let r: Vec<String> = refused.iter().map(|a| format!("{}@{}", a.partition, a.epoch)).collect();
            let b: Vec<String> = before.iter().map(|a| format!("{}@{}", a.partition, a.epoch)).collect();
            format!(
                "LeaseReply {from} round={round} granted=[{}] refused=[{}] before=[{}]",
                g.join(" "),
                r.join(" "),
                b.join(" ")
            )
        }
        PeerMsg::SlotJoin { conn, user, scope, tab, .. } => {
            format!("SlotJoin {conn} user={user} {scope} tab={}", tab.as_ref().map_or("-", |t| t.as_str()))
        }
        PeerMsg::SlotGrant { from, conn, scope, token, echo, .. } => {
            format!("SlotGrant {from} {conn} {scope} token={token} echo={echo}")
        }
        PeerMsg::SlotReject { conn, scope, reason, .. } => format!("SlotReject {conn} {scope} {reason}"),
        PeerMsg::SlotRevoke { conn, scope, token, reason, .. } => {
            format!("SlotRevoke {conn} {scope} token={token} {reason}")
        }
        PeerMsg::SlotClose { conn, scope, token, .. } => format!("SlotClose {conn} {scope} token={token}"),
        PeerMsg::SlotReleased { conn, scope, token, clean, .. } => {
            format!("SlotReleased {conn} {scope} token={token} clean={clean}")
        }
        PeerMsg::SlotReleaseAck { conn, token } => format!("SlotReleaseAck {conn} token={token}"),
        PeerMsg::ScanRequest { from, partition, epoch } => format!("ScanRequest {from} {partition}@{epoch}"),
        PeerMsg::ScanReply { from, partition, epoch, slots, complete } => {
            let s: Vec<String> = slots.iter().map(|h| format!("{}:{}:{}", h.user, h.conn, h.token)).collect();
            let partly = if *complete { "" } else { " (partial)" };
            format!("ScanReply {from} {partition}@{epoch} [{}]{partly}", s.join(" "))
        }
        other => shorten(format!("{other:?}"), 200),
    }
}

/// One line about an input.
pub fn input_summary(input: &Input) -> String {
    match input {
        Input::Receive { from, msg } => format!("<- {from}: {}", msg_summary(msg)),
        Input::Join(j) => format!(
            "Join {} {} user={} tab={}",
            j.socket,
            j.topic,
            j.user.as_ref().map_or("-", |u| u.as_str()),
            j.tab.as_ref().map_or("-", |t| t.as_str())
        ),
        other => shorten(format!("{other:?}"), 200),
    }
}

/// One line about a record (times already global).
pub fn record_summary(r: &Record) -> String {
    match r {
        Record::Accepted { user, scope, conn, tab, token, horizon, .. } => format!(
            "RECORD Accepted {conn} user={user} {scope} tab={} token={token} horizon={horizon}",
            super::checker::tab_name(tab)
        ),
        Record::Horizon { partition, epoch, horizon, .. } => {
            format!("RECORD Horizon {partition}@{epoch} horizon={horizon}")
        }
        Record::Reattached { partition, epoch, .. } => format!("RECORD Reattached {partition}@{epoch}"),
        Record::Ended { conn, scope, why, .. } => format!("RECORD Ended {conn} {scope} {why}"),
        Record::LeaseHeld { partition, epoch, until, .. } => {
            format!("RECORD LeaseHeld {partition}@{epoch} until={until}")
        }
        Record::LeaseDropped { partition, epoch, .. } => format!("RECORD LeaseDropped {partition}@{epoch}"),
        Record::ActivationStarted { user, token, until, handed_from, fenced, .. } => {
            format!(
                "RECORD ActivationStarted {user} token={token} until={until} handed_from={handed_from:?} fenced={fenced}"
            )
        }
        Record::ActivationEnded { user, token, why, .. } => {
            format!("RECORD ActivationEnded {user} token={token} {}", why.as_str())
        }
        Record::Validated { user, scope, token, partition, epoch, holds, .. } => {
            format!("RECORD Validated {user} {scope} token={token} {partition}@{epoch} holds={holds}")
        }
    }
}
