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
    #[serde(borrow)] pub Cow<'a, str>,
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

    pub(crate) fn topic(&self) -> &str {
        &self.2
    }

    pub(crate) fn event(&self) -> &str {
        &self.3
    }

    pub(crate) fn payload(&self) -> &'a str {
        self.4.get()
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
        assert_eq!((f.join_ref(), f.msg_ref(), f.topic(), f.event()), (Some("3"), None, "room:1", "presence_diff"));
        assert_eq!(f.payload(), r#"{"joins":{},"leaves":{}}"#);
        let escaped = Incoming::parse(r#"[null,"7","room:\u0031","x",1]"#).unwrap();
        assert_eq!(escaped.topic(), "room:1");
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
}
