//! The replica table of one node: its own entries and every peer's, indexed by topic and by
//! connection.

use super::delta::{Change, Delta, EntryRecord, NeedSnapshot, Snapshot, SnapshotChunk, SnapshotReason};
use super::diff::PresenceChanges;
use super::list::{ByAge, KeyEntries, PresenceList, TopicEntries};
use super::{conn_of, is_anonymous, MetaAbout, PresenceEntry, PresenceMeta, PresenceView};
use crate::ids::{ConnId, Incarnation, Meta, Millis, NodeName, PhxRef, SocketId, TabId, Topic, UserId};
use foldhash::{HashMap, HashSet};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// How many replaced incarnations per node name are remembered (and refused) so a delayed
/// message from a previous life cannot bring back its entries.
const RETIRED_PER_NODE: usize = 8;

/// How many shared meta parts the table keeps at hand for new entries (see
/// [`PresenceTable::share_about`]).
const RECENT_ABOUTS: usize = 4;

/// The presence replica table of one node.
///
/// Each node writes only its own entries (origin = its [`Incarnation`]) with
/// [`track`](Self::track), [`update`](Self::update), [`untrack`](Self::untrack) and
/// [`untrack_conn`](Self::untrack_conn); each change takes the next sequence number and comes
/// back as a [`Delta`] for the peers. Peers' entries arrive by [`apply_delta`](Self::apply_delta)
/// and [`apply_snapshot`](Self::apply_snapshot), and per origin node the table holds one
/// incarnation in one of two states:
///
/// - **live** at sequence `s`: a delta `s+1..=t` applies; one ending at or before `s` is a
///   no-op; a gap, an overlap or another incarnation asks for a snapshot ([`NeedSnapshot`]);
///   a snapshot applies only if its `seq > s`.
/// - **dropped** at `s` ([`drop_origin`](Self::drop_origin): the peer was declared down, its
///   entries left): every new delta asks for a snapshot, and a snapshot with `seq >= s` brings
///   the entries back.
///
/// A snapshot of another incarnation replaces the old one (whose entries leave) and the old
/// one is *retired*: nothing from it is applied again. Every operation returns the joins and
/// leaves it caused. Nothing here panics on remote input.
#[derive(Clone, Debug)]
pub struct PresenceTable {
    me: Incarnation,
    seq: u64,
    topics: HashMap<Topic, TopicIndex>,
    /// origin → socket → topic → entry: the by-connection index (and by origin).
    conns: HashMap<Incarnation, HashMap<SocketId, SocketTopics>>,
    origins: HashMap<NodeName, OriginState>,
    retired: HashMap<NodeName, VecDeque<uuid::Uuid>>,
    assemblies: HashMap<NodeName, Assembly>,
    len: usize,
    /// Whether local writes make deltas for peers (see [`set_replicated`](Self::set_replicated)).
    replicated: bool,
    /// The shared parts of the metas stored last (most recent last), handed to an equal new
    /// one that its socket's other entries could not give one (see [`PresenceMeta`]).
    recent: Vec<Arc<MetaAbout>>,
}

/// One topic's entries: persistent maps, so [`PresenceTable::list`] hands out a snapshot in O(1).
#[derive(Clone, Debug, Default)]
struct TopicIndex {
    by_key: TopicEntries,
    len: usize,
    /// The metas under the `anonymous` key, counted again after each write under that key:
    /// every write asks before and after, and a search of `by_key` cost two searches of the
    /// map per signed-in user's write.
    anonymous: usize,
}

impl TopicIndex {
    fn anonymous(&self) -> usize {
        self.anonymous
    }

    /// Signed-in users: keys other than `anonymous`.
    fn users(&self) -> usize {
        self.by_key.len() - usize::from(self.anonymous > 0)
    }

    /// Adds `meta` under `key`; returns the key as the index holds it, to share.
    fn insert(&mut self, key: Arc<str>, meta: Arc<PresenceMeta>) -> Arc<str> {
        self.len += 1;
        let new = ByAge(Arc::clone(&meta));
        let key = self.by_key.upsert(key, |metas| metas.insert(ByAge(meta)), || KeyEntries::unit(new));
        if is_anonymous(&key) {
            self.count_anonymous();
        }
        key
    }

