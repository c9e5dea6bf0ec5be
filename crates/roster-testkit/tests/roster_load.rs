//! `roster-load` against a real Roster node, asserting the exact outcome of short runs: every
//! socket open, every join acknowledged, every view equal to the node's `GET /presence`, the
//! closing fraction gone from every remaining view, and nothing closed by the server; and,
//! the other way round, that it reports the closes a node does start.
//!
//! The node runs inside this test process (roster-server's router over a runtime `Node`, as
//! `roster serve` wires them): cargo builds the `roster` binary only for roster-server's own
//! tests. The first test runs the real `roster-load` binary with `--url … --json`, the
//! others call `roster_testkit::load::run`. Each run takes a few seconds; they run one at a
//! time (a static lock) because they share two cores with everything else.

use roster_core::{Config, NodeName};
use roster_runtime::{Node, NodeOptions};
use roster_server::{AllocatorProbe, AppState, PhoenixEncoder};
use roster_testkit::load::{self, AllocatorReport, CloseMode, NoProgress, RemoteNode, Report, Scenario, Target};
use roster_testkit::{http_get, ClusterSpec, Layout, API_KEY, SECRET};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A one-node Roster serving on 127.0.0.1 inside this process, until dropped.
struct InProcessNode {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    dir: std::path::PathBuf,
}

impl InProcessNode {
    /// Start a node whose config is the testkit's for one node (fast timings, `diff_ms = 10`)
    /// plus `server_keys`, and wait until it answers `/ready`.
    fn start(server_keys: &[&str]) -> InProcessNode {
        InProcessNode::start_with(server_keys, None)
    }

