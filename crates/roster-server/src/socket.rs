//! `/socket/websocket`: one Phoenix Channels v2 socket.
//!
//! The upgrade checks `Origin` (when `allowed_origins` is set) and reads the token from the
//! `token` query parameter or the `base64url.bearer.phx.<base64url(token)>` subprotocol,
//! echoing `phoenix` when offered. No token: an anonymous viewer. A bad token: the socket
//! opens, but every join is answered `unauthorized` (the client sees why).
//!
//! Each socket is one runtime connection living in its own task
//! ([`Node::spawn_connection`](roster_runtime::Node::spawn_connection)): the runtime's Gateway
//! watches that task, so the socket's end, however it comes, untracks its presence and frees
//! its slots. The task reads frames, writes frames, pings, and writes what the connection's
//! queue holds in order: join answers, `slot_revoked`/`phx_close`, and the shared pushes
//! (`presence_state`, `presence_diff`, broadcasts), each encoded once for all its receivers
//! ([`PhoenixEncoder`]) with only the channel's `join_ref` written in front. A push for a
//! channel the socket has since left (a `join_ref` it no longer uses) is dropped.
//!
//! The upgrade is done here, not by axum's extractor, to size tungstenite's read buffer (4 KiB
//! instead of 128 KiB) and to put [`Wire`] under it. tungstenite reads every frame and writes
//! only its pongs and the close handshake; every other frame (replies, pushes, pings) is
//! written by `Wire` as `[header, join_ref prefix, shared bytes]`, one vectored write per batch,
//! with no per-socket copy and no write buffer kept (tungstenite's keeps the largest size it
//! ever reached). A message longer than [`FRAGMENT`] goes out as fragments sliced from the
//! shared bytes, so in-line pings fit between them.
//!
//! Every frame a client sends passes the socket's guard first (`guard.rs`: reserved events, the
//! token's topics and expiry, joins and leaves per second, meta size). The dashboard's admin
//! topic (`roster:admin`) is a feed of snapshots, not a presence topic (`dashboard.rs`).
//!
//! Flow control by pings ([`FlowWindow`]): a socket is written at most `[server]
//! flow_window_bytes` of data beyond the last ping its client answered (pings carry the
//! offset of the data before them, one in line with every [`IN_LINE_PING_BYTES`]); the rest
//! waits in the connection's queue, as the shared pushes it already is, not in the kernel.
//!
//! Every close the server starts carries a code and a reason: 1001 (nothing heard for two
//! `ping_ms`), 1002 (a WebSocket protocol violation), 1007 (a text frame not UTF-8), 1008 (the
//! token expired), 1009 (frame too large), 1011 (the connection failed), 1012 (the node shuts
//! down), 1013 (a slow client: with data waiting for it, it answered no in-line ping for two
//! `ping_ms`; or its queue passed `outbound_queue` frames or `outbound_queue_bytes` bytes; or a
//! write stayed blocked for two `ping_ms` with no pong). Before either ping verdict the task
//! reads every frame already there: a node too busy to read its pongs closes nobody for it.

use crate::app::AppState;
use crate::channels::Channels;
use crate::dashboard::{self, AdminFeed};
use crate::frame::{encode_reply, write_join_ref_prefix, Frame, PhoenixEncoder, ReplyStatus, PHOENIX_TOPIC};
use crate::guard::{self, Counter, Refusal, SocketGuard};
use crate::limits::{ConnectionPermit, UserPermit};
use crate::meta_json::{meta_from_json, meta_value_from_json};
use crate::metrics::Metrics;
use crate::spare::Spares;
use crate::token::{verify_at, Claims};
use crate::wire::{OpCode, OutFrame, Wire, MAX_PREFIX};
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use futures_util::stream::FusedStream;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use roster_core::{Meta, Role, SlotToken, TabId, Topic, UserId};
use roster_runtime::{
    CloseReason, Connection, ConnectionHandle, JoinError, Outbound, Push, PushBody, PushEncoder, PushError,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role as WsRole, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Close codes (RFC 6455 and IANA registry).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_NOT_UTF8: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_INTERNAL: u16 = 1011;
const CLOSE_RESTART: u16 = 1012;
const CLOSE_TRY_AGAIN: u16 = 1013;

const BEARER_PREFIX: &str = "base64url.bearer.phx.";

/// The longest topic or `tab_id` a join may carry (longer: `bad_request`).
const MAX_ID_BYTES: usize = 256;

/// What a socket reads into: client frames are small (joins, heartbeats, pushes), and a larger
/// one grows the buffer for its own read. tungstenite's default, 128 KiB zero-filled on the
/// first read, was most of a socket's memory.
const READ_BUFFER: usize = 4096;
/// tungstenite writes only its pongs and the close handshake (every other frame is written by
/// [`Wire`]), each at once: its write buffer, which keeps the most it ever held, stays at the
/// size of one control frame.
const WRITE_BUFFER: usize = 0;
/// A message longer than this goes out as fragments of this size: the flow window's in-line
/// pings go between them, and a window's room lets a big room's `presence_state` out a part
/// at a time.
const FRAGMENT: usize = 4096;
/// After this much data written since the last ping, a ping goes out in line with it, carrying
/// the offset of the data written before it ([`FlowWindow`]). A pong can only come once the
/// client has read what was written before its ping, so a client reading through a backlog
/// answers one every 16 KiB it reads: it is heard as long as it reads 16 KiB per two `ping_ms`
/// (1.6 KiB/s at the default 5 s).
const IN_LINE_PING_BYTES: u64 = 16 * 1024;
/// Items taken from the connection's queue before they are written (one write, one flush).
const BATCH_ITEMS: usize = 64;

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

/// The HTTP upgrade: Origin, version, token, the per-user socket limit, the WebSocket
/// handshake; then [`run`] in a connection task.
pub(crate) async fn upgrade(
    State(st): State<Arc<AppState>>,
    Query(q): Query<SocketQuery>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
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
    let accept = match handshake(headers) {
        Ok(accept) => accept,
        Err((status, why)) => return (status, why).into_response(),
    };
    let phoenix = offered_protocols(headers).any(|p| p == "phoenix");
    let token = q.token.or_else(|| subprotocol_token(headers));
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
    let permits: Permits = (req.extensions().get::<Arc<ConnectionPermit>>().cloned(), user_permit);
    let (claims, refused) = match auth {
        Auth::Anonymous => (None, false),
        Auth::User(c) => (Some(c), false),
        Auth::Refused => (None, true),
    };
    let guard = SocketGuard::new(server, claims.clone(), st.node.config().auth.token_leeway_ms, Instant::now());
    let (user, role): (Option<UserId>, Option<Role>) = claims.map(|c| (c.sub, c.role)).unzip();
    // The transport accepts up to twice the limit, so that a message just over it is seen,
    // counted and answered with 1009 here. A WebSocket frame announcing more is refused by the
    // WebSocket library from its header, before its payload is buffered (its default would
    // reserve up to 16 MiB for it), and answered with 1009 as well.
    let transport_limit = (server.max_frame_bytes as usize).saturating_mul(2);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(transport_limit))
        .max_frame_size(Some(transport_limit));
    let on_upgrade = hyper::upgrade::on(&mut req);
    let frames = server.outbound_queue as usize;
    let task_st = st.clone();
    let spawned = st.node.spawn_connection(user.clone(), role, frames, move |conn| async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "the WebSocket upgrade failed");
                conn.close(true);
                return;
            }
        };
        let wire = Wire::new(TokioIo::new(upgraded));
        let ws = WebSocketStream::from_raw_socket(wire, WsRole::Server, Some(config)).await;
        run(task_st, ws, conn, Identity { refused, user, guard }, permits).await;
    });
    if spawned.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "node not running").into_response();
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if phoenix {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("phoenix"));
    }
    response
}

