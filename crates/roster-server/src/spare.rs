//! A thread's spare write lists: the socket's outbox and `Wire` take a list for a write and
//! give it back when the write is done (an idle socket keeps no room), and a list given back is
//! kept here for the next write of any socket on the thread instead of being freed. A burst of
//! joins is thousands of small writes: each made and freed two lists (about 4 allocations and
//! 2 KB per presence), on the worker threads that also hold the node's long-lived records.
//!
//! Bounded: at most [`KEPT_LISTS`] lists per thread, each with room for at most
//! [`KEPT_ITEMS`] items; a bigger list is freed as before.

use std::collections::VecDeque;

/// The most spare lists a thread keeps, of each kind.
pub(crate) const KEPT_LISTS: usize = 8;

/// The most items a kept list has room for.
pub(crate) const KEPT_ITEMS: usize = 64;

/// One thread's spare lists of one kind.
#[derive(Debug)]
pub(crate) struct Spares<T> {
    lists: Vec<VecDeque<T>>,
}

impl<T> Spares<T> {
    pub(crate) const fn new() -> Self {
        Spares { lists: Vec::new() }
    }

    /// A list with room for at least `items`: a kept one if there is one.
    pub(crate) fn take(&mut self, items: usize) -> VecDeque<T> {
        let mut list = self.lists.pop().unwrap_or_default();
        list.reserve(items);
        list
    }

    /// Keep `list`, emptied, for the next [`take`](Self::take), within the bounds.
    pub(crate) fn give(&mut self, mut list: VecDeque<T>) {
        list.clear();
        let room = list.capacity();
        if room > 0 && room <= KEPT_ITEMS && self.lists.len() < KEPT_LISTS {
            if self.lists.capacity() == 0 {
                self.lists.reserve_exact(KEPT_LISTS);
            }
            self.lists.push(list);
        }
    }

    /// How many lists are kept.
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.lists.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_given_back_is_taken_again_emptied_and_the_bounds_hold() {
        let mut spares = Spares::<u32>::new();
        let mut list = spares.take(5);
        list.extend([1, 2, 3]);
        let (room, at) = (list.capacity(), list.as_slices().0.as_ptr());
        spares.give(list);
        assert_eq!(spares.kept(), 1);
        let again = spares.take(room);
        assert_eq!((again.len(), again.capacity(), again.as_slices().0.as_ptr()), (0, room, at), "the same room");
        assert_eq!(spares.kept(), 0);
        // No room, or more than the bound: freed, not kept.
        spares.give(VecDeque::new());
        spares.give(VecDeque::with_capacity(KEPT_ITEMS + 1));
        assert_eq!(spares.kept(), 0);
        for _ in 0..KEPT_LISTS + 3 {
            spares.give(VecDeque::with_capacity(4));
        }
        assert_eq!(spares.kept(), KEPT_LISTS);
        // A kept list too small for a take grows to fit it.
        assert!(spares.take(KEPT_ITEMS).capacity() >= KEPT_ITEMS);
    }
}
