//! The home side of user actors: when a user's one activation starts and ends, what it is
//! told, and where calls to it go. The runtime runs the activations; this decides.
//!
//! A user has an *activation* on its home while it holds a slot, a reservation or a waiting
//! join there (any scope), and while this node serves the user's partition (a valid lease
//! and a finished recovery scan). Everything is decided at the end of each turn
//! ([`NodeState::handle`](super::NodeState::handle)), from the slot states of the users the
//! turn touched, in the same turn that reads the lease:
//!
//! - **Start**: the user became live (its first join) or the partition became served (the
//!   scan installed its users). The fencing token is the next token of the partition's mint,
//!   `<epoch>.<generation>`, so it grows across activations, homes and restarts.
//! - **Session events**: in each scope whose slots the turn changed, the user's sessions as
//!   the home knows them are compared with what the activation was last told of that scope;
//!   every difference is one event (granted, resumed, recovered; revoking, replaced,
//!   reserved, in doubt, heard again; ended with how). Only the scopes touched are looked at,
//!   so a turn costs the same for a user with one session as for one with thousands (a socket
//!   in a thousand topics).
//! - **Stop**: idle (no slot, reservation or waiting join); the lease lost (recorded at the
//!   lease's deadline: the runtime fences the activation there, whenever the node notices);
//!   handed over (the partition moves while both nodes run: the state follows); shutdown.
//!
//! A message to a user with no activation answers [`UserAnswer::NotActive`]: messages never
//! activate a user (see `docs/architecture.md`, "User actors").
//!
//! Handover: the old home sends the new one a [`PeerMsg::HandoverPlan`] naming the users
//! that stopped to move, then each user's state once its activation has stopped
//! ([`Input::ActivationStopped`]). The new home starts those users only with their state, or
//! fresh once `lease_ms` has passed since the plan; a state that arrives after its user
//! started fresh is dropped (two lines of history must never merge). A state is used only
//! by the activation that directly follows the one that handed it over: if another lease on
//! the partition came in between (as the new lease's grantors report, see
//! [`NodeState::users_lease_started`]), another activation may have run, and the user starts
//! fresh, as after a failover.

use super::home::Touch;
use super::{
    ActivationEnd, Effect, Input, NodeState, PeerMsg, Record, ReplyTo, SessionEnd, SessionEvent, SessionStart,
    SessionState, SessionView, UserAnswer, UserEffect, UserView,
};
use crate::config::ScopeKey;
use crate::ids::{ConnId, Incarnation, Millis, NodeName, SlotToken, Topic, UserId};
use crate::ring::{partition_of, PartitionId};
use crate::slot::{SlotEffect, SlotRecord, SlotState};
use std::collections::{BTreeMap, BTreeSet};

/// How long after a failure (a panic in the application's code) a fresh activation starts:
/// a crash loop costs at most ten starts a second.
const RESTART_AFTER_FAILURE_MS: Millis = 100;

/// How many notes' room a turn keeps for the next (a burst's turn that noted more gives the
/// rest back).
const KEPT_NOTES: usize = 64;

/// How many touches' room a turn keeps for the next (see [`NodeState::put_back_touches`]).
const KEPT_TOUCHES: usize = 64;

/// How many sessions' room the list that gathers a scope's keeps (a user holds a few per
/// scope; more are let go).
const KEPT_SESSIONS: usize = 16;

/// One live activation.
#[derive(Debug)]
struct Activation {
    partition: PartitionId,
    token: SlotToken,
    handed_from: Option<SlotToken>,
    /// The sessions as the activation was last told, grouped by scope in scope order (as
    /// [`Home::scopes_of`](super::home::Home::scopes_of) lists them): a scope's sessions are
    /// found by binary search and replaced in place. (A sorted vector rather than a map per
    /// scope: most users have one or two sessions, and a map's node costs more than they do.)
    /// When activations are told nothing of their sessions
    /// ([`NodeState::set_session_events`]), only what the home's records cannot tell: the
    /// sessions being revoked, with the reason they were told.
    view: Vec<SessionView>,
}

/// Why a record changed in this turn (from the slot operations that changed it).
#[derive(Clone, Debug)]
enum Note {
    Granted { resumed: bool },
    Revoked(String),
    Released { clean: bool },
    Freed,
}

/// A handover plan received: the users whose state will come.
#[derive(Debug)]
struct Expected {
    users: BTreeSet<UserId>,
    until: Millis,
}

/// A handed-over state waiting for its user's activation here.
#[derive(Debug)]
struct Parcel {
    token: SlotToken,
    state: Vec<u8>,
    at: Millis,
}

