//! The real `phoenix` npm client against a real `roster serve`: joins with either kind of
//! token, takeover, reject, resume after an unclean disconnect, anonymous viewers, heartbeats,
//! broadcasts and meta updates. Each test starts its own node (free ports) and runs one script
//! of `tests/js/scenarios/`, which asserts the exact outcome and prints `ok`.

mod support {
    pub mod js;
    pub mod server;
}

use support::server::Server;

const REJECT_CALLS: &str = "topic = \"call:*\"\non_conflict = \"reject\"";

#[test]
fn token_in_query_or_subprotocol_joins_and_both_clients_list_the_same_presence() {
    let server = Server::builder().start();
    let input = server.input(&[("alice", server.token("alice")), ("bob", server.token("bob"))]);
    server.run_scenario("join_token.mjs", &input);
}

#[test]
fn second_tab_takes_over_and_the_first_is_revoked_closed_and_does_not_rejoin() {
    let server = Server::builder().start();
    let users = ["alice", "carol", "dave"].map(|u| (u, server.token(u)));
    server.run_scenario("takeover.mjs", &server.input(&users));
}

#[test]
fn reject_policy_refuses_a_second_tab_with_already_joined() {
    let server = Server::builder().policy(REJECT_CALLS).start();
    let users = ["alice", "bob", "carol"].map(|u| (u, server.token(u)));
    server.run_scenario("reject.mjs", &server.input(&users));
}

#[test]
fn reconnect_with_same_tab_resumes_at_once_even_under_reject() {
    let server = Server::builder().policy(REJECT_CALLS).start();
    let users = ["alice", "bob"].map(|u| (u, server.token(u)));
    server.run_scenario("resume.mjs", &server.input(&users));
}

#[test]
fn anonymous_viewers_are_one_counted_meta_and_may_not_push() {
    let server = Server::builder().start();
    server.run_scenario("anonymous.mjs", &server.input(&[("bob", server.token("bob"))]));
}

#[test]
fn heartbeats_are_answered_like_phoenix() {
    let server = Server::builder().start();
    server.run_scenario("heartbeat.mjs", &server.input(&[("alice", server.token("alice"))]));
}

#[test]
fn push_reaches_the_others_and_presence_update_is_one_leave_and_one_join() {
    let server = Server::builder().start();
    let users = ["alice", "bob", "carol"].map(|u| (u, server.token(u)));
    server.run_scenario("broadcast.mjs", &server.input(&users));
}
