//! What a connection is sent ([`Outbound`]), the pushes shared by every connection that gets
//! them ([`Push`]), and the bounded queue each connection's items wait in.
//!
//! ```text
//! NodeActor ── replies, revocations ──────────┐
//! PresenceShard ── Arc<Push> (built once) ────┼─▶ OutboundQueue (per connection) ─▶ its reader
//!                                             │    bounded in frames and in bytes
//! ```
//!
//! A `presence_state`, a `presence_diff` or a broadcast is built, and encoded when the node has
//! a [`PushEncoder`], once per topic window (or per broadcast); every connection's queue holds
//! the same `Arc`. A connection's own bits (which channel, its `join_ref`) stay outside the
//! shared bytes. A queue that would pass `outbound_queue` frames or `outbound_queue_bytes`
//! bytes ends its connection as a slow client instead of growing: the node's memory never
//! depends on how fast a client reads.

use crate::connection::{CloseReason, ConnShared};
use crate::error::JoinError;
use bytes::Bytes;
use roster_core::{MetaValue, PresenceDiff, PresenceList, SlotToken, SubscriberId, Topic, UserId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One channel of a connection: one join of one topic. A channel that leaves and joins again
/// is a new one, so anything still on its way to the old one can be told apart and dropped.
pub type ChannelId = SubscriberId;

/// A push built once and shared by every connection that receives it.
#[derive(Debug)]
pub struct Push {
    topic: Topic,
    body: PushBody,
    encoded: Option<Bytes>,
}

/// What a [`Push`] says.
#[derive(Clone, Debug, PartialEq)]
pub enum PushBody {
    /// `presence_state`: the topic's whole list.
    State(Arc<PresenceList>),
    /// `presence_diff`: a window's joins and leaves.
    Diff(Arc<PresenceDiff>),
    /// Another signed-in user's push.
    Broadcast {
        /// The sender.
        from: UserId,
        /// The event name.
        event: String,
        /// The payload.
        body: MetaValue,
    },
}

/// Turns a push into the bytes every receiving socket shares: a gateway's wire format (the
/// WebSocket gateway writes Phoenix v2 frames). Called once per push, on a presence shard.
pub trait PushEncoder: Send + Sync + 'static {
    /// The shared bytes of `body` in `topic`.
    fn encode(&self, topic: &Topic, body: &PushBody) -> Bytes;
}

/// Bytes counted for a queued item that is not a shared push (a reply, a revocation).
const SMALL_ITEM_BYTES: usize = 64;

impl Push {
    /// A push of `body` in `topic`, encoded by `encoder` if the node has one.
    pub(crate) fn new(topic: Topic, body: PushBody, encoder: Option<&dyn PushEncoder>) -> Arc<Push> {
        let encoded = encoder.map(|e| e.encode(&topic, &body));
        Arc::new(Push { topic, body, encoded })
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// What it says.
    pub fn body(&self) -> &PushBody {
        &self.body
    }

    /// Its shared bytes, when the node has a [`PushEncoder`].
    pub fn encoded(&self) -> Option<&Bytes> {
        self.encoded.as_ref()
    }

    /// What it counts in a queue: its encoded size, or an estimate of it.
    fn weight(&self) -> usize {
        match (&self.encoded, &self.body) {
            (Some(bytes), _) => bytes.len(),
            (None, PushBody::State(list)) => SMALL_ITEM_BYTES + 100 * list.len(),
            (None, PushBody::Diff(diff)) => SMALL_ITEM_BYTES + 100 * (diff.joins.len() + diff.leaves.len()),
            (None, PushBody::Broadcast { .. }) => SMALL_ITEM_BYTES,
        }
    }
}

/// One item for a connection, in the order its reader must see them.
#[derive(Clone, Debug)]
pub enum Outbound {
    /// A join answered through the queue was granted: `channel` is its channel. Every push of
    /// that channel comes after this.
    Joined {
        /// The topic.
        topic: Topic,
        /// The new channel.
        channel: ChannelId,
        /// The slot's fencing token (`None` for joins that hold no slot).
        token: Option<SlotToken>,
    },
    /// A join answered through the queue failed.
    JoinFailed {
        /// The topic.
        topic: Topic,
        /// Why.
        error: JoinError,
    },
    /// The channel lost its slot (`slot_revoked`, then its close).
    Revoked {
        /// The topic.
        topic: Topic,
        /// The channel.
        channel: ChannelId,
        /// `logged_in_elsewhere`, `node_isolated`, or a kick's reason.
        reason: String,
    },
    /// The channel was closed quietly (the same tab resumed on another socket).
    Closed {
        /// The topic.
        topic: Topic,
        /// The channel.
        channel: ChannelId,
    },
    /// A shared push for a channel.
    Push {
        /// The channel it is for.
        channel: ChannelId,
        /// The push.
        push: Arc<Push>,
    },
}

impl Outbound {
    /// Whether this is a join's answer (granted or refused).
    fn is_answer(&self) -> bool {
        matches!(self, Outbound::Joined { .. } | Outbound::JoinFailed { .. })
    }

