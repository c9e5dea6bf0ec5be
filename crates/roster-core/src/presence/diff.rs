//! Joins and leaves: netted per `phx_ref` ([`PresenceChanges`]), coalesced per topic over a
//! window ([`DiffCoalescer`]), and shaped for the Phoenix client ([`PresenceDiff`]).
//!
//! Netting is what keeps a client right. phoenix.js `syncDiff` applies a diff's joins first and
//! its leaves second, matching metas by `phx_ref`, so a diff must never carry one `phx_ref` in
//! both: a ref that joined and left inside one batch or window is dropped, and so is one that
//! left and came back (a peer declared down, then its snapshot). Each ref is kept as its
//! presence *before* the batch and *after* it; only a difference is reported.
//!
//! One exception keeps a subscriber that joins while a window is open right: its
//! `presence_state` was taken after some of the window's changes, so the window's diff must
//! also bring *it* to the list the window closes on. [`DiffCoalescer::subscribed`] marks what
//! such a subscriber saw; a ref it saw present that ends absent is left (even if it was absent
//! before the window), one it saw absent that ends present is joined, and every anonymous count
//! it saw is left. Older subscribers then get a leave of a ref they never had or a join of one
//! they have, both of which phoenix.js `syncDiff` absorbs.

use super::{count_meta, is_anonymous, AnonymousView, PresenceMeta};
use crate::ids::{Meta, MetaValue, Millis, PhxRef, Topic, UserId};
use serde::ser::{Serialize, Serializer};
use std::collections::btree_map::Entry as BTreeEntry;
use std::collections::hash_map::Entry as HashEntry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// The joins and leaves one table operation (or several, merged) caused, per topic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PresenceChanges {
    topics: BTreeMap<Topic, TopicChanges>,
}

/// The netted joins and leaves of one topic, plus the change of its anonymous count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicChanges {
    refs: BTreeMap<PhxRef, RefChange>,
    anonymous: Option<CountChange>,
    /// The anonymous count after the latest change recorded, if any was.
    count_now: Option<usize>,
    /// Anonymous counts a subscriber that joined during the window saw in its state.
    late_counts: std::collections::BTreeSet<usize>,
}

/// One `phx_ref` seen in a batch: was it present before, is it present after.
#[derive(Clone, Debug, PartialEq)]
struct RefChange {
    key: String,
    before: bool,
    after: bool,
    meta: Arc<PresenceMeta>,
    /// A subscriber that joined during the window saw it present / absent.
    late_present: bool,
    late_absent: bool,
}

impl RefChange {
    /// Whether a diff must carry it: it changed, or a late subscriber saw it otherwise.
    fn visible(&self) -> bool {
        self.before != self.after || (self.after && self.late_absent) || (!self.after && self.late_present)
    }
}

/// How the number of anonymous entries of a topic moved (cluster-wide, as this table sees it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountChange {
    /// The count before the change.
    pub before: usize,
    /// The count after it.
    pub after: usize,
}

impl PresenceChanges {
    /// Whether nothing visible changed.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// The changes of one topic, if it changed.
    pub fn topic(&self, topic: &Topic) -> Option<&TopicChanges> {
        self.topics.get(topic)
    }

    /// The topics that changed, with their changes, in topic order.
    pub fn iter(&self) -> impl Iterator<Item = (&Topic, &TopicChanges)> {
        self.topics.iter()
    }

    /// Every join as `(topic, key, meta)`.
    pub fn joins(&self) -> impl Iterator<Item = (&Topic, &str, &PresenceMeta)> {
        self.topics.iter().flat_map(|(t, c)| c.joins().map(move |(k, m)| (t, k, m)))
    }

    /// Every leave as `(topic, key, meta)`.
    pub fn leaves(&self) -> impl Iterator<Item = (&Topic, &str, &PresenceMeta)> {
        self.topics.iter().flat_map(|(t, c)| c.leaves().map(move |(k, m)| (t, k, m)))
    }

