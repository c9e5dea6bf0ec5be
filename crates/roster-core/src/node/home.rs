//! The home side: the slots of the users of the partitions whose lease this node holds.
//!
//! A new lease starts with a recovery scan (rule 9): the partition admits nothing until every
//! gateway heard has answered or `isolation_ms` passed; then, while a gateway that did not
//! answer may still hold slots it could not list (until `isolation_ms × (1 + max_drift)` after
//! the later of the lease start and its last heartbeat), only tabs the home knows may join.

use super::scope_map::ScopeMap;
use super::{Effect, HeldSlot, NodeState, PeerMsg};
use crate::config::{Config, PolicyId, Scope, ScopeKey};
use crate::ids::{ConnId, Incarnation, Millis, NodeName, Role, SlotToken, TabId, Topic, UserId};
use crate::ring::{partition_of, PartitionId};
use crate::slot::{ScopeSlots, SlotEffect, SlotRules, TokenMint, UnsafeSwitches};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One `(user, scope)` on its home: the slot machine, which keeps the number of the rules it
/// runs under ([`ScopeSlots::rules_id`], an index in the node's table of distinct rules,
/// [`NodeState::rules_for`]): 56 bytes (88 before the slot record shared its two deadlines
/// and the waiting joins its allocation, 72 before it kept its deadline in seven bytes and
/// its stage and doubt in one, 64 while a tab id took 16), where a pointer to the rules beside
/// it made 96.
#[derive(Debug)]
pub(super) struct UserScope {
    slots: ScopeSlots,
}

impl UserScope {
    fn new(rules: u16) -> Self {
        let mut slots = ScopeSlots::new();
        slots.set_rules_id(rules);
        UserScope { slots }
    }
}

/// The rules numbered `id` by [`NodeState::rules_for`] for `scope`.
fn rules_of<'a>(table: &'a [Arc<SlotRules>], config: &Config, id: u16, scope: &ScopeKey) -> Cow<'a, SlotRules> {
    match table.get(id as usize) {
        Some(rules) if id != UNNUMBERED => Cow::Borrowed(rules),
        _ => Cow::Owned(resolve_rules(config, scope)),
    }
}

/// The number of rules resolved again at each use: the table is full (more than 65,534
/// distinct rules, which takes as many `[[policy]]` entries).
const UNNUMBERED: u16 = u16::MAX;

fn resolve_rules(config: &Config, scope: &ScopeKey) -> SlotRules {
    let policy = match scope.scope() {
        Scope::Topic(t) => config.policy_for(t),
        Scope::Global(PolicyId::Configured(i)) => config
            .policy
            .get(i as usize)
            .map(|p| config.policy_for(&Topic::from(p.topic.trim_end_matches('*'))))
            .unwrap_or_else(crate::config::Policy::built_in),
        Scope::Global(PolicyId::BuiltIn) => crate::config::Policy::built_in(),
    };
    SlotRules::from_policy(&policy, config.server.join_wait_ms)
}

type UserKey = (UserId, ScopeKey);

/// How many slot effects' room the list a join's effects are written into keeps between joins
/// (a join makes one or two; a takeover of many tabs more, let go after).
pub(super) const KEPT_SLOT_EFFECTS: usize = 8;

/// A partition this node is home of.
#[derive(Debug)]
pub(super) struct Home {
    epoch: u64,
    mint: TokenMint,
    lease_start: Millis,
    users: ScopeMap<UserScope>,
    /// Index: when each user next needs a tick, so a tick touches only what is due.
    deadlines: BTreeSet<(Millis, UserKey)>,
    deadline_of: BTreeMap<UserKey, Millis>,
    /// Index: users with a revoke or close not yet confirmed (sent again every heartbeat).
    outstanding: BTreeSet<UserKey>,
    /// Index: users with joins waiting (admitted once new tabs are no longer blocked).
    waiters: BTreeSet<UserKey>,
    /// Gateways asked in the scan and not yet answered, with when they were first asked.
    unanswered: BTreeMap<NodeName, Millis>,
    /// Gateway incarnations that answered.
    answered: BTreeSet<Incarnation>,
    /// The scan is over (every gateway answered, or `isolation_ms` passed).
    scan_over: bool,
    /// Slots collected while the scan runs.
    collected: Vec<HeldSlot>,
    /// Older connections of a tab already told to close while the scan runs.
    closed_early: BTreeSet<(ConnId, SlotToken)>,
    /// This home's partition, written with each of its touches.
    partition: PartitionId,
    /// Shared with the node: the users whose slots changed in this turn, with the scopes that
    /// changed (the user's activation is brought up to date at the end of the turn, in those
    /// scopes only: `users.rs`), so the end of a turn visits only those.
    touches: Touches,
}

