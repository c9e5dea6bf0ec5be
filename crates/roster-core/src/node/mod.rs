//! One node's whole cluster logic as a single I/O-free machine: [`NodeState`].
//!
//! It composes the lease machines (grantor and holder, `lease.rs`), liveness with echoes
//! (`liveness.rs`), the home side of the slot policy (`home.rs`: one
//! [`ScopeSlots`](crate::ScopeSlots) per `(user, scope)` of the partitions it holds, rebuilt by
//! recovery scans) and the gateway side (`gateway.rs`: the slots of its own connections, each
//! valid until its horizon). `handle(input, now)` returns effects in the order the runtime must
//! carry them out (an epoch is persisted before the grant that uses it is sent); the
//! simulation drives exactly this.
//!
//! Every input starts the same way: slots whose horizon passed are revoked first (rule 5), so a
//! process that wakes from a pause acts on nothing stale.

mod gateway;
mod home;
mod lease;
mod liveness;
pub use liveness::PeerView;
mod partition_map;
mod presence;
mod relay;
mod safeguards;
mod scope_map;
mod shared_topics;
#[cfg(feature = "ablation")]
pub use safeguards::Safeguards;
#[cfg(not(feature = "ablation"))]
pub(crate) use safeguards::Safeguards;
mod types;
mod user_view;
mod users;

pub use types::*;
pub use user_view::*;

use crate::ids::{Incarnation, Millis, NodeName};
use crate::presence::{DeltaBuffer, PresenceTable};
use crate::ring::PartitionId;
use crate::Config;
use std::collections::BTreeMap;

/// What a node starts from.
#[derive(Clone, Debug)]
pub struct NodeBoot {
    /// This boot's incarnation; its name must be one of the config's nodes.
    pub me: Incarnation,
    /// The validated cluster configuration (identical on every node).
    pub config: Config,
    /// The highest epoch this node ever granted, from its `data_dir` (0 if none).
    pub stored_epoch: u64,
    /// The wall clock in Unix milliseconds at boot: epochs start above it (rule 3).
    pub wall_clock_ms: u64,
}

/// What a node holds right now (see [`NodeState::counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounts {
    /// `(user, scope)` states on the partitions this node is home of.
    pub home_users: usize,
    /// Slots held by this node's sockets.
    pub gateway_slots: usize,
    /// Joins waiting for their home's answer.
    pub waiting_joins: usize,
    /// Sockets known to the gateway side.
    pub sockets: usize,
    /// Entries in the presence replica (all origins).
    pub presence_entries: usize,
    /// Partition leases held.
    pub leases: usize,
}

/// One node's cluster logic. See the module documentation.
#[derive(Debug)]
pub struct NodeState {
    me: Incarnation,
    config: Config,
    safeguards: Safeguards,
    started_at: Millis,
    /// A cluster of one node skips the start-up waits (rule 12).
    alone: bool,
    stopped: bool,
    /// Every partition has had a home this node hears at least once (start-up is over).
    started: bool,
    next_heartbeat: Millis,
    next_lease_round: Millis,
    peers: BTreeMap<NodeName, liveness::Peer>,
    leases: lease::Leases,
    /// Boxed: a place per partition up to the highest one held, one pointer each.
    homes: partition_map::PartitionMap<Box<home::Home>>,
    /// The partitions whose homes touched a user this turn (see `home::Touches`).
    touches: home::Touches,
    gateway: gateway::Gateway,
    presence: PresenceTable,
    /// One shared copy of each topic name that clients' joins and leaves bring.
    topics: shared_topics::SharedTopics,
    outbox: DeltaBuffer,
    phx_refs: u64,
    /// When this node last asked each peer for its presence snapshot.
    snapshot_asked: BTreeMap<NodeName, Millis>,
    /// Wall clock minus this node's clock at boot: `online_at` is shown in Unix milliseconds.
    wall_offset: Millis,
    /// User actors: which users have an activation here, and what they were told.
    users: users::Users,
    /// Validations, broadcasts and flushes (`relay.rs`).
    relay: relay::Relay,
    /// The slot rules in use, one shared copy per distinct rules (see `home::rules_for`).
    slot_rules: Vec<std::sync::Arc<crate::slot::SlotRules>>,
    /// The effects of a join's slot decision, emptied, kept from join to join (room for at
    /// most `home::KEPT_SLOT_EFFECTS`): a fresh list per join otherwise.
    slot_effects: Vec<crate::slot::SlotEffect>,
}

