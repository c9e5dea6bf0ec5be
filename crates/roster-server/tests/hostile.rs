//! Hostile clients against a real `roster serve`: each bad input gets its clear answer, is
//! counted in `/metrics`, and disturbs no other user. Reserved event names, tokens that expire
//! on an open socket or name the topics they may join, the generated secret, every `[server]`
//! limit (connections in total and per address, sockets per user, joins per second, meta size,
//! WebSocket frame size, the header-read and request timeouts), the operational endpoints
//! behind the API key, and one socket flooding everything at once.
//!
//! What a phoenix client sees runs as scripts of `tests/js/scenarios/`; what only a raw TCP
//! client can do (send nothing, trickle headers or a body, announce a huge frame, connect from
//! 127.0.0.2) is written here with `support/raw.rs`.

mod support {
    pub mod js;
    pub mod raw;
    pub mod server;
}

use roster_server::{mint, Claims};
use std::future::Future;
use std::time::{Duration, Instant};
use support::raw;
use support::server::{http_get_with, now_s, Server, SECRET};

/// A port that was free a moment ago.
fn free_port() -> u16 {
    roster_testkit::ports::free_port()
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(f)
}

/// Poll `condition` every 20 ms until it holds; panic with `what` after `timeout`.
fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reserved_events_pushed_by_a_client_are_refused_and_other_members_keep_their_channels() {
    let server = Server::builder().start();
    let users = ["alice", "bob", "mallory"].map(|u| (u, server.token(u)));
    server.run_scenario("reserved_events.mjs", &server.input(&users));
}

#[test]
fn a_socket_whose_token_expires_is_revoked_closed_with_1008_and_its_presence_leaves() {
    let server = Server::builder().auth_key("token_leeway_ms = 0").start();
    // Valid now, expired within two seconds (exp is whole seconds).
    let soon = mint(SECRET.as_bytes(), &Claims::new("alice", "user", now_s() + 2));
    let tokens = [("soon", soon), ("bob", server.token("bob"))];
    server.run_scenario("token_expiry.mjs", &server.input(&tokens));
    let log = server.stderr();
    assert_eq!(log.matches("socket closed: its token expired").count(), 1, "logged once:\n{log}");
}

#[test]
fn a_token_with_a_topics_claim_joins_only_matching_topics() {
    let server = Server::builder().start();
    let exp = now_s() + 3600;
    let rooms = mint(SECRET.as_bytes(), &Claims::new("alice", "user", exp).with_topics(["room:*", "lobby"]));
    server.run_scenario("topics_claim.mjs", &server.input(&[("rooms", rooms), ("bob", server.token("bob"))]));
}

#[test]
fn a_generated_secret_is_printed_once_on_stdout_and_never_in_the_log() {
    let server = Server::builder().secret("").start();
    let stdout = server.stdout();
    let secret = stdout
        .lines()
        .find_map(|l| l.split_once("--secret=").map(|(_, rest)| rest))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no generated secret on stdout: {stdout:?}"))
        .to_owned();
    assert!(secret.len() >= 32, "{secret}");
    assert_eq!(stdout.matches(&secret).count(), 1, "printed once: {stdout:?}");
    assert!(!server.stderr().contains(&secret), "the log carries the secret:\n{}", server.stderr());
    // It is the secret tokens are checked with.
    let tokens = ["alice", "bob"].map(|u| (u, mint(secret.as_bytes(), &Claims::new(u, "user", now_s() + 3600))));
    server.run_scenario("join_token.mjs", &server.input(&tokens));
}