/// What the homes touched this turn, one [`Touch`] per change, in any order and possibly
/// repeated: the end of the turn sorts it. One list for the node, kept from turn to turn
/// (`users.rs`): a tree of users and of their scopes, per home and per turn, allocated its
/// nodes anew for each turn's first join.
pub(super) type Touches = std::sync::Arc<std::sync::Mutex<Vec<Touch>>>;

/// A user whose slots in a scope changed (`None`: touched for its activation alone, a
/// handover wait or a restart), in a home's partition.
pub(super) type Touch = (PartitionId, UserId, Option<ScopeKey>);

impl Home {
    pub(super) fn scan_done(&self) -> bool {
        self.scan_over
    }

    pub(super) fn user_count(&self) -> usize {
        self.users.len()
    }

    pub(super) fn next_deadline(&self) -> Option<Millis> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the scan (or the wait after it, rule 9) still counts on `gateway` answering.
    pub(super) fn waits_for(&self, gateway: &NodeName) -> bool {
        self.unanswered.contains_key(gateway)
    }

    /// Rule 16: `gateway` said goodbye and this home is the direct successor of its lease:
    /// its scan waits for it no more.
    pub(super) fn stop_waiting_for(&mut self, gateway: &NodeName) {
        self.unanswered.remove(gateway);
    }

    pub(super) fn gateway_departed(&mut self, gateway: &Incarnation, now: Millis) {
        if !self.scan_over {
            self.collected.retain(|s| &s.conn.gateway != gateway);
        }
        for k in self.users.keys() {
            if let Some(u) = self.users.get_mut(&k.0, &k.1) {
                u.slots.gateway_departed(gateway, now);
            }
            self.reindex(&k);
        }
    }

    pub(super) fn gateway_heard(&mut self, gateway: &Incarnation) {
        for k in self.users.keys() {
            if let Some(u) = self.users.get_mut(&k.0, &k.1) {
                u.slots.gateway_heard(gateway);
            }
            self.reindex(&k);
        }
    }

    pub(super) fn gateway_unheard(&mut self, gateway: &Incarnation, until: Millis) {
        for k in self.users.keys() {
            if let Some(u) = self.users.get_mut(&k.0, &k.1) {
                u.slots.gateway_unheard(gateway, until);
            }
            self.reindex(&k);
        }
    }

    /// Bring the indexes up to date after `key`'s slots changed; forget an idle user.
    fn reindex(&mut self, key: &UserKey) {
        self.mark(&key.0, Some(&key.1));
        if let Some(d) = self.deadline_of.remove(key) {
            self.deadlines.remove(&(d, key.clone()));
        }
        self.outstanding.remove(key);
        self.waiters.remove(key);
        let Some(u) = self.users.get(&key.0, &key.1) else { return };
        if u.slots.is_idle() {
            self.users.remove(&key.0, &key.1);
            return;
        }
        if let Some(d) = u.slots.next_deadline() {
            self.deadlines.insert((d, key.clone()));
            self.deadline_of.insert(key.clone(), d);
        }
        let unconfirmed = u
            .slots
            .records()
            .iter()
            .any(|r| matches!(r.state(), crate::slot::SlotState::Revoking | crate::slot::SlotState::Replaced));
        if unconfirmed {
            self.outstanding.insert(key.clone());
        }
        if u.slots.waiting() > 0 {
            self.waiters.insert(key.clone());
        }
    }