    /// The same, whose `/metrics` shows what `probe` gives as the allocator's figures.
    fn start_with(server_keys: &[&str], probe: Option<AllocatorProbe>) -> InProcessNode {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cluster_port = SocketAddr::from(([127, 0, 0, 1], roster_testkit::ports::free_port()));
        let dir = std::env::temp_dir().join(format!("roster-load-test-{}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(&dir).unwrap();
        let layout = Layout {
            cluster_addrs: vec![cluster_port],
            http_addrs: vec![addr],
            proxies: BTreeMap::new(),
            data_dir: dir.join("data"),
            tls_dir: None,
        };
        let mut spec = ClusterSpec::new(1);
        for line in server_keys {
            spec = spec.server_key(line);
        }
        let config = Config::from_toml_str(&spec.render_config(0, &layout)).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        listener.set_nonblocking(true).unwrap();
        runtime.block_on(async {
            // As `roster serve` does: every shared push encoded once.
            let opts = NodeOptions::for_node(config, NodeName::from("a")).encoder(Arc::new(PhoenixEncoder));
            let node = Node::start(opts).await.unwrap();
            let mut state = AppState::new(node.clone(), SECRET.as_bytes().to_vec(), API_KEY.to_owned());
            if let Some(probe) = probe {
                state = state.with_allocator_probe(probe);
            }
            let state = Arc::new(state);
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::spawn(roster_server::serve(listener, state, async move {
                let _ = stopped.await;
                node.shutdown().await;
            }));
        });
        let started = Instant::now();
        while !matches!(http_get(addr, "/ready", None), Ok((200, _))) {
            assert!(started.elapsed() < Duration::from_secs(30), "the in-process node never got ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        InProcessNode { addr, runtime: Some(runtime), stop: Some(stop), dir }
    }

    fn target(&self) -> Target {
        Target::Url(RemoteNode {
            addr: self.addr,
            secret: SECRET.to_owned(),
            api_key: API_KEY.to_owned(),
            pid: Some(std::process::id()),
        })
    }
}

impl Drop for InProcessNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn quick(node: &InProcessNode) -> Scenario {
    Scenario {
        target: node.target(),
        join_timeout: Duration::from_secs(20),
        settle_timeout: Duration::from_secs(20),
        threads: 1,
        ..Scenario::default()
    }
}

fn assert_clean(report: &Report) {
    assert!(report.is_clean(), "problems: {:?}\n{}", report.problems, report.table());
    assert!(report.closes_by_server.is_empty(), "{:?}", report.closes_by_server);
    assert!(!report.events.keys().any(|k| k.starts_with("channel ended")), "{:?}", report.events);
}

#[test]
fn the_binary_joins_every_socket_settles_every_view_and_sees_the_closed_half_leave() {
    let _one = lock();
    let node = InProcessNode::start(&[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roster-load"))
        .args(["--url", &format!("http://{}", node.addr), "--secret", SECRET, "--api-key", API_KEY])
        .args(["--server-pid", &std::process::id().to_string()])
        .args(["--sockets", "200", "--room-size", "100", "--watchers", "3", "--watched-rooms", "1"])
        .args(["--close-fraction", "0.5", "--meta", r#"{"name":"load"}"#, "--tab-ids", "--threads", "1"])
        .args(["--join-timeout-ms", "20000", "--settle-timeout-ms", "20000", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(r["connect"]["open"], 203);
    assert_eq!(r["connect"]["failed"], 0);
    assert_eq!((&r["watchers_join"]["acked"], &r["watchers_join"]["unanswered"]), (&3.into(), &0.into()));
    let join = &r["join"];
    assert_eq!(
        (&join["joins"], &join["acked"], &join["refused"], &join["unanswered"]),
        (&200.into(), &200.into(), &0.into(), &0.into())
    );
    assert!(join["seconds_to_all_acks"].as_f64().unwrap() > 0.0, "{join}");
    // The last join was sent before the last answer came.
    let sent = join["seconds_to_all_sent"].as_f64().unwrap();
    assert!(sent <= join["seconds_to_all_acks"].as_f64().unwrap(), "{join}");
    assert_eq!(join["latency_ms"]["count"], 200);
    // Every member and watcher sees its whole room: 103 in room 0, 100 in room 1.
    let views = &r["views"];
    assert_eq!((&views["checked"], &views["exact"], &views["node_entries"]), (&203.into(), &203.into(), &203.into()));
    assert!(views["seconds_until_exact"].is_number(), "{views}");
    // Half of each room closed: 53 + 50 remain, and every remaining view lists exactly them.
    let close = &r["close"];
    assert_eq!(close["closed"], 100);
    assert_eq!((&close["views"]["checked"], &close["views"]["exact"]), (&103.into(), &103.into()));
    assert_eq!(close["views"]["node_entries"], 103);
    assert_eq!(r["closes_by_server"], serde_json::json!({}));
    assert_eq!(r["problems"], serde_json::json!([]));
    // Each member received a state and diffs carrying at least its whole room once.
    let traffic = &r["traffic"];
    assert!(traffic["floor_ratio"].as_f64().unwrap() >= 1.0, "{traffic}");
    assert!(r["server"]["rss_joined"].as_u64().unwrap() > 0);
    // This node's `/metrics` shows no allocator figures: null, and the run is clean.
    for point in ["allocator_base", "allocator_connected", "allocator_joined", "allocator_after_close"] {
        assert_eq!(r["server"][point], Value::Null, "{point}");
    }
}

#[test]
fn the_allocators_figures_are_read_beside_each_rss_point() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let _one = lock();
    // The n-th read of the probe says `allocated` n KB and `active` n + 1 KB (and nothing
    // else): each point of the report must hold the read made for it, in order.
    let reads = Arc::new(AtomicU64::new(0));
    let counted = reads.clone();
    let probe: AllocatorProbe = Arc::new(move || {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        vec![("allocated", n * 1000), ("active", (n + 1) * 1000)]
    });
    let node = InProcessNode::start_with(&[], Some(probe));
    let scenario = Scenario { sockets: 20, room_size: 10, close_fraction: 0.5, ..quick(&node) };
    let report = load::run(&scenario, &NoProgress).unwrap();
    assert_clean(&report);
    assert_eq!(reads.load(Ordering::SeqCst), 4, "read once per point");
    let sv = &report.server;
    let points = [&sv.allocator_base, &sv.allocator_connected, &sv.allocator_joined, &sv.allocator_after_close];
    for (n, point) in (1u64..).zip(points) {
        let expected =
            AllocatorReport { allocated: Some(n * 1000), active: Some((n + 1) * 1000), ..Default::default() };
        assert_eq!(point.as_ref(), Some(&expected), "read {n}");
    }
    assert!(report.table().contains("allocated 0.0 MB, active 0.0 MB, resident ?, metadata ?"), "{}", report.table());
}

#[test]
fn drop_and_leave_closes_settle_and_sockets_spread_over_three_source_addresses() {
    let _one = lock();
    let node = InProcessNode::start(&[]);
    let dropped = Scenario {
        sockets: 60,
        room_size: 20,
        topics_per_socket: 2,
        close_fraction: 0.25,
        close_mode: CloseMode::Drop,
        source_addrs: Some(3),
        ..quick(&node)
    };
    let report = load::run(&dropped, &NoProgress).unwrap();
    assert_clean(&report);
    assert_eq!(report.connect.source_addresses_used, 3);
    assert_eq!((report.join.joins, report.join.acked), (120, 120));
    assert_eq!((report.views.checked, report.views.exact), (120, 120));
    let close = report.close.as_ref().unwrap();
    // round(0.25 × 20) = 5 of every room of 20 drop their connection without a close frame.
    assert_eq!(close.closed, 15);
    assert_eq!((close.views.checked, close.views.exact, close.views.node_entries), (90, 90, 90));

    let left = Scenario { close_mode: CloseMode::Leave, source_addrs: None, user_prefix: "v".into(), ..dropped };
    let report = load::run(&left, &NoProgress).unwrap();
    assert_clean(&report);
    assert_eq!(report.connect.source_addresses_used, 1);
    let close = report.close.as_ref().unwrap();
    assert_eq!((close.views.checked, close.views.exact, close.views.node_entries), (90, 90, 90));
}

#[test]
fn the_views_after_the_close_are_checked_only_once_every_close_was_sent() {
    let _one = lock();
    let node = InProcessNode::start(&[]);
    // 10 of the room's 20 close, one every 125 ms: the last goes 1.125 s after the first.
    // Between two closes the node's list and every view agree on the room as it then is, so
    // a check that started with the stage would find it settled with closes still to come.
    let scenario = Scenario { sockets: 20, room_size: 20, close_fraction: 0.5, close_rate: Some(8.0), ..quick(&node) };
    let report = load::run(&scenario, &NoProgress).unwrap();
    assert_clean(&report);
    let close = report.close.as_ref().unwrap();
    assert_eq!((close.closed, close.unsent), (10, 0));
    assert_eq!((close.views.checked, close.views.exact, close.views.node_entries), (10, 10, 10), "{}", report.table());
    assert!(close.seconds_to_send >= 1.125, "the last close goes out 9 / 8 s in: {}", close.seconds_to_send);
}

#[test]
fn closes_the_server_starts_are_reported_by_code_and_the_run_is_not_clean() {
    let _one = lock();
    // A join frame above max_frame_bytes makes the node close the socket with 1009.
    let node = InProcessNode::start(&["max_frame_bytes = 1024"]);
    let name = "x".repeat(2000);
    let scenario = Scenario {
        sockets: 10,
        room_size: 5,
        meta: Some(format!(r#"{{"name":"{name}"}}"#)),
        join_timeout: Duration::from_secs(5),
        settle_timeout: Duration::from_secs(2),
        ..quick(&node)
    };
    let report = load::run(&scenario, &NoProgress).unwrap();
    assert_eq!(report.closes_by_server, BTreeMap::from([(1009, 10)]), "{}", report.table());
    assert_eq!((report.join.acked, report.join.unanswered), (0, 10));
    assert!(!report.is_clean());
    assert!(report.problems.iter().any(|p| p == "the server closed 10 sockets"), "{:?}", report.problems);
}

#[test]
fn a_wrong_api_key_is_an_error_naming_it() {
    let _one = lock();
    let node = InProcessNode::start(&[]);
    let mut scenario = quick(&node);
    if let Target::Url(remote) = &mut scenario.target {
        remote.api_key = "wrong".into();
    }
    let err = load::run(&scenario, &NoProgress).unwrap_err().to_string();
    assert!(err.contains("401") && err.contains("--api-key"), "{err}");
}

#[test]
fn sockets_spread_over_worker_processes_report_as_one_run() {
    let _one = lock();
    let node = InProcessNode::start(&[]);
    let scenario = Scenario {
        sockets: 90,
        room_size: 30,
        watchers: 2,
        watched_rooms: Some(1),
        close_fraction: 1.0 / 3.0,
        // 30 closes over half a second: the views are checked after the last.
        close_rate: Some(60.0),
        procs: 3,
        threads: 3,
        worker_binary: Some(env!("CARGO_BIN_EXE_roster-load").into()),
        ..quick(&node)
    };
    let report = load::run(&scenario, &NoProgress).unwrap();
    assert_clean(&report);
    assert_eq!(report.scenario.procs, 3);
    assert_eq!((report.connect.open, report.connect.failed), (92, 0));
    let watchers = report.watchers_join.as_ref().unwrap();
    assert_eq!((watchers.acked, watchers.unanswered), (2, 0));
    assert_eq!((report.join.joins, report.join.acked, report.join.latency_ms.count), (90, 90, 90));
    // Every view in every worker equals its room: 32 in room 0, 30 in the others.
    assert_eq!((report.views.checked, report.views.exact, report.views.node_entries), (92, 92, 92));
    assert!(report.traffic.floor_ratio.unwrap() >= 1.0, "{}", report.table());
    let close = report.close.as_ref().unwrap();
    assert_eq!((close.closed, close.unsent), (30, 0));
    assert!(close.seconds_to_send >= 29.0 / 60.0, "{}", close.seconds_to_send);
    assert_eq!((close.views.checked, close.views.exact, close.views.node_entries), (62, 62, 62));
    // The workers' own memory is in the figure: three processes, each at least 1 MB.
    assert!(report.client_peak_rss.unwrap() > 3 << 20);

    // A close the server starts reaches the report from a worker, by its code.
    let limited = InProcessNode::start(&["max_frame_bytes = 1024"]);
    let name = "x".repeat(2000);
    let refused = Scenario {
        sockets: 10,
        room_size: 5,
        meta: Some(format!(r#"{{"name":"{name}"}}"#)),
        join_timeout: Duration::from_secs(5),
        settle_timeout: Duration::from_secs(2),
        procs: 2,
        worker_binary: Some(env!("CARGO_BIN_EXE_roster-load").into()),
        ..quick(&limited)
    };
    let report = load::run(&refused, &NoProgress).unwrap();
    assert_eq!(report.closes_by_server, BTreeMap::from([(1009, 10)]), "{}", report.table());
    assert_eq!((report.join.acked, report.join.unanswered), (0, 10));
}
