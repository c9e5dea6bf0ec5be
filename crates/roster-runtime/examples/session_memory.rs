//! Memory per live session: RSS before and after opening N sessions (each a connection, a slot
//! at its home, a presence entry, and a task draining its events as a socket task would),
//! divided by N; then the same for N presences on open connections, which is what
//! Phoenix.Tracker's per-presence figure measures.
//!
//! `cargo run --release -p roster-runtime --example session_memory -- 100000 [ROOM]`: with
//! `ROOM` (default 1) the open connections share their topics, `ROOM` connections per topic,
//! as sockets in rooms do (each topic's list and window then serve `ROOM` presences).
//! `SESSIONS=0` in the environment skips the first figure; `HOLD=1` exits right after the last
//! figure with everything still live, so a heap profiler's "leaked" view is what the presences
//! hold (`SESSIONS=0 HOLD=1 heaptrack target/release/examples/session_memory 20000 50`).

use roster_core::{Config, NodeName};
use roster_runtime::{JoinRequest, Node, NodeOptions};
use std::time::Duration;

/// Resident set size in bytes, from /proc/self/statm.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

async fn settle(node: &Node, want_entries: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while node.stats().await.expect("stats").presence_entries != want_entries {
        assert!(tokio::time::Instant::now() < deadline, "presence did not settle");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let room: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let sessions_n = if std::env::var("SESSIONS").is_ok_and(|v| v == "0") { 0 } else { n };
    let mut config = Config::single_node();
    config.server.outbound_queue = 64;
    config.server.max_topics_per_socket = 100_000;
    let dir = std::env::temp_dir().join(format!("roster-mem-{}", uuid::Uuid::new_v4()));
    let node = Node::start(NodeOptions::for_node(config, NodeName::from("local")).data_dir(dir)).await.expect("start");
    assert!(node.ready(Duration::from_secs(5)).await);

    let before = rss();
    // Each session drains its events, as a server's socket task would (a session that did not
    // would be closed as a slow client once presence diffs filled its queue).
    let mut sessions = Vec::with_capacity(sessions_n);
    for i in 0..sessions_n {
        let topic = format!("room:{i}");
        let mut s = node.join(JoinRequest::user(format!("user{i}"), topic).tab("t")).await.expect("join");
        sessions.push(tokio::spawn(async move { while s.next_event().await.is_some() {} }));
    }
    settle(&node, sessions_n).await;
    let after = rss();
    if sessions_n > 0 {
        println!(
            "{n} sessions (connection + slot + presence): RSS +{:.1} MiB, {} B per session",
            (after - before) as f64 / 1048576.0,
            (after - before) / n as u64
        );
    }

    // Presences on connections that are already open: one connection joins many topics,
    // and reads its events as a socket task would.
    let conns = 100;
    let per_conn = n / conns;
    let mut open = Vec::new();
    let mut readers = Vec::new();
    for c in 0..conns {
        let mut conn = node.connect(Some(format!("multi{c}").into()), None, 1 << 16).await.expect("connect");
        open.push(conn.handle());
        readers.push(tokio::spawn(async move { while conn.recv().await.is_some() {} }));
    }
    let before = rss();
    for (c, conn) in open.iter().enumerate() {
        for t in 0..per_conn {
            conn.join(format!("topic:{t}:{}", c / room), None, Default::default()).await.expect("join");
        }
    }
    settle(&node, sessions_n + conns * per_conn).await;
    let after = rss();
    println!(
        "{} presences on {conns} open connections, {room} per topic (slot + presence): RSS +{:.1} MiB, {} B per presence",
        conns * per_conn,
        (after - before) as f64 / 1048576.0,
        (after - before) / (conns * per_conn) as u64
    );
    if std::env::var_os("HOLD").is_some() {
        std::process::exit(0);
    }
    drop(open);
    for r in readers {
        r.abort();
    }
    drop(sessions);
    node.shutdown().await;
}
