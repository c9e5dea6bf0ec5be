//! # roster
//!
//! The embedding facade of Roster, a presence cluster with a cluster-wide single slot per user.
//! It re-exports the public API of the workspace crates.

pub use roster_core as core;
