//! The fence, on one activation driven by hand (no node actor): within the lease a call runs;
//! once the lease's deadline has passed, or the lease is at another epoch, nothing of the
//! activation runs, and a handler that was already running when the deadline passed can still
//! finish but its kicks are refused.

use super::activation::{Mail, Reply};
use super::host::Shared;
use super::{Behaviour, UserBehaviour, UserCtx};
use crate::clock::Clock;
use crate::codec;
use roster_core::{PartitionId, SlotToken, UserAnswer, UserEffect, UserId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Counts the calls it handled; `Hold` waits for the test's signal, then tries to kick.
#[derive(Default)]
struct Probe {
    handled: AtomicU64,
    hold: Mutex<Option<oneshot::Receiver<()>>>,
    entered: Mutex<Option<oneshot::Sender<()>>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
enum ProbeMsg {
    Count,
    HoldThenKick,
}

impl UserBehaviour for Probe {
    type State = ();
    type Msg = ProbeMsg;
    type Reply = (u64, bool);

    fn start(&self, _ctx: &UserCtx, _handed_over: Option<()>) {}

    async fn handle(&self, ctx: &UserCtx, _state: &mut (), msg: ProbeMsg) -> (u64, bool) {
        let n = self.handled.fetch_add(1, Ordering::SeqCst) + 1;
        match msg {
            ProbeMsg::Count => (n, ctx.is_current()),
            ProbeMsg::HoldThenKick => {
                let (entered, hold) = (self.entered.lock().unwrap().take(), self.hold.lock().unwrap().take());
                let _ = entered.expect("one hold").send(());
                let _ = hold.expect("one hold").await;
                (n, ctx.kick_all("too late"))
            }
        }
    }
}

const P: PartitionId = PartitionId(1);
const TOKEN: SlotToken = SlotToken { epoch: 3, generation: 7 };

fn host(probe: &Arc<Probe>) -> (Arc<Shared>, Clock) {
    let clock = Clock::start();
    let shared = Shared::new("n".into(), clock, 4, true, None, Some(Arc::new(Behaviour(probe.clone()))));
    (shared, clock)
}

fn fence(shared: &Arc<Shared>, epoch: u64, until: u64) {
    shared.execute(UserEffect::Fence { partition: P, epoch, until });
}

fn start(shared: &Arc<Shared>, until: u64) {
    let user = UserId::from("u");
    shared.execute(UserEffect::Start { user, partition: P, token: TOKEN, until, sessions: vec![], state: None });
}

async fn call(shared: &Arc<Shared>, msg: ProbeMsg) -> UserAnswer {
    let (tx, rx) = oneshot::channel();
    let act = shared.local(&UserId::from("u")).expect("the activation is in the table");
    act.post(Mail::Call { body: codec::encode(&msg).unwrap(), reply: Reply::Direct(tx) }, None);
    rx.await.expect("an answer")
}

fn reply(answer: UserAnswer) -> (u64, bool) {
    match answer {
        UserAnswer::Reply(bytes) => codec::decode(&bytes).unwrap(),
        other => panic!("not a reply: {other:?}"),
    }
}

#[tokio::test]
async fn past_the_deadline_or_at_another_epoch_nothing_of_the_activation_runs() {
    let probe = Arc::new(Probe::default());
    let (shared, clock) = host(&probe);
    let until = clock.now() + 60_000;
    fence(&shared, TOKEN.epoch, until);
    start(&shared, until);
    assert_eq!(reply(call(&shared, ProbeMsg::Count).await), (1, true));

    // The lease's deadline is now (it was not renewed): the call is not run, its caller is
    // told to ask again (the next home).
    fence(&shared, TOKEN.epoch, clock.now());
    assert_eq!(call(&shared, ProbeMsg::Count).await, UserAnswer::Moving);
    // Renewed at a newer epoch (a later lease of this node): still not this activation's.
    fence(&shared, TOKEN.epoch + 1, clock.now() + 60_000);
    assert_eq!(call(&shared, ProbeMsg::Count).await, UserAnswer::Moving);
    assert_eq!(probe.handled.load(Ordering::SeqCst), 1, "no handler ran once fenced");

    // Back at its epoch and inside the deadline (a renewal): it runs again.
    fence(&shared, TOKEN.epoch, clock.now() + 60_000);
    assert_eq!(reply(call(&shared, ProbeMsg::Count).await), (2, true));
}

#[tokio::test]
async fn a_handler_running_when_the_deadline_passes_finishes_but_its_kicks_are_refused() {
    let (hold_tx, hold_rx) = oneshot::channel();
    let (entered_tx, entered_rx) = oneshot::channel();
    let probe =
        Arc::new(Probe { hold: Mutex::new(Some(hold_rx)), entered: Mutex::new(Some(entered_tx)), ..Probe::default() });
    let (shared, clock) = host(&probe);
    let until = clock.now() + 60_000;
    fence(&shared, TOKEN.epoch, until);
    start(&shared, until);
    let running = tokio::spawn({
        let shared = shared.clone();
        async move { call(&shared, ProbeMsg::HoldThenKick).await }
    });
    entered_rx.await.expect("the handler runs");
    // While it waits, the lease ends.
    fence(&shared, TOKEN.epoch, clock.now());
    hold_tx.send(()).unwrap();
    assert_eq!(reply(running.await.unwrap()), (1, false), "it finishes; its kick is refused");
}

/// Answers how many sessions its context lists and how many `session_started` hooks ran.
#[derive(Default)]
struct SessionCount<const KEEP: bool> {
    started: AtomicU64,
}

impl<const KEEP: bool> UserBehaviour for SessionCount<KEEP> {
    const KEEPS_SESSIONS: bool = KEEP;
    type State = ();
    type Msg = ();
    type Reply = (usize, u64);

    fn start(&self, _ctx: &UserCtx, _handed_over: Option<()>) {}

    fn session_started(
        &self,
        _ctx: &UserCtx,
        _state: &mut (),
        _session: &roster_core::SessionView,
        _how: roster_core::SessionStart,
    ) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }

    async fn handle(&self, ctx: &UserCtx, _state: &mut (), _msg: ()) -> (usize, u64) {
        (ctx.sessions().len(), self.started.load(Ordering::SeqCst))
    }
}

async fn sessions_seen<const KEEP: bool>() -> (usize, u64) {
    use roster_core::{
        ConnId, Incarnation, ScopeKey, SessionEvent, SessionStart, SessionState, SessionView, SocketId, TabKey, Topic,
    };
    let behaviour = Arc::new(SessionCount::<KEEP>::default());
    let clock = Clock::start();
    let shared = Shared::new("n".into(), clock, 4, true, None, Some(Arc::new(Behaviour(behaviour))));
    let until = clock.now() + 60_000;
    fence(&shared, TOKEN.epoch, until);
    let session = |socket| {
        let conn = ConnId { gateway: Incarnation::new("n", 1), socket: SocketId(socket) };
        SessionView {
            tab: TabKey::Conn(conn.clone()),
            conn,
            scope: ScopeKey::topic(Topic::from("room:1")),
            topic: Some(Topic::from("room:1")),
            token: SlotToken { epoch: TOKEN.epoch, generation: socket },
            state: SessionState::Held,
            in_doubt: false,
        }
    };
    let user = UserId::from("u");
    let sessions = vec![session(1)];
    shared.execute(UserEffect::Start { user: user.clone(), partition: P, token: TOKEN, until, sessions, state: None });
    let event = SessionEvent::Started { session: session(2), how: SessionStart::Granted };
    shared.execute(UserEffect::Session { user, token: TOKEN, event });
    let (tx, rx) = oneshot::channel();
    let act = shared.local(&UserId::from("u")).expect("the activation is in the table");
    act.post(Mail::Call { body: codec::encode(&()).unwrap(), reply: Reply::Direct(tx) }, None);
    match rx.await.expect("an answer") {
        UserAnswer::Reply(bytes) => codec::decode(&bytes).unwrap(),
        other => panic!("not a reply: {other:?}"),
    }
}

#[tokio::test]
async fn a_behaviour_that_keeps_no_sessions_lists_none_and_still_gets_every_session_hook() {
    assert_eq!(sessions_seen::<true>().await, (2, 1), "the start's session and the one started after it");
    assert_eq!(sessions_seen::<false>().await, (0, 1), "no copy kept; the hook still ran");
}
