//! The link's counters, one per [`LinkEvent`], for `roster_cluster_link_total{reason=...}`, and
//! the "log the first of each kind per peer" rule for refusals.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Something the cluster link counts. [`LinkEvent::name`] is its `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkEvent {
    /// A frame handed to the transport (it carries every message queued for its peer).
    FramesSent,
    /// A message handed to the transport.
    MessagesSent,
    /// Bytes handed to the transport.
    BytesSent,
    /// A frame received and accepted.
    FramesReceived,
    /// A message dropped because no session to its peer was up.
    DroppedNoSession,
    /// A message dropped because it alone encoded to more than the payload limit.
    DroppedOversize,
    /// A frame refused: not a valid envelope.
    RefusedUndecodable,
    /// A frame refused: its ticket belongs to no session (forged, or garbage).
    RefusedUnknownSession,
    /// A frame refused: it claims to come from another node than the session's peer.
    RefusedFromMismatch,
    /// A frame refused: addressed to another node.
    RefusedWrongAddressee,
    /// A frame of a session that has closed since, dropped (it was in flight).
    StaleSession,
    /// A session that came up.
    SessionsUp,
    /// A session that closed.
    SessionsDown,
    /// A dial that failed (connect refused or timed out, TLS or handshake failed).
    DialFailures,
    /// An inbound connection closed at once: [`max_pending_sessions`] were already in their
    /// handshake.
    ///
    /// [`max_pending_sessions`]: roster_core::ClusterConfig::max_pending_sessions
    PendingCap,
    /// A connection that did not finish its handshake within `handshake_timeout_ms`.
    HandshakeTimeout,
    /// A TLS handshake that failed (no or a wrong certificate, not TLS at all).
    HandshakeTls,
    /// A handshake whose messages were not Roster's link handshake.
    HandshakeMalformed,
    /// A handshake that failed on I/O (the peer hung up).
    HandshakeIo,
    /// A peer that did not prove the cookie.
    HandshakeCookie,
    /// A peer that is not in `[[cluster.nodes]]`, or dialed the wrong node.
    HandshakeUnknownNode,
    /// A peer that dialed although the pair's dialer is this node.
    HandshakeWrongDirection,
    /// A peer whose shared settings ([`roster_core::Config::fingerprint`]) differ.
    HandshakeFingerprint,
    /// A peer whose certificate does not name the node it claims to be.
    HandshakeCertName,
    /// A peer speaking another version of the link protocol.
    HandshakeProtocol,
    /// This node's handshake refused by the peer (it says why; see its log).
    HandshakeRefusedByPeer,
    /// A `ractor_cluster` session that Roster's handshake did not open, closed at once.
    UnvettedSession,
    /// A session closed because its peer sent nothing for `heartbeat_timeout_ms +
    /// heartbeat_ms` (a hung peer: the core has declared it down, and what is queued for it
    /// would only pile up).
    SilentPeer,
}

impl LinkEvent {
    /// Every event, in the order `/metrics` lists them.
    pub const ALL: [LinkEvent; 28] = [
        LinkEvent::FramesSent,
        LinkEvent::MessagesSent,
        LinkEvent::BytesSent,
        LinkEvent::FramesReceived,
        LinkEvent::DroppedNoSession,
        LinkEvent::DroppedOversize,
        LinkEvent::RefusedUndecodable,
        LinkEvent::RefusedUnknownSession,
        LinkEvent::RefusedFromMismatch,
        LinkEvent::RefusedWrongAddressee,
        LinkEvent::StaleSession,
        LinkEvent::SessionsUp,
        LinkEvent::SessionsDown,
        LinkEvent::DialFailures,
        LinkEvent::PendingCap,
        LinkEvent::HandshakeTimeout,
        LinkEvent::HandshakeTls,
        LinkEvent::HandshakeMalformed,
        LinkEvent::HandshakeIo,
        LinkEvent::HandshakeCookie,
        LinkEvent::HandshakeUnknownNode,
        LinkEvent::HandshakeWrongDirection,
        LinkEvent::HandshakeFingerprint,
        LinkEvent::HandshakeCertName,
        LinkEvent::HandshakeProtocol,
        LinkEvent::HandshakeRefusedByPeer,
        LinkEvent::UnvettedSession,
        LinkEvent::SilentPeer,
    ];

