//! A socket's channels: one entry per topic it joined or is joining, with the client's
//! `join_ref` for that join.
//!
//! A joined channel is 32 bytes and no allocation of its own in the usual case: its topic is
//! the node's shared copy (handed back with the join's answer, so the string the client's
//! frame was parsed into is freed once the join is through), its `join_ref` is kept in 8 bytes
//! (phoenix.js numbers its joins: `"1"`, `"2"`, …) and its runtime channel is a number. Joins
//! waiting for their answer live in a list of their own, empty between bursts of joins; a
//! `join_ref` longer than [`INLINE_REF`] bytes is kept apart, by topic.
//!
//! A socket has a few channels (at most `max_topics_per_socket`), so these are lists, sized to
//! what they hold ([`roster_core::grow_by`]: one place at a time up to 16).

use roster_core::Topic;
use roster_runtime::ChannelId;

/// The longest `join_ref` kept inline.
const INLINE_REF: usize = 7;
/// [`Ref::len`] of a `null` `join_ref`.
const NULL_REF: u8 = u8::MAX - 1;
/// [`Ref::len`] of a `join_ref` kept in [`Channels::long_refs`].
const LONG_REF: u8 = u8::MAX;

/// A `join_ref` in 8 bytes: up to [`INLINE_REF`] bytes of UTF-8 in place, or a mark for `null`
/// or for a longer one kept apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ref {
    len: u8,
    bytes: [u8; INLINE_REF],
}

impl Ref {
    const NULL: Ref = Ref { len: NULL_REF, bytes: [0; INLINE_REF] };
    const LONG: Ref = Ref { len: LONG_REF, bytes: [0; INLINE_REF] };

    /// `r` in place, or `None` when it is too long for that.
    fn inline(r: Option<&str>) -> Option<Ref> {
        match r {
            None => Some(Ref::NULL),
            Some(r) if r.len() <= INLINE_REF => {
                let mut bytes = [0; INLINE_REF];
                bytes[..r.len()].copy_from_slice(r.as_bytes());
                Some(Ref { len: r.len() as u8, bytes })
            }
            Some(_) => None,
        }
    }
}

/// A joined channel.
struct Joined {
    topic: Topic,
    channel: ChannelId,
    join_ref: Ref,
}

/// A join waiting for the node's answer.
struct Joining {
    topic: Topic,
    join_ref: Option<Box<str>>,
    /// Its `phx_join`'s `ref`, for the answer.
    msg_ref: Option<Box<str>>,
}

/// What a join's answer is written with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct JoinRefs {
    pub(crate) join_ref: Option<String>,
    pub(crate) msg_ref: Option<Box<str>>,
}

/// A socket's channels. See the module documentation.
#[derive(Default)]
pub(crate) struct Channels {
    joined: Vec<Joined>,
    joining: Vec<Joining>,
    /// The `join_ref`s of joined channels too long for [`Ref`], by topic.
    long_refs: Vec<(Topic, Box<str>)>,
}

impl Channels {
    fn joined_at(&self, topic: &str) -> Option<usize> {
        self.joined.iter().position(|c| c.topic.as_str() == topic)
    }

    fn joining_at(&self, topic: &str) -> Option<usize> {
        self.joining.iter().position(|c| c.topic.as_str() == topic)
    }

    /// Whether the socket is in `topic` or joining it.
    pub(crate) fn contains(&self, topic: &str) -> bool {
        self.joined_at(topic).is_some() || self.joining_at(topic).is_some()
    }

    /// The topic's shared name, if the socket is in it (joined).
    pub(crate) fn joined_topic(&self, topic: &str) -> Option<&Topic> {
        self.joined_at(topic).map(|i| &self.joined[i].topic)
    }

    /// A join of `topic` starts (the caller checked that the socket is not in it).
    pub(crate) fn start_join(&mut self, topic: Topic, join_ref: Option<&str>, msg_ref: Option<&str>) {
        debug_assert!(!self.contains(topic.as_str()));
        // Sized exactly as well: a burst of joins leaves no bigger block freed among the
        // socket's long-lived ones (`Vec`'s first growth would make room for four).
        roster_core::make_room(&mut self.joining);
        self.joining.push(Joining { topic, join_ref: join_ref.map(Box::from), msg_ref: msg_ref.map(Box::from) });
    }

    /// The node granted the join of `topic` as `channel`: it becomes a joined channel, named by
    /// `topic` (the node's shared copy). `None` if no join of it waits (the socket left it).
    pub(crate) fn granted(&mut self, topic: Topic, channel: ChannelId) -> Option<JoinRefs> {
        let i = self.joining_at(topic.as_str())?;
        let Joining { join_ref, msg_ref, .. } = self.take_joining(i);
        let packed = match Ref::inline(join_ref.as_deref()) {
            Some(r) => r,
            None => {
                let long = join_ref.as_deref().unwrap_or_default();
                self.long_refs.push((topic.clone(), long.into()));
                Ref::LONG
            }
        };
        roster_core::make_room(&mut self.joined);
        self.joined.push(Joined { topic, channel, join_ref: packed });
        Some(JoinRefs { join_ref: join_ref.map(String::from), msg_ref })
    }

