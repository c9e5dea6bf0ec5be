//! `/socket/websocket`: one Phoenix Channels v2 socket.
//!
//! The upgrade checks `Origin` (when `allowed_origins` is set) and reads the token from the
//! `token` query parameter or the `base64url.bearer.phx.<base64url(token)>` subprotocol,
//! echoing `phoenix` when offered. No token: an anonymous viewer. A bad token: the socket
//! opens, but every join is answered `unauthorized` (the client sees why).
//!
//! Each socket is one runtime [`Connection`](roster_runtime::Connection). One task reads frames, writes frames, pings, and
//! turns the connection's events into `slot_revoked`/`phx_close`/`presence_diff`/broadcasts;
//! joins run as their own futures (a join may wait for a slot) and come back to it, so a
//! join's reply, then its `presence_state`, always precede the topic's diffs. While a write to
//! the client is blocked, the task keeps taking the connection's events: more than
//! `outbound_queue` frames piling up (or a write blocked for two pings) closes the socket with
//! 1013 at once, so a stalled client is neither buffered for nor left holding its presence.

use crate::app::AppState;
use crate::dashboard::{self, AdminFeed};
use crate::frame::{Frame, ReplyStatus, PHOENIX_TOPIC};
use crate::guard::{self, Counter, Refusal, SocketGuard};
use crate::limits::{ConnectionPermit, UserPermit};
use crate::meta_json::{meta_from_json, meta_value_from_json, meta_value_to_json};
use crate::metrics::Metrics;
use crate::token::{verify_at, Claims};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use roster_core::{Meta, Role, TabId, Topic, UserId};
use roster_runtime::{CloseReason, ConnEvent, Connection, ConnectionHandle, JoinError, Joined, PushError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Close codes (RFC 6455 and IANA registry).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_INTERNAL: u16 = 1011;
const CLOSE_RESTART: u16 = 1012;
const CLOSE_TRY_AGAIN: u16 = 1013;

const BEARER_PREFIX: &str = "base64url.bearer.phx.";

/// The longest topic or `tab_id` a join may carry (longer: `bad_request`).
const MAX_ID_BYTES: usize = 256;

#[derive(Deserialize)]
pub(crate) struct SocketQuery {
    token: Option<String>,
    vsn: Option<String>,
}

/// Who the socket's token says it is.
enum Auth {
    Anonymous,
    User(Claims),
    /// A token was given and refused: joins answer `unauthorized`.
    Refused,
}

/// The HTTP upgrade: Origin, version, token; then [`run`].
pub(crate) async fn upgrade(
    State(st): State<Arc<AppState>>,
    Query(q): Query<SocketQuery>,
    headers: HeaderMap,
    connection: Option<Extension<Arc<ConnectionPermit>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let server = &st.node.config().server;
    if !server.allowed_origins.is_empty() {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !server.allowed_origins.iter().any(|o| o == origin) {
            st.metrics.refused_origins.inc();
            tracing::info!(origin, "socket refused: Origin not in allowed_origins");
            return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
        }
    }
    if q.vsn.as_deref().is_some_and(|v| !v.starts_with("2.")) {
        return (StatusCode::BAD_REQUEST, "only the Phoenix serializer vsn=2.0.0 is spoken here").into_response();
    }
    let token = q.token.or_else(|| subprotocol_token(&headers));
    let auth = match token {
        None => Auth::Anonymous,
        Some(t) => {
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            match verify_at(&st.secret, &t, now_ms, st.node.config().auth.token_leeway_ms) {
                Ok(c) => Auth::User(c),
                Err(e) => {
                    Metrics::inc(&st.metrics.bad_tokens, e.kind());
                    tracing::info!(error = %e, "token refused: joins on this socket answer unauthorized");
                    Auth::Refused
                }
            }
        }
    };
    // Limits: the permits travel with the socket and give their places back when it ends.
    let user_permit = match &auth {
        Auth::User(c) => match st.limits.admit_user(&c.sub) {
            Ok(permit) => Some(permit),
            Err(refusal) => return crate::connections::refuse_upgrade(&st, refusal, c.sub.as_str()),
        },
        _ => None,
    };
    let permits = (connection.map(|Extension(p)| p), user_permit);
    let frame_limit = server.max_frame_bytes as usize;
    // The transport accepts up to twice the limit, so that a message just over it is seen,
    // counted and answered with 1009 here. A WebSocket frame announcing more is refused by the
    // WebSocket library from its header, before its payload is buffered (its default would
    // reserve up to 16 MiB for it), and answered with 1009 as well.
    let transport_limit = frame_limit.saturating_mul(2);
    ws.protocols(["phoenix"])
        .max_message_size(transport_limit)
        .max_frame_size(transport_limit)
        .on_upgrade(move |socket| run(st, socket, auth, permits))
}

/// phoenix.js sends `base64url.bearer.phx.` + base64url(token) (unpadded) as a subprotocol.
fn subprotocol_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(BEARER_PREFIX))
        .and_then(|b| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b.trim_end_matches('=')).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// A channel of this socket.
