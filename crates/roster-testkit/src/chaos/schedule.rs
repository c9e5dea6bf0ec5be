//! The fault schedule: a seeded plan of what happens to the nodes and their links, made before
//! the run so a failing seed prints the whole plan.
//!
//! The plan is a list of *cycles*: a burst of faults one after the other (each held for its
//! duration, then healed, then a gap), a calm stretch (the workload goes on, no fault: long
//! enough for every partition to settle, so P2 is judged there), and a quiet check (no
//! operation and no fault for 2 s, then every view against every list: P4, P5). The first
//! cycles go through every kind of fault once, in a seeded order; later ones pick at random.

use crate::chaos::rng::Rng;
use crate::cluster::{node_name, Timings};
use crate::fault_proxy::Direction;
use std::fmt;

/// One fault. Nodes are indices (`a` is 0); times in milliseconds.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// `kill -9` the node, start it again after `down_ms`.
    Kill { node: usize, down_ms: u64 },
    /// SIGSTOP the node for `ms` (past `lease_ms`), then SIGCONT.
    Pause { node: usize, ms: u64 },
    /// Close every connection of the link `a`–`b` and refuse new ones for `ms`.
    Cut { a: usize, b: usize, ms: u64 },
    /// Hold every byte of the link both ways for `ms` (a hung link: connections stay open).
    Hang { a: usize, b: usize, ms: u64 },
    /// Hold the bytes from `from` to `to` for `ms`: `to` stops hearing `from`.
    OneWay { from: usize, to: usize, ms: u64 },
    /// Delay every byte of the link by `delay_ms` for `ms`.
    Delay { a: usize, b: usize, delay_ms: u64, ms: u64 },
    /// Every node in turn: SIGTERM (graceful), start again, wait until ready.
    Rolling,
}

impl Fault {
    /// The kind, for the summary: `kill`, `pause`, `cut`, `hang`, `one_way`, `delay`, `rolling`.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Pause { .. } => "pause",
            Fault::Cut { .. } => "cut",
            Fault::Hang { .. } => "hang",
            Fault::OneWay { .. } => "one_way",
            Fault::Delay { .. } => "delay",
            Fault::Rolling => "rolling",
        }
    }

    /// Every kind, in the order the first cycles cover them before shuffling.
    pub const KINDS: [&'static str; 7] = ["kill", "pause", "cut", "hang", "one_way", "delay", "rolling"];

    /// The link `(a, b)`, `a < b`, and for a one-way fault the proxy direction held.
    pub fn link(&self) -> Option<(usize, usize, Option<Direction>)> {
        match *self {
            Fault::Cut { a, b, .. } | Fault::Hang { a, b, .. } | Fault::Delay { a, b, .. } => {
                Some((a.min(b), a.max(b), None))
            }
            Fault::OneWay { from, to, .. } => {
                // The proxy's dialing side is the node listed first.
                let dir = if from < to { Direction::ToTarget } else { Direction::FromTarget };
                Some((from.min(to), from.max(to), Some(dir)))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = node_name;
        match *self {
            Fault::Kill { node, down_ms } => write!(f, "kill -9 {}, restart after {down_ms} ms", n(node)),
            Fault::Pause { node, ms } => write!(f, "SIGSTOP {} for {ms} ms", n(node)),
            Fault::Cut { a, b, ms } => write!(f, "cut {}<->{} for {ms} ms", n(a), n(b)),
            Fault::Hang { a, b, ms } => write!(f, "hang {}<->{} (bytes held both ways) for {ms} ms", n(a), n(b)),
            Fault::OneWay { from, to, ms } => write!(f, "cut {}->{} one way for {ms} ms", n(from), n(to)),
            Fault::Delay { a, b, delay_ms, ms } => write!(f, "delay {}<->{} by {delay_ms} ms for {ms} ms", n(a), n(b)),
            Fault::Rolling => write!(f, "rolling restart (SIGTERM, start, ready; node by node)"),
        }
    }
}

/// One step of the plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Apply the fault, hold it, heal it.
    Fault(Fault),
    /// Let the workload run with no fault for this long.
    Pause(u64),
    /// Calm: no fault for this long (P2 is judged in such stretches).
    Calm(u64),
    /// Quiet check: pause the workload, wait for quiet, compare views and lists.
    Quiet,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Fault(fault) => write!(f, "{fault}"),
            Step::Pause(ms) => write!(f, "gap {ms} ms"),
            Step::Calm(ms) => write!(f, "calm {ms} ms"),
            Step::Quiet => write!(f, "quiet check"),
        }
    }
}

/// How long a stretch with no fault must be for P2 to be judged in it (see the checker): every
/// partition has a home again and every restarted node's waits are over.
pub fn stable_ms(t: &Timings) -> u64 {
    let d = 1.0 + t.max_drift;
    (2.0 * t.isolation_ms as f64 * d + 2.0 * t.lease_ms as f64 * d) as u64 + 500
}