impl NodeState {
    /// A node booting at `now` (its own clock).
    pub fn new(boot: NodeBoot, now: Millis) -> Self {
        Self::boot(boot, now, Safeguards::default())
    }

    /// A node booting at `now` with some safeguards switched off (ablation tests only).
    #[cfg(feature = "ablation")]
    pub fn with_safeguards(boot: NodeBoot, now: Millis, safeguards: Safeguards) -> Self {
        Self::boot(boot, now, safeguards)
    }

    fn boot(boot: NodeBoot, now: Millis, safeguards: Safeguards) -> Self {
        let partitions = boot.config.cluster.partitions;
        let alone = boot.config.cluster.nodes.len() == 1;
        let peers = boot.config.cluster.nodes.iter().map(|n| (n.name.clone(), liveness::Peer::default())).collect();
        let (floor, stored) = if safeguards.epochs_start_above_floor {
            (boot.stored_epoch.max(boot.wall_clock_ms), boot.stored_epoch)
        } else {
            (0, 0)
        };
        Self {
            leases: lease::Leases::new(partitions, floor, stored),
            gateway: gateway::Gateway::new(partitions),
            presence: {
                // A cluster of one node has nobody to send deltas to: the table builds none.
                let mut table = PresenceTable::new(boot.me.clone());
                table.set_replicated(!alone);
                table
            },
            topics: shared_topics::SharedTopics::default(),
            outbox: DeltaBuffer::new(boot.config.presence.broadcast_ms),
            phx_refs: 0,
            snapshot_asked: BTreeMap::new(),
            wall_offset: boot.wall_clock_ms.saturating_sub(now),
            me: boot.me,
            config: boot.config,
            safeguards,
            started_at: now,
            alone,
            stopped: false,
            started: false,
            next_heartbeat: now,
            next_lease_round: now,
            peers,
            homes: partition_map::PartitionMap::new(),
            touches: home::Touches::default(),
            users: users::Users::default(),
            relay: relay::Relay::default(),
            slot_rules: Vec::new(),
            slot_effects: Vec::new(),
        }
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> &Incarnation {
        &self.me
    }

    /// This node's presence replica (its own entries and every live peer's).
    pub fn presence(&self) -> &PresenceTable {
        &self.presence
    }

    /// The configuration it runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Feed one input; returns the effects in order.
    pub fn handle(&mut self, input: Input, now: Millis) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.handle_into(input, now, &mut fx);
        fx
    }

    /// [`handle`](Self::handle), adding the effects in order to the end of `fx`: a caller that
    /// feeds many inputs reuses one buffer instead of allocating (and growing) one per input.
    pub fn handle_into(&mut self, input: Input, now: Millis, fx: &mut Vec<Effect>) {
        if self.stopped {
            self.relay_after_stop(input, fx);
            return;
        }
        // Rule 5: before any action, drop every slot whose horizon has passed.
        self.expire_horizons(now, fx);
        self.drop_lapsed_leases(now, fx);
        match input {
            Input::Tick => self.tick(now, fx),
            Input::Receive { from, msg } => self.receive(from, msg, now, fx),
            Input::LinkDown { peer } => self.peer_down(&peer, now, fx),
            Input::Join(mut join) => {
                join.topic = self.topics.share(join.topic);
                self.client_join(join, now, fx)
            }
            Input::Leave { socket, topic } => {
                let topic = self.topics.share(topic);
                self.client_leave(socket, &topic, now, fx)
            }
            Input::SocketClosed { socket, clean } => self.socket_closed(socket, clean, now, fx),
            Input::UpdateMeta { socket, topic, meta } => self.update_meta(socket, &topic, meta, now, fx),
            Input::Kick { user, topic, reason } => self.kick(user, topic, reason, now, fx),
            Input::Shutdown => self.shutdown(now, fx),
            input @ (Input::UserCall { .. }
            | Input::UserInfo { .. }
            | Input::KickSession { .. }
            | Input::ActivationStopped { .. }) => self.user_input(input, now, fx),
            input @ (Input::Validate { .. } | Input::Broadcast { .. } | Input::Flush { .. }) => {
                self.relay_input(input, now, fx)
            }
        }
        self.sync_users(now, fx);
        if !self.started && self.all_homed(now) {
            self.started = true;
        }
    }