    fn count_anonymous(&mut self) {
        self.anonymous = self.by_key.get(UserId::ANONYMOUS).map_or(0, KeyEntries::len);
    }

    /// Removes this very `meta` from under `key`; whether it was there.
    fn remove(&mut self, key: &str, meta: &Arc<PresenceMeta>) -> bool {
        // A key's only meta (the usual case): the key goes, with no copy of its entry made
        // first (`get_mut` copies the path a published list shares).
        let only = |metas: &KeyEntries| matches!(metas, KeyEntries::One(one) if Arc::ptr_eq(&one.0, meta));
        if self.by_key.remove_if(key, only).is_none() {
            match self.by_key.get(key) {
                None | Some(KeyEntries::One(_)) => return false,
                Some(_) => {
                    let Some(metas) = self.by_key.get_mut(key) else { return false };
                    if !metas.remove(&ByAge(Arc::clone(meta))) {
                        return false;
                    }
                    if metas.is_empty() {
                        self.by_key.remove(key);
                    }
                }
            }
        }
        self.len -= 1;
        if is_anonymous(key) {
            self.count_anonymous();
        }
        true
    }
}

/// One entry in the by-connection index: its key and meta, shared with the topic's index.
#[derive(Clone, Debug)]
struct ConnEntry {
    key: Arc<str>,
    meta: Arc<PresenceMeta>,
}

/// A connection's entries by topic. A socket is in a few topics (at most
/// `max_topics_per_socket`): a list is a fifth of a hash map's size for one, and as fast. A
/// socket is one user's (or an anonymous viewer's), so its entries share one key, kept once:
/// an entry is its topic and meta (24 bytes), not those and the key again (40). Entries under
/// several keys (a peer, or a caller of the table, may track them) keep a key each.
#[derive(Clone, Debug)]
enum SocketTopics {
    /// Every entry under `key`.
    Uniform { key: Arc<str>, entries: Vec<(Topic, Arc<PresenceMeta>)> },
    /// Entries under several keys (or none yet).
    Mixed(Vec<(Topic, ConnEntry)>),
}

impl Default for SocketTopics {
    fn default() -> Self {
        SocketTopics::Mixed(Vec::new())
    }
}

impl SocketTopics {
    fn get(&self, topic: &Topic) -> Option<(&Arc<str>, &Arc<PresenceMeta>)> {
        match self {
            SocketTopics::Uniform { key, entries } => entries.iter().find(|(t, _)| t == topic).map(|(_, m)| (key, m)),
            SocketTopics::Mixed(entries) => entries.iter().find(|(t, _)| t == topic).map(|(_, e)| (&e.key, &e.meta)),
        }
    }

