//! [`ChunkMap`]: a topic's entries by presence key, a persistent sorted map in two levels.
//!
//! A sorted list of chunks, each a sorted list of at most [`CHUNK`] entries, both behind
//! shared pointers: a clone (a [`PresenceList`](super::PresenceList) handed out) is one
//! reference count, and a write to a map a clone still shares copies the list of chunks (one
//! pointer per [`CHUNK`] entries) and the one chunk it changes, never the rest. The B-tree map
//! this replaces (`imbl::OrdMap`, nodes of 16 entries, 528 bytes each however full) cost about
//! 58 bytes per entry in rooms of 50; a chunk is grown as [`grow_by`](crate::grow_by) says,
//! and a chunk copied for a write gets room for that write only, so an entry costs its 32 bytes
//! and some room: about 43 in rooms of 50 (`BENCHMARKS.md`, issue 13's eighth round).

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// The most entries a chunk holds; a full chunk that takes one more is split in two.
pub(super) const CHUNK: usize = 64;

/// A chunk this small is merged with a neighbour when the two fit in half a chunk.
const SMALL: usize = CHUNK / 8;

type Chunk<V> = Arc<Vec<(Arc<str>, V)>>;

/// A persistent map from presence key to `V`, sorted by key (see the module documentation).
pub(super) struct ChunkMap<V> {
    /// `None` when empty (an empty map allocates nothing: the fan-out makes many).
    chunks: Option<Arc<Vec<Chunk<V>>>>,
    len: usize,
}

impl<V> Clone for ChunkMap<V> {
    fn clone(&self) -> Self {
        ChunkMap { chunks: self.chunks.clone(), len: self.len }
    }
}

impl<V> Default for ChunkMap<V> {
    fn default() -> Self {
        ChunkMap { chunks: None, len: 0 }
    }
}

impl<V: fmt::Debug> fmt::Debug for ChunkMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> ChunkMap<V> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether both are the same map (one is a clone of the other, unchanged since).
    pub(super) fn ptr_eq(&self, other: &Self) -> bool {
        match (&self.chunks, &other.chunks) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    fn chunks(&self) -> &[Chunk<V>] {
        self.chunks.as_deref().map_or(&[], Vec::as_slice)
    }

    /// The entries, sorted by key.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> + '_ {
        self.chunks().iter().flat_map(|c| c.iter().map(|(k, v)| (k, v)))
    }

    /// Where `key` is or would go: the chunk (the last one for a key past every other), and
    /// the position in it.
    fn find(&self, key: &str) -> Option<(usize, Result<usize, usize>)> {
        let chunks = self.chunks();
        if chunks.is_empty() {
            return None;
        }
        // The first chunk whose last key is at or after `key`; past the end, the last chunk.
        let c = chunks.partition_point(|c| c.last().is_some_and(|(k, _)| &**k < key)).min(chunks.len() - 1);
        Some((c, chunks[c].binary_search_by(|(k, _)| (**k).cmp(key))))
    }

    pub(super) fn get_key_value(&self, key: &str) -> Option<(&Arc<str>, &V)> {
        let (c, Ok(i)) = self.find(key)? else { return None };
        let (k, v) = &self.chunks()[c][i];
        Some((k, v))
    }

    pub(super) fn get(&self, key: &str) -> Option<&V> {
        self.get_key_value(key).map(|(_, v)| v)
    }

    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.get_key_value(key).is_some()
    }
}

impl<V: Clone> ChunkMap<V> {
    /// The chunks, to change: copied first if a clone shares them.
    fn chunks_mut(&mut self) -> &mut Vec<Chunk<V>> {
        Arc::make_mut(self.chunks.get_or_insert_with(Default::default))
    }

