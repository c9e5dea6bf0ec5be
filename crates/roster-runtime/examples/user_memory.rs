//! Memory per live user actor: N users, each with one live session (a connection actor, a
//! slot at its home, a presence entry, and a task draining its events, as in
//! `session_memory`), on one node, with one of three kinds of user actors:
//!
//! - `off`: none (`NodeOptions::without_user_actors`), the baseline;
//! - `default`: the default actor (`KeepSessions`), which runs nothing of its own;
//! - `player`: an application's actor with a small state (a game player: a ready flag, a chat
//!   rate limit, a login count), called once so its state exists.
//!
//! It prints the heap bytes live per user (a counting allocator) and the RSS growth per user.
//! What a user actor costs is a mode's figure minus `off`'s; run each mode in its own process:
//!
//! `cargo run --release -p roster-runtime --example user_memory -- 100000 default`

use roster_core::{Config, NodeName};
use roster_runtime::{JoinRequest, Node, NodeOptions, UserBehaviour, UserCtx};
use serde::{Deserialize, Serialize};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::time::Duration;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

struct Player;

#[derive(Default, Serialize, Deserialize)]
struct PlayerState {
    ready: bool,
    chat_tokens: f64,
    refilled_ms: u64,
    logins: u32,
}

impl UserBehaviour for Player {
    type State = PlayerState;
    type Msg = bool;
    type Reply = bool;

    fn start(&self, ctx: &UserCtx, handed_over: Option<PlayerState>) -> PlayerState {
        let logins = ctx.sessions().len() as u32;
        handed_over.unwrap_or(PlayerState { chat_tokens: 3.0, logins, ..PlayerState::default() })
    }

    async fn handle(&self, _ctx: &UserCtx, state: &mut PlayerState, ready: bool) -> bool {
        state.ready = ready;
        state.ready
    }
}

/// Resident set size in bytes, from /proc/self/statm.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

async fn settle(node: &Node, entries: usize, activations: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let s = node.stats().await.expect("stats");
        if s.presence_entries == entries && s.user_activations == activations {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "did not settle: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mode = std::env::args().nth(2).unwrap_or_else(|| "default".into());
    let mut config = Config::single_node();
    config.server.outbound_queue = 64;
    let dir = std::env::temp_dir().join(format!("roster-mem-{}", uuid::Uuid::new_v4()));
    let opts = NodeOptions::for_node(config, NodeName::from("local")).data_dir(dir);
    let opts = match mode.as_str() {
        "off" => opts.without_user_actors(),
        "default" => opts,
        "player" => opts.users(Player),
        other => panic!("mode {other:?}: off, default or player"),
    };
    let node = Node::start(opts).await.expect("start");
    assert!(node.ready(Duration::from_secs(5)).await);

    let (rss_before, region) = (rss(), Region::new(GLOBAL));
    let mut sessions = Vec::with_capacity(n);
    let began = std::time::Instant::now();
    for i in 0..n {
        let mut s = node.join(JoinRequest::user(format!("user{i}"), format!("room:{i}")).tab("t")).await.expect("join");
        sessions.push(tokio::spawn(async move { while s.next_event().await.is_some() {} }));
        if (i + 1) % 10_000 == 0 {
            eprintln!("{} joined in {:.1} s", i + 1, began.elapsed().as_secs_f64());
        }
    }
    if mode == "player" {
        for i in 0..n {
            node.user(format!("user{i}")).call::<Player>(true).await.expect("call");
        }
    }
    let joined = began.elapsed().as_secs_f64();
    let actors = if mode == "off" { 0 } else { n };
    settle(&node, n, actors).await;
    eprintln!(
        "{n} joined in {joined:.1} s ({:.0} joins/s, one after another), settled after {:.1} s",
        n as f64 / joined,
        began.elapsed().as_secs_f64()
    );
    let stats = region.change();
    let heap = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    let grown = rss() - rss_before;
    println!(
        "{n} users with one live session each, user actors {mode}: heap +{:.1} MiB ({} B per user), RSS +{:.1} MiB ({} B per user)",
        heap as f64 / 1048576.0,
        heap / n as i64,
        grown as f64 / 1048576.0,
        grown / n as u64
    );
    drop(sessions);
    let stopping = std::time::Instant::now();
    node.shutdown().await;
    eprintln!("shut down in {:.1} s", stopping.elapsed().as_secs_f64());
}
