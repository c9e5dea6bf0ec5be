//! What a run found: [`Report`] (serialized as-is by `--json`), its table for a terminal, and
//! the verdict ([`Report::problems`]: every socket open, every join acknowledged, every view
//! exact, no socket or channel ended by the server).

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A distribution over sockets, memberships or joins.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Dist {
    /// How many values.
    pub count: usize,
    /// Their mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Dist {
    /// The distribution of `values` (all zero when empty).
    pub fn of(mut values: Vec<f64>) -> Dist {
        if values.is_empty() {
            return Dist::default();
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let rank = |q: f64| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Dist {
            count: n,
            mean: values.iter().sum::<f64>() / n as f64,
            p50: rank(0.5),
            p99: rank(0.99),
            max: values[n - 1],
        }
    }
}

/// The scenario as run.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    /// Member sockets.
    pub sockets: usize,
    /// Watcher sockets.
    pub watchers: usize,
    /// Rooms (topics).
    pub rooms: usize,
    /// Members per room.
    pub room_size: usize,
    /// Topics per member socket.
    pub topics_per_socket: usize,
    /// Joins in all (members × topics + watchers).
    pub memberships: usize,
    /// Fraction of each room's members that close.
    pub close_fraction: f64,
    /// How they close.
    pub close_mode: super::CloseMode,
    /// Joins per second (`null`: all at once).
    pub join_rate: Option<f64>,
    /// Loopback source addresses the sockets were spread over (0: the kernel's choice).
    pub source_addrs: usize,
    /// Client worker threads.
    pub threads: usize,
    /// Processes the clients ran in (`--procs`).
    pub procs: usize,
}

/// The node loaded.
#[derive(Clone, Debug, Serialize)]
pub struct NodeReport {
    /// `ws://HOST:PORT/socket/websocket`.
    pub url: String,
    /// Its process id, if known.
    pub pid: Option<u32>,
    /// The binary, when this run started the node.
    pub started: Option<String>,
}

/// Opening the sockets.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConnectReport {
    /// Sockets attempted.
    pub sockets: usize,
    /// Opened.
    pub open: usize,
    /// Failed (reasons in [`Report::events`]).
    pub failed: usize,
    /// Until the last one opened.
    pub seconds: f64,
    /// Opened per second.
    pub per_second: f64,
    /// Distinct source addresses the open sockets used.
    pub source_addresses_used: usize,
}

/// One join stage.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JoinReport {
    /// Joins sent.
    pub joins: usize,
    /// Answered `ok`.
    pub acked: usize,
    /// Answered `error` (reasons in [`Report::events`]).
    pub refused: usize,
    /// Not answered within the join timeout (or before their socket ended).
    pub unanswered: usize,
    /// From the stage's start to the last `ok` (`null` unless every join was answered).
    pub seconds_to_all_acks: Option<f64>,
    /// From the stage's start to the last `phx_join` the clients started to write (the
    /// instant join latency counts from): their own sending, part of
    /// [`seconds_to_all_acks`](Self::seconds_to_all_acks) (`null` if none was sent).
    pub seconds_to_all_sent: Option<f64>,
    /// Acked joins per second over that time.
    pub acks_per_second: Option<f64>,
    /// `phx_join` sent → `phx_reply`, acked joins, milliseconds.
    pub latency_ms: Dist,
}

/// Whether the views settled.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ViewsReport {
    /// Live memberships checked (joined, not closed or ended).
    pub checked: usize,
    /// Of those, views equal to the node's list when the run stopped waiting.
    pub exact: usize,
    /// From the stage's start until the last view became exact (`null`: not all did).
    pub seconds_until_exact: Option<f64>,
    /// Metas in the node's lists of the topics checked, in all.
    pub node_entries: usize,
    /// Topics whose views did not settle, with what was wrong (the first few).
    pub unsettled: Vec<String>,
}

