//! The built `roster` binary, run as a user would.

use roster_server::verify;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// A secret of the 32 bytes a server accepts.
const SECRET: &str = "cli-test-secret-0123456789abcdef";

#[test]
fn token_command_prints_a_token_that_verifies_for_user_42() {
    let output = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["token", "--secret", SECRET, "--user", "42"])
        .env_remove("ROSTER_SECRET")
        .output()
        .expect("run roster");
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout.strip_suffix('\n').expect("one line");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = verify(SECRET.as_bytes(), token, now).unwrap();
    assert_eq!((claims.sub.as_str(), claims.role.as_str()), ("42", "user"));
    // The default lifetime is 24 h (allow for the seconds this test took).
    assert!((now + 86_400 - 5..=now + 86_400 + 1).contains(&claims.exp), "exp {} now {now}", claims.exp);
}

#[test]
fn token_command_without_a_secret_fails_with_a_clear_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["token", "--user", "42"])
        .env_remove("ROSTER_SECRET")
        .output()
        .expect("run roster");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("error: no secret to sign with"), "{stderr}");
}
