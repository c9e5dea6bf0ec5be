//! The coordinator: starts (or finds) the node, spawns one client task per socket, moves
//! them through the stages, waits for each stage's observable outcome (every socket open,
//! every join answered, every view equal to the node's list) with a deadline, and turns the
//! board into a [`Report`]. It runs on the calling thread; the clients run on a tokio
//! runtime of their own.

use crate::cluster::{Cluster, ClusterSpec, API_KEY, SECRET};
use crate::http::percent_encode;
use crate::load::board::{Board, Membership, SocketState};
use crate::load::client::{self, ClientEnv, ClientSpec, Stage, SHUTDOWN_TIMEOUT};
use crate::load::node_api::NodeApi;
use crate::load::plan::Plan;
use crate::load::protocol::{for_each_meta, mint_token};
use crate::load::report::{
    AllocatorReport, CloseReport, ConnectReport, Dist, JoinReport, NodeReport, Report, ScenarioReport, ServerReport,
    TrafficReport, ViewsReport,
};
use crate::load::view::{key_id, meta_id};
use crate::load::worker::{WorkerSetup, Workers};
use crate::load::{system, LoadError, Progress, Scenario, Target};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Semaphore};

/// How often a wait looks at the board again.
const POLL: Duration = Duration::from_millis(20);
/// How long the closing sockets get to send their closes (beyond `--close-rate`'s spread).
const CLOSES_TIMEOUT: Duration = Duration::from_secs(30);
/// How many unsettled topics a report describes.
const UNSETTLED_SHOWN: usize = 5;
/// How many of a started node's last log lines a report that found problems shows.
const NODE_LOG_LINES: usize = 20;

