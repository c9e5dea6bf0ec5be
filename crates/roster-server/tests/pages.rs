//! The built-in pages without a browser: what `/`, `/demo/*`, `/dashboard` and `/assets/*`
//! answer with demo mode on and off, the admin topic's key, and the pages' presence code
//! against phoenix.js's.

mod support {
    pub mod js;
    pub mod server;
}

use roster_server::verify;
use std::time::Duration;
use support::js::{js_dir, run_node_script};
use support::server::{now_s, Server, SECRET};

fn demo_server() -> Server {
    Server::builder().server_key("demo = true").policy("topic = \"call:*\"\non_conflict = \"reject\"").start()
}

#[test]
fn demo_mode_serves_the_room_page_and_signs_demo_tokens() {
    let server = demo_server();
    let (status, head, body) = server.get_with_head("/?topic=room:lobby&user=alice");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'self'"), "{head}");
    assert!(body.contains("/assets/demo.js"), "{body}");

    let (status, head, body) = server.get_with_head("/demo/token?user=alice&role=admin");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    let claims = verify(SECRET.as_bytes(), reply["token"].as_str().unwrap(), now_s()).unwrap();
    assert_eq!((claims.sub.as_str(), claims.role.as_str()), ("alice", "admin"));
    assert!(claims.exp > now_s() && claims.exp <= now_s() + 3600, "{claims:?}");
    let (_, _, body) = server.get_with_head("/demo/token?user=bob");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(verify(SECRET.as_bytes(), reply["token"].as_str().unwrap(), now_s()).unwrap().role.as_str(), "user");

    for bad in ["/demo/token?user=anonymous", "/demo/token?user=", "/demo/token", "/demo/policy"] {
        let (status, _, body) = server.get_with_head(bad);
        assert_eq!((status, body.contains("bad_request")), (400, true), "{bad}: {body}");
    }
    let (status, _, body) = server.get_with_head("/demo/policy?topic=call:standup");
    let policy: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, policy["on_conflict"].as_str()), (200, Some("reject")), "{body}");
}

#[test]
fn without_demo_mode_there_is_no_room_page_and_no_token_endpoint() {
    let server = Server::builder().start();
    for path in ["/", "/?topic=room:lobby&user=alice", "/demo/token?user=alice", "/demo/policy?topic=x"] {
        let (status, _, body) = server.get_with_head(path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("token\""), "{path}: {body}");
    }
    let (status, head, body) = server.get_with_head("/dashboard");
    assert_eq!((status, head.contains("text/html")), (200, true), "{head}");
    assert!(body.contains("/assets/dashboard.js"));
}

#[test]
fn assets_are_served_from_the_binary_with_their_types() {
    let server = Server::builder().start();
    for (path, kind, needle) in [
        ("/assets/roster.js", "text/javascript", "export class Socket"),
        ("/assets/demo.js", "text/javascript", "roster_tab_id"),
        ("/assets/dashboard.js", "text/javascript", "roster:admin"),
        ("/assets/roster.css", "text/css", ":root"),
    ] {
        let (status, head, body) = server.get_with_head(path);
        assert_eq!(status, 200, "{path}");
        assert!(head.contains(&format!("content-type: {kind}")), "{path}: {head}");
        assert!(head.contains("content-security-policy:"), "{path}: {head}");
        assert!(body.contains(needle), "{path}");
    }
    assert_eq!(server.get_with_head("/assets/nope.js").0, 404);
    assert_eq!(server.get_with_head("/assets/..%2Fapp.rs").0, 404);
}

#[test]
fn the_admin_topic_needs_the_api_key_outside_demo_mode() {
    let server = Server::builder().start();
    let mut input: serde_json::Value = serde_json::from_str(&server.input(&[])).unwrap();
    input["demo"] = false.into();
    server.run_scenario("admin_topic.mjs", &input.to_string());
}

#[test]
fn the_admin_topic_is_open_in_demo_mode_to_the_pages_own_client() {
    let server = demo_server();
    let mut input: serde_json::Value = serde_json::from_str(&server.input(&[])).unwrap();
    input["demo"] = true.into();
    server.run_scenario("admin_topic.mjs", &input.to_string());
}

#[test]
fn page_presence_code_agrees_with_phoenix_js_on_random_state_and_diff_sequences() {
    let (status, stdout, stderr) =
        run_node_script(&js_dir().join("presence_semantics.mjs"), &["300", "1"], Duration::from_secs(120));
    assert!(status.success(), "presence_semantics.mjs failed ({status}):\n{stderr}");
    assert_eq!(stdout, "ok\n", "stderr:\n{stderr}");
}
