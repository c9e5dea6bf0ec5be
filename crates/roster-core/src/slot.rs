//! The slot policy on a user's home: who holds the slots of one `(user, scope)`.
//!
//! ## The state machine
//!
//! A [`ScopeSlots`] keeps one [`SlotRecord`] per connection that holds (or may still hold) a
//! slot, and a FIFO of joins that wait. Records are counted by *tab*: at most `max_slots`
//! distinct tabs (a join without a `tab_id` is a tab of its own) hold at any moment.
//!
//! ```text
//!            join (free slot, or a resume)
//!   (none) ───────────────────────────────▶ Held ──release──▶ (none)
//!                                           │  │  └──unclean release, reserve_ms > 0──▶ Reserved ──expiry──▶ (none)
//!                       takeover victim ────┘  └── same tab resumes on another socket ──▶ Replaced
//!                               ▼                                                          │
//!                           Revoking ──gateway confirms──▶ (none) ◀──gateway confirms close─┘
//! ```
//!
//! Orthogonal to these, a record whose gateway the home cannot hear is *in doubt* until a
//! deadline (rule 8): it still counts, a conflicting join waits for it instead of being
//! rejected or taking it over, and at the deadline it is freed.
//!
//! Rules carried out here (numbers refer to DESIGN.md "Homes, leases and partitions"):
//! - takeover revokes first and grants only once every record of the victim tab is gone (6);
//! - a resume (same `tab_id`, another socket) is granted at once and the old record stays,
//!   marked replaced, until its close is confirmed or it clears as in doubt (7);
//! - in-doubt slots are never freed early (8).
//!
//! Every input returns [`SlotEffect`]s in the order they must be carried out; nothing here
//! reads a clock, and tokens come from the caller's [`TokenMint`].

use crate::config::{OnConflict, Policy};
use crate::ids::{ConnId, Incarnation, Millis, Role, SlotToken, TabId};
use serde::{Deserialize, Serialize};
#[path = "slot_lists.rs"]
mod lists;
use lists::Lists;
use std::collections::VecDeque;

/// The resolved rules for one `(user, scope)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotRules {
    /// Live tabs allowed at once (at least 1).
    pub max_slots: u32,
    /// What a newcomer meets when every slot is taken.
    pub on_conflict: OnConflict,
    /// How long a `wait` join waits.
    pub wait_ms: Millis,
    /// How long a slot stays reserved for its tab after an unclean disconnect.
    pub reserve_ms: Millis,
    /// The longest any join waits (for an in-doubt slot, say) before `wait_timed_out`.
    pub join_wait_ms: Millis,
    /// Roles that skip the slot check.
    pub exempt_roles: Vec<Role>,
}

impl SlotRules {
    /// The rules of a resolved policy; `join_wait_ms` is the server's bound on any wait.
    pub fn from_policy(policy: &Policy, join_wait_ms: Millis) -> Self {
        Self {
            max_slots: policy.max_slots,
            on_conflict: policy.on_conflict,
            wait_ms: policy.wait_ms,
            reserve_ms: policy.reserve_ms,
            join_wait_ms,
            exempt_roles: policy.exempt_roles.clone(),
        }
    }
}

impl Default for SlotRules {
    fn default() -> Self {
        Self {
            max_slots: 1,
            on_conflict: OnConflict::Takeover,
            wait_ms: 5000,
            reserve_ms: 0,
            join_wait_ms: 10_000,
            exempt_roles: Vec::new(),
        }
    }
}

/// Hands out slot tokens: the epoch of the home's lease and a generation that only grows within
/// it. One mint serves a whole partition, so tokens grow per `(user, scope)` even when a user's
/// state is dropped and rebuilt within one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenMint {
    epoch: u64,
    last_generation: u64,
}

impl TokenMint {
    /// A mint for `epoch`, whose first token is `epoch.1`.
    pub fn new(epoch: u64) -> Self {
        Self { epoch, last_generation: 0 }
    }

    /// The epoch this mint hands out.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The next token, larger than every token minted before.
    pub fn next_token(&mut self) -> SlotToken {
        self.last_generation += 1;
        SlotToken { epoch: self.epoch, generation: self.last_generation }
    }
}

/// Which tab a record counts for: the client's `tab_id`, or the connection itself for a join
/// that carried none (every such join is a new tab).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TabKey {
    /// The browser's `tab_id`.
    Tab(TabId),
    /// No `tab_id`: the connection is its own tab.
    Conn(ConnId),
}

impl TabKey {
    /// The key for a join from `conn` carrying `tab`.
    pub fn of(tab: Option<&TabId>, conn: &ConnId) -> Self {
        match tab {
            Some(t) => TabKey::Tab(t.clone()),
            None => TabKey::Conn(conn.clone()),
        }
    }
}

/// Where a record stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotState {
    /// The connection holds the slot.
    Held,
    /// A revoke was sent; the slot counts until the gateway confirms.
    Revoking,
    /// The tab resumed on another socket; this old connection was told to close and counts for
    /// its tab until the close is confirmed (rule 7).
    Replaced,
    /// No connection: the slot is kept for the same tab until the deadline.
    Reserved {
        /// When the reservation lapses.
        until: Millis,
    },
}

