//! Majority leases on partitions (rules 1–3), both sides: the grantor, which grants a
//! partition to one holder at a time and persists the highest epoch it granted, and the holder,
//! which counts its lease from the instant it sent the request, shortened by `max_drift`.

use super::{Announced, Effect, NodeState, PeerMsg, Record};
use crate::ids::{Incarnation, Millis, NodeName};
use crate::ring::{preferred_home, PartitionId};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default)]
struct Grant {
    holder: Option<Incarnation>,
    epoch: u64,
    /// Who `epoch` was granted to (kept after a release, unlike `holder`).
    granted_to: Option<Incarnation>,
    /// The highest epoch granted before `epoch` to another holder than `granted_to`.
    before: u64,
    /// Counted from when the grant was sent, on this node's clock.
    expires_at: Millis,
}

#[derive(Clone, Debug)]
struct Held {
    epoch: u64,
    valid_until: Millis,
}

/// One open round of lease requests (identified by its send time).
#[derive(Clone, Debug)]
struct Round {
    asks: BTreeMap<PartitionId, u64>,
    grantors: BTreeMap<PartitionId, BTreeSet<NodeName>>,
    /// The highest epoch the counted grantors granted to other holders before (`LeaseReply`'s
    /// `before`).
    before: BTreeMap<PartitionId, u64>,
}

/// Both sides of the leases of one node.
#[derive(Debug)]
pub(super) struct Leases {
    grants: Vec<Grant>,
    /// The highest epoch this node granted or knows of, per partition.
    known: Vec<u64>,
    /// Epochs start above this (stored epoch and wall clock at boot).
    floor: u64,
    persisted: u64,
    held: super::partition_map::PartitionMap<Held>,
    /// At or before the earliest `valid_until` in `held` (`Millis::MAX` when none): until then
    /// no lease can lapse, so the check that runs before every input skips its scan.
    next_lapse: Millis,
    rounds: BTreeMap<Millis, Round>,
    /// The highest epoch at which this node started a home, per partition. A lease is never
    /// started again at such an epoch: a late majority for a round sent before the lease lapsed
    /// (or was handed over) would otherwise bring back a home whose tokens were already minted.
    served: BTreeMap<PartitionId, u64>,
}

impl Leases {
    pub(super) fn new(partitions: u32, floor: u64, persisted: u64) -> Self {
        Self {
            grants: vec![Grant::default(); partitions as usize],
            known: vec![floor; partitions as usize],
            floor,
            persisted,
            held: super::partition_map::PartitionMap::new(),
            next_lapse: Millis::MAX,
            rounds: BTreeMap::new(),
            served: BTreeMap::new(),
        }
    }

    /// The epoch of this node's lease on `p` if it is valid at `now`.
    pub(super) fn valid(&self, p: PartitionId, now: Millis) -> Option<u64> {
        self.held.get(&p).filter(|h| h.valid_until > now).map(|h| h.epoch)
    }

    pub(super) fn valid_now(&self, now: Millis) -> Vec<Announced> {
        self.held
            .iter()
            .filter(|(_, h)| h.valid_until > now)
            .map(|(p, h)| Announced { partition: *p, epoch: h.epoch })
            .collect()
    }

    pub(super) fn held(&self, now: Millis) -> Vec<(PartitionId, u64, Millis)> {
        self.held.iter().filter(|(_, h)| h.valid_until > now).map(|(p, h)| (*p, h.epoch, h.valid_until)).collect()
    }

    pub(super) fn held_count(&self) -> usize {
        self.held.len()
    }

    pub(super) fn learn_epoch(&mut self, p: PartitionId, epoch: u64) {
        if let Some(k) = self.known.get_mut(p.0 as usize) {
            *k = (*k).max(epoch);
        }
    }

    /// Rule 16: every grant this grantor holds for an incarnation that said goodbye is free
    /// (it released its leases and stopped; a `LeaseRelease` lost on the way changes nothing).
    pub(super) fn release_all_of(&mut self, from: &Incarnation) {
        for g in self.grants.iter_mut().filter(|g| g.holder.as_ref() == Some(from)) {
            g.holder = None;
        }
    }

    pub(super) fn release_from(&mut self, from: &Incarnation, leases: &[Announced]) {
        for a in leases {
            if let Some(g) = self.grants.get_mut(a.partition.0 as usize) {
                if g.holder.as_ref() == Some(from) && g.epoch == a.epoch {
                    g.holder = None;
                }
            }
        }
    }
}

