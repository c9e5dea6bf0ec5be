//! [`UserRef`]: a user as any node of the cluster sees it. Calls and casts go to the user's
//! one live activation wherever its home is (on the home itself straight into the
//! activation's queue; from another node one round trip over the link).

use super::activation::{Mail, Reply};
use super::behaviour::UserBehaviour;
use super::host::{Answer, Shared};
use crate::codec;
use crate::error::UserError;
use roster_core::{Input, SessionView, UserAnswer, UserId, UserView};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a call waits for an answer unless [`UserRef::timeout`] says otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The first pause before asking again when no home serves the user (its partition is
/// moving); it doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(10);
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A user, from any node ([`Node::user`](crate::Node::user)). Cheap to clone.
#[derive(Clone)]
pub struct UserRef {
    user: UserId,
    shared: Arc<Shared>,
    timeout: Duration,
}

impl UserRef {
    pub(crate) fn new(user: UserId, shared: Arc<Shared>) -> Self {
        Self { user, shared, timeout: DEFAULT_CALL_TIMEOUT }
    }

    /// The user.
    pub fn id(&self) -> &UserId {
        &self.user
    }

    /// The same user with another timeout for calls, casts and info requests.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Call the user's activation with `msg` and wait for its reply. While the user's
    /// partition has no home (it is moving) the call is asked again until the timeout; a call
    /// that reached an activation is never sent twice.
    ///
    /// Errors: [`UserError::NotActive`] (the user has no live session: messages never start
    /// an activation), [`UserError::NoHome`] (no node served the user within the timeout),
    /// [`UserError::Timeout`] (sent, no answer in time), [`UserError::Failed`] (the message
    /// did not decode as `B::Msg` there, or the application panicked on it).
    pub async fn call<B: UserBehaviour>(&self, msg: B::Msg) -> Result<B::Reply, UserError> {
        let body = codec::encode(&msg).map_err(|e| UserError::Codec(e.to_string()))?;
        let bytes = self.send(body, true).await?.ok_or(UserError::NotRunning)?;
        codec::decode::<B::Reply>(&bytes).map_err(|e| UserError::Codec(e.to_string()))
    }

    /// Send `msg` to the user's activation without waiting for it to be handled. On the
    /// user's home it is queued at once (or [`UserError::NotActive`]); from another node it is
    /// sent to the home, and a user found offline there drops it.
    pub async fn cast<B: UserBehaviour>(&self, msg: B::Msg) -> Result<(), UserError> {
        let body = codec::encode(&msg).map_err(|e| UserError::Codec(e.to_string()))?;
        self.send(body, false).await.map(|_| ())
    }

    /// The user as its home knows it: the home, the live activation's token, every session
    /// (`GET /user`). A user with no session is answered with an empty list.
    pub async fn info(&self) -> Result<UserView, UserError> {
        let deadline = Instant::now() + self.timeout;
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            let (call, rx) = self.shared.expect_answer();
            self.shared.input(Input::UserInfo { call, user: self.user.clone() });
            match self.wait(call, rx, deadline).await? {
                Answer::Info(Some(view)) => return Ok(view),
                Answer::Info(None) | Answer::Call(_) => {}
            }
            pause = self.pause_before_retry(pause, deadline).await.ok_or(UserError::NoHome)?;
        }
    }

    /// Revoke one of the user's sessions (from [`UserRef::info`] or a session event).
    pub fn kick(&self, session: &SessionView, reason: impl Into<String>) {
        let input = Input::KickSession {
            user: self.user.clone(),
            conn: session.conn.clone(),
            scope: session.scope.clone(),
            reason: reason.into(),
        };
        self.shared.input(input);
    }

    /// Revoke every session of the user.
    pub fn kick_all(&self, reason: impl Into<String>) {
        self.shared.input(Input::Kick { user: self.user.clone(), topic: None, reason: reason.into() });
    }

    /// Send to the activation; `Ok(Some(reply))` for an answered call, `Ok(None)` for a cast.
    async fn send(&self, body: Vec<u8>, reply: bool) -> Result<Option<Vec<u8>>, UserError> {
        let deadline = Instant::now() + self.timeout;
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            let answer = match self.shared.local(&self.user) {
                // On the user's home: straight into the activation's queue.
                Some(act) => {
                    if !reply {
                        act.post(Mail::Call { body, reply: Reply::None }, None);
                        return Ok(None);
                    }
                    let (tx, rx) = oneshot::channel();
                    act.post(Mail::Call { body: body.clone(), reply: Reply::Direct(tx) }, None);
                    match tokio::time::timeout_at(deadline, rx).await {
                        Ok(Ok(answer)) => answer,
                        Ok(Err(_)) => UserAnswer::Moving, // stopped before it answered
                        Err(_) => return Err(UserError::Timeout(self.timeout)),
                    }
                }
                // Elsewhere, or not active: the core routes it to the home.
                None => {
                    let (call, rx) = self.shared.expect_answer();
                    let input = Input::UserCall { call, user: self.user.clone(), body: body.clone(), reply };
                    self.shared.input(input);
                    if !reply {
                        self.shared.forget(call);
                        return Ok(None);
                    }
                    match self.wait(call, rx, deadline).await? {
                        Answer::Call(a) => a,
                        Answer::Info(_) => UserAnswer::NotHome,
                    }
                }
            };
            match answer {
                UserAnswer::Reply(bytes) => return Ok(Some(bytes)),
                UserAnswer::NotActive => return Err(UserError::NotActive),
                UserAnswer::Failed(why) => return Err(UserError::Failed(why)),
                UserAnswer::NotHome | UserAnswer::Moving => {
                    pause = self.pause_before_retry(pause, deadline).await.ok_or(UserError::NoHome)?;
                }
            }
        }
    }

    async fn wait(&self, call: u64, rx: oneshot::Receiver<Answer>, deadline: Instant) -> Result<Answer, UserError> {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(UserError::NotRunning),
            Err(_) => {
                self.shared.forget(call);
                Err(UserError::Timeout(self.timeout))
            }
        }
    }

    /// Pause before asking again (the home is unknown or moving); `None` when the deadline
    /// would pass first.
    async fn pause_before_retry(&self, pause: Duration, deadline: Instant) -> Option<Duration> {
        if Instant::now() + pause >= deadline {
            return None;
        }
        tokio::time::sleep(pause).await;
        Some((pause * 2).min(MAX_RETRY_PAUSE))
    }
}
