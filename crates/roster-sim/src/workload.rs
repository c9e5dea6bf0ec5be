//! The clients: a few users, each with a few browser tabs, joining rooms through random
//! nodes, leaving, dropping uncleanly, closing, reconnecting (same `tab_id` on a new socket,
//! maybe on another node), taking over (another tab), plus some anonymous viewers and kicks.
//!
//! [`Workload::choose`] picks the next action from the clients' current state; the simulation
//! carries it out (it picks the gateway node) and reports back what the node told each client.

use super::checker::JoinKind;
use super::rng::SimRng;
use roster_core::ClientEvent;
use roster_core::{Millis, SlotToken, SocketId, TabId, Topic, UserId};
use std::collections::BTreeMap;

/// How much of each action a run's clients do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionWeights {
    /// A tab reconnects on a new socket (same `tab_id`), abandoning its old socket.
    pub resume: u32,
    /// A joined socket joins the other room too.
    pub another_topic: u32,
    /// A channel leaves cleanly (`phx_leave`).
    pub leave: u32,
    /// A socket drops uncleanly.
    pub drop: u32,
    /// A socket closes cleanly.
    pub close: u32,
    /// A joined channel updates its meta.
    pub update_meta: u32,
    /// An anonymous viewer comes or goes.
    pub anonymous: u32,
    /// The backend kicks a user.
    pub kick: u32,
}

impl Default for ActionWeights {
    fn default() -> Self {
        Self { resume: 25, another_topic: 10, leave: 12, drop: 15, close: 10, update_meta: 5, anonymous: 8, kick: 2 }
    }
}

/// The shape of a run's client workload.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadMix {
    /// Signed-in users (`u0`, `u1`, ...).
    pub users: usize,
    /// Tabs each user may have open at once.
    pub tabs_per_user: usize,
    /// The rooms.
    pub topics: Vec<Topic>,
    /// Pause between two client actions, inclusive range.
    pub step_ms: (Millis, Millis),
    /// What the clients do, by weight (a tab with no open socket always opens one).
    pub weights: ActionWeights,
    /// Probability that a new socket reuses its tab's previous `tab_id` (a reconnect).
    pub reuse_tab_id: f64,
    /// Pause between two backend or push actions (a validation of a token a client was
    /// granted, or a joined client's broadcast), inclusive range; `None`: none.
    pub api_step_ms: Option<(Millis, Millis)>,
}

impl WorkloadMix {
    /// A random workload: 4–6 users with 1–3 tabs each, in `room:1` and `room:2`.
    pub fn random(rng: &mut SimRng) -> Self {
        Self {
            users: rng.between(4, 6) as usize,
            tabs_per_user: rng.between(1, 3) as usize,
            topics: vec![Topic::from("room:1"), Topic::from("room:2")],
            step_ms: (20, rng.between(300, 1200)),
            weights: ActionWeights::default(),
            reuse_tab_id: 0.6,
            api_step_ms: Some((50, 600)),
        }
    }

    /// No clients acting on their own (scripted scenarios drive them).
    pub fn none() -> Self {
        Self {
            users: 0,
            tabs_per_user: 0,
            topics: vec![Topic::from("room:1")],
            step_ms: (1000, 1000),
            weights: ActionWeights::default(),
            reuse_tab_id: 0.0,
            api_step_ms: None,
        }
    }
}

/// A client, by its index in [`Workload::clients`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub usize);

/// One channel (topic) of a client socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Sent the join; no answer yet. `log` indexes the run's join log.
    Joining {
        /// Index of the join in `History::joins`.
        log: usize,
    },
    /// Joined (with the slot token, for a signed-in user).
    Joined {
        /// The token, if the join holds a slot.
        token: Option<SlotToken>,
    },
    /// Over: left, failed, revoked, closed, or the socket went.
    Ended {
        /// Why, as the client saw it.
        why: String,
    },
}

