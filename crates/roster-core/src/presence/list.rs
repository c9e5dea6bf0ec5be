//! A topic's presences as readers see them: [`PresenceList`], an immutable snapshot that shares
//! its structure with the table, so taking one costs O(1) however big the topic. Metas are
//! flattened for the client ([`PresenceMeta::to_flat`]) only when the list is read or
//! serialized, never when it is taken.
//!
//! The table keeps each topic as [`TopicEntries`], a persistent map in chunks
//! ([`ChunkMap`]): a write copies only the chunk it changes (and the list of chunks) when a
//! live snapshot still shares them, and a snapshot nobody holds costs nothing.

use super::chunks::ChunkMap;
use super::diff::{MetaList, Plain, PlainMeta};
use super::{counted_meta, PresenceMeta, PresenceView, UsersView, USERS_KEY};
use crate::ids::Meta;
use crate::ids::UserId;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, SerializeStruct, Serializer};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One topic's entries by presence key. Keys are `Arc<str>` so that copying a chunk (when a
/// write meets a shared snapshot) bumps reference counts instead of allocating strings.
pub(super) type TopicEntries = ChunkMap<KeyEntries>;

/// One key's metas, oldest first. A key is a user, and a user has a meta per tab: nearly always
/// one or two, kept in a small sorted list copied on write (a persistent set would cost a
/// B-tree node per key). The `anonymous` key of a room with many viewers holds one meta per
/// viewer: past [`FEW`] metas they move to a persistent set, so a join costs O(log n), not a copy.
/// One meta, the usual case, is kept in place (a list of one is an allocation of its own).
///
/// 16 bytes: every entry of a topic's map holds one (the map's nodes keep their entries in
/// place, a third of them empty on average), so a `Few` or `Many` is one pointer to shared
/// storage, not a 16-byte slice or set header.
#[derive(Clone, Debug)]
pub(super) enum KeyEntries {
    One(ByAge),
    /// None (for a moment: the table drops an empty key), or two up to [`FEW`], sorted.
    Few(Arc<Vec<ByAge>>),
    Many(Arc<imbl::OrdSet<ByAge>>),
}

/// The most metas a key keeps in a copied-on-write list.
const FEW: usize = 16;

impl KeyEntries {
    pub(super) fn unit(meta: ByAge) -> Self {
        KeyEntries::One(meta)
    }

    pub(super) fn len(&self) -> usize {
        match self {
            KeyEntries::One(_) => 1,
            KeyEntries::Few(few) => few.len(),
            KeyEntries::Many(many) => many.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The metas, oldest first.
    pub(super) fn iter(&self) -> KeyIter<'_> {
        match self {
            KeyEntries::One(one) => KeyIter::Few(std::slice::from_ref(one).iter()),
            KeyEntries::Few(few) => KeyIter::Few(few.iter()),
            KeyEntries::Many(many) => KeyIter::Many(many.iter()),
        }
    }

    pub(super) fn insert(&mut self, meta: ByAge) {
        match self {
            KeyEntries::One(one) => {
                let both = if *one < meta { vec![one.clone(), meta] } else { vec![meta, one.clone()] };
                *self = KeyEntries::Few(Arc::new(both));
            }
            KeyEntries::Few(few) if few.len() < FEW => {
                let at = few.partition_point(|m| *m < meta);
                let mut grown = Vec::with_capacity(few.len() + 1);
                grown.extend_from_slice(&few[..at]);
                grown.push(meta);
                grown.extend_from_slice(&few[at..]);
                *few = Arc::new(grown);
            }
            KeyEntries::Few(few) => {
                let mut many: imbl::OrdSet<ByAge> = few.iter().cloned().collect();
                many.insert(meta);
                *self = KeyEntries::Many(Arc::new(many));
            }
            KeyEntries::Many(many) => {
                Arc::make_mut(many).insert(meta);
            }
        }
    }

    /// Removes this very meta; whether it was there.
    pub(super) fn remove(&mut self, meta: &ByAge) -> bool {
        match self {
            KeyEntries::One(one) => {
                if one != meta {
                    return false;
                }
                *self = KeyEntries::Few(Arc::new(Vec::new()));
                true
            }
            KeyEntries::Few(few) => {
                let Ok(at) = few.binary_search(meta) else { return false };
                let mut shrunk: Vec<ByAge> =
                    few.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, m)| m.clone()).collect();
                *self = match shrunk.len() {
                    1 => KeyEntries::One(shrunk.pop().expect("one")),
                    _ => KeyEntries::Few(Arc::new(shrunk)),
                };
                true
            }
            KeyEntries::Many(many) => {
                if !many.contains(meta) {
                    return false;
                }
                Arc::make_mut(many).remove(meta).is_some()
            }
        }
    }
}

