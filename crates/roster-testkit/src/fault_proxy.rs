//! A TCP proxy between two nodes that a test can break: [`FaultProxy::cut`] (every connection
//! closed, new ones refused), [`FaultProxy::stall`] (connections stay open but no byte moves:
//! a hung link), [`FaultProxy::stall_one_way`] (bytes move in one direction only: a one-way
//! cut, which TCP cannot express by closing), [`FaultProxy::delay`] (every byte arrives that
//! much later) and [`FaultProxy::heal`]. Plain threads and blocking sockets on 127.0.0.1: no
//! privileges, no `iptables`.
//!
//! ```text
//!   node a ──dials──▶ FaultProxy (127.0.0.1:free) ──▶ node b's cluster_addr
//!                      cut / stall / heal
//! ```
//!
//! Each accepted connection is one *link*: the client side, a fresh connection to the target,
//! and per direction a reader and a writer thread joined by a small bounded queue of chunks
//! stamped with their read time (the writer holds each until its time plus the current delay,
//! so a delay is a delay line, not a throughput limit). A reader that reads bytes while its
//! direction is stalled holds them until `heal` (then passes them on) and reads nothing more;
//! the kernel buffers whatever the sender writes meanwhile, and the sender blocks once those
//! fill, as it would towards a hung process.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How long the proxy tries to reach its target for one accepted connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Chunks one direction of a link may hold between its reader and its writer.
const QUEUE_CHUNKS: usize = 64;

/// One direction of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the dialing side (the node listed earlier) to the target.
    ToTarget,
    /// From the target back to the dialing side.
    FromTarget,
}

/// What the proxy does with bytes and connections right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// Forward everything (the normal state, and the state after [`FaultProxy::heal`]).
    Open,
    /// Every connection was closed; new ones are accepted and closed at once.
    Cut,
    /// Connections stay open (new ones too) but no byte is forwarded.
    Stalled,
    /// Connections stay open; bytes move in the other direction only.
    StalledOneWay(Direction),
    /// Everything is forwarded, each chunk this long after it was read.
    Delayed(Duration),
}

impl LinkMode {
    /// Whether bytes going `direction` are held.
    fn holds(self, direction: Direction) -> bool {
        match self {
            LinkMode::Stalled => true,
            LinkMode::StalledOneWay(d) => d == direction,
            LinkMode::Open | LinkMode::Cut | LinkMode::Delayed(_) => false,
        }
    }

    fn delay(self) -> Duration {
        match self {
            LinkMode::Delayed(d) => d,
            _ => Duration::ZERO,
        }
    }
}

/// A TCP proxy from a free port on 127.0.0.1 to a target address. See the module docs.
///
/// Dropping it closes the listener and every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<ProxyState>,
    /// Signalled on every change of `state.mode` and when a link ends.
    changed: Condvar,
    accepted: AtomicU64,
    refused: AtomicU64,
    forwarded: AtomicU64,
}

struct ProxyState {
    mode: LinkMode,
    links: Vec<Link>,
    next_link: u64,
    closing: bool,
}

/// The two sockets of one forwarded connection (clones, to shut them down from outside the
/// pumps).
struct Link {
    id: u64,
    client: TcpStream,
    upstream: TcpStream,
}

