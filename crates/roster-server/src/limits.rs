//! How many connections a node serves, and to whom: open connections in total
//! (`max_sockets`) and per client address (`max_sockets_per_ip`, loopback exempt unless
//! `loopback_exempt = false`), and WebSockets per user (`max_sockets_per_user`).
//!
//! Admission hands out a permit that holds its place until dropped, so a count can never leak:
//! a connection's permit lives in the task serving it and, once it is upgraded, in the
//! WebSocket's task; a user's permit lives in the WebSocket's task.
//!
//! An IPv6 client is counted by its /64, the block one subscriber line usually gets, so one
//! client cannot pass the limit by cycling through its own addresses.

use roster_core::{ServerConfig, UserId};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A limit a connection or socket ran into. Its [`Limit::key`] is the name of its `[server]`
/// key, which is also its label in `roster_limited_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Limit {
    /// `max_sockets`: the node serves as many connections as it may.
    Total,
    /// `max_sockets_per_ip`: this client address has as many as it may.
    PerIp,
    /// `max_sockets_per_user`: this user has as many WebSockets as it may.
    PerUser,
    /// `header_read_timeout_ms`: a request's head did not arrive in time.
    HeaderReadTimeout,
    /// `request_timeout_ms`: a request was not answered (or upgraded) in time.
    RequestTimeout,
}

impl Limit {
    /// The `[server]` key of the limit.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Limit::Total => "max_sockets",
            Limit::PerIp => "max_sockets_per_ip",
            Limit::PerUser => "max_sockets_per_user",
            Limit::HeaderReadTimeout => "header_read_timeout_ms",
            Limit::RequestTimeout => "request_timeout_ms",
        }
    }
}

/// The counts of one node's connections and sockets. Cheap to share: clone the `Arc`.
pub(crate) struct SocketLimits {
    max_total: u32,
    max_per_ip: u32,
    loopback_exempt: bool,
    max_per_user: u32,
    counts: Mutex<Counts>,
    /// Ticks whenever a connection ends, for [`SocketLimits::all_closed`].
    closed: tokio::sync::watch::Sender<()>,
    /// Client addresses and users already logged for a limit (logged once each; bounded, see
    /// `log_once`).
    logged: Mutex<HashSet<(Limit, String)>>,
}

#[derive(Default)]
struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
    per_user: HashMap<UserId, u32>,
}

/// The most client addresses or users remembered as already logged; past it the memory starts
/// over (one may then be logged once more), so a spray of addresses cannot grow it.
const MAX_LOGGED_ADDRESSES: usize = 4096;

impl SocketLimits {
    /// The limits of `[server]`.
    pub(crate) fn new(server: &ServerConfig) -> Arc<SocketLimits> {
        Arc::new(SocketLimits {
            max_total: server.max_sockets,
            max_per_ip: server.max_sockets_per_ip,
            loopback_exempt: server.loopback_exempt,
            max_per_user: server.max_sockets_per_user,
            counts: Mutex::default(),
            closed: tokio::sync::watch::Sender::new(()),
            logged: Mutex::default(),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every update is one statement.
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admit one more connection from `peer`, or say which limit it is over.
    pub(crate) fn admit_connection(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionPermit, Limit> {
        let key = address_key(peer);
        let limited = !(self.loopback_exempt && key.is_loopback());
        let mut counts = self.counts();
        if counts.total >= self.max_total {
            return Err(Limit::Total);
        }
        if limited {
            let n = counts.per_ip.entry(key).or_insert(0);
            if *n >= self.max_per_ip {
                return Err(Limit::PerIp);
            }
            *n += 1;
        }
        counts.total += 1;
        Ok(ConnectionPermit { limits: self.clone(), address: limited.then_some(key) })
    }

    /// Admit one more WebSocket for `user`, or refuse it with [`Limit::PerUser`].
    pub(crate) fn admit_user(self: &Arc<Self>, user: &UserId) -> Result<UserPermit, Limit> {
        let mut counts = self.counts();
        let n = counts.per_user.entry(user.clone()).or_insert(0);
        if *n >= self.max_per_user {
            return Err(Limit::PerUser);
        }
        *n += 1;
        Ok(UserPermit { limits: self.clone(), user: user.clone() })
    }

    /// Whether running into `limit` from `peer` should be logged: the first time for that
    /// address (counting goes on regardless).
    pub(crate) fn log_once(&self, limit: Limit, peer: IpAddr) -> bool {
        self.log_once_for(limit, address_key(peer).to_string())
    }

    /// Whether running into `limit` for `who` (a user, an address) should be logged: the first
    /// time.
    pub(crate) fn log_once_for(&self, limit: Limit, who: String) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if logged.len() >= MAX_LOGGED_ADDRESSES {
            logged.clear();
        }
        logged.insert((limit, who))
    }

    /// Open connections now (for `/metrics`).
    pub(crate) fn open_connections(&self) -> u32 {
        self.counts().total
    }

    /// Resolves once no connection is open (every WebSocket task has ended and dropped its
    /// permit).
    pub(crate) async fn all_closed(&self) {
        let mut closed = self.closed.subscribe();
        while self.open_connections() > 0 {
            if closed.changed().await.is_err() {
                return;
            }
        }
    }
}

/// One admitted connection; dropping it gives its place back.
pub(crate) struct ConnectionPermit {
    limits: Arc<SocketLimits>,
    /// The address it is counted under; `None` when exempt.
    address: Option<IpAddr>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        {
            let mut counts = self.limits.counts();
            counts.total = counts.total.saturating_sub(1);
            if let Some(key) = self.address {
                if let Some(n) = counts.per_ip.get_mut(&key) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        counts.per_ip.remove(&key);
                    }
                }
            }
        }
        self.limits.closed.send_replace(());
    }
}

