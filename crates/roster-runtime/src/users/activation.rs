//! One user's activation: an entry in the home's table with the application's state and a
//! queue of mail, run by a task only while it has mail (a synchronous hook posted to an idle
//! activation runs at once, in the poster's turn). An idle activation is a few hundred
//! bytes (no task, no channel), so a user actor costs far less than a ractor actor (about
//! 10 KB: `BENCHMARKS.md`).
//!
//! Mail is handled in order, one at a time, each hook with the state taken out of the entry
//! (so an `async` handler holds no lock). Before anything of the application runs, the
//! partition's fence is checked: past its lease's deadline (or at another epoch) the
//! activation runs nothing; calls are answered `Moving` so their callers ask again and find
//! the next home. A panic in a hook fails the activation: queued calls are answered, and the
//! core is told, which starts a fresh activation shortly after.

use super::behaviour::{UserBehaviour, UserCtx};
use super::host::{lock, Shared, Spawner};
use crate::codec;
use futures_util::FutureExt;
use roster_core::{
    ActivationEnd, Incarnation, Input, Millis, PartitionId, SessionEvent, SessionView, SlotToken, UserAnswer, UserId,
};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// What an activation is sent.
pub(crate) enum Mail {
    /// Begin, with a handed-over state or none.
    Start(Option<Vec<u8>>),
    /// A session event.
    Session(SessionEvent),
    /// A call or cast.
    Call {
        /// The application's message, encoded.
        body: Vec<u8>,
        /// Where the answer goes.
        reply: Reply,
    },
    /// Stop.
    Stop(ActivationEnd),
}

/// Where a call's answer goes.
pub(crate) enum Reply {
    /// A cast: nowhere.
    None,
    /// A caller on this node that found the activation in the table.
    Direct(oneshot::Sender<UserAnswer>),
    /// A caller on this node that went through the node actor (by call id).
    Local(u64),
    /// A caller on another node.
    Peer {
        /// The calling incarnation.
        node: Incarnation,
        /// Its call id.
        call: u64,
    },
}

/// An activation as the table holds it.
pub(crate) trait Mailbox: Send + Sync {
    /// Its fencing token.
    fn token(&self) -> SlotToken;
    /// Queue `mail`, and run the activation if it is not running. `now`: the node clock's
    /// reading of the node actor's turn that posts it (the reading the core decided with), for
    /// the fence check of a hook run at once; `None` reads the clock.
    fn post(self: Arc<Self>, mail: Mail, now: Option<Millis>);
}

/// Makes activations of one behaviour.
pub(crate) struct Behaviour<B>(pub(crate) Arc<B>);

impl<B: UserBehaviour> Spawner for Behaviour<B> {
    fn activation(
        &self,
        shared: Arc<Shared>,
        user: UserId,
        partition: PartitionId,
        token: SlotToken,
        sessions: Vec<SessionView>,
    ) -> Arc<dyn Mailbox> {
        let sessions = if B::KEEPS_SESSIONS { sessions } else { Vec::new() };
        let ctx = UserCtx { user, token, partition, sessions, shared };
        Arc::new(Activation::<B> {
            behaviour: self.0.clone(),
            token,
            inner: Mutex::new(Inner {
                ctx: Some(ctx),
                state: None,
                queue: VecDeque::new(),
                running: false,
                stopping: false,
                done: false,
            }),
        })
    }

    fn keeps_sessions(&self) -> bool {
        B::KEEPS_SESSIONS
    }

    fn session_events(&self) -> bool {
        B::KEEPS_SESSIONS || B::SESSION_HOOKS
    }
}

struct Activation<B: UserBehaviour> {
    behaviour: Arc<B>,
    token: SlotToken,
    inner: Mutex<Inner<B>>,
}

struct Inner<B: UserBehaviour> {
    /// Taken out while a hook runs.
    ctx: Option<UserCtx>,
    /// `None` before the start, and while a hook runs.
    state: Option<B::State>,
    queue: VecDeque<Mail>,
    /// A task is draining the queue.
    running: bool,
    /// Told to stop: no further call or session hook runs, whatever was queued before.
    stopping: bool,
    /// Stopped or failed: mail is refused.
    done: bool,
}

impl<B: UserBehaviour> Mailbox for Activation<B> {
    fn token(&self) -> SlotToken {
        self.token
    }

