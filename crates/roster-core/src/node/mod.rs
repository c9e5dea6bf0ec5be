//! One node's whole cluster logic as a single I/O-free machine: [`NodeState`].
//!
//! It composes the lease machines (grantor and holder), liveness and echoes, the home side of
//! the slot policy (one [`ScopeSlots`](crate::ScopeSlots) per `(user, scope)` of the partitions
//! it holds), the gateway side (the slots of its own connections, each with a validity
//! horizon) and the presence table. `handle(input, now)` returns effects in the order the
//! runtime must carry them out; the simulation drives exactly this.

mod types;

pub use types::*;

use crate::ids::{Incarnation, Millis};
use crate::Config;

/// What a node starts from.
#[derive(Clone, Debug)]
pub struct NodeBoot {
    /// This boot's incarnation; its name must be one of the config's nodes.
    pub me: Incarnation,
    /// The validated cluster configuration (identical on every node).
    pub config: Config,
    /// The highest epoch this node ever granted, from its `data_dir` (0 if none).
    pub stored_epoch: u64,
    /// The wall clock in Unix milliseconds at boot: epochs start above it (rule 3).
    pub wall_clock_ms: u64,
    /// Safeguards; all on outside tests.
    pub safeguards: Safeguards,
}

/// One node's cluster logic. See the module documentation.
#[derive(Debug)]
pub struct NodeState {
    me: Incarnation,
}

impl NodeState {
    /// A node booting at `now` (its own clock).
    pub fn new(boot: NodeBoot, now: Millis) -> Self {
        let _ = now;
        Self { me: boot.me }
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> &Incarnation {
        &self.me
    }

    /// Feed one input; returns the effects in order.
    pub fn handle(&mut self, input: Input, now: Millis) -> Vec<Effect> {
        let _ = (input, now);
        Vec::new()
    }

    /// The latest instant by which the runtime must call `handle(Input::Tick, ..)`.
    pub fn next_wake(&self) -> Millis {
        0
    }
}