/// The user actors' side of a node. See the module documentation.
#[derive(Debug)]
pub(super) struct Users {
    enabled: bool,
    /// Whether [`UserEffect::Start`] lists the user's sessions (the runtime's behaviour keeps
    /// them; see [`NodeState::set_activation_sessions`]).
    start_with_sessions: bool,
    /// Whether activations are told of their sessions ([`UserEffect::Session`]; see
    /// [`NodeState::set_session_events`]).
    session_events: bool,
    /// The live activations. A hash map: every join that makes a user live and every leave
    /// that makes one idle looks its user up here, and a search of a tree of thousands of
    /// users touched a cold node and compared a user's text at every level. Nothing iterates
    /// it in an order that matters: [`NodeState::users_of`] and the shutdown sort what they
    /// collect.
    active: foldhash::HashMap<UserId, Activation>,
    /// The last turn's touches, emptied, kept to take the next turn's into (no new list per
    /// turn; room for at most [`KEPT_TOUCHES`]).
    touched: Vec<Touch>,
    /// The list a scope's sessions are gathered in before they go into an activation's view,
    /// emptied, kept from scope to scope and turn to turn (room for at most
    /// [`KEPT_SESSIONS`]): one list per join otherwise.
    gathered: Vec<SessionView>,
    /// Per partition held: the lease's epoch and deadline, as last fenced.
    deadlines: super::partition_map::PartitionMap<(u64, Millis)>,
    /// Per partition held: the highest epoch at which another lease on it may have run
    /// before this node's (see [`NodeState::users_lease_started`]). A state handed over
    /// under a lower epoch is stale.
    successor_of: super::partition_map::PartitionMap<u64>,
    /// This turn's notes, by `(conn, token)`: looked up, never walked (so a hash map, whose
    /// room a turn keeps for the next one, up to [`KEPT_NOTES`]; a tree freed its nodes at
    /// every turn's end and made them again for the next turn's first join).
    notes: foldhash::HashMap<(ConnId, SlotToken), Note>,
    /// The topic of each join into a global scope, by user, until the user goes idle.
    topics: BTreeMap<UserId, BTreeMap<(ConnId, ScopeKey), Topic>>,
    /// Activations stopped to move, waiting for the runtime's state: → their new home.
    handing: BTreeMap<(UserId, SlotToken), NodeName>,
    expected: BTreeMap<PartitionId, Expected>,
    parcels: BTreeMap<UserId, Parcel>,
    /// Users whose activation waits for a handed-over state.
    deferred: BTreeSet<UserId>,
    /// Users whose activation failed: a fresh one starts then.
    restart_at: BTreeMap<UserId, Millis>,
}

impl Default for Users {
    fn default() -> Self {
        Self {
            enabled: true,
            start_with_sessions: true,
            session_events: true,
            active: foldhash::HashMap::default(),
            touched: Vec::new(),
            gathered: Vec::new(),
            deadlines: Default::default(),
            successor_of: Default::default(),
            notes: foldhash::HashMap::default(),
            topics: BTreeMap::new(),
            handing: BTreeMap::new(),
            expected: BTreeMap::new(),
            parcels: BTreeMap::new(),
            deferred: BTreeSet::new(),
            restart_at: BTreeMap::new(),
        }
    }
}

impl Users {
    /// Forget this turn's notes; the room for a next turn's stays (at most [`KEPT_NOTES`]).
    fn clear_notes(&mut self) {
        self.notes.clear();
        self.notes.shrink_to(KEPT_NOTES);
    }

    /// A slot operation's effect says why a record changed.
    pub(super) fn note_slot_effect(&mut self, e: &SlotEffect) {
        if !self.enabled {
            return;
        }
        let (key, note) = match e {
            SlotEffect::Grant { conn, token, resumed, .. } => ((conn, token), Note::Granted { resumed: *resumed }),
            SlotEffect::Revoke { conn, token, reason } => ((conn, token), Note::Revoked(reason.as_str().to_owned())),
            SlotEffect::Freed { conn, token } => ((conn, token), Note::Freed),
            SlotEffect::Reject { .. } | SlotEffect::Close { .. } => return,
        };
        self.notes.insert((key.0.clone(), *key.1), note);
    }

    /// A gateway released `conn`'s slot `token`.
    pub(super) fn note_release(&mut self, conn: &ConnId, token: SlotToken, clean: bool) {
        if self.enabled {
            self.notes.entry((conn.clone(), token)).or_insert(Note::Released { clean });
        }
    }

    /// A join into `scope` asked with `topic` (kept for global scopes only: a topic scope is
    /// its own topic).
    pub(super) fn note_topic(&mut self, user: &UserId, conn: &ConnId, scope: &ScopeKey, topic: &Topic) {
        if self.enabled && scope.is_global() {
            self.topics.entry(user.clone()).or_default().insert((conn.clone(), scope.clone()), topic.clone());
        }
    }