/// RFC 6455's checks of an upgrade request; the `Sec-WebSocket-Accept` value, or the refusal.
fn handshake(headers: &HeaderMap) -> Result<HeaderValue, (StatusCode, &'static str)> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let refuse = |status: StatusCode, why: &'static str| Err((status, why));
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return refuse(StatusCode::BAD_REQUEST, "a WebSocket upgrade is expected here");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return refuse(StatusCode::UPGRADE_REQUIRED, "only WebSocket version 13 is spoken here");
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
    };
    HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .or_else(|_| refuse(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key"))
}

fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// phoenix.js sends `base64url.bearer.phx.` + base64url(token) (unpadded) as a subprotocol.
fn subprotocol_token(headers: &HeaderMap) -> Option<String> {
    offered_protocols(headers)
        .find_map(|p| p.strip_prefix(BEARER_PREFIX))
        .and_then(|b| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b.trim_end_matches('=')).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

type Socket = WebSocketStream<Wire<TokioIo<hyper::upgrade::Upgraded>>>;

/// One socket's state in its task.
struct SocketTask {
    st: Arc<AppState>,
    handle: ConnectionHandle,
    auth_refused: bool,
    anonymous: bool,
    channels: Channels,
    /// Frames to write next, written as the flow window allows.
    out: Outbox,
    /// What the client has been written and has read (flow control by pings).
    flow: FlowWindow,
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

/// Who the socket is, as its upgrade found.
struct Identity {
    /// A token was given and refused.
    refused: bool,
    user: Option<UserId>,
    guard: SocketGuard,
}

async fn run(st: Arc<AppState>, mut ws: Socket, mut conn: Connection, id: Identity, _permits: Permits) {
    let server = st.node.config().server.clone();
    st.metrics.sockets.inc();
    st.metrics.sockets_opened.inc();
    let mut task = SocketTask {
        anonymous: conn.user().is_none(),
        handle: conn.handle(),
        st: st.clone(),
        auth_refused: id.refused,
        channels: Channels::new(conn.handle()),
        out: Outbox::default(),
        flow: FlowWindow::new(Instant::now(), server.flow_window_bytes),
        window: (Instant::now(), 0),
        logged: HashSet::new(),
        user: id.user,
        admin: None,
        guard: id.guard,
    };
    let token_expiry = guard::expiry(task.guard.expires_at());
    tokio::pin!(token_expiry);
    let ping_every = Duration::from_millis(server.ping_ms);
    let send_timeout = ping_every * 2;
    let mut ping = tokio::time::interval(ping_every);
    // After a long write, one ping, not a burst of the ticks it missed.
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_seen = Instant::now();
    let mut ping_due = false;
    let mut clean = false;
    let mut final_close: Option<Message> = None;
    'socket: loop {
        // Items are taken from the connection's queue only when what was taken before is
        // written and the window has room: a backlog waits in the queue, as shared pushes.
        let can_take = task.out.is_empty() && task.flow.room() > 0;
        tokio::select! {
            msg = ws.next() => match task.on_message(msg, &mut last_seen) {
                Flow::Go => {}
                Flow::End { close, clean: c } => {
                    final_close = close;
                    clean = c;
                    break;
                }
            },
            // Waiting on the client, the queue is not read, but its overflow or the node's
            // shutdown still ends the socket.
            item = next_outbound(&mut conn, can_take) => match item {
                Some(item) => {
                    // The batch's list is sized once, for what waits now (regrown from
                    // nothing by doubling, it was three allocations per presence in a burst).
                    task.out.reserve(1 + conn.queued_outbound().min(BATCH_ITEMS - 1));
                    task.on_outbound(item);
                    // More that waits goes into the same write, up to the window's room.
                    for _ in 1..BATCH_ITEMS {
                        if task.out.bytes >= task.flow.room() {
                            break;
                        }
                        match conn.try_recv_outbound() {
                            Some(item) => task.on_outbound(item),
                            None => break,
                        }
                    }
                }
                None => {
                    final_close = Some(task.on_connection_end(conn.close_reason()));
                    break;
                }
            },
            (join_ref, snapshot) = dashboard::next_snapshot(&mut task.admin) => {
                task.send(Frame::push(join_ref, dashboard::ADMIN_TOPIC, dashboard::SNAPSHOT_EVENT, (*snapshot).clone()));
            }
            () = &mut token_expiry => {
                final_close = Some(task.on_token_expired());
                clean = true;
                break;
            }
            _ = ping.tick() => {
                let limit = ping_every * 2;
                let judged = |task: &SocketTask, last_seen: Instant| {
                    let waiting = task.flow.room() == 0 || !task.out.is_empty();
                    staleness(&task.flow, waiting, last_seen, Instant::now(), limit)
                };
                if judged(&task, last_seen).is_some() {
                    // What the client sent while this task was busy writing is an answer too:
                    // read every frame already here before judging (a busy node must not
                    // close clients whose pongs wait unread in its own buffers).
                    let mut end = None;
                    while let Some(msg) = ws.next().now_or_never() {
                        if let Flow::End { close, clean } = task.on_message(msg, &mut last_seen) {
                            end = Some((close, clean));
                            break;
                        }
                    }
                    if let Some((close, c)) = end {
                        final_close = close;
                        clean = c;
                        break;
                    }
                }
                match judged(&task, last_seen) {
                    Some(Staleness::Stalled) => {
                        // Data it was written stays unread for two pings: a client that reads
                        // at all answers an in-line ping every 16 KiB.
                        st.metrics.slow_clients.inc();
                        tracing::info!("slow client closed: no answer to in-line pings");
                        task.out.clear();
                        final_close = Some(close(CLOSE_TRY_AGAIN, "slow client: no answer to in-line pings"));
                        break;
                    }
                    Some(Staleness::Silent) => {
                        st.metrics.ping_timeouts.inc();
                        tracing::info!("socket closed: no answer to pings");
                        final_close = Some(close(CLOSE_GOING_AWAY, "no answer to pings"));
                        break;
                    }
                    // A client heard from within the last half `ping_ms` is not pinged: a ping
                    // only asks for a sign of life it gave just now (a join, a pong, a
                    // heartbeat). Idle clients are pinged every `ping_ms` as before, so a dead
                    // one is closed at the same tick; busy ones (a burst of joins) cost the node
                    // no ping, pong and two wake-ups each.
                    None => ping_due = needs_ping(last_seen, Instant::now(), ping_every),
                }
            }
        }
        // While the window is shut, answers to what the client sends (and dashboard
        // snapshots) wait in the outbox: a client that sends without reading is held to the
        // queue's byte bound there too.
        if task.out.bytes > server.outbound_queue_bytes {
            st.metrics.slow_clients.inc();
            tracing::info!("slow client closed: its answers waited past outbound_queue_bytes");
            task.out.clear();
            final_close = Some(close(CLOSE_TRY_AGAIN, "slow client: outbound queue full"));
            break 'socket;
        }
        // Frames read while a write was blocked may have queued answers: they are written in
        // the same call, as the window allows.
        if ping_due || (!task.out.is_empty() && task.flow.room() > 0) {
            match write_queued(&mut ws, &mut task, &conn, send_timeout, (&mut last_seen, std::mem::take(&mut ping_due)))
                .await
            {
                Written::All => {}
                Written::Failed => break 'socket,
                Written::Ended { close, clean: c } => {
                    final_close = close;
                    clean = c;
                    break 'socket;
                }
                Written::TooSlow => {
                    // Never buffer for a client that does not read: close it, and say why.
                    st.metrics.slow_clients.inc();
                    tracing::info!("slow client closed: a write stayed blocked for two pings");
                    task.out.clear();
                    final_close = Some(close(CLOSE_TRY_AGAIN, "slow client: a write stayed blocked"));
                    break 'socket;
                }
                Written::ConnectionEnded => {
                    final_close = Some(task.on_connection_end(conn.close_reason()));
                    break 'socket;
                }
            }
        }
    }
    // The node forgets the socket now; its last frames go out after (best effort).
    let reason = conn.close_reason();
    conn.close(clean);
    // The client sent a close: no data frame may follow tungstenite's answer to it.
    let peer_closed = clean && final_close.is_none();
    let last =
        final_close.or_else(|| (reason == CloseReason::Shutdown).then(|| close(CLOSE_RESTART, "node shutting down")));
    let mut pending = std::mem::take(&mut task.out);
    // A client closed for not reading can only take its close frame once it reads what is in
    // the kernel's buffers before it (at most a window): it gets two pings for that (at least
    // a second; half a second when the node shuts down). The node has forgotten the socket
    // already; only the socket waits.
    let last_write = match reason {
        CloseReason::Shutdown => Duration::from_millis(500),
        _ => (ping_every * 2).max(Duration::from_secs(1)),
    };
    let _ = tokio::time::timeout(last_write, async {
        if !peer_closed {
            // tungstenite's pending writes first, then the outbox, whatever the window.
            ws.flush().await?;
            while let Some((frame, _)) = pending.next_frame() {
                ws.get_mut().queue(frame);
            }
            std::future::poll_fn(|cx| ws.get_mut().poll_drain(cx)).await?;
        }
        // tungstenite stopped reading at bad input (a frame over the transport's limits, a
        // protocol error): the rest of what the client sends is unread.
        let stopped_reading = ws.is_terminated();
        if let Some(m) = last {
            ws.feed(m).await?;
        }
        ws.flush().await?;
        SinkExt::close(&mut ws).await?;
        // The TCP connection closes once the client answers the close (or ends): a client
        // still reading its backlog answers the pings in it meanwhile, and those reaching a
        // closed socket would reset the connection, which discards what the client has not
        // read yet, the close frame included (it would see 1006). For the same reason, after
        // bad input the node ends its side (the client sees the close, then the end) and reads
        // and drops what the client still sends (the rest of a huge frame) until it ends too.
        if stopped_reading {
            tokio::io::AsyncWriteExt::shutdown(ws.get_mut()).await?;
            tokio::io::copy(ws.get_mut(), &mut tokio::io::sink()).await?;
        } else {
            while let Some(Ok(_)) = ws.next().await {}
        }
        Ok::<(), WsError>(())
    })
    .await;
    drop(ws);
    st.metrics.sockets.dec();
}

/// The connection's next item when `can_take`; otherwise `None` once the connection ends
/// from the node's side (its queue overflowed, or the node shuts down).
async fn next_outbound(conn: &mut Connection, can_take: bool) -> Option<Outbound> {
    if can_take {
        conn.recv_outbound().await
    } else {
        conn.ended().await;
        None
    }
}

/// Why a client is closed at a ping's tick.
enum Staleness {
    /// Data it was written went unread for two pings: no in-line ping answered (1013).
    Stalled,
    /// Nothing heard for two pings, with nothing of ours left unread (1001).
    Silent,
}

/// The verdict at a ping's tick on a client last heard at `last_seen`, `limit` being two
/// `ping_ms`. When the node waits on the client (`waiting`: its window is full, or what it was
/// given does not fit), it must read: it is stalled once data it was written stayed unread
/// for `limit` (from the last answered ping, or from when data went out with everything
/// before it read), and also once it was silent for `limit`: a client that stopped reading
/// before data came for it answers nothing either, and its close is due `limit` after it was
/// last heard, not `limit` after the data. Otherwise only silence counts.
fn staleness(flow: &FlowWindow, waiting: bool, last_seen: Instant, now: Instant, limit: Duration) -> Option<Staleness> {
    let silent = now - last_seen > limit;
    if waiting {
        let unread = flow.unanswered_since().is_some_and(|since| now - since > limit);
        (unread || silent).then_some(Staleness::Stalled)
    } else {
        silent.then_some(Staleness::Silent)
    }
}

/// Whether the regular ping goes out at a tick: only to a client not heard from for half a
/// `ping_ms`. A live client is then pinged at least once in every `ping_ms` it is silent, and
/// answers well before it has been silent for two (the verdict in [`staleness`]).
fn needs_ping(last_seen: Instant, now: Instant, ping_every: Duration) -> bool {
    now.saturating_duration_since(last_seen) >= ping_every / 2
}

/// How [`write_queued`] ended.
enum Written {
    /// Every queued frame was written.
    All,
    /// The socket failed (the client is gone).
    Failed,
    /// A write stayed blocked for `send_timeout`: the client does not read.
    TooSlow,
    /// The connection ended meanwhile (its queue overflowed while the write was blocked, or the
    /// node shuts down).
    ConnectionEnded,
    /// A frame read while a write was blocked ends the socket (as [`Flow::End`]).
    Ended { close: Option<Message>, clean: bool },
}

/// Flow control by pings: what a socket's client has been written and has read. Every ping
/// the node writes carries the offset of the data written before it (8 bytes, big-endian);
/// the client's pong echoes it (RFC 6455, 5.5.3), and a pong can only come once the client
/// has read up to there. The node writes at most `window` bytes beyond the last answered
/// offset (`[server] flow_window_bytes`; why 16 KiB by default: `docs/architecture.md`). A
/// pong that names an offset not yet written, or a payload of another shape, moves nothing
/// (the client only holds itself back).
#[derive(Clone, Copy, Debug)]
struct FlowWindow {
    /// Data written (pings aside) since the socket opened.
    sent: u64,
    /// The offset of the last answered ping: the client has read this much.
    read: u64,
    /// When the client was last seen reading what it was written: the last pong that moved
    /// `read`, or when data went out with everything before it read.
    since: Instant,
    /// Data written since the last ping.
    since_ping: u64,
    /// Data that may be written beyond `read`.
    window: u64,
}

impl FlowWindow {
    fn new(now: Instant, window: u64) -> Self {
        FlowWindow { sent: 0, read: 0, since: now, since_ping: 0, window }
    }

    /// How much more data may be written now.
    fn room(&self) -> u64 {
        self.window.saturating_sub(self.sent - self.read)
    }

    /// `bytes` of data written at `now`; true when a ping should follow in line.
    fn wrote(&mut self, now: Instant, bytes: u64) -> bool {
        if self.sent == self.read {
            self.since = now;
        }
        self.sent += bytes;
        self.since_ping += bytes;
        self.since_ping >= IN_LINE_PING_BYTES
    }

    /// The payload of a ping written now: the offset of everything written before it.
    fn ping(&mut self) -> [u8; 8] {
        self.since_ping = 0;
        self.sent.to_be_bytes()
    }

    /// A pong with `payload` came at `now`.
    fn pong(&mut self, payload: &[u8], now: Instant) {
        let Ok(offset) = <[u8; 8]>::try_from(payload).map(u64::from_be_bytes) else { return };
        if offset > self.read && offset <= self.sent {
            self.read = offset;
            self.since = now;
        }
    }

    /// Since when data written has waited for the client to read it (`None`: all read).
    fn unanswered_since(&self) -> Option<Instant> {
        (self.sent > self.read).then_some(self.since)
    }
}

/// A message waiting to be written: a short prefix kept in place (a shared push's `[` and
/// `join_ref`), then its body (a reply's text, or the shared bytes of a push, never copied).
/// A long one is cut into fragments of [`FRAGMENT`] bytes as they go out (a backlog of big
/// lists holds no per-socket copy).
struct Pending {
    prefix: [u8; MAX_PREFIX],
    prefix_len: u8,
    body: Bytes,
    /// Bytes of the message (prefix, then body) already cut into frames.
    at: usize,
}

impl Pending {
    fn len(&self) -> usize {
        self.prefix_len as usize + self.body.len()
    }

    /// The message's next frame, and its payload's length; true when it was the last.
    fn next_frame(&mut self) -> (OutFrame, usize, bool) {
        let (len, plen) = (self.len(), self.prefix_len as usize);
        if self.at == 0 && len <= FRAGMENT {
            self.at = len;
            let frame = OutFrame::new(true, OpCode::Text, &self.prefix[..plen], self.body.clone());
            return (frame, len, true);
        }
        let (start, end) = (self.at, (self.at + FRAGMENT).min(len));
        let (opcode, prefix) =
            if start == 0 { (OpCode::Text, &self.prefix[..plen]) } else { (OpCode::Continue, &[][..]) };
        // A fragment after the first starts past the prefix (a fragment is longer than it).
        let body = self.body.slice(start.max(plen) - plen..end - plen);
        self.at = end;
        (OutFrame::new(end == len, opcode, prefix, body), end - start, end == len)
    }
}

thread_local! {
    /// This thread's spare outbox lists (`spare.rs`).
    static SPARE_MESSAGES: RefCell<Spares<Pending>> = const { RefCell::new(Spares::new()) };
}

/// The messages a socket writes next, in order, and their bytes.
#[derive(Default)]
struct Outbox {
    messages: VecDeque<Pending>,
    /// Data bytes still to write.
    bytes: u64,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// A message of its own (a reply, `phx_close`, a snapshot of the dashboard's).
    fn push(&mut self, text: String) {
        self.push_message(&[], Bytes::from(text));
    }

    /// A shared push: `[` and the channel's `join_ref` (kept in place), then the shared bytes.
    fn push_shared(&mut self, join_ref: Option<&str>, shared: Bytes) {
        let mut prefix = [0; MAX_PREFIX];
        let mut room = &mut prefix[..];
        if write_join_ref_prefix(join_ref, &mut room).is_ok() {
            let len = MAX_PREFIX - room.len();
            self.push_message(&prefix[..len], shared);
        } else {
            // A `join_ref` too long to keep in place: a copy in front of the shared bytes.
            let mut joined = Vec::new();
            let _ = write_join_ref_prefix(join_ref, &mut joined);
            joined.extend_from_slice(&shared);
            self.push_message(&[], Bytes::from(joined));
        }
    }

    /// Room for `messages` more, taken at once: a spare list of the thread's if there is none.
    fn reserve(&mut self, messages: usize) {
        if self.messages.capacity() == 0 {
            if let Ok(list) = SPARE_MESSAGES.with(|s| s.try_borrow_mut().map(|mut s| s.take(messages))) {
                self.messages = list;
                return;
            }
        }
        self.messages.reserve(messages);
    }

    fn push_message(&mut self, prefix: &[u8], body: Bytes) {
        let mut m = Pending { prefix: [0; MAX_PREFIX], prefix_len: prefix.len() as u8, body, at: 0 };
        m.prefix[..prefix.len()].copy_from_slice(prefix);
        self.bytes += m.len() as u64;
        self.messages.push_back(m);
    }

    fn clear(&mut self) {
        *self = Outbox::default();
    }

    /// The most frames [`write_queued`] makes of what is here when `room` bytes may be
    /// written: the messages' fragments up to the room, and an in-line ping per
    /// [`IN_LINE_PING_BYTES`] (and one more, for the ping's count starting part way).
    fn frames_within(&self, room: u64) -> usize {
        let (mut frames, mut bytes) = (0, 0);
        for m in &self.messages {
            if bytes >= room {
                break;
            }
            let left = (m.len() - m.at) as u64;
            frames += left.div_ceil(FRAGMENT as u64).max(1) as usize;
            bytes += left;
        }
        frames + (bytes.min(room) / IN_LINE_PING_BYTES) as usize + 1
    }

    /// The next frame to write, and its payload's length.
    fn next_frame(&mut self) -> Option<(OutFrame, usize)> {
        let (frame, len, last) = self.messages.front_mut()?.next_frame();
        if last {
            self.messages.pop_front();
        }
        self.bytes = self.bytes.saturating_sub(len as u64);
        // An idle socket keeps no room: most of 10,000 sockets are idle most of the time. The
        // list goes to the thread's spares, for the next batch.
        if self.messages.is_empty() {
            let list = std::mem::take(&mut self.messages);
            SPARE_MESSAGES.with(|s| {
                if let Ok(mut spares) = s.try_borrow_mut() {
                    spares.give(list);
                }
            });
        }
        Some((frame, len))
    }
}

/// Write what the outbox holds, as far as the flow window allows, with a ping in line every
/// [`IN_LINE_PING_BYTES`] (and the regular ping first when `ping_due`): tungstenite's pending
/// writes first (a pong), then every frame in one vectored write ([`Wire`]) when the socket
/// takes it. A write that has to wait for the client (its receive window is full) and then
/// goes on shows the client reading: that counts as hearing from it (`last_seen`). While a
/// write waits, the client's frames are read as usual, and a pong shows it reading: the wait
/// starts afresh. So a write is a slow client's (1013) only once it stayed blocked for
/// `send_timeout` with no pong. While a write is blocked, the connection's queue keeps
/// filling; past its bounds the connection ends as a slow client, which ends this wait at once.
async fn write_queued(
    ws: &mut Socket,
    task: &mut SocketTask,
    conn: &Connection,
    send_timeout: Duration,
    (last_seen, ping_due): (&mut Instant, bool),
) -> Written {
    let mut waited = false;
    let mut w = Waiting { task, conn, send_timeout, waited: &mut waited, last_seen: &mut *last_seen };
    if let Err(outcome) = w.write(ws, |ws, cx| ws.poll_flush_unpin(cx).map_err(|_| ())).await {
        return outcome;
    }
    let wire = ws.get_mut();
    let flow = &mut w.task.flow;
    wire.reserve(w.task.out.frames_within(flow.room()) + usize::from(ping_due));
    if ping_due {
        wire.queue(OutFrame::ping(&flow.ping()));
    }
    while flow.room() > 0 {
        let Some((frame, len)) = w.task.out.next_frame() else { break };
        wire.queue(frame);
        // Control frames may come between a message's fragments (RFC 6455, 5.4).
        if flow.wrote(Instant::now(), len as u64) {
            wire.queue(OutFrame::ping(&flow.ping()));
        }
    }
    if let Err(outcome) = w.write(ws, |ws, cx| ws.get_mut().poll_drain(cx).map_err(|_| ())).await {
        return outcome;
    }
    if waited {
        *last_seen = Instant::now();
    }
    Written::All
}

/// What a blocked write reads and updates while it waits.
struct Waiting<'a> {
    task: &'a mut SocketTask,
    conn: &'a Connection,
    send_timeout: Duration,
    waited: &'a mut bool,
    last_seen: &'a mut Instant,
}

/// A blocked write's next event: the write done, or a frame read meanwhile.
enum Step {
    Written(Result<(), ()>),
    Read(Option<Result<Message, WsError>>),
}

impl Waiting<'_> {
    /// One write, polled by `write`: at once if the socket takes it, else within
    /// `send_timeout` of the last pong (`waited` set), the client's frames read meanwhile.
    async fn write<F>(&mut self, ws: &mut Socket, mut write: F) -> Result<(), Written>
    where
        F: FnMut(&mut Socket, &mut Context<'_>) -> Poll<Result<(), ()>>,
    {
        // The usual case, a socket with room in its buffers: no timer.
        let first = std::future::poll_fn(|cx| Poll::Ready(write(ws, cx))).await;
        let written = match first {
            Poll::Ready(written) => written,
            Poll::Pending => {
                *self.waited = true;
                let mut deadline = tokio::time::Instant::now() + self.send_timeout;
                loop {
                    let step = std::future::poll_fn(|cx| {
                        if let Poll::Ready(written) = write(ws, cx) {
                            return Poll::Ready(Step::Written(written));
                        }
                        ws.poll_next_unpin(cx).map(Step::Read)
                    });
                    tokio::select! {
                        biased;
                        step = step => match step {
                            Step::Written(written) => break written,
                            Step::Read(msg) => {
                                let pong = matches!(msg, Some(Ok(Message::Pong(_))));
                                match self.task.on_message(msg, self.last_seen) {
                                    Flow::Go if pong => deadline = tokio::time::Instant::now() + self.send_timeout,
                                    Flow::Go => {}
                                    Flow::End { close, clean } => return Err(Written::Ended { close, clean }),
                                }
                            }
                        },
                        () = self.conn.ended() => return Err(Written::ConnectionEnded),
                        () = tokio::time::sleep_until(deadline) => return Err(Written::TooSlow),
                    }
                }
            }
        };
        written.map_err(|()| Written::Failed)
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.to_owned().into() }))
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

