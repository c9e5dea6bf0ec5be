//! What one node sends its peers about its own entries: [`Delta`]s (a contiguous range of its
//! sequence numbers), [`Snapshot`]s (all its entries at one sequence number, possibly in
//! [`SnapshotChunk`]s), and the [`DeltaBuffer`] that coalesces deltas over `broadcast_ms`.
//!
//! On the wire an entry names its socket only: the gateway is the sender's incarnation and the
//! node its name, so a node can only ever write its own entries, and every entry is ~50 bytes
//! shorter. All types are plain serde (no untagged enums, no flattening), so they survive
//! bincode.

use super::PresenceMeta;
use crate::ids::{Incarnation, Meta, MetaValue, Millis, NodeName, PhxRef, SocketId, TabId, Topic};
use serde::{Deserialize, Serialize};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

/// One entry as it travels between nodes; its connection is `(origin, socket)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// The topic joined.
    pub topic: Topic,
    /// The presence key: the user id, or `anonymous`.
    pub key: String,
    /// The socket on the origin node.
    pub socket: SocketId,
    /// The meta's unique reference.
    pub phx_ref: PhxRef,
    /// The browser tab, if any.
    pub tab_id: Option<TabId>,
    /// When it was tracked, on the origin's clock.
    pub online_at: Millis,
    /// The user's meta.
    pub meta: Meta,
}

impl EntryRecord {
    pub(super) fn new(topic: &Topic, key: &str, socket: SocketId, meta: &PresenceMeta) -> Self {
        Self {
            topic: topic.clone(),
            key: key.to_owned(),
            socket,
            phx_ref: meta.phx_ref(),
            tab_id: meta.tab_id().cloned(),
            online_at: meta.online_at(),
            meta: meta.meta().to_meta(),
        }
    }

    /// Splits into topic, key, socket and the stored meta, whose `node` is the origin's name
    /// (never taken from the wire).
    pub(super) fn into_parts(self, node: &NodeName) -> (Topic, String, SocketId, PresenceMeta) {
        let meta = PresenceMeta::new(self.phx_ref, self.tab_id, node.clone(), self.online_at, self.meta);
        (self.topic, self.key, self.socket, meta)
    }
}

/// One change to the origin's entries. An entry is identified by `(topic, socket)`: a socket
/// joins a topic at most once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// A new entry (there was none for its `(topic, socket)`).
    Join(EntryRecord),
    /// The entry of its `(topic, socket)` now has this meta and `phx_ref`. Receivers treat
    /// `Join` and `Update` alike (insert or replace); the difference lets a [`DeltaBuffer`]
    /// cancel a join followed by a leave.
    Update(EntryRecord),
    /// The entry of `(topic, socket)` is gone.
    Leave {
        /// The topic left.
        topic: Topic,
        /// The socket that left it.
        socket: SocketId,
    },
}

impl Change {
    fn target(&self) -> (Topic, SocketId) {
        match self {
            Change::Join(e) | Change::Update(e) => (e.topic.clone(), e.socket),
            Change::Leave { topic, socket } => (topic.clone(), *socket),
        }
    }
}

/// Changes `seq_from..=seq_to` of one origin, in order. Sequence numbers start at 1 and every
/// local change takes the next one; a coalesced delta may carry fewer changes than its range
/// (changes that cancelled out), but its range is always contiguous with the previous delta's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The incarnation that made the changes (and owns the entries).
    pub origin: Incarnation,
    /// First sequence number covered.
    pub seq_from: u64,
    /// Last sequence number covered.
    pub seq_to: u64,
    /// The net changes of that range, at most one per `(topic, socket)` once coalesced.
    pub changes: Vec<Change>,
}

/// All entries of one origin as of its sequence number `seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The incarnation whose entries these are.
    pub origin: Incarnation,
    /// The origin's sequence number when it was taken: it reflects changes `1..=seq`.
    pub seq: u64,
    /// Every entry, sorted by `(topic, socket)` (two snapshots at one `seq` are identical).
    pub entries: Vec<EntryRecord>,
}

