//! `PresenceShard`: the read side of presence for the topics that hash to it. It keeps each
//! topic's subscribers, coalesces the node actor's joins/leaves over `diff_ms` into one
//! `presence_diff` per topic, and fans broadcasts out to the topic's connections.
//!
//! ```text
//! NodeSupervisor
//! ├── NodeActor ──changes, subscriptions, broadcasts──▶ PresenceShard(0..k)  ◀── here
//! └── Gateway
//!     └── ConnectionActor ◀── diffs, broadcasts ──┘
//! ```

use crate::clock::Clock;
use crate::connection::ConnMsg;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use roster_core::{
    AnonymousMode, AnonymousView, Config, DiffCoalescer, MetaValue, PresenceChanges, PresenceDiff, SocketId, Topic,
    UserId,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Who receives a topic's diffs.
#[derive(Clone, Debug)]
pub enum Subscriber {
    /// A connection that joined the topic.
    Conn {
        /// Its socket.
        socket: SocketId,
        /// Its actor.
        conn: ActorRef<ConnMsg>,
    },
    /// An embedding subscription ([`TopicPresence::subscribe`](crate::TopicPresence::subscribe)).
    Channel {
        /// Its id, to unsubscribe.
        id: u64,
        /// Where diffs go; a full or closed channel ends the subscription.
        tx: mpsc::Sender<Arc<PresenceDiff>>,
    },
}

/// Messages to a presence shard.
#[derive(RactorMessage)]
pub enum ShardMsg {
    /// Joins and leaves of topics of this shard, from the node actor.
    Changes(PresenceChanges),
    /// Start sending a topic's diffs to a subscriber.
    Subscribe {
        /// The topic.
        topic: Topic,
        /// Who.
        sub: Subscriber,
    },
    /// Stop sending a topic's diffs to a socket.
    Unsubscribe {
        /// The topic.
        topic: Topic,
        /// The socket.
        socket: SocketId,
    },
    /// Send an event to every connection in the topic but the sender.
    Broadcast {
        /// The topic.
        topic: Topic,
        /// The signed-in sender.
        from: UserId,
        /// The event name.
        event: String,
        /// The payload.
        body: MetaValue,
        /// The sending socket (not echoed back), if it is on this node.
        except: Option<SocketId>,
    },
    /// The coalescing window may have closed.
    Flush,
}

/// What a shard is started with.
pub struct ShardArgs {
    /// The cluster configuration (for each topic's anonymous view).
    pub config: Arc<Config>,
    /// The node's clock.
    pub clock: Clock,
}

/// A topic's subscribers: connections by socket (so one leaves in O(1)), and embedding
/// channels.
#[derive(Default)]
pub struct TopicSubscribers {
    conns: HashMap<SocketId, ActorRef<ConnMsg>>,
    channels: Vec<(u64, mpsc::Sender<Arc<PresenceDiff>>)>,
}

impl TopicSubscribers {
    fn is_empty(&self) -> bool {
        self.conns.is_empty() && self.channels.is_empty()
    }
}

/// One presence shard. See the module documentation.
pub struct PresenceShard;

/// A shard's state.
pub struct ShardState {
    config: Arc<Config>,
    clock: Clock,
    subscribers: HashMap<Topic, TopicSubscribers>,
    coalescer: DiffCoalescer,
    flush_scheduled: bool,
}

/// How a topic shows anonymous viewers, from its policy.
fn view_of(config: &Config, topic: &Topic) -> AnonymousView {
    match config.policy_for(topic).anonymous {
        AnonymousMode::List => AnonymousView::List,
        _ => AnonymousView::Count,
    }
}

impl Actor for PresenceShard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(&self, _myself: ActorRef<ShardMsg>, args: ShardArgs) -> Result<ShardState, ActorProcessingErr> {
        let diff_ms = args.config.presence.diff_ms;
        Ok(ShardState {
            config: args.config,
            clock: args.clock,
            subscribers: HashMap::new(),
            coalescer: DiffCoalescer::new(diff_ms),
            flush_scheduled: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        st: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Changes(changes) => {
                // Topics nobody watches need no diff.
                let watched: PresenceChanges =
                    changes.into_iter().filter(|(t, _)| st.subscribers.contains_key(t)).collect();
                if !watched.is_empty() {
                    st.coalescer.push(watched, st.clock.now());
                    if !st.flush_scheduled {
                        st.flush_scheduled = true;
                        let due = st.coalescer.due_at().unwrap_or_else(|| st.clock.now());
                        myself.send_after(st.clock.until(due), || ShardMsg::Flush);
                    }
                }
            }
            ShardMsg::Subscribe { topic, sub } => {
                // Its presence_state was taken after every change this shard has had: the open
                // window's diff must fit it too.
                st.coalescer.subscribed(&topic);
                let subs = st.subscribers.entry(topic).or_default();
                match sub {
                    Subscriber::Conn { socket, conn } => {
                        subs.conns.insert(socket, conn);
                    }
                    Subscriber::Channel { id, tx } => subs.channels.push((id, tx)),
                }
            }
            ShardMsg::Unsubscribe { topic, socket } => {
                if let Some(subs) = st.subscribers.get_mut(&topic) {
                    subs.conns.remove(&socket);
                    if subs.is_empty() {
                        st.subscribers.remove(&topic);
                    }
                }
            }
            ShardMsg::Broadcast { topic, from, event, body, except } => {
                if let Some(subs) = st.subscribers.get(&topic) {
                    for (socket, conn) in &subs.conns {
                        if Some(*socket) != except {
                            let _ = conn.cast(ConnMsg::Broadcast {
                                topic: topic.clone(),
                                from: from.clone(),
                                event: event.clone(),
                                body: body.clone(),
                            });
                        }
                    }
                }
            }
            ShardMsg::Flush => {
                st.flush_scheduled = false;
                let now = st.clock.now();
                // Views only for the topics flushed now (never a pass over every topic).
                let config = &st.config;
                let diffs = st.coalescer.flush(now, |t| view_of(config, t));
                for (topic, diff) in diffs {
                    if diff.is_empty() {
                        continue;
                    }
                    let diff = Arc::new(diff);
                    if let Some(subs) = st.subscribers.get_mut(&topic) {
                        subs.conns.retain(|_, conn| {
                            conn.cast(ConnMsg::Diff { topic: topic.clone(), diff: diff.clone() }).is_ok()
                        });
                        subs.channels.retain(|(_, tx)| tx.try_send(diff.clone()).is_ok());
                        if subs.is_empty() {
                            st.subscribers.remove(&topic);
                        }
                    }
                }
                if let Some(due) = st.coalescer.due_at() {
                    st.flush_scheduled = true;
                    myself.send_after(st.clock.until(due), || ShardMsg::Flush);
                }
            }
        }
        Ok(())
    }
}
