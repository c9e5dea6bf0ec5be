//! What goes into and comes out of a [`NodeState`](super::NodeState): inputs, effects, the
//! messages between nodes, and the records a checker rebuilds holding intervals from.

use crate::ids::{
    ConnId, Incarnation, Meta, MetaValue, Millis, NodeName, Role, SlotToken, SocketId, TabId, Topic, UserId,
};
use crate::slot::TabKey;
use crate::{PartitionId, ScopeKey};
use serde::{Deserialize, Serialize};

/// Something that happened to a node. Every input comes with the node's own clock reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// Time passed: heartbeats, lease requests, horizons, waits and timers that are due run.
    /// The runtime calls it at [`NodeState::next_wake`](super::NodeState::next_wake) or sooner.
    Tick,
    /// A message from a peer (or from this node to itself: home and gateway share one path).
    Receive {
        /// The sending node's name.
        from: NodeName,
        /// The message.
        msg: PeerMsg,
    },
    /// The transport says the session to `peer` closed (a killed process is noticed at once).
    LinkDown {
        /// The peer.
        peer: NodeName,
    },
    /// A client on a socket of this node joins a topic.
    Join(ClientJoin),
    /// A client leaves one topic cleanly (`phx_leave`).
    Leave {
        /// The socket.
        socket: SocketId,
        /// The topic it leaves.
        topic: Topic,
    },
    /// A socket ended: `clean` for a close the client asked for, not for a drop or timeout.
    SocketClosed {
        /// The socket.
        socket: SocketId,
        /// Whether the client closed it on purpose.
        clean: bool,
    },
    /// A joined client replaces its meta (`presence:update`).
    UpdateMeta {
        /// The socket.
        socket: SocketId,
        /// The topic.
        topic: Topic,
        /// The new meta.
        meta: Meta,
    },
    /// The backend kicks a user (from any node): every slot of the user, or those of one topic.
    Kick {
        /// The user.
        user: UserId,
        /// Only this topic's scope, or all.
        topic: Option<Topic>,
        /// The reason the client sees in `slot_revoked`.
        reason: String,
    },
    /// Graceful shutdown: release every slot and lease at once.
    Shutdown,
    /// The backend calls (`reply`) or casts to a user's activation; `call` is the runtime's
    /// id for the answer ([`UserEffect::Answer`](super::UserEffect::Answer)).
    UserCall {
        /// The runtime's call id.
        call: u64,
        /// The user.
        user: UserId,
        /// The application's message, encoded.
        body: Vec<u8>,
        /// Whether an answer is wanted (a call) or not (a cast).
        reply: bool,
    },
    /// The backend asks for a user's sessions as its home knows them
    /// ([`UserEffect::Info`](super::UserEffect::Info)).
    UserInfo {
        /// The runtime's call id.
        call: u64,
        /// The user.
        user: UserId,
    },
    /// Revoke one session of a user (from any node; the home decides).
    KickSession {
        /// The user.
        user: UserId,
        /// The session's connection.
        conn: ConnId,
        /// Its scope.
        scope: ScopeKey,
        /// The reason the client sees in `slot_revoked`.
        reason: String,
    },
    /// The runtime stopped an activation: after a handover with its `state`, or because the
    /// application's code panicked (`failed`).
    ActivationStopped {
        /// The user.
        user: UserId,
        /// The activation.
        token: SlotToken,
        /// The application's state, encoded (handover only).
        state: Option<Vec<u8>>,
        /// The application's code panicked.
        failed: bool,
    },
    /// Does `token` still hold `user`'s slot in `topic`'s scope? Asked on any node: the home
    /// answers from its slot state at the instant it handles the question, with its lease
    /// checked (rule 1); the answer comes back as [`Effect::Validated`] with `call`.
    Validate {
        /// The runtime's call id.
        call: u64,
        /// The user.
        user: UserId,
        /// A topic of the scope.
        topic: Topic,
        /// The token.
        token: SlotToken,
    },
    /// A signed-in user's push on this node: delivered to this node's subscribers of the topic
    /// ([`Effect::Broadcast`], except the sending socket) and sent to every peer, whose core
    /// delivers it to theirs.
    Broadcast {
        /// The sending socket, which does not get its own push back (`None`: the embedding
        /// API).
        except: Option<SocketId>,
        /// The topic.
        topic: Topic,
        /// The sender.
        user: UserId,
        /// The event.
        event: String,
        /// The payload.
        body: MetaValue,
    },
    /// A barrier for graceful shutdown: ask every peer to confirm, in order with everything
    /// this node sent it before, with [`Effect::Flushed`]. Handled after
    /// [`Input::Shutdown`] too (a stopped node still sends its flush and hears the answers).
    Flush {
        /// The runtime's id for this flush.
        id: u64,
    },
}

