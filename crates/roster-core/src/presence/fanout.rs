//! What each subscriber of a topic receives: one `presence_state`, then `presence_diff`s that
//! compose with it, exactly, to the node's list ([`Fanout`]).
//!
//! A topic's changes are coalesced over a window of `diff_ms`. Every subscriber that holds the
//! list as it was when the window opened (it was *synced* by an earlier flush) gets the one diff
//! of the window; every subscriber that arrived during the window (it is *waiting*) gets the one
//! list as it is when the window closes, and from then on the diffs. So each window costs one
//! diff and at most one state, shared by every subscriber, however many joined during it; and no
//! subscriber is ever sent a diff relative to a list it never had.
//!
//! That is what keeps every client exact. A diff nets each `phx_ref` over its window (a join then
//! a leave is nothing): sent to a subscriber whose state was taken *inside* the window, it would
//! miss the leave of an entry its state already held (the ghost a watcher kept after the user's
//! node was killed, before this module existed), or repeat the join of one it already had.
//!
//! ```text
//!  changes(topic, TopicChanges, list after) ─┐
//!  subscribe(topic, id, sub, list now) ──────┼─► Feed { synced, waiting, pending, latest }
//!  unsubscribe(topic, id) ───────────────────┘            │ flush(now), once per window
//!                                                         ├─► Diff  { pending as a diff } to synced
//!                                                         └─► State { latest list }       to waiting
//! ```
//!
//! The caller feeds changes and subscriptions in the order they happened on the node, each with
//! the topic's list right after it (a [`PresenceList`] is an O(1) snapshot): the list a waiting
//! subscriber gets is the latest one seen, so it always agrees with the changes fed so far.
//!
//! **Big rooms get longer windows.** Closing a window costs one write per subscriber, so a
//! topic's window lasts `diff_ms` up to [`SUBSCRIBERS_PER_WINDOW`] subscribers and one more
//! `diff_ms` per further such step, at most [`MAX_WINDOW_MS`] (or `diff_ms` if that is longer):
//! the work of fanning a room out stays about the same per unit of time whatever its size, and
//! a join costs a member of a room of 10,000 no more than one of a room of 10. Members of a big
//! room see changes up to a second late (Phoenix.Presence broadcasts every 1.5 s).

use super::diff::{PresenceDiff, TopicChanges};
use super::list::PresenceList;
use crate::ids::{Millis, Topic};
use crate::{grow_by, make_room};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

/// Subscribers per `diff_ms` of a topic's window (see the module documentation).
pub const SUBSCRIBERS_PER_WINDOW: usize = 100;

/// The longest a window grows to with its subscribers (unless `diff_ms` itself is longer).
pub const MAX_WINDOW_MS: Millis = 1000;

/// One subscription of a topic (a channel of a connection, or an embedding subscription). The
/// caller draws it, unique on its node: a channel that leaves and joins again is a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriberId(pub u64);

/// What a [`Fanout`] keeps per subscriber: whatever reaches it, which knows its own
/// [`SubscriberId`] (a channel is its id; the fan-out keeps no second copy of it).
pub trait Subscriber: Clone {
    /// The subscription's id.
    fn id(&self) -> SubscriberId;
}

impl Subscriber for SubscriberId {
    fn id(&self) -> SubscriberId {
        *self
    }
}

/// What one window of one topic sends, to whom. `to` is never empty.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery<S> {
    /// `presence_state`: the whole list, to the subscribers that arrived during the window.
    State {
        /// The topic.
        topic: Topic,
        /// The list when the window closed.
        state: PresenceList,
        /// Who gets it (from then on they get the diffs), by id.
        to: Vec<S>,
    },
    /// `presence_diff`: the window's joins and leaves, to the subscribers synced before it.
    Diff {
        /// The topic.
        topic: Topic,
        /// Netted per `phx_ref`; never empty.
        diff: PresenceDiff,
        /// Who gets it, by id.
        to: Vec<S>,
    },
}

/// The subscribers of every watched topic of a node (or of a shard of it), and each topic's
/// window. See the module documentation. `S` is whatever the caller needs to reach a
/// subscriber; it is cloned into each [`Delivery`].
#[derive(Clone, Debug)]
pub struct Fanout<S> {
    diff_ms: Millis,
    feeds: HashMap<Topic, Feed<S>>,
    /// `(due, topic)` in the order windows opened; `now` is monotonic, so also by due time. An
    /// entry whose feed has since closed or reopened its window is skipped.
    windows: VecDeque<(Millis, Topic)>,
}

