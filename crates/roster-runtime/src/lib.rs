//! # roster-runtime
//!
//! Roster's actors on one node: they run the core's `NodeState` and carry out its effects, and
//! give Rust backends the embedding API ([`Node`], [`Session`], [`Connection`]).
//!
//! ## Layout
//! - `node`: the embedding API and the `NodeSupervisor` that owns the tree below.
//! - `node_actor`: `NodeActor`, which runs `NodeState` and executes its effects.
//! - `gateway`: `Gateway`, which links every `ConnectionActor` and reports their ends.
//! - `connection`: `ConnectionActor`, one per socket or session (local only).
//! - `presence_shard`: `PresenceShard`s: subscriptions, coalesced diffs, broadcasts by topic.
//! - `users`: user actors: the home's table of activations running the application's
//!   [`UserBehaviour`], and [`UserRef`], which reaches a user's activation from any node.
//! - `record_log`: the records as JSON lines in Unix milliseconds (`--records FILE`).
//! - `epoch_store`: the highest granted epoch in `data_dir/NAME`.
//! - `cluster`: the cluster link over `ractor_cluster`: TLS and Roster's handshake, sessions
//!   bound to authenticated peers, `ClusterLink`, dialing (see its module docs for its files).
//! - `codec`: the versioned, fallible codec for node-to-node payloads.
//! - `clock`: monotonic milliseconds for the core.
//!
//! ```text
//! NodeSupervisor
//! ├── PresenceShard(0..k)   by hash(topic)
//! ├── NodeActor             NodeState: leases, homes and user slots, gateway slots, presence
//! │   └── activation(u)     one per live user homed here (a table entry; a task while busy)
//! └── Gateway
//!     └── ConnectionActor   one per socket (local only)
//! ```

mod clock;
mod cluster;
mod codec;
mod connection;
mod epoch_store;
mod error;
mod gateway;
mod node;
mod node_actor;
mod presence_shard;
mod record_log;
mod users;

pub use clock::Clock;
pub use cluster::{LinkCounters, LinkEvent, LinkStatus};
pub use connection::{CloseReason, ConnEvent, Joined};
pub use epoch_store::EpochStore;
pub use error::{JoinError, PushError, RuntimeError, UserError};
pub use node::{
    Connection, ConnectionHandle, JoinRequest, Node, NodeOptions, PresenceSubscription, Session, Stats, TopicPresence,
};
pub use node_actor::{NodeMsg, NodeStatus};
pub use record_log::RecordLog;
pub use users::{KeepSessions, UserBehaviour, UserCtx, UserRef, DEFAULT_CALL_TIMEOUT};
