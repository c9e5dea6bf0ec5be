//! Ids and small values shared by every machine: users, topics, tabs, sockets, roles, metas,
//! `phx_ref`s, node incarnations and slot tokens.
//!
//! The string ids are shared, one pointer each (`Arc<Box<str>>`): an id is copied into many
//! indexes (a socket's channels, the gateway's slots, the home's users, the presence table, the
//! fan-out), and a clone is a reference count, not a new string.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Milliseconds on some node's clock. The core never reads a clock: callers pass `now`.
pub type Millis = u64;

/// A string id: `$inner` is `Arc<str>` or, for one pointer (8 bytes, not 16),
/// `Arc<Box<str>>`; `$make` makes one from a `Box<str>`.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $vis:vis $inner:ty, $make:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        #[allow(clippy::redundant_allocation)] // `Arc<Box<str>>`: the inner box is the point
        pub struct $name($vis $inner);

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state)
            }
        }

        // Equality and order are the text's; two copies of one `Arc` (an id shared through
        // the indexes, a topic shared by `SharedTopics`) are equal without reading the text,
        // which a look-up in a map keyed by ids would otherwise fetch from memory per key.
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0) || self.as_str() == other.as_str()
            }
        }

        impl Eq for $name {}

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                if Arc::ptr_eq(&self.0, &other.0) {
                    return std::cmp::Ordering::Equal;
                }
                self.as_str().cmp(other.as_str())
            }
        }

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether two ids are the same copy (not only equal text).
            pub fn ptr_eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0)
            }

            /// How many copies of this id's `Arc` are alive (a shared set forgets names only it
            /// holds).
            pub fn strong_count(&self) -> usize {
                Arc::strong_count(&self.0)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::from("")
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::from(Box::<str>::from(s))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self::from(s.into_boxed_str())
            }
        }

        impl From<Box<str>> for $name {
            fn from(s: Box<str>) -> Self {
                let make: fn(Box<str>) -> $inner = $make;
                Self(make(s))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                // A borrowed `&str` would fail for formats that hand out owned strings only.
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Ok(Self::from(s.as_ref()))
            }
        }
    };
}

string_id!(
    /// A signed-in user, from the token's `sub`. The id `anonymous` is reserved.
    ///
    /// An `Arc<str>`: the presence table keys a user's entries by this very `Arc` (a key may
    /// also be any string an embedding caller tracks), so it stays the key's type.
    UserId,
    pub Arc<str>,
    Arc::from
);
string_id!(
    /// A topic: a room, a lobby, a document (`room:42`).
    ///
    /// One pointer (8 bytes, not the 16 of an `Arc<str>`): a topic is kept per presence in
    /// several indexes (a socket's channels and table entries, the gateway's slots, the home's
    /// scopes) and made once per topic (`SharedTopics`), so the second hop to the text and the
    /// second allocation cost less than 8 bytes in every copy.
    Topic,
    Arc<TopicBody>,
    |text| Arc::new(TopicBody(Body::Text(text)))
);
string_id!(
    /// A browser tab's random id, kept in `sessionStorage`: the same tab reconnecting resumes.
    ///
    /// One pointer, as a `Topic` (a slot record keeps its tab).
    TabId,
    Arc<Box<str>>,
    Arc::new
);
string_id!(
    /// A user's role, from the token (`user`, `admin`, ...).
    ///
    /// One pointer, as a `Topic`.
    Role,
    Arc<Box<str>>,
    Arc::new
);
/// A node's configured name (`a`, `b`, ...): its identity across restarts.
///
/// Shared, not owned: every heartbeat, lease message and slot message names nodes
/// (incarnations, echoes, destinations), so a clone is a reference count, not an allocation.
/// One pointer (8 bytes, not the 16 of an `Arc<str>`): every presence meta names its node, and
/// a cluster has a few names, so the second hop to the text costs little.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(clippy::redundant_allocation)] // the inner box is the point: a thin pointer, 8 bytes
pub struct NodeName(Arc<Box<str>>);

