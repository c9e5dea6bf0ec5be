//! A server text message parsed as its bytes arrive, fragment by fragment, without ever
//! holding the whole message: a member of a 10,000-member room receives a `presence_state`
//! of about 880 KB, and one client process holds 10,000 such members.
//!
//! A Phoenix v2 frame is `[join_ref, ref, topic, event, payload]`. [`MessageParser`] scans
//! the bytes once, tracking only JSON nesting and whether it is inside a string (structural
//! characters are ASCII, so a fragment boundary inside a UTF-8 sequence or a string changes
//! nothing), and hands serde_json small complete pieces:
//!
//! - the header (the first four elements), parsed when the fourth comma at depth 1 arrives;
//! - for `presence_state`, each entry `"key": {"metas": [...]}` of the payload map, parsed
//!   (into the ids of its metas, [`protocol::for_each_meta`]) when the comma or brace that
//!   ends it arrives, then dropped;
//! - for `presence_diff`, each member key of the payload (`"joins"`, `"leaves"`) and each
//!   entry of those two maps, likewise;
//! - for any other event, the whole payload (replies and pushes are small; a cap bounds it).
//!
//! So what a message costs while it arrives is one entry's bytes, plus the ids it yields.
//! The text is checked to be UTF-8 as it comes (a sequence split over two fragments is
//! carried over), the skeleton (brackets, commas, colons) by the scan, and every piece by
//! serde_json; a value under a diff key other than `joins`/`leaves` is skipped unparsed.

use crate::load::protocol::{self, MetaId};
use crate::load::view::IdSet;

/// The most bytes kept for a header or a non-presence payload (tungstenite's default
/// largest message is 64 MiB; a Phoenix reply or push to a load client is a few hundred bytes).
const MAX_KEPT: usize = 16 << 20;

/// A complete message.
#[derive(Debug)]
pub(crate) struct Message {
    pub join_ref: Option<String>,
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    /// The payload's length in bytes (from its first to its last non-blank byte).
    pub payload_len: usize,
    pub body: Body,
}

/// A [`Message`]'s payload.
#[derive(Debug)]
pub(crate) enum Body {
    /// `presence_state`: the ids of its metas.
    State(IdSet),
    /// `presence_diff`: the ids of its joined and of its left metas, in order.
    Diff { joins: Vec<u64>, leaves: Vec<u64> },
    /// Any other event's payload, as text.
    Raw(String),
}

/// Why a message was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum MessageError {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("not a v2 frame: {0}")]
    Frame(String),
    #[error("not a presence payload: {0}")]
    Presence(String),
    #[error("more than {MAX_KEPT} bytes to keep")]
    TooLong,
}

/// Where the scan is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Before the opening `[`.
    Start,
    /// Inside the header: the first four elements, kept in `kept`.
    Header,
    /// After the fourth comma, before the payload's first byte.
    PayloadStart,
    /// A `presence_state` map, entries at depth 2.
    StateMap,
    /// A `presence_diff` object: its member keys at depth 2.
    DiffKey,
    /// After a diff key's colon, before its value.
    DiffValueStart,
    /// Inside the `joins` (or `leaves`) map of a diff: entries at depth 3.
    DiffMap,
    /// Inside the value of another diff key: skipped.
    DiffSkip,
    /// After a diff value, before `,` or `}`.
    DiffAfterValue,
    /// Any other payload, kept in `kept`.
    Raw,
    /// After the payload, before the closing `]`.
    AfterPayload,
    /// After the closing `]`: only blanks.
    End,
}

/// Which side of a diff a map is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Joins,
    Leaves,
}

/// What kind of payload the header announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    State,
    Diff,
    Raw,
}

