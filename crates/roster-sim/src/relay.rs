//! Validations and broadcasts in the simulation: the tokens clients were granted (which the
//! backend then validates on random nodes), and the judge of every broadcast.
//!
//! A broadcast's body is its id (`MetaValue::Int`, growing in send order). What is judged, at
//! the instant each node's core handles it:
//! - its gateway's core delivers it to its local subscribers except the sender's socket, once,
//!   and sends it to every other configured node (the core, not the transport, decides where
//!   it goes);
//! - a node whose core receives it *in order* (no later broadcast of the same gateway
//!   incarnation reached it first, as the network delivered them) delivers it once to its
//!   subscribers of the topic; a copy or a late one is not delivered;
//! - every subscriber (a client joined to the topic on that node, socket open, at that
//!   instant) receives each broadcast at most once, and the broadcasts of one gateway
//!   incarnation in the order they were sent.
//!
//! So a broadcast reaches every subscriber of its topic on every node its message reaches
//! (the network may lose it: broadcasts are not retried), at most once, in order per sender.
//! Validations are judged by the checker from the homes' `Validated` records
//! ([`crate::checker::check_validations`]).

use super::checker::Violation;
use super::rng::SimRng;
use roster_core::{
    Effect, Incarnation, Input, MetaValue, Millis, NodeName, PeerMsg, SlotToken, SocketId, Topic, UserId,
};
use std::collections::BTreeMap;

/// How many granted tokens are kept for validations (the latest ones).
const TOKENS_KEPT: usize = 400;

/// What a node's core must do with the input it is handling.
#[derive(Clone, Debug)]
pub struct Expect {
    id: i64,
    topic: Topic,
    /// `Some(except)`: a local push (from socket `except`); `None`: a peer's, with whether it
    /// is fresh (in order, as the network delivered it).
    local: Option<Option<SocketId>>,
    fresh: bool,
}

/// Counters of the relay in one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Validations answered `true`, `false`, and with no home (`None`).
    pub validations: [u64; 3],
    /// Broadcasts sent.
    pub broadcasts: u64,
    /// Broadcasts delivered to one subscriber.
    pub deliveries: u64,
}

/// The simulation's side of validations and broadcasts. See the module documentation.
#[derive(Debug, Default)]
pub struct SimRelay {
    /// The last flush id (graceful shutdowns).
    pub(crate) next_flush: u64,
    next_call: u64,
    next_broadcast: i64,
    tokens: Vec<(UserId, Topic, SlotToken)>,
    /// Per broadcast id: its gateway incarnation.
    sent: BTreeMap<i64, Incarnation>,
    /// Per `(node, boot generation, gateway incarnation)`: the highest broadcast sequence
    /// number its core received.
    arrived: BTreeMap<(usize, u64, Incarnation), u64>,
    /// Per subscriber `(node incarnation, socket)`, per gateway incarnation: the last
    /// broadcast id it received.
    received: BTreeMap<(Incarnation, SocketId), BTreeMap<Incarnation, i64>>,
    found: Vec<Violation>,
    /// Counters.
    pub stats: RelayStats,
}

impl SimRelay {
    /// A client was granted `token` (a candidate for later validations).
    pub fn granted(&mut self, user: UserId, topic: Topic, token: SlotToken) {
        if self.tokens.len() >= TOKENS_KEPT {
            self.tokens.drain(..TOKENS_KEPT / 2);
        }
        self.tokens.push((user, topic, token));
    }

    /// A token some client was granted, at random.
    pub fn pick_token(&self, rng: &mut SimRng) -> Option<(UserId, Topic, SlotToken)> {
        rng.pick(&self.tokens).cloned()
    }

    /// A fresh validation call id.
    pub fn next_call(&mut self) -> u64 {
        self.next_call += 1;
        self.next_call
    }

    /// A fresh broadcast id, sent by `origin`.
    pub fn next_broadcast(&mut self, origin: Incarnation) -> i64 {
        self.next_broadcast += 1;
        self.sent.insert(self.next_broadcast, origin);
        self.stats.broadcasts += 1;
        self.next_broadcast
    }

    /// A validation's answer reached the asking node.
    pub fn answered(&mut self, answer: Option<bool>) {
        let k = match answer {
            Some(true) => 0,
            Some(false) => 1,
            None => 2,
        };
        self.stats.validations[k] += 1;
    }

    /// Node `i` (boot `gen`) is about to handle `input`: what its core must do, for a
    /// broadcast.
    pub fn expect(&mut self, i: usize, gen: u64, input: &Input) -> Option<Expect> {
        match input {
            Input::Broadcast { except, topic, body: MetaValue::Int(id), .. } => {
                Some(Expect { id: *id, topic: topic.clone(), local: Some(*except), fresh: true })
            }
            Input::Receive { msg: PeerMsg::Broadcast { from, seq, topic, body: MetaValue::Int(id), .. }, .. } => {
                let last = self.arrived.entry((i, gen, from.clone())).or_insert(0);
                let fresh = *seq > *last;
                *last = (*last).max(*seq);
                Some(Expect { id: *id, topic: topic.clone(), local: None, fresh })
            }
            _ => None,
        }
    }

