//! The keeper: one task per node that follows every session from the handshake to its end.
//! It pairs each `ractor_cluster` session with the connection Roster's handshake vetted (by its
//! label), marks links up and down (a closed session is `LinkDown` for the core at once), ends
//! sessions that miss the handshake deadline or fall silent, and dials what the [`Dialer`]
//! says is due. Every decision reads one `now` per turn.

use super::counters::LinkEvent;
use super::dialer::Dialer;
use super::handshake::Authenticated;
use super::links::Links;
use super::transport::{Transport, LABEL_PREFIX};
use crate::node_actor::NodeMsg;
use ractor::ActorRef;
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeSessionMessage};
use roster_core::NodeName;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

/// How often the keeper checks deadlines, silence and dials.
const CHECK: Duration = Duration::from_millis(25);

/// What the keeper hears: from the transport (a vetted connection, a failed dial) and from
/// the `NodeServer` (sessions opened, ready, closed).
pub(crate) enum Event {
    /// A connection passed the handshake and is being handed to `ractor_cluster` as `label`.
    Vetted {
        label: String,
        auth: Authenticated,
        outgoing: bool,
        /// The session must be ready by then.
        deadline: Instant,
        /// Its place among the pending inbound connections, held until it is ready.
        permit: Option<OwnedSemaphorePermit>,
    },
    /// A dial failed before its hand-over.
    DialFailed { peer: NodeName },
    /// `ractor_cluster` opened session `id` for the connection labelled `label`.
    Opened { id: u64, label: String, session: ActorRef<NodeSessionMessage> },
    /// Session `id` finished `ractor_cluster`'s own handshake and state exchange.
    Ready { id: u64, name: String },
    /// Session `id` closed.
    Closed { id: u64 },
}

/// Forwards the `NodeServer`'s session events to the keeper.
pub(crate) struct Subscription(pub mpsc::UnboundedSender<Event>);

impl NodeEventSubscription for Subscription {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(Event::Opened { id: ses.node_id, label: ses.peer_addr, session: ses.actor });
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(Event::Closed { id: ses.node_id });
    }

    fn node_session_authenticated(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let name = ses.peer_name.map(|n| n.name).unwrap_or_default();
        let _ = self.0.send(Event::Ready { id: ses.node_id, name });
    }
}

struct Vetted {
    auth: Authenticated,
    outgoing: bool,
    deadline: Instant,
    permit: Option<OwnedSemaphorePermit>,
}

struct Session {
    peer: NodeName,
    actor: ActorRef<NodeSessionMessage>,
    outgoing: bool,
    /// Until it is ready.
    deadline: Option<Instant>,
    permit: Option<OwnedSemaphorePermit>,
    up: bool,
    /// Asked to stop; its `Closed` is on its way.
    stopping: bool,
}

impl Session {
    fn stop(&mut self, why: &str) {
        if !self.stopping {
            self.stopping = true;
            self.actor.stop(Some(why.to_owned()));
        }
    }
}

/// See the module documentation.
pub(crate) struct Keeper {
    links: Arc<Links>,
    node: ActorRef<NodeMsg>,
    transport: Arc<Transport>,
    dialer: Dialer,
    vetted: HashMap<String, Vetted>,
    sessions: HashMap<u64, Session>,
    /// A ready session that carries no frame for this long is closed.
    silence: Duration,
}

