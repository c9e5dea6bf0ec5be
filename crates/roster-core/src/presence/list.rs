//! A topic's presences as readers see them: [`PresenceList`], an immutable snapshot that shares
//! its structure with the table, so taking one costs O(1) however big the topic. Metas are
//! flattened for the client ([`PresenceMeta::to_flat`]) only when the list is read or
//! serialized, never when it is taken.
//!
//! The table keeps each topic as [`TopicEntries`], persistent maps: a write copies only the
//! O(log n) nodes on its path that a live snapshot still shares, and a snapshot nobody holds
//! costs nothing.

use super::diff::{MetaList, Plain, PlainMeta};
use super::{count_meta, is_anonymous, AnonymousView, PresenceMeta};
use crate::ids::Meta;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, SerializeStruct, Serializer};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One topic's entries by presence key. Keys are `Arc<str>` so that copying a tree node (when a
/// write meets a shared snapshot) bumps reference counts instead of allocating strings.
pub(super) type TopicEntries = imbl::OrdMap<Arc<str>, KeyEntries>;

/// One key's metas, oldest first.
pub(super) type KeyEntries = imbl::OrdSet<ByAge>;

/// A stored meta, ordered oldest first: by `online_at`, then `phx_ref`, then `node`. The
/// allocation's address breaks the ties that remain (one node repeating a `phx_ref` within a
/// millisecond, which only a faulty peer would do), so two entries never collapse into one.
#[derive(Clone, Debug)]
pub(super) struct ByAge(pub(super) Arc<PresenceMeta>);

impl Ord for ByAge {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (&*self.0, &*other.0);
        (a.online_at, &a.phx_ref, &a.node)
            .cmp(&(b.online_at, &b.phx_ref, &b.node))
            .then_with(|| Arc::as_ptr(&self.0).cmp(&Arc::as_ptr(&other.0)))
    }
}

impl PartialOrd for ByAge {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ByAge {
    /// The same stored meta (equal orders imply the same allocation).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ByAge {}

/// A topic's presences, `{key: {"metas": [...]}}` as `presence_state` carries it: keys sorted,
/// each key's metas oldest first (by `online_at`, then `phx_ref`), flat and in plain JSON.
///
/// An immutable snapshot of the table at the time [`PresenceTable::list`] was called: cloning
/// and taking one are O(1), later writes to the table do not show. Reading a key's metas
/// ([`get`](Self::get), [`iter`](Self::iter)) or serializing flattens them then. With
/// [`AnonymousView::Count`], the anonymous entries show as the single count meta (and the
/// `anonymous` key is absent when there are none).
///
/// [`PresenceTable::list`]: super::PresenceTable::list
#[derive(Clone, Default)]
pub struct PresenceList {
    entries: TopicEntries,
    view: AnonymousView,
}

/// What one key shows: its metas, or the anonymous count.
#[derive(Clone, Copy)]
enum Shown<'a> {
    Count(usize),
    Metas(&'a KeyEntries),
}

impl PresenceList {
    pub(super) fn new(entries: TopicEntries, view: AnonymousView) -> Self {
        Self { entries, view }
    }

    /// How it shows anonymous viewers.
    pub fn view(&self) -> AnonymousView {
        self.view
    }

    /// Whether nobody is present.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of presence keys (users, plus `anonymous` if any).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The presence keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.keys().map(|key| &**key)
    }

    /// The flat metas of `key`, oldest first; `None` if the key is absent.
    pub fn get(&self, key: &str) -> Option<Vec<Meta>> {
        self.entries.get(key).map(|metas| self.shown(key, metas).to_flat())
    }

    /// How many metas `key` shows (0 if absent; 1 for the anonymous count).
    pub fn metas_len(&self, key: &str) -> usize {
        self.entries.get(key).map_or(0, |metas| self.shown(key, metas).len())
    }

    /// Every key, sorted, with its flat metas, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Vec<Meta>)> + '_ {
        self.entries.iter().map(|(key, metas)| (&**key, self.shown(key, metas).to_flat()))
    }

    /// The whole list materialized, in the shape it serializes to.
    pub fn to_map(&self) -> BTreeMap<String, MetaList> {
        self.iter().map(|(key, metas)| (key.to_owned(), MetaList { metas })).collect()
    }

