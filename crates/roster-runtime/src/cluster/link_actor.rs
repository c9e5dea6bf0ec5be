//! `ClusterLink`: the only remotable actor of a node. It joins the process group
//! `roster.link.<name>`, which is how a peer's sender finds it, and accepts one message,
//! `Frame(bytes)`, which it decodes fallibly and admits only if the frame's ticket belongs to
//! an open session whose authenticated peer is the sender the frame and every message in it
//! claim. Admitted messages (all of them the core's, [`PeerMsg`]) go to the node's
//! `PeerInbox`, ahead of the `NodeActor`'s mailbox.
//!
//! ```text
//! NodeSupervisor ... NodeActor ◀── PeerInbox ◀── ClusterLink (spawned by Cluster::start, unlinked)
//! ```

use super::counters::LinkEvent;
use super::links::{group_of, Admission, Links};
use super::wire::{claimed_sender, Envelope, LinkMsg};
use crate::codec;
use crate::node_actor::{NodeMsg, PeerInbox};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use roster_core::{NodeName, PeerMsg};
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
        for msg in body {
            wake |= st.inbox.push(from.clone(), msg);
        }
        if wake {
            let _ = st.node.cast(NodeMsg::PeerWake);
        }
        Ok(())
    }
}

/// Decodes a frame and checks it against its session; returns the sender and the messages,
/// or `None` after counting (and logging once per peer) why it was refused.
pub(crate) fn admit(links: &Links, bytes: &[u8], now: Instant) -> Option<(NodeName, Vec<PeerMsg>)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::handshake::Authenticated;
    use roster_core::{Config, Incarnation};

    fn links() -> Arc<Links> {
        let config = Config::from_toml_str(include_str!("../../../../cluster.toml")).unwrap();
        let links = Links::new(&config, &"a".into());
        let auth = |peer: &str, t: u8| Authenticated { peer: peer.into(), inbound: [t; 16], outbound: [t + 100; 16] };
        links.session_opened(1, &auth("b", 1), Instant::now());
        links.session_opened(2, &auth("c", 2), Instant::now());
        links
    }

    fn heartbeat(node: &str) -> PeerMsg {
        let from = Incarnation::new(node, 9);
        PeerMsg::Heartbeat { from, sent_at: 1, leases: vec![], echoes: vec![], presence_seq: 0 }
    }

    fn frame(from: &str, to: &str, ticket: u8, body: Vec<PeerMsg>) -> Vec<u8> {
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
        let c_flush = PeerMsg::Flush { from: Incarnation::new("c", 9), id: 1 };
        assert!(admit(&l, &frame("c", "a", 2, vec![c_flush.clone(), heartbeat("b")]), Instant::now()).is_none());
        // c's session, a validation, broadcast, flush or answer that speaks for b.
        let b = Incarnation::new("b", 9);
        let a = Incarnation::new("a", 1);
        let token = roster_core::SlotToken { epoch: 1, generation: 1 };
        let posing = [
            PeerMsg::Validate { from: b.clone(), call: 1, user: "u".into(), topic: "t".into(), token },
            PeerMsg::ValidateReply { from: b.clone(), to: a, call: 1, answer: Some(true) },
            PeerMsg::Broadcast {
                from: b.clone(),
                seq: 1,
                topic: "t".into(),
                user: "u".into(),
                event: "e".into(),
                body: roster_core::MetaValue::Null,
            },
            PeerMsg::Flush { from: b.clone(), id: 2 },
            PeerMsg::FlushAck { from: b, id: 2 },
        ];
        for msg in &posing {
            let bytes = frame("c", "a", 2, vec![c_flush.clone(), msg.clone()]);
            assert!(admit(&l, &bytes, Instant::now()).is_none(), "{msg:?}");
        }
        assert_eq!(l.counters.get(LinkEvent::RefusedFromMismatch), 2 + posing.len() as u64);
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