    /// Appends changes that happened after these, netting per `phx_ref`.
    pub fn merge(&mut self, later: PresenceChanges) {
        for (topic, changes) in later.topics {
            match self.topics.entry(topic) {
                BTreeEntry::Vacant(v) => {
                    v.insert(changes);
                }
                BTreeEntry::Occupied(mut o) => {
                    o.get_mut().merge(changes);
                    if o.get().is_empty() {
                        o.remove();
                    }
                }
            }
        }
    }

    pub(super) fn join(&mut self, topic: &Topic, key: &str, meta: &Arc<PresenceMeta>) {
        self.topic_mut(topic).record(key, meta, true);
    }

    pub(super) fn leave(&mut self, topic: &Topic, key: &str, meta: &Arc<PresenceMeta>) {
        self.topic_mut(topic).record(key, meta, false);
    }

    pub(super) fn count(&mut self, topic: &Topic, before: usize, after: usize) {
        self.topic_mut(topic).count(before, after);
    }

    /// Drops topics whose changes netted out; table operations call it before returning.
    pub(super) fn prune(mut self) -> Self {
        self.topics.retain(|_, c| !c.is_empty());
        self
    }

    fn topic_mut(&mut self, topic: &Topic) -> &mut TopicChanges {
        self.topics.entry(topic.clone()).or_default()
    }
}

impl FromIterator<(Topic, TopicChanges)> for PresenceChanges {
    /// Reassemble changes split by topic (e.g. routed to presence shards by topic).
    fn from_iter<I: IntoIterator<Item = (Topic, TopicChanges)>>(iter: I) -> Self {
        let mut out = PresenceChanges::default();
        for (topic, changes) in iter {
            out.merge(PresenceChanges { topics: BTreeMap::from([(topic, changes)]) });
        }
        out
    }
}

impl IntoIterator for PresenceChanges {
    type Item = (Topic, TopicChanges);
    type IntoIter = std::collections::btree_map::IntoIter<Topic, TopicChanges>;

    fn into_iter(self) -> Self::IntoIter {
        self.topics.into_iter()
    }
}

