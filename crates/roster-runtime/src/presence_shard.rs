//! `PresenceShard`: the read side of presence for the topics that hash to it. It runs the
//! core's [`Fanout`] (each topic's subscribers and diff window: every subscriber gets one
//! `presence_state` and then the diffs that compose with it, exactly), builds each window's diff
//! and state and each broadcast once ([`Push`], encoded once when the node has an encoder), and
//! hands the same `Arc` to every subscriber's queue.
//!
//! ```text
//! NodeSupervisor
//! ├── NodeActor ──changes+lists, subscriptions, broadcasts──▶ PresenceShard(0..k)  ◀── here
//! └── Gateway                                                      │ Arc<Push>
//!     └── connection ◀── OutboundQueue ◀──────────────────────────┘
//! ```
//!
//! The node actor sends a topic's changes and subscriptions in the order they happened, one
//! batch per turn, and after the last of a topic's in the batch the topic's list as the turn
//! left it, so what a shard hands a new subscriber agrees with the changes it has seen.

use crate::clock::Clock;
use crate::connection::ConnShared;
use crate::outbound::{deliver, ChannelId, Outbound, Push, PushBody, PushEncoder};
use crate::wake_timer::WakeTimer;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use roster_core::{
    Delivery, Fanout, MetaValue, PresenceDiff, PresenceList, SocketId, SubscriberId, Topic, TopicChanges, UserId,
};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What an embedding subscription ([`TopicPresence::subscribe`](crate::TopicPresence::subscribe))
/// receives: the list once, then the diffs that compose with it.
#[derive(Clone, Debug, PartialEq)]
pub enum PresenceFeed {
    /// The topic's list (`presence_state`).
    State(Arc<PresenceList>),
    /// A window's joins and leaves (`presence_diff`).
    Diff(Arc<PresenceDiff>),
}

/// Who receives a topic's pushes.
#[derive(Clone, Debug)]
pub(crate) enum Subscriber {
    /// A channel of a connection.
    Channel {
        /// The connection.
        conn: Arc<ConnShared>,
        /// Its channel in the topic.
        channel: ChannelId,
    },
    /// An embedding subscription; a full or closed channel ends it. Behind a pointer, so a
    /// `Subscriber` is 16 bytes (a topic's fan-out keeps one per channel, each a presence).
    Feed(Arc<FeedSub>),
}

impl roster_core::Subscriber for Subscriber {
    /// A channel's id is its subscription's (the fan-out keeps no other copy of it).
    fn id(&self) -> SubscriberId {
        match self {
            Subscriber::Channel { channel, .. } => *channel,
            Subscriber::Feed(sub) => sub.id,
        }
    }
}

/// An embedding subscription, as a shard keeps it.
#[derive(Debug)]
pub(crate) struct FeedSub {
    /// Its id, to unsubscribe.
    pub(crate) id: SubscriberId,
    /// Where the list and the diffs go.
    pub(crate) tx: mpsc::Sender<PresenceFeed>,
}

/// Messages to a presence shard.
#[derive(RactorMessage)]
pub(crate) enum ShardMsg {
    /// Joins and leaves of a topic of this shard, from the node actor; the topic's list
    /// follows in the same batch ([`ShardMsg::Latest`]).
    Change {
        /// The topic.
        topic: Topic,
        /// What changed.
        changes: TopicChanges,
    },
    /// Start sending a topic to a subscriber; the topic's list follows in the same batch.
    Subscribe {
        /// The topic.
        topic: Topic,
        /// Who (it knows its subscription's id).
        sub: Subscriber,
    },
    /// A topic's list at the end of the node actor's turn, after the changes and subscriptions
    /// of that turn before it in the batch: taken once per topic and turn, however many joins
    /// and leaves the turn had (each snapshot makes the table copy the path it next changes).
    Latest {
        /// The topic.
        topic: Topic,
        /// Its list.
        list: PresenceList,
    },
    /// Stop sending a topic to a subscription.
    Unsubscribe {
        /// The topic.
        topic: Topic,
        /// The subscription.
        id: SubscriberId,
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
    /// A window may have closed.
    Flush,
    /// Several of the above, in order (what one node actor turn sent this shard).
    Batch(Vec<ShardMsg>),
}

/// What a shard is started with.
pub(crate) struct ShardArgs {
    /// Coalescing window of diffs.
    pub(crate) diff_ms: u64,
    /// The node's clock.
    pub(crate) clock: Clock,
    /// Encodes each push once for the node's gateway, if it has one.
    pub(crate) encoder: Option<Arc<dyn PushEncoder>>,
}

/// One presence shard. See the module documentation.
pub(crate) struct PresenceShard;

/// A shard's state.
pub(crate) struct ShardState {
    clock: Clock,
    fanout: Fanout<Subscriber>,
    encoder: Option<Arc<dyn PushEncoder>>,
    flush_at: Option<u64>,
    /// Sends `Flush` at `flush_at`.
    timer: WakeTimer,
}

impl ShardState {
    /// Hand `push` to one subscriber; an embedding subscription that cannot take it ends.
    fn send(&mut self, sub: &Subscriber, topic: &Topic, push: &Arc<Push>) {
        match sub {
            Subscriber::Channel { conn, channel } => {
                deliver(conn, Outbound::Push { channel: *channel, push: push.clone() });
            }
            Subscriber::Feed(sub) => {
                let FeedSub { id, tx } = &**sub;
                let feed = match push.body() {
                    PushBody::State(state) => PresenceFeed::State(state.clone()),
                    PushBody::Diff(diff) => PresenceFeed::Diff(diff.clone()),
                    PushBody::Broadcast { .. } => return,
                };
                if tx.try_send(feed).is_err() {
                    self.fanout.unsubscribe(topic, *id);
                }
            }
        }
    }