    /// The node refused the join of `topic`: it is forgotten. `None` if no join of it waits.
    pub(crate) fn refused(&mut self, topic: &str) -> Option<JoinRefs> {
        let i = self.joining_at(topic)?;
        let Joining { join_ref, msg_ref, .. } = self.take_joining(i);
        Some(JoinRefs { join_ref: join_ref.map(String::from), msg_ref })
    }

    /// The `join_ref` of `topic` if it is joined as `channel` now (`Some(None)`: a `null` one).
    pub(crate) fn join_ref(&self, topic: &str, channel: ChannelId) -> Option<Option<&str>> {
        let c = self.joined.iter().find(|c| c.topic.as_str() == topic && c.channel == channel)?;
        Some(self.ref_text(c))
    }

    /// Forget `topic` if it is joined as `channel` now; its `join_ref`.
    pub(crate) fn remove_joined(&mut self, topic: &str, channel: ChannelId) -> Option<Option<String>> {
        let i = self.joined.iter().position(|c| c.topic.as_str() == topic && c.channel == channel)?;
        Some(self.take_joined(i))
    }

    /// The client left `topic`: forget it, joined or joining. Whether the socket was in it.
    pub(crate) fn leave(&mut self, topic: &str) -> bool {
        if let Some(i) = self.joined_at(topic) {
            self.take_joined(i);
            true
        } else if let Some(i) = self.joining_at(topic) {
            self.take_joining(i);
            true
        } else {
            false
        }
    }

    /// Every channel, joined or joining, as `(topic, join_ref)`, sorted by topic; the lists
    /// are left empty.
    pub(crate) fn drain(&mut self) -> Vec<(String, Option<String>)> {
        let mut all: Vec<(String, Option<String>)> = self
            .joined
            .iter()
            .map(|c| (c.topic.as_str().to_owned(), self.ref_text(c).map(str::to_owned)))
            .chain(self.joining.iter().map(|c| (c.topic.as_str().to_owned(), c.join_ref.as_deref().map(str::to_owned))))
            .collect();
        *self = Channels::default();
        all.sort();
        all
    }

    fn ref_text<'a>(&'a self, c: &'a Joined) -> Option<&'a str> {
        match c.join_ref.len {
            NULL_REF => None,
            LONG_REF => self.long_refs.iter().find(|(t, _)| *t == c.topic).map(|(_, r)| &**r).or_else(|| {
                debug_assert!(false, "a long join_ref is kept for every channel marked so");
                None
            }),
            // Copied from a `&str` whole: always UTF-8.
            len => std::str::from_utf8(&c.join_ref.bytes[..len as usize]).ok(),
        }
    }

    fn take_joined(&mut self, i: usize) -> Option<String> {
        let text = self.ref_text(&self.joined[i]).map(str::to_owned);
        let c = self.joined.swap_remove(i);
        if c.join_ref.len == LONG_REF {
            self.long_refs.retain(|(t, _)| *t != c.topic);
        }
        if self.joined.capacity() > 2 * self.joined.len() + 4 {
            self.joined.shrink_to_fit();
        }
        text
    }

    fn take_joining(&mut self, i: usize) -> Joining {
        let c = self.joining.swap_remove(i);
        // Empty between bursts of joins: its room is given back.
        if self.joining.is_empty() {
            self.joining = Vec::new();
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_core::SubscriberId;

    fn topic(s: &str) -> Topic {
        Topic::from(s)
    }

    #[test]
    fn a_joined_channel_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Joined>(), 32);
        assert_eq!(std::mem::size_of::<Ref>(), 8);
    }

    #[test]
    fn a_join_waits_then_is_granted_with_its_refs_and_the_shared_topic() {
        let mut ch = Channels::default();
        ch.start_join(topic("room:1"), Some("3"), Some("4"));
        assert!(ch.contains("room:1"));
        assert_eq!(ch.joined_topic("room:1"), None, "not joined while its join waits");
        assert_eq!(ch.join_ref("room:1", SubscriberId(7)), None);

        let shared = topic("room:1");
        let refs = ch.granted(shared.clone(), SubscriberId(7)).expect("a join waited");
        assert_eq!(refs, JoinRefs { join_ref: Some("3".into()), msg_ref: Some("4".into()) });
        let held = ch.joined_topic("room:1").expect("joined");
        assert!(std::sync::Arc::ptr_eq(&held.0, &shared.0), "the channel keeps the node's copy");
        assert_eq!(ch.join_ref("room:1", SubscriberId(7)), Some(Some("3")));
        assert_eq!(ch.join_ref("room:1", SubscriberId(8)), None, "another channel of the topic");
        assert!(ch.joining.is_empty() && ch.joining.capacity() == 0, "the waiting list gives its room back");
        // A second answer for the same topic finds no waiting join.
        assert_eq!(ch.granted(topic("room:1"), SubscriberId(9)), None);
    }