impl NodeName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for NodeName {
    fn default() -> Self {
        Self::from("")
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeName {
    fn from(s: &str) -> Self {
        Self(Arc::new(s.into()))
    }
}

impl From<String> for NodeName {
    fn from(s: String) -> Self {
        Self(Arc::new(s.into_boxed_str()))
    }
}

impl Serialize for NodeName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A borrowed `&str` would fail for formats that hand out owned strings only.
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Self::from(s.as_ref()))
    }
}

impl UserId {
    /// The reserved presence key under which anonymous viewers are listed or counted.
    pub const ANONYMOUS: &'static str = "anonymous";

    /// Whether this id is the reserved `anonymous` key, which no token may carry.
    pub fn is_reserved(&self) -> bool {
        self.as_str() == Self::ANONYMOUS
    }
}

/// What a [`Topic`] points to: its text, or, in the one kind of topic no caller ever sees, the
/// name of a `global` scope (its policy).
///
/// A [`ScopeKey`](crate::ScopeKey) is one pointer, a `Topic`, rather than an enum of a topic or
/// a policy (16 bytes: a pointer has no room for a tag): a topic scope's key is that very
/// topic, so it costs no allocation, and a global scope's key is a `Topic` of this second kind,
/// made by `ScopeKey::global` and only ever reached through the key, which tells the two kinds
/// apart before it compares, hashes or encodes them. The two kinds fit in the 16 bytes of the
/// text alone (the policy goes beside the text pointer's null niche), so a topic's allocation
/// does not grow.
pub(crate) struct TopicBody(Body);

enum Body {
    Text(Box<str>),
    Global(crate::config::PolicyId),
}

impl std::ops::Deref for TopicBody {
    type Target = str;

    /// The text; a global scope's name has none (`""`).
    fn deref(&self) -> &str {
        match &self.0 {
            Body::Text(text) => text,
            Body::Global(_) => "",
        }
    }
}

impl fmt::Debug for TopicBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Body::Text(text) => fmt::Debug::fmt(text, f),
            Body::Global(id) => f.debug_tuple("Global").field(id).finish(),
        }
    }
}

impl Topic {
    /// How many global scopes' names each thread keeps to share equal ones (a node has one per
    /// `[[policy]]` with `scope = "global"` at most).
    const RECENT_GLOBAL_SCOPES: usize = 16;

    /// The name of the global scope of policy `id` (see `TopicBody`): not a topic, so only a
    /// `ScopeKey` makes and holds one. Equal ones are shared: each thread keeps the few it made
    /// last.
    pub(crate) fn global_scope(id: crate::config::PolicyId) -> Self {
        thread_local! {
            static RECENT: std::cell::RefCell<Vec<Topic>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        RECENT.with(|recent| {
            let mut recent = recent.borrow_mut();
            if let Some(found) = recent.iter().find(|t| t.global_policy() == Some(id)) {
                return found.clone();
            }
            let made = Self(Arc::new(TopicBody(Body::Global(id))));
            if recent.len() >= Self::RECENT_GLOBAL_SCOPES {
                recent.remove(0);
            }
            recent.push(made.clone());
            made
        })
    }

    /// For the name of a global scope, its policy; `None` for a topic.
    pub(crate) fn global_policy(&self) -> Option<crate::config::PolicyId> {
        match (self.0).0 {
            Body::Text(_) => None,
            Body::Global(id) => Some(id),
        }
    }

    /// Whether a policy pattern matches this topic: `*` alone matches everything, a pattern
    /// ending in `*` matches by prefix, anything else matches exactly.
    pub fn matches(&self, pattern: &str) -> bool {
        match pattern.strip_suffix('*') {
            Some(prefix) => self.as_str().starts_with(prefix),
            None => self.as_str() == pattern,
        }
    }
}

/// A socket on its gateway node: a per-incarnation counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SocketId(pub u64);

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// One boot of one node: its configured name plus a fresh uuid per process start. A node that
/// restarts is the same name with a new incarnation, so nothing from its previous life is
/// mistaken for current state.
///
/// Shared, not owned: an incarnation is one pointer to its [`IncarnationData`] (read its
/// fields through it: `inc.node`, `inc.boot`), so a [`ConnId`] is 16 bytes instead of 40, and
/// the many copies of it (the gateway's slots, the home's slot records, every session view)
/// cost a reference count each. Incarnations decoded from the wire are shared too: each thread
/// keeps the few it decoded last and hands out the same one for equal data. Equality, order,
/// hashing and the encoding are those of the data, as before it was shared.
#[derive(Clone, Debug, Eq, PartialOrd, Ord)]
pub struct Incarnation(Arc<IncarnationData>);

/// What an [`Incarnation`] is: a node's name and one boot of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename = "Incarnation")]
pub struct IncarnationData {
    /// The node's configured name.
    pub node: NodeName,
    /// Fresh per boot.
    pub boot: uuid::Uuid,
}

impl Incarnation {
    /// A new incarnation of `node`; `random` is the caller's randomness (the core draws none).
    pub fn new(node: impl Into<NodeName>, random: u128) -> Self {
        Self::from_parts(node.into(), uuid::Builder::from_random_bytes(random.to_le_bytes()).into_uuid())
    }