    /// Adds or replaces the entry of `topic`; returns the one replaced.
    fn insert(&mut self, topic: Topic, key: Arc<str>, meta: Arc<PresenceMeta>) -> Option<ConnEntry> {
        if let SocketTopics::Mixed(entries) = self {
            if entries.is_empty() {
                *self = SocketTopics::Uniform { key: Arc::clone(&key), entries: Vec::new() };
            }
        }
        if let SocketTopics::Uniform { key: mine, entries } = self {
            if **mine == *key {
                if let Some((_, old)) = entries.iter_mut().find(|(t, _)| *t == topic) {
                    let old = std::mem::replace(old, meta);
                    return Some(ConnEntry { key: Arc::clone(mine), meta: old });
                }
                crate::make_room(entries);
                entries.push((topic, meta));
                return None;
            }
            // Another key: every entry keeps its own from now on.
            let mine = Arc::clone(mine);
            let each = std::mem::take(entries)
                .into_iter()
                .map(|(t, meta)| (t, ConnEntry { key: Arc::clone(&mine), meta }))
                .collect();
            *self = SocketTopics::Mixed(each);
        }
        let SocketTopics::Mixed(entries) = self else { unreachable!("made mixed above") };
        let entry = ConnEntry { key, meta };
        match entries.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, old)) => Some(std::mem::replace(old, entry)),
            None => {
                crate::make_room(entries);
                entries.push((topic, entry));
                None
            }
        }
    }

    fn remove(&mut self, topic: &Topic) -> Option<ConnEntry> {
        match self {
            SocketTopics::Uniform { key, entries } => {
                let at = entries.iter().position(|(t, _)| t == topic)?;
                let meta = entries.swap_remove(at).1;
                Some(ConnEntry { key: Arc::clone(key), meta })
            }
            SocketTopics::Mixed(entries) => {
                let at = entries.iter().position(|(t, _)| t == topic)?;
                Some(entries.swap_remove(at).1)
            }
        }
    }

    /// The meta of the entry added last.
    fn last_meta(&self) -> Option<&Arc<PresenceMeta>> {
        match self {
            SocketTopics::Uniform { entries, .. } => entries.last().map(|(_, m)| m),
            SocketTopics::Mixed(entries) => entries.last().map(|(_, e)| &e.meta),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            SocketTopics::Uniform { entries, .. } => entries.is_empty(),
            SocketTopics::Mixed(entries) => entries.is_empty(),
        }
    }

    fn keys(&self) -> Box<dyn Iterator<Item = &Topic> + '_> {
        match self {
            SocketTopics::Uniform { entries, .. } => Box::new(entries.iter().map(|(t, _)| t)),
            SocketTopics::Mixed(entries) => Box::new(entries.iter().map(|(t, _)| t)),
        }
    }

    /// Each entry: its topic, key and meta.
    fn iter(&self) -> Box<dyn Iterator<Item = (&Topic, &Arc<str>, &Arc<PresenceMeta>)> + '_> {
        match self {
            SocketTopics::Uniform { key, entries } => Box::new(entries.iter().map(move |(t, m)| (t, key, m))),
            SocketTopics::Mixed(entries) => Box::new(entries.iter().map(|(t, e)| (t, &e.key, &e.meta))),
        }
    }

    /// Every entry, taken out.
    fn into_entries(self) -> Vec<(Topic, ConnEntry)> {
        match self {
            SocketTopics::Uniform { key, entries } => {
                entries.into_iter().map(|(t, meta)| (t, ConnEntry { key: Arc::clone(&key), meta })).collect()
            }
            SocketTopics::Mixed(entries) => entries,
        }
    }
}

#[derive(Clone, Debug)]
struct OriginState {
    incarnation: Incarnation,
    seq: u64,
    live: bool,
}

impl OriginState {
    /// Whether a snapshot at `seq` of this incarnation would bring nothing newer.
    fn is_stale(&self, seq: u64) -> bool {
        if self.live {
            seq <= self.seq
        } else {
            seq < self.seq
        }
    }
}

#[derive(Clone, Debug)]
struct Assembly {
    origin: Incarnation,
    seq: u64,
    count: u32,
    parts: BTreeMap<u32, Vec<EntryRecord>>,
}

/// What a local write produced: the delta for the peers (`None` when nothing changed, e.g.
/// untracking what was not tracked) and the joins/leaves for this node's subscribers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalWrite {
    /// Send to every peer (through a [`DeltaBuffer`](super::DeltaBuffer)).
    pub delta: Option<Delta>,
    /// Feed to this node's [`Fanout`](super::Fanout), with each topic's list after it.
    pub changes: PresenceChanges,
}

impl PresenceTable {
    /// An empty table for the node incarnation `me`, whose sequence starts at 0.
    pub fn new(me: Incarnation) -> Self {
        Self {
            me,
            seq: 0,
            topics: HashMap::default(),
            conns: HashMap::default(),
            origins: HashMap::default(),
            retired: HashMap::default(),
            assemblies: HashMap::default(),
            len: 0,
            replicated: true,
            recent: Vec::new(),
        }
    }

    /// Whether local writes make a [`Delta`] for the peers (the default). A node alone in its
    /// cluster has no peers: with `false`, local writes return no delta (and build none), and
    /// the sequence still counts every change.
    pub fn set_replicated(&mut self, on: bool) {
        self.replicated = on;
    }