impl TopicChanges {
    /// Whether nothing visible changed in this topic.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty() && self.anonymous.is_none() && self.late_counts.iter().all(|c| Some(*c) == self.count_now)
    }

    /// The metas that appeared, as `(key, meta)`, anonymous ones included.
    pub fn joins(&self) -> impl Iterator<Item = (&str, &PresenceMeta)> {
        self.refs.values().filter(|c| !c.before && c.after).map(|c| (c.key.as_str(), &*c.meta))
    }

    /// The metas that went away, as `(key, meta)`, anonymous ones included.
    pub fn leaves(&self) -> impl Iterator<Item = (&str, &PresenceMeta)> {
        self.refs.values().filter(|c| c.before && !c.after).map(|c| (c.key.as_str(), &*c.meta))
    }

    /// How the anonymous count moved, if it did.
    pub fn anonymous_count(&self) -> Option<CountChange> {
        self.anonymous
    }

    /// Appends changes that happened after these, netting per `phx_ref`.
    pub fn merge(&mut self, later: TopicChanges) {
        for (phx_ref, change) in later.refs {
            match self.refs.entry(phx_ref) {
                BTreeEntry::Vacant(v) => {
                    v.insert(change);
                }
                BTreeEntry::Occupied(mut o) => {
                    let c = o.get_mut();
                    c.after = change.after;
                    c.meta = change.meta;
                    c.key = change.key;
                    if !c.visible() {
                        o.remove();
                    }
                }
            }
        }
        if let Some(c) = later.anonymous {
            self.count(c.before, c.after);
        }
        if later.count_now.is_some() {
            self.count_now = later.count_now;
        }
        self.late_counts.extend(later.late_counts);
    }

    /// A subscriber joined now, with a `presence_state` taken after every change so far:
    /// remember what it saw (see the module docs).
    fn mark_late(&mut self) {
        for c in self.refs.values_mut() {
            if c.after {
                c.late_present = true;
            } else {
                c.late_absent = true;
            }
        }
        if let Some(now) = self.count_now {
            self.late_counts.insert(now);
        }
    }

    /// The client frame for these changes. With [`AnonymousView::Count`], anonymous metas are
    /// replaced by the count meta: a leave of the old count's meta and a join of the new one.
    pub fn to_diff(&self, view: AnonymousView) -> PresenceDiff {
        let mut diff = PresenceDiff::default();
        for c in self.refs.values() {
            if !c.visible() || (view == AnonymousView::Count && is_anonymous(&c.key)) {
                continue;
            }
            let side = if c.after { &mut diff.joins } else { &mut diff.leaves };
            side.entry(c.key.clone()).or_default().metas.push(c.meta.to_flat());
        }
        if view == AnonymousView::Count {
            if let Some(after) = self.count_now {
                // Every count a subscriber may show leaves: the window's first one, and those
                // late subscribers saw; the count it closes on joins.
                let mut left: Vec<usize> = self.anonymous.map(|c| c.before).into_iter().collect();
                left.extend(self.late_counts.iter().copied());
                left.sort_unstable();
                left.dedup();
                left.retain(|&c| c > 0 && c != after);
                let key = UserId::ANONYMOUS.to_owned();
                if !left.is_empty() {
                    diff.leaves.insert(key.clone(), MetaList { metas: left.into_iter().map(count_meta).collect() });
                }
                let moved = self.anonymous.is_some() || self.late_counts.iter().any(|&c| c != after);
                if after > 0 && moved {
                    diff.joins.insert(key, MetaList { metas: vec![count_meta(after)] });
                }
            }
        }
        diff
    }

    fn record(&mut self, key: &str, meta: &Arc<PresenceMeta>, present: bool) {
        match self.refs.entry(meta.phx_ref.clone()) {
            BTreeEntry::Vacant(v) => {
                v.insert(RefChange {
                    key: key.to_owned(),
                    before: !present,
                    after: present,
                    meta: Arc::clone(meta),
                    late_present: false,
                    late_absent: false,
                });
            }
            BTreeEntry::Occupied(mut o) => {
                let c = o.get_mut();
                c.after = present;
                c.meta = Arc::clone(meta);
                if !c.visible() {
                    o.remove();
                }
            }
        }
    }

    fn count(&mut self, before: usize, after: usize) {
        let first = self.anonymous.map_or(before, |c| c.before);
        self.anonymous = (first != after).then_some(CountChange { before: first, after });
        self.count_now = Some(after);
    }
}

/// Coalesces [`PresenceChanges`] per topic over `diff_ms`, so a burst of a thousand joins is
/// one `presence_diff` frame.
///
/// A topic's window opens with its first change and closes `diff_ms` later; the caller
/// schedules a timer at [`due_at`](Self::due_at) and calls [`flush`](Self::flush) then. Inside
/// a window changes net per `phx_ref` (a join then a leave cancel; an update is the leave of
/// the old ref plus the join of the new one), and the anonymous count moves at most once.
#[derive(Clone, Debug)]
pub struct DiffCoalescer {
    diff_ms: Millis,
    pending: HashMap<Topic, TopicChanges>,
    /// `(due, topic)` in the order windows opened; `now` is monotonic, so also by due time.
    windows: VecDeque<(Millis, Topic)>,
}

impl DiffCoalescer {
    /// A coalescer whose windows last `diff_ms`.
    pub fn new(diff_ms: Millis) -> Self {
        Self { diff_ms, pending: HashMap::new(), windows: VecDeque::new() }
    }

    /// Adds changes that happened at `now`; opens a window for each topic without one.
    pub fn push(&mut self, changes: PresenceChanges, now: Millis) {
        for (topic, changes) in changes {
            match self.pending.entry(topic) {
                HashEntry::Occupied(o) => o.into_mut().merge(changes),
                HashEntry::Vacant(v) => {
                    self.windows.push_back((now.saturating_add(self.diff_ms), v.key().clone()));
                    v.insert(changes);
                }
            }
        }
    }

