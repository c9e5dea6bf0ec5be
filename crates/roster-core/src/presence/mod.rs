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
//!                              └─► PresenceChanges ─► Fanout ─► per topic window (diff_ms): one
//!                                                              PresenceDiff to the synced subscribers,
//!                                                              one PresenceList to the new ones
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
//! (netted joins/leaves, the diff frame), `fanout.rs` (each topic's subscribers and window:
//! what every subscriber receives, [`Fanout`]), `list.rs` (a topic's persistent entries and the
//! [`PresenceList`] snapshot of them), `chunks.rs` (the persistent sorted map those entries are
//! kept in).

mod chunks;
mod delta;
mod diff;
mod fanout;
mod list;
mod table;
#[cfg(test)]
mod tests;

pub use delta::{Change, Delta, DeltaBuffer, EntryRecord, NeedSnapshot, Snapshot, SnapshotChunk, SnapshotReason};
pub use diff::{CountChange, MetaList, PresenceChanges, PresenceDiff, TopicChanges};
pub use fanout::{window_ms, Delivery, Fanout, Subscriber, SubscriberId, MAX_WINDOW_MS, SUBSCRIBERS_PER_WINDOW};
pub use list::PresenceList;
pub use table::{LocalWrite, PresenceTable};

use crate::ids::{ConnId, Incarnation, Meta, MetaValue, Millis, NodeName, PhxRef, TabId, Topic, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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

/// How a topic shows its signed-in users (from the policy's `presence`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UsersView {
    /// One key per user, one meta per connection (Phoenix's shape).
    #[default]
    List,
    /// One meta under the key `users` whose `count` is the number of distinct signed-in users
    /// in the topic, cluster-wide (its `phx_ref` is `users:<count>`, so a change of the count is
    /// one leave plus one join); no user key is listed. For rooms where nobody renders the
    /// list: a join costs the others a count, not an entry.
    Count,
}

/// How a topic's list shows its presences: anonymous viewers and signed-in users.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PresenceView {
    /// Anonymous viewers: counted or listed.
    pub anonymous: AnonymousView,
    /// Signed-in users: listed or counted.
    pub users: UsersView,
}

impl From<AnonymousView> for PresenceView {
    /// Users listed, anonymous viewers as given.
    fn from(anonymous: AnonymousView) -> Self {
        PresenceView { anonymous, users: UsersView::List }
    }
}

impl PresenceView {
    /// Whether entries under `key` are shown as a count rather than one meta each.
    fn counts(self, key: &str) -> bool {
        if is_anonymous(key) {
            self.anonymous == AnonymousView::Count
        } else {
            self.users == UsersView::Count
        }
    }
}

/// One presence as the table stores it: who, which tab, on which node, since when, and the
/// user's own meta. The client sees it flattened by [`PresenceMeta::to_flat`].
///
/// 24 bytes (a 48-byte heap block with its `Arc`'s counts, where the five fields in place took
/// 96): what is this presence's own, its `phx_ref` as the number it renders
/// ([`PhxRef::number`]: every reference a node makes is one) and `online_at`, in place; the
/// tab, the node and the user's meta, which a socket's presences in its several topics nearly
/// always share, behind one shared pointer ([`MetaAbout`]): the table hands a new presence the
/// one of the socket's other entries (or of a recent one) when they are equal. A reference
/// that renders no number (a peer's or a test's text) is kept in the [`MetaAbout`], which is
/// then this presence's own. Equality, order and the encoding are those of the five fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "MetaFieldsOf", into = "MetaFieldsOf")]
pub struct PresenceMeta {
    /// The number `phx_ref` renders; 0 when `about.text_ref` holds the reference.
    ref_number: u64,
    online_at: Millis,
    about: Arc<MetaAbout>,
}

/// The part of a [`PresenceMeta`] that a socket's presences share: the browser tab, the node,
/// the user's meta; and a `phx_ref` that renders no number (rare: never one this code makes).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct MetaAbout {
    tab_id: Option<TabId>,
    node: NodeName,
    meta: MetaFields,
    text_ref: Option<Box<PhxRef>>,
}

/// The five fields of a [`PresenceMeta`], in the order it has always been encoded in.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename = "PresenceMeta")]
struct MetaFieldsOf {
    phx_ref: PhxRef,
    tab_id: Option<TabId>,
    node: NodeName,
    online_at: Millis,
    meta: MetaFields,
}

impl From<MetaFieldsOf> for PresenceMeta {
    fn from(f: MetaFieldsOf) -> Self {
        PresenceMeta::new(f.phx_ref, f.tab_id, f.node, f.online_at, f.meta)
    }
}

impl From<PresenceMeta> for MetaFieldsOf {
    fn from(m: PresenceMeta) -> Self {
        let phx_ref = m.phx_ref();
        let about = Arc::unwrap_or_clone(m.about);
        MetaFieldsOf { phx_ref, tab_id: about.tab_id, node: about.node, online_at: m.online_at, meta: about.meta }
    }
}

impl PresenceMeta {
    /// A presence's meta: `phx_ref` unique per meta (a new one on every update, as Phoenix
    /// does); the browser tab, when the join carried one; the gateway node holding the
    /// connection (always the origin's node name); when the connection was tracked, on its
    /// gateway's clock; and the user's meta from the join payload (or the latest
    /// `presence:update`).
    pub fn new(
        phx_ref: PhxRef,
        tab_id: Option<TabId>,
        node: NodeName,
        online_at: Millis,
        meta: impl Into<MetaFields>,
    ) -> Self {
        let (ref_number, text_ref) = Self::split_ref(phx_ref);
        let about = MetaAbout { tab_id, node, meta: meta.into(), text_ref };
        PresenceMeta { ref_number, online_at, about: Arc::new(about) }
    }

