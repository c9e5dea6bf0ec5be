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

/// The `roster` binary hands the server its jemalloc's figures: `/metrics` shows each kind,
/// read at the scrape, ordered as jemalloc defines them.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[test]
fn metrics_show_the_allocators_own_figures_in_jemallocs_order() {
    let server = Server::builder().start();
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200, "{body}");
    let kinds = ["active", "allocated", "mapped", "metadata", "resident", "retained", "tcache"];
    let mut shown: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("roster_allocator_bytes{kind=\"")?.split_once('"').map(|(k, _)| k))
        .collect();
    shown.sort_unstable();
    assert_eq!(shown, kinds, "{body}");
    let of = |kind: &str| server.metric(&format!("roster_allocator_bytes{{kind=\"{kind}\"}}"));
    let (allocated, active, resident) = (of("allocated"), of("active"), of("resident"));
    assert!(allocated > 0.0 && allocated <= active && active <= resident, "{body}");
    assert!(of("metadata") > 0.0 && active <= of("mapped"), "{body}");
    assert!(body.contains("# TYPE roster_allocator_bytes gauge"), "{body}");
}