    /// This node's incarnation: the origin of its local writes.
    pub fn origin(&self) -> &Incarnation {
        &self.me
    }

    /// The sequence number of this node's latest local change (0: none yet).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The last sequence number applied from `origin`, if the table holds that incarnation's
    /// entries (`None` when it is unknown, replaced, or dropped). For this node itself,
    /// [`seq`](Self::seq). A peer that announces its sequence number (in its heartbeats, say)
    /// lets a receiver catch a lost tail of deltas: if this differs, ask for a snapshot.
    pub fn applied_seq(&self, origin: &Incarnation) -> Option<u64> {
        if *origin == self.me {
            return Some(self.seq);
        }
        let state = self.origins.get(&origin.node)?;
        (state.incarnation == *origin && state.live).then_some(state.seq)
    }

    // ---- local writes -------------------------------------------------------------------

    /// Tracks `socket` (on this node) in `topic` under `key` (the user id, or `anonymous`).
    /// If the socket is already in the topic, its entry is replaced (a leave of the old meta
    /// and a join of the new one). `phx_ref` must be fresh (the caller draws it).
    #[allow(clippy::too_many_arguments)] // the fields of an entry; a struct would only rename them
    pub fn track(
        &mut self,
        topic: Topic,
        key: impl Into<Arc<str>>,
        socket: SocketId,
        tab_id: Option<TabId>,
        meta: Meta,
        now: Millis,
        phx_ref: PhxRef,
    ) -> LocalWrite {
        let conn = conn_of(&self.me, socket);
        let key: Arc<str> = key.into();
        let meta = PresenceMeta::new(phx_ref, tab_id, self.me.node.clone(), now, meta);
        let record = self.replicated.then(|| EntryRecord::new(&topic, &key, socket, &meta));
        let mut out = PresenceChanges::default();
        let replaced = self.put(&topic, &conn, key, meta, &mut out);
        match record {
            Some(record) if replaced => self.local(vec![Change::Update(record)], out),
            Some(record) => self.local(vec![Change::Join(record)], out),
            None => self.unreplicated(1, out),
        }
    }

    /// Replaces the user meta of `socket`'s entry in `topic`, under a new `phx_ref` (as
    /// Phoenix does: clients see the old meta leave and the new one join). `tab_id`, `node`
    /// and `online_at` stay. Nothing happens if the socket is not in the topic.
    pub fn update(&mut self, topic: &Topic, socket: SocketId, meta: Meta, phx_ref: PhxRef) -> LocalWrite {
        let conn = conn_of(&self.me, socket);
        let Some((key, old)) = self.lookup(topic, &conn) else {
            return LocalWrite::default();
        };
        let key = Arc::clone(key);
        let new = old.updated(phx_ref, meta);
        let record = EntryRecord::new(topic, &key, socket, &new);
        let mut out = PresenceChanges::default();
        self.put(topic, &conn, key, new, &mut out);
        self.local(vec![Change::Update(record)], out)
    }

    /// Removes `socket`'s entry in `topic`. Nothing happens if there is none.
    pub fn untrack(&mut self, topic: &Topic, socket: SocketId) -> LocalWrite {
        let conn = conn_of(&self.me, socket);
        let mut out = PresenceChanges::default();
        if self.take(topic, &conn, &mut out).is_none() {
            return LocalWrite::default();
        }
        if !self.replicated {
            return self.unreplicated(1, out);
        }
        self.local(vec![Change::Leave { topic: topic.clone(), socket }], out)
    }

    /// Removes every entry of `socket` (the connection ended), one change per topic.
    pub fn untrack_conn(&mut self, socket: SocketId) -> LocalWrite {
        let conn = conn_of(&self.me, socket);
        let mut topics: Vec<Topic> = self
            .conns
            .get(&self.me)
            .and_then(|s| s.get(&socket))
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        topics.sort();
        let mut out = PresenceChanges::default();
        let mut changes = Vec::with_capacity(topics.len());
        for topic in topics {
            if self.take(&topic, &conn, &mut out).is_some() {
                changes.push(Change::Leave { topic, socket });
            }
        }
        self.local(changes, out)
    }

