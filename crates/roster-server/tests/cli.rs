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

#[test]
fn serve_refuses_the_default_cookie_when_a_cluster_addr_is_not_loopback() {
    let dir = std::env::temp_dir().join(format!("roster-cli-cookie-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("cluster.toml");
    // 192.0.2.0/24 is reserved for documentation: nothing is ever dialed or bound there, the
    // config is refused before the node starts.
    std::fs::write(
        &config,
        "[[cluster.nodes]]\nname = \"a\"\ncluster_addr = \"192.0.2.1:4370\"\nhttp_addr = \"127.0.0.1:0\"\n\n\
         [[cluster.nodes]]\nname = \"b\"\ncluster_addr = \"192.0.2.2:4370\"\nhttp_addr = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--node", "a"])
        .env_remove("ROSTER_SECRET")
        .output()
        .expect("run roster");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(1), "stdout: {}", String::from_utf8_lossy(&output.stdout));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cluster.cookie is the development default"), "{stderr}");
    assert!(stderr.contains("192.0.2.1:4370"), "{stderr}");
}
