//! The built-in pages in a real browser: headless Chromium (Debian's `chromium`) driven by
//! `playwright-core` from Node, against real `roster serve` processes. Each test runs one
//! scenario of `tests/js/browser/` and saves screenshots under
//! `<target>/tmp/browser-screenshots/`.
//!
//! ```sh
//! flock /tmp/roster-heavy.lock cargo test -p roster-server --test browser -- --nocapture
//! ```

mod support {
    pub mod browser;
    pub mod js;
    pub mod server;
}

use roster_testkit::ClusterSpec;
use serde_json::json;
use support::browser::{run_browser_scenario, screenshots_dir};
use support::server::{Server, API_KEY};

/// The policies `roster serve` brings without a config (`Config::demo`).
const DEMO_POLICIES: [&str; 2] = [
    "topic = \"call:*\"\non_conflict = \"reject\"\nexempt_roles = [\"admin\"]",
    "topic = \"room:*\"\non_conflict = \"takeover\"\nreserve_ms = 5000\nexempt_roles = [\"admin\"]",
];

fn demo_server() -> Server {
    Server::builder().server_key("demo = true").policy(DEMO_POLICIES[0]).policy(DEMO_POLICIES[1]).start()
}

fn run_on(server: &Server, script: &str) {
    let input = json!({"http": server.http_url(), "apiKey": API_KEY, "screenshots": screenshots_dir()});
    run_browser_scenario(
        script,
        &input,
        |r| panic!("unexpected request {r}"),
        || format!("--- the server's stderr:\n{}", server.stderr()),
    );
}

#[test]
fn two_users_and_an_anonymous_viewer_show_two_rows_and_anonymous_1() {
    run_on(&demo_server(), "room.mjs");
}

#[test]
fn a_second_tab_in_a_takeover_room_makes_the_first_show_logged_in_elsewhere() {
    run_on(&demo_server(), "takeover.mjs");
}

#[test]
fn a_second_tab_in_a_reject_room_shows_open_in_another_tab() {
    run_on(&demo_server(), "reject.mjs");
}

#[test]
fn a_refreshed_tab_resumes_and_a_duplicated_tab_gets_a_fresh_tab_id() {
    run_on(&demo_server(), "refresh.mjs");
}

#[test]
fn the_dashboard_outside_demo_mode_asks_for_the_api_key() {
    run_on(&Server::builder().start(), "dashboard_key.mjs");
}

#[test]
fn the_dashboard_of_three_nodes_marks_a_killed_node_down() {
    let mut spec = ClusterSpec::new(3).server_key("demo = true");
    for policy in DEMO_POLICIES {
        spec = spec.policy(policy);
    }
    let cluster = std::cell::RefCell::new(spec.start(env!("CARGO_BIN_EXE_roster")));
    let http: Vec<String> = (0..3).map(|i| format!("http://{}", cluster.borrow().http_addr(i))).collect();
    let input = json!({"http": http, "screenshots": screenshots_dir()});
    run_browser_scenario(
        "dashboard_cluster.mjs",
        &input,
        |request| {
            assert_eq!(request, "kill c");
            cluster.borrow_mut().kill9(2);
            "killed".to_owned()
        },
        || cluster.borrow().log_tails(),
    );
}