#[derive(Clone, Debug)]
struct Feed<S> {
    /// Hold the list as of the last flush: they get the window's diff.
    synced: Subscribers<S>,
    /// Arrived during the current window: they get the list when it closes.
    waiting: Subscribers<S>,
    /// The changes since the last flush, netted.
    pending: TopicChanges,
    /// The list after the latest change or subscription seen (dropped at each flush, so the
    /// table does not keep copying what nobody will read).
    latest: PresenceList,
    /// When the open window closes.
    due: Option<Millis>,
}

impl<S: Subscriber> Feed<S> {
    fn new(latest: PresenceList) -> Self {
        Feed {
            synced: Subscribers::default(),
            waiting: Subscribers::default(),
            pending: TopicChanges::default(),
            latest,
            due: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.synced.is_empty() && self.waiting.is_empty()
    }

    fn len(&self) -> usize {
        self.synced.len() + self.waiting.len()
    }
}

/// A topic's subscribers of one kind, sorted by id: one entry per subscriber, the subscriber
/// alone (16 bytes for a channel), in a list grown as [`grow_by`] says. A hash map from id to
/// subscriber kept the id twice and a control byte, at 7/8 load at best: about 40 bytes per
/// subscriber in rooms of 50, against 26 here (`BENCHMARKS.md`, issue 13's eighth round). Ids
/// are drawn in increasing order, so a new subscriber is nearly always appended; one that
/// leaves is found by binary search.
#[derive(Clone, Debug)]
struct Subscribers<S>(Vec<S>);

impl<S> Default for Subscribers<S> {
    fn default() -> Self {
        Subscribers(Vec::new())
    }
}

impl<S: Subscriber> Subscribers<S> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> std::slice::Iter<'_, S> {
        self.0.iter()
    }

    fn find(&self, id: SubscriberId) -> Result<usize, usize> {
        match self.0.last() {
            // The usual case: a new id, above every other.
            Some(last) if last.id() < id => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&id, Subscriber::id),
        }
    }

    /// Adds `sub`, or replaces the subscriber of the same id.
    fn insert(&mut self, sub: S) {
        match self.find(sub.id()) {
            Ok(at) => self.0[at] = sub,
            Err(at) => {
                make_room(&mut self.0);
                self.0.insert(at, sub);
            }
        }
    }

    /// Removes the subscriber `id`; whether it was there. A list that shrank to a quarter of
    /// its room gives the rest back.
    fn remove(&mut self, id: SubscriberId) -> bool {
        let Ok(at) = self.find(id) else { return false };
        self.0.remove(at);
        if self.0.capacity() > 4 * self.0.len() + 16 {
            self.0.shrink_to(self.0.len() + grow_by(self.0.len()));
        }
        true
    }

    /// Moves every subscriber of `other` here (ids not here already).
    fn append(&mut self, other: Subscribers<S>) {
        if self.0.is_empty() {
            *self = other;
            return;
        }
        let sorted = match (self.0.last(), other.0.first()) {
            (Some(a), Some(b)) => a.id() < b.id(),
            _ => true,
        };
        if self.0.len() + other.0.len() > self.0.capacity() {
            self.0.reserve_exact(other.0.len() + grow_by(self.0.len()));
        }
        self.0.extend(other.0);
        if !sorted {
            // Two sorted runs: the stable sort merges them in linear time.
            self.0.sort_by_key(Subscriber::id);
        }
    }
}

impl<S: Subscriber> Fanout<S> {
    /// No subscribers yet; windows last `diff_ms`.
    pub fn new(diff_ms: Millis) -> Self {
        Self { diff_ms, feeds: HashMap::new(), windows: VecDeque::new() }
    }

    /// A change of `topic` at `now`, and its list right after. A topic nobody watches is not
    /// followed: whoever subscribes later gets a list that already holds the change.
    pub fn changes(&mut self, topic: &Topic, changes: TopicChanges, list: PresenceList, now: Millis) {
        if changes.is_empty() {
            return;
        }
        let Some(feed) = self.feeds.get_mut(topic) else { return };
        feed.pending.merge(changes);
        feed.latest = list;
        Self::open(&mut self.windows, self.diff_ms, topic, feed, now);
    }

    /// `sub` starts to follow `topic` at `now`, when its list is `list` (a subscriber of the
    /// same id is replaced). It gets the list when the current window closes (one opens if none
    /// is), then the diffs.
    pub fn subscribe(&mut self, topic: &Topic, sub: S, list: PresenceList, now: Millis) {
        let feed = self.feeds.entry(topic.clone()).or_insert_with(|| Feed::new(PresenceList::default()));
        feed.synced.remove(sub.id());
        feed.waiting.insert(sub);
        feed.latest = list;
        Self::open(&mut self.windows, self.diff_ms, topic, feed, now);
    }

