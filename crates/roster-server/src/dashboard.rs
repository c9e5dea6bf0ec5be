//! The live dashboard: the page at `/dashboard` and the admin topic that feeds it.
//!
//! The page joins the topic [`ADMIN_TOPIC`] on the ordinary Phoenix socket and receives a
//! `dashboard` push with this node's view of the cluster about once a second, never by
//! polling: nodes with their liveness, links and incarnations, who holds each partition (the
//! ring), topics with member and anonymous counts, recent revokes with their reasons, and
//! sockets and joins per second over the last minutes.
//!
//! ```text
//! serve ──spawns──▶ sampler (run): every second records sockets and joins/s; while a page
//!                   watches, builds a snapshot from Node::status, links, topics ──▶ watch
//! socket (roster:admin) ◀── the latest snapshot, as a `dashboard` push ──┘
//! ```
//!
//! Everything comes from what this node knows: its own heartbeats (peers' liveness and the
//! partitions they announce), its replica (every node's presence), and its own sockets (the
//! chart and the revokes). In demo mode the topic is open; otherwise its join payload must
//! carry `{"api_key": K}` with the config's key (no key configured: refused).

use crate::app::AppState;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use roster_core::{PresenceList, UserId};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};

/// The topic the dashboard joins. Never a presence topic: joins to it never reach the node.
pub(crate) const ADMIN_TOPIC: &str = "roster:admin";

/// The event that carries a snapshot.
pub(crate) const SNAPSHOT_EVENT: &str = "dashboard";

/// How often the chart is sampled and a watched snapshot rebuilt.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The shortest time between two snapshots, however many pages join: joins in a burst get
/// the latest one at once and the next with the others.
const REBUILD_AT_MOST_EVERY: Duration = Duration::from_millis(250);

/// Samples kept for the chart: five minutes at one a second.
const HISTORY_LEN: usize = 300;

/// Revokes kept for the list.
const REVOKES_KEPT: usize = 50;

/// Topics listed, the busiest first.
const TOPICS_SHOWN: usize = 25;

/// One revoke a socket of this node delivered.
struct Revoke {
    at_ms: u64,
    user: Option<String>,
    topic: String,
    reason: String,
}

/// The dashboard's shared state: the latest snapshot for the sockets watching, the chart's
/// history, and the recent revokes.
pub struct Dashboard {
    snapshots: watch::Sender<Arc<Value>>,
    /// Rebuild the snapshot now (a page just joined), not at the next tick.
    wake: Notify,
    revokes: Mutex<VecDeque<Revoke>>,
    history: Mutex<VecDeque<Sample>>,
}

/// One point of the chart.
#[derive(Clone, Copy)]
struct Sample {
    at_ms: u64,
    sockets: i64,
    joins_per_s: f64,
}

impl Default for Dashboard {
    fn default() -> Self {
        Self::new()
    }
}

impl Dashboard {
    /// An empty dashboard: no history, no revokes, nobody watching.
    pub fn new() -> Self {
        Self {
            snapshots: watch::channel(Arc::new(Value::Null)).0,
            wake: Notify::new(),
            revokes: Mutex::new(VecDeque::new()),
            history: Mutex::new(VecDeque::new()),
        }
    }

    /// A socket of this node told its client that `user`'s slot in `topic` was revoked.
    pub(crate) fn revoked(&self, user: Option<&UserId>, topic: &str, reason: &str) {
        let mut revokes = self.revokes.lock().unwrap_or_else(|e| e.into_inner());
        if revokes.len() == REVOKES_KEPT {
            revokes.pop_front();
        }
        revokes.push_back(Revoke {
            at_ms: unix_ms(),
            user: user.map(|u| u.as_str().to_owned()),
            topic: topic.to_owned(),
            reason: reason.to_owned(),
        });
    }
}

/// A socket's subscription to the snapshots: the join it answers to and the latest value.
pub(crate) struct AdminFeed {
    join_ref: Option<String>,
    rx: watch::Receiver<Arc<Value>>,
}