    fn push(&self, topic: &Topic, body: PushBody) -> Arc<Push> {
        Push::new(topic.clone(), body, self.encoder.as_deref())
    }

    fn flush(&mut self) {
        for delivery in self.fanout.flush(self.clock.now()) {
            let (topic, body, to) = match delivery {
                Delivery::State { topic, state, to } => (topic, PushBody::State(Arc::new(state)), to),
                Delivery::Diff { topic, diff, to } => (topic, PushBody::Diff(Arc::new(diff)), to),
            };
            let push = self.push(&topic, body);
            for sub in &to {
                self.send(sub, &topic, &push);
            }
        }
    }

    /// Wake for the earliest window, unless a wake-up at or before it is already set.
    fn schedule(&mut self) {
        if let Some(due) = self.fanout.due_at() {
            if self.flush_at.is_none_or(|at| due < at) {
                self.flush_at = Some(due);
                self.timer.set(due);
            }
        }
    }
}

impl Actor for PresenceShard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(&self, myself: ActorRef<ShardMsg>, args: ShardArgs) -> Result<ShardState, ActorProcessingErr> {
        Ok(ShardState {
            clock: args.clock,
            fanout: Fanout::new(args.diff_ms),
            encoder: args.encoder,
            flush_at: None,
            timer: WakeTimer::start(args.clock, myself, || ShardMsg::Flush),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        st: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        let now = st.clock.now();
        st.apply(msg, now);
        st.schedule();
        Ok(())
    }
}

impl ShardState {
    fn apply(&mut self, msg: ShardMsg, now: u64) {
        let st = self;
        match msg {
            // The batch's `Latest` replaces the placeholder lists before any window closes.
            ShardMsg::Change { topic, changes } => st.fanout.changes(&topic, changes, PresenceList::default(), now),
            ShardMsg::Subscribe { topic, sub } => st.fanout.subscribe(&topic, sub, PresenceList::default(), now),
            ShardMsg::Latest { topic, list } => st.fanout.latest(&topic, list),
            ShardMsg::Unsubscribe { topic, id } => {
                st.fanout.unsubscribe(&topic, id);
            }
            ShardMsg::Broadcast { topic, from, event, body, except } => {
                let members: Vec<Subscriber> = st
                    .fanout
                    .members(&topic)
                    .filter(|s| !matches!(s, Subscriber::Channel { conn, .. } if Some(conn.socket()) == except))
                    .cloned()
                    .collect();
                if !members.is_empty() {
                    let push = st.push(&topic, PushBody::Broadcast { from, event, body });
                    for sub in &members {
                        st.send(sub, &topic, &push);
                    }
                }
            }
            ShardMsg::Flush => {
                st.flush_at = None;
                st.flush();
            }
            ShardMsg::Batch(msgs) => {
                for msg in msgs {
                    st.apply(msg, now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_core::Subscriber as _;

    #[test]
    fn a_subscriber_is_16_bytes_and_carries_its_own_id() {
        // A topic's fan-out keeps one per channel (each a presence), and no id beside it.
        assert_eq!(std::mem::size_of::<Subscriber>(), 16);
        let (tx, _rx) = mpsc::channel(1);
        let feed = Subscriber::Feed(Arc::new(FeedSub { id: SubscriberId(7), tx }));
        assert_eq!(feed.id(), SubscriberId(7));
    }
}