    /// Install rebuilt user states (end of a scan), indexing them.
    fn install(&mut self, users: ScopeMap<UserScope>) {
        let keys = users.keys();
        self.users = users;
        for k in keys {
            self.reindex(&k);
        }
    }
}

impl NodeState {
    fn unsafe_switches(&self) -> UnsafeSwitches {
        UnsafeSwitches {
            grant_before_revoke: !self.safeguards.revoke_before_grant,
            forget_replaced: !self.safeguards.keep_replaced,
            grant_keeps_tab_elsewhere: !self.safeguards.close_tab_elsewhere_on_grant,
            keep_joins_of_unheard_gateways: !self.safeguards.drop_joins_of_unheard_gateways,
        }
    }

    /// The number of a scope's rules (from the policy that defines it) in the node's table of
    /// distinct rules. The configuration does not change, so the table holds at most one entry
    /// per `[[policy]]` and the built-in one; it is never emptied, so a number stays good. Past
    /// 65,534 distinct rules a scope's are resolved again at each use ([`UNNUMBERED`]).
    fn rules_for(&mut self, scope: &ScopeKey) -> u16 {
        let rules = resolve_rules(&self.config, scope);
        if let Some(at) = self.slot_rules.iter().position(|r| **r == rules) {
            return at as u16;
        }
        if self.slot_rules.len() >= UNNUMBERED as usize {
            return UNNUMBERED;
        }
        self.slot_rules.push(Arc::new(rules));
        (self.slot_rules.len() - 1) as u16
    }

    /// A lease on `p` started: rebuild its slots by a recovery scan (a lone node has no other
    /// gateway, and its own earlier life's slots died with it: rule 12).
    pub(super) fn start_home(&mut self, p: PartitionId, epoch: u64, now: Millis, fx: &mut Vec<Effect>) {
        let mut home = Home {
            epoch,
            mint: TokenMint::new(epoch),
            lease_start: now,
            users: ScopeMap::default(),
            deadlines: BTreeSet::new(),
            deadline_of: BTreeMap::new(),
            outstanding: BTreeSet::new(),
            waiters: BTreeSet::new(),
            unanswered: BTreeMap::new(),
            answered: BTreeSet::new(),
            scan_over: false,
            collected: Vec::new(),
            closed_early: BTreeSet::new(),
            partition: p,
            touches: self.touches.clone(),
        };
        let needs_successor = self.safeguards.goodbye_scan_needs_direct_successor;
        for (name, peer) in &self.peers {
            // Rule 16: a gateway that said goodbye holds nothing, and as the direct successor
            // of the lease it released, no later life of it holds anything here.
            if *name != self.me.node && peer.skippable_in_scan(p, epoch, needs_successor) {
                continue;
            }
            home.unanswered.insert(name.clone(), now);
        }
        self.forget_touches(p); // an earlier home's, had it one
        self.homes.insert(p, Box::new(home));
        self.send_scans(p, now, fx);
    }

    pub(super) fn stop_home(&mut self, p: PartitionId, now: Millis, fx: &mut Vec<Effect>) {
        self.users_partition_lost(p, now, fx);
        let Some(home) = self.homes.remove(&p) else { return };
        // What it touched this turn goes with it (no activation is brought up to date here).
        self.forget_touches(p);
        // Joins waiting here are told to ask again; the next home will answer them.
        for (_, scope, u) in home.users.into_entries() {
            for conn in u.slots.waiting_conns() {
                let msg = PeerMsg::SlotReject {
                    from: self.me.clone(),
                    conn: conn.clone(),
                    scope: scope.clone(),
                    reason: "not_home".into(),
                };
                self.send(&conn.gateway.node, msg, fx);
            }
        }
    }

    fn send_scans(&self, p: PartitionId, _now: Millis, fx: &mut Vec<Effect>) {
        let Some(home) = self.homes.get(&p) else { return };
        for name in home.unanswered.keys() {
            if self.peers.get(name).is_some_and(|peer| peer.alive) || *name == self.me.node {
                let msg = PeerMsg::ScanRequest { from: self.me.clone(), partition: p, epoch: home.epoch };
                self.send(name, msg, fx);
            }
        }
    }