/// A client's join as the gateway sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientJoin {
    /// The socket on this node.
    pub socket: SocketId,
    /// The topic.
    pub topic: Topic,
    /// The signed-in user, or `None` for an anonymous viewer.
    pub user: Option<UserId>,
    /// The user's role from the token.
    pub role: Option<Role>,
    /// The browser tab, if the client sent one.
    pub tab: Option<TabId>,
    /// The user's meta.
    pub meta: Meta,
}

/// What the runtime must do, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send a message to a node (possibly this one).
    Send {
        /// The destination.
        to: NodeName,
        /// The message.
        msg: PeerMsg,
    },
    /// Store this epoch durably (written and synced) before carrying out any later effect.
    PersistEpoch(u64),
    /// Tell a local client something.
    Client {
        /// The socket.
        socket: SocketId,
        /// The topic concerned.
        topic: Topic,
        /// What to tell it.
        event: ClientEvent,
    },
    /// This node's presence replica changed: the joins and leaves, per topic, for
    /// subscribers (the runtime coalesces them over `diff_ms`).
    PresenceChanged(crate::PresenceChanges),
    /// Something a checker needs to rebuild holding intervals; the runtime logs it.
    Record(Record),
    /// Start, feed, fence or stop a user's activation, or answer a caller.
    User(super::UserEffect),
    /// The answer to [`Input::Validate`] `call`: `None` when no home could answer (none known,
    /// or the node asked is not, or no longer, the home).
    Validated {
        /// The call id.
        call: u64,
        /// Whether the token holds the slot.
        answer: Option<bool>,
    },
    /// Deliver a signed-in user's push to this node's subscribers of `topic`.
    Broadcast {
        /// The topic.
        topic: Topic,
        /// The sender.
        user: UserId,
        /// The event.
        event: String,
        /// The payload.
        body: MetaValue,
        /// The sending socket (on this node), which does not get it.
        except: Option<SocketId>,
    },
    /// `peer` confirmed flush `id`: everything this node sent it before the flush reached its
    /// core.
    Flushed {
        /// The peer.
        peer: NodeName,
        /// The flush.
        id: u64,
    },
}

/// What a client is told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientEvent {
    /// The join succeeded; `token` is absent for joins that hold no slot (anonymous viewers).
    Joined {
        /// The slot's fencing token.
        token: Option<SlotToken>,
    },
    /// The join failed.
    JoinFailed {
        /// One of DESIGN.md's join errors (`already_joined`, `wait_timed_out`, `no_quorum`, ...).
        reason: String,
    },
    /// The slot was taken away (`slot_revoked`), followed by the topic's close.
    Revoked {
        /// `logged_in_elsewhere`, `node_isolated`, or a kick's reason.
        reason: String,
    },
    /// The channel is closed quietly (its tab resumed on another socket).
    Closed,
}

/// A node's word on a partition's lease, inside a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announced {
    /// The partition.
    pub partition: PartitionId,
    /// The epoch of the sender's lease, valid at the instant the heartbeat was sent.
    pub epoch: u64,
}

/// The latest heartbeat a node received from a peer, echoed back (rule 4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    /// The peer incarnation whose heartbeat is echoed.
    pub of: Incarnation,
    /// That heartbeat's send time, on the peer's clock.
    pub sent_at: Millis,
}

/// One connection's slot as a gateway reports it to a scanning home.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSlot {
    /// The user.
    pub user: UserId,
    /// The scope.
    pub scope: ScopeKey,
    /// The connection.
    pub conn: ConnId,
    /// Its tab.
    pub tab: TabKey,
    /// Its token.
    pub token: SlotToken,
}

