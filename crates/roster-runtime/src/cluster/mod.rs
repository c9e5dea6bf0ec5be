//! The cluster link: Roster's node-to-node traffic, authenticated per node, over
//! `ractor_cluster`.
//!
//! ```text
//! NodeActor ── Effect::Send ──▶ Links (outbox per peer) ── sender task: frames ──▶ pg "roster.link.<peer>"
//!                                                                │  ractor_cluster session
//!                                                                │  (TLS, Roster's handshake)
//! peer's ClusterLink ◀───────────────────────────────────────────┘
//!     └── decode, ticket → session's peer, every claimed sender = that peer ──▶ peer's PeerInbox
//! cluster port ─▶ Transport: pending cap, deadline, TLS, handshake ─▶ NodeServer (ConnectionOpenedExternal)
//! Keeper (task): vetted connections ↔ NodeServer sessions, link up/down, deadlines, silence, Dialer
//! ```
//!
//! Layout, one concept per file:
//! - `wire`: what a frame carries ([`LinkMsg`], `Envelope`, `Wire`, tickets, claimed senders).
//! - `links`: [`Links`], the sending side and the table of open sessions.
//! - `link_actor`: `ClusterLink`, the receiving side.
//! - `handshake`: Roster's link handshake (cookie proofs, tickets).
//! - `tls`: mutual TLS from `[cluster.tls]`.
//! - `transport`: the cluster port's listener and the dial of one peer, up to the hand-over.
//! - `dialer`: when to dial which peer (backoff), plain data.
//! - `keeper`: follows every session; link up and down.
//! - `counters`: [`LinkCounters`] and [`LinkEvent`], `roster_cluster_link_total{reason}`.
//!
//! Rules (see `docs/architecture.md`, "Between nodes", and `docs/security.md`, "Node links"):
//! - Roster listens on `cluster_addr` itself and dials itself; `ractor_cluster`'s own listener
//!   is confined to an ephemeral port on 127.0.0.1, and any session it opens is closed at once.
//! - Of each pair only the node listed first in `[[cluster.nodes]]` dials, forever, with backoff.
//! - A connection gets `handshake_timeout_ms` to finish TLS, Roster's handshake and
//!   `ractor_cluster`'s session set-up; at most `max_pending_sessions` inbound ones at once.
//! - Frames are bound to the session's authenticated peer by the session's ticket; a frame
//!   claiming another sender is refused and counted.
//! - Liveness is decided by the core from Roster's heartbeats; the link adds what only it
//!   knows: a closed session (a killed process is noticed in milliseconds) and a silent one
//!   (closed after `heartbeat_timeout_ms + heartbeat_ms` without a frame, so nothing piles up
//!   for a hung peer).

mod counters;
mod dialer;
mod handshake;
mod keeper;
mod link_actor;
mod links;
mod tls;
mod transport;
mod wire;

pub use counters::{LinkCounters, LinkEvent};

pub use links::{LinkStatus, Links};
pub use wire::LinkMsg;

use crate::codec::MAX_PAYLOAD_BYTES;
use crate::node_actor::{NodeMsg, PeerInbox};
use dialer::Dialer;
use handshake::HandshakeCtx;
use keeper::{Keeper, Subscription};
use link_actor::{ClusterLink, ClusterLinkArgs};
use links::group_of;
use ractor::{Actor, ActorRef};
use ractor_cluster::{NodeServer, NodeServerMessage};
use roster_core::{Config, NodeName};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use transport::Transport;

/// The largest frame `ractor_cluster` reads from a peer: the payload limit and room for its
/// own envelope. A peer that sends more is disconnected before anything is allocated.
pub const MAX_FRAME_BYTES: u64 = MAX_PAYLOAD_BYTES as u64 + 64 * 1024;

