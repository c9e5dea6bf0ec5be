//! The embedding API: start a [`Node`], [`Node::join`] users to topics and get [`Session`]s,
//! read and watch presence ([`Node::presence`]), validate fencing tokens, kick, shut down.
//! For sockets that join several topics (the WebSocket gateway), [`Node::connect`] gives a
//! [`Connection`].
//!
//! ```text
//! NodeSupervisor        ◀── started by Node::start, stopped by Node::shutdown
//! ├── PresenceShard(0..k)
//! ├── NodeActor
//! └── Gateway (a task)      watches every connection task (Node::spawn_connection)
//!     └── connection        one per Connection / Session / socket
//! ```

use crate::client_inbox::ClientInbox;
use crate::clock::Clock;
use crate::cluster::{Cluster, LinkStatus, Links};
use crate::connection::{ConnEvent, ConnParts, ConnShared, Connection, Joined};
use crate::epoch_store::EpochStore;
use crate::error::{JoinError, PushError, RuntimeError};
use crate::gateway::Gateway;
use crate::node_actor::{NodeActor, NodeArgs, NodeMsg, NodeStatus, PeerInbox, Published};
use crate::outbound::PushEncoder;
use crate::presence_shard::{FeedSub, PresenceFeed, PresenceShard, ShardArgs, ShardMsg, Subscriber};
use crate::record_log::RecordLog;
use crate::users::{self, host::Shared, KeepSessions, UserBehaviour, UserRef};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;
use roster_core::{
    Config, Incarnation, Meta, MetaValue, NodeBoot, NodeName, PresenceList, Role, SlotToken, SocketId, SubscriberId,
    TabId, Topic, UserId,
};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};

/// How to start a node.
#[derive(Clone)]
pub struct NodeOptions {
    /// The cluster configuration (validated at start).
    pub config: Config,
    /// Which of its nodes this process is.
    pub node: NodeName,
    /// Where the epoch file lives; default: the config's `cluster.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Write every record (grants, horizons, ends, lease changes) to this file as JSON lines
    /// in Unix milliseconds (see `RecordLog`); off by default.
    pub records: Option<PathBuf>,
    /// The user actors' behaviour (see [`NodeOptions::users`]): [`KeepSessions`] unless set;
    /// `None` runs no user actors ([`NodeOptions::without_user_actors`]).
    pub(crate) user_actors: Option<Arc<dyn users::host::Spawner>>,
    /// Encodes every shared push (a window's `presence_diff`, a `presence_state`, a
    /// broadcast) once, for a gateway that writes them to sockets ([`Push::encoded`]); none by
    /// default (embedded sessions read the values).
    ///
    /// [`Push::encoded`]: crate::Push::encoded
    pub encoder: Option<Arc<dyn PushEncoder>>,
}

impl NodeOptions {
    /// One node with the built-in defaults (`Config::single_node`).
    pub fn single() -> Self {
        Self::for_node(Config::single_node(), NodeName::from("local"))
    }

    /// Node `node` of `config`.
    pub fn for_node(config: Config, node: NodeName) -> Self {
        Self {
            config,
            node,
            data_dir: None,
            records: None,
            encoder: None,
            user_actors: Some(Arc::new(users::Behaviour(Arc::new(KeepSessions)))),
        }
    }

    /// Run `behaviour` for every user with a live session, on the user's home (see
    /// [`UserBehaviour`]; reach a user with [`Node::user`]).
    pub fn users<B: UserBehaviour>(mut self, behaviour: B) -> Self {
        self.user_actors = Some(Arc::new(users::Behaviour(Arc::new(behaviour))));
        self
    }

    /// Run no user actors at all: no activation is decided, spawned or recorded
    /// ([`Node::user`] answers [`UserError::NotActive`](crate::UserError::NotActive) for
    /// everyone). What a user actor costs is measured against this (`BENCHMARKS.md`).
    pub fn without_user_actors(mut self) -> Self {
        self.user_actors = None;
        self
    }

    /// Write the record log to `path`.
    pub fn records(mut self, path: impl Into<PathBuf>) -> Self {
        self.records = Some(path.into());
        self
    }

    /// Encode shared pushes with `encoder` (see [`NodeOptions::encoder`]).
    pub fn encoder(mut self, encoder: Arc<dyn PushEncoder>) -> Self {
        self.encoder = Some(encoder);
        self
    }