/// Run `scenario` and report what it measured. Errors are runs that could not be made; a
/// run that found problems returns a report whose `problems` list them.
pub fn run(scenario: &Scenario, progress: &dyn Progress) -> Result<Report, LoadError> {
    let plan = Plan::new(scenario)?;
    let (soft, hard) = system::raise_nofile_limit()
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE))
        .map_err(|e| LoadError::BadScenario(format!("cannot read the descriptor limit: {e}")))?;
    let needed = plan.sockets.len();
    if needed as u64 + 64 > soft {
        return Err(LoadError::TooManySockets { needed, soft, hard });
    }
    let load_at_start = system::load_average();
    let node = NodeHandle::start(scenario)?;
    let sources = system::source_addrs(needed, system::ephemeral_ports(), scenario.source_addrs);
    if !sources.is_empty() && !node.addr.ip().is_loopback() {
        return Err(LoadError::BadScenario(format!(
            "{needed} sockets need {} source addresses, which only works on loopback; the node is at {}",
            sources.len(),
            node.addr
        )));
    }
    let board = Arc::new(Board::new(needed, plan.memberships.len()));
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + 24 * 3600;
    let shared_payload = join_payload(scenario, None);
    // Each closing socket's place among them (for `--close-rate`).
    let close_ranks: Vec<usize> = plan
        .sockets
        .iter()
        .scan(0, |n, s| {
            *n += usize::from(s.closes);
            Some(*n - usize::from(s.closes))
        })
        .collect();
    let specs: Vec<ClientSpec> = plan
        .sockets
        .iter()
        .enumerate()
        .map(|(i, s)| ClientSpec {
            socket: i,
            token: mint_token(&node.secret, &s.user, &scenario.role, exp),
            join_payload: if scenario.tab_ids { join_payload(scenario, Some(i)) } else { shared_payload.clone() },
            source: (!sources.is_empty()).then(|| sources[i % sources.len()]),
            topics: s.memberships.iter().map(|&m| (m, topic_name(&plan, m))).collect(),
            watcher: s.watcher,
            closes: s.closes,
            join_offset: scenario.join_rate.map_or(Duration::ZERO, |r| Duration::from_secs_f64(s.join_rank as f64 / r)),
            close_offset: match (s.closes, scenario.close_rate) {
                (true, Some(r)) => Duration::from_secs_f64(close_ranks[i] as f64 / r),
                _ => Duration::ZERO,
            },
        })
        .collect();
    let clients = Clients::start(scenario, specs, node.addr, board.clone())?;
    let api = NodeApi::new(node.addr, Some(node.api_key.clone())).map_err(LoadError::Runtime)?;
    let mut run = Coordinator {
        api: std::cell::RefCell::new(api),
        scenario,
        key_ids: plan.sockets.iter().map(|s| key_id(&s.user)).collect(),
        plan,
        board,
        node,
        progress,
        clients,
    };
    let server_base = run.node.rss();
    let allocator_base = run.allocator();

    let connect = run.connect_stage();
    let server_connected = run.node.rss();
    let allocator_connected = run.allocator();
    let open_connected = run.open_sockets();

    let watchers: Vec<usize> = run.memberships_where(|s| s.watcher);
    let watchers_join = if watchers.is_empty() {
        None
    } else {
        let (since, join) = run.join_stage(true, &watchers);
        let watched: Vec<usize> = (0..run.scenario.watched_rooms.unwrap_or(run.plan.topics.len())).collect();
        run.progress.stage("watchers' views", watchers.len() as u64);
        let _ = run.settle(&watched, since, scenario.settle_timeout)?;
        Some(join)
    };

    let members: Vec<usize> = run.memberships_where(|s| !s.watcher);
    let member_sockets: Vec<usize> = (0..run.plan.sockets.len()).filter(|&i| !run.plan.sockets[i].watcher).collect();
    let before = run.traffic_snapshot();
    let cpu_before = (run.node.cpu(), run.clients.cpu());
    let (since, join) = run.join_stage(false, &members);
    let all_topics: Vec<usize> = (0..run.plan.topics.len()).collect();
    run.progress.stage("views", members.len() as u64);
    let (views, lists) = run.settle(&all_topics, since, scenario.settle_timeout)?;
    let traffic = run.traffic_since(&before, &member_sockets, &members, Some(&lists));
    let server_joined = run.node.rss();
    let allocator_joined = run.allocator();
    let (open_joined, live_joined) = (run.open_sockets(), run.live_joins());
    let cpu_after = (run.node.cpu(), run.clients.cpu());
    let spent = |a: Option<f64>, b: Option<f64>| Some(a? - b?);

    let (mut server_after_close, mut allocator_after_close) = (None, None);
    let close = if scenario.close_fraction > 0.0 {
        let closers: Vec<usize> = (0..run.plan.sockets.len())
            .filter(|&i| run.plan.sockets[i].closes && run.board.sockets[i].state() == SocketState::Open)
            .collect();
        let before = run.traffic_snapshot();
        let stage_us = run.board.now_us();
        run.clients.stage(Stage::Close { at: tokio::time::Instant::now() });
        // The views are checked, and "exact after" counts, only once every chosen socket has
        // sent its close and no longer counts as live: before that the node's list and the
        // views still agree on the room as it was, which would pass for settled.
        run.progress.stage("closes sent", closers.len() as u64);
        let rate_time =
            scenario.close_rate.map_or(Duration::ZERO, |r| Duration::from_secs_f64(closers.len() as f64 / r));
        let (sent_us, unsent) = run.wait_for_closes(&closers, Instant::now() + CLOSES_TIMEOUT + rate_time);
        let since = sent_us.max(stage_us);
        run.progress.stage("views after close", 0);
        let (views, _) = run.settle(&all_topics, since, scenario.settle_timeout)?;
        let remaining: Vec<usize> = member_sockets.iter().copied().filter(|&i| !run.plan.sockets[i].closes).collect();
        let remaining_memberships: Vec<usize> =
            members.iter().copied().filter(|&m| !run.plan.sockets[run.plan.memberships[m].socket].closes).collect();
        let traffic = run.traffic_since(&before, &remaining, &remaining_memberships, None);
        server_after_close = run.node.rss();
        allocator_after_close = run.allocator();
        Some(CloseReport {
            closed: closers.len(),
            seconds_to_send: since.saturating_sub(stage_us) as f64 / 1e6,
            unsent,
            mode: scenario.close_mode,
            views,
            traffic,
        })
    } else {
        None
    };

    if !scenario.hold.is_zero() {
        run.progress.stage("holding", scenario.hold.as_secs());
        std::thread::sleep(scenario.hold);
    }

    // Collect before shutdown: the closes this client starts now are not the server's.
    let closes_by_server = run.closes_by_server();
    let events = run.board.tallies();
    let client_peak_rss = run.clients.peak_rss();
    run.progress.stage("closing", 0);
    run.clients.shutdown();
    let node_log = run.node.log_tail(NODE_LOG_LINES);
    let node_exited = run.node.stop();
    run.progress.finish();

    let per = |a: Option<u64>, b: Option<u64>, n: f64| match (a, b) {
        (Some(a), Some(b)) if n > 0.0 => Some((a as f64 - b as f64) / n),
        _ => None,
    };
    let server = ServerReport {
        rss_base: server_base,
        rss_connected: server_connected,
        rss_joined: server_joined,
        rss_after_close: server_after_close,
        per_socket_connected: per(server_connected, server_base, open_connected as f64),
        per_socket_joined: per(server_joined, server_base, open_joined as f64),
        per_join: per(server_joined, server_connected, live_joined as f64),
        cpu_join_seconds: spent(cpu_after.0, cpu_before.0),
        allocator_base,
        allocator_connected,
        allocator_joined,
        allocator_after_close,
    };
    let board = &run.board;
    let sum = |f: &dyn Fn(usize) -> u64, n: usize| (0..n).map(f).sum::<u64>();
    let mut report = Report {
        scenario: ScenarioReport {
            sockets: scenario.sockets,
            watchers: run.plan.watcher_sockets,
            rooms: run.plan.topics.len(),
            room_size: scenario.room_size,
            topics_per_socket: scenario.topics_per_socket,
            memberships: run.plan.memberships.len(),
            close_fraction: scenario.close_fraction,
            close_mode: scenario.close_mode,
            join_rate: scenario.join_rate,
            source_addrs: sources.len(),
            threads: scenario.threads,
            procs: scenario.procs.max(1),
        },
        node: NodeReport {
            url: format!("ws://{}/socket/websocket", run.node.addr),
            pid: run.node.pid,
            started: run.node.binary.clone(),
        },
        connect,
        watchers_join,
        join,
        views,
        traffic,
        close,
        server,
        closes_by_server,
        events,
        duplicate_joins: sum(&|m| board.memberships[m].duplicate_joins.load(Relaxed) as u64, board.memberships.len()),
        unknown_leaves: sum(&|m| board.memberships[m].unknown_leaves.load(Relaxed) as u64, board.memberships.len()),
        pings_answered: sum(&|s| board.sockets[s].pings.load(Relaxed), board.sockets.len()),
        client_peak_rss,
        client_cpu_join_seconds: spent(cpu_after.1, cpu_before.1),
        load_average: (load_at_start, system::load_average()),
        client_nofile_limit: soft,
        problems: Vec::new(),
        node_log_tail: Vec::new(),
    };
    report.problems = report.find_problems();
    if let Some(status) = node_exited {
        report.problems.push(format!("the node exited during the run ({status})"));
    }
    if !report.problems.is_empty() {
        report.node_log_tail = node_log;
    }
    Ok(report)
}

