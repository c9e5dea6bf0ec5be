//! Client tokens: who a socket belongs to, until when, and where it may go.
//!
//! A token is `base64url(JSON {"sub","role","exp"[,"topics"]}) + "." + base64url(HMAC-SHA256(
//! secret, first part))`, base64url without padding, `exp` in Unix seconds. The MAC covers the
//! *encoded* first part exactly as sent, so a verifier never re-serializes the JSON and any
//! backend language can mint tokens with its standard library (see `docs/protocol.md`).
//!
//! A token is valid while `now < exp` (plus the configured leeway, [`verify_at`]), and a socket
//! it opened is closed when that ends. Its `sub` may be neither empty nor the reserved
//! `anonymous` (the presence key of anonymous viewers), so no token can pose as them. The
//! optional `topics` lists the topic patterns it may join (`"room:*"`, `"lobby"`, `"*"`);
//! without it, any topic.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use roster_core::{Role, Topic, UserId};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a token says: the user, their role, until when it holds, and which topics it may join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user the socket belongs to (the presence key). Never empty, never `anonymous`.
    pub sub: UserId,
    /// The user's role (`user`, `admin`, ...), matched against a policy's `exempt_roles`.
    pub role: Role,
    /// Expiry in Unix seconds: the token is refused from this second on (plus the leeway).
    pub exp: u64,
    /// Topic patterns the token may join: an exact topic, a prefix ending in `*`, or `*`.
    /// `None` (no `topics` member): any topic. A join elsewhere gets `forbidden_topic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<String>>,
}

impl Claims {
    /// Claims for `sub` with `role` until `exp` (Unix seconds), for any topic.
    pub fn new(sub: impl Into<UserId>, role: impl Into<Role>, exp: u64) -> Claims {
        Claims { sub: sub.into(), role: role.into(), exp, topics: None }
    }

    /// The same claims, limited to the topics matching one of `patterns`.
    pub fn with_topics(mut self, patterns: impl IntoIterator<Item = impl Into<String>>) -> Claims {
        self.topics = Some(patterns.into_iter().map(Into::into).collect());
        self
    }

    /// Whether the token may join `topic`: it has no `topics`, or one of them matches (a
    /// token without them, the usual one, makes nothing of the topic).
    pub fn may_join(&self, topic: &str) -> bool {
        self.topics.as_ref().is_none_or(|patterns| {
            let topic = Topic::from(topic);
            patterns.iter().any(|p| topic.matches(p))
        })
    }

    /// The instant (Unix milliseconds) from which the token is refused, given the leeway.
    pub fn expires_at_ms(&self, leeway_ms: u64) -> u64 {
        self.exp.saturating_mul(1000).saturating_add(leeway_ms)
    }
}

/// Why a token was refused. The socket's joins are answered `unauthorized`; nothing else
/// changes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not shaped like a token: no `.`, a part that is not base64url without padding, a first
    /// part that is not JSON, JSON without a string `sub`, a string `role` and an integer
    /// `exp`, or a `topics` that is not a list of patterns. The message says which.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Well formed, but the MAC does not match: another secret signed it, or it was altered.
    #[error("bad token signature (signed with another secret, or altered)")]
    BadSignature,
    /// Signed with our secret, but `exp` (plus the leeway) is not after now.
    #[error("token expired at {exp} (Unix seconds); now is {now}")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The verifier's clock, Unix seconds.
        now: u64,
    },
    /// Signed with our secret, but its `sub` is empty or the reserved `anonymous`.
    #[error("token subject {0:?} is not allowed: a user id may be neither empty nor \"anonymous\"")]
    ReservedSubject(String),
}

impl TokenError {
    /// A short stable name for a metrics label: `malformed`, `bad_signature`, `expired` or
    /// `reserved_subject`.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired { .. } => "expired",
            TokenError::ReservedSubject(_) => "reserved_subject",
        }
    }
}

/// Sign `claims` with `secret`. Minting does not check the claims: [`check_subject`] first
/// when the user id comes from outside, or the token will be refused by [`verify`].
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    // Serializing a struct of strings and an integer cannot fail.
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let body = URL_SAFE_NO_PAD.encode(json);
    let sig = URL_SAFE_NO_PAD.encode(mac(secret, body.as_bytes()).finalize().into_bytes());
    format!("{body}.{sig}")
}