/// One connection's (possible) hold on a slot, as the home knows it.
///
/// Laid out for the home's table, which keeps one per presence (48 bytes, where the plain
/// fields took 88): the tab is the join's `tab_id` alone, since a join without one counts for
/// its own connection ([`TabKey::Conn`] of [`SlotRecord::conn`]); the state's deadline and the
/// in-doubt deadline share one number, since a reserved record is never in doubt (it has no
/// socket whose gateway could go unheard: reserving clears the doubt, and doubt is never set on
/// a reservation); that number is kept in seven bytes ([`Deadline`]: up to 2^56 − 1 ms, some
/// two million years of any clock's milliseconds), and the stage and the doubt in one byte
/// beside it ([`Stage`]). Read it through its methods; it serializes as the five fields it
/// stands for (`tab`, `conn`, `token`, `state`, `in_doubt_until`), as before; an encoding of a
/// reservation in doubt, which no record produces, is refused, and so is one whose deadline
/// does not fit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RecordFields", into = "RecordFields")]
pub struct SlotRecord {
    /// The join's `tab_id`; `None`: the connection is its own tab.
    tab_id: Option<TabId>,
    /// The connection (gateway incarnation and socket).
    pub conn: ConnId,
    /// The token it was granted.
    pub token: SlotToken,
    /// In the `Reserved` stage, `SlotState::Reserved`'s deadline; in any other, the in-doubt
    /// deadline while the stage says in doubt (0 otherwise).
    deadline: Deadline,
    stage: Stage,
}

/// A deadline in seven bytes (little-endian): the record's 8-byte fields and its stage byte
/// then fill 48 bytes with no padding. Deadlines are `now` plus a configured wait on a node's
/// clock in milliseconds (a wall clock's today is about 2^41), so none comes near the bound,
/// 2^56 − 1 ms (the year 2,280,000 of a wall clock): one computed past it is kept as the bound,
/// an instant no clock reaches (so nothing is freed earlier than asked), and an encoding past
/// it is refused, so what a record encodes is what it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Deadline([u8; 7]);

impl Deadline {
    /// The latest deadline a record keeps.
    const MAX: Millis = (1 << 56) - 1;

    /// `at`, if it fits.
    fn new(at: Millis) -> Option<Self> {
        if at > Self::MAX {
            return None;
        }
        let mut bytes = [0; 7];
        bytes.copy_from_slice(&at.to_le_bytes()[..7]);
        Some(Deadline(bytes))
    }

    /// `at`, or the bound for a deadline past it (see the type).
    fn of(at: Millis) -> Self {
        Self::new(at.min(Self::MAX)).expect("within the bound")
    }

    fn get(self) -> Millis {
        let mut bytes = [0; 8];
        bytes[..7].copy_from_slice(&self.0);
        Millis::from_le_bytes(bytes)
    }
}

/// [`SlotState`] without its deadline, with the doubt (never in the `Reserved` stage): one
/// byte, whose unused values also tell the scope's lists apart (`slot_lists.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Held,
    Revoking,
    Replaced,
    Reserved,
    HeldInDoubt,
    RevokingInDoubt,
    ReplacedInDoubt,
}

impl Stage {
    fn in_doubt(self) -> bool {
        matches!(self, Stage::HeldInDoubt | Stage::RevokingInDoubt | Stage::ReplacedInDoubt)
    }

    /// The same stage, in doubt or not (a reservation stays one: it is never in doubt).
    fn with_doubt(self, doubt: bool) -> Self {
        match (self, doubt) {
            (Stage::Held | Stage::HeldInDoubt, false) => Stage::Held,
            (Stage::Held | Stage::HeldInDoubt, true) => Stage::HeldInDoubt,
            (Stage::Revoking | Stage::RevokingInDoubt, false) => Stage::Revoking,
            (Stage::Revoking | Stage::RevokingInDoubt, true) => Stage::RevokingInDoubt,
            (Stage::Replaced | Stage::ReplacedInDoubt, false) => Stage::Replaced,
            (Stage::Replaced | Stage::ReplacedInDoubt, true) => Stage::ReplacedInDoubt,
            (Stage::Reserved, _) => Stage::Reserved,
        }
    }
}

/// What a [`SlotRecord`] serializes as.
#[derive(Serialize, Deserialize)]
#[serde(rename = "SlotRecord")]
struct RecordFields {
    tab: TabKey,
    conn: ConnId,
    token: SlotToken,
    state: SlotState,
    in_doubt_until: Option<Millis>,
}

impl From<SlotRecord> for RecordFields {
    fn from(r: SlotRecord) -> Self {
        RecordFields {
            tab: r.tab(),
            state: r.state(),
            in_doubt_until: r.in_doubt_until(),
            conn: r.conn,
            token: r.token,
        }
    }
}

