//! `NodeActor`: runs this node's `NodeState` (the core's one machine per node: leases, homes
//! and their user slots, the gateway side, the presence replica) and carries out its effects.
//! On one node it plays DESIGN.md's Registry and LeaseKeeper; between nodes its peer messages
//! go through the cluster link.
//!
//! ```text
//! NodeSupervisor
//! ├── NodeActor   ◀── here: NodeState, epoch store, published presence lists
//! ├── PresenceShard(0..k)  ◀── changes (with each topic's list), subscriptions, broadcasts
//! └── Gateway ──── SocketClosed ──▶ NodeActor
//!     └── connection ──── joins, leaves, pushes ──▶ NodeActor ──── answers ──▶ its queue
//! ```
//!
//! Messages to this node itself (a join whose home is this node) are handled in the same
//! turn, so a local join costs no mailbox round trip and goes through exactly the code a
//! remote one does. Effects run in order; an epoch is stored and synced before the grant that
//! uses it is sent, and if it cannot be stored the actor stops rather than risk two holders.

use crate::client_inbox::{ClientInbox, CloseOnDrop};
use crate::clock::Clock;
use crate::cluster::Links;
use crate::connection::{ChannelState, ConnShared, JoinReply, Joined};
use crate::epoch_store::EpochStore;
use crate::error::JoinError;
use crate::outbound::{deliver, ChannelId, Outbound};
use crate::presence_shard::{ShardMsg, Subscriber};
use crate::record_log::RecordLog;
use crate::wake_timer::WakeTimer;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use roster_core::{
    shard_of, ClientEvent, Effect, Input, Millis, NodeBoot, NodeCounts, NodeName, NodeState, PartitionId, PeerMsg,
    PeerView, PresenceChanges, PresenceList, SlotToken, SocketId, SubscriberId, Topic, UserId,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::oneshot;

/// Presence lists published for readers, per topic: readers never wait behind the node
/// actor's writes. Refreshed at most once per `diff_ms` per changed topic.
pub type Published = Arc<RwLock<HashMap<Topic, Arc<PresenceList>>>>;

/// Messages from other nodes, waiting for the node actor *ahead of its mailbox*: before each
/// mailbox message the actor first handles every waiting peer message and any timer that is
/// due. A burst of client joins (thousands queued in the mailbox) thus never delays heartbeats
/// and their echoes, which would let horizons pass and revoke live slots with
/// `node_isolated`, or make peers declare this node down.
#[derive(Default)]
pub struct PeerInbox {
    queue: Mutex<VecDeque<(NodeName, PeerMsg)>>,
}

impl PeerInbox {
    /// Queue a message; returns whether the queue was empty (the actor needs a wake-up).
    pub fn push(&self, from: NodeName, msg: PeerMsg) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back((from, msg));
        q.len() == 1
    }

    fn take(&self) -> VecDeque<(NodeName, PeerMsg)> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A node's view for `/cluster` and `/ready`.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStatus {
    /// This node's name.
    pub name: NodeName,
    /// Its incarnation (name and boot id).
    pub incarnation: String,
    /// It admits joins now.
    pub ready: bool,
    /// Every partition has a home it hears now.
    pub all_homed: bool,
    /// Leases held: partition, epoch, and milliseconds until expiry.
    pub leases: Vec<(PartitionId, u64, Millis)>,
    /// What it holds.
    pub counts: NodeCounts,
    /// Every other configured node as this one sees it (heartbeats).
    pub peers: Vec<PeerView>,
}

