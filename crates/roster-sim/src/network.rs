//! The network between simulated nodes: per ordered pair of nodes a link that delays, loses,
//! duplicates and reorders messages (or keeps them in order, like one TCP stream), and that
//! can be cut in one direction or both. Self-sends (home and gateway on one node) take 0–1 ms
//! and are never lost.
//!
//! The network only decides *when* copies of a message arrive; the simulation carries them.

use super::rng::SimRng;
use roster_core::Millis;

/// How a run's network behaves. Drawn per seed by [`NetworkParams::random`].
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkParams {
    /// Usual one-way delay, inclusive range.
    pub base_delay_ms: (Millis, Millis),
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message arrives twice.
    pub duplicate: f64,
    /// Messages of one link arrive in the order sent (TCP-like); otherwise they may overtake.
    pub fifo: bool,
    /// Probability that a message is held up by a delay spike.
    pub spike_chance: f64,
    /// Extra delay of a spike, inclusive range.
    pub spike_ms: (Millis, Millis),
    /// A cut also loses the messages already on the wire; otherwise they still arrive (late).
    pub cut_drops_in_flight: bool,
}

impl NetworkParams {
    /// A calm network: 1–5 ms, nothing lost, duplicated or spiked, in order.
    pub fn calm() -> Self {
        Self {
            base_delay_ms: (1, 5),
            loss: 0.0,
            duplicate: 0.0,
            fifo: true,
            spike_chance: 0.0,
            spike_ms: (300, 1500),
            cut_drops_in_flight: false,
        }
    }

    /// A random network for one run: loss 0–20 %, some duplication, FIFO or reordering,
    /// and sometimes delay spikes of 300–1500 ms.
    pub fn random(rng: &mut SimRng) -> Self {
        let loss = if rng.chance(0.3) { 0.0 } else { rng.float_between(0.0, 0.2) };
        let duplicate = if rng.chance(0.5) { 0.0 } else { rng.float_between(0.0, 0.05) };
        let spike_chance = match rng.between(0, 3) {
            0 | 1 => 0.0,
            2 => 0.005,
            _ => 0.03,
        };
        Self {
            base_delay_ms: (1, 5),
            loss,
            duplicate,
            fifo: rng.chance(0.5),
            spike_chance,
            spike_ms: (300, 1500),
            cut_drops_in_flight: rng.chance(0.5),
        }
    }
}

/// The links between `n` nodes and their state.
#[derive(Clone, Debug)]
pub struct Network {
    /// The behaviour in force (scenarios may change it mid-run).
    pub params: NetworkParams,
    n: usize,
    /// `cut[from][to]`: messages from `from` to `to` are not carried.
    cut: Vec<Vec<bool>>,
    /// Extra fixed delay per link (scenarios).
    extra_delay_ms: Vec<Vec<Millis>>,
    /// FIFO links: the latest arrival scheduled so far, which later messages may not overtake.
    last_arrival: Vec<Vec<Millis>>,
}

impl Network {
    /// `n` fully connected nodes.
    pub fn new(n: usize, params: NetworkParams) -> Self {
        Self {
            params,
            n,
            cut: vec![vec![false; n]; n],
            extra_delay_ms: vec![vec![0; n]; n],
            last_arrival: vec![vec![0; n]; n],
        }
    }

    /// Stop carrying messages from `from` to `to` (one direction).
    pub fn cut(&mut self, from: usize, to: usize) {
        if from != to {
            self.cut[from][to] = true;
        }
    }

    /// Carry messages from `from` to `to` again.
    pub fn heal(&mut self, from: usize, to: usize) {
        self.cut[from][to] = false;
    }

    /// Heal every link and drop every extra delay.
    pub fn heal_all(&mut self) {
        for row in &mut self.cut {
            row.fill(false);
        }
        for row in &mut self.extra_delay_ms {
            row.fill(0);
        }
    }

