//! # roster-core
//!
//! Roster's pure logic. Nothing here touches a socket, a clock, a thread or a random number
//! generator: time (`now`, in milliseconds) and randomness are arguments, and every state
//! machine returns what should happen as values (effects) for the runtime to carry out.
//!
//! ## Layout
//! - [`ids`]: users, topics, tabs, sockets, roles, metas, `phx_ref`s, incarnations, slot tokens.
//! - `presence`: the presence replica table ([`PresenceTable`]: per-origin deltas and
//!   snapshots), the joins/leaves every merge returns, and their coalescing into
//!   `presence_diff` frames ([`DiffCoalescer`]).

mod ids;
mod presence;

pub use ids::*;
pub use presence::*;
