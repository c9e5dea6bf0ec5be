//! Client tokens: who a socket belongs to.
//!
//! A token is `base64url(JSON {"sub","role","exp"}) + "." + base64url(HMAC-SHA256(secret,
//! first part))`, base64url without padding, `exp` in Unix seconds. The MAC covers the
//! *encoded* first part exactly as sent, so a verifier never re-serializes the JSON and any
//! backend language can mint tokens with its standard library (see `docs/protocol.md`).
//!
//! A token is valid while `now < exp`. Its `sub` may be neither empty nor the reserved
//! `anonymous` (the presence key of anonymous viewers), so no token can pose as them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use roster_core::{Role, UserId};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a token says: the user, their role, and until when it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user the socket belongs to (the presence key). Never empty, never `anonymous`.
    pub sub: UserId,
    /// The user's role (`user`, `admin`, ...), matched against a policy's `exempt_roles`.
    pub role: Role,
    /// Expiry in Unix seconds: the token is refused from this second on.
    pub exp: u64,
}

/// Why a token was refused. The socket stays anonymous or is refused; nothing else changes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not shaped like a token: no `.`, a part that is not base64url without padding, a first
    /// part that is not JSON, or JSON without a string `sub`, a string `role` and an integer
    /// `exp`. The message says which.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Well formed, but the MAC does not match: another secret signed it, or it was altered.
    #[error("bad token signature (signed with another secret, or altered)")]
    BadSignature,
    /// Signed with our secret, but `exp` is not after now.
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

/// Sign `claims` with `secret`. Minting does not check the claims: [`check_subject`] first
/// when the user id comes from outside, or the token will be refused by [`verify`].
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    // Serializing a struct of strings and an integer cannot fail.
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let body = URL_SAFE_NO_PAD.encode(json);
    let sig = URL_SAFE_NO_PAD.encode(mac(secret, body.as_bytes()).finalize().into_bytes());
    format!("{body}.{sig}")
}

/// Check `token` against `secret` and the clock (`now_unix_s`, Unix seconds) and return its
/// claims. The MAC comparison is constant-time; the claims are read only once it matches.
pub fn verify(secret: &[u8], token: &str, now_unix_s: u64) -> Result<Claims, TokenError> {
    let (body, sig) = token.split_once('.').ok_or_else(|| malformed("no '.' between claims and signature"))?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|e| malformed(format!("signature is not base64url: {e}")))?;
    let json = URL_SAFE_NO_PAD.decode(body).map_err(|e| malformed(format!("claims are not base64url: {e}")))?;
    mac(secret, body.as_bytes()).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    let claims = parse_claims(&json)?;
    check_subject(&claims.sub)?;
    if now_unix_s >= claims.exp {
        return Err(TokenError::Expired { exp: claims.exp, now: now_unix_s });
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
/// `sub`, `role`, `exp` exactly once; other keys are ignored.
fn parse_claims(json: &[u8]) -> Result<Claims, TokenError> {
    let not_claims =
        |why: &dyn std::fmt::Display| malformed(format!("claims are not {{\"sub\",\"role\",\"exp\"}}: {why}"));
    match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(_)) => serde_json::from_slice(json).map_err(|e| not_claims(&e)),
        Ok(_) => Err(not_claims(&"not a JSON object")),
        Err(e) => Err(not_claims(&e)),
    }
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
        Claims { sub: UserId::from(sub), role: Role::from("user"), exp }
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
        let c = Claims { sub: UserId::from("42"), role: Role::from("admin"), exp: 1_700_000_000 };
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
    fn generated_secrets_are_32_random_bytes_in_base64url() {
        let a = generate_secret();
        assert_eq!(a.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert_ne!(a, generate_secret());
    }
}