impl NodeState {
    /// Every `lease_ms / 4`: renew what this node holds and ask for the partitions it prefers
    /// that no live node announces, from every node (itself included).
    pub(super) fn lease_round(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let live = self.live_names();
        let announced_elsewhere: BTreeSet<PartitionId> = self
            .peers
            .iter()
            .filter(|(n, p)| **n != self.me.node && p.alive)
            .flat_map(|(_, p)| p.announced.iter().map(|a| a.partition))
            .collect();
        let mut asks = BTreeMap::new();
        for p in (0..self.config.cluster.partitions).map(PartitionId) {
            if let Some(epoch) = self.leases.valid(p, now) {
                asks.insert(p, epoch);
            } else if !announced_elsewhere.contains(&p) && preferred_home(p, &live).as_ref() == Some(&self.me.node) {
                let known = self.leases.known[p.0 as usize].max(self.leases.grants[p.0 as usize].epoch);
                asks.insert(p, known.max(self.leases.floor) + 1);
            }
        }
        let horizon = now.saturating_sub(self.config.cluster.lease_ms);
        self.leases.rounds.retain(|r, _| *r >= horizon);
        if asks.is_empty() {
            return;
        }
        let msg_asks: Vec<Announced> = asks.iter().map(|(p, e)| Announced { partition: *p, epoch: *e }).collect();
        self.leases.rounds.insert(now, Round { asks, grantors: BTreeMap::new(), before: BTreeMap::new() });
        let names: Vec<NodeName> = self.peers.keys().cloned().collect();
        for to in names {
            let msg = PeerMsg::LeaseRequest { from: self.me.clone(), round: now, asks: msg_asks.clone() };
            self.send(&to, msg, fx);
        }
    }

    /// Grantor: one holder at a time per partition, a new holder only once the earlier grant
    /// expired on this clock and only at an epoch above every one granted; nothing at all for
    /// `lease_ms × (1 + max_drift)` after a start (rule 2).
    pub(super) fn lease_request(
        &mut self,
        from: Incarnation,
        round: Millis,
        asks: Vec<Announced>,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let c = &self.config.cluster;
        let quiet_ms = (c.lease_ms as f64 * (1.0 + c.max_drift)).ceil() as Millis;
        let quiet = !self.alone && self.safeguards.quiet_after_restart && now < self.started_at + quiet_ms;
        let lease_ms = c.lease_ms;
        let (mut granted, mut refused, mut before) = (Vec::new(), Vec::new(), Vec::new());
        for a in asks {
            let Some(g) = self.leases.grants.get_mut(a.partition.0 as usize) else { continue };
            let max = g.epoch.max(self.leases.known[a.partition.0 as usize]);
            let free = g.holder.is_none() || now >= g.expires_at;
            // A renewal: this grantor's current holder at its epoch, or (after this grantor
            // restarted or was quiet when the lease was taken) the node that announces holding
            // this very epoch, which a majority granted it: no one else can hold it. A renewal is
            // judged by this grantor's own grants only, never by epochs it merely learned: a
            // restarted peer refuses with its boot floor (the wall clock), above every epoch in
            // use, and judging by it made every holder refuse its own renewals, so one restart
            // ended every lease in the cluster.
            let announced = self
                .peers
                .get(&from.node)
                .is_some_and(|peer| peer.incarnation.as_ref() == Some(&from) && peer.announced.contains(&a));
            let renewal =
                (g.holder.as_ref() == Some(&from) && g.epoch == a.epoch) || (announced && free && a.epoch >= g.epoch);
            let ok = !quiet && (renewal || (free && a.epoch > max));
            if ok {
                // What came before this grant, as far as the asker cannot know it itself: the
                // highest epoch granted to another holder. Nothing granted since this node
                // started: its floor, above every epoch its previous lives granted (rule 3).
                let earlier = if g.granted_to.as_ref() == Some(&from) { g.before } else { g.epoch };
                let earlier = if g.granted_to.is_none() { self.leases.floor } else { earlier };
                before.push(Announced { partition: a.partition, epoch: earlier });
                if g.granted_to.as_ref() != Some(&from) {
                    g.before = earlier;
                    g.granted_to = Some(from.clone());
                }
                g.holder = Some(from.clone());
                g.epoch = a.epoch;
                g.expires_at = now + lease_ms;
                granted.push(a);
            } else {
                refused.push(Announced { partition: a.partition, epoch: max });
            }
        }
        // Rule 3: the highest epoch granted is stored before any grant that uses it is sent.
        if let Some(top) = granted.iter().map(|a| a.epoch).max() {
            if top > self.leases.persisted {
                self.leases.persisted = top;
                fx.push(Effect::PersistEpoch(top));
            }
        }
        for a in &granted {
            self.leases.learn_epoch(a.partition, a.epoch);
        }
        let msg = PeerMsg::LeaseReply { from: self.me.clone(), round, granted, refused, before };
        self.send(&from.node, msg, fx);
    }

