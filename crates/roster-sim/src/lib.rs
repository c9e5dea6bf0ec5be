//! A deterministic simulation of a whole cluster, and the checker of its history.
//!
//! [`Simulation`] runs N [`NodeState`]s (or any [`NodeMachine`]) in one thread on one global
//! clock: an event queue ordered by `(global ms, sequence number)`, a [`Network`] that delays,
//! loses, duplicates, reorders and cuts messages, a [`SimClock`] per node (its own offset and
//! a rate within `max_drift` of every other), [faults](faults::Fault) (kills, quick restarts,
//! pauses, graceful shutdowns, one-way cuts, non-transitive splits) and a client
//! [workload](workload::Workload). Everything random comes from the seed, so a seed replays
//! the same run exactly.
//!
//! Every message between nodes goes through the node codec ([`roster_core::codec`]: a version
//! byte, then bincode, the bytes real nodes exchange) and back.
//! Every [`Record`] the nodes emit is mapped to global time (horizons and lease ends rounded
//! later, never earlier) into a [`History`], which [`checker::check`] judges: P1, one lease
//! holder per partition, growing epochs, unique tokens; plus the liveness [`Figures`].
//!
//! ```no_run
//! use roster_sim::{SimParams, Simulation};
//! let report = Simulation::<roster_core::NodeState>::run(SimParams::random(42, 3));
//! assert!(report.passed(), "{}", report.failure_text());
//! ```
//!
//! Scripted runs ([`scenario`]) drive the same simulation step by step.

pub mod activations;
pub mod batch;
pub mod checker;
pub mod clock;
pub mod faults;
pub mod network;
pub mod relay;
pub mod rng;
pub mod scenario;
pub mod trace;
pub mod workload;

pub use checker::{check, Figures, History, PresenceDigest, Verdict, Violation};
pub use clock::SimClock;
pub use faults::{Fault, FaultMix};
pub use network::{Network, NetworkParams};
pub use rng::SimRng;
pub use workload::{ClientAction, ClientId, Workload, WorkloadMix};

use checker::{JoinKind, JoinLog, JoinOutcome, Life, LifeEnd, NodeRecord, Trouble};
use roster_core::codec;
use roster_core::{
    partition_of, AnonymousView, ClusterConfig, Config, NodeConfig, OnConflict, PartitionId, PolicyConfig, ServerConfig,
};
use roster_core::{ClientEvent, ClientJoin, Effect, Input, NodeBoot, NodeState, PeerMsg, Record, Safeguards};
use roster_core::{
    ConnId, Incarnation, Meta, MetaValue, Millis, NodeName, PhxRef, Role, SocketId, TabId, Topic, UserId,
};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use trace::Trace;
use workload::{Channel, Client};

/// The node logic a simulation drives: [`NodeState`] in every real use; tests of the
/// simulator itself plug in toy machines.
pub trait NodeMachine {
    /// Boot at local time `now`, with `safeguards` (some switched off in ablation runs).
    fn boot(boot: NodeBoot, safeguards: &Safeguards, now: Millis) -> Self
    where
        Self: Sized;
    /// Handle one input at local time `now`.
    fn handle(&mut self, input: Input, now: Millis) -> Vec<Effect>;
    /// The local instant by which the node wants a [`Input::Tick`].
    fn next_wake(&self) -> Millis;
    /// This boot's incarnation.
    fn incarnation(&self) -> &Incarnation;
    /// The node's presence lists, for the convergence check; `None` while the machine has no
    /// presence table (the check is then skipped and the report says so).
    fn presence_digest(&self) -> Option<PresenceDigest> {
        None
    }
    /// The topics in which the node shows a presence of `conn` (for ghost checks).
    fn presence_of(&self, conn: &ConnId) -> Vec<Topic> {
        let _ = conn;
        Vec::new()
    }
    /// How many client sockets the node keeps state for (for leak checks); `None` skips the
    /// check.
    fn sockets_kept(&self) -> Option<usize> {
        None
    }
}

impl NodeMachine for NodeState {
    fn boot(boot: NodeBoot, safeguards: &Safeguards, now: Millis) -> Self {
        NodeState::with_safeguards(boot, now, safeguards.clone())
    }

    fn handle(&mut self, input: Input, now: Millis) -> Vec<Effect> {
        NodeState::handle(self, input, now)
    }

    fn next_wake(&self) -> Millis {
        NodeState::next_wake(self)
    }

    fn incarnation(&self) -> &Incarnation {
        NodeState::incarnation(self)
    }

    fn presence_digest(&self) -> Option<PresenceDigest> {
        let table = self.presence();
        let mut topics: Vec<&Topic> = table.topics().collect();
        topics.sort();
        let digest = topics
            .into_iter()
            .map(|topic| {
                let list = table.list(topic, AnonymousView::List);
                let mut entries: Vec<(String, PhxRef, NodeName)> = Vec::new();
                for (key, metas) in list.iter() {
                    for m in &metas {
                        let text = |k: &str| match m.get(k) {
                            Some(MetaValue::Str(s)) => s.clone(),
                            other => format!("{other:?}"),
                        };
                        entries.push((key.to_owned(), PhxRef::from(text("phx_ref")), NodeName::from(text("node"))));
                    }
                }
                entries.sort();
                (topic.clone(), entries)
            })
            .collect();
        Some(digest)
    }

    fn presence_of(&self, conn: &ConnId) -> Vec<Topic> {
        self.presence().entries_of(conn).into_iter().map(|e| e.topic).collect()
    }

    fn sockets_kept(&self) -> Option<usize> {
        Some(self.counts().sockets)
    }
}

/// The base of simulated wall clocks (a node's wall clock is this plus its local reading),
/// so epochs look like real ones (rule 3: epochs start above the wall clock in ms).
pub const WALL_CLOCK_BASE_MS: u64 = 1_700_000_000_000;

/// Everything one run is built from.
#[derive(Clone, Debug)]
pub struct SimParams {
    /// The seed: with the same parameters, the same run.
    pub seed: u64,
    /// The cluster configuration (node names `n0`, `n1`, ...).
    pub config: Config,
    /// The safeguards every node runs with.
    pub safeguards: Safeguards,
    /// The network's behaviour.
    pub network: NetworkParams,
    /// The faults.
    pub faults: FaultMix,
    /// The clients.
    pub workload: WorkloadMix,
    /// Faults and clients act until this instant; then everything heals and goes quiet.
    pub active_ms: Millis,
    /// Length of the quiet period at the end.
    pub quiet_ms: Millis,
    /// Clock rates are drawn within this drift of each other (normally the config's).
    pub drift: f64,
    /// Round-trip every message through the node codec ([`codec_round_trip`]).
    pub codec_check: bool,
    /// Trace lines to keep (0: none, `usize::MAX`: all; a failing seed is replayed with a
    /// trace).
    pub trace_lines: usize,
    /// Also trace routine traffic (heartbeats, lease requests and replies); off, a trace
    /// shows what matters to slots.
    pub trace_routine: bool,
}

