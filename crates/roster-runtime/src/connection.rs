//! `ConnectionActor`: one per socket (an embedded session or a WebSocket), local only. It
//! forwards the client's joins, leaves, meta updates and pushes to the node actor, and the
//! node's answers, revocations, presence diffs and broadcasts to the client's bounded outbound
//! queue. A client too slow to drain that queue is closed, never allowed to grow memory.
//!
//! ```text
//! NodeSupervisor
//! ├── NodeActor
//! ├── PresenceShard(0..k)
//! └── Gateway
//!     └── ConnectionActor   ◀── here (linked: however it ends, the Gateway sees it end)
//! ```
//!
//! Its end, whatever the cause (close, drop, panic, kill), reaches the Gateway as a supervision
//! event, which tells the node actor: the presence is untracked and the slot released with no
//! cleanup code in this actor that could fail to run.

use crate::error::{JoinError, PushError};
use crate::node_actor::NodeMsg;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use roster_core::{
    ClientEvent, ClientJoin, Input, Meta, MetaValue, PresenceDiff, PresenceList, Role, SlotToken, SocketId, TabId,
    Topic, UserId,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A successful join.
#[derive(Clone, Debug, PartialEq)]
pub struct Joined {
    /// The slot's fencing token; `None` for joins that hold no slot (anonymous, exempt roles).
    pub token: Option<SlotToken>,
    /// The topic's presence list right after the join (`presence_state`).
    pub state: Arc<PresenceList>,
}

/// What a connection's client is told, in order.
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
    /// Its actor crashed.
    Crashed = 4,
    /// The node is shutting down (clients should reconnect elsewhere).
    Shutdown = 5,
}

/// The close reason shared between the actor and the handle.
#[derive(Debug, Default)]
pub struct CloseState(AtomicU8);

