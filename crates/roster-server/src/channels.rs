//! A socket's channels: what the socket writes each topic's frames with (the client's
//! `join_ref` for that join, and the `phx_join`'s `ref` for its answer).
//!
//! The channels themselves are the connection's (`roster-runtime`'s `conn_channels.rs`): one
//! entry per topic, 24 bytes, that the connection and the node actor keep their side of and
//! the socket its own (joining until it reads the join's answer, joined until it reads the
//! close or the client leaves), with seven bytes of the socket's, the [`ChannelTag`]. The
//! socket packs the `join_ref` in it (phoenix.js numbers its joins: `"1"`, `"2"`, …, up to six
//! bytes in place) and a mark for a `phx_join` whose `ref` differs from its `join_ref`
//! (phoenix.js sends the same). So a join, in the usual case, adds nothing here: its entry is
//! made in place in the connection's list, and nothing short-lived is allocated for it. What
//! does not fit is kept apart, by topic: a longer `join_ref` for the channel's life, a
//! differing `ref` until the join's answer is written.

use roster_core::{Meta, TabId, Topic};
use roster_runtime::{ChannelId, ChannelTag, ConnectionHandle, JoinError};

/// The longest `join_ref` kept in the tag.
const INLINE_REF: usize = 6;
/// The tag's first byte: the `join_ref`'s length (0 to [`INLINE_REF`]), or one of these.
const NULL_REF: u8 = 0x0e;
const LONG_REF: u8 = 0x0f;
/// The tag's first byte: the `phx_join`'s `ref` is kept apart (it differs from the `join_ref`).
const MSG_REF_APART: u8 = 0x10;

/// The tag of a join with `join_ref` (marked long when it does not fit: kept apart then),
/// whose `phx_join`'s `ref` is the same or (`msg_apart`) kept apart.
fn pack(join_ref: Option<&str>, msg_apart: bool) -> ChannelTag {
    let mut tag = [0; 7];
    tag[0] = match join_ref {
        None => NULL_REF,
        Some(r) if r.len() <= INLINE_REF => {
            tag[1..=r.len()].copy_from_slice(r.as_bytes());
            r.len() as u8
        }
        Some(_) => LONG_REF,
    };
    if msg_apart {
        tag[0] |= MSG_REF_APART;
    }
    tag
}

/// What a join's answer is written with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct JoinRefs {
    pub(crate) join_ref: Option<String>,
    pub(crate) msg_ref: Option<Box<str>>,
}

impl JoinRefs {
    /// The refs, copied.
    #[cfg(test)]
    pub(crate) fn of(join_ref: Option<&str>, msg_ref: Option<&str>) -> Self {
        JoinRefs { join_ref: join_ref.map(String::from), msg_ref: msg_ref.map(Box::from) }
    }
}

/// A socket's channels. See the module documentation.
pub(crate) struct Channels {
    handle: ConnectionHandle,
    /// The `join_ref`s too long for the tag, by topic, for the channel's life.
    long_refs: Vec<(Topic, Box<str>)>,
    /// The `ref`s of joins waiting for their answer that differ from their `join_ref`.
    msg_refs: Vec<(Topic, Option<Box<str>>)>,
}

impl Channels {
    pub(crate) fn new(handle: ConnectionHandle) -> Self {
        Self { handle, long_refs: Vec::new(), msg_refs: Vec::new() }
    }

    /// Whether the socket is in `topic` or joining it.
    pub(crate) fn contains(&self, topic: &str) -> bool {
        self.handle.tracks(topic)
    }

    /// The topic's shared name, if the socket is in it (joined).
    pub(crate) fn joined_topic(&self, topic: &str) -> Option<Topic> {
        self.handle.tracked_topic(topic)
    }

    /// Join `topic` with `join_ref`, answering the `phx_join` whose `ref` is `msg_ref` (the
    /// caller checked that the socket is not in it). The answer comes through the
    /// connection's queue.
    pub(crate) fn join(
        &mut self,
        topic: Topic,
        tab: Option<TabId>,
        meta: Meta,
        join_ref: Option<&str>,
        msg_ref: Option<&str>,
    ) -> Result<(), JoinError> {
        let msg_apart = msg_ref != join_ref;
        let tag = pack(join_ref, msg_apart);
        self.handle.send_join_tracked(topic.clone(), tab, meta, tag)?;
        if let Some(r) = join_ref.filter(|r| r.len() > INLINE_REF) {
            self.long_refs.push((topic.clone(), r.into()));
        }
        if msg_apart {
            self.msg_refs.push((topic, msg_ref.map(Box::from)));
        }
        Ok(())
    }

