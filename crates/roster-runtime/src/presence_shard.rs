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
//!
//! **A burst's answers before its room's lists.** When a topic's window closes while joins
//! into it are still being answered (a joiner's answer waits in its connection's queue for a
//! reader that is about to take it, or the topic got a new subscriber in the last
//! [`BURST_GAP_MS`]), what the window sends (one `presence_state` to every joiner, a diff to
//! the others, each a write per receiver) is held back, that topic's only, and looked at
//! again every [`HOLD_STEP_MS`], for at most [`HOLD_WINDOWS`] × `diff_ms`. Whatever the topic
//! sends meanwhile queues behind it; then it all goes out in order. The window itself closed
//! on time (the core's [`Fanout`] is not held): every receiver gets the same pushes in the
//! same order as without the hold, later. An answer behind a client that does not read
//! ([`OutboundQueue::answer_due`](crate::outbound::OutboundQueue::answer_due)) holds
//! nothing, and no topic holds another's pushes. Only a window to at least
//! [`HOLD_MIN_RECEIVERS`] receivers starts a hold: a small room's writes delay no answer.

use crate::clock::Clock;
use crate::connection::ConnShared;
use crate::outbound::{deliver, ChannelId, Outbound, Push, PushBody, PushEncoder};
use crate::wake_timer::WakeTimer;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use roster_core::{
    Delivery, Fanout, MetaValue, PresenceDiff, PresenceList, SocketId, SubscriberId, Topic, TopicChanges, UserId,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A topic whose last new subscriber came less than this long ago (ms) is taken to be in a
/// burst of joins: a window closing then is held (module documentation).
pub(crate) const BURST_GAP_MS: u64 = 5;
/// How often a held topic is looked at again (ms).
pub(crate) const HOLD_STEP_MS: u64 = 1;
/// At most how many `diff_ms` a topic's pushes are held past the close of their window.
pub(crate) const HOLD_WINDOWS: u64 = 2;
/// The fewest receivers a window must have to start a hold: a small room's window is a few
/// small writes that delay no answer, and holding it would only make its views later.
pub(crate) const HOLD_MIN_RECEIVERS: usize = 64;

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
    /// Topics whose pushes are held back while a burst of joins into them is answered.
    holds: Holds,
}

/// A push and who gets it.
type Sends = (Arc<Push>, Vec<Subscriber>);

/// The holds of a shard's topics (module documentation).
struct Holds {
    /// The connections of the channels that joined a topic while its window is open (their
    /// answers may still wait for their sockets), and when the last one came.
    joiners: HashMap<Topic, Joiners>,
    /// What each held topic holds.
    held: HashMap<Topic, Held>,
    /// The longest a topic's pushes are held (ms).
    max: u64,
    /// The fewest receivers of a window that starts a hold ([`HOLD_MIN_RECEIVERS`]).
    min_receivers: usize,
}

/// A topic's recent joiners (see [`Holds::joiners`]).
#[derive(Default)]
struct Joiners {
    conns: Vec<Arc<ConnShared>>,
    last: u64,
}

/// A topic's pushes held back, in order.
struct Held {
    /// When the first of them was due.
    since: u64,
    pushes: Vec<Sends>,
}

impl Holds {
    fn new(diff_ms: u64) -> Self {
        Holds {
            joiners: HashMap::new(),
            held: HashMap::new(),
            max: HOLD_WINDOWS.saturating_mul(diff_ms),
            min_receivers: HOLD_MIN_RECEIVERS,
        }
    }

    /// A channel of `conn` joined `topic` at `now` (its answer is in `conn`'s queue already).
    fn joined(&mut self, topic: &Topic, conn: &Arc<ConnShared>, now: u64) {
        let joiners = self.joiners.entry(topic.clone()).or_default();
        joiners.conns.push(conn.clone());
        joiners.last = now;
    }

    /// What a window of `topic` sends at `now`: given back to send now, or kept, behind what
    /// the topic holds already or because a burst of joins into it is being answered (a
    /// window with fewer than [`HOLD_MIN_RECEIVERS`] receivers starts no hold).
    fn window(&mut self, topic: &Topic, sends: Sends, now: u64) -> Option<Sends> {
        if sends.1.len() >= self.min_receivers && !self.held.contains_key(topic) && self.answering(topic, now) {
            self.held.insert(topic.clone(), Held { since: now, pushes: Vec::new() });
        }
        self.behind(topic, sends)
    }

    /// `sends` kept behind what `topic` holds, or given back when it holds nothing.
    fn behind(&mut self, topic: &Topic, sends: Sends) -> Option<Sends> {
        match self.held.get_mut(topic) {
            Some(held) => {
                held.pushes.push(sends);
                None
            }
            None => Some(sends),
        }
    }