/// A running cluster link: the listener, the `NodeServer`, the `ClusterLink` actor, the
/// keeper and the sender task.
pub struct Cluster {
    /// The shared sending side.
    pub links: Arc<Links>,
    server: ActorRef<NodeServerMessage>,
    link: ActorRef<LinkMsg>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Start node `me`'s side of the cluster: listen on its `cluster_addr`, dial the peers it
    /// dials, deliver to `node`.
    pub async fn start(
        config: &Config,
        me: &NodeName,
        links: Arc<Links>,
        node: ActorRef<NodeMsg>,
        inbox: Arc<PeerInbox>,
    ) -> Result<Cluster, crate::RuntimeError> {
        let fail = |what: String| crate::RuntimeError::ClusterLink(what);
        let cluster = &config.cluster;
        let own = config.require_node(me)?;
        let tls = if cluster.tls.enabled() {
            Some(tls::LinkTls::load(&cluster.tls, me).map_err(fail)?)
        } else {
            if !cluster.is_loopback_only() {
                tracing::warn!(
                    "node-to-node links are plaintext ([cluster.tls] is not set) while a cluster_addr is not a \
                     loopback address: anyone on the network path can read and alter them"
                );
            }
            None
        };
        let listener = TcpListener::bind(own.cluster_addr.as_str())
            .await
            .map_err(|e| fail(format!("cannot listen on cluster_addr {}: {e}", own.cluster_addr)))?;
        // ractor_cluster always opens a listener of its own: confine it to an ephemeral port on
        // loopback. Every connection Roster accepts or dials goes through its own handshake.
        let server = NodeServer::new(
            0,
            cluster.cookie.clone(),
            me.to_string(),
            "roster".to_owned(),
            None,
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .with_max_inbound_frame_size(MAX_FRAME_BYTES);
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| crate::RuntimeError::Spawn(format!("cluster NodeServer: {e}")))?;
        let link_args = ClusterLinkArgs { links: links.clone(), node: node.clone(), inbox };
        let (link, _) = Actor::spawn(None, ClusterLink, link_args)
            .await
            .map_err(|e| crate::RuntimeError::Spawn(format!("ClusterLink: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "roster.link".into(),
                subscription: Box::new(Subscription(tx.clone())),
            })
            .map_err(|e| crate::RuntimeError::Spawn(format!("cluster events: {e}")))?;
        let handshake = HandshakeCtx {
            me: me.clone(),
            cookie: cluster.cookie.as_bytes().to_vec(),
            fingerprint: config.fingerprint(),
            nodes: cluster.nodes.iter().map(|n| n.name.clone()).collect(),
        };
        let handshake_timeout = Duration::from_millis(cluster.handshake_timeout_ms);
        let transport = Arc::new(Transport::new(handshake, tls, links.clone(), server.clone(), tx, handshake_timeout));
        let my_pos = cluster.nodes.iter().position(|n| &n.name == me).unwrap_or(0);
        let dials = cluster.nodes[my_pos + 1..].iter().map(|n| (n.name.clone(), n.cluster_addr.clone()));
        let silence = Duration::from_millis(cluster.heartbeat_timeout_ms + cluster.heartbeat_ms);
        let keeper = Keeper::new(links.clone(), node, transport.clone(), Dialer::new(dials, Instant::now()), silence);
        let sender_links = links.clone();
        let sender = async move {
            loop {
                sender_links.wake.notified().await;
                sender_links.transmit();
            }
        };
        let max_pending = cluster.max_pending_sessions as usize;
        let tasks = vec![
            tokio::spawn(keeper.run(rx)),
            tokio::spawn(sender),
            tokio::spawn(transport.accept_loop(listener, max_pending)),
        ];
        tracing::info!(node = %me, listen = %own.cluster_addr, tls = cluster.tls.enabled(), "cluster link listening");
        Ok(Cluster { links, server, link, tasks })
    }

    /// Stop: close the listener and every session (peers notice at once) and stop dialing.
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
        ractor::pg::leave(group_of(&self.links.me), vec![self.link.get_cell()]);
        self.link.stop(None);
        self.server.stop(Some("node shutdown".into()));
    }
}

/// Frames of every kind, for the codec's property tests.
#[cfg(test)]
pub(crate) mod fuzz_samples {
    pub(crate) use super::wire::{sample_envelopes, Envelope};
}
