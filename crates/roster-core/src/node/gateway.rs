//! The gateway side: this node's sockets, their channels, and the slots they hold.
//!
//! A slot on a gateway is a lease too (rule 5): it is valid until its *horizon*, the send time
//! of this node's latest heartbeat that the slot's home echoed while announcing the partition
//! at the slot's epoch, plus `isolation_ms × (1 − max_drift)`. A scan answered for a newer
//! epoch re-attaches the slot to the new home; grants and scans below that epoch are ignored
//! afterwards (rule 10). Releases are sent to the partition's home until it acknowledges them.

use super::{Announced, ClientEvent, ClientJoin, Effect, HeldSlot, NodeState, PeerMsg, Record};
use crate::config::{AnonymousMode, ScopeKey};
use crate::few::Few;
use crate::ids::{ConnId, Incarnation, Meta, Millis, NodeName, Role, SlotToken, SocketId, TabId, Topic, UserId};
use crate::ring::{partition_of, PartitionId};
use crate::slot::TabKey;
use std::collections::{BTreeMap, BTreeSet};

/// A slot held by one of this node's sockets (24 bytes). Its user is the socket's
/// ([`Socket::user`]): a socket is one user's, so the user is kept once per socket, not in
/// every slot, and so is its partition (the user's, [`SocketSlots::partition`]). So is its tab,
/// nearly always: the join's `tab_id` is the socket's ([`Socket::tab`]) unless the socket lists
/// another for the slot's scope ([`Socket::other_tabs`]); without a `tab_id` the connection is
/// its own tab, which is this node's socket ([`Gateway::tab_key`]).
///
/// Its attachment epoch (announcements of `(partition, epoch)` extend its horizon) is not kept
/// in it: it is its token's epoch until a scan re-attaches it to a newer one, and a scan
/// re-attaches every slot of its partition at once, so the map keeps that per partition
/// ([`SlotMap::attached`]). The token never changes once the slot is made.
#[derive(Clone, Debug)]
struct GwSlot {
    token: SlotToken,
    topics: SlotTopics,
}

/// The topics a slot serves, sorted; read with the slot's scope. A `topic` scope's slot
/// serves its scope's own topic and nothing else (a join joins the slot of its topic's scope,
/// and the slot goes when its last topic leaves), so the topic is not kept again: `None`
/// stands for it (for a `global` scope, for no topic). Anything else, a `global` scope's few
/// topics above all, is a sorted list one pointer away. 8 bytes in every slot, where keeping
/// the one topic in place cost 16.
#[derive(Clone, Debug, Default)]
#[allow(clippy::box_collection)] // the box is the point: 8 bytes in every slot, not 24
struct SlotTopics(Option<Box<Vec<Topic>>>);

impl SlotTopics {
    /// The topics of `sorted`, sorted without repeats, for a slot of `scope` (copied only
    /// when they are not what `None` says: no list is made for a topic scope's own topic).
    fn from_sorted<'a>(scope: &ScopeKey, sorted: impl Iterator<Item = &'a Topic> + Clone) -> Self {
        let mut topics = SlotTopics(None);
        if !topics.as_slice(scope).iter().eq(sorted.clone()) {
            let mut list: Vec<Topic> = sorted.cloned().collect();
            list.shrink_to_fit();
            topics.0 = Some(Box::new(list));
        }
        topics
    }

    /// Back to `None` when the list says what `None` does for `scope`.
    fn settle(&mut self, scope: &ScopeKey) {
        let implied: &[Topic] = match scope.as_topic() {
            Some(own) => std::slice::from_ref(own),
            None => &[],
        };
        if self.0.as_deref().is_some_and(|list| list.as_slice() == implied) {
            self.0 = None;
        }
    }

    /// The list, taken out of `None` to change it.
    fn list_mut(&mut self, scope: &ScopeKey) -> &mut Vec<Topic> {
        if self.0.is_none() {
            let list = self.as_slice(scope).to_vec();
            self.0 = Some(Box::new(list));
        }
        self.0.as_mut().expect("set above")
    }

    fn insert(&mut self, scope: &ScopeKey, topic: Topic) {
        if self.contains(scope, &topic) {
            return;
        }
        let list = self.list_mut(scope);
        let at = list.binary_search(&topic).unwrap_err();
        list.reserve_exact(1);
        list.insert(at, topic);
        self.settle(scope);
    }

    fn remove(&mut self, scope: &ScopeKey, topic: &Topic) {
        if !self.contains(scope, topic) {
            return;
        }
        let list = self.list_mut(scope);
        if let Ok(at) = list.binary_search(topic) {
            list.remove(at);
            list.shrink_to_fit();
        }
        self.settle(scope);
    }

    fn contains(&self, scope: &ScopeKey, topic: &Topic) -> bool {
        self.as_slice(scope).binary_search(topic).is_ok()
    }

    fn is_empty(&self, scope: &ScopeKey) -> bool {
        self.as_slice(scope).is_empty()
    }

    fn as_slice<'a>(&'a self, scope: &'a ScopeKey) -> &'a [Topic] {
        match (&self.0, scope.as_topic()) {
            (Some(list), _) => list,
            (None, Some(own)) => std::slice::from_ref(own),
            (None, None) => &[],
        }
    }
}

/// The slots of one socket, by scope, and their partition: the socket's user's (every slot of
/// a socket is its user's), kept once here rather than in every slot.
#[derive(Debug)]
struct SocketSlots {
    partition: PartitionId,
    list: Vec<(ScopeKey, GwSlot)>,
}

/// The slots held by this node's sockets, by socket and then scope, in that order. Per socket
/// a list sorted by scope (a socket holds a few slots, rarely more than its topics), grown as
/// [`crate::grow_by`] says: an entry costs its 32 bytes, where one map over `(socket, scope)` cost
/// about 170 (a B-tree's leaves are a third empty on average).
///
/// It keeps each slot's attachment epoch ([`SlotMap::attached`]) without a number per slot:
/// a slot is attached at its token's epoch when made, and a scan re-attaches every slot of a
/// partition attached below its epoch to that epoch ([`SlotMap::reattach`]), so a slot's epoch
/// is the larger of its token's and the highest epoch its partition was re-attached to
/// (`reattached`, one number per partition ever re-attached). A slot made after a re-attach
/// with a token of an older epoch (which the gateway refuses unless `fence_stale_epochs` is
/// switched off) keeps its own epoch in `attached_below`, as before.
#[derive(Debug, Default)]
struct SlotMap {
    by_socket: BTreeMap<SocketId, SocketSlots>,
    len: usize,
    /// Per partition, the highest epoch its slots were re-attached to.
    reattached: BTreeMap<PartitionId, u64>,
    /// The attachment epoch of each slot attached below its partition's `reattached` epoch
    /// (its token's: made after the re-attach, below it); empty unless a safeguard is off.
    attached_below: BTreeMap<(SocketId, ScopeKey), u64>,
}

