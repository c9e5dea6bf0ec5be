//! The node's clock for the core: monotonic milliseconds since the node started (never the
//! wall clock, which may jump), starting at 1.

use roster_core::Millis;
use std::time::{Duration, Instant};

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

    /// How long until `at` (zero if it passed).
    pub fn until(&self, at: Millis) -> Duration {
        Duration::from_millis(at.saturating_sub(self.now()))
    }
}
