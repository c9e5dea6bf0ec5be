//! User actors in the simulation: the checker of activations, and the simulation's stand-in
//! for the runtime that runs them.
//!
//! **The checker** rebuilds every *activation span* from the records alone: a node runs a
//! user's activation from its `ActivationStarted` until its `ActivationEnded` (for a lost
//! lease, the lease's deadline), or the incarnation's death, or the run's end. It reports:
//! - two activations of one user at one instant, on any nodes ([`ActivationViolation::Overlap`]);
//! - an activation's fencing token not above every earlier one of its user;
//! - an activation outside its node's lease on the user's partition at the token's epoch;
//! - an activation started from a handed-over state that is not its predecessor's, or whose
//!   predecessor did not end by handing over (two lines of history merged).
//!
//! **The stand-in runtime** answers what a real runtime would: a handover's stop comes back as
//! [`Input::ActivationStopped`] with a state 1 ms later, a delivered call is answered with the
//! activation's token, and answers to calls and info requests made through
//! [`Simulation::user_call`] and [`Simulation::user_info`] are kept for scripts to read.

use super::checker::{lease_spans, History, LeaseSpan, NodeRecord};
use super::{Event, NodeMachine, Simulation};
use roster_core::PartitionId;
use roster_core::{ActivationEnd, Input, PeerMsg, Record, ReplyTo, UserAnswer, UserEffect, UserView};
use roster_core::{Incarnation, Millis, SlotToken, UserId};
use std::collections::BTreeMap;
use std::fmt;

/// Rounding of clock conversions (as for horizons).
const ROUNDING_MS: Millis = 1;

/// One activation of one user on one node incarnation, in global time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivationSpan {
    /// The user.
    pub user: UserId,
    /// The node incarnation running it.
    pub node: Incarnation,
    /// The user's partition.
    pub partition: PartitionId,
    /// Its fencing token.
    pub token: SlotToken,
    /// The activation whose handed-over state it started from.
    pub handed_from: Option<SlotToken>,
    /// From (global).
    pub start: Millis,
    /// Until, exclusive (global).
    pub end: Millis,
    /// How it ended: its `ActivationEnded` reason, or `None` (the node died, the run ended,
    /// or its lease's deadline fenced it before the node recorded an end).
    pub ended_by: Option<ActivationEnd>,
    /// The runtime fences it at its lease's deadline.
    pub fenced: bool,
}

impl fmt::Display for ActivationSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ended = self.ended_by.as_ref().map_or(
            if self.fenced { "node gone, run over, or its lease's deadline" } else { "node gone or run over" },
            |e| e.as_str(),
        );
        write!(
            f,
            "{} on {} token {} [{}, {}) ended by {ended}",
            self.user, self.node, self.token, self.start, self.end
        )?;
        if let Some(from) = self.handed_from {
            write!(f, " (state handed over from {from})")?;
        }
        Ok(())
    }
}

/// A broken promise about user actors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActivationViolation {
    /// Two activations of one user ran at once.
    Overlap {
        /// The user.
        user: UserId,
        /// The first instant both ran.
        at: Millis,
        /// The earlier one.
        first: ActivationSpan,
        /// The later one.
        second: ActivationSpan,
    },
    /// A later activation's fencing token is not above an earlier one's.
    TokenNotIncreasing {
        /// The earlier activation.
        before: ActivationSpan,
        /// The later one.
        after: ActivationSpan,
    },
    /// An activation ran while its node held no lease on the user's partition at the
    /// activation's epoch.
    OutsideLease {
        /// The activation.
        span: ActivationSpan,
        /// The node's leases on that partition at that epoch.
        leases: Vec<LeaseSpan>,
    },
    /// An activation started from a state that was not handed over by its predecessor.
    StaleHandover {
        /// The activation.
        span: ActivationSpan,
        /// The activation before it, if any.
        previous: Option<ActivationSpan>,
    },
}