/// Messages to the node actor.
#[derive(RactorMessage)]
pub(crate) enum NodeMsg {
    /// A timer: run whatever is due.
    Tick,
    /// Publish the presence lists of changed topics.
    Publish,
    /// A client input from a connection (a join's answer goes where its connection keeps it).
    Input(Input),
    /// A new connection, before it can join anything.
    Register {
        /// Its socket.
        socket: SocketId,
        /// What the connection shares with the node.
        conn: Arc<ConnShared>,
    },
    /// A connection leaves a topic cleanly.
    Leave {
        /// Its socket.
        socket: SocketId,
        /// The topic.
        topic: Topic,
        /// The channel, if the join had been granted.
        channel: Option<ChannelId>,
    },
    /// A connection ended (reported once: by the Gateway, the connection, or its queue).
    SocketClosed {
        /// Its socket.
        socket: SocketId,
        /// A clean close (no reservation).
        clean: bool,
    },
    /// A signed-in user's push, for the topic's subscribers.
    Broadcast {
        /// The topic.
        topic: Topic,
        /// The sender.
        from: UserId,
        /// The event.
        event: String,
        /// The payload.
        body: roster_core::MetaValue,
        /// The sending socket.
        except: Option<SocketId>,
    },
    /// Messages from other nodes wait in the [`PeerInbox`] (the cluster link just filled it).
    PeerWake,
    /// Messages wait in the [`ClientInbox`] (the first of them was just sent).
    ClientWake,
    /// The transport closed its session to a peer.
    LinkDown(NodeName),
    /// Subscribe an embedding subscription to a topic (its list, then its diffs).
    Subscribe {
        /// The topic.
        topic: Topic,
        /// The subscriber (it knows its subscription's id).
        sub: Subscriber,
    },
    /// End an embedding subscription.
    Unsubscribe {
        /// The topic.
        topic: Topic,
        /// The subscription.
        id: SubscriberId,
    },
    /// Does this token still hold the slot? The core asks the user's home (here or a peer);
    /// `None`: no home answered.
    Validate {
        /// The user.
        user: UserId,
        /// A topic of the scope.
        topic: Topic,
        /// The token.
        token: SlotToken,
        /// The answer.
        reply: RpcReplyPort<Option<bool>>,
    },
    /// A forwarded validation went unanswered.
    ValidateTimeout(u64),
    /// Revoke a user's slots (all, or one topic's scope).
    Kick {
        /// The user.
        user: UserId,
        /// One topic, or all.
        topic: Option<Topic>,
        /// Shown to the client.
        reason: String,
    },
    /// A topic's list as the replica holds it now (waits behind writes; readers that must not
    /// wait use the published lists).
    List {
        /// The topic.
        topic: Topic,
        /// The list.
        reply: RpcReplyPort<Arc<PresenceList>>,
    },
    /// What the node holds.
    Status(RpcReplyPort<NodeStatus>),
    /// Graceful shutdown: release slots and leases at once, close every connection.
    Shutdown(RpcReplyPort<()>),
    /// Graceful shutdown, once the releases are out: ask every peer to confirm flush `id`
    /// (the answers go to the cluster link's waiter).
    Flush(u64),
}

/// What the node actor starts with.
pub(crate) struct NodeArgs {
    /// The core's boot values.
    pub boot: NodeBoot,
    /// The epoch store.
    pub store: EpochStore,
    /// The node's clock.
    pub clock: Clock,
    /// The presence shards.
    pub shards: Vec<ActorRef<ShardMsg>>,
    /// Published presence lists.
    pub published: Published,
    /// The cluster link's sending side; `None` on a single node.
    pub links: Option<Arc<Links>>,
    /// Whether the node admits joins (updated on every tick).
    pub ready: tokio::sync::watch::Sender<bool>,
    /// Where records are written, if anywhere.
    pub records: Option<RecordLog>,
    /// Messages from peers (filled by the cluster link).
    pub inbox: Arc<PeerInbox>,
    /// The user actors' table and answers.
    pub(crate) users: Arc<crate::users::host::Shared>,
    /// Where subscription ids come from (shared with the embedding API).
    pub subscriptions: Arc<AtomicU64>,
    /// What connections, the embedding API and activations send.
    pub clients: Arc<ClientInbox>,
}

/// The node actor. See the module documentation.
pub(crate) struct NodeActor;

