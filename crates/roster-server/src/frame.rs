//! Phoenix Channels serializer v2: one text frame is the JSON array
//! `[join_ref, ref, topic, event, payload]`.
//!
//! `join_ref` names one join of a channel (the client numbers its joins), `ref` one message
//! awaiting a reply; both are strings or `null`. Server pushes (`presence_diff`, broadcasts)
//! carry `ref = null`; replies echo the request's refs. The payload may be any JSON value here:
//! what an event requires of it is checked where the event is handled.
//!
//! Parsing never panics: a frame from the network is remote input, and every way it can be
//! wrong is a [`FrameError`].
//!
//! A push many sockets receive (a `presence_diff` of a topic window, a `presence_state`, a
//! broadcast) is encoded once by [`PhoenixEncoder`] into the bytes after its `join_ref`:
//! `,null,"<topic>","<event>",<payload>]`. Each socket writes `[` and its channel's `join_ref`
//! in front ([`join_ref_prefix`]); nothing else of a frame differs between its receivers.

use crate::meta_json::MetaValueJson;
use bytes::Bytes;
use roster_core::Topic;
use roster_runtime::{PushBody, PushEncoder};
use serde::Serialize;
use serde_json::{json, Value};
use std::cell::RefCell;

/// One Phoenix v2 message, either direction.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The join this message belongs to (`null` for `heartbeat` and for server pushes
    /// outside any join).
    pub join_ref: Option<String>,
    /// The message reference a `phx_reply` echoes; `null` on server pushes.
    pub msg_ref: Option<String>,
    /// The topic, e.g. `room:42`, or `phoenix` for heartbeats.
    pub topic: String,
    /// The event, e.g. `phx_join`, `heartbeat`, `presence_diff`, or an app's own.
    pub event: String,
    /// The payload, any JSON value.
    pub payload: Value,
}

/// Why a text frame is not a Phoenix v2 message. The frame is dropped; the socket and its
/// channels are unchanged (the server may answer or count it, see [`FrameError::kind`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON at all; the message is the parser's, with line and column.
    #[error("frame is not JSON: {0}")]
    InvalidJson(String),
    /// JSON, but not an array (the v1 serializer's objects land here).
    #[error("frame is not a JSON array [join_ref, ref, topic, event, payload]")]
    NotAnArray,
    /// An array with this many elements instead of five.
    #[error("frame has {0} elements; expected 5: [join_ref, ref, topic, event, payload]")]
    WrongLength(usize),
    /// An element of the wrong type: `join_ref`/`ref` must be a string or null, `topic` and
    /// `event` a string.
    #[error("frame field {field} has the wrong type: {}", expected(.field))]
    WrongType {
        /// `join_ref`, `ref`, `topic` or `event`.
        field: &'static str,
    },
}

fn expected(field: &str) -> &'static str {
    match field {
        "join_ref" | "ref" => "expected a string or null",
        _ => "expected a string",
    }
}

impl FrameError {
    /// A short stable name for a metrics label: `invalid_json`, `not_an_array`,
    /// `wrong_length` or `wrong_type`.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::InvalidJson(_) => "invalid_json",
            FrameError::NotAnArray => "not_an_array",
            FrameError::WrongLength(_) => "wrong_length",
            FrameError::WrongType { .. } => "wrong_type",
        }
    }
}

/// The topic of heartbeats.
pub const PHOENIX_TOPIC: &str = "phoenix";

impl Frame {
    /// Parse one text frame.
    pub fn parse(text: &str) -> Result<Frame, FrameError> {
        // A well-formed frame is read straight into its five fields: no array of five JSON
        // values is built and taken apart (a 400-byte allocation per frame, with the payload's
        // JSON values sized for any of them). Anything else is read again as a JSON value, to
        // say exactly what is wrong with it.
        type Fields = (Option<String>, Option<String>, String, String, Value);
        if let Ok((join_ref, msg_ref, topic, event, payload)) = serde_json::from_str::<Fields>(text) {
            return Ok(Frame { join_ref, msg_ref, topic, event, payload });
        }
        Self::parse_value(text)
    }