    /// The incarnation `boot` of `node` (shared with an equal one this thread made lately).
    pub fn from_parts(node: NodeName, boot: uuid::Uuid) -> Self {
        Self::shared(IncarnationData { node, boot })
    }

    /// How many incarnations each thread keeps to share equal ones: a cluster has a few nodes,
    /// and a node sees the incarnations of its peers over and over.
    const RECENT: usize = 16;

    fn shared(data: IncarnationData) -> Self {
        thread_local! {
            static RECENT: std::cell::RefCell<Vec<Arc<IncarnationData>>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        RECENT.with(|recent| {
            let mut recent = recent.borrow_mut();
            if let Some(at) = recent.iter().position(|r| **r == data) {
                let found = recent[at].clone();
                // Most recently used last, so the oldest goes first.
                let last = recent.len() - 1;
                recent[at..].rotate_left(1);
                debug_assert!(Arc::ptr_eq(&recent[last], &found));
                return Self(found);
            }
            let made = Arc::new(data);
            if recent.len() >= Self::RECENT {
                recent.remove(0);
            }
            recent.push(made.clone());
            Self(made)
        })
    }
}

impl std::ops::Deref for Incarnation {
    type Target = IncarnationData;

    fn deref(&self) -> &IncarnationData {
        &self.0
    }
}

impl PartialEq for Incarnation {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl std::hash::Hash for Incarnation {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl Serialize for Incarnation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Incarnation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IncarnationData::deserialize(deserializer).map(Self::shared)
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let boot = self.boot.simple().to_string();
        write!(f, "{}#{}", self.node, &boot[..8])
    }
}

/// One connection cluster-wide: the socket on the gateway incarnation that holds it (16 bytes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnId {
    /// The gateway incarnation holding the socket.
    pub gateway: Incarnation,
    /// The socket on that gateway.
    pub socket: SocketId,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.gateway, self.socket)
    }
}

/// A unique reference carried by every presence meta (16 url-safe characters), as Phoenix does.
///
/// Every reference this code makes is the rendering of a number ([`PhxRef::from_number`]), so
/// a stored meta keeps the number (8 bytes, [`PhxRef::number`]) and renders the text when it is
/// read; a peer's or a test's text that is no such rendering is kept as text. This value keeps
/// the text in place up to 22 bytes (longer ones on the heap). Equality, order, hashing and the
/// encoding are those of the string.
#[derive(Clone)]
pub struct PhxRef(RefText);

#[derive(Clone)]
enum RefText {
    Inline(u8, [u8; PhxRef::INLINE]),
    Heap(Box<str>),
}

impl PhxRef {
    const INLINE: usize = 22;

    /// A reference with this text.
    pub fn new(text: &str) -> Self {
        if text.len() <= Self::INLINE {
            let mut bytes = [0; Self::INLINE];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            PhxRef(RefText::Inline(text.len() as u8, bytes))
        } else {
            PhxRef(RefText::Heap(text.into()))
        }
    }
}

impl From<String> for PhxRef {
    fn from(text: String) -> Self {
        PhxRef::new(&text)
    }
}