    fn post(self: Arc<Self>, mail: Mail, now: Option<Millis>) {
        let mut inner = lock(&self.inner);
        if inner.done {
            let shared = inner.ctx.as_ref().map(|c| c.shared.clone());
            drop(inner);
            if let (Some(shared), Mail::Call { reply, .. }) = (shared, mail) {
                shared.reply(reply, UserAnswer::Moving);
            }
            return;
        }
        // A stop overtakes what is queued: the activation ends at the instant it is told to.
        inner.stopping |= matches!(mail, Mail::Stop(_));
        if inner.running {
            inner.queue.push_back(mail);
            return;
        }
        inner.running = true;
        if matches!(mail, Mail::Call { .. }) || !inner.queue.is_empty() {
            inner.queue.push_back(mail);
            drop(inner);
            tokio::spawn(self.drain());
            return;
        }
        // An idle activation runs a synchronous hook (start, a session event, stop) at once,
        // in the poster's turn: a task per hook cost the node actor a spawn and a cross-thread
        // wake-up for every join and leave. Only a call (async) gets a task.
        let (ctx, state) = (inner.ctx.take(), inner.state.take());
        drop(inner);
        let Some(mut ctx) = ctx else { return };
        let mut state = state;
        let now = now.unwrap_or_else(|| ctx.shared.now());
        let outcome = match self.hook(mail, &mut ctx, &mut state, now) {
            Ok(outcome) => outcome,
            // A call went to a task above; were one to come here, a task runs it.
            Err(call) => {
                lock(&self.inner).queue.push_front(*call);
                Outcome::Continue
            }
        };
        if self.settle(outcome, ctx, state) {
            let mut inner = lock(&self.inner);
            if inner.queue.is_empty() {
                inner.running = false;
            } else {
                drop(inner);
                tokio::spawn(self.drain());
            }
        }
    }
}

/// How a piece of mail went.
enum Outcome {
    Continue,
    Stopped,
    Failed,
}

impl<B: UserBehaviour> Activation<B> {
    async fn drain(self: Arc<Self>) {
        loop {
            let (mail, ctx, state, stopping) = {
                let mut inner = lock(&self.inner);
                let Some(mail) = inner.queue.pop_front() else {
                    inner.running = false;
                    inner.queue.shrink_to_fit();
                    return;
                };
                (mail, inner.ctx.take(), inner.state.take(), inner.stopping)
            };
            let Some(mut ctx) = ctx else { return };
            let mut state = state;
            let now = ctx.shared.now();
            let outcome = match self.hook(mail, &mut ctx, &mut state, now) {
                Ok(outcome) => outcome,
                Err(call) => self.call(*call, &mut ctx, &mut state, stopping).await,
            };
            if !self.settle(outcome, ctx, state) {
                return;
            }
        }
    }

    /// Put the context and state back after a hook; once the activation has stopped or
    /// failed, answer what is queued and tell the core of a failure. `false`: it is done.
    fn settle(&self, outcome: Outcome, ctx: UserCtx, state: Option<B::State>) -> bool {
        let mut inner = lock(&self.inner);
        if matches!(outcome, Outcome::Continue) {
            inner.ctx = Some(ctx);
            inner.state = state;
            return true;
        }
        let shared = ctx.shared.clone();
        let (user, token) = (ctx.user.clone(), ctx.token);
        inner.ctx = Some(ctx);
        inner.state = state;
        inner.done = true;
        inner.running = false;
        let left = std::mem::take(&mut inner.queue);
        inner.state = None;
        drop(inner);
        for mail in left {
            if let Mail::Call { reply, .. } = mail {
                shared.reply(reply, UserAnswer::Moving);
            }
        }
        if matches!(outcome, Outcome::Failed) {
            tracing::warn!(user = %user, token = %token, "a user activation panicked: a fresh one follows");
            shared.input(Input::ActivationStopped { user, token, state: None, failed: true });
        }
        false
    }