/// Part `index` of `count` of one snapshot; all parts carry the same `origin` and `seq`.
/// The receiver applies the snapshot once it holds every part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The incarnation whose entries these are.
    pub origin: Incarnation,
    /// The snapshot's sequence number.
    pub seq: u64,
    /// This part, `0..count`.
    pub index: u32,
    /// How many parts the snapshot has (at least 1: an empty snapshot is one empty part).
    pub count: u32,
    /// This part's entries.
    pub entries: Vec<EntryRecord>,
}

impl Snapshot {
    /// Splits into parts of at most `max_entries` entries and, as far as single entries
    /// allow, at most `max_bytes` bytes on the wire ([`EntryRecord::wire_bytes`]): at least
    /// one part, at least one entry per part, entries in order. Splitting by bytes too keeps a
    /// part of large metas under the transport's frame limit.
    pub fn into_chunks(self, max_entries: usize, max_bytes: usize) -> Vec<SnapshotChunk> {
        let Snapshot { origin, seq, entries } = self;
        let max_entries = max_entries.max(1);
        let mut parts: Vec<Vec<EntryRecord>> = vec![Vec::new()];
        let mut bytes = 0;
        for entry in entries {
            let size = entry.wire_bytes();
            let current = parts.last().map_or(0, Vec::len);
            if current > 0 && (current >= max_entries || bytes + size > max_bytes) {
                parts.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            if let Some(part) = parts.last_mut() {
                part.push(entry);
            }
        }
        // At least one entry per part, so the count fits in u32 for any table that fits in memory.
        let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        parts
            .into_iter()
            .zip(0..count)
            .map(|(entries, index)| SnapshotChunk { origin: origin.clone(), seq, index, count, entries })
            .collect()
    }
}

impl EntryRecord {
    /// About how many bytes this entry takes in a node-to-node frame (bincode with variable-length
    /// integers): every string's length plus a length prefix, every number at its widest.
    pub fn wire_bytes(&self) -> usize {
        const NUMBER: usize = 10;
        let text = |s: &str| s.len() + NUMBER;
        text(self.topic.as_str())
            + text(&self.key)
            + NUMBER // socket
            + text(self.phx_ref.as_str())
            + 1
            + self.tab_id.as_ref().map_or(0, |t| text(t.as_str()))
            + NUMBER // online_at
            + meta_wire_bytes(&self.meta)
    }
}

/// [`EntryRecord::wire_bytes`] of a meta.
fn meta_wire_bytes(meta: &Meta) -> usize {
    10 + meta.iter().map(|(k, v)| k.len() + 10 + value_wire_bytes(v)).sum::<usize>()
}

fn value_wire_bytes(value: &MetaValue) -> usize {
    1 + match value {
        MetaValue::Null | MetaValue::Bool(_) => 1,
        MetaValue::Int(_) | MetaValue::Float(_) => 10,
        MetaValue::Str(s) => s.len() + 10,
        MetaValue::List(items) => 10 + items.iter().map(value_wire_bytes).sum::<usize>(),
        MetaValue::Map(m) => meta_wire_bytes(m),
    }
}

/// Why a delta could not be applied; nothing of it was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("presence delta from {origin} not applied ({reason}): ask that node for its snapshot")]
pub struct NeedSnapshot {
    /// The incarnation the delta came from: ask its node for a snapshot.
    pub origin: Incarnation,
    /// What was wrong.
    pub reason: SnapshotReason,
}

/// What made a delta unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotReason {
    /// Changes between the last applied one and `seq_from` are missing.
    #[error("gap: applied up to {applied}, delta starts at {seq_from}")]
    Gap {
        /// Last sequence number applied from that origin (0: none).
        applied: u64,
        /// The delta's first sequence number.
        seq_from: u64,
    },
    /// The delta starts inside the applied range and ends after it; a coalesced delta cannot be
    /// cut, so its new part cannot be applied alone.
    #[error("overlap: applied up to {applied}, delta starts at {seq_from}")]
    Overlap {
        /// Last sequence number applied from that origin.
        applied: u64,
        /// The delta's first sequence number.
        seq_from: u64,
    },
    /// The table holds another incarnation of that node: it restarted.
    #[error("new incarnation")]
    NewIncarnation,
    /// That origin was dropped (declared down); only a snapshot can bring its entries back.
    #[error("origin was dropped")]
    Dropped,
    /// The range is empty or starts at 0.
    #[error("malformed sequence range")]
    Malformed,
}