struct Channel {
    join_ref: Option<String>,
    joined: bool,
    /// Events that arrived before the join's reply went out.
    held: Vec<ConnEvent>,
}

/// What a join future reports back.
struct JoinDone {
    topic: String,
    join_ref: Option<String>,
    msg_ref: Option<String>,
    result: Result<Joined, JoinError>,
}

/// One socket's state in its task.
struct SocketTask {
    st: Arc<AppState>,
    handle: ConnectionHandle,
    auth_refused: bool,
    anonymous: bool,
    channels: HashMap<String, Channel>,
    joins: mpsc::UnboundedSender<JoinDone>,
    out: Vec<Message>,
    /// Push rate limit: pushes counted in the current one-second window.
    window: (Instant, u32),
    /// Kinds of refusal already logged on this socket (logged once, counted always).
    logged: HashSet<&'static str>,
    /// The signed-in user (for the dashboard's list of revokes).
    user: Option<UserId>,
    /// The dashboard's admin topic, when joined.
    admin: Option<AdminFeed>,
    /// Joins and leaves per second, metas, the token's topics and expiry.
    guard: SocketGuard,
}

/// The socket's places in the connection and user limits, held until it ends.
type Permits = (Option<Arc<ConnectionPermit>>, Option<UserPermit>);

async fn run(st: Arc<AppState>, ws: WebSocket, auth: Auth, _permits: Permits) {
    let server = st.node.config().server.clone();
    let (claims, refused) = match auth {
        Auth::Anonymous => (None, false),
        Auth::User(c) => (Some(c), false),
        Auth::Refused => (None, true),
    };
    let guard = SocketGuard::new(&server, claims.clone(), st.node.config().auth.token_leeway_ms, Instant::now());
    let (user, role): (Option<UserId>, Option<Role>) = claims.map(|c| (c.sub, c.role)).unzip();
    let anonymous = user.is_none();
    let Ok(mut conn) = st.node.connect(user.clone(), role, server.outbound_queue as usize).await else {
        let mut ws = ws;
        let _ = ws.send(close(CLOSE_RESTART, "node not running")).await;
        return;
    };
    st.metrics.sockets.inc();
    st.metrics.sockets_opened.inc();
    let (mut sink, mut stream) = ws.split();
    let (joins_tx, mut joins_rx) = mpsc::unbounded_channel();
    let mut task = SocketTask {
        handle: conn.handle(),
        st: st.clone(),
        auth_refused: refused,
        anonymous,
        channels: HashMap::new(),
        joins: joins_tx,
        out: Vec::new(),
        window: (Instant::now(), 0),
        logged: HashSet::new(),
        user,
        admin: None,
        guard,
    };
    let token_expiry = guard::expiry(task.guard.expires_at());
    tokio::pin!(token_expiry);
    let ping_every = Duration::from_millis(server.ping_ms);
    let send_timeout = ping_every * 2;
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut last_seen = Instant::now();
    let frame_limit = server.max_frame_bytes as usize;
    let queue_cap = server.outbound_queue as usize;
    let mut clean = false;
    let mut final_close: Option<Message> = None;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    last_seen = Instant::now();
                    if text.len() > frame_limit {
                        task.refuse("too_large", "frame over max_frame_bytes");
                        final_close = Some(close(CLOSE_TOO_BIG, "frame too large"));
                        break;
                    }
                    task.on_text(text.as_str()).await;
                }
                Some(Ok(Message::Binary(_))) => {
                    last_seen = Instant::now();
                    task.refuse("binary", "binary frames are not spoken here");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => last_seen = Instant::now(),
                Some(Ok(Message::Close(_))) => {
                    clean = true;
                    break;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "socket read error");
                    if e.to_string().contains("too long") || e.to_string().contains("too big") {
                        task.refuse("too_large", "frame over the transport limit");
                        final_close = Some(close(CLOSE_TOO_BIG, "frame too large"));
                    }
                    break;
                }
                None => break,
            },
            event = conn.recv() => match event {
                Some(e) => task.on_event(e),
                None => {
                    final_close = Some(task.on_connection_end(conn.close_reason()));
                    break;
                }
            },
            Some(done) = joins_rx.recv() => task.on_join_done(done),
            (join_ref, snapshot) = dashboard::next_snapshot(&mut task.admin) => {
                task.send(Frame::push(join_ref, dashboard::ADMIN_TOPIC, dashboard::SNAPSHOT_EVENT, (*snapshot).clone()));
            }
            () = &mut token_expiry => {
                final_close = Some(task.on_token_expired());
                clean = true;
                break;
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > ping_every * 2 {
                    st.metrics.ping_timeouts.inc();
                    tracing::info!("socket closed: no answer to pings");
                    break;
                }
                task.out.push(Message::Ping(Vec::new().into()));
            }
            // Frames taken from the connection during the last write: write them next.
            () = std::future::ready(()), if !task.out.is_empty() => {}
        }
        if !task.out.is_empty() {
            match write_queued(&mut sink, &mut task, &mut conn, send_timeout, queue_cap).await {
                Written::All => {}
                Written::Failed => break,
                Written::TooSlow => {
                    // Never buffer for a client that does not read: close it, and say why.
                    st.metrics.slow_clients.inc();
                    tracing::info!(queue_cap, "slow client closed: its frames piled up while a write was blocked");
                    final_close = Some(close(CLOSE_TRY_AGAIN, "slow client: outbound queue full"));
                    break;
                }
                Written::ConnectionEnded => {
                    final_close = Some(task.on_connection_end(conn.close_reason()));
                    break;
                }
            }
        }
    }
    let reason = conn.close_reason();
    conn.close(clean);
    let last =
        final_close.or_else(|| (reason == CloseReason::Shutdown).then(|| close(CLOSE_RESTART, "node shutting down")));
    // Frames still queued (phx_error for a failed connection), then the close: best effort.
    let pending = std::mem::take(&mut task.out);
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        for m in pending.into_iter().chain(last) {
            sink.feed(m).await?;
        }
        sink.flush().await?;
        sink.close().await
    })
    .await;
    st.metrics.sockets.dec();
}

