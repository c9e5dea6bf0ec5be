//! A connection's channels: one entry per topic, as two sides see it.
//!
//! - **The node side** (the connection's joins and leaves, and the node actor's grants,
//!   refusals and closes): joining, leaving (left while its join waited), joined as a runtime
//!   channel, or gone.
//! - **The reader side**, for a connection whose reader keeps its channels here (a WebSocket:
//!   [`ConnectionHandle::send_join_tracked`](crate::ConnectionHandle::send_join_tracked)): the
//!   reader learns of a grant, a refusal or a close when it reads it from the queue, after the
//!   node side has changed, so it keeps its own state of each channel, joining or joined, with a
//!   [`ChannelTag`] of its own (a gateway packs the client's `join_ref` in it).
//!
//! One list serves both (it was one list each: the socket's and the connection's, 32 + 24
//! bytes a joined topic, and a short-lived entry in each per join): an entry is 24 bytes, made
//! in place by the join and kept until both sides are done with it. A new join of a topic
//! waits until its entry is gone on both sides, so a topic has one entry at most. A socket
//! has a few channels (at most `max_topics_per_socket`), so this is a list, sized to what it
//! holds ([`roster_core::grow_by`]).

use crate::connection::{ChannelState, JoinReply, Joined};
use crate::error::JoinError;
use crate::outbound::ChannelId;
use roster_core::{SubscriberId, Topic};
use tokio::sync::oneshot;

/// Seven bytes the reader of a connection keeps with each channel it tracks (a gateway: the
/// client's `join_ref`, packed).
pub type ChannelTag = [u8; 7];

/// The channel of an entry not granted (yet): the node actor numbers channels from 0 up.
const UNGRANTED: ChannelId = SubscriberId(u64::MAX);

/// Where a channel stands on the node side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeSide {
    Gone = 0,
    /// The join waits for its answer.
    Joining = 1,
    /// Left while its join waited: the node's answer to that join, when it comes, is dropped
    /// (it must not be taken for a later join of the topic). A new join of the topic is
    /// refused until the leave has gone through.
    Leaving = 2,
    /// Joined: pushes for this channel are its own.
    Joined = 3,
}

/// Where a channel stands on the reader side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReaderSide {
    /// Not tracked (an embedded connection's), or done.
    None = 0,
    /// The reader has not read the join's answer yet.
    Joining = 1,
    /// The reader read the grant.
    Joined = 2,
}

/// Both sides in one byte: the node's in the low half, the reader's in the high.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sides(u8);

impl Sides {
    fn new(node: NodeSide, reader: ReaderSide) -> Self {
        Sides(node as u8 | (reader as u8) << 4)
    }

    fn node(self) -> NodeSide {
        match self.0 & 0x0f {
            1 => NodeSide::Joining,
            2 => NodeSide::Leaving,
            3 => NodeSide::Joined,
            _ => NodeSide::Gone,
        }
    }

    fn reader(self) -> ReaderSide {
        match self.0 >> 4 {
            1 => ReaderSide::Joining,
            2 => ReaderSide::Joined,
            _ => ReaderSide::None,
        }
    }

    fn with_node(self, node: NodeSide) -> Self {
        Sides::new(node, self.reader())
    }

    fn with_reader(self, reader: ReaderSide) -> Self {
        Sides::new(self.node(), reader)
    }
}

/// One topic's channel.
#[derive(Debug)]
struct Entry {
    /// The node's shared copy once the join is granted (the one the join named before).
    topic: Topic,
    /// The runtime channel once granted ([`UNGRANTED`] before); kept after the node side is
    /// done, for the reader's close.
    channel: ChannelId,
    sides: Sides,
    tag: ChannelTag,
}

/// A node-side leave to send the node actor: the topic, and its channel if it was joined
/// (`None`: its join was still waiting).
pub(crate) type LeaveMsg = (Topic, Option<ChannelId>);

