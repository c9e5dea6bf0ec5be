//! Roster's link handshake: what two nodes say to each other on a new connection (after TLS,
//! when configured) before the stream is handed to `ractor_cluster`.
//!
//! ```text
//! dialer D                                              acceptor A
//!   Dial { protocol, from: D, to: A, fingerprint, nD } ──▶  checks: to = A; D configured and
//!                                                          listed before A; same fingerprint;
//!                                                          with TLS, D's certificate names D
//!   ◀── Accept { nA, proof_A, ticket_for_D }
//!   checks proof_A
//!   Confirm { proof_D, ticket_for_A } ──────────────────▶  checks proof_D
//! ```
//!
//! `proof = HMAC-SHA256(cookie, role ‖ codec(protocol, D, A, fingerprint, nD, nA))`, with role
//! `"roster-link accept"` or `"roster-link confirm"`: each side proves the cookie for this very
//! exchange (fresh nonces from both), so a recorded handshake cannot be replayed. A refusal is
//! sent as `Refuse(reason)` before closing, so the other side logs why.
//!
//! The tickets bind every later frame to this session (see [`super::wire::Ticket`]). Each
//! message is a big-endian `u32` length and a [`crate::codec`] value, at most
//! [`MAX_HELLO_BYTES`].

use super::counters::LinkEvent;
use super::wire::Ticket;
use crate::codec;
use hmac::{Hmac, KeyInit, Mac};
use roster_core::NodeName;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The version of this handshake and of the frames that follow it. Raise it whenever a
/// node-to-node message changes shape, so that nodes of two versions refuse each other at the
/// handshake instead of refusing each other's frames one by one.
/// 2: `ScanReply::complete` (rule 15), `PeerMsg::Goodbye` (rule 16), `LeaseReply::before`.
/// 3: a frame carries the core's messages only: validations, broadcasts and flushes became
/// `PeerMsg::{Validate, ValidateReply, Broadcast, Flush, FlushAck}`.
pub(crate) const LINK_PROTOCOL: u32 = 3;
/// The longest handshake message accepted.
pub(crate) const MAX_HELLO_BYTES: usize = 4096;

type Nonce = [u8; 32];
type Proof = [u8; 32];

#[derive(Debug, Serialize, Deserialize)]
enum Hello {
    Dial { protocol: u32, from: NodeName, to: NodeName, fingerprint: u64, nonce: Nonce },
    Accept { nonce: Nonce, proof: Proof, ticket: Ticket },
    Confirm { proof: Proof, ticket: Ticket },
    Refuse(Refusal),
}

/// Why one side refused the other's handshake (sent to the other side before closing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Refusal {
    /// Another version of the link protocol.
    Protocol,
    /// The dialer is not in `[[cluster.nodes]]`, or dialed another node than this one.
    UnknownNode,
    /// The dialer is listed after this node: this node is the one that dials the pair.
    WrongDirection,
    /// The shared settings differ ([`roster_core::Config::fingerprint`]).
    Fingerprint,
    /// The dialer's TLS certificate does not name the node it claims to be.
    CertName,
    /// The proof of the cookie is wrong.
    Cookie,
}

impl Refusal {
    fn event(self) -> LinkEvent {
        match self {
            Refusal::Protocol => LinkEvent::HandshakeProtocol,
            Refusal::UnknownNode => LinkEvent::HandshakeUnknownNode,
            Refusal::WrongDirection => LinkEvent::HandshakeWrongDirection,
            Refusal::Fingerprint => LinkEvent::HandshakeFingerprint,
            Refusal::CertName => LinkEvent::HandshakeCertName,
            Refusal::Cookie => LinkEvent::HandshakeCookie,
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Refusal::Protocol => "it speaks another version of the link protocol (a different Roster build)",
            Refusal::UnknownNode => "it is not in [[cluster.nodes]], or dialed another node than the one here",
            Refusal::WrongDirection => {
                "it dialed although the node listed first in [[cluster.nodes]] dials (do the configs list the nodes \
                 in the same order?)"
            }
            Refusal::Fingerprint => {
                "its cluster config differs (node list, partitions, timings or policies must be identical)"
            }
            Refusal::CertName => "its TLS certificate has no DNS name equal to the node name it claims",
            Refusal::Cookie => "it did not prove [cluster] cookie (the cookies differ)",
        }
    }
}

