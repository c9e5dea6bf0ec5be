//! The two lists of a [`ScopeSlots`](super::ScopeSlots), laid out for the common case: one
//! record and nobody waiting. A home keeps a `ScopeSlots` per `(user, scope)` it serves, so
//! each byte here is a byte per presence. One record is kept in place (a `Vec` of one is an
//! allocation of its own, about 100 bytes with the allocator's) and nothing else: the records
//! past one and the queue of waiting joins share one allocation, made only while there are more
//! records or someone waits, so the pair costs the size of one record (a `VecDeque` is 32 bytes
//! even empty, and a pointer to one beside the record, 8 bytes a scope). Both lists serialize as
//! the sequences they stand for.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};

/// Records (`T`) and waiting joins (`P`): reads as the slice of records.
#[derive(Clone, Debug)]
pub(super) enum Lists<T, P> {
    /// No join waits, and one record or none.
    Few(Option<T>),
    /// Two records or more, or a join waits.
    Spilled(Box<Spill<T, P>>),
}

#[derive(Clone, Debug)]
pub(super) struct Spill<T, P> {
    records: Vec<T>,
    pending: VecDeque<P>,
}

impl<T, P> Default for Lists<T, P> {
    fn default() -> Self {
        Lists::Few(None)
    }
}

impl<T: PartialEq, P: PartialEq> PartialEq for Lists<T, P> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other && self.pending_iter().eq(other.pending_iter())
    }
}

impl<T: Eq, P: Eq> Eq for Lists<T, P> {}

impl<T, P> Deref for Lists<T, P> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Lists::Few(one) => one.as_slice(),
            Lists::Spilled(s) => &s.records,
        }
    }
}

impl<T, P> DerefMut for Lists<T, P> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Lists::Few(one) => one.as_mut_slice(),
            Lists::Spilled(s) => &mut s.records,
        }
    }
}

impl<T, P> Lists<T, P> {
    /// Both lists, in order.
    pub(super) fn from_parts(records: Vec<T>, pending: VecDeque<P>) -> Self {
        let mut lists = Lists::Spilled(Box::new(Spill { records, pending }));
        lists.settle();
        lists
    }

    /// The spilled form, made if needed (`settle` puts it back in place).
    fn spill(&mut self) -> &mut Spill<T, P> {
        if let Lists::Few(one) = self {
            let records = one.take().into_iter().collect();
            *self = Lists::Spilled(Box::new(Spill { records, pending: VecDeque::new() }));
        }
        match self {
            Lists::Spilled(s) => s,
            Lists::Few(_) => unreachable!("spilled above"),
        }
    }

    /// Back in place once at most one record is left and nobody waits.
    fn settle(&mut self) {
        if let Lists::Spilled(s) = self {
            if s.records.len() <= 1 && s.pending.is_empty() {
                *self = Lists::Few(s.records.pop());
            } else if s.pending.is_empty() && s.pending.capacity() > 0 {
                s.pending = VecDeque::new();
            }
        }
    }

    /// Adds a record last (records past one grow one place at a time: a scope rarely holds
    /// more than its `max_slots`).
    pub(super) fn push(&mut self, item: T) {
        match self {
            Lists::Few(one @ None) => *one = Some(item),
            _ => {
                let records = &mut self.spill().records;
                records.reserve_exact(1);
                records.push(item);
            }
        }
    }