/// A small cluster configuration for simulations: nodes `n0..n{nodes-1}`, 8 partitions,
/// default timings, `join_wait_ms` 10000, one `[[policy]]` for `*`.
pub fn sim_config(nodes: usize, on_conflict: OnConflict, reserve_ms: Millis, max_slots: u32) -> Config {
    let mut config = Config::single_node();
    config.server = ServerConfig { join_wait_ms: 10_000, ..ServerConfig::default() };
    config.cluster = ClusterConfig {
        partitions: 8,
        nodes: (0..nodes)
            .map(|i| NodeConfig {
                name: NodeName::from(format!("n{i}")),
                cluster_addr: format!("127.0.0.1:{}", 4370 + i),
                http_addr: format!("127.0.0.1:{}", 4000 + i),
            })
            .collect(),
        ..ClusterConfig::default()
    };
    config.policy = vec![PolicyConfig { on_conflict, reserve_ms, max_slots, wait_ms: 5000, ..PolicyConfig::new("*") }];
    config
}

impl SimParams {
    /// A random run of `nodes` nodes for `seed`: policy, network, workload and length drawn
    /// from the seed; the standard fault mix; all safeguards on.
    pub fn random(seed: u64, nodes: usize) -> Self {
        let mut rng = SimRng::new(seed, 0);
        let on_conflict = match rng.between(0, 3) {
            0 | 1 => OnConflict::Takeover,
            2 => OnConflict::Reject,
            _ => OnConflict::Wait,
        };
        let reserve_ms = if rng.chance(0.7) { 0 } else { rng.between(500, 4000) };
        let max_slots = if rng.chance(0.1) { 2 } else { 1 };
        let config = sim_config(nodes, on_conflict, reserve_ms, max_slots);
        config.validate().expect("the simulation's configuration is valid");
        Self {
            seed,
            drift: config.cluster.max_drift,
            config,
            safeguards: Safeguards::default(),
            network: NetworkParams::random(&mut rng),
            faults: FaultMix::standard(nodes),
            workload: WorkloadMix::random(&mut rng),
            active_ms: rng.between(30_000, 60_000),
            quiet_ms: 10_000,
            codec_check: true,
            trace_lines: 0,
            trace_routine: false,
        }
    }

    /// A quiet cluster for scripted scenarios: calm network, no faults, no clients of its own,
    /// takeover policy, all safeguards on.
    pub fn scripted(seed: u64, nodes: usize) -> Self {
        let config = sim_config(nodes, OnConflict::Takeover, 0, 1);
        Self {
            seed,
            drift: config.cluster.max_drift,
            config,
            safeguards: Safeguards::default(),
            network: NetworkParams::calm(),
            faults: FaultMix::none(),
            workload: WorkloadMix::none(),
            active_ms: 0,
            quiet_ms: 0,
            codec_check: true,
            trace_lines: usize::MAX,
            trace_routine: false,
        }
    }
}

/// Counters of a run (for performance and sanity).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Inputs handled by nodes.
    pub inputs: u64,
    /// Messages sent between nodes (self-sends included).
    pub sent: u64,
    /// Message copies delivered.
    pub delivered: u64,
    /// Messages lost (loss, cuts, dead or restarted receivers).
    pub lost: u64,
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Every violation, earliest first.
    pub violations: Vec<Violation>,
    /// The liveness figures.
    pub figures: Figures,
    /// Whether presence convergence was checked (the node machine exposes its lists).
    pub presence_checked: bool,
    /// The trace (empty unless the run kept one).
    pub trace: Vec<String>,
    /// Counters.
    pub stats: SimStats,
    /// The whole history.
    pub history: History,
}

impl RunReport {
    /// No violation.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether a violation of P1 as DESIGN.md states it precisely was found: more tabs than
    /// `max_slots`, one tab on two connections for longer than a resume takes, or two nodes
    /// holding one partition's lease at once.
    pub fn found_p1(&self) -> bool {
        self.violations.iter().any(Violation::is_p1)
    }

    /// The seed, the first violation and the last 200 trace lines up to it (50 ms past its
    /// first instant), for a failure message.
    pub fn failure_text(&self) -> String {
        let mut s = format!("seed {} ({} violations)\n", self.seed, self.violations.len());
        let until = self.violations.first().map_or(Millis::MAX, |v| v.at().saturating_add(50));
        if let Some(v) = self.violations.first() {
            s.push_str(&format!("first violation: {v}\n"));
        }
        let at = |line: &String| line.split_whitespace().next().and_then(|t| t.parse::<Millis>().ok());
        let upto: Vec<&String> = self.trace.iter().filter(|l| at(l).is_none_or(|t| t <= until)).collect();
        let tail = &upto[upto.len().saturating_sub(200)..];
        if !tail.is_empty() {
            s.push_str(&format!("the {} trace lines up to t={until}:\n", tail.len()));
            for line in tail {
                s.push_str(line);
                s.push('\n');
            }
        }
        s
    }
}

/// What a scenario's filter does to the messages it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InterceptMode {
    /// Hold the next one back, then stop filtering ([`Simulation::hold_next`]).
    HoldNext,
    /// Hold every one back until released ([`Simulation::hold_all`]).
    HoldAll,
    /// Lose every one ([`Simulation::drop_all`]).
    DropAll,
}

/// A scenario's filter on one kind of message of one link.
#[derive(Clone, Debug)]
struct Intercept {
    from: usize,
    to: usize,
    kind: String,
    mode: InterceptMode,
}

#[derive(Clone, Debug)]
enum Event {
    Deliver { to: usize, to_gen: u64, from: usize, from_gen: u64, msg: PeerMsg },
    LinkDown { to: usize, to_gen: u64, peer: usize },
    Wake { node: usize, gen: u64 },
    Unpause { node: usize, gen: u64 },
    Restart { node: usize },
    Heal { from: usize, to: usize },
    ClientInput { node: usize, gen: u64, input: Input },
    ClientStep,
    ApiStep,
    FaultStep,
}

/// The event queue: `(global ms, sequence number)` order. The heap holds small keys and the
/// events wait in a slab, so sifting moves 24 bytes instead of whole messages.
#[derive(Default)]
struct EventQueue {
    heap: BinaryHeap<std::cmp::Reverse<(Millis, u64, usize)>>,
    slab: Vec<Option<Event>>,
    free: Vec<usize>,
}

impl EventQueue {
    fn push(&mut self, at: Millis, seq: u64, event: Event) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i] = Some(event);
                i
            }
            None => {
                self.slab.push(Some(event));
                self.slab.len() - 1
            }
        };
        self.heap.push(std::cmp::Reverse((at, seq, slot)));
    }

    /// The instant of the earliest event.
    fn next_at(&self) -> Option<Millis> {
        self.heap.peek().map(|r| r.0 .0)
    }

    fn pop(&mut self) -> Option<(Millis, Event)> {
        let std::cmp::Reverse((at, _, slot)) = self.heap.pop()?;
        let event = self.slab[slot].take().expect("a queued event is in the slab");
        self.free.push(slot);
        Some((at, event))
    }
}

struct SimNode<M> {
    name: NodeName,
    clock: SimClock,
    machine: Option<M>,
    /// Boot generation: messages and timers carry it, so nothing crosses a restart.
    gen: u64,
    paused_until: Option<Millis>,
    backlog: Vec<Input>,
    stored_epoch: u64,
    next_socket: u64,
    wake_at: Option<Millis>,
    life: Option<usize>,
    down_since: Option<Millis>,
    paused_since: Option<Millis>,
    cut_since: Option<Millis>,
}

/// A pause of `node` ends at `now` (it woke, or it died): record it as a trouble.
fn end_pause<M>(node: &mut SimNode<M>, troubles: &mut Vec<Trouble>, now: Millis) {
    node.paused_until = None;
    if let Some(since) = node.paused_since.take() {
        troubles.push(Trouble { node: node.name.clone(), from: since, until: now, what: "paused" });
    }
}