    fn local(&mut self, changes: Vec<Change>, out: PresenceChanges) -> LocalWrite {
        if changes.is_empty() || !self.replicated {
            return self.unreplicated(changes.len() as u64, out);
        }
        let seq_from = self.seq + 1;
        self.seq += changes.len() as u64;
        let delta = Delta { origin: self.me.clone(), seq_from, seq_to: self.seq, changes };
        LocalWrite { delta: Some(delta), changes: out.prune() }
    }

    /// `count` local changes that no peer is told of: they take their sequence numbers all
    /// the same.
    fn unreplicated(&mut self, count: u64, out: PresenceChanges) -> LocalWrite {
        self.seq += count;
        LocalWrite { delta: None, changes: out.prune() }
    }

    // ---- replication --------------------------------------------------------------------

    /// Applies a peer's delta and returns the joins/leaves it caused. A delta already applied
    /// (`seq_to` at or below the applied sequence) is a no-op; a gap, an overlap, a new
    /// incarnation or a dropped origin returns [`NeedSnapshot`] and applies nothing. Deltas
    /// from this node's own name, or from a retired incarnation, are ignored.
    pub fn apply_delta(&mut self, delta: &Delta) -> Result<PresenceChanges, NeedSnapshot> {
        let origin = &delta.origin;
        if origin.node == self.me.node || self.is_retired(origin) {
            return Ok(PresenceChanges::default());
        }
        let need = |reason| Err(NeedSnapshot { origin: origin.clone(), reason });
        if delta.seq_from == 0 || delta.seq_from > delta.seq_to {
            return need(SnapshotReason::Malformed);
        }
        let applied = match self.origins.get(&origin.node) {
            Some(state) if state.incarnation != *origin => return need(SnapshotReason::NewIncarnation),
            Some(state) if delta.seq_to <= state.seq => return Ok(PresenceChanges::default()),
            Some(state) if !state.live => return need(SnapshotReason::Dropped),
            Some(state) => state.seq,
            None => 0,
        };
        if delta.seq_from > applied + 1 {
            return need(SnapshotReason::Gap { applied, seq_from: delta.seq_from });
        }
        if delta.seq_from <= applied {
            return need(SnapshotReason::Overlap { applied, seq_from: delta.seq_from });
        }
        self.origins
            .insert(origin.node.clone(), OriginState { incarnation: origin.clone(), seq: delta.seq_to, live: true });
        let mut out = PresenceChanges::default();
        for change in &delta.changes {
            match change {
                Change::Join(record) | Change::Update(record) => {
                    let (topic, key, socket, meta) = record.clone().into_parts(&origin.node);
                    self.put(&topic, &conn_of(origin, socket), Arc::from(key), meta, &mut out);
                }
                Change::Leave { topic, socket } => {
                    self.take(topic, &conn_of(origin, *socket), &mut out);
                }
            }
        }
        Ok(out.prune())
    }

    /// This node's own entries at its current sequence number, sorted by `(topic, socket)`.
    pub fn snapshot(&self) -> Snapshot {
        let mut entries: Vec<EntryRecord> = self
            .conns
            .get(&self.me)
            .into_iter()
            .flatten()
            .flat_map(|(socket, topics)| {
                topics.iter().map(|(topic, key, meta)| EntryRecord::new(topic, key, *socket, meta))
            })
            .collect();
        entries.sort_by(|a, b| (&a.topic, a.socket).cmp(&(&b.topic, b.socket)));
        Snapshot { origin: self.me.clone(), seq: self.seq, entries }
    }

    /// [`snapshot`](Self::snapshot) in parts of at most `max_entries` entries and about
    /// `max_bytes` bytes (see [`Snapshot::into_chunks`]).
    pub fn snapshot_chunks(&self, max_entries: usize, max_bytes: usize) -> Vec<SnapshotChunk> {
        self.snapshot().into_chunks(max_entries, max_bytes)
    }

