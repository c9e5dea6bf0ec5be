//! The history of a chaos run: every fault, every client observation and the nodes' sampled
//! lists, on one clock (Unix milliseconds of this machine, the clock the nodes stamp their
//! record logs with), one [`Event`] each, written as JSON lines.
//!
//! Presence metas are told apart by `c`, a number the workload puts in the meta of every join
//! (the join's id), so a meta seen in any view or list names the join, its socket, its tab and
//! its gateway.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// Unix milliseconds.
pub type Ms = u64;

/// One meta of a presence list, as the checker compares lists: its key, `phx_ref` and the
/// workload's join id `c` (none for the anonymous count).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MetaObs {
    /// The presence key (a user id, or `anonymous`).
    pub key: String,
    /// The meta's `phx_ref`.
    pub phx_ref: String,
    /// The join it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<u32>,
}

/// A node's list of a topic at a quiet check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSnap {
    /// The node.
    pub node: String,
    /// The topic.
    pub topic: String,
    /// Its metas, sorted.
    pub metas: Vec<MetaObs>,
}

/// A client's view of a topic (phoenix.js `Presence` state) at a quiet check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewSnap {
    /// The observing join (its channel).
    pub join: u32,
    /// The topic.
    pub topic: String,
    /// Its metas, sorted.
    pub metas: Vec<MetaObs>,
}

/// How a join was meant: what the checker expects of its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinKind {
    /// A tab joins a topic on a socket it just opened (first time, or with a fresh tab id).
    Open,
    /// A tab's new socket after its previous one was dropped uncleanly: a resume (P2).
    Resume,
    /// Another topic (or the same one again after a leave) on a socket already open.
    SameSocket,
    /// An anonymous viewer.
    Anonymous,
}

/// One thing that happened, at `at` (Unix ms). Fields are named by what they hold: `socket`
/// and `join` are the workload's ids, `node` a node's name.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum Event {
    /// A fault of the schedule began (`what` says it as the fault line does).
    FaultStart { at: Ms, id: u32, what: String },
    /// It ended (healed, continued, restarted).
    FaultEnd { at: Ms, id: u32 },
    /// A node process was killed (SIGKILL), reaped at `at`.
    NodeKilled { at: Ms, node: String },
    /// A node process exited after SIGTERM (a graceful shutdown), reaped at `at`.
    NodeTerminated { at: Ms, node: String },
    /// A node process was started.
    NodeStarted { at: Ms, node: String },
    /// SIGSTOP.
    NodeStopped { at: Ms, node: String },
    /// SIGCONT.
    NodeContinued { at: Ms, node: String },
    /// A link between two nodes broke: `mode` is `cut`, `stall`, `one_way a->b` (only `b`
    /// stops hearing `a`), or `delay N`.
    LinkFault { at: Ms, a: String, b: String, mode: String },
    /// The link works again.
    LinkHealed { at: Ms, a: String, b: String },
    /// The workload did something (`what`: `open`, `drop`, `close`, `leave`, `push`, ...).
    Op { at: Ms, what: String, socket: u32 },
    /// A socket connected (WebSocket handshake done) to `node`.
    Connected {
        at: Ms,
        socket: u32,
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        role: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tab: Option<String>,
    },
    /// A socket could not connect.
    ConnectFailed { at: Ms, socket: u32, node: String, error: String },
    /// `phx_join` sent; `join` is its id (its `join_ref` and its meta's `c`).
    Join {
        at: Ms,
        socket: u32,
        join: u32,
        topic: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tab: Option<String>,
        kind: JoinKind,
    },
    /// The join's `phx_reply`: `ok` (with the slot token, if any) or the error reason.
    Reply {
        at: Ms,
        join: u32,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// `phx_leave` sent for the join.
    Leave { at: Ms, join: u32 },
    /// The server ended the join's channel: `slot_revoked <reason>`, `phx_close` or `phx_error`.
    ChannelEnd { at: Ms, join: u32, how: String },
    /// The observing join's view changed: metas (by `c`) that appeared and disappeared.
    View {
        at: Ms,
        join: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        add: Vec<u32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        del: Vec<u32>,
    },
    /// The socket stopped reading (and writing): a stalled client.
    Stalled { at: Ms, socket: u32 },
    /// The socket ended: `client_close`, `client_drop`, `server <code>`, `error`.
    SocketEnd { at: Ms, socket: u32, by: String },
    /// A node's list of a topic, sampled (`c` of every meta that has one).
    Sample { at: Ms, node: String, topic: String, cs: Vec<u32> },
    /// A quiet check: every answering node's lists and every live client's views.
    Quiet { at: Ms, lists: Vec<ListSnap>, views: Vec<ViewSnap> },
}

impl Event {
    /// When it happened.
    pub fn at(&self) -> Ms {
        match self {
            Event::FaultStart { at, .. }
            | Event::FaultEnd { at, .. }
            | Event::NodeKilled { at, .. }
            | Event::NodeTerminated { at, .. }
            | Event::NodeStarted { at, .. }
            | Event::NodeStopped { at, .. }
            | Event::NodeContinued { at, .. }
            | Event::LinkFault { at, .. }
            | Event::LinkHealed { at, .. }
            | Event::Op { at, .. }
            | Event::Connected { at, .. }
            | Event::ConnectFailed { at, .. }
            | Event::Join { at, .. }
            | Event::Reply { at, .. }
            | Event::Leave { at, .. }
            | Event::ChannelEnd { at, .. }
            | Event::View { at, .. }
            | Event::Stalled { at, .. }
            | Event::SocketEnd { at, .. }
            | Event::Sample { at, .. }
            | Event::Quiet { at, .. } => *at,
        }
    }

    /// The event as one JSON line (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"e\":\"unserializable\",\"error\":\"{e}\"}}"))
    }
}

/// Collects the events of a run from every thread and task, and keeps what the runner asks
/// while the run goes: which joins are unanswered and which sockets are stalled.
#[derive(Default)]
pub struct Recorder {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    events: Vec<Event>,
    /// Joins sent and neither answered, ended nor left, by socket.
    pending: BTreeMap<u32, BTreeSet<u32>>,
    stalled: BTreeSet<u32>,
}

impl Recorder {
    /// Record `event` (stamped by the caller with [`unix_ms`](crate::unix_ms)).
    pub fn record(&self, event: Event) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &event {
            Event::Join { socket, join, .. } => {
                inner.pending.entry(*socket).or_default().insert(*join);
            }
            Event::Reply { join, .. } | Event::ChannelEnd { join, .. } | Event::Leave { join, .. } => {
                for set in inner.pending.values_mut() {
                    set.remove(join);
                }
            }
            Event::Stalled { socket, .. } => {
                inner.stalled.insert(*socket);
            }
            Event::SocketEnd { socket, .. } => {
                inner.pending.remove(socket);
                inner.stalled.remove(socket);
            }
            _ => {}
        }
        inner.events.push(event);
    }

    /// Joins sent that are neither answered, ended nor left, on sockets still open.
    pub fn pending_joins(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).pending.values().map(BTreeSet::len).sum()
    }

    /// Sockets stalled and not ended yet.
    pub fn stalled_sockets(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).stalled.len()
    }

    /// Every event so far, in time order (a stable sort keeps the recording order of equal
    /// times).
    pub fn events(&self) -> Vec<Event> {
        let mut events = self.inner.lock().unwrap_or_else(|e| e.into_inner()).events.clone();
        events.sort_by_key(Event::at);
        events
    }
}