    fn forget_topics(&mut self, user: &UserId) {
        self.topics.remove(user);
    }

    /// What an activation's view keeps of `sessions` (see [`Activation::view`]).
    fn kept(&self, mut sessions: Vec<SessionView>) -> Vec<SessionView> {
        if !self.session_events {
            sessions.retain(|s| matches!(s.state, SessionState::Revoking { .. }));
            if sessions.is_empty() {
                return Vec::new();
            }
        }
        sessions
    }
}

impl NodeState {
    /// Run no user actors at all (the runtime was started without them): no activations are
    /// decided, recorded or told.
    pub fn set_user_actors(&mut self, on: bool) {
        self.users.enabled = on;
    }

    /// Whether [`UserEffect::Start`] carries the user's sessions (`true` unless set): the
    /// runtime says `false` when its behaviour keeps no copy of them, and the start then
    /// lists none (the home keeps them anyway, and session events still carry each one).
    pub fn set_activation_sessions(&mut self, listed: bool) {
        self.users.start_with_sessions = listed;
    }

    /// Whether activations are told of their sessions (`true` unless set): the runtime says
    /// `false` when its behaviour has no session hook and keeps no copy of them. No
    /// [`UserEffect::Session`] is sent then, starts list no sessions, and the home keeps of
    /// each activation's view only the sessions being revoked (the reason it was told, which
    /// [`NodeState::user_view`] shows until the revoke is confirmed), not a copy of every
    /// session its records hold anyway.
    pub fn set_session_events(&mut self, on: bool) {
        self.users.session_events = on;
    }

    /// Whether the runtime fences activations at their lease's deadline (always, outside
    /// ablations): what [`Record::ActivationStarted`] states and the runtime does.
    pub fn activations_fenced(&self) -> bool {
        self.safeguards.activations_follow_lease && self.safeguards.fence_activations_at_deadline
    }

    /// How many users have an activation on this node now.
    pub fn activations(&self) -> usize {
        self.users.active.len()
    }

    /// The live activation of `user` on this node, if any.
    pub fn activation_of(&self, user: &UserId) -> Option<SlotToken> {
        self.users.active.get(user).map(|a| a.token)
    }

    /// The lease on `p` became valid until `until` (or was renewed): fence its activations
    /// there.
    pub(super) fn users_lease_held(&mut self, p: PartitionId, epoch: u64, until: Millis, fx: &mut Vec<Effect>) {
        if !self.users.enabled {
            return;
        }
        self.users.deadlines.insert(p, (epoch, until));
        fx.push(Effect::User(UserEffect::Fence { partition: p, epoch, until }));
    }

    /// A new lease on `p` started here; `before`: the highest epoch of `p` held by anyone
    /// before it, as far as anyone can tell (the grantors' reports and this node's own earlier
    /// leases). A handover passes the state only to the activation that directly follows the
    /// one that handed it over: if a lease came between (another node held the partition, its
    /// activation of the user ran, its lease lapsed), the state is stale and the user starts
    /// fresh, as after a failover.
    pub(super) fn users_lease_started(&mut self, p: PartitionId, before: u64) {
        if self.users.enabled {
            self.users.successor_of.insert(p, before);
        }
    }

    /// This node stops serving `p` (the lease lapsed, or was given up): its activations end,
    /// at the lease's deadline at the latest. (The runtime's fence stays at that deadline: it
    /// already stops them there, and an activation stopped by a handover may still run its
    /// `stop` hook and hand its state over until then.)
    pub(super) fn users_partition_lost(&mut self, p: PartitionId, now: Millis, fx: &mut Vec<Effect>) {
        if !self.users.enabled {
            return;
        }
        let deadline = self.users.deadlines.remove(&p);
        self.users.successor_of.remove(&p);
        self.users.expected.remove(&p);
        if !self.safeguards.activations_follow_lease {
            return; // ablation: the activations outlive the lease
        }
        let at = match deadline {
            Some((_, until)) if self.safeguards.fence_activations_at_deadline => now.min(until),
            _ => now,
        };
        for user in self.users_of(p) {
            self.end_activation(&user, ActivationEnd::LeaseLost, at, fx);
        }
        let partitions = self.config.cluster.partitions;
        self.users.deferred.retain(|u| partition_of(u, partitions) != p);
        self.users.parcels.retain(|u, _| partition_of(u, partitions) != p);
    }

