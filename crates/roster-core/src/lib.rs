//! # roster-core
//!
//! Roster's pure logic. Nothing here touches a socket, a clock, a thread or a random number
//! generator: time (`now`, in milliseconds) and randomness are arguments, and every state
//! machine returns what should happen as values (effects) for the runtime to carry out.
//!
//! ## Layout
//! - [`ids`]: users, topics, tabs, sockets, roles, metas, `phx_ref`s, incarnations, slot tokens.
//! - [`slot`]: the slot policy of one `(user, scope)` on its home: grants, takeovers, resumes, waits.

mod ids;
mod slot;

pub use ids::*;
pub use slot::*;