/// What the sockets received during a stage.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrafficReport {
    /// Text frames per socket.
    pub frames_per_socket: Dist,
    /// Text-frame bytes (payload of the WebSocket frames) per socket.
    pub bytes_per_socket: Dist,
    /// `presence_state` + `presence_diff` payload bytes per membership.
    pub presence_bytes_per_membership: Dist,
    /// The protocol's floor per membership: the node's final list of its topic, as JSON
    /// (each other member once), mean over memberships.
    pub floor_bytes_per_membership: f64,
    /// Mean presence bytes over the floor.
    pub floor_ratio: Option<f64>,
    /// Bytes of one entry in the node's lists (list bytes over metas).
    pub entry_bytes: Option<f64>,
}

/// The closing stage.
#[derive(Clone, Debug, Serialize)]
pub struct CloseReport {
    /// Sockets that closed (or left).
    pub closed: usize,
    /// Seconds from the close stage's start until the last of them had sent its close (or
    /// dropped its connection, or sent its leaves): the views are checked only after it,
    /// and "exact after" counts from it.
    pub seconds_to_send: f64,
    /// Sockets chosen to close that had not sent their close when the wait for them gave up.
    pub unsent: usize,
    /// How.
    pub mode: super::CloseMode,
    /// The remaining views.
    pub views: ViewsReport,
    /// What the remaining sockets received meanwhile.
    pub traffic: TrafficReport,
}

/// What the node's allocator says of itself at one moment, bytes: the samples
/// `roster_allocator_bytes{kind="..."}` of its `/metrics` (the `roster` binary shows jemalloc's;
/// see docs/protocol.md). A kind the node did not show is null.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AllocatorReport {
    /// Bytes the application holds (jemalloc counts what its thread caches hold as allocated).
    pub allocated: Option<u64>,
    /// Bytes in pages holding allocations (a partly used slab counts whole).
    pub active: Option<u64>,
    /// Bytes in pages the allocator touched and still holds, its metadata included.
    pub resident: Option<u64>,
    /// The allocator's own bookkeeping.
    pub metadata: Option<u64>,
    /// Bytes in the allocator's mapped extents.
    pub mapped: Option<u64>,
    /// Bytes mapped but given back to the system.
    pub retained: Option<u64>,
    /// Bytes the threads' caches hold.
    pub tcache: Option<u64>,
}

impl AllocatorReport {
    /// The figures in a `/metrics` text; `None` when it shows none.
    pub fn from_metrics(text: &str) -> Option<AllocatorReport> {
        let mut out = AllocatorReport::default();
        let mut any = false;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("roster_allocator_bytes{kind=\"") else { continue };
            let Some((kind, value)) = rest.split_once("\"} ") else { continue };
            let Ok(value) = value.trim().parse::<u64>() else { continue };
            let field = match kind {
                "allocated" => &mut out.allocated,
                "active" => &mut out.active,
                "resident" => &mut out.resident,
                "metadata" => &mut out.metadata,
                "mapped" => &mut out.mapped,
                "retained" => &mut out.retained,
                "tcache" => &mut out.tcache,
                _ => continue,
            };
            *field = Some(value);
            any = true;
        }
        any.then_some(out)
    }
}

/// The node's memory (`VmRSS` of `/proc/<pid>/status`), bytes, and its allocator's figures
/// read just after each `VmRSS` (null when its `/metrics` shows none).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerReport {
    /// Before any socket.
    pub rss_base: Option<u64>,
    /// Every socket open, none joined.
    pub rss_connected: Option<u64>,
    /// Every join done and every view settled.
    pub rss_joined: Option<u64>,
    /// After the closing stage.
    pub rss_after_close: Option<u64>,
    /// (connected − base) / sockets open then.
    pub per_socket_connected: Option<f64>,
    /// (joined − base) / sockets open then (the server may have closed some).
    pub per_socket_joined: Option<f64>,
    /// (joined − connected) / joins live then: a presence on an open socket (meaningless
    /// when the server closed sockets in between).
    pub per_join: Option<f64>,
    /// CPU seconds the node used from the members' join stage until the views settled.
    pub cpu_join_seconds: Option<f64>,
    /// The allocator's figures beside `rss_base`.
    pub allocator_base: Option<AllocatorReport>,
    /// Beside `rss_connected`.
    pub allocator_connected: Option<AllocatorReport>,
    /// Beside `rss_joined`.
    pub allocator_joined: Option<AllocatorReport>,
    /// Beside `rss_after_close`.
    pub allocator_after_close: Option<AllocatorReport>,
}