/// Why a handshake failed; nothing was handed to `ractor_cluster` and the connection is closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The peer could not be reached (connection refused, no route): it is down or starting.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// Reading or writing failed (the other side hung up).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Not finished within `handshake_timeout_ms`.
    #[error("not finished within handshake_timeout_ms")]
    Timeout,
    /// TLS failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// A message that is not this handshake's.
    #[error("not Roster's link handshake: {0}")]
    Malformed(String),
    /// This side refused the other.
    #[error("refused the peer: {}", .0.explain())]
    Refused(Refusal),
    /// The other side refused this one.
    #[error("the peer refused this node: {}", .0.explain())]
    RefusedByPeer(Refusal),
}

impl HandshakeError {
    /// What the link counts for this failure.
    pub fn event(&self) -> LinkEvent {
        match self {
            HandshakeError::Connect(_) => LinkEvent::DialFailures,
            HandshakeError::Io(_) => LinkEvent::HandshakeIo,
            HandshakeError::Timeout => LinkEvent::HandshakeTimeout,
            HandshakeError::Tls(_) => LinkEvent::HandshakeTls,
            HandshakeError::Malformed(_) => LinkEvent::HandshakeMalformed,
            HandshakeError::Refused(r) => r.event(),
            HandshakeError::RefusedByPeer(_) => LinkEvent::HandshakeRefusedByPeer,
        }
    }
}

/// What both sides of every handshake of this node need.
#[derive(Clone)]
pub(crate) struct HandshakeCtx {
    /// This node.
    pub me: NodeName,
    /// `[cluster] cookie`.
    pub cookie: Vec<u8>,
    /// This node's [`roster_core::Config::fingerprint`].
    pub fingerprint: u64,
    /// `[[cluster.nodes]]` names in file order (the earlier of a pair dials).
    pub nodes: Vec<NodeName>,
}

/// A finished handshake: who the peer is and the session's two tickets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Authenticated {
    /// The peer, authenticated by the cookie (and its certificate with TLS).
    pub peer: NodeName,
    /// The ticket this node issued: the peer stamps it on every frame it sends here.
    pub inbound: Ticket,
    /// The ticket the peer issued: this node stamps it on every frame it sends there.
    pub outbound: Ticket,
}

/// The dialer's side: this node dialed `to`.
pub(crate) async fn dial<S>(stream: &mut S, ctx: &HandshakeCtx, to: &NodeName) -> Result<Authenticated, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let nonce_d: Nonce = rand::random();
    let dial = Hello::Dial {
        protocol: LINK_PROTOCOL,
        from: ctx.me.clone(),
        to: to.clone(),
        fingerprint: ctx.fingerprint,
        nonce: nonce_d,
    };
    write(stream, &dial).await?;
    let (nonce_a, proof_a, outbound) = match read(stream).await? {
        Hello::Accept { nonce, proof, ticket } => (nonce, proof, ticket),
        Hello::Refuse(r) => return Err(HandshakeError::RefusedByPeer(r)),
        other => return Err(HandshakeError::Malformed(format!("expected Accept, got {}", kind(&other)))),
    };
    let transcript = transcript(&ctx.me, to, ctx.fingerprint, &nonce_d, &nonce_a);
    if !verify(&ctx.cookie, ACCEPT, &transcript, &proof_a) {
        let _ = write(stream, &Hello::Refuse(Refusal::Cookie)).await;
        return Err(HandshakeError::Refused(Refusal::Cookie));
    }
    let inbound: Ticket = rand::random();
    write(stream, &Hello::Confirm { proof: prove(&ctx.cookie, CONFIRM, &transcript), ticket: inbound }).await?;
    Ok(Authenticated { peer: to.clone(), inbound, outbound })
}

