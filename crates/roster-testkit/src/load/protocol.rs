//! The client's side of the Phoenix v2 protocol (`docs/protocol.md`), as cheap as a load
//! generator needs it: a frame's header is parsed with borrowed strings, its payload is read
//! only for the events that matter, and presence payloads are streamed meta by meta to a
//! callback (`key`, `phx_ref`) without building a JSON tree. Tokens are minted like the
//! server's `token::mint`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A token for `sub` with `role`, valid until `exp` (Unix seconds), signed with `secret`:
/// `base64url(claims JSON) "." base64url(HMAC-SHA256(secret, first part))`, no padding.
pub fn mint_token(secret: &str, sub: &str, role: &str, exp: u64) -> String {
    // A struct, not a map: its members keep this order whatever serde_json's features are.
    #[derive(Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        role: &'a str,
        exp: u64,
    }
    let claims = serde_json::to_vec(&Claims { sub, role, exp }).unwrap_or_default();
    let body = URL_SAFE_NO_PAD.encode(claims);
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(body.as_bytes());
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// The text of a client frame `[join_ref, ref, topic, event, payload]`.
pub(crate) fn encode(join_ref: Option<&str>, msg_ref: &str, topic: &str, event: &str, payload: &str) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let join_ref = join_ref.map(quote).unwrap_or_else(|| "null".to_owned());
    format!("[{join_ref},{},{},{},{payload}]", quote(msg_ref), quote(topic), quote(event))
}

/// One server frame with its payload still unparsed.
#[derive(Debug, Deserialize)]
pub(crate) struct Incoming<'a>(
    pub Option<Cow<'a, str>>,
    pub Option<Cow<'a, str>>,
    // The topic: read only so that a frame without one is refused.
    #[allow(dead_code)]
    #[serde(borrow)]
    pub Cow<'a, str>,
    #[serde(borrow)] pub Cow<'a, str>,
    #[serde(borrow)] pub &'a RawValue,
);

impl<'a> Incoming<'a> {
    /// Parse a text frame; an error for anything that is not a five-element v2 array.
    pub(crate) fn parse(text: &'a str) -> Result<Incoming<'a>, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub(crate) fn join_ref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    pub(crate) fn msg_ref(&self) -> Option<&str> {
        self.1.as_deref()
    }

    pub(crate) fn event(&self) -> &str {
        &self.3
    }

    pub(crate) fn payload(&self) -> &'a str {
        self.4.get()
    }
}

#[cfg(test)]
/// A whole server frame read in one pass (the oracle the fragment-by-fragment parse of
/// `message` is checked against): its header, and its payload as its event needs it. A
/// `presence_state` or `presence_diff` payload becomes the ids of its metas (`id(key,
/// phx_ref)`) as it is parsed, never kept or scanned twice: a member of a 10,000-member room
/// takes in about 880 KB of them, and the one client process reads every member's.
pub(crate) struct Parsed<'a> {
    join_ref: Option<Cow<'a, str>>,
    msg_ref: Option<Cow<'a, str>>,
    topic: Cow<'a, str>,
    event: Cow<'a, str>,
    /// The payload's length in bytes.
    pub payload_len: usize,
    pub payload: Payload<'a>,
}

#[cfg(test)]
/// A [`Parsed`] frame's payload.
pub(crate) enum Payload<'a> {
    /// `presence_state`: the ids of its metas.
    State(Vec<u64>),
    /// `presence_diff`: the ids of its joined and its left metas.
    Diff { joins: Vec<u64>, leaves: Vec<u64> },
    /// Any other event's payload, unparsed.
    Raw(&'a RawValue),
}

/// The id of a meta from its key and `phx_ref`.
pub(crate) type MetaId = fn(&str, &str) -> u64;

#[cfg(test)]
impl<'a> Parsed<'a> {
    /// Parse a text frame; an error for anything that is not a five-element v2 array, or a
    /// presence payload that is not a presence map (a diff: `joins` and `leaves`).
    pub(crate) fn parse(text: &'a str, id: MetaId) -> Result<Parsed<'a>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let mut parsed = FrameSeed { id }.deserialize(&mut de)?;
        de.end()?;
        parsed.payload_len = payload_len(text);
        Ok(parsed)
    }

    pub(crate) fn join_ref(&self) -> Option<&str> {
        self.join_ref.as_deref()
    }

    pub(crate) fn msg_ref(&self) -> Option<&str> {
        self.msg_ref.as_deref()
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    pub(crate) fn event(&self) -> &str {
        &self.event
    }

    /// The payload's text when it was kept unparsed (`""` for presence payloads).
    pub(crate) fn raw_payload(&self) -> &'a str {
        match self.payload {
            Payload::Raw(raw) => raw.get(),
            _ => "",
        }
    }
}