/// The node actor's state.
pub(crate) struct NodeActorState {
    core: NodeState,
    me: NodeName,
    store: EpochStore,
    clock: Clock,
    shards: Vec<ActorRef<ShardMsg>>,
    published: Published,
    links: Option<Arc<Links>>,
    conns: foldhash::HashMap<SocketId, Arc<ConnShared>>,
    subscriptions: Arc<AtomicU64>,
    dirty: foldhash::HashSet<Topic>,
    publish_scheduled: bool,
    tick_at: Option<Millis>,
    /// Sends `Tick` at `tick_at` (one wake-up in flight, moved when `tick_at` moves).
    timer: WakeTimer,
    ready: tokio::sync::watch::Sender<bool>,
    records: Option<RecordLog>,
    inbox: Arc<PeerInbox>,
    shutting_down: bool,
    /// Validations waiting for their answer, by call id.
    validations: HashMap<u64, RpcReplyPort<Option<bool>>>,
    next_validation: u64,
    /// User actors: the core decides, this carries it out.
    users: Arc<crate::users::host::Shared>,
    clients: Arc<ClientInbox>,
    /// The batch being handled (its room is reused).
    batch: Vec<NodeMsg>,
    /// What each shard is sent at the end of this turn, in order: one message per shard per turn.
    to_shards: Vec<Vec<ShardMsg>>,
    /// Topics whose list the shards get at the end of this turn.
    listed: foldhash::HashSet<Topic>,
    /// Join answers to waiting callers, sent at the end of this turn (see `flush_shards`).
    callers: Vec<CallerAnswer>,
    /// `run`'s inputs still to feed (one and the messages it sends this node) and the effects
    /// of the one being carried out: their room is reused from input to input.
    inputs: VecDeque<Input>,
    effects: Vec<Effect>,
    _close: CloseOnDrop,
}

/// A join's answer to a caller that awaits it (an embedded `Connection::join`).
type CallerAnswer = (oneshot::Sender<Result<Joined, JoinError>>, Result<Joined, JoinError>);

/// Send a join's answer where its connection wants it: to the caller (kept in `callers` until
/// the end of the turn), or into its queue (in order with everything else it is sent).
fn answer(
    callers: &mut Vec<CallerAnswer>,
    conn: &ConnShared,
    topic: &Topic,
    reply: JoinReply,
    result: Result<Joined, JoinError>,
) {
    match reply {
        Some(tx) => callers.push((tx, result)),
        None => {
            let item = match result {
                Ok(Joined { token, channel }) => Outbound::Joined { topic: topic.clone(), channel, token },
                Err(error) => Outbound::JoinFailed { topic: topic.clone(), error },
            };
            deliver(conn, item);
        }
    }
}

/// The most client messages the node actor handles before it yields its thread.
const BATCH: usize = 128;

/// How many inputs of one turn's cascade (an input and the messages it sends this node) share
/// one reading of the clock: a join on one node is three (the join, the home's request, the
/// grant), and one reading serves at most eight inputs' work.
const READ_CLOCK_EVERY: usize = 8;

/// How long a validation forwarded to the user's home may take.
const VALIDATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The most entries a turn's building lists (each shard's messages, the listed topics) keep
/// room for between turns: a batch of [`BATCH`] joins queues about three messages each.
const KEPT_TURN_ROOM: usize = 4 * BATCH;

/// What `buf` holds, moved into a list of exactly its length; `buf` keeps its room (at most
/// `keep` entries) for the next turn. A turn's list built by pushes into a fresh vector grew
/// by doubling every turn, on the node actor's thread, among the core's long-lived records:
/// the blocks it outgrew, freed at once, and the list itself, freed by the shard, stayed as
/// holes in that thread's heap after a burst of joins.
fn take_exact<T>(buf: &mut Vec<T>, keep: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(buf.len());
    out.append(buf);
    shrink_vec(buf, keep);
    out
}

