//! Scripted runs: a readable list of [`Step`]s played against a quiet [`Simulation`]
//! (calm network, no random faults or clients), printing like a script:
//!
//! ```text
//! pick alice homed on n0
//! join A: alice tab a on n1 room:1
//! await A joined
//! cut n1 <-> *
//! ```
//!
//! Clients and users are named in the script; [`Step::PickUser`] binds a name to a user id
//! whose partition the given node holds at that moment (and, optionally, whose next home
//! would be a given node if that one died: the partition ring's preference among the
//! others), so scripts never hard-code hash values.

use super::checker::JoinKind;
use super::{ClientId, NodeMachine, RunReport, SimParams, Simulation};
use crate::ids::{Millis, NodeName, TabId, Topic, UserId};
use crate::{partition_of, preferred_home, PartitionId};
use std::collections::BTreeMap;

/// One step of a script. Node names are `n0`, `n1`, ...; `"*"` means every other node.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Let `ms` pass.
    Advance(Millis),
    /// Name a user whose partition `home` holds now; with `next`, one whose partition would go
    /// to `next` if `home` died (its preferred node among the others); with `preferred`, one
    /// whose partition prefers that node among all nodes (so it moves there by handover).
    PickUser {
        /// The name used in later steps.
        alias: &'static str,
        /// The node that must be the user's home now.
        home: &'static str,
        /// The node that must be its next home.
        next: Option<&'static str>,
        /// The node its partition prefers among all nodes.
        preferred: Option<&'static str>,
    },
    /// Open a socket on `node` for `user` (an alias, or a literal id) with `tab`, and join
    /// `topic`; the client is called `client`.
    Join {
        /// The client's name.
        client: &'static str,
        /// The gateway.
        node: &'static str,
        /// The user (alias or id).
        user: &'static str,
        /// The tab id.
        tab: &'static str,
        /// The topic.
        topic: &'static str,
    },
    /// The tab of `client` reconnects on `node` as client `new` (its old socket lingers).
    Resume {
        /// The old client.
        client: &'static str,
        /// The new gateway.
        node: &'static str,
        /// The new client's name.
        new: &'static str,
    },
    /// The client leaves its first topic cleanly; its socket stays open.
    Leave(&'static str),
    /// The client joins its first topic again on the same socket (after a leave or a revoke).
    Rejoin(&'static str),
    /// The client's socket drops uncleanly.
    Drop(&'static str),
    /// The client's socket closes cleanly.
    Close(&'static str),
    /// Kill a node.
    Crash(&'static str),
    /// Boot a killed node again.
    Restart(&'static str),
    /// Stop a node for `ms`.
    Pause(&'static str, Millis),
    /// Shut a node down gracefully.
    Shutdown(&'static str),
    /// Cut both directions between two nodes (`"*"`: every other node).
    Cut(&'static str, &'static str),
    /// Cut one direction, from the first to the second.
    CutOneWay(&'static str, &'static str),
    /// Heal every link.
    HealAll,
    /// Set the network's loss rate.
    Loss(f64),
    /// Hold back the next message of a kind (`SlotGrant`, `ScanReply`, ...) from one node
    /// to another, until [`Step::ReleaseHeld`].
    HoldNext {
        /// Sender.
        from: &'static str,
        /// Receiver.
        to: &'static str,
        /// Message kind.
        kind: &'static str,
    },
    /// Hold back every message of a kind from one node to another, until
    /// [`Step::ReleaseHeld`].
    HoldAll {
        /// Sender.
        from: &'static str,
        /// Receiver.
        to: &'static str,
        /// Message kind.
        kind: &'static str,
    },
    /// Stop holding messages back and deliver every held one now.
    ReleaseHeld,
    /// Deliver the earliest held message now; the others stay held, and the filters stay.
    ReleaseFirstHeld,
    /// Lose every message of a kind from one node to another from now on.
    DropAll {
        /// Sender.
        from: &'static str,
        /// Receiver.
        to: &'static str,
        /// Message kind.
        kind: &'static str,
    },
    /// Stop losing messages by kind.
    StopDropping,
    /// Run until the user's home is `node` (at most `max_ms`).
    AwaitHome {
        /// The user (alias or id).
        user: &'static str,
        /// The expected home.
        node: &'static str,
        /// Give up after this long (an expectation failure).
        max_ms: Millis,
    },
    /// Run until the client's first topic is joined (at most `max_ms`).
    AwaitJoined {
        /// The client.
        client: &'static str,
        /// Give up after this long (an expectation failure).
        max_ms: Millis,
    },
    /// Expect the client's channel to be over now (revoked, closed, failed).
    ExpectEnded(&'static str),
    /// Expect the client not to be joined now (waiting or over).
    ExpectNotJoined(&'static str),
    /// Expect the client to be joined now.
    ExpectJoined(&'static str),
    /// Expect `node`'s presence replica to show the client's connection (`shown`) or not.
    ExpectPresence {
        /// The node whose replica is read.
        node: &'static str,
        /// The client.
        client: &'static str,
        /// Whether it must show the client.
        shown: bool,
    },
}

/// What a script did and found.
#[derive(Debug)]
pub struct ScenarioReport {
    /// The run's report (violations, figures, trace, history).
    pub report: RunReport,
    /// The script as played, one line per step, with the instant.
    pub script: Vec<String>,
    /// Expectations (`Await*`, `Expect*`) that did not hold.
    pub failed_expectations: Vec<String>,
    /// The users the script named ([`Step::PickUser`]), by alias.
    pub users: BTreeMap<&'static str, UserId>,
}

impl ScenarioReport {
    /// The partition of a user the script named.
    pub fn partition_of(&self, alias: &str) -> Option<PartitionId> {
        let partitions = self.report.history.config.cluster.partitions;
        self.users.get(alias).map(|u| partition_of(u, partitions))
    }
}

impl ScenarioReport {
    /// The script, the expectation failures and the report's failure text.
    pub fn text(&self) -> String {
        format!(
            "script:\n  {}\nfailed expectations: {:?}\n{}",
            self.script.join("\n  "),
            self.failed_expectations,
            self.report.failure_text()
        )
    }
}

struct Player<M: NodeMachine> {
    sim: Simulation<M>,
    users: BTreeMap<&'static str, UserId>,
    clients: BTreeMap<&'static str, ClientId>,
    script: Vec<String>,
    failed: Vec<String>,
}

/// Play `steps` on a fresh simulation built from `params`, then check.
pub fn run_scenario<M: NodeMachine>(params: SimParams, steps: &[Step]) -> ScenarioReport {
    let mut p = Player {
        sim: Simulation::<M>::new(params),
        users: BTreeMap::new(),
        clients: BTreeMap::new(),
        script: Vec::new(),
        failed: Vec::new(),
    };
    for step in steps {
        p.play(step);
    }
    ScenarioReport { report: p.sim.finish(), script: p.script, failed_expectations: p.failed, users: p.users }
}

impl<M: NodeMachine> Player<M> {
    fn say(&mut self, line: String) {
        self.sim.narrate(line.clone());
        self.script.push(format!("{:>6}  {line}", self.sim.now()));
    }

    fn fail(&mut self, what: String) {
        self.say(format!("EXPECTATION FAILED: {what}"));
        self.failed.push(format!("t={}: {what}", self.sim.now()));
    }

    fn user(&self, name: &str) -> UserId {
        self.users.get(name).cloned().unwrap_or_else(|| UserId::from(name))
    }

    fn client(&self, name: &str) -> ClientId {
        *self.clients.get(name).unwrap_or_else(|| panic!("the script names an unknown client {name:?}"))
    }

    fn others(&self, node: &str) -> Vec<usize> {
        let me = self.sim.node_index(node);
        (0..self.sim.params().config.cluster.nodes.len()).filter(|&o| o != me).collect()
    }

    fn ends(&self, a: &str, b: &str) -> (usize, Vec<usize>) {
        let from = self.sim.node_index(a);
        let to = if b == "*" { self.others(a) } else { vec![self.sim.node_index(b)] };
        (from, to)
    }

    fn joined(&self, id: ClientId) -> bool {
        let c = self.sim.workload().get(id);
        c.channels.values().next().is_some_and(|ch| matches!(ch, super::workload::Channel::Joined { .. }))
    }

    fn play(&mut self, step: &Step) {
        match step {
            Step::Advance(ms) => {
                self.say(format!("advance {ms} ms"));
                self.sim.advance(*ms);
            }
            Step::PickUser { alias, home, next, preferred } => {
                let partitions = self.sim.params().config.cluster.partitions;
                let names: Vec<NodeName> =
                    self.sim.params().config.cluster.nodes.iter().map(|n| n.name.clone()).collect();
                let mut skip = 0;
                let user = loop {
                    let Some(u) = self.sim.user_homed_on(home, skip) else {
                        panic!(
                            "no user is homed on {home} at t={}: does the cluster hold its leases yet?",
                            self.sim.now()
                        )
                    };
                    let k: usize = u.as_str().trim_start_matches("user-").parse().expect("user-<k>");
                    skip = k + 1;
                    let p = partition_of(&u, partitions);
                    let fits = next.is_none_or(|next| {
                        let rest: Vec<&NodeName> = names.iter().filter(|n| n.as_str() != *home).collect();
                        preferred_home(p, rest).is_some_and(|n| n.as_str() == next)
                    }) && preferred
                        .is_none_or(|pref| preferred_home(p, &names).is_some_and(|n| n.as_str() == pref));
                    if fits {
                        break u;
                    }
                };
                let mut then = next.map(|n| format!(", next home {n}")).unwrap_or_default();
                if let Some(pref) = preferred {
                    then.push_str(&format!(", preferring {pref}"));
                }
                self.say(format!("pick {alias} = {user} homed on {home}{then} ({})", partition_of(&user, partitions)));
                self.users.insert(alias, user);
            }
            Step::Join { client, node, user, tab, topic } => {
                let u = self.user(user);
                self.say(format!("join {client}: {user} tab {tab} on {node} {topic}"));
                let i = self.sim.node_index(node);
                let id =
                    self.sim.client_join(i, Some(u), Some(TabId::from(*tab)), Topic::from(*topic), JoinKind::NewTab);
                match id {
                    Some(id) => {
                        self.clients.insert(client, id);
                    }
                    None => self.fail(format!("{node} is down: {client} cannot join")),
                }
            }
            Step::Resume { client, node, new } => {
                self.say(format!("resume {client} on {node} as {new}"));
                let (id, i) = (self.client(client), self.sim.node_index(node));
                match self.sim.client_resume(id, i) {
                    Some(n) => {
                        self.clients.insert(new, n);
                    }
                    None => self.fail(format!("{client} cannot resume on {node}")),
                }
            }
            Step::Leave(client) => {
                let id = self.client(client);
                let Some(topic) = self.sim.workload().get(id).channels.keys().next().cloned() else {
                    return self.fail(format!("{client} has no topic to leave"));
                };
                self.say(format!("{client} leaves {topic}"));
                self.sim.client_leave(id, topic);
            }
            Step::Rejoin(client) => {
                let id = self.client(client);
                let Some(topic) = self.sim.workload().get(id).channels.keys().next().cloned() else {
                    return self.fail(format!("{client} has no topic to join again"));
                };
                self.say(format!("{client} joins {topic} again on the same socket"));
                self.sim.client_join_topic(id, topic);
            }
            Step::Drop(client) => {
                self.say(format!("drop {client}"));
                let id = self.client(client);
                self.sim.client_close(id, false);
            }
            Step::Close(client) => {
                self.say(format!("close {client}"));
                let id = self.client(client);
                self.sim.client_close(id, true);
            }
            Step::Crash(node) => {
                self.say(format!("crash {node}"));
                let i = self.sim.node_index(node);
                self.sim.crash(i, false);
            }
            Step::Restart(node) => {
                self.say(format!("restart {node}"));
                let i = self.sim.node_index(node);
                self.sim.restart(i);
            }
            Step::Pause(node, ms) => {
                self.say(format!("pause {node} for {ms} ms"));
                let i = self.sim.node_index(node);
                self.sim.pause(i, *ms);
            }
            Step::Shutdown(node) => {
                self.say(format!("shut down {node}"));
                let i = self.sim.node_index(node);
                self.sim.shutdown(i);
            }
            Step::Cut(a, b) => {
                self.say(format!("cut {a} <-> {b}"));
                let (from, to) = self.ends(a, b);
                for t in to {
                    self.sim.cut(from, t);
                    self.sim.cut(t, from);
                }
            }
            Step::CutOneWay(a, b) => {
                self.say(format!("cut {a} -> {b}"));
                let (from, to) = self.ends(a, b);
                for t in to {
                    self.sim.cut(from, t);
                }
            }
            Step::HealAll => {
                self.say("heal all".into());
                self.sim.heal_all();
            }
            Step::Loss(p) => {
                self.say(format!("loss {:.0} %", p * 100.0));
                self.sim.network_mut().params.loss = *p;
            }
            Step::HoldNext { from, to, kind } => {
                self.say(format!("hold the next {kind} {from} -> {to}"));
                let (f, t) = (self.sim.node_index(from), self.sim.node_index(to));
                self.sim.hold_next(f, t, kind);
            }
            Step::HoldAll { from, to, kind } => {
                self.say(format!("hold every {kind} {from} -> {to}"));
                let (f, t) = (self.sim.node_index(from), self.sim.node_index(to));
                self.sim.hold_all(f, t, kind);
            }
            Step::ReleaseHeld => {
                self.say("release held messages".into());
                self.sim.release_held();
            }
            Step::ReleaseFirstHeld => {
                self.say("release the earliest held message".into());
                self.sim.release_first_held();
            }
            Step::DropAll { from, to, kind } => {
                self.say(format!("lose every {kind} {from} -> {to}"));
                let (f, t) = (self.sim.node_index(from), self.sim.node_index(to));
                self.sim.drop_all(f, t, kind);
            }
            Step::StopDropping => {
                self.say("stop losing messages by kind".into());
                self.sim.stop_dropping();
            }
            Step::AwaitHome { user, node, max_ms } => {
                let u = self.user(user);
                let p = partition_of(&u, self.sim.params().config.cluster.partitions);
                let deadline = self.sim.now() + max_ms;
                while self.sim.lease_holder(p).is_none_or(|h| h.as_str() != *node) && self.sim.now() < deadline {
                    self.sim.advance(10);
                }
                match self.sim.lease_holder(p) {
                    Some(h) if h.as_str() == *node => self.say(format!("{user}'s home is {node}")),
                    other => self.fail(format!("{user}'s home is {other:?}, not {node}, after {max_ms} ms")),
                }
            }
            Step::AwaitJoined { client, max_ms } => {
                let id = self.client(client);
                let deadline = self.sim.now() + max_ms;
                while !self.joined(id) && self.sim.now() < deadline {
                    self.sim.advance(5);
                }
                if self.joined(id) {
                    self.say(format!("{client} joined"));
                } else {
                    let state = self.sim.workload().get(id).channels.clone();
                    self.fail(format!("{client} not joined after {max_ms} ms: {state:?}"));
                }
            }
            Step::ExpectEnded(client) => {
                let id = self.client(client);
                let c = self.sim.workload().get(id);
                if c.active() {
                    let state = c.channels.clone();
                    self.fail(format!("{client} still active: {state:?}"));
                } else {
                    self.say(format!("{client} is over, as expected"));
                }
            }
            Step::ExpectJoined(client) => {
                let id = self.client(client);
                if self.joined(id) {
                    self.say(format!("{client} is joined, as expected"));
                } else {
                    let state = self.sim.workload().get(id).channels.clone();
                    self.fail(format!("{client} is not joined: {state:?}"));
                }
            }
            Step::ExpectPresence { node, client, shown } => {
                let id = self.client(client);
                let c = self.sim.workload().get(id);
                let (gateway_node, gen, socket) = (c.node, c.gen, c.socket);
                let i = self.sim.node_index(node);
                let topics = match (self.sim.incarnation_of(gateway_node, gen), self.sim.machine(i)) {
                    (Some(gateway), Some(m)) => m.presence_of(&crate::ids::ConnId { gateway, socket }),
                    _ => Vec::new(),
                };
                if topics.is_empty() == *shown {
                    let what = if *shown { "does not show" } else { "still shows" };
                    self.fail(format!("{node} {what} {client} ({topics:?})"));
                } else {
                    let what = if *shown { "shows" } else { "no longer shows" };
                    self.say(format!("{node} {what} {client}, as expected"));
                }
            }
            Step::ExpectNotJoined(client) => {
                let id = self.client(client);
                if self.joined(id) {
                    self.fail(format!("{client} is joined"));
                } else {
                    self.say(format!("{client} is not joined, as expected"));
                }
            }
        }
    }
}