impl SlotMap {
    fn find(list: &[(ScopeKey, GwSlot)], scope: &ScopeKey) -> Result<usize, usize> {
        list.binary_search_by(|(s, _)| s.cmp(scope))
    }

    fn get(&self, key: &(SocketId, ScopeKey)) -> Option<&GwSlot> {
        let list = &self.by_socket.get(&key.0)?.list;
        Self::find(list, &key.1).ok().map(|at| &list[at].1)
    }

    fn get_mut(&mut self, key: &(SocketId, ScopeKey)) -> Option<&mut GwSlot> {
        let list = &mut self.by_socket.get_mut(&key.0)?.list;
        Self::find(list, &key.1).ok().map(|at| &mut list[at].1)
    }

    /// The attachment epoch of `slot`, the slot of `key` in partition `p`.
    fn attached(&self, key: (SocketId, &ScopeKey), p: PartitionId, slot: &GwSlot) -> u64 {
        let reattached = self.reattached.get(&p).copied().unwrap_or(0);
        if slot.token.epoch < reattached && !self.attached_below.is_empty() {
            if let Some(epoch) = self.attached_below.get(&(key.0, key.1.clone())) {
                return *epoch;
            }
        }
        slot.token.epoch.max(reattached)
    }

    /// Insert the slot of `key` in `partition` (the socket's user's: the same for every slot
    /// of the socket), attached at its token's epoch, returning the one it replaces with its
    /// attachment epoch.
    fn insert(&mut self, key: (SocketId, ScopeKey), partition: PartitionId, slot: GwSlot) -> Option<(u64, GwSlot)> {
        let old = self.remove(&key).map(|(_, epoch, old)| (epoch, old));
        if slot.token.epoch < self.reattached.get(&partition).copied().unwrap_or(0) {
            self.attached_below.insert(key.clone(), slot.token.epoch);
        }
        let entry = self.by_socket.entry(key.0).or_insert_with(|| SocketSlots { partition, list: Vec::new() });
        debug_assert_eq!(entry.partition, partition, "a socket's slots are its user's");
        let list = &mut entry.list;
        let at = Self::find(list, &key.1).expect_err("removed above");
        crate::make_room(list);
        list.insert(at, (key.1, slot));
        self.len += 1;
        old
    }

    /// Take the slot of `key` out, with its partition and attachment epoch.
    fn remove(&mut self, key: &(SocketId, ScopeKey)) -> Option<(PartitionId, u64, GwSlot)> {
        let entry = self.by_socket.get_mut(&key.0)?;
        let partition = entry.partition;
        let list = &mut entry.list;
        let at = Self::find(list, &key.1).ok()?;
        let (_, slot) = list.remove(at);
        self.len -= 1;
        if list.is_empty() {
            self.by_socket.remove(&key.0);
        } else if list.capacity() > 2 * list.len() + 2 {
            list.shrink_to_fit();
        }
        let epoch = self.attached((key.0, &key.1), partition, &slot);
        if !self.attached_below.is_empty() {
            self.attached_below.remove(key);
        }
        Some((partition, epoch, slot))
    }

    /// Rule 10: every slot of partition `p` attached below `epoch` is attached to `epoch` now.
    fn reattach(&mut self, p: PartitionId, epoch: u64) {
        let raised = self.reattached.entry(p).or_insert(0);
        *raised = (*raised).max(epoch);
        let by_socket = &self.by_socket;
        for (key, attached) in self.attached_below.iter_mut() {
            if by_socket.get(&key.0).is_some_and(|e| e.partition == p) {
                *attached = (*attached).max(epoch);
            }
        }
        // A slot attached at `epoch` or above is no longer below its partition's number.
        let reattached = &self.reattached;
        self.attached_below.retain(|key, attached| {
            let p = by_socket.get(&key.0).map(|e| e.partition);
            p.is_some_and(|p| *attached < reattached.get(&p).copied().unwrap_or(0))
        });
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The slots of one socket, by scope.
    fn of_socket(&self, socket: SocketId) -> impl Iterator<Item = (&ScopeKey, &GwSlot)> {
        self.by_socket.get(&socket).into_iter().flat_map(|e| e.list.iter()).map(|(scope, slot)| (scope, slot))
    }

    /// Every slot, by socket and then scope, with its partition.
    fn iter(&self) -> impl Iterator<Item = (SocketId, PartitionId, &ScopeKey, &GwSlot)> {
        self.by_socket
            .iter()
            .flat_map(|(socket, e)| e.list.iter().map(move |(scope, slot)| (*socket, e.partition, scope, slot)))
    }

    /// Every slot, by socket and then scope, with its partition and attachment epoch.
    fn iter_attached(&self) -> impl Iterator<Item = (SocketId, PartitionId, u64, &ScopeKey, &GwSlot)> {
        self.iter().map(|(socket, p, scope, slot)| (socket, p, self.attached((socket, scope), p, slot), scope, slot))
    }

    /// The slots of partition `p`, by socket and then scope.
    fn of_partition(&self, p: PartitionId) -> impl Iterator<Item = (SocketId, &ScopeKey, &GwSlot)> {
        self.by_socket
            .iter()
            .filter(move |(_, e)| e.partition == p)
            .flat_map(|(socket, e)| e.list.iter().map(move |(scope, slot)| (*socket, scope, slot)))
    }
}

/// The slots attached to one `(partition, epoch)`. Their horizon is one value: the send time
/// of the latest heartbeat of this node that the home echoed while announcing that partition
/// at that epoch (a grant carries such an echo too), plus `isolation_ms × (1 − max_drift)`.
/// Its members are the slots whose `(partition, epoch)` it is: only counted here (a set of
/// their keys cost about 48 bytes per slot), and found by a walk of the slots on the rare
/// occasions they are needed (a horizon passed, a scan re-attached the group).
#[derive(Clone, Debug, Default)]
struct Group {
    echoed: Millis,
    members: usize,
}

/// A join waiting for its home's answer.
#[derive(Clone, Debug)]
struct Waiting {
    user: UserId,
    tab: Option<TabId>,
    role: Option<Role>,
    /// The topics that wait on this slot, with the meta each joined with, in topic order
    /// (nearly always one: held in place, see `few.rs`).
    topics: Few<Topic, Meta>,
    deadline: Millis,
    next_try: Millis,
    /// The last answer was "not home" or no home was known: time out as `no_quorum`.
    homeless: bool,
    /// The home the join was last sent to.
    sent_to: Option<NodeName>,
    /// How many times it was sent: the pause before the next try doubles up to
    /// `heartbeat_ms × 16`, so a burst of joins waiting on a slow home is not sent again and
    /// again every heartbeat (which swamped the homes: joins timed out under a burst of
    /// 10,000). A join whose partition gets a new home is sent there at once.
    tries: u32,
}

#[derive(Clone, Debug, Default)]
struct Socket {
    /// The user of its joins, set by its first join that names one: a socket is one user's (a
    /// join naming another user is refused, `unauthorized`). Every slot of the socket is this
    /// user's, so the slots do not keep it again.
    user: Option<UserId>,
    /// The `tab_id` of its first join that names a user: the tab of every slot of the socket
    /// but those listed in `other_tabs`.
    tab: Option<TabId>,
    /// The slots whose join named another `tab_id` than `tab` (rare: a client sends one per
    /// socket), by scope.
    other_tabs: Vec<(ScopeKey, Option<TabId>)>,
    /// Topics joined (with or without a slot).
    joined: BTreeSet<Topic>,
    /// Rule 14, per scope: the highest token this socket has given up (left, given back
    /// unwanted, revoke or close confirmed, horizon passed). Tokens only grow per
    /// `(user, scope)` and a socket is one user's, so a grant at or below it is a late copy
    /// of a grant the home may already have forgotten, and is refused.
    given_up: Fences,
}

/// Rule 14's fences of one socket: per scope it ever gave a token up in, the highest such
/// token, in a list sorted by scope and grown as [`crate::grow_by`] says (24 bytes an entry).
/// A socket gives tokens up in a few scopes (those of its topics; a socket that wanders over
/// many topics keeps one entry each for its life, as rule 14 needs): a `BTreeMap` cost a whole
/// leaf (about 370 bytes) for the first entry and a tree search for every grant and release.
#[derive(Clone, Debug, Default)]
struct Fences(Vec<(ScopeKey, SlotToken)>);

impl Fences {
    fn find(&self, scope: &ScopeKey) -> Result<usize, usize> {
        self.0.binary_search_by(|(s, _)| s.cmp(scope))
    }