impl TryFrom<RecordFields> for SlotRecord {
    type Error = &'static str;

    fn try_from(f: RecordFields) -> Result<Self, Self::Error> {
        if matches!(f.state, SlotState::Reserved { .. }) && f.in_doubt_until.is_some() {
            return Err("a reserved slot record is never in doubt");
        }
        let until = match f.state {
            SlotState::Reserved { until } => Some(until),
            _ => f.in_doubt_until,
        };
        if until.is_some_and(|u| Deadline::new(u).is_none()) {
            return Err("a slot record's deadline is past 2^56 - 1 ms");
        }
        let mut r = SlotRecord::new(f.tab, f.conn, f.token);
        r.set_state(f.state);
        r.set_in_doubt_until(f.in_doubt_until);
        Ok(r)
    }
}

impl SlotRecord {
    /// A held record of `conn` for `tab`. A [`TabKey::Conn`] always names the record's own
    /// connection (it is what [`TabKey::of`] makes for a join without a `tab_id`).
    fn new(tab: TabKey, conn: ConnId, token: SlotToken) -> Self {
        let tab_id = match tab {
            TabKey::Tab(t) => Some(t),
            TabKey::Conn(_) => None,
        };
        SlotRecord { tab_id, conn, token, deadline: Deadline::default(), stage: Stage::Held }
    }

    /// The tab it counts for.
    pub fn tab(&self) -> TabKey {
        TabKey::of(self.tab_id.as_ref(), &self.conn)
    }

    /// Whether it counts for `tab`.
    pub fn counts_for(&self, tab: &TabKey) -> bool {
        match (tab, &self.tab_id) {
            (TabKey::Tab(t), Some(mine)) => t == mine,
            (TabKey::Conn(c), None) => *c == self.conn,
            _ => false,
        }
    }

    /// Whether it counts for a browser `tab_id` (not for its connection alone).
    pub fn has_tab_id(&self) -> bool {
        self.tab_id.is_some()
    }

    /// Where it stands.
    pub fn state(&self) -> SlotState {
        match self.stage.with_doubt(false) {
            Stage::Revoking => SlotState::Revoking,
            Stage::Replaced => SlotState::Replaced,
            Stage::Reserved => SlotState::Reserved { until: self.deadline.get() },
            _ => SlotState::Held,
        }
    }

    /// A reservation ends any doubt (its caller says so too: a reserved record has no socket).
    /// A deadline past [`Deadline::MAX`] is kept as that bound (see [`Deadline`]).
    fn set_state(&mut self, state: SlotState) {
        let stage = match state {
            SlotState::Held => Stage::Held,
            SlotState::Revoking => Stage::Revoking,
            SlotState::Replaced => Stage::Replaced,
            SlotState::Reserved { until } => {
                (self.stage, self.deadline) = (Stage::Reserved, Deadline::of(until));
                return;
            }
        };
        if self.stage == Stage::Reserved {
            self.deadline = Deadline::default(); // the reservation's, not an in-doubt deadline
        }
        self.stage = stage.with_doubt(self.stage.in_doubt());
    }

    fn is_reserved(&self) -> bool {
        self.stage == Stage::Reserved
    }

    /// Set while the home cannot hear the gateway: freed at this instant unless heard again.
    pub fn in_doubt_until(&self) -> Option<Millis> {
        self.stage.in_doubt().then(|| self.deadline.get())
    }

    /// Set or clear the doubt; a reserved record is never in doubt (every caller checks), so
    /// setting one there is refused in debug builds and ignored otherwise, and clearing keeps
    /// the reservation's deadline. A deadline past [`Deadline::MAX`] is kept as that bound.
    fn set_in_doubt_until(&mut self, until: Option<Millis>) {
        if self.is_reserved() {
            debug_assert!(until.is_none(), "a reserved slot record is never in doubt");
            return;
        }
        self.stage = self.stage.with_doubt(until.is_some());
        self.deadline = until.map_or(Deadline::default(), Deadline::of);
    }
}

/// Why a join is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// `reject` policy and every slot taken.
    AlreadyJoined,
    /// A wait (policy `wait`, or an in-doubt slot) ran out.
    WaitTimedOut,
    /// A newer takeover superseded this pending one.
    LoggedInElsewhere,
}

impl RejectReason {
    /// The reason as the client protocol spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::AlreadyJoined => "already_joined",
            RejectReason::WaitTimedOut => "wait_timed_out",
            RejectReason::LoggedInElsewhere => "logged_in_elsewhere",
        }
    }
}

/// Why a held slot is taken away.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevokeReason {
    /// A newer tab took the slot over.
    LoggedInElsewhere,
    /// The backend kicked the user, with its own reason.
    Kicked(String),
}

impl RevokeReason {
    /// The reason as the client protocol spells it.
    pub fn as_str(&self) -> &str {
        match self {
            RevokeReason::LoggedInElsewhere => "logged_in_elsewhere",
            RevokeReason::Kicked(r) => r,
        }
    }
}