/// The metas of a [`KeyEntries`], oldest first.
pub(super) enum KeyIter<'a> {
    Few(std::slice::Iter<'a, ByAge>),
    Many(imbl::ordset::Iter<'a, ByAge, imbl::shared_ptr::DefaultSharedPtr>),
}

impl<'a> Iterator for KeyIter<'a> {
    type Item = &'a ByAge;

    fn next(&mut self) -> Option<&'a ByAge> {
        match self {
            KeyIter::Few(it) => it.next(),
            KeyIter::Many(it) => it.next(),
        }
    }
}

/// A stored meta, ordered oldest first: by `online_at`, then `phx_ref`, then `node`. The
/// allocation's address breaks the ties that remain (one node repeating a `phx_ref` within a
/// millisecond, which only a faulty peer would do), so two entries never collapse into one.
#[derive(Clone, Debug)]
pub(super) struct ByAge(pub(super) Arc<PresenceMeta>);

impl Ord for ByAge {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (&*self.0, &*other.0);
        // A `phx_ref` is rendered from its number on read: only when the instants tie.
        a.online_at()
            .cmp(&b.online_at())
            .then_with(|| a.phx_ref().cmp(&b.phx_ref()))
            .then_with(|| a.node().cmp(b.node()))
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
/// [`AnonymousView::Count`](super::AnonymousView::Count), the anonymous entries show as the single count meta (and the
/// `anonymous` key is absent when there are none); with [`UsersView::Count`], the signed-in
/// users show as one count meta under [`USERS_KEY`](super::USERS_KEY) and no user key is listed.
///
/// [`PresenceTable::list`]: super::PresenceTable::list
#[derive(Clone, Default)]
pub struct PresenceList {
    entries: TopicEntries,
    view: PresenceView,
}

/// What one key shows: its metas, or a count meta.
#[derive(Clone, Copy)]
enum Shown<'a> {
    /// One meta under this key counting this many.
    Count(&'a str, usize),
    Metas(&'a KeyEntries),
}

impl PresenceList {
    pub(super) fn new(entries: TopicEntries, view: PresenceView) -> Self {
        Self { entries, view }
    }

    /// How it shows anonymous viewers and signed-in users.
    pub fn view(&self) -> PresenceView {
        self.view
    }

    /// Whether nobody is present.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of presence keys shown (users, plus `anonymous` if any; with users counted,
    /// `users` and `anonymous` at most).
    pub fn len(&self) -> usize {
        match self.view.users {
            UsersView::List => self.entries.len(),
            UsersView::Count => self.shown().count(),
        }
    }

    /// The presence keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.shown().map(|(key, _)| key)
    }

    /// The flat metas of `key`, oldest first; `None` if the key is absent.
    pub fn get(&self, key: &str) -> Option<Vec<Meta>> {
        self.shown_of(key).map(Shown::to_flat)
    }

    /// How many metas `key` shows (0 if absent; 1 for a count).
    pub fn metas_len(&self, key: &str) -> usize {
        self.shown_of(key).map_or(0, Shown::len)
    }

    /// Every key, sorted, with its flat metas, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Vec<Meta>)> + '_ {
        self.shown().map(|(key, shown)| (key, shown.to_flat()))
    }

    /// The whole list materialized, in the shape it serializes to.
    pub fn to_map(&self) -> BTreeMap<String, MetaList> {
        self.iter().map(|(key, metas)| (key.to_owned(), MetaList { metas })).collect()
    }

    /// Signed-in users (keys other than `anonymous`).
    fn users(&self) -> usize {
        self.entries.len() - usize::from(self.entries.contains_key(UserId::ANONYMOUS))
    }