impl Link {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

impl FaultProxy {
    /// Listen on `127.0.0.1:0` and forward every connection to `target` (which need not be
    /// listening yet: a connection the target refuses is closed).
    pub fn start(target: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(ProxyState { mode: LinkMode::Open, links: Vec::new(), next_link: 0, closing: false }),
            changed: Condvar::new(),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("fault-proxy-{}", addr.port()))
                .spawn(move || accept_loop(listener, target, shared))?
        };
        Ok(FaultProxy { addr, target, shared, acceptor: Some(acceptor) })
    }

    /// Where clients connect: `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Close every current connection, both directions, and refuse new ones (accept and close
    /// at once) until [`heal`](Self::heal).
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        state.mode = LinkMode::Cut;
        for link in state.links.drain(..) {
            link.close();
        }
        self.shared.changed.notify_all();
    }

    /// Keep connections open (and accept new ones) but forward no byte until
    /// [`heal`](Self::heal), which forwards what was held. A link that is cut while stalled
    /// loses what it held.
    pub fn stall(&self) {
        let mut state = self.shared.lock();
        if state.mode != LinkMode::Cut {
            state.mode = LinkMode::Stalled;
        }
        self.shared.changed.notify_all();
    }

    /// Keep connections open but forward no byte going `direction` until
    /// [`heal`](Self::heal); the other direction flows. A one-way cut: the side that stops
    /// hearing its peer declares it down, the other keeps hearing it.
    pub fn stall_one_way(&self, direction: Direction) {
        let mut state = self.shared.lock();
        if state.mode != LinkMode::Cut {
            state.mode = LinkMode::StalledOneWay(direction);
        }
        self.shared.changed.notify_all();
    }

    /// Forward everything, both directions, `delay` after it was read, until
    /// [`heal`](Self::heal). Each chunk waits for the delay in force when its writer takes it.
    pub fn delay(&self, delay: Duration) {
        let mut state = self.shared.lock();
        if state.mode != LinkMode::Cut {
            state.mode = LinkMode::Delayed(delay);
        }
        self.shared.changed.notify_all();
    }

    /// Back to forwarding: new connections are accepted, stalled ones resume.
    pub fn heal(&self) {
        self.shared.lock().mode = LinkMode::Open;
        self.shared.changed.notify_all();
    }

    /// The current mode.
    pub fn mode(&self) -> LinkMode {
        self.shared.lock().mode
    }

    /// Connections accepted so far, including those refused while cut.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections accepted and closed at once because the proxy was cut (or the target
    /// refused them).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections forwarded to the target so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Connections forwarded and still open.
    pub fn open_links(&self) -> usize {
        self.shared.lock().links.len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.closing = true;
            state.mode = LinkMode::Cut;
            for link in state.links.drain(..) {
                link.close();
            }
            self.shared.changed.notify_all();
        }
        // Wake the acceptor blocked in accept(); it sees `closing` and ends.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ProxyState> {
        // A pump that panicked cannot leave the state inconsistent: every change is one field.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.lock().closing {
            return;
        }
        let Ok(client) = client else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.lock().mode == LinkMode::Cut {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (Ok(client_copy), Ok(upstream_copy)) = (client.try_clone(), upstream.try_clone()) else {
            continue;
        };
        let (Ok(client_read), Ok(upstream_read)) = (client.try_clone(), upstream.try_clone()) else {
            continue;
        };
        let id = {
            // Registered under the lock that `cut` takes, so a cut either sees this link or
            // happened before and refuses it here.
            let mut state = shared.lock();
            if state.mode == LinkMode::Cut || state.closing {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let id = state.next_link;
            state.next_link += 1;
            state.links.push(Link { id, client: client_copy, upstream: upstream_copy });
            id
        };
        shared.forwarded.fetch_add(1, Ordering::SeqCst);
        for (direction, from, to) in
            [(Direction::ToTarget, client_read, upstream), (Direction::FromTarget, upstream_read, client)]
        {
            let (tx, rx) = mpsc::sync_channel(QUEUE_CHUNKS);
            let reader_shared = shared.clone();
            let _ = thread::Builder::new()
                .name(format!("fault-proxy-read-{id}"))
                .spawn(move || read_side(id, direction, from, tx, reader_shared));
            let shared = shared.clone();
            let _ = thread::Builder::new()
                .name(format!("fault-proxy-write-{id}"))
                .spawn(move || write_side(id, rx, to, shared));
        }
    }
}