fn shrink_vec<T>(buf: &mut Vec<T>, keep: usize) {
    if buf.capacity() > keep {
        buf.shrink_to(keep);
    }
}

fn shrink_kept<T: std::hash::Hash + Eq>(set: &mut foldhash::HashSet<T>, keep: usize) {
    if set.capacity() > keep {
        set.shrink_to(keep);
    }
}

impl NodeActorState {
    /// Queue `msg` for the shard of `topic`; it leaves at the end of the turn.
    fn queue_for_shard(&mut self, topic: &Topic, msg: ShardMsg) {
        let i = self.shard_index(topic);
        self.to_shards[i].push(msg);
    }

    fn shard_index(&self, topic: &Topic) -> usize {
        shard_of(topic, self.shards.len() as u32)
    }

    /// The end of a turn: the callers waiting for their joins get their answers, then each
    /// shard gets what the turn queued for it, in one message, ending with the list of every
    /// topic the turn changed or subscribed to.
    ///
    /// The answers wait for the end of the turn because waking a caller's task is the costly
    /// part of answering it: the first wake-up of a turn unparks the other worker thread (a
    /// system call), and while that worker looks for work the rest of the turn's wake-ups
    /// cost no system call. Sent one by one as each join was granted, each one unparked the
    /// worker again (`BENCHMARKS.md`, "Embedded join + leave throughput").
    fn flush_shards(&mut self) {
        self.answer_callers();
        // Drained, not taken: the set keeps its room for the next turn.
        let mut listed = std::mem::take(&mut self.listed);
        for topic in listed.drain() {
            let list = self.list(&topic);
            let i = self.shard_index(&topic);
            self.to_shards[i].push(ShardMsg::Latest { topic, list });
        }
        shrink_kept(&mut listed, KEPT_TURN_ROOM);
        self.listed = listed;
        for (shard, msgs) in self.shards.iter().zip(self.to_shards.iter_mut()) {
            match msgs.len() {
                0 => {}
                1 => {
                    if let Some(msg) = msgs.pop() {
                        let _ = shard.cast(msg);
                    }
                }
                _ => {
                    let _ = shard.cast(ShardMsg::Batch(take_exact(msgs, KEPT_TURN_ROOM)));
                }
            }
        }
    }

    /// Send the answers this turn kept for waiting callers, in the order they were decided.
    fn answer_callers(&mut self) {
        for (tx, result) in self.callers.drain(..) {
            let _ = tx.send(result);
        }
    }

    /// Feed one input and carry out every effect, handling messages to this node in the same
    /// turn.
    fn run(&mut self, input: Input) -> Result<(), ActorProcessingErr> {
        let mut queue = std::mem::take(&mut self.inputs);
        let mut effects = std::mem::take(&mut self.effects);
        queue.push_back(input);
        let done = self.run_queue(&mut queue, &mut effects);
        // Kept for the next input, at most a few dozen places (one input may bring thousands).
        queue.clear();
        queue.shrink_to(16);
        effects.clear();
        effects.shrink_to(64);
        self.inputs = queue;
        self.effects = effects;
        done
    }

