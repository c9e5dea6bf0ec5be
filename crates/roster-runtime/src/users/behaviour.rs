//! What an application writes for its users: a [`UserBehaviour`] (per-user state, hooks for
//! the user's sessions, its own messages), and what each hook sees of the activation: a
//! [`UserCtx`].

use super::host::Shared;
use roster_core::{ActivationEnd, Input, PartitionId, SessionEnd, SessionStart, SessionView, SlotToken, UserId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;

/// A backend's per-user logic (a game's player, a chat user's unread counter). One
/// activation runs per user with a live session, on the user's home; every hook of one
/// activation runs in order, one at a time. The synchronous hooks (`start`, the session hooks,
/// `stop`) of an idle activation run in the node actor's turn, so they must be quick (no
/// blocking I/O): whatever is slow belongs in `handle`, which runs in a task of its own.
///
/// State and messages are serialized with the node codec (bincode behind a version byte): a
/// message may come from another node, and the state moves with the user when its home is
/// handed over.
pub trait UserBehaviour: Send + Sync + 'static {
    /// Whether the activation keeps [`UserCtx::sessions`]: its own copy of each of the user's
    /// sessions, brought up to date before every session hook. A behaviour that never reads it
    /// may say `false` and save that copy (about 130 bytes per session, besides what the home
    /// keeps anyway); its [`UserCtx::sessions`] is then always empty. The session hooks get
    /// each session as before, and [`UserRef::info`](super::UserRef::info) asks the home.
    const KEEPS_SESSIONS: bool = true;

    /// Whether the behaviour has session hooks ([`session_started`](Self::session_started),
    /// [`session_changed`](Self::session_changed), [`session_ended`](Self::session_ended)). A
    /// behaviour that overrides none of them and keeps no sessions (`KEEPS_SESSIONS` is
    /// `false`) may say `false`: its activations are then told nothing of their sessions, and
    /// the home keeps no copy of what it would have told them (about 80 bytes per session).
    /// Its session hooks are never called; [`UserRef::info`](super::UserRef::info) still lists
    /// the user's sessions.
    const SESSION_HOOKS: bool = true;

    /// Per-user state. Handed over to the next home when a partition moves between two
    /// running nodes; lost on a failover (the home died, hung or was cut off), so write what
    /// must last elsewhere, with [`UserCtx::token`] as the fencing token.
    type State: Serialize + DeserializeOwned + Send + 'static;
    /// The messages callers send ([`UserRef::call`](super::UserRef::call),
    /// [`UserRef::cast`](super::UserRef::cast)).
    type Msg: Serialize + DeserializeOwned + Send + 'static;
    /// The answers to calls.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// A new activation begins: `handed_over` is the previous activation's state after a
    /// handover, `None` on a user's first join or after a failover. [`UserCtx::sessions`]
    /// lists the user's sessions now.
    fn start(&self, ctx: &UserCtx, handed_over: Option<Self::State>) -> Self::State;

    /// A session began: granted, resumed on a new socket, or found by a new home's recovery.
    fn session_started(&self, ctx: &UserCtx, state: &mut Self::State, session: &SessionView, how: SessionStart) {
        let _ = (ctx, state, session, how);
    }

    /// A session's state changed: being revoked, replaced by a resume, reserved after a drop,
    /// in doubt behind an unreachable gateway, or heard again.
    fn session_changed(&self, ctx: &UserCtx, state: &mut Self::State, session: &SessionView) {
        let _ = (ctx, state, session);
    }

    /// A session ended.
    fn session_ended(&self, ctx: &UserCtx, state: &mut Self::State, session: &SessionView, end: &SessionEnd) {
        let _ = (ctx, state, session, end);
    }

    /// One of the application's own messages; for a cast the reply is dropped.
    fn handle(
        &self,
        ctx: &UserCtx,
        state: &mut Self::State,
        msg: Self::Msg,
    ) -> impl Future<Output = Self::Reply> + Send;

    /// The activation stops (`why`); for a handover the state is then sent to the new home.
    /// Not called once the activation's lease deadline has passed: nothing of it runs then.
    fn stop(&self, ctx: &UserCtx, state: &mut Self::State, why: &ActivationEnd) {
        let _ = (ctx, state, why);
    }
}

/// The behaviour of a node started without one: the user's sessions are kept by the home
/// ([`UserRef::info`](super::UserRef::info)), and the activation answers `()` to `()`. It has
/// no hook that reads [`UserCtx::sessions`], so it keeps no second copy of them
/// ([`UserBehaviour::KEEPS_SESSIONS`] is `false`), and no session hook, so it is told nothing
/// of them ([`UserBehaviour::SESSION_HOOKS`] is `false`).
#[derive(Clone, Copy, Debug, Default)]
pub struct KeepSessions;

impl UserBehaviour for KeepSessions {
    const KEEPS_SESSIONS: bool = false;
    const SESSION_HOOKS: bool = false;
    type State = ();
    type Msg = ();
    type Reply = ();

    fn start(&self, _ctx: &UserCtx, _handed_over: Option<()>) {}

    async fn handle(&self, _ctx: &UserCtx, _state: &mut (), _msg: ()) {}
}

/// What a hook sees of its activation.
pub struct UserCtx {
    pub(super) user: UserId,
    pub(super) token: SlotToken,
    pub(super) partition: PartitionId,
    pub(super) sessions: Vec<SessionView>,
    pub(super) shared: Arc<Shared>,
}

impl UserCtx {
    /// The user.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// This activation's fencing token, `<epoch>.<generation>`: larger than every earlier
    /// activation's of this user, anywhere. Hand it to third parties with every write, and
    /// have them refuse tokens below the largest they saw.
    pub fn token(&self) -> SlotToken {
        self.token
    }

    /// The user's sessions as the home knows them, in every scope (always empty for a
    /// behaviour whose [`UserBehaviour::KEEPS_SESSIONS`] is `false`).
    pub fn sessions(&self) -> &[SessionView] {
        &self.sessions
    }

    /// Whether the activation is still within its lease (its node holds the lease on the
    /// user's partition at the activation's epoch). A long handler can check it before a side
    /// effect; third parties check the token.
    pub fn is_current(&self) -> bool {
        self.shared.fenced_ok(self.partition, self.token.epoch)
    }

    /// The node it runs on (the user's home).
    pub fn node(&self) -> &roster_core::NodeName {
        &self.shared.node
    }

    /// Revoke one of the user's sessions: its client gets `slot_revoked` with `reason`.
    /// Fenced like every act of the activation: `false`, and nothing is sent, once the
    /// activation is past its lease ([`UserCtx::is_current`]), so a stale activation whose
    /// handler still runs cannot kick a session the next home's activation now watches.
    pub fn kick(&self, session: &SessionView, reason: impl Into<String>) -> bool {
        self.kick_input(Input::KickSession {
            user: self.user.clone(),
            conn: session.conn.clone(),
            scope: session.scope.clone(),
            reason: reason.into(),
        })
    }

    /// Revoke every session of the user, in every scope; fenced as [`UserCtx::kick`].
    pub fn kick_all(&self, reason: impl Into<String>) -> bool {
        self.kick_input(Input::Kick { user: self.user.clone(), topic: None, reason: reason.into() })
    }

    fn kick_input(&self, input: Input) -> bool {
        let current = self.is_current();
        if current {
            self.shared.input(input);
        }
        current
    }
}