    #[test]
    fn null_inline_and_long_join_refs_read_back_as_given() {
        let mut ch = Channels::default();
        let long = "a-join-ref-longer-than-seven";
        for (i, (t, r)) in [("a", None), ("b", Some("")), ("c", Some("1234567")), ("d", Some(long)), ("e", Some("é1"))]
            .into_iter()
            .enumerate()
        {
            ch.start_join(topic(t), r, None);
            ch.granted(topic(t), SubscriberId(i as u64)).expect("granted");
        }
        assert_eq!(ch.join_ref("a", SubscriberId(0)), Some(None));
        assert_eq!(ch.join_ref("b", SubscriberId(1)), Some(Some("")));
        assert_eq!(ch.join_ref("c", SubscriberId(2)), Some(Some("1234567")));
        assert_eq!(ch.join_ref("d", SubscriberId(3)), Some(Some(long)));
        assert_eq!(ch.join_ref("e", SubscriberId(4)), Some(Some("é1")));
        assert_eq!(ch.long_refs.len(), 1);
        assert_eq!(ch.remove_joined("d", SubscriberId(3)), Some(Some(long.to_owned())));
        assert!(ch.long_refs.is_empty(), "a long ref goes with its channel");
        assert_eq!(ch.join_ref("c", SubscriberId(2)), Some(Some("1234567")), "the others stay");
    }

    #[test]
    fn a_refused_join_is_forgotten_with_its_refs() {
        let mut ch = Channels::default();
        ch.start_join(topic("room:1"), Some("1"), Some("1"));
        ch.start_join(topic("room:2"), None, Some("2"));
        assert_eq!(ch.refused("room:2"), Some(JoinRefs { join_ref: None, msg_ref: Some("2".into()) }));
        assert!(!ch.contains("room:2"));
        assert!(ch.contains("room:1"));
        assert_eq!(ch.refused("room:2"), None);
    }

    #[test]
    fn a_leave_then_a_rejoin_of_the_topic_is_a_new_channel() {
        let mut ch = Channels::default();
        ch.start_join(topic("room:1"), Some("1"), None);
        ch.granted(topic("room:1"), SubscriberId(1));
        assert!(ch.leave("room:1"));
        assert!(!ch.contains("room:1"));
        assert!(!ch.leave("room:1"), "left already");
        ch.start_join(topic("room:1"), Some("5"), None);
        // The first join's answer for a stale channel is not this join's.
        ch.granted(topic("room:1"), SubscriberId(2)).expect("the rejoin waited");
        assert_eq!(ch.join_ref("room:1", SubscriberId(1)), None, "the old channel is gone");
        assert_eq!(ch.join_ref("room:1", SubscriberId(2)), Some(Some("5")));
        assert_eq!(ch.remove_joined("room:1", SubscriberId(1)), None, "a close of the old channel is ignored");
        assert!(ch.contains("room:1"));
    }

    #[test]
    fn a_leave_while_joining_drops_the_later_answer() {
        let mut ch = Channels::default();
        ch.start_join(topic("room:1"), Some("1"), None);
        assert!(ch.leave("room:1"));
        assert_eq!(ch.granted(topic("room:1"), SubscriberId(1)), None);
        assert!(!ch.contains("room:1"));
    }

    #[test]
    fn drain_lists_joined_and_joining_sorted_and_empties() {
        let mut ch = Channels::default();
        for (i, t) in ["c", "a", "b"].into_iter().enumerate() {
            ch.start_join(topic(t), Some(&i.to_string()), None);
        }
        ch.granted(topic("b"), SubscriberId(1));
        ch.granted(topic("c"), SubscriberId(2));
        assert_eq!(
            ch.drain(),
            vec![("a".into(), Some("1".into())), ("b".into(), Some("2".into())), ("c".into(), Some("0".into()))]
        );
        assert!(!ch.contains("a") && !ch.contains("b") && !ch.contains("c"));
        assert!(ch.drain().is_empty());
    }

    #[test]
    fn the_joined_list_is_sized_to_what_it_holds() {
        let mut ch = Channels::default();
        for i in 0..10u64 {
            let t = format!("room:{i}");
            ch.start_join(topic(&t), Some(&i.to_string()), None);
            ch.granted(topic(&t), SubscriberId(i));
        }
        assert_eq!(ch.joined.capacity(), 10);
        for i in 0..8u64 {
            ch.remove_joined(&format!("room:{i}"), SubscriberId(i));
        }
        assert!(ch.joined.capacity() <= 2 * 2 + 4);
        assert_eq!(ch.join_ref("room:9", SubscriberId(9)), Some(Some("9")));
    }
}
