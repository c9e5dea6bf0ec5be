//! What travels between nodes once a session is up: the one remotable message
//! ([`LinkMsg::Frame`]), the [`Envelope`] inside it (the core's messages, [`PeerMsg`]), and
//! which node each message claims to come from ([`claimed_sender`]).

use roster_core::{NodeName, PeerMsg, PresenceMsg};
use serde::{Deserialize, Serialize};

/// A session's ticket: 16 random bytes one node hands its peer during the handshake, to be
/// stamped on every frame the peer sends it on that session. `ractor_cluster` does not say
/// which session delivered a message; the ticket does, so a frame is bound to the peer that
/// authenticated the session, whatever its envelope claims.
pub(crate) type Ticket = [u8; 16];

/// The one message a `ClusterLink` accepts from the network: an encoded [`Envelope`].
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum LinkMsg {
    /// A version byte and a bincode envelope (see [`crate::codec`]).
    Frame(Vec<u8>),
}

/// What travels between nodes, inside the codec.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The sender's configured name; must be the session's authenticated peer.
    pub from: NodeName,
    /// The addressee's configured name (a frame for another node is refused).
    pub to: NodeName,
    /// The ticket the addressee issued for this session.
    pub ticket: Ticket,
    /// The content: every core message queued for this peer since the previous frame, in
    /// order.
    pub body: Vec<PeerMsg>,
}

/// The node a message says it comes from, where it names one: the sender's incarnation, the
/// gateway of a connection the sender reports on, the origin of presence entries. A peer
/// may only speak for itself, so every such name must be the session's peer.
pub(crate) fn claimed_sender(msg: &PeerMsg) -> Option<&NodeName> {
    match msg {
        PeerMsg::Heartbeat { from, .. }
        | PeerMsg::LeaseRequest { from, .. }
        | PeerMsg::LeaseReply { from, .. }
        | PeerMsg::LeaseRelease { from, .. }
        | PeerMsg::SlotGrant { from, .. }
        | PeerMsg::SlotReject { from, .. }
        | PeerMsg::SlotRevoke { from, .. }
        | PeerMsg::SlotClose { from, .. }
        | PeerMsg::ScanRequest { from, .. }
        | PeerMsg::ScanReply { from, .. }
        | PeerMsg::UserCall { from, .. }
        | PeerMsg::UserInfo { from, .. }
        | PeerMsg::HandoverPlan { from, .. }
        | PeerMsg::UserHandover { from, .. }
        | PeerMsg::Goodbye { from, .. }
        | PeerMsg::Validate { from, .. }
        | PeerMsg::ValidateReply { from, .. }
        | PeerMsg::Broadcast { from, .. }
        | PeerMsg::Flush { from, .. }
        | PeerMsg::FlushAck { from, .. } => Some(&from.node),
        PeerMsg::SlotJoin { conn, .. } | PeerMsg::SlotReleased { conn, .. } => Some(&conn.gateway.node),
        // The connection of an ack and the addressee of a user answer are the receiver's own;
        // a kick names no sender (a session kick names the session's gateway, not the sender).
        PeerMsg::SlotReleaseAck { .. }
        | PeerMsg::Kick { .. }
        | PeerMsg::KickSession { .. }
        | PeerMsg::UserReply { .. }
        | PeerMsg::UserInfoReply { .. } => None,
        PeerMsg::Presence(PresenceMsg::Delta(d)) => Some(&d.origin.node),
        PeerMsg::Presence(PresenceMsg::SnapshotRequest { from }) => Some(&from.node),
        PeerMsg::Presence(PresenceMsg::SnapshotChunk(c)) => Some(&c.origin.node),
    }
}