/// A connection's channels. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct ConnChannels {
    entries: Vec<Entry>,
    /// The callers waiting for a join's answer ([`Connection::join`](crate::Connection::join)),
    /// by topic; empty (and given back) for joins answered through the queue.
    replies: Vec<(Topic, oneshot::Sender<Result<Joined, JoinError>>)>,
}

impl ConnChannels {
    fn at(&self, topic: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.topic.as_str() == topic)
    }

    /// The entry of `topic`, if its node side is `node`.
    fn at_node(&self, topic: &str, node: NodeSide) -> Option<usize> {
        self.at(topic).filter(|&i| self.entries[i].sides.node() == node)
    }

    /// The entry of `topic` whose reader side is `reader` (and whose channel is `channel`,
    /// if given).
    fn at_reader(&self, topic: &str, reader: ReaderSide, channel: Option<ChannelId>) -> Option<usize> {
        self.at(topic).filter(|&i| {
            let e = &self.entries[i];
            e.sides.reader() == reader && channel.is_none_or(|c| e.channel == c)
        })
    }

    /// Whether any side has `topic`: a new join of it waits until neither has.
    pub(crate) fn has(&self, topic: &str) -> bool {
        self.at(topic).is_some()
    }

    /// The topics the node side is in, joining or leaving (what `max_topics_per_socket`
    /// counts).
    pub(crate) fn node_count(&self) -> usize {
        self.entries.iter().filter(|e| e.sides.node() != NodeSide::Gone).count()
    }

    /// A join of `topic` starts (the caller checked [`has`](Self::has)); `tag`: the reader
    /// tracks it.
    pub(crate) fn start(&mut self, topic: Topic, reply: JoinReply, tag: Option<ChannelTag>) {
        debug_assert!(!self.has(topic.as_str()));
        if let Some(reply) = reply {
            roster_core::make_room(&mut self.replies);
            self.replies.push((topic.clone(), reply));
        }
        let reader = if tag.is_some() { ReaderSide::Joining } else { ReaderSide::None };
        roster_core::make_room(&mut self.entries);
        self.entries.push(Entry {
            topic,
            channel: UNGRANTED,
            sides: Sides::new(NodeSide::Joining, reader),
            tag: tag.unwrap_or_default(),
        });
    }

    /// The join of `topic` could not be sent: it is forgotten on both sides.
    pub(crate) fn forget(&mut self, topic: &str) {
        if let Some(i) = self.at(topic) {
            self.take_reply(topic);
            self.remove_at(i);
        }
    }

    fn take_reply(&mut self, topic: &str) -> JoinReply {
        let i = self.replies.iter().position(|(t, _)| t.as_str() == topic)?;
        let (_, reply) = self.replies.swap_remove(i);
        if self.replies.is_empty() {
            self.replies = Vec::new();
        }
        Some(reply)
    }

    fn set_node(&mut self, i: usize, node: NodeSide) {
        let e = &mut self.entries[i];
        e.sides = e.sides.with_node(node);
        self.settle(i);
    }

    fn set_reader(&mut self, i: usize, reader: ReaderSide) {
        let e = &mut self.entries[i];
        e.sides = e.sides.with_reader(reader);
        self.settle(i);
    }

    /// Entry `i` goes once both sides are done with it.
    fn settle(&mut self, i: usize) {
        let sides = self.entries[i].sides;
        if sides.node() == NodeSide::Gone && sides.reader() == ReaderSide::None {
            self.remove_at(i);
        }
    }

    fn remove_at(&mut self, i: usize) {
        self.entries.swap_remove(i);
        if self.entries.capacity() > 2 * self.entries.len() + 4 {
            self.entries.shrink_to_fit();
        }
    }

    // The node side.

    /// The node granted the join of `topic` (the node's shared copy, which the entry keeps
    /// from then on): it becomes `channel`. `None` if the connection left the topic meanwhile
    /// (nothing to subscribe); otherwise where the answer goes.
    pub(crate) fn granted(&mut self, topic: &Topic, channel: ChannelId) -> Option<JoinReply> {
        let i = self.at(topic.as_str())?;
        match self.entries[i].sides.node() {
            NodeSide::Joining => {
                let e = &mut self.entries[i];
                e.topic = topic.clone();
                e.channel = channel;
                e.sides = e.sides.with_node(NodeSide::Joined);
                Some(self.take_reply(topic.as_str()))
            }
            NodeSide::Leaving => {
                self.set_node(i, NodeSide::Gone);
                None
            }
            NodeSide::Joined | NodeSide::Gone => None,
        }
    }

    /// The leave of a topic whose join was still waiting has gone through.
    pub(crate) fn left(&mut self, topic: &Topic) {
        if let Some(i) = self.at_node(topic.as_str(), NodeSide::Leaving) {
            self.set_node(i, NodeSide::Gone);
        }
    }

    /// The node side forgets `topic`; what it was.
    pub(crate) fn remove(&mut self, topic: &Topic) -> Option<ChannelState> {
        let i = self.at(topic.as_str())?;
        let state = match self.entries[i].sides.node() {
            NodeSide::Gone => return None,
            NodeSide::Joining => ChannelState::Joining(self.take_reply(topic.as_str())),
            NodeSide::Leaving => ChannelState::Leaving,
            NodeSide::Joined => ChannelState::Joined(self.entries[i].channel),
        };
        self.set_node(i, NodeSide::Gone);
        Some(state)
    }

    /// The node side forgets every topic (the connection ended); what they were. The reader
    /// side keeps its own until it is done with them.
    pub(crate) fn take_node_side(&mut self) -> Vec<(Topic, ChannelState)> {
        let mut out = Vec::new();
        for i in 0..self.entries.len() {
            let e = &self.entries[i];
            let state = match e.sides.node() {
                NodeSide::Gone => continue,
                NodeSide::Joining => ChannelState::Joining(None),
                NodeSide::Leaving => ChannelState::Leaving,
                NodeSide::Joined => ChannelState::Joined(e.channel),
            };
            out.push((e.topic.clone(), state));
        }
        for (topic, state) in &mut out {
            if let ChannelState::Joining(reply) = state {
                *reply = self.take_reply(topic.as_str());
            }
        }
        self.entries.retain(|e| e.sides.reader() != ReaderSide::None);
        for e in &mut self.entries {
            e.sides = e.sides.with_node(NodeSide::Gone);
        }
        if self.entries.is_empty() {
            self.entries = Vec::new();
        }
        out
    }

    /// Whether `topic` is joined as `channel` now (node side).
    pub(crate) fn is_current(&self, topic: &Topic, channel: ChannelId) -> bool {
        self.at_node(topic.as_str(), NodeSide::Joined).is_some_and(|i| self.entries[i].channel == channel)
    }

    /// Whether `topic` is joined (node side).
    pub(crate) fn is_joined(&self, topic: &Topic) -> bool {
        self.at_node(topic.as_str(), NodeSide::Joined).is_some()
    }

    /// The node side leaves `topic`; what to tell the node actor, if anything. A waiting
    /// caller hears `Closed` (its reply is dropped).
    pub(crate) fn leave(&mut self, topic: &str) -> Option<LeaveMsg> {
        let i = self.at(topic)?;
        let e = &self.entries[i];
        match e.sides.node() {
            NodeSide::Joined => {
                let msg = (e.topic.clone(), Some(e.channel));
                self.set_node(i, NodeSide::Gone);
                Some(msg)
            }
            NodeSide::Joining => {
                let msg = (e.topic.clone(), None);
                self.take_reply(topic);
                self.set_node(i, NodeSide::Leaving);
                Some(msg)
            }
            NodeSide::Leaving | NodeSide::Gone => None,
        }
    }

    // The reader side.

    /// Whether the reader is in `topic` or joining it.
    pub(crate) fn reader_has(&self, topic: &str) -> bool {
        self.at(topic).is_some_and(|i| self.entries[i].sides.reader() != ReaderSide::None)
    }

    /// The topic's shared name, if the reader is in it (read its grant).
    pub(crate) fn reader_topic(&self, topic: &str) -> Option<Topic> {
        self.at_reader(topic, ReaderSide::Joined, None).map(|i| self.entries[i].topic.clone())
    }

    /// The reader read the grant of `topic` as `channel`: joined for the reader; its tag.
    /// `None` if the reader left the topic, or the grant is of an earlier join of it.
    pub(crate) fn reader_granted(&mut self, topic: &str, channel: ChannelId) -> Option<ChannelTag> {
        let i = self.at_reader(topic, ReaderSide::Joining, Some(channel))?;
        let tag = self.entries[i].tag;
        self.set_reader(i, ReaderSide::Joined);
        Some(tag)
    }

    /// The reader read the refusal of its join of `topic`: forgotten by the reader; its tag.
    /// `None` if the reader left the topic, or the refusal is of an earlier join of it (this
    /// one still waits, or was granted).
    pub(crate) fn reader_refused(&mut self, topic: &str) -> Option<ChannelTag> {
        let i = self.at_reader(topic, ReaderSide::Joining, Some(UNGRANTED))?;
        if self.entries[i].sides.node() != NodeSide::Gone {
            return None;
        }
        let tag = self.entries[i].tag;
        self.set_reader(i, ReaderSide::None);
        Some(tag)
    }

    /// The reader read the close (or revoke) of `topic`'s `channel`: forgotten by the reader
    /// if it is joined as `channel`; its tag.
    pub(crate) fn reader_closed(&mut self, topic: &str, channel: ChannelId) -> Option<ChannelTag> {
        let i = self.at_reader(topic, ReaderSide::Joined, Some(channel))?;
        let tag = self.entries[i].tag;
        self.set_reader(i, ReaderSide::None);
        Some(tag)
    }

    /// The tag of `topic` if the reader is in it as `channel`.
    pub(crate) fn reader_tag(&self, topic: &str, channel: ChannelId) -> Option<ChannelTag> {
        self.at_reader(topic, ReaderSide::Joined, Some(channel)).map(|i| self.entries[i].tag)
    }

    /// The reader leaves `topic` (joined or joining), and so does the node side. `None` if
    /// the reader was not in it; otherwise what to tell the node actor, if anything.
    pub(crate) fn reader_leave(&mut self, topic: &str) -> Option<Option<LeaveMsg>> {
        let i = self.at(topic).filter(|&i| self.entries[i].sides.reader() != ReaderSide::None)?;
        let e = &mut self.entries[i];
        e.sides = e.sides.with_reader(ReaderSide::None);
        let msg = self.leave(topic);
        if let Some(i) = self.at(topic) {
            self.settle(i);
        }
        Some(msg)
    }

    /// Every channel the reader is in or joining, with its tag; the reader is done with them.
    pub(crate) fn reader_drain(&mut self) -> Vec<(Topic, ChannelTag)> {
        let mut out = Vec::new();
        for e in &mut self.entries {
            if e.sides.reader() != ReaderSide::None {
                out.push((e.topic.clone(), e.tag));
                e.sides = e.sides.with_reader(ReaderSide::None);
            }
        }
        self.entries.retain(|e| e.sides.node() != NodeSide::Gone);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Topic {
        Topic::from(s)
    }

    const TAG: ChannelTag = [1, 2, 3, 4, 5, 6, 7];

    #[test]
    fn an_entry_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
    }

    #[test]
    fn the_sides_read_back_as_set() {
        for node in [NodeSide::Gone, NodeSide::Joining, NodeSide::Leaving, NodeSide::Joined] {
            for reader in [ReaderSide::None, ReaderSide::Joining, ReaderSide::Joined] {
                let s = Sides::new(node, reader);
                assert_eq!((s.node(), s.reader()), (node, reader));
                assert_eq!(s.with_node(NodeSide::Leaving).reader(), reader);
                assert_eq!(s.with_reader(ReaderSide::Joined).node(), node);
            }
        }
    }

    #[test]
    fn a_tracked_join_is_joined_for_the_reader_only_once_it_reads_the_grant() {
        let mut ch = ConnChannels::default();
        ch.start(t("room:1"), None, Some(TAG));
        assert!(ch.has("room:1") && ch.reader_has("room:1"));
        assert_eq!(ch.reader_topic("room:1"), None, "not joined while its join waits");
        let shared = t("room:1");
        assert!(matches!(ch.granted(&shared, SubscriberId(3)), Some(None)));
        assert!(ch.is_current(&shared, SubscriberId(3)), "joined on the node side at once");
        assert_eq!(ch.reader_tag("room:1", SubscriberId(3)), None, "not for the reader before it reads the grant");
        assert_eq!(ch.reader_granted("room:1", SubscriberId(4)), None, "another channel's grant");
        assert_eq!(ch.reader_granted("room:1", SubscriberId(3)), Some(TAG));
        assert_eq!(ch.reader_tag("room:1", SubscriberId(3)), Some(TAG));
        assert_eq!(ch.reader_tag("room:1", SubscriberId(4)), None);
        let held = ch.reader_topic("room:1").expect("joined");
        assert!(held.ptr_eq(&shared), "the entry keeps the node's copy");
        assert_eq!(ch.entries.len(), 1, "one entry for both sides");
        assert_eq!(ch.entries.capacity(), 1, "made in place, sized to what it holds");
    }

    #[test]
    fn a_close_is_the_node_sides_at_once_and_the_readers_when_it_reads_it() {
        let mut ch = ConnChannels::default();
        ch.start(t("a"), None, Some(TAG));
        ch.granted(&t("a"), SubscriberId(1));
        ch.reader_granted("a", SubscriberId(1));
        assert!(matches!(ch.remove(&t("a")), Some(ChannelState::Joined(SubscriberId(1)))));
        assert!(!ch.is_joined(&t("a")));
        assert_eq!(ch.node_count(), 0, "no longer counts against the limit");
        // Pushes queued before the close still reach the reader.
        assert_eq!(ch.reader_tag("a", SubscriberId(1)), Some(TAG));
        assert!(ch.reader_has("a") && ch.has("a"), "no new join before the reader read the close");
        assert_eq!(ch.reader_closed("a", SubscriberId(2)), None);
        assert_eq!(ch.reader_closed("a", SubscriberId(1)), Some(TAG));
        assert!(!ch.has("a"));
        assert!(ch.entries.is_empty());
    }

    #[test]
    fn a_stale_answer_is_not_taken_for_a_later_join_of_the_topic() {
        let mut ch = ConnChannels::default();
        // Granted, then left by the reader before it read the grant.
        ch.start(t("a"), None, Some(TAG));
        ch.granted(&t("a"), SubscriberId(1));
        assert_eq!(ch.reader_leave("a"), Some(Some((t("a"), Some(SubscriberId(1))))));
        assert!(!ch.has("a"));
        ch.start(t("a"), None, Some([9; 7]));
        assert_eq!(ch.reader_granted("a", SubscriberId(1)), None, "the first join's grant");
        assert_eq!(ch.reader_refused("a"), None, "this join waits");
        ch.granted(&t("a"), SubscriberId(2));
        assert_eq!(ch.reader_granted("a", SubscriberId(2)), Some([9; 7]));

        // Refused, then left by the reader before it read the refusal.
        let mut ch = ConnChannels::default();
        ch.start(t("b"), None, Some(TAG));
        assert!(matches!(ch.remove(&t("b")), Some(ChannelState::Joining(None))));
        assert_eq!(ch.reader_leave("b"), Some(None), "nothing to tell the node");
        assert!(!ch.has("b"));
        ch.start(t("b"), None, Some([9; 7]));
        assert_eq!(ch.reader_refused("b"), None, "the first join's refusal");
        ch.remove(&t("b"));
        assert_eq!(ch.reader_refused("b"), Some([9; 7]));
        assert!(!ch.has("b"));
    }

    #[test]
    fn a_leave_while_joining_waits_for_the_node_and_drops_the_grant() {
        let mut ch = ConnChannels::default();
        let (tx, mut rx) = oneshot::channel();
        ch.start(t("a"), Some(tx), None);
        assert_eq!(ch.leave("a"), Some((t("a"), None)));
        assert!(rx.try_recv().is_err(), "the waiting caller's reply is dropped");
        assert!(ch.has("a"), "a new join waits for the leave");
        assert_eq!(ch.node_count(), 1);
        assert_eq!(ch.leave("a"), None, "left already");
        assert!(ch.granted(&t("a"), SubscriberId(1)).is_none(), "the answer to the left join is dropped");
        assert!(!ch.has("a"));

        ch.start(t("b"), None, None);
        ch.leave("b");
        ch.left(&t("b"));
        assert!(!ch.has("b"), "the leave went through");
        assert!(ch.replies.is_empty() && ch.replies.capacity() == 0);
    }

    #[test]
    fn a_granted_caller_gets_its_reply_and_the_reader_side_is_untouched() {
        let mut ch = ConnChannels::default();
        let (tx, _rx) = oneshot::channel();
        ch.start(t("a"), Some(tx), None);
        assert!(matches!(ch.granted(&t("a"), SubscriberId(5)), Some(Some(_))));
        assert!(!ch.reader_has("a"), "an embedded connection's reader tracks nothing");
        assert_eq!(ch.reader_leave("a"), None);
        assert_eq!(ch.leave("a"), Some((t("a"), Some(SubscriberId(5)))));
        assert!(!ch.has("a"));
    }

    #[test]
    fn the_connections_end_takes_the_node_side_and_leaves_the_readers() {
        let mut ch = ConnChannels::default();
        for (i, topic) in ["a", "b", "c", "d"].into_iter().enumerate() {
            ch.start(t(topic), None, (i % 2 == 0).then_some([i as u8; 7]));
        }
        ch.granted(&t("a"), SubscriberId(1));
        ch.reader_granted("a", SubscriberId(1));
        ch.granted(&t("b"), SubscriberId(2));
        ch.leave("d");
        let mut taken: Vec<(String, &str)> =
            ch.take_node_side().into_iter().map(|(topic, s)| (topic.as_str().to_owned(), s.name())).collect();
        taken.sort();
        let expected = [("a", "joined"), ("b", "joined"), ("c", "joining"), ("d", "leaving")];
        assert_eq!(taken, expected.map(|(a, b)| (a.to_owned(), b)));
        assert!(ch.take_node_side().is_empty());
        assert_eq!(ch.node_count(), 0);
        // The reader still writes what was queued for "a", and drains what it tracks.
        assert_eq!(ch.reader_tag("a", SubscriberId(1)), Some([0; 7]));
        let mut drained: Vec<(String, ChannelTag)> =
            ch.reader_drain().into_iter().map(|(topic, tag)| (topic.as_str().to_owned(), tag)).collect();
        drained.sort();
        assert_eq!(drained, vec![("a".to_owned(), [0; 7]), ("c".to_owned(), [2; 7])]);
        assert!(ch.entries.is_empty());
    }

    #[test]
    fn the_list_is_sized_to_what_it_holds() {
        let mut ch = ConnChannels::default();
        for i in 0..10u64 {
            let topic = format!("room:{i}");
            ch.start(t(&topic), None, Some(TAG));
            ch.granted(&t(&topic), SubscriberId(i));
            ch.reader_granted(&topic, SubscriberId(i));
        }
        assert_eq!(ch.entries.capacity(), 10);
        for i in 0..8u64 {
            ch.reader_leave(&format!("room:{i}"));
        }
        assert!(ch.entries.capacity() <= 2 * 2 + 4);
        assert_eq!(ch.reader_tag("room:9", SubscriberId(9)), Some(TAG));
    }
}