    /// Handover of `p` to `to`: tell it whose state follows, and stop those activations (the
    /// runtime answers each with its state: [`NodeState::users_activation_stopped`]).
    pub(super) fn users_hand_over(&mut self, p: PartitionId, to: &NodeName, now: Millis, fx: &mut Vec<Effect>) {
        if !self.users.enabled || !self.safeguards.activations_follow_lease {
            return;
        }
        let users = self.users_of(p);
        if users.is_empty() {
            return;
        }
        let plan = PeerMsg::HandoverPlan { from: self.me.clone(), partition: p, users: users.clone() };
        self.send(to, plan, fx);
        for user in users {
            if let Some(token) = self.end_activation(&user, ActivationEnd::HandedOver { to: to.clone() }, now, fx) {
                self.users.handing.insert((user, token), to.clone());
            }
        }
    }

    /// Graceful shutdown: every activation ends.
    pub(super) fn users_shutdown(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let mut users: Vec<UserId> = self.users.active.keys().cloned().collect();
        users.sort_unstable();
        for user in users {
            self.end_activation(&user, ActivationEnd::Shutdown, now, fx);
        }
    }

    /// The users of `p` with an activation here, in order.
    fn users_of(&self, p: PartitionId) -> Vec<UserId> {
        let mut users: Vec<UserId> =
            self.users.active.iter().filter(|(_, a)| a.partition == p).map(|(u, _)| u.clone()).collect();
        users.sort_unstable();
        users
    }

    /// End `user`'s activation at `at` (record and stop); returns its token.
    fn end_activation(
        &mut self,
        user: &UserId,
        why: ActivationEnd,
        at: Millis,
        fx: &mut Vec<Effect>,
    ) -> Option<SlotToken> {
        let a = self.users.active.remove(user)?;
        let token = a.token;
        fx.push(Effect::Record(Record::ActivationEnded { at, user: user.clone(), token, why: why.clone() }));
        fx.push(Effect::User(UserEffect::Stop { user: user.clone(), token, why }));
        Some(token)
    }

    /// Start `user`'s activation on `p` (served here), with a handed-over state if one came.
    fn start_activation(&mut self, p: PartitionId, user: &UserId, now: Millis, fx: &mut Vec<Effect>) {
        let Some(&(epoch, until)) = self.users.deadlines.get(&p) else { return };
        let Some(home) = self.homes.get_mut(&p) else { return };
        let token = home.next_token();
        debug_assert_eq!(token.epoch, epoch, "a home mints at its lease's epoch");
        // The state handed over is used only if no lease came between the one it was handed
        // over under and this one (another activation may have run then).
        let after = self.users.successor_of.get(&p).copied().unwrap_or(u64::MAX);
        let succeeds = |t: SlotToken| t.epoch >= after || !self.safeguards.handover_state_needs_succession;
        let parcel = self.users.parcels.remove(user).filter(|parcel| parcel.token < token && succeeds(parcel.token));
        // A state that comes later is for an activation that did not wait for it: dropped.
        if let Some(e) = self.users.expected.get_mut(&p) {
            e.users.remove(user);
        }
        let handed_from = parcel.as_ref().map(|parcel| parcel.token);
        let view = self.sessions_of(p, user, None);
        let sessions =
            if self.users.start_with_sessions && self.users.session_events { view.clone() } else { Vec::new() };
        let view = self.users.kept(view);
        fx.push(Effect::Record(Record::ActivationStarted {
            at: now,
            user: user.clone(),
            partition: p,
            token,
            until,
            handed_from,
            fenced: self.activations_fenced(),
        }));
        fx.push(Effect::User(UserEffect::Start {
            user: user.clone(),
            partition: p,
            token,
            until,
            sessions,
            state: parcel.map(|parcel| parcel.state),
        }));
        self.users.deferred.remove(user);
        self.users.active.insert(user.clone(), Activation { partition: p, token, handed_from, view });
    }

    /// The sessions of `user` on `p` as this home knows them now, grouped by scope in scope
    /// order; `before` (the activation's last view) keeps the reasons of revokes decided in
    /// earlier turns and the topics of global scopes.
    fn sessions_of(&self, p: PartitionId, user: &UserId, before: Option<&[SessionView]>) -> Vec<SessionView> {
        let Some(home) = self.homes.get(&p) else { return Vec::new() };
        let mut out = Vec::new();
        for (scope, records) in home.scopes_of(user) {
            let earlier = before.map_or(&[][..], |v| &v[scope_range(v, scope)]);
            out.extend(records.iter().map(|r| self.session_of(user, scope, r, earlier)));
        }
        out
    }

