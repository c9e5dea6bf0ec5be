//! The workload: M users × K tabs and a few anonymous viewers doing seeded operations over the
//! real protocol, each through its own [`client`](super::client) task.
//!
//! A *tab* keeps a `tab_id` (as a browser tab keeps it in `sessionStorage`) and opens sockets
//! to nodes a load balancer would pick (running, not stopped). Operations, chosen at random
//! every few tens of milliseconds while the runner does not hold the workload paused:
//!
//! | op | what the tab does | what it exercises |
//! |---|---|---|
//! | `open` | a new socket with its `tab_id`, joins one or two topics | grants, `reject`, `wait`, takeovers of other tabs, a resume if its old socket still lives |
//! | `drop` | destroys its socket with no close frame, and most of the time resumes at once on a new one | P2 |
//! | `close` | a clean WebSocket close | clean ends |
//! | `leave` / `join` | `phx_leave` a topic / join another on the same socket | the global scope shared by one tab |
//! | `push` / `update` | a broadcast / `presence:update` | diffs of updated metas |
//! | `new_tab` | forgets its `tab_id` and opens with a fresh one | takeover, `already_joined`, waits |
//! | `stall` | stops reading; dropped `2 × ping_ms + 1.5 s` later | P3 for a client that stops reading |
//!
//! Anonymous viewers join the rooms and reopen at once when their socket ends.

use crate::chaos::client::{self, ClientSpec, Cmd};
use crate::chaos::history::{Event, JoinKind, Recorder, ViewSnap};
use crate::chaos::rng::Rng;
use crate::cluster::{unix_ms, SECRET};
use crate::load::mint_token;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The topics every user may join (see the policies in [`policies`]).
pub const TOPICS: [&str; 8] = ["room:1", "room:2", "call:1", "queue:1", "line:1", "pair:1", "game:1", "game:2"];
/// Topics anonymous viewers watch.
const WATCHED: [&str; 3] = ["room:1", "room:2", "game:1"];

/// The `[[policy]]` bodies of a chaos cluster: `reject`, `wait`, `wait` with `reserve_ms`,
/// `max_slots = 2`, a global scope, a `reserve_ms`, and takeover for the rest; admins are
/// exempt everywhere.
pub fn policies() -> Vec<String> {
    [
        "topic = \"call:*\"\non_conflict = \"reject\"",
        "topic = \"queue:*\"\non_conflict = \"wait\"\nwait_ms = 1500",
        "topic = \"line:*\"\non_conflict = \"wait\"\nwait_ms = 1500\nreserve_ms = 1000",
        "topic = \"pair:*\"\nmax_slots = 2",
        "topic = \"game:*\"\nscope = \"global\"",
        "topic = \"room:*\"\nreserve_ms = 1000",
        "topic = \"*\"",
    ]
    .iter()
    .map(|p| format!("{p}\nexempt_roles = [\"admin\"]"))
    .collect()
}

/// One node as the workload sees it: where it is and whether a load balancer would send a
/// client there (the runner keeps it up to date).
pub struct NodeSlot {
    /// Its name.
    pub name: String,
    /// Its `http_addr`.
    pub addr: SocketAddr,
    /// Running and not stopped.
    pub available: AtomicBool,
}

/// What the runner tells the workload.
pub(crate) enum Control {
    /// Stop starting operations (scheduled drops of stalled sockets still happen).
    Pause,
    /// Start again.
    Resume,
    /// Every live client's views.
    Snapshot(oneshot::Sender<Vec<ViewSnap>>),
    /// Close every socket cleanly and end.
    Stop(oneshot::Sender<()>),
}

/// The size of the workload.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Users.
    pub users: usize,
    /// Tabs per user.
    pub tabs: usize,
    /// Anonymous viewers.
    pub anonymous: usize,
    /// Every this many users, one is an admin (0: none).
    pub admin_every: usize,
    /// Operations per second, on average.
    pub ops_per_second: f64,
    /// `[server] ping_ms` of the nodes (a stalled socket is dropped after twice this + 1.5 s).
    pub ping_ms: u64,
}