/// Check `token` against `secret` and the clock (`now_unix_s`, Unix seconds), with no leeway,
/// and return its claims. See [`verify_at`].
pub fn verify(secret: &[u8], token: &str, now_unix_s: u64) -> Result<Claims, TokenError> {
    verify_at(secret, token, now_unix_s.saturating_mul(1000), 0)
}

/// Check `token` against `secret` and the clock (`now_unix_ms`, Unix milliseconds) and return
/// its claims: valid while `now_unix_ms < exp × 1000 + leeway_ms`. The MAC comparison is
/// constant-time; the claims are read only once it matches. Remote input: never panics.
pub fn verify_at(secret: &[u8], token: &str, now_unix_ms: u64, leeway_ms: u64) -> Result<Claims, TokenError> {
    let (body, sig) = token.split_once('.').ok_or_else(|| malformed("no '.' between claims and signature"))?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|e| malformed(format!("signature is not base64url: {e}")))?;
    let json = URL_SAFE_NO_PAD.decode(body).map_err(|e| malformed(format!("claims are not base64url: {e}")))?;
    mac(secret, body.as_bytes()).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    let claims = parse_claims(&json)?;
    check_subject(&claims.sub)?;
    if now_unix_ms >= claims.expires_at_ms(leeway_ms) {
        return Err(TokenError::Expired { exp: claims.exp, now: now_unix_ms / 1000 });
    }
    Ok(claims)
}

/// Refuse a user id no token may carry: empty, or the reserved `anonymous`.
pub fn check_subject(sub: &UserId) -> Result<(), TokenError> {
    if sub.as_str().is_empty() || sub.is_reserved() {
        return Err(TokenError::ReservedSubject(sub.to_string()));
    }
    Ok(())
}

/// A fresh random secret for `[auth] secret`: 32 bytes from the OS-seeded thread RNG,
/// base64url without padding (43 characters).
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

fn mac(secret: &[u8], data: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length (long keys are hashed), so this cannot fail.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(data);
    mac
}

/// The claims JSON: an object (serde would also take a `[sub, role, exp]` array) with each of
/// `sub`, `role`, `exp` exactly once, and optionally `topics`, a list of patterns; other keys
/// are ignored.
fn parse_claims(json: &[u8]) -> Result<Claims, TokenError> {
    let not_claims =
        |why: &dyn std::fmt::Display| malformed(format!("claims are not {{\"sub\",\"role\",\"exp\"}}: {why}"));
    let claims: Claims = match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(_)) => serde_json::from_slice(json).map_err(|e| not_claims(&e))?,
        Ok(_) => return Err(not_claims(&"not a JSON object")),
        Err(e) => return Err(not_claims(&e)),
    };
    if let Some(bad) = claims.topics.iter().flatten().find(|p| !is_topic_pattern(p)) {
        return Err(malformed(format!(
            "topics: {bad:?} is not a topic pattern (a topic, a prefix ending in '*', or \"*\"; '*' only last)"
        )));
    }
    Ok(claims)
}

/// A pattern as `[[policy]] topic` takes it: not empty, `*` only as its last character.
pub(crate) fn is_topic_pattern(p: &str) -> bool {
    !p.is_empty() && !p.trim_end_matches('*').contains('*') && !p.ends_with("**")
}