    /// What one stored key shows (it is shown).
    fn shown_key<'a>(&self, key: &'a str, metas: &'a KeyEntries) -> Shown<'a> {
        if self.view.counts(key) {
            Shown::Count(key, metas.len())
        } else {
            Shown::Metas(metas)
        }
    }

    /// Every key shown, sorted, with what it shows.
    fn shown(&self) -> Box<dyn Iterator<Item = (&str, Shown<'_>)> + '_> {
        match self.view.users {
            UsersView::List => Box::new(self.entries.iter().map(|(key, metas)| (&**key, self.shown_key(key, metas)))),
            UsersView::Count => {
                // `anonymous` sorts before `users`.
                let anonymous = self
                    .entries
                    .get_key_value(UserId::ANONYMOUS)
                    .map(|(key, metas)| (&**key, self.shown_key(key, metas)));
                let users = self.users();
                let users = (users > 0).then_some((USERS_KEY, Shown::Count(USERS_KEY, users)));
                Box::new(anonymous.into_iter().chain(users))
            }
        }
    }

    fn shown_of(&self, key: &str) -> Option<Shown<'_>> {
        match self.view.users {
            UsersView::List => self.entries.get_key_value(key).map(|(k, metas)| self.shown_key(k, metas)),
            UsersView::Count => self.shown().find(|(k, _)| *k == key).map(|(_, shown)| shown),
        }
    }
}

impl Shown<'_> {
    fn len(self) -> usize {
        match self {
            Shown::Count(..) => 1,
            Shown::Metas(metas) => metas.len(),
        }
    }

    fn to_flat(self) -> Vec<Meta> {
        match self {
            Shown::Count(key, count) => vec![counted_meta(key, count)],
            Shown::Metas(metas) => metas.iter().map(|m| m.0.to_flat()).collect(),
        }
    }

    /// Whether both show the same flat metas, without flattening what is plainly equal.
    fn same(self, other: Shown<'_>) -> bool {
        match (self, other) {
            (Shown::Count(a, n), Shown::Count(b, m)) => a == b && n == m,
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
        self.len() == other.len() && self.shown().zip(other.shown()).all(|((ka, a), (kb, b))| ka == kb && a.same(b))
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
        for (key, shown) in self.shown() {
            map.serialize_entry(key, &ShownList(shown))?;
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
            Shown::Count(key, count) => {
                let mut seq = s.serialize_seq(Some(1))?;
                seq.serialize_element(&PlainMeta(&counted_meta(key, count)))?;
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
}

impl Serialize for Reserved<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Reserved::Str(x) => s.serialize_str(x),
            Reserved::Int(i) => s.serialize_i64(*i),
        }
    }
}

impl Serialize for FlatMeta<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        // Sorted by key, as the flat `BTreeMap` iterates; merged into the user's sorted keys.
        // `tab_id` is left out when the join gave none (14 bytes of every such entry, in every
        // `presence_state` and diff).
        let tab = m.tab_id().map(|t| ("tab_id", Reserved::Str(t.as_str())));
        let phx_ref = m.phx_ref();
        let reserved = [
            Some(("node", Reserved::Str(m.node().as_str()))),
            Some(("online_at", Reserved::Int(i64::try_from(m.online_at()).unwrap_or(i64::MAX)))),
            Some(("phx_ref", Reserved::Str(phx_ref.as_str()))),
            tab,
        ];
        let shadowed = PresenceMeta::RESERVED.iter().filter(|k| m.meta().contains_key(k)).count();
        let written = reserved.iter().flatten().count();
        let mut map = s.serialize_map(Some(m.meta().len() - shadowed + written))?;
        let mut reserved = reserved.into_iter().flatten().peekable();
        for (key, value) in m.meta().iter() {
            while let Some((k, v)) = reserved.next_if(|(k, _)| *k <= key) {
                map.serialize_entry(k, &v)?;
            }
            if !PresenceMeta::RESERVED.contains(&key) {
                map.serialize_entry(key, &Plain(value))?;
            }
        }
        for (k, v) in reserved {
            map.serialize_entry(k, &v)?;
        }
        map.end()
    }
}
