//! Node links under attack and over TLS: real `roster serve` processes (roster-testkit) and a
//! raw peer (`support/raw_peer.rs`) that speaks the link handshake and frames by hand. They
//! prove that a TLS cluster works, that a node refuses plaintext, foreign certificates and
//! certificates that do not name the claimed node, that a cookie holder cannot pose as another
//! node, that the cluster port bounds its handshakes in time and in number, and that a hung
//! peer's session is closed.
//!
//! They run one at a time (each holds [`serial`]), like every multi-process test; run the file
//! under `flock /tmp/roster-heavy.lock` on a shared machine:
//! `cargo test -p roster-server --test cluster_links`.

mod support {
    pub mod driver;
    #[allow(dead_code)]
    pub mod js;
    pub mod raw_peer;
}

use roster_core::{Config, Incarnation, PeerMsg};
use roster_server::{mint, Claims};
use roster_testkit::{Cluster, ClusterSpec, TestCa, Timings, COOKIE, SECRET};
use serde_json::{json, Value};
use std::io::Read;
use std::net::TcpStream as StdTcpStream;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::driver::JsDriver;
use support::raw_peer::{self, RawSession, Refusal};
use tokio::net::TcpStream;

const ROSTER: &str = env!("CARGO_BIN_EXE_roster");
/// Deadline for conditions with no promised bound: generous, a wait ends once its condition holds.
const SETTLE: Duration = Duration::from_secs(20);
/// Under [`ADMINS_EXEMPT`], admins hold no slot: what these tests see is the link alone.
const ADMINS_EXEMPT: &str = "topic = \"*\"\nexempt_roles = [\"admin\"]";

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
}

fn token(user: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs() + 3600;
    mint(SECRET.as_bytes(), &Claims::new(user, "admin", exp))
}