/// Coalesces this node's outgoing deltas over `broadcast_ms` into one.
///
/// The merged delta covers the whole contiguous range of sequence numbers and carries at most
/// one change per `(topic, socket)`, its net effect: a join then a leave cancels out (the range
/// still advances), an update after a join is a join, anything then a leave is a leave.
///
/// Before sending a snapshot, [`take`](Self::take) and send the pending delta first, so that
/// the deltas after the snapshot start right after its `seq` (a receiver cannot apply a
/// coalesced delta that straddles its snapshot, and would ask again).
#[derive(Clone, Debug)]
pub struct DeltaBuffer {
    broadcast_ms: Millis,
    pending: Option<Pending>,
}

#[derive(Clone, Debug)]
struct Pending {
    origin: Incarnation,
    seq_from: u64,
    seq_to: u64,
    opened_at: Millis,
    /// Per `(topic, socket)`: did the entry exist before the window, and the latest change.
    changes: BTreeMap<(Topic, SocketId), (bool, Change)>,
}

impl DeltaBuffer {
    /// A buffer whose window lasts `broadcast_ms` from its first delta.
    pub fn new(broadcast_ms: Millis) -> Self {
        Self { broadcast_ms, pending: None }
    }

    /// Adds a delta made at `now`. If it cannot be merged (another origin, or not contiguous
    /// with what is pending), returns the pending delta, to be sent first, and starts a new
    /// window with this one.
    pub fn push(&mut self, delta: Delta, now: Millis) -> Option<Delta> {
        let mergeable =
            self.pending.as_ref().is_some_and(|p| p.origin == delta.origin && delta.seq_from == p.seq_to + 1);
        let flushed = if mergeable { None } else { self.take() };
        let pending = self.pending.get_or_insert_with(|| Pending {
            origin: delta.origin.clone(),
            seq_from: delta.seq_from,
            seq_to: delta.seq_to,
            opened_at: now,
            changes: BTreeMap::new(),
        });
        pending.seq_to = delta.seq_to;
        for change in delta.changes {
            match pending.changes.entry(change.target()) {
                Entry::Vacant(v) => {
                    let existed = !matches!(change, Change::Join(_));
                    v.insert((existed, change));
                }
                Entry::Occupied(mut o) => o.get_mut().1 = change,
            }
        }
        flushed
    }

    /// When the pending delta is due; `None` when nothing is pending.
    pub fn due_at(&self) -> Option<Millis> {
        self.pending.as_ref().map(|p| p.opened_at.saturating_add(self.broadcast_ms))
    }

    /// The merged delta if its window has closed at `now`.
    pub fn flush(&mut self, now: Millis) -> Option<Delta> {
        if self.due_at().is_some_and(|due| due <= now) {
            self.take()
        } else {
            None
        }
    }

    /// The merged delta now, whatever its window (before a snapshot, at shutdown).
    pub fn take(&mut self) -> Option<Delta> {
        let p = self.pending.take()?;
        let changes = p
            .changes
            .into_values()
            .filter_map(|(existed, last)| match (existed, last) {
                (false, Change::Leave { .. }) => None,
                (false, Change::Update(e)) => Some(Change::Join(e)),
                (true, Change::Join(e)) => Some(Change::Update(e)),
                (_, last) => Some(last),
            })
            .collect();
        Some(Delta { origin: p.origin, seq_from: p.seq_from, seq_to: p.seq_to, changes })
    }
}