/// Messages between nodes. Every message names the sender's incarnation where a stale one
/// would be dangerous.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// Rule 4: liveness, the leases valid at the send instant, and echoes.
    Heartbeat {
        /// The sender.
        from: Incarnation,
        /// Send time on the sender's clock.
        sent_at: Millis,
        /// Leases valid at `sent_at`.
        leases: Vec<Announced>,
        /// The latest heartbeat received from each peer.
        echoes: Vec<Echo>,
        /// The sequence number of the sender's latest presence delta sent before this
        /// heartbeat: a receiver that has applied less asks for a snapshot.
        presence_seq: u64,
    },
    /// Rule 1: ask for (or renew) leases on these partitions at these epochs.
    LeaseRequest {
        /// The proposer.
        from: Incarnation,
        /// The proposer's send time, which identifies the round.
        round: Millis,
        /// Partition and proposed epoch.
        asks: Vec<Announced>,
    },
    /// The answer to a [`PeerMsg::LeaseRequest`].
    LeaseReply {
        /// The grantor.
        from: Incarnation,
        /// The round it answers.
        round: Millis,
        /// Granted partitions at the asked epochs.
        granted: Vec<Announced>,
        /// Refused partitions with the grantor's highest known epoch.
        refused: Vec<Announced>,
        /// For each granted partition, the highest epoch this grantor granted it to any other
        /// holder before (its boot floor if it has granted the partition nothing since it
        /// started): a new holder learns from its majority whether any lease came between its
        /// own and the one a handed-over state comes from (user actors).
        before: Vec<Announced>,
    },
    /// The holder gives its leases up (graceful shutdown or handover).
    LeaseRelease {
        /// The holder.
        from: Incarnation,
        /// The released leases.
        leases: Vec<Announced>,
    },
    /// A gateway asks the home of `user`'s partition for a slot.
    SlotJoin {
        /// The gateway connection.
        conn: ConnId,
        /// The user.
        user: UserId,
        /// The scope.
        scope: ScopeKey,
        /// The topic that asked (for the policy).
        topic: Topic,
        /// The tab, if any.
        tab: Option<TabId>,
        /// The user's role.
        role: Option<Role>,
    },
    /// The home grants the slot; `echo` is the latest send time of the gateway's heartbeat the
    /// home received, so the slot has a horizon from its first instant (rule 5).
    SlotGrant {
        /// The home.
        from: Incarnation,
        /// The user.
        user: UserId,
        /// The connection.
        conn: ConnId,
        /// The scope.
        scope: ScopeKey,
        /// The token.
        token: SlotToken,
        /// The gateway's heartbeat send time the home vouches for.
        echo: Millis,
    },
    /// The home refuses (or cannot serve) the join.
    SlotReject {
        /// The home.
        from: Incarnation,
        /// The connection.
        conn: ConnId,
        /// The scope.
        scope: ScopeKey,
        /// Join error reason; `not_home` means "ask again when a home is known".
        reason: String,
    },
    /// The home revokes a slot (takeover, kick); the gateway confirms with `SlotReleased`.
    SlotRevoke {
        /// The home.
        from: Incarnation,
        /// The user.
        user: UserId,
        /// The connection.
        conn: ConnId,
        /// The scope.
        scope: ScopeKey,
        /// The token revoked.
        token: SlotToken,
        /// Why.
        reason: String,
    },
    /// The home asks the gateway to close a replaced connection quietly (rule 7).
    SlotClose {
        /// The home.
        from: Incarnation,
        /// The user.
        user: UserId,
        /// The connection.
        conn: ConnId,
        /// The scope.
        scope: ScopeKey,
        /// The token of the replaced connection.
        token: SlotToken,
    },
    /// The gateway no longer holds the slot (left, closed, revoked, never accepted, expired).
    SlotReleased {
        /// The connection (its gateway incarnation is the sender).
        conn: ConnId,
        /// The user.
        user: UserId,
        /// The scope.
        scope: ScopeKey,
        /// The token.
        token: SlotToken,
        /// A clean end (no reservation).
        clean: bool,
    },
    /// The home has taken note of a release (the gateway stops retrying it).
    SlotReleaseAck {
        /// The connection.
        conn: ConnId,
        /// The token.
        token: SlotToken,
    },
    /// Rule 9: a new home asks which slots a gateway holds in a partition.
    ScanRequest {
        /// The new home.
        from: Incarnation,
        /// The partition.
        partition: PartitionId,
        /// The new epoch.
        epoch: u64,
    },
    /// The gateway's answer, vouching for this incarnation only (rule 10).
    ScanReply {
        /// The answering gateway.
        from: Incarnation,
        /// The partition.
        partition: PartitionId,
        /// The epoch asked about.
        epoch: u64,
        /// Its slots in the partition.
        slots: Vec<HeldSlot>,
        /// `false` for a partial answer (rule 15): the gateway is in its first `isolation_ms`,
        /// so it lists and re-attaches this incarnation's slots but cannot vouch that its
        /// previous life's have expired; the home adopts the slots and keeps asking.
        complete: bool,
    },
    /// A kick forwarded to the user's home.
    Kick {
        /// The user.
        user: UserId,
        /// Only this scope, or all.
        scope: Option<ScopeKey>,
        /// The reason.
        reason: String,
    },
    /// Presence replication: the sender's own entries.
    Presence(PresenceMsg),
    /// A call or cast to a user's activation, sent to the user's home.
    UserCall {
        /// The calling incarnation (the answer goes back to it).
        from: Incarnation,
        /// Its call id.
        call: u64,
        /// The user.
        user: UserId,
        /// The application's message, encoded.
        body: Vec<u8>,
        /// Whether an answer is wanted.
        reply: bool,
    },
    /// The home's (or its activation's) answer to a [`PeerMsg::UserCall`].
    UserReply {
        /// The calling incarnation.
        to: Incarnation,
        /// Its call id.
        call: u64,
        /// The answer.
        answer: super::UserAnswer,
    },
    /// Ask the user's home for its view of the user.
    UserInfo {
        /// The asking incarnation.
        from: Incarnation,
        /// Its call id.
        call: u64,
        /// The user.
        user: UserId,
    },
    /// The answer to a [`PeerMsg::UserInfo`]; `None`: the node is not serving the user's
    /// partition.
    UserInfoReply {
        /// The asking incarnation.
        to: Incarnation,
        /// Its call id.
        call: u64,
        /// The home's view.
        view: Option<super::UserView>,
    },
    /// A kick of one session, forwarded to the user's home.
    KickSession {
        /// The user.
        user: UserId,
        /// The session's connection.
        conn: ConnId,
        /// Its scope.
        scope: ScopeKey,
        /// The reason.
        reason: String,
    },
    /// Handover: the old home tells the new one which users' states follow, so it waits for
    /// them (up to `lease_ms`) instead of starting those users fresh.
    HandoverPlan {
        /// The old home.
        from: Incarnation,
        /// The partition.
        partition: PartitionId,
        /// The users whose activations stopped to move.
        users: Vec<UserId>,
    },
    /// Handover: one user's state, from its stopped activation `token` on the old home.
    UserHandover {
        /// The old home.
        from: Incarnation,
        /// The user.
        user: UserId,
        /// The stopped activation.
        token: SlotToken,
        /// The application's state, encoded.
        state: Vec<u8>,
    },
    /// Rule 16: the sender shut down gracefully and will send nothing more. It is its last
    /// message, sent after it released every slot and lease (`released` lists those leases),
    /// so the incarnation holds nothing: its peers mark it down at once and free what their
    /// homes still count for it, without the in-doubt wait.
    Goodbye {
        /// The departing incarnation.
        from: Incarnation,
        /// The leases it held and released at shutdown, with their epochs.
        released: Vec<Announced>,
        /// It had been up `isolation_ms` (it answered recovery scans, rule 10): no earlier
        /// life of the node still holds a slot.
        settled: bool,
    },
    /// [`Input::Validate`] forwarded to the user's home.
    Validate {
        /// The asking incarnation (the answer goes back to it).
        from: Incarnation,
        /// Its call id.
        call: u64,
        /// The user.
        user: UserId,
        /// A topic of the scope.
        topic: Topic,
        /// The token.
        token: SlotToken,
    },
    /// The home's answer to a [`PeerMsg::Validate`]; `None`: the node is not serving the
    /// user's partition (any more).
    ValidateReply {
        /// The answering node.
        from: Incarnation,
        /// The asking incarnation.
        to: Incarnation,
        /// Its call id.
        call: u64,
        /// The answer.
        answer: Option<bool>,
    },
    /// A signed-in user's push, for the receiver's subscribers of the topic.
    Broadcast {
        /// The sender's gateway.
        from: Incarnation,
        /// The gateway's broadcast sequence number (1, 2, ...): a receiver delivers each
        /// gateway's broadcasts at most once and in order, dropping a copy or a late one.
        seq: u64,
        /// The topic.
        topic: Topic,
        /// The sending user.
        user: UserId,
        /// The event.
        event: String,
        /// The payload.
        body: MetaValue,
    },
    /// "Confirm once everything I sent before this has reached you" (graceful shutdown).
    Flush {
        /// The asking node.
        from: Incarnation,
        /// Its flush id.
        id: u64,
    },
    /// The answer to a [`PeerMsg::Flush`], sent in order after everything before it.
    FlushAck {
        /// The confirming node.
        from: Incarnation,
        /// The flush id.
        id: u64,
    },
}