    /// One session of `user` in `scope`; `earlier`: what the activation was last told of
    /// that scope.
    fn session_of(&self, user: &UserId, scope: &ScopeKey, r: &SlotRecord, earlier: &[SessionView]) -> SessionView {
        let state = match r.state() {
            SlotState::Held => SessionState::Held,
            SlotState::Replaced => SessionState::Replaced,
            SlotState::Reserved { .. } => SessionState::Reserved,
            SlotState::Revoking => {
                let noted = match self.users.notes.get(&(r.conn.clone(), r.token)) {
                    Some(Note::Revoked(reason)) => Some(reason.clone()),
                    _ => None,
                };
                let told =
                    earlier.iter().find(|s| s.conn == r.conn && s.token == r.token).and_then(|s| match &s.state {
                        SessionState::Revoking { reason } => Some(reason.clone()),
                        _ => None,
                    });
                // A revoke sent again by the retry loop is a takeover's.
                let reason = noted.or(told).unwrap_or_else(|| "logged_in_elsewhere".to_owned());
                SessionState::Revoking { reason }
            }
        };
        let topic = match scope.as_topic() {
            Some(t) => Some(t.clone()),
            None => self
                .users
                .topics
                .get(user)
                .and_then(|topics| topics.get(&(r.conn.clone(), scope.clone())))
                .cloned()
                .or_else(|| earlier.iter().find(|s| s.conn == r.conn).and_then(|s| s.topic.clone())),
        };
        SessionView {
            conn: r.conn.clone(),
            scope: scope.clone(),
            topic,
            tab: r.tab(),
            token: r.token,
            state,
            in_doubt: r.in_doubt_until().is_some(),
        }
    }

    /// End of every turn: bring every touched user's activation up to date (start, session
    /// events, stop), and run what is due (handover waits, restarts after a failure).
    pub(super) fn sync_users(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        if !self.users.enabled || self.stopped {
            self.users.clear_notes();
            // Nobody reads what was touched: forget it (it would grow with every user seen).
            let touched = self.take_touches();
            self.put_back_touches(touched);
            return;
        }
        self.users_timers(now);
        // In partition order, then user order, then scope order, as a walk over every home
        // would visit them.
        let touched = self.take_touches();
        let mut rest = &touched[..];
        while let Some((p, user, _)) = rest.first() {
            let n = rest.partition_point(|(q, u, _)| q == p && u == user);
            let (one, next) = rest.split_at(n);
            rest = next;
            if !self.homes.contains_key(p) {
                continue; // its home is gone, and what it touched with it
            }
            let serving = self.serving(*p, now);
            let scopes = one.iter().filter_map(|(_, _, scope)| scope.as_ref());
            self.sync_user(*p, user, scopes, serving, now, fx);
        }
        self.put_back_touches(touched);
        self.users.clear_notes();
    }

    /// What the homes touched since the last call, sorted, each once (give the list back with
    /// [`NodeState::put_back_touches`]).
    fn take_touches(&mut self) -> Vec<Touch> {
        let mut touched = std::mem::take(&mut self.users.touched);
        std::mem::swap(&mut touched, &mut *self.touches.lock().unwrap_or_else(|e| e.into_inner()));
        if touched.len() > 1 {
            touched.sort_unstable();
            touched.dedup();
        }
        touched
    }

    /// Keep the list of a turn's touches for the next turn, emptied (room for at most
    /// [`KEPT_TOUCHES`]: a turn that touched every user leaves no large list behind).
    fn put_back_touches(&mut self, mut touched: Vec<Touch>) {
        touched.clear();
        touched.shrink_to(KEPT_TOUCHES);
        self.users.touched = touched;
    }

    /// A home of `p` went (or a new one replaced it): what it touched this turn goes with it.
    pub(super) fn forget_touches(&mut self, p: PartitionId) {
        self.touches.lock().unwrap_or_else(|e| e.into_inner()).retain(|(q, _, _)| *q != p);
    }

    /// Handover waits that ran out, parcels nobody took, restarts that are due: touch their
    /// users so this turn decides them.
    fn users_timers(&mut self, now: Millis) {
        if self.users.expected.is_empty() && self.users.restart_at.is_empty() && self.users.parcels.is_empty() {
            return; // nothing waits (every turn but a handover's or a failure's)
        }
        let mut due: Vec<UserId> = Vec::new();
        if self.users.expected.values().any(|e| e.until <= now) {
            let (late, kept): (BTreeMap<_, _>, BTreeMap<_, _>) =
                std::mem::take(&mut self.users.expected).into_iter().partition(|(_, e)| e.until <= now);
            self.users.expected = kept;
            due.extend(late.into_values().flat_map(|e| e.users));
        }
        if self.users.restart_at.values().any(|t| *t <= now) {
            let (ready, kept): (BTreeMap<_, _>, BTreeMap<_, _>) =
                std::mem::take(&mut self.users.restart_at).into_iter().partition(|(_, t)| *t <= now);
            self.users.restart_at = kept;
            due.extend(ready.into_keys());
        }
        let keep_ms = 2 * self.config.cluster.lease_ms;
        self.users.parcels.retain(|_, parcel| parcel.at + keep_ms > now);
        let partitions = self.config.cluster.partitions;
        for user in due {
            if let Some(home) = self.homes.get_mut(&partition_of(&user, partitions)) {
                home.touch(&user);
            }
        }
    }