/// How [`write_queued`] ended.
enum Written {
    /// Every queued frame was written.
    All,
    /// The socket failed (the client is gone).
    Failed,
    /// A write stayed blocked for `send_timeout`, or more than `queue_cap` frames piled up
    /// behind it: the client does not read fast enough.
    TooSlow,
    /// The runtime ended the connection (see [`SocketTask::on_connection_end`]).
    ConnectionEnded,
}

/// Write the queued frames. While the write is blocked (the client reads slowly or not at
/// all), keep taking the connection's events into the queue, so that a stalled socket is
/// detected here, at once, by the frames piling up (`queue_cap`, the config's
/// `outbound_queue`), rather than after `send_timeout` with this task stuck in the write.
async fn write_queued(
    sink: &mut SplitSink<WebSocket, Message>,
    task: &mut SocketTask,
    conn: &mut Connection,
    send_timeout: Duration,
    queue_cap: usize,
) -> Written {
    let batch = std::mem::take(&mut task.out);
    let write = async {
        for m in batch {
            sink.feed(m).await?;
        }
        sink.flush().await
    };
    tokio::pin!(write);
    let deadline = tokio::time::sleep(send_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            written = &mut write => return if written.is_ok() { Written::All } else { Written::Failed },
            () = &mut deadline => return Written::TooSlow,
            event = conn.recv() => match event {
                Some(e) => {
                    task.on_event(e);
                    if task.out.len() > queue_cap {
                        return Written::TooSlow;
                    }
                }
                None => return Written::ConnectionEnded,
            },
        }
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.to_owned().into() }))
}

