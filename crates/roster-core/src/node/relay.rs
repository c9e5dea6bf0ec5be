//! What a node relays for the runtime beside the slot protocol: validations of fencing tokens
//! (answered by the user's home from its slot state, at the instant it handles the question),
//! signed-in users' broadcasts (delivered to local subscribers and to every peer, at most once
//! and in order per gateway), and the flush barrier of a graceful shutdown (answered in order
//! with everything the peer sent before it).

use super::{Effect, Input, NodeState, PeerMsg, Record};
use crate::ids::{Incarnation, Millis, NodeName, SlotToken, Topic, UserId};
use crate::{partition_of, ScopeKey};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How many incarnations of one peer the broadcast filter remembers: a restarted peer's new
/// life and its previous one may both have broadcasts on the wire.
const INCARNATIONS_REMEMBERED: usize = 4;

/// The relay's state.
#[derive(Debug, Default)]
pub(super) struct Relay {
    /// The sequence number of this node's latest broadcast.
    broadcast_seq: u64,
    /// Per peer: its latest incarnations whose broadcasts arrived, each with the last one
    /// delivered.
    delivered: BTreeMap<NodeName, VecDeque<(Incarnation, u64)>>,
    /// Only with `validate_reads_current_slots` off (ablation): every token granted.
    granted: BTreeSet<(UserId, ScopeKey, SlotToken)>,
}

impl NodeState {
    /// [`Input::Validate`], [`Input::Broadcast`] and [`Input::Flush`].
    pub(super) fn relay_input(&mut self, input: Input, now: Millis, fx: &mut Vec<Effect>) {
        match input {
            Input::Validate { call, user, topic, token } => {
                let p = partition_of(&user, self.config.cluster.partitions);
                match self.home_of(p, now) {
                    Some(home) if home == self.me.node => {
                        let answer = self.validate_here(&user, &topic, token, now, fx);
                        fx.push(Effect::Validated { call, answer });
                    }
                    Some(home) => {
                        let msg = PeerMsg::Validate { from: self.me.clone(), call, user, topic, token };
                        self.send(&home, msg, fx);
                    }
                    None => fx.push(Effect::Validated { call, answer: None }),
                }
            }
            Input::Broadcast { except, topic, user, event, body } => {
                self.relay.broadcast_seq += 1;
                let seq = self.relay.broadcast_seq;
                for to in self.peers.keys().filter(|n| **n != self.me.node) {
                    let msg = PeerMsg::Broadcast {
                        from: self.me.clone(),
                        seq,
                        topic: topic.clone(),
                        user: user.clone(),
                        event: event.clone(),
                        body: body.clone(),
                    };
                    fx.push(Effect::Send { to: to.clone(), msg });
                }
                fx.push(Effect::Broadcast { topic, user, event, body, except });
            }
            Input::Flush { id } => self.flush(id, fx),
            _ => {}
        }
    }

    /// The flush barrier: ask every peer (the runtime waits for those it has a session with).
    pub(super) fn flush(&mut self, id: u64, fx: &mut Vec<Effect>) {
        for to in self.peers.keys().filter(|n| **n != self.me.node) {
            fx.push(Effect::Send { to: to.clone(), msg: PeerMsg::Flush { from: self.me.clone(), id } });
        }
    }

    /// The relay's messages of [`PeerMsg`], from `from`.
    pub(super) fn relay_receive(&mut self, from: NodeName, msg: PeerMsg, now: Millis, fx: &mut Vec<Effect>) {
        match msg {
            PeerMsg::Validate { from: asker, call, user, topic, token } => {
                let answer = self.validate_here(&user, &topic, token, now, fx);
                let to = asker.node.clone();
                self.send(&to, PeerMsg::ValidateReply { from: self.me.clone(), to: asker, call, answer }, fx);
            }
            PeerMsg::ValidateReply { to, call, answer, .. } if to == self.me => {
                fx.push(Effect::Validated { call, answer });
            }
            PeerMsg::Broadcast { from: origin, seq, topic, user, event, body } => {
                // At most once and in order per gateway incarnation: a copy or a late one is
                // dropped (a link carries frames in order; the simulation's network does not).
                let lives = self.relay.delivered.entry(from).or_default();
                let fresh = match lives.iter_mut().find(|(inc, _)| *inc == origin) {
                    Some((_, last)) if seq <= *last => false,
                    Some((_, last)) => {
                        *last = seq;
                        true
                    }
                    None => {
                        if lives.len() == INCARNATIONS_REMEMBERED {
                            lives.pop_front();
                        }
                        lives.push_back((origin, seq));
                        true
                    }
                };
                if fresh {
                    fx.push(Effect::Broadcast { topic, user, event, body, except: None });
                }
            }
            PeerMsg::Flush { from: asker, id } => {
                self.send(&asker.node, PeerMsg::FlushAck { from: self.me.clone(), id }, fx);
            }
            PeerMsg::FlushAck { id, .. } => fx.push(Effect::Flushed { peer: from, id }),
            _ => {}
        }
    }

    /// What a node that has stopped (graceful shutdown) still does: send its flush and hear
    /// the answers.
    pub(super) fn relay_after_stop(&mut self, input: Input, fx: &mut Vec<Effect>) {
        match input {
            Input::Flush { id } => self.flush(id, fx),
            Input::Receive { from, msg: PeerMsg::FlushAck { id, .. } } if self.peers.contains_key(&from) => {
                fx.push(Effect::Flushed { peer: from, id })
            }
            _ => {}
        }
    }

    /// Whether `token` holds `user`'s slot in `topic`'s scope, as this node knows it as the
    /// user's home now (`None`: it is not serving the user's partition). A home's answer is
    /// recorded for the checker.
    fn validate_here(
        &mut self,
        user: &UserId,
        topic: &Topic,
        token: SlotToken,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) -> Option<bool> {
        let scope = self.config.policy_for(topic).scope_key(topic);
        let p = partition_of(user, self.config.cluster.partitions);
        let mut answer = self.home_slot_holds(p, user, &scope, token, now)?;
        if !self.safeguards.validate_reads_current_slots {
            answer = self.relay.granted.contains(&(user.clone(), scope.clone(), token));
        }
        let epoch = self.leases.valid(p, now)?;
        fx.push(Effect::Record(Record::Validated {
            at: now,
            user: user.clone(),
            scope,
            token,
            partition: p,
            epoch,
            holds: answer,
        }));
        Some(answer)
    }

    /// A grant went out (noted only for the ablation of `validate_reads_current_slots`).
    pub(super) fn relay_note_grant(&mut self, user: &UserId, scope: &ScopeKey, token: SlotToken) {
        if !self.safeguards.validate_reads_current_slots {
            self.relay.granted.insert((user.clone(), scope.clone(), token));
        }
    }
}
