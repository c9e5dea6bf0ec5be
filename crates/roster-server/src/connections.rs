//! The accept loop of `http_addr`: every TCP connection is admitted against the socket limits
//! (`max_sockets`, `max_sockets_per_ip`) before a byte of it is read, then served by hyper's
//! HTTP/1.1 with a header-read timeout (`header_read_timeout_ms`: idle and slowloris
//! connections end) and a deadline on each request once its head is read
//! (`request_timeout_ms`: a trickled body, a stalled upgrade).
//!
//! `axum::serve` hides hyper's connection settings, so this drives hyper's `http1` connection
//! itself, as `axum::serve` does inside (with upgrades, graceful shutdown, `TCP_NODELAY`).
//!
//! A connection over a limit is answered with a fixed response (503 for `max_sockets`, 429 for
//! `max_sockets_per_ip`) written at once, without reading its request, and closed. Its place
//! in the limits ([`ConnectionPermit`]) is held by the task serving it and, once upgraded to a
//! WebSocket, by the socket's task.

use crate::app::{router, AppState};
use crate::limits::{ConnectionPermit, Limit};
use crate::metrics::Metrics;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// Refused connections being answered at once; beyond this many, a refused connection is
/// closed without an answer (a flood must not hold descriptors for its answers).
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// After shutdown, how long WebSockets are given to write their close frames (each write is
/// bounded at 500 ms by the socket).
const WEBSOCKETS_CLOSING: Duration = Duration::from_secs(2);

/// How long a refused connection is given to take its answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Serve the node's router on `listener` until `shutdown` resolves; then stop accepting, let
/// each connection finish its request, and return once they have and every WebSocket has
/// ended (the node's shutdown closes them), or after [`WEBSOCKETS_CLOSING`].
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let server = &state.node.config().server;
    let request_timeout = Duration::from_millis(server.request_timeout_ms);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_millis(server.header_read_timeout_ms));
    let http = Arc::new(http);
    let router = router(state.clone());
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    // Dropping `stop_tx` asks every connection to finish; `done_tx.closed()` resolves once every
    // connection task has dropped its `done_rx`.
    let (stop_tx, stop_rx) = watch::channel(());
    let (done_tx, done_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors or memory: wait for connections to end, not spin.
                    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let permit = match state.limits.admit_connection(peer.ip()) {
            Ok(permit) => Arc::new(permit),
            Err(limit) => {
                refuse_connection(&state, stream, peer, limit, &refusals);
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let connection = Connection { state: state.clone(), router: router.clone(), peer, permit, request_timeout };
        let (http, stop_rx, done_rx) = (http.clone(), stop_rx.clone(), done_rx.clone());
        tokio::spawn(async move {
            connection.serve(stream, &http, stop_rx).await;
            drop(done_rx);
        });
    }
    drop(stop_tx);
    drop(done_rx);
    done_tx.closed().await;
    // WebSockets closed by the node's shutdown are still writing their close frames (1012):
    // give them that time before the process may exit.
    let _ = tokio::time::timeout(WEBSOCKETS_CLOSING, state.limits.all_closed()).await;
    Ok(())
}

/// Errors of one connection that does not exist any more: accept the next.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// One admitted connection.
struct Connection {
    state: Arc<AppState>,
    router: axum::Router,
    peer: SocketAddr,
    /// Its place in the limits; each request carries a clone, so an upgraded WebSocket keeps it.
    permit: Arc<ConnectionPermit>,
    request_timeout: Duration,
}

impl Connection {
    async fn serve(self, stream: TcpStream, http: &hyper::server::conn::http1::Builder, mut stop: watch::Receiver<()>) {
        let state = self.state.clone();
        let peer = self.peer;
        let this = Arc::new(self);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let this = this.clone();
            async move { Ok::<_, Infallible>(this.answer(req).await) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        match result {
            Err(e) if e.is_timeout() => note_limit(&state, peer, Limit::HeaderReadTimeout),
            Err(e) => tracing::debug!(error = %e, %peer, "HTTP connection ended with an error"),
            Ok(()) => {}
        }
    }

    /// One request: the router's answer, or 408 once `request_timeout` has passed.
    async fn answer(&self, req: Request<Incoming>) -> Response {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        req.extensions_mut().insert(self.permit.clone());
        match tokio::time::timeout(self.request_timeout, self.router.clone().oneshot(req)).await {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => {
                note_limit(&self.state, self.peer, Limit::RequestTimeout);
                let mut response =
                    (StatusCode::REQUEST_TIMEOUT, "request not completed within server.request_timeout_ms\n")
                        .into_response();
                response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
                response
            }
        }
    }
}

/// Count `limit` and log it once for `peer`'s address.
fn note_limit(state: &AppState, peer: SocketAddr, limit: Limit) {
    Metrics::inc(&state.metrics.limited, limit.key());
    if state.limits.log_once(limit, peer.ip()) {
        tracing::info!(%peer, limit = limit.key(), "connection refused or closed by a limit (further ones from this address counted, not logged)");
    }
}

/// The fixed answer to a connection over `limit`.
fn refusal_response(limit: Limit) -> Vec<u8> {
    let (status, body) = match limit {
        Limit::Total => ("503 Service Unavailable", "this node is full (server.max_sockets reached)\n"),
        _ => ("429 Too Many Requests", "too many connections from this address (server.max_sockets_per_ip)\n"),
    };
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answer a connection over `limit` and close it, without reading its request (at most
/// [`MAX_REFUSALS_IN_FLIGHT`] at once, each for at most [`REFUSAL_LINGER`]).
fn refuse_connection(
    state: &AppState,
    mut stream: TcpStream,
    peer: SocketAddr,
    limit: Limit,
    refusals: &Arc<Semaphore>,
) {
    note_limit(state, peer, limit);
    let Ok(permit) = refusals.clone().try_acquire_owned() else { return };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            stream.write_all(&refusal_response(limit)).await?;
            stream.shutdown().await?;
            // Read what the client sent before closing, so the close is not a reset that could
            // destroy the answer before the client reads it.
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
        drop(permit);
    });
}

/// The answer to a WebSocket upgrade over `limit` (`max_sockets_per_user`): 429, counted and
/// logged once per user.
pub(crate) fn refuse_upgrade(state: &AppState, limit: Limit, user: &str) -> Response {
    Metrics::inc(&state.metrics.limited, limit.key());
    if state.limits.log_once_for(limit, user.to_owned()) {
        tracing::info!(
            user,
            limit = limit.key(),
            "socket refused by a limit (further ones of this user counted, not logged)"
        );
    }
    (StatusCode::TOO_MANY_REQUESTS, format!("too many sockets for this user (server.{})\n", limit.key()))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_responses_have_exact_content_lengths() {
        for limit in [Limit::Total, Limit::PerIp] {
            let bytes = refusal_response(limit);
            let text = std::str::from_utf8(&bytes).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length: ")).and_then(|n| n.parse().ok()).unwrap();
            assert_eq!(length, body.len(), "{text}");
        }
    }
}