    /// Judge what node `me` did with the broadcast of `expect`.
    pub fn judge(&mut self, expect: Expect, me: &NodeName, nodes: &[NodeName], effects: &[Effect], now: Millis) {
        let id = expect.id;
        let delivered: Vec<&Option<SocketId>> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Broadcast { topic, body: MetaValue::Int(b), except, .. } if *b == id => {
                    (*topic == expect.topic).then_some(except)
                }
                _ => None,
            })
            .collect();
        let mut fail = |what: String| self.found.push(Violation::Broadcast { at: now, what });
        match expect.local {
            Some(except) => {
                if delivered != [&except] {
                    fail(format!(
                        "{me} delivered its own broadcast {id} locally as {delivered:?}, not once except {except:?}"
                    ));
                }
                for to in nodes.iter().filter(|n| *n != me) {
                    let copies = effects
                        .iter()
                        .filter(|e| {
                            matches!(e, Effect::Send { to: t, msg: PeerMsg::Broadcast { body: MetaValue::Int(b), .. } }
                            if t == to && *b == id)
                        })
                        .count();
                    if copies != 1 {
                        fail(format!("{me} sent broadcast {id} to {to} {copies} times"));
                    }
                }
            }
            None => {
                let want = usize::from(expect.fresh);
                if delivered.len() != want || delivered.iter().any(|e| e.is_some()) {
                    fail(format!(
                        "{me} delivered broadcast {id} ({}) as {delivered:?}",
                        if expect.fresh { "in order: once to all" } else { "a copy or late: not at all" }
                    ));
                }
            }
        }
    }

    /// Node `node` delivered broadcast `body` to the sockets of `subscribers`.
    pub fn delivered(
        &mut self,
        node: &Incarnation,
        topic: &Topic,
        body: &MetaValue,
        subscribers: Vec<SocketId>,
        now: Millis,
    ) {
        let MetaValue::Int(id) = body else { return };
        let Some(origin) = self.sent.get(id).cloned() else {
            self.found.push(Violation::Broadcast {
                at: now,
                what: format!("{node} delivered an unknown broadcast {body:?}"),
            });
            return;
        };
        for socket in subscribers {
            self.stats.deliveries += 1;
            let last = self.received.entry((node.clone(), socket)).or_default().entry(origin.clone()).or_insert(0);
            if *id <= *last {
                let what = if *id == *last { "a second time" } else { "after a later one of the same gateway" };
                let what = format!("{node}/{socket} in {topic} received broadcast {id} of {origin} {what} ({last})");
                self.found.push(Violation::Broadcast { at: now, what });
            }
            *last = (*last).max(*id);
        }
    }

    /// Every broken promise found.
    pub fn violations(&self) -> Vec<Violation> {
        self.found.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(from: &Incarnation, seq: u64, id: i64) -> Input {
        let msg = PeerMsg::Broadcast {
            from: from.clone(),
            seq,
            topic: "room:1".into(),
            user: "u".into(),
            event: "e".into(),
            body: MetaValue::Int(id),
        };
        Input::Receive { from: from.node.clone(), msg }
    }

    fn delivery(id: i64) -> Effect {
        Effect::Broadcast {
            topic: "room:1".into(),
            user: "u".into(),
            event: "e".into(),
            body: MetaValue::Int(id),
            except: None,
        }
    }

    #[test]
    fn a_missing_a_late_or_a_repeated_delivery_is_caught() {
        let mut r = SimRelay::default();
        let origin = Incarnation::new("n0", 1);
        let (a, b) = (r.next_broadcast(origin.clone()), r.next_broadcast(origin.clone()));
        let names: Vec<NodeName> = ["n0", "n1"].into_iter().map(NodeName::from).collect();
        // b arrives first and is delivered: right.
        let e = r.expect(1, 1, &push(&origin, 2, b)).unwrap();
        r.judge(e, &names[1], &names, &[delivery(b)], 10);
        assert!(r.violations().is_empty());
        // a arrives late: delivering it is wrong.
        let e = r.expect(1, 1, &push(&origin, 1, a)).unwrap();
        r.judge(e, &names[1], &names, &[delivery(a)], 11);
        assert_eq!(r.violations().len(), 1, "{:?}", r.violations());
        // A fresh one not delivered is wrong too.
        let c = r.next_broadcast(origin.clone());
        let e = r.expect(1, 1, &push(&origin, 3, c)).unwrap();
        r.judge(e, &names[1], &names, &[], 12);
        assert_eq!(r.violations().len(), 2);
        // A subscriber given one twice, or out of order.
        let node = Incarnation::new("n1", 2);
        r.delivered(&node, &"room:1".into(), &MetaValue::Int(b), vec![SocketId(5)], 13);
        r.delivered(&node, &"room:1".into(), &MetaValue::Int(b), vec![SocketId(5)], 14);
        r.delivered(&node, &"room:1".into(), &MetaValue::Int(a), vec![SocketId(5)], 15);
        let found: Vec<String> = r.violations().iter().map(|v| v.to_string()).collect();
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[2].contains("a second time") && found[3].contains("after a later one"), "{found:?}");
    }
}
