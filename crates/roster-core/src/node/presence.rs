//! The node's presence replica: local tracks of its own channels, deltas to peers coalesced
//! over `broadcast_ms`, snapshots when a peer sees a gap or returns, and a down peer's entries
//! dropped at once (P3).

use super::{Effect, NodeState, PeerMsg, PresenceMsg};
use crate::ids::{Incarnation, Meta, Millis, NodeName, PhxRef, SocketId, TabId, Topic};
use crate::presence::{Delta, LocalWrite, PresenceChanges};

/// Entries per snapshot chunk at most.
const SNAPSHOT_CHUNK_ENTRIES: usize = 1000;
/// Bytes per snapshot chunk at most (as far as single entries allow): far under the link's
/// frame limit whatever the metas weigh, so a snapshot always arrives.
const SNAPSHOT_CHUNK_BYTES: usize = 256 * 1024;

impl NodeState {
    /// A fresh `phx_ref`: a hash of this incarnation and a counter, so refs are unique across
    /// nodes and lives without drawing randomness here.
    fn next_phx_ref(&mut self) -> PhxRef {
        self.phx_refs += 1;
        // The same 24 bytes as ever (boot, then counter), on the stack: no list per join.
        let mut bytes = [0; 24];
        bytes[..16].copy_from_slice(self.me.boot.as_bytes());
        bytes[16..].copy_from_slice(&self.phx_refs.to_le_bytes());
        PhxRef::from_random(xxhash_rust::xxh3::xxh3_128(&bytes))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn track(
        &mut self,
        socket: SocketId,
        topic: Topic,
        key: impl Into<std::sync::Arc<str>>,
        tab: Option<TabId>,
        meta: Meta,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let phx_ref = self.next_phx_ref();
        let online_at = now + self.wall_offset;
        let w = self.presence.track(topic, key, socket, tab, meta, online_at, phx_ref);
        self.local_write(w, now, fx);
    }

    pub(super) fn untrack(&mut self, socket: SocketId, topic: &Topic, now: Millis, fx: &mut Vec<Effect>) {
        let w = self.presence.untrack(topic, socket);
        self.local_write(w, now, fx);
    }

    pub(super) fn untrack_socket(&mut self, socket: SocketId, now: Millis, fx: &mut Vec<Effect>) {
        let w = self.presence.untrack_conn(socket);
        self.local_write(w, now, fx);
    }

    pub(super) fn update_meta(
        &mut self,
        socket: SocketId,
        topic: &Topic,
        meta: Meta,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let phx_ref = self.next_phx_ref();
        let w = self.presence.update(topic, socket, meta, phx_ref);
        self.local_write(w, now, fx);
    }

    fn local_write(&mut self, w: LocalWrite, now: Millis, fx: &mut Vec<Effect>) {
        if let Some(delta) = w.delta {
            if let Some(earlier) = self.outbox.push(delta, now) {
                self.broadcast_delta(earlier, fx);
            }
        }
        emit(w.changes, fx);
    }

    /// Send the coalesced delta once its window closed (or at once with `force`).
    pub(super) fn flush_presence(&mut self, now: Millis, force: bool, fx: &mut Vec<Effect>) {
        let delta = if force { self.outbox.take() } else { self.outbox.flush(now) };
        if let Some(d) = delta {
            self.broadcast_delta(d, fx);
        }
    }

    pub(super) fn presence_due(&self) -> Option<Millis> {
        self.outbox.due_at()
    }

    fn broadcast_delta(&self, delta: Delta, fx: &mut Vec<Effect>) {
        for (name, peer) in &self.peers {
            if *name != self.me.node && peer.alive {
                let msg = PeerMsg::Presence(PresenceMsg::Delta(delta.clone()));
                fx.push(Effect::Send { to: name.clone(), msg });
            }
        }
    }

    /// Presence from `origin` counts only while that incarnation is the live one heard: a
    /// late message from a peer declared down would bring back ghosts.
    fn current(&self, origin: &Incarnation) -> bool {
        self.peers.get(&origin.node).is_some_and(|p| p.alive && p.incarnation.as_ref() == Some(origin))
    }

    pub(super) fn presence_msg(&mut self, msg: PresenceMsg, now: Millis, fx: &mut Vec<Effect>) {
        match msg {
            PresenceMsg::Delta(d) => {
                if !self.current(&d.origin) || d.origin == self.me {
                    return;
                }
                match self.presence.apply_delta(&d) {
                    Ok(changes) => emit(changes, fx),
                    Err(_) => self.ask_snapshot(&d.origin.node, now, false, fx),
                }
            }
            PresenceMsg::SnapshotRequest { from } => {
                if from.node == self.me.node {
                    return;
                }
                // Pending changes go first, so deltas after the snapshot follow its `seq`.
                if let Some(d) = self.outbox.take() {
                    self.broadcast_delta(d, fx);
                }
                for chunk in self.presence.snapshot_chunks(SNAPSHOT_CHUNK_ENTRIES, SNAPSHOT_CHUNK_BYTES) {
                    let msg = PeerMsg::Presence(PresenceMsg::SnapshotChunk(chunk));
                    fx.push(Effect::Send { to: from.node.clone(), msg });
                }
            }
            PresenceMsg::SnapshotChunk(chunk) => {
                if !self.current(&chunk.origin) || chunk.origin == self.me {
                    return;
                }
                if let Some(changes) = self.presence.apply_snapshot_chunk(chunk) {
                    emit(changes, fx);
                }
            }
        }
    }

    /// Ask `node` for its snapshot. Not again within `heartbeat_timeout_ms` of the last ask
    /// (unless `force`): every delta that arrives during a gap fails the same way, and asking
    /// for each one made a burst of 10,000 joins send hundreds of full snapshots. An ask lost
    /// on the way is repeated by the heartbeat's sequence check once the window has passed.
    pub(super) fn ask_snapshot(&mut self, node: &NodeName, now: Millis, force: bool, fx: &mut Vec<Effect>) {
        let window = self.config.cluster.heartbeat_timeout_ms;
        if !force && self.snapshot_asked.get(node).is_some_and(|t| now < t + window) {
            return;
        }
        self.snapshot_asked.insert(node.clone(), now);
        let msg = PeerMsg::Presence(PresenceMsg::SnapshotRequest { from: self.me.clone() });
        fx.push(Effect::Send { to: node.clone(), msg });
    }

    /// A peer is down: its entries leave at once.
    pub(super) fn presence_peer_down(&mut self, node: &NodeName, fx: &mut Vec<Effect>) {
        let changes = self.presence.drop_node(node);
        emit(changes, fx);
    }

    /// A heartbeat announced `seq` as the peer's latest delta sent. If what it announced one
    /// heartbeat earlier has still not been applied here, a delta was lost: ask for a snapshot.
    ///
    /// Ask again at once, past the window of [`NodeState::ask_snapshot`], when the heartbeat
    /// echoes (`echoed`) one this node sent after its last ask: the peer had the ask before
    /// that heartbeat (links are FIFO), so its answer came before this echo, and the gap that
    /// is still here says the ask or the answer was lost. Waiting out the window instead left
    /// a node showing a ghost, or missing an entry, for seconds per lost message under loss
    /// (the soak's presence failures, e.g. 3-node seed 5823).
    pub(super) fn presence_seq_check(
        &mut self,
        origin: &Incarnation,
        seq: u64,
        echoed: Option<Millis>,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let applied = self.presence.applied_seq(origin).unwrap_or(0);
        let Some(peer) = self.peers.get_mut(&origin.node) else { return };
        let announced_before = std::mem::replace(&mut peer.presence_seq, seq);
        if applied < announced_before.min(seq) {
            let asked = self.snapshot_asked.get(&origin.node).copied();
            let unanswered =
                self.safeguards.ask_again_after_echo && asked.is_some_and(|t| echoed.is_some_and(|e| e > t));
            self.ask_snapshot(&origin.node, now, unanswered, fx);
        }
    }
}

fn emit(changes: PresenceChanges, fx: &mut Vec<Effect>) {
    if !changes.is_empty() {
        fx.push(Effect::PresenceChanged(changes));
    }
}