    /// The key as the map holds it, and its value to change (its chunk copied first if a clone
    /// shares it).
    pub(super) fn get_key_value_mut(&mut self, key: &str) -> Option<(&Arc<str>, &mut V)> {
        let (c, Ok(i)) = self.find(key)? else { return None };
        let (k, v) = &mut Arc::make_mut(&mut self.chunks_mut()[c])[i];
        Some((&*k, v))
    }

    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.get_key_value_mut(key).map(|(_, v)| v)
    }

    /// Sets the value of `key`; returns the one it replaced.
    pub(super) fn insert(&mut self, key: Arc<str>, value: V) -> Option<V> {
        let Some((c, at)) = self.find(&key) else {
            self.insert_first(key, value);
            return None;
        };
        let chunk = self.chunk_mut_for_write(c);
        match at {
            Ok(i) => Some(std::mem::replace(&mut chunk[i].1, value)),
            Err(i) => {
                self.insert_at(c, i, key, value);
                None
            }
        }
    }

    /// Changes the value of `key` with `change` if the map holds it, else inserts `new()`;
    /// returns the key as the map holds it. One search of the map for both cases.
    pub(super) fn upsert(&mut self, key: Arc<str>, change: impl FnOnce(&mut V), new: impl FnOnce() -> V) -> Arc<str> {
        let Some((c, at)) = self.find(&key) else {
            self.insert_first(Arc::clone(&key), new());
            return key;
        };
        match at {
            Ok(i) => {
                let (held, value) = &mut Arc::make_mut(&mut self.chunks_mut()[c])[i];
                change(value);
                Arc::clone(held)
            }
            Err(i) => {
                self.chunk_mut_for_write(c);
                self.insert_at(c, i, Arc::clone(&key), new());
                key
            }
        }
    }

    /// The first entry of an empty map.
    fn insert_first(&mut self, key: Arc<str>, value: V) {
        self.chunks = Some(Arc::new(vec![Arc::new(vec![(key, value)])]));
        self.len = 1;
    }

    /// Chunk `c`, to write one entry into: copied first, with room for that entry only, if a
    /// clone shares it (a copy sized as the list grows would keep half a chunk of room in
    /// every chunk a list was taken of).
    fn chunk_mut_for_write(&mut self, c: usize) -> &mut Vec<(Arc<str>, V)> {
        let chunks = self.chunks_mut();
        if Arc::get_mut(&mut chunks[c]).is_none() {
            let mut copy = Vec::with_capacity(chunks[c].len() + 1);
            copy.extend(chunks[c].iter().cloned());
            chunks[c] = Arc::new(copy);
        }
        Arc::make_mut(&mut chunks[c])
    }

    /// Inserts a new key at position `i` of chunk `c` (where [`find`](Self::find) put it).
    fn insert_at(&mut self, c: usize, i: usize, key: Arc<str>, value: V) {
        let chunks = self.chunks_mut();
        let chunk = Arc::make_mut(&mut chunks[c]);
        if chunk.len() < CHUNK {
            crate::make_room(chunk);
            chunk.insert(i, (key, value));
        } else {
            // Full: split in two halves, each with room to grow.
            let half = chunk.len() / 2;
            let mut right = Vec::with_capacity(CHUNK - half + crate::grow_by(CHUNK - half));
            right.extend(chunk.drain(half..));
            let mut left = Vec::with_capacity(half + crate::grow_by(half));
            left.append(chunk);
            if i <= half {
                left.insert(i, (key, value));
            } else {
                right.insert(i - half, (key, value));
            }
            chunks[c] = Arc::new(left);
            crate::make_room(chunks);
            chunks.insert(c + 1, Arc::new(right));
        }
        self.len += 1;
    }

    /// Removes `key`; returns its value.
    pub(super) fn remove(&mut self, key: &str) -> Option<V> {
        self.remove_if(key, |_| true)
    }

    /// Removes `key` if `only_if` holds for its value; returns the value removed. One search
    /// of the map (a look-up then a removal would be two).
    pub(super) fn remove_if(&mut self, key: &str, only_if: impl FnOnce(&V) -> bool) -> Option<V> {
        let (c, Ok(i)) = self.find(key)? else { return None };
        if !only_if(&self.chunks()[c][i].1) {
            return None;
        }
        self.len -= 1;
        if self.len == 0 {
            let chunks = self.chunks.take()?;
            return Some(chunks[c][i].1.clone());
        }
        let chunks = self.chunks_mut();
        let chunk = Arc::make_mut(&mut chunks[c]);
        let (_, value) = chunk.remove(i);
        if chunk.is_empty() {
            chunks.remove(c);
        } else if chunk.len() <= SMALL {
            merge_small(chunks, c);
        } else if chunk.capacity() > 2 * chunk.len() + 16 {
            chunk.shrink_to(chunk.len() + crate::grow_by(chunk.len()));
        }
        Some(value)
    }
}

/// Merges the small chunk `c` into a neighbour when the two fit in half a chunk.
fn merge_small<V: Clone>(chunks: &mut Vec<Chunk<V>>, c: usize) {
    let fits = |other: &Chunk<V>| other.len() + chunks[c].len() <= CHUNK / 2;
    let (into, from) = if c + 1 < chunks.len() && fits(&chunks[c + 1]) {
        (c, c + 1)
    } else if c > 0 && fits(&chunks[c - 1]) {
        (c - 1, c)
    } else {
        return;
    };
    let moved = chunks.remove(from);
    let moved = Arc::try_unwrap(moved).unwrap_or_else(|shared| Vec::clone(&shared));
    let into = Arc::make_mut(&mut chunks[into]);
    into.reserve_exact(moved.len());
    into.extend(moved);
}

impl<V> std::ops::Index<&str> for ChunkMap<V> {
    type Output = V;

    fn index(&self, key: &str) -> &V {
        self.get(key).expect("no such key")
    }
}