fn malformed(why: impl Into<String>) -> TokenError {
    TokenError::Malformed(why.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"dev-only-secret";
    const NOW: u64 = 1_700_000_000;

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims::new(sub, "user", exp)
    }

    /// Re-sign arbitrary claims JSON, to reach the checks that come after the MAC.
    fn sign_raw(json: &str) -> String {
        let body = URL_SAFE_NO_PAD.encode(json);
        let sig = URL_SAFE_NO_PAD.encode(mac(SECRET, body.as_bytes()).finalize().into_bytes());
        format!("{body}.{sig}")
    }

    #[test]
    fn known_answer_token_is_stable_for_other_implementations() {
        // Pinned, and computed independently with Python's hmac/hashlib/base64/json:
        // docs/protocol.md shows these exact values, and a minting snippet in any language
        // must produce this string byte for byte.
        let c = Claims::new("42", "admin", 1_700_000_000);
        let token = mint(b"dev-only-secret", &c);
        assert_eq!(
            token,
            "eyJzdWIiOiI0MiIsInJvbGUiOiJhZG1pbiIsImV4cCI6MTcwMDAwMDAwMH0.4VV3v4vf3euuJRNJ9GqxJN1ZvPkfE2h1-F7BSgH4dFU"
        );
        assert_eq!(verify(b"dev-only-secret", &token, 1_699_999_999), Ok(c));
    }

    #[test]
    fn minted_token_verifies_to_its_claims() {
        let c = claims("42", NOW + 60);
        assert_eq!(verify(SECRET, &mint(SECRET, &c), NOW), Ok(c));
    }

    #[test]
    fn token_without_dot_is_malformed() {
        assert!(matches!(verify(SECRET, "abc", NOW), Err(TokenError::Malformed(m)) if m.contains("no '.'")));
        assert!(matches!(verify(SECRET, "", NOW), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn token_with_bad_base64_is_malformed() {
        let good = mint(SECRET, &claims("42", NOW + 60));
        let (body, sig) = good.split_once('.').unwrap();
        for bad in
            [format!("{body}!.{sig}"), format!("{body}.{sig}="), format!("{body}.+/{sig}"), format!("{body}=.{sig}")]
        {
            assert!(
                matches!(verify(SECRET, &bad, NOW), Err(TokenError::Malformed(m)) if m.contains("base64url")),
                "{bad}"
            );
        }
    }

    #[test]
    fn signed_claims_that_are_not_json_are_malformed() {
        let err = verify(SECRET, &sign_raw("not json"), NOW).unwrap_err();
        assert!(matches!(err, TokenError::Malformed(m) if m.contains("claims are not")));
    }

    #[test]
    fn signed_claims_not_an_object_of_sub_role_exp_are_malformed() {
        for json in [
            r#"{"sub":"42","role":"user"}"#,
            r#"{"sub":"42","exp":1800000000}"#,
            r#"{"role":"user","exp":1800000000}"#,
            r#"{"sub":42,"role":"user","exp":1800000000}"#,
            r#"{"sub":"42","role":"user","exp":"1800000000"}"#,
            r#"{"sub":"42","role":"user","exp":-1}"#,
            r#"["42","user",1800000000]"#,
            r#"{"sub":"anonymous","sub":"42","role":"user","exp":1800000000}"#,
        ] {
            assert!(matches!(verify(SECRET, &sign_raw(json), NOW), Err(TokenError::Malformed(_))), "{json}");
        }
    }

    #[test]
    fn extra_claims_are_ignored() {
        let token = sign_raw(r#"{"iat":1,"sub":"42","role":"user","exp":1800000000,"aud":"x"}"#);
        assert_eq!(verify(SECRET, &token, NOW), Ok(claims("42", 1_800_000_000)));
    }

    #[test]
    fn token_signed_with_another_secret_has_bad_signature() {
        let token = mint(b"another-secret", &claims("42", NOW + 60));
        assert_eq!(verify(SECRET, &token, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn token_with_altered_claims_has_bad_signature() {
        let token = mint(SECRET, &claims("42", NOW + 60));
        let sig = token.split_once('.').unwrap().1;
        let forged_body = URL_SAFE_NO_PAD.encode(br#"{"sub":"42","role":"admin","exp":1800000000}"#);
        assert_eq!(verify(SECRET, &format!("{forged_body}.{sig}"), NOW), Err(TokenError::BadSignature));
        // A truncated signature is still base64url, and still wrong.
        assert_eq!(verify(SECRET, &token[..token.len() - 4], NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn token_is_refused_from_its_exp_second_on() {
        let token = mint(SECRET, &claims("42", NOW));
        assert_eq!(verify(SECRET, &token, NOW - 1).map(|c| c.exp), Ok(NOW));
        assert_eq!(verify(SECRET, &token, NOW), Err(TokenError::Expired { exp: NOW, now: NOW }));
        assert_eq!(verify(SECRET, &token, NOW + 1), Err(TokenError::Expired { exp: NOW, now: NOW + 1 }));
    }

    #[test]
    fn token_for_anonymous_or_empty_subject_is_refused() {
        for sub in ["anonymous", ""] {
            let token = mint(SECRET, &claims(sub, NOW + 60));
            assert_eq!(verify(SECRET, &token, NOW), Err(TokenError::ReservedSubject(sub.to_owned())), "{sub:?}");
        }
        // Only the exact reserved id: similar ids are ordinary users.
        assert!(verify(SECRET, &mint(SECRET, &claims("Anonymous", NOW + 60)), NOW).is_ok());
    }

    #[test]
    fn leeway_accepts_a_token_until_exp_plus_leeway() {
        let token = mint(SECRET, &claims("42", NOW));
        let exp_ms = NOW * 1000;
        assert!(verify_at(SECRET, &token, exp_ms - 1, 0).is_ok());
        assert_eq!(verify_at(SECRET, &token, exp_ms, 0), Err(TokenError::Expired { exp: NOW, now: NOW }));
        assert!(verify_at(SECRET, &token, exp_ms + 29_999, 30_000).is_ok());
        assert_eq!(
            verify_at(SECRET, &token, exp_ms + 30_000, 30_000),
            Err(TokenError::Expired { exp: NOW, now: NOW + 30 })
        );
        assert_eq!(claims("42", NOW).expires_at_ms(250), exp_ms + 250);
        assert_eq!(claims("42", u64::MAX).expires_at_ms(1), u64::MAX, "saturates, never wraps");
    }

    #[test]
    fn topics_claim_limits_the_topics_a_token_may_join() {
        let c = claims("42", NOW + 60).with_topics(["room:*", "lobby"]);
        let back = verify(SECRET, &mint(SECRET, &c), NOW).unwrap();
        assert_eq!(back, c);
        for (topic, may) in [("room:1", true), ("room:", true), ("lobby", true), ("lobby2", false), ("call:1", false)] {
            assert_eq!(back.may_join(topic), may, "{topic}");
        }
        assert!(claims("42", NOW + 60).may_join("anything"), "no topics claim: any topic");
        let nothing = claims("42", NOW + 60).with_topics(Vec::<String>::new());
        assert!(!nothing.may_join("room:1"), "an empty list allows no topic");
        assert!(claims("42", 1).with_topics(["*"]).may_join("x"));
    }

    #[test]
    fn a_token_without_topics_keeps_its_three_member_encoding() {
        // Tokens minted before `topics` existed, and by backends that never send it, verify
        // unchanged: the member is absent, not `null`.
        let token = mint(SECRET, &claims("42", NOW));
        let json = URL_SAFE_NO_PAD.decode(token.split_once('.').unwrap().0).unwrap();
        assert_eq!(String::from_utf8(json).unwrap(), format!(r#"{{"sub":"42","role":"user","exp":{NOW}}}"#));
    }

    #[test]
    fn topics_that_are_not_a_list_of_patterns_are_malformed() {
        for topics in [r#""room:*""#, "[1]", r#"["ro*m"]"#, r#"[""]"#, r#"["room:**"]"#, r#"{"a":1}"#] {
            let json = format!(r#"{{"sub":"42","role":"user","exp":1800000000,"topics":{topics}}}"#);
            assert!(matches!(verify(SECRET, &sign_raw(&json), NOW), Err(TokenError::Malformed(_))), "{topics}");
        }
        let json = r#"{"sub":"42","role":"user","exp":1800000000,"topics":null}"#;
        assert_eq!(verify(SECRET, &sign_raw(json), NOW).unwrap().topics, None, "null: no limit, as when absent");
    }

    #[test]
    fn every_error_has_its_metrics_kind() {
        assert_eq!(TokenError::Malformed(String::new()).kind(), "malformed");
        assert_eq!(TokenError::BadSignature.kind(), "bad_signature");
        assert_eq!(TokenError::Expired { exp: 0, now: 0 }.kind(), "expired");
        assert_eq!(TokenError::ReservedSubject(String::new()).kind(), "reserved_subject");
    }

    #[test]
    fn generated_secrets_are_32_random_bytes_in_base64url() {
        let a = generate_secret();
        assert_eq!(a.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert_ne!(a, generate_secret());
    }
}
