//! `ClusterLink`: the only remotable actor of a node. It joins the process group
//! `roster.link.<name>`, which is how a peer's sender finds it, and accepts one message,
//! `Frame(bytes)`, which it decodes fallibly and admits only if the frame's ticket belongs to
//! an open session whose authenticated peer is the sender the frame and every message in it
//! claim. Admitted messages go to the node's `PeerInbox`, ahead of the `NodeActor`'s mailbox.
//!
//! ```text
//! NodeSupervisor ... NodeActor ◀── PeerInbox ◀── ClusterLink (spawned by Cluster::start, unlinked)
//! ```

use super::counters::LinkEvent;
use super::links::{group_of, Admission, Links};
use super::wire::{claimed_sender, Envelope, LinkMsg, Wire};
use crate::codec;
use crate::node_actor::{NodeMsg, PeerInbox};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use roster_core::NodeName;
use std::sync::Arc;
use std::time::Instant;

/// The remotable actor that receives frames from peers. See the module documentation.
pub struct ClusterLink;

/// What a `ClusterLink` starts with.
pub struct ClusterLinkArgs {
    pub(crate) links: Arc<Links>,
    pub(crate) node: ActorRef<NodeMsg>,
    pub(crate) inbox: Arc<PeerInbox>,
}

impl Actor for ClusterLink {
    type Msg = LinkMsg;
    type State = ClusterLinkArgs;
    type Arguments = ClusterLinkArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<LinkMsg>,
        args: ClusterLinkArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(group_of(&args.links.me), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<LinkMsg>,
        msg: LinkMsg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let LinkMsg::Frame(bytes) = msg;
        let Some((from, body)) = admit(&st.links, &bytes, Instant::now()) else { return Ok(()) };
        let mut wake = false;
        for wire in body {
            wake |= st.deliver(&from, wire);
        }
        if wake {
            let _ = st.node.cast(NodeMsg::PeerWake);
        }
        Ok(())
    }
}

/// Decodes a frame and checks it against its session; returns the sender and the messages,
/// or `None` after counting (and logging once per peer) why it was refused.
pub(crate) fn admit(links: &Links, bytes: &[u8], now: Instant) -> Option<(NodeName, Vec<Wire>)> {
    let c = &links.counters;
    let env: Envelope = match codec::decode(bytes) {
        Ok(env) => env,
        Err(e) => {
            c.refuse(LinkEvent::RefusedUndecodable, "?", || format!("undecodable frame ({e}), {} bytes", bytes.len()));
            return None;
        }
    };
    let peer = match links.admit(&env.ticket, now) {
        Admission::Peer(peer) => peer,
        Admission::Stale => {
            c.inc(LinkEvent::StaleSession);
            return None;
        }
        Admission::Unknown => {
            c.refuse(LinkEvent::RefusedUnknownSession, env.from.as_str(), || {
                format!("a frame claiming to come from {} carries no open session's ticket", env.from)
            });
            return None;
        }
    };
    let claimed = std::iter::once(&env.from).chain(env.body.iter().filter_map(claimed_sender)).find(|n| **n != peer);
    if let Some(claimed) = claimed {
        c.refuse(LinkEvent::RefusedFromMismatch, peer.as_str(), || {
            format!("the session authenticated {peer}, but its frame speaks for {claimed}: refused")
        });
        return None;
    }
    if env.to != links.me {
        c.refuse(LinkEvent::RefusedWrongAddressee, peer.as_str(), || {
            format!("{peer} sent a frame addressed to {}", env.to)
        });
        return None;
    }
    c.inc(LinkEvent::FramesReceived);
    Some((peer, env.body))
}

impl ClusterLinkArgs {
    /// Hand one message on; returns whether the node actor needs a wake-up.
    fn deliver(&self, from: &NodeName, wire: Wire) -> bool {
        let from = from.clone();
        match wire {
            Wire::Peer(msg) => return self.inbox.push(from, msg),
            Wire::Broadcast { topic, from: user, event, body } => {
                let _ = self.node.cast(NodeMsg::PeerBroadcast { topic, from: user, event, body });
            }
            Wire::Validate { id, user, topic, token } => {
                let _ = self.node.cast(NodeMsg::PeerValidate { from, id, user, topic, token });
            }
            Wire::ValidateReply { id, answer } => {
                let _ = self.node.cast(NodeMsg::ValidateReply { id, answer });
            }
            Wire::Flush(id) => self.links.send(&from, Wire::FlushAck(id)),
            Wire::FlushAck(id) => self.links.flush_acked(id, &from),
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::handshake::Authenticated;
    use roster_core::{Config, Incarnation, PeerMsg};

    fn links() -> Arc<Links> {
        let config = Config::from_toml_str(include_str!("../../../../cluster.toml")).unwrap();
        let links = Links::new(&config, &"a".into());
        let auth = |peer: &str, t: u8| Authenticated { peer: peer.into(), inbound: [t; 16], outbound: [t + 100; 16] };
        links.session_opened(1, &auth("b", 1), Instant::now());
        links.session_opened(2, &auth("c", 2), Instant::now());
        links
    }

    fn heartbeat(node: &str) -> Wire {
        let from = Incarnation::new(node, 9);
        Wire::Peer(PeerMsg::Heartbeat { from, sent_at: 1, leases: vec![], echoes: vec![], presence_seq: 0 })
    }

    fn frame(from: &str, to: &str, ticket: u8, body: Vec<Wire>) -> Vec<u8> {
        codec::encode(&Envelope { from: from.into(), to: to.into(), ticket: [ticket; 16], body }).unwrap()
    }

    #[test]
    fn a_frame_of_the_sessions_peer_is_admitted() {
        let l = links();
        let (from, body) = admit(&l, &frame("b", "a", 1, vec![heartbeat("b")]), Instant::now()).unwrap();
        assert_eq!((from.as_str(), body.len()), ("b", 1));
        assert_eq!(l.counters.get(LinkEvent::FramesReceived), 1);
    }

    #[test]
    fn a_peer_posing_as_another_node_is_refused_and_counted() {
        let l = links();
        // c's session, b's name on the envelope.
        assert!(admit(&l, &frame("b", "a", 2, vec![heartbeat("b")]), Instant::now()).is_none());
        // c's session and c's envelope, but a heartbeat of b inside.
        assert!(admit(&l, &frame("c", "a", 2, vec![Wire::Flush(1), heartbeat("b")]), Instant::now()).is_none());
        assert_eq!(l.counters.get(LinkEvent::RefusedFromMismatch), 2);
        assert_eq!(l.counters.get(LinkEvent::FramesReceived), 0);
    }

    #[test]
    fn unknown_and_stale_tickets_garbage_and_misaddressed_frames_are_refused() {
        let l = links();
        assert!(admit(&l, &frame("b", "a", 77, vec![]), Instant::now()).is_none());
        assert_eq!(l.counters.get(LinkEvent::RefusedUnknownSession), 1);
        assert!(admit(&l, b"\x01garbage", Instant::now()).is_none());
        assert_eq!(l.counters.get(LinkEvent::RefusedUndecodable), 1);
        assert!(admit(&l, &frame("b", "c", 1, vec![]), Instant::now()).is_none());
        assert_eq!(l.counters.get(LinkEvent::RefusedWrongAddressee), 1);
        l.session_closed(1);
        assert!(admit(&l, &frame("b", "a", 1, vec![]), Instant::now()).is_none());
        assert_eq!(l.counters.get(LinkEvent::StaleSession), 1);
    }
}