/// What the home must do, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotEffect {
    /// Tell the join on `conn` it holds the slot with `token`.
    Grant {
        /// The joining connection.
        conn: ConnId,
        /// Its tab.
        tab: TabKey,
        /// The fencing token.
        token: SlotToken,
        /// Whether this grant resumed the tab from another socket.
        resumed: bool,
    },
    /// Tell the join on `conn` it is refused.
    Reject {
        /// The joining connection.
        conn: ConnId,
        /// Why.
        reason: RejectReason,
    },
    /// Ask the gateway of `conn` to revoke the slot (`slot_revoked`) and confirm.
    Revoke {
        /// The holder.
        conn: ConnId,
        /// The token it holds.
        token: SlotToken,
        /// Why (sent to the client).
        reason: RevokeReason,
    },
    /// Ask the gateway of `conn` to close it quietly (its tab resumed elsewhere) and confirm.
    Close {
        /// The replaced connection.
        conn: ConnId,
        /// The token it held.
        token: SlotToken,
    },
    /// A slot was freed without a gateway's word (reservation lapsed, in-doubt cleared).
    Freed {
        /// The connection whose record is gone.
        conn: ConnId,
        /// Its token.
        token: SlotToken,
    },
}

/// A join waiting for a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PendingJoin {
    conn: ConnId,
    tab: TabKey,
    /// When it gives up with `wait_timed_out`.
    deadline: Millis,
    /// A takeover that has revoked its victim tab and waits for its records to go.
    victim: Option<TabKey>,
}

/// Every slot record and waiting join of one `(user, scope)` on its home. It serializes as its
/// four fields (`records`, `pending`, `new_tabs_blocked`, `unsafe_switches`), as before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ScopeFields", into = "ScopeFields")]
pub struct ScopeSlots {
    /// The records, in grant order (what it derefs to), and the waiting joins, first come
    /// first served (`pending_*`): one record in place, anything more in one allocation.
    lists: Lists<SlotRecord, PendingJoin>,
    /// Rule 9: right after a recovery scan the home cannot list every slot, so it admits
    /// resumes of tabs it knows but no new tab. Set by the node before each input.
    new_tabs_blocked: bool,
    /// Test-only switches (rules 6 and 7); `true` outside ablation tests.
    unsafe_switches: UnsafeSwitches,
    /// Which rules this scope runs under, as its keeper numbers them (the home: an index in
    /// the node's table of distinct rules). Two bytes in the struct's padding where a pointer
    /// to the rules beside it cost eight in every `(user, scope)` of a home: 56 bytes in all.
    /// Not part of the encoding (it is the keeper's, as the rules passed to each input are).
    rules_id: u16,
}

/// What a [`ScopeSlots`] serializes as: its lists as plain sequences, without `rules_id`.
#[derive(Serialize, Deserialize)]
#[serde(rename = "ScopeSlots")]
struct ScopeFields {
    records: Vec<SlotRecord>,
    pending: VecDeque<PendingJoin>,
    new_tabs_blocked: bool,
    unsafe_switches: UnsafeSwitches,
}

impl From<ScopeSlots> for ScopeFields {
    fn from(s: ScopeSlots) -> Self {
        let mut lists = s.lists;
        let pending = lists.pending_take_all();
        let records = lists.to_vec();
        ScopeFields { records, pending, new_tabs_blocked: s.new_tabs_blocked, unsafe_switches: s.unsafe_switches }
    }
}

impl From<ScopeFields> for ScopeSlots {
    fn from(f: ScopeFields) -> Self {
        ScopeSlots {
            lists: Lists::from_parts(f.records, f.pending),
            new_tabs_blocked: f.new_tabs_blocked,
            unsafe_switches: f.unsafe_switches,
            rules_id: 0,
        }
    }
}

/// The ablation switches of one scope: public only with the `ablation` feature.
mod switches {
    use serde::{Deserialize, Serialize};

    /// Test-only: which slot safeguards are switched off (all `false` in production).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UnsafeSwitches {
        /// Rule 6 off: a takeover grants at once, while the revoke is still on its way.
        pub grant_before_revoke: bool,
        /// Rule 7 off: a resume forgets the replaced record at once.
        pub forget_replaced: bool,
        /// Rule 7 off for grants that are not resumes: a tab granted while it is being revoked
        /// keeps its other held connections.
        pub grant_keeps_tab_elsewhere: bool,
        /// Rule 8 off: a gateway that goes unheard keeps its waiting joins here.
        pub keep_joins_of_unheard_gateways: bool,
    }
}
#[cfg(feature = "ablation")]
pub use switches::UnsafeSwitches;
#[cfg(not(feature = "ablation"))]
pub(crate) use switches::UnsafeSwitches;

/// What a join needs decided for it now.
enum Verdict {
    Grant,
    Reject(RejectReason),
    /// Wait in the queue; `victim` names a tab to revoke (takeover).
    Pend(Option<TabKey>),
}

impl ScopeSlots {
    /// An empty scope.
    pub fn new() -> Self {
        Self::default()
    }