    /// The latest instant by which the runtime must call `handle(Input::Tick, ..)`.
    pub fn next_wake(&self) -> Millis {
        let mut wake = self.next_heartbeat.min(self.next_lease_round);
        if let Some(due) = self.presence_due() {
            wake = wake.min(due);
        }
        if let Some(h) = self.gateway.next_horizon(self.isolation_valid_ms()) {
            wake = wake.min(h);
        }
        for home in self.homes.values() {
            if let Some(d) = home.next_deadline() {
                wake = wake.min(d);
            }
        }
        if let Some(w) = self.users_next_wake() {
            wake = wake.min(w);
        }
        wake
    }

    /// Whether this node admits joins (what `/ready` reports): start-up is over (every
    /// partition has had a home it hears) and it hears a majority of the cluster now. A peer's
    /// death does not make the others unready while its partitions move (joins for them wait
    /// up to `join_wait_ms`); a node cut off into a minority is unready, as it answers
    /// `no_quorum`.
    ///
    /// It also waits until this node answers recovery scans completely (`isolation_ms` after
    /// start, rule 10): until then every new home's scan waits for this node (its partial
    /// answers, rule 15, re-attach its slots but vouch for nothing else), so a rolling restart
    /// should not yet stop the next node.
    pub fn is_ready(&self, now: Millis) -> bool {
        let scans_answered = self.alone
            || !self.safeguards.scan_quiet_after_start
            || now >= self.started_at + self.config.cluster.isolation_ms;
        !self.stopped && self.started && scans_answered && self.live_names().len() * 2 > self.peers.len()
    }

    /// Whether every partition has a home this node hears now.
    pub fn all_homed(&self, now: Millis) -> bool {
        (0..self.config.cluster.partitions).all(|p| {
            let p = PartitionId(p);
            match self.homes.get(&p) {
                Some(h) => self.leases.valid(p, now).is_some() && h.scan_done(),
                None => self.home_of(p, now).is_some(),
            }
        })
    }

    /// Partitions whose lease this node holds now, with epoch and expiry (own clock).
    pub fn leases_held(&self, now: Millis) -> Vec<(PartitionId, u64, Millis)> {
        self.leases.held(now)
    }

    /// Whether `token` still holds its slot for `(user, scope)`, as this node knows it as the
    /// user's home; `None` when this node is not serving that user's partition now.
    pub fn slot_holds(
        &self,
        user: &crate::UserId,
        scope: &crate::ScopeKey,
        token: crate::SlotToken,
        now: Millis,
    ) -> Option<bool> {
        let p = crate::partition_of(user, self.config.cluster.partitions);
        self.home_slot_holds(p, user, scope, token, now)
    }

    /// The node serving `user`'s partition now, as this node knows it (itself while it holds
    /// the lease, else the live peer announcing the newest epoch for it).
    pub fn home_of_user(&self, user: &crate::UserId, now: Millis) -> Option<NodeName> {
        self.home_of(crate::partition_of(user, self.config.cluster.partitions), now)
    }

    /// How the presence list of `topic` shows anonymous viewers and signed-in users (from its
    /// policy).
    pub fn presence_view(&self, topic: &crate::Topic) -> crate::PresenceView {
        self.config.policy_for(topic).presence_view()
    }

    /// Counts for stats and health: what this node holds right now.
    pub fn counts(&self) -> NodeCounts {
        NodeCounts {
            home_users: self.homes.values().map(|h| h.user_count()).sum(),
            gateway_slots: self.gateway.slot_count(),
            waiting_joins: self.gateway.waiting_count(),
            sockets: self.gateway.socket_count(),
            presence_entries: self.presence.len(),
            leases: self.leases.held_count(),
        }
    }

