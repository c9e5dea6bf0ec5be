//! [`Few`]: an ordered map that holds its first entry in place and becomes a B-tree at its
//! second.
//!
//! Some maps made per join nearly always hold one entry: a table operation's changes
//! ([`PresenceChanges`](crate::PresenceChanges): one topic, one `phx_ref`) and the topics of a
//! join waiting for its slot (`node/gateway.rs`). A `BTreeMap` allocated a leaf for each (about
//! 900, 360 and 370 bytes) per join, on the node actor's thread, freed a moment later there or
//! by a presence shard. `Few` allocates nothing for one entry; with two or more it is the
//! `BTreeMap` it replaced, so its order (iteration is always in key order) and its costs for
//! many entries (a snapshot's, a coalescing window's) are the same.

use std::borrow::Borrow;
use std::collections::{btree_map, BTreeMap};
use std::fmt;

/// An ordered map: no entry, one entry in place, or a `BTreeMap` (see the module doc). Equal
/// maps compare equal whatever their form.
#[derive(Clone, Default)]
pub(crate) enum Few<K, V> {
    /// No entry.
    #[default]
    Empty,
    /// One entry, held in place.
    One(K, V),
    /// Any number of entries (once two were held; it stays a tree when entries go).
    Many(BTreeMap<K, V>),
}

/// The entries of a [`Few`], taken out in key order.
pub(crate) type IntoIter<K, V> = std::iter::Chain<
    std::option::IntoIter<(K, V)>,
    std::iter::Flatten<std::option::IntoIter<btree_map::IntoIter<K, V>>>,
>;

impl<K: Ord, V> Few<K, V> {
    /// Whether it holds no entry.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Few::Empty => true,
            Few::One(..) => false,
            Few::Many(map) => map.is_empty(),
        }
    }

    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        match self {
            Few::Empty => 0,
            Few::One(..) => 1,
            Few::Many(map) => map.len(),
        }
    }

    /// The value of `key`, if any.
    pub(crate) fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        match self {
            Few::Empty => None,
            Few::One(k, v) => (k.borrow() == key).then_some(v),
            Few::Many(map) => map.get(key),
        }
    }

    /// The value of `key`, to change, if any.
    pub(crate) fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        match self {
            Few::Empty => None,
            Few::One(k, v) => (<K as Borrow<Q>>::borrow(k) == key).then_some(v),
            Few::Many(map) => map.get_mut(key),
        }
    }

    /// The value of `key`, made by `make` first if there is none.
    pub(crate) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        if matches!(self, Few::One(k, _) if *k != key) {
            let Few::One(k, v) = std::mem::take(self) else { unreachable!("matched above") };
            *self = Few::Many(BTreeMap::from([(k, v)]));
        }
        if matches!(self, Few::Empty) {
            *self = Few::One(key, make());
            let Few::One(_, v) = self else { unreachable!("set above") };
            return v;
        }
        match self {
            Few::One(_, v) => v, // its key is `key` (another one made it a tree above)
            Few::Many(map) => map.entry(key).or_insert_with(make),
            Few::Empty => unreachable!("filled above"),
        }
    }

    /// Sets the value of `key`.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        let mut value = Some(value);
        let slot = self.get_or_insert_with(key, || value.take().expect("taken once"));
        if let Some(value) = value {
            *slot = value;
        }
    }

    /// Removes `key`'s entry; its value, if it had one.
    pub(crate) fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        match self {
            Few::Empty => None,
            Few::One(k, _) if <K as Borrow<Q>>::borrow(k) != key => None,
            Few::One(..) => {
                let Few::One(_, v) = std::mem::take(self) else { unreachable!("matched above") };
                Some(v)
            }
            Few::Many(map) => map.remove(key),
        }
    }

    /// Keeps only the entries for which `keep` says so.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        match self {
            Few::Empty => {}
            Few::One(k, v) => {
                if !keep(k, v) {
                    *self = Few::Empty;
                }
            }
            Few::Many(map) => map.retain(|k, v| keep(k, v)),
        }
    }

    /// Every entry, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> + Clone + '_ {
        let (one, many) = match self {
            Few::Empty => (None, None),
            Few::One(k, v) => (Some((k, v)), None),
            Few::Many(map) => (None, Some(map.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// Every key, in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> + Clone + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Every value, in key order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }
}

impl<K: Ord, V> IntoIterator for Few<K, V> {
    type Item = (K, V);
    type IntoIter = IntoIter<K, V>;

    fn into_iter(self) -> Self::IntoIter {
        let (one, many) = match self {
            Few::Empty => (None, None),
            Few::One(k, v) => (Some((k, v)), None),
            Few::Many(map) => (None, Some(map.into_iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl<K: Ord, V: PartialEq> PartialEq for Few<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<K: Ord + fmt::Debug, V: fmt::Debug> fmt::Debug for Few<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Few;
    use std::collections::BTreeMap;

    /// Runs the same operations on a `Few` and a `BTreeMap`; they must agree at every step.
    #[test]
    fn a_few_holds_one_entry_in_place_and_otherwise_agrees_with_a_btree_map_in_order() {
        let mut few: Few<u32, String> = Few::default();
        let mut map: BTreeMap<u32, String> = BTreeMap::new();
        let check = |few: &Few<u32, String>, map: &BTreeMap<u32, String>| {
            assert_eq!(few.iter().collect::<Vec<_>>(), map.iter().collect::<Vec<_>>());
            assert_eq!(few.len(), map.len());
            assert_eq!(few.is_empty(), map.is_empty());
        };
        few.get_or_insert_with(7, || "seven".into());
        map.insert(7, "seven".into());
        assert!(matches!(few, Few::One(7, _)), "one entry is held in place");
        check(&few, &map);
        // The same key again: still one entry in place, the value kept.
        few.get_or_insert_with(7, || unreachable!("the entry exists")).push('!');
        map.get_mut(&7).expect("there").push('!');
        assert!(matches!(few, Few::One(..)));
        check(&few, &map);
        // A second key, smaller: a tree, in key order.
        few.insert(3, "three".into());
        map.insert(3, "three".into());
        assert!(matches!(few, Few::Many(_)));
        check(&few, &map);
        for k in [11, 5, 9, 1] {
            few.get_or_insert_with(k, || k.to_string());
            map.insert(k, k.to_string());
        }
        check(&few, &map);
        assert_eq!(few.remove(&5), map.remove(&5));
        assert_eq!(few.remove(&6), None);
        few.retain(|k, _| k % 3 != 0);
        map.retain(|k, _| k % 3 != 0);
        check(&few, &map);
        assert_eq!(few.get(&7).map(String::as_str), Some("seven!"));
        assert_eq!(few.clone().into_iter().collect::<Vec<_>>(), map.clone().into_iter().collect::<Vec<_>>());

        // One entry: removed, retained away, compared with a tree of the same entry.
        let mut one: Few<u32, String> = Few::default();
        one.insert(2, "two".into());
        assert_eq!(one, Few::Many(BTreeMap::from([(2, "two".to_owned())])));
        assert_ne!(one, Few::Many(BTreeMap::from([(2, "deux".to_owned())])));
        assert_eq!(one.get_mut(&3), None);
        assert_eq!(one.remove(&2).as_deref(), Some("two"));
        assert!(matches!(one, Few::Empty));
        one.insert(4, "four".into());
        one.retain(|_, _| false);
        assert!(one.is_empty());
        assert_eq!(one.into_iter().count(), 0);
    }
}