/// Everything a run measured. `--json` prints it as is.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scenario.
    pub scenario: ScenarioReport,
    /// The node.
    pub node: NodeReport,
    /// Opening the sockets.
    pub connect: ConnectReport,
    /// The watchers' joins, when there are watchers.
    pub watchers_join: Option<JoinReport>,
    /// The members' joins.
    pub join: JoinReport,
    /// The views after the members' joins.
    pub views: ViewsReport,
    /// What each socket received from the members' join stage until the views settled.
    pub traffic: TrafficReport,
    /// The closing stage, if any.
    pub close: Option<CloseReport>,
    /// The node's memory.
    pub server: ServerReport,
    /// Sockets the server closed, by close code (1005: a close frame without a code, 1006: no
    /// close frame).
    pub closes_by_server: BTreeMap<u16, u64>,
    /// Channel events, refusals, connect errors and frames not understood, by name.
    pub events: BTreeMap<String, u64>,
    /// Joins of a meta a view already held, from `presence_diff`s applied after the view's
    /// `presence_state` (a state taken mid-window, then the window's diff). phoenix.js
    /// ignores them, so they are not problems; a server that makes state and diffs compose
    /// exactly sends none.
    pub duplicate_joins: u64,
    /// Leaves of a meta a view did not hold, likewise.
    pub unknown_leaves: u64,
    /// WebSocket pings the clients answered.
    pub pings_answered: u64,
    /// This process's peak RSS (`VmHWM`), bytes.
    pub client_peak_rss: Option<u64>,
    /// CPU seconds this process used over the same span as [`ServerReport::cpu_join_seconds`].
    pub client_cpu_join_seconds: Option<f64>,
    /// The machine's 1-minute load average when the run started and when it ended (the
    /// machine is shared: wall-clock figures mean little when it was above the core count).
    pub load_average: (Option<f64>, Option<f64>),
    /// The descriptor limit this process ran with.
    pub client_nofile_limit: u64,
    /// Why the run is not clean; empty when it is.
    pub problems: Vec<String>,
    /// The last lines a node this run started wrote, when the run found problems.
    pub node_log_tail: Vec<String>,
}

