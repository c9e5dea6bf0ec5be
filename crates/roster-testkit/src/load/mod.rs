//! `roster-load`: N WebSockets speaking raw Phoenix v2 frames against one Roster node, and
//! what they measure. The binary (`src/bin/roster-load.rs`) parses flags into a [`Scenario`]
//! and prints the [`Report`]; tests call [`run`] directly.
//!
//! # A run
//!
//! 1. **Node.** [`Target::Start`] starts `roster serve` (one node, a config written by
//!    [`ClusterSpec`](crate::ClusterSpec) with the testkit's secret and API key);
//!    [`Target::Url`] uses a running node, its secret and API key.
//! 2. **Connect.** With `procs > 1` the clients run in that many child processes
//!    (`worker`), which send what they see back to this one. Every socket opens
//!    (`/socket/websocket?vsn=2.0.0&token=…`, a token minted per user), at most `connect_concurrency` at a time. The soft descriptor limit is raised
//!    to the hard one first; past one loopback address's ephemeral ports, sockets are spread
//!    over 127.0.0.2, 127.0.0.3, … as source addresses.
//! 3. **Watchers join** (if any) and their views settle; then **members join**, all at once
//!    or at `join_rate` per second. Join latency is `phx_join` sent → `phx_reply` received.
//! 4. **Views settle.** Every client keeps its view of each topic by phoenix.js
//!    `syncState`/`syncDiff` semantics (`view`). The run waits until, for every topic, the
//!    node's `GET /presence?topic=T` lists exactly the users whose joins are live and every
//!    live member's view equals that list, and confirms it with a second full read. "Views
//!    exact after" is the last instant any of those views changed, from the stage's start.
//! 5. **Close** (if `close_fraction > 0`): that fraction of every room closes its socket (or
//!    drops it, or leaves: [`CloseMode`]), at once or at `close_rate` per second; once every
//!    one of them has sent its close and none of their joins is live, the remaining views
//!    must settle again ("exact after" counts from the last close sent).
//! 6. **Report.** Join latency p50/p99, time to all acks, views exact after, frames and bytes
//!    per socket, the node's RSS before and after (from `/proc/<pid>/status`), closes the
//!    server started by code (1005: a close frame without a code, 1006: no close frame),
//!    channel events, this process's peak RSS. Then every socket closes with 1000, and a node
//!    it started is stopped.
//!
//! # Layout
//!
//! | module | what it holds |
//! |---|---|
//! | `plan` | who joins what ([`Scenario`] → sockets, users, topics, closers) |
//! | `protocol` | frames, presence payloads streamed as `(key, phx_ref)`, [`mint_token`] |
//! | `wire` | WebSocket frames read as their bytes come (tungstenite's header parser and handshake) |
//! | `message` | a text message parsed fragment by fragment into a header and meta ids |
//! | `node_api` | the node's `GET /presence` over one kept-alive connection (hyper) |
//! | `view` | one client's list of one topic, as 64-bit meta ids and a digest |
//! | `board` | the atomics the client tasks write and the coordinator reads |
//! | `client` | one client: a tokio task around one WebSocket |
//! | `run` | the coordinator: stages, settling, measuring |
//! | `worker` | `--procs N`: the clients spread over child processes, their boards mirrored |
//! | `report` | [`Report`], its table and its JSON |
//! | `system` | `/proc` memory, the descriptor limit, the ephemeral port range |

mod board;
mod client;
mod message;
mod node_api;
mod plan;
pub(crate) mod protocol;
mod report;
mod run;
mod system;
mod view;
mod wire;
mod worker;

use crate::cluster::Timings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use protocol::mint_token;
pub use report::{
    AllocatorReport, CloseReport, ConnectReport, Dist, JoinReport, NodeReport, Report, ScenarioReport, ServerReport,
    TrafficReport, ViewsReport,
};
pub use run::run;
pub use worker::serve as serve_worker;

/// Why a run could not be made (a run that was made but found problems is a [`Report`]
/// whose [`Report::problems`] say so).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The scenario is impossible (sizes that do not divide, a fraction above 1, ...).
    #[error("{0}")]
    BadScenario(String),
    /// More sockets than file descriptors this process may open.
    #[error(
        "{needed} sockets need about {} file descriptors; the limit is {soft} (hard limit {hard}): \
         fewer sockets, or raise the hard limit (ulimit -Hn)",
        needed + 64
    )]
    TooManySockets {
        /// Sockets the scenario opens.
        needed: usize,
        /// The soft limit after raising it.
        soft: u64,
        /// The hard limit.
        hard: u64,
    },
    /// The node could not be started or did not get ready; the message has its log tail.
    #[error("starting the node failed: {0}")]
    NodeStart(String),
    /// The node's `GET /presence` did not answer 200 with a presence list.
    #[error("GET /presence on the node failed: {0}")]
    NodeApi(String),
    /// The async runtime could not be built.
    #[error("starting the runtime failed: {0}")]
    Runtime(std::io::Error),
    /// A worker process (`procs > 1`) could not be started or given its sockets.
    #[error("worker process: {0}")]
    Worker(String),
}

/// Which node to load.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start one `roster serve` and stop it at the end.
    Start(StartNode),
    /// A running node.
    Url(RemoteNode),
}