/// One client socket on one gateway node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// Its id.
    pub id: ClientId,
    /// The gateway node's index.
    pub node: usize,
    /// The gateway's boot generation (a restart makes a new one).
    pub gen: u64,
    /// The socket on that gateway.
    pub socket: SocketId,
    /// The user, or `None` for an anonymous viewer.
    pub user: Option<UserId>,
    /// The tab id it sent.
    pub tab: Option<TabId>,
    /// `(user index, tab index)` in the workload, for signed-in clients it drives.
    pub slot_of: Option<(usize, usize)>,
    /// Its channels.
    pub channels: BTreeMap<Topic, Channel>,
    /// The socket is open as far as the gateway knows.
    pub open: bool,
    /// The browser left it for a new socket; the gateway has not noticed yet.
    pub abandoned: bool,
}

impl Client {
    /// Whether the channel on `topic` is joined.
    pub fn joined(&self, topic: &Topic) -> bool {
        matches!(self.channels.get(topic), Some(Channel::Joined { .. }))
    }

    /// Whether any channel is joined or joining.
    pub fn active(&self) -> bool {
        self.channels.values().any(|c| !matches!(c, Channel::Ended { .. }))
    }
}

/// What a client does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAction {
    /// Open a new socket on some node and join `topic`.
    Open {
        /// The user, or `None` for an anonymous viewer.
        user: Option<UserId>,
        /// The tab id.
        tab: Option<TabId>,
        /// `(user index, tab index)` for a workload tab.
        slot_of: Option<(usize, usize)>,
        /// The topic.
        topic: Topic,
        /// New tab or reconnect.
        kind: JoinKind,
    },
    /// The tab of `from` reconnects on a new socket (same tab id, same topics); `from` is
    /// abandoned without a close.
    Resume {
        /// The old client.
        from: ClientId,
    },
    /// Join another topic on the same socket.
    JoinAnother {
        /// The client.
        client: ClientId,
        /// The topic.
        topic: Topic,
    },
    /// Leave one topic cleanly.
    Leave {
        /// The client.
        client: ClientId,
        /// The topic.
        topic: Topic,
    },
    /// Close the socket, cleanly or not.
    CloseSocket {
        /// The client.
        client: ClientId,
        /// A clean close.
        clean: bool,
    },
    /// Update the meta of a joined channel.
    UpdateMeta {
        /// The client.
        client: ClientId,
        /// The topic.
        topic: Topic,
    },
    /// The backend kicks a user (through some node).
    Kick {
        /// The user.
        user: UserId,
        /// One topic, or all.
        topic: Option<Topic>,
    },
}

/// Every client of a run.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The mix.
    pub mix: WorkloadMix,
    /// Every client socket ever opened, by [`ClientId`].
    pub clients: Vec<Client>,
    by_socket: BTreeMap<(usize, u64, SocketId), ClientId>,
    /// Per workload tab: its current tab id version and latest client.
    tabs: BTreeMap<(usize, usize), (u32, Option<ClientId>)>,
    anonymous_seq: u64,
}

impl Workload {
    /// No clients yet.
    pub fn new(mix: WorkloadMix) -> Self {
        Self { mix, clients: Vec::new(), by_socket: BTreeMap::new(), tabs: BTreeMap::new(), anonymous_seq: 0 }
    }

    /// The user id of workload user `i`.
    pub fn user(i: usize) -> UserId {
        UserId::from(format!("u{i}"))
    }

    /// Register a new client socket.
    pub fn add(&mut self, mut client: Client) -> ClientId {
        let id = ClientId(self.clients.len());
        client.id = id;
        self.by_socket.insert((client.node, client.gen, client.socket), id);
        if let Some(key) = client.slot_of {
            self.tabs.entry(key).or_insert((0, None)).1 = Some(id);
        }
        self.clients.push(client);
        id
    }

    /// The client of a socket on a node's boot generation.
    pub fn find(&self, node: usize, gen: u64, socket: SocketId) -> Option<ClientId> {
        self.by_socket.get(&(node, gen, socket)).copied()
    }

    /// A client.
    pub fn get(&self, id: ClientId) -> &Client {
        &self.clients[id.0]
    }

