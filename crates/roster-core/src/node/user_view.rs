//! What the home tells the runtime about user actors: the sessions of a user as the home knows
//! them, the events that change them, and the [`UserEffect`]s that start, feed and stop a
//! user's one activation (see `users.rs` for when each happens).

use crate::config::ScopeKey;
use crate::ids::{ConnId, Incarnation, Millis, NodeName, SlotToken, Topic, UserId};
use crate::ring::PartitionId;
use crate::slot::TabKey;
use serde::{Deserialize, Serialize};

/// One session of a user as its home knows it: a connection that holds a slot, or held one
/// and is not confirmed gone yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// The connection: its gateway incarnation (and so its node) and socket.
    pub conn: ConnId,
    /// The slot's scope.
    pub scope: ScopeKey,
    /// The topic: the scope's own for `scope = "topic"`; for a global scope the topic of the
    /// join that took the slot, when this home saw that join (not after a recovery scan).
    pub topic: Option<Topic>,
    /// The tab it counts for.
    pub tab: TabKey,
    /// Its slot's fencing token.
    pub token: SlotToken,
    /// Where it stands.
    pub state: SessionState,
    /// The home cannot hear its gateway (a cut link, a hung or dead node): it may still be
    /// alive there, and it counts until its gateway is heard again or it clears.
    pub in_doubt: bool,
}

/// Where a session stands at its home.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    /// It holds the slot.
    Held,
    /// The home asked its gateway to revoke it; it counts until the gateway confirms.
    Revoking {
        /// Why (`logged_in_elsewhere`, or a kick's reason).
        reason: String,
    },
    /// Its tab resumed on another socket; it was told to close quietly and counts for its tab
    /// until the gateway confirms.
    Replaced,
    /// Its connection dropped uncleanly and the slot is kept for its tab (`reserve_ms`).
    Reserved,
}

impl SessionState {
    /// A short name: `held`, `revoking`, `replaced`, `reserved`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionState::Held => "held",
            SessionState::Revoking { .. } => "revoking",
            SessionState::Replaced => "replaced",
            SessionState::Reserved => "reserved",
        }
    }
}

/// How a session began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionStart {
    /// A join was granted a slot.
    Granted,
    /// A tab came back on a new socket and took its slot over (the old session is replaced).
    Resumed,
    /// A new home found it in its recovery scan (the previous home is gone or moved).
    Recovered,
}

/// How a session ended, as far as its home knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEnd {
    /// Its gateway released it: a leave or close (`clean`), or a drop, a crash of the
    /// connection or a passed horizon (`clean: false` only for unclean socket ends).
    Closed {
        /// The client ended it on purpose.
        clean: bool,
    },
    /// A revoke was confirmed (a takeover or a kick).
    Revoked {
        /// Why.
        reason: String,
    },
    /// Its tab resumed elsewhere and the old connection's close was confirmed (or its
    /// reservation was taken by the tab's new connection).
    Replaced,
    /// Its gateway stayed unheard until the session could no longer be valid there (rule 8):
    /// a dead node, or one cut off for `isolation_ms`.
    GatewayLost,
    /// Its reservation ran out (`reserve_ms`) with no resume.
    ReservationLapsed,
}

/// A change in one of the user's sessions, delivered to the user's activation in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEvent {
    /// A new session.
    Started {
        /// The session as it is now.
        session: SessionView,
        /// Granted, resumed or recovered.
        how: SessionStart,
    },
    /// A session's state or reachability changed (revoking, replaced, reserved, in doubt,
    /// heard again): `session` shows how it stands now.
    Changed {
        /// The session as it is now.
        session: SessionView,
    },
    /// A session is gone.
    Ended {
        /// The session as it last stood.
        session: SessionView,
        /// How it ended.
        end: SessionEnd,
    },
}

/// Why an activation stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActivationEnd {
    /// The user holds no slot, reservation or waiting join any more.
    Idle,
    /// The home's lease on the user's partition ran out (or a recovery made it stale): the
    /// activation ended at the lease's deadline at the latest.
    LeaseLost,
    /// The partition moves to `to` while both nodes run: the state goes with it.
    HandedOver {
        /// The new home.
        to: NodeName,
    },
    /// The node shut down gracefully.
    Shutdown,
    /// The application's code panicked; a fresh activation follows.
    Failed,
}