    /// Whether `from → to` is cut.
    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cut[from][to]
    }

    /// Whether any link touching `node` is cut, in either direction.
    pub fn touches_cut(&self, node: usize) -> bool {
        (0..self.n).any(|o| self.cut[node][o] || self.cut[o][node])
    }

    /// Add a fixed delay to every message from `from` to `to` (0 removes it).
    pub fn set_extra_delay(&mut self, from: usize, to: usize, ms: Millis) {
        self.extra_delay_ms[from][to] = ms;
    }

    /// When the copies of a message sent now from `from` to `to` arrive: none if lost or cut,
    /// two if duplicated.
    pub fn plan(&mut self, rng: &mut SimRng, from: usize, to: usize, now: Millis) -> Vec<Millis> {
        if from == to {
            return vec![now + rng.between(0, 1)];
        }
        if self.cut[from][to] || rng.chance(self.params.loss) {
            return Vec::new();
        }
        let mut arrivals = vec![self.arrival(rng, from, to, now)];
        if rng.chance(self.params.duplicate) {
            arrivals.push(self.arrival(rng, from, to, now));
        }
        arrivals
    }

    /// When a closed connection from `from` is noticed at `to` (a crash or exit), if at all:
    /// never across a cut link, and on a FIFO link after everything sent before it.
    pub fn plan_link_down(&mut self, rng: &mut SimRng, from: usize, to: usize, now: Millis) -> Option<Millis> {
        if self.cut[from][to] {
            return None;
        }
        let mut at = now + rng.between(self.params.base_delay_ms.0, self.params.base_delay_ms.1);
        if self.params.fifo {
            at = at.max(self.last_arrival[from][to]);
            self.last_arrival[from][to] = at;
        }
        Some(at)
    }

    /// Whether a message on the wire from `from` to `to` is lost at arrival (the link was cut
    /// meanwhile and this run's cuts lose what is in flight).
    pub fn lost_in_flight(&self, from: usize, to: usize) -> bool {
        from != to && self.params.cut_drops_in_flight && self.cut[from][to]
    }

    fn arrival(&mut self, rng: &mut SimRng, from: usize, to: usize, now: Millis) -> Millis {
        let (lo, hi) = self.params.base_delay_ms;
        let mut delay = rng.between(lo, hi) + self.extra_delay_ms[from][to];
        if rng.chance(self.params.spike_chance) {
            delay += rng.between(self.params.spike_ms.0, self.params.spike_ms.1);
        }
        let mut at = now + delay;
        if self.params.fifo {
            at = at.max(self.last_arrival[from][to]);
            self.last_arrival[from][to] = at;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_sends_take_at_most_one_ms_and_are_never_lost() {
        let mut net = Network::new(2, NetworkParams { loss: 1.0, ..NetworkParams::calm() });
        let mut rng = SimRng::new(1, 0);
        for _ in 0..100 {
            let a = net.plan(&mut rng, 0, 0, 50);
            assert_eq!(a.len(), 1);
            assert!((50..=51).contains(&a[0]));
        }
        assert!(net.plan(&mut rng, 0, 1, 50).is_empty());
    }

    #[test]
    fn a_one_way_cut_stops_one_direction_only() {
        let mut net = Network::new(3, NetworkParams::calm());
        let mut rng = SimRng::new(2, 0);
        net.cut(0, 1);
        assert!(net.plan(&mut rng, 0, 1, 0).is_empty());
        assert_eq!(net.plan(&mut rng, 1, 0, 0).len(), 1);
        assert!(net.plan_link_down(&mut rng, 0, 1, 0).is_none());
        assert!(net.touches_cut(1) && !net.touches_cut(2));
        net.heal_all();
        assert_eq!(net.plan(&mut rng, 0, 1, 0).len(), 1);
    }

    #[test]
    fn fifo_links_never_reorder_even_with_spikes() {
        let params = NetworkParams { spike_chance: 0.3, ..NetworkParams::calm() };
        let mut net = Network::new(2, params);
        let mut rng = SimRng::new(3, 0);
        let mut last = 0;
        for now in 0..500 {
            for at in net.plan(&mut rng, 0, 1, now) {
                assert!(at >= last && at > now);
                last = at;
            }
        }
    }

    #[test]
    fn reordering_links_do_reorder_with_spikes() {
        let params = NetworkParams { spike_chance: 0.3, fifo: false, ..NetworkParams::calm() };
        let mut net = Network::new(2, params);
        let mut rng = SimRng::new(4, 0);
        let arrivals: Vec<Millis> = (0..200).flat_map(|now| net.plan(&mut rng, 0, 1, now)).collect();
        assert!(arrivals.windows(2).any(|w| w[1] < w[0]));
    }
}
