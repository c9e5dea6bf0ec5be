//! A connection (a socket, or an embedded session): a plain value, not an actor. It sends the
//! client's joins, leaves, meta updates and pushes to the node actor, and reads what the node
//! sends it from its bounded [`OutboundQueue`](crate::outbound).
//!
//! ```text
//! NodeSupervisor
//! ├── NodeActor ◀── joins, leaves, pushes ── Connection ◀── OutboundQueue ◀── NodeActor, shards
//! ├── PresenceShard(0..k)                        │ (in a task the Gateway watches, or owned by
//! └── Gateway (a task) ◀── the task's end ───────┘  embedding code)
//! ```
//!
//! Its end reaches the node actor exactly once, as `SocketClosed`, however it happens: a
//! connection living in a task ([`Node::spawn_connection`](crate::Node::spawn_connection), as
//! every WebSocket does) is watched by the Gateway, which reports the task's end whether it
//! returned, panicked or was aborted; one owned by embedding code reports when it is closed or
//! dropped; a queue that overflows reports at once (a slow client). A clean close reports at
//! once as well, so its slots are free before the socket's last frames are written.

use crate::client_inbox::ClientInbox;
use crate::conn_channels::{ChannelTag, ConnChannels};
use crate::error::{JoinError, PushError};
use crate::node_actor::NodeMsg;
use crate::outbound::{ChannelId, Outbound, OutboundQueue, PushBody};
use roster_core::{
    ClientJoin, Input, Meta, MetaValue, PresenceDiff, PresenceList, Role, SlotToken, SocketId, TabId, Topic, UserId,
};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// A successful join.
#[derive(Clone, Debug, PartialEq)]
pub struct Joined {
    /// The slot's fencing token; `None` for joins that hold no slot (anonymous, exempt roles).
    pub token: Option<SlotToken>,
    /// The join's channel: its `presence_state`, diffs and broadcasts are sent for it.
    pub channel: ChannelId,
}

/// What a connection's client is told, in order (the first event of a join is its
/// [`ConnEvent::State`]).
#[derive(Clone, Debug, PartialEq)]
pub enum ConnEvent {
    /// The slot was taken away: `slot_revoked` with the reason, then the topic's close.
    Revoked {
        /// The topic.
        topic: Topic,
        /// `logged_in_elsewhere`, `node_isolated`, or a kick's reason.
        reason: String,
    },
    /// The topic's channel was closed quietly (the same tab resumed on another socket).
    Closed {
        /// The topic.
        topic: Topic,
    },
    /// The topic's list (`presence_state`), once per join, at the close of the diff window the
    /// join fell in; the diffs that follow compose with it.
    State {
        /// The topic.
        topic: Topic,
        /// The list.
        state: Arc<PresenceList>,
    },
    /// Presence changed in a joined topic (coalesced over `diff_ms`).
    Diff {
        /// The topic.
        topic: Topic,
        /// Joins and leaves.
        diff: Arc<PresenceDiff>,
    },
    /// Another signed-in user pushed an event to the topic.
    Broadcast {
        /// The topic.
        topic: Topic,
        /// The sender.
        from: UserId,
        /// The event name.
        event: String,
        /// The payload.
        body: MetaValue,
    },
}

/// Why a connection ended (readable once its event stream has closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// Still open.
    Open = 0,
    /// Closed on purpose by the client or the embedding code.
    Clean = 1,
    /// Dropped without a clean close.
    Dropped = 2,
    /// Did not drain its outbound queue in time.
    SlowClient = 3,
    /// Its task panicked or was aborted.
    Crashed = 4,
    /// The node is shutting down (clients should reconnect elsewhere).
    Shutdown = 5,
}

/// The close reason shared by everyone who holds the connection.
#[derive(Debug, Default)]
pub(crate) struct CloseState(AtomicU8);

