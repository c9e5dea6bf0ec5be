//! `roster-load`: open N WebSockets speaking raw Phoenix v2 frames against a Roster node, join
//! rooms, and measure join latency, the time until every client's view equals the node's
//! list, bytes per client, the node's memory per socket and who got closed. The engine is
//! `roster_testkit::load`; this file turns flags into a `Scenario` and prints the `Report`.
//! How to use it: `docs/testing.md`, "Load: roster-load".

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use roster_testkit::load::{self, CloseMode, Progress, RemoteNode, Scenario, StartNode, Target};
use roster_testkit::Timings;
use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit status of a run that was made but found problems (unanswered or refused joins, views
/// that did not settle, sockets or channels the server ended).
const EXIT_NOT_CLEAN: u8 = 3;

/// Load a Roster node with N raw Phoenix v2 WebSockets and measure it.
///
/// Without --url, starts `roster serve` (the binary beside this one, or --server-bin) with a
/// one-node config and stops it at the end. Exit status: 0 clean, 3 the run found problems
/// (listed in the verdict), 1 the run could not be made, 2 bad flags.
#[derive(Debug, Parser)]
#[command(name = "roster-load", version)]
struct Args {
    /// Member sockets (a multiple of --room-size).
    #[arg(long, default_value_t = 10)]
    sockets: usize,
    /// Members per room.
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// Topics each member socket joins (rooms: sockets × this / room size).
    #[arg(long, default_value_t = 1)]
    topics_per_socket: usize,
    /// Watchers per watched room: sockets that join before the members burst.
    #[arg(long, default_value_t = 0)]
    watchers: usize,
    /// Rooms that get watchers (the first ones); default: every room.
    #[arg(long)]
    watched_rooms: Option<usize>,
    /// Fraction of every room's members that close once the views settle.
    #[arg(long, default_value_t = 0.0)]
    close_fraction: f64,
    /// How they close: a close frame, a dropped TCP connection, or phx_leave.
    #[arg(long, value_enum, default_value_t = CloseArg::Frame)]
    close_mode: CloseArg,
    /// Joins per second; default: all at once.
    #[arg(long)]
    join_rate: Option<f64>,
    /// Closes per second in the close stage; default: all at once.
    #[arg(long)]
    close_rate: Option<f64>,

    /// A running node: http://HOST:PORT, ws://HOST:PORT or HOST:PORT (its http_addr).
    #[arg(long)]
    url: Option<String>,
    /// With --url: the node's `[auth]` secret, to mint tokens (default: $ROSTER_SECRET).
    #[arg(long)]
    secret: Option<String>,
    /// With --url: the node's `[auth]` api_key, for GET /presence (default: $ROSTER_API_KEY).
    #[arg(long)]
    api_key: Option<String>,
    /// With --url: the node's process id, for its memory figures.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The `roster` binary to start; default: `roster` beside this executable.
    #[arg(long, conflicts_with = "url")]
    server_bin: Option<PathBuf>,
    /// A `key = value` line for the started node's `[server]` (repeatable).
    #[arg(long, value_name = "LINE", conflicts_with = "url")]
    server_key: Vec<String>,
    /// A `key = value` line for the started node's `[presence]` (repeatable).
    #[arg(long, value_name = "LINE", conflicts_with = "url")]
    presence_key: Vec<String>,
    /// The body of a `[[policy]]` table for the started node (repeatable, in order).
    #[arg(long, value_name = "TOML", conflicts_with = "url")]
    policy: Vec<String>,
    /// Start the node with the test harness's fast cluster timings (ready in 1.7 s, not 4 s).
    #[arg(long, conflicts_with = "url")]
    fast_timings: bool,

    /// Connects in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Loopback source addresses to spread sockets over; default: as the port range needs.
    #[arg(long)]
    source_addrs: Option<usize>,
    /// Topic names: this plus the room number.
    #[arg(long, default_value = "room:")]
    topic_prefix: String,
    /// Member user ids: this plus the socket number.
    #[arg(long, default_value = "u")]
    user_prefix: String,
    /// The role in every token.
    #[arg(long, default_value = "user")]
    role: String,
    /// The meta object every join carries, as JSON.
    #[arg(long, value_name = "JSON")]
    meta: Option<String>,
    /// Joins carry a `tab_id` (`t<socket>`).
    #[arg(long)]
    tab_ids: bool,
    /// Compare views with the node's list only, not the list with the joined users (for
    /// topics that publish something else, e.g. `presence = "count"`).
    #[arg(long)]
    no_key_check: bool,
    /// Phoenix heartbeat interval.
    #[arg(long, default_value_t = 30_000)]
    heartbeat_ms: u64,
    /// How long a join stage waits for every reply.
    #[arg(long, default_value_t = 60_000)]
    join_timeout_ms: u64,
    /// How long the views may take to settle, per stage.
    #[arg(long, default_value_t = 60_000)]
    settle_timeout_ms: u64,
    /// Keep every socket open this long after measuring.
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// Client worker threads; default: one per core (with --procs, shared among them).
    #[arg(long)]
    threads: Option<usize>,
    /// Client processes: more than 1 spreads the sockets over that many child processes
    /// of this executable, whose figures are merged into one report.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    procs: u16,
    /// Run as a worker process of another roster-load (its sockets and stages come on stdin).
    #[arg(long, hide = true, exclusive = true)]
    worker: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CloseArg {
    Frame,
    Drop,
    Leave,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.worker {
        return match load::serve_worker(std::io::BufReader::new(std::io::stdin()), std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("roster-load --worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let scenario = match scenario(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("roster-load: {e}");
            return ExitCode::from(2);
        }
    };
    let bar = Bar::new(std::io::stdout().is_terminal());
    match load::run(&scenario, &bar) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print!("{}", report.table());
            }
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_NOT_CLEAN)
            }
        }
        Err(e) => {
            bar.finish();
            eprintln!("roster-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn scenario(a: &Args) -> Result<Scenario, String> {
    if let Some(meta) = &a.meta {
        match serde_json::from_str::<serde_json::Value>(meta) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => return Err(format!("--meta must be a JSON object: {meta}")),
        }
    }
    let target = match &a.url {
        Some(url) => {
            let given = |flag: &Option<String>, env: &str| {
                flag.clone().or_else(|| std::env::var(env).ok()).filter(|v| !v.is_empty())
            };
            let (Some(secret), Some(api_key)) =
                (given(&a.secret, "ROSTER_SECRET"), given(&a.api_key, "ROSTER_API_KEY"))
            else {
                return Err("--url needs --secret (or ROSTER_SECRET) and --api-key (or ROSTER_API_KEY)".to_owned());
            };
            Target::Url(RemoteNode { addr: node_addr(url)?, secret, api_key, pid: a.server_pid })
        }
        None => Target::Start(StartNode {
            binary: match &a.server_bin {
                Some(path) => path.clone(),
                None => beside_this_executable("roster")?,
            },
            timings: if a.fast_timings { Timings::FAST } else { Timings::DEFAULT },
            server_keys: a.server_key.clone(),
            presence_keys: a.presence_key.clone(),
            policies: a.policy.clone(),
        }),
    };
    let defaults = Scenario::default();
    Ok(Scenario {
        target,
        sockets: a.sockets,
        room_size: a.room_size,
        topics_per_socket: a.topics_per_socket,
        watchers: a.watchers,
        watched_rooms: a.watched_rooms,
        close_fraction: a.close_fraction,
        close_mode: match a.close_mode {
            CloseArg::Frame => CloseMode::Frame,
            CloseArg::Drop => CloseMode::Drop,
            CloseArg::Leave => CloseMode::Leave,
        },
        join_rate: a.join_rate.filter(|&r| r > 0.0),
        close_rate: a.close_rate.filter(|&r| r > 0.0),
        connect_concurrency: a.connect_concurrency,
        source_addrs: a.source_addrs,
        topic_prefix: a.topic_prefix.clone(),
        user_prefix: a.user_prefix.clone(),
        role: a.role.clone(),
        meta: a.meta.clone(),
        tab_ids: a.tab_ids,
        check_keys: !a.no_key_check,
        heartbeat: Duration::from_millis(a.heartbeat_ms.max(1)),
        join_timeout: Duration::from_millis(a.join_timeout_ms),
        settle_timeout: Duration::from_millis(a.settle_timeout_ms),
        hold: Duration::from_millis(a.hold_ms),
        threads: a.threads.unwrap_or(defaults.threads),
        procs: usize::from(a.procs),
        worker_binary: if a.procs > 1 {
            Some(std::env::current_exe().map_err(|e| format!("--procs: cannot find this executable: {e}"))?)
        } else {
            None
        },
    })
}

