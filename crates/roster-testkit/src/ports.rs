//! Ports for nodes a test starts: free when chosen, and outside the kernel's ephemeral range.
//!
//! A test picks a node's ports before the node binds them. A port taken by binding port 0
//! comes from the ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`, 32768–60999 by
//! default), the same range every outgoing connection's source port comes from: between the
//! pick and the node's bind, a connection of another node, a fault proxy or the test itself
//! may take it, and the node then fails to start with "address in use" (CI saw this once in
//! about 700 tests). Ports below the ephemeral range are never handed out by the kernel, so
//! only a process that binds that very port explicitly can take it in between.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The lowest port this module hands out.
const LOWEST: u16 = 10_000;

/// `n` distinct ports of 127.0.0.1 that were free a moment ago and lie below the ephemeral
/// range, never one port twice in this process. Each is checked by binding it; all are held
/// until every one is chosen. Where the ephemeral range starts too low to leave room below
/// it, the ports come from binding port 0 (the old way).
pub fn free_ports(n: usize) -> Vec<u16> {
    static GIVEN: Mutex<Option<Given>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let below = ephemeral_low().unwrap_or(32_768);
    // The walk starts at a place of its own per process (two test processes at once seldom
    // try the same ports) and goes on, wrapping, from where the last call stopped.
    let span = u32::from(below.saturating_sub(LOWEST)).max(1);
    let given = given.get_or_insert_with(|| Given { ports: HashSet::new(), at: seed() % span });
    let mut held = Vec::new();
    let mut ports = Vec::new();
    if below <= LOWEST + 1_000 {
        while ports.len() < n {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            let port = listener.local_addr().expect("local addr").port();
            if given.ports.insert(port) {
                ports.push(port);
            }
            held.push(listener);
        }
        return ports;
    }
    for _ in 0..span {
        if ports.len() == n {
            break;
        }
        let port = LOWEST + u16::try_from(given.at).expect("below the range's span");
        given.at = (given.at + 1) % span;
        if given.ports.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            given.ports.insert(port);
            ports.push(port);
            held.push(listener);
        }
    }
    assert_eq!(ports.len(), n, "only {} free ports in {LOWEST}..{below}", ports.len());
    ports
}

/// The ports handed out in this process, and where the walk goes on.
struct Given {
    ports: HashSet<u16>,
    at: u32,
}

/// One free port (see [`free_ports`]).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// The first port of the kernel's ephemeral range, where Linux tells it.
fn ephemeral_low() -> Option<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn seed() -> u32 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    std::process::id().wrapping_mul(2_654_435_761).wrapping_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports = free_ports(20);
        let set: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), 20);
        assert!(free_ports(5).iter().all(|p| !set.contains(p)));
        let below = ephemeral_low().expect("Linux tells its ephemeral range");
        assert!(ports.iter().all(|&p| (LOWEST..below).contains(&p)), "{ports:?} not in {LOWEST}..{below}");
        // Free once handed out: a node can bind each.
        let bound: Vec<TcpListener> =
            ports.iter().map(|&p| TcpListener::bind(("127.0.0.1", p)).expect("bind")).collect();
        assert_eq!(bound.len(), 20);
    }

    #[test]
    fn a_port_held_by_someone_else_is_skipped() {
        // Hold the port the walk tries next, then ask: it is not handed out.
        let mine = free_port();
        // (Bound here or by another process: either way it is not free.)
        let _held = TcpListener::bind(("127.0.0.1", mine + 1));
        let next = free_ports(3);
        assert!(!next.contains(&(mine + 1)), "{next:?} holds the port someone else binds");
        assert!(!next.contains(&mine));
    }
}
