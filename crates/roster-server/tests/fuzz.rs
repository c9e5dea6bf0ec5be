//! Fuzzing on stable Rust: property tests that feed random and mutated input to what parses
//! remote bytes on the client side, the frame decoder ([`Frame::parse`]) and the token parser
//! ([`verify_at`]). Neither may panic; each answers with a value that is consistent with its
//! input. Bounded: a fixed number of cases each (`PROPTEST_CASES` overrides), about a second in
//! all in a debug build.
//!
//! The node-to-node codec has its own in `roster-runtime`.

use proptest::prelude::*;
use roster_server::{mint, verify_at, Claims, Frame, FrameError, TokenError};

const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef0123";
const NOW_MS: u64 = 1_700_000_000_000;

/// Frames a phoenix client sends, to mutate.
const FRAMES: &[&str] = &[
    r#"["3","3","room:42","phx_join",{"tab_id":"k3Jd9a","meta":{"name":"Ada","n":[1,2.5,null,true]}}]"#,
    r#"[null,"1","phoenix","heartbeat",{}]"#,
    r#"["3","8","room:42","presence:update",{"name":"Ada","status":"away"}]"#,
    r#"["3","9","room:42","shout",{"text":"hi \u00e9 \ud83d\ude00","nested":{"a":[{"b":"c"}]}}]"#,
    r#"["3","7","room:42","phx_leave",{}]"#,
];

/// One edit of a byte string: replace, insert or delete a byte at a position.
#[derive(Clone, Debug)]
enum Edit {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
    ];
    proptest::collection::vec(edit, 1..8)
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        match *edit {
            Edit::Replace(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] = b;
            }
            Edit::Insert(i, b) => {
                let i = i % (bytes.len() + 1);
                bytes.insert(i, b);
            }
            Edit::Delete(i) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes.remove(i);
            }
            _ => {}
        }
    }
    bytes
}

/// What holds for every answer of the frame decoder: a frame parses back from its own encoding
/// unchanged; an error names one of the documented kinds.
fn check_frame_answer(text: &str) -> Result<(), TestCaseError> {
    match Frame::parse(text) {
        Ok(frame) => prop_assert_eq!(Frame::parse(&frame.encode()), Ok(frame)),
        Err(e) => {
            prop_assert!(["invalid_json", "not_an_array", "wrong_length", "wrong_type"].contains(&e.kind()));
            if let FrameError::WrongLength(n) = e {
                prop_assert_ne!(n, 5);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn frame_decoder_answers_any_text_without_panicking(text in any::<String>()) {
        check_frame_answer(&text)?;
    }

    #[test]
    fn frame_decoder_answers_mutated_client_frames_consistently(which in 0..FRAMES.len(), edits in edits()) {
        let bytes = apply(FRAMES[which].as_bytes().to_vec(), &edits);
        check_frame_answer(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn frame_decoder_answers_json_shaped_noise(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("[".to_owned()), Just("]".to_owned()), Just("{".to_owned()), Just("}".to_owned()),
                Just(",".to_owned()), Just(":".to_owned()), Just("null".to_owned()), Just("\"".to_owned()),
                "\"[a-z_:]{0,8}\"", "-?[0-9]{1,20}(\\.[0-9]{1,5})?(e[+-]?[0-9]{1,4})?",
            ],
            0..40,
        )
    ) {
        check_frame_answer(&parts.concat())?;
    }

    #[test]
    fn token_parser_refuses_any_text_without_panicking(text in any::<String>()) {
        // Not signed with the secret: never accepted.
        prop_assert!(verify_at(SECRET, &text, NOW_MS, 0).is_err());
    }

    #[test]
    fn a_mutated_token_is_refused_unless_it_is_unchanged(
        user in "[a-zA-Z0-9_\\-]{1,24}",
        topics in proptest::option::of(proptest::collection::vec("[a-z]{1,6}:\\*?", 0..3)),
        edits in edits(),
    ) {
        let mut claims = Claims::new(user.as_str(), "user", NOW_MS / 1000 + 3600);
        if let Some(t) = topics {
            claims = claims.with_topics(t);
        }
        let token = mint(SECRET, &claims);
        prop_assert_eq!(verify_at(SECRET, &token, NOW_MS, 0), Ok(claims));
        let mutated = String::from_utf8_lossy(&apply(token.clone().into_bytes(), &edits)).into_owned();
        let answer = verify_at(SECRET, &mutated, NOW_MS, 0);
        if mutated == token {
            prop_assert!(answer.is_ok());
        } else {
            // base64url without padding is canonical here: a different string never decodes to
            // the same signed bytes.
            prop_assert!(answer.is_err(), "{mutated:?} was accepted");
        }
    }

    #[test]
    fn any_signed_claims_are_parsed_without_panicking(json in any::<Vec<u8>>(), leeway_ms in 0u64..300_000) {
        // Signed with the secret, so the claims parser itself is what answers.
        use base64::Engine as _;
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&json);
        let signed = resign(&body);
        match verify_at(SECRET, &signed, NOW_MS, leeway_ms) {
            Ok(claims) => {
                prop_assert!(!claims.sub.as_str().is_empty() && !claims.sub.is_reserved());
                prop_assert!(NOW_MS < claims.expires_at_ms(leeway_ms));
            }
            Err(TokenError::BadSignature) => prop_assert!(false, "our own signature was refused"),
            Err(_) => {}
        }
    }

    #[test]
    fn signed_claims_shaped_like_tokens_are_parsed_consistently(
        sub in prop_oneof![Just(String::new()), Just("anonymous".to_owned()), "[ -~]{1,12}"],
        exp in prop_oneof![Just(0u64), Just(u64::MAX), 1_600_000_000u64..1_800_000_000],
        topics in prop_oneof![
            Just(String::new()),
            Just(r#","topics":null"#.to_owned()),
            proptest::collection::vec("[a-z*:]{0,5}", 0..3).prop_map(|t| format!(r#","topics":{}"#, serde_json::json!(t))),
        ],
    ) {
        let json = format!(r#"{{"sub":{},"role":"user","exp":{exp}{topics}}}"#, serde_json::json!(sub));
        use base64::Engine as _;
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.as_bytes());
        match verify_at(SECRET, &resign(&body), NOW_MS, 0) {
            Ok(c) => {
                prop_assert_eq!(c.sub.as_str(), sub.as_str());
                prop_assert_eq!(c.exp, exp);
                prop_assert!(c.topics.iter().flatten().all(|p| !p.is_empty() && !p.trim_end_matches('*').contains('*')));
            }
            Err(TokenError::ReservedSubject(s)) => prop_assert_eq!(s, sub),
            Err(TokenError::Expired { exp: e, .. }) => prop_assert_eq!(e, exp),
            Err(TokenError::Malformed(_)) => {}
            Err(TokenError::BadSignature) => prop_assert!(false, "our own signature was refused"),
        }
    }
}

/// `body` signed with [`SECRET`], as `mint` would sign it.
fn resign(body: &str) -> String {
    use base64::Engine as _;
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET).expect("any key length");
    mac.update(body.as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{body}.{sig}")
}
