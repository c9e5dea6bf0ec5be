//! The two lists of a [`ScopeSlots`](super::ScopeSlots), laid out for the common case: one
//! record and nobody waiting. A home keeps a `ScopeSlots` per `(user, scope)` it serves, so
//! each byte here is a byte per presence. One record is kept in place (a `Vec` of one is an
//! allocation of its own, about 100 bytes with the allocator's), and the waiting joins, a queue
//! only while someone waits, cost one pointer otherwise (a `VecDeque` is 32 bytes even empty).
//! Both serialize as the sequences they stand for.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};

/// A short list kept in place while it holds at most one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Records<T> {
    /// None or one.
    Few(Option<T>),
    /// Two or more.
    Many(Vec<T>),
}

impl<T> Default for Records<T> {
    fn default() -> Self {
        Records::Few(None)
    }
}

impl<T> Deref for Records<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Records::Few(one) => one.as_slice(),
            Records::Many(many) => many,
        }
    }
}

impl<T> DerefMut for Records<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Records::Few(one) => one.as_mut_slice(),
            Records::Many(many) => many,
        }
    }
}

impl<T> Records<T> {
    /// Adds `item` last (a list past one grows one place at a time: it rarely holds more than a
    /// scope's `max_slots`).
    pub(super) fn push(&mut self, item: T) {
        match self {
            Records::Few(one @ None) => *one = Some(item),
            Records::Few(one) => {
                let first = one.take().expect("checked above");
                *self = Records::Many(vec![first, item]);
            }
            Records::Many(many) => {
                many.reserve_exact(1);
                many.push(item);
            }
        }
    }

    /// Keeps the items `keep` says yes to, in order.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        match self {
            Records::Few(one) => {
                if one.as_ref().is_some_and(|item| !keep(item)) {
                    *one = None;
                }
            }
            Records::Many(many) => {
                many.retain(keep);
                self.settle();
            }
        }
    }

    /// Removes and returns the item at `at`; panics if there is none (as `Vec::remove`).
    pub(super) fn remove(&mut self, at: usize) -> T {
        let item = match self {
            Records::Few(one) => {
                assert!(at == 0 && one.is_some(), "no record at {at}");
                one.take().expect("checked above")
            }
            Records::Many(many) => many.remove(at),
        };
        self.settle();
        item
    }

    /// Back in place once one item or none is left.
    fn settle(&mut self) {
        if let Records::Many(many) = self {
            if many.len() <= 1 {
                *self = Records::Few(many.pop());
            }
        }
    }
}

impl<T: Serialize> Serialize for Records<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Records<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut all = Vec::<T>::deserialize(d)?;
        Ok(if all.len() <= 1 { Records::Few(all.pop()) } else { Records::Many(all) })
    }
}

/// A queue that costs one pointer while it is empty (its storage goes when it empties).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::box_collection)] // the box is the point: 8 bytes while empty, not 32
pub(super) struct Queue<T>(Option<Box<VecDeque<T>>>);

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue(None)
    }
}

impl<T> Queue<T> {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().flat_map(|q| q.iter())
    }

    pub(super) fn front(&self) -> Option<&T> {
        self.0.as_ref().and_then(|q| q.front())
    }

    fn queue(&mut self) -> &mut VecDeque<T> {
        self.0.get_or_insert_with(Default::default)
    }

    pub(super) fn push_back(&mut self, item: T) {
        self.queue().push_back(item);
    }

    pub(super) fn push_front(&mut self, item: T) {
        self.queue().push_front(item);
    }

    pub(super) fn pop_front(&mut self) -> Option<T> {
        let item = self.0.as_mut()?.pop_front();
        self.settle();
        item
    }

    pub(super) fn remove(&mut self, at: usize) -> Option<T> {
        let item = self.0.as_mut()?.remove(at);
        self.settle();
        item
    }

    pub(super) fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        if let Some(q) = self.0.as_mut() {
            q.retain(keep);
        }
        self.settle();
    }

    /// Every item, in order; the queue is left empty.
    pub(super) fn take_all(&mut self) -> VecDeque<T> {
        self.0.take().map(|q| *q).unwrap_or_default()
    }

    /// Becomes `items` (in their order).
    pub(super) fn set(&mut self, items: VecDeque<T>) {
        self.0 = Some(Box::new(items));
        self.settle();
    }

    fn settle(&mut self) {
        if self.0.as_ref().is_some_and(|q| q.is_empty()) {
            self.0 = None;
        }
    }
}

impl<T: Serialize> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut q = Queue::default();
        q.set(VecDeque::<T>::deserialize(d)?);
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stay_in_place_for_one_and_keep_their_order_past_it() {
        let mut r: Records<u32> = Records::default();
        assert!(r.is_empty());
        r.push(1);
        assert!(matches!(r, Records::Few(Some(1))));
        r.push(2);
        r.push(3);
        assert_eq!(&*r, &[1, 2, 3]);
        r.retain(|x| *x != 2);
        assert_eq!(&*r, &[1, 3]);
        assert_eq!(r.remove(0), 1);
        assert!(matches!(r, Records::Few(Some(3))), "back in place at one");
        r[0] = 4;
        r.retain(|x| *x != 4);
        assert!(matches!(r, Records::Few(None)));
        let mut r: Records<u32> = Records::default();
        r.push(5);
        assert_eq!(r.remove(0), 5);
        assert!(r.is_empty());
    }

    #[test]
    fn a_queue_drops_its_storage_when_it_empties() {
        let mut q: Queue<u32> = Queue::default();
        assert!(q.is_empty() && q.front().is_none() && q.pop_front().is_none());
        q.push_back(1);
        q.push_back(2);
        q.push_front(0);
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!((q.len(), q.front()), (3, Some(&0)));
        assert_eq!(q.remove(1), Some(1));
        q.retain(|x| *x != 0);
        assert_eq!(q.pop_front(), Some(2));
        assert!(q.is_empty() && q.0.is_none());
        q.set(VecDeque::from([7, 8]));
        assert_eq!(q.take_all(), VecDeque::from([7, 8]));
        assert!(q.0.is_none());
        q.set(VecDeque::new());
        assert!(q.0.is_none());
    }

    #[test]
    fn both_serialize_as_the_sequences_they_stand_for() {
        let mut r: Records<u32> = Records::default();
        let mut q: Queue<u32> = Queue::default();
        assert_eq!(serde_json::to_string(&r).unwrap(), "[]");
        assert_eq!(serde_json::to_string(&q).unwrap(), "[]");
        r.push(1);
        q.push_back(1);
        assert_eq!(serde_json::to_string(&r).unwrap(), "[1]");
        assert_eq!(serde_json::to_string(&q).unwrap(), "[1]");
        r.push(2);
        q.push_back(2);
        assert_eq!(serde_json::to_string(&r).unwrap(), "[1,2]");
        assert_eq!(serde_json::to_string(&q).unwrap(), "[1,2]");
        let back: Records<u32> = serde_json::from_str("[1,2]").unwrap();
        assert_eq!(back, r);
        let back: Records<u32> = serde_json::from_str("[9]").unwrap();
        assert!(matches!(back, Records::Few(Some(9))));
        let back: Queue<u32> = serde_json::from_str("[1,2]").unwrap();
        assert_eq!(back, q);
        let back: Queue<u32> = serde_json::from_str("[]").unwrap();
        assert!(back.0.is_none());
    }
}