/// A plan of about `duration_ms` for `nodes` nodes with timings `t`, from `seed`; longer if
/// that is what it takes to run every kind of fault once.
pub fn plan(seed: u64, nodes: usize, duration_ms: u64, t: &Timings) -> Vec<Step> {
    let mut rng = Rng::new(seed ^ 0x5CED_F00D);
    let mut kinds: Vec<&str> = Fault::KINDS.to_vec();
    rng.shuffle(&mut kinds);
    let mut steps = Vec::new();
    let mut planned = 0u64;
    let mut next_kind = 0usize;
    let calm = stable_ms(t) + 1500;
    while planned < duration_ms || next_kind < kinds.len() {
        let burst = rng.range(2, 3);
        let burst = if next_kind < kinds.len() { burst.max(3) } else { burst };
        for _ in 0..burst {
            let kind = if next_kind < kinds.len() {
                next_kind += 1;
                kinds[next_kind - 1]
            } else {
                // Rolling restarts are slow: rarer once covered.
                let pick = kinds[rng.below(kinds.len())];
                if pick == "rolling" && !rng.chance(0.3) {
                    "kill"
                } else {
                    pick
                }
            };
            let fault = make(&mut rng, kind, nodes, t);
            planned += cost(&fault, nodes);
            steps.push(Step::Fault(fault));
            let gap = rng.range(200, 1200);
            planned += gap;
            steps.push(Step::Pause(gap));
        }
        steps.push(Step::Calm(calm));
        steps.push(Step::Quiet);
        planned += calm + 3000;
    }
    steps
}

fn make(rng: &mut Rng, kind: &str, nodes: usize, t: &Timings) -> Fault {
    let node = rng.below(nodes);
    let other = (node + 1 + rng.below(nodes - 1)) % nodes;
    match kind {
        "kill" => Fault::Kill { node, down_ms: rng.range(200, 2500) },
        // Past the lease, and past heartbeat_timeout_ms + 1 s so P3 for a hung node is judged.
        "pause" => Fault::Pause { node, ms: rng.range(t.lease_ms.max(t.heartbeat_timeout_ms + 1000) + 300, 4000) },
        "cut" => Fault::Cut { a: node, b: other, ms: rng.range(500, 3500) },
        "hang" => Fault::Hang { a: node, b: other, ms: rng.range(500, 3000) },
        "one_way" => Fault::OneWay { from: node, to: other, ms: rng.range(500, 3500) },
        "delay" => Fault::Delay { a: node, b: other, delay_ms: rng.range(20, 300), ms: rng.range(1000, 3000) },
        _ => Fault::Rolling,
    }
}

/// About how long a fault takes to run, for planning.
fn cost(fault: &Fault, nodes: usize) -> u64 {
    match *fault {
        Fault::Kill { down_ms, .. } => down_ms,
        Fault::Pause { ms, .. }
        | Fault::Cut { ms, .. }
        | Fault::Hang { ms, .. }
        | Fault::OneWay { ms, .. }
        | Fault::Delay { ms, .. } => ms,
        Fault::Rolling => 2500 * nodes as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_a_function_of_its_seed_and_covers_every_kind_first() {
        let t = Timings::FAST;
        let a = plan(42, 3, 60_000, &t);
        assert_eq!(a, plan(42, 3, 60_000, &t));
        assert_ne!(a, plan(43, 3, 60_000, &t));
        let faults: Vec<&Fault> = a
            .iter()
            .filter_map(|s| match s {
                Step::Fault(f) => Some(f),
                _ => None,
            })
            .collect();
        let first: std::collections::BTreeSet<&str> = faults.iter().take(7).map(|f| f.kind()).collect();
        assert_eq!(first.len(), 7, "{faults:?}");
        // Even a short run covers every kind.
        let short = plan(42, 3, 1_000, &t);
        let kinds: std::collections::BTreeSet<&str> =
            short.iter().filter_map(|s| if let Step::Fault(f) = s { Some(f.kind()) } else { None }).collect();
        assert_eq!(kinds.len(), 7, "{short:?}");
        assert!(a.iter().filter(|s| **s == Step::Quiet).count() >= 2);
        for f in faults {
            if let Some((x, y, _)) = f.link() {
                assert!(x < y && y < 3, "{f}");
            }
            if let Fault::Pause { ms, .. } = f {
                assert!(*ms > t.lease_ms && *ms > t.heartbeat_timeout_ms + 1000, "{f}");
            }
        }
    }

    #[test]
    fn a_one_way_fault_holds_the_proxy_direction_from_its_source() {
        assert_eq!(Fault::OneWay { from: 0, to: 2, ms: 1 }.link(), Some((0, 2, Some(Direction::ToTarget))));
        assert_eq!(Fault::OneWay { from: 2, to: 0, ms: 1 }.link(), Some((0, 2, Some(Direction::FromTarget))));
    }
}