/// A `phx_join` of [`ADMIN_TOPIC`]: the feed, or the reason to refuse it (`unauthorized`).
pub(crate) fn join(st: &AppState, payload: &Value, join_ref: Option<String>) -> Result<AdminFeed, &'static str> {
    if !st.node.config().server.demo {
        let given = payload.get("api_key").and_then(Value::as_str).unwrap_or("");
        if st.api_key.is_empty() || !same_key(given, &st.api_key) {
            return Err("unauthorized");
        }
    }
    let mut rx = st.dashboard.snapshots.subscribe();
    // The latest snapshot at once (at most a second old), a fresh one right after.
    if !rx.borrow().is_null() {
        rx.mark_changed();
    }
    st.dashboard.wake.notify_one();
    Ok(AdminFeed { join_ref, rx })
}

/// Constant-time comparison, so the key cannot be guessed byte by byte from answer times.
fn same_key(given: &str, key: &str) -> bool {
    given.len() == key.len() && given.bytes().zip(key.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The next snapshot for a socket that joined the admin topic, with the join's `join_ref`;
/// never resolves when it has not joined (or the server stops sampling).
pub(crate) async fn next_snapshot(feed: &mut Option<AdminFeed>) -> (Option<String>, Arc<Value>) {
    loop {
        let Some(f) = feed.as_mut() else { return std::future::pending().await };
        if f.rx.changed().await.is_err() {
            *feed = None;
            continue;
        }
        let snapshot = f.rx.borrow_and_update().clone();
        if !snapshot.is_null() {
            return (f.join_ref.clone(), snapshot);
        }
    }
}

/// Sample the chart every second for as long as the server runs; rebuild the snapshot while
/// a socket watches (at once when one joins).
pub(crate) async fn run(st: Arc<AppState>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (Instant::now(), st.metrics.joins.get());
    let mut built: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let joins = st.metrics.joins.get();
                let elapsed = last.0.elapsed().as_secs_f64().max(1e-3);
                let sample = Sample {
                    at_ms: unix_ms(),
                    sockets: st.metrics.sockets.get(),
                    joins_per_s: joins.saturating_sub(last.1) as f64 / elapsed,
                };
                last = (Instant::now(), joins);
                let mut history = st.dashboard.history.lock().unwrap_or_else(|e| e.into_inner());
                if history.len() == HISTORY_LEN {
                    history.pop_front();
                }
                history.push_back(sample);
            }
            () = st.dashboard.wake.notified() => {
                if built.is_some_and(|b| b.elapsed() < REBUILD_AT_MOST_EVERY) {
                    continue;
                }
            }
        }
        if st.dashboard.snapshots.receiver_count() > 0 {
            built = Some(Instant::now());
            let snapshot = snapshot(&st).await;
            st.dashboard.snapshots.send_replace(Arc::new(snapshot));
        }
    }
}

