//! The node's clock for the core: monotonic milliseconds since the node started (never the
//! wall clock, which may jump), starting at 1.

use roster_core::Millis;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Monotonic milliseconds since a base instant.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self { base: Instant::now() }
    }

    /// Milliseconds since the start, plus one (so no input happens at 0).
    pub fn now(&self) -> Millis {
        self.base.elapsed().as_millis() as Millis + 1
    }

    /// [`now`](Self::now) as of `instant`.
    pub fn at(&self, instant: Instant) -> Millis {
        instant.saturating_duration_since(self.base).as_millis() as Millis + 1
    }

    /// Unix microseconds of `instant`, given [`base_unix_ns`](Self::base_unix_ns).
    pub fn unix_us(&self, instant: Instant, base_unix_ns: i128) -> u64 {
        let ns = base_unix_ns + instant.saturating_duration_since(self.base).as_nanos() as i128;
        (ns.max(0) / 1000) as u64
    }

    /// The Unix time of the clock's base in nanoseconds, from back-to-back readings (see
    /// [`unix_offset_ms`](Self::unix_offset_ms)).
    pub fn base_unix_ns(&self) -> i128 {
        self.base_with(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128))
    }

    /// What to add to a reading of this clock to get Unix milliseconds: a reading `t` was
    /// taken in `[base + t − 1 ms, base + t ms)`, so `t + offset` is the Unix millisecond in
    /// which that interval starts. The wall clock's reading of the base is taken to the
    /// nanosecond, from an `Instant` and a `SystemTime` read back to back (again if something
    /// came between them), so every node's records share one time line to within a
    /// millisecond, however long the process was held up while it started.
    pub fn unix_offset_ms(&self) -> i128 {
        self.offset_with(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128))
    }

    /// [`unix_offset_ms`](Self::unix_offset_ms) with `wall` reading Unix nanoseconds.
    fn offset_with(&self, wall: impl FnMut() -> i128) -> i128 {
        self.base_with(wall).div_euclid(1_000_000) - 1
    }

    /// [`base_unix_ns`](Self::base_unix_ns) with `wall` reading Unix nanoseconds.
    fn base_with(&self, mut wall: impl FnMut() -> i128) -> i128 {
        let mut best: Option<(Duration, i128)> = None;
        for _ in 0..16 {
            let before = Instant::now();
            let wall_ns = wall();
            let after = Instant::now();
            let gap = after.duration_since(before);
            // The wall reading lies between `before` and `after`: place it in the middle.
            let since_base = before.duration_since(self.base) + gap / 2;
            let base_wall = wall_ns - since_base.as_nanos() as i128;
            if best.is_none_or(|(g, _)| gap < g) {
                best = Some((gap, base_wall));
            }
            if gap < Duration::from_micros(50) {
                break;
            }
        }
        best.map_or(0, |(_, w)| w)
    }

    /// How long until `at` (zero if it passed).
    pub fn until(&self, at: Millis) -> Duration {
        Duration::from_millis(at.saturating_sub(self.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall_ns() -> i128 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128
    }

    /// Readings of `clock` plus `offset` fall in the Unix millisecond they were taken in (the
    /// wall clock's own truncation leaves one millisecond either way).
    fn assert_maps(clock: &Clock, offset: i128) {
        for _ in 0..50 {
            let before = wall_ns().div_euclid(1_000_000);
            let at = i128::from(clock.now()) + offset;
            let after = wall_ns().div_euclid(1_000_000);
            assert!(before - 1 <= at && at <= after, "{before} <= {at} <= {after}");
            std::thread::sleep(Duration::from_micros(300));
        }
    }

    #[test]
    fn a_reading_plus_the_offset_is_the_unix_millisecond_it_was_taken_in() {
        let clock = Clock::start();
        std::thread::sleep(Duration::from_millis(30));
        assert_maps(&clock, clock.unix_offset_ms());
    }

    #[test]
    fn a_process_held_up_while_it_reads_the_wall_clock_still_gets_the_offset_right() {
        // The first wall reading is followed by a 10 ms hold-up (a starting node preempted on a
        // busy machine, as in chaos seed 15): a wall reading and a clock reading taken apart
        // would put every record of the node 10 ms early.
        let clock = Clock::start();
        let mut first = true;
        let offset = clock.offset_with(|| {
            let now = wall_ns();
            if std::mem::take(&mut first) {
                std::thread::sleep(Duration::from_millis(10));
            }
            now
        });
        assert_maps(&clock, offset);
    }
}