/// Presence replication between nodes. Each node sends only its own entries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PresenceMsg {
    /// Changes since the previous delta (coalesced over `broadcast_ms`).
    Delta(crate::Delta),
    /// Please send your snapshot (a gap, a new incarnation, or a peer back from down).
    SnapshotRequest {
        /// Who asks.
        from: Incarnation,
    },
    /// One chunk of a snapshot (sent in chunks well under the transport's frame cap).
    SnapshotChunk(crate::SnapshotChunk),
}

/// A fact a checker needs, with the node's own clock reading.
///
/// A gateway slot is *attached* to `(partition, epoch)`: first the epoch of its token, later a
/// newer epoch whose recovery scan the gateway answered ([`Record::Reattached`]). Its horizon
/// is the latest [`Record::Horizon`] of its gateway for its current attachment (horizons only
/// grow). A slot is held from its `Accepted` until the first of its `Ended` or that horizon; a
/// crashed gateway's slots count as held until their horizon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The gateway accepted a grant: the connection holds the slot from `at`, attached to
    /// `(partition, token.epoch)`.
    Accepted {
        /// Node clock.
        at: Millis,
        /// The user.
        user: UserId,
        /// The scope.
        scope: ScopeKey,
        /// The connection.
        conn: ConnId,
        /// Its tab.
        tab: TabKey,
        /// The token.
        token: SlotToken,
        /// The user's partition.
        partition: PartitionId,
        /// The horizon of its attachment at `at`, on the gateway's clock.
        horizon: Millis,
    },
    /// Every slot of `gateway` attached to `(partition, epoch)` is valid until `horizon`
    /// (gateway clock) unless it ends first.
    Horizon {
        /// Node clock.
        at: Millis,
        /// The gateway (this node).
        gateway: Incarnation,
        /// The partition.
        partition: PartitionId,
        /// The attachment epoch.
        epoch: u64,
        /// The new horizon.
        horizon: Millis,
    },
    /// Every slot of `gateway` in `partition` attached below `epoch` is now attached to
    /// `epoch` (the gateway answered that epoch's recovery scan); its horizon carries over.
    Reattached {
        /// Node clock.
        at: Millis,
        /// The gateway (this node).
        gateway: Incarnation,
        /// The partition.
        partition: PartitionId,
        /// The new attachment epoch.
        epoch: u64,
    },
    /// The slot ended at the gateway: revoked, closed, released, or expired.
    Ended {
        /// Node clock.
        at: Millis,
        /// The connection.
        conn: ConnId,
        /// The scope.
        scope: ScopeKey,
        /// Why (`left`, `closed`, `dropped`, `replaced`, `logged_in_elsewhere`, `node_isolated`, ...).
        why: String,
    },
    /// The node's lease on a partition became valid until `until` (or was renewed).
    LeaseHeld {
        /// Node clock when the lease (or its renewal) took effect.
        at: Millis,
        /// The partition.
        partition: PartitionId,
        /// Its epoch.
        epoch: u64,
        /// Node clock at which it ends unless renewed.
        until: Millis,
    },
    /// The node stopped holding a partition's lease (released, handed over, or lapsed).
    LeaseDropped {
        /// Node clock.
        at: Millis,
        /// The partition.
        partition: PartitionId,
        /// Its epoch.
        epoch: u64,
    },
    /// A user's activation started on this node (its home).
    ActivationStarted {
        /// Node clock.
        at: Millis,
        /// The user.
        user: UserId,
        /// The user's partition.
        partition: PartitionId,
        /// The activation's fencing token (`token.epoch` is the lease's epoch).
        token: SlotToken,
        /// The lease's deadline at `at` (node clock).
        until: Millis,
        /// The activation whose handed-over state it started from, if any.
        handed_from: Option<SlotToken>,
        /// The runtime fences it at its lease's deadline (the node's lease on `partition` at
        /// `token.epoch`, renewals included): it runs nothing past it, even if the node dies or
        /// stalls before it records the end. `false` only in ablations.
        fenced: bool,
    },
    /// A user's activation ended: from `at` on it runs nothing (for a lost lease, `at` is
    /// the lease's deadline: the runtime fences the activation there even if the node
    /// noticed later).
    ActivationEnded {
        /// Node clock.
        at: Millis,
        /// The user.
        user: UserId,
        /// The activation.
        token: SlotToken,
        /// Why.
        why: super::ActivationEnd,
    },
    /// The home answered whether `token` still holds `user`'s slot in `scope` (a validate),
    /// at `at`, while it held the lease on `partition` at `epoch`.
    Validated {
        /// Node clock.
        at: Millis,
        /// The user.
        user: UserId,
        /// The scope.
        scope: ScopeKey,
        /// The token asked about.
        token: SlotToken,
        /// The user's partition.
        partition: PartitionId,
        /// The epoch of the home's lease at `at`.
        epoch: u64,
        /// The answer.
        holds: bool,
    },
}

