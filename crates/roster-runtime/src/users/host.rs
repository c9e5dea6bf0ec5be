//! The home's table of user activations and what the node actor does with the core's
//! [`UserEffect`]s: start and stop activations, hand them session events and calls, move the
//! partitions' fences, answer callers.
//!
//! The table is shared: a caller on the user's home reads it and posts to the activation
//! directly (no node actor turn); everything else goes through the node actor and the core.

use super::activation::{Mail, Mailbox, Reply};
use crate::client_inbox::ClientInbox;
use crate::clock::Clock;
use crate::cluster::Links;
use crate::node_actor::NodeMsg;
use roster_core::{
    Input, Millis, NodeName, PartitionId, PeerMsg, ReplyTo, SessionView, SlotToken, UserAnswer, UserEffect, UserId,
    UserView,
};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tokio::sync::oneshot;

/// The answer a waiting caller gets.
pub(crate) enum Answer {
    /// To a call.
    Call(UserAnswer),
    /// To an info request.
    Info(Option<UserView>),
}

/// Makes activations of the node's behaviour (the type-erased [`UserBehaviour`](super::UserBehaviour)).
pub(crate) trait Spawner: Send + Sync {
    /// A new activation, not yet started (its first mail is `Mail::Start`).
    fn activation(
        &self,
        shared: Arc<Shared>,
        user: UserId,
        partition: PartitionId,
        token: SlotToken,
        sessions: Vec<SessionView>,
    ) -> Arc<dyn Mailbox>;

    /// Whether its activations keep a copy of the user's sessions
    /// ([`UserBehaviour::KEEPS_SESSIONS`](super::UserBehaviour::KEEPS_SESSIONS)): if not, the
    /// core's starts list none.
    fn keeps_sessions(&self) -> bool;

    /// Whether its activations are told of their sessions: they keep a copy, or have session
    /// hooks ([`UserBehaviour::SESSION_HOOKS`](super::UserBehaviour::SESSION_HOOKS)).
    fn session_events(&self) -> bool;
}

/// What every activation and caller of one node shares.
pub(crate) struct Shared {
    /// This node's name.
    pub(crate) node: NodeName,
    clock: Clock,
    /// Per partition: the lease's epoch and deadline (node clock) as the core last fenced.
    fences: Vec<Mutex<(u64, Millis)>>,
    /// Test switch: `false` runs activations past their deadline (the ablation of fencing).
    fence_at_deadline: bool,
    inbox: OnceLock<Arc<ClientInbox>>,
    links: Option<Arc<Links>>,
    table: RwLock<foldhash::HashMap<UserId, Arc<dyn Mailbox>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_call: AtomicU64,
    spawner: Option<Arc<dyn Spawner>>,
}

