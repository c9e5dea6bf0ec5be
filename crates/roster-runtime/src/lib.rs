//! # roster-runtime
//!
//! Roster's actors on one node: they run the core's `NodeState` and carry out its effects, and
//! give Rust backends the embedding API ([`Node`], [`Session`], [`Connection`]).
//!
//! ## Layout
//! - `node`: the embedding API and the `NodeSupervisor` that owns the tree below.
//! - `node_actor`: `NodeActor`, which runs `NodeState` and executes its effects.
//! - `gateway`: `Gateway`, the task that watches every connection task and reports its end.
//! - `connection`: `Connection`, one per socket or session: a value, not an actor.
//! - `conn_channels`: a connection's channels, as the node side and its reader see them.
//! - `outbound`: what a connection is sent, the shared pushes, its bounded queue.
//! - `presence_shard`: `PresenceShard`s: the core's `Fanout` per topic (each subscriber's
//!   state and diffs), shared pushes, broadcasts.
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
//! └── Gateway (a task)      watches every connection task
//!     └── connection        one per socket or session (a value in a task, not an actor)
//! ```

mod client_inbox;
mod clock;
mod cluster;
mod codec;
mod conn_channels;
mod connection;
mod epoch_store;
mod error;
mod gateway;
mod node;
mod node_actor;
mod outbound;
mod presence_shard;
mod record_log;
mod users;
mod wake_timer;

pub use clock::Clock;
pub use cluster::{LinkCounters, LinkEvent, LinkStatus};
pub use conn_channels::ChannelTag;
pub use connection::{CloseReason, ConnEvent, Connection, ConnectionHandle, Joined};
pub use epoch_store::EpochStore;
pub use error::{JoinError, PushError, RuntimeError, UserError};
pub use node::{ConnectionTask, JoinRequest, Node, NodeOptions, PresenceSubscription, Session, Stats, TopicPresence};
pub use node_actor::NodeStatus;
pub use outbound::{ChannelId, Outbound, Push, PushBody, PushEncoder};
pub use presence_shard::PresenceFeed;
pub use record_log::RecordLog;
pub use users::{KeepSessions, UserBehaviour, UserCtx, UserRef, DEFAULT_CALL_TIMEOUT};