/// A running simulation. See the module documentation.
pub struct Simulation<M: NodeMachine = NodeState> {
    params: SimParams,
    now: Millis,
    queue: EventQueue,
    seq: u64,
    nodes: Vec<SimNode<M>>,
    network: Network,
    workload: Workload,
    history: History,
    trace: Trace,
    rng_net: SimRng,
    rng_faults: SimRng,
    rng_clients: SimRng,
    rng_ids: SimRng,
    /// `(node, gen)` whose messages on the wire were lost with it.
    purged: BTreeSet<(usize, u64)>,
    active: bool,
    intercepts: Vec<Intercept>,
    held: Vec<(usize, usize, u64, PeerMsg)>,
    stats: SimStats,
    /// Every boot's incarnation, by `(node, gen)`.
    incarnations: BTreeMap<(usize, u64), Incarnation>,
    /// When [`Simulation::settle`] healed everything (presence is checked after a quiet time).
    settled_at: Option<Millis>,
    /// The codec round trip of every message sent, done once per distinct message.
    codec: CodecCheck,
    /// The stand-in runtime of user actors (`activations.rs`).
    users: activations::SimUsers,
    /// Validations and broadcasts (`relay.rs`).
    relay: relay::SimRelay,
    rng_api: SimRng,
}

/// The round trip of [`codec_round_trip`], done once per distinct message of a sender:
/// a node sends the same heartbeat or lease request to every node in turn, and a message
/// equal to one that survived the round trip survives it too (the round trip is a pure
/// function of the value), so only the first copy is encoded and decoded.
#[derive(Default)]
struct CodecCheck {
    /// Per sender, the last message checked.
    last: Vec<Option<PeerMsg>>,
}

impl CodecCheck {
    /// `msg` after a codec round trip (or `msg` itself if its sender's last message was equal).
    fn check(&mut self, from: usize, msg: PeerMsg) -> PeerMsg {
        if self.last.len() <= from {
            self.last.resize(from + 1, None);
        }
        if self.last[from].as_ref() == Some(&msg) {
            return msg;
        }
        let back = codec_round_trip(&msg);
        self.last[from] = Some(msg);
        back
    }
}

impl<M: NodeMachine> Simulation<M> {
    /// A cluster of `params.config`'s nodes, all booted at global time 0. Nothing runs until
    /// [`Simulation::run_until`] (or [`Simulation::run`] for a whole random run).
    pub fn new(params: SimParams) -> Self {
        let n = params.config.cluster.nodes.len();
        let mut rng_clocks = SimRng::new(params.seed, 1);
        let half = params.drift * 0.495;
        let nodes = params
            .config
            .cluster
            .nodes
            .iter()
            .map(|nc| {
                let rate = match rng_clocks.between(0, 3) {
                    0 => 1.0 - half,
                    1 => 1.0 + half,
                    _ => rng_clocks.float_between(1.0 - half, 1.0 + half),
                };
                SimNode {
                    name: nc.name.clone(),
                    clock: SimClock::new(rng_clocks.float_between(0.0, 1_000_000.0).floor(), rate),
                    machine: None,
                    gen: 0,
                    paused_until: None,
                    backlog: Vec::new(),
                    stored_epoch: 0,
                    next_socket: 1,
                    wake_at: None,
                    life: None,
                    down_since: Some(0),
                    paused_since: None,
                    cut_since: None,
                }
            })
            .collect();
        let params_seed = params.seed;
        let mut sim = Self {
            network: Network::new(n, params.network.clone()),
            workload: Workload::new(params.workload.clone()),
            history: History::new(params.config.clone()),
            trace: Trace::new(params.trace_lines),
            rng_net: SimRng::new(params.seed, 2),
            rng_faults: SimRng::new(params.seed, 3),
            rng_clients: SimRng::new(params.seed, 4),
            rng_ids: SimRng::new(params.seed, 5),
            params,
            now: 0,
            queue: EventQueue::default(),
            seq: 0,
            nodes,
            purged: BTreeSet::new(),
            active: false,
            intercepts: Vec::new(),
            held: Vec::new(),
            stats: SimStats::default(),
            incarnations: BTreeMap::new(),
            settled_at: None,
            codec: CodecCheck::default(),
            users: Default::default(),
            relay: Default::default(),
            rng_api: SimRng::new(params_seed, 6),
        };
        for i in 0..n {
            sim.boot(i);
        }
        sim
    }

    /// A whole random run: clients and faults until `active_ms`, then every fault heals,
    /// every node comes back, and the cluster runs quiet for `quiet_ms`; then the checker.
    pub fn run(params: SimParams) -> RunReport {
        let mut sim = Self::new(params);
        sim.start_activity();
        let active = sim.params.active_ms;
        sim.run_until(active);
        sim.settle();
        sim.run_until(active + sim.params.quiet_ms);
        // The quiet period is quiet for clients and faults, not necessarily for the nodes
        // (a slot may still expire, a lease move): give presence up to 3 s more to converge,
        // and report how long it took.
        let mut extra = 0;
        while extra < 3000 && !sim.check_presence().is_empty() {
            sim.advance(50);
            extra += 50;
        }
        let mut report = sim.finish();
        if report.presence_checked {
            report.figures.presence_extra_ms.push(extra);
        }
        report
    }

    /// Start the random clients and faults.
    pub fn start_activity(&mut self) {
        self.active = true;
        if self.params.workload.users > 0 || self.params.workload.weights.anonymous > 0 {
            let first = self.rng_clients.between(self.params.workload.step_ms.0, self.params.workload.step_ms.1);
            self.schedule(first, Event::ClientStep);
        }
        if let Some((lo, hi)) = self.params.workload.api_step_ms {
            let first = self.rng_api.between(lo, hi);
            self.schedule(first, Event::ApiStep);
        }
        if self.params.faults.start_after_ms != Millis::MAX {
            let first = self.params.faults.start_after_ms
                + self.rng_faults.between(self.params.faults.step_ms.0, self.params.faults.step_ms.1);
            self.schedule(first, Event::FaultStep);
        }
    }

