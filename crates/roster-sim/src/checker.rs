//! The checker: P1 and the lease invariants, judged from the nodes' records alone.
//!
//! A run leaves a [`History`]: every [`Record`] each node emitted, with its times already
//! mapped from the node's clock to global time, plus what the simulation knows about the
//! world (when each incarnation started and died, when nodes were in trouble, every client
//! join and its outcome). [`check`] rebuilds from it
//! - every *holding interval* (DESIGN.md, "P1, precisely"): a connection holds a scope's slot
//!   from its `Accepted` until the first of its `Ended` and its validity horizon, where the
//!   horizon is the latest one recorded (so a crashed gateway's slots hold until their
//!   horizon);
//! - every *lease span*: a node holds a partition from a `LeaseHeld` until its `until`
//!   (renewals extend it), a `LeaseDropped`, or the incarnation's end;
//!
//! and reports every [`Violation`] of: at most `max_slots` distinct tabs hold per
//! `(user, scope)` at any instant; at most one node holds a partition's lease at any instant;
//! successive holders' epochs strictly increase; no two connections were granted one token;
//! no horizon was extended after it had passed. It also measures the liveness [`Figures`].
//!
//! Intervals are half-open, `[start, end)`: a slot freed at `t` and another granted at `t`
//! do not overlap.

use roster_core::Record;
use roster_core::TabKey;
use roster_core::{partition_of, Config, PartitionId, PolicyId, Scope, ScopeKey};
use roster_core::{ConnId, Incarnation, Millis, NodeName, PhxRef, SlotToken, SocketId, TabId, Topic, UserId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One record of one node incarnation, every time in it mapped to global milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// The incarnation that emitted it.
    pub node: Incarnation,
    /// The record, with `at`, `horizon` and `until` in global time.
    pub record: Record,
}

/// How an incarnation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifeEnd {
    /// Killed: nothing after this instant, its slots hold until their horizons.
    Crashed,
    /// Graceful shutdown (`Input::Shutdown`), then the process exited.
    ShutDown,
}

/// One incarnation's life, in global time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Life {
    /// The incarnation.
    pub incarnation: Incarnation,
    /// When it booted.
    pub started: Millis,
    /// When and how it ended, if it did.
    pub ended: Option<(Millis, LifeEnd)>,
}

/// A time a node could not take part normally (down, paused, or with a cut link). Used only
/// to tell which slot losses were expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trouble {
    /// The node.
    pub node: NodeName,
    /// From.
    pub from: Millis,
    /// Until (the run's end if it never healed).
    pub until: Millis,
    /// What happened (`down`, `paused`, `cut`).
    pub what: &'static str,
}

/// What kind of join a client made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum JoinKind {
    /// A tab id that held no slot just before (a new tab or a takeover).
    NewTab,
    /// A tab id seen before, on a new socket (a reconnect or refresh).
    Resume,
    /// Another topic on an already joined socket.
    SameSocket,
    /// An anonymous viewer.
    Anonymous,
}

/// How a client's join ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The client was told it joined.
    Joined,
    /// The client was told the join failed, with the reason.
    Failed(String),
    /// The client went away (socket closed, gateway died) before an answer.
    Gone,
}

/// One client join and what came of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinLog {
    /// When the gateway got it (global).
    pub at: Millis,
    /// The gateway incarnation.
    pub gateway: Incarnation,
    /// The socket.
    pub socket: SocketId,
    /// The user (`None`: anonymous).
    pub user: Option<UserId>,
    /// The tab.
    pub tab: Option<TabId>,
    /// The topic.
    pub topic: Topic,
    /// What kind of join it was.
    pub kind: JoinKind,
    /// When and how it was answered, if it was.
    pub outcome: Option<(Millis, JoinOutcome)>,
}

/// Everything a run leaves for the checker, in global time.
#[derive(Clone, Debug)]
pub struct History {
    /// The cluster configuration of the run.
    pub config: Config,
    /// Every record of every node, in the order they were emitted.
    pub records: Vec<NodeRecord>,
    /// Every incarnation of every node.
    pub lives: Vec<Life>,
    /// When nodes were down, paused or cut off.
    pub troubles: Vec<Trouble>,
    /// Every client join.
    pub joins: Vec<JoinLog>,
    /// The run's last instant.
    pub end: Millis,
}

impl History {
    /// An empty history for `config`.
    pub fn new(config: Config) -> Self {
        Self { config, records: Vec::new(), lives: Vec::new(), troubles: Vec::new(), joins: Vec::new(), end: 0 }
    }
}

/// One connection's hold on one scope's slot, rebuilt from the records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldInterval {
    /// The user.
    pub user: UserId,
    /// The scope.
    pub scope: ScopeKey,
    /// The connection.
    pub conn: ConnId,
    /// Its tab.
    pub tab: TabKey,
    /// Its token (the latest accepted).
    pub token: SlotToken,
    /// Held from (global).
    pub start: Millis,
    /// Held until, exclusive (global).
    pub end: Millis,
    /// What ended it: an `Ended` reason, `horizon`, or `horizon (gateway gone)`.
    pub ended_by: String,
    /// Every epoch of its partition it was attached to, with the instant: its token's at
    /// `start`, then each re-attachment by a scan answered (`Reattached`) or a grant of a newer
    /// epoch accepted again, in order.
    pub attached: Vec<(u64, Millis)>,
}

impl fmt::Display for HeldInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tab {} token {} held [{}, {}) ended by {}",
            self.conn,
            tab_name(&self.tab),
            self.token,
            self.start,
            self.end,
            self.ended_by
        )
    }
}

/// A tab key as a short string: the tab id, or `conn:<conn>` for a join without one.
pub fn tab_name(tab: &TabKey) -> String {
    match tab {
        TabKey::Tab(t) => t.to_string(),
        TabKey::Conn(c) => format!("conn:{c}"),
    }
}

/// One node's continuous hold on a partition's lease at one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSpan {
    /// The holder.
    pub node: Incarnation,
    /// The partition.
    pub partition: PartitionId,
    /// The epoch.
    pub epoch: u64,
    /// From (global).
    pub start: Millis,
    /// Until, exclusive (global).
    pub end: Millis,
}

impl fmt::Display for LeaseSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} holds {} epoch {} [{}, {})", self.node, self.partition, self.epoch, self.start, self.end)
    }
}