/// Frames of every kind of content, with realistic values (the fuzz tests mutate them).
#[cfg(test)]
pub(crate) fn sample_envelopes() -> Vec<Envelope> {
    use roster_core::{
        Announced, Change, ConnId, Delta, Echo, EntryRecord, HeldSlot, Incarnation, MetaValue, PartitionId, PhxRef,
        PolicyId, ScopeKey, SlotToken, SnapshotChunk, SocketId,
    };
    let a = Incarnation::new("a", 1);
    let b = Incarnation::new("b", 2);
    let conn = ConnId { gateway: a.clone(), socket: SocketId(12) };
    let scope = ScopeKey::topic("room:1".into());
    let token = SlotToken { epoch: 7, generation: 3 };
    let mut meta = roster_core::Meta::new();
    meta.insert("name".into(), MetaValue::Str("Ada".into()));
    meta.insert("n".into(), MetaValue::Int(-3));
    meta.insert("x".into(), MetaValue::Float(1.5));
    meta.insert("list".into(), MetaValue::List(vec![MetaValue::Bool(true), MetaValue::Null]));
    let entry = EntryRecord {
        topic: "room:1".into(),
        key: "u1".into(),
        socket: SocketId(12),
        phx_ref: PhxRef::new("F3x"),
        tab_id: Some("tab-1".into()),
        online_at: 1_700_000_000_000,
        meta: meta.clone(),
    };
    let lease = Announced { partition: PartitionId(5), epoch: 9 };
    let peer = vec![
        PeerMsg::Heartbeat {
            from: a.clone(),
            sent_at: 100,
            leases: vec![lease],
            echoes: vec![Echo { of: b.clone(), sent_at: 90 }],
            presence_seq: 4,
        },
        PeerMsg::LeaseRequest { from: a.clone(), round: 5, asks: vec![lease] },
        PeerMsg::LeaseReply { from: a.clone(), round: 5, granted: vec![lease], refused: vec![], before: vec![lease] },
        PeerMsg::LeaseRelease { from: a.clone(), leases: vec![lease] },
        PeerMsg::Goodbye { from: a.clone(), released: vec![lease], settled: true },
        PeerMsg::SlotJoin {
            conn: conn.clone(),
            user: "u1".into(),
            scope: scope.clone(),
            topic: "room:1".into(),
            tab: Some("tab-1".into()),
            role: Some("admin".into()),
        },
        PeerMsg::SlotGrant {
            from: a.clone(),
            user: "u1".into(),
            conn: conn.clone(),
            scope: scope.clone(),
            token,
            echo: 3,
        },
        PeerMsg::SlotReject { from: a.clone(), conn: conn.clone(), scope: scope.clone(), reason: "not_home".into() },
        PeerMsg::SlotRevoke {
            from: a.clone(),
            user: "u1".into(),
            conn: conn.clone(),
            scope: ScopeKey::global(PolicyId::Configured(2)),
            token,
            reason: "logged_in_elsewhere".into(),
        },
        PeerMsg::SlotClose { from: a.clone(), user: "u1".into(), conn: conn.clone(), scope: scope.clone(), token },
        PeerMsg::SlotReleased { conn: conn.clone(), user: "u1".into(), scope: scope.clone(), token, clean: false },
        PeerMsg::SlotReleaseAck { conn: conn.clone(), token },
        PeerMsg::ScanRequest { from: a.clone(), partition: PartitionId(5), epoch: 9 },
        PeerMsg::ScanReply {
            from: a.clone(),
            partition: PartitionId(5),
            epoch: 9,
            slots: vec![HeldSlot {
                user: "u1".into(),
                scope: scope.clone(),
                conn: conn.clone(),
                tab: roster_core::TabKey::Tab("tab-1".into()),
                token,
            }],
            complete: false,
        },
        PeerMsg::Kick { user: "u1".into(), scope: None, reason: "spam".into() },
        PeerMsg::UserCall { from: a.clone(), call: 8, user: "u1".into(), body: vec![1, 2, 3], reply: true },
        PeerMsg::UserReply { to: a.clone(), call: 8, answer: roster_core::UserAnswer::Reply(vec![4, 5]) },
        PeerMsg::UserReply { to: a.clone(), call: 9, answer: roster_core::UserAnswer::Failed("boom".into()) },
        PeerMsg::UserInfo { from: a.clone(), call: 10, user: "u1".into() },
        PeerMsg::UserInfoReply {
            to: a.clone(),
            call: 10,
            view: Some(roster_core::UserView {
                user: "u1".into(),
                home: "b".into(),
                activation: Some(token),
                handed_over_from: None,
                sessions: vec![roster_core::SessionView {
                    conn: conn.clone(),
                    scope: scope.clone(),
                    topic: Some("room:1".into()),
                    tab: roster_core::TabKey::Tab("tab-1".into()),
                    token,
                    state: roster_core::SessionState::Revoking { reason: "kicked".into() },
                    in_doubt: true,
                }],
            }),
        },
        PeerMsg::KickSession { user: "u1".into(), conn: conn.clone(), scope: scope.clone(), reason: "spam".into() },
        PeerMsg::HandoverPlan { from: a.clone(), partition: PartitionId(5), users: vec!["u1".into(), "u2".into()] },
        PeerMsg::UserHandover { from: a.clone(), user: "u1".into(), token, state: vec![9; 12] },
        PeerMsg::Validate { from: a.clone(), call: 1, user: "u1".into(), topic: "room:1".into(), token },
        PeerMsg::ValidateReply { from: b.clone(), to: a.clone(), call: 1, answer: Some(true) },
        PeerMsg::ValidateReply { from: b.clone(), to: a.clone(), call: 2, answer: None },
        PeerMsg::Broadcast {
            from: a.clone(),
            seq: 3,
            topic: "room:1".into(),
            user: "u1".into(),
            event: "shout".into(),
            body: MetaValue::Map(meta.clone()),
        },
        PeerMsg::Flush { from: a.clone(), id: 4 },
        PeerMsg::FlushAck { from: b.clone(), id: 4 },
        PeerMsg::Presence(PresenceMsg::Delta(Delta {
            origin: a.clone(),
            seq_from: 3,
            seq_to: 5,
            changes: vec![
                Change::Join(entry.clone()),
                Change::Update(entry.clone()),
                Change::Leave { topic: "room:1".into(), socket: SocketId(12) },
            ],
        })),
        PeerMsg::Presence(PresenceMsg::SnapshotRequest { from: a.clone() }),
        PeerMsg::Presence(PresenceMsg::SnapshotChunk(SnapshotChunk {
            origin: a,
            seq: 5,
            index: 0,
            count: 1,
            entries: vec![entry],
        })),
    ];
    let envelope = |body| Envelope { from: "a".into(), to: "b".into(), ticket: [0x5A; 16], body };
    let mut out: Vec<Envelope> = peer.into_iter().map(|m| envelope(vec![m])).collect();
    out.push(envelope(Vec::new()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use roster_core::{ConnId, Incarnation, MetaValue, ScopeKey, SlotToken, SocketId};

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused_by_decoding() {
        let env = Envelope {
            from: "a".into(),
            to: "b".into(),
            ticket: [7; 16],
            body: vec![
                PeerMsg::Broadcast {
                    from: Incarnation::new("a", 1),
                    seq: 1,
                    topic: "room:1".into(),
                    user: "u1".into(),
                    event: "shout".into(),
                    body: MetaValue::Str("hi".into()),
                },
                PeerMsg::Flush { from: Incarnation::new("a", 1), id: 3 },
            ],
        };
        let bytes = codec::encode(&env).unwrap();
        let back: Envelope = codec::decode(&bytes).unwrap();
        assert_eq!(back, env);
        assert!(codec::decode::<Envelope>(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn a_message_claims_the_node_it_names_as_its_sender() {
        let c = Incarnation::new("c", 1);
        let hb = PeerMsg::Heartbeat { from: c.clone(), sent_at: 1, leases: vec![], echoes: vec![], presence_seq: 0 };
        assert_eq!(claimed_sender(&hb).map(NodeName::as_str), Some("c"));
        let conn = ConnId { gateway: c.clone(), socket: SocketId(4) };
        let released = PeerMsg::SlotReleased {
            conn,
            user: "u".into(),
            scope: ScopeKey::topic("room:1".into()),
            token: SlotToken { epoch: 1, generation: 1 },
            clean: true,
        };
        assert_eq!(claimed_sender(&released).map(NodeName::as_str), Some("c"));
        let goodbye = PeerMsg::Goodbye { from: c.clone(), released: vec![], settled: true };
        assert_eq!(claimed_sender(&goodbye).map(NodeName::as_str), Some("c"));
        let ask = PeerMsg::Presence(PresenceMsg::SnapshotRequest { from: c.clone() });
        assert_eq!(claimed_sender(&ask).map(NodeName::as_str), Some("c"));
        // The messages of the relay speak for their sender too, the answers included.
        let token = SlotToken { epoch: 1, generation: 1 };
        let a = Incarnation::new("a", 1);
        let relay = [
            PeerMsg::Validate { from: c.clone(), call: 1, user: "u".into(), topic: "room:1".into(), token },
            PeerMsg::ValidateReply { from: c.clone(), to: a.clone(), call: 1, answer: Some(true) },
            PeerMsg::Broadcast {
                from: c.clone(),
                seq: 1,
                topic: "room:1".into(),
                user: "u".into(),
                event: "e".into(),
                body: MetaValue::Null,
            },
            PeerMsg::Flush { from: c.clone(), id: 1 },
            PeerMsg::FlushAck { from: c.clone(), id: 1 },
        ];
        for msg in &relay {
            assert_eq!(claimed_sender(msg).map(NodeName::as_str), Some("c"), "{msg:?}");
        }
    }
}