    /// The connection's queue says the node granted the join of `topic` as `channel`: `answer`
    /// of the answer's refs (`join_ref`, then the `phx_join`'s `ref`), read where they are
    /// kept (the tag, or apart): nothing is copied for the answer. `None` if the socket left
    /// the topic, or the grant answers an earlier join of it.
    pub(crate) fn granted<R>(
        &mut self,
        topic: &Topic,
        channel: ChannelId,
        answer: impl FnOnce(Option<&str>, Option<&str>) -> R,
    ) -> Option<R> {
        let tag = self.handle.read_granted(topic.as_str(), channel)?;
        let apart = self.take_msg_ref(topic.as_str(), tag);
        // Kept under the node's copy of the topic from now on, as the channel is.
        if let Some(entry) = self.long_refs.iter_mut().find(|(t, _)| t == topic) {
            entry.0 = topic.clone();
        }
        let join_ref = self.ref_text(topic.as_str(), &tag);
        let msg_ref = match &apart {
            Some(msg_ref) => msg_ref.as_deref(),
            None => join_ref,
        };
        Some(answer(join_ref, msg_ref))
    }

    /// The connection's queue says the node refused the join of `topic`: it is forgotten; the
    /// answer's refs. `None` if the socket left the topic, or the refusal answers an earlier
    /// join of it.
    pub(crate) fn refused(&mut self, topic: &str) -> Option<JoinRefs> {
        let tag = self.handle.read_refused(topic)?;
        let refs = self.join_refs(topic, tag);
        self.forget_long_ref(topic, tag);
        Some(refs)
    }

    /// `f` of the `join_ref` of `topic` (`None`: a `null` one) if it is joined as `channel`
    /// now.
    pub(crate) fn with_join_ref<R>(
        &self,
        topic: &str,
        channel: ChannelId,
        f: impl FnOnce(Option<&str>) -> R,
    ) -> Option<R> {
        let tag = self.handle.tag(topic, channel)?;
        Some(f(self.ref_text(topic, &tag)))
    }

    /// The connection's queue says `topic`'s `channel` was closed (or revoked): forget it if
    /// it is joined as `channel` now; its `join_ref`.
    pub(crate) fn remove_joined(&mut self, topic: &str, channel: ChannelId) -> Option<Option<String>> {
        let tag = self.handle.read_closed(topic, channel)?;
        let text = self.ref_text(topic, &tag).map(str::to_owned);
        self.forget_long_ref(topic, tag);
        Some(text)
    }

    /// The client left `topic`: forget it, joined or joining, and leave it. Whether the
    /// socket was in it.
    pub(crate) fn leave(&mut self, topic: &str) -> bool {
        let was_in = self.handle.leave_tracked(topic);
        if was_in {
            self.long_refs.retain(|(t, _)| t.as_str() != topic);
            self.msg_refs.retain(|(t, _)| t.as_str() != topic);
        }
        was_in
    }

    /// Every channel, joined or joining, as `(topic, join_ref)`, sorted by topic; the socket
    /// is done with them.
    pub(crate) fn drain(&mut self) -> Vec<(String, Option<String>)> {
        let mut all: Vec<(String, Option<String>)> = self
            .handle
            .drain_tracked()
            .into_iter()
            .map(|(topic, tag)| (topic.as_str().to_owned(), self.ref_text(topic.as_str(), &tag).map(str::to_owned)))
            .collect();
        self.long_refs = Vec::new();
        self.msg_refs = Vec::new();
        all.sort();
        all
    }

    /// The refs of a join whose answer is written now (its differing `ref` is forgotten).
    fn join_refs(&mut self, topic: &str, tag: ChannelTag) -> JoinRefs {
        let apart = self.take_msg_ref(topic, tag);
        let join_ref = self.ref_text(topic, &tag).map(String::from);
        let msg_ref = apart.unwrap_or_else(|| join_ref.as_deref().map(Box::from));
        JoinRefs { join_ref, msg_ref }
    }

