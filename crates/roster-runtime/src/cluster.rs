//! The cluster link: Roster's node-to-node traffic over `ractor_cluster`.
//!
//! ```text
//! NodeActor ── Effect::Send ──▶ Links::send ── codec ──▶ pg "roster.link.<peer>" (remote cell)
//!                                                              │  ractor_cluster session (TCP)
//! peer's ClusterLink ◀─────────────────────────────────────────┘
//!     └── decode (fallible) ──▶ peer's PeerInbox (ahead of the NodeActor's mailbox)
//! LinkKeeper (task): NodeServer events, dialing with backoff, LinkDown on a closed session
//! ```
//!
//! - Every node runs one `NodeServer` bound to its `cluster_addr` (never every interface),
//!   authenticated by the config's cookie, in isolated mode (no transitive dialing: a node
//!   reaches exactly the addresses its config lists, so a proxy in between stays in between).
//! - Of each pair of nodes only the one listed first in `[[cluster.nodes]]` dials, forever,
//!   with backoff: `ractor_cluster` never reconnects by itself, and two nodes dialing each other
//!   at once lose one session as a duplicate.
//! - `ClusterLink` is the only remotable actor of a node (each is mirrored on every peer). It
//!   joins the process group `roster.link.<name>`, which is how a peer finds it. It accepts one
//!   message, `Frame(bytes)`: a version byte and a bincode [`Envelope`], decoded fallibly here,
//!   never by `BytesConvertable::from_bytes`.
//! - Identity is the config name in the envelope (checked against the configured peers and
//!   the addressee) plus the incarnation inside Roster's own heartbeats; `ractor_cluster`'s
//!   `NodeId`, a per-connection counter, is only used to pair its session events.
//! - Liveness is decided by the core from Roster's own heartbeats; the link adds what only the
//!   transport knows: a session closed (a killed process is noticed in milliseconds).

use crate::codec::{self, MAX_PAYLOAD_BYTES};
use crate::node_actor::{NodeMsg, PeerInbox};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage, NodeSessionMessage, RactorClusterMessage};
use roster_core::{Config, MetaValue, NodeName, PeerMsg, SlotToken, Topic, UserId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The process group a node's `ClusterLink` joins: this prefix and the node's name.
const GROUP_PREFIX: &str = "roster.link.";
/// The first pause after a failed dial; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between dials of a peer that is away.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a TCP connect may take before the dial counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the keeper looks for peers to dial.
const DIAL_CHECK: Duration = Duration::from_millis(25);

/// The one message a `ClusterLink` accepts from the network: an encoded [`Envelope`].
#[derive(RactorClusterMessage)]
pub enum LinkMsg {
    /// A version byte and a bincode envelope (see [`crate::codec`]).
    Frame(Vec<u8>),
}

/// What travels between nodes, inside the codec.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The sender's configured name.
    from: NodeName,
    /// The addressee's configured name (a frame for another node is refused).
    to: NodeName,
    /// The sender's [`Config::fingerprint`]: nodes whose shared settings differ ignore each
    /// other rather than disagree about partitions or policies.
    fingerprint: u64,
    /// The content: every message queued for this peer since the previous frame, in order.
    body: Vec<Wire>,
}

/// The content of an [`Envelope`].
#[derive(Debug, Serialize, Deserialize)]
enum Wire {
    /// The core's node-to-node traffic: heartbeats, leases, slots, scans, presence.
    Peer(PeerMsg),
    /// A signed-in user's push, for the topic's subscribers on the receiving node.
    Broadcast {
        /// The topic.
        topic: Topic,
        /// The sender.
        from: UserId,
        /// The event.
        event: String,
        /// The payload.
        body: MetaValue,
    },
    /// Does `token` still hold `user`'s slot in `topic`'s scope? (to the user's home)
    Validate {
        /// The asker's request id.
        id: u64,
        /// The user.
        user: UserId,
        /// A topic of the scope.
        topic: Topic,
        /// The token.
        token: SlotToken,
    },
    /// The home's answer; `None`: it is not the user's home (any more).
    ValidateReply {
        /// The request id.
        id: u64,
        /// The answer.
        answer: Option<bool>,
    },
    /// "Answer once everything I sent before this has reached you" (graceful shutdown).
    Flush(u64),
    /// The answer to [`Wire::Flush`].
    FlushAck(u64),
}

