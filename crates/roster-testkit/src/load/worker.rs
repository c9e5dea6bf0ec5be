//! Worker processes (`--procs N`): the sockets spread over N child processes of `roster-load`
//! (`roster-load --worker`), each running the same client tasks on a runtime of its own, so
//! that one process's turn over its sockets is a fraction of the whole (a socket's client is
//! back to it sooner to answer its pings) and the operating system shares the cores between
//! them. The coordinator keeps the whole [`Board`], a mirror of the workers' boards.
//!
//! The conversation, one JSON value per line:
//!
//! ```text
//! coordinator → worker (stdin):  WorkerSetup, then StageWire … (end of input: shut down)
//! worker → coordinator (stdout): WorkerNews … then Done
//! ```
//!
//! A worker sends what changed on its board every [`PUBLISH`]: socket and membership cells as
//! records, tallies as increments. Times on every board count from the coordinator's start
//! (passed as wall-clock microseconds), so a join latency or a "views exact after" measured in
//! a worker means the same as one measured in the coordinator.

use crate::load::board::{Board, MembershipRecord, SocketRecord, SocketState};
use crate::load::client::{self, ClientEnv, ClientSpec, Stage};
use crate::load::{system, CloseMode, LoadError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Semaphore};

/// How often a worker sends what changed on its board.
const PUBLISH: Duration = Duration::from_millis(20);

/// What a worker needs to run its share of the sockets.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerSetup {
    pub addr: SocketAddr,
    pub heartbeat: Duration,
    pub close_mode: CloseMode,
    pub connect_concurrency: usize,
    pub threads: usize,
    /// The whole run's sockets and memberships (the board is indexed as the coordinator's).
    pub sockets: usize,
    pub memberships: usize,
    /// The coordinator's board start, in microseconds since the UNIX epoch.
    pub origin_unix_us: u64,
    pub clients: Vec<ClientSpec>,
}

/// A stage, as the coordinator sends it: join stages carry their start in µs on the board.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum StageWire {
    Connect,
    JoinWatchers(u64),
    JoinMembers(u64),
    Close(u64),
    Shutdown,
}

/// What a worker tells the coordinator.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum WorkerNews {
    Socket(usize, SocketRecord),
    Membership(usize, MembershipRecord),
    /// A tally grew by this much.
    Tally(String, u64),
    /// Every socket of the worker has ended; nothing follows.
    Done,
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

impl StageWire {
    fn of(stage: Stage, board: &Board) -> StageWire {
        let on_board =
            |at: tokio::time::Instant| at.into_std().saturating_duration_since(board.start()).as_micros() as u64;
        match stage {
            Stage::Connect => StageWire::Connect,
            Stage::JoinWatchers { at } => StageWire::JoinWatchers(on_board(at)),
            Stage::JoinMembers { at } => StageWire::JoinMembers(on_board(at)),
            Stage::Close { at } => StageWire::Close(on_board(at)),
            Stage::Shutdown => StageWire::Shutdown,
        }
    }

    fn stage(self, board: &Board) -> Stage {
        let at = |us: u64| tokio::time::Instant::from_std(board.start() + Duration::from_micros(us));
        match self {
            StageWire::Connect => Stage::Connect,
            StageWire::JoinWatchers(us) => Stage::JoinWatchers { at: at(us) },
            StageWire::JoinMembers(us) => Stage::JoinMembers { at: at(us) },
            StageWire::Close(us) => Stage::Close { at: at(us) },
            StageWire::Shutdown => Stage::Shutdown,
        }
    }
}