/// Parses one text message at a time from its fragments: [`Self::begin`], [`Self::feed`]
/// for every fragment, [`Self::finish`]. Its buffers are kept between messages.
#[derive(Debug)]
pub(crate) struct MessageParser {
    id: MetaId,
    phase: Phase,
    kind: Kind,
    /// Open brackets and braces before the next byte.
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Bytes fed so far.
    offset: usize,
    /// The first byte of an incomplete UTF-8 sequence at the end of the last fragment.
    carry: [u8; 4],
    carry_len: usize,
    /// Commas at depth 1 in the header.
    commas: u8,
    /// The piece being gathered: the header, an entry, a diff key, a raw payload.
    kept: Vec<u8>,
    /// Whether `kept` holds a non-blank byte of the current entry (or diff key).
    entry_started: bool,
    /// Entries of the current map (or members of the diff object) ended so far.
    entries: usize,
    /// The diff side whose map is being read.
    side: Option<Side>,
    /// Members of the diff object before the one being read.
    diff_members: usize,
    header: Option<(Option<String>, Option<String>, String, String)>,
    payload_first: Option<usize>,
    payload_last: usize,
    state: IdSet,
    joins: Option<Vec<u64>>,
    leaves: Option<Vec<u64>>,
    error: Option<MessageError>,
}