impl CloseState {
    /// Record why the connection ends (the first reason wins).
    pub(crate) fn set(&self, reason: CloseReason) {
        let _ = self.0.compare_exchange(CloseReason::Open as u8, reason as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Why it ended.
    pub(crate) fn get(&self) -> CloseReason {
        match self.0.load(Ordering::Acquire) {
            1 => CloseReason::Clean,
            2 => CloseReason::Dropped,
            3 => CloseReason::SlowClient,
            4 => CloseReason::Crashed,
            5 => CloseReason::Shutdown,
            _ => CloseReason::Open,
        }
    }
}

/// Where a join's answer goes.
pub(crate) type JoinReply = Option<oneshot::Sender<Result<Joined, JoinError>>>;

/// One topic of a connection.
#[derive(Debug)]
pub(crate) enum ChannelState {
    /// The join waits for its answer: to the caller, or (`None`) through the queue.
    Joining(JoinReply),
    /// Left while its join waited: the node's answer to that join, when it comes, is dropped
    /// (it must not be taken for a later join of the topic). A new join of the topic is
    /// refused until the leave has gone through.
    Leaving,
    /// Joined: pushes for this channel are its own.
    Joined(ChannelId),
}

#[cfg(test)]
impl ChannelState {
    /// The state's name, for tests that list channels.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ChannelState::Joining(_) => "joining",
            ChannelState::Leaving => "leaving",
            ChannelState::Joined(_) => "joined",
        }
    }
}

/// What the connection, the node actor and the shards share about one connection.
#[derive(Debug)]
pub(crate) struct ConnShared {
    socket: SocketId,
    user: Option<UserId>,
    role: Option<Role>,
    node: Arc<ClientInbox>,
    queue: OutboundQueue,
    close: CloseState,
    reported: AtomicBool,
    /// Open connections of the node (this one counts until its end is reported).
    open: Arc<AtomicUsize>,
    max_topics: usize,
    channels: Mutex<ConnChannels>,
}

/// What a new connection is made of.
pub(crate) struct ConnParts {
    pub(crate) socket: SocketId,
    pub(crate) user: Option<UserId>,
    pub(crate) role: Option<Role>,
    pub(crate) node: Arc<ClientInbox>,
    pub(crate) max_frames: usize,
    pub(crate) max_bytes: usize,
    pub(crate) max_topics: usize,
    pub(crate) open: Arc<AtomicUsize>,
}

impl ConnShared {
    pub(crate) fn new(p: ConnParts) -> Self {
        p.open.fetch_add(1, Ordering::Relaxed);
        Self {
            socket: p.socket,
            user: p.user,
            role: p.role,
            node: p.node,
            queue: OutboundQueue::new(p.max_frames, p.max_bytes),
            close: CloseState::default(),
            reported: AtomicBool::new(false),
            open: p.open,
            max_topics: p.max_topics,
            channels: Mutex::new(ConnChannels::default()),
        }
    }

    pub(crate) fn socket(&self) -> SocketId {
        self.socket
    }

    pub(crate) fn queue(&self) -> &OutboundQueue {
        &self.queue
    }

    pub(crate) fn close_reason(&self) -> CloseReason {
        self.close.get()
    }

    /// Record why the connection is about to end (the first reason wins), before anything a
    /// reader could see of the end.
    pub(crate) fn note_close(&self, reason: CloseReason) {
        self.close.set(reason);
    }

    /// The connection ends for `reason` (the first reason wins): its reader gets what is
    /// queued, then nothing; the node actor hears of it once.
    pub(crate) fn end(&self, reason: CloseReason, clean: bool) {
        self.close.set(reason);
        self.queue.end();
        if !self.reported.swap(true, Ordering::AcqRel) {
            self.open.fetch_sub(1, Ordering::Relaxed);
            let _ = self.node.send(NodeMsg::SocketClosed { socket: self.socket, clean });
        }
    }