impl From<&str> for PhxRef {
    fn from(text: &str) -> Self {
        PhxRef::new(text)
    }
}

impl PartialEq for PhxRef {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for PhxRef {}

impl PartialOrd for PhxRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PhxRef {
    /// The order of the strings: that of their bytes.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes().cmp(other.bytes())
    }
}

impl std::hash::Hash for PhxRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for PhxRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PhxRef").field(&self.as_str()).finish()
    }
}

impl Serialize for PhxRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PhxRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(PhxRef::from)
    }
}

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// In [`DIGIT_OF`]: the byte is no character of [`URL_SAFE`].
const NOT_A_DIGIT: u8 = u8::MAX;

/// Each byte's place in [`URL_SAFE`] (its 6-bit digit), or [`NOT_A_DIGIT`].
const DIGIT_OF: [u8; 256] = {
    let mut table = [NOT_A_DIGIT; 256];
    let mut digit = 0;
    while digit < URL_SAFE.len() {
        table[URL_SAFE[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};

impl PhxRef {
    /// Length of every generated reference.
    pub const LEN: usize = 16;

    /// The reference that renders `number`: 16 url-safe characters, 6 bits each, for 96 bits,
    /// the number's 64 and 32 derived from them (so that a random text is seldom a rendering,
    /// and a rendering looks as random as the 96 random bits references once carried).
    pub fn from_number(number: u64) -> Self {
        let bits = u128::from(number) | (u128::from(Self::check(number)) << 64);
        let mut bytes = [0; Self::INLINE];
        for (i, b) in bytes.iter_mut().take(Self::LEN).enumerate() {
            *b = URL_SAFE[((bits >> (6 * i)) & 63) as usize];
        }
        PhxRef(RefText::Inline(Self::LEN as u8, bytes))
    }

    /// The 32 bits a rendering carries beside its number.
    fn check(number: u64) -> u32 {
        ((number ^ 0xD6E8_FEB8_6659_FD93).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
    }

    /// The number this reference renders, when it is the rendering of one
    /// ([`from_number`](Self::from_number)): then `PhxRef::from_number(n) == self`.
    pub fn number(&self) -> Option<u64> {
        let text = self.as_str().as_bytes();
        if text.len() != Self::LEN {
            return None;
        }
        let mut bits = 0u128;
        for (i, &c) in text.iter().enumerate() {
            // A table, not a match per character: every local join reads its new reference back.
            let digit = DIGIT_OF[usize::from(c)];
            if digit == NOT_A_DIGIT {
                return None;
            }
            debug_assert_eq!(URL_SAFE[usize::from(digit)], c);
            bits |= u128::from(digit) << (6 * i);
        }
        let number = bits as u64;
        ((bits >> 64) as u32 == Self::check(number)).then_some(number)
    }

    /// The text's bytes: what comparisons read (no UTF-8 check, which `as_str` makes: a
    /// fan-out window's netting compares references in a tree of thousands).
    fn bytes(&self) -> &[u8] {
        match &self.0 {
            RefText::Inline(len, bytes) => &bytes[..*len as usize],
            RefText::Heap(text) => text.as_bytes(),
        }
    }

    /// The reference as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            RefText::Inline(len, bytes) => {
                std::str::from_utf8(&bytes[..*len as usize]).expect("made from a str or URL_SAFE bytes")
            }
            RefText::Heap(text) => text,
        }
    }
}

/// A JSON-like value for metas. Not `serde_json::Value`: node-to-node payloads use a
/// non-self-describing codec (bincode), which cannot decode "any" values, so the shape is ours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MetaValue {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A float (also unsigned integers above `i64::MAX`).
    Float(f64),
    /// A string.
    Str(String),
    /// An array.
    List(Vec<MetaValue>),
    /// An object.
    Map(Meta),
}

/// A user's meta: a JSON object, kept sorted for stable encoding.
pub type Meta = BTreeMap<String, MetaValue>;

/// A slot's fencing token, `"<epoch>.<generation>"`, ordered as the pair `(epoch, generation)`.
/// Epochs only grow per partition across homes and restarts, generations per `(user, scope)`
/// within an epoch, so a newer grant always carries a larger token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotToken {
    /// The partition epoch of the home that granted it.
    pub epoch: u64,
    /// The grant counter within that epoch.
    pub generation: u64,
}

