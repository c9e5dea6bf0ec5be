//! `UserRef::call` latency, local and remote: two nodes on 127.0.0.1 (this process is node
//! `a`, a child process of the same example is node `b`), one user homed on each, both with a
//! live session on `a`; `a` calls each user's actor N times, one call after another, and
//! prints the latency percentiles. The behaviour echoes a number (its encoding and decoding
//! included, as for any application message).
//!
//! `cargo run --release -p roster-runtime --example user_calls -- 20000`

use roster_core::{partition_of, preferred_home, Config, NodeName, PartitionId, UserId};
use roster_runtime::{JoinRequest, Node, NodeOptions, UserBehaviour, UserCtx};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Echo;

impl UserBehaviour for Echo {
    type State = ();
    type Msg = u64;
    type Reply = u64;

    fn start(&self, _ctx: &UserCtx, _handed_over: Option<()>) {}

    async fn handle(&self, _ctx: &UserCtx, _state: &mut (), n: u64) -> u64 {
        n
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn config_text() -> String {
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    format!(
        r#"
[cluster]
cookie = "user-calls-bench"
heartbeat_ms = 100
heartbeat_timeout_ms = 500
lease_ms = 1000
isolation_ms = 1677

[[cluster.nodes]]
name = "a"
cluster_addr = "127.0.0.1:{}"
http_addr = "127.0.0.1:{}"

[[cluster.nodes]]
name = "b"
cluster_addr = "127.0.0.1:{}"
http_addr = "127.0.0.1:{}"
"#,
        ports[0], ports[1], ports[2], ports[3]
    )
}

async fn start(config: &Config, name: &str) -> Node {
    let dir = std::env::temp_dir().join(format!("roster-user-calls-{}", uuid::Uuid::new_v4()));
    let opts = NodeOptions::for_node(config.clone(), NodeName::from(name)).data_dir(dir).users(Echo);
    Node::start(opts).await.expect("start")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        // Node b: run until the parent closes our stdin.
        let config = Config::from_toml_str(&std::fs::read_to_string(&args[2]).expect("config")).expect("config");
        let node = start(&config, "b").await;
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .expect("stdin");
        node.shutdown().await;
        return;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let text = config_text();
    let config = Config::from_toml_str(&text).expect("config");
    let path = std::env::temp_dir().join(format!("roster-user-calls-{}.toml", std::process::id()));
    std::fs::write(&path, &text).expect("write config");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg("child")
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("start node b");
    let a = start(&config, "a").await;

    // Every partition at its preferred node (handovers over), so the homes stay put.
    let names = [NodeName::from("a"), NodeName::from("b")];
    let partitions = config.cluster.partitions;
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        let s = a.status().await.expect("status");
        let held: Vec<u32> = s.leases.iter().map(|l| l.0 .0).collect();
        let mine: Vec<u32> =
            (0..partitions).filter(|p| preferred_home(PartitionId(*p), &names).as_ref() == Some(&names[0])).collect();
        if s.ready && s.all_homed && held == mine {
            break held;
        }
        assert!(Instant::now() < deadline, "the two nodes did not settle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let homed_on_a = |u: &UserId| held.contains(&partition_of(u, partitions).0);
    let users: Vec<UserId> = (0..).map(|k| UserId::from(format!("user{k}"))).take(1000).collect();
    let local = users.iter().find(|u| homed_on_a(u)).expect("a user homed on a").clone();
    let remote = users.iter().find(|u| !homed_on_a(u)).expect("a user homed on b").clone();
    let _s1 = a.join(JoinRequest::user(local.clone(), "room:1").tab("t")).await.expect("join");
    let _s2 = a.join(JoinRequest::user(remote.clone(), "room:1").tab("t")).await.expect("join");

    for (label, user) in [("local (the user's home is this node)", &local), ("remote (homed on b)", &remote)] {
        let r = a.user(user.clone());
        // The activation starts with the join; wait for it, then warm up.
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.call::<Echo>(0).await.is_err() {
            assert!(Instant::now() < deadline, "{user}'s actor never answered");
        }
        for i in 0..1000 {
            r.call::<Echo>(i).await.expect("warm-up call");
        }
        let mut us = Vec::with_capacity(n);
        let started = Instant::now();
        for i in 0..n as u64 {
            let t = Instant::now();
            assert_eq!(r.call::<Echo>(i).await.expect("call"), i);
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let total = started.elapsed();
        us.sort_by(|x, y| x.total_cmp(y));
        println!(
            "UserRef::call {label}: {n} calls, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs, {:.0} calls/s one after another",
            percentile(&us, 0.5),
            percentile(&us, 0.99),
            percentile(&us, 1.0),
            n as f64 / total.as_secs_f64()
        );
    }
    a.shutdown().await;
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
}