impl Report {
    /// Every join acknowledged, every view exact, no socket or channel ended by the server.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The verdict, computed from the figures (the run fills [`Report::problems`] with it).
    pub fn find_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let c = &self.connect;
        if c.failed > 0 {
            out.push(format!("{} of {} sockets failed to open", c.failed, c.sockets));
        }
        for (what, j) in [("watcher", self.watchers_join.as_ref()), ("member", Some(&self.join))] {
            let Some(j) = j else { continue };
            if j.refused > 0 || j.unanswered > 0 {
                out.push(format!("{what} joins: {} refused, {} unanswered of {}", j.refused, j.unanswered, j.joins));
            }
        }
        let mut views = vec![("after the joins", &self.views)];
        if let Some(close) = &self.close {
            views.push(("after the closes", &close.views));
            if close.unsent > 0 {
                out.push(format!("{} of {} sockets never sent their close", close.unsent, close.closed));
            }
        }
        for (when, v) in views {
            if v.seconds_until_exact.is_none() {
                out.push(format!("{when}: {} of {} views exact", v.exact, v.checked));
            }
        }
        let closed: u64 = self.closes_by_server.values().sum();
        if closed > 0 {
            out.push(format!("the server closed {closed} sockets"));
        }
        let ended: u64 =
            self.events.iter().filter(|(k, _)| k.starts_with("channel ended by the server")).map(|(_, n)| n).sum();
        if ended > 0 {
            out.push(format!("the server ended {ended} channels"));
        }
        out
    }

    /// The report as a table for a terminal.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        let s = &self.scenario;
        let watchers = if s.watchers > 0 { format!(" + {} watchers", s.watchers) } else { String::new() };
        row(
            "scenario",
            format!(
                "{} sockets{watchers}, {} rooms of {}, {} topic(s) per socket, {} joins",
                s.sockets, s.rooms, s.room_size, s.topics_per_socket, s.memberships
            ),
        );
        let pid = self.node.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
        let started = self.node.started.as_ref().map(|b| format!(", started from {b}")).unwrap_or_default();
        row("node", format!("{}{pid}{started}", self.node.url));
        let c = &self.connect;
        row(
            "connect",
            format!(
                "{}/{} open in {:.2} s ({:.0}/s), {} source address(es)",
                c.open, c.sockets, c.seconds, c.per_second, c.source_addresses_used
            ),
        );
        if let Some(w) = &self.watchers_join {
            row("watchers join", join_line(w));
        }
        row("join", join_line(&self.join));
        row("join latency", ms_line(&self.join.latency_ms));
        row("views", views_line(&self.views));
        traffic_rows(&mut row, "", &self.traffic);
        if let Some(close) = &self.close {
            row(
                "close",
                format!("{} sockets ({:?}), all sent after {:.2} s", close.closed, close.mode, close.seconds_to_send)
                    .to_lowercase(),
            );
            row("views after close", views_line(&close.views));
            traffic_rows(&mut row, "after close: ", &close.traffic);
        }
        let sv = &self.server;
        let mb = |b: Option<u64>| b.map(|b| format!("{:.1} MB", b as f64 / 1e6)).unwrap_or_else(|| "?".into());
        let kb = |b: Option<f64>| b.map(|b| format!("{:.1} KB", b / 1e3)).unwrap_or_else(|| "?".into());
        row(
            "server RSS",
            format!(
                "base {}, connected {}, joined {}{}",
                mb(sv.rss_base),
                mb(sv.rss_connected),
                mb(sv.rss_joined),
                sv.rss_after_close.map(|b| format!(", after close {}", mb(Some(b)))).unwrap_or_default()
            ),
        );
        row(
            "server RSS per socket",
            format!(
                "{} connected, {} joined; {} per join",
                kb(sv.per_socket_connected),
                kb(sv.per_socket_joined),
                kb(sv.per_join)
            ),
        );
        if let Some(a) = &sv.allocator_joined {
            row(
                "server allocator, joined",
                format!(
                    "allocated {}, active {}, resident {}, metadata {}, thread caches {}",
                    mb(a.allocated),
                    mb(a.active),
                    mb(a.resident),
                    mb(a.metadata),
                    mb(a.tcache)
                ),
            );
        }
        let closes = if self.closes_by_server.is_empty() {
            "none".to_owned()
        } else {
            self.closes_by_server.iter().map(|(code, n)| format!("{code} × {n}")).collect::<Vec<_>>().join(", ")
        };
        let secs = |s: Option<f64>| s.map(|s| format!("{s:.2} s")).unwrap_or_else(|| "?".into());
        row(
            "CPU, joins to settled",
            format!("node {}, clients {}", secs(sv.cpu_join_seconds), secs(self.client_cpu_join_seconds)),
        );
        row("closed by the server", closes);
        for (what, n) in &self.events {
            row("event", format!("{what}: {n}"));
        }
        if self.duplicate_joins + self.unknown_leaves > 0 {
            row(
                "diff overlap",
                format!(
                    "{} joins of metas a view held, {} leaves of metas it did not (phoenix.js ignores both)",
                    self.duplicate_joins, self.unknown_leaves
                ),
            );
        }
        row(
            "client",
            format!(
                "{} process(es), peak RSS {} (summed), {} pings answered, descriptor limit {}",
                self.scenario.procs,
                mb(self.client_peak_rss),
                self.pings_answered,
                self.client_nofile_limit
            ),
        );
        let load = |l: Option<f64>| l.map(|l| format!("{l:.2}")).unwrap_or_else(|| "?".into());
        row("load average", format!("{} at start, {} at end", load(self.load_average.0), load(self.load_average.1)));
        row("verdict", if self.problems.is_empty() { "clean".to_owned() } else { self.problems.join("; ") });
        for line in &self.node_log_tail {
            row("node log", line.clone());
        }
        let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}

