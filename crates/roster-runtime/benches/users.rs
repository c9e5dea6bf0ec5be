//! What user actors cost on one node: whole sessions (connect, join, leave), each of which now
//! starts and stops a user's activation, against the same with no user actors; and a local
//! `UserRef::call` (the caller on the user's home). The remote call, across two processes, is
//! `examples/user_calls.rs`. `cargo bench -p roster-runtime --bench users`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use roster_core::{Config, NodeName};
use roster_runtime::{JoinRequest, Node, NodeOptions, UserBehaviour, UserCtx};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BATCH: u64 = 1000;

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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

async fn start(user_actors: bool) -> Node {
    let mut config = Config::single_node();
    config.server.outbound_queue = 64;
    let dir = std::env::temp_dir().join(format!("roster-bench-{}", uuid::Uuid::new_v4()));
    let opts = NodeOptions::for_node(config, NodeName::from("local")).data_dir(dir);
    let opts = if user_actors { opts.users(Echo) } else { opts.without_user_actors() };
    let node = Node::start(opts).await.expect("start");
    assert!(node.ready(Duration::from_secs(5)).await);
    node
}

fn sessions(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_connect_join_leave_2_threads");
    group.throughput(Throughput::Elements(BATCH));
    for user_actors in [false, true] {
        let rt = runtime();
        let node = rt.block_on(start(user_actors));
        let next = AtomicU64::new(0);
        let label = if user_actors { "with_user_actors" } else { "without_user_actors" };
        group.bench_with_input(BenchmarkId::from_parameter(label), &user_actors, |b, _| {
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

fn local_call(c: &mut Criterion) {
    let rt = runtime();
    let node = rt.block_on(start(true));
    let _session = rt.block_on(node.join(JoinRequest::user("caller", "room:1").tab("t"))).expect("join");
    let user = node.user("caller");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(5);
        while user.call::<Echo>(0).await.is_err() {
            assert!(Instant::now() < deadline, "the actor never answered");
        }
    });
    let mut group = c.benchmark_group("user_call");
    group.bench_function("local", |b| b.to_async(&rt).iter(|| user.call::<Echo>(7)));
    group.finish();
    rt.block_on(node.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = sessions, local_call
}
criterion_main!(benches);
