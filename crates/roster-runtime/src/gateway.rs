//! `Gateway`: accepts connections and links every `ConnectionActor` under itself, so that a
//! connection's end, however it happens (a clean close, a drop, a slow client, a panic, a
//! kill), arrives here as a supervision event and is reported to the node actor, which
//! untracks its presence and releases its slots.
//!
//! ```text
//! NodeSupervisor
//! ├── NodeActor ◀── SocketClosed{socket, clean} ──┐
//! ├── PresenceShard(0..k)                          │
//! └── Gateway   ◀── here ─────────────────────────┘
//!     └── ConnectionActor (one per socket, linked)
//! ```

use crate::connection::{CloseReason, CloseState, ConnArgs, ConnEvent, ConnMsg, ConnectionActor};
use crate::node_actor::NodeMsg;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;
use roster_core::{Role, SocketId, UserId};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Messages to the gateway.
#[derive(RactorMessage)]
pub enum GatewayMsg {
    /// Start a connection actor for a new socket.
    Connect {
        /// The socket id (unique on this node).
        socket: SocketId,
        /// The signed-in user, or `None`.
        user: Option<UserId>,
        /// Their role.
        role: Option<Role>,
        /// The client's outbound queue.
        out: mpsc::Sender<ConnEvent>,
        /// Shared close reason.
        close: Arc<CloseState>,
        /// The connection actor, once started.
        reply: RpcReplyPort<Option<ActorRef<ConnMsg>>>,
    },
    /// How many connections are alive.
    Count(RpcReplyPort<usize>),
    /// The node is shutting down: every connection ends with `CloseReason::Shutdown`.
    Shutdown(RpcReplyPort<()>),
}

/// What the gateway starts with.
pub struct GatewayArgs {
    /// The node actor to report to.
    pub node: ActorRef<NodeMsg>,
    /// Topics per connection.
    pub max_topics: usize,
}

/// The gateway. See the module documentation.
pub struct Gateway;

/// The gateway's state: which actor holds which socket.
pub struct GatewayState {
    node: ActorRef<NodeMsg>,
    max_topics: usize,
    sockets: HashMap<ActorId, (SocketId, Arc<CloseState>)>,
}

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = GatewayArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<GatewayMsg>,
        args: GatewayArgs,
    ) -> Result<GatewayState, ActorProcessingErr> {
        Ok(GatewayState { node: args.node, max_topics: args.max_topics, sockets: HashMap::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<GatewayMsg>,
        msg: GatewayMsg,
        st: &mut GatewayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GatewayMsg::Connect { socket, user, role, out, close, reply } => {
                let args = ConnArgs {
                    socket,
                    user,
                    role,
                    node: st.node.clone(),
                    out,
                    close: close.clone(),
                    max_topics: st.max_topics,
                };
                match Actor::spawn_linked(None, ConnectionActor, args, myself.get_cell()).await {
                    Ok((conn, _)) => {
                        st.sockets.insert(conn.get_id(), (socket, close));
                        // Registered before the caller can send a join through it.
                        st.node.cast(NodeMsg::Register { socket, conn: conn.clone() })?;
                        let _ = reply.send(Some(conn));
                    }
                    Err(e) => {
                        tracing::warn!(socket = %socket, error = %e, "cannot start a connection actor");
                        let _ = reply.send(None);
                    }
                }
            }
            GatewayMsg::Count(reply) => {
                let _ = reply.send(st.sockets.len());
            }
            GatewayMsg::Shutdown(reply) => {
                for (_, close) in st.sockets.values() {
                    close.set(CloseReason::Shutdown);
                }
                myself.stop_children(Some("shutdown".into()));
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    // Children end all the time; that is normal here, so the default (stop the supervisor)
    // is replaced.
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<GatewayMsg>,
        evt: SupervisionEvent,
        st: &mut GatewayState,
    ) -> Result<(), ActorProcessingErr> {
        let (id, clean) = match &evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell.get_id(), reason.as_deref() == Some("clean") || reason.as_deref() == Some("shutdown"))
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::warn!(actor = %cell.get_id(), error = %err, "connection actor crashed");
                (cell.get_id(), false)
            }
            _ => return Ok(()),
        };
        if let Some((socket, close)) = st.sockets.remove(&id) {
            close.set(if clean { CloseReason::Clean } else { CloseReason::Crashed });
            st.node.cast(NodeMsg::SocketClosed { socket, clean })?;
        }
        Ok(())
    }
}