    /// [`parse`](Self::parse) through a JSON value: the error of a frame that is not one.
    fn parse_value(text: &str) -> Result<Frame, FrameError> {
        let value: Value = serde_json::from_str(text).map_err(|e| FrameError::InvalidJson(e.to_string()))?;
        let Value::Array(items) = value else {
            return Err(FrameError::NotAnArray);
        };
        let [join_ref, msg_ref, topic, event, payload] =
            <[Value; 5]>::try_from(items).map_err(|items| FrameError::WrongLength(items.len()))?;
        Ok(Frame {
            join_ref: optional_string(join_ref, "join_ref")?,
            msg_ref: optional_string(msg_ref, "ref")?,
            topic: string(topic, "topic")?,
            event: string(event, "event")?,
            payload,
        })
    }

    /// Encode as a v2 text frame (written straight from the fields: nothing is copied into an
    /// intermediate JSON value first).
    pub fn encode(&self) -> String {
        // Strings and JSON values always serialize; nothing here can fail.
        serde_json::to_string(&(&self.join_ref, &self.msg_ref, &self.topic, &self.event, &self.payload))
            .unwrap_or_default()
    }

    /// A `phx_reply` to the message `msg_ref` of the join `join_ref`: payload
    /// `{"status": status, "response": response}`, `status` being `"ok"` or `"error"`.
    pub fn reply(
        join_ref: Option<String>,
        msg_ref: Option<String>,
        topic: impl Into<String>,
        status: ReplyStatus,
        response: Value,
    ) -> Frame {
        Frame {
            join_ref,
            msg_ref,
            topic: topic.into(),
            event: "phx_reply".to_owned(),
            payload: json!({ "status": status.as_str(), "response": response }),
        }
    }

    /// `phx_close` for a channel the server ended (after `slot_revoked`, or in answer to
    /// `phx_leave`): the client marks the channel closed and does not rejoin.
    pub fn close(join_ref: Option<String>, topic: impl Into<String>) -> Frame {
        Frame::push(join_ref, topic, "phx_close", json!({}))
    }

    /// `phx_error` for a channel that failed on the server: the client rejoins it later.
    pub fn error(join_ref: Option<String>, topic: impl Into<String>) -> Frame {
        Frame::push(join_ref, topic, "phx_error", json!({}))
    }

    /// A server push (`presence_state`, `presence_diff`, `slot_revoked`, a broadcast): `ref`
    /// is null.
    pub fn push(join_ref: Option<String>, topic: impl Into<String>, event: impl Into<String>, payload: Value) -> Frame {
        Frame { join_ref, msg_ref: None, topic: topic.into(), event: event.into(), payload }
    }
}

/// A `phx_reply` to the message `msg_ref` of the join `join_ref`, encoded straight to its
/// text: `[join_ref, msg_ref, topic, "phx_reply", {"status": status, "response": response}]`,
/// the same text as [`Frame::reply`] then [`Frame::encode`] without building either (a socket
/// answers every join, heartbeat and push with one).
pub fn encode_reply(
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    status: ReplyStatus,
    response: &impl Serialize,
) -> String {
    #[derive(Serialize)]
    struct Payload<'a, R> {
        status: &'static str,
        response: &'a R,
    }
    let payload = Payload { status: status.as_str(), response };
    // What is written here (strings, a JSON value or a derived struct) always serializes.
    serde_json::to_string(&(join_ref, msg_ref, topic, "phx_reply", payload)).unwrap_or_default()
}

/// The Phoenix v2 encoder of shared pushes: see the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhoenixEncoder;

/// A broadcast's payload, `{"from": user, "body": ...}`, written straight to JSON.
#[derive(Serialize)]
struct BroadcastPayload<'a> {
    from: &'a str,
    body: MetaValueJson<'a>,
}

/// The most room a thread's encoding buffer keeps between pushes: a room of 50's
/// `presence_state` is about 8 KB; a buffer that grew past this (a list of hundreds) is let go.
pub(crate) const KEPT_ENCODE_BYTES: usize = 64 * 1024;

