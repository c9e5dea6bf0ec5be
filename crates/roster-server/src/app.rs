//! The HTTP side of a node: the router (`/socket/websocket`, `/health`, `/ready`, `/cluster`,
//! `/metrics`, the backend API `/presence`, `/slot`, `/kick`, `/user` behind the `api_key`, and the
//! built-in pages: `/dashboard`, and `/` in demo mode), and
//! [`serve`], which runs it on a listener the caller bound until a shutdown future resolves.

use crate::dashboard::Dashboard;
use crate::frame::written_exactly;
use crate::limits::SocketLimits;
use crate::metrics::Metrics;
use crate::socket;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use roster_core::{OpenEndpoint, PresenceList, SlotToken, Topic, UserId};
use roster_runtime::Node;
use serde::Deserialize;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;

/// What every request handler shares.
pub struct AppState {
    /// The node this server fronts.
    pub node: Node,
    /// The HMAC key of client tokens.
    pub secret: Vec<u8>,
    /// The bearer key of the backend API; empty: the API is off.
    pub api_key: String,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// What `/dashboard` shows that the node does not keep: recent revokes, the chart.
    pub dashboard: Dashboard,
    /// Open connections and sockets, against the `[server]` limits.
    pub(crate) limits: Arc<SocketLimits>,
    /// The allocator's own figures for `/metrics`, when the application gave a probe.
    allocator: Option<AllocatorProbe>,
}

/// What the process's allocator says of itself, read at each scrape of `/metrics` and shown as
/// `roster_allocator_bytes{kind="..."}`: `(kind, bytes)` pairs, none when it could not read
/// them. The library does not know the allocator (the application sets it): the `roster`
/// binary hands one for its jemalloc (`allocated`, `active`, `resident`, `metadata`, `mapped`,
/// `retained`, `tcache`), an embedding application may hand its own, and without one
/// `/metrics` shows no `roster_allocator_bytes` at all.
pub type AllocatorProbe = Arc<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

impl AppState {
    /// The state of a server fronting `node`, checking tokens with `secret` and the backend API
    /// with `api_key` (empty: the API is off), with fresh counters.
    pub fn new(node: Node, secret: Vec<u8>, api_key: String) -> AppState {
        let limits = SocketLimits::new(&node.config().server);
        AppState {
            node,
            secret,
            api_key,
            metrics: Metrics::new(),
            dashboard: Dashboard::new(),
            limits,
            allocator: None,
        }
    }

    /// The same state, whose `/metrics` shows what `probe` reads at each scrape.
    pub fn with_allocator_probe(mut self, probe: AllocatorProbe) -> AppState {
        self.metrics.register_allocator();
        self.allocator = Some(probe);
        self
    }
}

/// The longest reason `POST /kick` takes, in bytes: it is sent to every revoked channel.
const MAX_KICK_REASON_BYTES: usize = 256;

/// The router of one node. [`serve`] runs it behind the connection limits and the HTTP
/// timeouts of `[server]`; served any other way, those do not apply.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/socket/websocket", get(socket::upgrade))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics))
        .route("/presence", get(presence))
        .route("/slot", get(slot))
        .route("/kick", post(kick))
        .route("/user", get(crate::user_api::user))
        .merge(crate::demo::routes(state.node.config().server.demo))
        .merge(crate::dashboard::routes())
        .merge(crate::assets::routes())
        .with_state(state)
}

/// Serve `router(state)` on `listener` until `shutdown` resolves, then stop accepting; open
/// WebSockets end when the node closes their connections. Every connection is admitted against
/// the `[server]` socket limits and served with its header-read and request timeouts: see
/// `connections.rs`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sampler = tokio::spawn(crate::dashboard::run(state.clone()));
    let served = crate::connections::serve(listener, state, shutdown).await;
    sampler.abort();
    served
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    if st.node.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: start-up waits are not over, or this node hears no majority of the cluster",
        )
            .into_response()
    }
}

async fn cluster(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = ops_refusal(&st, &headers, OpenEndpoint::Cluster) {
        return r;
    }
    let links = st.node.links();
    match st.node.status().await {
        Ok(s) => Json(json!({
            "node": s.name.as_str(),
            "incarnation": s.incarnation,
            "ready": s.ready,
            "all_partitions_homed": s.all_homed,
            "peers": s.peers.iter().map(|p| {
                let link = links.iter().find(|l| l.peer == p.name);
                json!({
                    "name": p.name.as_str(),
                    "link": match link { Some(l) if l.up => "up", Some(_) => "down", None => "none" },
                    "link_since_ms": link.map(|l| l.since_ms),
                    "dials": link.map(|l| l.dialer),
                    "sessions": link.map(|l| l.sessions),
                    "alive": p.alive,
                    "incarnation": p.incarnation.as_ref().map(|i| i.to_string()),
                    "last_heartbeat_ms_ago": p.last_heartbeat_ago_ms,
                    "alive_for_ms": p.alive_for_ms,
                })
            }).collect::<Vec<_>>(),
            "partitions_held": s.leases.len(),
            "leases": s.leases.iter().map(|(p, epoch, expires_in_ms)| json!({
                "partition": p.0, "epoch": epoch, "expires_in_ms": expires_in_ms,
            })).collect::<Vec<_>>(),
            "counts": {
                "home_users": s.counts.home_users,
                "slots": s.counts.gateway_slots,
                "waiting_joins": s.counts.waiting_joins,
                "sockets": s.counts.sockets,
                "presence_entries": s.counts.presence_entries,
            },
        }))
        .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "node not running").into_response(),
    }
}

