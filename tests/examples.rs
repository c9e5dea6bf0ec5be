//! The examples run and do what they say. Cargo builds them with the tests (`--all-targets`);
//! this runs the built binaries and checks what they print.

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> String {
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("test binary path");
    let bin: PathBuf = exe.parent().and_then(|d| d.parent()).expect("target dir").join("examples").join(name);
    if !bin.exists() {
        let status = Command::new(env!("CARGO")).args(["build", "--example", name]).status().expect("cargo build");
        assert!(status.success(), "building example {name}");
    }
    let out = Command::new(&bin).output().unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{name} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn embedded_chat_lists_users_counts_anonymous_and_a_second_tab_takes_over() {
    let out = example("embedded_chat");
    assert!(out.contains("alice received message from bob"), "{out}");
    assert!(out.contains("alice's first tab was told: slot_revoked (logged_in_elsewhere)"), "{out}");
    assert!(out.contains("named users: 2, alice's metas: 1, anonymous count: 2"), "{out}");
    // The unread counter in alice's user actor, through her second tab's takeover.
    assert!(out.contains("unread: alice 2, bob 0"), "{out}");
    assert!(out.contains("alice reads the room in her new tab: 2 unread before, 0 after"), "{out}");
}

#[test]
fn game_lobby_kicks_the_first_device_of_a_second_login_and_says_why() {
    let out = example("game_lobby");
    assert!(out.contains("console kicked from game:lobby: logged_in_elsewhere"), "{out}");
    assert!(out.contains("console kicked from game:match-7: logged_in_elsewhere"), "{out}");
    // The player's actor: a chat burst of 3 then rate-limited; one actor through the device
    // switch, which saw both logins and reset `ready`.
    assert!(out.contains("five chat messages at once: [Ok, Ok, Ok, "), "{out}");
    assert!(out.contains("RateLimited"), "{out}");
    assert!(out.contains("status: Status { ready: true, logins: 1, devices_online: 1"), "{out}");
    assert!(out.contains("status after the switch: Status { ready: false, logins: 2, devices_online: 1"), "{out}");
    assert!(out.contains("1 session(s)"), "{out}");
}