    /// A reference as a meta keeps it: the number it renders, or else its text.
    fn split_ref(phx_ref: PhxRef) -> (u64, Option<Box<PhxRef>>) {
        match phx_ref.number() {
            Some(number) => (number, None),
            None => (0, Some(Box::new(phx_ref))),
        }
    }

    /// Unique per meta; a new one on every update, as Phoenix does.
    pub fn phx_ref(&self) -> PhxRef {
        match &self.about.text_ref {
            Some(text) => PhxRef::clone(text),
            None => PhxRef::from_number(self.ref_number),
        }
    }

    /// The browser tab, when the join carried one.
    pub fn tab_id(&self) -> Option<&TabId> {
        self.about.tab_id.as_ref()
    }

    /// The gateway node holding the connection (always the origin's node name).
    pub fn node(&self) -> &NodeName {
        &self.about.node
    }

    /// When the connection was tracked, on its gateway's clock.
    pub fn online_at(&self) -> Millis {
        self.online_at
    }

    /// The user's meta from the join payload (or the latest `presence:update`).
    pub fn meta(&self) -> &MetaFields {
        &self.about.meta
    }

    /// This meta with another `phx_ref` and user meta (an update: tab, node and `online_at` stay).
    pub fn updated(&self, phx_ref: PhxRef, meta: impl Into<MetaFields>) -> Self {
        let (ref_number, text_ref) = Self::split_ref(phx_ref);
        let about =
            MetaAbout { tab_id: self.about.tab_id.clone(), node: self.about.node.clone(), meta: meta.into(), text_ref };
        PresenceMeta { ref_number, online_at: self.online_at, about: Arc::new(about) }
    }

    /// The shared part: tab, node and user meta.
    pub(super) fn about(&self) -> &Arc<MetaAbout> {
        &self.about
    }

    /// Shares `about` when it is equal to this meta's own (same tab, node and user meta);
    /// whether it did.
    pub(super) fn share(&mut self, about: &Arc<MetaAbout>) -> bool {
        if Arc::ptr_eq(&self.about, about) {
            return true;
        }
        if *self.about != **about {
            return false;
        }
        self.about = Arc::clone(about);
        true
    }
}

/// A user's meta as a presence stores it: its keys sorted, in one allocation. A [`Meta`]
/// (a `BTreeMap`) costs a whole B-tree node, about 630 bytes, even for one key; a presence
/// keeps its meta for its whole life, so it keeps this instead.
///
/// It serializes as the map it stands for (and is always sorted, however it was read).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Meta", into = "Meta")]
pub struct MetaFields(Box<[(Box<str>, MetaValue)]>);

impl MetaFields {
    /// The fields, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetaValue)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &self.0[i].1)
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As a [`Meta`] map.
    pub fn to_meta(&self) -> Meta {
        self.0.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }
}

impl From<Meta> for MetaFields {
    fn from(meta: Meta) -> Self {
        // A BTreeMap iterates sorted: the slice is sorted by key.
        MetaFields(meta.into_iter().map(|(k, v)| (k.into_boxed_str(), v)).collect())
    }
}

impl From<MetaFields> for Meta {
    fn from(fields: MetaFields) -> Self {
        fields.0.into_vec().into_iter().map(|(k, v)| (k.into_string(), v)).collect()
    }
}

impl PresenceMeta {
    /// Reserved keys of a flat meta; they win over the user's keys of the same name.
    pub const RESERVED: [&'static str; 4] = ["phx_ref", "tab_id", "node", "online_at"];

    /// The flat map the client sees: the user's keys at top level, then `phx_ref`, `tab_id`
    /// (left out when the join gave none), `node` and `online_at` (milliseconds), which
    /// overwrite (or, for an absent `tab_id`, remove) any user key of the same name so a client
    /// cannot forge them.
    pub fn to_flat(&self) -> Meta {
        let mut flat = self.meta().to_meta();
        flat.insert("phx_ref".into(), MetaValue::Str(self.phx_ref().as_str().to_owned()));
        match self.tab_id() {
            Some(t) => flat.insert("tab_id".into(), MetaValue::Str(t.as_str().to_owned())),
            None => flat.remove("tab_id"),
        };
        flat.insert("node".into(), MetaValue::Str(self.node().as_str().to_owned()));
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

/// The key under which [`UsersView::Count`] shows the number of signed-in users.
pub const USERS_KEY: &str = "users";

/// The single meta that stands for `count` anonymous viewers ([`AnonymousView::Count`], key
/// `anonymous`) or signed-in users ([`UsersView::Count`], key [`USERS_KEY`]). Its `phx_ref`,
/// `<key>:<count>`, depends on the count only (and contains `:`, which generated refs never
/// do), so every node shows the same meta for the same count and a change is a leave plus a
/// join.
fn counted_meta(key: &str, count: usize) -> Meta {
    let mut meta = Meta::new();
    meta.insert("count".into(), MetaValue::Int(i64::try_from(count).unwrap_or(i64::MAX)));
    meta.insert("phx_ref".into(), MetaValue::Str(format!("{key}:{count}")));
    meta
}

/// The connection of `socket` on the gateway incarnation `origin`.
fn conn_of(origin: &Incarnation, socket: crate::ids::SocketId) -> ConnId {
    ConnId { gateway: origin.clone(), socket }
}
