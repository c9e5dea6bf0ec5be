//! [`PartitionMap`]: a value per partition, found by indexing rather than by search.
//!
//! Partitions are the numbers `0..cluster.partitions` (256 by default), and the node looks up
//! the home and the lease of a user's partition several times per join and per leave. A
//! `BTreeMap` of them (what this replaces, for the homes and the leases held) searched two or
//! three levels of nodes on each look-up; here a look-up is one index into a list that grows
//! to the highest partition stored. Iteration is in partition order, as the tree's was: the
//! effects that walks produce keep their order.

use crate::ring::PartitionId;

/// A map from partition to `V` (see the module documentation). Each place keeps its key
/// beside the value so that iteration can lend `&PartitionId`, as a map's does.
#[derive(Clone, Debug)]
pub(super) struct PartitionMap<V> {
    places: Vec<Option<(PartitionId, V)>>,
    len: usize,
}

impl<V> Default for PartitionMap<V> {
    fn default() -> Self {
        PartitionMap { places: Vec::new(), len: 0 }
    }
}

impl<V> PartitionMap<V> {
    pub(super) fn new() -> Self {
        Self::default()
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get(&self, p: &PartitionId) -> Option<&V> {
        self.places.get(p.0 as usize)?.as_ref().map(|(_, v)| v)
    }

    pub(super) fn get_mut(&mut self, p: &PartitionId) -> Option<&mut V> {
        self.places.get_mut(p.0 as usize)?.as_mut().map(|(_, v)| v)
    }

    pub(super) fn contains_key(&self, p: &PartitionId) -> bool {
        self.get(p).is_some()
    }

    /// Sets the value of `p`; returns the one it replaced.
    pub(super) fn insert(&mut self, p: PartitionId, value: V) -> Option<V> {
        let at = p.0 as usize;
        if at >= self.places.len() {
            self.places.resize_with(at + 1, || None);
        }
        let old = self.places[at].replace((p, value)).map(|(_, v)| v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(super) fn remove(&mut self, p: &PartitionId) -> Option<V> {
        let (_, old) = self.places.get_mut(p.0 as usize)?.take()?;
        self.len -= 1;
        Some(old)
    }

    pub(super) fn clear(&mut self) {
        self.places.clear();
        self.len = 0;
    }

    /// Every entry, in partition order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&PartitionId, &V)> + '_ {
        self.places.iter().filter_map(|place| place.as_ref().map(|(p, v)| (p, v)))
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &PartitionId> + '_ {
        self.iter().map(|(p, _)| p)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> + '_ {
        self.places.iter_mut().filter_map(|place| place.as_mut().map(|(_, v)| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Inserts, replacements, removals and clears in any order: the map is always its
        /// model, iterated in partition order.
        #[test]
        fn a_partition_map_is_an_ordered_map_of_partitions(
            ops in proptest::collection::vec((0u8..4, 0u32..300, any::<u16>()), 1..400)
        ) {
            let mut map: PartitionMap<u16> = PartitionMap::new();
            let mut model: BTreeMap<PartitionId, u16> = BTreeMap::new();
            for (op, p, v) in ops {
                let p = PartitionId(p);
                match op {
                    0 | 1 => prop_assert_eq!(map.insert(p, v), model.insert(p, v)),
                    2 => prop_assert_eq!(map.remove(&p), model.remove(&p)),
                    _ => {
                        if let Some(x) = map.get_mut(&p) {
                            *x = v;
                        }
                        if let Some(x) = model.get_mut(&p) {
                            *x = v;
                        }
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                prop_assert_eq!(map.get(&p), model.get(&p));
                prop_assert_eq!(map.contains_key(&p), model.contains_key(&p));
            }
            let got: Vec<(PartitionId, u16)> = map.iter().map(|(p, v)| (*p, *v)).collect();
            let want: Vec<(PartitionId, u16)> = model.iter().map(|(p, v)| (*p, *v)).collect();
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(map.keys().copied().collect::<Vec<_>>(), model.keys().copied().collect::<Vec<_>>());
            prop_assert_eq!(map.values().copied().collect::<Vec<_>>(), model.values().copied().collect::<Vec<_>>());
            map.clear();
            prop_assert!(map.len() == 0 && map.iter().next().is_none());
        }
    }
}
