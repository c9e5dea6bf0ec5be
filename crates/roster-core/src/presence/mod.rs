//! Presence: the replicated table of who is in which topic, and the diffs subscribers see.
//!
//! Each node is the only writer of the entries for its own connections: its *origin*, one
//! [`Incarnation`]. Replication is therefore a per-origin log, not a general CRDT:
//!
//! ```text
//!  track/untrack/update ─► PresenceTable ─► Delta{origin, seq_from..=seq_to} ─► DeltaBuffer ─► peers
//!                              │                                                (broadcast_ms)
//!  peer Delta ─► apply_delta ──┤  (or NeedSnapshot: ask that node for its snapshot)
//!  peer Snapshot ─► apply_snapshot[_chunk]
//!  peer down ─► drop_origin ───┤
//!                              └─► PresenceChanges ─► DiffCoalescer ─► PresenceDiff per topic
//!                                                      (diff_ms)
//! ```
//!
//! Every operation on the [`PresenceTable`] returns the joins and leaves it caused
//! ([`PresenceChanges`]), as phoenix_pubsub's tracker does: the diff is a product of the
//! merge, never recomputed by a caller. Reads ([`PresenceTable::list`]) are O(1) snapshots
//! ([`PresenceList`]) sharing structure with the table; their metas take the flat shape the
//! Phoenix client expects ([`PresenceMeta::to_flat`]) only when read or serialized.
//!
//! Files: `table.rs` (the replica table: local writes, delta and snapshot merge, reads),
//! `delta.rs` (what travels between nodes, and the outgoing [`DeltaBuffer`]), `diff.rs`
//! (netted joins/leaves, the per-topic [`DiffCoalescer`], the diff frame), `list.rs` (a
//! topic's persistent entries and the [`PresenceList`] snapshot of them).

mod delta;
mod diff;
mod list;
mod table;
#[cfg(test)]
mod tests;

pub use delta::{Change, Delta, DeltaBuffer, EntryRecord, NeedSnapshot, Snapshot, SnapshotChunk, SnapshotReason};
pub use diff::{CountChange, DiffCoalescer, MetaList, PresenceChanges, PresenceDiff, TopicChanges};
pub use list::PresenceList;
pub use table::{LocalWrite, PresenceTable};

use crate::ids::{ConnId, Incarnation, Meta, MetaValue, Millis, NodeName, PhxRef, TabId, Topic, UserId};
use serde::{Deserialize, Serialize};

/// How a topic shows its anonymous viewers (from the policy's `anonymous`; `deny` never
/// reaches the table because such joins are refused).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AnonymousView {
    /// One meta under the key `anonymous` whose `count` is the cluster-wide number of
    /// anonymous entries in the topic; its `phx_ref` is derived from the count, so a change of
    /// the count reaches clients as one leave plus one join.
    #[default]
    Count,
    /// One meta per anonymous connection under the key `anonymous`, like any user.
    List,
}

/// One presence as the table stores it: who, which tab, on which node, since when, and the
/// user's own meta. The client sees it flattened by [`PresenceMeta::to_flat`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceMeta {
    /// Unique per meta; a new one on every update, as Phoenix does.
    pub phx_ref: PhxRef,
    /// The browser tab, when the join carried one.
    pub tab_id: Option<TabId>,
    /// The gateway node holding the connection (always the origin's node name).
    pub node: NodeName,
    /// When the connection was tracked, on its gateway's clock.
    pub online_at: Millis,
    /// The user's meta from the join payload (or the latest `presence:update`).
    pub meta: Meta,
}

impl PresenceMeta {
    /// Reserved keys of a flat meta; they win over the user's keys of the same name.
    pub const RESERVED: [&'static str; 4] = ["phx_ref", "tab_id", "node", "online_at"];

    /// The flat map the client sees: the user's keys at top level, then `phx_ref`, `tab_id`
    /// (`null` when absent), `node` and `online_at` (milliseconds), which overwrite any user key
    /// of the same name so a client cannot forge them.
    pub fn to_flat(&self) -> Meta {
        let mut flat = self.meta.clone();
        flat.insert("phx_ref".into(), MetaValue::Str(self.phx_ref.0.clone()));
        let tab = self.tab_id.as_ref().map_or(MetaValue::Null, |t| MetaValue::Str(t.0.clone()));
        flat.insert("tab_id".into(), tab);
        flat.insert("node".into(), MetaValue::Str(self.node.as_str().to_owned()));
        let online_at = i64::try_from(self.online_at).unwrap_or(i64::MAX);
        flat.insert("online_at".into(), MetaValue::Int(online_at));
        flat
    }
}

/// One entry of the table, as [`PresenceTable::entries_of`] reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct PresenceEntry {
    /// The topic joined.
    pub topic: Topic,
    /// The presence key: the user id, or `anonymous`.
    pub key: String,
    /// The connection, on its gateway incarnation (the entry's origin).
    pub conn: ConnId,
    /// The meta, including its `phx_ref`.
    pub meta: PresenceMeta,
}

/// Whether a presence key is the reserved anonymous key.
fn is_anonymous(key: &str) -> bool {
    key == UserId::ANONYMOUS
}

/// The single meta that stands for `count` anonymous viewers in [`AnonymousView::Count`].
/// Its `phx_ref` depends on the count only (and contains `:`, which generated refs never do),
/// so every node shows the same meta for the same count and a change is a leave plus a join.
fn count_meta(count: usize) -> Meta {
    let mut meta = Meta::new();
    meta.insert("count".into(), MetaValue::Int(i64::try_from(count).unwrap_or(i64::MAX)));
    meta.insert("phx_ref".into(), MetaValue::Str(format!("{}:{count}", UserId::ANONYMOUS)));
    meta
}

/// The connection of `socket` on the gateway incarnation `origin`.
fn conn_of(origin: &Incarnation, socket: crate::ids::SocketId) -> ConnId {
    ConnId { gateway: origin.clone(), socket }
}
