//! # roster
//!
//! The embedding facade of Roster, a presence cluster with a cluster-wide single slot per
//! user: who is online in each room, and at most `max_slots` live sessions per user.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use roster::{JoinRequest, Node, NodeOptions};
//!
//! let node = Node::start(NodeOptions::single()).await?;
//! let session = node.join(JoinRequest::user("alice", "room:lobby").tab("tab-1")).await?;
//! println!("slot token {:?}", session.token());
//! let online = node.presence("room:lobby").current().await;
//! println!("{}", serde_json::to_string(&*online)?);
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Per-user logic (a game's player, a chat user's unread counter) is a [`UserBehaviour`]: one
//! activation per user with a live session, on the user's home, reached from any node with
//! [`Node::user`] (`examples/game_lobby.rs`, `examples/embedded_chat.rs`).
//!
//! The pure logic is in [`core`] (`roster-core`); the actors and the embedding API come from
//! `roster-runtime` and are re-exported here.

pub use roster_core as core;
pub use roster_runtime::{
    CloseReason, ConnEvent, Connection, ConnectionHandle, JoinError, JoinRequest, Joined, KeepSessions, Node,
    NodeOptions, PresenceSubscription, PushError, RuntimeError, Session, Stats, TopicPresence, UserBehaviour, UserCtx,
    UserError, UserRef, DEFAULT_CALL_TIMEOUT,
};