/// A broken promise, with what a reader needs to find it in the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// P1: more distinct tabs held a `(user, scope)` at `at` than `max_slots` allows.
    SingleSlot {
        /// The user.
        user: UserId,
        /// The scope.
        scope: ScopeKey,
        /// The first instant of the overlap.
        at: Millis,
        /// The limit.
        max_slots: u32,
        /// Every interval holding at `at`.
        holders: Vec<HeldInterval>,
    },
    /// P1, precisely: two connections of one tab held for longer than a resume can take
    /// ([`duplicate_tab_allowed_until`]): the older one should have been closed (rule 7, rule 9's
    /// duplicate-tab clean-up) or have passed its horizon.
    StaleDuplicateTab {
        /// The user.
        user: UserId,
        /// The scope.
        scope: ScopeKey,
        /// The older connection's interval.
        older: HeldInterval,
        /// The newer connection's interval.
        newer: HeldInterval,
        /// How long both held.
        overlap_ms: Millis,
        /// The bound it exceeded.
        bound_ms: Millis,
    },
    /// Two incarnations held one partition's lease at once.
    TwoLeaseHolders {
        /// The partition.
        partition: PartitionId,
        /// The first instant of the overlap.
        at: Millis,
        /// The earlier holder.
        first: LeaseSpan,
        /// The later holder.
        second: LeaseSpan,
    },
    /// A later lease on a partition did not carry a larger epoch than the one before it.
    EpochNotIncreasing {
        /// The partition.
        partition: PartitionId,
        /// The earlier lease.
        before: LeaseSpan,
        /// The later lease.
        after: LeaseSpan,
    },
    /// Two connections of one `(user, scope)` accepted a grant with the same token.
    DuplicateToken {
        /// The token.
        token: SlotToken,
        /// The first connection that accepted it.
        first: HeldInterval,
        /// Another one.
        second: HeldInterval,
    },
    /// A slot's horizon was moved after it had passed (rule 5: a node revokes expired slots
    /// before any other action), which would revive a slot another tab may hold by now.
    RevivedAfterHorizon {
        /// The connection.
        conn: ConnId,
        /// The scope.
        scope: ScopeKey,
        /// The horizon that had passed (global).
        horizon: Millis,
        /// When it was moved (global).
        at: Millis,
    },
    /// P5: a client's join was never answered, although its socket stayed open and every
    /// wait is bounded by `join_wait_ms`.
    UnansweredJoin {
        /// The join.
        join: JoinLog,
        /// When the run ended.
        end: Millis,
    },
    /// Two live nodes show different presence lists after the quiet period (P4).
    PresenceDiverged {
        /// One node.
        a: Incarnation,
        /// Another.
        b: Incarnation,
        /// The topic.
        topic: Topic,
        /// Entries `(key, phx_ref, origin node)` only `a` shows.
        only_a: Vec<(String, PhxRef, NodeName)>,
        /// Entries only `b` shows.
        only_b: Vec<(String, PhxRef, NodeName)>,
    },
    /// After the quiet period a live node shows the presence of a connection that is over
    /// (P3: its socket closed, its channel ended, or its gateway died).
    GhostPresence {
        /// The node showing it.
        node: Incarnation,
        /// The topic.
        topic: Topic,
        /// The connection.
        conn: ConnId,
        /// Why it should be gone.
        why: String,
    },
    /// After the quiet period a live node does not show a joined connection of a live
    /// gateway (P5: an acknowledged join stays visible).
    MissingPresence {
        /// The node not showing it.
        node: Incarnation,
        /// The topic.
        topic: Topic,
        /// The connection.
        conn: ConnId,
    },
    /// After the quiet period a live gateway keeps more (or fewer) sockets than its clients
    /// have open: state of closed sockets leaked.
    SocketsLeaked {
        /// The gateway.
        node: Incarnation,
        /// Sockets it keeps.
        kept: usize,
        /// Sockets its clients have open.
        open: usize,
    },
    /// A user actor rule broke: two activations at once, tokens not growing, an activation
    /// outside its lease, a state handed over by the wrong activation (`activations.rs`).
    Activation(super::activations::ActivationViolation),
    /// Rule 5: a gateway acted (emitted a record other than a slot's end) more than
    /// [`HORIZON_SLACK_MS`] after a slot's horizon had passed while it still held that slot: it
    /// did not revoke the slot before its first action past the horizon.
    HeldPastHorizon {
        /// The connection.
        conn: ConnId,
        /// The scope.
        scope: ScopeKey,
        /// The slot's horizon (global).
        horizon: Millis,
        /// When the gateway acted while still holding it (global).
        at: Millis,
    },
    /// A home answered a validation `true` that the records contradict: it held no valid
    /// lease on the user's partition at that epoch, or the token's tab together with the
    /// tabs holding the scope's slot at that instant are more than `max_slots` (a third
    /// party trusting the answer would see P1 broken).
    WrongValidation {
        /// The answering node.
        node: Incarnation,
        /// The user.
        user: UserId,
        /// The scope.
        scope: ScopeKey,
        /// The token it said holds.
        token: SlotToken,
        /// When it answered.
        at: Millis,
        /// What the records say.
        why: String,
    },
    /// A broadcast broke its promise (see `docs/testing.md`): a copy, a reversal of one
    /// sender's order, a subscriber or node it should have reached and did not, or a peer the
    /// core did not send it to.
    Broadcast {
        /// When.
        at: Millis,
        /// What happened.
        what: String,
    },
}

impl Violation {
    /// A short name of the kind of violation (`P1`, `two-homes`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::SingleSlot { .. } => "P1",
            Violation::StaleDuplicateTab { .. } => "P1-duplicate-tab",
            Violation::TwoLeaseHolders { .. } => "two-homes",
            Violation::EpochNotIncreasing { .. } => "epoch-order",
            Violation::DuplicateToken { .. } => "duplicate-token",
            Violation::RevivedAfterHorizon { .. } => "revived-slot",
            Violation::UnansweredJoin { .. } => "P5-unanswered-join",
            Violation::PresenceDiverged { .. } => "P4-presence-diverged",
            Violation::GhostPresence { .. } => "P3-ghost-presence",
            Violation::MissingPresence { .. } => "P5-missing-presence",
            Violation::SocketsLeaked { .. } => "leak-sockets",
            Violation::Activation(v) => v.kind(),
            Violation::WrongValidation { .. } => "validate",
            Violation::HeldPastHorizon { .. } => "rule5-held-past-horizon",
            Violation::Broadcast { .. } => "broadcast",
        }
    }

    /// Whether it breaks P1 as DESIGN.md states it ("P1, precisely"): too many tabs, one tab
    /// on two connections beyond a resume, or two lease holders at once.
    pub fn is_p1(&self) -> bool {
        matches!(
            self,
            Violation::SingleSlot { .. } | Violation::StaleDuplicateTab { .. } | Violation::TwoLeaseHolders { .. }
        )
    }

    /// The global instant the violation is first visible at (for ordering and traces).
    pub fn at(&self) -> Millis {
        match self {
            Violation::SingleSlot { at, .. } | Violation::TwoLeaseHolders { at, .. } => *at,
            Violation::StaleDuplicateTab { newer, bound_ms, .. } => newer.start + bound_ms,
            Violation::EpochNotIncreasing { after, .. } => after.start,
            Violation::DuplicateToken { second, .. } => second.start,
            Violation::RevivedAfterHorizon { at, .. } => *at,
            Violation::UnansweredJoin { join, .. } => join.at,
            Violation::Activation(v) => v.at(),
            Violation::WrongValidation { at, .. }
            | Violation::Broadcast { at, .. }
            | Violation::HeldPastHorizon { at, .. } => *at,
            Violation::PresenceDiverged { .. }
            | Violation::GhostPresence { .. }
            | Violation::MissingPresence { .. }
            | Violation::SocketsLeaked { .. } => Millis::MAX,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::SingleSlot { user, scope, at, max_slots, holders } => {
                let overlap_end = holders.iter().map(|h| h.end).min().unwrap_or(*at);
                writeln!(
                    f,
                    "P1: user {user} scope {scope}: {} tabs hold at t={at} (max_slots {max_slots}), for {} ms:",
                    holders.iter().map(|h| &h.tab).collect::<BTreeSet<_>>().len(),
                    overlap_end.saturating_sub(*at)
                )?;
                for h in holders {
                    writeln!(f, "  {h}")?;
                }
                Ok(())
            }
            Violation::StaleDuplicateTab { user, scope, older, newer, overlap_ms, bound_ms } => {
                write!(
                    f,
                    "P1 (one tab, two connections): user {user} scope {scope}: both held for {overlap_ms} ms \
                     (a resume may take {bound_ms} ms here):\n  {older}\n  {newer}"
                )
            }
            Violation::TwoLeaseHolders { partition, at, first, second } => {
                write!(f, "two homes for {partition} at t={at}:\n  {first}\n  {second}")
            }
            Violation::EpochNotIncreasing { partition, before, after } => {
                write!(f, "epochs of {partition} do not increase:\n  {before}\n  {after}")
            }
            Violation::DuplicateToken { token, first, second } => {
                write!(f, "token {token} accepted twice:\n  {first}\n  {second}")
            }
            Violation::RevivedAfterHorizon { conn, scope, horizon, at } => {
                write!(f, "slot of {conn} in {scope} had its horizon {horizon} moved at t={at}, after it passed")
            }
            Violation::UnansweredJoin { join, end } => write!(
                f,
                "P5: join of {} tab {} to {} on {}/{} at t={} never answered (run ended at {end})",
                join.user.as_ref().map_or("anonymous", |u| u.as_str()),
                join.tab.as_ref().map_or("-", |t| t.as_str()),
                join.topic,
                join.gateway,
                join.socket,
                join.at
            ),
            Violation::PresenceDiverged { a, b, topic, only_a, only_b } => {
                write!(f, "presence of {topic} differs: only on {a}: {only_a:?}; only on {b}: {only_b:?}")
            }
            Violation::GhostPresence { node, topic, conn, why } => {
                write!(f, "P3: {node} still shows {conn} in {topic} after the quiet period ({why})")
            }
            Violation::MissingPresence { node, topic, conn } => {
                write!(f, "P5: {node} does not show joined {conn} in {topic} after the quiet period")
            }
            Violation::SocketsLeaked { node, kept, open } => {
                write!(f, "leak: {node} keeps {kept} sockets after the quiet period, its clients have {open} open")
            }
            Violation::Activation(v) => write!(f, "{v}"),
            Violation::WrongValidation { node, user, scope, token, at, why } => {
                write!(
                    f,
                    "validate: {node} answered at t={at} that token {token} holds {user}'s slot in {scope}: {why}"
                )
            }
            Violation::Broadcast { at, what } => write!(f, "broadcast at t={at}: {what}"),
            Violation::HeldPastHorizon { conn, scope, horizon, at } => write!(
                f,
                "rule 5: {conn} still held its slot in {scope} when its gateway acted at t={at}, past its horizon {horizon}"
            ),
        }
    }
}