/// One admitted WebSocket of a user; dropping it gives its place back.
pub(crate) struct UserPermit {
    limits: Arc<SocketLimits>,
    user: UserId,
}

impl Drop for UserPermit {
    fn drop(&mut self) {
        let mut counts = self.limits.counts();
        if let Some(n) = counts.per_user.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_user.remove(&self.user);
            }
        }
    }
}

/// The address a client is counted under: IPv4 as is (an IPv4-mapped IPv6 address as its
/// IPv4 address), IPv6 by its /64 prefix.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) if !v6.is_loopback() => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        other => other,
    }
}

/// A count of events in fixed one-second windows: at most `limit` per window.
pub(crate) struct RateWindow {
    limit: u32,
    start: Instant,
    count: u32,
}

impl RateWindow {
    /// A window admitting `limit` events per second, starting at `now`.
    pub(crate) fn new(limit: u32, now: Instant) -> RateWindow {
        RateWindow { limit, start: now, count: 0 }
    }

    /// Count one event at `now`; `false` when it is over the limit (it is counted anyway, so
    /// a flood stays refused until a window passes with no more than `limit`).
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.start) >= Duration::from_secs(1) {
            self.start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn limits(total: u32, per_ip: u32, loopback_exempt: bool, per_user: u32) -> Arc<SocketLimits> {
        SocketLimits::new(&ServerConfig {
            max_sockets: total,
            max_sockets_per_ip: per_ip,
            loopback_exempt,
            max_sockets_per_user: per_user,
            ..ServerConfig::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_is_refused_past_its_limit_while_others_are_admitted() {
        let l = limits(100, 2, true, 10);
        let a1 = l.admit_connection(ip("10.0.0.1")).unwrap();
        let _a2 = l.admit_connection(ip("10.0.0.1")).unwrap();
        assert_eq!(l.admit_connection(ip("10.0.0.1")).err(), Some(Limit::PerIp));
        let _b = l.admit_connection(ip("10.0.0.2")).unwrap();
        drop(a1);
        let _a3 = l.admit_connection(ip("10.0.0.1")).expect("a dropped permit gives its place back");
        assert_eq!(l.open_connections(), 3);
    }

    #[test]
    fn the_total_limit_holds_for_every_address_loopback_included() {
        let l = limits(2, 100, true, 10);
        let _a = l.admit_connection(ip("127.0.0.1")).unwrap();
        let _b = l.admit_connection(ip("10.0.0.1")).unwrap();
        assert_eq!(l.admit_connection(ip("10.0.0.2")).err(), Some(Limit::Total));
        assert_eq!(l.admit_connection(ip("127.0.0.1")).err(), Some(Limit::Total));
    }

    #[test]
    fn loopback_is_exempt_from_the_address_limit_unless_configured_otherwise() {
        let exempt = limits(100, 1, true, 10);
        let held: Vec<_> = ["127.0.0.1", "127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"]
            .iter()
            .map(|a| exempt.admit_connection(ip(a)).unwrap())
            .collect();
        assert_eq!(held.len(), 5);
        let counted = limits(100, 1, false, 10);
        let _first = counted.admit_connection(ip("127.0.0.1")).unwrap();
        assert_eq!(counted.admit_connection(ip("127.0.0.1")).err(), Some(Limit::PerIp));
        let _other = counted.admit_connection(ip("127.0.0.2")).expect("another loopback address is another client");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix_and_mapped_ipv4_as_ipv4() {
        let l = limits(100, 1, true, 10);
        let _a = l.admit_connection(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(l.admit_connection(ip("2001:db8:1:2:ffff::9")).err(), Some(Limit::PerIp));
        let _b = l.admit_connection(ip("2001:db8:1:3::1")).unwrap();
        let _c = l.admit_connection(ip("192.0.2.7")).unwrap();
        assert_eq!(l.admit_connection(ip("::ffff:192.0.2.7")).err(), Some(Limit::PerIp));
        assert_eq!(address_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(address_key(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))), ip("1.2.3.4"));
    }

    #[test]
    fn a_user_is_refused_past_its_socket_limit_and_others_are_not() {
        let l = limits(100, 100, true, 2);
        let (alice, bob) = (UserId::from("alice"), UserId::from("bob"));
        let a1 = l.admit_user(&alice).unwrap();
        let _a2 = l.admit_user(&alice).unwrap();
        assert_eq!(l.admit_user(&alice).err(), Some(Limit::PerUser));
        let _b = l.admit_user(&bob).unwrap();
        drop(a1);
        let _a3 = l.admit_user(&alice).unwrap();
    }

    #[test]
    fn every_count_returns_to_zero_when_the_permits_are_dropped() {
        let l = limits(100, 100, false, 100);
        let permits: Vec<_> = (0..50).map(|i| l.admit_connection(ip(&format!("10.0.0.{}", i % 7))).unwrap()).collect();
        let users: Vec<_> = (0..20).map(|i| l.admit_user(&UserId::from(format!("u{}", i % 3))).unwrap()).collect();
        drop(permits);
        drop(users);
        let counts = l.counts();
        assert_eq!((counts.total, counts.per_ip.len(), counts.per_user.len()), (0, 0, 0));
    }

    #[tokio::test]
    async fn all_closed_waits_for_the_last_permit() {
        let l = limits(10, 10, true, 10);
        l.all_closed().await;
        let a = l.admit_connection(ip("10.0.0.1")).unwrap();
        let b = l.admit_connection(ip("10.0.0.2")).unwrap();
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.all_closed().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one connection is still open");
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("resolves once all are closed").unwrap();
    }

    #[test]
    fn refusals_are_logged_once_per_address() {
        let l = limits(1, 1, false, 1);
        assert!(l.log_once(Limit::PerIp, ip("10.0.0.1")));
        assert!(!l.log_once(Limit::PerIp, ip("10.0.0.1")));
        assert!(l.log_once(Limit::Total, ip("10.0.0.1")));
        assert!(l.log_once(Limit::PerIp, ip("10.0.0.2")));
        for i in 0..(2 * MAX_LOGGED_ADDRESSES as u32) {
            l.log_once(Limit::PerIp, IpAddr::V4(Ipv4Addr::from(i)));
        }
        assert!(l.logged.lock().unwrap().len() <= MAX_LOGGED_ADDRESSES, "bounded");
    }

    #[test]
    fn rate_window_admits_the_limit_per_second_then_starts_over() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(3, t0);
        let first: Vec<bool> = (0..5).map(|i| w.admit(t0 + Duration::from_millis(i * 100))).collect();
        assert_eq!(first, [true, true, true, false, false]);
        assert!(w.admit(t0 + Duration::from_millis(1000)), "a new window");
        assert!(w.admit(t0 + Duration::from_millis(1001)));
        assert!(w.admit(t0 + Duration::from_millis(1002)));
        assert!(!w.admit(t0 + Duration::from_millis(1003)));
    }
}