    /// Keep the epoch file under `dir` instead of the config's `data_dir`.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }
}

/// A join through the embedding API: who, where, which tab, with what meta.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JoinRequest {
    /// The signed-in user, or `None` for an anonymous viewer.
    pub user: Option<UserId>,
    /// Their role (for `exempt_roles`).
    pub role: Option<Role>,
    /// The topic.
    pub topic: Topic,
    /// The browser tab: the same tab joining again from a new session resumes.
    pub tab_id: Option<TabId>,
    /// The user's meta, shown in presence.
    pub meta: Meta,
}

impl JoinRequest {
    /// A signed-in `user` joining `topic`.
    pub fn user(user: impl Into<UserId>, topic: impl Into<Topic>) -> Self {
        Self { user: Some(user.into()), topic: topic.into(), ..Self::default() }
    }

    /// An anonymous viewer of `topic`.
    pub fn anonymous(topic: impl Into<Topic>) -> Self {
        Self { topic: topic.into(), ..Self::default() }
    }

    /// With a tab id.
    pub fn tab(mut self, tab: impl Into<TabId>) -> Self {
        self.tab_id = Some(tab.into());
        self
    }

    /// With a role.
    pub fn role(mut self, role: impl Into<Role>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// With one meta entry.
    pub fn meta(mut self, key: &str, value: MetaValue) -> Self {
        self.meta.insert(key.to_owned(), value);
        self
    }
}

/// What a node holds (from [`Node::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `(user, scope)` slot states on this node's homes: users with live sessions.
    pub live_users: usize,
    /// Open connections (sessions and sockets).
    pub sessions: usize,
    /// Slots held by this node's connections.
    pub slots: usize,
    /// Presence entries in this node's replica.
    pub presence_entries: usize,
    /// Actors alive: the supervisor, the node actor and the shards (connections are not
    /// actors).
    pub actors: usize,
    /// User activations on this node (users homed here with a live session; they are not
    /// actors: see [`UserBehaviour`]).
    pub user_activations: usize,
}

#[derive(RactorMessage)]
enum SupMsg {
    Children(RpcReplyPort<(ActorRef<NodeMsg>, usize)>),
}

struct SupArgs {
    boot: NodeBoot,
    store: EpochStore,
    clock: Clock,
    published: Published,
    links: Option<Arc<Links>>,
    ready: watch::Sender<bool>,
    records: Option<RecordLog>,
    inbox: Arc<PeerInbox>,
    clients: Arc<ClientInbox>,
    users: Arc<Shared>,
    subscriptions: Arc<AtomicU64>,
    encoder: Option<Arc<dyn PushEncoder>>,
}

struct SupState {
    node: ActorRef<NodeMsg>,
    shards: Vec<ActorRef<ShardMsg>>,
}

/// `NodeSupervisor`: starts the shards and the node actor, linked. If any of them dies, the
/// node stops as a whole: a node whose core died must not look alive.
struct NodeSupervisor;

impl Actor for NodeSupervisor {
    type Msg = SupMsg;
    type State = SupState;
    type Arguments = SupArgs;

