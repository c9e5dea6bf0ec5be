//! Heartbeats (rule 4), peer liveness, and what a peer's death or return means for the home
//! and presence sides.

use super::{Announced, Echo, Effect, NodeState, PeerMsg};
use crate::ids::{Incarnation, Millis, NodeName};
use crate::ring::PartitionId;

/// What this node knows of one configured node (itself included).
#[derive(Clone, Debug, Default)]
pub(super) struct Peer {
    /// The incarnation last heard.
    pub incarnation: Option<Incarnation>,
    /// When its latest heartbeat arrived, on this node's clock.
    pub last_heard: Option<Millis>,
    /// That heartbeat's send time on the peer's clock (what this node echoes).
    pub last_sent_at: Millis,
    /// Heard within `heartbeat_timeout_ms` and its session open.
    pub alive: bool,
    /// Since when it has been alive without a break (this node's clock).
    pub alive_since: Millis,
    /// The leases it announced in its latest heartbeat.
    pub announced: Vec<Announced>,
    /// The presence sequence number its latest heartbeat announced.
    pub presence_seq: u64,
    /// The latest incarnation of it that said goodbye (rule 16), with the leases it released
    /// (none if an earlier life of it might still hold slots: it had not been up
    /// `isolation_ms`).
    pub departed: Option<(Incarnation, Vec<Announced>)>,
}

impl Peer {
    /// Whether the incarnation heard last said goodbye and is not heard now.
    pub(super) fn gone(&self) -> bool {
        !self.alive && self.departed.as_ref().is_some_and(|(i, _)| self.incarnation.as_ref() == Some(i))
    }

    /// Rule 16: whether a new home of `p` at `epoch` need not wait for this peer in its scan:
    /// the incarnation heard last said goodbye, released `p` at the epoch just below, and is
    /// not heard now. The departed life holds nothing; it had been up `isolation_ms`, so no
    /// earlier life holds a slot either (the reason of rule 10); and as the direct successor
    /// of its lease, no other home of `p` held it since, so no later life can hold a slot of
    /// `p` that this home does not know.
    pub(super) fn skippable_in_scan(&self, p: PartitionId, epoch: u64, needs_successor: bool) -> bool {
        self.gone()
            && self.departed.as_ref().is_some_and(|(_, released)| {
                !needs_successor || released.iter().any(|a| a.partition == p && a.epoch + 1 == epoch)
            })
    }
}

/// One peer as this node sees it (see [`NodeState::peers_view`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// Its configured name.
    pub name: NodeName,
    /// Heard within `heartbeat_timeout_ms` and its session open.
    pub alive: bool,
    /// The incarnation last heard, if any.
    pub incarnation: Option<Incarnation>,
    /// Milliseconds since its latest heartbeat arrived.
    pub last_heartbeat_ago_ms: Option<Millis>,
    /// How long it has been alive without a break.
    pub alive_for_ms: Option<Millis>,
    /// The partitions whose lease it announced in its latest heartbeat (none once it is
    /// down): who is home where, as this node hears it.
    pub partitions: Vec<PartitionId>,
}