    fn shown<'a>(&self, key: &str, metas: &'a KeyEntries) -> Shown<'a> {
        if self.view == AnonymousView::Count && is_anonymous(key) {
            Shown::Count(metas.len())
        } else {
            Shown::Metas(metas)
        }
    }
}

impl Shown<'_> {
    fn len(self) -> usize {
        match self {
            Shown::Count(_) => 1,
            Shown::Metas(metas) => metas.len(),
        }
    }

    fn to_flat(self) -> Vec<Meta> {
        match self {
            Shown::Count(count) => vec![count_meta(count)],
            Shown::Metas(metas) => metas.iter().map(|m| m.0.to_flat()).collect(),
        }
    }

    /// Whether both show the same flat metas, without flattening what is plainly equal.
    fn same(self, other: Shown<'_>) -> bool {
        match (self, other) {
            (Shown::Count(a), Shown::Count(b)) => a == b,
            (Shown::Metas(a), Shown::Metas(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|(x, y)| Arc::ptr_eq(&x.0, &y.0) || *x.0 == *y.0 || x.0.to_flat() == y.0.to_flat())
            }
            _ => self.to_flat() == other.to_flat(),
        }
    }
}

impl PartialEq for PresenceList {
    /// Equal when they serialize alike: the same keys with the same flat metas in the same order.
    fn eq(&self, other: &Self) -> bool {
        if self.view == other.view && self.entries.ptr_eq(&other.entries) {
            return true;
        }
        self.len() == other.len()
            && self
                .entries
                .iter()
                .zip(other.entries.iter())
                .all(|((ka, a), (kb, b))| ka == kb && self.shown(ka, a).same(other.shown(kb, b)))
    }
}

impl fmt::Debug for PresenceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for PresenceList {
    /// `{key: {"metas": [flat meta, ...]}}`, flattening each meta as it is written.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (key, metas) in &self.entries {
            map.serialize_entry(&**key, &ShownList(self.shown(key, metas)))?;
        }
        map.end()
    }
}

/// `{"metas": [...]}`, as [`MetaList`] serializes.
struct ShownList<'a>(Shown<'a>);

impl Serialize for ShownList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut list = s.serialize_struct("MetaList", 1)?;
        list.serialize_field("metas", &ShownMetas(self.0))?;
        list.end()
    }
}

struct ShownMetas<'a>(Shown<'a>);

impl Serialize for ShownMetas<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Shown::Count(count) => {
                let mut seq = s.serialize_seq(Some(1))?;
                seq.serialize_element(&PlainMeta(&count_meta(count)))?;
                seq.end()
            }
            Shown::Metas(metas) => s.collect_seq(metas.iter().map(|m| FlatMeta(&m.0))),
        }
    }
}

/// A meta written as [`PresenceMeta::to_flat`] would make it (same keys, same order, plain
/// values), without building the map.
struct FlatMeta<'a>(&'a PresenceMeta);

/// A value of a reserved key of a flat meta.
enum Reserved<'a> {
    Str(&'a str),
    Int(i64),
    Null,
}

impl Serialize for Reserved<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Reserved::Str(x) => s.serialize_str(x),
            Reserved::Int(i) => s.serialize_i64(*i),
            Reserved::Null => s.serialize_unit(),
        }
    }
}

impl Serialize for FlatMeta<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        // Sorted by key, as the flat `BTreeMap` iterates; merged into the user's sorted keys.
        let reserved = [
            ("node", Reserved::Str(m.node.as_str())),
            ("online_at", Reserved::Int(i64::try_from(m.online_at).unwrap_or(i64::MAX))),
            ("phx_ref", Reserved::Str(m.phx_ref.as_str())),
            ("tab_id", m.tab_id.as_ref().map_or(Reserved::Null, |t| Reserved::Str(t.as_str()))),
        ];
        let shadowed = reserved.iter().filter(|(k, _)| m.meta.contains_key(*k)).count();
        let mut map = s.serialize_map(Some(m.meta.len() - shadowed + reserved.len()))?;
        let mut reserved = reserved.into_iter().peekable();
        for (key, value) in &m.meta {
            while let Some((k, v)) = reserved.next_if(|(k, _)| *k <= key.as_str()) {
                map.serialize_entry(k, &v)?;
            }
            if !PresenceMeta::RESERVED.contains(&key.as_str()) {
                map.serialize_entry(key, &Plain(value))?;
            }
        }
        for (k, v) in reserved {
            map.serialize_entry(k, &v)?;
        }
        map.end()
    }
}