    async fn pre_start(&self, myself: ActorRef<SupMsg>, args: SupArgs) -> Result<SupState, ActorProcessingErr> {
        let config = Arc::new(args.boot.config.clone());
        let mut shards = Vec::new();
        for _ in 0..config.presence.shards.max(1) {
            let shard_args =
                ShardArgs { diff_ms: config.presence.diff_ms, clock: args.clock, encoder: args.encoder.clone() };
            let (shard, _) = Actor::spawn_linked(None, PresenceShard, shard_args, myself.get_cell()).await?;
            shards.push(shard);
        }
        let node_args = NodeArgs {
            boot: args.boot,
            store: args.store,
            clock: args.clock,
            shards: shards.clone(),
            published: args.published,
            links: args.links,
            ready: args.ready,
            records: args.records,
            inbox: args.inbox,
            users: args.users,
            subscriptions: args.subscriptions,
            clients: args.clients,
        };
        let (node, _) = Actor::spawn_linked(None, NodeActor, node_args, myself.get_cell()).await?;
        Ok(SupState { node, shards })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SupMsg>,
        msg: SupMsg,
        st: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupMsg::Children(reply) => {
                let _ = reply.send((st.node.clone(), st.shards.len()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupMsg>,
        evt: SupervisionEvent,
        _st: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::error!(actor = %cell.get_id(), error = %err, "a node actor failed: stopping the node");
                myself.stop(Some("child failed".into()));
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                tracing::info!(actor = %cell.get_id(), reason = ?reason, "a node actor stopped: stopping the node");
                myself.stop(Some("child stopped".into()));
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<SupMsg>, st: &mut SupState) -> Result<(), ActorProcessingErr> {
        st.node.stop(None);
        for s in &st.shards {
            s.stop(None);
        }
        Ok(())
    }
}

struct NodeInner {
    name: NodeName,
    incarnation: Incarnation,
    config: Arc<Config>,
    supervisor: ActorRef<SupMsg>,
    node: ActorRef<NodeMsg>,
    /// Joins, leaves, closes, kicks and subscriptions go here, in order (the node actor's batch).
    clients: Arc<ClientInbox>,
    gateway: Gateway,
    gateway_task: JoinHandle<()>,
    shard_count: usize,
    published: Published,
    ready: watch::Receiver<bool>,
    cluster: Option<Cluster>,
    next_socket: AtomicU64,
    users: Arc<Shared>,
    /// Channel and subscription ids (shared with the node actor).
    subscriptions: Arc<AtomicU64>,
    /// Connections open now.
    open: Arc<AtomicUsize>,
}

/// A running Roster node, embedded in this process. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

/// How long a graceful shutdown waits for peers to confirm its last messages.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// How long a call waits beyond the configured join wait before the node counts as gone.
const CALL_MARGIN: Duration = Duration::from_secs(5);

impl Node {
    /// Start a node. A cluster of one admits joins at once; a cluster member once its leases
    /// and scans allow (see [`Node::ready`]).
    pub async fn start(opts: NodeOptions) -> Result<Node, RuntimeError> {
        opts.config.validate()?;
        opts.config.require_node(&opts.node)?;
        let data_dir = opts.data_dir.clone().unwrap_or_else(|| PathBuf::from(&opts.config.cluster.data_dir));
        let store = EpochStore::open(&data_dir, opts.node.as_str())?;
        let stored_epoch = store.load()?;
        let clock = Clock::start();
        let wall_clock_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let incarnation = Incarnation::new(opts.node.clone(), uuid::Uuid::new_v4().as_u128());
        let records = match &opts.records {
            Some(path) => Some(
                RecordLog::open_at(path, incarnation.clone(), clock.base_unix_ns())
                    .map_err(|error| RuntimeError::RecordLog { path: path.display().to_string(), error })?,
            ),
            None => None,
        };
        let boot = NodeBoot { me: incarnation.clone(), config: opts.config.clone(), stored_epoch, wall_clock_ms };
        let links = (opts.config.cluster.nodes.len() > 1).then(|| Links::new(&opts.config, &opts.node));
        let inbox = Arc::new(PeerInbox::default());
        let clients = ClientInbox::new();
        let published = Published::default();
        let users = Shared::new(
            opts.node.clone(),
            clock,
            opts.config.cluster.partitions,
            true, // activations are fenced at their lease's deadline (always, in the product)
            links.clone(),
            opts.user_actors.clone(),
        );
        let (ready_tx, ready) = watch::channel(false);
        let subscriptions = Arc::new(AtomicU64::new(1));
        let args = SupArgs {
            boot,
            store,
            clock,
            published: published.clone(),
            links: links.clone(),
            ready: ready_tx,
            records,
            inbox: inbox.clone(),
            clients: clients.clone(),
            users: users.clone(),
            subscriptions: subscriptions.clone(),
            encoder: opts.encoder.clone(),
        };
        let (supervisor, _) = Actor::spawn(None, NodeSupervisor, args)
            .await
            .map_err(|e| RuntimeError::Spawn(format!("node supervisor: {e}")))?;
        let (node, shard_count) = supervisor
            .call(SupMsg::Children, Some(CALL_MARGIN))
            .await
            .ok()
            .and_then(success)
            .ok_or(RuntimeError::NotRunning)?;
        let cluster = match links {
            Some(links) => match Cluster::start(&opts.config, &opts.node, links, node.clone(), inbox).await {
                Ok(c) => Some(c),
                Err(e) => {
                    let _ = supervisor.stop_and_wait(Some("cluster link failed".into()), Some(CALL_MARGIN)).await;
                    return Err(e);
                }
            },
            None => None,
        };
        tracing::info!(node = %opts.node, incarnation = %incarnation, "node started");
        let (gateway, gateway_task) = Gateway::start();
        Ok(Node {
            inner: Arc::new(NodeInner {
                name: opts.node,
                incarnation,
                config: Arc::new(opts.config),
                supervisor,
                node,
                clients,
                gateway,
                gateway_task,
                shard_count,
                published,
                ready,
                cluster,
                next_socket: AtomicU64::new(1),
                users,
                subscriptions,
                open: Arc::new(AtomicUsize::new(0)),
            }),
        })
    }

    /// This node's name.
    pub fn name(&self) -> &NodeName {
        &self.inner.name
    }

    /// This boot's incarnation.
    pub fn incarnation(&self) -> &Incarnation {
        &self.inner.incarnation
    }

    /// The configuration it runs.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn join_wait(&self) -> Duration {
        Duration::from_millis(self.inner.config.server.join_wait_ms)
    }

    /// Wait until the node admits joins (start-up waits over, every partition has a home), or
    /// `timeout` passes. Returns whether it is ready.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.ready.clone();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await.is_ok_and(|r| r.is_ok())
    }

    /// Whether the node admits joins now.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// The shared half of a new connection, registered with the node actor.
    fn open_connection(
        &self,
        user: Option<UserId>,
        role: Option<Role>,
        outbound: usize,
    ) -> Result<Arc<ConnShared>, RuntimeError> {
        let socket = SocketId(self.inner.next_socket.fetch_add(1, Ordering::Relaxed));
        let server = &self.inner.config.server;
        let conn = Arc::new(ConnShared::new(ConnParts {
            socket,
            user,
            role,
            node: self.inner.clients.clone(),
            max_frames: outbound,
            max_bytes: usize::try_from(server.outbound_queue_bytes).unwrap_or(usize::MAX),
            max_topics: server.max_topics_per_socket as usize,
            open: self.inner.open.clone(),
        }));
        // Registered before the caller can send a join through it (one inbox, in order).
        if self.inner.clients.send(NodeMsg::Register { socket, conn: conn.clone() }).is_err() {
            conn.end(crate::CloseReason::Shutdown, false);
            return Err(RuntimeError::NotRunning);
        }
        Ok(conn)
    }

    /// Open a connection (a socket) for `user` with `role` (`None`: anonymous), owned by the
    /// caller: it ends when closed or dropped. Its events are queued up to `outbound` frames
    /// (and `outbound_queue_bytes` bytes) deep; a client that falls further behind is closed.
    pub async fn connect(
        &self,
        user: Option<UserId>,
        role: Option<Role>,
        outbound: usize,
    ) -> Result<Connection, RuntimeError> {
        let conn = self.open_connection(user, role, outbound)?;
        Ok(Connection::new(conn, self.join_wait(), false))
    }

    /// Open a connection that lives in a task of its own, running `run(connection)`: what a
    /// gateway does for each socket. The Gateway watches the task: however it ends (it
    /// returns, panics or is aborted), the node untracks the connection's presence and releases
    /// its slots; closing the connection cleanly releases them at once.
    pub fn spawn_connection<F, Fut>(
        &self,
        user: Option<UserId>,
        role: Option<Role>,
        outbound: usize,
        run: F,
    ) -> Result<ConnectionTask, RuntimeError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let conn = self.open_connection(user, role, outbound)?;
        let socket = conn.socket();
        let task = tokio::spawn(run(Connection::new(conn.clone(), self.join_wait(), true)));
        let abort = task.abort_handle();
        self.inner.gateway.watch(conn, task);
        Ok(ConnectionTask { socket, abort })
    }

