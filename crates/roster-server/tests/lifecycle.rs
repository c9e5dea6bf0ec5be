//! A node's life and its clients' deaths: a client that stops answering pings is closed and
//! its presence leaves (no ghost from a half-open connection); a client reading a big push is
//! pinged in line with it (it answers while it reads); flow control by pings keeps a slow but
//! steady reader open and closes one that stopped reading (1013); SIGTERM shuts down gracefully,
//! closing every client with 1012 so it reconnects, and the process exits cleanly.

mod support {
    pub mod js;
    pub mod server;
}

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::js::{ensure_js_deps, js_dir};
use support::server::Server;

#[test]
fn a_client_that_stops_answering_pings_is_closed_and_its_presence_leaves() {
    let server = Server::builder().server_key("ping_ms = 200").start();
    let users = ["alice", "bob"].map(|u| (u, server.token(u)));
    server.run_scenario("dead_client.mjs", &server.input(&users));
}

#[test]
fn a_big_push_carries_pings_in_line_so_a_client_reading_it_is_heard() {
    let server = Server::builder().server_key("ping_ms = 3600000").server_key("max_frame_bytes = 262144").start();
    let users = ["alice", "bob"].map(|u| (u, server.token(u)));
    server.run_scenario("in_line_pings.mjs", &server.input(&users));
}

#[test]
fn a_slow_steady_reader_is_never_closed_and_a_stopped_one_is_closed_1013_and_counted() {
    let server = Server::builder().server_key("ping_ms = 300").server_key("max_pushes_per_second = 1000").start();
    let users = ["alice", "bob", "carol"].map(|u| (u, server.token(u)));
    server.run_scenario("flow_control.mjs", &server.input(&users));
}

#[test]
fn sigterm_closes_every_client_with_1012_and_the_process_exits_cleanly() {
    let mut server = Server::builder().start();
    let input = server.input(&[("alice", server.token("alice"))]);
    ensure_js_deps();
    let mut script = Command::new("node")
        .arg(js_dir().join("scenarios").join("shutdown.mjs"))
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    // Wait for the client to be joined (the script says so), then stop the server.
    let mut lines = BufReader::new(script.stdout.take().expect("piped stdout")).lines();
    let first = lines.next().expect("a line from the script").expect("utf-8");
    assert_eq!(first, "joined", "the script did not join");
    let kill = Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().expect("kill");
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = script.wait().expect("the script ends");
    assert!(
        status.success() && rest.last().map(String::as_str) == Some("ok"),
        "scenario failed: {rest:?}\n{}",
        server.stderr()
    );
    let exit = server.wait_exit(Duration::from_secs(10)).expect("the server exits after SIGTERM");
    assert!(exit.success(), "roster serve exited with {exit} after SIGTERM:\n{}", server.stderr());
    assert!(server.stderr().contains("shutting down"), "{}", server.stderr());
}
