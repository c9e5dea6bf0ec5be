//! `ClientInbox`: what connections, the embedding API and user activations send the node
//! actor, in one FIFO queue beside its mailbox. The node actor takes everything waiting at
//! once and handles it as one batch: one wake-up, one look at its timers and one message per
//! presence shard for the whole batch instead of one each per join, leave or close.
//!
//! ```text
//! Connection, Node, activation ── send ──▶ ClientInbox ──(first one: ClientWake)──▶ NodeActor
//! ```
//!
//! Only the message that finds the queue empty wakes the actor; the rest ride along. A batch
//! is at most `BATCH` (128) messages; between batches the actor yields its
//! thread, so a burst of joins never keeps the cluster link's tasks (heartbeats, pings) from
//! running. Before any
//! mailbox message the node actor empties this queue, so whatever a caller sent here before it
//! sent or called through the mailbox (a list, a status) is handled first.

use crate::node_actor::NodeMsg;
use ractor::ActorRef;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The room a drained inbox keeps: one batch's worth.
const KEPT_CAPACITY: usize = 128;

/// The node actor has stopped: nothing sent is handled.
#[derive(Debug)]
pub(crate) struct NodeStopped;

#[derive(Default)]
struct Queue {
    msgs: VecDeque<NodeMsg>,
    closed: bool,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct ClientInbox {
    actor: OnceLock<ActorRef<NodeMsg>>,
    queue: Mutex<Queue>,
}

impl std::fmt::Debug for ClientInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientInbox").field("waiting", &self.lock().msgs.len()).finish()
    }
}

impl ClientInbox {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `msg` for the node actor, in order with everything sent here before.
    pub(crate) fn send(&self, msg: NodeMsg) -> Result<(), NodeStopped> {
        let wake = {
            let mut q = self.lock();
            if q.closed {
                return Err(NodeStopped);
            }
            q.msgs.push_back(msg);
            q.msgs.len() == 1
        };
        if wake {
            if let Some(actor) = self.actor.get() {
                if actor.cast(NodeMsg::ClientWake).is_err() {
                    self.close();
                    return Err(NodeStopped);
                }
            }
        }
        Ok(())
    }

    /// The node actor runs: wake it for anything sent before.
    pub(crate) fn set_actor(&self, actor: ActorRef<NodeMsg>) {
        let _ = self.actor.set(actor.clone());
        if !self.lock().msgs.is_empty() {
            let _ = actor.cast(NodeMsg::ClientWake);
        }
    }

    /// Move up to `max` waiting messages, oldest first, into `into`; whether more wait.
    pub(crate) fn take(&self, max: usize, into: &mut Vec<NodeMsg>) -> bool {
        let mut q = self.lock();
        let n = q.msgs.len().min(max);
        into.extend(q.msgs.drain(..n));
        // A burst (thousands of joins at once) must not leave its room behind for the node's
        // lifetime: drained, the queue keeps room for one batch.
        if q.msgs.is_empty() && q.msgs.capacity() > KEPT_CAPACITY {
            q.msgs.shrink_to(KEPT_CAPACITY);
        }
        !q.msgs.is_empty()
    }

    /// The node actor stopped: refuse what comes, drop what waits.
    pub(crate) fn close(&self) {
        let left = {
            let mut q = self.lock();
            q.closed = true;
            std::mem::take(&mut q.msgs)
        };
        drop(left);
    }
}

/// Closes the inbox when dropped (with the node actor's state, however the actor ends).
pub(crate) struct CloseOnDrop(pub(crate) Arc<ClientInbox>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drained_inbox_gives_back_the_room_a_burst_took() {
        let inbox = ClientInbox::new();
        for _ in 0..10_000 {
            inbox.send(NodeMsg::ClientWake).expect("open");
        }
        assert!(inbox.lock().msgs.capacity() >= 10_000);
        let mut taken = Vec::new();
        let mut batches = 1;
        while inbox.take(128, &mut taken) {
            batches += 1;
        }
        assert_eq!((taken.len(), batches), (10_000, 79), "every message taken, in batches of 128");
        let kept = inbox.lock().msgs.capacity();
        assert!(kept <= KEPT_CAPACITY, "kept room for {kept}");
    }
}