    /// Applies a peer's snapshot: that origin's entries become exactly these, and the
    /// joins/leaves this caused are returned. Returns `None`, changing nothing, if the snapshot
    /// is stale (not newer than what was applied from that incarnation), from a retired
    /// incarnation, or from this node's own name. A snapshot of a new incarnation replaces the
    /// old incarnation's entries (their leaves are in the result) and retires it.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Option<PresenceChanges> {
        let Snapshot { origin, seq, entries } = snapshot;
        if !self.accepts_snapshot(&origin, seq) {
            return None;
        }
        if self.assemblies.get(&origin.node).is_some_and(|a| a.origin != origin || a.seq <= seq) {
            self.assemblies.remove(&origin.node);
        }
        let mut out = PresenceChanges::default();
        let state = OriginState { incarnation: origin.clone(), seq, live: true };
        if let Some(old) = self.origins.insert(origin.node.clone(), state) {
            if old.incarnation != origin {
                self.remove_origin_entries(&old.incarnation, &mut out);
                self.retire(old.incarnation);
            }
        }
        self.replace_entries(&origin, entries, &mut out);
        Some(out.prune())
    }

    /// Collects one part of a peer's snapshot; once every part of it is here, applies it as
    /// [`apply_snapshot`](Self::apply_snapshot) does and returns what that returns. Returns
    /// `None` while parts are missing, and for a part that is stale, malformed (index out of
    /// range, a part count that disagrees) or older than the snapshot being collected. Parts
    /// of a newer snapshot, or of another incarnation, restart the collection.
    pub fn apply_snapshot_chunk(&mut self, chunk: SnapshotChunk) -> Option<PresenceChanges> {
        let SnapshotChunk { origin, seq, index, count, entries } = chunk;
        if index >= count || !self.accepts_snapshot(&origin, seq) {
            return None;
        }
        let node = origin.node.clone();
        let assembly = self.assemblies.entry(node.clone()).or_insert_with(|| Assembly {
            origin: origin.clone(),
            seq,
            count,
            parts: BTreeMap::new(),
        });
        if assembly.origin != origin || assembly.seq < seq {
            *assembly = Assembly { origin: origin.clone(), seq, count, parts: BTreeMap::new() };
        } else if assembly.seq > seq || assembly.count != count {
            return None;
        }
        assembly.parts.insert(index, entries);
        if assembly.parts.len() < count as usize {
            return None;
        }
        let assembly = self.assemblies.remove(&node)?;
        let entries = assembly.parts.into_values().flatten().collect();
        self.apply_snapshot(Snapshot { origin, seq, entries })
    }

    /// A peer was declared down: removes the entries of `origin` and returns their leaves.
    /// The table remembers where that incarnation was, so only its snapshot (at that sequence
    /// or later) brings its entries back. This node's own incarnation is never dropped.
    pub fn drop_origin(&mut self, origin: &Incarnation) -> PresenceChanges {
        let mut out = PresenceChanges::default();
        if *origin == self.me {
            return out;
        }
        if self.assemblies.get(&origin.node).is_some_and(|a| a.origin == *origin) {
            self.assemblies.remove(&origin.node);
        }
        if let Some(state) = self.origins.get_mut(&origin.node) {
            if state.incarnation == *origin {
                state.live = false;
            }
        }
        self.remove_origin_entries(origin, &mut out);
        out.prune()
    }

    /// [`drop_origin`](Self::drop_origin) for whatever incarnation of `node` the table holds.
    pub fn drop_node(&mut self, node: &NodeName) -> PresenceChanges {
        match self.origins.get(node) {
            Some(state) => {
                let incarnation = state.incarnation.clone();
                self.drop_origin(&incarnation)
            }
            None => PresenceChanges::default(),
        }
    }

    fn accepts_snapshot(&self, origin: &Incarnation, seq: u64) -> bool {
        if origin.node == self.me.node || self.is_retired(origin) {
            return false;
        }
        match self.origins.get(&origin.node) {
            Some(state) if state.incarnation == *origin => !state.is_stale(seq),
            _ => true,
        }
    }

    fn is_retired(&self, origin: &Incarnation) -> bool {
        self.retired.get(&origin.node).is_some_and(|boots| boots.contains(&origin.boot))
    }

    fn retire(&mut self, origin: Incarnation) {
        let boots = self.retired.entry(origin.node.clone()).or_default();
        if boots.len() == RETIRED_PER_NODE {
            boots.pop_front();
        }
        boots.push_back(origin.boot);
    }

    /// Makes `origin`'s entries exactly `entries`: leaves for those missing, joins for those
    /// new or changed; identical ones (same key and `phx_ref`) are left alone.
    fn replace_entries(&mut self, origin: &Incarnation, entries: Vec<EntryRecord>, out: &mut PresenceChanges) {
        let gone: Vec<(SocketId, Topic)> = {
            let wanted: HashSet<(SocketId, &Topic)> = entries.iter().map(|e| (e.socket, &e.topic)).collect();
            self.conns
                .get(origin)
                .into_iter()
                .flatten()
                .flat_map(|(socket, topics)| topics.keys().map(move |topic| (*socket, topic)))
                .filter(|(socket, topic)| !wanted.contains(&(*socket, *topic)))
                .map(|(socket, topic)| (socket, topic.clone()))
                .collect()
        };
        for (socket, topic) in gone {
            self.take(&topic, &conn_of(origin, socket), out);
        }
        for record in entries {
            let conn = conn_of(origin, record.socket);
            let same = self
                .lookup(&record.topic, &conn)
                .is_some_and(|(key, meta)| **key == *record.key && meta.phx_ref() == record.phx_ref);
            if !same {
                let (topic, key, _, meta) = record.into_parts(&origin.node);
                self.put(&topic, &conn, Arc::from(key), meta, out);
            }
        }
    }

    fn remove_origin_entries(&mut self, origin: &Incarnation, out: &mut PresenceChanges) {
        let Some(sockets) = self.conns.remove(origin) else {
            return;
        };
        for (topic, entry) in sockets.into_values().flat_map(SocketTopics::into_entries) {
            self.remove_from_topic(&topic, &entry, out);
        }
    }

    // ---- reads --------------------------------------------------------------------------

    /// The presences of `topic`, grouped by key, each key's metas oldest first. Anonymous
    /// viewers and signed-in users are shown as `view` says: one meta each, or one meta
    /// carrying their count.
    ///
    /// O(1): a snapshot sharing the table's structure (later writes do not show in it), whose
    /// metas are flattened only when it is read or serialized.
    pub fn list(&self, topic: &Topic, view: impl Into<PresenceView>) -> PresenceList {
        let entries = self.topics.get(topic).map(|index| index.by_key.clone()).unwrap_or_default();
        PresenceList::new(entries, view.into())
    }

    /// How many entries `topic` has, on all nodes, anonymous ones included.
    pub fn count(&self, topic: &Topic) -> usize {
        self.topics.get(topic).map_or(0, |t| t.len)
    }

    /// How many anonymous entries `topic` has, on all nodes.
    pub fn anonymous_count(&self, topic: &Topic) -> usize {
        self.topics.get(topic).map_or(0, TopicIndex::anonymous)
    }

    /// The topics with at least one entry, in no particular order.
    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.keys()
    }

    /// The number of entries, all topics and origins.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries of one connection (any origin), sorted by topic.
    pub fn entries_of(&self, conn: &ConnId) -> Vec<PresenceEntry> {
        let mut entries: Vec<PresenceEntry> = self
            .conns
            .get(&conn.gateway)
            .and_then(|sockets| sockets.get(&conn.socket))
            .into_iter()
            .flat_map(SocketTopics::iter)
            .map(|(topic, key, meta)| PresenceEntry {
                topic: topic.clone(),
                key: key.to_string(),
                conn: conn.clone(),
                meta: PresenceMeta::clone(meta),
            })
            .collect();
        entries.sort_by(|a, b| a.topic.cmp(&b.topic));
        entries
    }

    /// The metas stored under `key` in `topic`, oldest first (tests: what they share).
    #[cfg(test)]
    pub(super) fn stored(&self, topic: &Topic, key: &str) -> Vec<Arc<PresenceMeta>> {
        let metas = self.topics.get(topic).and_then(|t| t.by_key.get(key));
        metas.into_iter().flat_map(KeyEntries::iter).map(|m| Arc::clone(&m.0)).collect()
    }

    // ---- the two indexes ----------------------------------------------------------------

    fn lookup(&self, topic: &Topic, conn: &ConnId) -> Option<(&Arc<str>, &Arc<PresenceMeta>)> {
        self.conns.get(&conn.gateway)?.get(&conn.socket)?.get(topic)
    }

    /// Inserts or replaces the entry of `(topic, conn)`; returns whether one was replaced.
    fn put(
        &mut self,
        topic: &Topic,
        conn: &ConnId,
        key: Arc<str>,
        mut meta: PresenceMeta,
        out: &mut PresenceChanges,
    ) -> bool {
        self.share_about(conn, &mut meta);
        let meta = Arc::new(meta);
        let index = self.topics.entry(topic.clone()).or_default();
        let anonymous_before = index.anonymous();
        let users_before = index.users();
        let key = index.insert(key, Arc::clone(&meta));
        self.len += 1;
        let old = self.conns.entry(conn.gateway.clone()).or_default().entry(conn.socket).or_default().insert(
            topic.clone(),
            Arc::clone(&key),
            Arc::clone(&meta),
        );
        if let Some(old) = &old {
            if index.remove(&old.key, &old.meta) {
                self.len -= 1;
                out.leave(topic, &old.key, &old.meta);
            }
        }
        out.join(topic, &key, &meta);
        if is_anonymous(&key) || old.as_ref().is_some_and(|old| is_anonymous(&old.key)) {
            out.count(topic, anonymous_before, index.anonymous());
        }
        if index.users() != users_before {
            out.users(topic, users_before, index.users());
        }
        old.is_some()
    }

    /// Hands `meta` the shared part (tab, node, user meta) of its socket's latest entry, or of
    /// a meta stored lately, when that is equal to its own: a socket's presences in its several
    /// topics keep one copy of it, and so do the sockets that joined alike.
    fn share_about(&mut self, conn: &ConnId, meta: &mut PresenceMeta) {
        let sibling = self.conns.get(&conn.gateway).and_then(|s| s.get(&conn.socket)).and_then(SocketTopics::last_meta);
        if sibling.is_some_and(|m| meta.share(m.about())) {
            return;
        }
        if let Some(at) = self.recent.iter().position(|about| meta.share(about)) {
            let about = self.recent.remove(at);
            self.recent.push(about);
            return;
        }
        if self.recent.len() == RECENT_ABOUTS {
            self.recent.remove(0);
        }
        self.recent.push(Arc::clone(meta.about()));
    }

    /// Removes the entry of `(topic, conn)` from both indexes; `None` if there was none.
    fn take(&mut self, topic: &Topic, conn: &ConnId, out: &mut PresenceChanges) -> Option<()> {
        let sockets = self.conns.get_mut(&conn.gateway)?;
        let topics = sockets.get_mut(&conn.socket)?;
        let entry = topics.remove(topic)?;
        if topics.is_empty() {
            sockets.remove(&conn.socket);
            if sockets.is_empty() {
                self.conns.remove(&conn.gateway);
            }
        }
        self.remove_from_topic(topic, &entry, out);
        Some(())
    }

    /// Removes `entry` from `topic`'s index only (the caller fixed the conn index).
    fn remove_from_topic(&mut self, topic: &Topic, entry: &ConnEntry, out: &mut PresenceChanges) {
        let Some(index) = self.topics.get_mut(topic) else {
            return;
        };
        let anonymous_before = index.anonymous();
        let users_before = index.users();
        if !index.remove(&entry.key, &entry.meta) {
            return;
        }
        self.len -= 1;
        out.leave(topic, &entry.key, &entry.meta);
        if is_anonymous(&entry.key) {
            out.count(topic, anonymous_before, index.anonymous());
        }
        if index.users() != users_before {
            out.users(topic, users_before, index.users());
        }
        if index.len == 0 {
            self.topics.remove(topic);
        }
    }
}
