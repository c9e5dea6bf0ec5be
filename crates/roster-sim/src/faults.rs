//! Faults a run injects: crashes (with or without a quick restart), pauses (SIGSTOP),
//! graceful shutdowns, one-way and two-way link cuts, non-transitive splits, isolation of a
//! node, and heals. [`FaultMix`] says how often each happens; the presets bias a run towards
//! the faults one safeguard exists for.

use super::rng::SimRng;
use roster_core::Millis;

/// How often and how hard a run is disturbed. Weights are relative; a weight of 0 disables
/// that fault.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultMix {
    /// Pause between two faults, inclusive range.
    pub step_ms: (Millis, Millis),
    /// No fault before this instant (the cluster forms first).
    pub start_after_ms: Millis,
    /// Kill a node (SIGKILL).
    pub crash: u32,
    /// Stop a node for a while (SIGSTOP, then SIGCONT).
    pub pause: u32,
    /// Shut a node down gracefully.
    pub shutdown: u32,
    /// Cut one direction of one link.
    pub cut_one_way: u32,
    /// Cut both directions of one link.
    pub cut_both: u32,
    /// Non-transitive split: A↔B and B↔C up, A↔C cut.
    pub split: u32,
    /// Cut a node off from every other node.
    pub isolate: u32,
    /// Heal every cut at once.
    pub heal: u32,
    /// Probability that a killed or shut-down node comes back.
    pub restart_chance: f64,
    /// Delay before it comes back, inclusive range.
    pub restart_after_ms: (Millis, Millis),
    /// Probability that the restart is almost immediate (0–100 ms).
    pub quick_restart_chance: f64,
    /// Length of a pause, inclusive range.
    pub pause_ms: (Millis, Millis),
    /// How long a cut lasts before it heals by itself, inclusive range.
    pub cut_ms: (Millis, Millis),
    /// At most this many nodes down or paused at once.
    pub max_down: usize,
    /// Probability that a kill also loses the messages the node had on the wire.
    pub drop_outbound_on_crash: f64,
}

impl FaultMix {
    /// No faults at all.
    pub fn none() -> Self {
        Self {
            step_ms: (1000, 1000),
            start_after_ms: Millis::MAX,
            crash: 0,
            pause: 0,
            shutdown: 0,
            cut_one_way: 0,
            cut_both: 0,
            split: 0,
            isolate: 0,
            heal: 0,
            restart_chance: 1.0,
            restart_after_ms: (50, 5000),
            quick_restart_chance: 0.0,
            pause_ms: (1000, 6000),
            cut_ms: (500, 8000),
            max_down: 0,
            drop_outbound_on_crash: 0.5,
        }
    }

    /// Every kind of fault, a few per ten seconds.
    pub fn standard(nodes: usize) -> Self {
        Self {
            step_ms: (800, 5000),
            start_after_ms: 2000,
            crash: 3,
            pause: 2,
            shutdown: 1,
            cut_one_way: 2,
            cut_both: 2,
            split: 1,
            isolate: 1,
            heal: 1,
            restart_chance: 0.85,
            restart_after_ms: (50, 6000),
            quick_restart_chance: 0.2,
            max_down: nodes.saturating_sub(1) / 2 + 1,
            ..Self::none()
        }
    }

    /// Kills and quick restarts (rules 2 and 10: what a restarted node forgets).
    pub fn restarts(nodes: usize) -> Self {
        Self {
            crash: 6,
            pause: 1,
            shutdown: 0,
            cut_one_way: 1,
            cut_both: 1,
            split: 0,
            isolate: 0,
            heal: 1,
            restart_chance: 1.0,
            quick_restart_chance: 0.6,
            restart_after_ms: (0, 1500),
            ..Self::standard(nodes)
        }
    }

    /// Cuts of every shape, and pauses (rules 5, 7, 9, 10: who hears whom).
    pub fn cuts(nodes: usize) -> Self {
        Self {
            crash: 1,
            pause: 2,
            shutdown: 0,
            cut_one_way: 4,
            cut_both: 3,
            split: 2,
            isolate: 3,
            heal: 1,
            ..Self::standard(nodes)
        }
    }
}

