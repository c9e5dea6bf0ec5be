//! Joins and leaves: netted per `phx_ref` ([`PresenceChanges`]) and shaped for the Phoenix
//! client ([`PresenceDiff`]); `fanout.rs` coalesces them per topic window.
//!
//! Netting is what keeps a client right. phoenix.js `syncDiff` applies a diff's joins first and
//! its leaves second, matching metas by `phx_ref`, so a diff must never carry one `phx_ref` in
//! both: a ref that joined and left inside one batch or window is dropped, and so is one that
//! left and came back (a peer declared down, then its snapshot). Each ref is kept as its
//! presence *before* the batch and *after* it; only a difference is reported.

use super::{counted_meta, AnonymousView, PresenceMeta, PresenceView, UsersView, USERS_KEY};
use crate::few::{self, Few};
use crate::ids::{Meta, MetaValue, PhxRef, Topic, UserId};
use serde::ser::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The joins and leaves one table operation (or several, merged) caused, per topic. One
/// operation's (one topic, one `phx_ref`, the usual case) allocate nothing: see [`Few`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PresenceChanges {
    topics: Few<Topic, TopicChanges>,
}

/// The netted joins and leaves of one topic, plus the changes of its anonymous count and of
/// its number of signed-in users.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicChanges {
    refs: Few<PhxRef, RefChange>,
    anonymous: Option<CountChange>,
    users: Option<CountChange>,
}

/// One `phx_ref` seen in a batch: was it present before, is it present after.
#[derive(Clone, Debug, PartialEq)]
struct RefChange {
    /// The key as the table holds it (shared, not copied).
    key: Arc<str>,
    before: bool,
    after: bool,
    meta: Arc<PresenceMeta>,
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
        if self.topics.is_empty() {
            self.topics = later.topics;
            return;
        }
        for (topic, changes) in later.topics {
            match self.topics.get_mut(&topic) {
                None => self.topics.insert(topic, changes),
                Some(mine) => {
                    mine.merge(changes);
                    if mine.is_empty() {
                        self.topics.remove(&topic);
                    }
                }
            }
        }
    }

    pub(super) fn join(&mut self, topic: &Topic, key: &Arc<str>, meta: &Arc<PresenceMeta>) {
        self.topic_mut(topic).record(key, meta, true);
    }

    pub(super) fn leave(&mut self, topic: &Topic, key: &Arc<str>, meta: &Arc<PresenceMeta>) {
        self.topic_mut(topic).record(key, meta, false);
    }

    pub(super) fn count(&mut self, topic: &Topic, before: usize, after: usize) {
        self.topic_mut(topic).count(before, after);
    }

    pub(super) fn users(&mut self, topic: &Topic, before: usize, after: usize) {
        let c = self.topic_mut(topic);
        c.users = net(c.users, before, after);
    }

    /// Drops topics whose changes netted out; table operations call it before returning.
    pub(super) fn prune(mut self) -> Self {
        self.topics.retain(|_, c| !c.is_empty());
        self
    }

    fn topic_mut(&mut self, topic: &Topic) -> &mut TopicChanges {
        self.topics.get_or_insert_with(topic.clone(), TopicChanges::default)
    }
}

impl FromIterator<(Topic, TopicChanges)> for PresenceChanges {
    /// Reassemble changes split by topic (e.g. routed to presence shards by topic).
    fn from_iter<I: IntoIterator<Item = (Topic, TopicChanges)>>(iter: I) -> Self {
        let mut out = PresenceChanges::default();
        for (topic, changes) in iter {
            out.merge(PresenceChanges { topics: Few::One(topic, changes) });
        }
        out
    }
}

impl IntoIterator for PresenceChanges {
    type Item = (Topic, TopicChanges);
    type IntoIter = few::IntoIter<Topic, TopicChanges>;

    fn into_iter(self) -> Self::IntoIter {
        self.topics.into_iter()
    }
}