    /// A client, to change.
    pub fn get_mut(&mut self, id: ClientId) -> &mut Client {
        &mut self.clients[id.0]
    }

    /// The gateway told a client something: update its channel. Returns the join-log index and
    /// the outcome when it answers a pending join.
    pub fn on_event(
        &mut self,
        id: ClientId,
        topic: &Topic,
        event: &ClientEvent,
    ) -> Option<(usize, Result<(), String>)> {
        let client = &mut self.clients[id.0];
        let pending = match client.channels.get(topic) {
            Some(Channel::Joining { log }) => Some(*log),
            _ => None,
        };
        let (next, answer) = match event {
            ClientEvent::Joined { token } => (Channel::Joined { token: *token }, pending.map(|l| (l, Ok(())))),
            ClientEvent::JoinFailed { reason } => {
                (Channel::Ended { why: reason.clone() }, pending.map(|l| (l, Err(reason.clone()))))
            }
            ClientEvent::Revoked { reason } => (Channel::Ended { why: format!("revoked: {reason}") }, None),
            ClientEvent::Closed => (Channel::Ended { why: "closed".into() }, None),
        };
        client.channels.insert(topic.clone(), next);
        answer
    }

    /// The socket is gone (closed, dropped, or its gateway died): every channel ends. Returns
    /// the join-log indexes of joins that were still waiting.
    pub fn socket_gone(&mut self, id: ClientId, why: &str) -> Vec<usize> {
        let client = &mut self.clients[id.0];
        client.open = false;
        let mut pending = Vec::new();
        for ch in client.channels.values_mut() {
            if let Channel::Joining { log } = ch {
                pending.push(*log);
            }
            if !matches!(ch, Channel::Ended { .. }) {
                *ch = Channel::Ended { why: why.into() };
            }
        }
        pending
    }

    /// Every client socket still open on node `node`'s generation `gen`.
    pub fn open_on(&self, node: usize, gen: u64) -> Vec<ClientId> {
        self.clients.iter().filter(|c| c.open && c.node == node && c.gen == gen).map(|c| c.id).collect()
    }

    /// The next action, from the clients' current state.
    pub fn choose(&mut self, rng: &mut SimRng) -> Option<ClientAction> {
        let w = &self.mix.weights;
        let category = rng.weighted(&[100, w.anonymous, w.kick])?;
        match category {
            0 => self.tab_action(rng),
            1 => Some(self.anonymous_action(rng)),
            _ => {
                if self.mix.users == 0 {
                    return None;
                }
                let user = Self::user(rng.index(self.mix.users));
                let topic = if rng.chance(0.5) { rng.pick(&self.mix.topics).cloned() } else { None };
                Some(ClientAction::Kick { user, topic })
            }
        }
    }

    fn tab_action(&mut self, rng: &mut SimRng) -> Option<ClientAction> {
        if self.mix.users == 0 || self.mix.tabs_per_user == 0 {
            return None;
        }
        let key = (rng.index(self.mix.users), rng.index(self.mix.tabs_per_user));
        let (version, latest) = *self.tabs.get(&key).unwrap_or(&(0, None));
        let current = latest.filter(|id| {
            let c = &self.clients[id.0];
            c.open && !c.abandoned && c.active()
        });
        let Some(id) = current else {
            let reuse = latest.is_some() && rng.chance(self.mix.reuse_tab_id);
            let version = if reuse || latest.is_none() { version } else { version + 1 };
            self.tabs.insert(key, (version, latest));
            let kind = if reuse { JoinKind::Resume } else { JoinKind::NewTab };
            let tab = TabId::from(format!("u{}-t{}v{}", key.0, key.1, version));
            let topic = rng.pick(&self.mix.topics).cloned()?;
            return Some(ClientAction::Open {
                user: Some(Self::user(key.0)),
                tab: Some(tab),
                slot_of: Some(key),
                topic,
                kind,
            });
        };
        let c = &self.clients[id.0];
        let joined: Vec<Topic> =
            c.channels.iter().filter(|(_, ch)| matches!(ch, Channel::Joined { .. })).map(|(t, _)| t.clone()).collect();
        let unjoined: Vec<Topic> = self
            .mix
            .topics
            .iter()
            .filter(|t| !c.channels.get(*t).is_some_and(|ch| !matches!(ch, Channel::Ended { .. })))
            .cloned()
            .collect();
        let w = &self.mix.weights;
        let weights = [
            w.resume,
            if unjoined.is_empty() { 0 } else { w.another_topic },
            if joined.is_empty() { 0 } else { w.leave },
            w.drop,
            w.close,
            if joined.is_empty() { 0 } else { w.update_meta },
        ];
        Some(match rng.weighted(&weights)? {
            0 => ClientAction::Resume { from: id },
            1 => ClientAction::JoinAnother { client: id, topic: rng.pick(&unjoined)?.clone() },
            2 => ClientAction::Leave { client: id, topic: rng.pick(&joined)?.clone() },
            3 => ClientAction::CloseSocket { client: id, clean: false },
            4 => ClientAction::CloseSocket { client: id, clean: true },
            _ => ClientAction::UpdateMeta { client: id, topic: rng.pick(&joined)?.clone() },
        })
    }