thread_local! {
    /// This thread's encoding buffer (a presence shard's thread): a push is written here and
    /// copied out exactly sized, so its bytes are one allocation, not a `Vec` doubling from a
    /// few bytes up to a room's list and freed on the way (8 allocations for an 8 KB list,
    /// made and freed on the threads that also hold the node's long-lived records).
    static ENCODE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl PushEncoder for PhoenixEncoder {
    fn encode(&self, topic: &Topic, body: &PushBody) -> Bytes {
        written_exactly(|out| write_push(out, topic, body))
    }
}

/// What `write` writes, written into this thread's kept buffer and copied out exactly sized:
/// one allocation, whatever its length (a shared push, a `/presence` answer).
pub(crate) fn written_exactly(write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    ENCODE_BUF.with(|kept| match kept.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            write(&mut buf);
            let bytes = Bytes::copy_from_slice(&buf);
            if buf.capacity() > KEPT_ENCODE_BYTES {
                *buf = Vec::new();
            }
            bytes
        }
        // Only if a write ever wrote another inside it: a buffer of its own.
        Err(_) => {
            let mut out = Vec::new();
            write(&mut out);
            Bytes::from(out)
        }
    })
}

/// The room this thread's encoding buffer keeps now.
#[cfg(test)]
fn kept_encode_room() -> usize {
    ENCODE_BUF.with(|kept| kept.borrow().capacity())
}

/// Write the shared bytes of `body` in `topic` (see the module documentation) into `out`.
fn write_push(out: &mut Vec<u8>, topic: &Topic, body: &PushBody) {
    out.extend_from_slice(b",null,");
    // Strings and the core's presence types always serialize; nothing here can fail.
    let _ = serde_json::to_writer(&mut *out, topic.as_str());
    out.push(b',');
    let _ = match body {
        PushBody::State(list) => {
            out.extend_from_slice(b"\"presence_state\",");
            serde_json::to_writer(&mut *out, &**list)
        }
        PushBody::Diff(diff) => {
            out.extend_from_slice(b"\"presence_diff\",");
            serde_json::to_writer(&mut *out, &**diff)
        }
        PushBody::Broadcast { from, event, body } => serde_json::to_writer(&mut *out, event.as_str()).and_then(|()| {
            out.push(b',');
            serde_json::to_writer(&mut *out, &BroadcastPayload { from: from.as_str(), body: MetaValueJson(body) })
        }),
    };
    out.push(b']');
}

/// What a socket writes in front of a shared push: `[` and its channel's `join_ref`.
pub fn join_ref_prefix(join_ref: Option<&str>) -> String {
    let mut out = Vec::with_capacity(join_ref.map_or(5, |r| r.len() + 3));
    // Writing to a `Vec` never fails; the JSON of a string or `null` is UTF-8.
    let _ = write_join_ref_prefix(join_ref, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// [`join_ref_prefix`], written into `out` (a socket writes it into a small buffer in place:
/// no allocation per push). Fails only when `out` does (a buffer too short).
pub fn write_join_ref_prefix(join_ref: Option<&str>, out: &mut impl std::io::Write) -> std::io::Result<()> {
    out.write_all(b"[")?;
    serde_json::to_writer(out, &join_ref).map_err(std::io::Error::other)
}

/// The `status` of a `phx_reply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyStatus {
    /// `"ok"`: the join or push succeeded.
    Ok,
    /// `"error"`: refused; the response says why (`{"reason": ...}`).
    Error,
}

impl ReplyStatus {
    /// `"ok"` or `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyStatus::Ok => "ok",
            ReplyStatus::Error => "error",
        }
    }
}

fn optional_string(value: Value, field: &'static str) -> Result<Option<String>, FrameError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(FrameError::WrongType { field }),
    }
}