impl ActivationViolation {
    /// A short name of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ActivationViolation::Overlap { .. } => "two-activations",
            ActivationViolation::TokenNotIncreasing { .. } => "activation-token-order",
            ActivationViolation::OutsideLease { .. } => "activation-outside-lease",
            ActivationViolation::StaleHandover { .. } => "stale-handover",
        }
    }

    /// The global instant it is first visible at.
    pub fn at(&self) -> Millis {
        match self {
            ActivationViolation::Overlap { at, .. } => *at,
            ActivationViolation::TokenNotIncreasing { after, .. } => after.start,
            ActivationViolation::OutsideLease { span, .. } | ActivationViolation::StaleHandover { span, .. } => {
                span.start
            }
        }
    }
}

impl fmt::Display for ActivationViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivationViolation::Overlap { user, at, first, second } => write!(
                f,
                "two activations of {user} at t={at}, for {} ms:\n  {first}\n  {second}",
                first.end.min(second.end).saturating_sub(*at)
            ),
            ActivationViolation::TokenNotIncreasing { before, after } => {
                write!(f, "activation tokens do not grow:\n  {before}\n  {after}")
            }
            ActivationViolation::OutsideLease { span, leases } => {
                write!(f, "activation outside its node's lease:\n  {span}")?;
                for l in leases {
                    write!(f, "\n  lease {l}")?;
                }
                Ok(())
            }
            ActivationViolation::StaleHandover { span, previous } => {
                write!(f, "activation started from a state its predecessor did not hand over:\n  {span}")?;
                match previous {
                    Some(p) => write!(f, "\n  previous: {p}"),
                    None => write!(f, "\n  no previous activation"),
                }
            }
        }
    }
}