    fn anonymous_action(&mut self, rng: &mut SimRng) -> ClientAction {
        let open: Vec<ClientId> =
            self.clients.iter().filter(|c| c.user.is_none() && c.open && c.active()).map(|c| c.id).collect();
        if open.len() >= 3 || (!open.is_empty() && rng.chance(0.4)) {
            let client = *rng.pick(&open).expect("not empty");
            return ClientAction::CloseSocket { client, clean: rng.chance(0.5) };
        }
        self.anonymous_seq += 1;
        let tab = rng.chance(0.5).then(|| TabId::from(format!("anon-{}", self.anonymous_seq)));
        let topic = rng.pick(&self.mix.topics).cloned().unwrap_or_else(|| Topic::from("room:1"));
        ClientAction::Open { user: None, tab, slot_of: None, topic, kind: JoinKind::Anonymous }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(node: usize, socket: u64, slot_of: Option<(usize, usize)>) -> Client {
        Client {
            id: ClientId(0),
            node,
            gen: 1,
            socket: SocketId(socket),
            user: Some(Workload::user(0)),
            tab: Some(TabId::from("u0-t0v0")),
            slot_of,
            channels: BTreeMap::new(),
            open: true,
            abandoned: false,
        }
    }

    #[test]
    fn a_tab_without_an_open_socket_opens_one() {
        let mix = WorkloadMix { users: 1, tabs_per_user: 1, ..WorkloadMix::random(&mut SimRng::new(1, 0)) };
        let mix = WorkloadMix { weights: ActionWeights { anonymous: 0, kick: 0, ..ActionWeights::default() }, ..mix };
        let mut w = Workload::new(mix);
        let mut rng = SimRng::new(5, 0);
        let a = w.choose(&mut rng).unwrap();
        assert!(matches!(a, ClientAction::Open { kind: JoinKind::NewTab, .. }), "{a:?}");
    }

    #[test]
    fn answers_go_to_the_pending_join_and_revokes_end_the_channel() {
        let mut w = Workload::new(WorkloadMix::none());
        let id = w.add(client(0, 3, Some((0, 0))));
        let topic = Topic::from("room:1");
        w.get_mut(id).channels.insert(topic.clone(), Channel::Joining { log: 7 });
        assert_eq!(w.find(0, 1, SocketId(3)), Some(id));
        let token = SlotToken { epoch: 1, generation: 1 };
        assert_eq!(w.on_event(id, &topic, &ClientEvent::Joined { token: Some(token) }), Some((7, Ok(()))));
        assert!(w.get(id).joined(&topic));
        assert_eq!(w.on_event(id, &topic, &ClientEvent::Revoked { reason: "node_isolated".into() }), None);
        assert!(!w.get(id).active());
        assert!(w.socket_gone(id, "closed").is_empty());
        assert!(w.open_on(0, 1).is_empty());
    }
}