    /// Whether `topic` is being answered a burst of joins: a joiner's answer waits for a
    /// reader about to take it, or a joiner came within [`BURST_GAP_MS`].
    fn answering(&mut self, topic: &Topic, now: u64) -> bool {
        let Some(joiners) = self.joiners.get_mut(topic) else { return false };
        joiners.conns.retain(|conn| conn.queue().answer_due());
        !joiners.conns.is_empty() || now < joiners.last.saturating_add(BURST_GAP_MS)
    }

    /// The topics whose hold ends at `now` (answered, or held for the longest allowed), each
    /// with what it held, in order.
    fn ended(&mut self, now: u64) -> Vec<(Topic, Vec<Sends>)> {
        let topics: Vec<Topic> = self.held.keys().cloned().collect();
        let mut out = Vec::new();
        for topic in topics {
            let since = self.held.get(&topic).map_or(now, |h| h.since);
            if now >= since.saturating_add(self.max) || !self.answering(&topic, now) {
                if let Some(held) = self.held.remove(&topic) {
                    out.push((topic, held.pushes));
                }
            }
        }
        out
    }

    /// Forget the joiners of topics `keep` says no more about (and that hold nothing).
    fn forget(&mut self, keep: impl Fn(&Topic) -> bool) {
        let held = &self.held;
        self.joiners.retain(|topic, _| keep(topic) || held.contains_key(topic));
    }

    /// Forget `topic`'s joiners unless it holds something.
    fn forget_topic(&mut self, topic: &Topic) {
        if !self.held.contains_key(topic) {
            self.joiners.remove(topic);
        }
    }

    /// When to look at the held topics again, if any is held.
    fn next_look(&self, now: u64) -> Option<u64> {
        (!self.held.is_empty()).then(|| now + HOLD_STEP_MS)
    }
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

    fn flush(&mut self, now: u64) {
        // What was held goes first: a topic's newer pushes queue behind it.
        for (topic, held) in self.holds.ended(now) {
            for (push, to) in held {
                for sub in &to {
                    // An embedding subscription that left the topic meanwhile gets nothing (a
                    // channel's reader drops what comes for a channel it has left).
                    if let Subscriber::Feed(feed) = sub {
                        if !self.fanout.members(&topic).any(|s| roster_core::Subscriber::id(s) == feed.id) {
                            continue;
                        }
                    }
                    self.send(sub, &topic, &push);
                }
            }
        }
        for delivery in self.fanout.flush(now) {
            let (topic, body, to) = match delivery {
                Delivery::State { topic, state, to } => (topic, PushBody::State(Arc::new(state)), to),
                Delivery::Diff { topic, diff, to } => (topic, PushBody::Diff(Arc::new(diff)), to),
            };
            let push = self.push(&topic, body);
            if let Some((push, to)) = self.holds.window(&topic, (push, to), now) {
                for sub in &to {
                    self.send(sub, &topic, &push);
                }
            }
        }
        // A topic with no window open and nothing held has no joiner left to wait for.
        let fanout = &self.fanout;
        self.holds.forget(|topic| fanout.is_pending(topic));
    }

