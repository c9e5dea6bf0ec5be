//! A raw peer: what someone who holds the cookie (and, with TLS, some certificate) can write by
//! hand against a node's cluster port. It speaks Roster's link handshake and frames from their
//! description in `docs/security.md` ("Node links") with its own copies of the wire types,
//! and opens a `ractor_cluster` session of its own, so a test can send a node any frame it
//! likes. Nothing here is Roster's code: if the wire changed, these tests fail loudly.

#![allow(dead_code)]

use hmac::{Hmac, KeyInit, Mac};
use ractor::ActorRef;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServer, NodeServerMessage};
use roster_core::PeerMsg;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// The codec's version byte (bincode 2, standard configuration, follows).
const CODEC_VERSION: u8 = 1;
const LINK_PROTOCOL: u32 = 3;

#[derive(Debug, Serialize, Deserialize)]
enum Hello {
    Dial { protocol: u32, from: String, to: String, fingerprint: u64, nonce: [u8; 32] },
    Accept { nonce: [u8; 32], proof: [u8; 32], ticket: [u8; 16] },
    Confirm { proof: [u8; 32], ticket: [u8; 16] },
    Refuse(Refusal),
}

/// Why a node refused the raw peer's handshake.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    Protocol,
    UnknownNode,
    WrongDirection,
    Fingerprint,
    CertName,
    Cookie,
}

/// The frame a node accepts: `from`, `to`, the session's ticket, the messages.
#[derive(Serialize)]
struct Envelope {
    from: String,
    to: String,
    ticket: [u8; 16],
    body: Vec<PeerMsg>,
}

/// The one message a node's `ClusterLink` takes (the variant's name is what travels).
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum LinkMsg {
    Frame(Vec<u8>),
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![CODEC_VERSION];
    out.extend(bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("encode"));
    out
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&CODEC_VERSION, body)) => bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| e.to_string()),
        _ => Err(format!("not a codec value: {bytes:?}")),
    }
}

async fn write_hello<S: AsyncWrite + Unpin>(s: &mut S, hello: &Hello) -> std::io::Result<()> {
    let body = encode(hello);
    s.write_all(&(body.len() as u32).to_be_bytes()).await?;
    s.write_all(&body).await?;
    s.flush().await
}

async fn read_hello<S: AsyncRead + Unpin>(s: &mut S) -> Result<Hello, String> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.map_err(|e| format!("read: {e}"))?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.map_err(|e| format!("read: {e}"))?;
    decode(&body)
}

fn proof(cookie: &str, role: &[u8], transcript: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(cookie.as_bytes()).expect("any key");
    m.update(role);
    m.update(transcript);
    m.finalize().into_bytes().into()
}

/// What the raw peer learned from a handshake that passed.
pub struct Tickets {
    /// The ticket the node issued: stamp it on frames sent to the node.
    pub outbound: [u8; 16],
}

/// Dial `to` as `me` over `stream` (already TLS, if the cluster uses it): the dialer's half of
/// the handshake. `Err(Ok(refusal))`: the node refused and said why; `Err(Err(text))`: the
/// connection failed otherwise.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    me: &str,
    to: &str,
    cookie: &str,
    fingerprint: u64,
) -> Result<Tickets, Result<Refusal, String>> {
    let nonce_d: [u8; 32] = rand::random();
    let dial = Hello::Dial { protocol: LINK_PROTOCOL, from: me.into(), to: to.into(), fingerprint, nonce: nonce_d };
    write_hello(stream, &dial).await.map_err(|e| Err(e.to_string()))?;
    let (nonce_a, outbound) = match read_hello(stream).await.map_err(Err)? {
        Hello::Accept { nonce, ticket, .. } => (nonce, ticket),
        Hello::Refuse(r) => return Err(Ok(r)),
        other => return Err(Err(format!("unexpected {other:?}"))),
    };
    let transcript = encode(&(LINK_PROTOCOL, me, to, fingerprint, &nonce_d, &nonce_a));
    let confirm = Hello::Confirm { proof: proof(cookie, b"roster-link confirm", &transcript), ticket: rand::random() };
    write_hello(stream, &confirm).await.map_err(|e| Err(e.to_string()))?;
    Ok(Tickets { outbound })
}

/// A TLS client for the raw peer: trusts `ca_pem`, presents `cert_pem`/`key_pem`.
pub async fn tls_connect(
    tcp: TcpStream,
    server_name: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.expect("CA PEM")).expect("a CA certificate");
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).map(|c| c.expect("certificate PEM")).collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client certificate");
    let name = ServerName::try_from(server_name.to_owned()).expect("a DNS name");
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

struct Stream<S>(S);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClusterBidiStream for Stream<S> {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (r, w) = tokio::io::split(self.0);
        (Box::new(r), Box::new(w))
    }
}

/// A `ractor_cluster` session of the raw peer over a stream that passed the handshake.
pub struct RawSession {
    server: ActorRef<NodeServerMessage>,
    to: String,
    me: String,
    ticket: [u8; 16],
}

impl RawSession {
    /// Open a session named `me` (as `ractor_cluster` names it: `me@raw-peer`) over `stream`
    /// and wait until `to`'s `ClusterLink` is visible through it.
    pub async fn open<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        stream: S,
        me: &str,
        to: &str,
        cookie: &str,
        tickets: Tickets,
    ) -> RawSession {
        let server = NodeServer::new(0, cookie.to_owned(), me.to_owned(), "raw-peer".to_owned(), None, None)
            .with_listen_addr(std::net::IpAddr::from([127, 0, 0, 1]));
        let (server, _) = ractor::Actor::spawn(None, server, ()).await.expect("raw peer NodeServer");
        server
            .cast(NodeServerMessage::ConnectionOpenedExternal { stream: Box::new(Stream(stream)), is_server: false })
            .expect("hand the stream over");
        let session = RawSession { server, to: to.to_owned(), me: me.to_owned(), ticket: tickets.outbound };
        let deadline = Instant::now() + Duration::from_secs(10);
        while session.link().is_none() {
            assert!(Instant::now() < deadline, "no session to {to}'s ClusterLink within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        session
    }

    fn link(&self) -> Option<ractor::ActorCell> {
        ractor::pg::get_members(&format!("roster.link.{}", self.to)).into_iter().find(|c| !c.get_id().is_local())
    }

    /// Send the node a frame saying it comes from `from`, carrying `msgs`, with the session's
    /// ticket.
    pub fn send(&self, from: &str, msgs: Vec<PeerMsg>) {
        let env = Envelope { from: from.to_owned(), to: self.to.clone(), ticket: self.ticket, body: msgs };
        let cell = self.link().expect("the session is up");
        ActorRef::<LinkMsg>::from(cell).cast(LinkMsg::Frame(encode(&env))).expect("cast the frame");
    }

    /// This raw peer's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Close the session.
    pub fn close(self) {
        self.server.stop(None);
    }
}