/// `http://HOST:PORT/...`, `ws://HOST:PORT/...` or `HOST:PORT` → the address.
fn node_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = ["http://", "ws://"].iter().find_map(|p| url.strip_prefix(p)).unwrap_or(url);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let mut addrs = host_port.to_socket_addrs().map_err(|e| format!("--url {url}: {e}"))?;
    addrs.next().ok_or_else(|| format!("--url {url}: no address"))
}

fn beside_this_executable(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable ({e}): pass --server-bin"))?;
    Ok(exe.with_file_name(name))
}

/// The progress bar: drawn on stdout when it is a terminal, never otherwise.
struct Bar(ProgressBar);

impl Bar {
    fn new(terminal: bool) -> Bar {
        let target = if terminal { ProgressDrawTarget::stdout() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(None, target);
        let style = ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar(bar)
    }
}

impl Progress for Bar {
    fn stage(&self, what: &str, total: u64) {
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_message(what.to_owned());
    }

    fn set(&self, done: u64) {
        self.0.set_position(done);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("roster-load").chain(args.iter().copied()))
    }

    #[test]
    fn flags_become_the_scenario() {
        let a = parse(&[
            "--url",
            "http://127.0.0.1:4000",
            "--secret",
            "s",
            "--api-key",
            "k",
            "--server-pid",
            "42",
            "--sockets",
            "2000",
            "--room-size",
            "1000",
            "--close-fraction",
            "0.5",
            "--close-mode",
            "drop",
            "--meta",
            r#"{"name":"x"}"#,
        ])
        .unwrap();
        let s = scenario(&a).unwrap();
        let Target::Url(node) = &s.target else { panic!("not --url: {:?}", s.target) };
        assert_eq!(
            (node.addr.to_string(), node.secret.as_str(), node.api_key.as_str()),
            ("127.0.0.1:4000".into(), "s", "k")
        );
        assert_eq!(node.pid, Some(42));
        assert_eq!((s.sockets, s.room_size, s.close_fraction, s.close_mode), (2000, 1000, 0.5, CloseMode::Drop));
        assert_eq!(s.meta.as_deref(), Some(r#"{"name":"x"}"#));
        assert_eq!((s.procs, s.worker_binary.is_none()), (1, true));
        let s = scenario(&parse(&["--procs", "4"]).unwrap()).unwrap();
        assert_eq!((s.procs, s.worker_binary), (4, Some(std::env::current_exe().unwrap())));
    }

    #[test]
    fn without_url_the_node_is_started_from_the_binary_beside_this_one() {
        let s = scenario(&parse(&["--server-key", "outbound_queue = 4096", "--fast-timings"]).unwrap()).unwrap();
        let Target::Start(start) = &s.target else { panic!("not started: {:?}", s.target) };
        assert_eq!(start.binary.file_name().unwrap(), "roster");
        assert_eq!(start.server_keys, ["outbound_queue = 4096"]);
        assert_eq!(start.timings, Timings::FAST);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["--url", "127.0.0.1:1", "--secret", "s", "--api-key", "k", "--server-bin", "x"]).is_err());
        assert!(parse(&["--procs", "0"]).is_err());
        assert!(parse(&["--worker", "--sockets", "5"]).is_err(), "--worker takes no other flag");
        let a = parse(&["--meta", "[1]"]).unwrap();
        assert!(scenario(&a).unwrap_err().contains("JSON object"));
        assert_eq!(node_addr("ws://127.0.0.1:4001/socket").unwrap().port(), 4001);
        assert_eq!(node_addr("127.0.0.1:4002").unwrap().port(), 4002);
        assert!(node_addr("nohost").is_err());
    }
}