impl Keeper {
    pub fn new(
        links: Arc<Links>,
        node: ActorRef<NodeMsg>,
        transport: Arc<Transport>,
        dialer: Dialer,
        silence: Duration,
    ) -> Keeper {
        Keeper { links, node, transport, dialer, vetted: HashMap::new(), sessions: HashMap::new(), silence }
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        let mut check = tokio::time::interval(CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.event(ev, Instant::now()),
                    None => return,
                },
                _ = check.tick() => self.check(Instant::now()),
            }
        }
    }

    fn event(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Vetted { label, auth, outgoing, deadline, permit } => {
                if !outgoing {
                    // The pair's dialer only dials when it has no session: any session still
                    // open here is one it has given up.
                    for s in self.sessions.values_mut().filter(|s| s.peer == auth.peer) {
                        s.stop("replaced by a new session");
                    }
                }
                self.vetted.insert(label, Vetted { auth, outgoing, deadline, permit });
            }
            Event::DialFailed { peer } => self.dialer.failed(&peer, now),
            Event::Opened { id, label, session } => match self.vetted.remove(&label) {
                Some(v) => {
                    self.links.session_opened(id, &v.auth, now);
                    let s = Session {
                        peer: v.auth.peer,
                        actor: session,
                        outgoing: v.outgoing,
                        deadline: Some(v.deadline),
                        permit: v.permit,
                        up: false,
                        stopping: false,
                    };
                    self.sessions.insert(id, s);
                }
                None => {
                    let who = if label.starts_with(LABEL_PREFIX) { "?".to_owned() } else { label.clone() };
                    self.links.counters.refuse(LinkEvent::UnvettedSession, &who, || {
                        format!("a session ({label}) that Roster's handshake did not open: closed")
                    });
                    session.stop(Some("not opened by Roster's link handshake".into()));
                }
            },
            Event::Ready { id, name } => self.ready(id, &name, now),
            Event::Closed { id } => self.closed(id, now),
        }
    }

    fn ready(&mut self, id: u64, name: &str, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else { return };
        // ractor_cluster names a node `name@host`; it must be the peer the handshake vetted.
        let claimed = name.split('@').next().unwrap_or_default();
        if claimed != s.peer.as_str() {
            let peer = s.peer.clone();
            self.links.counters.refuse(LinkEvent::RefusedFromMismatch, peer.as_str(), || {
                format!("the handshake authenticated {peer}, but its session calls itself {name}: closed")
            });
            s.stop("session name differs from the handshake's");
            return;
        }
        s.deadline = None;
        s.permit = None;
        s.up = true;
        let peer = s.peer.clone();
        self.links.session_ready(id, now);
        if self.links.set_up(&peer, true) {
            tracing::info!(peer = %peer, outgoing = s.outgoing, "cluster link up");
        }
        self.dialer.up(&peer);
    }

    fn closed(&mut self, id: u64, now: Instant) {
        let Some(s) = self.sessions.remove(&id) else { return };
        self.links.session_closed(id);
        let peer = s.peer;
        let any_up = self.sessions.values().any(|o| o.peer == peer && o.up);
        if s.up && !any_up && self.links.set_up(&peer, false) {
            tracing::warn!(peer = %peer, "cluster link down (session closed)");
            let _ = self.node.cast(NodeMsg::LinkDown(peer.clone()));
        }
        let pending = self.sessions.values().any(|o| o.peer == peer && !o.stopping);
        if !any_up && !pending && self.dialer.dials(&peer) {
            self.dialer.closed(&peer, s.up, now);
        }
    }

    fn check(&mut self, now: Instant) {
        let c = &self.links.counters;
        let expired: Vec<String> =
            self.vetted.iter().filter(|(_, v)| now > v.deadline).map(|(l, _)| l.clone()).collect();
        for label in expired {
            if let Some(v) = self.vetted.remove(&label) {
                // Handed over, but the NodeServer never opened it.
                c.refuse(LinkEvent::HandshakeTimeout, v.auth.peer.as_str(), || {
                    format!("the session of {} never opened", v.auth.peer)
                });
                if v.outgoing {
                    self.dialer.failed(&v.auth.peer, now);
                }
            }
        }
        for s in self.sessions.values_mut() {
            if !s.stopping && s.deadline.is_some_and(|d| now > d) {
                let peer = s.peer.clone();
                c.refuse(LinkEvent::HandshakeTimeout, peer.as_str(), || {
                    format!("the session with {peer} was not ready within handshake_timeout_ms: closed")
                });
                s.stop("handshake timed out");
            }
        }
        for (id, peer) in self.links.silent_sessions(now, self.silence) {
            if let Some(s) = self.sessions.get_mut(&id).filter(|s| !s.stopping) {
                let silence = self.silence;
                c.refuse(LinkEvent::SilentPeer, peer.as_str(), || {
                    format!(
                        "{peer} sent nothing for {silence:?} (hung?): its session is closed, nothing piles up for it"
                    )
                });
                s.stop("silent peer");
            }
        }
        for (peer, addr) in self.dialer.due(now) {
            self.transport.dial(peer, addr);
        }
    }
}