/// The topic of membership `m`.
fn topic_name(plan: &Plan, m: usize) -> Arc<str> {
    plan.topics[plan.memberships[m].topic].as_str().into()
}

/// The `phx_join` payload: the meta, and a `tab_id` for `socket` when asked.
fn join_payload(scenario: &Scenario, socket: Option<usize>) -> Arc<str> {
    let mut parts = Vec::new();
    if let Some(i) = socket {
        parts.push(format!("\"tab_id\":\"t{i}\""));
    }
    if let Some(meta) = &scenario.meta {
        parts.push(format!("\"meta\":{meta}"));
    }
    format!("{{{}}}", parts.join(",")).into()
}

/// The node under load.
struct NodeHandle {
    addr: SocketAddr,
    secret: String,
    api_key: String,
    pid: Option<u32>,
    /// The node this run started, stopped at the end.
    cluster: Option<Cluster>,
    binary: Option<String>,
}

impl NodeHandle {
    fn start(scenario: &Scenario) -> Result<NodeHandle, LoadError> {
        let start = match &scenario.target {
            Target::Url(remote) => {
                return Ok(NodeHandle {
                    addr: remote.addr,
                    secret: remote.secret.clone(),
                    api_key: remote.api_key.clone(),
                    pid: remote.pid,
                    cluster: None,
                    binary: None,
                })
            }
            Target::Start(start) => start,
        };
        if !start.binary.is_file() {
            return Err(LoadError::NodeStart(format!(
                "no roster binary at {} (build it with `cargo build --release -p roster-server`, or pass --server-bin)",
                start.binary.display()
            )));
        }
        // The product's presence defaults, not the test harness's faster ones.
        let mut spec = ClusterSpec::new(1)
            .timings(start.timings)
            .records(false)
            .presence_key("diff_ms = 20")
            .presence_key("broadcast_ms = 5");
        let topics_needed = scenario.topics_per_socket.max(1);
        if topics_needed > 100 && !start.server_keys.iter().any(|k| k.trim_start().starts_with("max_topics_per_socket"))
        {
            spec = spec.server_key(&format!("max_topics_per_socket = {topics_needed}"));
        }
        for line in &start.server_keys {
            spec = spec.server_key(line);
        }
        for line in &start.presence_keys {
            spec = spec.presence_key(line);
        }
        for body in &start.policies {
            spec = spec.policy(body);
        }
        let binary = start.binary.clone();
        let cluster = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| spec.start(&binary))).map_err(|p| {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            LoadError::NodeStart(msg.unwrap_or_else(|| "the node did not get ready".to_owned()))
        })?;
        Ok(NodeHandle {
            addr: cluster.http_addr(0),
            secret: SECRET.to_owned(),
            api_key: API_KEY.to_owned(),
            pid: cluster.pid(0),
            cluster: Some(cluster),
            binary: Some(start.binary.display().to_string()),
        })
    }

    fn rss(&self) -> Option<u64> {
        self.pid.and_then(|pid| system::status_bytes(pid, "VmRSS"))
    }

    /// The last `n` lines of a started node's output.
    fn log_tail(&self, n: usize) -> Vec<String> {
        let Some(cluster) = &self.cluster else { return Vec::new() };
        let log = cluster.log(0);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect()
    }

    fn cpu(&self) -> Option<f64> {
        self.pid.and_then(system::cpu_seconds)
    }

    /// Stop a node this run started (SIGTERM, then SIGKILL on drop). Returns how it ended if
    /// it had exited by itself before.
    fn stop(&mut self) -> Option<String> {
        let mut cluster = self.cluster.take()?;
        let exited = cluster.exited(0).map(|s| s.to_string());
        if exited.is_none() {
            cluster.terminate(0, Duration::from_secs(10));
        }
        exited
    }
}