/// `{}`: the response of a plain `ok` reply.
#[derive(Serialize)]
struct Empty {}

/// `{"reason": ...}`: the response of an `error` reply.
#[derive(Serialize)]
struct Reason {
    reason: &'static str,
}

/// `{"slot": {"token": ...}}` (or `{"slot": null}` for a join that holds no slot): the
/// response to a join.
#[derive(Serialize)]
struct JoinedResponse<'a> {
    slot: Option<SlotResponse<'a>>,
}

#[derive(Serialize)]
struct SlotResponse<'a> {
    /// Written as a string straight from the token's `Display`.
    #[serde(serialize_with = "serialize_display")]
    token: &'a SlotToken,
}

/// A value written as the JSON string of its `Display`, with no `String` made for it.
fn serialize_display<S: serde::Serializer>(value: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// What the socket's loop does after a frame from the client.
enum Flow {
    /// Go on.
    Go,
    /// End the socket: with this close frame (`None`: the connection is gone, nothing can be
    /// sent), `clean` when the client closed it.
    End { close: Option<Message>, clean: bool },
}

impl SocketTask {
    /// One read from the client (`None`: its connection ended).
    fn on_message(&mut self, msg: Option<Result<Message, WsError>>, last_seen: &mut Instant) -> Flow {
        let frame_limit = self.st.node.config().server.max_frame_bytes as usize;
        match msg {
            Some(Ok(Message::Text(text))) => {
                *last_seen = Instant::now();
                if text.len() > frame_limit {
                    self.refuse("too_large", "frame over max_frame_bytes");
                    return Flow::End { close: Some(close(CLOSE_TOO_BIG, "frame too large")), clean: false };
                }
                self.on_text(text.as_str());
            }
            Some(Ok(Message::Binary(_))) => {
                *last_seen = Instant::now();
                self.refuse("binary", "binary frames are not spoken here");
            }
            Some(Ok(Message::Pong(payload))) => {
                let now = Instant::now();
                *last_seen = now;
                self.flow.pong(&payload, now);
            }
            Some(Ok(Message::Ping(_) | Message::Frame(_))) => *last_seen = Instant::now(),
            Some(Ok(Message::Close(_))) => return Flow::End { close: None, clean: true },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "socket read error");
                // A close the server starts always says why; a connection already gone
                // (reset, closed) cannot be told anything.
                let close = match e {
                    WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                        self.refuse("too_large", "frame over the transport limit");
                        Some(close(CLOSE_TOO_BIG, "frame too large"))
                    }
                    WsError::Capacity(_) => {
                        self.refuse("too_large", "frame over the transport limits");
                        Some(close(CLOSE_TOO_BIG, "frame too large"))
                    }
                    // A client gone without a close frame (a killed tab, a cut network) ended
                    // its connection uncleanly: not bad input.
                    WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
                    WsError::Protocol(_) => {
                        self.refuse("ws_protocol", "WebSocket protocol violation");
                        Some(close(CLOSE_PROTOCOL, "WebSocket protocol error"))
                    }
                    WsError::Utf8(_) => {
                        self.refuse("ws_utf8", "a text frame that is not UTF-8");
                        Some(close(CLOSE_NOT_UTF8, "text frame is not UTF-8"))
                    }
                    _ => None,
                };
                return Flow::End { close, clean: false };
            }
            None => return Flow::End { close: None, clean: false },
        }
        Flow::Go
    }

    fn send(&mut self, frame: Frame) {
        self.out.push(frame.encode());
    }

    fn reply(&mut self, f: &Frame, status: ReplyStatus, response: &impl Serialize) {
        let text = encode_reply(f.join_ref.as_deref(), f.msg_ref.as_deref(), &f.topic, status, response);
        self.out.push(text);
    }

    fn reply_ok(&mut self, f: &Frame) {
        self.reply(f, ReplyStatus::Ok, &Empty {});
    }

    fn reply_error(&mut self, f: &Frame, reason: &'static str) {
        self.reply(f, ReplyStatus::Error, &Reason { reason });
    }

    /// Count a refusal; log it once per socket.
    fn refuse(&mut self, kind: &'static str, what: &str) {
        Metrics::inc(&self.st.metrics.bad_frames, kind);
        if self.logged.insert(kind) {
            tracing::info!(kind, what, "bad input on a socket (further ones counted, not logged)");
        }
    }

    fn on_text(&mut self, text: &str) {
        let frame = match Frame::parse(text) {
            Ok(f) => f,
            Err(e) => {
                self.refuse(e.kind(), &e.to_string());
                return;
            }
        };
        let member = self.channels.contains(&frame.topic);
        if let Err(refusal) = self.guard.check(&frame, member, Instant::now()) {
            return self.refuse_frame(&frame, refusal);
        }
        match (frame.topic.as_str(), frame.event.as_str()) {
            (PHOENIX_TOPIC, "heartbeat") => self.reply_ok(&frame),
            (dashboard::ADMIN_TOPIC, "phx_join" | "phx_leave") => self.on_admin(frame),
            (_, "phx_join") => self.on_join(frame),
            (_, "phx_leave") => self.on_leave(frame),
            (_, event) => {
                let event = event.to_owned();
                self.on_push(frame, event)
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
        if self.channels.contains(&f.topic) {
            Metrics::inc(&self.st.metrics.join_rejects, "already_joined");
            return self.reply_error(&f, "already_joined");
        }
        // The answer comes through the connection's queue, ahead of the topic's pushes, with
        // the node's shared copy of the topic, which the channel keeps from then on.
        let topic = Topic::from(f.topic.as_str());
        match self.channels.join(topic, tab, meta, f.join_ref.as_deref(), f.msg_ref.as_deref()) {
            Ok(()) => {}
            Err(e) => {
                Metrics::inc(&self.st.metrics.join_rejects, e.reason());
                self.reply_error(&f, e.reason());
            }
        }
    }

    /// The dashboard's topic: a feed of snapshots, not a presence topic (`dashboard.rs`).
    fn on_admin(&mut self, f: Frame) {
        if f.event == "phx_leave" {
            self.admin = None;
            self.reply_ok(&f);
            return self.send(Frame::close(f.join_ref.clone(), f.topic.clone()));
        }
        match dashboard::join(&self.st, &f.payload, f.join_ref.clone()) {
            Ok(feed) => {
                self.admin = Some(feed);
                self.reply_ok(&f);
            }
            Err(reason) => {
                Metrics::inc(&self.st.metrics.join_rejects, reason);
                self.reply_error(&f, reason);
            }
        }
    }

    fn on_leave(&mut self, f: Frame) {
        self.channels.leave(&f.topic);
        self.reply_ok(&f);
        self.send(Frame::close(f.join_ref.clone(), f.topic.clone()));
    }

    fn on_push(&mut self, f: Frame, event: String) {
        let Some(topic) = self.channels.joined_topic(&f.topic) else {
            self.refuse("not_joined", "push to a topic the socket has not joined");
            return self.reply_error(&f, "bad_request");
        };
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
        let result = if event == "presence:update" {
            match meta_from_json(&f.payload) {
                Ok(meta) => self.handle.update_meta(topic, meta),
                Err(_) => return self.reply_error(&f, "bad_request"),
            }
        } else {
            self.handle.push(topic, event, meta_value_from_json(&f.payload))
        };
        match result {
            Ok(()) => self.reply_ok(&f),
            Err(PushError::Unauthorized) => self.reply_error(&f, "unauthorized"),
            Err(_) => self.reply_error(&f, "bad_request"),
        }
    }

    fn on_outbound(&mut self, item: Outbound) {
        match item {
            Outbound::Joined { topic, channel, token } => {
                // Written straight from the channel's refs where they are kept and the slot's
                // token: the reply every join gets, with nothing copied for it first.
                let response = JoinedResponse { slot: token.as_ref().map(|token| SlotResponse { token }) };
                let encode = |join_ref: Option<&str>, msg_ref: Option<&str>| {
                    encode_reply(join_ref, msg_ref, topic.as_str(), ReplyStatus::Ok, &response)
                };
                let Some(text) = self.channels.granted(&topic, channel, encode) else { return };
                self.st.metrics.joins.inc();
                self.out.push(text);
            }
            Outbound::JoinFailed { topic, error } => {
                let Some(refs) = self.channels.refused(topic.as_str()) else { return };
                let msg_ref = refs.msg_ref.map(String::from);
                let f = Frame::reply(refs.join_ref, msg_ref, topic.as_str(), ReplyStatus::Ok, json!({}));
                self.join_refused(&f, &error);
            }
            Outbound::Revoked { topic, channel, reason } => {
                let Some(join_ref) = self.channels.remove_joined(topic.as_str(), channel) else { return };
                Metrics::inc(&self.st.metrics.revokes, guard::revoke_label(&reason));
                self.st.dashboard.revoked(self.user.as_ref(), topic.as_str(), &reason);
                let topic = topic.as_str().to_owned();
                self.send(Frame::push(join_ref.clone(), topic.clone(), "slot_revoked", json!({ "reason": reason })));
                self.send(Frame::close(join_ref, topic));
            }
            Outbound::Closed { topic, channel } => {
                let Some(join_ref) = self.channels.remove_joined(topic.as_str(), channel) else { return };
                self.send(Frame::close(join_ref, topic.as_str()));
            }
            Outbound::Push { channel, push } => {
                // A reserved event relayed by a node of an older version is never passed on.
                if matches!(push.body(), PushBody::Broadcast { event, .. } if guard::is_reserved_event(event)) {
                    return;
                }
                // A push for a channel since left (or for an earlier join of the topic) is dropped.
                let out = &mut self.out;
                self.channels
                    .with_join_ref(push.topic().as_str(), channel, |join_ref| send_shared(out, join_ref, &push));
            }
        }
    }

    fn join_refused(&mut self, f: &Frame, error: &JoinError) {
        Metrics::inc(&self.st.metrics.join_rejects, error.reason());
        self.reply_error(f, error.reason());
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
        for (topic, join_ref) in self.channels.drain() {
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
                // The connection failed inside the node: every channel errors (the client
                // rejoins).
                for (t, jr) in self.channels.drain() {
                    self.send(Frame::error(jr, t));
                }
                close(CLOSE_INTERNAL, "connection failed")
            }
        }
    }
}