/// The `phx_join` payload: `{"tab_id": "...", "meta": {...}}`, both optional.
fn parse_join(payload: &Value) -> Option<(Option<TabId>, Meta)> {
    let obj = match payload {
        Value::Null => return Some((None, Meta::new())),
        Value::Object(o) => o,
        _ => return None,
    };
    let tab = match obj.get("tab_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_BYTES => Some(TabId::from(s.as_str())),
        Some(_) => return None,
    };
    let meta = match obj.get("meta") {
        None | Some(Value::Null) => Meta::new(),
        Some(v) => meta_from_json(v).ok()?,
    };
    Some((tab, meta))
}

impl SocketTask {
    fn send(&mut self, frame: Frame) {
        self.out.push(Message::Text(frame.encode().into()));
    }

    fn reply(&mut self, f: &Frame, status: ReplyStatus, response: Value) {
        self.send(Frame::reply(f.join_ref.clone(), f.msg_ref.clone(), f.topic.clone(), status, response));
    }

    fn reply_error(&mut self, f: &Frame, reason: &'static str) {
        self.reply(f, ReplyStatus::Error, json!({ "reason": reason }));
    }

    /// Count a refusal; log it once per socket.
    fn refuse(&mut self, kind: &'static str, what: &str) {
        Metrics::inc(&self.st.metrics.bad_frames, kind);
        if self.logged.insert(kind) {
            tracing::info!(kind, what, "bad input on a socket (further ones counted, not logged)");
        }
    }

    async fn on_text(&mut self, text: &str) {
        let frame = match Frame::parse(text) {
            Ok(f) => f,
            Err(e) => {
                self.refuse(e.kind(), &e.to_string());
                return;
            }
        };
        let member = self.channels.contains_key(&frame.topic);
        if let Err(refusal) = self.guard.check(&frame, member, Instant::now()) {
            return self.refuse_frame(&frame, refusal);
        }
        match (frame.topic.as_str(), frame.event.as_str()) {
            (PHOENIX_TOPIC, "heartbeat") => self.reply(&frame, ReplyStatus::Ok, json!({})),
            (dashboard::ADMIN_TOPIC, "phx_join" | "phx_leave") => self.on_admin(frame),
            (_, "phx_join") => self.on_join(frame),
            (_, "phx_leave") => self.on_leave(frame),
            (_, event) => {
                let event = event.to_owned();
                self.on_push(frame, event).await
            }
        }
    }

    fn on_join(&mut self, f: Frame) {
        if self.auth_refused {
            Metrics::inc(&self.st.metrics.join_rejects, "unauthorized");
            return self.reply_error(&f, "unauthorized");
        }
        if f.topic.is_empty() || f.topic == PHOENIX_TOPIC {
            Metrics::inc(&self.st.metrics.join_rejects, "forbidden_topic");
            return self.reply_error(&f, "forbidden_topic");
        }
        if f.topic.len() > MAX_ID_BYTES {
            Metrics::inc(&self.st.metrics.join_rejects, "bad_request");
            return self.reply_error(&f, "bad_request");
        }
        let Some((tab, meta)) = parse_join(&f.payload) else {
            Metrics::inc(&self.st.metrics.join_rejects, "bad_request");
            self.refuse("bad_join_payload", "phx_join payload is not {tab_id?: string, meta?: object}");
            return self.reply_error(&f, "bad_request");
        };
        if self.channels.contains_key(&f.topic) {
            Metrics::inc(&self.st.metrics.join_rejects, "already_joined");
            return self.reply_error(&f, "already_joined");
        }
        self.channels
            .insert(f.topic.clone(), Channel { join_ref: f.join_ref.clone(), joined: false, held: Vec::new() });
        let handle = self.handle.clone();
        let tx = self.joins.clone();
        tokio::spawn(async move {
            let result = handle.join(Topic::from(f.topic.as_str()), tab, meta).await;
            let _ = tx.send(JoinDone { topic: f.topic, join_ref: f.join_ref, msg_ref: f.msg_ref, result });
        });
    }