/// Liveness measurements of one or many runs. Reported, not asserted (DESIGN.md: no speed
/// assertions in tests), except where an ablation needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Runs measured.
    pub runs: u64,
    /// Grants accepted by gateways.
    pub grants: u64,
    /// Joins answered `Joined`.
    pub joins_ok: u64,
    /// Joins answered with an error, by reason.
    pub joins_failed: BTreeMap<String, u64>,
    /// Joins whose client went away before an answer (socket closed, tab reconnected
    /// elsewhere, gateway died).
    pub joins_gone: u64,
    /// Joins still waiting when the run ended.
    pub joins_unanswered: u64,
    /// Wait of each signed-in join that succeeded, from join to `Joined` (ms).
    pub join_wait_ms: Vec<Millis>,
    /// Wait of new tabs joining within 1 s after their home was killed (ms).
    pub new_tab_wait_after_home_death_ms: Vec<Millis>,
    /// Wait of resumes joining within 1 s after their home was killed (ms).
    pub resume_wait_after_home_death_ms: Vec<Millis>,
    /// Joins after a home's death that failed instead.
    pub failed_after_home_death: u64,
    /// Slots revoked with `node_isolated`.
    pub isolated: u64,
    /// Of those, revocations on a gateway that was healthy (up, not paused, no cut link)
    /// while a majority of nodes was healthy too: a live connection lost its slot.
    pub isolated_healthy_gateway: u64,
    /// For slots of a killed gateway: from the kill to their horizon (ms).
    pub killed_gateway_slot_free_ms: Vec<Millis>,
    /// After the quiet period, how much longer presence took to converge (ms; 0 when it
    /// already had; 3000 when it never did).
    pub presence_extra_ms: Vec<Millis>,
    /// Validations a home answered, `true` (each judged) and `false`.
    pub validations: [u64; 2],
    /// Broadcasts sent, and deliveries of them to one subscriber (the simulation's count).
    pub broadcasts: [u64; 2],
    /// Two connections of one tab that both held for longer than [`resume_overlap_bound_ms`],
    /// within what a new home taking the older one on allows
    /// ([`duplicate_tab_allowed_until`]): how long both held (ms).
    pub one_tab_overlap_after_new_home_ms: Vec<Millis>,
    /// For each of those, the allowance minus the overlap (ms).
    pub one_tab_overlap_margin_ms: Vec<Millis>,
}

/// Percentile `p` (0–100) of unsorted samples, or `None` if empty.
pub fn percentile(samples: &[Millis], p: u32) -> Option<Millis> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let rank = ((u64::from(p.min(100)) * (s.len() as u64 - 1)) as f64 / 100.0).round() as usize;
    Some(s[rank])
}

fn describe(samples: &[Millis]) -> String {
    match (percentile(samples, 50), percentile(samples, 90), percentile(samples, 100)) {
        (Some(p50), Some(p90), Some(max)) => format!("n={} p50={p50} p90={p90} max={max}", samples.len()),
        _ => "n=0".to_owned(),
    }
}

impl Figures {
    /// Add another run's (or batch's) figures to these.
    pub fn merge(&mut self, other: &Figures) {
        self.runs += other.runs;
        self.grants += other.grants;
        self.joins_ok += other.joins_ok;
        for (reason, n) in &other.joins_failed {
            *self.joins_failed.entry(reason.clone()).or_default() += n;
        }
        self.joins_gone += other.joins_gone;
        self.joins_unanswered += other.joins_unanswered;
        self.join_wait_ms.extend_from_slice(&other.join_wait_ms);
        self.new_tab_wait_after_home_death_ms.extend_from_slice(&other.new_tab_wait_after_home_death_ms);
        self.resume_wait_after_home_death_ms.extend_from_slice(&other.resume_wait_after_home_death_ms);
        self.failed_after_home_death += other.failed_after_home_death;
        self.isolated += other.isolated;
        self.isolated_healthy_gateway += other.isolated_healthy_gateway;
        self.killed_gateway_slot_free_ms.extend_from_slice(&other.killed_gateway_slot_free_ms);
        self.presence_extra_ms.extend_from_slice(&other.presence_extra_ms);
        for k in 0..2 {
            self.validations[k] += other.validations[k];
            self.broadcasts[k] += other.broadcasts[k];
        }
        self.one_tab_overlap_after_new_home_ms.extend_from_slice(&other.one_tab_overlap_after_new_home_ms);
        self.one_tab_overlap_margin_ms.extend_from_slice(&other.one_tab_overlap_margin_ms);
    }

    /// A multi-line human summary.
    pub fn summary(&self) -> String {
        format!(
            "runs {}; grants {}; joins ok {}, failed {:?}, client gone first {}, pending at the end {}\n\
             join wait (ms): {}\n\
             new tab wait after its home was killed (ms): {}\n\
             resume wait after its home was killed (ms): {}\n\
             joins failed after a home was killed: {}\n\
             node_isolated revocations: {} (healthy gateway and majority: {})\n\
             killed gateway's slots held after the kill (ms): {}\n\
             presence convergence after the quiet period, extra wait (ms): {}\n\
             validations answered by a home: {} true (judged), {} false; broadcasts: {} sent, {} deliveries\n\
             one tab on two connections past the resume bound, after a new home took the older one on (ms): {}; \
             below the allowance by (ms): {}",
            self.runs,
            self.grants,
            self.joins_ok,
            self.joins_failed,
            self.joins_gone,
            self.joins_unanswered,
            describe(&self.join_wait_ms),
            describe(&self.new_tab_wait_after_home_death_ms),
            describe(&self.resume_wait_after_home_death_ms),
            self.failed_after_home_death,
            self.isolated,
            self.isolated_healthy_gateway,
            describe(&self.killed_gateway_slot_free_ms),
            describe(&self.presence_extra_ms),
            self.validations[0],
            self.validations[1],
            self.broadcasts[0],
            self.broadcasts[1],
            describe(&self.one_tab_overlap_after_new_home_ms),
            describe(&self.one_tab_overlap_margin_ms),
        )
    }
}

/// The checker's findings for one history.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Every violation found, earliest first.
    pub violations: Vec<Violation>,
    /// Liveness figures.
    pub figures: Figures,
    /// The holding intervals rebuilt.
    pub intervals: Vec<HeldInterval>,
    /// The lease spans rebuilt.
    pub leases: Vec<LeaseSpan>,
}