impl Shared {
    /// The user actors of node `node`; `spawner: None` runs none.
    pub(crate) fn new(
        node: NodeName,
        clock: Clock,
        partitions: u32,
        fence_at_deadline: bool,
        links: Option<Arc<Links>>,
        spawner: Option<Arc<dyn Spawner>>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            node,
            clock,
            fences: (0..partitions).map(|_| Mutex::new((0, 0))).collect(),
            fence_at_deadline,
            inbox: OnceLock::new(),
            links,
            table: RwLock::new(Default::default()),
            pending: Mutex::new(HashMap::new()),
            next_call: AtomicU64::new(1),
            spawner,
        })
    }

    /// Whether user actors run at all on this node.
    pub(crate) fn enabled(&self) -> bool {
        self.spawner.is_some()
    }

    /// Whether the activations keep a copy of the user's sessions (so a start must list them).
    pub(crate) fn keeps_sessions(&self) -> bool {
        self.spawner.as_ref().is_some_and(|s| s.keeps_sessions())
    }

    /// Whether the activations are told of their sessions (so the core must send the events).
    pub(crate) fn session_events(&self) -> bool {
        self.spawner.as_ref().is_some_and(|s| s.session_events())
    }

    /// The node actor's client inbox, once it runs (activations send it their inputs).
    pub(crate) fn set_inbox(&self, inbox: Arc<ClientInbox>) {
        let _ = self.inbox.set(inbox);
    }

    /// Hand an input to the node actor (a kick, a stopped activation).
    pub(crate) fn input(&self, input: Input) {
        if let Some(inbox) = self.inbox.get() {
            let _ = inbox.send(NodeMsg::Input(input));
        }
    }

    /// Whether an activation of `partition` at `epoch` may run now: the node holds that lease
    /// and its deadline has not passed.
    pub(crate) fn fenced_ok(&self, partition: PartitionId, epoch: u64) -> bool {
        self.fenced_ok_at(partition, epoch, self.clock.now())
    }

    /// [`fenced_ok`](Self::fenced_ok) at the node clock's reading `now`.
    pub(crate) fn fenced_ok_at(&self, partition: PartitionId, epoch: u64, now: Millis) -> bool {
        if !self.fence_at_deadline {
            return true;
        }
        let Some(fence) = self.fences.get(partition.0 as usize) else { return false };
        let (e, until) = *lock(fence);
        e == epoch && now < until
    }

    /// The node clock now.
    pub(crate) fn now(&self) -> Millis {
        self.clock.now()
    }

    /// The activation of `user` on this node, if any.
    pub(crate) fn local(&self, user: &UserId) -> Option<Arc<dyn Mailbox>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).get(user).cloned()
    }

    /// How many activations run here.
    pub(crate) fn count(&self) -> usize {
        self.table.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A call id and the receiver of its answer.
    pub(crate) fn expect_answer(&self) -> (u64, oneshot::Receiver<Answer>) {
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(call, tx);
        (call, rx)
    }

    /// Give up waiting for `call` (timed out).
    pub(crate) fn forget(&self, call: u64) {
        lock(&self.pending).remove(&call);
    }

    pub(crate) fn answer(&self, call: u64, answer: Answer) {
        if let Some(tx) = lock(&self.pending).remove(&call) {
            let _ = tx.send(answer);
        }
    }

    /// Send an activation's answer where it is awaited.
    pub(crate) fn reply(&self, to: Reply, answer: UserAnswer) {
        match to {
            Reply::None => {}
            Reply::Direct(tx) => {
                let _ = tx.send(answer);
            }
            Reply::Local(call) => self.answer(call, Answer::Call(answer)),
            Reply::Peer { node, call } => match &self.links {
                Some(links) => links.send_peer(&node.node.clone(), PeerMsg::UserReply { to: node, call, answer }),
                None => tracing::debug!(peer = %node, "no cluster link: a user's answer to a peer dropped"),
            },
        }
    }

    /// Carry out one of the core's user effects (from the node actor, in order).
    #[cfg(test)]
    pub(crate) fn execute(self: &Arc<Self>, effect: UserEffect) {
        self.execute_at(effect, self.clock.now())
    }

    /// [`execute`](Self::execute) in a node actor's turn whose clock reading is `now` (the one
    /// the core decided the effect with): a hook run at once checks its fence at `now`.
    pub(crate) fn execute_at(self: &Arc<Self>, effect: UserEffect, now: Millis) {
        let now = Some(now);
        match effect {
            UserEffect::Start { user, partition, token, sessions, state, .. } => {
                let Some(spawner) = &self.spawner else { return };
                let act = spawner.activation(self.clone(), user.clone(), partition, token, sessions);
                act.clone().post(Mail::Start(state), now);
                let old = self.table.write().unwrap_or_else(|e| e.into_inner()).insert(user, act);
                if let Some(old) = old {
                    // The core stops an activation before it starts the next; a leftover is
                    // stopped rather than left to answer.
                    old.post(Mail::Stop(roster_core::ActivationEnd::Idle), now);
                }
            }
            UserEffect::Session { user, token, event } => {
                if let Some(act) = self.local(&user).filter(|a| a.token() == token) {
                    act.post(Mail::Session(event), now);
                }
            }
            UserEffect::Stop { user, token, why } => {
                let act = {
                    let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
                    match table.entry(user) {
                        Entry::Occupied(e) if e.get().token() == token => Some(e.remove()),
                        _ => None,
                    }
                };
                if let Some(act) = act {
                    act.post(Mail::Stop(why), now);
                }
            }
            UserEffect::Fence { partition, epoch, until } => {
                if let Some(fence) = self.fences.get(partition.0 as usize) {
                    *lock(fence) = (epoch, until);
                }
            }
            UserEffect::Deliver { user, token, body, reply } => {
                let reply = match reply {
                    None => Reply::None,
                    Some(ReplyTo::Local(call)) => Reply::Local(call),
                    Some(ReplyTo::Peer { node, call }) => Reply::Peer { node, call },
                };
                match self.local(&user).filter(|a| a.token() == token) {
                    Some(act) => act.post(Mail::Call { body, reply }, now),
                    None => self.reply(reply, UserAnswer::Moving),
                }
            }
            UserEffect::Answer { call, answer } => self.answer(call, Answer::Call(answer)),
            UserEffect::Info { call, view } => self.answer(call, Answer::Info(view)),
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