/// Counters of the link, for `/metrics` and `/cluster`.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Frames handed to the transport (each carries every message queued for its peer).
    pub frames_sent: AtomicU64,
    /// Messages handed to the transport.
    pub messages_sent: AtomicU64,
    /// Bytes handed to the transport.
    pub bytes_sent: AtomicU64,
    /// Frames received and accepted.
    pub frames_received: AtomicU64,
    /// Messages dropped because no session to the peer was up.
    pub dropped_no_session: AtomicU64,
    /// Messages dropped because they encoded to more than the payload limit.
    pub dropped_oversize: AtomicU64,
    /// Frames refused: undecodable, for another node, from an unknown node, or from a node
    /// with a different config fingerprint.
    pub refused: AtomicU64,
    /// Sessions that came up.
    pub sessions_up: AtomicU64,
    /// Sessions that closed.
    pub sessions_down: AtomicU64,
    /// Dials that failed (connect refused, timed out, or no handshake).
    pub dial_failures: AtomicU64,
}

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

/// A flush in progress: the peers yet to answer, and the waiter.
type Flush = (HashSet<NodeName>, Option<oneshot::Sender<()>>);

/// The sending side of the link, shared by the node actor (through [`crate::PeerSink`]) and
/// the `ClusterLink` actor.
pub struct Links {
    me: NodeName,
    fingerprint: u64,
    peers: HashSet<NodeName>,
    /// Counters for `/metrics`.
    pub counters: LinkCounters,
    state: Mutex<HashMap<NodeName, PeerLink>>,
    /// Messages waiting for the sender task, per peer, in order.
    outbox: Mutex<HashMap<NodeName, Vec<Wire>>>,
    wake: tokio::sync::Notify,
    flushes: Mutex<HashMap<u64, Flush>>,
    next_flush: AtomicU64,
    /// Peers whose refused frames were already logged (a mismatch is logged once per peer).
    warned: Mutex<HashSet<String>>,
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
            fingerprint: config.fingerprint(),
            peers: names.into_iter().filter(|n| n != me).collect(),
            counters: LinkCounters::default(),
            state: Mutex::new(state),
            outbox: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            flushes: Mutex::new(HashMap::new()),
            next_flush: AtomicU64::new(1),
            warned: Mutex::new(HashSet::new()),
        })
    }

    /// Send a core message to `to`. Dropped (and counted) when no session is up: the core's
    /// protocol already survives loss.
    pub fn send_peer(&self, to: &NodeName, msg: PeerMsg) {
        self.send(to, Wire::Peer(msg));
    }

    /// Send a signed-in user's push to every peer with a session up.
    pub fn broadcast(&self, topic: &Topic, from: &UserId, event: &str, body: &MetaValue) {
        for peer in self.up_peers() {
            let wire = Wire::Broadcast {
                topic: topic.clone(),
                from: from.clone(),
                event: event.to_owned(),
                body: body.clone(),
            };
            self.send(&peer, wire);
        }
    }

    /// Ask `home` whether `token` still holds `user`'s slot; the answer comes back to the
    /// node actor as [`NodeMsg::ValidateReply`] with `id`.
    pub fn validate(&self, home: &NodeName, id: u64, user: UserId, topic: Topic, token: SlotToken) {
        self.send(home, Wire::Validate { id, user, topic, token });
    }

    /// Answer a peer's [`Links::validate`].
    pub fn validate_reply(&self, to: &NodeName, id: u64, answer: Option<bool>) {
        self.send(to, Wire::ValidateReply { id, answer });
    }

    /// Wait until every peer with a session up has received everything sent to it so far (or
    /// `timeout` passes). Returns whether all answered.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let peers: HashSet<NodeName> = self.up_peers().into_iter().collect();
        if peers.is_empty() {
            return true;
        }
        let id = self.next_flush.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.flushes).insert(id, (peers.clone(), Some(tx)));
        for peer in &peers {
            self.send(peer, Wire::Flush(id));
        }
        let done = tokio::time::timeout(timeout, rx).await.is_ok();
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
    fn send(&self, to: &NodeName, body: Wire) {
        let mut out = lock(&self.outbox);
        // The name is cloned once per batch, not per message.
        if !out.contains_key(to) {
            out.insert(to.clone(), Vec::new());
        }
        let queue = out.get_mut(to).expect("inserted above");
        queue.push(body);
        if queue.len() == 1 {
            self.wake.notify_one();
        }
    }

    /// Send everything queued (the sender task's loop body).
    fn transmit(&self) {
        let queued = std::mem::take(&mut *lock(&self.outbox));
        for (to, wires) in queued {
            self.transmit_to(&to, wires);
        }
    }

    fn transmit_to(&self, to: &NodeName, body: Vec<Wire>) {
        let c = &self.counters;
        let n = body.len() as u64;
        let envelope = Envelope { from: self.me.clone(), to: to.clone(), fingerprint: self.fingerprint, body };
        let bytes = match codec::encode(&envelope) {
            Ok(b) if b.len() <= MAX_PAYLOAD_BYTES => b,
            Ok(_) if envelope.body.len() > 1 => {
                // Too big for one frame: send it in two halves, in order.
                let mut first = envelope.body;
                let second = first.split_off(first.len() / 2);
                self.transmit_to(to, first);
                self.transmit_to(to, second);
                return;
            }
            Ok(b) => {
                // One message over the limit: the peer finds the gap from the presence
                // sequence in the next heartbeat and asks for a snapshot, which goes in chunks.
                c.dropped_oversize.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %to, bytes = b.len(), "message over the payload limit dropped");
                return;
            }
            Err(e) => {
                c.dropped_oversize.fetch_add(n, Ordering::Relaxed);
                tracing::error!(peer = %to, error = %e, "messages could not be encoded");
                return;
            }
        };
        let Some(cell) = remote_link(to) else {
            c.dropped_no_session.fetch_add(n, Ordering::Relaxed);
            return;
        };
        let len = bytes.len() as u64;
        match ActorRef::<LinkMsg>::from(cell).cast(LinkMsg::Frame(bytes)) {
            Ok(()) => {
                c.frames_sent.fetch_add(1, Ordering::Relaxed);
                c.messages_sent.fetch_add(n, Ordering::Relaxed);
                c.bytes_sent.fetch_add(len, Ordering::Relaxed);
            }
            Err(_) => {
                c.dropped_no_session.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Count a refused frame, logging the first of each kind per peer.
    fn refuse(&self, key: String, why: impl FnOnce() -> String) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        if lock(&self.warned).insert(key) {
            tracing::warn!("cluster frame refused: {}", why());
        }
    }

    fn set_up(&self, peer: &NodeName, up: bool) -> bool {
        let mut state = lock(&self.state);
        let Some(l) = state.get_mut(peer) else { return false };
        if l.up == up {
            return false;
        }
        l.up = up;
        l.since = Instant::now();
        if up {
            l.sessions += 1;
            self.counters.sessions_up.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.sessions_down.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    fn flush_acked(&self, id: u64, from: &NodeName) {
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn group_of(node: &NodeName) -> String {
    format!("{GROUP_PREFIX}{node}")
}

/// The peer's `ClusterLink` as mirrored here by its session, if one is up.
fn remote_link(node: &NodeName) -> Option<ActorCell> {
    ractor::pg::get_members(&group_of(node)).into_iter().find(|c| !c.get_id().is_local())
}

/// The remotable actor that receives frames from peers. See the module documentation.
pub struct ClusterLink;

/// What a `ClusterLink` starts with.
pub struct ClusterLinkArgs {
    links: Arc<Links>,
    node: ActorRef<NodeMsg>,
    inbox: Arc<PeerInbox>,
}

impl Actor for ClusterLink {
    type Msg = LinkMsg;
    type State = ClusterLinkArgs;
    type Arguments = ClusterLinkArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<LinkMsg>,
        args: ClusterLinkArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(group_of(&args.links.me), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<LinkMsg>,
        msg: LinkMsg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let LinkMsg::Frame(bytes) = msg;
        let links = &st.links;
        let env: Envelope = match codec::decode(&bytes) {
            Ok(env) => env,
            Err(e) => {
                links.refuse(format!("codec:{e}"), || format!("undecodable ({e}), {} bytes", bytes.len()));
                return Ok(());
            }
        };
        if env.to != links.me {
            links.refuse(format!("to:{}", env.to), || format!("addressed to {} from {}", env.to, env.from));
            return Ok(());
        }
        if !links.peers.contains(&env.from) {
            links.refuse(format!("from:{}", env.from), || format!("from {}, not a configured peer", env.from));
            return Ok(());
        }
        if env.fingerprint != links.fingerprint {
            links.refuse(format!("fingerprint:{}", env.from), || {
                format!(
                    "{} runs a different cluster config (node list, partitions, timings or policies differ)",
                    env.from
                )
            });
            return Ok(());
        }
        links.counters.frames_received.fetch_add(1, Ordering::Relaxed);
        let from = env.from;
        let mut wake = false;
        for wire in env.body {
            wake |= st.deliver(&from, wire);
        }
        if wake {
            let _ = st.node.cast(NodeMsg::PeerWake);
        }
        Ok(())
    }
}

impl ClusterLinkArgs {
    /// Hand one message on; returns whether the node actor needs a wake-up.
    fn deliver(&self, from: &NodeName, wire: Wire) -> bool {
        let (from, links, st) = (from.clone(), &self.links, self);
        match wire {
            Wire::Peer(msg) => return st.inbox.push(from, msg),
            Wire::Broadcast { topic, from: user, event, body } => {
                let _ = st.node.cast(NodeMsg::PeerBroadcast { topic, from: user, event, body });
            }
            Wire::Validate { id, user, topic, token } => {
                let _ = st.node.cast(NodeMsg::PeerValidate { from, id, user, topic, token });
            }
            Wire::ValidateReply { id, answer } => {
                let _ = st.node.cast(NodeMsg::ValidateReply { id, answer });
            }
            Wire::Flush(id) => links.send(&from, Wire::FlushAck(id)),
            Wire::FlushAck(id) => links.flush_acked(id, &from),
        }
        false
    }
}

/// What the `NodeServer` tells the keeper.
enum Event {
    Opened { id: u64, addr: String, outgoing: bool, session: ActorRef<NodeSessionMessage> },
    Ready { id: u64, name: String },
    Closed { id: u64 },
    Dialed { peer: NodeName, ok: bool },
}

struct Subscription(mpsc::UnboundedSender<Event>);

impl NodeEventSubscription for Subscription {
    fn node_session_opened(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.send(Event::Opened {
            id: ses.node_id,
            addr: ses.peer_addr,
            outgoing: !ses.is_server,
            session: ses.actor,
        });
    }

    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.send(Event::Closed { id: ses.node_id });
    }

    fn node_session_authenticated(&self, _ses: ractor_cluster::node::NodeServerSessionInformation) {}

    fn node_session_ready(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let name = ses.peer_name.map(|n| n.name).unwrap_or_default();
        let _ = self.0.send(Event::Ready { id: ses.node_id, name });
    }
}

/// A running cluster link: the `NodeServer`, the `ClusterLink` actor and the keeper task.
pub struct Cluster {
    /// The shared sending side.
    pub links: Arc<Links>,
    server: ActorRef<NodeServerMessage>,
    link: ActorRef<LinkMsg>,
    keeper: tokio::task::JoinHandle<()>,
    sender: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Start node `me`'s side of the cluster: listen on its `cluster_addr`, dial the peers it
    /// dials, deliver to `node`.
    pub async fn start(
        config: &Config,
        me: &NodeName,
        links: Arc<Links>,
        node: ActorRef<NodeMsg>,
        inbox: Arc<PeerInbox>,
    ) -> Result<Cluster, crate::RuntimeError> {
        let spawn_err = |what: &str, e: String| crate::RuntimeError::Spawn(format!("{what}: {e}"));
        let own = config.require_node(me)?;
        let listen: SocketAddr = own
            .cluster_addr
            .parse()
            .map_err(|e| spawn_err("cluster_addr", format!("{:?} is not IP:PORT ({e})", own.cluster_addr)))?;
        let server = NodeServer::new(
            listen.port(),
            config.cluster.cookie.clone(),
            me.to_string(),
            "roster".to_owned(),
            None,
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(listen.ip());
        let (server, _) =
            Actor::spawn(None, server, ()).await.map_err(|e| spawn_err("cluster NodeServer", e.to_string()))?;
        let (link, _) =
            Actor::spawn(None, ClusterLink, ClusterLinkArgs { links: links.clone(), node: node.clone(), inbox })
                .await
                .map_err(|e| spawn_err("ClusterLink", e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let subscription = Box::new(Subscription(tx.clone()));
        server
            .cast(NodeServerMessage::SubscribeToEvents { id: "roster.link".into(), subscription })
            .map_err(|e| spawn_err("cluster events", e.to_string()))?;
        let dial: HashMap<NodeName, String> = {
            let state = lock(&links.state);
            config
                .cluster
                .nodes
                .iter()
                .filter(|n| state.get(&n.name).is_some_and(|l| l.dialer))
                .map(|n| (n.name.clone(), n.cluster_addr.clone()))
                .collect()
        };
        let handshake = Duration::from_millis(config.cluster.heartbeat_timeout_ms.max(1000) * 2);
        let keeper = Keeper {
            links: links.clone(),
            node,
            server: server.clone(),
            events: tx,
            sessions: HashMap::new(),
            dials: dial
                .into_iter()
                .map(|(peer, addr)| {
                    let d = Dial { addr, next: Instant::now(), backoff: FIRST_BACKOFF, in_flight: false, opened: None };
                    (peer, d)
                })
                .collect(),
            handshake,
        };
        let keeper = tokio::spawn(keeper.run(rx));
        let sender_links = links.clone();
        let sender = tokio::spawn(async move {
            loop {
                sender_links.wake.notified().await;
                sender_links.transmit();
            }
        });
        tracing::info!(node = %me, listen = %listen, "cluster link listening");
        Ok(Cluster { links, server, link, keeper, sender })
    }

    /// Stop: close every session (peers notice at once) and stop dialing.
    pub fn stop(&self) {
        self.keeper.abort();
        self.sender.abort();
        ractor::pg::leave(group_of(&self.links.me), vec![self.link.get_cell()]);
        self.link.stop(None);
        self.server.stop(Some("node shutdown".into()));
    }
}

struct Session {
    name: Option<NodeName>,
    addr: String,
    outgoing: bool,
    actor: ActorRef<NodeSessionMessage>,
}

struct Dial {
    addr: String,
    next: Instant,
    backoff: Duration,
    in_flight: bool,
    /// When a dial's TCP connection opened, waiting for the handshake.
    opened: Option<Instant>,
}

/// Tracks sessions from the `NodeServer`'s events and dials the peers this node dials.
struct Keeper {
    links: Arc<Links>,
    node: ActorRef<NodeMsg>,
    server: ActorRef<NodeServerMessage>,
    events: mpsc::UnboundedSender<Event>,
    sessions: HashMap<u64, Session>,
    dials: HashMap<NodeName, Dial>,
    handshake: Duration,
}

impl Keeper {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        let mut check = tokio::time::interval(DIAL_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.event(ev),
                    None => return,
                },
                _ = check.tick() => self.dial_due(),
            }
        }
    }

    fn up(&self, peer: &NodeName) -> bool {
        lock(&self.links.state).get(peer).is_some_and(|l| l.up)
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Opened { id, addr, outgoing, session } => {
                self.sessions.insert(id, Session { name: None, addr, outgoing, actor: session });
            }
            Event::Ready { id, name } => {
                // ractor_cluster names a node `name@host`.
                let peer = NodeName::from(name.split('@').next().unwrap_or_default());
                if !self.links.peers.contains(&peer) {
                    tracing::warn!(peer = %name, "a node that is not in the config connected: closing its session");
                    if let Some(s) = self.sessions.remove(&id) {
                        s.actor.stop(Some("not a configured peer".into()));
                    }
                    return;
                }
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.name = Some(peer.clone());
                }
                if let Some(d) = self.dials.get_mut(&peer) {
                    d.backoff = FIRST_BACKOFF;
                    d.opened = None;
                }
                if self.links.set_up(&peer, true) {
                    tracing::info!(peer = %peer, "cluster link up");
                }
            }
            Event::Closed { id } => {
                let Some(s) = self.sessions.remove(&id) else { return };
                let Some(peer) = s.name else { return };
                let other = self.sessions.values().any(|o| o.name.as_ref() == Some(&peer));
                if !other && self.links.set_up(&peer, false) {
                    tracing::warn!(peer = %peer, "cluster link down (session closed)");
                    let _ = self.node.cast(NodeMsg::LinkDown(peer.clone()));
                }
                if let Some(d) = self.dials.get_mut(&peer) {
                    d.next = Instant::now();
                    d.opened = None;
                }
            }
            Event::Dialed { peer, ok } => {
                let Some(d) = self.dials.get_mut(&peer) else { return };
                d.in_flight = false;
                if ok {
                    d.opened = Some(Instant::now());
                } else {
                    self.links.counters.dial_failures.fetch_add(1, Ordering::Relaxed);
                    d.next = Instant::now() + d.backoff;
                    d.backoff = (d.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn dial_due(&mut self) {
        let now = Instant::now();
        let peers: Vec<NodeName> = self.dials.keys().cloned().collect();
        for peer in peers {
            if self.up(&peer) {
                continue;
            }
            let handshake = self.handshake;
            let d = self.dials.get_mut(&peer).expect("dialed peer");
            if d.in_flight || now < d.next {
                continue;
            }
            if let Some(opened) = d.opened {
                if now.duration_since(opened) < handshake {
                    continue;
                }
                // Connected but never authenticated (a hung peer or link): drop the session
                // and dial again.
                d.opened = None;
                d.next = now + d.backoff;
                d.backoff = (d.backoff * 2).min(MAX_BACKOFF);
                self.links.counters.dial_failures.fetch_add(1, Ordering::Relaxed);
                let addr = d.addr.clone();
                let stale: Vec<u64> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.outgoing && s.name.is_none() && same_addr(&s.addr, &addr))
                    .map(|(id, _)| *id)
                    .collect();
                for id in stale {
                    if let Some(s) = self.sessions.remove(&id) {
                        tracing::info!(peer = %peer, "no handshake from the peer: dropping the session");
                        s.actor.stop(Some("handshake timed out".into()));
                    }
                }
                continue;
            }
            d.in_flight = true;
            let (server, events, addr) = (self.server.clone(), self.events.clone(), d.addr.clone());
            tokio::spawn(async move {
                let result =
                    tokio::time::timeout(CONNECT_TIMEOUT, ractor_cluster::client_connect(&server, addr.as_str())).await;
                let ok = matches!(result, Ok(Ok(())));
                if !ok {
                    tracing::debug!(peer = %peer, addr = %addr, "dial failed");
                }
                let _ = events.send(Event::Dialed { peer, ok });
            });
        }
    }
}

/// Whether a session's peer address is the dialed address (both `IP:PORT` on loopback).
fn same_addr(session: &str, dialed: &str) -> bool {
    match (session.parse::<SocketAddr>(), dialed.parse::<SocketAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => session == dialed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused_by_decoding() {
        let env = Envelope {
            from: "a".into(),
            to: "b".into(),
            fingerprint: 7,
            body: vec![
                Wire::Broadcast {
                    topic: "room:1".into(),
                    from: "u1".into(),
                    event: "shout".into(),
                    body: MetaValue::Str("hi".into()),
                },
                Wire::Flush(3),
            ],
        };
        let bytes = codec::encode(&env).unwrap();
        let back: Envelope = codec::decode(&bytes).unwrap();
        assert_eq!((back.from.as_str(), back.to.as_str(), back.fingerprint), ("a", "b", 7));
        assert!(matches!(back.body[..], [Wire::Broadcast { ref event, .. }, Wire::Flush(3)] if event == "shout"));
        assert!(codec::decode::<Envelope>(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn the_node_listed_first_dials() {
        let config = Config::from_toml_str(include_str!("../../../cluster.toml")).unwrap();
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
}