/// A shared push: its bytes, encoded once for every receiver, with this channel's `join_ref`
/// in front, both written as they are (a long one as fragments of [`FRAGMENT`] bytes, the
/// shared bytes sliced, not copied).
fn send_shared(out: &mut Outbox, join_ref: Option<&str>, push: &Push) {
    let shared = match push.encoded() {
        Some(bytes) => bytes.clone(),
        None => PhoenixEncoder.encode(push.topic(), push.body()),
    };
    out.push_shared(join_ref, shared);
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_core::{ServerConfig, MIN_FLOW_WINDOW_BYTES};

    const DEFAULT_WINDOW: u64 = 16 * 1024;

    fn answer(flow: &FlowWindow) -> [u8; 8] {
        flow.sent.to_be_bytes()
    }

    #[test]
    fn a_client_silent_before_its_data_came_is_stalled_two_pings_after_it_was_last_heard() {
        let limit = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut flow = FlowWindow::new(t0, DEFAULT_WINDOW);
        // Last heard at t0; it stops reading. Data comes for it 1.5 s later and fills the window.
        let t1 = t0 + Duration::from_millis(1500);
        while flow.room() > 0 {
            if flow.wrote(t1, 4096) {
                flow.ping();
            }
        }
        let t2 = t0 + Duration::from_millis(2100);
        assert!(
            matches!(staleness(&flow, true, t0, t2, limit), Some(Staleness::Stalled)),
            "silent for two pings with data waiting"
        );
        assert!(staleness(&flow, true, t2, t2, limit).is_none(), "heard just now, data fresh");
        // Nothing waits: silence alone closes it as gone (1001).
        let idle = FlowWindow::new(t0, DEFAULT_WINDOW);
        assert!(matches!(staleness(&idle, false, t0, t2, limit), Some(Staleness::Silent)));
        assert!(staleness(&idle, false, t0, t0 + Duration::from_millis(1900), limit).is_none());
    }

    #[test]
    fn a_client_heard_within_half_a_ping_period_is_not_pinged_an_idle_one_is() {
        let every = Duration::from_secs(5);
        let t0 = Instant::now();
        assert!(!needs_ping(t0, t0 + Duration::from_millis(2499), every), "heard 2.499 s ago");
        assert!(needs_ping(t0, t0 + Duration::from_millis(2500), every), "silent for half a period");
        assert!(needs_ping(t0, t0 + every, every), "silent for a whole period");
        // A client that dies just after it was heard is still pinged before its verdict:
        // the tick after half a period pings it, and two periods after it was heard it is silent.
        let flow = FlowWindow::new(t0, DEFAULT_WINDOW);
        let ticks: Vec<Instant> = (0..4).map(|i| t0 + Duration::from_millis(300) + every * i).collect();
        let pinged: Vec<bool> = ticks.iter().map(|&t| needs_ping(t0, t, every)).collect();
        assert_eq!(pinged, [false, true, true, true]);
        let verdicts: Vec<bool> = ticks.iter().map(|&t| staleness(&flow, false, t0, t, every * 2).is_some()).collect();
        assert_eq!(verdicts, [false, false, true, true], "closed 2.3 periods after it was last heard, as before");
    }

    #[test]
    fn the_configured_window_closes_after_its_bytes_and_an_answered_ping_opens_it() {
        for window in [MIN_FLOW_WINDOW_BYTES, 32 * 1024, 64 * 1024, 100_000] {
            let t0 = Instant::now();
            let mut flow = FlowWindow::new(t0, window);
            assert_eq!(flow.room(), window);
            assert_eq!(flow.unanswered_since(), None);
            let mut pings = Vec::new();
            // Written as the socket task writes: never more than the room left.
            while flow.room() > 0 {
                let len = flow.room().min(4096);
                if flow.wrote(t0, len) {
                    pings.push(flow.ping());
                }
            }
            assert_eq!(flow.sent, window, "exactly the window is written, never more ({window})");
            assert_eq!(pings.len() as u64, window / IN_LINE_PING_BYTES, "a ping every 16 KiB ({window})");
            assert_eq!(flow.unanswered_since(), Some(t0));
            let t1 = t0 + Duration::from_secs(3);
            flow.pong(&pings[0], t1);
            assert_eq!(flow.room(), IN_LINE_PING_BYTES, "the first ping's bytes were read ({window})");
            let rest_unread = window > IN_LINE_PING_BYTES;
            assert_eq!(flow.unanswered_since(), rest_unread.then_some(t1), "progress seen at the pong ({window})");
            flow.pong(&answer(&flow), t1);
            assert_eq!((flow.room(), flow.unanswered_since()), (window, None));
        }
    }

    #[test]
    fn the_smallest_window_allowed_holds_one_in_line_ping() {
        assert_eq!(MIN_FLOW_WINDOW_BYTES, IN_LINE_PING_BYTES);
        assert_eq!(ServerConfig::default().flow_window_bytes, DEFAULT_WINDOW);
    }

    #[test]
    fn a_pong_naming_unwritten_bytes_or_an_old_offset_or_another_payload_moves_nothing() {
        let t0 = Instant::now();
        let mut flow = FlowWindow::new(t0, DEFAULT_WINDOW);
        flow.wrote(t0, 50_000);
        let t1 = t0 + Duration::from_secs(1);
        flow.pong(&(flow.sent + 1).to_be_bytes(), t1);
        flow.pong(b"", t1);
        flow.pong(b"not eight", t1);
        assert_eq!((flow.read, flow.unanswered_since()), (0, Some(t0)));
        flow.pong(&20_000u64.to_be_bytes(), t1);
        flow.pong(&10_000u64.to_be_bytes(), t1 + Duration::from_secs(1));
        assert_eq!((flow.read, flow.unanswered_since()), (20_000, Some(t1)), "an older offset is no progress");
        flow.pong(&answer(&flow), t1);
        assert_eq!(flow.unanswered_since(), None);
    }

    #[test]
    fn a_client_that_stops_reading_is_waited_on_from_its_last_answer_while_small_diffs_keep_coming() {
        let t0 = Instant::now();
        let mut flow = FlowWindow::new(t0, DEFAULT_WINDOW);
        flow.wrote(t0, 300);
        flow.pong(&answer(&flow), t0);
        // Three seconds of diffs after the client stopped reading: 40 of 300 bytes.
        for i in 0..40 {
            flow.wrote(t0 + Duration::from_millis(75 * i), 300);
        }
        assert_eq!(flow.unanswered_since(), Some(t0), "counted from the first unread write");
    }

    #[test]
    fn the_frames_reserved_for_a_write_are_never_fewer_than_it_queues() {
        let sizes = [10, FRAGMENT - 1, FRAGMENT, FRAGMENT + 1, 3 * FRAGMENT + 7, 90_000];
        for window in [DEFAULT_WINDOW, 64 * 1024] {
            for first in 0..sizes.len() {
                let mut out = Outbox::default();
                for &len in sizes[first..].iter().chain(&sizes[..first]) {
                    out.push_shared(Some("12"), Bytes::from(vec![b'x'; len]));
                }
                let mut flow = FlowWindow::new(Instant::now(), window);
                // A write part way through a message, as after an earlier write.
                flow.wrote(Instant::now(), 5000);
                let _ = out.messages.front_mut().map(Pending::next_frame);
                while !out.is_empty() {
                    let reserved = out.frames_within(flow.room());
                    // What write_queued queues: frames while the window has room, pings in line.
                    let mut queued = 0;
                    while flow.room() > 0 {
                        let Some((_, len)) = out.next_frame() else { break };
                        queued += 1;
                        if flow.wrote(Instant::now(), len as u64) {
                            flow.ping();
                            queued += 1;
                        }
                    }
                    assert!(queued <= reserved, "{queued} frames queued, {reserved} reserved ({window}, {first})");
                    flow.pong(&answer(&flow), Instant::now());
                }
            }
        }
    }

    #[test]
    fn an_emptied_outbox_gives_its_list_to_the_threads_spares_and_the_next_batch_takes_it() {
        let kept = || SPARE_MESSAGES.with(|s| s.borrow().kept());
        let mut out = Outbox::default();
        out.reserve(3);
        let room = out.messages.capacity();
        out.push("a".to_owned());
        assert_eq!(kept(), 0);
        while out.next_frame().is_some() {}
        assert_eq!((out.messages.capacity(), kept()), (0, 1));
        let mut next = Outbox::default();
        next.reserve(2);
        assert_eq!((next.messages.capacity(), kept()), (room, 0), "the same list, no new one");
    }

    #[test]
    fn a_batch_sized_at_once_takes_no_more_room_and_an_emptied_outbox_keeps_none() {
        let mut out = Outbox::default();
        out.reserve(5);
        let room = out.messages.capacity();
        assert!(room >= 5, "{room}");
        for n in 0..5 {
            out.push_shared(Some("1"), Bytes::from(vec![b'x'; 10 + n]));
        }
        assert_eq!(out.messages.capacity(), room, "the five fit in the room taken at once");
        let mut lens = Vec::new();
        while let Some((_, len)) = out.next_frame() {
            lens.push(len);
        }
        assert_eq!(lens, [14, 15, 16, 17, 18]);
        assert_eq!((out.is_empty(), out.messages.capacity()), (true, 0));
    }

    #[test]
    fn a_big_push_goes_out_as_fragments_sliced_from_the_shared_bytes_its_prefix_in_the_first() {
        let shared = Bytes::from(vec![b'x'; 2 * FRAGMENT + 10]);
        let mut out = Outbox::default();
        out.push_shared(Some("1"), shared.clone());
        out.push("after".to_owned());
        let prefix = br#"["1""#.len();
        assert_eq!(out.bytes, (prefix + shared.len() + 5) as u64);
        let mut lens = Vec::new();
        while let Some((frame, len)) = out.next_frame() {
            lens.push(len);
            let _ = frame;
        }
        assert_eq!(lens, [FRAGMENT, FRAGMENT, prefix + 10, 5]);
        assert_eq!((out.bytes, out.is_empty()), (0, true));
    }
}
