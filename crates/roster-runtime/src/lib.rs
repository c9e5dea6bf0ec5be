//! # roster-runtime
//!
//! Roster's actors on one node (and, later, between nodes): they run the core's `NodeState`
//! and carry out its effects.
//!
//! ## Layout
//! - `codec`: the versioned, fallible codec for node-to-node payloads.

pub mod codec;
