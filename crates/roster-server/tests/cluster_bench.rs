//! Cluster benchmarks (issue 6's figures), ignored in the test suite: they measure, they do
//! not assert bounds. Run them on an idle machine in release mode, one at a time:
//!
//! ```text
//! cargo test --release -p roster-server --test cluster_bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Times come from the one JS driver process (`performance.now()` stamps on its events) or from
//! this process's clock, and each figure is printed as `BENCH name: ...` for BENCHMARKS.md.

mod support {
    pub mod driver;
    #[allow(dead_code)]
    pub mod js;
}

use roster_server::{mint, Claims};
use roster_testkit::{Cluster, ClusterSpec, Timings, SECRET};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::driver::JsDriver;

const ROSTER: &str = env!("CARGO_BIN_EXE_roster");
const WAIT: Duration = Duration::from_secs(60);

fn token(user: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs() + 3600;
    mint(SECRET.as_bytes(), &Claims::new(user, "user", exp))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize]
}

fn report(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    println!(
        "BENCH {name}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        samples.len(),
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        samples[samples.len() - 1]
    );
}

fn entries(c: &Cluster, i: usize) -> u64 {
    c.cluster_view(i)["counts"]["presence_entries"].as_u64().unwrap_or(0)
}

/// A join acknowledged on a, until the observers on b and c see it (their `presence_join`),
/// and the same for the leave; 300 rounds, one at a time.
#[test]
#[ignore = "benchmark"]
fn bench_visibility_of_one_change_on_the_other_nodes() {
    let c = ClusterSpec::new(3).start(ROSTER);
    let js = JsDriver::start();
    let topic = "room:bench";
    for (conn, node) in [("ob", 1), ("oc", 2)] {
        js.connect(conn, &c.socket_url(node), &token(conn));
        js.join(conn, topic, conn, json!({}));
    }
    let mut joins = Vec::new();
    let mut leaves = Vec::new();
    for i in 0..300 {
        let (conn, user) = (format!("w{i}"), format!("writer{i}"));
        js.connect(&conn, &c.socket_url(0), &token(&user));
        let mark = js.mark();
        let reply = js.join(&conn, topic, &conn, json!({}));
        let acked = reply["t"].as_f64().expect("reply time");
        for ob in ["ob", "oc"] {
            let seen = js
                .wait_event_after(mark, WAIT, "the join on the observer", |e| {
                    e["event"] == "presence_join" && e["conn"] == ob && e["key"] == user.as_str()
                })
                .unwrap_or_else(|e| c.fail(&e));
            joins.push(seen["t"].as_f64().expect("event time") - acked);
        }
        let mark = js.mark();
        let sent = js.request(json!({"cmd": "leave", "conn": conn, "topic": topic}), WAIT)["t"].as_f64().expect("t");
        for ob in ["ob", "oc"] {
            let seen = js
                .wait_event_after(mark, WAIT, "the leave on the observer", |e| {
                    e["event"] == "presence_leave" && e["conn"] == ob && e["key"] == user.as_str()
                })
                .unwrap_or_else(|e| c.fail(&e));
            leaves.push(seen["t"].as_f64().expect("event time") - sent);
        }
        js.disconnect(&conn);
    }
    report("join visible on another node (from the join's ok)", joins);
    report("leave visible on another node (from the leave's ok)", leaves);
}

/// 10,000 presences joined on a (10 sockets × 1,000 topics): from the first join sent until
/// b's and c's replicas hold all of them.
#[test]
#[ignore = "benchmark"]
fn bench_visibility_of_a_batch_of_ten_thousand() {
    let c = ClusterSpec::new(3)
        .server_key("max_topics_per_socket = 1000")
        // A thousand joins at once on one socket: a load test, not a flood.
        .server_key("max_joins_per_second = 100000")
        .server_key("outbound_queue = 100000")
        .start(ROSTER);
    let js = JsDriver::start();
    for s in 0..10 {
        js.connect(&format!("u{s}"), &c.socket_url(0), &token(&format!("u{s}")));
    }
    let start = Instant::now();
    let ids: Vec<u64> = (0..10)
        .map(|s| {
            js.send(json!({"cmd": "join_many", "conn": format!("u{s}"), "prefix": "batch:", "count": 1000,
                "tab_id": format!("u{s}-tab"), "timeout_ms": 120_000}))
        })
        .collect();
    let mut acked = Duration::ZERO;
    for id in ids {
        let reply = js.reply(id, Duration::from_secs(150)).unwrap_or_else(|e| c.fail(&e));
        assert_eq!(reply["joined"], 1000, "{reply}");
        acked = start.elapsed();
    }
    let on_a = entries(&c, 0);
    c.wait_until(WAIT, "b and c hold every entry of a", |c| entries(c, 1) >= on_a && entries(c, 2) >= on_a);
    let everywhere = start.elapsed();
    println!(
        "BENCH batch of 10,000: all acknowledged on a after {:.0} ms, all on b and c after {:.0} ms (+{:.0} ms)",
        acked.as_secs_f64() * 1e3,
        everywhere.as_secs_f64() * 1e3,
        (everywhere - acked).as_secs_f64() * 1e3
    );
}