    /// The node shuts down: the reader ends (1012 on a WebSocket); the node already released
    /// everything, so nothing is reported.
    pub(crate) fn shut_down(&self) {
        self.close.set(CloseReason::Shutdown);
        self.queue.end();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnChannels> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node granted the join of `topic` (the node's shared copy, which the connection
    /// keeps from then on): it becomes `channel`. `None` if the connection left the topic
    /// meanwhile (nothing to subscribe); otherwise where the answer goes.
    pub(crate) fn granted(&self, topic: &Topic, channel: ChannelId) -> Option<JoinReply> {
        self.lock().granted(topic, channel)
    }

    /// The leave of a topic whose join was still waiting has gone through.
    pub(crate) fn left(&self, topic: &Topic) {
        self.lock().left(topic)
    }

    /// Forget `topic` (the node side); what it was.
    pub(crate) fn remove(&self, topic: &Topic) -> Option<ChannelState> {
        self.lock().remove(topic)
    }

    /// Forget every topic (the connection ended); what they were. A reader that tracks its
    /// channels keeps them until it is done.
    pub(crate) fn take_channels(&self) -> Vec<(Topic, ChannelState)> {
        self.lock().take_node_side()
    }

    /// Whether `topic` is joined as `channel` now.
    fn is_current(&self, topic: &Topic, channel: ChannelId) -> bool {
        self.lock().is_current(topic, channel)
    }

    fn is_joined(&self, topic: &Topic) -> bool {
        self.lock().is_joined(topic)
    }

    /// Start a join of `topic`; its answer goes to `reply`; `tag`: the reader tracks it.
    fn join(
        &self,
        topic: Topic,
        tab: Option<TabId>,
        meta: Meta,
        reply: JoinReply,
        tag: Option<ChannelTag>,
    ) -> Result<(), JoinError> {
        {
            let mut channels = self.lock();
            if channels.has(topic.as_str()) {
                return Err(JoinError::AlreadyJoined);
            }
            if channels.node_count() >= self.max_topics {
                return Err(JoinError::TooManyTopics);
            }
            channels.start(topic.clone(), reply, tag);
        }
        let join = ClientJoin {
            socket: self.socket,
            topic: topic.clone(),
            user: self.user.clone(),
            role: self.role.clone(),
            tab,
            meta,
        };
        if self.node.send(NodeMsg::Input(Input::Join(join))).is_err() {
            self.lock().forget(topic.as_str());
            return Err(JoinError::Closed);
        }
        Ok(())
    }

    fn leave(&self, topic: Topic) {
        let msg = self.lock().leave(topic.as_str());
        if let Some((topic, channel)) = msg {
            let _ = self.node.send(NodeMsg::Leave { socket: self.socket, topic, channel });
        }
    }

    /// The reader leaves `topic`, joined or joining (and so does the node side): whether it
    /// was in it.
    fn reader_leave(&self, topic: &str) -> bool {
        let msg = self.lock().reader_leave(topic);
        match msg {
            None => false,
            Some(msg) => {
                if let Some((topic, channel)) = msg {
                    let _ = self.node.send(NodeMsg::Leave { socket: self.socket, topic, channel });
                }
                true
            }
        }
    }

    fn update_meta(&self, topic: Topic, meta: Meta) -> Result<(), PushError> {
        if self.user.is_none() {
            return Err(PushError::Unauthorized);
        }
        if !self.is_joined(&topic) {
            return Err(PushError::NotJoined);
        }
        let input = Input::UpdateMeta { socket: self.socket, topic, meta };
        self.node.send(NodeMsg::Input(input)).map_err(|_| PushError::Closed)
    }

    fn push(&self, topic: Topic, event: String, body: MetaValue) -> Result<(), PushError> {
        let Some(user) = &self.user else { return Err(PushError::Unauthorized) };
        if !self.is_joined(&topic) {
            return Err(PushError::NotJoined);
        }
        let msg = NodeMsg::Broadcast { topic, from: user.clone(), event, body, except: Some(self.socket) };
        self.node.send(msg).map_err(|_| PushError::Closed)
    }
}

/// One socket on this node: joins several topics, receives their events in order.
pub struct Connection {
    shared: Arc<ConnShared>,
    join_wait: Duration,
    /// Its end is reported by the Gateway watching its task, not by dropping it.
    supervised: bool,
    /// Dropping closes cleanly (a session's leave) or as a drop (a vanished client).
    pub(crate) drop_clean: bool,
    closed: bool,
}

impl Connection {
    pub(crate) fn new(shared: Arc<ConnShared>, join_wait: Duration, supervised: bool) -> Self {
        Self { shared, join_wait, supervised, drop_clean: false, closed: false }
    }

    /// The socket id.
    pub fn socket(&self) -> SocketId {
        self.shared.socket
    }

    /// The signed-in user, if any.
    pub fn user(&self) -> Option<&UserId> {
        self.shared.user.as_ref()
    }

    /// A cloneable handle for joins, leaves and pushes, usable while another task reads the
    /// events.
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle { shared: self.shared.clone(), join_wait: self.join_wait }
    }

    /// Join `topic` as `tab` with `meta`. Waits as long as the topic's policy makes it wait
    /// (at most the server's `join_wait_ms`). The topic's list follows as the first event.
    pub async fn join(&self, topic: impl Into<Topic>, tab: Option<TabId>, meta: Meta) -> Result<Joined, JoinError> {
        self.handle().join(topic, tab, meta).await
    }

    /// Start a join whose answer comes through the event queue, in order with everything else
    /// ([`Outbound::Joined`] or [`Outbound::JoinFailed`], read by
    /// [`recv_outbound`](Self::recv_outbound)), as a gateway wants it. Refused at once when the
    /// connection is in the topic already or in `max_topics_per_socket` topics.
    pub fn send_join(&self, topic: impl Into<Topic>, tab: Option<TabId>, meta: Meta) -> Result<(), JoinError> {
        self.shared.join(topic.into(), tab, meta, None, None)
    }

    /// Leave `topic` cleanly.
    pub fn leave(&self, topic: impl Into<Topic>) {
        self.shared.leave(topic.into())
    }

    /// Replace this connection's meta in `topic` (subscribers see one leave and one join).
    pub async fn update_meta(&self, topic: impl Into<Topic>, meta: Meta) -> Result<(), PushError> {
        self.shared.update_meta(topic.into(), meta)
    }

    /// Broadcast `event` with `body` to every other connection in `topic`.
    pub async fn push(
        &self,
        topic: impl Into<Topic>,
        event: impl Into<String>,
        body: MetaValue,
    ) -> Result<(), PushError> {
        self.shared.push(topic.into(), event.into(), body)
    }

    /// The next event; `None` once the connection has ended (see [`Connection::close_reason`]).
    /// Pushes for a channel the connection has since left are skipped.
    pub async fn recv(&mut self) -> Option<ConnEvent> {
        loop {
            let item = self.shared.queue.recv().await?;
            if let Some(event) = self.event(item) {
                return Some(event);
            }
        }
    }

    /// An event if one is queued.
    pub fn try_recv(&mut self) -> Option<ConnEvent> {
        while let Some(item) = self.shared.queue.try_recv() {
            if let Some(event) = self.event(item) {
                return Some(event);
            }
        }
        None
    }

    /// The next item as queued, for a gateway that writes shared pushes as they are encoded
    /// and tells channels apart itself; `None` once the connection has ended.
    pub async fn recv_outbound(&mut self) -> Option<Outbound> {
        self.shared.queue.recv().await
    }

    /// [`recv_outbound`](Self::recv_outbound) if an item is queued.
    pub fn try_recv_outbound(&mut self) -> Option<Outbound> {
        self.shared.queue.try_recv()
    }

    /// How many items are queued now: a gateway that takes them in a batch sizes its list of
    /// what to write once, instead of regrowing it item by item.
    pub fn queued_outbound(&self) -> usize {
        self.shared.queue.len()
    }

    /// Resolves once the connection has ended from the node's side: its queue overflowed (a
    /// slow client) or the node shuts down. A gateway blocked writing to a client waits on it.
    pub async fn ended(&self) {
        self.shared.queue.wait_ended().await
    }

    fn event(&self, item: Outbound) -> Option<ConnEvent> {
        match item {
            Outbound::Revoked { topic, reason, .. } => Some(ConnEvent::Revoked { topic, reason }),
            Outbound::Closed { topic, .. } => Some(ConnEvent::Closed { topic }),
            Outbound::Push { channel, push } => {
                if !self.shared.is_current(push.topic(), channel) {
                    return None;
                }
                let topic = push.topic().clone();
                Some(match push.body() {
                    PushBody::State(state) => ConnEvent::State { topic, state: state.clone() },
                    PushBody::Diff(diff) => ConnEvent::Diff { topic, diff: diff.clone() },
                    PushBody::Broadcast { from, event, body } => {
                        ConnEvent::Broadcast { topic, from: from.clone(), event: event.clone(), body: body.clone() }
                    }
                })
            }
            Outbound::Joined { .. } | Outbound::JoinFailed { .. } => None,
        }
    }

    /// Why the connection ended ([`CloseReason::Open`] while it has not).
    pub fn close_reason(&self) -> CloseReason {
        self.shared.close_reason()
    }

    /// Close: `clean` for a close on purpose (slots freed at once), otherwise as a dropped
    /// client (a `reserve_ms` reservation applies).
    pub fn close(mut self, clean: bool) {
        self.closed = true;
        self.shared.end(if clean { CloseReason::Clean } else { CloseReason::Dropped }, clean);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.closed && !self.supervised {
            let clean = self.drop_clean;
            self.shared.end(if clean { CloseReason::Clean } else { CloseReason::Dropped }, clean);
        }
    }
}

/// The sending half of a [`Connection`]: joins, leaves, meta updates and pushes. Cheap to
/// clone; it does not keep the connection open.
#[derive(Clone)]
pub struct ConnectionHandle {
    shared: Arc<ConnShared>,
    join_wait: Duration,
}

/// How long a join may take beyond the configured join wait before the node counts as gone.
const JOIN_MARGIN: Duration = Duration::from_secs(5);

impl ConnectionHandle {
    /// See [`Connection::join`].
    pub async fn join(&self, topic: impl Into<Topic>, tab: Option<TabId>, meta: Meta) -> Result<Joined, JoinError> {
        let (tx, rx) = oneshot::channel();
        self.shared.join(topic.into(), tab, meta, Some(tx), None)?;
        match tokio::time::timeout(self.join_wait + JOIN_MARGIN, rx).await {
            Ok(Ok(result)) => result,
            _ => Err(JoinError::Closed),
        }
    }

