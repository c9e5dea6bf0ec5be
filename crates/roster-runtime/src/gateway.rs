//! `Gateway`: the supervisor of every connection task. A connection that lives in a task
//! ([`Node::spawn_connection`](crate::Node::spawn_connection); every WebSocket does) is watched
//! here, so its end, however it happens (the task returns, panics or is aborted), reaches the
//! node actor as `SocketClosed`: its presence is untracked and its slots released, with no
//! cleanup code inside the connection that could fail to run.
//!
//! ```text
//! NodeSupervisor
//! ├── NodeActor ◀── SocketClosed{socket, clean} ──┐
//! ├── PresenceShard(0..k)                          │
//! └── Gateway (a task) ◀── here ──────────────────┘
//!     └── connection task (one per socket; its JoinHandle is watched)
//! ```
//!
//! A connection task costs a few hundred bytes; a ractor actor per socket cost about 10 KB
//! (ractor with the cluster features) plus its mailbox.

use crate::connection::{CloseReason, ConnShared};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The sending side of the Gateway: hands it connection tasks to watch.
#[derive(Clone, Debug)]
pub(crate) struct Gateway {
    tx: mpsc::UnboundedSender<(Arc<ConnShared>, JoinHandle<()>)>,
}

impl Gateway {
    /// Start the Gateway's task; abort the returned handle to stop it.
    pub(crate) fn start() -> (Gateway, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Gateway { tx }, tokio::spawn(run(rx)))
    }

    /// Watch `task`, the task `conn` lives in. If the Gateway has stopped (the node is down),
    /// the task is aborted and the connection ends at once.
    pub(crate) fn watch(&self, conn: Arc<ConnShared>, task: JoinHandle<()>) {
        if let Err(mpsc::error::SendError((conn, task))) = self.tx.send((conn, task)) {
            task.abort();
            conn.end(CloseReason::Crashed, false);
        }
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<(Arc<ConnShared>, JoinHandle<()>)>) {
    let mut tasks = FuturesUnordered::new();
    loop {
        tokio::select! {
            watched = rx.recv() => match watched {
                Some((conn, task)) => tasks.push(async move { (conn, task.await) }),
                None => break,
            },
            Some((conn, ended)) = tasks.next(), if !tasks.is_empty() => report(&conn, ended),
        }
    }
    // Nobody can hand over new tasks: report the ones still running as they end.
    while let Some((conn, ended)) = tasks.next().await {
        report(&conn, ended);
    }
}

/// The task `conn` lived in has ended: report it (unless the connection already did, closing
/// cleanly or overflowing).
fn report(conn: &ConnShared, ended: Result<(), tokio::task::JoinError>) {
    match ended {
        Ok(()) => conn.end(CloseReason::Dropped, false),
        Err(e) => {
            if e.is_panic() {
                tracing::warn!(socket = %conn.socket(), "connection task panicked");
            }
            conn.end(CloseReason::Crashed, false);
        }
    }
}