impl Verdict {
    /// No violation.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Check a whole history: P1, leases, epochs, tokens, horizons; and measure the figures.
pub fn check(history: &History) -> Verdict {
    let (intervals, mut violations) = holding_intervals(history);
    let leases = lease_spans(history);
    violations.extend(check_single_slot(&intervals, &history.config));
    violations.extend(check_duplicate_tabs(&intervals, &history.config));
    violations.extend(check_leases(&leases));
    violations.extend(check_tokens(&intervals));
    violations.extend(super::activations::check_activations(history).into_iter().map(Violation::Activation));
    violations.extend(check_validations(history, &intervals, &leases));
    violations.sort_by_key(Violation::at);
    let figures = measure(history, &intervals, &leases);
    Verdict { violations, figures, intervals, leases }
}

/// Rounding of clock conversions: a horizon moved within this many ms after it passed is
/// taken as moved in time.
const ROUNDING_MS: Millis = 1;

/// How long after a slot's horizon its gateway may still act before the checker requires the
/// slot's end to come first (rule 5): the rounding of clock conversions and of real nodes'
/// record logs (written in Unix milliseconds).
pub const HORIZON_SLACK_MS: Millis = 5;

struct Open {
    user: UserId,
    tab: TabKey,
    token: SlotToken,
    start: Millis,
    horizon: Millis,
    /// The attachment `(partition, epoch)` whose horizons apply to it.
    partition: PartitionId,
    epoch: u64,
    /// Every attachment so far, with its instant ([`HeldInterval::attached`]).
    attached: Vec<(u64, Millis)>,
}

/// Rebuild every holding interval from the records; also returns the horizon revivals seen.
///
/// A slot is attached to `(partition, epoch)` of its gateway: the epoch of its token at
/// `Accepted`, then the epoch of every `Reattached` that covers it. A `Horizon` record of
/// that gateway for its attachment moves its horizon (never back). It holds from `Accepted`
/// until the first of its `Ended` and its horizon.
pub fn holding_intervals(history: &History) -> (Vec<HeldInterval>, Vec<Violation>) {
    let mut open: BTreeMap<(ConnId, ScopeKey), Open> = BTreeMap::new();
    let mut done = Vec::new();
    let mut violations = Vec::new();
    let close = |key: (ConnId, ScopeKey), o: Open, end: Millis, why: String, done: &mut Vec<HeldInterval>| {
        done.push(HeldInterval {
            user: o.user,
            scope: key.1,
            conn: key.0,
            tab: o.tab,
            token: o.token,
            start: o.start,
            end: end.max(o.start),
            ended_by: why,
            attached: o.attached,
        });
    };
    // Rule 5 is judged only where it applies: a cluster of one node keeps its slots (rule 12).
    let judge_rule_5 = history.config.cluster.nodes.len() > 1;
    for NodeRecord { node, record } in &history.records {
        if judge_rule_5 && !matches!(record, Record::Ended { .. }) {
            // A gateway's first action past a slot's horizon revokes it (its `Ended` comes
            // first): any other record of that gateway while the slot is open is late.
            let at = record.at();
            // A horizon moved for the slot's own attachment is judged as a revival below.
            let own_attachment = |o: &Open| matches!(record, Record::Horizon { partition, epoch, .. } if *partition == o.partition && *epoch == o.epoch);
            let late: Vec<(ConnId, ScopeKey)> = open
                .iter()
                .filter(|((c, _), o)| &c.gateway == node && o.horizon + HORIZON_SLACK_MS < at && !own_attachment(o))
                .map(|(k, _)| k.clone())
                .collect();
            for key in late {
                let o = open.remove(&key).expect("listed");
                let horizon = o.horizon;
                violations.push(Violation::HeldPastHorizon { conn: key.0.clone(), scope: key.1.clone(), horizon, at });
                close(key, o, horizon, "horizon".into(), &mut done);
            }
        }
        match record {
            Record::Accepted { at, user, scope, conn, tab, token, partition, horizon } => {
                let key = (conn.clone(), scope.clone());
                if let Some(o) = open.get_mut(&key) {
                    if *at <= o.horizon + ROUNDING_MS {
                        // Accepted again while held (a duplicate, or a re-grant): one hold.
                        o.token = o.token.max(*token);
                        o.horizon = o.horizon.max(*horizon);
                        o.partition = *partition;
                        if token.epoch > o.epoch {
                            o.epoch = token.epoch;
                            o.attached.push((token.epoch, *at));
                        }
                        continue;
                    }
                    let o = open.remove(&key).expect("present");
                    let h = o.horizon;
                    close(key.clone(), o, h, "horizon".into(), &mut done);
                }
                let o = Open {
                    user: user.clone(),
                    tab: tab.clone(),
                    token: *token,
                    start: *at,
                    horizon: *horizon,
                    partition: *partition,
                    epoch: token.epoch,
                    attached: vec![(token.epoch, *at)],
                };
                if *horizon <= *at {
                    close(key, o, *at, "horizon at accept".into(), &mut done);
                } else {
                    open.insert(key, o);
                }
            }
            Record::Horizon { at, gateway, partition, epoch, horizon } => {
                let members: Vec<(ConnId, ScopeKey)> = open
                    .iter()
                    .filter(|((c, _), o)| &c.gateway == gateway && o.partition == *partition && o.epoch == *epoch)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in members {
                    let o = open.get_mut(&key).expect("listed");
                    if *at > o.horizon + ROUNDING_MS {
                        violations.push(Violation::RevivedAfterHorizon {
                            conn: key.0.clone(),
                            scope: key.1.clone(),
                            horizon: o.horizon,
                            at: *at,
                        });
                        let o = open.remove(&key).expect("present");
                        let h = o.horizon;
                        close(key, o, h, "horizon".into(), &mut done);
                    } else {
                        o.horizon = o.horizon.max(*horizon);
                    }
                }
            }
            Record::Reattached { at, gateway, partition, epoch } => {
                let members: Vec<(ConnId, ScopeKey)> = open
                    .iter()
                    .filter(|((c, _), o)| &c.gateway == gateway && o.partition == *partition && o.epoch < *epoch)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in members {
                    let o = open.get_mut(&key).expect("listed");
                    if *at > o.horizon + ROUNDING_MS {
                        // It had expired before: nothing to re-attach.
                        let o = open.remove(&key).expect("present");
                        let h = o.horizon;
                        close(key, o, h, "horizon".into(), &mut done);
                    } else {
                        o.epoch = *epoch;
                        o.attached.push((*epoch, *at));
                    }
                }
            }
            Record::Ended { at, conn, scope, why } => {
                let key = (conn.clone(), scope.clone());
                if let Some(o) = open.remove(&key) {
                    let (end, why) = if *at <= o.horizon { (*at, why.clone()) } else { (o.horizon, "horizon".into()) };
                    close(key, o, end, why, &mut done);
                }
            }
            Record::LeaseHeld { .. }
            | Record::LeaseDropped { .. }
            | Record::ActivationStarted { .. }
            | Record::ActivationEnded { .. }
            | Record::Validated { .. } => {}
        }
    }
    let dead: BTreeSet<&Incarnation> =
        history.lives.iter().filter(|l| l.ended.is_some()).map(|l| &l.incarnation).collect();
    for (key, o) in open {
        let why = if dead.contains(&key.0.gateway) { "horizon (gateway gone)" } else { "horizon (run ended)" };
        let h = o.horizon;
        close(key, o, h, why.into(), &mut done);
    }
    done.sort_by(|a, b| (a.start, &a.conn).cmp(&(b.start, &b.conn)));
    (done, violations)
}

/// The `max_slots` of a scope under `config`.
pub fn max_slots_of(config: &Config, scope: &ScopeKey) -> u32 {
    match scope.scope() {
        Scope::Topic(t) => config.policy_for(t).max_slots,
        Scope::Global(PolicyId::Configured(i)) => config.policy.get(i as usize).map_or(1, |p| p.max_slots),
        Scope::Global(PolicyId::BuiltIn) => 1,
    }
}

/// P1: the earliest instant, per `(user, scope)`, at which more than `max_slots` distinct
/// tabs hold. Returns at most one violation per `(user, scope)`.
pub fn check_single_slot(intervals: &[HeldInterval], config: &Config) -> Vec<Violation> {
    let mut groups: BTreeMap<(&UserId, &ScopeKey), Vec<&HeldInterval>> = BTreeMap::new();
    for i in intervals.iter().filter(|i| i.start < i.end) {
        groups.entry((&i.user, &i.scope)).or_default().push(i);
    }
    let mut found = Vec::new();
    for ((user, scope), group) in groups {
        let max = max_slots_of(config, scope);
        // The number of tabs holding only grows at some interval's start: test those instants.
        let mut starts: Vec<Millis> = group.iter().map(|i| i.start).collect();
        starts.sort_unstable();
        starts.dedup();
        for t in starts {
            let holders: Vec<&HeldInterval> = group.iter().copied().filter(|i| i.start <= t && t < i.end).collect();
            let tabs: BTreeSet<&TabKey> = holders.iter().map(|i| &i.tab).collect();
            if tabs.len() > max as usize {
                found.push(Violation::SingleSlot {
                    user: user.clone(),
                    scope: scope.clone(),
                    at: t,
                    max_slots: max,
                    holders: holders.into_iter().cloned().collect(),
                });
                break;
            }
        }
    }
    found
}

/// How long two connections of one tab may both hold during a resume when the user's partition
/// keeps its home: until the old one's close is confirmed (a round trip while its gateway is
/// heard, retried under loss) or its horizon passes (`isolation_ms` after the last echo). A
/// home may die meanwhile, so a new one must get the lease and clean up with its scan (rule 9).
/// Generous: `isolation_ms × (1 + max_drift) + lease_ms × (1 + max_drift) + lease_ms / 4 +
/// heartbeat_timeout_ms`. A new home taking the older connection on during the overlap moves
/// where the bound counts from ([`duplicate_tab_allowed_until`]).
pub fn resume_overlap_bound_ms(config: &Config) -> Millis {
    let c = &config.cluster;
    let d = 1.0 + c.max_drift;
    (c.lease_ms as f64 * d) as Millis + close_tail_ms(config)
}

/// How long the older connection of a tab may hold after a home knows both connections:
/// `isolation_ms × (1 + max_drift)` (its horizon) `+ lease_ms / 4 + heartbeat_timeout_ms` (its
/// close retried under loss or late on the wire).
fn close_tail_ms(config: &Config) -> Millis {
    let c = &config.cluster;
    (c.isolation_ms as f64 * (1.0 + c.max_drift)) as Millis + c.lease_ms / 4 + c.heartbeat_timeout_ms
}

/// Until when the older of two connections of one tab (`older`, `newer`: their intervals) may
/// hold while the newer one holds: [`resume_overlap_bound_ms`] after the newer one began, or, if
/// later, `isolation_ms × (1 + max_drift) + lease_ms / 4 + heartbeat_timeout_ms` after the last
/// instant, before the overlap ended, at which a home other than the one of the resume took
/// the older one on: the instant the older one was re-attached to that home's epoch by its
/// gateway's scan answer, or, if the newer one was re-attached to the same epoch later, that
/// later instant.
///
/// Why (`docs/simulation.md`, "How long one tab may have two connections"): a home that knows
/// both connections closes the older one at once (rule 7, rule 9), which then holds at most
/// until its close arrives or its horizon passes, `isolation_ms` after the last echo it got
/// (the rest: a close retried under loss or late on the wire). A new home that has not heard
/// the newer connection's gateway re-attaches the older one from its scan and renews it (it
/// must: rule 11, the older one may be the only live one); but then no home renews the newer
/// one, whose horizon was given by a home whose lease ended before the new lease began, so
/// the newer one holds at most `isolation_ms` longer, unless the new home hears of it first
/// and closes the older one. Nothing else renews the older one.
pub fn duplicate_tab_allowed_until(config: &Config, older: &HeldInterval, newer: &HeldInterval) -> Millis {
    let overlap_end = older.end.min(newer.end);
    let taken_on = older.attached.iter().filter(|(_, at)| *at <= overlap_end).map(|(epoch, at)| {
        let newer_at = newer.attached.iter().find(|(e, t)| e == epoch && *t <= overlap_end).map(|(_, t)| *t);
        newer_at.map_or(*at, |t| t.max(*at))
    });
    let last = taken_on.filter(|at| *at > newer.start).max();
    let after_resume = newer.start + resume_overlap_bound_ms(config);
    last.map_or(after_resume, |at| after_resume.max(at + close_tail_ms(config)))
}

/// Every pair of connections of one tab of one `(user, scope)` whose holds overlapped, as
/// `(older, newer)` (the older began first).
fn one_tab_pairs(intervals: &[HeldInterval]) -> Vec<(&HeldInterval, &HeldInterval)> {
    let mut groups: BTreeMap<(&UserId, &ScopeKey, &TabKey), Vec<&HeldInterval>> = BTreeMap::new();
    for i in intervals.iter().filter(|i| i.start < i.end) {
        groups.entry((&i.user, &i.scope, &i.tab)).or_default().push(i);
    }
    let mut pairs = Vec::new();
    for group in groups.values() {
        for (k, a) in group.iter().enumerate() {
            for b in &group[k + 1..] {
                let (older, newer) = if (a.start, &a.token) <= (b.start, &b.token) { (*a, *b) } else { (*b, *a) };
                if older.conn != newer.conn && older.end > newer.start {
                    pairs.push((older, newer));
                }
            }
        }
    }
    pairs
}

/// Two connections of one tab that both held for longer than [`duplicate_tab_allowed_until`]
/// allows (at most one violation per `(user, scope)`, the earliest).
pub fn check_duplicate_tabs(intervals: &[HeldInterval], config: &Config) -> Vec<Violation> {
    let mut found: BTreeMap<(&UserId, &ScopeKey), Violation> = BTreeMap::new();
    for (older, newer) in one_tab_pairs(intervals) {
        let overlap_ms = older.end.min(newer.end) - newer.start;
        let bound_ms = duplicate_tab_allowed_until(config, older, newer) - newer.start;
        if overlap_ms <= bound_ms {
            continue;
        }
        let v = Violation::StaleDuplicateTab {
            user: newer.user.clone(),
            scope: newer.scope.clone(),
            older: older.clone(),
            newer: newer.clone(),
            overlap_ms,
            bound_ms,
        };
        match found.entry((&newer.user, &newer.scope)) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                if v.at() < e.get().at() {
                    e.insert(v);
                }
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(v);
            }
        }
    }
    found.into_values().collect()
}