impl fmt::Display for SlotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.generation)
    }
}

/// Why a string is not a slot token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a slot token is two decimal integers joined by '.', like \"1700000000000.3\"; got {0:?}")]
pub struct BadToken(pub String);

impl FromStr for SlotToken {
    type Err = BadToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadToken(s.to_owned());
        let (e, g) = s.split_once('.').ok_or_else(bad)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(e) || !digits(g) {
            return Err(bad());
        }
        Ok(Self { epoch: e.parse().map_err(|_| bad())?, generation: g.parse().map_err(|_| bad())? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_tokens_compare_as_integer_pairs_not_strings() {
        let a: SlotToken = "9.10".parse().unwrap();
        let b: SlotToken = "10.2".parse().unwrap();
        let c: SlotToken = "9.9".parse().unwrap();
        assert!(c < a && a < b);
        assert_eq!(a.to_string(), "9.10");
    }

    #[test]
    fn malformed_slot_tokens_are_rejected() {
        for s in ["", "1", "1.", ".1", "a.1", "1.2.3", "-1.2", "1.+2", "99999999999999999999999.1"] {
            assert!(s.parse::<SlotToken>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn phx_refs_are_sixteen_url_safe_characters() {
        let r = PhxRef::from_number(0x0123_4567_89ab_cdef);
        assert_eq!(r.as_str().len(), PhxRef::LEN);
        assert!(r.as_str().bytes().all(|b| URL_SAFE.contains(&b)));
        assert_ne!(r, PhxRef::from_number(1));
        assert_ne!(PhxRef::from_number(0).as_str(), "AAAAAAAAAAAAAAAA", "the check bits are not zero");
    }

    #[test]
    fn the_digit_table_reads_back_exactly_the_url_safe_characters() {
        for byte in 0..=u8::MAX {
            let want = URL_SAFE.iter().position(|&c| c == byte).map_or(NOT_A_DIGIT, |d| d as u8);
            assert_eq!(DIGIT_OF[usize::from(byte)], want, "byte {byte}");
        }
    }

    #[test]
    fn a_phx_ref_is_a_number_exactly_when_its_text_renders_one() {
        for n in [0, 1, 2, 63, 64, 0x0123_4567_89ab_cdef, u64::MAX - 1, u64::MAX] {
            let r = PhxRef::from_number(n);
            assert_eq!(r.number(), Some(n));
            let again = PhxRef::new(r.as_str());
            assert_eq!((again.number(), &again), (Some(n), &r), "the text read back is the same number");
            let mut text = r.as_str().to_owned();
            let last = text.pop().unwrap();
            assert_eq!(PhxRef::new(&text).number(), None, "15 characters");
            // Another last character: the check bits no longer match the number.
            text.push(if last == 'A' { 'B' } else { 'A' });
            assert_eq!(PhxRef::new(&text).number(), None, "{text:?}");
        }
        for text in ["", "r1", "F3x", "users:3", "AAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAA=", "AAAAAAAAAAAAAAAAA"] {
            assert_eq!(PhxRef::new(text).number(), None, "{text:?}");
        }
        // Order, equality and hashing are the text's, whatever the numbers.
        let refs: Vec<PhxRef> = (0..200).map(|n| PhxRef::from_number(n * 0x0101_0101_0101)).collect();
        let mut by_ref = refs.clone();
        by_ref.sort();
        let mut by_text: Vec<&str> = refs.iter().map(PhxRef::as_str).collect();
        by_text.sort();
        assert_eq!(by_ref.iter().map(PhxRef::as_str).collect::<Vec<_>>(), by_text);
        // Texts of other lengths, kept in place or on the heap, and beyond ASCII: compared as
        // bytes, still the order of the strings.
        let texts = [
            "",
            "a",
            "ab",
            "b",
            "é",
            "z~",
            "a-much-longer-reference-on-the-heap",
            "a-much-longer-reference-on-the-heaq",
        ];
        for x in texts {
            for y in texts {
                assert_eq!(PhxRef::new(x).cmp(&PhxRef::new(y)), x.cmp(y), "{x:?} against {y:?}");
                assert_eq!(PhxRef::new(x) == PhxRef::new(y), x == y);
            }
        }
        let hasher = std::collections::hash_map::RandomState::new();
        use std::hash::BuildHasher;
        assert_eq!(hasher.hash_one(&refs[7]), hasher.hash_one(refs[7].as_str()));
        assert_eq!(crate::codec::encode(&refs[7]).unwrap(), crate::codec::encode(&refs[7].as_str()).unwrap());
    }

    /// The shape an incarnation had before it was shared: its bytes on the wire must not change.
    #[derive(Serialize)]
    struct OldIncarnation {
        node: NodeName,
        boot: uuid::Uuid,
    }

    #[test]
    fn a_thin_string_id_is_one_pointer_and_encodes_and_compares_as_its_text() {
        use std::mem::size_of;
        assert_eq!((size_of::<Topic>(), size_of::<TabId>(), size_of::<Role>()), (8, 8, 8));
        assert_eq!(size_of::<TopicBody>(), size_of::<Box<str>>(), "a global scope's name costs a topic no room");
        assert_eq!(size_of::<UserId>(), 16, "the presence table's key type");
        let t = Topic::from("room:42");
        let text = String::from("room:42");
        assert_eq!(crate::codec::encode(&t).unwrap(), crate::codec::encode(&text).unwrap());
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"room:42\"");
        let back: Topic = crate::codec::decode(&crate::codec::encode(&t).unwrap()).unwrap();
        assert!(back == t && !back.ptr_eq(&t), "a decoded copy is equal, not the same one");
        let copy = t.clone();
        assert!(copy.ptr_eq(&t) && t.strong_count() == 2);
        assert_eq!(Topic::from("a").cmp(&Topic::from("b")), std::cmp::Ordering::Less);
        let hash = |x: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            x(&mut h);
            std::hash::Hasher::finish(&h)
        };
        use std::hash::Hash;
        assert_eq!(hash(&|h| t.hash(h)), hash(&|h| "room:42".hash(h)), "hashes as its text (Borrow<str>)");
        let mut set = std::collections::HashSet::new();
        set.insert(back);
        assert!(set.contains("room:42"));
        assert_eq!(Topic::default().as_str(), "");
    }

    #[test]
    fn an_incarnation_encodes_as_its_name_and_boot_and_decoded_equal_ones_are_shared() {
        let a = Incarnation::new("node-a", 0x1234_5678);
        let old = OldIncarnation { node: a.node.clone(), boot: a.boot };
        let bytes = crate::codec::encode(&a).unwrap();
        assert_eq!(bytes, crate::codec::encode(&old).unwrap());
        let conn = ConnId { gateway: a.clone(), socket: SocketId(7) };
        assert_eq!(std::mem::size_of::<ConnId>(), 16);
        let decoded: ConnId = crate::codec::decode(&crate::codec::encode(&conn).unwrap()).unwrap();
        assert_eq!(decoded, conn);
        assert!(Arc::ptr_eq(&decoded.gateway.0, &a.0), "a decoded copy of a recent incarnation is shared");
        let b = Incarnation::new("node-a", 0x1234_5679);
        assert_ne!(a, b);
        assert_eq!(a.cmp(&b), (a.node.clone(), a.boot).cmp(&(b.node.clone(), b.boot)));
        // More incarnations than the thread keeps: an old one decodes to a fresh, equal copy.
        for i in 0..(Incarnation::RECENT as u128 + 1) {
            let _ = Incarnation::new("other", i);
        }
        let again: Incarnation = crate::codec::decode(&bytes).unwrap();
        assert_eq!(again, a);
        assert!(!Arc::ptr_eq(&again.0, &a.0));
    }

    #[test]
    fn topic_patterns_match_by_suffix_wildcard() {
        let t = Topic::from("room:42");
        assert!(t.matches("*") && t.matches("room:*") && t.matches("room:42"));
        assert!(!t.matches("call:*") && !t.matches("room:4"));
    }
}