    /// See [`Connection::send_join`].
    pub fn send_join(&self, topic: impl Into<Topic>, tab: Option<TabId>, meta: Meta) -> Result<(), JoinError> {
        self.shared.join(topic.into(), tab, meta, None, None)
    }

    /// [`send_join`](Self::send_join) for a reader that keeps its channels here (a gateway
    /// reading [`Connection::recv_outbound`]), with `tag` (seven bytes of its own: a gateway
    /// packs the client's `join_ref` in it). The channel is then the reader's too, joining
    /// until it reads the answer ([`read_granted`](Self::read_granted),
    /// [`read_refused`](Self::read_refused)), joined until it reads its close
    /// ([`read_closed`](Self::read_closed)) or leaves ([`leave_tracked`](Self::leave_tracked)):
    /// what the reader writes for a channel follows the order of its queue, not the node's
    /// turns. Refused at once when the connection is in the topic already, on either side.
    pub fn send_join_tracked(
        &self,
        topic: impl Into<Topic>,
        tab: Option<TabId>,
        meta: Meta,
        tag: ChannelTag,
    ) -> Result<(), JoinError> {
        self.shared.join(topic.into(), tab, meta, None, Some(tag))
    }

    /// Whether the reader is in `topic` or joining it.
    pub fn tracks(&self, topic: &str) -> bool {
        self.shared.lock().reader_has(topic)
    }