/// The acceptor's side. `certified(name)` says whether the peer's TLS certificate names
/// `name` (always true without TLS).
pub(crate) async fn accept<S>(
    stream: &mut S,
    ctx: &HandshakeCtx,
    certified: impl Fn(&NodeName) -> bool,
) -> Result<Authenticated, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (protocol, from, to, fingerprint, nonce_d) = match read(stream).await? {
        Hello::Dial { protocol, from, to, fingerprint, nonce } => (protocol, from, to, fingerprint, nonce),
        other => return Err(HandshakeError::Malformed(format!("expected Dial, got {}", kind(&other)))),
    };
    let position = |n: &NodeName| ctx.nodes.iter().position(|x| x == n);
    let refusal = if protocol != LINK_PROTOCOL {
        Some(Refusal::Protocol)
    } else if to != ctx.me || from == ctx.me {
        Some(Refusal::UnknownNode)
    } else {
        match (position(&from), position(&ctx.me)) {
            (None, _) | (_, None) => Some(Refusal::UnknownNode),
            (Some(d), Some(a)) if d > a => Some(Refusal::WrongDirection),
            _ if fingerprint != ctx.fingerprint => Some(Refusal::Fingerprint),
            _ if !certified(&from) => Some(Refusal::CertName),
            _ => None,
        }
    };
    if let Some(r) = refusal {
        let _ = write(stream, &Hello::Refuse(r)).await;
        return Err(HandshakeError::Refused(r));
    }
    let nonce_a: Nonce = rand::random();
    let transcript = transcript(&from, &ctx.me, ctx.fingerprint, &nonce_d, &nonce_a);
    let inbound: Ticket = rand::random();
    let accept = Hello::Accept { nonce: nonce_a, proof: prove(&ctx.cookie, ACCEPT, &transcript), ticket: inbound };
    write(stream, &accept).await?;
    let (proof_d, outbound) = match read(stream).await? {
        Hello::Confirm { proof, ticket } => (proof, ticket),
        Hello::Refuse(r) => return Err(HandshakeError::RefusedByPeer(r)),
        other => return Err(HandshakeError::Malformed(format!("expected Confirm, got {}", kind(&other)))),
    };
    if !verify(&ctx.cookie, CONFIRM, &transcript, &proof_d) {
        let _ = write(stream, &Hello::Refuse(Refusal::Cookie)).await;
        return Err(HandshakeError::Refused(Refusal::Cookie));
    }
    Ok(Authenticated { peer: from, inbound, outbound })
}

const ACCEPT: &[u8] = b"roster-link accept";
const CONFIRM: &[u8] = b"roster-link confirm";

fn kind(h: &Hello) -> &'static str {
    match h {
        Hello::Dial { .. } => "Dial",
        Hello::Accept { .. } => "Accept",
        Hello::Confirm { .. } => "Confirm",
        Hello::Refuse(_) => "Refuse",
    }
}

fn transcript(dialer: &NodeName, acceptor: &NodeName, fingerprint: u64, nd: &Nonce, na: &Nonce) -> Vec<u8> {
    codec::encode(&(LINK_PROTOCOL, dialer, acceptor, fingerprint, nd, na)).unwrap_or_default()
}

fn mac(cookie: &[u8], role: &[u8], transcript: &[u8]) -> Hmac<Sha256> {
    let mut m =
        <Hmac<Sha256> as KeyInit>::new_from_slice(cookie).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    m.update(role);
    m.update(transcript);
    m
}

fn prove(cookie: &[u8], role: &[u8], transcript: &[u8]) -> Proof {
    mac(cookie, role, transcript).finalize().into_bytes().into()
}