impl<V: Clone, K: Borrow<str> + Into<Arc<str>>> FromIterator<(K, V)> for ChunkMap<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = ChunkMap::default();
        for (k, v) in iter {
            map.insert(k.into(), v);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn check(map: &ChunkMap<u32>, model: &BTreeMap<String, u32>) -> Result<(), TestCaseError> {
        prop_assert_eq!(map.len(), model.len());
        let got: Vec<(String, u32)> = map.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let want: Vec<(String, u32)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        prop_assert_eq!(got, want);
        for (c, chunk) in map.chunks().iter().enumerate() {
            prop_assert!(!chunk.is_empty() && chunk.len() <= CHUNK, "chunk {} holds {}", c, chunk.len());
        }
        for k in model.keys() {
            prop_assert_eq!(map.get(k), model.get(k));
        }
        Ok(())
    }

    proptest! {
        /// Inserts, replacements and removals in any order, with clones taken between them:
        /// the map is always its model, sorted, and every clone stays what it was.
        #[test]
        fn a_chunk_map_is_a_sorted_map_and_its_clones_never_change(
            ops in proptest::collection::vec((any::<bool>(), 0u16..400, any::<u32>(), any::<bool>()), 1..1500)
        ) {
            let mut map: ChunkMap<u32> = ChunkMap::default();
            let mut model = BTreeMap::new();
            let mut clones: Vec<(ChunkMap<u32>, BTreeMap<String, u32>)> = Vec::new();
            for (insert, k, v, keep) in ops {
                let key = format!("u{k}");
                if insert {
                    prop_assert_eq!(map.insert(Arc::from(key.as_str()), v), model.insert(key, v));
                } else {
                    prop_assert_eq!(map.remove(&key), model.remove(&key));
                }
                if keep {
                    clones.push((map.clone(), model.clone()));
                    prop_assert!(clones.last().is_some_and(|(c, _)| c.ptr_eq(&map)));
                }
            }
            check(&map, &model)?;
            for (clone, then) in &clones {
                check(clone, then)?;
            }
        }
    }

    proptest! {
        /// `upsert` and `remove_if`, the one-search writes, with clones taken between them:
        /// the map is always its model and every clone stays what it was.
        #[test]
        fn one_search_writes_keep_the_map_its_model(
            ops in proptest::collection::vec((any::<bool>(), 0u16..400, any::<u32>(), any::<bool>()), 1..1500)
        ) {
            let mut map: ChunkMap<u32> = ChunkMap::default();
            let mut model = BTreeMap::new();
            let mut clones: Vec<(ChunkMap<u32>, BTreeMap<String, u32>)> = Vec::new();
            for (upsert, k, v, keep) in ops {
                let key = format!("u{k}");
                if upsert {
                    // Present: add `v`; absent: start at `v`.
                    let held = map.upsert(Arc::from(key.as_str()), |x| *x = x.wrapping_add(v), || v);
                    prop_assert_eq!(&*held, key.as_str());
                    let x = model.entry(key.clone()).or_insert(0u32);
                    *x = x.wrapping_add(v);
                    prop_assert!(map.get_key_value(&key).is_some_and(|(k, _)| Arc::ptr_eq(k, &held)), "the key as held");
                } else {
                    // Removed only when its value is even.
                    let want = model.get(&key).copied().filter(|x| x % 2 == 0);
                    if want.is_some() {
                        model.remove(&key);
                    }
                    prop_assert_eq!(map.remove_if(&key, |x| x % 2 == 0), want);
                }
                if keep {
                    clones.push((map.clone(), model.clone()));
                }
            }
            check(&map, &model)?;
            for (clone, then) in &clones {
                check(clone, then)?;
            }
        }
    }

    #[test]
    fn a_write_copies_only_the_chunk_it_changes() {
        let mut map: ChunkMap<u32> = (0..1000u32).map(|i| (format!("k{i:04}"), i)).collect();
        let before = map.clone();
        assert!(map.chunks().len() > 10);
        *map.get_mut("k0500").expect("there") = 7;
        let shared = map.chunks().iter().zip(before.chunks()).filter(|(a, b)| Arc::ptr_eq(a, b)).count();
        assert_eq!(shared, map.chunks().len() - 1, "every chunk but the changed one is shared");
        assert_eq!(before["k0500"], 500);
        assert_eq!(map["k0500"], 7);
        assert!(!map.ptr_eq(&before));
        // A new key into a shared chunk: the copy has room for it alone.
        let before = map.clone();
        map.insert(Arc::from("k0500a"), 1);
        let (c, _) = map.find("k0500a").expect("there");
        assert_eq!(map.chunks()[c].capacity(), map.chunks()[c].len(), "no room kept in a copy");
        assert_eq!((before.len() + 1, before.get("k0500a")), (map.len(), None));
    }

    #[test]
    fn an_empty_map_allocates_nothing_and_the_last_removal_frees_it() {
        let mut map: ChunkMap<u32> = ChunkMap::default();
        assert!(map.chunks.is_none() && map.is_empty());
        map.insert(Arc::from("a"), 1);
        assert_eq!(map.remove("a"), Some(1));
        assert!(map.chunks.is_none() && map.is_empty());
        assert_eq!(map.remove("a"), None);
        assert_eq!(std::mem::size_of::<(Arc<str>, super::super::list::KeyEntries)>(), 32);
    }
}