/// Rebuild every lease span: `LeaseHeld` opens or extends (same incarnation, partition and
/// epoch, overlapping or touching), `LeaseDropped` and the incarnation's end cut it short.
pub fn lease_spans(history: &History) -> Vec<LeaseSpan> {
    let mut spans: BTreeMap<(Incarnation, PartitionId), Vec<LeaseSpan>> = BTreeMap::new();
    for NodeRecord { node, record } in &history.records {
        match record {
            Record::LeaseHeld { at, partition, epoch, until } => {
                let list = spans.entry((node.clone(), *partition)).or_default();
                match list.last_mut() {
                    Some(last) if last.epoch == *epoch && last.end >= *at && last.start <= *at => {
                        last.end = last.end.max(*until);
                    }
                    _ => list.push(LeaseSpan {
                        node: node.clone(),
                        partition: *partition,
                        epoch: *epoch,
                        start: *at,
                        end: *until,
                    }),
                }
            }
            Record::LeaseDropped { at, partition, epoch } => {
                if let Some(list) = spans.get_mut(&(node.clone(), *partition)) {
                    for s in list.iter_mut().filter(|s| s.epoch == *epoch && s.start <= *at) {
                        s.end = s.end.min(*at);
                    }
                }
            }
            _ => {}
        }
    }
    let deaths: BTreeMap<&Incarnation, Millis> =
        history.lives.iter().filter_map(|l| l.ended.map(|(at, _)| (&l.incarnation, at))).collect();
    let mut out: Vec<LeaseSpan> = spans
        .into_values()
        .flatten()
        .map(|mut s| {
            if let Some(&d) = deaths.get(&s.node) {
                s.end = s.end.min(d);
            }
            s
        })
        .filter(|s| s.start < s.end)
        .collect();
    out.sort_by(|a, b| (a.partition, a.start, &a.node).cmp(&(b.partition, b.start, &b.node)));
    out
}

/// At most one holder per partition at any instant, and epochs that grow from holder to holder.
pub fn check_leases(spans: &[LeaseSpan]) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut by_partition: BTreeMap<PartitionId, Vec<&LeaseSpan>> = BTreeMap::new();
    for s in spans {
        by_partition.entry(s.partition).or_default().push(s);
    }
    for (partition, list) in by_partition {
        // `list` is sorted by start.
        let mut overlap: Option<Violation> = None;
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if b.start >= a.end {
                    continue;
                }
                if a.node != b.node {
                    let at = b.start;
                    if overlap.as_ref().is_none_or(|v| at < v.at()) {
                        overlap = Some(Violation::TwoLeaseHolders {
                            partition,
                            at,
                            first: (*a).clone(),
                            second: (*b).clone(),
                        });
                    }
                }
            }
        }
        found.extend(overlap);
        for w in list.windows(2) {
            let (a, b) = (w[0], w[1]);
            let ok = if a.node == b.node { b.epoch >= a.epoch } else { b.epoch > a.epoch };
            if !ok {
                found.push(Violation::EpochNotIncreasing { partition, before: a.clone(), after: b.clone() });
                break;
            }
        }
    }
    found
}

/// No two connections of one `(user, scope)` were granted the same token. (Tokens are
/// ordered per `(user, scope)` only: two partitions may mint the same epoch and generation.)
pub fn check_tokens(intervals: &[HeldInterval]) -> Vec<Violation> {
    let mut by_token: BTreeMap<(SlotToken, &UserId, &ScopeKey), &HeldInterval> = BTreeMap::new();
    let mut found = Vec::new();
    for i in intervals {
        match by_token.get(&(i.token, &i.user, &i.scope)) {
            Some(first) if first.conn != i.conn => {
                found.push(Violation::DuplicateToken { token: i.token, first: (*first).clone(), second: i.clone() });
            }
            Some(_) => {}
            None => {
                by_token.insert((i.token, &i.user, &i.scope), i);
            }
        }
    }
    found
}

/// Every `true` answer to a validation, judged against the lease spans and the holding
/// intervals: the answering node held a valid lease on the user's partition at that instant
/// at the epoch it recorded (not below the token's), and the token's tab with every other tab
/// holding the scope's slot then is at most `max_slots` tabs. (A `true` may come after the
/// token's gateway ended its slot, while the release is on its way: the home still counts it,
/// so it grants no other tab in its place before it stops saying `true`. A tab accepted in the
/// same millisecond as the answer is not counted: the order of records within a millisecond
/// is not kept by the intervals, and a home answers, then grants, in one instant.)
pub fn check_validations(history: &History, intervals: &[HeldInterval], leases: &[LeaseSpan]) -> Vec<Violation> {
    let mut found = Vec::new();
    for (i, NodeRecord { node, record }) in history.records.iter().enumerate() {
        let Record::Validated { at, user, scope, token, partition, epoch, holds: true } = record else { continue };
        let wrong = |why: String| Violation::WrongValidation {
            node: node.clone(),
            user: user.clone(),
            scope: scope.clone(),
            token: *token,
            at: *at,
            why,
        };
        let leased = leases.iter().any(|s| {
            &s.node == node && s.partition == *partition && s.epoch == *epoch && s.start <= *at && *at < s.end
        });
        // A span cut by the node's own `LeaseDropped` ends at that millisecond, exclusive; an
        // answer the node recorded before the drop, in the same millisecond, came while it
        // still held the lease (a node's records keep their order).
        let dropped_after = || {
            history.records[i + 1..].iter().any(|r| {
                &r.node == node
                    && matches!(r.record, Record::LeaseDropped { at: d, partition: q, epoch: e }
                        if d == *at && q == *partition && e == *epoch)
            }) && leases.iter().any(|s| {
                &s.node == node && s.partition == *partition && s.epoch == *epoch && s.start <= *at && s.end == *at
            })
        };
        if !(leased || dropped_after()) || token.epoch > *epoch {
            found.push(wrong(format!("it held no valid lease on {partition} at epoch {epoch} then")));
            continue;
        }
        let Some(own) = intervals.iter().find(|i| i.token == *token && &i.user == user && &i.scope == scope) else {
            continue; // never accepted by a gateway: no tab to count
        };
        let holders: Vec<&HeldInterval> = intervals
            .iter()
            .filter(|i| &i.user == user && &i.scope == scope && i.start < *at && *at < i.end && i.tab != own.tab)
            .collect();
        let tabs: BTreeSet<&TabKey> = holders.iter().map(|i| &i.tab).chain([&own.tab]).collect();
        let max = max_slots_of(&history.config, scope);
        if tabs.len() > max as usize {
            let list: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
            found.push(wrong(format!(
                "its tab {} and {} other tabs hold then (max_slots {max}): {}",
                tab_name(&own.tab),
                tabs.len() - 1,
                list.join("; ")
            )));
        }
    }
    found
}

