//! Throughput of the embedding API on one node: whole sessions (connect, join, leave) and
//! joins/leaves on open connections (what Phoenix.Tracker's `track` figures compare to), on 1
//! and 2 worker threads. `cargo bench -p roster-runtime --bench node`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use roster_core::{Config, NodeName};
use roster_runtime::{Connection, JoinRequest, Node, NodeOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BATCH: u64 = 1000;

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().expect("runtime")
}

async fn start() -> Node {
    let mut config = Config::single_node();
    config.server.outbound_queue = 64;
    let dir = std::env::temp_dir().join(format!("roster-bench-{}", uuid::Uuid::new_v4()));
    let node = Node::start(NodeOptions::for_node(config, NodeName::from("local")).data_dir(dir)).await.expect("start");
    assert!(node.ready(Duration::from_secs(5)).await);
    node
}

fn sessions(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_connect_join_leave");
    group.throughput(Throughput::Elements(BATCH));
    for threads in [1, 2] {
        let rt = runtime(threads);
        let node = rt.block_on(start());
        let next = AtomicU64::new(0);
        group.bench_with_input(BenchmarkId::from_parameter(format!("{threads}_threads")), &threads, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let node = node.clone();
                let base = next.fetch_add(iters * BATCH, Ordering::Relaxed);
                async move {
                    let started = Instant::now();
                    for i in 0..iters {
                        let mut set = tokio::task::JoinSet::new();
                        for j in 0..BATCH {
                            let node = node.clone();
                            let user = format!("u{}", base + i * BATCH + j);
                            set.spawn(async move {
                                let s = node.join(JoinRequest::user(user, "room:bench").tab("t")).await.expect("join");
                                s.leave();
                            });
                        }
                        while set.join_next().await.is_some() {}
                    }
                    started.elapsed()
                }
            });
        });
        rt.block_on(node.shutdown());
    }
    group.finish();
}

fn joins_on_open_connections(c: &mut Criterion) {
    let mut group = c.benchmark_group("join_leave_on_open_connections");
    group.throughput(Throughput::Elements(BATCH));
    for threads in [1, 2] {
        let rt = runtime(threads);
        let node = rt.block_on(start());
        let conns: Vec<Connection> = rt.block_on(async {
            let mut v = Vec::new();
            for i in 0..BATCH {
                v.push(node.connect(Some(format!("c{i}").into()), None, 64).await.expect("connect"));
            }
            v
        });
        let handles: Vec<_> = conns.iter().map(Connection::handle).collect();
        // Each connection's events are read, as a server's socket task reads them: one whose
        // queue filled with its rooms' presence pushes would be closed as a slow client.
        let drains: Vec<_> =
            conns.into_iter().map(|mut conn| rt.spawn(async move { while conn.recv().await.is_some() {} })).collect();
        // Every pair run, warm-up included: with `perf stat` around the bench, CPU per pair.
        let pairs = AtomicU64::new(0);
        group.bench_with_input(BenchmarkId::from_parameter(format!("{threads}_threads")), &threads, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let handles = handles.clone();
                pairs.fetch_add(iters * BATCH, Ordering::Relaxed);
                async move {
                    let started = Instant::now();
                    for i in 0..iters {
                        let mut set = tokio::task::JoinSet::new();
                        for h in &handles {
                            let h = h.clone();
                            let topic = format!("room:{}", i % 16);
                            set.spawn(async move {
                                h.join(topic.clone(), None, Default::default()).await.expect("join");
                                h.leave(topic);
                            });
                        }
                        while set.join_next().await.is_some() {}
                    }
                    started.elapsed()
                }
            });
        });
        let pairs = pairs.load(Ordering::Relaxed);
        if pairs > 0 {
            eprintln!("join_leave_on_open_connections/{threads}_threads: {pairs} join + leave pairs in all");
        }
        rt.block_on(node.shutdown());
        drains.iter().for_each(tokio::task::JoinHandle::abort);
    }
    group.finish();
}

fn list_latency(c: &mut Criterion) {
    let rt = runtime(2);
    let node = rt.block_on(start());
    // Each session drains its events (as a server's socket task does); one that did not would
    // be closed as a slow client once its queue filled with presence diffs.
    let drains = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..10_000 {
            let mut s = node.join(JoinRequest::user(format!("l{i}"), "room:big").tab("t")).await.expect("join");
            v.push(tokio::spawn(async move { while s.next_event().await.is_some() {} }));
        }
        v
    });
    let presence = node.presence("room:big");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while presence.list().len() < 10_000 && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
    });
    let published = presence.list();
    assert_eq!(published.len(), 10_000, "the published list holds every presence");
    eprintln!(
        "list_10k: {} keys, {} bytes of JSON",
        published.len(),
        serde_json::to_vec(&*published).expect("json").len()
    );
    let mut group = c.benchmark_group("list_10k");
    group.bench_function("published_list", |b| b.iter(|| presence.list()));
    group.bench_function("current_via_actor", |b| b.to_async(&rt).iter(|| presence.current()));
    group.bench_function("serialize_json", |b| {
        let list = presence.list();
        b.iter(|| serde_json::to_vec(&*list).expect("json").len())
    });
    group.finish();
    rt.block_on(node.shutdown());
    drop(drains);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = sessions, joins_on_open_connections, list_latency
}
criterion_main!(benches);