#[cfg(test)]
/// The length of a frame's fifth element: from after the fourth comma outside strings (the
/// four before it are strings or `null`) to the closing bracket, whitespace aside.
fn payload_len(text: &str) -> usize {
    let (mut commas, mut in_string, mut escaped) = (0, false, false);
    for (i, c) in text.bytes().enumerate() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if c == b'"' {
            in_string = true;
        } else if c == b',' {
            commas += 1;
            if commas == 4 {
                let rest = text[i + 1..].trim_end();
                return rest.strip_suffix(']').unwrap_or(rest).trim().len();
            }
        }
    }
    0
}

#[cfg(test)]
struct FrameSeed {
    id: MetaId,
}

#[cfg(test)]
impl<'de> DeserializeSeed<'de> for FrameSeed {
    type Value = Parsed<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parsed<'de>, D::Error> {
        d.deserialize_seq(self)
    }
}

#[cfg(test)]
impl<'de> Visitor<'de> for FrameSeed {
    type Value = Parsed<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a v2 frame [join_ref, ref, topic, event, payload]")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed<'de>, A::Error> {
        let missing = |n| de::Error::invalid_length(n, &"five elements");
        let join_ref = seq.next_element::<Option<Text>>()?.ok_or_else(|| missing(0))?.map(|t| t.0);
        let msg_ref = seq.next_element::<Option<Text>>()?.ok_or_else(|| missing(1))?.map(|t| t.0);
        let topic = seq.next_element::<Text>()?.ok_or_else(|| missing(2))?.0;
        let event = seq.next_element::<Text>()?.ok_or_else(|| missing(3))?.0;
        let payload = match &*event {
            "presence_state" => Payload::State(seq.next_element_seed(Ids { id: self.id })?.ok_or_else(|| missing(4))?),
            "presence_diff" => {
                let (joins, leaves) = seq.next_element_seed(DiffIds { id: self.id })?.ok_or_else(|| missing(4))?;
                Payload::Diff { joins, leaves }
            }
            _ => Payload::Raw(seq.next_element::<&RawValue>()?.ok_or_else(|| missing(4))?),
        };
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(6, &"five elements"));
        }
        Ok(Parsed { join_ref, msg_ref, topic, event, payload_len: 0, payload })
    }
}

#[cfg(test)]
/// A presence map, as the ids of its metas.
struct Ids {
    id: MetaId,
}

#[cfg(test)]
impl<'de> DeserializeSeed<'de> for Ids {
    type Value = Vec<u64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<u64>, D::Error> {
        let mut ids = Vec::new();
        let id = self.id;
        PresenceMap { each: &mut |k, r| ids.push(id(k, r)) }.deserialize(d)?;
        Ok(ids)
    }
}

#[cfg(test)]
/// A diff `{"joins": map, "leaves": map}`, as the ids of each side's metas.
struct DiffIds {
    id: MetaId,
}

#[cfg(test)]
impl<'de> DeserializeSeed<'de> for DiffIds {
    type Value = (Vec<u64>, Vec<u64>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

#[cfg(test)]
impl<'de> Visitor<'de> for DiffIds {
    type Value = (Vec<u64>, Vec<u64>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a presence diff {\"joins\": {...}, \"leaves\": {...}}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut joins, mut leaves) = (None, None);
        while let Some(Text(field)) = map.next_key::<Text>()? {
            match &*field {
                "joins" => joins = Some(map.next_value_seed(Ids { id: self.id })?),
                "leaves" => leaves = Some(map.next_value_seed(Ids { id: self.id })?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((
            joins.ok_or_else(|| de::Error::missing_field("joins"))?,
            leaves.ok_or_else(|| de::Error::missing_field("leaves"))?,
        ))
    }
}

/// What a `phx_reply` says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReplyStatus {
    Ok,
    /// `"error"`, with the response's `reason` (or `?` when it has none).
    Error(String),
    /// Neither `"ok"` nor `"error"`.
    Other(String),
}

/// The status of a `phx_reply` payload `{"status": ..., "response": {...}}`.
pub(crate) fn reply_status(payload: &str) -> Result<ReplyStatus, serde_json::Error> {
    #[derive(Deserialize)]
    struct Reply<'a> {
        #[serde(borrow)]
        status: Cow<'a, str>,
        #[serde(borrow, default)]
        response: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Reason<'a> {
        #[serde(borrow, default)]
        reason: Option<Cow<'a, str>>,
    }
    let reply: Reply = serde_json::from_str(payload)?;
    Ok(match &*reply.status {
        "ok" => ReplyStatus::Ok,
        "error" => {
            let reason = reply
                .response
                .and_then(|r| serde_json::from_str::<Reason>(r.get()).ok())
                .and_then(|r| r.reason.map(Cow::into_owned));
            ReplyStatus::Error(reason.unwrap_or_else(|| "?".to_owned()))
        }
        other => ReplyStatus::Other(other.to_owned()),
    })
}

/// The `joins` and `leaves` of a `presence_diff`, each a presence map still unparsed.
#[cfg(test)]
pub(crate) fn diff_parts(payload: &str) -> Result<(&str, &str), serde_json::Error> {
    #[derive(Deserialize)]
    struct Diff<'a> {
        #[serde(borrow)]
        joins: &'a RawValue,
        #[serde(borrow)]
        leaves: &'a RawValue,
    }
    let diff: Diff = serde_json::from_str(payload)?;
    Ok((diff.joins.get(), diff.leaves.get()))
}

/// Call `each(key, phx_ref)` for every meta of a presence map `{key: {"metas": [meta, ...]}}`
/// (a `presence_state`, one side of a `presence_diff`, a `GET /presence` body), in order. A
/// meta without a string `phx_ref` is an error; other members of metas and entries are
/// skipped unread.
pub(crate) fn for_each_meta(json: &str, mut each: impl FnMut(&str, &str)) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    PresenceMap { each: &mut each }.deserialize(&mut de)?;
    de.end()
}

/// [`for_each_meta`] over bytes (one entry of a presence map as it arrives: `message`).
pub(crate) fn for_each_meta_bytes(json: &[u8], mut each: impl FnMut(&str, &str)) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    PresenceMap { each: &mut each }.deserialize(&mut de)?;
    de.end()
}

/// A string that borrows from the input when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

struct PresenceMap<'f> {
    each: &'f mut dyn FnMut(&str, &str),
}