    fn run_queue(&mut self, queue: &mut VecDeque<Input>, effects: &mut Vec<Effect>) -> Result<(), ActorProcessingErr> {
        // One reading of the clock for the input and the first few messages it sends this
        // node, handled right after it in the same turn (a join's request to its home here,
        // the grant back): they happen at one instant, as over a link with no delay. A long
        // cascade (a recovery scan's replies) reads it again every `READ_CLOCK_EVERY` inputs.
        let mut instant = std::time::Instant::now();
        let mut now = self.clock.at(instant);
        let mut handled = 0usize;
        while let Some(input) = queue.pop_front() {
            if handled > 0 && handled.is_multiple_of(READ_CLOCK_EVERY) {
                instant = std::time::Instant::now();
                now = self.clock.at(instant);
            }
            handled += 1;
            self.core.handle_into(input, now, effects);
            for effect in effects.drain(..) {
                match effect {
                    Effect::Send { to, msg } if to == self.me => {
                        queue.push_back(Input::Receive { from: to, msg });
                    }
                    Effect::Send { to, msg } => match &self.links {
                        Some(links) => links.send_peer(&to, msg),
                        None => tracing::debug!(peer = %to, "no cluster link: message to a peer dropped"),
                    },
                    Effect::PersistEpoch(epoch) => {
                        // Rule 3: stored before the grant that uses it leaves this node.
                        self.store.store(epoch).map_err(|e| {
                            tracing::error!(error = %e, "cannot store the epoch: stopping rather than risk two holders");
                            Box::new(e) as ActorProcessingErr
                        })?;
                    }
                    Effect::Client { socket, topic, event } => self.deliver(socket, topic, event),
                    Effect::PresenceChanged(changes) => self.presence_changed(changes),
                    Effect::User(u) => self.users.execute_at(u, now),
                    Effect::Validated { call, answer } => {
                        if let Some(reply) = self.validations.remove(&call) {
                            let _ = reply.send(answer);
                        }
                    }
                    Effect::Broadcast { topic, user, event, body, except } => {
                        let msg = ShardMsg::Broadcast { topic: topic.clone(), from: user, event, body, except };
                        self.queue_for_shard(&topic, msg);
                    }
                    Effect::Flushed { peer, id } => {
                        if let Some(links) = &self.links {
                            links.flush_acked(id, &peer);
                        }
                    }
                    Effect::Record(r) => {
                        if let Some(log) = &mut self.records {
                            let base = log.base_unix_ns();
                            let at_us = (base > 0).then(|| self.clock.unix_us(instant, base));
                            log.write(&r, at_us);
                        }
                        tracing::debug!(target: "roster::record", record = ?r);
                    }
                }
            }
        }
        Ok(())
    }

    fn deliver(&mut self, socket: SocketId, topic: Topic, event: ClientEvent) {
        if self.shutting_down && event == ClientEvent::Closed {
            return;
        }
        let Some(conn) = self.conns.get(&socket).cloned() else { return };
        match event {
            ClientEvent::Joined { token } => {
                let channel = SubscriberId(self.subscriptions.fetch_add(1, Ordering::Relaxed));
                // `None`: the connection left the topic meanwhile; its leave is on its way.
                let Some(reply) = conn.granted(&topic, channel) else { return };
                // The answer goes out before the subscription starts: the topic's list (at the
                // close of the window this join falls in) follows it in the queue.
                answer(&mut self.callers, &conn, &topic, reply, Ok(Joined { token, channel }));
                let sub = Subscriber::Channel { conn, channel };
                self.listed.insert(topic.clone());
                let i = self.shard_index(&topic);
                self.to_shards[i].push(ShardMsg::Subscribe { topic, sub });
            }
            ClientEvent::JoinFailed { reason } => {
                if let Some(ChannelState::Joining(reply)) = conn.remove(&topic) {
                    answer(&mut self.callers, &conn, &topic, reply, Err(JoinError::from_reason(&reason)));
                }
            }
            ClientEvent::Revoked { reason } => match conn.remove(&topic) {
                Some(ChannelState::Joined(channel)) => {
                    self.unsubscribe(&topic, channel);
                    deliver(&conn, Outbound::Revoked { topic, channel, reason });
                }
                Some(ChannelState::Joining(reply)) => {
                    answer(&mut self.callers, &conn, &topic, reply, Err(JoinError::Closed))
                }
                Some(ChannelState::Leaving) | None => {}
            },
            ClientEvent::Closed => match conn.remove(&topic) {
                Some(ChannelState::Joined(channel)) => {
                    self.unsubscribe(&topic, channel);
                    deliver(&conn, Outbound::Closed { topic, channel });
                }
                Some(ChannelState::Joining(reply)) => {
                    answer(&mut self.callers, &conn, &topic, reply, Err(JoinError::Closed))
                }
                Some(ChannelState::Leaving) | None => {}
            },
        }
    }

