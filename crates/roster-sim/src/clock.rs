//! Node clocks: each node reads `local = floor(offset + rate × global)`, with its own offset
//! and a rate within `max_drift` of every other node's. The simulation keeps global time; a
//! node only ever sees its own reading.

use roster_core::Millis;

/// One node's clock (it survives the node's restarts: same machine, same clock).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimClock {
    /// Local reading at global time 0.
    pub offset_ms: f64,
    /// Local milliseconds per global millisecond.
    pub rate: f64,
}

impl SimClock {
    /// A clock; `rate` must be positive and `offset_ms` not negative.
    pub fn new(offset_ms: f64, rate: f64) -> Self {
        assert!(rate > 0.0 && offset_ms >= 0.0, "a clock runs forward from a non-negative reading");
        Self { offset_ms, rate }
    }

    /// A perfect clock (offset 0, rate 1): local time is global time.
    pub fn ideal() -> Self {
        Self::new(0.0, 1.0)
    }

    /// The node's reading at global instant `global`.
    pub fn local(&self, global: Millis) -> Millis {
        (self.offset_ms + self.rate * global as f64).floor() as Millis
    }

    /// The first global instant at which the node reads at least `local`. Used for timers
    /// (a wake-up due at `local` fires then) and for ends of validity (a slot valid while the
    /// reading is below its horizon holds until this instant: rounding never shortens it).
    pub fn first_global_reaching(&self, local: Millis) -> Millis {
        let guess = ((local as f64 - self.offset_ms) / self.rate).ceil();
        let mut g = if guess <= 0.0 { 0 } else { guess as Millis };
        // Correct the float guess by whole steps so that the answer is exact.
        while self.local(g) < local {
            g += 1;
        }
        while g > 0 && self.local(g - 1) >= local {
            g -= 1;
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_global_reaching_is_the_exact_inverse_of_local() {
        for clock in [SimClock::new(12_345.6, 0.995), SimClock::new(0.0, 1.005), SimClock::new(7.0, 1.0)] {
            for target in [0, 1, 7, 12_345, 12_346, 99_999, 1_000_003] {
                let g = clock.first_global_reaching(target);
                assert!(clock.local(g) >= target, "{clock:?} {target}");
                assert!(g == 0 || clock.local(g - 1) < target, "{clock:?} {target}");
            }
        }
    }

    #[test]
    fn local_clocks_are_monotonic_and_drift_as_configured() {
        let slow = SimClock::new(0.0, 0.995);
        let fast = SimClock::new(0.0, 1.005);
        assert!((0..5000).all(|g| slow.local(g) <= slow.local(g + 1)));
        let apart = fast.local(100_000) - slow.local(100_000);
        assert!((999..=1000).contains(&apart), "{apart}");
    }
}