    /// The earliest instant a handover wait or a restart is due, if any.
    pub(super) fn users_next_wake(&self) -> Option<Millis> {
        let waits = self.users.expected.values().map(|e| e.until);
        waits.chain(self.users.restart_at.values().copied()).min()
    }

    /// Bring `user`'s activation up to date with its `scopes` that changed this turn, or
    /// start or stop it.
    fn sync_user<'a>(
        &mut self,
        p: PartitionId,
        user: &UserId,
        scopes: impl Iterator<Item = &'a ScopeKey>,
        serving: bool,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let live = self.homes.get(&p).is_some_and(|h| h.has_user(user));
        if let Some(a) = self.users.active.get_mut(user) {
            if a.partition != p {
                return; // an orphan of an ablation run: its partition is not here
            }
            let token = a.token;
            let mut view = std::mem::take(&mut a.view);
            let mut events = Events::default();
            for scope in scopes {
                let range = scope_range(&view, scope);
                let mut after = std::mem::take(&mut self.users.gathered);
                if let Some(home) = self.homes.get(&p) {
                    let earlier = &view[range.clone()];
                    after.extend(home.records_in(user, scope).iter().map(|r| self.session_of(user, scope, r, earlier)));
                }
                if self.users.session_events {
                    session_events(&view[range.clone()], &after, &self.users.notes, &mut events);
                } else {
                    after.retain(|s| matches!(s.state, SessionState::Revoking { .. }));
                    // as `kept` does
                }
                // Grown as `grow_by` says, not doubled: one view per active user, and most
                // hold a few sessions.
                let grow = after.len().saturating_sub(range.len());
                if view.len() + grow > view.capacity() {
                    view.reserve_exact(grow.max(crate::grow_by(view.len())));
                }
                view.splice(range, after.drain(..));
                after.shrink_to(KEPT_SESSIONS);
                self.users.gathered = after;
            }
            for event in events.in_order() {
                fx.push(Effect::User(UserEffect::Session { user: user.clone(), token, event }));
            }
            if live {
                if view.capacity() > 2 * view.len() + 2 {
                    view.shrink_to_fit();
                }
                if let Some(a) = self.users.active.get_mut(user) {
                    a.view = view;
                }
            } else {
                // Its last session ended: the activation ends with it (its view goes too).
                self.end_activation(user, ActivationEnd::Idle, now, fx);
                self.users.forget_topics(user);
            }
            return;
        }
        if !live {
            self.users.deferred.remove(user);
            self.users.forget_topics(user);
            return;
        }
        if !serving || self.users.restart_at.contains_key(user) {
            return;
        }
        let awaited = self.users.expected.get(&p).is_some_and(|e| e.users.contains(user) && e.until > now);
        if awaited && !self.users.parcels.contains_key(user) {
            self.users.deferred.insert(user.clone());
            return;
        }
        self.start_activation(p, user, now, fx);
    }

    /// A kick of `user` (one scope, or all): note the reason for the records it removes
    /// without an effect (reservations).
    pub(super) fn users_note_kick(&mut self, p: PartitionId, user: &UserId, scope: Option<&ScopeKey>, reason: &str) {
        if !self.users.enabled {
            return;
        }
        let Some(home) = self.homes.get(&p) else { return };
        let keys: Vec<(ConnId, SlotToken)> = home
            .records_of(user)
            .filter(|(s, _)| scope.is_none_or(|sc| sc == *s))
            .map(|(_, r)| (r.conn.clone(), r.token))
            .collect();
        for k in keys {
            self.users.notes.insert(k, Note::Revoked(reason.to_owned()));
        }
    }

    /// The user inputs of [`Input`]: calls, info, kicks of one session, stopped activations.
    pub(super) fn user_input(&mut self, input: Input, now: Millis, fx: &mut Vec<Effect>) {
        match input {
            Input::UserCall { call, user, body, reply } => {
                let p = partition_of(&user, self.config.cluster.partitions);
                let to = reply.then_some(ReplyTo::Local(call));
                match self.home_of(p, now) {
                    Some(home) if home == self.me.node => self.user_call_here(to, user, body, now, fx),
                    Some(home) => {
                        let msg = PeerMsg::UserCall { from: self.me.clone(), call, user, body, reply };
                        self.send(&home, msg, fx);
                    }
                    None => self.answer(to, UserAnswer::NotHome, fx),
                }
            }
            Input::UserInfo { call, user } => {
                let p = partition_of(&user, self.config.cluster.partitions);
                match self.home_of(p, now) {
                    Some(home) if home == self.me.node => {
                        let view = self.user_view(&user, now);
                        fx.push(Effect::User(UserEffect::Info { call, view }));
                    }
                    Some(home) => self.send(&home, PeerMsg::UserInfo { from: self.me.clone(), call, user }, fx),
                    None => fx.push(Effect::User(UserEffect::Info { call, view: None })),
                }
            }
            Input::KickSession { user, conn, scope, reason } => {
                let p = partition_of(&user, self.config.cluster.partitions);
                if let Some(home) = self.home_of(p, now) {
                    self.send(&home, PeerMsg::KickSession { user, conn, scope, reason }, fx);
                }
            }
            Input::ActivationStopped { user, token, state, failed } => {
                self.users_activation_stopped(user, token, state, failed, now, fx)
            }
            _ => {}
        }
    }

    /// The user messages of [`PeerMsg`].
    pub(super) fn user_receive(&mut self, msg: PeerMsg, now: Millis, fx: &mut Vec<Effect>) {
        match msg {
            PeerMsg::UserCall { from, call, user, body, reply } => {
                let to = reply.then_some(ReplyTo::Peer { node: from, call });
                self.user_call_here(to, user, body, now, fx);
            }
            PeerMsg::UserReply { to, call, answer } if to == self.me => {
                fx.push(Effect::User(UserEffect::Answer { call, answer }));
            }
            PeerMsg::UserInfo { from, call, user } => {
                let view = self.user_view(&user, now);
                let to = from.node.clone();
                self.send(&to, PeerMsg::UserInfoReply { to: from, call, view }, fx);
            }
            PeerMsg::UserInfoReply { to, call, view } if to == self.me => {
                fx.push(Effect::User(UserEffect::Info { call, view }));
            }
            PeerMsg::KickSession { user, conn, scope, reason } => {
                self.home_kick_session(user, conn, scope, reason, now, fx)
            }
            PeerMsg::HandoverPlan { from, partition, users } => self.handover_plan(from, partition, users, now),
            PeerMsg::UserHandover { from, user, token, state } => self.user_handover(from, user, token, state, now),
            _ => {}
        }
    }

    /// A call or cast reached the user's home (this node): hand it to the activation, or say
    /// why not.
    fn user_call_here(&mut self, to: Option<ReplyTo>, user: UserId, body: Vec<u8>, now: Millis, fx: &mut Vec<Effect>) {
        let p = partition_of(&user, self.config.cluster.partitions);
        if !self.serving(p, now) {
            return self.answer(to, UserAnswer::NotHome, fx);
        }
        if let Some(a) = self.users.active.get(&user) {
            let token = a.token;
            fx.push(Effect::User(UserEffect::Deliver { user, token, body, reply: to }));
        } else if self.users.deferred.contains(&user) || self.users.restart_at.contains_key(&user) {
            self.answer(to, UserAnswer::Moving, fx);
        } else {
            self.answer(to, UserAnswer::NotActive, fx);
        }
    }

    fn answer(&self, to: Option<ReplyTo>, answer: UserAnswer, fx: &mut Vec<Effect>) {
        match to {
            None => {}
            Some(ReplyTo::Local(call)) => fx.push(Effect::User(UserEffect::Answer { call, answer })),
            Some(ReplyTo::Peer { node, call }) => {
                let dest = node.node.clone();
                self.send(&dest, PeerMsg::UserReply { to: node, call, answer }, fx);
            }
        }
    }

    /// This home's view of `user`; `None` when it does not serve the user's partition now.
    pub fn user_view(&self, user: &UserId, now: Millis) -> Option<UserView> {
        let p = partition_of(user, self.config.cluster.partitions);
        if !self.serving(p, now) {
            return None;
        }
        let a = self.users.active.get(user);
        Some(UserView {
            user: user.clone(),
            home: self.me.node.clone(),
            activation: a.map(|a| a.token),
            handed_over_from: a.and_then(|a| a.handed_from),
            sessions: self.sessions_of(p, user, a.map(|a| a.view.as_slice())),
        })
    }

    /// The runtime stopped an activation: pass a handed-over state on, or start afresh after
    /// a failure.
    fn users_activation_stopped(
        &mut self,
        user: UserId,
        token: SlotToken,
        state: Option<Vec<u8>>,
        failed: bool,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        if let Some(to) = self.users.handing.remove(&(user.clone(), token)) {
            if let Some(state) = state {
                let msg = PeerMsg::UserHandover { from: self.me.clone(), user, token, state };
                self.send(&to, msg, fx);
            }
            return;
        }
        if failed && self.users.active.get(&user).is_some_and(|a| a.token == token) {
            self.end_activation(&user, ActivationEnd::Failed, now, fx);
            self.users.restart_at.insert(user, now + RESTART_AFTER_FAILURE_MS);
        }
    }

    fn handover_plan(&mut self, from: Incarnation, p: PartitionId, users: Vec<UserId>, now: Millis) {
        let current = self.peers.get(&from.node).and_then(|peer| peer.incarnation.as_ref());
        if !self.users.enabled || current != Some(&from) {
            return;
        }
        let until = now + self.config.cluster.lease_ms;
        let e = self.users.expected.entry(p).or_insert(Expected { users: BTreeSet::new(), until });
        e.users.extend(users);
        e.until = e.until.max(until);
    }

    fn user_handover(&mut self, from: Incarnation, user: UserId, token: SlotToken, state: Vec<u8>, now: Millis) {
        let current = self.peers.get(&from.node).and_then(|peer| peer.incarnation.as_ref());
        if !self.users.enabled || current != Some(&from) || self.users.active.contains_key(&user) {
            return; // a stranger's, or too late: the user started afresh here
        }
        let p = partition_of(&user, self.config.cluster.partitions);
        if !self.users.expected.get(&p).is_some_and(|e| e.users.contains(&user)) {
            return; // no plan named it, or the user started (and perhaps stopped) since
        }
        let newer = self.users.parcels.get(&user).is_none_or(|old| old.token < token);
        if newer {
            self.users.parcels.insert(user.clone(), Parcel { token, state, at: now });
        }
        if let Some(home) = self.homes.get_mut(&p) {
            home.touch(&user);
        }
    }
}