/// The worker's side: read the setup from `input`, run its clients, follow the stages that
/// come on `input`, and send what changes on `output` until every socket has ended.
pub fn serve(input: impl BufRead + Send + 'static, mut output: impl Write) -> Result<(), String> {
    let mut lines = input.lines();
    let first = lines.next().ok_or("no setup on input")?.map_err(|e| format!("reading the setup: {e}"))?;
    let setup: WorkerSetup = serde_json::from_str(&first).map_err(|e| format!("not a worker setup: {e}"))?;
    let _ = system::raise_nofile_limit();
    let behind = Duration::from_micros(unix_us(SystemTime::now()).saturating_sub(setup.origin_unix_us));
    let start = Instant::now().checked_sub(behind).unwrap_or_else(Instant::now);
    let board = Arc::new(Board::starting_at(start, setup.sockets, setup.memberships));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(setup.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let env = Arc::new(ClientEnv {
        board: board.clone(),
        addr: setup.addr,
        heartbeat: setup.heartbeat,
        close_mode: setup.close_mode,
        connect_gate: Semaphore::new(setup.connect_concurrency.max(1)),
    });
    let sockets: Vec<usize> = setup.clients.iter().map(|c| c.socket).collect();
    let memberships: Vec<usize> = setup.clients.iter().flat_map(|c| c.topics.iter().map(|(m, _)| *m)).collect();
    let (stages, stage_rx) = watch::channel(Stage::Connect);
    for spec in setup.clients {
        runtime.spawn(client::run(spec, env.clone(), stage_rx.clone()));
    }
    drop(stage_rx);
    // Stages come on the rest of the input; its end is a shutdown (the coordinator is gone).
    let stage_board = board.clone();
    let shut_down = Arc::new(AtomicBool::new(false));
    let shut = shut_down.clone();
    std::thread::spawn(move || {
        for line in lines {
            let Ok(line) = line else { break };
            match serde_json::from_str::<StageWire>(&line) {
                Ok(wire) => {
                    if wire == StageWire::Shutdown {
                        shut.store(true, Relaxed);
                    }
                    stages.send_replace(wire.stage(&stage_board));
                }
                Err(_) => stage_board.tally("worker input not understood"),
            }
        }
        shut.store(true, Relaxed);
        stages.send_replace(Stage::Shutdown);
    });
    let mut sent = Published::new(&sockets, &memberships);
    let mut shutdown_at: Option<Instant> = None;
    loop {
        std::thread::sleep(PUBLISH);
        sent.publish(&board, &mut output).map_err(|e| format!("writing to the coordinator: {e}"))?;
        let ended =
            sockets.iter().all(|&i| matches!(board.sockets[i].state(), SocketState::Closed | SocketState::Failed));
        if shut_down.load(Relaxed) {
            shutdown_at.get_or_insert_with(Instant::now);
        }
        if ended || shutdown_at.is_some_and(|t| t.elapsed() > client::SHUTDOWN_TIMEOUT) {
            break;
        }
    }
    sent.publish(&board, &mut output).map_err(|e| format!("writing to the coordinator: {e}"))?;
    writeln!(output, "{}", serde_json::to_string(&WorkerNews::Done).unwrap_or_default())
        .and_then(|()| output.flush())
        .map_err(|e| format!("writing to the coordinator: {e}"))?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// What a worker last sent about each of its cells.
struct Published {
    sockets: Vec<(usize, SocketRecord)>,
    memberships: Vec<(usize, MembershipRecord)>,
    tallies: BTreeMap<String, u64>,
}

impl Published {
    fn new(sockets: &[usize], memberships: &[usize]) -> Published {
        Published {
            sockets: sockets.iter().map(|&i| (i, SocketRecord::default())).collect(),
            memberships: memberships.iter().map(|&m| (m, MembershipRecord::default())).collect(),
            tallies: BTreeMap::new(),
        }
    }

    /// Send what changed since the last call.
    fn publish(&mut self, board: &Board, out: &mut impl Write) -> std::io::Result<()> {
        let mut news = Vec::new();
        for (i, last) in &mut self.sockets {
            let now = board.socket_record(*i);
            if now != *last {
                *last = now;
                news.push(WorkerNews::Socket(*i, now));
            }
        }
        for (m, last) in &mut self.memberships {
            let now = board.membership_record(*m);
            if now != *last {
                *last = now;
                news.push(WorkerNews::Membership(*m, now));
            }
        }
        for (what, n) in board.tallies() {
            let before = self.tallies.insert(what.clone(), n).unwrap_or(0);
            if n > before {
                news.push(WorkerNews::Tally(what, n - before));
            }
        }
        if news.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for n in &news {
            text.push_str(&serde_json::to_string(n).unwrap_or_default());
            text.push('\n');
        }
        out.write_all(text.as_bytes())?;
        out.flush()
    }
}

/// The coordinator's side: the worker processes, writing to the coordinator's board.
pub(crate) struct Workers {
    children: Vec<(Child, Option<ChildStdin>)>,
    readers: Vec<JoinHandle<()>>,
    board: Arc<Board>,
}

impl Workers {
    /// Start one `binary --worker` per share of `clients` (socket `i` goes to worker
    /// `i % procs`).
    pub(crate) fn start(
        binary: &Path,
        procs: usize,
        mut template: WorkerSetup,
        board: Arc<Board>,
    ) -> Result<Workers, LoadError> {
        let mut shares: Vec<Vec<ClientSpec>> = (0..procs).map(|_| Vec::new()).collect();
        for spec in std::mem::take(&mut template.clients) {
            shares[spec.socket % procs].push(spec);
        }
        let mut workers = Workers { children: Vec::new(), readers: Vec::new(), board: board.clone() };
        for clients in shares {
            let mine: Vec<usize> = clients.iter().map(|c| c.socket).collect();
            let mine_memberships: Vec<usize> = clients.iter().flat_map(|c| c.topics.iter().map(|(m, _)| *m)).collect();
            let setup = WorkerSetup { clients, ..template.without_clients() };
            let mut child = Command::new(binary)
                .arg("--worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| LoadError::Worker(format!("starting {} --worker: {e}", binary.display())))?;
            let mut stdin = child.stdin.take();
            let stdout = child.stdout.take();
            let written = stdin.as_mut().map(|s| {
                let line = serde_json::to_string(&setup).unwrap_or_default();
                s.write_all(line.as_bytes()).and_then(|()| s.write_all(b"\n")).and_then(|()| s.flush())
            });
            workers.children.push((child, stdin));
            if let Some(Err(e)) = written {
                return Err(LoadError::Worker(format!("sending a worker its sockets: {e}")));
            }
            let Some(stdout) = stdout else { return Err(LoadError::Worker("no worker output".into())) };
            let board = board.clone();
            workers.readers.push(std::thread::spawn(move || read_news(stdout, &board, &mine, &mine_memberships)));
        }
        Ok(workers)
    }

    /// Every worker's process id.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(c, _)| c.id()).collect()
    }

    /// Tell every worker the stage (a worker that has ended is not told).
    pub(crate) fn stage(&mut self, stage: Stage) {
        let line = serde_json::to_string(&StageWire::of(stage, &self.board)).unwrap_or_default() + "\n";
        for (_, stdin) in &mut self.children {
            if let Some(s) = stdin {
                if s.write_all(line.as_bytes()).and_then(|()| s.flush()).is_err() {
                    *stdin = None;
                }
            }
        }
    }

    /// Shut every worker down and wait for it (at most `timeout`, then it is killed).
    pub(crate) fn shutdown(mut self, timeout: Duration) {
        self.stage(Stage::Shutdown);
        let deadline = Instant::now() + timeout;
        for (child, stdin) in &mut self.children {
            drop(stdin.take());
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for reader in self.readers {
            let _ = reader.join();
        }
    }
}

impl WorkerSetup {
    fn without_clients(&self) -> WorkerSetup {
        WorkerSetup {
            addr: self.addr,
            heartbeat: self.heartbeat,
            close_mode: self.close_mode,
            connect_concurrency: self.connect_concurrency,
            threads: self.threads,
            sockets: self.sockets,
            memberships: self.memberships,
            origin_unix_us: self.origin_unix_us,
            clients: Vec::new(),
        }
    }

    /// A setup for this board: its start as wall-clock time.
    pub(crate) fn origin_of(board: &Board) -> u64 {
        unix_us(SystemTime::now()).saturating_sub(board.start().elapsed().as_micros() as u64)
    }
}

/// Apply one worker's news to the board until its output ends. A worker that ends without
/// `Done` (it crashed or was killed) leaves its sockets failed or closed and its open joins
/// ended, and is counted, so no stage waits for it.
fn read_news(stdout: impl std::io::Read, board: &Board, sockets: &[usize], memberships: &[usize]) {
    let mut done = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<WorkerNews>(&line) {
            Ok(WorkerNews::Socket(i, r)) if i < board.sockets.len() => board.store_socket(i, &r),
            Ok(WorkerNews::Membership(m, r)) if m < board.memberships.len() => board.store_membership(m, &r),
            Ok(WorkerNews::Tally(what, n)) => board.add_tally(what, n),
            Ok(WorkerNews::Done) => done = true,
            _ => board.tally("worker output not understood"),
        }
    }
    if done {
        return;
    }
    board.tally("worker processes that ended early");
    for &i in sockets {
        match board.sockets[i].state() {
            SocketState::Connecting => board.sockets[i].set_state(SocketState::Failed),
            SocketState::Open => board.sockets[i].set_state(SocketState::Closed),
            _ => {}
        }
    }
    for &m in memberships {
        use crate::load::board::Membership::*;
        board.move_membership(m, &[Idle, Joining, Joined], Ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_crosses_to_a_worker_with_its_start_on_the_shared_clock() {
        let board = Board::new(1, 1);
        let at = tokio::time::Instant::from_std(board.start() + Duration::from_millis(1500));
        let wire = StageWire::of(Stage::JoinMembers { at }, &board);
        assert_eq!(wire, StageWire::JoinMembers(1_500_000));
        let text = serde_json::to_string(&wire).unwrap();
        let worker_board = Board::starting_at(board.start(), 1, 1);
        assert_eq!(serde_json::from_str::<StageWire>(&text).unwrap().stage(&worker_board), Stage::JoinMembers { at });
    }

    #[test]
    fn a_worker_publishes_only_what_changed_and_tallies_as_increments() {
        let board = Board::new(2, 1);
        let mut sent = Published::new(&[1], &[0]);
        let mut out = Vec::new();
        sent.publish(&board, &mut out).unwrap();
        assert!(out.is_empty(), "nothing changed yet");
        board.sockets[1].set_state(SocketState::Open);
        board.tally("x");
        board.tally("x");
        sent.publish(&board, &mut out).unwrap();
        board.tally("x");
        sent.publish(&board, &mut out).unwrap();
        let news: Vec<WorkerNews> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(
            news,
            [
                WorkerNews::Socket(1, board.socket_record(1)),
                WorkerNews::Tally("x".into(), 2),
                WorkerNews::Tally("x".into(), 1)
            ]
        );
    }

    #[test]
    fn a_worker_that_ends_without_done_leaves_its_sockets_ended_and_is_counted() {
        let board = Board::new(2, 2);
        board.sockets[0].set_state(SocketState::Open);
        board.set_membership(0, crate::load::board::Membership::Joined);
        let open = WorkerNews::Socket(0, board.socket_record(0));
        let input = format!("{}\n", serde_json::to_string(&open).unwrap());
        let coordinator = Board::new(2, 2);
        read_news(input.as_bytes(), &coordinator, &[0, 1], &[0, 1]);
        assert_eq!(coordinator.sockets[0].state(), SocketState::Closed);
        assert_eq!(coordinator.sockets[1].state(), SocketState::Failed);
        assert_eq!(coordinator.memberships[0].state(), crate::load::board::Membership::Ended);
        assert_eq!(coordinator.tallies().get("worker processes that ended early"), Some(&1));
    }
}