    fn weight(&self) -> usize {
        match self {
            Outbound::Push { push, .. } => push.weight(),
            _ => SMALL_ITEM_BYTES,
        }
    }
}

/// A connection's queue: many producers (the node actor, the shards), one reader.
#[derive(Debug)]
pub(crate) struct OutboundQueue {
    state: Mutex<QueueState>,
    ready: Notify,
    max_frames: usize,
    max_bytes: usize,
    /// Join answers queued and not taken yet (changed under `state`'s lock, read without it).
    answers: AtomicU32,
    /// The reader is parked on something other than this queue (its client's flow window is
    /// full, or a write to it is blocked): what is queued here waits for the client, not for
    /// the node's threads. See [`OutboundQueue::answer_due`].
    stalled: AtomicBool,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Outbound>,
    bytes: usize,
    /// No more items are taken (the connection is ending); the reader gets `None` once this is
    /// set, after what was queued when it ended cleanly, at once when it overflowed.
    ended: bool,
}

/// Items an empty queue keeps room for (more is given back once it drains).
const KEPT_CAPACITY: usize = 4;

/// The queue was full: its connection must end as a slow client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Overflow;

impl OutboundQueue {
    pub(crate) fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::default(),
            ready: Notify::new(),
            max_frames: max_frames.max(1),
            max_bytes,
            answers: AtomicU32::new(0),
            stalled: AtomicBool::new(false),
        }
    }

    /// Whether a join's answer waits here for a reader that is about to take it: queued, not
    /// taken, the queue not ended, and the reader not parked on its client
    /// ([`wait_ended`](Self::wait_ended)). A
    /// presence shard holds a topic's window while one of the topic's joiners has one (the
    /// answers of a burst go out before the room's lists); an answer behind a client that
    /// does not read holds nothing.
    pub(crate) fn answer_due(&self) -> bool {
        self.answers.load(Ordering::Acquire) > 0 && !self.stalled.load(Ordering::Acquire) && !self.lock().ended
    }

    /// Queue `item`; an ended queue drops it. Past either bound the queue ends, drops what it
    /// held and says so.
    #[cfg(test)]
    pub(crate) fn push(&self, item: Outbound) -> Result<(), Overflow> {
        self.push_or(item, || {})
    }

    /// [`push`](Self::push), running `overflowed` before an overflow ends the queue, under the
    /// queue's lock: a reader that sees the queue ended sees what `overflowed` did (the close
    /// reason; recorded after, a reader could find the queue ended for no reason).
    pub(crate) fn push_or(&self, item: Outbound, overflowed: impl FnOnce()) -> Result<(), Overflow> {
        let weight = item.weight();
        let mut st = self.lock();
        if st.ended {
            return Ok(());
        }
        if st.items.len() >= self.max_frames || st.bytes + weight > self.max_bytes {
            overflowed();
            st.ended = true;
            st.items.clear();
            st.bytes = 0;
            self.answers.store(0, Ordering::Release);
            drop(st);
            self.ready.notify_one();
            return Err(Overflow);
        }
        st.bytes += weight;
        if item.is_answer() {
            self.answers.fetch_add(1, Ordering::AcqRel);
        }
        st.items.push_back(item);
        drop(st);
        self.ready.notify_one();
        Ok(())
    }

    /// No more items; the reader still gets what is queued, then `None`.
    pub(crate) fn end(&self) {
        self.lock().ended = true;
        self.ready.notify_one();
    }

    /// The next item, waiting for one; `None` once the queue has ended and is empty.
    pub(crate) async fn recv(&self) -> Option<Outbound> {
        loop {
            if let Some(item) = self.try_recv() {
                return Some(item);
            }
            if self.lock().ended {
                return None;
            }
            // A notification sent between the check above and here is kept as a permit.
            self.ready.notified().await;
        }
    }

    /// Resolves once the queue has ended. The reader waits here instead of taking items
    /// when its client has to read first: meanwhile the queue counts as stalled.
    pub(crate) async fn wait_ended(&self) {
        let _stalled = Stalled::new(&self.stalled);
        // A push's notification taken here is harmless: the reader checks for items before it
        // waits again.
        while !self.lock().ended {
            self.ready.notified().await;
        }
    }

    /// The next item if one is queued.
    pub(crate) fn try_recv(&self) -> Option<Outbound> {
        let mut st = self.lock();
        let item = st.items.pop_front()?;
        st.bytes -= item.weight();
        if item.is_answer() {
            self.answers.fetch_sub(1, Ordering::AcqRel);
        }
        // A burst (a join's answers and ten rooms' lists at once) must not leave its room
        // behind for the connection's lifetime.
        if st.items.is_empty() && st.items.capacity() > KEPT_CAPACITY {
            st.items.shrink_to(KEPT_CAPACITY);
        }
        Some(item)
    }

    /// Items queued now.
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Items and bytes queued now.
    #[cfg(test)]
    pub(crate) fn depth(&self) -> (usize, usize) {
        let st = self.lock();
        (st.items.len(), st.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks a queue's reader as parked on its client while it lives (the reader's wait is a
/// future: dropped when another event wakes the reader, it clears the mark).
struct Stalled<'a>(&'a AtomicBool);

impl<'a> Stalled<'a> {
    fn new(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Release);
        Stalled(flag)
    }
}