    fn receive(&mut self, from: NodeName, msg: PeerMsg, now: Millis, fx: &mut Vec<Effect>) {
        if !self.peers.contains_key(&from) {
            return; // not a configured node
        }
        match msg {
            PeerMsg::Heartbeat { from: inc, sent_at, leases, echoes, presence_seq } => {
                self.heartbeat(inc, sent_at, leases, echoes, presence_seq, now, fx)
            }
            PeerMsg::LeaseRequest { from: inc, round, asks } => self.lease_request(inc, round, asks, now, fx),
            PeerMsg::LeaseReply { from: inc, round, granted, refused, before } => {
                self.lease_reply(inc, round, granted, refused, before, now, fx)
            }
            PeerMsg::LeaseRelease { from: inc, leases } => self.leases.release_from(&inc, &leases),
            PeerMsg::SlotJoin { conn, user, scope, topic, tab, role } => {
                self.home_join(conn, user, scope, topic, tab, role, now, fx)
            }
            PeerMsg::SlotReleased { conn, user, scope, token, clean } => {
                self.home_released(from, conn, user, scope, token, clean, now, fx)
            }
            PeerMsg::ScanReply { from: inc, partition, epoch, slots, complete } => {
                self.scan_reply(inc, partition, epoch, slots, complete, now, fx)
            }
            PeerMsg::Kick { user, scope, reason } => self.home_kick(user, scope, reason, now, fx),
            PeerMsg::SlotGrant { from: _, user, conn, scope, token, echo } => {
                self.gw_grant(user, conn, scope, token, echo, now, fx)
            }
            PeerMsg::SlotReject { from: _, conn, scope, reason } => self.gw_reject(conn, scope, reason, now, fx),
            PeerMsg::SlotRevoke { from: _, user, conn, scope, token, reason } => {
                self.gw_end_by_home(user, conn, scope, token, Some(reason), now, fx)
            }
            PeerMsg::SlotClose { from: _, user, conn, scope, token } => {
                self.gw_end_by_home(user, conn, scope, token, None, now, fx)
            }
            PeerMsg::SlotReleaseAck { conn, token } => self.gateway.release_acked(&conn, token),
            PeerMsg::ScanRequest { from: inc, partition, epoch } => self.gw_scan(inc, partition, epoch, now, fx),
            PeerMsg::Goodbye { from: inc, released, settled } => self.goodbye(from, inc, released, settled, now, fx),
            PeerMsg::Presence(msg) => self.presence_msg(msg, now, fx),
            msg @ (PeerMsg::UserCall { .. }
            | PeerMsg::UserReply { .. }
            | PeerMsg::UserInfo { .. }
            | PeerMsg::UserInfoReply { .. }
            | PeerMsg::KickSession { .. }
            | PeerMsg::HandoverPlan { .. }
            | PeerMsg::UserHandover { .. }) => self.user_receive(msg, now, fx),
            msg @ (PeerMsg::Validate { .. }
            | PeerMsg::ValidateReply { .. }
            | PeerMsg::Broadcast { .. }
            | PeerMsg::Flush { .. }
            | PeerMsg::FlushAck { .. }) => self.relay_receive(from, msg, now, fx),
        }
    }

    fn tick(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        self.check_timeouts(now, fx);
        if now >= self.next_lease_round {
            self.next_lease_round = now + (self.config.cluster.lease_ms / 4).max(1);
            self.lease_round(now, fx);
        }
        self.flush_presence(now, false, fx);
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.config.cluster.heartbeat_ms;
            // Deltas first: the heartbeat announces the sequence number they reach.
            self.flush_presence(now, true, fx);
            self.send_heartbeats(now, fx);
            self.home_retries(now, fx);
            self.gw_retries(now, fx);
            self.maybe_hand_over(now, fx);
        }
        self.home_timers(now, fx);
        self.gw_timers(now, fx);
    }

    fn shutdown(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        self.gw_shutdown(now, fx);
        self.flush_presence(now, true, fx);
        let released = self.leases_release_all(now, fx);
        self.users_shutdown(now, fx);
        self.homes.clear();
        self.stopped = true;
        // Rule 16: the last message to every peer, after every release above.
        if self.safeguards.say_goodbye && !self.alone {
            let settled = now >= self.started_at + self.config.cluster.isolation_ms;
            for to in self.peers.keys().filter(|n| **n != self.me.node) {
                let msg = PeerMsg::Goodbye { from: self.me.clone(), released: released.clone(), settled };
                fx.push(Effect::Send { to: to.clone(), msg });
            }
        }
    }

    /// `isolation_ms × (1 − max_drift)`: how long after an echoed heartbeat a gateway's slot
    /// stays valid, on the gateway's clock.
    fn isolation_valid_ms(&self) -> Millis {
        let c = &self.config.cluster;
        (c.isolation_ms as f64 * (1.0 - c.max_drift)).floor() as Millis
    }

    /// `isolation_ms × (1 + max_drift)`: how long after the last heartbeat a home keeps an
    /// unreachable gateway's slots in doubt, on the home's clock.
    fn isolation_doubt_ms(&self) -> Millis {
        let c = &self.config.cluster;
        (c.isolation_ms as f64 * (1.0 + c.max_drift)).ceil() as Millis
    }

    fn send(&self, to: &NodeName, msg: PeerMsg, fx: &mut Vec<Effect>) {
        fx.push(Effect::Send { to: to.clone(), msg });
    }
}

#[cfg(test)]
mod tests;
