//! User actors: one activation per user with a live session, on the user's home, running the
//! application's [`UserBehaviour`]; [`UserRef`] reaches it from any node.
//!
//! ```text
//! NodeSupervisor
//! ├── NodeActor        NodeState decides: start, session events, stop, fences, routing
//! │     └── users::Shared   the table of activations (user → mailbox), fences, answers
//! │           └── activation(u)   state + queue; a task runs only while it has mail
//! ├── PresenceShard(0..k)
//! └── Gateway (a task)
//!     └── connection (a value in a task)
//! ```
//!
//! The core decides everything about an activation in the same turn that reads the lease
//! (`roster-core`, `node/users.rs`); this module carries it out: [`host`] executes the core's
//! `UserEffect`s, [`activation`] runs one user's hooks in order, [`user_ref`] sends calls.

mod activation;
mod behaviour;
pub(crate) mod host;
mod user_ref;

pub(crate) use activation::Behaviour;
pub use behaviour::{KeepSessions, UserBehaviour, UserCtx};
pub use user_ref::{UserRef, DEFAULT_CALL_TIMEOUT};

#[cfg(test)]
mod tests;