/// A node's list of one topic, reduced to what views are compared with.
#[derive(Clone, Debug, Default)]
struct NodeList {
    digest: u64,
    key_digest: u64,
    keys: usize,
    metas: usize,
    bytes: usize,
}

struct Coordinator<'a> {
    /// `GET /presence` and `/metrics`, over one kept-alive connection.
    api: std::cell::RefCell<NodeApi>,
    scenario: &'a Scenario,
    plan: Plan,
    /// `key_id` of each socket's user.
    key_ids: Vec<u64>,
    board: Arc<Board>,
    node: NodeHandle,
    progress: &'a dyn Progress,
    clients: Clients,
}

/// Where the client tasks run: on a runtime in this process, or in worker processes that
/// mirror their boards onto this one's.
enum Clients {
    Here { runtime: tokio::runtime::Runtime, handles: Vec<tokio::task::JoinHandle<()>>, stages: watch::Sender<Stage> },
    Workers(Option<Workers>),
}

impl Clients {
    fn start(
        scenario: &Scenario,
        specs: Vec<ClientSpec>,
        addr: SocketAddr,
        board: Arc<Board>,
    ) -> Result<Clients, LoadError> {
        let procs = scenario.procs.max(1);
        if procs > 1 {
            let Some(binary) = &scenario.worker_binary else {
                return Err(LoadError::BadScenario(
                    "procs > 1 needs the roster-load executable (worker_binary)".into(),
                ));
            };
            let setup = WorkerSetup {
                addr,
                heartbeat: scenario.heartbeat,
                close_mode: scenario.close_mode,
                connect_concurrency: scenario.connect_concurrency.div_ceil(procs).max(1),
                threads: (scenario.threads / procs).max(1),
                sockets: board.sockets.len(),
                memberships: board.memberships.len(),
                origin_unix_us: WorkerSetup::origin_of(&board),
                clients: specs,
            };
            return Ok(Clients::Workers(Some(Workers::start(binary, procs, setup, board)?)));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(scenario.threads.max(1))
            .enable_all()
            .build()
            .map_err(LoadError::Runtime)?;
        let env = Arc::new(ClientEnv {
            board,
            addr,
            heartbeat: scenario.heartbeat,
            close_mode: scenario.close_mode,
            connect_gate: Semaphore::new(scenario.connect_concurrency.max(1)),
        });
        let (stages, stage_rx) = watch::channel(Stage::Connect);
        let handles =
            specs.into_iter().map(|spec| runtime.spawn(client::run(spec, env.clone(), stage_rx.clone()))).collect();
        Ok(Clients::Here { runtime, handles, stages })
    }

    fn stage(&mut self, stage: Stage) {
        match self {
            Clients::Here { stages, .. } => {
                stages.send_replace(stage);
            }
            Clients::Workers(Some(w)) => w.stage(stage),
            Clients::Workers(None) => {}
        }
    }

    /// The processes the clients run in.
    fn pids(&self) -> Vec<u32> {
        match self {
            Clients::Here { .. } => vec![std::process::id()],
            Clients::Workers(w) => std::iter::once(std::process::id()).chain(w.iter().flat_map(|w| w.pids())).collect(),
        }
    }

    /// CPU seconds of this process and the workers.
    fn cpu(&self) -> Option<f64> {
        self.pids().into_iter().map(system::cpu_seconds).sum()
    }

    /// Peak RSS of this process and the workers, summed.
    fn peak_rss(&self) -> Option<u64> {
        self.pids().into_iter().map(|pid| system::status_bytes(pid, "VmHWM")).sum()
    }

    /// Every socket closes (at most [`SHUTDOWN_TIMEOUT`]).
    fn shutdown(&mut self) {
        match std::mem::replace(self, Clients::Workers(None)) {
            Clients::Here { runtime, handles, stages } => {
                stages.send_replace(Stage::Shutdown);
                runtime.block_on(async {
                    let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, futures_util::future::join_all(handles)).await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            }
            Clients::Workers(Some(w)) => w.shutdown(SHUTDOWN_TIMEOUT + Duration::from_secs(5)),
            Clients::Workers(None) => {}
        }
    }
}

/// Frames and bytes each socket and each membership had received at one instant.
struct TrafficSnapshot {
    frames: Vec<u64>,
    bytes: Vec<u64>,
    presence: Vec<u64>,
}

impl Coordinator<'_> {
    /// The node's allocator's figures from its `/metrics`, now; `None` when it shows none or
    /// does not answer (a node without them is not a problem of the run).
    fn allocator(&self) -> Option<AllocatorReport> {
        match self.api.borrow_mut().get("/metrics") {
            Ok((200, body)) => AllocatorReport::from_metrics(&body),
            _ => None,
        }
    }

    /// Sockets open now (the server may have closed some).
    fn open_sockets(&self) -> usize {
        self.board.sockets.iter().filter(|s| s.state() == SocketState::Open).count()
    }

    /// Joins live now.
    fn live_joins(&self) -> usize {
        self.board.memberships.iter().filter(|m| m.state() == Membership::Joined).count()
    }

    fn memberships_where(&self, keep: impl Fn(&crate::load::plan::SocketPlan) -> bool) -> Vec<usize> {
        (0..self.plan.memberships.len())
            .filter(|&m| keep(&self.plan.sockets[self.plan.memberships[m].socket]))
            .collect()
    }

    /// Wait until every socket is open or has failed (each connect has its own timeout).
    fn connect_stage(&self) -> ConnectReport {
        let n = self.plan.sockets.len();
        self.progress.stage("connect", n as u64);
        let start_us = self.board.now_us();
        loop {
            let done = self.board.sockets.iter().filter(|s| s.state() != SocketState::Connecting).count();
            self.progress.set(done as u64);
            if done == n {
                break;
            }
            std::thread::sleep(POLL);
        }
        let opened: Vec<u64> =
            self.board.sockets.iter().map(|s| s.opened_us.load(Relaxed)).filter(|&t| t > 0).collect();
        let seconds = opened.iter().max().map_or(0.0, |&t| t.saturating_sub(start_us) as f64 / 1e6);
        let mut sources: Vec<u32> = self
            .board
            .sockets
            .iter()
            .filter(|s| s.opened_us.load(Relaxed) > 0)
            .map(|s| s.source_ip.load(Relaxed))
            .collect();
        sources.sort_unstable();
        sources.dedup();
        ConnectReport {
            sockets: n,
            open: opened.len(),
            failed: n - opened.len(),
            seconds,
            per_second: if seconds > 0.0 { opened.len() as f64 / seconds } else { 0.0 },
            source_addresses_used: sources.len(),
        }
    }

    /// Start a join stage and wait until every join of `memberships` is answered, its socket
    /// ended, or the join timeout passed. Returns the stage's start (µs) and its figures.
    fn join_stage(&mut self, watchers: bool, memberships: &[usize]) -> (u64, JoinReport) {
        let label = if watchers { "watchers join" } else { "join" };
        self.progress.stage(label, memberships.len() as u64);
        let since = self.board.now_us();
        let at = tokio::time::Instant::from_std(Instant::now());
        self.clients.stage(if watchers { Stage::JoinWatchers { at } } else { Stage::JoinMembers { at } });
        let rate_time = self.scenario.join_rate.map_or(Duration::ZERO, |r| {
            Duration::from_secs_f64(memberships.len() as f64 / self.scenario.topics_per_socket.max(1) as f64 / r)
        });
        let deadline = Instant::now() + self.scenario.join_timeout + rate_time;
        loop {
            let answered = memberships.iter().filter(|&&m| self.answered(m)).count();
            self.progress.set(answered as u64);
            if answered == memberships.len() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
        (since, self.join_report(since, memberships))
    }

    fn answered(&self, m: usize) -> bool {
        let socket = self.board.sockets[self.plan.memberships[m].socket].state();
        let state = self.board.memberships[m].state();
        matches!(socket, SocketState::Failed | SocketState::Closed)
            || !matches!(state, Membership::Idle | Membership::Joining)
    }

    fn join_report(&self, since: u64, memberships: &[usize]) -> JoinReport {
        let (mut acked, mut refused, mut last, mut latencies) = (0, 0, 0, Vec::new());
        let mut last_sent = None;
        for &m in memberships {
            let cell = &self.board.memberships[m];
            let sent = cell.sent_us.load(Relaxed);
            if sent > 0 {
                last_sent = last_sent.max(Some(sent));
            }
            let replied = cell.replied_us.load(Relaxed);
            if cell.state() == Membership::Refused {
                refused += 1;
            } else if replied > 0 {
                acked += 1;
                last = last.max(replied);
                latencies.push(replied.saturating_sub(cell.sent_us.load(Relaxed)) as f64 / 1e3);
            }
        }
        let unanswered = memberships.len() - acked - refused;
        let seconds = (unanswered == 0 && acked > 0).then(|| last.saturating_sub(since) as f64 / 1e6);
        JoinReport {
            joins: memberships.len(),
            acked,
            refused,
            unanswered,
            seconds_to_all_acks: seconds,
            seconds_to_all_sent: last_sent.map(|sent| sent.saturating_sub(since) as f64 / 1e6),
            acks_per_second: seconds.filter(|&s| s > 0.0).map(|s| acked as f64 / s),
            latency_ms: Dist::of(latencies),
        }
    }

    /// Wait until every socket of `closers` has sent its close (or ended) and none of its
    /// memberships is live any more, or `deadline`. Returns when the last close was sent (µs)
    /// and how many never were.
    fn wait_for_closes(&self, closers: &[usize], deadline: Instant) -> (u64, usize) {
        let done = |i: usize| {
            let cell = &self.board.sockets[i];
            let sent = cell.close_sent_us.load(Relaxed) > 0 || cell.state() != SocketState::Open;
            sent && self.plan.sockets[i]
                .memberships
                .iter()
                .all(|&m| !matches!(self.board.memberships[m].state(), Membership::Joining | Membership::Joined))
        };
        loop {
            let pending = closers.iter().filter(|&&i| !done(i)).count();
            self.progress.set((closers.len() - pending) as u64);
            if pending == 0 || Instant::now() >= deadline {
                let last = closers.iter().map(|&i| self.board.sockets[i].close_sent_us.load(Relaxed)).max();
                return (last.unwrap_or(0), pending);
            }
            std::thread::sleep(POLL);
        }
    }

    /// The memberships of topic `t` the node should list now.
    fn live(&self, t: usize) -> Vec<usize> {
        self.plan.by_topic[t]
            .iter()
            .copied()
            .filter(|&m| self.board.memberships[m].state() == Membership::Joined)
            .collect()
    }

    fn fetch(&self, t: usize) -> Result<Result<NodeList, String>, LoadError> {
        let path = format!("/presence?topic={}", percent_encode(&self.plan.topics[t]));
        let got = self.api.borrow_mut().get(&path);
        let (status, body) = match got {
            Ok(r) => r,
            Err(e) => return Ok(Err(format!("the node did not answer GET /presence: {e}"))),
        };
        match status {
            200 => {}
            401 | 403 => return Err(LoadError::NodeApi(format!("HTTP {status} (is --api-key right?): {body}"))),
            _ => return Ok(Err(format!("GET /presence answered HTTP {status}: {body}"))),
        }
        let mut list = NodeList { bytes: body.len(), ..NodeList::default() };
        let mut last_key: Option<String> = None;
        let parsed = for_each_meta(&body, |key, phx_ref| {
            list.digest = list.digest.wrapping_add(meta_id(key, phx_ref));
            list.metas += 1;
            if last_key.as_deref() != Some(key) {
                list.keys += 1;
                list.key_digest = list.key_digest.wrapping_add(key_id(key));
                last_key = Some(key.to_owned());
            }
        });
        match parsed {
            Ok(()) => Ok(Ok(list)),
            Err(e) => Err(LoadError::NodeApi(format!("not a presence list ({e}): {}", &body[..body.len().min(200)]))),
        }
    }

    /// Whether topic `t` has settled: the node lists exactly the live users, one meta each
    /// (unless `check_keys` is off), and every live view equals that list.
    fn topic_settled(&self, live: &[usize], list: &NodeList) -> bool {
        let expected_keys =
            live.iter().fold(0u64, |d, &m| d.wrapping_add(self.key_ids[self.plan.memberships[m].socket]));
        let lists_the_live_users =
            list.keys == live.len() && list.metas == live.len() && list.key_digest == expected_keys;
        (lists_the_live_users || !self.scenario.check_keys)
            && live.iter().all(|&m| self.board.memberships[m].digest.load(Relaxed) == list.digest)
    }

    /// Whether every live view of a topic holds one meta per live join and all hold the same
    /// list: what a settled topic looks like from the client side alone.
    fn views_agree(&self, live: &[usize]) -> bool {
        let cells = live.iter().map(|&m| &self.board.memberships[m]);
        let sized = !self.scenario.check_keys || cells.clone().all(|c| c.size.load(Relaxed) as usize == live.len());
        let mut digests = cells.map(|c| c.digest.load(Relaxed));
        let first = digests.next();
        sized && digests.all(|d| Some(d) == first)
    }

    /// Wait until every topic of `topics` has settled (see [`Self::topic_settled`]), then
    /// confirm it with a second full read while no membership changed. A topic's list is
    /// read only once its live views agree with each other (reading a 10,000-entry list
    /// every poll would load the node being measured). Returns the report and the lists.
    fn settle(
        &self,
        topics: &[usize],
        since: u64,
        timeout: Duration,
    ) -> Result<(ViewsReport, BTreeMap<usize, NodeList>), LoadError> {
        let deadline = Instant::now() + timeout;
        let mut lists: BTreeMap<usize, NodeList> = BTreeMap::new();
        let mut errors: BTreeMap<usize, String> = BTreeMap::new();
        let mut pending: Vec<usize> = topics.to_vec();
        let mut confirming = false;
        let settled = loop {
            let generation = self.board.generation.load(Relaxed);
            let timed_out = Instant::now() >= deadline;
            let mut unsettled = Vec::new();
            for &t in &pending {
                let live = self.live(t);
                if !confirming && !timed_out && !self.views_agree(&live) {
                    unsettled.push(t);
                    continue;
                }
                match self.fetch(t)? {
                    Ok(list) => {
                        errors.remove(&t);
                        if !self.topic_settled(&live, &list) {
                            unsettled.push(t);
                        }
                        lists.insert(t, list);
                    }
                    Err(e) => {
                        errors.insert(t, e);
                        unsettled.push(t);
                    }
                }
            }
            self.progress.set(self.exact_views(topics, &lists).0 as u64);
            if unsettled.is_empty() {
                if confirming && self.board.generation.load(Relaxed) == generation {
                    break true;
                }
                if confirming && timed_out {
                    break false;
                }
                // Everything looked settled: read every list once more, expecting no change.
                confirming = true;
                pending = topics.to_vec();
                continue;
            }
            if timed_out {
                pending = unsettled;
                break false;
            }
            confirming = false;
            pending = unsettled;
            std::thread::sleep(POLL);
        };
        let (exact, checked) = self.exact_views(topics, &lists);
        let last_change = topics
            .iter()
            .flat_map(|&t| self.live(t))
            .map(|m| self.board.memberships[m].changed_us.load(Relaxed))
            .max()
            .unwrap_or(0);
        let unsettled = if settled {
            Vec::new()
        } else {
            pending.iter().take(UNSETTLED_SHOWN).map(|&t| self.describe(t, lists.get(&t), errors.get(&t))).collect()
        };
        let report = ViewsReport {
            checked,
            exact,
            seconds_until_exact: settled.then(|| last_change.saturating_sub(since) as f64 / 1e6),
            node_entries: topics.iter().filter_map(|t| lists.get(t)).map(|l| l.metas).sum(),
            unsettled,
        };
        Ok((report, lists))
    }

    /// `(views equal to their topic's last read list, live memberships)` over `topics`.
    fn exact_views(&self, topics: &[usize], lists: &BTreeMap<usize, NodeList>) -> (usize, usize) {
        let (mut exact, mut checked) = (0, 0);
        for &t in topics {
            let live = self.live(t);
            checked += live.len();
            if let Some(list) = lists.get(&t) {
                exact +=
                    live.iter().filter(|&&m| self.board.memberships[m].digest.load(Relaxed) == list.digest).count();
            }
        }
        (exact, checked)
    }

    fn describe(&self, t: usize, list: Option<&NodeList>, error: Option<&String>) -> String {
        let live = self.live(t);
        let sizes: Vec<u32> = live.iter().map(|&m| self.board.memberships[m].size.load(Relaxed)).collect();
        let (min, max) = (sizes.iter().min().copied().unwrap_or(0), sizes.iter().max().copied().unwrap_or(0));
        let node = match (list, error) {
            (_, Some(e)) => e.clone(),
            (Some(l), None) => {
                let exact =
                    live.iter().filter(|&&m| self.board.memberships[m].digest.load(Relaxed) == l.digest).count();
                format!("node lists {} keys / {} metas, {exact} views equal it", l.keys, l.metas)
            }
            (None, None) => "node list not read".to_owned(),
        };
        format!("{}: {} live joins; {node}; views hold {min}..{max} metas", self.plan.topics[t], live.len())
    }

    fn traffic_snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            frames: self.board.sockets.iter().map(|s| s.frames_in.load(Relaxed)).collect(),
            bytes: self.board.sockets.iter().map(|s| s.bytes_in.load(Relaxed)).collect(),
            presence: self
                .board
                .memberships
                .iter()
                .map(|m| m.state_bytes.load(Relaxed) + m.diff_bytes.load(Relaxed))
                .collect(),
        }
    }