    /// The topic's list as the replica holds it now.
    fn list(&self, topic: &Topic) -> PresenceList {
        self.core.presence().list(topic, self.core.presence_view(topic))
    }

    fn unsubscribe(&mut self, topic: &Topic, id: SubscriberId) {
        self.queue_for_shard(topic, ShardMsg::Unsubscribe { topic: topic.clone(), id });
    }

    /// A connection ended: its subscriptions stop, then the core untracks and releases.
    fn socket_closed(&mut self, socket: SocketId, clean: bool) -> Result<(), ActorProcessingErr> {
        let Some(conn) = self.conns.remove(&socket) else { return Ok(()) };
        for (topic, state) in conn.take_channels() {
            if let ChannelState::Joined(channel) = state {
                self.unsubscribe(&topic, channel);
            }
        }
        self.run(Input::SocketClosed { socket, clean })
    }

    fn presence_changed(&mut self, changes: PresenceChanges) {
        for (topic, c) in changes {
            if !self.dirty.contains(&topic) {
                self.dirty.insert(topic.clone());
            }
            if !self.listed.contains(&topic) {
                self.listed.insert(topic.clone());
            }
            let i = self.shard_index(&topic);
            self.to_shards[i].push(ShardMsg::Change { topic, changes: c });
        }
    }

    fn publish(&mut self) {
        let mut published = self.published.write().unwrap_or_else(|e| e.into_inner());
        for topic in self.dirty.drain() {
            let view = self.core.presence_view(&topic);
            let list = self.core.presence().list(&topic, view);
            if list.is_empty() {
                published.remove(&topic);
            } else {
                published.insert(topic, Arc::new(list));
            }
        }
    }

    /// Before a mailbox message: every waiting peer message, then the timers if due.
    fn catch_up(&mut self) -> Result<(), ActorProcessingErr> {
        for (from, msg) in self.inbox.take() {
            self.run(Input::Receive { from, msg })?;
        }
        if self.tick_at.is_some_and(|t| self.clock.now() >= t) {
            self.tick()?;
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), ActorProcessingErr> {
        self.tick_at = None;
        self.run(Input::Tick)?;
        let ready = self.core.is_ready(self.clock.now());
        self.ready.send_if_modified(|r| std::mem::replace(r, ready) != ready);
        Ok(())
    }

    fn schedule(&mut self, myself: &ActorRef<NodeMsg>) {
        let wake = self.core.next_wake();
        if self.tick_at.is_none_or(|t| wake < t) {
            self.tick_at = Some(wake);
            self.timer.set(wake);
        }
        if !self.dirty.is_empty() && !self.publish_scheduled {
            self.publish_scheduled = true;
            let diff_ms = self.core.config().presence.diff_ms;
            myself.send_after(std::time::Duration::from_millis(diff_ms), || NodeMsg::Publish);
        }
    }
}

impl Actor for NodeActor {
    type Msg = NodeMsg;
    type State = NodeActorState;
    type Arguments = NodeArgs;