/// Where `scope`'s sessions are (or would go) in a view grouped by scope in scope order.
fn scope_range(view: &[SessionView], scope: &ScopeKey) -> std::ops::Range<usize> {
    let start = view.partition_point(|s| s.scope < *scope);
    let len = view[start..].partition_point(|s| s.scope == *scope);
    start..start + len
}

/// A turn's session events of one user, gathered scope by scope.
#[derive(Default)]
struct Events {
    ends: Vec<SessionEvent>,
    changes: Vec<SessionEvent>,
    starts: Vec<SessionEvent>,
}

impl Events {
    /// Ends first, then changes, then starts, each in the order of the scopes.
    fn in_order(self) -> impl Iterator<Item = SessionEvent> {
        self.ends.into_iter().chain(self.changes).chain(self.starts)
    }
}

/// The events that take an activation from `before` to `after` (the sessions of one user in
/// one scope), added to `out`.
fn session_events(
    before: &[SessionView],
    after: &[SessionView],
    notes: &foldhash::HashMap<(ConnId, SlotToken), Note>,
    out: &mut Events,
) {
    let same = |a: &SessionView, b: &SessionView| a.conn == b.conn && a.scope == b.scope && a.token == b.token;
    for old in before {
        match after.iter().find(|new| same(old, new)) {
            Some(new) if new != old => out.changes.push(SessionEvent::Changed { session: new.clone() }),
            Some(_) => {}
            None => {
                let note = notes.get(&(old.conn.clone(), old.token));
                let tab_lives_on = after.iter().any(|new| new.tab == old.tab && new.scope == old.scope);
                let end = match (&old.state, note) {
                    (SessionState::Reserved, Some(Note::Freed)) => SessionEnd::ReservationLapsed,
                    // In doubt until it cleared: whatever was asked of it, its gateway is lost.
                    (_, Some(Note::Freed)) => SessionEnd::GatewayLost,
                    (SessionState::Revoking { reason }, _) => SessionEnd::Revoked { reason: reason.clone() },
                    (SessionState::Replaced, _) => SessionEnd::Replaced,
                    (SessionState::Reserved, Some(Note::Revoked(reason))) => {
                        SessionEnd::Revoked { reason: reason.clone() }
                    }
                    (SessionState::Reserved, _) if tab_lives_on => SessionEnd::Replaced,
                    (SessionState::Reserved, _) => SessionEnd::ReservationLapsed,
                    (_, Some(Note::Released { clean })) => SessionEnd::Closed { clean: *clean },
                    (_, Some(Note::Revoked(reason))) => SessionEnd::Revoked { reason: reason.clone() },
                    (_, _) => SessionEnd::Closed { clean: true },
                };
                out.ends.push(SessionEvent::Ended { session: old.clone(), end });
            }
        }
    }
    for new in after {
        if !before.iter().any(|old| same(old, new)) {
            let how = match notes.get(&(new.conn.clone(), new.token)) {
                Some(Note::Granted { resumed: true }) => SessionStart::Resumed,
                Some(Note::Granted { resumed: false }) => SessionStart::Granted,
                _ => SessionStart::Recovered,
            };
            out.starts.push(SessionEvent::Started { session: new.clone(), how });
        }
    }
}

#[cfg(test)]
#[path = "users_tests.rs"]
mod tests;