fn join_line(j: &JoinReport) -> String {
    let time = match (j.seconds_to_all_acks, j.acks_per_second) {
        (Some(t), Some(r)) => format!("all acked in {t:.3} s ({r:.0}/s)"),
        _ => format!("{} unanswered", j.unanswered),
    };
    format!("{}/{} acked, {} refused; {time}", j.acked, j.joins, j.refused)
}

fn ms_line(d: &Dist) -> String {
    format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", d.p50, d.p99, d.max)
}

fn views_line(v: &ViewsReport) -> String {
    let when = match v.seconds_until_exact {
        Some(t) => format!("exact after {t:.3} s"),
        None => format!("NOT settled: {}", v.unsettled.join(" | ")),
    };
    format!("{}/{} exact ({} entries on the node); {when}", v.exact, v.checked, v.node_entries)
}

fn traffic_rows(row: &mut impl FnMut(&str, String), prefix: &str, t: &TrafficReport) {
    let f = &t.frames_per_socket;
    let b = &t.bytes_per_socket;
    row(
        "received per socket",
        format!(
            "{prefix}frames mean {:.1} (max {:.0}); bytes mean {:.1} KB, p50 {:.1} KB, max {:.1} KB",
            f.mean,
            f.max,
            b.mean / 1e3,
            b.p50 / 1e3,
            b.max / 1e3
        ),
    );
    let p = &t.presence_bytes_per_membership;
    let floor = match (t.floor_ratio, t.entry_bytes) {
        (Some(r), Some(e)) => {
            format!("; floor {:.1} KB ({e:.0} B per entry): {r:.2}×", t.floor_bytes_per_membership / 1e3)
        }
        _ => String::new(),
    };
    row("presence per join", format!("{prefix}mean {:.1} KB, max {:.1} KB{floor}", p.mean / 1e3, p.max / 1e3));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_uses_nearest_ranks() {
        let d = Dist::of((1..=100).map(f64::from).collect());
        assert_eq!((d.count, d.mean, d.p50, d.p99, d.max), (100, 50.5, 50.0, 99.0, 100.0));
        let one = Dist::of(vec![7.0]);
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert_eq!(Dist::of(vec![]), Dist::default());
    }

    #[test]
    fn allocator_figures_are_read_by_kind_and_absent_ones_are_none() {
        let text = "# HELP roster_sockets Open WebSockets.\n# TYPE roster_sockets gauge\nroster_sockets 3\n\
                    # TYPE roster_allocator_bytes gauge\n\
                    roster_allocator_bytes{kind=\"allocated\"} 1200\n\
                    roster_allocator_bytes{kind=\"resident\"} 8192\n\
                    roster_allocator_bytes{kind=\"unknown\"} 5\n# EOF\n";
        let a = AllocatorReport::from_metrics(text).unwrap();
        assert_eq!(a, AllocatorReport { allocated: Some(1200), resident: Some(8192), ..AllocatorReport::default() });
        assert_eq!(AllocatorReport::from_metrics("roster_sockets 3\n# EOF\n"), None);
    }
}