    /// The node's shared copy of `topic`, if the reader is in it (it read the grant).
    pub fn tracked_topic(&self, topic: &str) -> Option<Topic> {
        self.shared.lock().reader_topic(topic)
    }

    /// The reader read [`Outbound::Joined`] for `topic` as `channel`: the channel is joined for
    /// it; its tag. `None` if the reader left the topic, or the grant answers an earlier join of
    /// it (drop it).
    pub fn read_granted(&self, topic: &str, channel: ChannelId) -> Option<ChannelTag> {
        self.shared.lock().reader_granted(topic, channel)
    }

    /// The reader read [`Outbound::JoinFailed`] for `topic`: its join is forgotten; its tag.
    /// `None` if the reader left the topic, or the refusal answers an earlier join of it (drop
    /// it).
    pub fn read_refused(&self, topic: &str) -> Option<ChannelTag> {
        self.shared.lock().reader_refused(topic)
    }

    /// The reader read [`Outbound::Revoked`] or [`Outbound::Closed`] for `topic`'s `channel`:
    /// forgotten if the reader is in it as `channel`; its tag (`None`: drop it).
    pub fn read_closed(&self, topic: &str, channel: ChannelId) -> Option<ChannelTag> {
        self.shared.lock().reader_closed(topic, channel)
    }