    /// Join `req.user` to `req.topic`: a session that holds the slot (or waits, or is refused,
    /// as the topic's policy says). Dropping the session leaves.
    pub async fn join(&self, req: JoinRequest) -> Result<Session, JoinError> {
        let outbound = self.inner.config.server.outbound_queue as usize;
        let mut conn = self.connect(req.user, req.role, outbound).await.map_err(|_| JoinError::Closed)?;
        conn.drop_clean = true;
        let joined = conn.join(req.topic.clone(), req.tab_id, req.meta).await?;
        Ok(Session { conn, topic: req.topic, joined })
    }

    /// The presence of one topic: its list and its diffs.
    pub fn presence(&self, topic: impl Into<Topic>) -> TopicPresence {
        TopicPresence { node: self.clone(), topic: topic.into() }
    }

    /// Whether `token` still holds `user`'s slot in `topic`'s scope, answered by the user's
    /// home (this node, or one RPC to the peer holding the partition's lease). `None`: no
    /// node serves the user's partition now (no quorum, or the partition is moving).
    pub async fn validate(&self, user: &UserId, topic: &Topic, token: SlotToken) -> Option<bool> {
        let (user, topic) = (user.clone(), topic.clone());
        self.inner
            .node
            .call(|reply| NodeMsg::Validate { user, topic, token, reply }, Some(CALL_MARGIN))
            .await
            .ok()
            .and_then(success)
            .flatten()
    }

