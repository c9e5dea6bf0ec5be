//! The sending side of the link and the table of sessions: [`Links`], shared by the node actor
//! (which queues messages), the sender task (which turns each peer's queue into frames), the
//! `ClusterLink` (which admits frames by their ticket) and the keeper (which opens and closes
//! sessions).

use super::counters::{LinkCounters, LinkEvent};
use super::handshake::Authenticated;
use super::wire::{Envelope, LinkMsg, Ticket};
use crate::codec::{self, MAX_PAYLOAD_BYTES};
use ractor::{ActorCell, ActorRef};
use roster_core::{Config, NodeName, PeerMsg};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The process group a node's `ClusterLink` joins: this prefix and the node's name.
const GROUP_PREFIX: &str = "roster.link.";
/// How many closed sessions' tickets are remembered, so that frames still in flight from
/// them are dropped quietly rather than reported as forged.
const RETIRED_TICKETS: usize = 256;

/// The link to one peer, as `/cluster` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// The peer.
    pub peer: NodeName,
    /// A session is up.
    pub up: bool,
    /// This node is the one that dials it.
    pub dialer: bool,
    /// Milliseconds since the session came up or went down.
    pub since_ms: u64,
    /// Sessions that came up so far.
    pub sessions: u64,
}

#[derive(Debug)]
struct PeerLink {
    up: bool,
    dialer: bool,
    since: Instant,
    sessions: u64,
}

/// A session as the frames see it.
#[derive(Debug)]
struct Inbound {
    peer: NodeName,
    session: u64,
    ready: bool,
    last_frame: Instant,
}

/// Every open session, by the ticket this node issued for it and by `ractor_cluster`'s id.
#[derive(Debug, Default)]
struct SessionTable {
    inbound: HashMap<Ticket, Inbound>,
    /// Session id → its peer and the ticket the peer issued (stamped on frames sent there).
    outbound: HashMap<u64, (NodeName, Ticket)>,
    retired: VecDeque<Ticket>,
}

/// Who a frame's ticket says sent it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// An open session's peer.
    Peer(NodeName),
    /// A session that has closed: the frame was in flight.
    Stale,
    /// No session this node issued the ticket for.
    Unknown,
}

/// A flush in progress: the peers yet to answer, and the waiter.
type Flush = (HashSet<NodeName>, Option<oneshot::Sender<()>>);

/// The link's shared state. See the module documentation.
pub struct Links {
    pub(crate) me: NodeName,
    /// Counters for `/metrics`.
    pub counters: LinkCounters,
    state: Mutex<HashMap<NodeName, PeerLink>>,
    sessions: Mutex<SessionTable>,
    /// Messages waiting for the sender task, per peer, in order.
    outbox: Mutex<HashMap<NodeName, Vec<PeerMsg>>>,
    pub(crate) wake: tokio::sync::Notify,
    flushes: Mutex<HashMap<u64, Flush>>,
    next_flush: AtomicU64,
}

impl Links {
    /// The links of node `me` of `config`.
    pub fn new(config: &Config, me: &NodeName) -> Arc<Links> {
        let names: Vec<NodeName> = config.cluster.nodes.iter().map(|n| n.name.clone()).collect();
        let my_pos = names.iter().position(|n| n == me).unwrap_or(0);
        let now = Instant::now();
        let state = names
            .iter()
            .enumerate()
            .filter(|(_, n)| *n != me)
            .map(|(i, n)| (n.clone(), PeerLink { up: false, dialer: my_pos < i, since: now, sessions: 0 }))
            .collect();
        Arc::new(Links {
            me: me.clone(),
            counters: LinkCounters::default(),
            state: Mutex::new(state),
            sessions: Mutex::new(SessionTable::default()),
            outbox: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            flushes: Mutex::new(HashMap::new()),
            next_flush: AtomicU64::new(1),
        })
    }

    /// Send a core message to `to`. Dropped (and counted) when no session is up: the core's
    /// protocol already survives loss.
    pub fn send_peer(&self, to: &NodeName, msg: PeerMsg) {
        self.send(to, msg);
    }