    /// The records, in grant order.
    pub fn records(&self) -> &[SlotRecord] {
        &self.lists
    }

    /// Switch safeguards off (ablation tests only).
    #[cfg(feature = "ablation")]
    pub fn set_unsafe_switches(&mut self, switches: UnsafeSwitches) {
        self.unsafe_switches = switches;
    }

    /// Switch safeguards off (the node's ablation switches).
    #[cfg(not(feature = "ablation"))]
    pub(crate) fn set_unsafe_switches(&mut self, switches: UnsafeSwitches) {
        self.unsafe_switches = switches;
    }

    /// Which rules this scope runs under, as [`ScopeSlots::set_rules_id`] numbered them (0 if
    /// never set).
    pub(crate) fn rules_id(&self) -> u16 {
        self.rules_id
    }

    /// Number the rules this scope runs under (its keeper's numbering; this type only keeps it).
    pub(crate) fn set_rules_id(&mut self, id: u16) {
        self.rules_id = id;
    }

    /// Rule 9: block (or allow again) joins of tabs this scope does not know.
    pub fn set_new_tabs_blocked(&mut self, blocked: bool) {
        self.new_tabs_blocked = blocked;
    }

    /// Adopt a slot a gateway reported in a recovery scan. Call [`ScopeSlots::dedup_tabs`]
    /// once every answer is in.
    pub fn adopt(&mut self, conn: ConnId, tab: TabKey, token: SlotToken) {
        if !self.lists.iter().any(|r| r.conn == conn && r.token == token) {
            self.lists.push(SlotRecord::new(tab, conn, token));
            self.lists.sort_by_key(|r| r.token);
        }
    }

    /// Rule 9: a scan that finds one tab on several connections closes all but the one with
    /// the highest token; the others stay, replaced, until their close is confirmed.
    pub fn dedup_tabs(&mut self) -> Vec<SlotEffect> {
        let mut fx = Vec::new();
        let newest: Vec<(TabKey, SlotToken)> = self
            .tabs_counted()
            .into_iter()
            .filter_map(|t| self.lists.iter().filter(|r| r.counts_for(&t)).map(|r| r.token).max().map(|m| (t, m)))
            .collect();
        for r in self.lists.iter_mut().filter(|r| r.state() == SlotState::Held) {
            if newest.iter().any(|(t, m)| r.counts_for(t) && *m != r.token) {
                r.set_state(SlotState::Replaced);
                fx.push(SlotEffect::Close { conn: r.conn.clone(), token: r.token });
            }
        }
        fx
    }

    /// The connections whose joins wait here.
    pub fn waiting_conns(&self) -> impl Iterator<Item = &ConnId> {
        self.lists.pending_iter().map(|p| &p.conn)
    }

    /// The connections of every record.
    pub fn connections(&self) -> impl Iterator<Item = &ConnId> {
        self.lists.iter().map(|r| &r.conn)
    }

    /// Nothing held, reserved or waiting: the user actor may stop.
    pub fn is_idle(&self) -> bool {
        self.lists.is_empty() && self.lists.pending_is_empty()
    }

    /// How many joins wait.
    pub fn waiting(&self) -> usize {
        self.lists.pending_len()
    }

    /// The distinct tabs that count against `max_slots` now.
    pub fn tabs_counted(&self) -> Vec<TabKey> {
        let mut tabs: Vec<TabKey> = self.lists.iter().map(SlotRecord::tab).collect();
        tabs.sort();
        tabs.dedup();
        tabs
    }

    /// Whether `token` still holds a slot here (held, being revoked, or in doubt).
    pub fn holds(&self, token: SlotToken) -> bool {
        self.lists.iter().any(|r| r.token == token && matches!(r.state(), SlotState::Held | SlotState::Revoking))
    }

    /// A join from `conn` for `tab`. Exempt roles get a token and no record.
    pub fn join(
        &mut self,
        conn: ConnId,
        tab: Option<TabId>,
        role: Option<&Role>,
        rules: &SlotRules,
        mint: &mut TokenMint,
        now: Millis,
    ) -> Vec<SlotEffect> {
        let mut fx = Vec::new();
        self.join_into(conn, tab, role, rules, mint, now, &mut fx);
        fx
    }