struct Socket {
    id: u32,
    tx: mpsc::UnboundedSender<Cmd>,
    alive: Arc<AtomicBool>,
    stalled: bool,
    /// `(join, topic, left)` of its joins.
    joins: Vec<(u32, String, bool)>,
}

impl Socket {
    fn live(&self) -> bool {
        self.alive.load(Ordering::SeqCst) && !self.stalled
    }
}

struct Tab {
    user: String,
    role: &'static str,
    tab_id: String,
    generation: u32,
    sockets: Vec<Socket>,
    /// The topics of its last socket, for a resume.
    last_topics: Vec<String>,
}

pub(crate) struct Workload {
    spec: WorkloadSpec,
    rng: Rng,
    nodes: Arc<Vec<NodeSlot>>,
    recorder: Arc<Recorder>,
    tabs: Vec<Tab>,
    watchers: Vec<Option<Socket>>,
    next_socket: u32,
    next_join: u32,
    /// Counts of operations by name.
    pub ops: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
}

impl Workload {
    pub(crate) fn new(spec: WorkloadSpec, seed: u64, nodes: Arc<Vec<NodeSlot>>, recorder: Arc<Recorder>) -> Workload {
        let mut tabs = Vec::new();
        for u in 0..spec.users {
            let admin = spec.admin_every > 0 && u % spec.admin_every == spec.admin_every - 1;
            for k in 0..spec.tabs {
                tabs.push(Tab {
                    user: format!("u{u}"),
                    role: if admin { "admin" } else { "user" },
                    tab_id: format!("u{u}-t{k}-g0"),
                    generation: 0,
                    sockets: Vec::new(),
                    last_topics: Vec::new(),
                });
            }
        }
        let watchers = (0..spec.anonymous).map(|_| None).collect();
        Workload {
            spec,
            rng: Rng::new(seed ^ 0x00C1_1E27),
            nodes,
            recorder,
            tabs,
            watchers,
            next_socket: 0,
            next_join: 0,
            ops: Arc::default(),
        }
    }