impl Record {
    /// When it happened.
    pub fn at(&self) -> Millis {
        match self {
            Record::Accepted { at, .. }
            | Record::Horizon { at, .. }
            | Record::Reattached { at, .. }
            | Record::Ended { at, .. }
            | Record::LeaseHeld { at, .. }
            | Record::LeaseDropped { at, .. }
            | Record::ActivationStarted { at, .. }
            | Record::ActivationEnded { at, .. }
            | Record::Validated { at, .. } => *at,
        }
    }
}

impl Record {
    /// The same record with every time in it (`at`, `horizon`, `until`) passed through `f`:
    /// how a record moves from the node's clock to another time base (a checker's global
    /// time, or the wall clock of a record log).
    pub fn map_times(self, f: impl Fn(Millis) -> Millis) -> Record {
        match self {
            Record::Accepted { at, user, scope, conn, tab, token, partition, horizon } => {
                Record::Accepted { at: f(at), user, scope, conn, tab, token, partition, horizon: f(horizon) }
            }
            Record::Horizon { at, gateway, partition, epoch, horizon } => {
                Record::Horizon { at: f(at), gateway, partition, epoch, horizon: f(horizon) }
            }
            Record::Reattached { at, gateway, partition, epoch } => {
                Record::Reattached { at: f(at), gateway, partition, epoch }
            }
            Record::Ended { at, conn, scope, why } => Record::Ended { at: f(at), conn, scope, why },
            Record::LeaseHeld { at, partition, epoch, until } => {
                Record::LeaseHeld { at: f(at), partition, epoch, until: f(until) }
            }
            Record::LeaseDropped { at, partition, epoch } => Record::LeaseDropped { at: f(at), partition, epoch },
            Record::ActivationStarted { at, user, partition, token, until, handed_from, fenced } => {
                Record::ActivationStarted { at: f(at), user, partition, token, until: f(until), handed_from, fenced }
            }
            Record::ActivationEnded { at, user, token, why } => Record::ActivationEnded { at: f(at), user, token, why },
            Record::Validated { at, user, scope, token, partition, epoch, holds } => {
                Record::Validated { at: f(at), user, scope, token, partition, epoch, holds }
            }
        }
    }
}