    /// [`join`](Self::join), its effects appended to `fx` (a list the caller keeps from join to
    /// join: a node's homes decide a join per client join).
    #[allow(clippy::too_many_arguments)] // `join`'s arguments and where its effects go
    pub fn join_into(
        &mut self,
        conn: ConnId,
        tab: Option<TabId>,
        role: Option<&Role>,
        rules: &SlotRules,
        mint: &mut TokenMint,
        now: Millis,
        fx: &mut Vec<SlotEffect>,
    ) {
        let tab = TabKey::of(tab.as_ref(), &conn);
        if role.is_some_and(|r| rules.exempt_roles.contains(r)) {
            fx.push(SlotEffect::Grant { conn, tab, token: mint.next_token(), resumed: false });
            return;
        }
        // The same tab on the same socket shares its slot (another topic of a global scope).
        if let Some(r) =
            self.lists.iter().find(|r| r.conn == conn && r.counts_for(&tab) && r.state() == SlotState::Held)
        {
            fx.push(SlotEffect::Grant { conn, tab, token: r.token, resumed: false });
            return;
        }
        if self.resumable(&tab) {
            self.resume(conn, tab, mint, fx);
            return;
        }
        // A retried join that already waits here changes nothing.
        if self.lists.pending_iter().any(|p| p.conn == conn && p.tab == tab) {
            return;
        }
        // A join behind waiters queues behind them (wait is first come, first served); a
        // takeover is the newest join and supersedes an earlier pending takeover.
        if rules.on_conflict == OnConflict::Takeover {
            let superseded = self.lists.pending_iter().position(|p| p.victim.is_some());
            if let Some(i) = superseded {
                let old = self.lists.pending_remove(i).expect("index from position");
                fx.push(SlotEffect::Reject { conn: old.conn, reason: RejectReason::LoggedInElsewhere });
                let victim = old.victim;
                let deadline = now + rules.join_wait_ms;
                self.lists.pending_push_back(PendingJoin { conn, tab, deadline, victim });
                self.admit(rules, mint, fx);
                return;
            }
        }
        let pending = PendingJoin { conn, tab, deadline: now + rules.join_wait_ms, victim: None };
        if !self.lists.pending_is_empty() && rules.on_conflict == OnConflict::Wait {
            self.lists
                .pending_push_back(PendingJoin { deadline: now + rules.wait_ms.min(rules.join_wait_ms), ..pending });
            return;
        }
        self.decide(pending, rules, mint, now, fx);
    }

    /// The gateway says `conn` no longer holds `token` (left, closed, revoke or close
    /// confirmed, or it never had it). `clean: false` (an unclean drop) reserves the slot for
    /// the same tab when `reserve_ms` is set.
    pub fn released(
        &mut self,
        conn: &ConnId,
        token: SlotToken,
        clean: bool,
        rules: &SlotRules,
        mint: &mut TokenMint,
        now: Millis,
    ) -> Vec<SlotEffect> {
        let mut fx = Vec::new();
        if let Some(i) = self.lists.iter().position(|r| &r.conn == conn && r.token == token) {
            let rec = &mut self.lists[i];
            let reserve = !clean && rules.reserve_ms > 0 && rec.state() == SlotState::Held && rec.has_tab_id();
            if reserve {
                rec.set_state(SlotState::Reserved { until: now + rules.reserve_ms });
                rec.set_in_doubt_until(None);
            } else {
                self.lists.remove(i);
            }
        }
        // A pending join from this connection is void too.
        self.lists.pending_retain(|p| &p.conn != conn);
        self.admit(rules, mint, &mut fx);
        fx
    }

    /// The home can no longer hear `gateway`: its records are in doubt until `until`, and its
    /// waiting joins are dropped (rule 8). A grant to a join of a gateway that is dead would
    /// make a record that nobody confirms and, made after this call, nothing puts in doubt;
    /// a gateway that lives asks again.
    pub fn gateway_unheard(&mut self, gateway: &Incarnation, until: Millis) {
        for r in self.lists.iter_mut().filter(|r| &r.conn.gateway == gateway) {
            if !r.is_reserved() {
                r.set_in_doubt_until(Some(r.in_doubt_until().map_or(until, |u| u.max(until))));
            }
        }
        if !self.unsafe_switches.keep_joins_of_unheard_gateways {
            self.lists.pending_retain(|p| &p.conn.gateway != gateway);
        }
    }

    /// Rule 16: `gateway` said goodbye after releasing everything, so its records (a release
    /// lost on the way) are freed at the next tick at `now`, not kept in doubt; its waiting
    /// joins are dropped. Reservations stay: they belong to the tab, not the connection.
    pub fn gateway_departed(&mut self, gateway: &Incarnation, now: Millis) {
        for r in self.lists.iter_mut().filter(|r| &r.conn.gateway == gateway) {
            if !r.is_reserved() {
                r.set_in_doubt_until(Some(now));
            }
        }
        self.lists.pending_retain(|p| &p.conn.gateway != gateway);
    }

    /// The home hears `gateway` again (the same incarnation): its records are no longer in doubt.
    pub fn gateway_heard(&mut self, gateway: &Incarnation) {
        for r in self.lists.iter_mut().filter(|r| &r.conn.gateway == gateway) {
            r.set_in_doubt_until(None);
        }
    }

    /// Revoke every slot of this scope (a kick), then admit whoever waits.
    pub fn kick(&mut self, reason: &str) -> Vec<SlotEffect> {
        let mut fx = Vec::new();
        self.lists.retain(|r| !r.is_reserved());
        for r in self.lists.iter_mut().filter(|r| r.state() == SlotState::Held) {
            r.set_state(SlotState::Revoking);
            fx.push(SlotEffect::Revoke {
                conn: r.conn.clone(),
                token: r.token,
                reason: RevokeReason::Kicked(reason.into()),
            });
        }
        fx
    }