/// Rebuild every activation span from the records, earliest start first.
pub fn activation_spans(history: &History) -> Vec<ActivationSpan> {
    let mut open: BTreeMap<(Incarnation, UserId, SlotToken), ActivationSpan> = BTreeMap::new();
    // Ends met before their starts. A real cluster's record logs are merged by time, and an
    // end keeps its own date (it may be a lease's deadline) while a start takes its step's
    // microsecond stamp: an activation that ended within a millisecond of its start can sort
    // before it (chaos seed 15 in the suite). A token is minted once per incarnation, so the
    // end still names its activation.
    let mut early: BTreeMap<(Incarnation, UserId, SlotToken), (Millis, ActivationEnd)> = BTreeMap::new();
    let mut done = Vec::new();
    for NodeRecord { node, record } in &history.records {
        match record {
            Record::ActivationStarted { at, user, partition, token, handed_from, fenced, .. } => {
                let key = (node.clone(), user.clone(), *token);
                let mut span = ActivationSpan {
                    user: user.clone(),
                    node: node.clone(),
                    partition: *partition,
                    token: *token,
                    handed_from: *handed_from,
                    start: *at,
                    end: *at,
                    ended_by: None,
                    fenced: *fenced,
                };
                match early.remove(&key) {
                    Some((end, why)) => {
                        span.end = end.max(span.start);
                        span.ended_by = Some(why);
                        done.push(span);
                    }
                    None => {
                        open.insert(key, span);
                    }
                }
            }
            Record::ActivationEnded { at, user, token, why } => {
                let key = (node.clone(), user.clone(), *token);
                match open.remove(&key) {
                    Some(mut span) => {
                        span.end = (*at).max(span.start);
                        span.ended_by = Some(why.clone());
                        done.push(span);
                    }
                    None => {
                        early.insert(key, (*at, why.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    let deaths: BTreeMap<&Incarnation, Millis> =
        history.lives.iter().filter_map(|l| l.ended.map(|(at, _)| (&l.incarnation, at))).collect();
    let leases = if open.is_empty() { Vec::new() } else { lease_spans(history) };
    for ((node, _, _), mut span) in open {
        let mut end = deaths.get(&node).copied().unwrap_or(history.end);
        if span.fenced {
            // Nothing of it runs past its lease: the end of the lease span it started in.
            let lease = leases.iter().find(|l| {
                l.node == node
                    && l.partition == span.partition
                    && l.epoch == span.token.epoch
                    && l.start <= span.start + ROUNDING_MS
                    && span.start < l.end
            });
            end = end.min(lease.map_or(span.start, |l| l.end));
        }
        span.end = end.max(span.start);
        done.push(span);
    }
    done.sort_by(|a, b| (&a.user, a.start, &a.node).cmp(&(&b.user, b.start, &b.node)));
    done
}

/// Every violation of the activation rules in a history (see the module documentation).
pub fn check_activations(history: &History) -> Vec<ActivationViolation> {
    let spans = activation_spans(history);
    let leases = lease_spans(history);
    let mut found = Vec::new();
    let mut by_user: BTreeMap<&UserId, Vec<&ActivationSpan>> = BTreeMap::new();
    for s in &spans {
        by_user.entry(&s.user).or_default().push(s);
    }
    for (user, list) in by_user {
        // `list` is sorted by start.
        let mut overlap: Option<ActivationViolation> = None;
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if b.start < a.end && overlap.as_ref().is_none_or(|v| b.start < v.at()) {
                    overlap = Some(ActivationViolation::Overlap {
                        user: user.clone(),
                        at: b.start,
                        first: (*a).clone(),
                        second: (*b).clone(),
                    });
                }
            }
        }
        found.extend(overlap);
        for w in list.windows(2) {
            if w[1].token <= w[0].token {
                found.push(ActivationViolation::TokenNotIncreasing { before: w[0].clone(), after: w[1].clone() });
                break;
            }
        }
        for (i, s) in list.iter().enumerate() {
            let Some(from) = s.handed_from else { continue };
            let previous = i.checked_sub(1).map(|j| list[j]);
            let handed = previous.is_some_and(|p| {
                p.token == from
                    && matches!(p.ended_by, Some(ActivationEnd::HandedOver { ref to }) if *to == s.node.node)
            });
            if !handed {
                found.push(ActivationViolation::StaleHandover { span: (*s).clone(), previous: previous.cloned() });
            }
        }
    }
    for s in &spans {
        let mine: Vec<&LeaseSpan> = leases
            .iter()
            .filter(|l| l.node == s.node && l.partition == s.partition && l.epoch == s.token.epoch)
            .collect();
        let inside =
            mine.iter().any(|l| l.start <= s.start + ROUNDING_MS && s.end <= l.end + ROUNDING_MS) || s.end <= s.start;
        if !inside {
            found.push(ActivationViolation::OutsideLease {
                span: s.clone(),
                leases: mine.into_iter().cloned().collect(),
            });
        }
    }
    found.sort_by_key(ActivationViolation::at);
    found
}

/// What the simulation's stand-in runtime keeps: answers for scripts, and every call handed
/// to an activation.
#[derive(Clone, Debug, Default)]
pub struct SimUsers {
    next_call: u64,
    answers: BTreeMap<u64, (Millis, UserAnswer)>,
    infos: BTreeMap<u64, (Millis, Option<UserView>)>,
    /// Every call handed to an activation: global time, node, user, activation token.
    pub deliveries: Vec<(Millis, Incarnation, UserId, SlotToken)>,
}

impl<M: NodeMachine> Simulation<M> {
    /// Carry out a user effect of node `i` as a runtime would (see the module documentation).
    pub(super) fn user_effect(&mut self, i: usize, effect: UserEffect) {
        if self.trace.on() && !matches!(effect, UserEffect::Fence { .. }) {
            let name = self.nodes[i].name.clone();
            let line = user_effect_summary(&effect);
            self.trace.log(self.now, || format!("{name} USER {line}"));
        }
        match effect {
            UserEffect::Stop { user, token, why: ActivationEnd::HandedOver { .. } } => {
                let gen = self.nodes[i].gen;
                let state = Some(format!("state of {token}").into_bytes());
                let input = Input::ActivationStopped { user, token, state, failed: false };
                self.schedule(self.now + 1, Event::ClientInput { node: i, gen, input });
            }
            UserEffect::Deliver { user, token, reply, .. } => {
                let Some(me) = self.nodes[i].machine.as_ref().map(|m| m.incarnation().clone()) else { return };
                self.users.deliveries.push((self.now, me, user, token));
                let answer = UserAnswer::Reply(token.to_string().into_bytes());
                match reply {
                    Some(ReplyTo::Peer { node, call }) => {
                        let to = node.node.clone();
                        self.send(i, &to, PeerMsg::UserReply { to: node, call, answer });
                    }
                    Some(ReplyTo::Local(call)) => {
                        self.users.answers.insert(call, (self.now, answer));
                    }
                    None => {}
                }
            }
            UserEffect::Answer { call, answer } => {
                self.users.answers.insert(call, (self.now, answer));
            }
            UserEffect::Info { call, view } => {
                self.users.infos.insert(call, (self.now, view));
            }
            UserEffect::Start { .. }
            | UserEffect::Session { .. }
            | UserEffect::Stop { .. }
            | UserEffect::Fence { .. } => {}
        }
    }

    /// A backend on node `i` calls `user`'s activation; returns the call id (see
    /// [`Simulation::user_answer`]).
    pub fn user_call(&mut self, i: usize, user: UserId) -> u64 {
        self.users.next_call += 1;
        let call = self.users.next_call;
        let gen = self.nodes[i].gen;
        self.client_input(i, gen, Input::UserCall { call, user, body: Vec::new(), reply: true });
        call
    }

    /// A backend on node `i` asks for `user`'s view; returns the call id (see
    /// [`Simulation::user_info_answer`]).
    pub fn user_info(&mut self, i: usize, user: UserId) -> u64 {
        self.users.next_call += 1;
        let call = self.users.next_call;
        let gen = self.nodes[i].gen;
        self.client_input(i, gen, Input::UserInfo { call, user });
        call
    }

    /// The answer to call `call`, when and what, once it came.
    pub fn user_answer(&self, call: u64) -> Option<&(Millis, UserAnswer)> {
        self.users.answers.get(&call)
    }

    /// The answer to info request `call`, once it came.
    pub fn user_info_answer(&self, call: u64) -> Option<&(Millis, Option<UserView>)> {
        self.users.infos.get(&call)
    }

    /// What the stand-in runtime kept.
    pub fn sim_users(&self) -> &SimUsers {
        &self.users
    }
}

/// One line about a user effect.
pub fn user_effect_summary(effect: &UserEffect) -> String {
    match effect {
        UserEffect::Start { user, token, until, sessions, state, .. } => format!(
            "Start {user} token={token} until={until} sessions={} state={}",
            sessions.len(),
            if state.is_some() { "handed over" } else { "fresh" }
        ),
        UserEffect::Session { user, token, event } => format!("Session {user} token={token} {event:?}"),
        UserEffect::Stop { user, token, why } => format!("Stop {user} token={token} {}", why.as_str()),
        UserEffect::Fence { partition, epoch, until } => format!("Fence {partition}@{epoch} until={until}"),
        UserEffect::Deliver { user, token, reply, .. } => format!("Deliver {user} token={token} reply={reply:?}"),
        UserEffect::Answer { call, answer } => format!("Answer call={call} {answer:?}"),
        UserEffect::Info { call, view } => format!("Info call={call} {view:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{Life, LifeEnd};
    use roster_core::Config;

    fn inc(node: &str) -> Incarnation {
        Incarnation::new(node, node.len() as u128 + node.as_bytes()[0] as u128)
    }

    fn tok(epoch: u64, generation: u64) -> SlotToken {
        SlotToken { epoch, generation }
    }

    fn rec(node: &str, record: Record) -> NodeRecord {
        NodeRecord { node: inc(node), record }
    }

    fn started(node: &str, at: Millis, token: SlotToken, handed_from: Option<SlotToken>, fenced: bool) -> NodeRecord {
        let user = UserId::from("u");
        rec(
            node,
            Record::ActivationStarted {
                at,
                user,
                partition: PartitionId(1),
                token,
                until: at + 100,
                handed_from,
                fenced,
            },
        )
    }

    fn ended(node: &str, at: Millis, token: SlotToken, why: ActivationEnd) -> NodeRecord {
        rec(node, Record::ActivationEnded { at, user: UserId::from("u"), token, why })
    }

    fn lease(node: &str, at: Millis, epoch: u64, until: Millis) -> NodeRecord {
        rec(node, Record::LeaseHeld { at, partition: PartitionId(1), epoch, until })
    }

    fn history(records: Vec<NodeRecord>, lives: Vec<Life>, end: Millis) -> History {
        let mut h = History::new(Config::single_node());
        h.records = records;
        h.lives = lives;
        h.end = end;
        h
    }

    #[test]
    fn two_activations_at_once_are_flagged_and_one_after_the_other_are_not() {
        let apart = vec![
            lease("a", 0, 1, 100),
            started("a", 10, tok(1, 1), None, true),
            ended("a", 100, tok(1, 1), ActivationEnd::LeaseLost),
            lease("b", 150, 2, 400),
            started("b", 160, tok(2, 1), None, true),
        ];
        assert!(check_activations(&history(apart.clone(), vec![], 300)).is_empty());
        let mut overlapping = apart;
        overlapping[2] = ended("a", 200, tok(1, 1), ActivationEnd::Idle);
        let found = check_activations(&history(overlapping, vec![], 300));
        assert!(
            matches!(
                &found[..],
                [ActivationViolation::OutsideLease { .. }, ActivationViolation::Overlap { at: 160, .. }]
            ),
            "{found:?}"
        );
    }

    #[test]
    fn a_fenced_activation_of_a_node_that_died_ends_at_its_leases_deadline_an_unfenced_one_at_the_death() {
        let death = vec![Life { incarnation: inc("a"), started: 0, ended: Some((130, LifeEnd::Crashed)) }];
        let records = |fenced| {
            vec![
                lease("a", 0, 1, 100),
                started("a", 10, tok(1, 1), None, fenced),
                lease("b", 110, 2, 400),
                started("b", 120, tok(2, 1), None, true),
            ]
        };
        let fenced = history(records(true), death.clone(), 300);
        assert_eq!(activation_spans(&fenced)[0].end, 100);
        assert!(check_activations(&fenced).is_empty());
        let unfenced = history(records(false), death, 300);
        assert_eq!(activation_spans(&unfenced)[0].end, 130);
        let found = check_activations(&unfenced);
        assert!(found.iter().any(|v| matches!(v, ActivationViolation::Overlap { at: 120, .. })), "{found:?}");
    }

    #[test]
    fn a_state_must_come_from_the_predecessor_that_handed_over_to_this_node() {
        let good = vec![
            lease("a", 0, 1, 100),
            started("a", 10, tok(1, 1), None, true),
            ended("a", 50, tok(1, 1), ActivationEnd::HandedOver { to: "b".into() }),
            lease("b", 60, 2, 400),
            started("b", 70, tok(2, 1), Some(tok(1, 1)), true),
        ];
        assert!(check_activations(&history(good.clone(), vec![], 300)).is_empty());
        let mut stale = good.clone();
        stale[4] = started("b", 70, tok(2, 1), Some(tok(0, 9)), true);
        let found = check_activations(&history(stale, vec![], 300));
        assert!(matches!(&found[..], [ActivationViolation::StaleHandover { .. }]), "{found:?}");
        let mut lost = good;
        lost[2] = ended("a", 50, tok(1, 1), ActivationEnd::LeaseLost);
        let found = check_activations(&history(lost, vec![], 300));
        assert!(
            matches!(&found[..], [ActivationViolation::StaleHandover { .. }]),
            "a failover passes no state: {found:?}"
        );
    }

    #[test]
    fn tokens_must_grow_from_activation_to_activation() {
        let records = vec![
            lease("a", 0, 5, 100),
            started("a", 10, tok(5, 2), None, true),
            ended("a", 20, tok(5, 2), ActivationEnd::Idle),
            started("a", 30, tok(5, 1), None, true),
        ];
        let found = check_activations(&history(records, vec![], 90));
        assert!(matches!(&found[..], [ActivationViolation::TokenNotIncreasing { .. }]), "{found:?}");
    }
}