    /// Keeps the records `keep` says yes to, in order.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        match self {
            Lists::Few(one) => {
                if one.as_ref().is_some_and(|item| !keep(item)) {
                    *one = None;
                }
            }
            Lists::Spilled(s) => {
                s.records.retain(keep);
                self.settle();
            }
        }
    }

    /// Removes and returns the record at `at`; panics if there is none (as `Vec::remove`).
    pub(super) fn remove(&mut self, at: usize) -> T {
        let item = match self {
            Lists::Few(one) => {
                assert!(at == 0 && one.is_some(), "no record at {at}");
                one.take().expect("checked above")
            }
            Lists::Spilled(s) => s.records.remove(at),
        };
        self.settle();
        item
    }

    /// The waiting joins, in order.
    pub(super) fn pending_iter(&self) -> impl Iterator<Item = &P> {
        match self {
            Lists::Few(_) => None,
            Lists::Spilled(s) => Some(s.pending.iter()),
        }
        .into_iter()
        .flatten()
    }

    pub(super) fn pending_is_empty(&self) -> bool {
        self.pending_len() == 0
    }

    pub(super) fn pending_len(&self) -> usize {
        match self {
            Lists::Few(_) => 0,
            Lists::Spilled(s) => s.pending.len(),
        }
    }

    pub(super) fn pending_front(&self) -> Option<&P> {
        self.pending_iter().next()
    }

    pub(super) fn pending_push_back(&mut self, item: P) {
        self.spill().pending.push_back(item);
    }

    pub(super) fn pending_push_front(&mut self, item: P) {
        self.spill().pending.push_front(item);
    }

    pub(super) fn pending_pop_front(&mut self) -> Option<P> {
        let Lists::Spilled(s) = self else { return None };
        let item = s.pending.pop_front();
        self.settle();
        item
    }

    pub(super) fn pending_remove(&mut self, at: usize) -> Option<P> {
        let Lists::Spilled(s) = self else { return None };
        let item = s.pending.remove(at);
        self.settle();
        item
    }

    pub(super) fn pending_retain(&mut self, keep: impl FnMut(&P) -> bool) {
        if let Lists::Spilled(s) = self {
            s.pending.retain(keep);
            self.settle();
        }
    }

    /// Every waiting join, in order; none is left waiting.
    pub(super) fn pending_take_all(&mut self) -> VecDeque<P> {
        let Lists::Spilled(s) = self else { return VecDeque::new() };
        let all = std::mem::take(&mut s.pending);
        self.settle();
        all
    }

    /// The waiting joins become `items` (in their order).
    pub(super) fn pending_set(&mut self, items: VecDeque<P>) {
        if items.is_empty() && matches!(self, Lists::Few(_)) {
            return;
        }
        self.spill().pending = items;
        self.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stay_in_place_for_one_and_keep_their_order_past_it() {
        let mut r: Lists<u32, u8> = Lists::default();
        assert!(r.is_empty());
        r.push(1);
        assert!(matches!(r, Lists::Few(Some(1))));
        r.push(2);
        r.push(3);
        assert_eq!(&*r, &[1, 2, 3]);
        r.retain(|x| *x != 2);
        assert_eq!(&*r, &[1, 3]);
        assert_eq!(r.remove(0), 1);
        assert!(matches!(r, Lists::Few(Some(3))), "back in place at one");
        r[0] = 4;
        r.retain(|x| *x != 4);
        assert!(matches!(r, Lists::Few(None)));
        let mut r: Lists<u32, u8> = Lists::default();
        r.push(5);
        assert_eq!(r.remove(0), 5);
        assert!(r.is_empty());
    }

    #[test]
    fn a_waiting_join_spills_the_record_and_its_end_puts_it_back_in_place() {
        let mut q: Lists<u32, u8> = Lists::default();
        assert!(q.pending_is_empty() && q.pending_front().is_none() && q.pending_pop_front().is_none());
        q.push(10);
        q.pending_push_back(1);
        q.pending_push_back(2);
        q.pending_push_front(0);
        assert!(matches!(q, Lists::Spilled(_)));
        assert_eq!(&*q, &[10], "the record is kept when the queue spills it");
        assert_eq!(q.pending_iter().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!((q.pending_len(), q.pending_front()), (3, Some(&0)));
        assert_eq!(q.pending_remove(1), Some(1));
        q.pending_retain(|x| *x != 0);
        assert_eq!(q.pending_pop_front(), Some(2));
        assert!(matches!(q, Lists::Few(Some(10))), "back in place once nobody waits");
        q.pending_set(VecDeque::from([7, 8]));
        q.push(11);
        assert_eq!(q.pending_take_all(), VecDeque::from([7, 8]));
        assert_eq!(&*q, &[10, 11]);
        assert!(matches!(q, Lists::Spilled(_)), "two records stay spilled");
        q.retain(|x| *x == 11);
        assert!(matches!(q, Lists::Few(Some(11))));
        q.pending_set(VecDeque::new());
        assert!(matches!(q, Lists::Few(Some(11))));
        // Equal lists compare equal whatever their form.
        let a: Lists<u32, u8> = Lists::from_parts(vec![1], VecDeque::new());
        assert!(matches!(a, Lists::Few(Some(1))));
        let b: Lists<u32, u8> = Lists::Spilled(Box::new(Spill { records: vec![1], pending: VecDeque::new() }));
        assert_eq!(a, b);
        assert_ne!(a, Lists::from_parts(vec![1], VecDeque::from([3])));
    }
}
