//! The HTTP side of a real `roster serve`: the backend API behind the api_key (`/presence`,
//! `/slot`, `/kick`, `/user`, seen by a real phoenix client) and the operational endpoints (`/health`,
//! `/ready`, `/cluster`, `/metrics`).

mod support {
    pub mod js;
    pub mod server;
}

use support::server::Server;

#[test]
fn backend_api_needs_the_key_and_kick_revokes_the_slot() {
    let server = Server::builder().start();
    let users = ["alice", "bob"].map(|u| (u, server.token(u)));
    server.run_scenario("backend_api.mjs", &server.input(&users));
}

#[test]
fn lone_node_is_healthy_ready_and_holds_every_partition() {
    let server = Server::builder().start();
    server.run_scenario("health.mjs", &server.input(&[]));
}

#[test]
fn get_user_lists_the_users_sessions_and_activation_and_needs_the_key() {
    let server = Server::builder().policy("topic = \"room:duo\"\nmax_slots = 2\non_conflict = \"takeover\"").start();
    let users = [("carol", server.token("carol"))];
    server.run_scenario("user_api.mjs", &server.input(&users));
}