/// A node `roster-load` starts: one-node [`ClusterSpec`](crate::ClusterSpec) config, without
/// a record log.
#[derive(Clone, Debug)]
pub struct StartNode {
    /// The `roster` executable.
    pub binary: PathBuf,
    /// Its `[cluster]` timings ([`Timings::DEFAULT`]: the product defaults).
    pub timings: Timings,
    /// `key = value` lines for `[server]` (e.g. `outbound_queue = 4096`).
    pub server_keys: Vec<String>,
    /// `key = value` lines for `[presence]` (`diff_ms = 20` and `broadcast_ms = 5`, the
    /// product defaults, unless given here).
    pub presence_keys: Vec<String>,
    /// Bodies of `[[policy]]` tables.
    pub policies: Vec<String>,
}

/// A node that runs already.
#[derive(Clone, Debug)]
pub struct RemoteNode {
    /// Its `http_addr`.
    pub addr: SocketAddr,
    /// The secret tokens are minted with (`[auth] secret`).
    pub secret: String,
    /// The API key for `GET /presence` (`[auth] api_key`).
    pub api_key: String,
    /// Its process id, for its RSS (`None`: no server memory figures).
    pub pid: Option<u32>,
}

/// How the closing fraction goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloseMode {
    /// A WebSocket close frame (1000), then the server's answer.
    Frame,
    /// The TCP connection dropped without a close frame (a crashed tab).
    Drop,
    /// `phx_leave` on every topic; the socket stays open.
    Leave,
}

/// What to run: see the module docs and `docs/testing.md`.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The node.
    pub target: Target,
    /// Member sockets (a multiple of `room_size`).
    pub sockets: usize,
    /// Members per room.
    pub room_size: usize,
    /// Topics each member socket joins (one meta in each).
    pub topics_per_socket: usize,
    /// Watchers per watched room: sockets that join before the members, one topic each.
    pub watchers: usize,
    /// How many rooms (the first ones) get watchers; `None`: every room.
    pub watched_rooms: Option<usize>,
    /// The fraction of every room's members that close after the views settle (0: none).
    pub close_fraction: f64,
    /// How they close.
    pub close_mode: CloseMode,
    /// Joins per second within a stage; `None`: all at once.
    pub join_rate: Option<f64>,
    /// Closes per second in the close stage; `None`: all at once.
    pub close_rate: Option<f64>,
    /// Connects in flight at once.
    pub connect_concurrency: usize,
    /// Loopback source addresses to spread the sockets over; `None`: as many as the
    /// ephemeral port range requires (usually none).
    pub source_addrs: Option<usize>,
    /// Topic names are this plus the room number.
    pub topic_prefix: String,
    /// Member user ids are this plus the socket number.
    pub user_prefix: String,
    /// The role in every token.
    pub role: String,
    /// The `meta` object every join carries (JSON), if any.
    pub meta: Option<String>,
    /// Whether joins carry a `tab_id` (`t<socket>`).
    pub tab_ids: bool,
    /// Whether a settled topic must list exactly the users whose joins are live, one meta
    /// each. Off for topics whose list is not their users (`presence = "count"`): then views
    /// need only equal the node's list.
    pub check_keys: bool,
    /// The phoenix `heartbeat` interval (phoenix.js: 30 s).
    pub heartbeat: Duration,
    /// How long a join stage waits for every reply.
    pub join_timeout: Duration,
    /// How long views may take to settle, per stage.
    pub settle_timeout: Duration,
    /// How long to keep every socket open after measuring (to look at the node meanwhile).
    pub hold: Duration,
    /// Tokio worker threads of the clients (in all: with `procs > 1`, each process gets
    /// its share, at least one).
    pub threads: usize,
    /// Processes the clients run in: 1, this one; more, that many child processes of
    /// `worker_binary` (`roster-load --worker`), socket `i` in process `i % procs`, while this
    /// one coordinates. A client process reads each of its sockets' flow-control windows in
    /// turn, so a turn over a share is shorter than a turn over all.
    pub procs: usize,
    /// The `roster-load` executable the worker processes run (needed when `procs > 1`).
    pub worker_binary: Option<PathBuf>,
}

impl Default for Scenario {
    /// 10 sockets in one room of 10 against `target/…/roster` beside this executable.
    fn default() -> Scenario {
        Scenario {
            target: Target::Start(StartNode {
                binary: PathBuf::from("roster"),
                timings: Timings::DEFAULT,
                server_keys: Vec::new(),
                presence_keys: Vec::new(),
                policies: Vec::new(),
            }),
            sockets: 10,
            room_size: 10,
            topics_per_socket: 1,
            watchers: 0,
            watched_rooms: None,
            close_fraction: 0.0,
            close_mode: CloseMode::Frame,
            join_rate: None,
            close_rate: None,
            connect_concurrency: 256,
            source_addrs: None,
            topic_prefix: "room:".to_owned(),
            user_prefix: "u".to_owned(),
            role: "user".to_owned(),
            meta: None,
            tab_ids: false,
            check_keys: true,
            heartbeat: Duration::from_secs(30),
            join_timeout: Duration::from_secs(60),
            settle_timeout: Duration::from_secs(60),
            hold: Duration::ZERO,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            procs: 1,
            worker_binary: None,
        }
    }
}

/// Where a run is, for a progress bar. Called from the coordinating thread only.
pub trait Progress {
    /// A stage begins: `what` ("connect", "join", "views", ...) counts up to `total`.
    fn stage(&self, what: &str, total: u64);
    /// How far the current stage is.
    fn set(&self, done: u64);
    /// The run is over: clear the bar before the report is printed.
    fn finish(&self);
}

/// No progress shown.
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _: &str, _: u64) {}
    fn set(&self, _: u64) {}
    fn finish(&self) {}
}