    /// Run a synchronous hook (start, a session event, stop) with the fence checked at `now`;
    /// a call is handed back (`Err`) for [`Activation::call`].
    fn hook(
        &self,
        mail: Mail,
        ctx: &mut UserCtx,
        state: &mut Option<B::State>,
        now: Millis,
    ) -> Result<Outcome, Box<Mail>> {
        let b = &*self.behaviour;
        // Past the lease's deadline nothing runs. The session events that led to a stop, and
        // the stop itself, still run.
        let current = ctx.shared.fenced_ok_at(ctx.partition, ctx.token.epoch, now);
        match mail {
            Mail::Start(handed) => {
                if !current {
                    return Ok(Outcome::Continue); // fenced from the start: the core stops it
                }
                let handed = handed.and_then(|bytes| match codec::decode::<B::State>(&bytes) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(user = %ctx.user, error = %e, "a handed-over state does not decode: starting fresh");
                        None
                    }
                });
                match catch_unwind(AssertUnwindSafe(|| b.start(ctx, handed))) {
                    Ok(s) => *state = Some(s),
                    Err(_) => return Ok(Outcome::Failed),
                }
            }
            Mail::Session(event) => {
                if B::KEEPS_SESSIONS {
                    apply(&mut ctx.sessions, &event);
                }
                let Some(s) = state.as_mut().filter(|_| current) else { return Ok(Outcome::Continue) };
                let run = || match &event {
                    SessionEvent::Started { session, how } => b.session_started(ctx, s, session, *how),
                    SessionEvent::Changed { session } => b.session_changed(ctx, s, session),
                    SessionEvent::Ended { session, end } => b.session_ended(ctx, s, session, end),
                };
                if catch_unwind(AssertUnwindSafe(run)).is_err() {
                    return Ok(Outcome::Failed);
                }
            }
            call @ Mail::Call { .. } => return Err(Box::new(call)),
            Mail::Stop(why) => {
                // The stop hook runs while the lease allows; then, for a handover, the state
                // goes to the new home (or, if there is none to give, the core is told anyway
                // and the new home starts fresh after its wait).
                let mut handed = None;
                if let Some(s) = state.as_mut().filter(|_| current) {
                    if catch_unwind(AssertUnwindSafe(|| b.stop(ctx, s, &why))).is_err() {
                        return Ok(Outcome::Failed);
                    }
                    if matches!(why, ActivationEnd::HandedOver { .. }) {
                        handed = codec::encode(&*s)
                            .inspect_err(|e| {
                                tracing::warn!(user = %ctx.user, error = %e, "a state does not encode: the next home starts fresh")
                            })
                            .ok();
                    }
                }
                if matches!(why, ActivationEnd::HandedOver { .. }) {
                    let (user, token) = (ctx.user.clone(), ctx.token);
                    ctx.shared.input(Input::ActivationStopped { user, token, state: handed, failed: false });
                }
                return Ok(Outcome::Stopped);
            }
        }
        Ok(Outcome::Continue)
    }

    /// Run a call (`handle`, async), with the fence checked as it starts. Once told to stop,
    /// a call queued before the stop is answered `Moving` (its caller finds the next home).
    async fn call(&self, mail: Mail, ctx: &mut UserCtx, state: &mut Option<B::State>, stopping: bool) -> Outcome {
        let b = &*self.behaviour;
        let Mail::Call { body, reply } = mail else { return Outcome::Continue };
        let current = ctx.shared.fenced_ok(ctx.partition, ctx.token.epoch) && !stopping;
        match state.as_mut().filter(|_| current) {
            None => ctx.shared.reply(reply, UserAnswer::Moving),
            Some(s) => {
                let msg = match codec::decode::<B::Msg>(&body) {
                    Ok(m) => m,
                    Err(e) => {
                        ctx.shared.reply(reply, UserAnswer::Failed(format!("the message does not decode: {e}")));
                        return Outcome::Continue;
                    }
                };
                match AssertUnwindSafe(b.handle(ctx, s, msg)).catch_unwind().await {
                    Ok(r) => {
                        let answer = match codec::encode(&r) {
                            Ok(bytes) => UserAnswer::Reply(bytes),
                            Err(e) => UserAnswer::Failed(format!("the reply does not encode: {e}")),
                        };
                        ctx.shared.reply(reply, answer);
                    }
                    Err(_) => {
                        ctx.shared.reply(reply, UserAnswer::Failed("the user's activation panicked".into()));
                        return Outcome::Failed;
                    }
                }
            }
        }
        Outcome::Continue
    }
}

/// Bring a session list up to date with one event.
fn apply(sessions: &mut Vec<SessionView>, event: &SessionEvent) {
    let same = |a: &SessionView, b: &SessionView| a.conn == b.conn && a.scope == b.scope && a.token == b.token;
    match event {
        // Nearly sized to what it holds (`grow_by`): most users have a session or two, and a
        // doubled list kept room for as many again on every activation.
        SessionEvent::Started { session, .. } => {
            roster_core::make_room(sessions);
            sessions.push(session.clone());
        }
        SessionEvent::Changed { session } => {
            if let Some(s) = sessions.iter_mut().find(|s| same(s, session)) {
                *s = session.clone();
            }
        }
        SessionEvent::Ended { session, .. } => {
            sessions.retain(|s| !same(s, session));
            if sessions.capacity() > 2 * sessions.len() + 2 {
                sessions.shrink_to_fit();
            }
        }
    }
}