    async fn pre_start(&self, myself: ActorRef<NodeMsg>, args: NodeArgs) -> Result<NodeActorState, ActorProcessingErr> {
        let me = args.boot.me.node.clone();
        let mut core = NodeState::new(args.boot, args.clock.now());
        core.set_user_actors(args.users.enabled());
        core.set_activation_sessions(args.users.keeps_sessions());
        core.set_session_events(args.users.session_events());
        args.users.set_inbox(args.clients.clone());
        let shard_count = args.shards.len();
        let mut st = NodeActorState {
            core,
            me,
            store: args.store,
            clock: args.clock,
            shards: args.shards,
            published: args.published,
            links: args.links,
            conns: Default::default(),
            dirty: Default::default(),
            publish_scheduled: false,
            tick_at: None,
            timer: WakeTimer::start(args.clock, myself.clone(), || NodeMsg::Tick),
            ready: args.ready,
            records: args.records,
            inbox: args.inbox,
            subscriptions: args.subscriptions,
            shutting_down: false,
            validations: HashMap::new(),
            next_validation: 1,
            users: args.users,
            _close: CloseOnDrop(args.clients.clone()),
            clients: args.clients,
            batch: Vec::new(),
            to_shards: (0..shard_count).map(|_| Vec::new()).collect(),
            listed: Default::default(),
            callers: Vec::new(),
            inputs: VecDeque::new(),
            effects: Vec::new(),
        };
        st.run(Input::Tick)?;
        st.flush_shards();
        st.schedule(&myself);
        st.clients.set_actor(myself);
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        st: &mut NodeActorState,
    ) -> Result<(), ActorProcessingErr> {
        // Whatever waits in the client inbox was sent before this message: it goes first, as
        // one batch (`ClientWake` brings nothing else).
        let shutdown = matches!(msg, NodeMsg::Shutdown(_));
        loop {
            let more = st.clients_batch(&myself);
            st.flush_shards();
            if !more? {
                break;
            }
            // A long burst: let the other tasks on this thread (the cluster link's sessions,
            // heartbeats, the sockets) run between batches.
            st.schedule(&myself);
            tokio::task::yield_now().await;
        }
        let result = match msg {
            NodeMsg::ClientWake => Ok(()),
            msg => st.message(&myself, msg),
        };
        st.flush_shards();
        result?;
        if !shutdown {
            st.schedule(&myself);
        }
        Ok(())
    }
}

impl NodeActorState {
    /// Handle up to [`BATCH`] messages waiting in the client inbox, oldest first; whether
    /// more wait.
    fn clients_batch(&mut self, myself: &ActorRef<NodeMsg>) -> Result<bool, ActorProcessingErr> {
        let mut batch = std::mem::take(&mut self.batch);
        let more = self.clients.take(BATCH, &mut batch);
        let mut result = Ok(more);
        for msg in batch.drain(..) {
            if result.is_ok() {
                result = self.message(myself, msg).map(|()| more);
            }
        }
        self.batch = batch;
        result
    }