    /// `topic`'s list as it is now, after the changes and subscriptions fed so far. A caller
    /// that feeds several of them at once, with nothing closing a window in between, may give
    /// them placeholder lists and the real one here, once, after the last of them: only the
    /// latest list is ever sent.
    pub fn latest(&mut self, topic: &Topic, list: PresenceList) {
        if let Some(feed) = self.feeds.get_mut(topic) {
            feed.latest = list;
        }
    }

    /// `id` stops following `topic`; whatever was due to it is not sent. Returns whether it was
    /// subscribed.
    pub fn unsubscribe(&mut self, topic: &Topic, id: SubscriberId) -> bool {
        let Entry::Occupied(mut feed) = self.feeds.entry(topic.clone()) else { return false };
        let f = feed.get_mut();
        let was = f.synced.remove(id) || f.waiting.remove(id);
        if f.is_empty() {
            feed.remove();
        }
        was
    }

    fn open(windows: &mut VecDeque<(Millis, Topic)>, diff_ms: Millis, topic: &Topic, feed: &mut Feed<S>, now: Millis) {
        if feed.due.is_none() {
            let due = now.saturating_add(window_ms(diff_ms, feed.len()));
            feed.due = Some(due);
            // Windows of different lengths: keep the queue ordered by due time.
            let at = windows.partition_point(|(d, _)| *d <= due);
            windows.insert(at, (due, topic.clone()));
        }
    }

    /// Every subscriber of `topic`, synced or waiting (for a broadcast, which is not windowed).
    pub fn members<'a>(&'a self, topic: &Topic) -> impl Iterator<Item = &'a S> + 'a {
        self.feeds.get(topic).into_iter().flat_map(|f| f.synced.iter().chain(f.waiting.iter()))
    }

    /// How many subscribers `topic` has.
    pub fn subscribers(&self, topic: &Topic) -> usize {
        self.feeds.get(topic).map_or(0, Feed::len)
    }

    /// How many topics are followed.
    pub fn topics(&self) -> usize {
        self.feeds.len()
    }

    /// Whether `topic` has a window open.
    pub fn is_pending(&self, topic: &Topic) -> bool {
        self.feeds.get(topic).is_some_and(|f| f.due.is_some())
    }

    /// When the earliest open window closes (possibly a little early: the caller then finds
    /// nothing due and asks again); `None` when no window is open.
    pub fn due_at(&mut self) -> Option<Millis> {
        while let Some((due, topic)) = self.windows.front() {
            if self.feeds.get(topic).is_some_and(|f| f.due == Some(*due)) {
                return Some(*due);
            }
            self.windows.pop_front();
        }
        None
    }

    /// Closes every window due at `now`, in the order they opened.
    pub fn flush(&mut self, now: Millis) -> Vec<Delivery<S>> {
        let mut out = Vec::new();
        while let Some((due, _)) = self.windows.front() {
            if *due > now {
                break;
            }
            if let Some((due, topic)) = self.windows.pop_front() {
                self.close(topic, due, &mut out);
            }
        }
        out
    }

    /// Closes every window now, due or not (shutdown, tests).
    pub fn flush_all(&mut self) -> Vec<Delivery<S>> {
        let mut out = Vec::new();
        while let Some((due, topic)) = self.windows.pop_front() {
            self.close(topic, due, &mut out);
        }
        out
    }

    fn close(&mut self, topic: Topic, due: Millis, out: &mut Vec<Delivery<S>>) {
        let Some(feed) = self.feeds.get_mut(&topic) else { return };
        if feed.due != Some(due) {
            return; // the window this entry opened has closed already
        }
        feed.due = None;
        let pending = std::mem::take(&mut feed.pending);
        let latest = std::mem::take(&mut feed.latest);
        if !feed.synced.is_empty() {
            let diff = pending.to_diff(latest.view());
            if !diff.is_empty() {
                let to = feed.synced.0.clone();
                out.push(Delivery::Diff { topic: topic.clone(), diff, to });
            }
        }
        if !feed.waiting.is_empty() {
            let waiting = std::mem::take(&mut feed.waiting);
            let to = waiting.0.clone();
            feed.synced.append(waiting);
            out.push(Delivery::State { topic, state: latest, to });
        }
    }
}

/// How long a window of a topic with `subscribers` lasts (see the module documentation).
pub fn window_ms(diff_ms: Millis, subscribers: usize) -> Millis {
    let steps = subscribers.div_ceil(SUBSCRIBERS_PER_WINDOW).max(1) as Millis;
    diff_ms.saturating_mul(steps).min(MAX_WINDOW_MS.max(diff_ms))
}