fn string(value: Value, field: &'static str) -> Result<String, FrameError> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(FrameError::WrongType { field }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Option<String> {
        Some(x.to_owned())
    }

    #[test]
    fn join_frame_from_the_phoenix_client_parses() {
        let f = Frame::parse(r#"["3","3","room:42","phx_join",{"tab_id":"t1","meta":{"name":"Ada"}}]"#).unwrap();
        assert_eq!(
            f,
            Frame {
                join_ref: s("3"),
                msg_ref: s("3"),
                topic: "room:42".to_owned(),
                event: "phx_join".to_owned(),
                payload: json!({"tab_id": "t1", "meta": {"name": "Ada"}}),
            }
        );
    }

    #[test]
    fn heartbeat_frame_with_null_join_ref_parses() {
        let f = Frame::parse(r#"[null,"1","phoenix","heartbeat",{}]"#).unwrap();
        assert_eq!((f.join_ref, f.msg_ref.as_deref(), f.topic.as_str()), (None, Some("1"), PHOENIX_TOPIC));
        assert_eq!((f.event.as_str(), f.payload), ("heartbeat", json!({})));
    }

    #[test]
    fn payload_may_be_any_json_value() {
        for payload in ["null", "1.5", r#""text""#, "[1,2]", "true", r#"{"a":{"b":[null]}}"#] {
            let f = Frame::parse(&format!(r#"[null,null,"room:1","shout",{payload}]"#)).unwrap();
            assert_eq!(f.payload, serde_json::from_str::<Value>(payload).unwrap());
        }
    }

    #[test]
    fn a_frame_read_into_its_fields_is_the_frame_read_as_a_json_value() {
        let frames = [
            r#"["3","3","room:42","phx_join",{"tab_id":"t1","meta":{"name":"Ada","n":[1,2.5,null]}}]"#,
            r#"[null,"1","phoenix","heartbeat",{}]"#,
            r#" [ null , null , "t\"q\u00e9" , "ev" , "text" ] "#,
            r#"["1",null,"room:1","shout",[{"z":1,"a":2}]]"#,
        ];
        for text in frames {
            assert_eq!(Frame::parse(text), Frame::parse_value(text), "{text}");
            assert!(Frame::parse(text).is_ok(), "{text}");
        }
        // What the fields cannot hold is read as a value, and told apart as before.
        for text in [r#"["1","1","room:1","phx_join"]"#, r#"[1,"1","room:1","phx_join",{}]"#, "{}", "[", "[null,]"] {
            assert_eq!(Frame::parse(text), Frame::parse_value(text), "{text}");
            assert!(Frame::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn text_that_is_not_json_is_invalid_json() {
        for text in ["", "[", "not json", r#"[null,"1","phoenix","heartbeat",{}"#, "[null,]"] {
            let err = Frame::parse(text).unwrap_err();
            assert!(matches!(err, FrameError::InvalidJson(_)), "{text:?}: {err:?}");
            assert_eq!(err.kind(), "invalid_json");
        }
    }

    #[test]
    fn json_that_is_not_an_array_is_not_an_array() {
        for text in [r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}"#, "null", "5", r#""x""#] {
            assert_eq!(Frame::parse(text), Err(FrameError::NotAnArray), "{text}");
        }
        assert_eq!(FrameError::NotAnArray.kind(), "not_an_array");
    }

    #[test]
    fn array_of_other_than_five_elements_is_wrong_length() {
        assert_eq!(Frame::parse("[]"), Err(FrameError::WrongLength(0)));
        assert_eq!(Frame::parse(r#"[null,"1","phoenix","heartbeat"]"#), Err(FrameError::WrongLength(4)));
        assert_eq!(Frame::parse(r#"[null,"1","phoenix","heartbeat",{},{}]"#), Err(FrameError::WrongLength(6)));
        assert_eq!(FrameError::WrongLength(6).kind(), "wrong_length");
        assert!(FrameError::WrongLength(6).to_string().contains("6 elements"));
    }

    #[test]
    fn refs_must_be_strings_or_null() {
        assert_eq!(Frame::parse(r#"[1,"1","room:1","phx_join",{}]"#), Err(FrameError::WrongType { field: "join_ref" }));
        assert_eq!(Frame::parse(r#"["1",1,"room:1","phx_join",{}]"#), Err(FrameError::WrongType { field: "ref" }));
        assert_eq!(Frame::parse(r#"["1",{},"room:1","phx_join",{}]"#), Err(FrameError::WrongType { field: "ref" }));
    }

    #[test]
    fn topic_and_event_must_be_strings() {
        assert_eq!(Frame::parse(r#"["1","1",null,"phx_join",{}]"#), Err(FrameError::WrongType { field: "topic" }));
        assert_eq!(Frame::parse(r#"["1","1",42,"phx_join",{}]"#), Err(FrameError::WrongType { field: "topic" }));
        assert_eq!(Frame::parse(r#"["1","1","room:1",["x"],{}]"#), Err(FrameError::WrongType { field: "event" }));
        let err = FrameError::WrongType { field: "event" };
        assert_eq!(err.kind(), "wrong_type");
        assert_eq!(err.to_string(), "frame field event has the wrong type: expected a string");
    }

    #[test]
    fn heartbeat_reply_encodes_exactly() {
        let reply = Frame::reply(None, s("1"), PHOENIX_TOPIC, ReplyStatus::Ok, json!({}));
        assert_eq!(reply.encode(), r#"[null,"1","phoenix","phx_reply",{"status":"ok","response":{}}]"#);
    }

    #[test]
    fn join_replies_encode_exactly() {
        let ok = Frame::reply(s("3"), s("3"), "room:42", ReplyStatus::Ok, json!({"slot": {"token": "17.1"}}));
        assert_eq!(
            ok.encode(),
            r#"["3","3","room:42","phx_reply",{"status":"ok","response":{"slot":{"token":"17.1"}}}]"#
        );
        let refused = Frame::reply(s("3"), s("3"), "room:42", ReplyStatus::Error, json!({"reason": "already_joined"}));
        assert_eq!(
            refused.encode(),
            r#"["3","3","room:42","phx_reply",{"status":"error","response":{"reason":"already_joined"}}]"#
        );
    }

    #[test]
    fn a_reply_encoded_straight_is_the_text_of_the_reply_frame() {
        #[derive(Serialize)]
        struct Slot<'a> {
            token: &'a str,
        }
        #[derive(Serialize)]
        struct Joined<'a> {
            slot: Option<Slot<'a>>,
        }
        /// `join_ref`, `ref`, topic, status, response.
        type Case<'a> = (Option<&'a str>, Option<&'a str>, &'a str, ReplyStatus, Value);
        let cases: [Case; 3] = [
            (Some("3"), Some("3"), "room:\"42\"", ReplyStatus::Ok, json!({"slot": {"token": "17.1"}})),
            (None, Some("1"), PHOENIX_TOPIC, ReplyStatus::Ok, json!({})),
            (Some("é"), None, "t\n", ReplyStatus::Error, json!({"reason": "already_joined"})),
        ];
        for (join_ref, msg_ref, topic, status, response) in cases {
            let frame =
                Frame::reply(join_ref.map(str::to_owned), msg_ref.map(str::to_owned), topic, status, response.clone());
            assert_eq!(encode_reply(join_ref, msg_ref, topic, status, &response), frame.encode());
        }
        let slot = Joined { slot: Some(Slot { token: "17.1" }) };
        assert_eq!(
            encode_reply(Some("3"), Some("3"), "room:42", ReplyStatus::Ok, &slot),
            r#"["3","3","room:42","phx_reply",{"status":"ok","response":{"slot":{"token":"17.1"}}}]"#
        );
        assert_eq!(
            encode_reply(Some("3"), Some("3"), "room:42", ReplyStatus::Ok, &Joined { slot: None }),
            r#"["3","3","room:42","phx_reply",{"status":"ok","response":{"slot":null}}]"#
        );
    }

    #[test]
    fn close_and_error_are_pushes_with_empty_payload() {
        assert_eq!(Frame::close(s("3"), "room:42").encode(), r#"["3",null,"room:42","phx_close",{}]"#);
        assert_eq!(Frame::error(s("3"), "room:42").encode(), r#"["3",null,"room:42","phx_error",{}]"#);
    }

    #[test]
    fn pushes_have_a_null_ref_and_keep_payload_key_order() {
        let diff = Frame::push(s("3"), "room:42", "presence_diff", json!({"joins": {}, "leaves": {}}));
        assert_eq!(diff.encode(), r#"["3",null,"room:42","presence_diff",{"joins":{},"leaves":{}}]"#);
        let relayed = Frame::parse(r#"[null,null,"room:1","shout",{"z":1,"a":2}]"#).unwrap();
        assert_eq!(relayed.encode(), r#"[null,null,"room:1","shout",{"z":1,"a":2}]"#);
    }

    #[test]
    fn a_shared_push_with_its_join_ref_in_front_is_the_frame_it_stands_for() {
        use roster_core::{MetaValue, PresenceDiff, UserId};
        use std::sync::Arc;
        let topic = Topic::from("room:\"42\"");
        let body = PushBody::Broadcast {
            from: UserId::from("u1"),
            event: "shout".to_owned(),
            body: MetaValue::List(vec![MetaValue::Int(1), MetaValue::Str("x".into())]),
        };
        let shared = PhoenixEncoder.encode(&topic, &body);
        let frame = format!("{}{}", join_ref_prefix(Some("7")), std::str::from_utf8(&shared).unwrap());
        let want = Frame::push(s("7"), topic.as_str(), "shout", json!({"from": "u1", "body": [1, "x"]}));
        assert_eq!(Frame::parse(&frame), Ok(want));
        let diff = PushBody::Diff(Arc::new(PresenceDiff::default()));
        let shared = PhoenixEncoder.encode(&Topic::from("t"), &diff);
        let frame = format!("{}{}", join_ref_prefix(None), std::str::from_utf8(&shared).unwrap());
        assert_eq!(frame, r#"[null,null,"t","presence_diff",{"joins":{},"leaves":{}}]"#);
    }

    #[test]
    fn a_push_is_written_in_a_kept_buffer_of_bounded_room_and_copied_out_whole() {
        use roster_core::{MetaValue, UserId};
        let topic = Topic::from("room:1");
        let shout = |len: usize| PushBody::Broadcast {
            from: UserId::from("u1"),
            event: "shout".to_owned(),
            body: MetaValue::Str("x".repeat(len)),
        };
        let mut rooms = Vec::new();
        for len in [5_000, 10, KEPT_ENCODE_BYTES * 2, 20] {
            let shared = PhoenixEncoder.encode(&topic, &shout(len));
            let frame = format!("{}{}", join_ref_prefix(Some("4")), std::str::from_utf8(&shared).unwrap());
            let want = Frame::push(s("4"), "room:1", "shout", json!({"from": "u1", "body": "x".repeat(len)}));
            assert_eq!(Frame::parse(&frame), Ok(want), "{len} bytes");
            rooms.push((shared.len(), kept_encode_room()));
        }
        let [(a, room_a), (_, room_b), (_, room_c), (d, room_d)] = rooms[..] else { unreachable!() };
        // Kept between pushes: the small push after the big one wrote into the same room.
        assert!(room_a >= a && room_a <= KEPT_ENCODE_BYTES, "{room_a}");
        assert_eq!(room_b, room_a);
        // A buffer grown past the bound is let go; the next push grows one again.
        assert_eq!(room_c, 0);
        assert!(room_d >= d && room_d <= KEPT_ENCODE_BYTES, "{room_d}");
    }

    #[test]
    fn encoded_frames_parse_back_unchanged() {
        let frames = [
            Frame::reply(s("1"), s("2"), "room:\"quoted\"", ReplyStatus::Error, json!({"reason": "é ✓"})),
            Frame::push(None, "t", "ev\n", json!([1, "x", null])),
        ];
        for f in frames {
            assert_eq!(Frame::parse(&f.encode()).as_ref(), Ok(&f));
        }
    }
}