impl ActivationEnd {
    /// A short name: `idle`, `lease_lost`, `handed_over`, `shutdown`, `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ActivationEnd::Idle => "idle",
            ActivationEnd::LeaseLost => "lease_lost",
            ActivationEnd::HandedOver { .. } => "handed_over",
            ActivationEnd::Shutdown => "shutdown",
            ActivationEnd::Failed => "failed",
        }
    }
}

/// What a home says about one user (`GET /user`, [`UserEffect::Info`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// The user.
    pub user: UserId,
    /// The home answering.
    pub home: NodeName,
    /// The live activation's fencing token, if the user has one.
    pub activation: Option<SlotToken>,
    /// The activation's predecessor whose state it started from (a handover), if any.
    pub handed_over_from: Option<SlotToken>,
    /// Every session of the user, in every scope, as the home knows them.
    pub sessions: Vec<SessionView>,
}

/// The answer to a call or cast to a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserAnswer {
    /// The activation handled it; the application's reply, encoded.
    Reply(Vec<u8>),
    /// The user's home serves it and the user has no activation (no slot, reservation or
    /// waiting join): messages do not activate users.
    NotActive,
    /// The node asked is not (or no longer) serving the user's partition, or none is known:
    /// ask again once a home holds it.
    NotHome,
    /// The user's activation is moving (a handover whose state is on its way, or a fenced
    /// activation about to stop): ask again.
    Moving,
    /// The activation failed on it (it could not be decoded, or the application panicked).
    Failed(String),
}

/// Where the answer to a call delivered to an activation goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyTo {
    /// A caller on this node, by call id.
    Local(u64),
    /// A caller on another node: answer with [`PeerMsg::UserReply`](super::PeerMsg::UserReply).
    Peer {
        /// The calling incarnation.
        node: Incarnation,
        /// Its call id.
        call: u64,
    },
}

/// What the runtime must do for user actors (part of [`Effect`](super::Effect)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserEffect {
    /// Start the user's activation: this node holds the lease on `partition` and serves it.
    /// It must run nothing once the partition's fence (see [`UserEffect::Fence`]) is past
    /// its deadline or at another epoch.
    Start {
        /// The user.
        user: UserId,
        /// Its partition.
        partition: PartitionId,
        /// The activation's fencing token `<epoch>.<generation>`.
        token: SlotToken,
        /// The lease's deadline now (node clock).
        until: Millis,
        /// The user's sessions now; none when the runtime keeps no copy of them
        /// ([`NodeState::set_activation_sessions`](super::NodeState::set_activation_sessions)).
        sessions: Vec<SessionView>,
        /// The state handed over by the previous activation (a handover), or `None`.
        state: Option<Vec<u8>>,
    },
    /// A session event for the activation `token`.
    Session {
        /// The user.
        user: UserId,
        /// The activation.
        token: SlotToken,
        /// The event.
        event: SessionEvent,
    },
    /// Stop the activation `token`. For [`ActivationEnd::HandedOver`] the runtime answers
    /// with [`Input::ActivationStopped`](super::Input::ActivationStopped) carrying the state.
    Stop {
        /// The user.
        user: UserId,
        /// The activation.
        token: SlotToken,
        /// Why.
        why: ActivationEnd,
    },
    /// The lease on `partition` at `epoch` is valid until `until` (node clock); an
    /// activation of another epoch, or after `until`, is fenced: it runs nothing.
    Fence {
        /// The partition.
        partition: PartitionId,
        /// The lease's epoch.
        epoch: u64,
        /// Its deadline.
        until: Millis,
    },
    /// Hand a call (or, with no `reply`, a cast) to the activation `token`.
    Deliver {
        /// The user.
        user: UserId,
        /// The activation.
        token: SlotToken,
        /// The application's message, encoded.
        body: Vec<u8>,
        /// Where the answer goes; `None` for a cast.
        reply: Option<ReplyTo>,
    },
    /// The answer to a local caller's call `call`.
    Answer {
        /// The call id.
        call: u64,
        /// The answer.
        answer: UserAnswer,
    },
    /// The answer to a local caller's info request `call`; `None`: no home could answer.
    Info {
        /// The call id.
        call: u64,
        /// The home's view.
        view: Option<UserView>,
    },
}
