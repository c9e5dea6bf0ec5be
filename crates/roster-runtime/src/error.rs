//! The runtime's errors: why a node could not start, why a join failed, why a push was refused.

use roster_core::ConfigError;
use std::time::Duration;

/// Why a node could not start or an operation could not reach it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The configuration is invalid or does not name this node.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The epoch store in `data_dir` could not be read or written.
    #[error("epoch store {path}: {source}")]
    EpochStore {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The record log could not be opened.
    #[error("record log {path}: {error}")]
    RecordLog {
        /// The file.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
    /// An actor could not be spawned.
    #[error("cannot start actor {0}")]
    Spawn(String),
    /// The cluster link could not start: its port is taken, or a `[cluster.tls]` file is
    /// missing or unusable (the message names it).
    #[error("cluster link: {0}")]
    ClusterLink(String),
    /// The node has shut down (or its actor died).
    #[error("the node is not running")]
    NotRunning,
}

/// Why a join failed, exactly as the client protocol names it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The `reject` policy and every slot taken.
    #[error("already_joined")]
    AlreadyJoined,
    /// A wait (policy `wait`, an in-doubt slot) ran out.
    #[error("wait_timed_out")]
    WaitTimedOut,
    /// No home for the user's partition could be reached in time.
    #[error("no_quorum")]
    NoQuorum,
    /// Anonymous where the policy denies it, or a reserved user id.
    #[error("unauthorized")]
    Unauthorized,
    /// The topic is not allowed.
    #[error("forbidden_topic")]
    ForbiddenTopic,
    /// The connection already joined `max_topics_per_socket` topics.
    #[error("too_many_topics")]
    TooManyTopics,
    /// The request was malformed.
    #[error("bad_request")]
    BadRequest,
    /// A newer join of the same user took the slot while this one waited.
    #[error("logged_in_elsewhere")]
    LoggedInElsewhere,
    /// The connection closed (or the node shut down) before an answer.
    #[error("closed")]
    Closed,
}

impl JoinError {
    /// The reason string sent to clients.
    pub fn reason(&self) -> &'static str {
        match self {
            JoinError::AlreadyJoined => "already_joined",
            JoinError::WaitTimedOut => "wait_timed_out",
            JoinError::NoQuorum => "no_quorum",
            JoinError::Unauthorized => "unauthorized",
            JoinError::ForbiddenTopic => "forbidden_topic",
            JoinError::TooManyTopics => "too_many_topics",
            JoinError::BadRequest => "bad_request",
            JoinError::LoggedInElsewhere => "logged_in_elsewhere",
            JoinError::Closed => "closed",
        }
    }

    /// The error for a reason the core gave.
    pub fn from_reason(reason: &str) -> Self {
        match reason {
            "already_joined" => JoinError::AlreadyJoined,
            "wait_timed_out" => JoinError::WaitTimedOut,
            "no_quorum" => JoinError::NoQuorum,
            "unauthorized" => JoinError::Unauthorized,
            "logged_in_elsewhere" => JoinError::LoggedInElsewhere,
            "too_many_topics" => JoinError::TooManyTopics,
            "forbidden_topic" => JoinError::ForbiddenTopic,
            _ => JoinError::BadRequest,
        }
    }
}

/// Why a push (a broadcast or `presence:update`) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Anonymous connections may only read.
    #[error("unauthorized")]
    Unauthorized,
    /// The connection has not joined that topic.
    #[error("not_joined")]
    NotJoined,
    /// The connection is closed.
    #[error("closed")]
    Closed,
}

/// Why a call, cast or info request to a user did not get an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The user's home serves it and the user has no live session, slot, reservation or
    /// waiting join: messages never start an activation.
    #[error("not_active: the user has no live session")]
    NotActive,
    /// No node served the user's partition within the timeout (no quorum, or it is moving).
    #[error("no_home: no node serves the user's partition")]
    NoHome,
    /// Sent, but no answer came within the timeout (the home may have handled it).
    #[error("timeout: no answer within {0:?}")]
    Timeout(Duration),
    /// The activation failed on it: the message did not decode there, or the application
    /// panicked (a fresh activation follows).
    #[error("failed: {0}")]
    Failed(String),
    /// The message or the reply could not be encoded or decoded here.
    #[error("codec: {0}")]
    Codec(String),
    /// The node has shut down.
    #[error("the node is not running")]
    NotRunning,
}

impl UserError {
    /// A short reason, as the HTTP API spells it.
    pub fn reason(&self) -> &'static str {
        match self {
            UserError::NotActive => "not_active",
            UserError::NoHome => "no_quorum",
            UserError::Timeout(_) => "timeout",
            UserError::Failed(_) => "failed",
            UserError::Codec(_) => "bad_request",
            UserError::NotRunning => "not_running",
        }
    }
}