    /// The tag of `topic` if the reader is in it as `channel` (`None`: a push for a channel
    /// since left, or for an earlier join of the topic; drop it).
    pub fn tag(&self, topic: &str, channel: ChannelId) -> Option<ChannelTag> {
        self.shared.lock().reader_tag(topic, channel)
    }

    /// The reader leaves `topic`, joined or joining, and the connection leaves it: whether
    /// the reader was in it.
    pub fn leave_tracked(&self, topic: &str) -> bool {
        self.shared.reader_leave(topic)
    }

    /// Every channel the reader is in or joining, with its tag; the reader is done with them
    /// (the connection is about to end).
    pub fn drain_tracked(&self) -> Vec<(Topic, ChannelTag)> {
        self.shared.lock().reader_drain()
    }

    /// See [`Connection::leave`].
    pub fn leave(&self, topic: impl Into<Topic>) {
        self.shared.leave(topic.into())
    }

    /// See [`Connection::update_meta`] (it does not wait).
    pub fn update_meta(&self, topic: impl Into<Topic>, meta: Meta) -> Result<(), PushError> {
        self.shared.update_meta(topic.into(), meta)
    }

    /// See [`Connection::push`] (it does not wait).
    pub fn push(&self, topic: impl Into<Topic>, event: impl Into<String>, body: MetaValue) -> Result<(), PushError> {
        self.shared.push(topic.into(), event.into(), body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_core::SubscriberId;

    fn conn(max_topics: usize) -> ConnShared {
        ConnShared::new(ConnParts {
            socket: SocketId(1),
            user: Some(UserId::from("u")),
            role: None,
            node: ClientInbox::new(),
            max_frames: 16,
            max_bytes: 1 << 16,
            max_topics,
            open: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn join(c: &ConnShared, topic: &str) -> Result<(), JoinError> {
        c.join(Topic::from(topic), None, Meta::default(), None, None)
    }

    fn join_tracked(c: &ConnShared, topic: &str, tag: u8) -> Result<(), JoinError> {
        c.join(Topic::from(topic), None, Meta::default(), None, Some([tag; 7]))
    }

    /// The leaves the node actor was sent, in order.
    fn leaves(c: &ConnShared) -> Vec<(String, Option<ChannelId>)> {
        let mut msgs = Vec::new();
        c.node.take(usize::MAX, &mut msgs);
        msgs.into_iter()
            .filter_map(|m| match m {
                NodeMsg::Leave { topic, channel, .. } => Some((topic.as_str().to_owned(), channel)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_granted_join_keeps_the_nodes_copy_of_the_topic() {
        let c = conn(10);
        join(&c, "room:1").unwrap();
        assert!(!c.is_joined(&Topic::from("room:1")), "not joined while its join waits");
        let shared = Topic::from("room:1");
        assert!(matches!(c.granted(&shared, SubscriberId(3)), Some(None)));
        assert!(c.is_current(&Topic::from("room:1"), SubscriberId(3)));
        assert!(!c.is_current(&Topic::from("room:1"), SubscriberId(4)));
        let taken = c.take_channels();
        assert!(matches!(&taken[..], [(t, ChannelState::Joined(SubscriberId(3)))] if t.ptr_eq(&shared)));
    }

    #[test]
    fn joins_count_waiting_and_joined_topics_against_the_limit_and_refuse_a_second_join() {
        let c = conn(2);
        join(&c, "a").unwrap();
        assert!(matches!(join(&c, "a"), Err(JoinError::AlreadyJoined)));
        c.granted(&Topic::from("a"), SubscriberId(1));
        assert!(matches!(join(&c, "a"), Err(JoinError::AlreadyJoined)));
        join(&c, "b").unwrap();
        assert!(matches!(join(&c, "c"), Err(JoinError::TooManyTopics)));
    }

    #[test]
    fn a_leave_while_joining_drops_the_grant_and_a_rejoin_waits_for_the_leave() {
        let c = conn(10);
        let t = Topic::from("room:1");
        join(&c, "room:1").unwrap();
        c.leave(t.clone());
        assert_eq!(leaves(&c), vec![("room:1".to_owned(), None)]);
        assert!(matches!(join(&c, "room:1"), Err(JoinError::AlreadyJoined)), "its leave has not gone through");
        assert!(c.granted(&t, SubscriberId(1)).is_none(), "the answer to the left join is dropped");
        assert!(!c.is_joined(&t));
        join(&c, "room:1").unwrap();
        assert!(c.granted(&t, SubscriberId(2)).is_some());
        assert!(c.is_current(&t, SubscriberId(2)));
    }

    #[test]
    fn a_leave_of_a_joined_topic_then_a_rejoin_is_a_new_channel() {
        let c = conn(10);
        let t = Topic::from("room:1");
        join(&c, "room:1").unwrap();
        c.granted(&t, SubscriberId(1));
        c.leave(t.clone());
        assert_eq!(leaves(&c), vec![("room:1".to_owned(), Some(SubscriberId(1)))]);
        assert!(!c.is_joined(&t));
        join(&c, "room:1").unwrap();
        c.granted(&t, SubscriberId(2));
        assert!(!c.is_current(&t, SubscriberId(1)));
        assert!(c.is_current(&t, SubscriberId(2)));
    }

    #[test]
    fn remove_and_take_say_what_each_topic_was() {
        let c = conn(10);
        for t in ["a", "b", "c"] {
            join(&c, t).unwrap();
        }
        c.granted(&Topic::from("a"), SubscriberId(1));
        c.leave(Topic::from("b"));
        assert!(matches!(c.remove(&Topic::from("a")), Some(ChannelState::Joined(SubscriberId(1)))));
        assert!(c.remove(&Topic::from("a")).is_none());
        let mut all: Vec<(String, &str)> =
            c.take_channels().into_iter().map(|(t, s)| (t.as_str().to_owned(), s.name())).collect();
        all.sort();
        assert_eq!(all, vec![("b".to_owned(), "leaving"), ("c".to_owned(), "joining")]);
        assert!(c.take_channels().is_empty());
    }

    #[test]
    fn a_tracked_channel_stays_the_readers_until_it_reads_its_close_and_a_rejoin_waits_for_that() {
        let c = conn(1);
        let t = Topic::from("room:1");
        join_tracked(&c, "room:1", 7).unwrap();
        c.granted(&t, SubscriberId(1));
        assert_eq!(c.lock().reader_granted("room:1", SubscriberId(1)), Some([7; 7]));
        // The node revokes it: no longer joined, nor counted against the limit, but the
        // reader writes what was queued before the revoke and refuses a rejoin until it reads it.
        assert!(matches!(c.remove(&t), Some(ChannelState::Joined(SubscriberId(1)))));
        assert!(!c.is_joined(&t));
        assert!(matches!(join_tracked(&c, "room:1", 8), Err(JoinError::AlreadyJoined)));
        join(&c, "room:2").unwrap();
        assert!(matches!(join(&c, "room:3"), Err(JoinError::TooManyTopics)), "room:1 no longer counts");
        assert_eq!(c.lock().reader_tag("room:1", SubscriberId(1)), Some([7; 7]));
        assert!(!c.reader_leave("room:2"), "not the reader's");
        assert_eq!(c.lock().reader_closed("room:1", SubscriberId(1)), Some([7; 7]));
        assert!(!c.reader_leave("room:1"), "the reader is done with it");
        assert!(leaves(&c).is_empty());
        c.leave(Topic::from("room:2"));
        c.left(&Topic::from("room:2"));
        join_tracked(&c, "room:1", 8).unwrap();
        assert!(c.reader_leave("room:1"));
        assert_eq!(leaves(&c), vec![("room:2".to_owned(), None), ("room:1".to_owned(), None)]);
    }
}