fn blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl MessageParser {
    pub(crate) fn new(id: MetaId) -> MessageParser {
        MessageParser {
            id,
            phase: Phase::Start,
            kind: Kind::Raw,
            depth: 0,
            in_string: false,
            escaped: false,
            offset: 0,
            carry: [0; 4],
            carry_len: 0,
            commas: 0,
            kept: Vec::new(),
            entry_started: false,
            entries: 0,
            side: None,
            diff_members: 0,
            header: None,
            payload_first: None,
            payload_last: 0,
            state: IdSet::default(),
            joins: None,
            leaves: None,
            error: None,
        }
    }

    /// Start a new message (whatever the last one left).
    pub(crate) fn begin(&mut self) {
        let id = self.id;
        let mut kept = std::mem::take(&mut self.kept);
        kept.clear();
        // A header or an entry is small: a long raw payload does not keep its buffer.
        kept.shrink_to(4096);
        *self = MessageParser { kept, ..MessageParser::new(id) };
    }

    /// The next fragment's bytes. Once an error is found the rest of the message is only
    /// counted; [`Self::finish`] returns the error.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            self.offset += bytes.len();
            return;
        }
        if let Err(e) = self.check_utf8(bytes) {
            self.error = Some(e);
            return;
        }
        let mut i = 0;
        while i < bytes.len() {
            if let Some(entry_depth) = self.inside_entry() {
                // The hot path: an entry's bytes (its key's string, its value) are kept in one
                // run, scanned byte by byte (its strings are short: memchr would not pay)
                // until the value ends or the fragment does.
                let start = i;
                while i < bytes.len() {
                    let b = bytes[i];
                    i += 1;
                    if self.in_string {
                        if self.escaped {
                            self.escaped = false;
                        } else if b == b'\\' {
                            self.escaped = true;
                        } else if b == b'"' {
                            self.in_string = false;
                            if self.depth == entry_depth {
                                break;
                            }
                        }
                        continue;
                    }
                    match b {
                        b'"' => self.in_string = true,
                        b'{' | b'[' => self.depth += 1,
                        b'}' | b']' => {
                            self.depth -= 1;
                            if self.depth == entry_depth {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                self.payload_last = self.offset + i - 1;
                if let Err(e) = self.keep(&bytes[start..i]) {
                    self.error = Some(e);
                    break;
                }
                continue;
            }
            if self.in_string {
                // A string elsewhere (the header, a raw payload): to the next quote or backslash.
                let start = i;
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                } else {
                    match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                        Some(k) => {
                            i += k;
                            if bytes[i] == b'"' {
                                self.in_string = false;
                            } else {
                                self.escaped = true;
                            }
                            i += 1;
                        }
                        None => i = bytes.len(),
                    }
                }
                if let Err(e) = self.string_bytes(&bytes[start..i], self.offset + i - 1) {
                    self.error = Some(e);
                    break;
                }
                continue;
            }
            let b = bytes[i];
            if let Err(e) = self.structural(b, self.offset + i) {
                self.error = Some(e);
                break;
            }
            i += 1;
        }
        self.offset += bytes.len();
    }

    /// The depth of a presence map's entries when the scan is inside an entry: in its key
    /// or inside its value.
    fn inside_entry(&self) -> Option<u32> {
        let entry_depth = match self.phase {
            Phase::StateMap => 2,
            Phase::DiffMap => 3,
            _ => return None,
        };
        (self.depth > entry_depth || self.in_string).then_some(entry_depth)
    }

    /// The message ended: what it was.
    pub(crate) fn finish(&mut self) -> Result<Message, MessageError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.carry_len > 0 {
            return Err(MessageError::NotUtf8);
        }
        if self.phase != Phase::End {
            return Err(MessageError::Frame("the message ended early".into()));
        }
        let (join_ref, msg_ref, topic, event) = self.header.take().ok_or_else(|| frame_error("no header"))?;
        let payload_len = self.payload_first.map_or(0, |first| self.payload_last + 1 - first);
        let body = match self.kind {
            Kind::State => Body::State(std::mem::take(&mut self.state)),
            Kind::Diff => {
                let joins = self.joins.take().ok_or_else(|| presence_error("a diff without joins"))?;
                let leaves = self.leaves.take().ok_or_else(|| presence_error("a diff without leaves"))?;
                Body::Diff { joins, leaves }
            }
            Kind::Raw => {
                let raw = std::str::from_utf8(&self.kept).map_err(|_| MessageError::NotUtf8)?;
                let value: &serde_json::value::RawValue =
                    serde_json::from_str(raw).map_err(|e| MessageError::Frame(e.to_string()))?;
                Body::Raw(value.get().to_owned())
            }
        };
        Ok(Message { join_ref, msg_ref, topic, event, payload_len, body })
    }

    /// Check that the text so far is UTF-8, carrying an incomplete sequence at the end.
    fn check_utf8(&mut self, mut bytes: &[u8]) -> Result<(), MessageError> {
        while self.carry_len > 0 && !bytes.is_empty() {
            self.carry[self.carry_len] = bytes[0];
            self.carry_len += 1;
            bytes = &bytes[1..];
            match std::str::from_utf8(&self.carry[..self.carry_len]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_some() => return Err(MessageError::NotUtf8),
                Err(_) if self.carry_len == 4 => return Err(MessageError::NotUtf8),
                Err(_) => {}
            }
        }
        if let Err(e) = std::str::from_utf8(bytes) {
            if e.error_len().is_some() {
                return Err(MessageError::NotUtf8);
            }
            let rest = &bytes[e.valid_up_to()..];
            self.carry[..rest.len()].copy_from_slice(rest);
            self.carry_len = rest.len();
        }
        Ok(())
    }

    /// Bytes of a string (its closing quote included), the last at offset `last`.
    fn string_bytes(&mut self, s: &[u8], last: usize) -> Result<(), MessageError> {
        if self.phase >= Phase::PayloadStart && self.phase < Phase::End {
            self.payload_last = last;
        }
        match self.phase {
            Phase::Header | Phase::Raw | Phase::StateMap | Phase::DiffKey | Phase::DiffMap => self.keep(s),
            _ => Ok(()),
        }
    }

    fn keep(&mut self, s: &[u8]) -> Result<(), MessageError> {
        if self.kept.len() + s.len() > MAX_KEPT {
            return Err(MessageError::TooLong);
        }
        self.kept.extend_from_slice(s);
        Ok(())
    }

    /// One byte outside strings, at offset `at` of the message.
    fn structural(&mut self, b: u8, at: usize) -> Result<(), MessageError> {
        let depth = self.depth;
        match b {
            b'[' | b'{' => self.depth += 1,
            b']' | b'}' => {
                self.depth = self.depth.checked_sub(1).ok_or_else(|| frame_error("unbalanced brackets"))?;
            }
            b'"' => self.in_string = true,
            _ => {}
        }
        if self.phase >= Phase::PayloadStart && self.phase < Phase::End && !(depth == 1 && b == b']') && !blank(b) {
            // The payload's extent, for the byte counts: everything but the closing `]`.
            self.payload_first.get_or_insert(at);
            self.payload_last = at;
        }
        match self.phase {
            Phase::Start => match b {
                b'[' => {
                    self.phase = Phase::Header;
                    self.kept.push(b'[');
                }
                _ if blank(b) => {}
                _ => return Err(frame_error("not an array")),
            },
            Phase::Header => {
                if depth == 1 && b == b',' {
                    self.commas += 1;
                    if self.commas == 4 {
                        self.kept.push(b']');
                        self.read_header()?;
                        self.kept.clear();
                        self.phase = Phase::PayloadStart;
                        return Ok(());
                    }
                } else if depth == 1 && b == b']' {
                    return Err(frame_error("fewer than five elements"));
                }
                self.keep(&[b])?;
            }
            Phase::PayloadStart => match (self.kind, b) {
                _ if blank(b) => {}
                (Kind::State, b'{') => self.open_map(Phase::StateMap),
                (Kind::Diff, b'{') => self.open_map(Phase::DiffKey),
                (Kind::State | Kind::Diff, _) => return Err(presence_error("the payload is not an object")),
                (Kind::Raw, _) => {
                    self.phase = Phase::Raw;
                    return self.raw_byte(b, depth);
                }
            },
            Phase::Raw => return self.raw_byte(b, depth),
            Phase::StateMap => {
                if depth == 2 && matches!(b, b',' | b'}') {
                    self.end_entry(b == b'}')?;
                    if b == b'}' {
                        self.phase = Phase::AfterPayload;
                    }
                } else {
                    self.entry_byte(b)?;
                }
            }
            Phase::DiffKey => match b {
                b':' if depth == 2 => {
                    let key: String =
                        serde_json::from_slice(&self.kept).map_err(|e| presence_error(&format!("a diff key: {e}")))?;
                    self.kept.clear();
                    self.diff_members = self.entries;
                    self.side = match key.as_str() {
                        "joins" => Some(Side::Joins),
                        "leaves" => Some(Side::Leaves),
                        _ => None,
                    };
                    self.phase = Phase::DiffValueStart;
                }
                b'}' if depth == 2 && self.entries == 0 && self.kept.iter().all(|&c| blank(c)) => {
                    self.phase = Phase::AfterPayload;
                }
                _ if depth == 2 && matches!(b, b',' | b'}' | b'[' | b'{') => {
                    return Err(presence_error("a diff member without a value"));
                }
                _ => self.keep(&[b])?,
            },
            Phase::DiffValueStart => match (self.side, b) {
                _ if blank(b) => {}
                (Some(side), b'{') => {
                    let ids = match side {
                        Side::Joins => &mut self.joins,
                        Side::Leaves => &mut self.leaves,
                    };
                    if ids.is_some() {
                        return Err(presence_error("a diff side twice"));
                    }
                    *ids = Some(Vec::new());
                    self.open_map(Phase::DiffMap);
                }
                (Some(_), _) => return Err(presence_error("a diff side that is not an object")),
                (None, b',' | b'}') => return Err(presence_error("a diff member without a value")),
                // Another member's value (a scalar ends at the next `,` or `}` at depth 2).
                (None, _) => self.phase = Phase::DiffSkip,
            },
            Phase::DiffMap => {
                if depth == 3 && matches!(b, b',' | b'}') {
                    self.end_entry(b == b'}')?;
                    if b == b'}' {
                        self.phase = Phase::DiffAfterValue;
                    }
                } else {
                    self.entry_byte(b)?;
                }
            }
            Phase::DiffSkip => {
                if depth == 2 && matches!(b, b',' | b'}') {
                    self.after_diff_value(b)?;
                }
            }
            Phase::DiffAfterValue => match b {
                _ if blank(b) => {}
                b',' | b'}' if depth == 2 => self.after_diff_value(b)?,
                _ => return Err(presence_error("a diff member not followed by , or }")),
            },
            Phase::AfterPayload => match b {
                _ if blank(b) => {}
                b']' if depth == 1 => self.phase = Phase::End,
                b',' if depth == 1 => return Err(frame_error("more than five elements")),
                _ => return Err(frame_error("bytes after the payload")),
            },
            Phase::End => {
                if !blank(b) {
                    return Err(frame_error("bytes after the frame"));
                }
            }
        }
        Ok(())
    }

    /// The first four elements, `[join_ref, ref, topic, event` and the `]` put for the comma.
    fn read_header(&mut self) -> Result<(), MessageError> {
        type Header = (Option<String>, Option<String>, String, String);
        let header: Header =
            serde_json::from_slice(&self.kept).map_err(|e| MessageError::Frame(format!("its header: {e}")))?;
        self.kind = match header.3.as_str() {
            "presence_state" => Kind::State,
            "presence_diff" => Kind::Diff,
            _ => Kind::Raw,
        };
        self.header = Some(header);
        Ok(())
    }

    /// A map (or the diff object) opens.
    fn open_map(&mut self, phase: Phase) {
        self.phase = phase;
        self.entry_started = false;
        self.entries = 0;
        self.kept.clear();
        if matches!(phase, Phase::StateMap | Phase::DiffMap) {
            // An entry is parsed as the one-entry map `{` entry `}`.
            self.kept.push(b'{');
        }
    }

    /// A `,` or `}` at depth 2 after a diff member's value.
    fn after_diff_value(&mut self, b: u8) -> Result<(), MessageError> {
        self.side = None;
        self.entries = self.diff_members + 1;
        self.kept.clear();
        if b == b'}' {
            self.phase = Phase::AfterPayload;
        } else {
            self.phase = Phase::DiffKey;
        }
        Ok(())
    }

    /// A byte of a raw payload; the payload ends at the `]` that closes the frame.
    fn raw_byte(&mut self, b: u8, depth: u32) -> Result<(), MessageError> {
        if depth == 1 && b == b']' {
            self.phase = Phase::End;
            return Ok(());
        }
        if depth == 1 && b == b',' {
            return Err(frame_error("more than five elements"));
        }
        self.keep(&[b])
    }

    /// A byte of a presence map's entry (outside strings).
    fn entry_byte(&mut self, b: u8) -> Result<(), MessageError> {
        if !blank(b) {
            self.entry_started = true;
        }
        self.keep(&[b])
    }

    /// The `,` or the closing `}` after an entry: parse it into ids.
    fn end_entry(&mut self, closing: bool) -> Result<(), MessageError> {
        if !self.entry_started {
            // `{}` is an empty map; `{,` or `,}` or `,,` is not JSON.
            if !(closing && self.entries == 0) {
                return Err(presence_error("an empty entry"));
            }
            return Ok(());
        }
        self.kept.push(b'}');
        let id = self.id;
        let result = match self.phase {
            Phase::StateMap => {
                let state = &mut self.state;
                protocol::for_each_meta_bytes(&self.kept, |k, r| {
                    state.insert(id(k, r));
                })
            }
            _ => {
                let ids = match self.side {
                    Some(Side::Joins) => self.joins.as_mut(),
                    _ => self.leaves.as_mut(),
                };
                let ids = ids.ok_or_else(|| presence_error("an entry outside a diff side"))?;
                protocol::for_each_meta_bytes(&self.kept, |k, r| ids.push(id(k, r)))
            }
        };
        result.map_err(|e| presence_error(&e.to_string()))?;
        self.kept.truncate(1);
        self.entry_started = false;
        self.entries += 1;
        Ok(())
    }
}