/// `kill -9` of c, until a and b hold none of its presences; `SIGSTOP` of c, until a and b
/// mark it down. Five rounds each, with a restart (or `SIGCONT`) and convergence between.
#[test]
#[ignore = "benchmark"]
fn bench_kill_and_hang_detection() {
    let mut c = ClusterSpec::new(3).policy("topic = \"*\"\nexempt_roles = [\"admin\"]").start(ROSTER);
    let mut killed = Vec::new();
    let mut hung = Vec::new();
    for round in 0..5 {
        let js = JsDriver::start();
        let user = format!("carol{round}");
        js.connect("c", &c.socket_url(2), &token(&user));
        js.join("c", "room:k", "tab", json!({}));
        let has_carol = |c: &Cluster, i: usize| c.try_presence(i, "room:k").is_some_and(|l| l.get(&user).is_some());
        c.wait_until(WAIT, "a and b list carol", |c| has_carol(c, 0) && has_carol(c, 1));
        let t = Instant::now();
        c.kill9(2);
        c.wait_until(WAIT, "carol gone from a and b", |c| !has_carol(c, 0) && !has_carol(c, 1));
        killed.push(t.elapsed().as_secs_f64() * 1e3);
        drop(js);
        c.restart(2);

        let js = JsDriver::start();
        js.connect("c", &c.socket_url(2), &token(&user));
        js.join("c", "room:k", "tab", json!({}));
        c.wait_until(WAIT, "a and b list carol again", |c| has_carol(c, 0) && has_carol(c, 1));
        let down = |c: &Cluster, i: usize| c.peer_view(i, 2).is_some_and(|p: Value| p["alive"] == false);
        let t = Instant::now();
        c.sigstop(2);
        c.wait_until(WAIT, "a and b mark c down", |c| down(c, 0) && down(c, 1));
        hung.push(t.elapsed().as_secs_f64() * 1e3);
        c.sigcont(2);
        c.wait_until(WAIT, "a and b hear c again", |c| !down(c, 0) && !down(c, 1));
        drop(js);
    }
    report("kill -9 until its presences are gone elsewhere", killed);
    report(
        &format!("SIGSTOP until declared down (heartbeat_timeout_ms = {})", Timings::FAST.heartbeat_timeout_ms),
        hung,
    );
}

/// A user whose partition's lease `node` holds now (read from its `/cluster`).
fn user_homed_on(c: &Cluster, node: usize, prefix: &str) -> String {
    let view = c.cluster_view(node);
    let held: Vec<u64> =
        view["leases"].as_array().expect("leases").iter().filter_map(|l| l["partition"].as_u64()).collect();
    (0..100_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|u| held.contains(&u64::from(roster_core::partition_of(&roster_core::UserId::from(u.as_str()), 256).0)))
        .expect("a user homed there")
}

/// Join latency (phx_join sent until its ok) on a, for users homed on a (a local grant) and
/// for users homed on b (one round trip through the cluster link); and the latency of a
/// takeover whose old tab is on b and new tab on a, with the home on c.
#[test]
#[ignore = "benchmark"]
fn bench_cross_node_join_and_takeover_latency() {
    cross_node_join_and_takeover_latency(ClusterSpec::new(3), "");
}

/// The same over mutual TLS (`[cluster.tls]`).
#[test]
#[ignore = "benchmark"]
fn bench_cross_node_join_and_takeover_latency_over_tls() {
    cross_node_join_and_takeover_latency(ClusterSpec::new(3).tls(), ", TLS");
}

fn cross_node_join_and_takeover_latency(spec: ClusterSpec, label: &str) {
    let c = spec.start(ROSTER);
    let js = JsDriver::start();
    let mut local = Vec::new();
    let mut remote = Vec::new();
    let mut takeover = Vec::new();
    for i in 0..200 {
        for (home, samples) in [(0, &mut local), (1, &mut remote)] {
            let user = user_homed_on(&c, home, &format!("j{i}-{home}-"));
            let conn = format!("{user}-conn");
            js.connect(&conn, &c.socket_url(0), &token(&user));
            let r = js.join(&conn, "room:lat", "tab", json!({}));
            samples.push(r["t"].as_f64().expect("t") - r["sent"].as_f64().expect("sent"));
            js.disconnect(&conn);
        }
        let user = user_homed_on(&c, 2, &format!("t{i}-"));
        let (old, new) = (format!("{user}-old"), format!("{user}-new"));
        js.connect(&old, &c.socket_url(1), &token(&user));
        js.join(&old, "room:lat", "tab-old", json!({}));
        js.connect(&new, &c.socket_url(0), &token(&user));
        let r = js.join(&new, "room:lat", "tab-new", json!({}));
        takeover.push(r["t"].as_f64().expect("t") - r["sent"].as_f64().expect("sent"));
        js.disconnect(&old);
        js.disconnect(&new);
    }
    report(&format!("join on a, user homed on a (local grant){label}"), local);
    report(&format!("join on a, user homed on b (grant across the link){label}"), remote);
    report(&format!("takeover: new tab on a, old tab on b, home on c{label}"), takeover);
}