    /// A subscriber of `topic` starts now, with a `presence_state` taken after every change
    /// pushed so far: the open window's diff must bring it, too, to the list the window closes
    /// on (see the module docs). Without an open window there is nothing to do.
    pub fn subscribed(&mut self, topic: &Topic) {
        if let Some(p) = self.pending.get_mut(topic) {
            p.mark_late();
        }
    }

    /// When the earliest open window closes; `None` when nothing is pending.
    pub fn due_at(&self) -> Option<Millis> {
        self.windows.front().map(|(due, _)| *due)
    }

    /// Whether `topic` has an open window.
    pub fn is_pending(&self, topic: &Topic) -> bool {
        self.pending.contains_key(topic)
    }

    /// Closes every window due at `now` and returns one diff per topic, in window order,
    /// leaving out topics whose changes netted to nothing. `view` says how each topic shows
    /// its anonymous viewers.
    pub fn flush(&mut self, now: Millis, view: impl Fn(&Topic) -> AnonymousView) -> Vec<(Topic, PresenceDiff)> {
        let mut out = Vec::new();
        while let Some((due, _)) = self.windows.front() {
            if *due > now {
                break;
            }
            if let Some((_, topic)) = self.windows.pop_front() {
                self.close(topic, &view, &mut out);
            }
        }
        out
    }

    /// Closes every window now, due or not (shutdown, tests).
    pub fn flush_all(&mut self, view: impl Fn(&Topic) -> AnonymousView) -> Vec<(Topic, PresenceDiff)> {
        let mut out = Vec::new();
        while let Some((_, topic)) = self.windows.pop_front() {
            self.close(topic, &view, &mut out);
        }
        out
    }

    fn close(&mut self, topic: Topic, view: &impl Fn(&Topic) -> AnonymousView, out: &mut Vec<(Topic, PresenceDiff)>) {
        if let Some(changes) = self.pending.remove(&topic) {
            let diff = changes.to_diff(view(&topic));
            if !diff.is_empty() {
                out.push((topic, diff));
            }
        }
    }
}

/// The metas of one presence key, serialized as Phoenix's `{"metas": [...]}` with plain JSON
/// values.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct MetaList {
    /// Flat metas (see [`PresenceMeta::to_flat`]).
    #[serde(serialize_with = "plain_metas")]
    pub metas: Vec<Meta>,
}

/// One `presence_diff` frame: `{"joins": {key: {metas}}, "leaves": {key: {metas}}}`, both
/// always present; no `phx_ref` is in both.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PresenceDiff {
    /// Metas that appeared, per key.
    pub joins: BTreeMap<String, MetaList>,
    /// Metas that went away, per key.
    pub leaves: BTreeMap<String, MetaList>,
}

impl PresenceDiff {
    /// Whether the frame would change nothing (and need not be sent).
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }
}

/// [`MetaValue`] as plain JSON (`"x"`, not `{"Str": "x"}`): the derive is for bincode between
/// nodes, clients want the value itself.
pub(super) struct Plain<'a>(pub(super) &'a MetaValue);

impl Serialize for Plain<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            MetaValue::Null => s.serialize_unit(),
            MetaValue::Bool(b) => s.serialize_bool(*b),
            MetaValue::Int(i) => s.serialize_i64(*i),
            MetaValue::Float(f) => s.serialize_f64(*f),
            MetaValue::Str(x) => s.serialize_str(x),
            MetaValue::List(items) => s.collect_seq(items.iter().map(Plain)),
            MetaValue::Map(map) => s.collect_map(map.iter().map(|(k, v)| (k, Plain(v)))),
        }
    }
}

/// A [`Meta`] as a plain JSON object (see [`Plain`]).
pub(super) struct PlainMeta<'a>(pub(super) &'a Meta);

impl Serialize for PlainMeta<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, Plain(v))))
    }
}

fn plain_metas<S: Serializer>(metas: &[Meta], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(metas.iter().map(PlainMeta))
}