    fn on_join_done(&mut self, done: JoinDone) {
        let current = self.channels.get(&done.topic).is_some_and(|c| c.join_ref == done.join_ref && !c.joined);
        let frame =
            Frame::reply(done.join_ref.clone(), done.msg_ref.clone(), done.topic.clone(), ReplyStatus::Ok, json!({}));
        match done.result {
            Ok(joined) if current => {
                self.st.metrics.joins.inc();
                let slot = joined.token.map_or(Value::Null, |t| json!({ "token": t.to_string() }));
                self.reply(&frame, ReplyStatus::Ok, json!({ "slot": slot }));
                let state = serde_json::to_value(&*joined.state).unwrap_or_else(|_| json!({}));
                self.send(Frame::push(done.join_ref.clone(), done.topic.clone(), "presence_state", state));
                let held = self.channels.get_mut(&done.topic).map(|c| {
                    c.joined = true;
                    std::mem::take(&mut c.held)
                });
                for e in held.unwrap_or_default() {
                    self.on_event(e);
                }
            }
            // Left while the join waited: the join is undone.
            Ok(_) => self.handle.leave(Topic::from(done.topic.as_str())),
            Err(e) => {
                Metrics::inc(&self.st.metrics.join_rejects, e.reason());
                if current {
                    self.channels.remove(&done.topic);
                    self.reply(&frame, ReplyStatus::Error, json!({ "reason": e.reason() }));
                }
            }
        }
    }

    /// The dashboard's topic: a feed of snapshots, not a presence topic (`dashboard.rs`).
    fn on_admin(&mut self, f: Frame) {
        if f.event == "phx_leave" {
            self.admin = None;
            self.reply(&f, ReplyStatus::Ok, json!({}));
            return self.send(Frame::close(f.join_ref.clone(), f.topic.clone()));
        }
        match dashboard::join(&self.st, &f.payload, f.join_ref.clone()) {
            Ok(feed) => {
                self.admin = Some(feed);
                self.reply(&f, ReplyStatus::Ok, json!({}));
            }
            Err(reason) => {
                Metrics::inc(&self.st.metrics.join_rejects, reason);
                self.reply_error(&f, reason);
            }
        }
    }

    fn on_leave(&mut self, f: Frame) {
        if self.channels.remove(&f.topic).is_some() {
            self.handle.leave(Topic::from(f.topic.as_str()));
        }
        self.reply(&f, ReplyStatus::Ok, json!({}));
        self.send(Frame::close(f.join_ref.clone(), f.topic.clone()));
    }

    async fn on_push(&mut self, f: Frame, event: String) {
        if !self.channels.get(&f.topic).is_some_and(|c| c.joined) {
            self.refuse("not_joined", "push to a topic the socket has not joined");
            return self.reply_error(&f, "bad_request");
        }
        if self.anonymous {
            Metrics::inc(&self.st.metrics.join_rejects, "push_unauthorized");
            return self.reply_error(&f, "unauthorized");
        }
        let limit = self.st.node.config().server.max_pushes_per_second;
        if self.window.0.elapsed() >= Duration::from_secs(1) {
            self.window = (Instant::now(), 0);
        }
        self.window.1 += 1;
        if self.window.1 > limit {
            self.st.metrics.rate_limited.inc();
            if self.logged.insert("rate_limited") {
                tracing::info!(limit, "pushes over the rate limit refused (further ones counted, not logged)");
            }
            return self.reply_error(&f, "rate_limited");
        }
        let topic = Topic::from(f.topic.as_str());
        let result = if event == "presence:update" {
            match meta_from_json(&f.payload) {
                Ok(meta) => self.handle.update_meta(topic, meta).await,
                Err(_) => return self.reply_error(&f, "bad_request"),
            }
        } else {
            self.handle.push(topic, event, meta_value_from_json(&f.payload)).await
        };
        match result {
            Ok(()) => self.reply(&f, ReplyStatus::Ok, json!({})),
            Err(PushError::Unauthorized) => self.reply_error(&f, "unauthorized"),
            Err(_) => self.reply_error(&f, "bad_request"),
        }
    }