    /// Holder: a lease starts once a majority granted it, and lasts from the round's send time
    /// for `lease_ms × (1 − max_drift)`. A new lease also learns the highest epoch of the
    /// partition held by anyone else before it (its majority's `before`, and its own earlier
    /// leases): a handed-over state from below that epoch is stale (user actors).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn lease_reply(
        &mut self,
        from: Incarnation,
        round: Millis,
        granted: Vec<Announced>,
        refused: Vec<Announced>,
        before: Vec<Announced>,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        for a in &refused {
            self.leases.learn_epoch(a.partition, a.epoch);
        }
        let majority = if self.safeguards.lease_needs_majority { self.config.cluster.nodes.len() / 2 + 1 } else { 1 };
        let c = &self.config.cluster;
        let until = round + (c.lease_ms as f64 * (1.0 - c.max_drift)).floor() as Millis;
        let Some(r) = self.leases.rounds.get_mut(&round) else { return };
        let mut reached = Vec::new();
        for a in granted {
            if r.asks.get(&a.partition) != Some(&a.epoch) {
                continue;
            }
            let set = r.grantors.entry(a.partition).or_default();
            if set.insert(from.node.clone()) {
                // A reply without it (none in this version) tells nothing: assume the worst.
                let earlier = before.iter().find(|b| b.partition == a.partition).map_or(u64::MAX, |b| b.epoch);
                let e = r.before.entry(a.partition).or_insert(0);
                *e = (*e).max(earlier);
                if set.len() == majority {
                    reached.push(a);
                }
            }
        }
        for a in reached {
            if until <= now {
                continue;
            }
            let p = a.partition;
            match self.leases.held.get_mut(&p) {
                Some(h) if h.epoch == a.epoch && h.valid_until > now => {
                    if until > h.valid_until {
                        h.valid_until = until;
                        fx.push(Effect::Record(Record::LeaseHeld { at: now, partition: p, epoch: a.epoch, until }));
                        self.users_lease_held(p, a.epoch, until, fx);
                    }
                }
                Some(h) if h.valid_until > now => {}
                _ if self.leases.served.get(&p).is_some_and(|s| *s >= a.epoch) => {}
                _ => {
                    self.leases.held.insert(p, super::lease::Held { epoch: a.epoch, valid_until: until });
                    self.leases.next_lapse = self.leases.next_lapse.min(until);
                    let mine = self.leases.served.insert(p, a.epoch).unwrap_or(0);
                    let others = self.leases.rounds.get(&round).and_then(|r| r.before.get(&p)).copied();
                    fx.push(Effect::Record(Record::LeaseHeld { at: now, partition: p, epoch: a.epoch, until }));
                    self.users_lease_held(p, a.epoch, until, fx);
                    self.users_lease_started(p, others.unwrap_or(u64::MAX).max(mine));
                    self.start_home(p, a.epoch, now, fx);
                }
            }
        }
    }

    /// A lease that ran out is dropped with the home state built on it.
    pub(super) fn drop_lapsed_leases(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        // Renewals only move deadlines later and removals only drop them, so the bound holds.
        if now < self.leases.next_lapse {
            return;
        }
        self.leases.next_lapse =
            self.leases.held.values().map(|h| h.valid_until).filter(|u| *u > now).min().unwrap_or(Millis::MAX);
        let lapsed: Vec<(PartitionId, u64)> =
            self.leases.held.iter().filter(|(_, h)| h.valid_until <= now).map(|(p, h)| (*p, h.epoch)).collect();
        for (p, epoch) in lapsed {
            self.leases.held.remove(&p);
            self.stop_home(p, now, fx);
            fx.push(Effect::Record(Record::LeaseDropped { at: now, partition: p, epoch }));
        }
    }

    /// Give every lease up at once (graceful shutdown, rule 13); returns what it released.
    pub(super) fn leases_release_all(&mut self, now: Millis, fx: &mut Vec<Effect>) -> Vec<Announced> {
        let leases = self.leases.valid_now(now);
        for a in &leases {
            self.leases.held.remove(&a.partition);
            fx.push(Effect::Record(Record::LeaseDropped { at: now, partition: a.partition, epoch: a.epoch }));
        }
        if !leases.is_empty() {
            for to in self.peers.keys() {
                let msg = PeerMsg::LeaseRelease { from: self.me.clone(), leases: leases.clone() };
                fx.push(Effect::Send { to: to.clone(), msg });
            }
        }
        leases
    }

    /// Handover: a partition held here whose preferred node has been back for two leases is
    /// released, so that node acquires it at a higher epoch and rebuilds it by a scan.
    pub(super) fn maybe_hand_over(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let live = self.live_names();
        let settle = 2 * self.config.cluster.lease_ms;
        let mut give = Vec::new();
        for (p, h) in self.leases.held.iter() {
            if h.valid_until <= now {
                continue;
            }
            let Some(pref) = preferred_home(*p, &live) else { continue };
            let settled = self.peers.get(&pref).is_some_and(|peer| peer.alive && now >= peer.alive_since + settle);
            if pref != self.me.node && settled {
                give.push((Announced { partition: *p, epoch: h.epoch }, pref));
            }
        }
        if give.is_empty() {
            return;
        }
        for (a, pref) in &give {
            self.users_hand_over(a.partition, pref, now, fx);
        }
        let give: Vec<Announced> = give.into_iter().map(|(a, _)| a).collect();
        for a in &give {
            self.leases.held.remove(&a.partition);
            self.stop_home(a.partition, now, fx);
            fx.push(Effect::Record(Record::LeaseDropped { at: now, partition: a.partition, epoch: a.epoch }));
        }
        for to in self.peers.keys() {
            let msg = PeerMsg::LeaseRelease { from: self.me.clone(), leases: give.clone() };
            fx.push(Effect::Send { to: to.clone(), msg });
        }
    }
}