    /// The fence of `scope`, if the socket ever gave a token up there.
    fn get(&self, scope: &ScopeKey) -> Option<SlotToken> {
        self.find(scope).ok().map(|at| self.0[at].1)
    }

    /// Raise the fence of `scope` to `token` (it never goes down).
    fn raise(&mut self, scope: &ScopeKey, token: SlotToken) {
        match self.find(scope) {
            Ok(at) => self.0[at].1 = self.0[at].1.max(token),
            Err(at) => {
                crate::make_room(&mut self.0);
                self.0.insert(at, (scope.clone(), token));
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A release not yet acknowledged by the partition's home.
#[derive(Clone, Debug)]
struct Release {
    user: UserId,
    scope: ScopeKey,
    clean: bool,
}

/// Everything this node holds as a gateway.
#[derive(Debug, Default)]
pub(super) struct Gateway {
    sockets: BTreeMap<SocketId, Socket>,
    slots: SlotMap,
    groups: BTreeMap<(PartitionId, u64), Group>,
    waiting: BTreeMap<(SocketId, ScopeKey), Waiting>,
    /// No waiting join is due before this instant (an early guess is harmless: a wake with
    /// nothing to do). Kept so `next_wake` never walks every waiting join.
    waiting_due: Option<Millis>,
    /// Once per heartbeat the waiting joins are checked for a partition that got a new home.
    next_move_check: Millis,
    /// Rule 10: per partition, the highest epoch whose scan this node answered.
    fences: super::partition_map::PartitionMap<u64>,
    /// Rule 15: partitions whose scans this node answered partly (in its first
    /// `isolation_ms`); their releases are kept until acknowledged, whatever it answers later.
    answered_partly: BTreeSet<PartitionId>,
    releases: BTreeMap<(ConnId, SlotToken), Release>,
}

impl Gateway {
    pub(super) fn new(_partitions: u32) -> Self {
        Self::default()
    }

    pub(super) fn next_horizon(&self, valid_ms: Millis) -> Option<Millis> {
        let horizons = self.groups.values().map(|g| g.echoed + valid_ms);
        horizons.chain(self.waiting_due).min()
    }

    /// A waiting join may be due at `at`.
    fn due_by(&mut self, at: Millis) {
        self.waiting_due = Some(self.waiting_due.map_or(at, |d| d.min(at)));
    }

    pub(super) fn release_acked(&mut self, conn: &ConnId, token: SlotToken) {
        self.releases.remove(&(conn.clone(), token));
    }

    /// The slots of one socket, by scope.
    fn slots_of(&self, socket: SocketId) -> impl Iterator<Item = (&ScopeKey, &GwSlot)> {
        self.slots.of_socket(socket)
    }

    /// The waiting joins of one socket.
    fn waiting_of(&self, socket: SocketId) -> impl Iterator<Item = (SocketId, ScopeKey)> + '_ {
        self.waiting
            .range((socket, ScopeKey::topic(Topic::default()))..)
            .take_while(move |(k, _)| k.0 == socket)
            .map(|(k, _)| k.clone())
    }

    pub(super) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    pub(super) fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    /// The `tab_id` of the slot of `socket` in `scope` (the socket's unless it lists another).
    fn slot_tab(&self, socket: SocketId, scope: &ScopeKey) -> Option<&TabId> {
        let s = self.sockets.get(&socket)?;
        match s.other_tabs.iter().find(|(sc, _)| sc == scope) {
            Some((_, tab)) => tab.as_ref(),
            None => s.tab.as_ref(),
        }
    }

    /// The tab the slot of `socket` in `scope` counts for, `conn` being its connection.
    fn tab_key(&self, socket: SocketId, scope: &ScopeKey, conn: &ConnId) -> TabKey {
        TabKey::of(self.slot_tab(socket, scope), conn)
    }

    /// The slot of `socket` in `scope` is (about to be) granted to a join naming `tab`.
    fn set_slot_tab(&mut self, socket: SocketId, scope: &ScopeKey, tab: Option<TabId>) {
        let s = self.sockets.entry(socket).or_default();
        s.other_tabs.retain(|(sc, _)| sc != scope);
        if tab != s.tab {
            s.other_tabs.push((scope.clone(), tab));
        }
    }

    /// The user of `socket`, which holds a slot: set by the join that asked for the slot, and
    /// kept while the socket is open (a closed socket's slots go with it).
    fn user_of(&self, socket: SocketId) -> UserId {
        self.sockets.get(&socket).and_then(|s| s.user.clone()).expect("a socket with a slot has its user")
    }

    /// Take a slot out (it ended), keeping its group's membership right.
    fn remove_slot(&mut self, key: &(SocketId, ScopeKey)) -> Option<GwSlot> {
        let (p, epoch, s) = self.slots.remove(key)?;
        if let Some(socket) = self.sockets.get_mut(&key.0) {
            socket.other_tabs.retain(|(scope, _)| *scope != key.1);
        }
        self.leave_group(p, epoch);
        Some(s)
    }

    /// A slot of partition `p` attached at `epoch` is no longer a member of its group.
    fn leave_group(&mut self, p: PartitionId, epoch: u64) {
        let gk = (p, epoch);
        if let Some(g) = self.groups.get_mut(&gk) {
            g.members = g.members.saturating_sub(1);
            if g.members == 0 {
                self.groups.remove(&gk);
            }
        }
    }
}

impl NodeState {
    /// Rule 14: the highest token `socket` gave up in `scope`, if any.
    fn given_up(&self, socket: SocketId, scope: &ScopeKey) -> Option<SlotToken> {
        self.gateway.sockets.get(&socket).and_then(|s| s.given_up.get(scope))
    }

    fn conn(&self, socket: SocketId) -> ConnId {
        ConnId { gateway: self.me.clone(), socket }
    }

    /// The node this one believes is home of `p`: itself while its lease is valid, else the live
    /// peer announcing the highest epoch for it.
    pub(super) fn home_of(&self, p: PartitionId, now: Millis) -> Option<NodeName> {
        if self.leases.valid(p, now).is_some() {
            return Some(self.me.node.clone());
        }
        self.peers
            .iter()
            .filter(|(n, peer)| **n != self.me.node && peer.alive)
            .filter_map(|(n, peer)| peer.announced.iter().find(|a| a.partition == p).map(|a| (a.epoch, n)))
            .max()
            .map(|(_, n)| n.clone())
    }

    pub(super) fn client_join(&mut self, j: ClientJoin, now: Millis, fx: &mut Vec<Effect>) {
        let policy = self.config.policy_for(&j.topic);
        let socket = self.gateway.sockets.entry(j.socket).or_default();
        let fail = |reason: &str, fx: &mut Vec<Effect>| {
            fx.push(Effect::Client {
                socket: j.socket,
                topic: j.topic.clone(),
                event: ClientEvent::JoinFailed { reason: reason.into() },
            })
        };
        if socket.joined.contains(&j.topic) {
            return fail("already_joined", fx);
        }
        let Some(user) = j.user.clone() else {
            // Anonymous viewers hold no slot and only read.
            if policy.anonymous == AnonymousMode::Deny {
                return fail("unauthorized", fx);
            }
            socket.joined.insert(j.topic.clone());
            let key = UserId::ANONYMOUS.to_owned();
            self.track(j.socket, j.topic.clone(), key, j.tab, j.meta, now, fx);
            fx.push(Effect::Client { socket: j.socket, topic: j.topic, event: ClientEvent::Joined { token: None } });
            return;
        };
        if user.is_reserved() {
            return fail("unauthorized", fx);
        }
        // A socket is one user's (rule 14's fences and the slots' user rely on it).
        match &socket.user {
            Some(mine) if *mine != user => return fail("unauthorized", fx),
            Some(_) => {}
            None => (socket.user, socket.tab) = (Some(user.clone()), j.tab.clone()),
        }
        if j.role.as_ref().is_some_and(|r| policy.is_exempt(r)) {
            socket.joined.insert(j.topic.clone());
            self.track(j.socket, j.topic.clone(), user.0, j.tab, j.meta, now, fx);
            fx.push(Effect::Client { socket: j.socket, topic: j.topic, event: ClientEvent::Joined { token: None } });
            return;
        }
        let scope = policy.scope_key(&j.topic);
        let key = (j.socket, scope.clone());
        // Another topic of the same scope on the same socket and tab shares the slot.
        let same_tab = self.gateway.slot_tab(j.socket, &scope) == j.tab.as_ref();
        if let Some(slot) = self.gateway.slots.get_mut(&key) {
            // Same socket: the same tab exactly when the same `tab_id` (or none).
            if same_tab {
                slot.topics.insert(&scope, j.topic.clone());
                let token = slot.token;
                self.gateway.sockets.entry(j.socket).or_default().joined.insert(j.topic.clone());
                self.track(j.socket, j.topic.clone(), user.0, j.tab, j.meta, now, fx);
                fx.push(Effect::Client {
                    socket: j.socket,
                    topic: j.topic,
                    event: ClientEvent::Joined { token: Some(token) },
                });
                return;
            }
            return fail("already_joined", fx);
        }
        if let Some(w) = self.gateway.waiting.get_mut(&key) {
            w.topics.insert(j.topic, j.meta);
            return;
        }
        let deadline = now + self.config.server.join_wait_ms;
        let w = Waiting {
            user,
            tab: j.tab,
            role: j.role,
            topics: Few::One(j.topic, j.meta),
            deadline,
            next_try: now,
            homeless: true,
            sent_to: None,
            tries: 0,
        };
        self.gateway.waiting.insert(key.clone(), w);
        self.try_join(&key, now, fx);
    }

    /// Send (or send again) a waiting join to the partition's home.
    fn try_join(&mut self, key: &(SocketId, ScopeKey), now: Millis, fx: &mut Vec<Effect>) {
        let retry_ms = self.config.cluster.heartbeat_ms;
        let Some(w) = self.gateway.waiting.get(key) else { return };
        let p = partition_of(&w.user, self.config.cluster.partitions);
        let home = self.home_of(p, now);
        let conn = self.conn(key.0);
        let w = self.gateway.waiting.get_mut(key).expect("checked above");
        let Some(home) = home else {
            w.next_try = now + retry_ms;
            w.homeless = true;
            self.gateway.due_by(now + retry_ms);
            return;
        };
        if w.sent_to.as_ref() != Some(&home) {
            w.tries = 0;
        }
        w.next_try = now + (retry_ms << w.tries.min(4));
        w.tries += 1;
        w.sent_to = Some(home.clone());
        w.homeless = false;
        let next = w.next_try.min(w.deadline);
        self.gateway.due_by(next);
        let w = self.gateway.waiting.get(key).expect("checked above");
        let topic = w.topics.keys().next().cloned().expect("a waiting join has a topic");
        let msg = PeerMsg::SlotJoin {
            conn,
            user: w.user.clone(),
            scope: key.1.clone(),
            topic,
            tab: w.tab.clone(),
            role: w.role.clone(),
        };
        fx.push(Effect::Send { to: home, msg });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn gw_grant(
        &mut self,
        user: UserId,
        conn: ConnId,
        scope: ScopeKey,
        token: SlotToken,
        echo: Millis,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        if conn.gateway != self.me {
            return;
        }
        let key = (conn.socket, scope.clone());
        let fenced = self.safeguards.fence_stale_epochs;
        let valid_ms = self.isolation_valid_ms();
        let Some(w) = self.gateway.waiting.get(&key) else {
            // Nobody waits for it (left, closed, or a duplicate): give it straight back.
            let held = self.gateway.slots.get(&key).is_some_and(|s| s.token == token);
            if !held {
                self.queue_release(conn, user, scope, token, true, now, fx);
            }
            return;
        };
        let p = partition_of(&w.user, self.config.cluster.partitions);
        let stale = fenced && self.gateway.fences.get(&p).is_some_and(|f| token.epoch < *f);
        let given_up = self.given_up(conn.socket, &scope).is_some_and(|g| token <= g);
        if stale || given_up || echo + valid_ms <= now {
            return; // the join stays waiting and asks the current home again
        }
        let echo = if self.safeguards.horizon_from_send_time { echo } else { now };
        let w = self.gateway.waiting.remove(&key).expect("checked above");
        let tab = TabKey::of(w.tab.as_ref(), &conn);
        let group = self.gateway.groups.entry((p, token.epoch)).or_default();
        group.members += 1;
        let raised = echo > group.echoed;
        group.echoed = group.echoed.max(echo);
        let horizon = group.echoed + valid_ms;
        if raised {
            let gateway = self.me.clone();
            let (partition, epoch) = (p, token.epoch);
            fx.push(Effect::Record(Record::Horizon { at: now, gateway, partition, epoch, horizon }));
        }
        fx.push(Effect::Record(Record::Accepted {
            at: now,
            user: w.user.clone(),
            scope: scope.clone(),
            conn: conn.clone(),
            tab: tab.clone(),
            token,
            partition: p,
            horizon,
        }));
        // `w.topics` is ordered: its keys come sorted.
        let topics = SlotTopics::from_sorted(&scope, w.topics.keys());
        for (t, meta) in w.topics {
            self.gateway.sockets.entry(conn.socket).or_default().joined.insert(t.clone());
            self.track(conn.socket, t.clone(), w.user.0.clone(), w.tab.clone(), meta, now, fx);
            fx.push(Effect::Client {
                socket: conn.socket,
                topic: t,
                event: ClientEvent::Joined { token: Some(token) },
            });
        }
        self.gateway.set_slot_tab(key.0, &key.1, w.tab);
        let slot = GwSlot { token, topics };
        if let Some((epoch, _)) = self.gateway.slots.insert(key, p, slot) {
            self.gateway.leave_group(p, epoch);
        }
    }

    pub(super) fn gw_reject(
        &mut self,
        conn: ConnId,
        scope: ScopeKey,
        reason: String,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        if conn.gateway != self.me {
            return;
        }
        let key = (conn.socket, scope);
        if reason == "not_home" {
            if let Some(w) = self.gateway.waiting.get_mut(&key) {
                w.homeless = true;
                w.next_try = w.next_try.max(now + 1);
                let next = w.next_try;
                self.gateway.due_by(next);
            }
            return;
        }
        if let Some(w) = self.gateway.waiting.remove(&key) {
            for t in w.topics.into_iter().map(|(t, _)| t) {
                fx.push(Effect::Client {
                    socket: conn.socket,
                    topic: t,
                    event: ClientEvent::JoinFailed { reason: reason.clone() },
                });
            }
        }
    }

    /// The home revokes (`reason` given) or closes (`None`) a slot; confirm either way, even
    /// for a slot already gone, but only for this incarnation's connections.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gw_end_by_home(
        &mut self,
        user: UserId,
        conn: ConnId,
        scope: ScopeKey,
        token: SlotToken,
        reason: Option<String>,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        if conn.gateway != self.me {
            return;
        }
        let key = (conn.socket, scope.clone());
        let why = reason.clone().unwrap_or_else(|| "replaced".into());
        // A token this socket already gave up cannot be the grant of the join waiting now.
        let about_the_waiting_join =
            !self.safeguards.fence_released_tokens || self.given_up(conn.socket, &scope).is_none_or(|g| token > g);
        if self.gateway.slots.get(&key).is_some_and(|s| s.token == token) {
            let s = self.gateway.remove_slot(&key).expect("checked above");
            self.end_slot(conn.socket, &scope, &s, &why, reason.is_some(), now, fx);
        } else if let Some(w) = if about_the_waiting_join { self.gateway.waiting.remove(&key) } else { None } {
            // Its grant is still on the wire: the join ends here, or it would ask again and
            // fight the tab that took its place.
            for t in w.topics.into_iter().map(|(t, _)| t) {
                let event = match &reason {
                    Some(r) => ClientEvent::JoinFailed { reason: r.clone() },
                    None => ClientEvent::Closed,
                };
                fx.push(Effect::Client { socket: conn.socket, topic: t, event });
            }
        }
        if !self.safeguards.fence_released_tokens {
            // As before rule 14: only a confirmation fenced (and re-created a closed socket).
            self.gateway.sockets.entry(conn.socket).or_default().given_up.raise(&scope, token);
        }
        // The confirmation is a release, kept until a home acknowledges it.
        self.queue_release(conn, user, scope, token, true, now, fx);
    }

    /// End a slot locally: tell its channels, record it.
    #[allow(clippy::too_many_arguments)]
    fn end_slot(
        &mut self,
        socket: SocketId,
        scope: &ScopeKey,
        s: &GwSlot,
        why: &str,
        revoked: bool,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        fx.push(Effect::Record(Record::Ended {
            at: now,
            conn: self.conn(socket),
            scope: scope.clone(),
            why: why.into(),
        }));
        for t in s.topics.as_slice(scope) {
            self.gateway.sockets.entry(socket).or_default().joined.remove(t);
            self.untrack(socket, t, now, fx);
            let event = if revoked { ClientEvent::Revoked { reason: why.into() } } else { ClientEvent::Closed };
            fx.push(Effect::Client { socket, topic: t.clone(), event });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn queue_release(
        &mut self,
        conn: ConnId,
        user: UserId,
        scope: ScopeKey,
        token: SlotToken,
        clean: bool,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        if self.safeguards.fence_released_tokens {
            // Rule 14: a socket never takes back a token it gave up. A closed socket has no
            // entry and gets none: a grant for it finds nobody waiting and goes back.
            if let Some(socket) = self.gateway.sockets.get_mut(&conn.socket) {
                socket.given_up.raise(&scope, token);
            }
        }
        let p = partition_of(&user, self.config.cluster.partitions);
        let r = Release { user: user.clone(), scope: scope.clone(), clean };
        self.gateway.releases.insert((conn.clone(), token), r);
        if let Some(home) = self.home_of(p, now) {
            fx.push(Effect::Send { to: home, msg: PeerMsg::SlotReleased { conn, user, scope, token, clean } });
        }
    }

    pub(super) fn client_leave(&mut self, socket: SocketId, topic: &Topic, now: Millis, fx: &mut Vec<Effect>) {
        if let Some(s) = self.gateway.sockets.get_mut(&socket) {
            s.joined.remove(topic);
        }
        self.untrack(socket, topic, now, fx);
        let key = self
            .gateway
            .slots_of(socket)
            .find(|(scope, s)| s.topics.contains(scope, topic))
            .map(|(scope, _)| (socket, scope.clone()));
        if let Some(key) = key {
            let slot = self.gateway.slots.get_mut(&key).expect("found");
            slot.topics.remove(&key.1, topic);
            if slot.topics.is_empty(&key.1) {
                let s = self.gateway.remove_slot(&key).expect("found");
                fx.push(Effect::Record(Record::Ended {
                    at: now,
                    conn: self.conn(socket),
                    scope: key.1.clone(),
                    why: "left".into(),
                }));
                let user = self.gateway.user_of(socket);
                self.queue_release(self.conn(socket), user, key.1, s.token, true, now, fx);
            }
        }
        let waiting: Vec<_> = self.gateway.waiting_of(socket).collect();
        for k in waiting {
            let w = self.gateway.waiting.get_mut(&k).expect("listed");
            w.topics.remove(topic);
            if w.topics.is_empty() {
                self.gateway.waiting.remove(&k);
            }
        }
    }

    pub(super) fn socket_closed(&mut self, socket: SocketId, clean: bool, now: Millis, fx: &mut Vec<Effect>) {
        let user = self.gateway.sockets.remove(&socket).and_then(|s| s.user);
        self.untrack_socket(socket, now, fx);
        for k in self.gateway.waiting_of(socket).collect::<Vec<_>>() {
            self.gateway.waiting.remove(&k);
        }
        let keys: Vec<_> = self.gateway.slots_of(socket).map(|(scope, _)| (socket, scope.clone())).collect();
        for key in keys {
            let s = self.gateway.remove_slot(&key).expect("listed");
            let why = if clean { "closed" } else { "dropped" };
            fx.push(Effect::Record(Record::Ended {
                at: now,
                conn: self.conn(socket),
                scope: key.1.clone(),
                why: why.into(),
            }));
            let user = user.clone().expect("a socket with a slot has its user");
            self.queue_release(self.conn(socket), user, key.1, s.token, clean, now, fx);
        }
    }

    pub(super) fn kick(
        &mut self,
        user: UserId,
        topic: Option<Topic>,
        reason: String,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let p = partition_of(&user, self.config.cluster.partitions);
        let scope = topic.map(|t| self.config.policy_for(&t).scope_key(&t));
        if let Some(home) = self.home_of(p, now) {
            fx.push(Effect::Send { to: home, msg: PeerMsg::Kick { user, scope, reason } });
        }
    }

    /// Rule 5: slots whose horizon passed are revoked (`node_isolated`) before anything else.
    pub(super) fn expire_horizons(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        if self.alone {
            // One-node exemption: no other node can take a partition over, so a node that
            // was starved or paused has nobody to yield its slots to.
            return;
        }
        let valid_ms = self.isolation_valid_ms();
        let groups: BTreeSet<(PartitionId, u64)> =
            self.gateway.groups.iter().filter(|(_, g)| g.echoed + valid_ms <= now).map(|(k, _)| *k).collect();
        if groups.is_empty() {
            return;
        }
        // By group, then by socket and scope (a stable sort of slots listed in that order).
        let mut expired: Vec<((PartitionId, u64), (SocketId, ScopeKey))> = self
            .gateway
            .slots
            .iter_attached()
            .filter(|(_, p, epoch, _, _)| groups.contains(&(*p, *epoch)))
            .map(|(socket, p, epoch, scope, _)| ((p, epoch), (socket, scope.clone())))
            .collect();
        expired.sort_by_key(|(group, _)| *group);
        for (_, key) in expired {
            let s = self.gateway.remove_slot(&key).expect("a group member is a slot");
            self.end_slot(key.0, &key.1, &s, "node_isolated", true, now, fx);
            let user = self.gateway.user_of(key.0);
            self.queue_release(self.conn(key.0), user, key.1, s.token, true, now, fx);
        }
        // Each emptied as its last member went; a count that went wrong would leave one behind.
        for g in groups {
            self.gateway.groups.remove(&g);
        }
    }

    /// A heartbeat from a home echoed `echoed` (this node's send time) while announcing
    /// `leases`: the slots attached to those partitions and epochs live longer.
    pub(super) fn gw_echo(&mut self, leases: &[Announced], echoed: Millis, now: Millis, fx: &mut Vec<Effect>) {
        let echoed = if self.safeguards.horizon_from_send_time { echoed } else { now };
        let valid_ms = self.isolation_valid_ms();
        for a in leases {
            if let Some(g) = self.gateway.groups.get_mut(&(a.partition, a.epoch)) {
                if g.echoed < echoed {
                    g.echoed = echoed;
                    fx.push(Effect::Record(Record::Horizon {
                        at: now,
                        gateway: self.me.clone(),
                        partition: a.partition,
                        epoch: a.epoch,
                        horizon: echoed + valid_ms,
                    }));
                }
            }
        }
    }

    /// Rule 9/10: answer a new home's scan with this incarnation's slots in the partition and
    /// re-attach them to its epoch; ignore scans below an epoch already answered. Until
    /// `isolation_ms` after start the answer is only partial (rule 15): it cannot vouch that the
    /// previous life's slots have expired, but it re-attaches and lists this life's, so a slot
    /// granted since the start does not run out at its horizon because its home changed.
    pub(super) fn gw_scan(&mut self, from: Incarnation, p: PartitionId, epoch: u64, now: Millis, fx: &mut Vec<Effect>) {
        let quiet = !self.alone
            && self.safeguards.scan_quiet_after_start
            && now < self.started_at + self.config.cluster.isolation_ms;
        if quiet && !self.safeguards.answer_scans_partly_at_start {
            return;
        }
        let fence = self.gateway.fences.get(&p).copied().unwrap_or(0);
        if self.safeguards.fence_stale_epochs && epoch < fence {
            return;
        }
        self.gateway.fences.insert(p, fence.max(epoch));
        let me = self.me.clone();
        // Re-attach the slots of older epochs to this one; their horizon carries over.
        let older: Vec<(PartitionId, u64)> = self.gateway.groups.range((p, 0)..(p, epoch)).map(|(k, _)| *k).collect();
        if !older.is_empty() {
            let mut merged = self.gateway.groups.remove(&(p, epoch)).unwrap_or_default();
            for k in older {
                let g = self.gateway.groups.remove(&k).expect("listed");
                merged.echoed = merged.echoed.max(g.echoed);
                merged.members += g.members;
            }
            // The members of the older groups: every slot of `p` attached below `epoch`.
            self.gateway.slots.reattach(p, epoch);
            self.gateway.groups.insert((p, epoch), merged);
            fx.push(Effect::Record(Record::Reattached { at: now, gateway: me.clone(), partition: p, epoch }));
        }
        let mut slots = Vec::new();
        for (socket, scope, s) in self.gateway.slots.of_partition(p) {
            let conn = ConnId { gateway: me.clone(), socket };
            slots.push(HeldSlot {
                user: self.gateway.user_of(socket),
                scope: scope.clone(),
                tab: self.gateway.tab_key(socket, scope, &conn),
                conn,
                token: s.token,
            });
        }
        if quiet {
            // A partial answer settles no release, nor does any later answer: a home may have
            // adopted a slot from a partial answer that has ended since, and learns of its end
            // only by the release (kept until a home acknowledges it, as always).
            self.gateway.answered_partly.insert(p);
        } else if !self.gateway.answered_partly.contains(&p) {
            // Releases for this partition are moot: the answer no longer lists those slots.
            let partitions = self.config.cluster.partitions;
            self.gateway.releases.retain(|_, r| partition_of(&r.user, partitions) != p);
        }
        fx.push(Effect::Send {
            to: from.node.clone(),
            msg: PeerMsg::ScanReply { from: me, partition: p, epoch, slots, complete: !quiet },
        });
    }

    /// Every heartbeat: unacknowledged releases go to the current home again.
    pub(super) fn gw_retries(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let partitions = self.config.cluster.partitions;
        let pending: Vec<_> = self.gateway.releases.iter().map(|(k, r)| (k.clone(), r.clone())).collect();
        for ((conn, token), r) in pending {
            if let Some(home) = self.home_of(partition_of(&r.user, partitions), now) {
                let msg = PeerMsg::SlotReleased { conn, user: r.user, scope: r.scope, token, clean: r.clean };
                fx.push(Effect::Send { to: home, msg });
            }
        }
    }

    /// Waiting joins are sent again or time out.
    pub(super) fn gw_timers(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let look_for_moves = !self.gateway.waiting.is_empty() && now >= self.gateway.next_move_check;
        if self.gateway.waiting_due.is_none_or(|d| d > now) && !look_for_moves {
            return;
        }
        self.gateway.next_move_check = now + self.config.cluster.heartbeat_ms;
        let partitions = self.config.cluster.partitions;
        let homes: Vec<Option<NodeName>> = if self.gateway.waiting.is_empty() {
            Vec::new()
        } else {
            (0..partitions).map(|p| self.home_of(PartitionId(p), now)).collect()
        };
        let moved = |w: &Waiting| {
            let home = &homes[partition_of(&w.user, partitions).0 as usize];
            home.is_some() && *home != w.sent_to
        };
        let due: Vec<_> = self
            .gateway
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline <= now || w.next_try <= now || moved(w))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let w = &self.gateway.waiting[&key];
            if w.deadline <= now {
                let w = self.gateway.waiting.remove(&key).expect("listed");
                let reason = if w.homeless { "no_quorum" } else { "wait_timed_out" };
                for t in w.topics.into_iter().map(|(t, _)| t) {
                    fx.push(Effect::Client {
                        socket: key.0,
                        topic: t,
                        event: ClientEvent::JoinFailed { reason: reason.into() },
                    });
                }
            } else {
                self.try_join(&key, now, fx);
            }
        }
        self.gateway.waiting_due = self.gateway.waiting.values().map(|w| w.next_try.min(w.deadline)).min();
    }

    /// Graceful shutdown: every slot released at once (rule 13), every client closed.
    pub(super) fn gw_shutdown(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let sockets: Vec<SocketId> = self.gateway.sockets.keys().copied().collect();
        for socket in sockets {
            let topics: Vec<Topic> = self.gateway.sockets[&socket].joined.iter().cloned().collect();
            self.socket_closed(socket, true, now, fx);
            for t in topics {
                fx.push(Effect::Client { socket, topic: t, event: ClientEvent::Closed });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(token: u64) -> GwSlot {
        slot_of(1, token)
    }

    fn slot_of(epoch: u64, generation: u64) -> GwSlot {
        GwSlot { token: SlotToken { epoch, generation }, topics: SlotTopics::default() }
    }

    fn topic(s: &str) -> ScopeKey {
        ScopeKey::topic(Topic::from(s))
    }

    #[test]
    fn a_slot_and_the_homes_scope_entry_are_as_small_as_their_docs_say() {
        use std::mem::size_of;
        assert_eq!(size_of::<ScopeKey>(), 8);
        assert_eq!(size_of::<GwSlot>(), 24);
        assert_eq!(size_of::<(ScopeKey, GwSlot)>(), 32);
        assert_eq!(size_of::<super::super::home::UserScope>(), 56);
        assert_eq!(size_of::<(ScopeKey, super::super::home::UserScope)>(), 64);
        assert_eq!(size_of::<(ScopeKey, SlotToken)>(), 24, "a fence");
    }

    #[test]
    fn a_sockets_fences_keep_the_highest_token_of_every_scope_it_ever_gave_one_up_in() {
        let tok = |g| SlotToken { epoch: 2, generation: g };
        let mut f = Fences::default();
        let mut reference: BTreeMap<ScopeKey, SlotToken> = BTreeMap::new();
        // 40 scopes (more than the 16 a list grows one place at a time for), each raised a few
        // times, out of order and sometimes lower: the fence of each is the highest, none lost.
        for step in 0..200u64 {
            let scope = topic(&format!("room:{}", step * 13 % 40));
            let token = tok(step * 7 % 23);
            f.raise(&scope, token);
            let r = reference.entry(scope).or_insert(token);
            *r = (*r).max(token);
        }
        assert_eq!(f.len(), 40);
        assert_eq!(f.0, reference.iter().map(|(s, t)| (s.clone(), *t)).collect::<Vec<_>>(), "sorted by scope");
        for (scope, token) in &reference {
            assert_eq!(f.get(scope), Some(*token));
        }
        assert_eq!(f.get(&topic("room:40")), None, "a scope never given up has no fence");
        assert_eq!(f.get(&ScopeKey::global(crate::config::PolicyId::BuiltIn)), None);
        f.raise(&topic("room:3"), tok(1));
        assert_eq!(f.get(&topic("room:3")), reference.get(&topic("room:3")).copied(), "a fence never goes down");
    }

    #[test]
    fn the_slot_map_lists_slots_by_socket_then_scope_as_one_ordered_map_would() {
        let mut map = SlotMap::default();
        let mut reference: BTreeMap<(SocketId, ScopeKey), u64> = BTreeMap::new();
        // A fixed shuffle of inserts, replacements and removals over 3 sockets × 5 scopes.
        for step in 0..200u64 {
            let key = (SocketId(step * 7 % 3), topic(&format!("t{}", step * 11 % 5)));
            // Socket n's user is in partition n % 2.
            let p = PartitionId((key.0 .0 % 2) as u32);
            if step % 4 == 3 {
                let removed = map.remove(&key).map(|(rp, _, s)| (rp, s.token.generation));
                assert_eq!(removed, reference.remove(&key).map(|g| (p, g)));
            } else {
                let old = map.insert(key.clone(), p, slot(step)).map(|(_, s)| s.token.generation);
                assert_eq!(old, reference.insert(key, step));
            }
            assert_eq!(map.len(), reference.len());
            assert!(map.iter().all(|(so, p, _, _)| p.0 == (so.0 % 2) as u32), "each slot with its socket's partition");
            let listed: Vec<_> = map.iter().map(|(so, _, sc, s)| ((so, sc.clone()), s.token.generation)).collect();
            let expected: Vec<_> = reference.iter().map(|(k, v)| (k.clone(), *v)).collect();
            assert_eq!(listed, expected);
            for (k, v) in &reference {
                assert_eq!(map.get(k).map(|s| s.token.generation), Some(*v));
            }
            let of_1: Vec<_> = map.of_socket(SocketId(1)).map(|(sc, _)| sc.clone()).collect();
            let expected_1: Vec<_> = reference.keys().filter(|k| k.0 == SocketId(1)).map(|k| k.1.clone()).collect();
            assert_eq!(of_1, expected_1);
            for p in [PartitionId(0), PartitionId(1)] {
                let of_p: Vec<_> = map.of_partition(p).map(|(so, sc, _)| (so, sc.clone())).collect();
                let expected_p: Vec<_> = reference.keys().filter(|k| (k.0 .0 % 2) as u32 == p.0).cloned().collect();
                assert_eq!(of_p, expected_p);
            }
        }
        for k in reference.keys() {
            map.remove(k).expect("held");
        }
        assert_eq!(map.len(), 0);
        assert!(map.by_socket.is_empty(), "a socket without slots keeps no list");
    }

    /// A slot's attachment epoch is not kept in it: it is its token's until a scan re-attaches
    /// its partition, and what the map says is what a number per slot, raised by every
    /// re-attach as before, would say, through grants of older and newer epochs, replacements,
    /// removals and re-attaches to higher and (a safeguard off) lower epochs.
    #[test]
    fn the_slot_map_says_each_slots_attachment_epoch_as_a_number_per_slot_would() {
        let mut map = SlotMap::default();
        // (socket, scope) → (token epoch, attachment epoch); socket n's user is in partition n % 2.
        let mut reference: BTreeMap<(SocketId, ScopeKey), (u64, u64)> = BTreeMap::new();
        let part = |so: SocketId| PartitionId((so.0 % 2) as u32);
        let mut kept_below = false;
        for step in 0..400u64 {
            let key = (SocketId(step * 7 % 4), topic(&format!("t{}", step * 11 % 5)));
            let p = part(key.0);
            match step % 9 {
                4 | 7 => {
                    let removed = map.remove(&key).map(|(rp, epoch, s)| (rp, s.token.epoch, epoch));
                    assert_eq!(removed, reference.remove(&key).map(|(t, a)| (p, t, a)));
                }
                5 => {
                    // A scan of partition `step % 2` at an epoch that goes up and now and then down.
                    let (rp, epoch) = (PartitionId((step / 9 % 2) as u32), 2 + step * 5 % 7);
                    map.reattach(rp, epoch);
                    for (k, (_, a)) in reference.iter_mut() {
                        if part(k.0) == rp && *a < epoch {
                            *a = epoch;
                        }
                    }
                }
                _ => {
                    let token_epoch = 1 + step * 3 % 8;
                    let old = map.insert(key.clone(), p, slot_of(token_epoch, step));
                    let old = old.map(|(epoch, s)| (s.token.epoch, epoch));
                    assert_eq!(old, reference.insert(key, (token_epoch, token_epoch)));
                }
            }
            let listed: Vec<_> =
                map.iter_attached().map(|(so, _, a, sc, s)| ((so, sc.clone()), (s.token.epoch, a))).collect();
            let expected: Vec<_> = reference.iter().map(|(k, v)| (k.clone(), *v)).collect();
            assert_eq!(listed, expected, "step {step}");
            kept_below |= !map.attached_below.is_empty();
        }
        assert!(kept_below, "some slot was attached below its partition's re-attached epoch");
        for k in reference.keys() {
            map.remove(k).expect("held");
        }
        assert!(map.attached_below.is_empty(), "a slot's own epoch goes with it");
    }

    #[test]
    fn slot_topics_keep_a_topic_scopes_own_topic_implied_and_any_other_list_sorted() {
        let t = |s: &str| Topic::from(s);
        let own = topic("b");
        // A `topic` scope's slot with its own topic keeps nothing.
        let mut topics = SlotTopics::from_sorted(&own, [t("b")].iter());
        assert!(topics.0.is_none());
        assert_eq!(topics.as_slice(&own), &[t("b")]);
        assert!(topics.contains(&own, &t("b")) && !topics.contains(&own, &t("a")));
        topics.insert(&own, t("b"));
        assert!(topics.0.is_none(), "inserting the implied topic keeps nothing");
        // Anything else is a list, exact (never met in a topic scope, but kept right).
        topics.insert(&own, t("a"));
        assert_eq!(topics.as_slice(&own), &[t("a"), t("b")]);
        topics.remove(&own, &t("a"));
        assert!(topics.0.is_none(), "back to the implied topic");
        topics.remove(&own, &t("b"));
        assert!(topics.is_empty(&own), "a topic scope's slot can be emptied");
        assert!(topics.0.is_some());
        // A `global` scope: a sorted list, none kept while empty.
        let global = ScopeKey::global(crate::config::PolicyId::BuiltIn);
        let mut topics = SlotTopics::default();
        assert!(topics.is_empty(&global));
        topics.insert(&global, t("b"));
        topics.insert(&global, t("b"));
        topics.insert(&global, t("a"));
        topics.insert(&global, t("c"));
        assert_eq!(topics.as_slice(&global), &[t("a"), t("b"), t("c")]);
        assert!(topics.contains(&global, &t("c")) && !topics.contains(&global, &t("d")));
        topics.remove(&global, &t("a"));
        topics.remove(&global, &t("d"));
        topics.remove(&global, &t("c"));
        assert_eq!(topics.as_slice(&global), &[t("b")]);
        topics.remove(&global, &t("b"));
        assert!(topics.is_empty(&global) && topics.0.is_none());
        let from = SlotTopics::from_sorted(&global, [t("x"), t("y")].iter());
        assert_eq!(from.as_slice(&global), &[t("x"), t("y")]);
    }
}