    /// A gateway's answer to this home's scan. A complete answer counts the gateway as
    /// answered; a partial one (rule 15: the gateway is in its first `isolation_ms`) only
    /// adds the slots it lists, and the gateway is asked again until it answers completely.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn scan_reply(
        &mut self,
        from: Incarnation,
        p: PartitionId,
        epoch: u64,
        slots: Vec<HeldSlot>,
        complete: bool,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let current = self.peers.get(&from.node).and_then(|peer| peer.incarnation.clone());
        if current.as_ref() != Some(&from) {
            return; // answers vouch for the answering incarnation only
        }
        // Rule 16: an answer overtaken by its sender's goodbye lists slots it released since.
        let slots = if self.peers.get(&from.node).is_some_and(|peer| peer.gone()) { Vec::new() } else { slots };
        let Some(home) = self.homes.get_mut(&p) else { return };
        if home.epoch != epoch || !home.unanswered.contains_key(&from.node) {
            return;
        }
        if complete {
            home.unanswered.remove(&from.node);
            home.answered.insert(from);
        }
        if home.scan_over {
            // A gateway that answers partly answers every heartbeat: only news costs a dedup.
            let mut news = false;
            for s in slots {
                let rules = self.rules_for(&s.scope);
                let home = self.homes.get_mut(&p).expect("checked above");
                let known = home
                    .users
                    .get(&s.user, &s.scope)
                    .is_some_and(|u| u.slots.records().iter().any(|r| r.conn == s.conn && r.token == s.token));
                if known {
                    continue;
                }
                let entry = home.users.get_or_insert_with(&s.user, &s.scope, || UserScope::new(rules));
                entry.slots.adopt(s.conn, s.tab, s.token);
                home.reindex(&(s.user, s.scope));
                news = true;
            }
            if news {
                self.dedup_and_send(p, now, fx);
            }
        } else {
            // A gateway that answered partly lists its slots again in every later answer.
            for s in slots {
                if !home.collected.iter().any(|c| c.conn == s.conn && c.token == s.token) {
                    home.collected.push(s);
                }
            }
            self.close_duplicates_early(p, now, fx);
            self.maybe_finish_scan(p, now, fx);
        }
    }

    /// Rule 9, at once: while the scan runs, the answers in may already show one tab on two
    /// connections (a resume whose close was lost, then the home changed). Close all but the
    /// newest now rather than when the scan is over (up to `isolation_ms` later): the scan
    /// re-attached the old connection to this home, whose echoes keep it valid, and if this
    /// home dies before its scan ends the old connection holds until its horizon, beyond what
    /// a resume may take (3-node soak seed 44057, 5-node seed 12442). The scan's own dedup
    /// marks them replaced later and closes them again; a gateway confirms a close twice.
    fn close_duplicates_early(&mut self, p: PartitionId, now: Millis, fx: &mut Vec<Effect>) {
        if !self.safeguards.scan_dedup_tabs || !self.safeguards.scan_dedup_at_once {
            return;
        }
        let Some(home) = self.homes.get_mut(&p) else { return };
        let mut newest: BTreeMap<(&UserId, &ScopeKey, &crate::slot::TabKey), SlotToken> = BTreeMap::new();
        for s in &home.collected {
            let t = newest.entry((&s.user, &s.scope, &s.tab)).or_insert(s.token);
            *t = (*t).max(s.token);
        }
        let older: Vec<HeldSlot> = home
            .collected
            .iter()
            .filter(|s| newest.get(&(&s.user, &s.scope, &s.tab)).is_some_and(|t| *t > s.token))
            .filter(|s| !home.closed_early.contains(&(s.conn.clone(), s.token)))
            .cloned()
            .collect();
        home.closed_early.extend(older.iter().map(|s| (s.conn.clone(), s.token)));
        for s in older {
            let e = SlotEffect::Close { conn: s.conn, token: s.token };
            self.slot_effect(&s.user, &s.scope, e, now, fx);
        }
    }

    /// The scan is over once every gateway asked has answered, or `isolation_ms` after it began.
    fn maybe_finish_scan(&mut self, p: PartitionId, now: Millis, fx: &mut Vec<Effect>) {
        let iso = self.config.cluster.isolation_ms;
        let doubt = self.isolation_doubt_ms();
        let switches = self.unsafe_switches();
        let Some(home) = self.homes.get(&p) else { return };
        if home.scan_over {
            return;
        }
        let alone = self.alone;
        let everyone = home.unanswered.is_empty() || alone && home.unanswered.keys().all(|n| *n != self.me.node);
        if !everyone && now < home.lease_start + iso {
            return;
        }
        let collected: Vec<HeldSlot> =
            self.homes.get_mut(&p).map(|h| std::mem::take(&mut h.collected)).unwrap_or_default();
        let mut built: ScopeMap<UserScope> = ScopeMap::default();
        for s in collected {
            let rules = self.rules_for(&s.scope);
            let u = built.get_or_insert_with(&s.user, &s.scope, || UserScope::new(rules));
            u.slots.adopt(s.conn, s.tab, s.token);
        }
        // Slots of gateways that answered but are unheard now are in doubt, as always.
        let unheard: Vec<(Incarnation, Millis)> = self
            .peers
            .values()
            .filter(|peer| !peer.alive)
            .filter_map(|peer| {
                // Rule 16: a gateway that said goodbye holds nothing: its records go now.
                let until = if self.safeguards.keep_in_doubt && !peer.gone() { peer.last_heard? + doubt } else { now };
                Some((peer.incarnation.clone()?, until))
            })
            .collect();
        for (_, _, u) in built.iter_mut() {
            u.slots.set_unsafe_switches(switches);
            for (inc, until) in &unheard {
                u.slots.gateway_unheard(inc, *until);
            }
        }
        let home = self.homes.get_mut(&p).expect("checked above");
        home.install(built);
        home.scan_over = true;
        self.dedup_and_send(p, now, fx);
    }

    fn dedup_and_send(&mut self, p: PartitionId, now: Millis, fx: &mut Vec<Effect>) {
        if !self.safeguards.scan_dedup_tabs {
            return;
        }
        let Some(home) = self.homes.get_mut(&p) else { return };
        let mut out = Vec::new();
        for (user, scope, u) in home.users.iter_mut() {
            for e in u.slots.dedup_tabs() {
                out.push((user.clone(), scope.clone(), e));
            }
        }
        for (user, scope, e) in out {
            self.slot_effect(&user, &scope, e, now, fx);
            if let Some(home) = self.homes.get_mut(&p) {
                home.reindex(&(user, scope));
            }
        }
    }

    /// Rule 9: may a tab this home does not know join partition `p` now?
    fn new_tabs_blocked(&self, p: PartitionId, now: Millis) -> bool {
        let Some(home) = self.homes.get(&p) else { return true };
        if !home.scan_over {
            return true;
        }
        let doubt = self.isolation_doubt_ms();
        home.unanswered.keys().any(|name| {
            let last = self.peers.get(name).and_then(|peer| peer.last_heard);
            let from = if self.safeguards.scan_wait_from_last_heartbeat {
                last.map_or(home.lease_start, |l| l.max(home.lease_start))
            } else {
                home.lease_start
            };
            now < from + doubt
        })
    }

    pub(super) fn home_slot_holds(
        &self,
        p: PartitionId,
        user: &UserId,
        scope: &ScopeKey,
        token: SlotToken,
        now: Millis,
    ) -> Option<bool> {
        if !self.serving(p, now) {
            return None;
        }
        let home = self.homes.get(&p)?;
        Some(home.users.get(user, scope).is_some_and(|u| u.slots.holds(token)))
    }

    /// Whether this node may act as home of `p` at `now`: a valid lease and a finished scan.
    pub(super) fn serving(&self, p: PartitionId, now: Millis) -> bool {
        self.leases.valid(p, now).is_some() && self.homes.get(&p).is_some_and(|h| h.scan_over)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn home_join(
        &mut self,
        conn: ConnId,
        user: UserId,
        scope: ScopeKey,
        topic: Topic,
        tab: Option<TabId>,
        role: Option<Role>,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let p = partition_of(&user, self.config.cluster.partitions);
        let gateway_heard = self.peers.get(&conn.gateway.node).is_some_and(|peer| {
            peer.alive && peer.incarnation.as_ref() == Some(&conn.gateway) && peer.last_heard.is_some()
        });
        if !self.serving(p, now) || !gateway_heard {
            let msg =
                PeerMsg::SlotReject { from: self.me.clone(), conn: conn.clone(), scope, reason: "not_home".into() };
            self.send(&conn.gateway.node, msg, fx);
            return;
        }
        let blocked = self.new_tabs_blocked(p, now);
        let switches = self.unsafe_switches();
        let rules = {
            let _ = &topic;
            self.rules_for(&scope)
        };
        let home = self.homes.get_mut(&p).expect("serving");
        let u = home.users.get_or_insert_with(&user, &scope, || UserScope::new(rules));
        u.slots.set_unsafe_switches(switches);
        u.slots.set_new_tabs_blocked(blocked);
        self.users.note_topic(&user, &conn, &scope, &topic);
        let rules = rules_of(&self.slot_rules, &self.config, u.slots.rules_id(), &scope);
        let mut effects = std::mem::take(&mut self.slot_effects);
        u.slots.join_into(conn, tab, role.as_ref(), &rules, &mut home.mint, now, &mut effects);
        for e in effects.drain(..) {
            self.slot_effect(&user, &scope, e, now, fx);
        }
        effects.shrink_to(KEPT_SLOT_EFFECTS);
        self.slot_effects = effects;
        self.forget_idle(p, &user, &scope);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn home_released(
        &mut self,
        from: NodeName,
        conn: ConnId,
        user: UserId,
        scope: ScopeKey,
        token: SlotToken,
        clean: bool,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let p = partition_of(&user, self.config.cluster.partitions);
        if !self.serving(p, now) || conn.gateway.node != from {
            return; // no ack: the gateway asks the next home
        }
        let blocked = self.new_tabs_blocked(p, now);
        let home = self.homes.get_mut(&p).expect("serving");
        let mut effects = Vec::new();
        if let Some(u) = home.users.get_mut(&user, &scope) {
            u.slots.set_new_tabs_blocked(blocked);
            let rules = rules_of(&self.slot_rules, &self.config, u.slots.rules_id(), &scope);
            effects = u.slots.released(&conn, token, clean, &rules, &mut home.mint, now);
        }
        self.users.note_release(&conn, token, clean);
        for e in effects {
            self.slot_effect(&user, &scope, e, now, fx);
        }
        self.forget_idle(p, &user, &scope);
        self.send(&from, PeerMsg::SlotReleaseAck { conn, token }, fx);
    }

    pub(super) fn home_kick(
        &mut self,
        user: UserId,
        scope: Option<ScopeKey>,
        reason: String,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let p = partition_of(&user, self.config.cluster.partitions);
        if !self.serving(p, now) {
            return;
        }
        self.users_note_kick(p, &user, scope.as_ref(), &reason);
        let home = self.homes.get_mut(&p).expect("serving");
        let mut effects = Vec::new();
        let mut kicked = Vec::new();
        for (s, us) in home.users.of_user_mut(&user) {
            if scope.as_ref().is_none_or(|sc| sc == s) {
                effects.extend(us.slots.kick(&reason).into_iter().map(|e| (s.clone(), e)));
                kicked.push(s.clone());
            }
        }
        // Every scope kicked changed, with an effect or not (reservations go silently).
        for s in kicked {
            home.reindex(&(user.clone(), s));
        }
        for (s, e) in effects {
            self.slot_effect(&user, &s, e, now, fx);
        }
    }

    /// Reservations lapse, in-doubt slots clear, waits time out, scans finish.
    pub(super) fn home_timers(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let parts: Vec<PartitionId> = self.homes.keys().copied().collect();
        for p in parts {
            self.maybe_finish_scan(p, now, fx);
            // Nothing due and nobody waiting: nothing below would run (this loop runs at every
            // tick for every partition, so the checks that follow were most of a tick's cost).
            let idle = self
                .homes
                .get(&p)
                .is_none_or(|h| h.waiters.is_empty() && h.deadlines.first().is_none_or(|(d, _)| *d > now));
            if idle || !self.serving(p, now) {
                continue;
            }
            let blocked = self.new_tabs_blocked(p, now);
            let home = self.homes.get(&p).expect("listed");
            let mut due: BTreeSet<UserKey> =
                home.deadlines.iter().take_while(|(d, _)| *d <= now).map(|(_, k)| k.clone()).collect();
            if !blocked {
                due.extend(home.waiters.iter().cloned());
            }
            for key in due {
                let home = self.homes.get_mut(&p).expect("listed");
                let Some(u) = home.users.get_mut(&key.0, &key.1) else { continue };
                u.slots.set_new_tabs_blocked(blocked);
                let rules = rules_of(&self.slot_rules, &self.config, u.slots.rules_id(), &key.1);
                let effects = u.slots.tick(&rules, &mut home.mint, now);
                home.reindex(&key);
                for e in effects {
                    self.slot_effect(&key.0, &key.1, e, now, fx);
                }
            }
        }
    }

    /// Every heartbeat: revokes and closes not yet confirmed are sent again while their
    /// gateway is heard (while a scan runs, the closes it sent early: rule 9); scans are asked
    /// again of gateways that have not answered.
    pub(super) fn home_retries(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let mut again = Vec::new();
        for (p, home) in self.homes.iter() {
            if self.leases.valid(*p, now).is_none() {
                continue;
            }
            if !home.scan_over {
                // Rule 9: the older connections closed early, while their gateway is heard.
                if self.safeguards.retry_early_closes {
                    for (conn, token) in &home.closed_early {
                        if !self.peers.get(&conn.gateway.node).is_some_and(|peer| peer.alive) {
                            continue;
                        }
                        if let Some(s) = home.collected.iter().find(|s| &s.conn == conn && s.token == *token) {
                            again.push((s.user.clone(), s.scope.clone(), conn.clone(), *token, false));
                        }
                    }
                }
                continue;
            }
            for (user, scope, u) in
                home.outstanding.iter().filter_map(|k| home.users.get(&k.0, &k.1).map(|u| (&k.0, &k.1, u)))
            {
                for r in u.slots.records() {
                    let heard = self.peers.get(&r.conn.gateway.node).is_some_and(|peer| peer.alive);
                    if !heard {
                        continue;
                    }
                    match r.state() {
                        crate::slot::SlotState::Revoking => {
                            again.push((user.clone(), scope.clone(), r.conn.clone(), r.token, true))
                        }
                        crate::slot::SlotState::Replaced => {
                            again.push((user.clone(), scope.clone(), r.conn.clone(), r.token, false))
                        }
                        _ => {}
                    }
                }
            }
        }
        for (user, scope, conn, token, revoke) in again {
            let to = conn.gateway.node.clone();
            let msg = if revoke {
                PeerMsg::SlotRevoke {
                    from: self.me.clone(),
                    user,
                    conn,
                    scope,
                    token,
                    reason: "logged_in_elsewhere".into(),
                }
            } else {
                PeerMsg::SlotClose { from: self.me.clone(), user, conn, scope, token }
            };
            self.send(&to, msg, fx);
        }
        let parts: Vec<PartitionId> = self.homes.keys().copied().collect();
        for p in parts {
            self.send_scans(p, now, fx);
        }
    }

    fn forget_idle(&mut self, p: PartitionId, user: &UserId, scope: &ScopeKey) {
        if let Some(home) = self.homes.get_mut(&p) {
            home.reindex(&(user.clone(), scope.clone()));
        }
    }

    /// Carry out one effect of a user's slot machine.
    fn slot_effect(&mut self, user: &UserId, scope: &ScopeKey, e: SlotEffect, _now: Millis, fx: &mut Vec<Effect>) {
        self.users.note_slot_effect(&e);
        let me = self.me.clone();
        match e {
            SlotEffect::Grant { conn, token, .. } => {
                self.relay_note_grant(user, scope, token);
                let echo = self.peers.get(&conn.gateway.node).map(|peer| peer.last_sent_at).unwrap_or(0);
                let to = conn.gateway.node.clone();
                self.send(
                    &to,
                    PeerMsg::SlotGrant { from: me, user: user.clone(), conn, scope: scope.clone(), token, echo },
                    fx,
                );
            }
            SlotEffect::Reject { conn, reason } => {
                let to = conn.gateway.node.clone();
                let msg = PeerMsg::SlotReject { from: me, conn, scope: scope.clone(), reason: reason.as_str().into() };
                self.send(&to, msg, fx);
            }
            SlotEffect::Revoke { conn, token, reason } => {
                let to = conn.gateway.node.clone();
                let msg = PeerMsg::SlotRevoke {
                    from: me,
                    user: user.clone(),
                    conn,
                    scope: scope.clone(),
                    token,
                    reason: reason.as_str().into(),
                };
                self.send(&to, msg, fx);
            }
            SlotEffect::Close { conn, token } => {
                let to = conn.gateway.node.clone();
                self.send(
                    &to,
                    PeerMsg::SlotClose { from: me, user: user.clone(), conn, scope: scope.clone(), token },
                    fx,
                );
            }
            SlotEffect::Freed { .. } => {}
        }
    }
}

/// What the user actors' side (`users.rs`) reads of a home.
impl Home {
    /// Every slot record of `user`, in every scope.
    pub(super) fn records_of<'a>(
        &'a self,
        user: &'a UserId,
    ) -> impl Iterator<Item = (&'a ScopeKey, &'a crate::slot::SlotRecord)> + 'a {
        self.scopes_of(user).flat_map(|(scope, records)| records.iter().map(move |r| (scope, r)))
    }

    /// The scopes of `user`, in order, each with its slot records.
    pub(super) fn scopes_of<'a>(
        &'a self,
        user: &'a UserId,
    ) -> impl Iterator<Item = (&'a ScopeKey, &'a [crate::slot::SlotRecord])> + 'a {
        self.users.of_user(user).map(|(scope, us)| (scope, us.slots.records()))
    }

    /// The slot records of `user` in `scope` (none once the scope is idle).
    pub(super) fn records_in(&self, user: &UserId, scope: &ScopeKey) -> &[crate::slot::SlotRecord] {
        self.users.get(user, scope).map_or(&[], |us| us.slots.records())
    }

    /// Whether `user` holds a slot, reservation or waiting join here.
    pub(super) fn has_user(&self, user: &UserId) -> bool {
        self.users.has_user(user)
    }

    /// The next token of this home's mint (an activation's fencing token).
    pub(super) fn next_token(&mut self) -> SlotToken {
        self.mint.next_token()
    }

    /// Mark `user` for a decision on its activation at the end of the turn (its sessions
    /// did not change).
    pub(super) fn touch(&mut self, user: &UserId) {
        self.mark(user, None);
    }

    /// Note that `user`'s slots in `scope` changed (or, with `None`, that it was touched).
    fn mark(&mut self, user: &UserId, scope: Option<&ScopeKey>) {
        let mut touches = self.touches.lock().unwrap_or_else(|e| e.into_inner());
        // The same again (a join's several steps): once is enough.
        let again = touches.last().is_some_and(|(p, u, s)| *p == self.partition && u == user && s.as_ref() == scope);
        if !again {
            touches.push((self.partition, user.clone(), scope.cloned()));
        }
    }
}

impl NodeState {
    /// Revoke one session (`conn` in `scope`) of `user`, homed here: the client gets
    /// `slot_revoked` with `reason`; whoever waits is admitted once its gateway confirms.
    pub(super) fn home_kick_session(
        &mut self,
        user: UserId,
        conn: ConnId,
        scope: ScopeKey,
        reason: String,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let p = partition_of(&user, self.config.cluster.partitions);
        if !self.serving(p, now) {
            return;
        }
        let home = self.homes.get_mut(&p).expect("serving");
        let Some(us) = home.users.get_mut(&user, &scope) else { return };
        let effects = us.slots.kick_conn(&conn, &reason);
        home.reindex(&(user.clone(), scope.clone()));
        for e in effects {
            self.slot_effect(&user, &scope, e, now, fx);
        }
    }
}
