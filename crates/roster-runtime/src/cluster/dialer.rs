//! When to dial which peer: the peers this node dials (it is listed before them in
//! `[[cluster.nodes]]`), each with its backoff. Plain data: every decision takes `now`, the
//! keeper carries it out.

use roster_core::NodeName;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The first pause after a failed dial; it doubles up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between dials of a peer that is away.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Target {
    addr: String,
    /// Not before this instant.
    next: Instant,
    backoff: Duration,
    /// A dial is running or its session is being set up.
    in_flight: bool,
    /// A session to it is up.
    up: bool,
}

/// The dialing state of every peer this node dials.
#[derive(Debug)]
pub(crate) struct Dialer {
    targets: BTreeMap<NodeName, Target>,
}

impl Dialer {
    /// Dial each `(peer, address)`, the first time at `now`.
    pub fn new(peers: impl IntoIterator<Item = (NodeName, String)>, now: Instant) -> Dialer {
        let targets = peers
            .into_iter()
            .map(|(peer, addr)| (peer, Target { addr, next: now, backoff: FIRST_BACKOFF, in_flight: false, up: false }))
            .collect();
        Dialer { targets }
    }

    /// Whether this node dials `peer`.
    pub fn dials(&self, peer: &NodeName) -> bool {
        self.targets.contains_key(peer)
    }

    /// The peers to dial now, with their addresses; each is in flight until
    /// [`failed`](Self::failed), [`up`](Self::up) or [`closed`](Self::closed).
    pub fn due(&mut self, now: Instant) -> Vec<(NodeName, String)> {
        self.targets
            .iter_mut()
            .filter(|(_, t)| !t.up && !t.in_flight && now >= t.next)
            .map(|(peer, t)| {
                t.in_flight = true;
                (peer.clone(), t.addr.clone())
            })
            .collect()
    }

    /// The dial of `peer` failed (connect, TLS, handshake, or its session closed before it
    /// was ready): try again after the backoff, which doubles.
    pub fn failed(&mut self, peer: &NodeName, now: Instant) {
        if let Some(t) = self.targets.get_mut(peer) {
            t.in_flight = false;
            t.next = now + t.backoff;
            t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// A session to `peer` is up (whoever dialed): no dialing while it lasts.
    pub fn up(&mut self, peer: &NodeName) {
        if let Some(t) = self.targets.get_mut(peer) {
            t.in_flight = false;
            t.up = true;
            t.backoff = FIRST_BACKOFF;
        }
    }

    /// The last session to `peer` closed at `now`: dial again at once if it had been up,
    /// after the backoff if it never came up.
    pub fn closed(&mut self, peer: &NodeName, was_up: bool, now: Instant) {
        if !was_up {
            self.failed(peer, now);
            return;
        }
        if let Some(t) = self.targets.get_mut(peer) {
            t.in_flight = false;
            t.up = false;
            t.next = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> NodeName {
        NodeName::from(s)
    }

    #[test]
    fn a_peer_is_dialed_at_once_then_not_again_while_the_dial_runs() {
        let t0 = Instant::now();
        let mut d = Dialer::new([(peer("b"), "h:1".to_owned()), (peer("c"), "h:2".to_owned())], t0);
        assert_eq!(d.due(t0), [(peer("b"), "h:1".to_owned()), (peer("c"), "h:2".to_owned())]);
        assert!(d.due(t0 + Duration::from_secs(10)).is_empty(), "both in flight");
        assert!(d.dials(&peer("b")) && !d.dials(&peer("a")));
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut d = Dialer::new([(peer("b"), "h:1".to_owned())], t0);
        let mut now = t0;
        for pause_ms in [50, 100, 200, 400, 800, 1000, 1000] {
            assert_eq!(d.due(now).len(), 1);
            d.failed(&peer("b"), now);
            let pause = Duration::from_millis(pause_ms);
            assert!(d.due(now + pause - Duration::from_millis(1)).is_empty(), "dialed before {pause_ms} ms");
            now += pause;
        }
        assert_eq!(d.due(now).len(), 1);
    }

    #[test]
    fn a_session_that_was_up_is_redialed_at_once_and_the_backoff_restarts() {
        let t0 = Instant::now();
        let mut d = Dialer::new([(peer("b"), "h:1".to_owned())], t0);
        for _ in 0..5 {
            d.due(t0);
            d.failed(&peer("b"), t0);
            d.targets.get_mut(&peer("b")).unwrap().next = t0;
        }
        d.due(t0);
        d.up(&peer("b"));
        assert!(d.due(t0 + Duration::from_secs(5)).is_empty(), "no dial while up");
        let later = t0 + Duration::from_secs(5);
        d.closed(&peer("b"), true, later);
        assert_eq!(d.due(later).len(), 1);
        d.failed(&peer("b"), later);
        assert!(d.due(later + Duration::from_millis(49)).is_empty());
        assert_eq!(d.due(later + FIRST_BACKOFF).len(), 1, "the backoff restarted at its first pause");
    }

    #[test]
    fn a_session_that_closes_before_it_was_up_counts_as_a_failed_dial() {
        let t0 = Instant::now();
        let mut d = Dialer::new([(peer("b"), "h:1".to_owned())], t0);
        d.due(t0);
        d.closed(&peer("b"), false, t0);
        assert!(d.due(t0).is_empty());
        assert_eq!(d.due(t0 + FIRST_BACKOFF).len(), 1);
    }
}