impl TopicChanges {
    /// Whether nothing visible changed in this topic.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty() && self.anonymous.is_none() && self.users.is_none()
    }

    /// The metas that appeared, as `(key, meta)`, anonymous ones included.
    pub fn joins(&self) -> impl Iterator<Item = (&str, &PresenceMeta)> {
        self.refs.values().filter(|c| !c.before && c.after).map(|c| (&*c.key, &*c.meta))
    }

    /// The metas that went away, as `(key, meta)`, anonymous ones included.
    pub fn leaves(&self) -> impl Iterator<Item = (&str, &PresenceMeta)> {
        self.refs.values().filter(|c| c.before && !c.after).map(|c| (&*c.key, &*c.meta))
    }

    /// How the anonymous count moved, if it did.
    pub fn anonymous_count(&self) -> Option<CountChange> {
        self.anonymous
    }

    /// How the number of signed-in users (distinct keys) moved, if it did.
    pub fn users_count(&self) -> Option<CountChange> {
        self.users
    }

    /// Appends changes that happened after these, netting per `phx_ref`.
    pub fn merge(&mut self, later: TopicChanges) {
        if self.is_empty() {
            // A window's first changes: taken whole (nothing to net them with).
            *self = later;
            return;
        }
        for (phx_ref, change) in later.refs {
            match self.refs.get_mut(&phx_ref) {
                None => self.refs.insert(phx_ref, change),
                Some(c) => {
                    c.after = change.after;
                    c.meta = change.meta;
                    c.key = change.key;
                    if c.before == c.after {
                        self.refs.remove(&phx_ref);
                    }
                }
            }
        }
        if let Some(c) = later.anonymous {
            self.count(c.before, c.after);
        }
        if let Some(c) = later.users {
            self.users = net(self.users, c.before, c.after);
        }
    }

    /// The client frame for these changes. A count shown instead of metas ([`AnonymousView::Count`]
    /// for anonymous viewers, [`UsersView::Count`] for signed-in users) moves as a leave of the
    /// old count's meta and a join of the new one.
    ///
    /// [`UsersView::Count`]: super::UsersView::Count
    pub fn to_diff(&self, view: impl Into<PresenceView>) -> PresenceDiff {
        let view = view.into();
        let mut diff = PresenceDiff::default();
        for c in self.refs.values() {
            if c.before == c.after || view.counts(&c.key) {
                continue;
            }
            let side = if c.after { &mut diff.joins } else { &mut diff.leaves };
            side.entry(c.key.to_string()).or_default().metas.push(c.meta.to_flat());
        }
        let counts = [
            (view.anonymous == AnonymousView::Count, UserId::ANONYMOUS, self.anonymous),
            (view.users == UsersView::Count, USERS_KEY, self.users),
        ];
        for (shown, key, change) in counts {
            let (true, Some(c)) = (shown, change) else { continue };
            if c.before > 0 {
                diff.leaves.insert(key.to_owned(), MetaList { metas: vec![counted_meta(key, c.before)] });
            }
            if c.after > 0 {
                diff.joins.insert(key.to_owned(), MetaList { metas: vec![counted_meta(key, c.after)] });
            }
        }
        diff
    }

    fn record(&mut self, key: &Arc<str>, meta: &Arc<PresenceMeta>, present: bool) {
        let phx_ref = meta.phx_ref();
        match self.refs.get_mut(&phx_ref) {
            None => {
                let change =
                    RefChange { key: Arc::clone(key), before: !present, after: present, meta: Arc::clone(meta) };
                self.refs.insert(phx_ref, change);
            }
            Some(c) => {
                c.after = present;
                c.meta = Arc::clone(meta);
                if c.before == c.after {
                    self.refs.remove(&phx_ref);
                }
            }
        }
    }

    fn count(&mut self, before: usize, after: usize) {
        self.anonymous = net(self.anonymous, before, after);
    }
}

/// A count that moved from `before` to `after`, after it had moved as `earlier` says: from
/// the first `before` to the last `after`, or nothing if that is no move.
fn net(earlier: Option<CountChange>, before: usize, after: usize) -> Option<CountChange> {
    let first = earlier.map_or(before, |c| c.before);
    (first != after).then_some(CountChange { before: first, after })
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