    /// The `reason` label: `frames_sent`, `refused_from_mismatch`, `handshake_timeout`, ...
    pub fn name(self) -> &'static str {
        match self {
            LinkEvent::FramesSent => "frames_sent",
            LinkEvent::MessagesSent => "messages_sent",
            LinkEvent::BytesSent => "bytes_sent",
            LinkEvent::FramesReceived => "frames_received",
            LinkEvent::DroppedNoSession => "dropped_no_session",
            LinkEvent::DroppedOversize => "dropped_oversize",
            LinkEvent::RefusedUndecodable => "refused_undecodable",
            LinkEvent::RefusedUnknownSession => "refused_unknown_session",
            LinkEvent::RefusedFromMismatch => "refused_from_mismatch",
            LinkEvent::RefusedWrongAddressee => "refused_wrong_addressee",
            LinkEvent::StaleSession => "stale_session",
            LinkEvent::SessionsUp => "sessions_up",
            LinkEvent::SessionsDown => "sessions_down",
            LinkEvent::DialFailures => "dial_failures",
            LinkEvent::PendingCap => "pending_cap",
            LinkEvent::HandshakeTimeout => "handshake_timeout",
            LinkEvent::HandshakeTls => "handshake_tls",
            LinkEvent::HandshakeMalformed => "handshake_malformed",
            LinkEvent::HandshakeIo => "handshake_io",
            LinkEvent::HandshakeCookie => "handshake_cookie",
            LinkEvent::HandshakeUnknownNode => "handshake_unknown_node",
            LinkEvent::HandshakeWrongDirection => "handshake_wrong_direction",
            LinkEvent::HandshakeFingerprint => "handshake_fingerprint",
            LinkEvent::HandshakeCertName => "handshake_cert_name",
            LinkEvent::HandshakeProtocol => "handshake_protocol",
            LinkEvent::HandshakeRefusedByPeer => "handshake_refused_by_peer",
            LinkEvent::UnvettedSession => "unvetted_session",
            LinkEvent::SilentPeer => "silent_peer",
        }
    }

    fn index(self) -> usize {
        LinkEvent::ALL.iter().position(|e| *e == self).unwrap_or(0)
    }
}

/// How many warnings the "once per peer and kind" rule remembers; beyond that (a flood of
/// distinct garbage) refusals are still counted but logged at debug level only.
const MAX_WARNED: usize = 1024;

/// The counters of the link, for `/metrics` and `/cluster`.
#[derive(Debug, Default)]
pub struct LinkCounters {
    counts: [AtomicU64; LinkEvent::ALL.len()],
    warned: Mutex<HashSet<String>>,
}

impl LinkCounters {
    /// The count of `event` so far.
    pub fn get(&self, event: LinkEvent) -> u64 {
        self.counts[event.index()].load(Ordering::Relaxed)
    }

    /// Every counter with its `reason` label, in [`LinkEvent::ALL`] order.
    pub fn all(&self) -> Vec<(&'static str, u64)> {
        LinkEvent::ALL.iter().map(|e| (e.name(), self.get(*e))).collect()
    }

    pub(crate) fn add(&self, event: LinkEvent, n: u64) {
        self.counts[event.index()].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn inc(&self, event: LinkEvent) {
        self.add(event, 1);
    }

    /// Count `event` and log `why` as a warning the first time `event` happens for `who` (a
    /// peer's name or address); later ones are logged at debug level.
    pub(crate) fn refuse(&self, event: LinkEvent, who: &str, why: impl FnOnce() -> String) {
        self.inc(event);
        let first = {
            let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
            warned.len() < MAX_WARNED && warned.insert(format!("{}|{who}", event.name()))
        };
        if first {
            tracing::warn!(reason = event.name(), peer = who, "cluster link: {} (logged once per peer)", why());
        } else {
            tracing::debug!(reason = event.name(), peer = who, "cluster link: {}", why());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_its_own_counter_and_a_distinct_label() {
        let c = LinkCounters::default();
        for (i, e) in LinkEvent::ALL.iter().enumerate() {
            c.add(*e, i as u64 + 1);
        }
        let all = c.all();
        let names: HashSet<&str> = all.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), LinkEvent::ALL.len());
        for (i, (_, v)) in all.iter().enumerate() {
            assert_eq!(*v, i as u64 + 1);
        }
    }

    #[test]
    fn a_refusal_is_counted_every_time_and_remembered_once_per_peer_and_kind() {
        let c = LinkCounters::default();
        for _ in 0..3 {
            c.refuse(LinkEvent::RefusedFromMismatch, "c", || "claims b".into());
        }
        c.refuse(LinkEvent::RefusedFromMismatch, "d", || "claims b".into());
        assert_eq!(c.get(LinkEvent::RefusedFromMismatch), 4);
        assert_eq!(c.warned.lock().unwrap().len(), 2);
    }
}
