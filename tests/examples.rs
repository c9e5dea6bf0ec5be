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
}

#[test]
fn game_lobby_kicks_the_first_device_of_a_second_login_and_says_why() {
    let out = example("game_lobby");
    assert!(out.contains("console kicked from game:lobby: logged_in_elsewhere"), "{out}");
    assert!(out.contains("console kicked from game:match-7: logged_in_elsewhere"), "{out}");
}