impl<'de> DeserializeSeed<'de> for PresenceMap<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PresenceMap<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a presence map {key: {\"metas\": [...]}}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Text(key)) = map.next_key::<Text>()? {
            map.next_value_seed(Entry { key: &key, each: &mut *self.each })?;
        }
        Ok(())
    }
}

/// One key's `{"metas": [...]}`.
struct Entry<'k, 'f> {
    key: &'k str,
    each: &'f mut dyn FnMut(&str, &str),
}

impl<'de> DeserializeSeed<'de> for Entry<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Entry<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a presence entry {\"metas\": [...]}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Text(field)) = map.next_key::<Text>()? {
            if field == "metas" {
                map.next_value_seed(Metas { key: self.key, each: &mut *self.each })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct Metas<'k, 'f> {
    key: &'k str,
    each: &'f mut dyn FnMut(&str, &str),
}

impl<'de> DeserializeSeed<'de> for Metas<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Metas<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of metas")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(phx_ref) = seq.next_element_seed(MetaRef)? {
            (self.each)(self.key, &phx_ref);
        }
        Ok(())
    }
}

/// A meta object, read for its `phx_ref` only.
struct MetaRef;

impl<'de> DeserializeSeed<'de> for MetaRef {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetaRef {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a meta object with a phx_ref")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Cow<'de, str>, A::Error> {
        let mut phx_ref = None;
        while let Some(Text(field)) = map.next_key::<Text>()? {
            if field == "phx_ref" {
                phx_ref = Some(map.next_value::<Text>()?.0);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        phx_ref.ok_or_else(|| de::Error::missing_field("phx_ref"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_matches_the_protocol_docs_worked_example() {
        // docs/protocol.md "Worked example", the server's known-answer test.
        assert_eq!(
            mint_token("dev-only-secret", "42", "admin", 1_700_000_000),
            "eyJzdWIiOiI0MiIsInJvbGUiOiJhZG1pbiIsImV4cCI6MTcwMDAwMDAwMH0.4VV3v4vf3euuJRNJ9GqxJN1ZvPkfE2h1-F7BSgH4dFU"
        );
    }

    #[test]
    fn encoded_join_is_a_v2_array() {
        let text = encode(Some("3"), "3", "room:\"42\"", "phx_join", r#"{"meta":{}}"#);
        assert_eq!(text, r#"["3","3","room:\"42\"","phx_join",{"meta":{}}]"#);
        let v: serde_json::Value = serde_json::from_str(&encode(None, "1", "phoenix", "heartbeat", "{}")).unwrap();
        assert_eq!(v, serde_json::json!([null, "1", "phoenix", "heartbeat", {}]));
    }

    #[test]
    fn incoming_frame_keeps_its_payload_raw() {
        let f = Incoming::parse(r#"["3",null,"room:1","presence_diff",{"joins":{},"leaves":{}}]"#).unwrap();
        assert_eq!((f.join_ref(), f.msg_ref(), &*f.2, f.event()), (Some("3"), None, "room:1", "presence_diff"));
        assert_eq!(f.payload(), r#"{"joins":{},"leaves":{}}"#);
        let escaped = Incoming::parse(r#"[null,"7","room:\u0031","x",1]"#).unwrap();
        assert_eq!(escaped.2, "room:1");
        for bad in ["{}", "[1,2,3,4]", r#"[null,null,"t","e",{},6]"#, r#"[1,null,"t","e",{}]"#, "not json"] {
            assert!(Incoming::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reply_status_reads_ok_and_the_reason_of_an_error() {
        assert_eq!(reply_status(r#"{"status":"ok","response":{"slot":null}}"#).unwrap(), ReplyStatus::Ok);
        assert_eq!(
            reply_status(r#"{"response":{"reason":"already_joined"},"status":"error"}"#).unwrap(),
            ReplyStatus::Error("already_joined".into())
        );
        assert_eq!(reply_status(r#"{"status":"error","response":{}}"#).unwrap(), ReplyStatus::Error("?".into()));
        assert_eq!(reply_status(r#"{"status":"weird"}"#).unwrap(), ReplyStatus::Other("weird".into()));
        assert!(reply_status("[]").is_err());
    }

    #[test]
    fn every_meta_of_a_presence_map_is_visited_in_order_with_its_key() {
        let json = r#"{"u1":{"metas":[{"name":"a","phx_ref":"r1","nested":{"phx_ref":"no"}},{"phx_ref":"r2"}]},
                       "u\"2":{"other":[1,2],"metas":[{"online_at":5,"phx_ref":"r\u00333"}]},
                       "u3":{"metas":[]}}"#;
        let mut seen = Vec::new();
        for_each_meta(json, |k, r| seen.push((k.to_owned(), r.to_owned()))).unwrap();
        let want = [("u1", "r1"), ("u1", "r2"), ("u\"2", "r33")];
        assert_eq!(seen, want.map(|(k, r)| (k.to_owned(), r.to_owned())));
        assert!(for_each_meta("{}", |_, _| panic!("no meta")).is_ok());
    }

    #[test]
    fn a_presence_map_that_is_not_one_is_an_error() {
        for bad in [r#"{"u1":{"metas":[{"name":"no ref"}]}}"#, r#"{"u1":{"metas":[{"phx_ref":7}]}}"#, "[]", "{} x"] {
            assert!(for_each_meta(bad, |_, _| {}).is_err(), "{bad}");
        }
    }

    #[test]
    fn diff_parts_split_joins_and_leaves() {
        let (joins, leaves) = diff_parts(r#"{"leaves":{"a":{"metas":[]}},"joins":{}}"#).unwrap();
        assert_eq!((joins, leaves), ("{}", r#"{"a":{"metas":[]}}"#));
        assert!(diff_parts(r#"{"joins":{}}"#).is_err());
    }

    fn id(key: &str, phx_ref: &str) -> u64 {
        crate::load::view::meta_id(key, phx_ref)
    }

    #[test]
    fn a_presence_frame_is_read_in_one_pass_into_the_ids_of_its_metas() {
        let text = r#"["3",null,"room:1","presence_diff",{"leaves":{"b":{"metas":[{"phx_ref":"r2"}]}},"joins":{"a":{"metas":[{"x":1,"phx_ref":"r1"}]}}}]"#;
        let f = Parsed::parse(text, id).unwrap();
        assert_eq!((f.join_ref(), f.msg_ref(), f.topic(), f.event()), (Some("3"), None, "room:1", "presence_diff"));
        assert!(
            matches!(&f.payload, Payload::Diff { joins, leaves } if *joins == [id("a", "r1")] && *leaves == [id("b", "r2")])
        );
        let (_, payload) = text.split_at(text.find('{').unwrap());
        assert_eq!(f.payload_len, payload.len() - 1);
        let state = Parsed::parse(
            r#"["1","1","t\",\"x","presence_state",{"u":{"metas":[{"phx_ref":"a"},{"phx_ref":"b"}]}}]"#,
            id,
        )
        .unwrap();
        assert_eq!(state.topic(), "t\",\"x");
        assert!(matches!(&state.payload, Payload::State(ids) if *ids == [id("u", "a"), id("u", "b")]));
        assert_eq!(state.payload_len, r#"{"u":{"metas":[{"phx_ref":"a"},{"phx_ref":"b"}]}}"#.len());
        let reply = Parsed::parse(r#"["1","2","t","phx_reply",{"status":"ok","response":{}}]"#, id).unwrap();
        assert_eq!(reply.raw_payload(), r#"{"status":"ok","response":{}}"#);
        for bad in [
            r#"["1",null,"t","presence_diff",{"joins":{}}]"#,
            r#"["1",null,"t","presence_state",{"u":{"metas":[{}]}}]"#,
            r#"["1",null,"t","presence_state",{},6]"#,
            r#"["1",null,"t","x"]"#,
            r#"[1,null,"t","x",{}]"#,
            "not json",
        ] {
            assert!(Parsed::parse(bad, id).is_err(), "{bad}");
        }
    }
}