    /// Wake for the earliest window (or the next look at a held topic), unless a wake-up at
    /// or before it is already set.
    fn schedule(&mut self, now: u64) {
        let look = self.holds.next_look(now);
        let next = match (self.fanout.due_at(), look) {
            (Some(due), Some(look)) => Some(due.min(look)),
            (due, look) => due.or(look),
        };
        if let Some(next) = next {
            if self.flush_at.is_none_or(|at| next < at) {
                self.flush_at = Some(next);
                self.timer.set(next);
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
            holds: Holds::new(args.diff_ms),
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
        st.schedule(now);
        Ok(())
    }
}

impl ShardState {
    fn apply(&mut self, msg: ShardMsg, now: u64) {
        let st = self;
        match msg {
            // The batch's `Latest` replaces the placeholder lists before any window closes.
            ShardMsg::Change { topic, changes } => st.fanout.changes(&topic, changes, PresenceList::default(), now),
            ShardMsg::Subscribe { topic, sub } => {
                if let Subscriber::Channel { conn, .. } = &sub {
                    st.holds.joined(&topic, conn, now);
                }
                st.fanout.subscribe(&topic, sub, PresenceList::default(), now)
            }
            ShardMsg::Latest { topic, list } => st.fanout.latest(&topic, list),
            ShardMsg::Unsubscribe { topic, id } => {
                st.fanout.unsubscribe(&topic, id);
                // The topic's last subscriber gone: no window of it closes to forget its joiners.
                if !st.fanout.is_pending(&topic) {
                    st.holds.forget_topic(&topic);
                }
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
                    // In order with what the topic holds, if it holds anything.
                    if let Some((push, members)) = st.holds.behind(&topic, (push, members)) {
                        for sub in &members {
                            st.send(sub, &topic, &push);
                        }
                    }
                }
            }
            ShardMsg::Flush => {
                st.flush_at = None;
                st.flush(now);
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
    use crate::client_inbox::ClientInbox;
    use crate::connection::ConnParts;
    use roster_core::SocketId;
    use roster_core::Subscriber as _;
    use std::future::Future;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Waker};

    #[test]
    fn a_subscriber_is_16_bytes_and_carries_its_own_id() {
        // A topic's fan-out keeps one per channel (each a presence), and no id beside it.
        assert_eq!(std::mem::size_of::<Subscriber>(), 16);
        let (tx, _rx) = mpsc::channel(1);
        let feed = Subscriber::Feed(Arc::new(FeedSub { id: SubscriberId(7), tx }));
        assert_eq!(feed.id(), SubscriberId(7));
    }

    const DIFF_MS: u64 = 20;

    /// Holds that a window to a single receiver can start (the tests' windows have one).
    fn holds_of_one() -> Holds {
        let mut holds = Holds::new(DIFF_MS);
        holds.min_receivers = 1;
        holds
    }

    #[test]
    fn a_window_to_fewer_receivers_than_the_minimum_starts_no_hold() {
        let room = Topic::from("room");
        let joiner = conn(1);
        answer(&joiner, &room);
        let mut holds = Holds::new(DIFF_MS);
        holds.joined(&room, &joiner, 100);
        let t = 100 + BURST_GAP_MS;
        // A small room: its joiner's answer waits, yet its window goes at once.
        assert!(holds.window(&room, state(&room, &joiner), t).is_some(), "one receiver: not held");
        // The same window to the minimum number of receivers is held.
        let (push, one) = state(&room, &joiner);
        let many: Vec<Subscriber> = (0..HOLD_MIN_RECEIVERS).map(|_| one[0].clone()).collect();
        assert!(holds.window(&room, (push, many), t).is_none(), "a big room's window is held");
    }

    fn conn(socket: u64) -> Arc<ConnShared> {
        Arc::new(ConnShared::new(ConnParts {
            socket: SocketId(socket),
            user: Some(UserId::from("u")),
            role: None,
            node: ClientInbox::new(),
            max_frames: 16,
            max_bytes: 1 << 16,
            max_topics: 16,
            open: Arc::new(AtomicUsize::new(0)),
        }))
    }

    /// A join's answer in `conn`'s queue, as the node actor puts it there.
    fn answer(conn: &ConnShared, topic: &Topic) {
        deliver(conn, Outbound::Joined { topic: topic.clone(), channel: SubscriberId(1), token: None });
    }

    fn state(topic: &Topic, to: &Arc<ConnShared>) -> Sends {
        let push = Push::new(topic.clone(), PushBody::State(Arc::new(PresenceList::default())), None);
        (push, vec![Subscriber::Channel { conn: to.clone(), channel: SubscriberId(1) }])
    }

    fn diff(topic: &Topic, to: &Arc<ConnShared>) -> Sends {
        let push = Push::new(topic.clone(), PushBody::Diff(Arc::new(PresenceDiff::default())), None);
        (push, vec![Subscriber::Channel { conn: to.clone(), channel: SubscriberId(1) }])
    }

    fn kinds(sends: &[Sends]) -> Vec<&'static str> {
        sends
            .iter()
            .map(|(p, _)| match p.body() {
                PushBody::State(_) => "state",
                PushBody::Diff(_) => "diff",
                PushBody::Broadcast { .. } => "broadcast",
            })
            .collect()
    }

    #[test]
    fn a_window_closing_while_its_joiners_answers_wait_is_held_until_they_are_taken_and_keeps_its_order() {
        let (room, other) = (Topic::from("room"), Topic::from("other"));
        let (joiner, watcher, elsewhere) = (conn(1), conn(2), conn(3));
        let mut holds = holds_of_one();
        answer(&joiner, &room);
        holds.joined(&room, &joiner, 100);
        // Past the burst gap: only the answer waiting for its reader holds the room.
        let t = 100 + BURST_GAP_MS;
        assert!(holds.window(&room, state(&room, &joiner), t).is_none(), "held: the joiner's answer waits");
        assert!(holds.window(&room, diff(&room, &watcher), t).is_none(), "behind the held state");
        assert!(holds.window(&other, diff(&other, &elsewhere), t).is_some(), "another topic is not held");
        assert!(holds.ended(t + 1).is_empty(), "the answer still waits");
        assert_eq!(holds.next_look(t + 1), Some(t + 1 + HOLD_STEP_MS));
        // A broadcast of the held room queues behind too; one of another topic goes at once.
        let bc = Push::new(
            room.clone(),
            PushBody::Broadcast { from: UserId::from("u"), event: "e".into(), body: MetaValue::Null },
            None,
        );
        assert!(holds.behind(&room, (bc, vec![])).is_none());
        assert!(holds.behind(&other, diff(&other, &elsewhere)).is_some());
        // The socket takes its answer: the room's pushes go out at the next look, in order.
        assert!(matches!(joiner.queue().try_recv(), Some(Outbound::Joined { .. })));
        let ended = holds.ended(t + 2);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].0, room);
        assert_eq!(kinds(&ended[0].1), ["state", "diff", "broadcast"]);
        assert_eq!(holds.next_look(t + 2), None, "nothing held any more");
        assert!(holds.window(&room, diff(&room, &watcher), t + 3).is_some(), "the joiner's answer was taken");
    }