impl NodeState {
    pub(super) fn send_heartbeats(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let leases = self.leases.valid_now(now);
        let echoes: Vec<Echo> = self
            .peers
            .values()
            .filter(|p| p.alive)
            .filter_map(|p| p.incarnation.clone().map(|of| Echo { of, sent_at: p.last_sent_at }))
            .collect();
        let names: Vec<NodeName> = self.peers.keys().cloned().collect();
        for to in names {
            let msg = PeerMsg::Heartbeat {
                from: self.me.clone(),
                sent_at: now,
                leases: leases.clone(),
                echoes: echoes.clone(),
                presence_seq: self.presence.seq(),
            };
            self.send(&to, msg, fx);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn heartbeat(
        &mut self,
        from: Incarnation,
        sent_at: Millis,
        leases: Vec<Announced>,
        echoes: Vec<Echo>,
        presence_seq: u64,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let name = from.node.clone();
        if name == self.me.node && from != self.me {
            return; // a delayed message from this node's previous life
        }
        let Some(peer) = self.peers.get(&name) else { return };
        if peer.departed.as_ref().is_some_and(|(i, _)| *i == from) {
            return; // late: this incarnation already said goodbye (rule 16)
        }
        if peer.incarnation.as_ref().is_some_and(|i| *i != from) {
            if peer.alive {
                self.peer_down(&name, now, fx);
            }
            let peer = self.peers.get_mut(&name).expect("configured peer");
            peer.last_sent_at = 0;
            peer.last_heard = None;
            peer.presence_seq = 0;
        }
        let peer = self.peers.get_mut(&name).expect("configured peer");
        if peer.incarnation.as_ref() == Some(&from) && sent_at <= peer.last_sent_at {
            return; // reordered: an older heartbeat of the same life
        }
        let returning = !peer.alive;
        peer.incarnation = Some(from.clone());
        peer.last_heard = Some(now);
        peer.last_sent_at = sent_at;
        peer.announced = leases.clone();
        if returning {
            peer.alive = true;
            peer.alive_since = now;
            peer.presence_seq = presence_seq;
            for home in self.homes.values_mut() {
                home.gateway_heard(&from);
            }
            if name != self.me.node {
                self.ask_snapshot(&name, now, true, fx);
            }
        } else if name != self.me.node {
            let echoed = echoes.iter().find(|e| e.of == self.me).map(|e| e.sent_at);
            self.presence_seq_check(&from, presence_seq, echoed, now, fx);
        }
        for a in &leases {
            self.leases.learn_epoch(a.partition, a.epoch);
        }
        // Rule 5: the announcing home vouches, per partition and epoch, for the send time of
        // this node's heartbeat that it echoes.
        if let Some(echo) = echoes.iter().find(|e| e.of == self.me) {
            self.gw_echo(&leases, echo.sent_at, now, fx);
        }
    }

    pub(super) fn check_timeouts(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let timeout = self.config.cluster.heartbeat_timeout_ms;
        let silent: Vec<NodeName> = self
            .peers
            .iter()
            .filter(|(n, p)| **n != self.me.node && p.alive && p.last_heard.is_some_and(|h| now >= h + timeout))
            .map(|(n, _)| n.clone())
            .collect();
        for n in silent {
            self.peer_down(&n, now, fx);
        }
    }

    /// A peer is down (session closed, or silent for `heartbeat_timeout_ms`): its gateway slots
    /// at every home here are in doubt until `isolation_ms × (1 + max_drift)` after its last
    /// heartbeat (rule 8).
    pub(super) fn peer_down(&mut self, name: &NodeName, now: Millis, fx: &mut Vec<Effect>) {
        if *name == self.me.node {
            return;
        }
        let doubt = self.isolation_doubt_ms();
        let Some(peer) = self.peers.get_mut(name) else { return };
        if !peer.alive {
            return;
        }
        peer.alive = false;
        peer.announced.clear();
        self.presence_peer_down(name, fx);
        let Some(peer) = self.peers.get(name) else { return };
        let (Some(inc), Some(heard)) = (peer.incarnation.clone(), peer.last_heard) else { return };
        let until = if self.safeguards.keep_in_doubt { heard + doubt } else { now };
        for home in self.homes.values_mut() {
            home.gateway_unheard(&inc, until);
        }
    }

    /// Rule 16: `from` shut down gracefully after releasing every slot and lease, and says
    /// so. If it is the incarnation heard now, the peer is down at once; its leases are free
    /// at this grantor, and what the homes here still count for it (a release lost on the way)
    /// is freed now rather than kept in doubt. A goodbye of an earlier or unknown life frees
    /// that life's records only: the incarnation heard now is untouched. Homes whose scan
    /// waits for it as the direct successor of a lease it released stop waiting.
    pub(super) fn goodbye(
        &mut self,
        link: NodeName,
        from: Incarnation,
        released: Vec<Announced>,
        settled: bool,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let name = from.node.clone();
        if name != link || name == self.me.node {
            return; // a node says goodbye for itself only
        }
        let Some(peer) = self.peers.get_mut(&name) else { return };
        let current = peer.incarnation.as_ref() == Some(&from);
        // With the safeguard off (ablation), the goodbye acts on whatever life is heard now.
        let departed = match (&peer.incarnation, self.safeguards.goodbye_for_one_incarnation) {
            (Some(heard), false) => heard.clone(),
            _ => from.clone(),
        };
        if current || !self.safeguards.goodbye_for_one_incarnation {
            // An earlier life may still hold slots (rule 10): then no scan skips the node.
            let released =
                if settled || !self.safeguards.goodbye_scan_needs_direct_successor { released } else { Vec::new() };
            peer.departed = Some((departed.clone(), released));
            self.peer_down(&name, now, fx);
        }
        self.leases.release_all_of(&departed);
        for home in self.homes.values_mut() {
            home.gateway_departed(&departed, now);
        }
        let needs_successor = self.safeguards.goodbye_scan_needs_direct_successor;
        let skip: Vec<PartitionId> = self
            .homes
            .iter()
            .filter(|(p, h)| {
                h.waits_for(&name)
                    && self.peers.get(&name).is_some_and(|peer| peer.skippable_in_scan(**p, h.epoch(), needs_successor))
            })
            .map(|(p, _)| *p)
            .collect();
        for p in skip {
            if let Some(h) = self.homes.get_mut(&p) {
                h.stop_waiting_for(&name);
            }
        }
        // The partitions it held move at the next lease round, now rather than up to a
        // quarter lease later; what the homes freed is admitted at once.
        self.next_lease_round = self.next_lease_round.min(now + 1);
        self.home_timers(now, fx);
    }

    /// What this node knows of every other configured node, for `/cluster`.
    pub fn peers_view(&self, now: Millis) -> Vec<PeerView> {
        self.peers
            .iter()
            .filter(|(n, _)| **n != self.me.node)
            .map(|(n, p)| PeerView {
                name: n.clone(),
                alive: p.alive,
                incarnation: p.incarnation.clone(),
                last_heartbeat_ago_ms: p.last_heard.map(|h| now.saturating_sub(h)),
                alive_for_ms: p.alive.then(|| now.saturating_sub(p.alive_since)),
                partitions: p.announced.iter().map(|a| a.partition).collect(),
            })
            .collect()
    }

    /// The names of the nodes heard now, this one included.
    pub(super) fn live_names(&self) -> Vec<NodeName> {
        self.peers.iter().filter(|(n, p)| p.alive || **n == self.me.node).map(|(n, _)| n.clone()).collect()
    }
}