/// Whether `node` had no trouble that overlaps `[from, to]`.
fn untroubled(troubles: &[Trouble], node: &NodeName, from: Millis, to: Millis) -> bool {
    !troubles.iter().any(|t| &t.node == node && t.from <= to && t.until >= from)
}

/// Measure the liveness figures of one history.
pub fn measure(history: &History, intervals: &[HeldInterval], leases: &[LeaseSpan]) -> Figures {
    let config = &history.config;
    let cluster = &config.cluster;
    let mut f = Figures { runs: 1, ..Figures::default() };
    f.grants = history.records.iter().filter(|r| matches!(r.record, Record::Accepted { .. })).count() as u64;
    let resume_bound = resume_overlap_bound_ms(config);
    for (older, newer) in one_tab_pairs(intervals) {
        let overlap = older.end.min(newer.end) - newer.start;
        let allowed = duplicate_tab_allowed_until(config, older, newer) - newer.start;
        if overlap > resume_bound && overlap <= allowed {
            f.one_tab_overlap_after_new_home_ms.push(overlap);
            f.one_tab_overlap_margin_ms.push(allowed - overlap);
        }
    }
    for r in &history.records {
        if let Record::Validated { holds, .. } = r.record {
            f.validations[usize::from(!holds)] += 1;
        }
    }

    for j in &history.joins {
        match &j.outcome {
            Some((at, JoinOutcome::Joined)) => {
                f.joins_ok += 1;
                if j.user.is_some() {
                    f.join_wait_ms.push(at - j.at);
                }
            }
            Some((_, JoinOutcome::Failed(reason))) => *f.joins_failed.entry(reason.clone()).or_default() += 1,
            Some((_, JoinOutcome::Gone)) => f.joins_gone += 1,
            None => f.joins_unanswered += 1,
        }
    }

    // Homes killed: which partitions each crash took away, and the joins that followed.
    for life in &history.lives {
        let Some((died, LifeEnd::Crashed)) = life.ended else { continue };
        let held: BTreeSet<PartitionId> = leases
            .iter()
            .filter(|s| s.node == life.incarnation && s.start <= died && died <= s.end)
            .map(|s| s.partition)
            .collect();
        if !held.is_empty() {
            for j in &history.joins {
                let Some(user) = &j.user else { continue };
                if j.at < died || j.at >= died + 1000 || j.gateway.node == life.incarnation.node {
                    continue;
                }
                if !held.contains(&partition_of(user, cluster.partitions)) {
                    continue;
                }
                match (&j.outcome, j.kind) {
                    (Some((at, JoinOutcome::Joined)), JoinKind::NewTab) => {
                        f.new_tab_wait_after_home_death_ms.push(at - j.at)
                    }
                    (Some((at, JoinOutcome::Joined)), JoinKind::Resume) => {
                        f.resume_wait_after_home_death_ms.push(at - j.at)
                    }
                    (Some((_, JoinOutcome::Failed(_))), _) => f.failed_after_home_death += 1,
                    _ => {}
                }
            }
        }
        // Slots of the killed gateway: how long they still counted.
        for i in intervals.iter().filter(|i| i.conn.gateway == life.incarnation && i.start <= died && died < i.end) {
            f.killed_gateway_slot_free_ms.push(i.end - died);
        }
    }

    // Revocations for isolation, and whether the gateway (and a majority) were healthy.
    let window = cluster.isolation_ms + cluster.heartbeat_timeout_ms + cluster.lease_ms;
    let names: Vec<&NodeName> = cluster.nodes.iter().map(|n| &n.name).collect();
    for r in &history.records {
        let Record::Ended { at, why, .. } = &r.record else { continue };
        if why != "node_isolated" {
            continue;
        }
        f.isolated += 1;
        let from = at.saturating_sub(window);
        let healthy_gateway = untroubled(&history.troubles, &r.node.node, from, *at);
        let healthy = names.iter().filter(|n| untroubled(&history.troubles, n, from, *at)).count();
        if healthy_gateway && healthy * 2 > names.len() {
            f.isolated_healthy_gateway += 1;
        }
    }
    f
}

/// One live node's presence lists: per topic, `(key, phx_ref, origin node)`, sorted.
pub type PresenceDigest = Vec<(Topic, Vec<(String, PhxRef, NodeName)>)>;