/// Constant-time check of a proof.
fn verify(cookie: &[u8], role: &[u8], transcript: &[u8], proof: &Proof) -> bool {
    mac(cookie, role, transcript).verify_slice(proof).is_ok()
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, hello: &Hello) -> Result<(), HandshakeError> {
    let body = codec::encode(hello).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads exactly one message and nothing after it: what follows belongs to `ractor_cluster`.
async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Hello, HandshakeError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HELLO_BYTES {
        return Err(HandshakeError::Malformed(format!("a message of {len} bytes (at most {MAX_HELLO_BYTES})")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    codec::decode(&body).map_err(|e| HandshakeError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(me: &str, cookie: &str) -> HandshakeCtx {
        HandshakeCtx {
            me: me.into(),
            cookie: cookie.as_bytes().to_vec(),
            fingerprint: 42,
            nodes: ["a", "b", "c"].into_iter().map(NodeName::from).collect(),
        }
    }

    /// Runs a dial from `d` to `to` against an acceptor `a` over an in-memory pipe.
    async fn run(
        d: HandshakeCtx,
        to: &str,
        a: HandshakeCtx,
        certified: impl Fn(&NodeName) -> bool,
    ) -> (Result<Authenticated, HandshakeError>, Result<Authenticated, HandshakeError>) {
        let (mut x, mut y) = tokio::io::duplex(64 * 1024);
        let to = NodeName::from(to);
        let dialer = async move { dial(&mut x, &d, &to).await };
        let acceptor = async move { accept(&mut y, &a, certified).await };
        tokio::join!(dialer, acceptor)
    }

    #[tokio::test]
    async fn both_sides_learn_the_peer_and_swap_tickets() {
        let (d, a) = run(ctx("a", "k"), "b", ctx("b", "k"), |_| true).await;
        let (d, a) = (d.unwrap(), a.unwrap());
        assert_eq!((d.peer.as_str(), a.peer.as_str()), ("b", "a"));
        assert_eq!(d.inbound, a.outbound);
        assert_eq!(d.outbound, a.inbound);
        assert_ne!(d.inbound, d.outbound);
    }

    #[tokio::test]
    async fn a_wrong_cookie_is_refused_on_both_sides() {
        let (d, a) = run(ctx("a", "k1"), "b", ctx("b", "k2"), |_| true).await;
        assert!(matches!(d, Err(HandshakeError::Refused(Refusal::Cookie))), "{d:?}");
        assert!(matches!(a, Err(HandshakeError::RefusedByPeer(Refusal::Cookie))), "{a:?}");
    }

    #[tokio::test]
    async fn the_acceptor_refuses_the_wrong_direction_an_unknown_node_and_another_config() {
        let (d, a) = run(ctx("c", "k"), "b", ctx("b", "k"), |_| true).await;
        assert!(matches!(d, Err(HandshakeError::RefusedByPeer(Refusal::WrongDirection))), "{d:?}");
        assert_eq!(a.unwrap_err().event(), LinkEvent::HandshakeWrongDirection);
        let (_, a) = run(ctx("m", "k"), "b", ctx("b", "k"), |_| true).await;
        assert_eq!(a.unwrap_err().event(), LinkEvent::HandshakeUnknownNode);
        let (_, a) = run(ctx("a", "k"), "c", ctx("b", "k"), |_| true).await;
        assert_eq!(a.unwrap_err().event(), LinkEvent::HandshakeUnknownNode, "dialed c, reached b");
        let mut other = ctx("a", "k");
        other.fingerprint = 43;
        let (d, a) = run(other, "b", ctx("b", "k"), |_| true).await;
        assert_eq!(a.unwrap_err().event(), LinkEvent::HandshakeFingerprint);
        assert_eq!(d.unwrap_err().event(), LinkEvent::HandshakeRefusedByPeer);
    }

    #[tokio::test]
    async fn the_acceptor_refuses_a_claim_its_certificate_does_not_name() {
        let (d, a) = run(ctx("a", "k"), "b", ctx("b", "k"), |n| n.as_str() == "c").await;
        assert_eq!(a.unwrap_err().event(), LinkEvent::HandshakeCertName);
        assert!(matches!(d, Err(HandshakeError::RefusedByPeer(Refusal::CertName))));
    }

    #[tokio::test]
    async fn a_dial_of_the_previous_link_protocol_is_refused_as_another_build() {
        assert_eq!(LINK_PROTOCOL, 3, "3: validations, broadcasts and flushes are core messages");
        let (mut x, mut y) = tokio::io::duplex(64 * 1024);
        let old = Hello::Dial {
            protocol: LINK_PROTOCOL - 1,
            from: "a".into(),
            to: "b".into(),
            fingerprint: 42,
            nonce: [1; 32],
        };
        write(&mut x, &old).await.unwrap();
        let err = accept(&mut y, &ctx("b", "k"), |_| true).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Refused(Refusal::Protocol)), "{err:?}");
        assert_eq!(err.event(), LinkEvent::HandshakeProtocol);
        assert!(matches!(read(&mut x).await.unwrap(), Hello::Refuse(Refusal::Protocol)));
    }

    #[tokio::test]
    async fn garbage_and_oversized_messages_are_malformed() {
        let (mut x, mut y) = tokio::io::duplex(64 * 1024);
        x.write_all(b"\x00\x00\x00\x05hello").await.unwrap();
        let err = accept(&mut y, &ctx("b", "k"), |_| true).await.unwrap_err();
        assert_eq!(err.event(), LinkEvent::HandshakeMalformed);
        x.write_all(&(MAX_HELLO_BYTES as u32 + 1).to_be_bytes()).await.unwrap();
        let err = accept(&mut y, &ctx("b", "k"), |_| true).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Malformed(ref m) if m.contains("4097 bytes")), "{err:?}");
        drop(x);
        let err = accept(&mut y, &ctx("b", "k"), |_| true).await.unwrap_err();
        assert_eq!(err.event(), LinkEvent::HandshakeIo);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, failure_persistence: None, ..Default::default() })]

        /// Whatever a connection sends first, the acceptor answers with an error, never a panic.
        #[test]
        fn random_first_messages_are_refused_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let result = rt.block_on(async {
                let (mut x, mut y) = tokio::io::duplex(64 * 1024);
                let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
                framed.extend_from_slice(&bytes);
                x.write_all(&framed).await.unwrap();
                drop(x);
                accept(&mut y, &ctx("b", "k"), |_| true).await
            });
            proptest::prop_assert!(result.is_err());
        }
    }
}