/// Node `i`'s `roster_cluster_link_total{reason="<reason>"}` (0 when not listed yet).
fn link_count(c: &Cluster, i: usize, reason: &str) -> u64 {
    let Ok((200, text)) = c.http_get(i, "/metrics") else { return 0 };
    let prefix = format!("roster_cluster_link_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// What node `i`'s `/cluster` says about peer `peer`: (`link`, `alive`, `incarnation`).
fn view(c: &Cluster, i: usize, peer: usize) -> Option<(String, bool, Option<String>)> {
    let p = c.peer_view(i, peer)?;
    Some((p["link"].as_str()?.to_owned(), p["alive"].as_bool()?, p["incarnation"].as_str().map(str::to_owned)))
}

fn linked(c: &Cluster, i: usize, peer: usize) -> bool {
    view(c, i, peer).is_some_and(|(link, alive, _)| link == "up" && alive)
}

/// The config fingerprint of the cluster (every node's is the same).
fn fingerprint(c: &Cluster) -> u64 {
    let text = std::fs::read_to_string(c.config_path(0)).expect("read a config");
    Config::from_toml_str(&text).expect("the testkit's config is valid").fingerprint()
}

/// A cluster of `a`, `b`, `c` in which only `b` and `c` run: the raw peer takes `a`'s place,
/// the node listed first, which is the one that dials `b`.
fn b_and_c_only(spec: ClusterSpec) -> Cluster {
    let mut c = spec.policy(ADMINS_EXEMPT).create(ROSTER);
    c.start_node(1);
    c.start_node(2);
    c.wait_ready(1);
    c.wait_ready(2);
    c
}

fn heartbeat(from: Incarnation) -> PeerMsg {
    PeerMsg::Heartbeat { from, sent_at: 1, leases: vec![], echoes: vec![], presence_seq: 0 }
}

#[test]
fn a_tls_cluster_links_every_node_and_replicates_presence() {
    let _serial = serial();
    let c = ClusterSpec::new(3).tls().policy(ADMINS_EXEMPT).start(ROSTER);
    c.wait_until(SETTLE, "every node links every other over TLS", |c| {
        (0..3).all(|i| (0..3).filter(|j| *j != i).all(|j| linked(c, i, j)))
    });
    for i in 0..3 {
        assert!(c.log(i).contains("tls=true"), "node {} runs without TLS:\n{}", c.name(i), c.log(i));
    }
    let js = JsDriver::start();
    let topic = "room:tls";
    for (i, user) in ["alice", "bob", "carol"].iter().enumerate() {
        let conn = format!("c{i}");
        js.connect(&conn, &c.socket_url(i), &token(user));
        let reply = js.join(&conn, topic, &format!("{user}-tab"), json!({"name": user}));
        assert_eq!(reply["status"], "ok", "{user} joins on node {}: {reply}", c.name(i));
    }
    c.wait_until(SETTLE, "every node lists alice, bob and carol", |c| {
        (0..3).all(|i| {
            c.try_presence(i, topic).is_some_and(|list: Value| {
                ["alice", "bob", "carol"].iter().all(|u| list[*u]["metas"].as_array().is_some_and(|m| m.len() == 1))
            })
        })
    });
    assert!(link_count(&c, 1, "frames_received") > 0);
}

#[test]
fn a_tls_node_refuses_plaintext_foreign_certificates_and_a_claim_its_certificate_does_not_name() {
    let _serial = serial();
    let c = b_and_c_only(ClusterSpec::new(3).tls());
    let (ca, _) = c.tls().expect("a TLS cluster");
    let b = c.cluster_addr(1);
    let fp = fingerprint(&c);
    let rt = runtime();

    // Plaintext: Roster's handshake without TLS.
    let plain = rt.block_on(async {
        let mut tcp = TcpStream::connect(b).await.expect("connect to b");
        raw_peer::handshake(&mut tcp, "a", "b", COOKIE, fp).await
    });
    assert!(matches!(plain, Err(Err(_))), "a plaintext handshake got through");
    c.wait_until(SETTLE, "b counts a failed TLS handshake", |c| link_count(c, 1, "handshake_tls") == 1);

    // A certificate of another CA, naming a.
    let other = TestCa::new("someone else's CA");
    let (cert, key) = other.issue(&["a"]);
    let foreign = rt.block_on(async {
        let tcp = TcpStream::connect(b).await.expect("connect to b");
        let mut tls =
            raw_peer::tls_connect(tcp, "b", &ca.cert_pem(), &cert, &key).await.map_err(|e| Err(e.to_string()))?;
        raw_peer::handshake(&mut tls, "a", "b", COOKIE, fp).await
    });
    assert!(matches!(foreign, Err(Err(_))), "a foreign certificate got through");
    c.wait_until(SETTLE, "b counts a second failed TLS handshake", |c| link_count(c, 1, "handshake_tls") == 2);

    // The cluster's CA, but a certificate for c claiming to be a.
    let (cert, key) = ca.issue(&["c"]);
    let misnamed = rt.block_on(async {
        let tcp = TcpStream::connect(b).await.expect("connect to b");
        let mut tls =
            raw_peer::tls_connect(tcp, "b", &ca.cert_pem(), &cert, &key).await.expect("TLS with c's certificate");
        raw_peer::handshake(&mut tls, "a", "b", COOKIE, fp).await
    });
    assert!(matches!(misnamed, Err(Ok(Refusal::CertName))), "b let c's certificate speak for a");
    assert_eq!(link_count(&c, 1, "handshake_cert_name"), 1);

    // The control: a's own certificate passes the same handshake.
    let (cert, key) = ca.issue(&["a"]);
    let good = rt.block_on(async {
        let tcp = TcpStream::connect(b).await.expect("connect to b");
        let mut tls =
            raw_peer::tls_connect(tcp, "b", &ca.cert_pem(), &cert, &key).await.expect("TLS with a's certificate");
        raw_peer::handshake(&mut tls, "a", "b", COOKIE, fp).await.map(|_| ())
    });
    assert!(good.is_ok(), "a's own certificate was refused: {:?}", good.err());
}

#[test]
fn a_raw_peer_with_the_cookie_posing_as_another_node_is_refused_and_counted() {
    let _serial = serial();
    let c = b_and_c_only(ClusterSpec::new(3));
    c.wait_until(SETTLE, "b links c", |c| linked(c, 1, 2));
    let (_, _, c_incarnation) = view(&c, 1, 2).expect("b's view of c");
    let fp = fingerprint(&c);
    let rt = runtime();
    let session = rt.block_on(async {
        let mut tcp = TcpStream::connect(c.cluster_addr(1)).await.expect("connect to b");
        let tickets = raw_peer::handshake(&mut tcp, "a", "b", COOKIE, fp).await.expect("the cookie holder passes");
        RawSession::open(tcp, "a", "b", COOKIE, tickets).await
    });

    // The control: speaking for itself, the raw peer is heard as a.
    let _guard = rt.enter();
    session.send("a", vec![heartbeat(Incarnation::new("a", 7))]);
    c.wait_until(SETTLE, "b hears a", |c| view(c, 1, 0).is_some_and(|(_, alive, _)| alive));

    // Posing as c: c's name on the envelope, c's heartbeat (a new incarnation) inside.
    for _ in 0..3 {
        session.send("c", vec![heartbeat(Incarnation::new("c", 99))]);
    }
    // Its own name on the envelope, but c's heartbeat inside.
    session.send("a", vec![heartbeat(Incarnation::new("c", 99))]);
    // Its own name on the envelope, and a goodbye for c (rule 16: it would mark c down).
    session.send("a", vec![PeerMsg::Goodbye { from: Incarnation::new("c", 99), released: vec![], settled: true }]);
    c.wait_until(SETTLE, "b refuses and counts all five frames", |c| link_count(c, 1, "refused_from_mismatch") == 5);
    let (_, alive, incarnation) = view(&c, 1, 2).expect("b's view of c");
    assert!(alive && incarnation == c_incarnation, "b took the forged heartbeat: c is now {incarnation:?}");
    let warnings = c.log(1).matches("speaks for c").count();
    assert_eq!(warnings, 1, "the refusal is logged once per peer:\n{}", c.log(1));
    session.close();
}

#[test]
fn a_connection_that_never_completes_the_handshake_is_closed_after_the_deadline() {
    let _serial = serial();
    let timeout_ms = 500;
    let c = ClusterSpec::new(2).cluster_key(&format!("handshake_timeout_ms = {timeout_ms}")).start(ROSTER);
    let mut idle = StdTcpStream::connect(c.cluster_addr(1)).expect("connect to b's cluster port");
    idle.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    let opened = Instant::now();
    let mut buf = [0u8; 64];
    let read = idle.read(&mut buf);
    let waited = opened.elapsed();
    assert!(matches!(read, Ok(0)), "the idle connection was not closed by b: {read:?} after {waited:?}");
    // A wait that must end: at the deadline, with a generous margin for a loaded machine.
    assert!(waited >= Duration::from_millis(timeout_ms - 50), "closed after {waited:?}, before the deadline");
    assert!(waited <= Duration::from_millis(timeout_ms) + Duration::from_secs(3), "closed only after {waited:?}");
    c.wait_until(SETTLE, "b counts the timeout", |c| link_count(c, 1, "handshake_timeout") == 1);
    assert!(linked(&c, 0, 1) && linked(&c, 1, 0), "the real link is untouched");
}

#[test]
fn connections_above_the_pending_cap_are_closed_at_once_and_peers_still_connect() {
    let _serial = serial();
    let c = ClusterSpec::new(2)
        .cluster_key("max_pending_sessions = 2")
        .cluster_key("handshake_timeout_ms = 20000")
        .start(ROSTER);
    let b = c.cluster_addr(1);
    let open = || {
        let s = StdTcpStream::connect(b).expect("connect to b's cluster port");
        s.set_read_timeout(Some(Duration::from_millis(300))).expect("read timeout");
        s
    };
    let still_open = |s: &mut StdTcpStream| {
        let mut buf = [0u8; 8];
        matches!(s.read(&mut buf), Err(ref e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    };
    let mut first = open();
    let mut second = open();
    let mut third = open();
    third.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    let mut buf = [0u8; 8];
    assert!(matches!(third.read(&mut buf), Ok(0)), "a third pending connection was kept");
    assert!(still_open(&mut first) && still_open(&mut second), "the two pending ones were closed");
    assert_eq!(link_count(&c, 1, "pending_cap"), 1);

    drop((first, second));
    c.wait_until(SETTLE, "b releases both places", |c| link_count(c, 1, "handshake_io") == 2);
    let mut fourth = open();
    assert!(still_open(&mut fourth), "a connection was refused with no handshake pending");
    assert_eq!(link_count(&c, 1, "pending_cap"), 1);
    assert!(linked(&c, 0, 1) && linked(&c, 1, 0), "the real link is untouched");
}

#[test]
fn a_sigstopped_peers_session_is_closed_once_it_falls_silent_and_returns_after_sigcont() {
    let _serial = serial();
    let t = Timings::FAST;
    let mut c = ClusterSpec::new(3).policy(ADMINS_EXEMPT).start(ROSTER);
    c.wait_until(SETTLE, "a and b link c", |c| linked(c, 0, 2) && linked(c, 1, 2));
    let stopped = Instant::now();
    c.sigstop(2);
    // Without frames for heartbeat_timeout_ms + heartbeat_ms, the session is closed: nothing
    // piles up for the hung node. A wait that must end, with a generous margin.
    c.wait_until(SETTLE, "a and b close their sessions with c", |c| {
        [0, 1].iter().all(|&i| view(c, i, 2).is_some_and(|(link, alive, _)| link == "down" && !alive))
    });
    let closed = stopped.elapsed();
    let bound = Duration::from_millis(t.heartbeat_timeout_ms + t.heartbeat_ms) + Duration::from_secs(2);
    assert!(closed <= bound, "sessions with a hung node lasted {closed:?} (at most {bound:?})");
    assert!(link_count(&c, 0, "silent_peer") >= 1 && link_count(&c, 1, "silent_peer") >= 1);
    c.sigcont(2);
    c.wait_until(SETTLE, "every node links c again", |c| {
        linked(c, 0, 2) && linked(c, 1, 2) && linked(c, 2, 0) && linked(c, 2, 1)
    });
}