/// P4 after a quiet period: every live node shows the same list per topic, and every entry's
/// origin is one of the live nodes (`live_names`).
pub fn check_presence(digests: &[(Incarnation, PresenceDigest)], live_names: &[NodeName]) -> Vec<Violation> {
    type Sets = BTreeMap<Topic, BTreeSet<(String, PhxRef, NodeName)>>;
    let as_sets = |d: &PresenceDigest| -> Sets {
        d.iter()
            .map(|(t, entries)| (t.clone(), entries.iter().cloned().collect::<BTreeSet<_>>()))
            .filter(|(_, s)| !s.is_empty())
            .collect()
    };
    let mut found = Vec::new();
    let Some(((first, d0), rest)) = digests.split_first().map(|(f, r)| ((&f.0, &f.1), r)) else {
        return found;
    };
    let base = as_sets(d0);
    for (other, d) in rest {
        let theirs = as_sets(d);
        let topics: BTreeSet<&Topic> = base.keys().chain(theirs.keys()).collect();
        let empty = BTreeSet::new();
        for topic in topics {
            let a = base.get(topic).unwrap_or(&empty);
            let b = theirs.get(topic).unwrap_or(&empty);
            if a != b {
                found.push(Violation::PresenceDiverged {
                    a: first.clone(),
                    b: other.clone(),
                    topic: topic.clone(),
                    only_a: a.difference(b).cloned().collect(),
                    only_b: b.difference(a).cloned().collect(),
                });
            }
        }
    }
    for (topic, entries) in &base {
        for (_, _, origin) in entries {
            if !live_names.contains(origin) {
                let gone = Incarnation::from_parts(origin.clone(), uuid::Uuid::nil());
                found.push(Violation::GhostPresence {
                    node: first.clone(),
                    topic: topic.clone(),
                    conn: ConnId { gateway: gone, socket: SocketId(0) },
                    why: format!("its origin {origin} is down"),
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_core::{ClusterConfig, NodeConfig, OnConflict, PolicyConfig};

    fn config(max_slots: u32) -> Config {
        let mut c = Config::single_node();
        c.cluster = ClusterConfig {
            nodes: ["n0", "n1", "n2"]
                .iter()
                .map(|n| NodeConfig { name: (*n).into(), cluster_addr: String::new(), http_addr: String::new() })
                .collect(),
            ..ClusterConfig::default()
        };
        c.policy = vec![PolicyConfig { max_slots, on_conflict: OnConflict::Takeover, ..PolicyConfig::new("*") }];
        c
    }

    fn inc(node: &str) -> Incarnation {
        Incarnation::new(node, node.len() as u128 * 7 + u128::from(node.as_bytes()[1]))
    }

    fn conn(node: &str, socket: u64) -> ConnId {
        ConnId { gateway: inc(node), socket: SocketId(socket) }
    }

    fn scope() -> ScopeKey {
        ScopeKey::topic("room:1".into())
    }

    fn tok(g: u64) -> SlotToken {
        SlotToken { epoch: 10, generation: g }
    }

    fn accepted(c: &ConnId, tab: &str, token: SlotToken, at: Millis, horizon: Millis) -> NodeRecord {
        NodeRecord {
            node: c.gateway.clone(),
            record: Record::Accepted {
                at,
                user: "alice".into(),
                scope: scope(),
                conn: c.clone(),
                tab: TabKey::Tab(tab.into()),
                token,
                partition: PartitionId(3),
                horizon,
            },
        }
    }

    /// A horizon for every slot of `c`'s gateway attached to partition 3 at epoch 10.
    fn horizon(c: &ConnId, at: Millis, horizon: Millis) -> NodeRecord {
        horizon_at_epoch(c, 10, at, horizon)
    }

    fn horizon_at_epoch(c: &ConnId, epoch: u64, at: Millis, horizon: Millis) -> NodeRecord {
        let gateway = c.gateway.clone();
        NodeRecord {
            node: c.gateway.clone(),
            record: Record::Horizon { at, gateway, partition: PartitionId(3), epoch, horizon },
        }
    }

    fn reattached(c: &ConnId, epoch: u64, at: Millis) -> NodeRecord {
        let gateway = c.gateway.clone();
        NodeRecord {
            node: c.gateway.clone(),
            record: Record::Reattached { at, gateway, partition: PartitionId(3), epoch },
        }
    }

    fn ended(c: &ConnId, at: Millis, why: &str) -> NodeRecord {
        NodeRecord {
            node: c.gateway.clone(),
            record: Record::Ended { at, conn: c.clone(), scope: scope(), why: why.into() },
        }
    }

    fn held(node: &str, partition: u32, epoch: u64, at: Millis, until: Millis) -> NodeRecord {
        NodeRecord {
            node: inc(node),
            record: Record::LeaseHeld { at, partition: PartitionId(partition), epoch, until },
        }
    }

    fn dropped(node: &str, partition: u32, epoch: u64, at: Millis) -> NodeRecord {
        NodeRecord { node: inc(node), record: Record::LeaseDropped { at, partition: PartitionId(partition), epoch } }
    }

    fn history(records: Vec<NodeRecord>) -> History {
        History { records, end: 100_000, ..History::new(config(1)) }
    }

    fn validated(node: &str, token: SlotToken, at: Millis, holds: bool) -> NodeRecord {
        NodeRecord {
            node: inc(node),
            record: Record::Validated {
                at,
                user: "alice".into(),
                scope: scope(),
                token,
                partition: PartitionId(3),
                epoch: 10,
                holds,
            },
        }
    }

    fn wrong_validations(h: &History) -> Vec<String> {
        check(h).violations.iter().filter(|v| v.kind() == "validate").map(|v| v.to_string()).collect()
    }

    #[test]
    fn a_true_validation_is_judged_against_the_home_lease_and_the_tabs_holding_then() {
        let (a, b) = (conn("n1", 1), conn("n2", 1));
        let base = [
            held("n0", 3, 10, 0, 10_000),
            accepted(&a, "tab-a", tok(1), 100, 4100),
            ended(&a, 150, "logged_in_elsewhere"),
            accepted(&b, "tab-b", tok(2), 200, 4200),
        ];
        let with = |extra: Vec<NodeRecord>| history(base.iter().cloned().chain(extra).collect());
        // The old token while it held, or after its gateway ended it but before the new tab
        // held (its release on its way), the new one while it holds; `false` is not judged.
        let fine = with(vec![
            validated("n0", tok(1), 120, true),
            validated("n0", tok(1), 170, true),
            validated("n0", tok(2), 300, true),
            validated("n0", tok(1), 300, false),
        ]);
        assert!(check(&fine).passed(), "{:?}", check(&fine).violations);
        // The old token said to hold while the new tab holds: a stale answer.
        let stale = wrong_validations(&with(vec![validated("n0", tok(1), 300, true)]));
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert!(stale[0].contains("tab tab-a and 1 other tabs hold"), "{}", stale[0]);
        // An answer from a node without the lease (another node, or after it lapsed).
        assert_eq!(wrong_validations(&with(vec![validated("n1", tok(2), 300, true)])).len(), 1);
        let lapsed = wrong_validations(&with(vec![validated("n0", tok(2), 10_000, true)]));
        assert!(lapsed[0].contains("no valid lease on p3 at epoch 10"), "{lapsed:?}");
        // The node dropped its lease in the millisecond of the answer: held if the answer
        // came first (seed 2777370438 of `seeds_3_nodes`), not if the drop did.
        let answer_then_drop = with(vec![validated("n0", tok(2), 300, true), dropped("n0", 3, 10, 300)]);
        assert!(wrong_validations(&answer_then_drop).is_empty(), "{:?}", wrong_validations(&answer_then_drop));
        let drop_then_answer =
            wrong_validations(&with(vec![dropped("n0", 3, 10, 300), validated("n0", tok(2), 300, true)]));
        assert!(drop_then_answer[0].contains("no valid lease on p3 at epoch 10"), "{drop_then_answer:?}");
    }

    #[test]
    fn a_gateway_acting_past_a_slots_horizon_without_ending_it_breaks_rule_5() {
        let a = conn("n1", 1);
        let kinds = |records: Vec<NodeRecord>| -> Vec<String> {
            check(&history(records)).violations.iter().map(|v| v.to_string()).collect()
        };
        // n1 renews a lease 100 ms past its slot's horizon, the slot still open.
        let late = kinds(vec![accepted(&a, "tab-a", tok(1), 100, 4100), held("n1", 4, 10, 4200, 6200)]);
        assert_eq!(late.len(), 1, "{late:?}");
        assert!(late[0].contains("rule 5") && late[0].contains("t=4200, past its horizon 4100"), "{}", late[0]);
        // Revoked first (on time, or first thing after a pause): fine; so is acting within the slack.
        assert!(kinds(vec![
            accepted(&a, "tab-a", tok(1), 100, 4100),
            ended(&a, 4100, "node_isolated"),
            held("n1", 4, 10, 4200, 6200)
        ])
        .is_empty());
        assert!(kinds(vec![
            accepted(&a, "tab-a", tok(1), 100, 4100),
            ended(&a, 9000, "node_isolated"),
            held("n1", 4, 10, 9000, 11_000)
        ])
        .is_empty());
        assert!(kinds(vec![accepted(&a, "tab-a", tok(1), 100, 4100), held("n1", 4, 10, 4105, 6105)]).is_empty());
        // Another node's records say nothing about n1's slots.
        assert!(kinds(vec![accepted(&a, "tab-a", tok(1), 100, 4100), held("n2", 4, 10, 4200, 6200)]).is_empty());
    }

    fn p1(v: &Verdict) -> Vec<&Violation> {
        v.violations.iter().filter(|v| v.kind() == "P1").collect()
    }

    #[test]
    fn two_tabs_overlapping_are_a_p1_violation_at_the_second_start() {
        let (a, b) = (conn("n1", 1), conn("n2", 1));
        let h = history(vec![
            accepted(&a, "tab-a", tok(1), 100, 4100),
            accepted(&b, "tab-b", tok(2), 150, 4150),
            ended(&a, 160, "logged_in_elsewhere"),
        ]);
        let v = check(&h);
        let found = p1(&v);
        assert_eq!(found.len(), 1, "{:?}", v.violations);
        let Violation::SingleSlot { at, holders, .. } = found[0] else { unreachable!() };
        assert_eq!(*at, 150);
        assert_eq!(holders.len(), 2);
        assert!(found[0].to_string().contains("for 10 ms"), "{}", found[0]);
    }

    #[test]
    fn revoke_then_grant_is_no_violation_even_at_the_same_instant() {
        let (a, b) = (conn("n1", 1), conn("n0", 1));
        let h = history(vec![
            accepted(&a, "tab-a", tok(1), 100, 4100),
            ended(&a, 150, "logged_in_elsewhere"),
            accepted(&b, "tab-b", tok(2), 150, 4150),
        ]);
        assert!(check(&h).passed());
    }

    #[test]
    fn the_same_tab_on_two_connections_during_a_resume_is_no_violation() {
        let (a, a2) = (conn("n1", 1), conn("n2", 7));
        let h = history(vec![accepted(&a, "tab-a", tok(1), 100, 4100), accepted(&a2, "tab-a", tok(2), 200, 4200)]);
        let v = check(&h);
        assert!(v.passed(), "{:?}", v.violations);
        assert_eq!(v.intervals.len(), 2);
    }

    #[test]
    fn one_tab_on_two_connections_beyond_a_resume_is_flagged() {
        let (a, a2) = (conn("n1", 1), conn("n2", 7));
        let bound = resume_overlap_bound_ms(&config(1));
        assert_eq!(bound, 4040 + 2020 + 500 + 1000);
        let h = history(vec![
            accepted(&a, "tab-a", tok(1), 100, 100_000),
            accepted(&a2, "tab-a", tok(2), 200, 100_000),
            ended(&a, 200 + bound, "closed"),
        ]);
        assert!(check(&h).passed());
        let h = history(vec![
            accepted(&a, "tab-a", tok(1), 100, 100_000),
            accepted(&a2, "tab-a", tok(2), 200, 100_000),
            ended(&a, 201 + bound, "closed"),
        ]);
        let v = check(&h);
        assert_eq!(v.violations.len(), 1);
        assert_eq!(v.violations[0].kind(), "P1-duplicate-tab");
    }

    #[test]
    fn a_new_home_taking_the_older_connection_on_moves_where_its_bound_counts_from() {
        let (a, a2) = (conn("n0", 1), conn("n1", 7));
        let cfg = config(1);
        let base = resume_overlap_bound_ms(&cfg);
        let tail = 4040 + 500 + 1000; // isolation_ms × (1 + max_drift) + lease_ms / 4 + heartbeat_timeout_ms
                                      // Tab a holds on n0 (epoch 10), resumes on n1 at 200 (epoch 10); n0's scan answer
                                      // re-attaches the old connection to epoch 11 at 3,000; n1's answers at `newer_at`.
        let run = |older_end: Millis, newer_at: Option<Millis>| {
            let mut records = vec![
                accepted(&a, "tab-a", tok(1), 100, 100_000),
                accepted(&a2, "tab-a", tok(2), 200, 100_000),
                reattached(&a, 11, 3000),
            ];
            records.extend(newer_at.map(|at| reattached(&a2, 11, at)));
            records.push(ended(&a, older_end, "closed"));
            let v = check(&history(records));
            let dup: Vec<_> = v.violations.iter().filter(|v| v.kind() == "P1-duplicate-tab").cloned().collect();
            (dup, v)
        };
        // Taken on at 3,000 by a home that does not know the newer one.
        assert!(run(3000 + tail, None).0.is_empty(), "{:?}", run(3000 + tail, None).1.violations);
        let (dup, _) = run(3001 + tail, None);
        assert_eq!(dup.len(), 1);
        assert!(matches!(&dup[0], Violation::StaleDuplicateTab { bound_ms, .. } if *bound_ms == 3000 + tail - 200));
        // The new home hears of the newer one at 6,000: it counts from then.
        assert!(run(6000 + tail, Some(6000)).0.is_empty());
        assert_eq!(run(6001 + tail, Some(6000)).0.len(), 1);
        // The newer one's re-attachment after the overlap ended does not count.
        assert_eq!(run(3001 + tail, Some(3001 + tail + 50)).0.len(), 1);
        // Without any re-attachment the bound is the resume's.
        let plain = |end| {
            check(&history(vec![
                accepted(&a, "tab-a", tok(1), 100, 100_000),
                accepted(&a2, "tab-a", tok(2), 200, 100_000),
                ended(&a, end, "closed"),
            ]))
        };
        assert!(plain(200 + base).passed());
        assert_eq!(plain(201 + base).violations.len(), 1);
    }

    #[test]
    fn a_horizon_ends_a_crashed_gateways_slot() {
        let (a, b) = (conn("n1", 1), conn("n2", 1));
        let mut h = history(vec![
            accepted(&a, "tab-a", tok(1), 100, 4100),
            horizon(&a, 300, 4300),
            accepted(&b, "tab-b", tok(2), 4300, 8300),
        ]);
        h.lives.push(Life { incarnation: inc("n1"), started: 0, ended: Some((400, LifeEnd::Crashed)) });
        let v = check(&h);
        assert!(v.passed(), "{:?}", v.violations);
        assert_eq!(v.intervals[0].end, 4300);
        assert_eq!(v.intervals[0].ended_by, "horizon (gateway gone)");
        // One millisecond earlier and the killed gateway's slot still counts.
        let mut h2 = h.clone();
        h2.records[2] = accepted(&b, "tab-b", tok(2), 4299, 8299);
        assert_eq!(p1(&check(&h2)).len(), 1);
    }

    #[test]
    fn horizons_apply_to_the_attachment_and_follow_a_reattach() {
        let a = conn("n1", 1);
        // Epoch 11's horizons do not move a slot attached to epoch 10...
        let h = history(vec![accepted(&a, "tab-a", tok(1), 100, 4100), horizon_at_epoch(&a, 11, 300, 9000)]);
        assert_eq!(check(&h).intervals[0].end, 4100);
        // ...until the slot is re-attached to epoch 11 (its horizon carries over).
        let h = history(vec![
            accepted(&a, "tab-a", tok(1), 100, 4100),
            reattached(&a, 11, 200),
            horizon(&a, 250, 8000),
            horizon_at_epoch(&a, 11, 300, 9000),
        ]);
        let v = check(&h);
        assert!(v.passed(), "{:?}", v.violations);
        assert_eq!(v.intervals[0].end, 9000);
        // A horizon of another gateway does not move it either.
        let other = conn("n2", 1);
        let h = history(vec![accepted(&a, "tab-a", tok(1), 100, 4100), horizon(&other, 300, 9000)]);
        assert_eq!(check(&h).intervals[0].end, 4100);
    }

    #[test]
    fn an_end_after_the_horizon_counts_from_the_horizon() {
        let (a, b) = (conn("n1", 1), conn("n2", 1));
        let h = history(vec![
            accepted(&a, "tab-a", tok(1), 100, 4100),
            accepted(&b, "tab-b", tok(2), 4100, 8100),
            ended(&a, 6000, "node_isolated"),
        ]);
        let v = check(&h);
        assert!(v.passed(), "{:?}", v.violations);
        assert_eq!(v.intervals[0].ended_by, "horizon");
    }

    #[test]
    fn a_horizon_moved_after_it_passed_is_a_revival() {
        let a = conn("n1", 1);
        let h = history(vec![accepted(&a, "tab-a", tok(1), 100, 4100), horizon(&a, 4200, 8200)]);
        let v = check(&h);
        assert_eq!(v.violations.len(), 1);
        assert_eq!(v.violations[0].kind(), "revived-slot");
        // Moved one millisecond late is clock rounding, not a revival.
        let h = history(vec![accepted(&a, "tab-a", tok(1), 100, 4100), horizon(&a, 4101, 8101)]);
        assert!(check(&h).passed());
    }

    #[test]
    fn max_slots_two_allows_two_tabs_but_not_three() {
        let (a, b, c) = (conn("n1", 1), conn("n2", 1), conn("n0", 1));
        let mut h = history(vec![accepted(&a, "t1", tok(1), 0, 5000), accepted(&b, "t2", tok(2), 10, 5000)]);
        h.config = config(2);
        assert!(check(&h).passed());
        h.records.push(accepted(&c, "t3", tok(3), 20, 5000));
        assert_eq!(p1(&check(&h)).len(), 1);
    }

    #[test]
    fn two_connections_with_one_token_are_flagged() {
        let (a, b) = (conn("n1", 1), conn("n2", 1));
        let h = history(vec![
            accepted(&a, "tab-a", tok(1), 0, 100),
            accepted(&b, "tab-b", tok(1), 200, 300),
            // The same grant delivered twice to one connection is one hold, not a duplicate.
            accepted(&a, "tab-a", tok(1), 50, 150),
        ]);
        let v = check(&h);
        assert_eq!(v.violations.iter().filter(|v| v.kind() == "duplicate-token").count(), 1, "{:?}", v.violations);
    }

    #[test]
    fn overlapping_leases_of_two_nodes_are_flagged_and_renewals_extend() {
        let ok = history(vec![held("n0", 3, 5, 0, 1980), held("n0", 3, 5, 500, 2480), held("n1", 3, 6, 2500, 4480)]);
        let v = check(&ok);
        assert!(v.passed(), "{:?}", v.violations);
        assert_eq!(v.leases.len(), 2);
        assert_eq!(v.leases[0].end, 2480);
        let bad = history(vec![held("n0", 3, 5, 0, 1980), held("n0", 3, 5, 500, 2480), held("n1", 3, 6, 2400, 4400)]);
        let v = check(&bad);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(matches!(v.violations[0], Violation::TwoLeaseHolders { at: 2400, .. }));
    }

    #[test]
    fn a_drop_or_a_crash_ends_a_lease() {
        let dropped_early =
            history(vec![held("n0", 1, 5, 0, 2000), dropped("n0", 1, 5, 300), held("n1", 1, 6, 400, 2400)]);
        assert!(check(&dropped_early).passed());
        let mut crashed = history(vec![held("n0", 1, 5, 0, 2000), held("n1", 1, 6, 400, 2400)]);
        crashed.lives.push(Life { incarnation: inc("n0"), started: 0, ended: Some((350, LifeEnd::Crashed)) });
        assert!(check(&crashed).passed());
    }

    #[test]
    fn a_new_holder_with_an_old_epoch_is_flagged() {
        let h = history(vec![held("n0", 2, 7, 0, 2000), held("n1", 2, 7, 2500, 4500)]);
        let v = check(&h);
        assert_eq!(v.violations.len(), 1);
        assert_eq!(v.violations[0].kind(), "epoch-order");
        let same_node = history(vec![held("n0", 2, 7, 0, 2000), held("n0", 2, 7, 2500, 4500)]);
        assert!(check(&same_node).passed());
    }

    #[test]
    fn presence_lists_must_match_and_come_from_live_nodes() {
        let (n0, n1) = (inc("n0"), inc("n1"));
        let live: Vec<NodeName> = vec!["n0".into(), "n1".into()];
        let entry = |k: &str, r: &str, o: &str| (k.to_owned(), PhxRef::new(r), NodeName::from(o));
        let topic = Topic::from("room:1");
        let same = vec![(topic.clone(), vec![entry("alice", "r1", "n0")])];
        assert!(check_presence(&[(n0.clone(), same.clone()), (n1.clone(), same.clone())], &live).is_empty());
        let other = vec![(topic.clone(), vec![entry("alice", "r2", "n0")])];
        let v = check_presence(&[(n0.clone(), same.clone()), (n1.clone(), other)], &live);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind(), "P4-presence-diverged");
        let ghost = vec![(topic, vec![entry("bob", "r3", "n2")])];
        let v = check_presence(&[(n0.clone(), ghost.clone()), (n1, ghost)], &live);
        assert_eq!(v.iter().map(Violation::kind).collect::<Vec<_>>(), ["P3-ghost-presence"]);
    }

    #[test]
    fn percentiles_pick_ranks() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[5, 1, 3], 50), Some(3));
        assert_eq!(percentile(&[5, 1, 3], 100), Some(5));
        assert_eq!(percentile(&[5, 1, 3], 0), Some(1));
    }
}