impl CloseState {
    /// Record why the connection ends (the first reason wins).
    pub fn set(&self, reason: CloseReason) {
        let _ = self.0.compare_exchange(CloseReason::Open as u8, reason as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Why it ended.
    pub fn get(&self) -> CloseReason {
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

/// Messages to a connection actor.
#[derive(RactorMessage)]
pub enum ConnMsg {
    /// Join a topic.
    Join {
        /// The topic.
        topic: Topic,
        /// The browser tab.
        tab: Option<TabId>,
        /// The user's meta.
        meta: Meta,
        /// The answer.
        reply: RpcReplyPort<Result<Joined, JoinError>>,
    },
    /// Leave a topic cleanly.
    Leave {
        /// The topic.
        topic: Topic,
    },
    /// Replace this connection's meta in a topic (`presence:update`).
    UpdateMeta {
        /// The topic.
        topic: Topic,
        /// The new meta.
        meta: Meta,
        /// The answer.
        reply: RpcReplyPort<Result<(), PushError>>,
    },
    /// Broadcast an event to the topic's other subscribers.
    Push {
        /// The topic.
        topic: Topic,
        /// The event name.
        event: String,
        /// The payload.
        body: MetaValue,
        /// The answer.
        reply: RpcReplyPort<Result<(), PushError>>,
    },
    /// Close the connection (`clean`: on purpose; otherwise a drop).
    Close {
        /// Whether the close was clean.
        clean: bool,
    },
    /// From the node actor: an answer or event for one of this connection's topics.
    Event {
        /// The topic.
        topic: Topic,
        /// What happened.
        event: ClientEvent,
        /// For a join: the topic's list right after it.
        state: Option<Arc<PresenceList>>,
    },
    /// From a presence shard: a topic's coalesced diff.
    Diff {
        /// The topic.
        topic: Topic,
        /// The diff.
        diff: Arc<PresenceDiff>,
    },
    /// From a presence shard: another user's push.
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
    /// The node is shutting down: end with [`CloseReason::Shutdown`].
    Shutdown,
    /// Test support: make the actor panic, as a bug in it would.
    #[doc(hidden)]
    Panic,
}

/// What a connection actor starts with.
pub struct ConnArgs {
    /// Its socket id on this node.
    pub socket: SocketId,
    /// The signed-in user, or `None` for an anonymous viewer.
    pub user: Option<UserId>,
    /// The user's role.
    pub role: Option<Role>,
    /// The node actor.
    pub node: ActorRef<NodeMsg>,
    /// The client's bounded outbound queue.
    pub out: mpsc::Sender<ConnEvent>,
    /// Shared with the handle: why it ended.
    pub close: Arc<CloseState>,
    /// Topics one connection may join.
    pub max_topics: usize,
}

/// One connection. See the module documentation.
pub struct ConnectionActor;

/// A connection's state.
pub struct ConnState {
    args: ConnArgs,
    pending: HashMap<Topic, RpcReplyPort<Result<Joined, JoinError>>>,
    joined: HashSet<Topic>,
}

impl ConnState {
    /// Queue an event for the client; a full queue closes the connection as a slow client.
    fn emit(&self, myself: &ActorRef<ConnMsg>, event: ConnEvent) {
        match self.args.out.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.args.close.set(CloseReason::SlowClient);
                tracing::info!(socket = %self.args.socket, "slow client closed: outbound queue full");
                myself.stop(Some("slow_client".into()));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.args.close.set(CloseReason::Dropped);
                myself.stop(Some("dropped".into()));
            }
        }
    }
}

impl Actor for ConnectionActor {
    type Msg = ConnMsg;
    type State = ConnState;
    type Arguments = ConnArgs;

    async fn pre_start(&self, _myself: ActorRef<ConnMsg>, args: ConnArgs) -> Result<ConnState, ActorProcessingErr> {
        Ok(ConnState { args, pending: HashMap::new(), joined: HashSet::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<ConnMsg>,
        msg: ConnMsg,
        st: &mut ConnState,
    ) -> Result<(), ActorProcessingErr> {
        let node = &st.args.node;
        match msg {
            ConnMsg::Join { topic, tab, meta, reply } => {
                if st.joined.len() + st.pending.len() >= st.args.max_topics
                    && !st.joined.contains(&topic)
                    && !st.pending.contains_key(&topic)
                {
                    let _ = reply.send(Err(JoinError::TooManyTopics));
                    return Ok(());
                }
                if st.pending.contains_key(&topic) || st.joined.contains(&topic) {
                    let _ = reply.send(Err(JoinError::AlreadyJoined));
                    return Ok(());
                }
                let join = ClientJoin {
                    socket: st.args.socket,
                    topic: topic.clone(),
                    user: st.args.user.clone(),
                    role: st.args.role.clone(),
                    tab,
                    meta,
                };
                st.pending.insert(topic, reply);
                node.cast(NodeMsg::Input(Input::Join(join)))?;
            }
            ConnMsg::Leave { topic } => {
                if st.joined.remove(&topic) || st.pending.remove(&topic).is_some() {
                    node.cast(NodeMsg::Input(Input::Leave { socket: st.args.socket, topic }))?;
                }
            }
            ConnMsg::UpdateMeta { topic, meta, reply } => {
                let answer = if st.args.user.is_none() {
                    Err(PushError::Unauthorized)
                } else if !st.joined.contains(&topic) {
                    Err(PushError::NotJoined)
                } else {
                    node.cast(NodeMsg::Input(Input::UpdateMeta { socket: st.args.socket, topic, meta }))?;
                    Ok(())
                };
                let _ = reply.send(answer);
            }
            ConnMsg::Push { topic, event, body, reply } => {
                let answer = match &st.args.user {
                    None => Err(PushError::Unauthorized),
                    Some(_) if !st.joined.contains(&topic) => Err(PushError::NotJoined),
                    Some(user) => {
                        let except = Some(st.args.socket);
                        node.cast(NodeMsg::Broadcast { topic, from: user.clone(), event, body, except })?;
                        Ok(())
                    }
                };
                let _ = reply.send(answer);
            }
            ConnMsg::Close { clean } => {
                st.args.close.set(if clean { CloseReason::Clean } else { CloseReason::Dropped });
                myself.stop(Some(if clean { "clean" } else { "dropped" }.into()));
            }
            ConnMsg::Event { topic, event, state } => match event {
                ClientEvent::Joined { token } => {
                    if let Some(reply) = st.pending.remove(&topic) {
                        st.joined.insert(topic);
                        let state = state.unwrap_or_default();
                        let _ = reply.send(Ok(Joined { token, state }));
                    }
                }
                ClientEvent::JoinFailed { reason } => {
                    if let Some(reply) = st.pending.remove(&topic) {
                        let _ = reply.send(Err(JoinError::from_reason(&reason)));
                    }
                }
                ClientEvent::Revoked { reason } => {
                    st.joined.remove(&topic);
                    st.emit(&myself, ConnEvent::Revoked { topic, reason });
                }
                ClientEvent::Closed => {
                    st.joined.remove(&topic);
                    match st.pending.remove(&topic) {
                        Some(reply) => {
                            let _ = reply.send(Err(JoinError::Closed));
                        }
                        None => st.emit(&myself, ConnEvent::Closed { topic }),
                    }
                }
            },
            ConnMsg::Diff { topic, diff } => {
                if st.joined.contains(&topic) {
                    st.emit(&myself, ConnEvent::Diff { topic, diff });
                }
            }
            ConnMsg::Broadcast { topic, from, event, body } => {
                if st.joined.contains(&topic) {
                    st.emit(&myself, ConnEvent::Broadcast { topic, from, event, body });
                }
            }
            ConnMsg::Shutdown => {
                st.args.close.set(CloseReason::Shutdown);
                myself.stop(Some("shutdown".into()));
            }
            ConnMsg::Panic => panic!("injected panic in connection {}", st.args.socket),
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<ConnMsg>, st: &mut ConnState) -> Result<(), ActorProcessingErr> {
        // Joins still waiting get an answer; the Gateway reports the end to the node actor.
        for (_, reply) in st.pending.drain() {
            let _ = reply.send(Err(JoinError::Closed));
        }
        Ok(())
    }
}