fn frame_error(what: &str) -> MessageError {
    MessageError::Frame(what.to_owned())
}

fn presence_error(what: &str) -> MessageError {
    MessageError::Presence(what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::protocol::{Parsed, Payload};
    use crate::load::view::{meta_id, View};

    /// What a message comes to, for comparing: header, payload length, and the view its
    /// presence payload makes (state) or its ids in order (diff), or the raw payload.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        header: (Option<String>, Option<String>, String, String),
        payload_len: usize,
        what: String,
    }

    fn view_of(ids: impl IntoIterator<Item = u64>) -> String {
        let mut view = View::default();
        view.sync_state(ids);
        format!("state {} metas, digest {:x}", view.len(), view.digest())
    }

    fn outcome(m: Message) -> Outcome {
        let what = match m.body {
            Body::State(ids) => view_of(ids),
            Body::Diff { joins, leaves } => format!("diff {joins:?} {leaves:?}"),
            Body::Raw(raw) => format!("raw {raw}"),
        };
        Outcome { header: (m.join_ref, m.msg_ref, m.topic, m.event), payload_len: m.payload_len, what }
    }

    /// The message parsed whole by the one-pass parser (`protocol::Parsed`).
    fn whole(text: &str) -> Result<Outcome, serde_json::Error> {
        let p = Parsed::parse(text, meta_id)?;
        let header = (
            p.join_ref().map(str::to_owned),
            p.msg_ref().map(str::to_owned),
            p.topic().to_owned(),
            p.event().to_owned(),
        );
        let what = match &p.payload {
            Payload::State(ids) => view_of(ids.iter().copied()),
            Payload::Diff { joins, leaves } => format!("diff {joins:?} {leaves:?}"),
            Payload::Raw(_) => format!("raw {}", p.raw_payload()),
        };
        Ok(Outcome { header, payload_len: p.payload_len, what })
    }

    fn fed(chunks: &[&[u8]]) -> Result<Outcome, MessageError> {
        let mut parser = MessageParser::new(meta_id);
        // A parser is reused between messages: start from a used one.
        parser.begin();
        parser.feed(br#"["1",null,"t","presence_state",{"u":{"metas":[{"phx_ref":"x"}]}"#);
        parser.begin();
        for chunk in chunks {
            parser.feed(chunk);
        }
        parser.finish().map(outcome)
    }

    const GOOD: &[&str] = &[
        // Keys and refs with multi-byte characters, escapes, metas with nested members,
        // blanks everywhere, a key with two metas and one with none.
        "[ \"7\" , null ,\"room:ü\",\"presence_state\", {\"us\\\"er\\\\1\": {\"x\": [1, {\"a\": \"}]\"}], \"metas\": [{\"phx_ref\": \"F\u{e9}\u{65e5}\u{1f600}\", \"name\": \"\\u00e9,\\\"{\"}, {\"online_at\": 5, \"phx_ref\": \"r2\"}]} ,\n \"\u{65e5}\u{672c}\":{\"metas\":[{\"phx_ref\":\"r3\",\"m\":{\"k\":[[],{}]}}]}, \"empty\": {\"metas\": []} } ]\n",
        r#"["3",null,"room:1","presence_diff",{"leaves":{"b":{"metas":[{"phx_ref":"r2"}]}},"other":{"joins":{"z":{"metas":[{"phx_ref":"no"}]}}},"n":[1,"]"],"joins":{"a":{"metas":[{"x":1,"phx_ref":"r1"},{"phx_ref":"r0"}]},"c":{"metas":[{"phx_ref":"r9"}]}}}]"#,
        r#"[null,null,"t","presence_diff",{ "joins" : { } , "leaves" : {} }]"#,
        r#"["1","1","t\",\"x","presence_state",{}]"#,
        r#"["1","2","room:1","phx_reply",{"status":"ok","response":{"a":["]",{"b":"\u00fc"}]}}]"#,
        r#"[null,"5","t","other","a string ] payload"]"#,
        r#"[null,"5","t","other",  17  ]"#,
    ];

    #[test]
    fn a_message_parses_as_the_whole_message_does_whatever_its_fragments() {
        for text in GOOD {
            let want = whole(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let bytes = text.as_bytes();
            assert_eq!(fed(&[bytes]).unwrap(), want, "whole: {text}");
            // Split in two at every byte (inside UTF-8 sequences, strings and escapes too).
            for at in 0..=bytes.len() {
                assert_eq!(fed(&[&bytes[..at], &bytes[at..]]).unwrap(), want, "split at {at}: {text}");
            }
            let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(fed(&one_by_one).unwrap(), want, "byte by byte: {text}");
        }
        // In three, at every pair of places, for one message.
        let bytes = GOOD[1].as_bytes();
        let want = whole(GOOD[1]).unwrap();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                assert_eq!(fed(&[&bytes[..a], &bytes[a..b], &bytes[b..]]).unwrap(), want, "split at {a}, {b}");
            }
        }
    }

    #[test]
    fn what_it_reads_is_what_the_fixtures_hold() {
        let state = fed(&[GOOD[0].as_bytes()]).unwrap();
        let ids = [("us\"er\\1", "F\u{e9}\u{65e5}\u{1f600}"), ("us\"er\\1", "r2"), ("\u{65e5}\u{672c}", "r3")];
        assert_eq!(state.what, view_of(ids.iter().map(|(k, r)| meta_id(k, r))));
        assert_eq!(state.header, (Some("7".into()), None, "room:ü".into(), "presence_state".into()));
        let diff = fed(&[GOOD[1].as_bytes()]).unwrap();
        let joins = vec![meta_id("a", "r1"), meta_id("a", "r0"), meta_id("c", "r9")];
        assert_eq!(diff.what, format!("diff {joins:?} {:?}", vec![meta_id("b", "r2")]));
        let reply = fed(&[GOOD[4].as_bytes()]).unwrap();
        assert_eq!(reply.what, r#"raw {"status":"ok","response":{"a":["]",{"b":"\u00fc"}]}}"#);
        assert_eq!(reply.payload_len, reply.what.len() - 4);
    }

    #[test]
    fn a_message_that_is_not_one_is_an_error_however_it_is_split() {
        let bad: &[&[u8]] = &[
            br#"["1",null,"t","presence_diff",{"joins":{}}]"#,
            br#"["1",null,"t","presence_diff",{"joins":[],"leaves":{}}]"#,
            br#"["1",null,"t","presence_diff",{"joins":{},"leaves":{},}]"#,
            br#"["1",null,"t","presence_state",{"u":{"metas":[{}]}}]"#,
            br#"["1",null,"t","presence_state",{"u":{"metas":[{"phx_ref":7}]}}]"#,
            br#"["1",null,"t","presence_state",{"u":{"metas":[]},}]"#,
            br#"["1",null,"t","presence_state",{,"u":{"metas":[]}}]"#,
            br#"["1",null,"t","presence_state",[]]"#,
            br#"["1",null,"t","presence_state",{},6]"#,
            br#"["1",null,"t","presence_state",{}] x"#,
            br#"["1",null,"t","presence_state",{}"#,
            br#"["1",null,"t","x"]"#,
            br#"[1,null,"t","x",{}]"#,
            br#"["1",null,"t","x",{}}]"#,
            b"not json",
            b"[\"1\",null,\"t\",\"x\",\"\xff\"]",
            b"[\"1\",null,\"t\",\"x\",\"\xc3\"]",
            b"[\"1\",null,\"t\",\"x\",\"\xe6\x97\"]",
            b"[\"1\",null,\"t\",\"x\",{}]\xe6\x97",
        ];
        for text in bad {
            if let Ok(s) = std::str::from_utf8(text) {
                assert!(Parsed::parse(s, meta_id).is_err(), "the oracle takes {s}");
            }
            for at in 0..=text.len() {
                assert!(fed(&[&text[..at], &text[at..]]).is_err(), "{} split at {at}", String::from_utf8_lossy(text));
            }
        }
    }

    #[test]
    fn a_raw_payload_past_the_cap_is_an_error_and_the_next_message_parses() {
        let mut parser = MessageParser::new(meta_id);
        parser.begin();
        parser.feed(br#"[null,null,"t","x",""#);
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..17 {
            parser.feed(&chunk);
        }
        parser.feed(br#""]"#);
        assert_eq!(parser.finish().unwrap_err(), MessageError::TooLong);
        parser.begin();
        parser.feed(GOOD[3].as_bytes());
        assert_eq!(outcome(parser.finish().unwrap()), whole(GOOD[3]).unwrap());
    }
}
