//! The JS test harness works (npm packages installed, `phoenix` and `ws` import under Node),
//! and tokens minted with Node's standard library, as docs/protocol.md shows, are Roster's.

mod support {
    pub mod js;
}

use roster_server::{mint, verify, Claims};
use std::time::Duration;
use support::js::{js_dir, run_node_script};

#[test]
fn phoenix_and_ws_npm_packages_load_under_node() {
    let (status, stdout, stderr) = run_node_script(&js_dir().join("smoke.mjs"), &[], Duration::from_secs(60));
    assert!(status.success(), "node smoke.mjs failed ({status}):\n{stderr}");
    assert_eq!(stdout, "ok\n", "stderr:\n{stderr}");
}

#[test]
fn token_minted_with_node_crypto_matches_the_known_answer_and_verifies() {
    let args = ["dev-only-secret", "42", "admin", "1700000000"];
    let (status, stdout, stderr) = run_node_script(&js_dir().join("mint_token.mjs"), &args, Duration::from_secs(60));
    assert!(status.success(), "node mint_token.mjs failed ({status}):\n{stderr}");
    let token = stdout.trim_end();
    let claims = Claims::new("42", "admin", 1_700_000_000);
    assert_eq!(token, mint(b"dev-only-secret", &claims));
    assert_eq!(
        token,
        "eyJzdWIiOiI0MiIsInJvbGUiOiJhZG1pbiIsImV4cCI6MTcwMDAwMDAwMH0.4VV3v4vf3euuJRNJ9GqxJN1ZvPkfE2h1-F7BSgH4dFU"
    );
    assert_eq!(verify(b"dev-only-secret", token, 1_699_999_999), Ok(claims));
}

#[test]
fn token_minted_with_node_crypto_for_a_non_ascii_user_verifies() {
    let (status, stdout, stderr) = run_node_script(
        &js_dir().join("mint_token.mjs"),
        &["s", "zoë 🦀", "user", "4102444800"],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stderr}");
    let claims = verify(b"s", stdout.trim_end(), 1_700_000_000).unwrap();
    assert_eq!(claims.sub.as_str(), "zoë 🦀");
}