    /// Stop clients and faults, heal every link, end delay spikes (loss, duplication and
    /// reordering stay), wake paused nodes and restart dead ones.
    pub fn settle(&mut self) {
        self.active = false;
        self.settled_at = Some(self.now);
        self.network.params.spike_chance = 0.0;
        self.trace.log(self.now, || "SETTLE: heal everything, restart every node, quiet".into());
        self.heal_all();
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused_until.is_some() {
                self.unpause(i);
            }
            if self.nodes[i].machine.is_none() {
                self.boot(i);
            }
        }
    }

    /// Check the history (and presence, when the machines expose it) and report.
    pub fn finish(mut self) -> RunReport {
        self.history.end = self.now;
        self.close_troubles();
        let verdict = check(&self.history);
        let mut violations = verdict.violations;
        violations.extend(self.relay.violations());
        // P5: every wait ends within join_wait_ms; a join still pending on an open socket
        // long after that was silently lost.
        let bound = self.params.config.server.join_wait_ms + 1000;
        for c in self.workload.clients.iter().filter(|c| c.open) {
            for ch in c.channels.values() {
                if let Channel::Joining { log } = ch {
                    let join = &self.history.joins[*log];
                    // A paused gateway answers nothing; its wait counts from when it handles
                    // the join, so the time it spent paused after the join is added.
                    let name = &self.nodes[c.node].name;
                    let paused: Millis = self
                        .history
                        .troubles
                        .iter()
                        .filter(|t| &t.node == name && t.what == "paused" && t.until > join.at)
                        .map(|t| t.until.min(self.now).saturating_sub(t.from.max(join.at)))
                        .sum();
                    if join.at + bound + paused < self.now && self.nodes[c.node].gen == c.gen {
                        violations.push(Violation::UnansweredJoin { join: join.clone(), end: self.now });
                    }
                }
            }
        }
        let quiet = self.settled_at.is_some_and(|t| self.now >= t + 5000);
        let presence_checked =
            quiet && self.nodes.iter().filter_map(|n| n.machine.as_ref()).all(|m| m.presence_digest().is_some());
        if presence_checked {
            violations.extend(self.check_presence());
        }
        let mut figures = verdict.figures;
        figures.broadcasts = [self.relay.stats.broadcasts, self.relay.stats.deliveries];
        RunReport {
            seed: self.params.seed,
            violations,
            figures,
            presence_checked,
            trace: self.trace.lines(),
            stats: self.stats,
            history: self.history,
        }
    }

    /// P3, P4, P5 after a quiet period: live nodes agree on every list, show every joined
    /// connection of a live gateway and nothing of connections that are over.
    pub fn check_presence(&self) -> Vec<Violation> {
        let live: Vec<(usize, &M)> =
            self.nodes.iter().enumerate().filter_map(|(i, n)| n.machine.as_ref().map(|m| (i, m))).collect();
        let digests: Vec<(Incarnation, PresenceDigest)> =
            live.iter().filter_map(|(_, m)| Some((m.incarnation().clone(), m.presence_digest()?))).collect();
        let names: Vec<NodeName> = live.iter().map(|(i, _)| self.nodes[*i].name.clone()).collect();
        let mut found = checker::check_presence(&digests, &names);
        // No leaks: a live gateway keeps exactly the sockets its clients have open.
        for (i, m) in &live {
            let gen = self.nodes[*i].gen;
            let open = self.workload.clients.iter().filter(|c| c.node == *i && c.gen == gen && c.open).count();
            if let Some(kept) = m.sockets_kept().filter(|&k| k != open) {
                found.push(Violation::SocketsLeaked { node: m.incarnation().clone(), kept, open });
            }
        }
        for c in &self.workload.clients {
            let Some(gateway) = self.incarnations.get(&(c.node, c.gen)) else { continue };
            let conn = ConnId { gateway: gateway.clone(), socket: c.socket };
            let gateway_live = self.nodes[c.node].machine.is_some() && self.nodes[c.node].gen == c.gen;
            for (_, m) in &live {
                let shown: BTreeSet<Topic> = m.presence_of(&conn).into_iter().collect();
                for topic in &shown {
                    let why = match c.channels.get(topic) {
                        _ if !gateway_live => format!("its gateway {gateway} is gone"),
                        _ if !c.open => "its socket closed".to_owned(),
                        Some(Channel::Joined { .. }) | Some(Channel::Joining { .. }) => continue,
                        Some(Channel::Ended { why }) => format!("its channel ended: {why}"),
                        None => "it never joined that topic".to_owned(),
                    };
                    let node = m.incarnation().clone();
                    found.push(Violation::GhostPresence { node, topic: topic.clone(), conn: conn.clone(), why });
                }
                if gateway_live && c.open {
                    for (topic, ch) in &c.channels {
                        if matches!(ch, Channel::Joined { .. }) && !shown.contains(topic) {
                            let node = m.incarnation().clone();
                            found.push(Violation::MissingPresence { node, topic: topic.clone(), conn: conn.clone() });
                        }
                    }
                }
            }
        }
        found
    }

    /// Global time now.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// The parameters of this run.
    pub fn params(&self) -> &SimParams {
        &self.params
    }

    /// The history so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The trace so far.
    pub fn trace_lines(&self) -> Vec<String> {
        self.trace.lines()
    }

    /// The clients so far.
    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// The index of node `name`.
    ///
    /// # Panics
    /// If no node has that name (a scenario typo).
    pub fn node_index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name.as_str() == name)
            .unwrap_or_else(|| panic!("no simulated node named {name:?}"))
    }

    /// Node `i`'s machine, if it is running.
    pub fn machine(&self, i: usize) -> Option<&M> {
        self.nodes[i].machine.as_ref()
    }

    /// The incarnation of node `i`'s boot `gen`, if it booted.
    pub fn incarnation_of(&self, i: usize, gen: u64) -> Option<roster_core::Incarnation> {
        self.incarnations.get(&(i, gen)).cloned()
    }

    /// Node `i`'s clock.
    pub fn clock(&self, i: usize) -> SimClock {
        self.nodes[i].clock
    }

    /// Whether node `i` runs (booted and not killed; it may be paused).
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].machine.is_some()
    }

    /// Add a line to the trace (scenarios narrate their steps).
    pub fn narrate(&mut self, line: impl Into<String>) {
        let line = line.into();
        self.trace.log(self.now, || format!("SCRIPT {line}"));
    }

    /// Process every event up to and including global instant `t`, then stand at `t`.
    pub fn run_until(&mut self, t: Millis) {
        while self.queue.next_at().is_some_and(|at| at <= t) {
            let (at, event) = self.queue.pop().expect("peeked");
            self.now = at;
            self.dispatch(event);
        }
        self.now = self.now.max(t);
    }

    /// Run for `ms` more milliseconds.
    pub fn advance(&mut self, ms: Millis) {
        self.run_until(self.now + ms);
    }

    /// The node holding a valid lease on `partition` now, from the records.
    pub fn lease_holder(&self, partition: PartitionId) -> Option<NodeName> {
        let mut h = self.history.clone();
        h.end = self.now;
        checker::lease_spans(&h)
            .into_iter()
            .filter(|s| s.partition == partition && s.start <= self.now && self.now < s.end)
            .map(|s| s.node.node.clone())
            .next()
    }

    /// A user id (`user-<k>`, from `skip` on) whose partition `node` holds now.
    pub fn user_homed_on(&self, node: &str, skip: usize) -> Option<UserId> {
        let mut h = self.history.clone();
        h.end = self.now;
        let spans = checker::lease_spans(&h);
        let partitions = self.params.config.cluster.partitions;
        (skip..skip + 10_000).map(|k| UserId::from(format!("user-{k}"))).find(|u| {
            let p = partition_of(u, partitions);
            spans
                .iter()
                .any(|s| s.partition == p && s.node.node.as_str() == node && s.start <= self.now && self.now < s.end)
        })
    }

    // ---- faults -------------------------------------------------------------------------

    /// Kill node `i` (SIGKILL) between two inputs. With `drop_outbound`, what it had on the
    /// wire is lost too. Peers whose link from it is up notice the closed connection.
    pub fn crash(&mut self, i: usize, drop_outbound: bool) {
        if self.nodes[i].machine.is_none() {
            return;
        }
        self.trace.log(self.now, || format!("FAULT crash {} (drop outbound: {drop_outbound})", self.nodes[i].name));
        self.end_life(i, LifeEnd::Crashed);
        if drop_outbound {
            self.purged.insert((i, self.nodes[i].gen));
        }
    }

    /// Shut node `i` down gracefully: it handles [`Input::Shutdown`], its messages go out,
    /// then the process exits.
    pub fn shutdown(&mut self, i: usize) {
        if self.nodes[i].machine.is_none() {
            return;
        }
        self.trace.log(self.now, || format!("FAULT shutdown {}", self.nodes[i].name));
        if self.nodes[i].paused_until.is_some() {
            self.unpause(i);
        }
        self.handle(i, Input::Shutdown);
        // As `Node::shutdown`: the flush follows the releases and the goodbye; each peer's
        // link goes down when the flush reaches it (see `dispatch`), not at once.
        self.relay.next_flush += 1;
        let id = self.relay.next_flush;
        self.handle(i, Input::Flush { id });
        self.end_life_quietly(i, LifeEnd::ShutDown);
    }

    /// Boot node `i` again (a new incarnation) if it is down.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].machine.is_none() {
            self.boot(i);
        }
    }

    /// Stop node `i` for `ms` (SIGSTOP): it handles nothing; what arrives queues up and is
    /// handled in a burst at wake-up, after a `Tick`.
    pub fn pause(&mut self, i: usize, ms: Millis) {
        let node = &mut self.nodes[i];
        if node.machine.is_none() {
            return;
        }
        let until = self.now + ms;
        node.paused_until = Some(node.paused_until.map_or(until, |u| u.max(until)));
        node.paused_since.get_or_insert(self.now);
        node.wake_at = None;
        let gen = node.gen;
        self.trace.log(self.now, || format!("FAULT pause {} for {ms} ms", self.nodes[i].name));
        self.schedule(until, Event::Unpause { node: i, gen });
    }

    /// Cut `from → to`.
    pub fn cut(&mut self, from: usize, to: usize) {
        self.trace.log(self.now, || format!("FAULT cut {} -> {}", self.nodes[from].name, self.nodes[to].name));
        self.network.cut(from, to);
        self.update_cut_troubles();
    }

    /// Heal `from → to`.
    pub fn heal(&mut self, from: usize, to: usize) {
        if self.network.is_cut(from, to) {
            self.trace.log(self.now, || format!("HEAL {} -> {}", self.nodes[from].name, self.nodes[to].name));
        }
        self.network.heal(from, to);
        self.update_cut_troubles();
    }

    /// Heal every link (and drop scenario delays).
    pub fn heal_all(&mut self) {
        self.network.heal_all();
        self.update_cut_troubles();
    }

    /// The network, to change its behaviour mid-run (loss, delays).
    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.network
    }

    /// Hold back the next message of kind `kind` (`SlotGrant`, `ScanReply`, ...) from `from`
    /// to `to` until [`Simulation::release_held`].
    pub fn hold_next(&mut self, from: usize, to: usize, kind: &str) {
        self.intercepts.push(Intercept { from, to, kind: kind.to_owned(), mode: InterceptMode::HoldNext });
    }

    /// Hold back every message of kind `kind` from `from` to `to` until
    /// [`Simulation::release_held`].
    pub fn hold_all(&mut self, from: usize, to: usize, kind: &str) {
        self.intercepts.push(Intercept { from, to, kind: kind.to_owned(), mode: InterceptMode::HoldAll });
    }

    /// Lose every message of kind `kind` from `from` to `to` from now on.
    pub fn drop_all(&mut self, from: usize, to: usize, kind: &str) {
        self.intercepts.push(Intercept { from, to, kind: kind.to_owned(), mode: InterceptMode::DropAll });
    }

    /// Stop losing messages by kind (held messages stay held).
    pub fn stop_dropping(&mut self) {
        self.intercepts.retain(|i| i.mode != InterceptMode::DropAll);
    }

    /// Stop holding messages back and deliver every held one now (in the order they were
    /// held).
    pub fn release_held(&mut self) {
        self.intercepts.retain(|i| i.mode == InterceptMode::DropAll);
        for (from, to, from_gen, msg) in std::mem::take(&mut self.held) {
            self.trace.log(self.now, || format!("SCRIPT release held {}", trace::msg_summary(&msg)));
            let to_gen = self.nodes[to].gen;
            self.schedule(self.now, Event::Deliver { to, to_gen, from, from_gen, msg });
        }
    }

    /// Deliver the earliest held message now; the others stay held and the filters stay.
    pub fn release_first_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let (from, to, from_gen, msg) = self.held.remove(0);
        self.trace.log(self.now, || format!("SCRIPT release held {}", trace::msg_summary(&msg)));
        let to_gen = self.nodes[to].gen;
        self.schedule(self.now, Event::Deliver { to, to_gen, from, from_gen, msg });
    }

    /// Carry out one fault.
    pub fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::Crash { node, restart_after, drop_outbound } => {
                self.crash(node, drop_outbound);
                if let Some(ms) = restart_after {
                    self.schedule(self.now + ms, Event::Restart { node });
                }
            }
            Fault::Pause { node, ms } => self.pause(node, ms),
            Fault::Shutdown { node, restart_after } => {
                self.shutdown(node);
                if let Some(ms) = restart_after {
                    self.schedule(self.now + ms, Event::Restart { node });
                }
            }
            Fault::Cut { from, to, both, ms } => {
                self.cut(from, to);
                self.schedule(self.now + ms, Event::Heal { from, to });
                if both {
                    self.cut(to, from);
                    self.schedule(self.now + ms, Event::Heal { from: to, to: from });
                }
            }
            Fault::Split { a, c, ms } => {
                self.cut(a, c);
                self.cut(c, a);
                self.schedule(self.now + ms, Event::Heal { from: a, to: c });
                self.schedule(self.now + ms, Event::Heal { from: c, to: a });
            }
            Fault::Isolate { node, ms } => {
                for o in (0..self.nodes.len()).filter(|&o| o != node) {
                    self.cut(node, o);
                    self.cut(o, node);
                    self.schedule(self.now + ms, Event::Heal { from: node, to: o });
                    self.schedule(self.now + ms, Event::Heal { from: o, to: node });
                }
            }
            Fault::HealAll => {
                self.trace.log(self.now, || "HEAL all links".into());
                self.heal_all();
            }
        }
    }

    // ---- clients ------------------------------------------------------------------------

    /// Open a socket on node `i` for `user` (`None`: anonymous) with `tab`, and join `topic`.
    pub fn client_join(
        &mut self,
        i: usize,
        user: Option<UserId>,
        tab: Option<TabId>,
        topic: Topic,
        kind: JoinKind,
    ) -> Option<ClientId> {
        self.open_client(i, user, tab, None, topic, kind)
    }

    /// Another topic on the same socket.
    pub fn client_join_topic(&mut self, id: ClientId, topic: Topic) {
        self.join_channel(id, topic, JoinKind::SameSocket);
    }

    /// The tab of client `id` reconnects on node `i` (a new socket, the same tab id and
    /// topics); the old socket is left as is: its gateway has not noticed anything.
    pub fn client_resume(&mut self, id: ClientId, i: usize) -> Option<ClientId> {
        let old = self.workload.get(id).clone();
        self.workload.get_mut(id).abandoned = true;
        let topics: Vec<Topic> =
            old.channels.iter().filter(|(_, c)| !matches!(c, Channel::Ended { .. })).map(|(t, _)| t.clone()).collect();
        let topics = if topics.is_empty() { old.channels.keys().cloned().collect() } else { topics };
        let (first, rest) = topics.split_first()?;
        let new =
            self.open_client(i, old.user.clone(), old.tab.clone(), old.slot_of, first.clone(), JoinKind::Resume)?;
        for t in rest {
            self.join_channel(new, t.clone(), JoinKind::Resume);
        }
        Some(new)
    }

    /// The client leaves `topic` cleanly.
    pub fn client_leave(&mut self, id: ClientId, topic: Topic) {
        let c = self.workload.get_mut(id);
        if !c.open {
            return;
        }
        c.channels.insert(topic.clone(), Channel::Ended { why: "left".into() });
        let (node, gen, socket) = (c.node, c.gen, c.socket);
        self.client_input(node, gen, Input::Leave { socket, topic });
    }

    /// The client's socket closes (`clean`: on purpose; otherwise a drop).
    pub fn client_close(&mut self, id: ClientId, clean: bool) {
        let c = self.workload.get(id);
        if !c.open {
            return;
        }
        let (node, gen, socket) = (c.node, c.gen, c.socket);
        let pending = self.workload.socket_gone(id, if clean { "closed" } else { "dropped" });
        self.answer(pending, JoinOutcome::Gone);
        self.client_input(node, gen, Input::SocketClosed { socket, clean });
    }

    /// The backend kicks `user` through node `i`.
    pub fn kick(&mut self, i: usize, user: UserId, topic: Option<Topic>) {
        let gen = self.nodes[i].gen;
        self.client_input(i, gen, Input::Kick { user, topic, reason: "kicked".into() });
    }

    /// Carry out a workload action (the gateway node is drawn at random among running nodes).
    pub fn perform(&mut self, action: ClientAction) {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].machine.is_some()).collect();
        let Some(&node) = self.rng_clients.pick(&running) else { return };
        match action {
            ClientAction::Open { user, tab, slot_of, topic, kind } => {
                self.open_client(node, user, tab, slot_of, topic, kind);
            }
            ClientAction::Resume { from } => {
                let old = self.workload.get(from).clone();
                if self.client_resume(from, node).is_some() {
                    // The old socket's gateway notices the drop later (or dies first).
                    let later = self.now + self.rng_clients.between(100, 8000);
                    let input = Input::SocketClosed { socket: old.socket, clean: false };
                    self.schedule(later, Event::ClientInput { node: old.node, gen: old.gen, input });
                }
            }
            ClientAction::JoinAnother { client, topic } => self.client_join_topic(client, topic),
            ClientAction::Leave { client, topic } => self.client_leave(client, topic),
            ClientAction::CloseSocket { client, clean } => self.client_close(client, clean),
            ClientAction::UpdateMeta { client, topic } => {
                let c = self.workload.get(client);
                let (n, gen, socket) = (c.node, c.gen, c.socket);
                let mut meta = Meta::new();
                meta.insert("status".into(), MetaValue::Int(self.rng_clients.between(0, 9) as i64));
                self.client_input(n, gen, Input::UpdateMeta { socket, topic, meta });
            }
            ClientAction::Kick { user, topic } => self.kick(node, user, topic),
        }
    }

    fn open_client(
        &mut self,
        i: usize,
        user: Option<UserId>,
        tab: Option<TabId>,
        slot_of: Option<(usize, usize)>,
        topic: Topic,
        kind: JoinKind,
    ) -> Option<ClientId> {
        let node = &mut self.nodes[i];
        node.machine.as_ref()?;
        let socket = SocketId(node.next_socket);
        node.next_socket += 1;
        let id = self.workload.add(Client {
            id: ClientId(0),
            node: i,
            gen: node.gen,
            socket,
            user,
            tab,
            slot_of,
            channels: Default::default(),
            open: true,
            abandoned: false,
        });
        self.join_channel(id, topic, kind);
        Some(id)
    }

    fn join_channel(&mut self, id: ClientId, topic: Topic, kind: JoinKind) {
        let c = self.workload.get(id);
        if !c.open {
            return;
        }
        let (i, gen, socket, user, tab) = (c.node, c.gen, c.socket, c.user.clone(), c.tab.clone());
        let Some(gateway) = self.nodes[i].machine.as_ref().map(|m| m.incarnation().clone()) else { return };
        if self.nodes[i].gen != gen {
            return;
        }
        let log = self.history.joins.len();
        self.history.joins.push(JoinLog {
            at: self.now,
            gateway,
            socket,
            user: user.clone(),
            tab: tab.clone(),
            topic: topic.clone(),
            kind,
            outcome: None,
        });
        self.workload.get_mut(id).channels.insert(topic.clone(), Channel::Joining { log });
        let mut meta = Meta::new();
        if let Some(u) = &user {
            meta.insert("name".into(), MetaValue::Str(u.to_string()));
        }
        let role = user.as_ref().map(|_| Role::from("user"));
        self.client_input(i, gen, Input::Join(ClientJoin { socket, topic, user, role, tab, meta }));
    }

    /// A backend validation of a token some client was granted (on any running node), or a
    /// joined client's broadcast.
    fn api_step(&mut self) {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].machine.is_some()).collect();
        if self.rng_api.chance(0.5) {
            let Some((user, topic, token)) = self.relay.pick_token(&mut self.rng_api) else { return };
            let Some(&node) = self.rng_api.pick(&running) else { return };
            let call = self.relay.next_call();
            self.deliver(node, Input::Validate { call, user, topic, token });
            return;
        }
        let senders: Vec<(usize, u64, SocketId, UserId, Topic)> = self
            .workload
            .clients
            .iter()
            .filter(|c| {
                c.open && !c.abandoned && self.nodes[c.node].gen == c.gen && self.nodes[c.node].machine.is_some()
            })
            .filter_map(|c| c.user.clone().map(|u| (c, u)))
            .flat_map(|(c, u)| {
                c.channels
                    .iter()
                    .filter(|(_, ch)| matches!(ch, Channel::Joined { .. }))
                    .map(move |(t, _)| (c.node, c.gen, c.socket, u.clone(), t.clone()))
            })
            .collect();
        let Some((node, gen, socket, user, topic)) = self.rng_api.pick(&senders).cloned() else { return };
        let origin = self.nodes[node].machine.as_ref().expect("running").incarnation().clone();
        let id = self.relay.next_broadcast(origin);
        let body = MetaValue::Int(id);
        let input = Input::Broadcast { except: Some(socket), topic, user, event: "shout".into(), body };
        self.client_input(node, gen, input);
    }

    fn answer(&mut self, logs: Vec<usize>, outcome: JoinOutcome) {
        for l in logs {
            if self.history.joins[l].outcome.is_none() {
                self.history.joins[l].outcome = Some((self.now, outcome.clone()));
            }
        }
    }

    /// An input from a client of node `i`'s boot `gen`: lost if that boot is gone.
    fn client_input(&mut self, i: usize, gen: u64, input: Input) {
        if self.nodes[i].gen != gen || self.nodes[i].machine.is_none() {
            return;
        }
        self.deliver(i, input);
    }

    // ---- the engine ---------------------------------------------------------------------

    fn schedule(&mut self, at: Millis, event: Event) {
        self.seq += 1;
        self.queue.push(at, self.seq, event);
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver { to, to_gen, from, from_gen, msg } => {
                let alive = self.nodes[to].machine.is_some() && self.nodes[to].gen == to_gen;
                if !alive || self.purged.contains(&(from, from_gen)) || self.network.lost_in_flight(from, to) {
                    self.stats.lost += 1;
                    return;
                }
                self.stats.delivered += 1;
                let peer = from;
                let from = self.nodes[from].name.clone();
                let flush = matches!(msg, PeerMsg::Flush { .. });
                self.deliver(to, Input::Receive { from: from.clone(), msg });
                if flush && self.nodes[peer].gen == from_gen && self.nodes[peer].machine.is_none() {
                    // A node shutting down closes its sessions once its flush is answered
                    // (`Node::shutdown`): the peer sees the link go down right after the flush,
                    // so after everything the node sent before it.
                    self.deliver(to, Input::LinkDown { peer: from });
                }
            }
            Event::LinkDown { to, to_gen, peer } => {
                if self.nodes[to].machine.is_some() && self.nodes[to].gen == to_gen {
                    let peer = self.nodes[peer].name.clone();
                    self.deliver(to, Input::LinkDown { peer });
                }
            }
            Event::Wake { node, gen } => {
                let n = &self.nodes[node];
                if n.gen == gen && n.machine.is_some() && n.paused_until.is_none() && n.wake_at == Some(self.now) {
                    self.nodes[node].wake_at = None;
                    self.handle(node, Input::Tick);
                }
            }
            Event::Unpause { node, gen } => {
                let n = &self.nodes[node];
                if n.gen == gen && n.paused_until == Some(self.now) {
                    self.unpause(node);
                }
            }
            Event::Restart { node } => {
                if self.nodes[node].machine.is_none() {
                    self.boot(node);
                }
            }
            Event::Heal { from, to } => self.heal(from, to),
            Event::ClientInput { node, gen, input } => {
                if let Input::SocketClosed { socket, .. } = &input {
                    if let Some(id) = self.workload.find(node, gen, *socket) {
                        if !self.workload.get(id).open {
                            return;
                        }
                        let pending = self.workload.socket_gone(id, "dropped");
                        self.answer(pending, JoinOutcome::Gone);
                    }
                }
                self.client_input(node, gen, input);
            }
            Event::ClientStep => {
                if !self.active {
                    return;
                }
                if let Some(action) = self.workload.choose(&mut self.rng_clients) {
                    self.perform(action);
                }
                let (lo, hi) = self.params.workload.step_ms;
                let next = self.now + self.rng_clients.between(lo, hi);
                self.schedule(next, Event::ClientStep);
            }
            Event::ApiStep => {
                let Some((lo, hi)) = self.params.workload.api_step_ms.filter(|_| self.active) else { return };
                self.api_step();
                let next = self.now + self.rng_api.between(lo, hi);
                self.schedule(next, Event::ApiStep);
            }
            Event::FaultStep => {
                if !self.active {
                    return;
                }
                let up: Vec<bool> =
                    self.nodes.iter().map(|n| n.machine.is_some() && n.paused_until.is_none()).collect();
                let mix = self.params.faults.clone();
                if let Some(fault) = mix.choose(&mut self.rng_faults, &up) {
                    self.inject(fault);
                }
                let next = self.now + self.rng_faults.between(mix.step_ms.0, mix.step_ms.1);
                self.schedule(next, Event::FaultStep);
            }
        }
    }

    /// An input arrives at node `i`: handled now, or queued while it is paused.
    fn deliver(&mut self, i: usize, input: Input) {
        if self.nodes[i].machine.is_none() {
            return;
        }
        if self.nodes[i].paused_until.is_some() {
            self.nodes[i].backlog.push(input);
            return;
        }
        self.handle(i, input);
    }

    fn routine(&self, msg: &PeerMsg) -> bool {
        !self.params.trace_routine
            && matches!(msg, PeerMsg::Heartbeat { .. } | PeerMsg::LeaseRequest { .. } | PeerMsg::LeaseReply { .. })
    }

    fn handle(&mut self, i: usize, input: Input) {
        let local = self.nodes[i].clock.local(self.now);
        let routine = matches!(&input, Input::Receive { msg, .. } if self.routine(msg));
        if self.trace.on() && !routine {
            let who = self.nodes[i].machine.as_ref().map(|m| m.incarnation().to_string()).unwrap_or_default();
            let line = trace::input_summary(&input);
            if !matches!(input, Input::Tick) {
                self.trace.log(self.now, || format!("{who} (local {local}) {line}"));
            }
        }
        let gen = self.nodes[i].gen;
        let Some(machine) = self.nodes[i].machine.as_mut() else { return };
        self.stats.inputs += 1;
        let expect = self.relay.expect(i, gen, &input);
        let effects = machine.handle(input, local);
        if let Some(expect) = expect {
            let names: Vec<NodeName> = self.nodes.iter().map(|n| n.name.clone()).collect();
            self.relay.judge(expect, &names[i], &names, &effects, self.now);
        }
        self.apply(i, effects, local);
        self.reschedule(i);
    }

    fn apply(&mut self, i: usize, effects: Vec<Effect>, local: Millis) {
        for effect in effects {
            match effect {
                Effect::Send { to, msg } => self.send(i, &to, msg),
                Effect::PersistEpoch(epoch) => {
                    let node = &mut self.nodes[i];
                    node.stored_epoch = node.stored_epoch.max(epoch);
                }
                Effect::Client { socket, topic, event } => {
                    let gen = self.nodes[i].gen;
                    if self.trace.on() {
                        let name = self.nodes[i].name.clone();
                        self.trace.log(self.now, || format!("{name} CLIENT {socket} {topic} {event:?}"));
                    }
                    let Some(id) = self.workload.find(i, gen, socket) else { continue };
                    if let (ClientEvent::Joined { token: Some(token) }, Some(user)) =
                        (&event, &self.workload.get(id).user)
                    {
                        self.relay.granted(user.clone(), topic.clone(), *token);
                    }
                    if let Some((log, result)) = self.workload.on_event(id, &topic, &event) {
                        let outcome = match result {
                            Ok(()) => JoinOutcome::Joined,
                            Err(reason) => JoinOutcome::Failed(reason),
                        };
                        self.answer(vec![log], outcome);
                    }
                }
                Effect::PresenceChanged(_) => {}
                Effect::User(u) => self.user_effect(i, u),
                Effect::Validated { answer, .. } => self.relay.answered(answer),
                Effect::Broadcast { topic, body, except, .. } => {
                    let gen = self.nodes[i].gen;
                    let subscribers: Vec<SocketId> = self
                        .workload
                        .clients
                        .iter()
                        .filter(|c| c.node == i && c.gen == gen && c.open && c.joined(&topic))
                        .filter(|c| Some(c.socket) != except)
                        .map(|c| c.socket)
                        .collect();
                    let node = self.nodes[i].machine.as_ref().expect("handling").incarnation().clone();
                    self.relay.delivered(&node, &topic, &body, subscribers, self.now);
                }
                Effect::Flushed { .. } => {}
                Effect::Record(record) => {
                    let record = self.to_global(i, record, local);
                    let node = self.nodes[i].machine.as_ref().expect("handling").incarnation().clone();
                    if self.trace.on() {
                        let line = trace::record_summary(&record);
                        self.trace.log(self.now, || format!("{node} {line}"));
                    }
                    self.history.records.push(NodeRecord { node, record });
                }
            }
        }
    }

    /// Map a record's times from node `i`'s clock to global time: the handling instant
    /// exactly; other readings to the first global instant the node reads them (later, never
    /// earlier, for horizons and lease ends).
    fn to_global(&self, i: usize, record: Record, local: Millis) -> Record {
        let clock = self.nodes[i].clock;
        let now = self.now;
        record.map_times(|v| if v == local { now } else { clock.first_global_reaching(v) })
    }

    fn send(&mut self, i: usize, to: &NodeName, msg: PeerMsg) {
        self.stats.sent += 1;
        let Some(j) = self.nodes.iter().position(|n| &n.name == to) else {
            self.trace.log(self.now, || format!("BUG: {} sends to unknown node {to}", self.nodes[i].name));
            return;
        };
        let msg = if self.params.codec_check { self.codec.check(i, msg) } else { msg };
        if self.trace.on() && !self.routine(&msg) {
            let line = trace::msg_summary(&msg);
            let (a, b) = (self.nodes[i].name.clone(), to.clone());
            self.trace.log(self.now, || format!("{a} -> {b}: {line}"));
        }
        if !self.intercepts.is_empty() {
            let kind = trace::msg_kind(&msg);
            let inner = trace::presence_kind(&msg);
            let matches = |h: &Intercept| h.kind == kind || Some(h.kind.as_str()) == inner;
            if let Some(k) = self.intercepts.iter().position(|h| h.from == i && h.to == j && matches(h)) {
                if self.intercepts[k].mode != InterceptMode::DropAll {
                    if self.intercepts[k].mode == InterceptMode::HoldNext {
                        self.intercepts.remove(k);
                    }
                    self.trace.log(self.now, || format!("SCRIPT held {kind} n{i} -> n{j}"));
                    self.held.push((i, j, self.nodes[i].gen, msg));
                } else {
                    self.stats.lost += 1;
                    self.trace.log(self.now, || format!("SCRIPT lost {kind} n{i} -> n{j}"));
                }
                return;
            }
        }
        if self.nodes[j].machine.is_none() {
            self.stats.lost += 1;
            return;
        }
        let arrivals = self.network.plan(&mut self.rng_net, i, j, self.now);
        if arrivals.is_empty() {
            self.stats.lost += 1;
        }
        let (from_gen, to_gen) = (self.nodes[i].gen, self.nodes[j].gen);
        // Copies for duplicates; the message itself goes with the last arrival.
        if let Some((&last, copies)) = arrivals.split_last() {
            for &at in copies {
                self.schedule(at, Event::Deliver { to: j, to_gen, from: i, from_gen, msg: msg.clone() });
            }
            self.schedule(last, Event::Deliver { to: j, to_gen, from: i, from_gen, msg });
        }
    }

    fn reschedule(&mut self, i: usize) {
        let node = &self.nodes[i];
        let Some(machine) = node.machine.as_ref() else { return };
        if node.paused_until.is_some() {
            return;
        }
        let at = node.clock.first_global_reaching(machine.next_wake()).max(self.now + 1);
        if node.wake_at.is_some_and(|w| w <= at && w >= self.now) {
            return;
        }
        let gen = node.gen;
        self.nodes[i].wake_at = Some(at);
        self.schedule(at, Event::Wake { node: i, gen });
    }

    fn boot(&mut self, i: usize) {
        let local = self.nodes[i].clock.local(self.now);
        let me = Incarnation::new(self.nodes[i].name.clone(), self.rng_ids.next_u128());
        let node = &mut self.nodes[i];
        node.gen += 1;
        let boot = NodeBoot {
            me: me.clone(),
            config: self.params.config.clone(),
            stored_epoch: node.stored_epoch,
            wall_clock_ms: WALL_CLOCK_BASE_MS + local,
        };
        node.machine = Some(M::boot(boot, &self.params.safeguards, local));
        self.incarnations.insert((i, node.gen), me.clone());
        node.paused_until = None;
        node.paused_since = None;
        node.backlog.clear();
        node.wake_at = None;
        node.life = Some(self.history.lives.len());
        if let Some(since) = node.down_since.take() {
            if self.now > 0 {
                self.history.troubles.push(Trouble {
                    node: node.name.clone(),
                    from: since,
                    until: self.now,
                    what: "down",
                });
            }
        }
        self.history.lives.push(Life { incarnation: me.clone(), started: self.now, ended: None });
        self.trace.log(self.now, || format!("BOOT {me} (local {local}, stored epoch {})", self.nodes[i].stored_epoch));
        self.reschedule(i);
    }

    fn end_life(&mut self, i: usize, how: LifeEnd) {
        self.end_life_quietly(i, how);
        // Peers notice the closed connection, unless the link from it is cut.
        for j in (0..self.nodes.len()).filter(|&j| j != i) {
            if self.nodes[j].machine.is_none() {
                continue;
            }
            if let Some(at) = self.network.plan_link_down(&mut self.rng_net, i, j, self.now) {
                let to_gen = self.nodes[j].gen;
                self.schedule(at, Event::LinkDown { to: j, to_gen, peer: i });
            }
        }
    }

    /// The end of a life, without the peers' link-down (a graceful shutdown closes its links
    /// after its flush).
    fn end_life_quietly(&mut self, i: usize, how: LifeEnd) {
        let gen = self.nodes[i].gen;
        for id in self.workload.open_on(i, gen) {
            let pending = self.workload.socket_gone(id, "gateway died");
            self.answer(pending, JoinOutcome::Gone);
        }
        let node = &mut self.nodes[i];
        node.machine = None;
        node.backlog.clear();
        node.wake_at = None;
        end_pause(node, &mut self.history.troubles, self.now);
        node.down_since = Some(self.now);
        if let Some(l) = node.life.take() {
            self.history.lives[l].ended = Some((self.now, how));
        }
    }

    fn unpause(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        end_pause(node, &mut self.history.troubles, self.now);
        if node.machine.is_none() {
            return;
        }
        let backlog = std::mem::take(&mut node.backlog);
        self.trace.log(self.now, || format!("WAKE {} with {} queued inputs", self.nodes[i].name, backlog.len()));
        self.handle(i, Input::Tick);
        for input in backlog {
            if self.nodes[i].machine.is_none() || self.nodes[i].paused_until.is_some() {
                break;
            }
            self.handle(i, input);
        }
    }

    fn update_cut_troubles(&mut self) {
        for i in 0..self.nodes.len() {
            let touched = self.network.touches_cut(i);
            let node = &mut self.nodes[i];
            match (touched, node.cut_since) {
                (true, None) => node.cut_since = Some(self.now),
                (false, Some(since)) => {
                    node.cut_since = None;
                    self.history.troubles.push(Trouble {
                        node: node.name.clone(),
                        from: since,
                        until: self.now,
                        what: "cut",
                    });
                }
                _ => {}
            }
        }
    }

    fn close_troubles(&mut self) {
        for node in &mut self.nodes {
            for (since, what) in [(node.down_since, "down"), (node.paused_since, "paused"), (node.cut_since, "cut")] {
                if let Some(since) = since {
                    self.history.troubles.push(Trouble { node: node.name.clone(), from: since, until: self.now, what });
                }
            }
        }
    }
}

/// Encode a message with the node codec ([`roster_core::codec`], the bytes real nodes send
/// each other) and decode it again. The copy is what gets delivered.
///
/// # Panics
/// If the message does not survive the round trip (a bug in the message types, or a message
/// over the codec's payload limit, which a real link could not carry either).
pub fn codec_round_trip(msg: &PeerMsg) -> PeerMsg {
    let bytes = codec::encode(msg).unwrap_or_else(|e| panic!("PeerMsg does not encode: {e}: {msg:?}"));
    let back: PeerMsg = codec::decode(&bytes).unwrap_or_else(|e| panic!("PeerMsg does not decode: {e}: {msg:?}"));
    assert_eq!(&back, msg, "PeerMsg changed in a codec round trip");
    back
}

#[cfg(test)]
mod tests;