    /// Run until [`Control::Stop`].
    pub(crate) async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        let mut paused = false;
        let mean_gap_ms = (1000.0 / self.spec.ops_per_second.max(0.1)) as u64;
        loop {
            if !paused {
                self.keep_watchers();
            }
            let gap = Duration::from_millis(self.rng.range(mean_gap_ms / 2, mean_gap_ms * 3 / 2 + 1));
            tokio::select! {
                _ = tokio::time::sleep(gap) => {
                    if !paused {
                        self.step();
                    }
                }
                c = control.recv() => match c {
                    Some(Control::Pause) => paused = true,
                    Some(Control::Resume) => paused = false,
                    Some(Control::Snapshot(tx)) => {
                        let _ = tx.send(self.snapshot().await);
                    }
                    Some(Control::Stop(done)) => {
                        self.stop().await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
            }
        }
    }

    fn count(&self, op: &str) {
        *self.ops.lock().unwrap_or_else(|e| e.into_inner()).entry(op.to_owned()).or_default() += 1;
    }

    fn pick_node(&mut self) -> Option<usize> {
        let up: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].available.load(Ordering::SeqCst)).collect();
        (!up.is_empty()).then(|| up[self.rng.below(up.len())])
    }

    /// Start a client on a node a load balancer would pick.
    fn open_socket(&mut self, user: Option<(&str, &str)>, tab: Option<String>) -> Option<Socket> {
        let node = self.pick_node()?;
        let id = self.next_socket;
        self.next_socket += 1;
        let exp = unix_ms() / 1000 + 24 * 3600;
        let (tx, rx) = mpsc::unbounded_channel();
        let alive = Arc::new(AtomicBool::new(true));
        let spec = ClientSpec {
            socket: id,
            node: self.nodes[node].name.clone(),
            addr: self.nodes[node].addr,
            token: user.map(|(u, role)| mint_token(SECRET, u, role, exp)),
            user: user.map(|(u, _)| u.to_owned()),
            role: user.map_or("anonymous", |(_, r)| r).to_owned(),
            tab,
        };
        tokio::spawn(client::run(spec, self.recorder.clone(), rx, alive.clone()));
        Some(Socket { id, tx, alive, stalled: false, joins: Vec::new() })
    }

    fn join(&mut self, socket: &mut Socket, topic: &str, tab: Option<String>, kind: JoinKind) {
        let join = self.next_join;
        self.next_join += 1;
        socket.joins.push((join, topic.to_owned(), false));
        let _ = socket.tx.send(Cmd::Join { join, topic: topic.to_owned(), tab, kind });
    }

    fn keep_watchers(&mut self) {
        for i in 0..self.watchers.len() {
            if self.watchers[i].as_ref().is_some_and(|s| s.alive.load(Ordering::SeqCst)) {
                continue;
            }
            let Some(mut socket) = self.open_socket(None, None) else { continue };
            for topic in WATCHED {
                self.join(&mut socket, topic, None, JoinKind::Anonymous);
            }
            self.watchers[i] = Some(socket);
        }
    }

    fn step(&mut self) {
        let t = self.rng.below(self.tabs.len());
        for tab in &mut self.tabs {
            tab.sockets.retain(|s| s.alive.load(Ordering::SeqCst));
        }
        let live: Vec<usize> = (0..self.tabs[t].sockets.len()).filter(|&i| self.tabs[t].sockets[i].live()).collect();
        let roll = self.rng.below(100);
        if live.is_empty() || roll < 12 {
            // Open: a resume when the tab has a socket still open (it closes that one).
            return self.open_tab(t, false);
        }
        let s = live[self.rng.below(live.len())];
        match roll {
            12..=26 => {
                let id = self.tabs[t].sockets[s].id;
                self.count("drop");
                self.recorder.record(Event::Op { at: unix_ms(), what: "drop".into(), socket: id });
                let _ = self.tabs[t].sockets[s].tx.send(Cmd::Drop);
                self.tabs[t].last_topics = live_topics(&self.tabs[t].sockets[s]);
                self.tabs[t].sockets[s].stalled = true; // not live for further ops
                if self.rng.chance(0.75) {
                    self.open_tab(t, true);
                }
            }
            27..=34 => self.simple_op(t, s, "close", |_| Cmd::Close),
            35..=44 => {
                let open: Vec<(u32, String)> =
                    self.tabs[t].sockets[s].joins.iter().filter(|j| !j.2).map(|j| (j.0, j.1.clone())).collect();
                if let Some((join, _)) =
                    open.get(self.rng.below(open.len().max(1))).cloned().filter(|_| !open.is_empty())
                {
                    self.count("leave");
                    let id = self.tabs[t].sockets[s].id;
                    self.recorder.record(Event::Op { at: unix_ms(), what: "leave".into(), socket: id });
                    for j in &mut self.tabs[t].sockets[s].joins {
                        if j.0 == join {
                            j.2 = true;
                        }
                    }
                    let _ = self.tabs[t].sockets[s].tx.send(Cmd::Leave { join });
                }
            }
            45..=56 => {
                let have = live_topics(&self.tabs[t].sockets[s]);
                let free: Vec<&str> = TOPICS.iter().copied().filter(|tp| !have.iter().any(|h| h == tp)).collect();
                if !free.is_empty() {
                    let topic = free[self.rng.below(free.len())];
                    self.count("join");
                    let id = self.tabs[t].sockets[s].id;
                    self.recorder.record(Event::Op { at: unix_ms(), what: format!("join {topic}"), socket: id });
                    let tab = Some(self.tabs[t].tab_id.clone());
                    let mut socket = std::mem::replace(&mut self.tabs[t].sockets[s], dummy());
                    self.join(&mut socket, topic, tab, JoinKind::SameSocket);
                    self.tabs[t].sockets[s] = socket;
                }
            }
            57..=68 => {
                let joins: Vec<u32> = self.tabs[t].sockets[s].joins.iter().filter(|j| !j.2).map(|j| j.0).collect();
                if !joins.is_empty() {
                    let join = joins[self.rng.below(joins.len())];
                    self.simple_op(t, s, "push", move |_| Cmd::Push { join });
                }
            }
            69..=80 => {
                let joins: Vec<u32> = self.tabs[t].sockets[s].joins.iter().filter(|j| !j.2).map(|j| j.0).collect();
                if !joins.is_empty() {
                    let join = joins[self.rng.below(joins.len())];
                    self.simple_op(t, s, "update", move |_| Cmd::Update { join });
                }
            }
            81..=94 => {
                let tab = &mut self.tabs[t];
                tab.generation += 1;
                tab.tab_id = format!(
                    "{}-g{}",
                    tab.tab_id.rsplit_once("-g").map_or(tab.tab_id.as_str(), |(a, _)| a),
                    tab.generation
                );
                self.count("new_tab");
                self.open_tab(t, false);
            }
            _ => {
                let id = self.tabs[t].sockets[s].id;
                self.count("stall");
                self.recorder.record(Event::Op { at: unix_ms(), what: "stall".into(), socket: id });
                let tx = self.tabs[t].sockets[s].tx.clone();
                let _ = tx.send(Cmd::Stall);
                self.tabs[t].sockets[s].stalled = true;
                let after = Duration::from_millis(2 * self.spec.ping_ms + 1500);
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tx.send(Cmd::Drop);
                });
            }
        }
    }

    fn simple_op(&mut self, t: usize, s: usize, what: &str, cmd: impl FnOnce(&Socket) -> Cmd) {
        let socket = &self.tabs[t].sockets[s];
        self.recorder.record(Event::Op { at: unix_ms(), what: what.into(), socket: socket.id });
        let _ = socket.tx.send(cmd(socket));
        self.count(what);
    }

    /// A new socket for tab `t` with its `tab_id`, joining its last topics on a resume and
    /// one or two random topics otherwise.
    fn open_tab(&mut self, t: usize, resume: bool) {
        let (user, role, tab_id) = (self.tabs[t].user.clone(), self.tabs[t].role, self.tabs[t].tab_id.clone());
        let Some(mut socket) = self.open_socket(Some((&user, role)), Some(tab_id.clone())) else { return };
        self.count(if resume { "resume" } else { "open" });
        self.recorder.record(Event::Op {
            at: unix_ms(),
            what: if resume { "resume" } else { "open" }.into(),
            socket: socket.id,
        });
        let topics: Vec<String> = if resume && !self.tabs[t].last_topics.is_empty() {
            self.tabs[t].last_topics.clone()
        } else {
            let mut all: Vec<&str> = TOPICS.to_vec();
            self.rng.shuffle(&mut all);
            all.into_iter().take(1 + self.rng.below(2)).map(str::to_owned).collect()
        };
        let kind = if resume { JoinKind::Resume } else { JoinKind::Open };
        for topic in &topics {
            self.join(&mut socket, topic, Some(tab_id.clone()), kind);
        }
        self.tabs[t].last_topics = topics;
        self.tabs[t].sockets.push(socket);
    }

    fn all_sockets(&self) -> impl Iterator<Item = &Socket> {
        self.tabs.iter().flat_map(|t| t.sockets.iter()).chain(self.watchers.iter().flatten())
    }

    async fn snapshot(&self) -> Vec<ViewSnap> {
        let mut waits = Vec::new();
        for s in self.all_sockets().filter(|s| s.alive.load(Ordering::SeqCst)) {
            let (tx, rx) = oneshot::channel();
            if s.tx.send(Cmd::Snapshot(tx)).is_ok() {
                waits.push(rx);
            }
        }
        let mut views = Vec::new();
        for rx in waits {
            if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(5), rx).await {
                views.extend(v);
            }
        }
        views.sort_by_key(|v| v.join);
        views
    }

    async fn stop(&mut self) {
        for s in self.all_sockets() {
            let _ = s.tx.send(Cmd::Close);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.all_sockets().any(|s| s.alive.load(Ordering::SeqCst)) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn live_topics(s: &Socket) -> Vec<String> {
    s.joins.iter().filter(|j| !j.2).map(|j| j.1.clone()).collect()
}

/// A placeholder while a socket is borrowed out of its tab.
fn dummy() -> Socket {
    let (tx, _) = mpsc::unbounded_channel();
    Socket { id: u32::MAX, tx, alive: Arc::new(AtomicBool::new(false)), stalled: true, joins: Vec::new() }
}