#[test]
fn a_secret_under_32_bytes_stops_the_server_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("roster-short-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("cluster.toml");
    let text = |secret: &str| {
        format!(
            "[auth]\nsecret = \"{secret}\"\n\n[cluster]\ndata_dir = \"{}\"\n\n[[cluster.nodes]]\nname = \"a\"\n\
             cluster_addr = \"127.0.0.1:{}\"\nhttp_addr = \"127.0.0.1:{}\"\n",
            dir.join("data").display(),
            free_port(),
            free_port()
        )
    };
    // Refused at start: it must exit by itself; one that starts serving is killed and fails
    // the test.
    let serve = |env_secret: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roster"));
        cmd.args(["serve", "--config"]).arg(&config).env_remove("ROSTER_SECRET");
        if let Some(s) = env_secret {
            cmd.env("ROSTER_SECRET", s);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run roster serve");
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("wait for roster serve").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect its output");
                panic!("roster serve with a short secret kept running:\n{}", String::from_utf8_lossy(&out.stderr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("collect its output")
    };
    std::fs::write(&config, text("0123456789abcdef0123456789abcde")).unwrap();
    let out = serve(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("auth.secret is 31 bytes long") && stderr.contains("at least 32 bytes"), "{stderr}");

    std::fs::write(&config, text("")).unwrap();
    let out = serve(Some("short"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ROSTER_SECRET") && stderr.contains("5 bytes long"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn idle_and_slowloris_connections_are_closed_by_the_header_read_timeout() {
    let server = Server::builder().server_key("header_read_timeout_ms = 1000").start();
    let addr = server.http_addr.clone();
    block_on(async {
        let started = Instant::now();
        let mut idle = Vec::new();
        for _ in 0..20 {
            idle.push(raw::connect(&addr, None).await);
        }
        let mut slow = raw::connect(&addr, None).await;
        let lines: Vec<&[u8]> = std::iter::once(&b"GET /health HTTP/1.1\r\n"[..])
            .chain(std::iter::repeat_n(&b"X-Slow: 1\r\n"[..], 100))
            .collect();
        // A header line every 100 ms: hyper never sees the head end, and never times out on a
        // quiet socket either.
        let sent = raw::trickle(&mut slow, &lines, Duration::from_millis(100)).await;
        assert!(sent < lines.len(), "the slowloris connection was still open after {sent} header lines");
        // The promised bound is 1 s; the margin is for a loaded machine.
        assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
        for (i, conn) in idle.iter_mut().enumerate() {
            let got = raw::read_until_closed(conn, Duration::from_secs(5))
                .await
                .unwrap_or_else(|_| panic!("idle connection {i} still open after the timeout"));
            // hyper closes without a response (a 408 would need a request to answer).
            assert!(got.is_empty() || raw::http_status(&got) == Some(408), "{}", String::from_utf8_lossy(&got));
        }
    });
    wait_until(Duration::from_secs(5), "21 header-read timeouts counted", || {
        server.metric("roster_limited_total{reason=\"header_read_timeout_ms\"}") >= 21.0
    });
    assert_eq!(server.get("/health"), (200, "ok".to_owned()), "a normal request is served");
}

#[test]
fn a_body_sent_byte_by_byte_gets_408_after_the_request_timeout() {
    let server = Server::builder().server_key("request_timeout_ms = 1000").start();
    let addr = server.http_addr.clone();
    block_on(async {
        let mut conn = raw::connect(&addr, None).await;
        let head = format!(
            "POST /kick HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        );
        raw::send(&mut conn, head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let body = [b"{".as_slice(); 99];
        // Trickle the body on the write half while waiting for the answer on the read half.
        let (mut read_half, mut write_half) = conn.into_split();
        let trickle = async move {
            for chunk in body {
                if tokio::io::AsyncWriteExt::write_all(&mut write_half, chunk).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let answer = async {
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = tokio::io::AsyncReadExt::read(&mut read_half, &mut buf).await {
                got.extend_from_slice(&buf[..n]);
            }
            got
        };
        let got = tokio::select! {
            got = answer => got,
            () = trickle => panic!("the whole body was trickled without an answer"),
        };
        assert_eq!(raw::http_status(&got), Some(408), "{}", String::from_utf8_lossy(&got));
        assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    });
    assert_eq!(server.metric("roster_limited_total{reason=\"request_timeout_ms\"}"), 1.0);
}

#[test]
fn connections_over_the_per_address_limit_are_refused_and_other_addresses_are_served() {
    let server = Server::builder()
        .server_key("max_sockets_per_ip = 3")
        .server_key("loopback_exempt = false")
        .server_key("header_read_timeout_ms = 60000")
        .start();
    let addr = server.http_addr.clone();
    let (mallory, other) = (raw::loopback(2), raw::loopback(3));
    block_on(async {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(raw::connect(&addr, mallory).await);
        }
        let mut fourth = raw::connect(&addr, mallory).await;
        let got = raw::read_until_closed(&mut fourth, Duration::from_secs(5)).await.expect("refused and closed");
        let text = String::from_utf8_lossy(&got);
        assert_eq!(raw::http_status(&got), Some(429), "{text}");
        assert!(text.contains("max_sockets_per_ip"), "{text}");

        // Another address is served while mallory's three stay open.
        let mut probe = raw::connect(&addr, other).await;
        let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        raw::send(&mut probe, request.as_bytes()).await.unwrap();
        let got = raw::read_until_closed(&mut probe, Duration::from_secs(5)).await.expect("answered");
        assert_eq!(raw::http_status(&got), Some(200), "{}", String::from_utf8_lossy(&got));

        // A closed connection gives its place back.
        drop(held.pop());
        let mut again = None;
        for _ in 0..250 {
            let mut conn = raw::connect(&addr, mallory).await;
            let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            raw::send(&mut conn, request.as_bytes()).await.ok();
            let got = raw::read_until_closed(&mut conn, Duration::from_secs(5)).await.unwrap_or_default();
            if raw::http_status(&got) == Some(200) {
                again = Some(());
                break;
            }
            // The server has not seen the close yet: try again.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(again.is_some(), "mallory's place was not given back");
    });
    assert!(server.metric("roster_limited_total{reason=\"max_sockets_per_ip\"}") >= 1.0);
}

#[test]
fn connections_over_the_total_limit_are_refused_with_503() {
    let server = Server::builder().server_key("max_sockets = 4").server_key("header_read_timeout_ms = 60000").start();
    let addr = server.http_addr.clone();
    block_on(async {
        // Four connections the node has admitted, each shown by a request answered on it. A
        // connection that ended just before (the harness's readiness probe) may still hold its
        // place for a moment: a held connection refused with 503 then is tried again, since
        // otherwise that place frees up under the fifth, which would be admitted.
        let mut held = Vec::new();
        let mut refused = 0;
        while held.len() < 4 {
            let mut conn = raw::connect(&addr, None).await;
            let got = raw::get_keep_alive(&mut conn, &addr, "/health").await;
            match raw::http_status(&got) {
                Some(200) => held.push(conn),
                Some(503) if refused < 100 => refused += 1,
                _ => panic!("a held connection answered {}", String::from_utf8_lossy(&got)),
            }
        }
        let mut fifth = raw::connect(&addr, raw::loopback(9)).await;
        let got = raw::read_until_closed(&mut fifth, Duration::from_secs(5)).await.expect("refused and closed");
        assert_eq!(raw::http_status(&got), Some(503), "{}", String::from_utf8_lossy(&got));
        drop(held);
    });
    wait_until(Duration::from_secs(5), "the node serves again once connections close", || {
        http_get_with(&server.http_addr, "/health", None).is_ok_and(|(status, _)| status == 200)
    });
    assert!(server.metric("roster_limited_total{reason=\"max_sockets\"}") >= 1.0);
}

#[test]
fn a_websocket_frame_announcing_more_than_the_limit_is_refused_from_its_header() {
    // max_frame_bytes = 4096: a frame over twice that is refused as soon as its header is read.
    // Before frames were limited, a frame announcing 4 MiB made the server wait for (and
    // reserve) all of it.
    let server = Server::builder().server_key("max_frame_bytes = 4096").server_key("ping_ms = 60000").start();
    let addr = server.http_addr.clone();
    let token = server.token("mallory");
    block_on(async {
        let mut ws = raw::connect(&addr, None).await;
        raw::ws_upgrade(&mut ws, &addr, &token).await;
        // The header alone, and a few payload bytes: never the 4 MiB it announces.
        let mut frame = raw::client_frame_header(1, 4 << 20);
        frame.extend_from_slice(b"[null,");
        raw::send(&mut ws, &frame).await.unwrap();
        let got = raw::read_until_closed(&mut ws, Duration::from_secs(5))
            .await
            .unwrap_or_else(|got| panic!("still open 5 s after the header; got {got:?}"));
        assert_eq!(raw::close_code(&got), Some(1009), "{got:?}");
    });
    assert_eq!(server.metric("roster_bad_frames_total{reason=\"too_large\"}"), 1.0);
    assert_eq!(server.get("/health"), (200, "ok".to_owned()));
}

/// Every close the server starts carries a code: a frame breaking the WebSocket protocol gets
/// 1002, a text frame that is not UTF-8 gets 1007 (both once closed without a code, which a
/// browser reports as 1005), and each is counted.
#[test]
fn websocket_protocol_violations_are_closed_with_1002_and_bad_utf8_with_1007() {
    let server = Server::builder().server_key("ping_ms = 60000").start();
    let addr = server.http_addr.clone();
    let token = server.token("mallory");
    let closed_with = |frame: Vec<u8>| {
        block_on(async {
            let mut ws = raw::connect(&addr, None).await;
            raw::ws_upgrade(&mut ws, &addr, &token).await;
            raw::send(&mut ws, &frame).await.unwrap();
            let got = raw::read_until_closed(&mut ws, Duration::from_secs(5))
                .await
                .unwrap_or_else(|got| panic!("still open 5 s after the frame; got {got:?}"));
            raw::close_code(&got)
        })
    };
    // Opcode 3 is reserved (RFC 6455 5.2).
    assert_eq!(closed_with(raw::client_frame_header(3, 0)), Some(1002));
    // A text frame of two bytes that are not UTF-8 (the mask is zero: the payload as written).
    let mut bad_text = raw::client_frame_header(1, 2);
    bad_text.extend_from_slice(&[0xC3, 0x28]);
    assert_eq!(closed_with(bad_text), Some(1007));
    assert_eq!(server.metric("roster_bad_frames_total{reason=\"ws_protocol\"}"), 1.0);
    assert_eq!(server.metric("roster_bad_frames_total{reason=\"ws_utf8\"}"), 1.0);
    assert_eq!(server.get("/health"), (200, "ok".to_owned()));
}

/// A client whose connection ends without a close frame (a killed tab, a cut network) left
/// uncleanly, but sent nothing wrong: it is not counted as a WebSocket protocol violation.
#[test]
fn a_connection_dropped_without_a_close_frame_is_not_counted_as_bad_input() {
    let server = Server::builder().server_key("ping_ms = 60000").start();
    let addr = server.http_addr.clone();
    let token = server.token("alice");
    let sockets_reach = |n: f64, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.metric("roster_sockets") != n {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    block_on(async {
        let mut ws = raw::connect(&addr, None).await;
        raw::ws_upgrade(&mut ws, &addr, &token).await;
        sockets_reach(1.0, "the socket never counted as open");
        // Ends the TCP connection (FIN) with no WebSocket close frame before it.
        tokio::io::AsyncWriteExt::shutdown(&mut ws).await.unwrap();
    });
    sockets_reach(0.0, "the server never noticed the connection end");
    assert_eq!(server.metric("roster_bad_frames_total{reason=\"ws_protocol\"}"), 0.0);
    assert_eq!(server.get("/health"), (200, "ok".to_owned()));
}

#[test]
fn sockets_per_user_joins_per_second_and_meta_size_are_limited_for_the_offender_only() {
    let server = Server::builder()
        .server_key("max_sockets_per_user = 2")
        .server_key("max_joins_per_second = 5")
        .server_key("max_meta_bytes = 64")
        .start();
    let users = ["alice", "bob"].map(|u| (u, server.token(u)));
    server.run_scenario("limits.mjs", &server.input(&users));
}

#[test]
fn one_socket_flooding_joins_pushes_and_garbage_disturbs_no_other_user() {
    let server = Server::builder()
        .server_key("max_joins_per_second = 20")
        .server_key("max_pushes_per_second = 20")
        .server_key("max_meta_bytes = 256")
        .start();
    let users = ["mallory", "carol", "dave"].map(|u| (u, server.token(u)));
    server.run_scenario("flood.mjs", &server.input(&users));
    // Logged once per socket and kind, however many there were.
    let log = server.stderr();
    for kind in ["invalid_json", "reserved_event", "max_joins_per_second", "max_meta_bytes"] {
        let lines = log.lines().filter(|l| l.contains(&format!("kind=\"{kind}\""))).count();
        assert_eq!(lines, 1, "{kind} logged {lines} times:\n{log}");
    }
}

#[test]
fn open_endpoints_serve_only_what_they_list_without_the_key() {
    let server = Server::builder().auth_key("open_endpoints = [\"metrics\"]").start();
    let get = |path: &str| http_get_with(&server.http_addr, path, None).expect("answered").0;
    assert_eq!(get("/metrics"), 200);
    assert_eq!(get("/cluster"), 401);
    assert_eq!(get("/presence?topic=x"), 401, "the backend API always needs the key");
    assert_eq!(server.get("/cluster").0, 200);
}