impl Drop for Stalled<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Queue `item` for `conn`; a queue that overflows ends the connection as a slow client (its
/// end reaches the node at once: presence untracked, slots released).
pub(crate) fn deliver(conn: &ConnShared, item: Outbound) {
    if conn.queue().push_or(item, || conn.note_close(CloseReason::SlowClient)) == Err(Overflow) {
        tracing::info!(socket = %conn.socket(), "slow client closed: outbound queue full");
        conn.end(CloseReason::SlowClient, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broadcast(bytes: usize) -> Outbound {
        let body = PushBody::Broadcast { from: UserId::from("u"), event: "e".into(), body: MetaValue::Null };
        let push = Arc::new(Push { topic: Topic::from("t"), body, encoded: Some(Bytes::from(vec![b'x'; bytes])) });
        Outbound::Push { channel: SubscriberId(1), push }
    }

    #[test]
    fn a_queue_over_its_byte_bound_ends_and_drops_what_it_held() {
        let q = OutboundQueue::new(100, 1000);
        assert_eq!(q.push(broadcast(600)), Ok(()));
        assert_eq!((q.depth(), q.len()), ((1, 600), 1));
        assert_eq!(q.push(broadcast(401)), Err(Overflow));
        assert_eq!((q.depth(), q.len()), ((0, 0), 0));
        assert_eq!(q.push(broadcast(1)), Ok(()), "an ended queue drops quietly");
        assert!(q.try_recv().is_none());
    }

    fn answer() -> Outbound {
        Outbound::Joined { topic: Topic::from("t"), channel: SubscriberId(1), token: None }
    }

    #[test]
    fn an_answer_is_due_until_taken_unless_the_reader_waits_for_its_client_or_the_queue_ended() {
        use std::future::Future;
        use std::task::{Context, Waker};
        let q = OutboundQueue::new(10, 10_000);
        q.push(broadcast(5)).unwrap();
        assert!(!q.answer_due(), "a push is no answer");
        q.push(answer()).unwrap();
        q.push(answer()).unwrap();
        assert!(q.answer_due());
        {
            let mut parked = Box::pin(q.wait_ended());
            assert!(parked.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
            assert!(!q.answer_due(), "the reader waits for its client: nothing it holds is due");
        }
        assert!(q.answer_due(), "the reader's wait ended");
        assert!(matches!(q.try_recv(), Some(Outbound::Push { .. })));
        assert!(matches!(q.try_recv(), Some(Outbound::Joined { .. })));
        assert!(q.answer_due(), "one answer left");
        assert!(matches!(q.try_recv(), Some(Outbound::Joined { .. })));
        assert!(!q.answer_due());
        q.push(answer()).unwrap();
        q.end();
        assert!(!q.answer_due(), "an ended queue's reader may be gone");
        let full = OutboundQueue::new(1, 10_000);
        full.push(answer()).unwrap();
        assert_eq!(full.push(answer()), Err(Overflow));
        assert_eq!(full.answers.load(Ordering::Acquire), 0, "an overflow drops the answers it held");
    }

    #[test]
    fn a_queue_over_its_frame_bound_ends() {
        let q = OutboundQueue::new(2, usize::MAX);
        assert_eq!(q.push(broadcast(1)), Ok(()));
        assert_eq!(q.push(broadcast(1)), Ok(()));
        assert_eq!(q.push(broadcast(1)), Err(Overflow));
    }

    #[test]
    fn a_shared_push_counts_its_size_once_per_queue_and_is_held_once() {
        let item = broadcast(700);
        let (a, b) = (OutboundQueue::new(10, 1000), OutboundQueue::new(10, 1000));
        assert_eq!(a.push(item.clone()), Ok(()));
        assert_eq!(b.push(item.clone()), Ok(()));
        assert_eq!((a.depth(), b.depth()), ((1, 700), (1, 700)));
        let Outbound::Push { push, .. } = &item else { unreachable!() };
        assert_eq!(Arc::strong_count(push), 3, "both queues hold the one allocation");
        assert_eq!(a.try_recv().map(|i| i.weight()), Some(700));
        assert_eq!(a.depth(), (0, 0));
    }

    #[tokio::test]
    async fn an_ended_queue_gives_what_it_held_then_none() {
        let q = Arc::new(OutboundQueue::new(10, 10_000));
        q.push(broadcast(5)).unwrap();
        q.end();
        assert!(q.recv().await.is_some());
        assert!(q.recv().await.is_none());
        let waiting = {
            let q = Arc::new(OutboundQueue::new(10, 10_000));
            let reader = tokio::spawn({
                let q = q.clone();
                async move { q.recv().await.is_some() }
            });
            q.push(broadcast(5)).unwrap();
            reader.await.unwrap()
        };
        assert!(waiting, "a waiting reader is woken by a push");
    }
}
