//! Connections on the cluster port and to peers, up to the moment they are handed to
//! `ractor_cluster`: Roster's own listener (a cap on connections still in their handshake, a
//! deadline for each), the dial of one peer, TLS when configured, then the link handshake.
//! A connection that passes is handed over with `NodeServerMessage::ConnectionOpenedExternal`,
//! labelled so the keeper can tell it from any other session.

use super::counters::LinkEvent;
use super::handshake::{self, Authenticated, HandshakeCtx, HandshakeError};
use super::keeper::Event;
use super::links::Links;
use super::tls::{certificate_names, LinkTls};
use ractor::ActorRef;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};
use roster_core::NodeName;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// The prefix of the label of every connection Roster's handshake vetted.
pub(crate) const LABEL_PREFIX: &str = "roster-link/";
/// How long to pause accepting after the listener fails (out of file descriptors): the
/// connections already queued in the kernel wait meanwhile.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// A byte stream of either kind (plain TCP or TLS).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A vetted connection as `ractor_cluster` receives it.
struct LinkStream {
    io: Box<dyn Io>,
    label: String,
}

impl ClusterBidiStream for LinkStream {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (r, w) = tokio::io::split(self.io);
        (Box::new(r), Box::new(w))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.label.clone())
    }
}

/// What every connection of this node needs.
pub(crate) struct Transport {
    pub handshake: HandshakeCtx,
    pub tls: Option<LinkTls>,
    pub links: Arc<Links>,
    pub server: ActorRef<NodeServerMessage>,
    pub events: mpsc::UnboundedSender<Event>,
    pub handshake_timeout: Duration,
    next_label: AtomicU64,
}

impl Transport {
    pub fn new(
        handshake: HandshakeCtx,
        tls: Option<LinkTls>,
        links: Arc<Links>,
        server: ActorRef<NodeServerMessage>,
        events: mpsc::UnboundedSender<Event>,
        handshake_timeout: Duration,
    ) -> Transport {
        Transport { handshake, tls, links, server, events, handshake_timeout, next_label: AtomicU64::new(1) }
    }

    /// Accept connections on the cluster port forever: at most `max_pending` at once in
    /// their handshake (one more is closed at once), each within `handshake_timeout`.
    pub async fn accept_loop(self: Arc<Self>, listener: TcpListener, max_pending: usize) {
        let pending = Arc::new(Semaphore::new(max_pending));
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster port: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                self.links.counters.refuse(LinkEvent::PendingCap, &addr.ip().to_string(), || {
                    format!("{max_pending} connections already in their handshake: closed a new one from {addr}")
                });
                drop(tcp);
                continue;
            };
            let deadline = Instant::now() + self.handshake_timeout;
            let me = self.clone();
            tokio::spawn(async move {
                let from = addr.to_string();
                match tokio::time::timeout_at(deadline.into(), me.accept_one(tcp)).await {
                    Ok(Ok((io, auth))) => me.hand_over(io, auth, false, deadline, Some(permit)),
                    Ok(Err(e)) => me.count_failure(&e, addr.ip().to_string(), &from),
                    Err(_) => me.count_failure(&HandshakeError::Timeout, addr.ip().to_string(), &from),
                }
            });
        }
    }

    async fn accept_one(&self, tcp: TcpStream) -> Result<(Box<dyn Io>, Authenticated), HandshakeError> {
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) => {
                let (mut stream, cert) = tls.accept(tcp).await?;
                let auth = handshake::accept(&mut stream, &self.handshake, |n| certificate_names(&cert, n)).await?;
                Ok((Box::new(stream), auth))
            }
            None => {
                let mut stream = tcp;
                let auth = handshake::accept(&mut stream, &self.handshake, |_| true).await?;
                Ok((Box::new(stream), auth))
            }
        }
    }

    /// Dial `peer` at `addr`: connect, TLS, handshake, all within `handshake_timeout`; the
    /// keeper hears [`Event::DialFailed`] if any step fails.
    pub fn dial(self: &Arc<Self>, peer: NodeName, addr: String) {
        let me = self.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + me.handshake_timeout;
            let result = tokio::time::timeout_at(deadline.into(), me.dial_one(&peer, &addr)).await;
            match result {
                Ok(Ok((io, auth))) => me.hand_over(io, auth, true, deadline, None),
                Ok(Err(HandshakeError::Connect(e))) => {
                    // A peer that is down or starting: expected, and retried with backoff.
                    me.links.counters.inc(LinkEvent::DialFailures);
                    tracing::debug!(peer = %peer, addr = %addr, error = %e, "dial failed");
                    let _ = me.events.send(Event::DialFailed { peer });
                }
                Ok(Err(e)) => {
                    me.links.counters.inc(LinkEvent::DialFailures);
                    me.count_failure(&e, peer.to_string(), &format!("{peer} at {addr}"));
                    let _ = me.events.send(Event::DialFailed { peer });
                }
                Err(_) => {
                    me.links.counters.inc(LinkEvent::DialFailures);
                    me.count_failure(&HandshakeError::Timeout, peer.to_string(), &format!("{peer} at {addr}"));
                    let _ = me.events.send(Event::DialFailed { peer });
                }
            }
        });
    }

    async fn dial_one(&self, peer: &NodeName, addr: &str) -> Result<(Box<dyn Io>, Authenticated), HandshakeError> {
        let tcp = TcpStream::connect(addr).await.map_err(HandshakeError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) => {
                let mut stream = tls.connect(tcp, peer).await?;
                let auth = handshake::dial(&mut stream, &self.handshake, peer).await?;
                Ok((Box::new(stream), auth))
            }
            None => {
                let mut stream = tcp;
                let auth = handshake::dial(&mut stream, &self.handshake, peer).await?;
                Ok((Box::new(stream), auth))
            }
        }
    }

    /// Tell the keeper who the connection authenticated, then give it to `ractor_cluster`
    /// (in that order: the keeper must know the label before the session opens).
    fn hand_over(
        &self,
        io: Box<dyn Io>,
        auth: Authenticated,
        outgoing: bool,
        deadline: Instant,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let serial = self.next_label.fetch_add(1, Ordering::Relaxed);
        let label = format!("{LABEL_PREFIX}{}/{serial}", auth.peer);
        let peer = auth.peer.clone();
        let vetted = Event::Vetted { label: label.clone(), auth, outgoing, deadline, permit };
        if self.events.send(vetted).is_err() {
            return; // the link is stopping
        }
        let stream = Box::new(LinkStream { io, label });
        if self.server.cast(NodeServerMessage::ConnectionOpenedExternal { stream, is_server: !outgoing }).is_err() {
            tracing::warn!(peer = %peer, "cluster link: the NodeServer is gone, connection dropped");
        }
    }

    fn count_failure(&self, e: &HandshakeError, who: String, what: &str) {
        let event = e.event();
        self.links.counters.refuse(event, &who, || format!("handshake with {what} failed: {e}"));
    }
}
