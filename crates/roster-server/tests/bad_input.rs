//! Bad input never disturbs a node: malformed frames, oversized frames, floods, bad tokens,
//! denied anonymous joins, foreign origins and clients that stop reading (or send without
//! reading) each get the outcome docs/protocol.md promises, are counted in /metrics, and other
//! clients keep being served.
//! Each test starts its own `roster serve` and runs one script of `tests/js/scenarios/`.

mod support {
    pub mod js;
    pub mod server;
}

use support::server::{now_s, token_with, Server, SECRET};

#[test]
fn malformed_frames_floods_and_oversized_frames_get_their_answers_and_the_node_keeps_serving() {
    let server =
        Server::builder().server_key("max_frame_bytes = 2048").server_key("max_pushes_per_second = 10").start();
    let users = ["alice", "probe"].map(|u| (u, server.token(u)));
    server.run_scenario("bad_frames.mjs", &server.input(&users));
}

#[test]
fn bad_tokens_and_denied_anonymous_joins_are_answered_unauthorized() {
    let server = Server::builder().policy("topic = \"staff:*\"\nanonymous = \"deny\"").start();
    let tokens = [
        ("alice", server.token("alice")),
        ("probe", server.token("probe")),
        ("otherSecret", token_with("another-secret", "alice", "user", now_s() + 3600)),
        ("expired", token_with(SECRET, "alice", "user", now_s() - 3600)),
        ("reserved", token_with(SECRET, "anonymous", "user", now_s() + 3600)),
    ];
    server.run_scenario("bad_auth.mjs", &server.input(&tokens));
}

#[test]
fn sockets_from_origins_not_allowed_are_refused() {
    let server = Server::builder().server_key("allowed_origins = [\"http://good.example\"]").start();
    server.run_scenario("origin.mjs", &server.input(&[("alice", server.token("alice"))]));
}

#[test]
fn client_that_stops_reading_is_closed_and_counted_while_others_get_everything() {
    let server = Server::builder().server_key("outbound_queue = 16").server_key("max_pushes_per_second = 1000").start();
    let users = ["observer", "flooder", "slow"].map(|u| (u, server.token(u)));
    server.run_scenario("slow_client.mjs", &server.input(&users));
}

#[test]
fn a_client_that_sends_without_reading_is_closed_1013_once_the_answers_waiting_pass_the_byte_bound() {
    let server = Server::builder().server_key("outbound_queue_bytes = 65536").server_key("ping_ms = 60000").start();
    let users = ["bob", "carol"].map(|u| (u, server.token(u)));
    server.run_scenario("unread_answers.mjs", &server.input(&users));
}
