//! After many join/leave cycles the node is back to its baseline: no user state, session,
//! slot, presence entry or actor left behind.

mod support;

use roster_runtime::{JoinRequest, Stats};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_join_leave_cycles_leave_nothing_behind() {
    let node = start(config("[[policy]]\ntopic = \"*\"\n")).await;
    let baseline = node.stats().await.unwrap();
    assert_eq!((baseline.live_users, baseline.sessions, baseline.slots, baseline.presence_entries), (0, 0, 0, 0));
    let mut users = tokio::task::JoinSet::new();
    for u in 0..1000 {
        let node = node.clone();
        users.spawn(async move {
            for cycle in 0..cycles() {
                let topic = format!("room:{}", cycle % 7);
                let req = JoinRequest::user(format!("user{u}"), topic).tab(format!("tab{}", cycle % 3));
                let session = node.join(req).await.expect("a lone user's join is granted");
                if cycle % 2 == 0 {
                    session.leave();
                } else {
                    drop(session);
                }
            }
        });
    }
    while let Some(r) = users.join_next().await {
        r.unwrap();
    }
    // Leaves are asynchronous: wait until every one has been processed.
    wait_until(|| async { node.stats().await.unwrap() == baseline }).await;
    let end: Stats = node.stats().await.unwrap();
    assert_eq!(end, baseline);
    node.shutdown().await;
}

/// Cycles per user (`ROSTER_CYCLES` overrides the default 100, for profiling).
fn cycles() -> usize {
    std::env::var("ROSTER_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(100)
}