async fn metrics(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = ops_refusal(&st, &headers, OpenEndpoint::Metrics) {
        return r;
    }
    st.metrics.connections.set(i64::from(st.limits.open_connections()));
    if let Ok(s) = st.node.status().await {
        st.metrics.presence_entries.set(s.counts.presence_entries as i64);
        st.metrics.slots.set(s.counts.gateway_slots as i64);
        st.metrics.cluster_peers_alive.set(s.peers.iter().filter(|p| p.alive).count() as i64);
    }
    st.metrics.cluster_links_up.set(st.node.links().iter().filter(|l| l.up).count() as i64);
    if let Some(probe) = &st.allocator {
        st.metrics.set_allocator(&probe());
    }
    if let Some(c) = st.node.link_counters() {
        for (reason, value) in c.all() {
            Metrics::catch_up(&st.metrics.cluster_link, reason, value);
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], st.metrics.render()).into_response()
}

/// `/cluster` and `/metrics` need the `api_key` like the backend API, unless `[auth]
/// open_endpoints` lists them. `Some(response)` refuses the request.
fn ops_refusal(st: &AppState, headers: &HeaderMap, endpoint: OpenEndpoint) -> Option<Response> {
    if st.node.config().auth.open_endpoints.contains(&endpoint) {
        return None;
    }
    refusal(st, headers)
}

/// The backend API needs `Authorization: Bearer <api_key>`; with no key configured it is off.
/// `Some(response)` refuses the request.
pub(crate) fn refusal(st: &AppState, headers: &HeaderMap) -> Option<Response> {
    if st.api_key.is_empty() {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "the API is off: set [auth] api_key or ROSTER_API_KEY (or list /cluster and /metrics in [auth] \
                 open_endpoints)",
            )
                .into_response(),
        );
    }
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison of the key.
    let ok = given.is_some_and(|g| {
        g.len() == st.api_key.len() && g.bytes().zip(st.api_key.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    (!ok).then(|| (StatusCode::UNAUTHORIZED, Json(json!({"reason": "unauthorized"}))).into_response())
}

#[derive(Deserialize)]
struct PresenceQuery {
    topic: String,
}

async fn presence(State(st): State<Arc<AppState>>, headers: HeaderMap, Query(q): Query<PresenceQuery>) -> Response {
    if let Some(r) = refusal(&st, &headers) {
        return r;
    }
    let list = st.node.presence(Topic::from(q.topic)).current().await;
    ([(header::CONTENT_TYPE, "application/json")], presence_json(&list)).into_response()
}

/// `/presence`'s answer: the list's JSON, written straight from the list into one buffer of
/// its exact size (no JSON value of the whole list is built first: that was 10 allocations
/// per presence, made and freed, for every read).
fn presence_json(list: &PresenceList) -> Bytes {
    written_exactly(|out| {
        // A presence list always serializes.
        let _ = serde_json::to_writer(out, list);
    })
}

#[derive(Deserialize)]
struct SlotQuery {
    user: String,
    topic: String,
    token: String,
}

async fn slot(State(st): State<Arc<AppState>>, headers: HeaderMap, Query(q): Query<SlotQuery>) -> Response {
    if let Some(r) = refusal(&st, &headers) {
        return r;
    }
    let Ok(token) = q.token.parse::<SlotToken>() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"reason": "bad_request", "detail": "token is \"<epoch>.<generation>\""})),
        )
            .into_response();
    };
    match st.node.validate(&UserId::from(q.user), &Topic::from(q.topic), token).await {
        Some(valid) => Json(json!({ "valid": valid })).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"reason": "no_quorum"}))).into_response(),
    }
}

#[derive(Deserialize)]
struct KickBody {
    user: String,
    topic: Option<String>,
    reason: Option<String>,
}