    /// Wait until every peer with a session up now has confirmed flush `id` (or `timeout`
    /// passes): `start(id)` has the node's core send the flush (`Input::Flush`), which each
    /// peer's core answers after everything this node sent it before. Returns whether all
    /// answered.
    pub(crate) async fn flush(&self, timeout: Duration, start: impl FnOnce(u64)) -> bool {
        let peers: HashSet<NodeName> = self.up_peers().into_iter().collect();
        if peers.is_empty() {
            return true;
        }
        let id = self.next_flush.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.flushes).insert(id, (peers, Some(tx)));
        start(id);
        let done = matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())));
        lock(&self.flushes).remove(&id);
        done
    }

    /// The state of every peer's link.
    pub fn status(&self) -> Vec<LinkStatus> {
        let now = Instant::now();
        let mut out: Vec<LinkStatus> = lock(&self.state)
            .iter()
            .map(|(peer, l)| LinkStatus {
                peer: peer.clone(),
                up: l.up,
                dialer: l.dialer,
                since_ms: now.duration_since(l.since).as_millis() as u64,
                sessions: l.sessions,
            })
            .collect();
        out.sort_by(|a, b| a.peer.cmp(&b.peer));
        out
    }

    fn up_peers(&self) -> Vec<NodeName> {
        lock(&self.state).iter().filter(|(_, l)| l.up).map(|(n, _)| n.clone()).collect()
    }

    /// Queue a message for `to`; the sender task sends everything queued for a peer as one
    /// frame. Under a burst, thousands of messages share a frame instead of each paying for a
    /// hop through `ractor_cluster`'s session actor, so heartbeats never sit behind a backlog.
    pub(crate) fn send(&self, to: &NodeName, body: PeerMsg) {
        let mut out = lock(&self.outbox);
        // The name is cloned once per batch, not per message.
        if !out.contains_key(to) {
            out.insert(to.clone(), Vec::new());
        }
        let Some(queue) = out.get_mut(to) else { return };
        queue.push(body);
        if queue.len() == 1 {
            self.wake.notify_one();
        }
    }

    /// Send everything queued (the sender task's loop body).
    pub(crate) fn transmit(&self) {
        let queued = std::mem::take(&mut *lock(&self.outbox));
        for (to, wires) in queued {
            self.transmit_to(&to, wires);
        }
    }

    fn transmit_to(&self, to: &NodeName, body: Vec<PeerMsg>) {
        let c = &self.counters;
        let n = body.len() as u64;
        let Some((cell, ticket)) = self.route(to) else {
            c.add(LinkEvent::DroppedNoSession, n);
            return;
        };
        let (frames, oversize) = frames(&self.me, to, ticket, body);
        if oversize > 0 {
            c.add(LinkEvent::DroppedOversize, oversize);
            tracing::warn!(peer = %to, messages = oversize, "messages over the payload limit dropped");
        }
        let link = ActorRef::<LinkMsg>::from(cell);
        for (bytes, messages) in frames {
            let len = bytes.len() as u64;
            match link.cast(LinkMsg::Frame(bytes)) {
                Ok(()) => {
                    c.inc(LinkEvent::FramesSent);
                    c.add(LinkEvent::MessagesSent, messages);
                    c.add(LinkEvent::BytesSent, len);
                }
                Err(_) => c.add(LinkEvent::DroppedNoSession, messages),
            }
        }
    }

    /// The peer's `ClusterLink` as mirrored here by a session whose handshake authenticated
    /// `to`, and the ticket to stamp. A session of another peer may put actors into any
    /// process group; only the session's authenticated peer counts.
    fn route(&self, to: &NodeName) -> Option<(ActorCell, Ticket)> {
        let members = ractor::pg::get_members(&group_of(to));
        let sessions = lock(&self.sessions);
        members.into_iter().filter(|c| !c.get_id().is_local()).find_map(|cell| {
            match sessions.outbound.get(&cell.get_id().node()) {
                Some((peer, ticket)) if peer == to => Some((cell, *ticket)),
                _ => None,
            }
        })
    }

    /// A session authenticated by the handshake opened (`ractor_cluster`'s id `session`).
    pub(crate) fn session_opened(&self, session: u64, auth: &Authenticated, now: Instant) {
        let mut s = lock(&self.sessions);
        s.outbound.insert(session, (auth.peer.clone(), auth.outbound));
        s.inbound.insert(auth.inbound, Inbound { peer: auth.peer.clone(), session, ready: false, last_frame: now });
    }

    /// The session is ready: from now on it must carry frames (see [`Links::silent_sessions`]).
    pub(crate) fn session_ready(&self, session: u64, now: Instant) {
        let mut s = lock(&self.sessions);
        if let Some(i) = s.inbound.values_mut().find(|i| i.session == session) {
            i.ready = true;
            i.last_frame = now;
        }
    }

    /// The session closed: its frames still in flight are stale from now on.
    pub(crate) fn session_closed(&self, session: u64) {
        let mut s = lock(&self.sessions);
        s.outbound.remove(&session);
        let tickets: Vec<Ticket> = s.inbound.iter().filter(|(_, i)| i.session == session).map(|(t, _)| *t).collect();
        for t in tickets {
            s.inbound.remove(&t);
            s.retired.push_back(t);
        }
        while s.retired.len() > RETIRED_TICKETS {
            s.retired.pop_front();
        }
    }

    /// Who sent a frame stamped with `ticket`, noting that the session carried a frame `now`.
    pub(crate) fn admit(&self, ticket: &Ticket, now: Instant) -> Admission {
        let mut s = lock(&self.sessions);
        if let Some(i) = s.inbound.get_mut(ticket) {
            i.last_frame = now;
            return Admission::Peer(i.peer.clone());
        }
        if s.retired.contains(ticket) {
            Admission::Stale
        } else {
            Admission::Unknown
        }
    }

    /// Ready sessions that have carried no frame for longer than `limit`, with their peers.
    pub(crate) fn silent_sessions(&self, now: Instant, limit: Duration) -> Vec<(u64, NodeName)> {
        lock(&self.sessions)
            .inbound
            .values()
            .filter(|i| i.ready && now.saturating_duration_since(i.last_frame) > limit)
            .map(|i| (i.session, i.peer.clone()))
            .collect()
    }

    /// Marks `peer`'s link up or down; returns whether that changed anything.
    pub(crate) fn set_up(&self, peer: &NodeName, up: bool) -> bool {
        let mut state = lock(&self.state);
        let Some(l) = state.get_mut(peer) else { return false };
        if l.up == up {
            return false;
        }
        l.up = up;
        l.since = Instant::now();
        if up {
            l.sessions += 1;
            self.counters.inc(LinkEvent::SessionsUp);
        } else {
            self.counters.inc(LinkEvent::SessionsDown);
        }
        true
    }

    /// `from`'s core confirmed flush `id`.
    pub(crate) fn flush_acked(&self, id: u64, from: &NodeName) {
        let mut flushes = lock(&self.flushes);
        if let Some((waiting, tx)) = flushes.get_mut(&id) {
            waiting.remove(from);
            if waiting.is_empty() {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    }
}

/// `body` for `to` as encoded frames of at most [`MAX_PAYLOAD_BYTES`], in order, each with its
/// message count, and how many messages were dropped because one alone is over the limit.
pub(crate) fn frames(me: &NodeName, to: &NodeName, ticket: Ticket, body: Vec<PeerMsg>) -> (Vec<(Vec<u8>, u64)>, u64) {
    let mut out = Vec::new();
    let mut dropped = 0;
    let mut pending = vec![body];
    // Depth-first, first half before second: frames keep the messages' order.
    while let Some(body) = pending.pop() {
        let n = body.len() as u64;
        let envelope = Envelope { from: me.clone(), to: to.clone(), ticket, body };
        match codec::encode(&envelope) {
            Ok(b) if b.len() <= MAX_PAYLOAD_BYTES => out.push((b, n)),
            Ok(_) if envelope.body.len() > 1 => {
                let mut first = envelope.body;
                let second = first.split_off(first.len() / 2);
                pending.push(second);
                pending.push(first);
            }
            // One message over the limit (or not encodable): the core's protocol recovers
            // what it carried (a presence gap asks for a snapshot, which goes in chunks).
            Ok(_) | Err(_) => dropped += n,
        }
    }
    (out, dropped)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn group_of(node: &NodeName) -> String {
    format!("{GROUP_PREFIX}{node}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_core::{Incarnation, MetaValue};

    fn push(user: &str, body: MetaValue) -> PeerMsg {
        let from = Incarnation::new("a", 1);
        PeerMsg::Broadcast { from, seq: 1, topic: "t".into(), user: user.into(), event: "e".into(), body }
    }

    fn flush(id: u64) -> PeerMsg {
        PeerMsg::Flush { from: Incarnation::new("a", 1), id }
    }

    #[test]
    fn the_node_listed_first_dials() {
        let config = Config::from_toml_str(include_str!("../../../../cluster.toml")).unwrap();
        let dialers = |me: &str| -> Vec<(String, bool)> {
            Links::new(&config, &NodeName::from(me))
                .status()
                .into_iter()
                .map(|s| (s.peer.to_string(), s.dialer))
                .collect()
        };
        assert_eq!(dialers("a"), [("b".to_owned(), true), ("c".to_owned(), true)]);
        assert_eq!(dialers("b"), [("a".to_owned(), false), ("c".to_owned(), true)]);
        assert_eq!(dialers("c"), [("a".to_owned(), false), ("b".to_owned(), false)]);
    }

    #[test]
    fn a_big_batch_goes_in_frames_under_the_limit_in_order() {
        let blob = MetaValue::Str("x".repeat(100_000));
        let body: Vec<PeerMsg> = (0..100).map(|i| push(&format!("u{i}"), blob.clone())).collect();
        let (frames, dropped) = frames(&"a".into(), &"b".into(), [1; 16], body);
        assert_eq!(dropped, 0);
        assert!(frames.len() >= 3, "10 MB in {} frames", frames.len());
        let mut users = Vec::new();
        for (bytes, n) in frames {
            assert!(bytes.len() <= MAX_PAYLOAD_BYTES);
            let env: Envelope = codec::decode(&bytes).unwrap();
            assert_eq!(env.body.len() as u64, n);
            for w in env.body {
                let PeerMsg::Broadcast { user, .. } = w else { panic!("not a broadcast") };
                users.push(user.to_string());
            }
        }
        assert_eq!(users, (0..100).map(|i| format!("u{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn one_message_over_the_limit_is_dropped_and_counted_the_rest_goes() {
        let huge = MetaValue::Str("x".repeat(MAX_PAYLOAD_BYTES + 1));
        let body = vec![flush(1), push("u", huge), flush(2)];
        let (frames, dropped) = frames(&"a".into(), &"b".into(), [1; 16], body);
        assert_eq!(dropped, 1);
        let flushes: Vec<PeerMsg> =
            frames.iter().flat_map(|(b, _)| codec::decode::<Envelope>(b).unwrap().body).collect();
        assert_eq!(flushes, [flush(1), flush(2)]);
    }

    fn auth(peer: &str, inbound: u8, outbound: u8) -> Authenticated {
        Authenticated { peer: peer.into(), inbound: [inbound; 16], outbound: [outbound; 16] }
    }

    #[test]
    fn a_ticket_admits_its_sessions_peer_until_the_session_closes_then_is_stale() {
        let config = Config::from_toml_str(include_str!("../../../../cluster.toml")).unwrap();
        let links = Links::new(&config, &"a".into());
        let t0 = Instant::now();
        links.session_opened(7, &auth("b", 1, 2), t0);
        links.session_opened(8, &auth("c", 3, 4), t0);
        assert_eq!(links.admit(&[1; 16], t0), Admission::Peer("b".into()));
        assert_eq!(links.admit(&[3; 16], t0), Admission::Peer("c".into()));
        assert_eq!(links.admit(&[2; 16], t0), Admission::Unknown, "the ticket b issued is not one a issued");
        links.session_closed(7);
        assert_eq!(links.admit(&[1; 16], t0), Admission::Stale);
        assert_eq!(links.admit(&[9; 16], t0), Admission::Unknown);
    }

    #[test]
    fn a_ready_session_without_frames_for_longer_than_the_limit_is_silent() {
        let config = Config::from_toml_str(include_str!("../../../../cluster.toml")).unwrap();
        let links = Links::new(&config, &"a".into());
        let t0 = Instant::now();
        let limit = Duration::from_millis(600);
        links.session_opened(7, &auth("b", 1, 2), t0);
        assert!(links.silent_sessions(t0 + limit * 10, limit).is_empty(), "not ready yet: the handshake deadline's");
        links.session_ready(7, t0);
        assert!(links.silent_sessions(t0 + limit, limit).is_empty());
        let _ = links.admit(&[1; 16], t0 + limit);
        assert!(links.silent_sessions(t0 + limit * 2, limit).is_empty(), "a frame restarted the clock");
        assert_eq!(links.silent_sessions(t0 + limit * 2 + Duration::from_millis(1), limit), [(7, "b".into())]);
    }
}