    /// Time passes: reservations lapse, in-doubt records clear, waits time out.
    pub fn tick(&mut self, rules: &SlotRules, mint: &mut TokenMint, now: Millis) -> Vec<SlotEffect> {
        let mut fx = Vec::new();
        self.lists.retain(|r| {
            let lapsed = matches!(r.state(), SlotState::Reserved { until } if until <= now)
                || r.in_doubt_until().is_some_and(|u| u <= now);
            if lapsed {
                fx.push(SlotEffect::Freed { conn: r.conn.clone(), token: r.token });
            }
            !lapsed
        });
        self.admit(rules, mint, &mut fx);
        let (late, kept): (Vec<_>, Vec<_>) = self.lists.pending_take_all().into_iter().partition(|p| p.deadline <= now);
        self.lists.pending_set(kept.into());
        for p in late {
            fx.push(SlotEffect::Reject { conn: p.conn, reason: RejectReason::WaitTimedOut });
        }
        fx
    }

    /// The earliest instant at which [`ScopeSlots::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        let records = self.lists.iter().filter_map(|r| match r.state() {
            SlotState::Reserved { until } => Some(until),
            _ => r.in_doubt_until(),
        });
        records.chain(self.lists.pending_iter().map(|p| p.deadline)).min()
    }

    /// A tab that holds here may come back on another socket: everything but a tab being
    /// revoked (it is no longer the current holder; it joins like anyone else).
    fn resumable(&self, tab: &TabKey) -> bool {
        let mut of_tab = self.lists.iter().filter(|r| r.counts_for(tab)).peekable();
        of_tab.peek().is_some() && of_tab.all(|r| r.state() != SlotState::Revoking)
    }

    /// Rule 7: grant at once, tell the old connections to close, keep them as replaced.
    fn resume(&mut self, conn: ConnId, tab: TabKey, mint: &mut TokenMint, fx: &mut Vec<SlotEffect>) {
        self.replace_tab_elsewhere(&tab, fx);
        self.grant_as(conn, tab, true, mint, fx);
    }

    /// Rule 7: `tab` is granted on another connection now. Its reservation goes, and its
    /// held connections are told to close and stay as replaced until they confirm; records
    /// being revoked stay as they are. Returns whether any connection was replaced.
    fn replace_tab_elsewhere(&mut self, tab: &TabKey, fx: &mut Vec<SlotEffect>) -> bool {
        self.lists.retain(|r| !(r.counts_for(tab) && r.is_reserved()));
        let mut replaced = false;
        for r in self.lists.iter_mut().filter(|r| r.counts_for(tab) && r.state() == SlotState::Held) {
            r.set_state(SlotState::Replaced);
            fx.push(SlotEffect::Close { conn: r.conn.clone(), token: r.token });
            replaced = true;
        }
        if self.unsafe_switches.forget_replaced {
            self.lists.retain(|r| !(r.counts_for(tab) && r.state() == SlotState::Replaced));
        }
        replaced
    }

    fn verdict(&self, tab: &TabKey, rules: &SlotRules) -> Verdict {
        let tabs = self.tabs_counted();
        if tabs.contains(tab) {
            return Verdict::Grant;
        }
        if self.new_tabs_blocked {
            return Verdict::Pend(None);
        }
        if tabs.len() < rules.max_slots as usize {
            return Verdict::Grant;
        }
        // Every slot is taken. The oldest tab is the one a takeover would revoke.
        let oldest = self.lists.iter().min_by_key(|r| r.token).map(SlotRecord::tab).expect("slots are taken");
        let of_oldest = || self.lists.iter().filter(|r| r.counts_for(&oldest));
        let in_doubt = of_oldest().any(|r| r.in_doubt_until().is_some());
        match rules.on_conflict {
            // Rule 8: what cannot be reached is neither taken over nor a reason to reject.
            _ if in_doubt => Verdict::Pend(None),
            OnConflict::Reject => Verdict::Reject(RejectReason::AlreadyJoined),
            OnConflict::Wait => Verdict::Pend(None),
            OnConflict::Takeover => Verdict::Pend(Some(oldest)),
        }
    }

    /// Decide a join now: grant, reject, or queue (revoking a victim first for a takeover).
    fn decide(
        &mut self,
        mut p: PendingJoin,
        rules: &SlotRules,
        mint: &mut TokenMint,
        now: Millis,
        fx: &mut Vec<SlotEffect>,
    ) {
        match self.verdict(&p.tab, rules) {
            Verdict::Grant => self.grant(p.conn, p.tab, mint, fx),
            Verdict::Reject(reason) => fx.push(SlotEffect::Reject { conn: p.conn, reason }),
            Verdict::Pend(victim) => {
                if rules.on_conflict == OnConflict::Wait && victim.is_none() {
                    p.deadline = now + rules.wait_ms.min(rules.join_wait_ms);
                }
                if let Some(v) = &victim {
                    self.revoke_tab(v, fx);
                    if self.tabs_counted().len() < rules.max_slots as usize {
                        // The victim held only a reservation: nothing to wait for.
                        self.grant(p.conn, p.tab, mint, fx);
                        return;
                    }
                }
                p.victim = victim;
                self.lists.pending_push_back(p);
            }
        }
    }

    /// Revoke every record of `tab`; a reservation simply goes (no connection to tell).
    fn revoke_tab(&mut self, tab: &TabKey, fx: &mut Vec<SlotEffect>) {
        self.lists.retain(|r| !(r.counts_for(tab) && r.is_reserved()));
        for r in self.lists.iter_mut().filter(|r| r.counts_for(tab) && r.state() == SlotState::Held) {
            r.set_state(SlotState::Revoking);
            fx.push(SlotEffect::Revoke {
                conn: r.conn.clone(),
                token: r.token,
                reason: RevokeReason::LoggedInElsewhere,
            });
        }
        if self.unsafe_switches.grant_before_revoke {
            // Ablation of rule 6: forget the victim at once, so the newcomer is granted while
            // the revoke is still on its way.
            self.lists.retain(|r| !r.counts_for(tab));
        }
    }

    /// Grant a join that is not a resume. The tab may still count (it is being revoked, so it
    /// was not resumed, yet it holds its place): its other held connections are replaced as
    /// in a resume (rule 7), or one tab would live on two connections with nothing to close
    /// either (seed 1522 of the `fence_stale_epochs` search).
    fn grant(&mut self, conn: ConnId, tab: TabKey, mint: &mut TokenMint, fx: &mut Vec<SlotEffect>) {
        let resumed = !self.unsafe_switches.grant_keeps_tab_elsewhere && self.replace_tab_elsewhere(&tab, fx);
        self.grant_as(conn, tab, resumed, mint, fx);
    }

    /// Record a new holder with the next token and tell it (a fresh grant, or a resume).
    fn grant_as(&mut self, conn: ConnId, tab: TabKey, resumed: bool, mint: &mut TokenMint, fx: &mut Vec<SlotEffect>) {
        let token = mint.next_token();
        // Nearly every scope holds one record, kept in place (`slot_lists.rs`).
        self.lists.push(SlotRecord::new(tab.clone(), conn.clone(), token));
        fx.push(SlotEffect::Grant { conn, tab, token, resumed });
    }

    /// Admit waiting joins in order while slots are free.
    fn admit(&mut self, rules: &SlotRules, mint: &mut TokenMint, fx: &mut Vec<SlotEffect>) {
        while let Some(p) = self.lists.pending_front() {
            if self.resumable(&p.tab) {
                let p = self.lists.pending_pop_front().expect("front exists");
                self.resume(p.conn, p.tab, mint, fx);
                continue;
            }
            let victim_gone = p.victim.as_ref().is_some_and(|v| !self.lists.iter().any(|r| r.counts_for(v)));
            match self.verdict(&p.tab, rules) {
                Verdict::Grant => {
                    let p = self.lists.pending_pop_front().expect("front exists");
                    self.grant(p.conn, p.tab, mint, fx);
                }
                // A takeover whose victim is still there keeps waiting for its confirmation;
                // once the victim is gone, or for any other waiter, re-decide (which may revoke
                // the next oldest tab for a takeover).
                Verdict::Pend(_) if p.victim.is_some() && !victim_gone => break,
                Verdict::Pend(Some(v)) if p.victim.is_none() || victim_gone => {
                    let mut p = self.lists.pending_pop_front().expect("front exists");
                    self.revoke_tab(&v, fx);
                    if self.tabs_counted().len() < rules.max_slots as usize {
                        self.grant(p.conn, p.tab, mint, fx);
                        continue;
                    }
                    p.victim = Some(v);
                    self.lists.pending_push_front(p);
                    break;
                }
                Verdict::Pend(_) => break,
                Verdict::Reject(reason) => {
                    let p = self.lists.pending_pop_front().expect("front exists");
                    fx.push(SlotEffect::Reject { conn: p.conn, reason });
                }
            }
        }
    }
}

/// One session at a time (what a user actor's `kick` does).
impl ScopeSlots {
    /// Revoke the slot of one connection (a kick of one session): a held record is revoked
    /// (it counts until its gateway confirms, then whoever waits is admitted), a reservation
    /// goes at once. Other connections keep theirs.
    pub fn kick_conn(&mut self, conn: &ConnId, reason: &str) -> Vec<SlotEffect> {
        let mut fx = Vec::new();
        self.lists.retain(|r| !(&r.conn == conn && r.is_reserved()));
        for r in self.lists.iter_mut().filter(|r| &r.conn == conn && r.state() == SlotState::Held) {
            r.set_state(SlotState::Revoking);
            fx.push(SlotEffect::Revoke {
                conn: r.conn.clone(),
                token: r.token,
                reason: RevokeReason::Kicked(reason.into()),
            });
        }
        fx
    }
}

#[cfg(test)]
#[path = "slot_tests.rs"]
mod tests;