    #[test]
    fn a_joiner_that_came_within_the_burst_gap_holds_its_topic_even_with_every_answer_taken() {
        let room = Topic::from("room");
        let joiner = conn(1);
        let mut holds = holds_of_one();
        holds.joined(&room, &joiner, 100);
        assert!(holds.window(&room, state(&room, &joiner), 100 + BURST_GAP_MS - 1).is_none(), "a burst arrives");
        assert!(holds.ended(100 + BURST_GAP_MS - 1).is_empty());
        assert_eq!(holds.ended(100 + BURST_GAP_MS).len(), 1, "no joiner for the burst gap: released");
    }

    #[test]
    fn an_answer_behind_a_client_that_does_not_read_holds_nothing() {
        let room = Topic::from("room");
        let joiner = conn(1);
        answer(&joiner, &room);
        // The socket waits for its client (a full flow window), not for the queue.
        let mut parked = Box::pin(joiner.queue().wait_ended());
        assert!(parked.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
        let mut holds = holds_of_one();
        holds.joined(&room, &joiner, 100);
        let t = 100 + BURST_GAP_MS;
        assert!(holds.window(&room, state(&room, &joiner), t).is_some(), "sent at once");
        // The same answer holds the room while the socket is about to take it.
        drop(parked);
        holds.joined(&room, &joiner, t);
        assert!(holds.window(&room, state(&room, &joiner), t + BURST_GAP_MS).is_none());
    }

    #[test]
    fn a_hold_lasts_at_most_its_bound_and_an_ended_connection_holds_nothing() {
        let room = Topic::from("room");
        let (stuck, gone) = (conn(1), conn(2));
        answer(&stuck, &room);
        let mut holds = holds_of_one();
        holds.joined(&room, &stuck, 100);
        let t = 100 + BURST_GAP_MS;
        assert!(holds.window(&room, state(&room, &stuck), t).is_none());
        assert!(holds.ended(t + HOLD_WINDOWS * DIFF_MS - 1).is_empty(), "its answer still waits");
        assert_eq!(holds.ended(t + HOLD_WINDOWS * DIFF_MS).len(), 1, "held for the longest allowed");
        // A connection that ended with its answer unread (its socket is gone) holds nothing.
        assert!(stuck.queue().try_recv().is_some());
        answer(&gone, &room);
        gone.queue().end();
        holds.joined(&room, &gone, t);
        assert!(holds.window(&room, state(&room, &gone), t + BURST_GAP_MS).is_some());
    }

    #[test]
    fn the_joiners_of_a_topic_with_no_window_and_no_hold_are_forgotten() {
        let (room, other) = (Topic::from("room"), Topic::from("other"));
        let joiner = conn(1);
        let mut holds = holds_of_one();
        holds.joined(&room, &joiner, 100);
        holds.joined(&other, &joiner, 100);
        assert_eq!(Arc::strong_count(&joiner), 3);
        holds.forget(|t| t == &other);
        assert_eq!(Arc::strong_count(&joiner), 2, "the room's joiners are forgotten, the other topic's kept");
        assert!(holds.joiners.contains_key(&other) && !holds.joiners.contains_key(&room));
        holds.forget_topic(&other);
        assert_eq!(Arc::strong_count(&joiner), 1);
        // A topic that holds pushes keeps its joiners: they say when the hold ends.
        answer(&joiner, &room);
        holds.joined(&room, &joiner, 100);
        assert!(holds.window(&room, state(&room, &joiner), 100).is_none());
        holds.forget(|_| false);
        holds.forget_topic(&room);
        assert!(holds.joiners.contains_key(&room));
    }
}