/// One fault, with its targets drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Kill `node`; bring it back after `restart_after` ms if set.
    Crash {
        /// The node.
        node: usize,
        /// Restart delay, if it comes back.
        restart_after: Option<Millis>,
        /// Also lose what it had on the wire.
        drop_outbound: bool,
    },
    /// Stop `node` for `ms`.
    Pause {
        /// The node.
        node: usize,
        /// How long.
        ms: Millis,
    },
    /// Shut `node` down gracefully; bring it back after `restart_after` ms if set.
    Shutdown {
        /// The node.
        node: usize,
        /// Restart delay, if it comes back.
        restart_after: Option<Millis>,
    },
    /// Cut `from → to` (and `to → from` if `both`) for `ms`.
    Cut {
        /// Sender side.
        from: usize,
        /// Receiver side.
        to: usize,
        /// Both directions.
        both: bool,
        /// How long.
        ms: Millis,
    },
    /// Cut `a ↔ c` both ways while both still reach the others.
    Split {
        /// One end.
        a: usize,
        /// The other end.
        c: usize,
        /// How long.
        ms: Millis,
    },
    /// Cut `node` off from everyone, both ways, for `ms`.
    Isolate {
        /// The node.
        node: usize,
        /// How long.
        ms: Millis,
    },
    /// Heal every cut.
    HealAll,
}

impl FaultMix {
    /// Draw the next fault. `up[i]`: node `i` is running and not paused.
    pub fn choose(&self, rng: &mut SimRng, up: &[bool]) -> Option<Fault> {
        let n = up.len();
        let running: Vec<usize> = (0..n).filter(|&i| up[i]).collect();
        let down = n - running.len();
        let may_stop = down < self.max_down && !running.is_empty();
        let weights = [
            if may_stop { self.crash } else { 0 },
            if may_stop { self.pause } else { 0 },
            if may_stop { self.shutdown } else { 0 },
            if n >= 2 { self.cut_one_way } else { 0 },
            if n >= 2 { self.cut_both } else { 0 },
            if n >= 3 { self.split } else { 0 },
            if n >= 2 { self.isolate } else { 0 },
            self.heal,
        ];
        let restart = |rng: &mut SimRng| {
            rng.chance(self.restart_chance).then(|| {
                if rng.chance(self.quick_restart_chance) {
                    rng.between(0, 100)
                } else {
                    rng.between(self.restart_after_ms.0, self.restart_after_ms.1)
                }
            })
        };
        let two = |rng: &mut SimRng| {
            let a = rng.index(n);
            let b = (a + 1 + rng.index(n - 1)) % n;
            (a, b)
        };
        let cut_ms = |rng: &mut SimRng| rng.between(self.cut_ms.0, self.cut_ms.1);
        Some(match rng.weighted(&weights)? {
            0 => Fault::Crash {
                node: *rng.pick(&running)?,
                restart_after: restart(rng),
                drop_outbound: rng.chance(self.drop_outbound_on_crash),
            },
            1 => Fault::Pause { node: *rng.pick(&running)?, ms: rng.between(self.pause_ms.0, self.pause_ms.1) },
            2 => Fault::Shutdown { node: *rng.pick(&running)?, restart_after: restart(rng) },
            3 => {
                let (from, to) = two(rng);
                Fault::Cut { from, to, both: false, ms: cut_ms(rng) }
            }
            4 => {
                let (from, to) = two(rng);
                Fault::Cut { from, to, both: true, ms: cut_ms(rng) }
            }
            5 => {
                let (a, c) = two(rng);
                Fault::Split { a, c, ms: cut_ms(rng) }
            }
            6 => Fault::Isolate { node: rng.index(n), ms: cut_ms(rng) },
            _ => Fault::HealAll,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_node_stops_beyond_max_down() {
        let mix = FaultMix { cut_one_way: 0, cut_both: 0, split: 0, isolate: 0, heal: 0, ..FaultMix::standard(3) };
        let mut rng = SimRng::new(9, 0);
        // Two of three are down: max_down is 2, so only cuts or heals could be drawn, and they
        // are disabled here.
        assert_eq!(mix.choose(&mut rng, &[true, false, false]), None);
        for _ in 0..100 {
            match mix.choose(&mut rng, &[true, true, false]).unwrap() {
                Fault::Crash { node, .. } | Fault::Pause { node, .. } | Fault::Shutdown { node, .. } => {
                    assert!(node < 2)
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn cuts_name_two_distinct_nodes() {
        let mix = FaultMix { crash: 0, pause: 0, shutdown: 0, heal: 0, ..FaultMix::cuts(3) };
        let mut rng = SimRng::new(10, 0);
        for _ in 0..200 {
            match mix.choose(&mut rng, &[true, true, true]).unwrap() {
                Fault::Cut { from, to, .. } => assert_ne!(from, to),
                Fault::Split { a, c, .. } => assert_ne!(a, c),
                Fault::Isolate { node, .. } => assert!(node < 3),
                other => panic!("{other:?}"),
            }
        }
    }
}