    /// A user, as any node reaches it: calls and casts to its one live activation wherever
    /// its home is, its sessions as the home knows them, kicks (see [`UserRef`]).
    pub fn user(&self, id: impl Into<UserId>) -> UserRef {
        UserRef::new(id.into(), self.inner.users.clone())
    }

    /// Revoke `user`'s slots (in one topic's scope, or all): their clients get `slot_revoked`
    /// with `reason`.
    pub fn kick(&self, user: UserId, topic: Option<Topic>, reason: impl Into<String>) {
        let _ = self.inner.clients.send(NodeMsg::Kick { user, topic, reason: reason.into() });
    }

    /// What the node holds now, and its readiness and leases.
    pub async fn status(&self) -> Result<NodeStatus, RuntimeError> {
        self.inner
            .node
            .call(NodeMsg::Status, Some(CALL_MARGIN))
            .await
            .ok()
            .and_then(success)
            .ok_or(RuntimeError::NotRunning)
    }

    /// Every topic with presence on this node's replica (all nodes' entries), each with its
    /// list as last published. Like [`TopicPresence::list`], it never waits behind the
    /// node's writes.
    pub fn topics(&self) -> Vec<(Topic, Arc<PresenceList>)> {
        let published = self.inner.published.read().unwrap_or_else(|e| e.into_inner());
        published.iter().map(|(topic, list)| (topic.clone(), list.clone())).collect()
    }

    /// The cluster link to every peer (empty on a single node).
    pub fn links(&self) -> Vec<LinkStatus> {
        self.inner.cluster.as_ref().map(|c| c.links.status()).unwrap_or_default()
    }

    /// The cluster link's counters, if this node is part of a cluster.
    pub fn link_counters(&self) -> Option<&crate::cluster::LinkCounters> {
        self.inner.cluster.as_ref().map(|c| &c.links.counters)
    }

    /// Counts of live users, sessions, slots, presence entries and actors.
    pub async fn stats(&self) -> Result<Stats, RuntimeError> {
        let status = self.status().await?;
        Ok(Stats {
            live_users: status.counts.home_users,
            sessions: self.inner.open.load(Ordering::Relaxed),
            slots: status.counts.gateway_slots,
            presence_entries: status.counts.presence_entries,
            actors: 2 + self.inner.shard_count,
            user_activations: self.inner.users.count(),
        })
    }

    /// Graceful shutdown: every slot and lease released at once, every connection closed
    /// with [`CloseReason::Shutdown`](crate::CloseReason::Shutdown), then the actors stop.
    pub async fn shutdown(&self) {
        let _ = self.inner.node.call(NodeMsg::Shutdown, Some(CALL_MARGIN)).await;
        if let Some(cluster) = &self.inner.cluster {
            // The lease and slot releases just sent reach the peers before the sessions close.
            let node = &self.inner.node;
            let start = |id| {
                let _ = node.cast(NodeMsg::Flush(id));
            };
            if !cluster.links.flush(SHUTDOWN_FLUSH, start).await {
                tracing::warn!("not every peer confirmed the last messages before shutdown");
            }
            cluster.stop();
        }
        let _ = self.inner.supervisor.stop_and_wait(Some("shutdown".into()), Some(CALL_MARGIN)).await;
        self.inner.gateway_task.abort();
        tracing::info!(node = %self.inner.name, "node stopped");
    }
}

/// A connection living in its own task, from [`Node::spawn_connection`].
#[derive(Clone, Debug)]
pub struct ConnectionTask {
    socket: SocketId,
    abort: AbortHandle,
}

impl ConnectionTask {
    /// The connection's socket id.
    pub fn socket(&self) -> SocketId {
        self.socket
    }