    fn on_event(&mut self, e: ConnEvent) {
        let topic = match &e {
            ConnEvent::Revoked { topic, .. }
            | ConnEvent::Closed { topic }
            | ConnEvent::Diff { topic, .. }
            | ConnEvent::Broadcast { topic, .. } => topic.as_str().to_owned(),
        };
        let Some(channel) = self.channels.get_mut(&topic) else { return };
        if !channel.joined {
            channel.held.push(e);
            return;
        }
        let join_ref = channel.join_ref.clone();
        match e {
            ConnEvent::Revoked { reason, .. } => {
                Metrics::inc(&self.st.metrics.revokes, guard::revoke_label(&reason));
                self.st.dashboard.revoked(self.user.as_ref(), &topic, &reason);
                self.channels.remove(&topic);
                self.send(Frame::push(join_ref.clone(), topic.clone(), "slot_revoked", json!({ "reason": reason })));
                self.send(Frame::close(join_ref, topic));
            }
            ConnEvent::Closed { .. } => {
                self.channels.remove(&topic);
                self.send(Frame::close(join_ref, topic));
            }
            ConnEvent::Diff { diff, .. } => {
                let payload = serde_json::to_value(&*diff).unwrap_or_else(|_| json!({}));
                self.send(Frame::push(join_ref, topic, "presence_diff", payload));
            }
            // A reserved event relayed by a node of an older version is never passed on.
            ConnEvent::Broadcast { event, .. } if guard::is_reserved_event(&event) => {}
            ConnEvent::Broadcast { from, event, body, .. } => {
                let payload = json!({ "from": from.as_str(), "body": meta_value_to_json(&body) });
                self.send(Frame::push(join_ref, topic, event, payload));
            }
        }
    }

    /// Answer a frame the guard refused, count it, and log it once per socket and kind.
    fn refuse_frame(&mut self, f: &Frame, refusal: Refusal) {
        let metrics = &self.st.metrics;
        let kind = match refusal.counter {
            Counter::BadFrame(kind) => {
                Metrics::inc(&metrics.bad_frames, kind);
                kind
            }
            Counter::Limited(key) => {
                Metrics::inc(&metrics.limited, key);
                key
            }
            Counter::JoinReject(reason) => reason,
        };
        if f.event == "phx_join" {
            Metrics::inc(&metrics.join_rejects, refusal.reply);
        }
        if self.logged.insert(kind) {
            tracing::info!(kind, what = refusal.what, "refused on a socket (further ones counted, not logged)");
        }
        self.reply_error(f, refusal.reply);
    }

    /// The token expired: every channel, joined or joining, is revoked with `token_expired`
    /// and closed; the socket is closed with 1008 and its presences leave.
    fn on_token_expired(&mut self) -> Message {
        tracing::info!("socket closed: its token expired");
        let mut channels: Vec<(String, Option<String>)> = self.channels.drain().map(|(t, c)| (t, c.join_ref)).collect();
        channels.sort();
        for (topic, join_ref) in channels {
            Metrics::inc(&self.st.metrics.revokes, "token_expired");
            self.send(Frame::push(
                join_ref.clone(),
                topic.clone(),
                "slot_revoked",
                json!({ "reason": "token_expired" }),
            ));
            self.send(Frame::close(join_ref, topic));
        }
        close(CLOSE_POLICY, "token expired")
    }

    /// The runtime ended the connection: say why, as a close frame the client understands.
    fn on_connection_end(&mut self, reason: CloseReason) -> Message {
        match reason {
            CloseReason::SlowClient => {
                self.st.metrics.slow_clients.inc();
                close(CLOSE_TRY_AGAIN, "slow client: outbound queue full")
            }
            CloseReason::Shutdown => close(CLOSE_RESTART, "node shutting down"),
            _ => {
                // The connection's actor died: every channel errors (the client rejoins).
                let topics: Vec<(String, Option<String>)> =
                    self.channels.drain().map(|(t, c)| (t, c.join_ref)).collect();
                for (t, jr) in topics {
                    self.send(Frame::error(jr, t));
                }
                close(CLOSE_INTERNAL, "connection failed")
            }
        }
    }
}