/// This node's view of the cluster, as the page renders it.
async fn snapshot(st: &AppState) -> Value {
    let node = &st.node;
    let config = node.config();
    let partitions = config.cluster.partitions as usize;
    let status = node.status().await.ok();
    let links = node.links();
    // One row per configured node, in config order; the ring names holders by row index.
    let mut ring: Vec<Option<usize>> = vec![None; partitions];
    let mut rows = Vec::new();
    for (i, n) in config.cluster.nodes.iter().enumerate() {
        let me = n.name == *node.name();
        let peer = status.as_ref().and_then(|s| s.peers.iter().find(|p| p.name == n.name));
        let held: Vec<usize> = if me {
            status.iter().flat_map(|s| s.leases.iter().map(|(p, _, _)| p.0 as usize)).collect()
        } else {
            peer.iter().flat_map(|p| p.partitions.iter().map(|p| p.0 as usize)).collect()
        };
        for &p in &held {
            if let Some(slot) = ring.get_mut(p) {
                *slot = Some(i);
            }
        }
        let link = links.iter().find(|l| l.peer == n.name);
        rows.push(json!({
            "name": n.name.as_str(),
            "http_addr": n.http_addr,
            "self": me,
            "alive": if me { status.is_some() } else { peer.is_some_and(|p| p.alive) },
            "link": match (me, link) {
                (true, _) => "self",
                (false, Some(l)) if l.up => "up",
                (false, Some(_)) => "down",
                (false, None) => "none",
            },
            "incarnation": if me {
                Some(node.incarnation().to_string())
            } else {
                peer.and_then(|p| p.incarnation.as_ref().map(|i| i.to_string()))
            },
            "last_heartbeat_ms_ago": peer.and_then(|p| p.last_heartbeat_ago_ms),
            "alive_for_ms": peer.and_then(|p| p.alive_for_ms),
            "partitions": held.len(),
        }));
    }
    let revokes: Vec<Value> = {
        let revokes = st.dashboard.revokes.lock().unwrap_or_else(|e| e.into_inner());
        revokes
            .iter()
            .rev()
            .map(|r| json!({"at_ms": r.at_ms, "user": r.user, "topic": r.topic, "reason": r.reason}))
            .collect()
    };
    let history: Vec<Sample> = st.dashboard.history.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
    json!({
        "node": node.name().as_str(),
        "incarnation": node.incarnation().to_string(),
        "ready": status.as_ref().is_some_and(|s| s.ready),
        "demo": config.server.demo,
        "at_ms": unix_ms(),
        "nodes": rows,
        "ring": ring,
        "counts": status.as_ref().map(|s| json!({
            "sockets": s.counts.sockets,
            "slots": s.counts.gateway_slots,
            "home_users": s.counts.home_users,
            "waiting_joins": s.counts.waiting_joins,
            "presence_entries": s.counts.presence_entries,
        })),
        "topics": topics(node.topics()),
        "revokes": revokes,
        "history": {
            "interval_ms": SAMPLE_EVERY.as_millis() as u64,
            "capacity": HISTORY_LEN,
            "at_ms": history.iter().map(|s| s.at_ms).collect::<Vec<_>>(),
            "sockets": history.iter().map(|s| s.sockets).collect::<Vec<_>>(),
            "joins_per_s": history.iter().map(|s| (s.joins_per_s * 10.0).round() / 10.0).collect::<Vec<_>>(),
        },
    })
}

/// The busiest topics (by signed-in users, then anonymous viewers) and how many there are.
fn topics(all: Vec<(roster_core::Topic, Arc<PresenceList>)>) -> Value {
    let total = all.len();
    let mut counted: Vec<(String, usize, usize, usize)> = all
        .iter()
        .map(|(topic, list)| {
            let users = list.keys().filter(|k| *k != UserId::ANONYMOUS).count();
            let tabs = list.keys().filter(|k| *k != UserId::ANONYMOUS).map(|k| list.metas_len(k)).sum();
            (topic.as_str().to_owned(), users, tabs, anonymous_count(list))
        })
        .collect();
    counted.sort_by(|a, b| (b.1, b.3, &a.0).cmp(&(a.1, a.3, &b.0)));
    counted.truncate(TOPICS_SHOWN);
    let shown: Vec<Value> = counted
        .into_iter()
        .map(|(topic, users, tabs, anonymous)| json!({"topic": topic, "users": users, "tabs": tabs, "anonymous": anonymous}))
        .collect();
    json!({"total": total, "shown": shown})
}

/// Anonymous viewers of a list: the count meta's `count` (`anonymous = "count"`), else one
/// meta each (`"list"`).
fn anonymous_count(list: &PresenceList) -> usize {
    let metas = list.get(UserId::ANONYMOUS).unwrap_or_default();
    match metas.as_slice() {
        [only] => match only.get("count") {
            Some(roster_core::MetaValue::Int(n)) => usize::try_from(*n).unwrap_or(0),
            _ => 1,
        },
        many => many.len(),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `/dashboard`: the page (its script and styles are under `/assets`).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/dashboard", get(page))
}

async fn page() -> impl IntoResponse {
    crate::assets::html(crate::assets::DASHBOARD_HTML)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_in_full() {
        assert!(same_key("k3y", "k3y"));
        assert!(!same_key("k3y", "k3z") && !same_key("k3", "k3y") && !same_key("", "k"));
    }

    #[test]
    fn revokes_keep_the_latest_fifty() {
        let d = Dashboard::new();
        for i in 0..60 {
            d.revoked(Some(&UserId::from(format!("u{i}").as_str())), "room:1", "logged_in_elsewhere");
        }
        let revokes = d.revokes.lock().unwrap();
        assert_eq!(revokes.len(), REVOKES_KEPT);
        assert_eq!(revokes.front().and_then(|r| r.user.clone()).as_deref(), Some("u10"));
    }
}
