//! # roster-core
//!
//! Roster's pure logic. Nothing here touches a socket, a clock, a thread or a random number
//! generator: time (`now`, in milliseconds) and randomness are arguments, and every state
//! machine returns what should happen as values (effects) for the runtime to carry out.
//!
//! ## Layout
//! - `codec`: the node codec, a version byte then bincode, for every node-to-node payload.
//! - `ids`: users, topics, tabs, sockets, roles, metas, `phx_ref`s, incarnations, slot tokens.
//! - `config`: `cluster.toml` as types with their defaults, validation (the timing rule),
//!   and slot policy resolution per topic ([`Config::policy_for`], [`ScopeKey`]).
//! - `ring`: a user's partition ([`partition_of`]) and a partition's preferred home
//!   ([`preferred_home`], rendezvous hashing).
//! - `slot`: the slot policy of one `(user, scope)` on its home ([`ScopeSlots`]): grants,
//!   takeovers, resumes, waits, reservations, in-doubt slots.
//! - `node`: one node's whole cluster logic as one machine ([`NodeState`]): leases,
//!   heartbeats and echoes, home and gateway sides of every slot, recovery scans.
//! - `presence`: the presence replica table ([`PresenceTable`]: per-origin deltas and
//!   snapshots), the joins/leaves every merge returns, and what each subscriber receives
//!   ([`Fanout`]: one `presence_state`, then the window diffs that compose with it).
//!
//! The deterministic simulation of a whole cluster and the checker of P1 are test machinery
//! and live in their own crate, `roster-sim`; the product does not ship them.

pub mod codec;
mod config;
mod few;
mod ids;
mod node;
mod presence;
mod ring;
mod slot;

pub use config::*;
pub use ids::*;
pub use node::*;
pub use presence::*;
pub use ring::*;
pub use slot::*;

/// How many places a full list of `len` small records kept for a long time grows by: one at a
/// time up to 16 (each record costs only its own bytes; copying at most 16 on a push is
/// cheap), then by half its length (amortized O(1) pushes, at most a third of it empty).
/// Doubling, `Vec`'s own rule, leaves a list of 9 with room for 16.
pub fn grow_by(len: usize) -> usize {
    if len < 16 {
        1
    } else {
        len / 2
    }
}

/// Room in `list` for one more entry, as [`grow_by`] says (nothing when it has room already).
pub fn make_room<T>(list: &mut Vec<T>) {
    if list.len() == list.capacity() {
        list.reserve_exact(grow_by(list.len()));
    }
}