    fn traffic_since(
        &self,
        before: &TrafficSnapshot,
        sockets: &[usize],
        memberships: &[usize],
        lists: Option<&BTreeMap<usize, NodeList>>,
    ) -> TrafficReport {
        let now = self.traffic_snapshot();
        let delta = |a: &[u64], b: &[u64], i: usize| a[i].saturating_sub(b[i]) as f64;
        let presence: Vec<f64> = memberships.iter().map(|&m| delta(&now.presence, &before.presence, m)).collect();
        let mut report = TrafficReport {
            frames_per_socket: Dist::of(sockets.iter().map(|&s| delta(&now.frames, &before.frames, s)).collect()),
            bytes_per_socket: Dist::of(sockets.iter().map(|&s| delta(&now.bytes, &before.bytes, s)).collect()),
            presence_bytes_per_membership: Dist::of(presence),
            ..TrafficReport::default()
        };
        if let Some(lists) = lists {
            let floors: Vec<f64> = memberships
                .iter()
                .filter_map(|&m| lists.get(&self.plan.memberships[m].topic))
                .map(|l| l.bytes as f64)
                .collect();
            if !floors.is_empty() {
                report.floor_bytes_per_membership = floors.iter().sum::<f64>() / floors.len() as f64;
                report.floor_ratio = (report.floor_bytes_per_membership > 0.0)
                    .then(|| report.presence_bytes_per_membership.mean / report.floor_bytes_per_membership);
            }
            let (bytes, metas) = lists.values().fold((0, 0), |(b, n), l| (b + l.bytes, n + l.metas));
            report.entry_bytes = (metas > 0).then(|| bytes as f64 / metas as f64);
        }
        report
    }

    fn closes_by_server(&self) -> BTreeMap<u16, u64> {
        let mut out = BTreeMap::new();
        for s in &self.board.sockets {
            let code = s.server_close.load(Relaxed);
            if code != 0 {
                *out.entry(code).or_insert(0) += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::view::View;

    #[test]
    fn join_payload_carries_meta_and_tab_id_when_asked() {
        let mut s = Scenario::default();
        assert_eq!(&*join_payload(&s, None), "{}");
        s.meta = Some(r#"{"name":"x"}"#.to_owned());
        assert_eq!(&*join_payload(&s, Some(7)), r#"{"tab_id":"t7","meta":{"name":"x"}}"#);
    }

    #[test]
    fn a_view_digest_and_a_list_digest_agree_on_the_same_metas() {
        let body = r#"{"u1":{"metas":[{"phx_ref":"a"},{"phx_ref":"b"}]},"u2":{"metas":[{"phx_ref":"c"}]}}"#;
        let mut ids = Vec::new();
        for_each_meta(body, |k, r| ids.push(meta_id(k, r))).unwrap();
        let mut view = View::default();
        view.sync_state(ids.clone());
        assert_eq!(view.digest(), View::digest_of(ids));
    }
}