/// Read bytes `from` one side and queue them with their read time until the side closes or
/// the link is cut; hold them while `direction` is stalled.
fn read_side(
    id: u64,
    direction: Direction,
    mut from: TcpStream,
    to: mpsc::SyncSender<(Instant, Vec<u8>)>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut read_at = Instant::now();
        {
            let mut state = shared.lock();
            let mut held = false;
            while state.mode.holds(direction) && state.links.iter().any(|l| l.id == id) {
                held = true;
                state = shared.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if !state.links.iter().any(|l| l.id == id) {
                // Cut (or closed by the other direction) while holding bytes: they are lost,
                // as on a real broken link.
                break;
            }
            if held {
                // Released by a heal: they leave now, not as if read before the stall.
                read_at = Instant::now();
            }
        }
        if to.send((read_at, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Read);
    // Dropping `to` ends the writer once it has written what is queued.
}

/// Write queued chunks `to` the other side, each at its read time plus the delay in force,
/// until the reader ends or a write fails; then end the whole link, as a peer process would
/// see a closed session.
fn write_side(id: u64, from: mpsc::Receiver<(Instant, Vec<u8>)>, mut to: TcpStream, shared: Arc<Shared>) {
    while let Ok((read_at, bytes)) = from.recv() {
        let due = read_at + shared.lock().mode.delay();
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        if !shared.lock().links.iter().any(|l| l.id == id) {
            break;
        }
        if to.write_all(&bytes).is_err() {
            break;
        }
    }
    let mut state = shared.lock();
    if let Some(i) = state.links.iter().position(|l| l.id == id) {
        state.links.swap_remove(i).close();
    }
    let _ = to.shutdown(Shutdown::Both);
    shared.changed.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const WAIT: Duration = Duration::from_secs(5);

    /// An echo server on a free port; counts the connections it accepted.
    fn echo_server() -> (SocketAddr, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let seen = count.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                seen.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, count)
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    /// Send `msg` and read the same number of bytes back.
    fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        got
    }

    /// Whether the peer closed `s`: a read returns end of file or a reset within [`WAIT`].
    fn closed_by_peer(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe)
            }
        }
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn forwards_both_directions_and_counts_connections() {
        let (target, seen) = echo_server();
        let proxy = FaultProxy::start(target).unwrap();
        assert_eq!(proxy.target(), target);
        let mut a = connect(proxy.addr());
        let mut b = connect(proxy.addr());
        assert_eq!(round_trip(&mut a, b"hello"), b"hello");
        assert_eq!(round_trip(&mut b, b"world"), b"world");
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(round_trip(&mut a, &big), big);
        assert_eq!((proxy.accepted(), proxy.forwarded(), proxy.refused()), (2, 2, 0));
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        assert_eq!(proxy.open_links(), 2);
        drop(a);
        wait_for("the closed link is gone", || proxy.open_links() == 1);
    }

    #[test]
    fn cut_closes_every_connection_and_refuses_new_ones_until_heal() {
        let (target, seen) = echo_server();
        let proxy = FaultProxy::start(target).unwrap();
        let mut a = connect(proxy.addr());
        let mut b = connect(proxy.addr());
        assert_eq!(round_trip(&mut a, b"1"), b"1");
        assert_eq!(round_trip(&mut b, b"2"), b"2");

        proxy.cut();
        assert_eq!(proxy.mode(), LinkMode::Cut);
        assert!(closed_by_peer(&mut a), "a is closed by the cut");
        assert!(closed_by_peer(&mut b), "b is closed by the cut");
        assert_eq!(proxy.open_links(), 0);

        let mut refused = connect(proxy.addr());
        assert!(closed_by_peer(&mut refused), "a new connection is closed at once");
        assert_eq!((proxy.accepted(), proxy.forwarded(), proxy.refused()), (3, 2, 1));
        assert_eq!(seen.load(Ordering::SeqCst), 2, "the target never saw the refused one");

        proxy.heal();
        let mut c = connect(proxy.addr());
        assert_eq!(round_trip(&mut c, b"back"), b"back");
        assert_eq!((proxy.accepted(), proxy.forwarded(), proxy.refused()), (4, 3, 1));
    }

    #[test]
    fn stall_holds_bytes_and_heal_delivers_them_on_the_same_connection() {
        let (target, seen) = echo_server();
        let proxy = FaultProxy::start(target).unwrap();
        let mut a = connect(proxy.addr());
        assert_eq!(round_trip(&mut a, b"before"), b"before");

        proxy.stall();
        assert_eq!(proxy.mode(), LinkMode::Stalled);
        a.write_all(b"held").unwrap();
        // Nothing may come back while stalled; a bounded look is the only way to see absence.
        a.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut buf = [0u8; 16];
        let err = a.read(&mut buf).expect_err("no byte while stalled");
        assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err}");
        // A new connection is accepted and forwarded, but stalls too.
        let mut late = connect(proxy.addr());
        late.write_all(b"late").unwrap();
        wait_for("both stalled links are open", || proxy.open_links() == 2);

        proxy.heal();
        a.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = [0u8; 4];
        a.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"held");
        late.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"late");
        assert_eq!(round_trip(&mut a, b"after"), b"after");
        assert_eq!((proxy.accepted(), proxy.forwarded(), proxy.refused()), (2, 2, 0));
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn cut_while_stalled_closes_the_stalled_connections() {
        let (target, _) = echo_server();
        let proxy = FaultProxy::start(target).unwrap();
        let mut a = connect(proxy.addr());
        assert_eq!(round_trip(&mut a, b"x"), b"x");
        proxy.stall();
        a.write_all(b"lost").unwrap();
        proxy.cut();
        assert!(closed_by_peer(&mut a));
        proxy.heal();
        let mut b = connect(proxy.addr());
        assert_eq!(round_trip(&mut b, b"y"), b"y");
    }

    #[test]
    fn a_one_way_stall_holds_one_direction_and_lets_the_other_flow() {
        // A sink that answers every chunk with "ack" and records what it got.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let (got_tx, got_rx) = mpsc::channel::<Vec<u8>>();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = s.read(&mut buf) {
                got_tx.send(buf[..n].to_vec()).unwrap();
            }
        });
        let proxy = FaultProxy::start(target).unwrap();
        let mut a = connect(proxy.addr());
        a.write_all(b"one").unwrap();
        assert_eq!(got_rx.recv_timeout(WAIT).unwrap(), b"one");

        // Target → client held: the target still hears the client.
        proxy.stall_one_way(Direction::FromTarget);
        assert_eq!(proxy.mode(), LinkMode::StalledOneWay(Direction::FromTarget));
        a.write_all(b"two").unwrap();
        assert_eq!(got_rx.recv_timeout(WAIT).unwrap(), b"two");

        // Client → target held: nothing reaches the target until heal.
        proxy.stall_one_way(Direction::ToTarget);
        a.write_all(b"three").unwrap();
        assert!(got_rx.recv_timeout(Duration::from_millis(300)).is_err(), "held while stalled that way");
        proxy.heal();
        assert_eq!(got_rx.recv_timeout(WAIT).unwrap(), b"three");
        assert_eq!(proxy.open_links(), 1);
    }

    #[test]
    fn a_delay_holds_every_chunk_for_that_long_without_limiting_throughput() {
        let (target, _) = echo_server();
        let proxy = FaultProxy::start(target).unwrap();
        let mut a = connect(proxy.addr());
        assert_eq!(round_trip(&mut a, b"warm"), b"warm");
        proxy.delay(Duration::from_millis(150));
        assert_eq!(proxy.mode(), LinkMode::Delayed(Duration::from_millis(150)));
        let start = Instant::now();
        assert_eq!(round_trip(&mut a, b"slow"), b"slow");
        // Both directions are delayed: at least two delays for a round trip.
        assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
        // Twenty chunks written apart are twenty chunks in flight, not twenty delays in a row
        // (which would take at least 20 × 150 ms each way).
        let start = Instant::now();
        for i in 0..20u8 {
            a.write_all(&[i]).unwrap();
            thread::sleep(Duration::from_millis(5));
        }
        let mut got = [0u8; 20];
        a.read_exact(&mut got).unwrap();
        assert_eq!(got.to_vec(), (0..20u8).collect::<Vec<_>>());
        assert!(start.elapsed() < Duration::from_millis(3000), "a delay line, not a throttle: {:?}", start.elapsed());
        proxy.heal();
        assert_eq!(round_trip(&mut a, b"fast"), b"fast");
    }

    #[test]
    fn a_target_that_is_down_closes_the_connection() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let proxy = FaultProxy::start(port).unwrap();
        let mut a = connect(proxy.addr());
        assert!(closed_by_peer(&mut a));
        assert_eq!((proxy.accepted(), proxy.forwarded(), proxy.refused()), (1, 0, 1));
    }

    #[test]
    fn drop_closes_the_listener_and_the_connections() {
        let (target, _) = echo_server();
        let proxy = FaultProxy::start(target).unwrap();
        let addr = proxy.addr();
        let mut a = connect(addr);
        assert_eq!(round_trip(&mut a, b"x"), b"x");
        drop(proxy);
        assert!(closed_by_peer(&mut a));
        assert!(TcpStream::connect(addr).is_err(), "nothing listens after the drop");
    }
}