    /// One message, after the peers' messages and the timers that are due.
    fn message(&mut self, myself: &ActorRef<NodeMsg>, msg: NodeMsg) -> Result<(), ActorProcessingErr> {
        let st = self;
        st.catch_up()?;
        match msg {
            // Sent at `tick_at`: `catch_up` has just run the tick (a tick that another turn
            // ran first moved `tick_at`, and this one finds nothing due).
            NodeMsg::Tick => {}
            NodeMsg::PeerWake | NodeMsg::ClientWake => {}
            NodeMsg::Publish => {
                st.publish_scheduled = false;
                st.publish();
            }
            NodeMsg::Input(input) => {
                // A connection whose end was reported already (its queue overflowed, say)
                // may still send something: the node has forgotten it.
                let socket = match &input {
                    Input::Join(j) => Some(j.socket),
                    Input::Leave { socket, .. } | Input::UpdateMeta { socket, .. } => Some(*socket),
                    _ => None,
                };
                if socket.is_none_or(|s| st.conns.contains_key(&s)) {
                    st.run(input)?
                }
            }
            NodeMsg::Register { socket, conn } => {
                st.conns.insert(socket, conn);
            }
            NodeMsg::Leave { socket, topic, channel } => {
                if let Some(conn) = st.conns.get(&socket).cloned() {
                    match channel {
                        Some(channel) => st.unsubscribe(&topic, channel),
                        // Its join was still waiting: once this leave has run, no answer to
                        // that join will come.
                        None => conn.left(&topic),
                    }
                    st.run(Input::Leave { socket, topic })?;
                }
            }
            NodeMsg::SocketClosed { socket, clean } => st.socket_closed(socket, clean)?,
            NodeMsg::Broadcast { topic, from, event, body, except } => {
                st.run(Input::Broadcast { except, topic, user: from, event, body })?
            }
            NodeMsg::LinkDown(peer) => st.run(Input::LinkDown { peer })?,
            NodeMsg::Subscribe { topic, sub } => {
                st.listed.insert(topic.clone());
                let i = st.shard_index(&topic);
                st.to_shards[i].push(ShardMsg::Subscribe { topic, sub });
            }
            NodeMsg::Unsubscribe { topic, id } => st.unsubscribe(&topic, id),
            NodeMsg::Validate { user, topic, token, reply } => {
                let call = st.next_validation;
                st.next_validation += 1;
                st.validations.insert(call, reply);
                st.run(Input::Validate { call, user, topic, token })?;
                if st.validations.contains_key(&call) {
                    // Forwarded to the user's home: its answer may never come.
                    myself.send_after(VALIDATE_TIMEOUT, move || NodeMsg::ValidateTimeout(call));
                }
            }
            NodeMsg::ValidateTimeout(id) => {
                if let Some(reply) = st.validations.remove(&id) {
                    let _ = reply.send(None);
                }
            }
            NodeMsg::Kick { user, topic, reason } => st.run(Input::Kick { user, topic, reason })?,
            NodeMsg::List { topic, reply } => {
                let _ = reply.send(Arc::new(st.list(&topic)));
            }
            NodeMsg::Status(reply) => {
                let now = st.clock.now();
                let leases = st
                    .core
                    .leases_held(now)
                    .into_iter()
                    .map(|(p, e, until)| (p, e, until.saturating_sub(now)))
                    .collect();
                let _ = reply.send(NodeStatus {
                    name: st.me.clone(),
                    incarnation: st.core.incarnation().to_string(),
                    ready: st.core.is_ready(now),
                    all_homed: st.core.all_homed(now),
                    leases,
                    counts: st.core.counts(),
                    peers: st.core.peers_view(now),
                });
            }
            NodeMsg::Shutdown(reply) => {
                // The channels end with the socket (1012, "come back"), not one by one: a
                // `phx_close` would tell the phoenix client the channel is over for good, and
                // it would reconnect to another node and rejoin nothing.
                st.shutting_down = true;
                st.run(Input::Shutdown)?;
                st.ready.send_replace(false);
                for conn in st.conns.values() {
                    conn.shut_down();
                }
                st.publish();
                st.answer_callers();
                let _ = reply.send(());
            }
            // After the shutdown (the core has stopped but still sends its flush).
            NodeMsg::Flush(id) => {
                st.run(Input::Flush { id })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turns_list_is_sent_exactly_sized_in_order_and_its_room_is_kept_up_to_the_bound() {
        let mut buf: Vec<u32> = Vec::new();
        buf.extend(0..100);
        let grown = buf.capacity();
        let sent = take_exact(&mut buf, 512);
        assert_eq!(sent, (0..100).collect::<Vec<_>>(), "every entry, in order");
        assert_eq!(sent.capacity(), 100, "the list sent is exactly its length");
        assert!(buf.is_empty());
        assert_eq!(buf.capacity(), grown, "the building list keeps its room for the next turn");

        buf.extend(0..1000);
        let sent = take_exact(&mut buf, 512);
        assert_eq!((sent.len(), sent.capacity()), (1000, 1000));
        assert!(buf.is_empty() && buf.capacity() <= 512, "kept room for {}", buf.capacity());
    }

    #[test]
    fn a_drained_set_keeps_at_most_its_bound() {
        let mut set: foldhash::HashSet<u32> = Default::default();
        set.extend(0..2000);
        set.drain().for_each(drop);
        shrink_kept(&mut set, 512);
        assert!(set.is_empty() && set.capacity() < 2000 && set.capacity() >= 512, "room {}", set.capacity());
    }
}