    /// A join's `ref` kept apart (it differs from its `join_ref`), taken for its answer:
    /// `None` when the tag says it is the `join_ref`.
    fn take_msg_ref(&mut self, topic: &str, tag: ChannelTag) -> Option<Option<Box<str>>> {
        if tag[0] & MSG_REF_APART == 0 {
            return None;
        }
        let i = self.msg_refs.iter().position(|(t, _)| t.as_str() == topic);
        debug_assert!(i.is_some(), "a differing ref is kept for every join marked so");
        let msg_ref = i.and_then(|i| self.msg_refs.swap_remove(i).1);
        if self.msg_refs.is_empty() {
            self.msg_refs = Vec::new();
        }
        Some(msg_ref)
    }

    fn forget_long_ref(&mut self, topic: &str, tag: ChannelTag) {
        if tag[0] & !MSG_REF_APART == LONG_REF {
            self.long_refs.retain(|(t, _)| t.as_str() != topic);
        }
    }

    /// The `join_ref` a tag stands for (`None`: a `null` one).
    fn ref_text<'a>(&'a self, topic: &str, tag: &'a ChannelTag) -> Option<&'a str> {
        match tag[0] & !MSG_REF_APART {
            NULL_REF => None,
            LONG_REF => self.long_refs.iter().find(|(t, _)| t.as_str() == topic).map(|(_, r)| &**r).or_else(|| {
                debug_assert!(false, "a long join_ref is kept for every channel marked so");
                None
            }),
            // Copied from a `&str` whole: always UTF-8.
            len => std::str::from_utf8(&tag[1..=len as usize]).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_runtime::{Connection, Node, NodeOptions, Outbound};
    use std::time::Duration;

    /// A node of its own for one test (`test`: the test's name, for its data directory).
    async fn node(test: &str) -> Node {
        let dir = std::env::temp_dir().join(format!("roster-channels-{}-{test}", std::process::id()));
        let node = Node::start(NodeOptions::single().data_dir(&dir)).await.expect("a node starts");
        assert!(node.ready(Duration::from_secs(10)).await, "the node serves");
        node
    }

    async fn stop(node: Node, test: &str) {
        node.shutdown().await;
        let _ = std::fs::remove_dir_all(
            std::env::temp_dir().join(format!("roster-channels-{}-{test}", std::process::id())),
        );
    }

    async fn conn(node: &Node) -> Connection {
        node.connect(Some("u".into()), None, 64).await.expect("a connection")
    }

    /// The next item of the connection's queue that answers a join or closes a channel.
    async fn answer(c: &mut Connection) -> Outbound {
        loop {
            let item = tokio::time::timeout(Duration::from_secs(10), c.recv_outbound())
                .await
                .expect("an answer in time")
                .expect("the connection is open");
            if !matches!(item, Outbound::Push { .. }) {
                return item;
            }
        }
    }

    async fn grant(ch: &mut Channels, c: &mut Connection) -> (ChannelId, Option<JoinRefs>) {
        match answer(c).await {
            Outbound::Joined { topic, channel, .. } => (channel, ch.granted(&topic, channel, JoinRefs::of)),
            other => panic!("not a grant: {other:?}"),
        }
    }

    fn t(s: &str) -> Topic {
        Topic::from(s)
    }

    #[test]
    fn a_tag_keeps_a_join_ref_of_up_to_six_bytes_and_marks_the_rest() {
        assert_eq!(pack(Some("123456"), false), [6, b'1', b'2', b'3', b'4', b'5', b'6']);
        assert_eq!(pack(Some(""), false), [0; 7]);
        assert_eq!(pack(None, true), [NULL_REF | MSG_REF_APART, 0, 0, 0, 0, 0, 0]);
        assert_eq!(pack(Some("1234567"), false)[0], LONG_REF);
    }

    #[tokio::test]
    async fn a_join_waits_then_is_granted_with_its_refs_and_the_shared_topic() {
        let node = node("grant").await;
        let mut c = conn(&node).await;
        let mut ch = Channels::new(c.handle());
        ch.join(t("room:1"), None, Meta::default(), Some("3"), Some("4")).unwrap();
        assert!(ch.contains("room:1"));
        assert_eq!(ch.joined_topic("room:1"), None, "not joined while its join waits");
        let (channel, refs) = match answer(&mut c).await {
            Outbound::Joined { topic, channel, .. } => {
                let refs = ch.granted(&topic, channel, JoinRefs::of);
                let held = ch.joined_topic("room:1").expect("joined");
                assert!(held.ptr_eq(&topic), "the channel keeps the node's copy");
                (channel, refs)
            }
            other => panic!("not a grant: {other:?}"),
        };
        assert_eq!(refs, Some(JoinRefs { join_ref: Some("3".into()), msg_ref: Some("4".into()) }));
        assert!(ch.msg_refs.is_empty() && ch.msg_refs.capacity() == 0, "the differing ref is given back");
        assert_eq!(ch.with_join_ref("room:1", channel, |r| r.map(str::to_owned)), Some(Some("3".into())));
        let other = roster_core::SubscriberId(channel.0 + 1);
        assert_eq!(ch.with_join_ref("room:1", other, |_| ()), None, "another channel of the topic");
        // A second answer for the same topic finds no waiting join.
        assert_eq!(ch.granted(&t("room:1"), channel, JoinRefs::of), None);
        stop(node, "grant").await;
    }

    #[tokio::test]
    async fn null_inline_and_long_join_refs_read_back_as_given() {
        let node = node("refs").await;
        let mut c = conn(&node).await;
        let mut ch = Channels::new(c.handle());
        let long = "a-join-ref-longer-than-six";
        let joins = [("a", None), ("b", Some("")), ("c", Some("123456")), ("d", Some(long)), ("e", Some("é1"))];
        let mut channels = Vec::new();
        for (topic, r) in joins {
            ch.join(t(topic), None, Meta::default(), r, r).unwrap();
            let (channel, refs) = grant(&mut ch, &mut c).await;
            assert_eq!(refs, Some(JoinRefs { join_ref: r.map(String::from), msg_ref: r.map(Box::from) }));
            channels.push(channel);
        }
        for ((topic, r), channel) in joins.into_iter().zip(&channels) {
            assert_eq!(ch.with_join_ref(topic, *channel, |r| r.map(str::to_owned)), Some(r.map(String::from)));
        }
        assert_eq!(ch.long_refs.len(), 1);
        assert!(ch.leave("d"));
        assert!(ch.long_refs.is_empty(), "a long ref goes with its channel");
        assert_eq!(ch.with_join_ref("c", channels[2], |r| r.map(str::to_owned)), Some(Some("123456".into())));
        assert_eq!(
            ch.drain(),
            vec![
                ("a".into(), None),
                ("b".into(), Some("".into())),
                ("c".into(), Some("123456".into())),
                ("e".into(), Some("é1".into()))
            ]
        );
        assert!(!ch.contains("a") && ch.drain().is_empty());
        stop(node, "refs").await;
    }

    #[tokio::test]
    async fn a_leave_then_a_rejoin_of_the_topic_is_a_new_channel_and_the_old_answers_are_dropped() {
        let node = node("rejoin").await;
        let mut c = conn(&node).await;
        let mut ch = Channels::new(c.handle());
        // Left before the socket read the grant: that grant is not the rejoin's.
        ch.join(t("room:1"), None, Meta::default(), Some("1"), Some("1")).unwrap();
        let stale = answer(&mut c).await;
        assert!(ch.leave("room:1"));
        assert!(!ch.contains("room:1"));
        assert!(!ch.leave("room:1"), "left already");
        ch.join(t("room:1"), None, Meta::default(), Some("5"), Some("5")).unwrap();
        let Outbound::Joined { topic, channel: old, .. } = stale else { panic!("not a grant: {stale:?}") };
        assert_eq!(ch.granted(&topic, old, JoinRefs::of), None, "the first join's grant is dropped");
        let (new, refs) = grant(&mut ch, &mut c).await;
        assert_ne!(old, new);
        assert_eq!(refs, Some(JoinRefs { join_ref: Some("5".into()), msg_ref: Some("5".into()) }));
        assert_eq!(ch.with_join_ref("room:1", old, |_| ()), None, "the old channel is gone");
        assert_eq!(ch.with_join_ref("room:1", new, |r| r.map(str::to_owned)), Some(Some("5".into())));
        assert_eq!(ch.remove_joined("room:1", old), None, "a close of the old channel is ignored");
        assert!(ch.contains("room:1"));
        stop(node, "rejoin").await;
    }
}
