//! `WakeTimer`: one long-lived task per actor that sends it a wake-up message at the earliest
//! instant it asked for. Re-arming it moves the instant; it never leaves a second wake-up in
//! flight for an instant that was replaced.
//!
//! ```text
//! NodeActor / PresenceShard ── set(at) ──▶ WakeTimer task ── at `at`: cast(Tick / Flush) ──▶ the actor
//! ```
//!
//! ractor's `send_after` spawns a task per call, and a timer it started cannot be taken back:
//! an actor that re-armed its wake-up earlier than the pending one ended with both in flight,
//! each of which re-armed again when it fired, so the wake-ups in flight (and the turns they
//! cost) grew with the node's uptime under load (`BENCHMARKS.md`, issue 17's 100,000 users).

use crate::clock::Clock;
use ractor::{ActorRef, Message};
use roster_core::Millis;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// No wake-up armed.
const NONE: u64 = u64::MAX;

struct Armed {
    at: AtomicU64,
    changed: Notify,
}

/// A wake-up timer for one actor. Dropping it stops its task.
pub(crate) struct WakeTimer {
    armed: Arc<Armed>,
    task: JoinHandle<()>,
}

impl WakeTimer {
    /// A timer that casts `msg()` to `actor` when an armed instant of `clock` is reached.
    pub(crate) fn start<M: Message>(clock: Clock, actor: ActorRef<M>, msg: fn() -> M) -> Self {
        let armed = Arc::new(Armed { at: AtomicU64::new(NONE), changed: Notify::new() });
        let task = tokio::spawn(run(armed.clone(), clock, actor, msg));
        Self { armed, task }
    }

    /// Send the wake-up at `at` (node clock) instead of whatever instant was armed.
    pub(crate) fn set(&self, at: Millis) {
        if self.armed.at.swap(at, Ordering::AcqRel) != at {
            self.armed.changed.notify_one();
        }
    }
}

impl Drop for WakeTimer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run<M: Message>(armed: Arc<Armed>, clock: Clock, actor: ActorRef<M>, msg: fn() -> M) {
    loop {
        // `notify_one` stores a permit when nobody waits, so a change between the load and
        // the wait is not lost.
        let at = armed.at.load(Ordering::Acquire);
        if at == NONE {
            armed.changed.notified().await;
            continue;
        }
        let until = clock.until(at);
        if !until.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(until) => {}
                _ = armed.changed.notified() => {}
            }
            continue; // look again: the instant may have moved, or not be reached yet
        }
        // Due: disarm unless it was moved meanwhile (then the loop looks at the new one).
        if armed.at.compare_exchange(at, NONE, Ordering::AcqRel, Ordering::Acquire).is_ok()
            && actor.cast(msg()).is_err()
        {
            return; // the actor has stopped
        }
    }
}