    /// Abort the task, as a crash would: the Gateway reports its end.
    pub fn abort(&self) {
        self.abort.abort();
    }
}

fn success<T>(r: ractor::rpc::CallResult<T>) -> Option<T> {
    match r {
        ractor::rpc::CallResult::Success(v) => Some(v),
        _ => None,
    }
}

/// A user's session in one topic, from [`Node::join`]. Dropping it leaves.
pub struct Session {
    conn: Connection,
    topic: Topic,
    joined: Joined,
}

impl Session {
    /// The slot's fencing token (`None` for anonymous viewers and exempt roles).
    pub fn token(&self) -> Option<SlotToken> {
        self.joined.token
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The session's channel in the topic.
    pub fn channel(&self) -> crate::ChannelId {
        self.joined.channel
    }

    /// The next event (the topic's list first, then revoked, closed, presence diffs,
    /// broadcasts); `None` once ended.
    pub async fn next_event(&mut self) -> Option<ConnEvent> {
        self.conn.recv().await
    }

    /// An event if one is queued.
    pub fn try_event(&mut self) -> Option<ConnEvent> {
        self.conn.try_recv()
    }

    /// Replace this session's meta.
    pub async fn update_meta(&self, meta: Meta) -> Result<(), PushError> {
        self.conn.update_meta(self.topic.clone(), meta).await
    }

    /// Broadcast to the topic's other sessions.
    pub async fn push(&self, event: impl Into<String>, body: MetaValue) -> Result<(), PushError> {
        self.conn.push(self.topic.clone(), event, body).await
    }

    /// Leave cleanly (the slot is freed at once).
    pub fn leave(self) {
        self.conn.close(true);
    }

    /// End as a vanished client would (no clean close: `reserve_ms` applies).
    pub fn disconnect(self) {
        self.conn.close(false);
    }

    /// The underlying connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// One topic's presence on a node.
pub struct TopicPresence {
    node: Node,
    topic: Topic,
}

impl TopicPresence {
    /// The list as last published (at most `diff_ms` behind the node's replica). Never waits
    /// behind the node's writes.
    pub fn list(&self) -> Arc<PresenceList> {
        let published = self.node.inner.published.read().unwrap_or_else(|e| e.into_inner());
        published.get(&self.topic).cloned().unwrap_or_default()
    }

    /// The list exactly as the node's replica holds it now (this waits behind the node's
    /// writes; [`TopicPresence::list`] does not).
    pub async fn current(&self) -> Arc<PresenceList> {
        let topic = self.topic.clone();
        self.node
            .inner
            .node
            .call(|reply| NodeMsg::List { topic, reply }, Some(CALL_MARGIN))
            .await
            .ok()
            .and_then(success)
            .unwrap_or_default()
    }

    /// Subscribe to the topic: its list first, then its diffs (one per `diff_ms` window at
    /// most), which compose with it exactly. A subscriber that does not keep up (1024 items
    /// behind) is dropped: its stream ends.
    pub fn subscribe(&self) -> PresenceSubscription {
        let (tx, rx) = mpsc::channel(1024);
        let id = SubscriberId(self.node.inner.subscriptions.fetch_add(1, Ordering::Relaxed));
        let sub = Subscriber::Feed(Arc::new(FeedSub { id, tx }));
        let _ = self.node.inner.clients.send(NodeMsg::Subscribe { topic: self.topic.clone(), sub });
        PresenceSubscription { rx, topic: self.topic.clone(), id, node: self.node.inner.clients.clone() }
    }
}

/// A stream of one topic's presence: its list, then its diffs. Dropping it unsubscribes.
pub struct PresenceSubscription {
    rx: mpsc::Receiver<PresenceFeed>,
    topic: Topic,
    id: SubscriberId,
    node: Arc<ClientInbox>,
}

impl PresenceSubscription {
    /// The next item; `None` if the subscription ended.
    pub async fn next(&mut self) -> Option<PresenceFeed> {
        self.rx.recv().await
    }

    /// An item if one is queued.
    pub fn try_next(&mut self) -> Option<PresenceFeed> {
        self.rx.try_recv().ok()
    }
}

impl Drop for PresenceSubscription {
    fn drop(&mut self) {
        let _ = self.node.send(NodeMsg::Unsubscribe { topic: self.topic.clone(), id: self.id });
    }
}