async fn kick(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<KickBody>, JsonRejection>,
) -> Response {
    if let Some(r) = refusal(&st, &headers) {
        return r;
    }
    // Every malformed body (none, not JSON, no `user`) is one documented 400, not axum's
    // plain-text 400/415/422.
    let Ok(Json(k)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"reason": "bad_request", "detail": "the body is JSON {\"user\", \"topic\"?, \"reason\"?}"})),
        )
            .into_response();
    };
    let reason = k.reason.unwrap_or_else(|| "kicked".into());
    if reason.len() > MAX_KICK_REASON_BYTES {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"reason": "bad_request", "detail": format!("reason is over {MAX_KICK_REASON_BYTES} bytes")})),
        )
            .into_response();
    }
    st.metrics.kicks.inc();
    st.node.kick(UserId::from(k.user), k.topic.map(Topic::from), reason);
    (StatusCode::ACCEPTED, Json(json!({"status": "ok"}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_core::{AnonymousView, Incarnation, Meta, MetaValue, PhxRef, PresenceTable, SocketId};

    #[test]
    fn the_presence_answer_is_the_text_of_the_lists_json_value() {
        let mut table = PresenceTable::new(Incarnation::new("a", 1));
        let room = Topic::from("room:\"1\"");
        let meta =
            |pairs: &[(&str, MetaValue)]| -> Meta { pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect() };
        // User keys around and on the reserved ones, nested values, floats, text to escape.
        let user = meta(&[
            ("a", MetaValue::Str("é \"q\"\n".into())),
            ("node", MetaValue::Str("forged".into())),
            ("p", MetaValue::Float(1.5)),
            ("tabs", MetaValue::Map(meta(&[("z", MetaValue::Null), ("b", MetaValue::Bool(true))]))),
            ("zzz", MetaValue::List(vec![MetaValue::Int(-3), MetaValue::Float(1e300)])),
        ]);
        let joins = [
            ("u2", Some("t1"), user.clone()),
            ("u1", None, Meta::new()),
            ("u2", None, user),
            ("anonymous", None, Meta::new()),
        ];
        for (n, (key, tab, m)) in joins.into_iter().enumerate() {
            let n = n as u64 + 1;
            table.track(room.clone(), key, SocketId(n), tab.map(Into::into), m, 1000 * n, PhxRef::from_number(n));
        }
        for view in [AnonymousView::List, AnonymousView::Count] {
            for list in [table.list(&room, view), table.list(&Topic::from("room:none"), view)] {
                let before = serde_json::to_vec(&serde_json::to_value(&list).unwrap()).unwrap();
                assert_eq!(presence_json(&list), before, "{view:?}");
            }
        }
        assert!(presence_json(&table.list(&room, AnonymousView::List)).len() > 300);
    }

    /// `/metrics` of a server over a node of its own, scraped `scrapes` times with the key.
    async fn scrape(test: &str, probe: Option<AllocatorProbe>, scrapes: usize) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!("roster-app-{}-{test}", std::process::id()));
        let node = Node::start(roster_runtime::NodeOptions::single().data_dir(&dir)).await.expect("a node starts");
        let mut state = AppState::new(node.clone(), b"s".to_vec(), "k".to_owned());
        if let Some(probe) = probe {
            state = state.with_allocator_probe(probe);
        }
        let state = Arc::new(state);
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer k".parse().unwrap());
        let mut bodies = Vec::new();
        for _ in 0..scrapes {
            let response = metrics(State(state.clone()), headers.clone()).await;
            assert_eq!(response.status(), StatusCode::OK);
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            bodies.push(String::from_utf8(body.to_vec()).unwrap());
        }
        node.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
        bodies
    }

    #[tokio::test]
    async fn without_a_probe_metrics_show_no_allocator_figures() {
        let bodies = scrape("no-probe", None, 1).await;
        assert!(bodies[0].contains("roster_sockets "), "{}", bodies[0]);
        assert!(!bodies[0].contains("allocator"), "{}", bodies[0]);
    }

    #[tokio::test]
    async fn a_probe_is_read_at_each_scrape_and_shown_by_kind() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let reads = Arc::new(AtomicU64::new(0));
        let counted = reads.clone();
        // The second read fails to give `active`: its sample goes rather than stays stale.
        let probe: AllocatorProbe = Arc::new(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            let mut figures = vec![("allocated", 1000 * n)];
            if n == 1 {
                figures.push(("active", 4096));
            }
            figures
        });
        let bodies = scrape("probe", Some(probe), 2).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // In no particular order (the family is a map).
        let samples = |body: &str| -> Vec<String> {
            let mut lines: Vec<String> =
                body.lines().filter(|l| l.starts_with("roster_allocator_bytes")).map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(
            samples(&bodies[0]),
            ["roster_allocator_bytes{kind=\"active\"} 4096", "roster_allocator_bytes{kind=\"allocated\"} 1000"]
        );
        assert_eq!(samples(&bodies[1]), ["roster_allocator_bytes{kind=\"allocated\"} 2000"]);
        assert!(bodies[0].contains("# TYPE roster_allocator_bytes gauge"), "{}", bodies[0]);
    }
}
