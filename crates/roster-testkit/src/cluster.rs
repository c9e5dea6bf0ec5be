//! N real `roster serve` processes on 127.0.0.1, one config file per node, and what a test
//! does to them: wait until ready, `kill -9`, `SIGSTOP`/`SIGCONT`, restart, read their HTTP
//! views, cut links through a [`FaultProxy`], and wait for observable conditions with a
//! deadline. See the crate docs for an example.

use crate::fault_proxy::FaultProxy;
use crate::http::{http_get, percent_encode};
use crate::tls::TestCa;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The HMAC secret in every node's config (tests mint client tokens with it).
pub const SECRET: &str = "testkit-secret-0123456789abcdef0123";
/// The backend API key in every node's config (`/presence`, `/slot`, `/kick`).
pub const API_KEY: &str = "testkit-api-key";
/// The `[cluster] cookie` of every test cluster.
pub const COOKIE: &str = "testkit-cookie";
/// How many lines of each node's stderr a failure message shows.
const STDERR_TAIL_LINES: usize = 40;
/// How often [`Cluster::wait_until`] checks its condition.
const POLL: Duration = Duration::from_millis(10);

/// The `[cluster]` timings of a test cluster.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timings {
    /// `heartbeat_ms`.
    pub heartbeat_ms: u64,
    /// `heartbeat_timeout_ms`: a silent peer is down after this long.
    pub heartbeat_timeout_ms: u64,
    /// `lease_ms`.
    pub lease_ms: u64,
    /// `isolation_ms`.
    pub isolation_ms: u64,
    /// `max_drift`.
    pub max_drift: f64,
}

impl Timings {
    /// Fast timings for tests: heartbeats every 100 ms, a peer down after 500 ms of silence,
    /// 1 s leases, and the smallest `isolation_ms` the timing rule allows for them
    /// (`isolation_ms × 0.99 > max(1010, 500) + 250 + 300 + 100`, so above 1676.8: 1677).
    pub const FAST: Timings =
        Timings { heartbeat_ms: 100, heartbeat_timeout_ms: 500, lease_ms: 1000, isolation_ms: 1677, max_drift: 0.01 };

    /// The product's defaults (`cluster.toml`): heartbeats every 200 ms, a peer down after
    /// 1 s, 2 s leases, `isolation_ms = 4000`. A node is ready about 4 s after it starts.
    pub const DEFAULT: Timings =
        Timings { heartbeat_ms: 200, heartbeat_timeout_ms: 1000, lease_ms: 2000, isolation_ms: 4000, max_drift: 0.01 };
}

impl Default for Timings {
    fn default() -> Self {
        Timings::FAST
    }
}

/// The name of node `i`: `a`, `b`, `c`, … (then `n26`, `n27`, …).
pub fn node_name(i: usize) -> String {
    if i < 26 {
        char::from(b'a' + i as u8).to_string()
    } else {
        format!("n{i}")
    }
}

/// What cluster to start: how many nodes, their timings, extra config lines, policies and
/// which node pairs talk through a [`FaultProxy`]. Build it, then [`ClusterSpec::start`]
/// (every node, waiting until each is ready) or [`ClusterSpec::create`] (no node yet).
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    nodes: usize,
    timings: Timings,
    server: Vec<(String, String)>,
    presence: Vec<(String, String)>,
    cluster: Vec<(String, String)>,
    policies: Vec<String>,
    proxied: Vec<(usize, usize)>,
    tls: bool,
    records: bool,
}

impl ClusterSpec {
    /// `nodes` nodes named `a`, `b`, … with [`Timings::FAST`], `diff_ms = 10` and
    /// `broadcast_ms = 5`, no policy (the built-in default) and no proxy.
    pub fn new(nodes: usize) -> ClusterSpec {
        assert!(nodes >= 1, "a cluster has at least one node");
        let mut spec = ClusterSpec {
            nodes,
            timings: Timings::FAST,
            server: Vec::new(),
            presence: Vec::new(),
            cluster: Vec::new(),
            policies: Vec::new(),
            proxied: Vec::new(),
            tls: false,
            records: true,
        };
        spec = spec.presence_key("diff_ms = 10").presence_key("broadcast_ms = 5");
        spec
    }

    /// The `[cluster]` timings.
    pub fn timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// A `key = value` line for `[server]`; replaces an earlier line with the same key.
    pub fn server_key(mut self, line: &str) -> Self {
        set_line(&mut self.server, line);
        self
    }

    /// A `key = value` line for `[presence]`; replaces an earlier line with the same key
    /// (e.g. the default `diff_ms = 10`).
    pub fn presence_key(mut self, line: &str) -> Self {
        set_line(&mut self.presence, line);
        self
    }

    /// A `key = value` line for `[cluster]` beyond the timings (e.g. `partitions = 64`);
    /// replaces an earlier line with the same key.
    pub fn cluster_key(mut self, line: &str) -> Self {
        set_line(&mut self.cluster, line);
        self
    }

    /// The body of one `[[policy]]` table (TOML lines), in order.
    pub fn policy(mut self, body: &str) -> Self {
        self.policies.push(body.to_owned());
        self
    }

    /// Whether the nodes write their record logs (`--records`, on by default): a load run
    /// turns them off, since a file write per grant is not what production pays.
    pub fn records(mut self, on: bool) -> Self {
        self.records = on;
        self
    }

    /// Put a [`FaultProxy`] between nodes `a` and `b` (indices, either order). Only the node
    /// listed earlier dials the later one, so only its config points at the proxy.
    pub fn proxied(mut self, a: usize, b: usize) -> Self {
        assert!(a != b && a < self.nodes && b < self.nodes, "proxied({a}, {b}): no such pair of nodes");
        let pair = (a.min(b), a.max(b));
        if !self.proxied.contains(&pair) {
            self.proxied.push(pair);
        }
        self
    }

    /// Node links over mutual TLS: a fresh CA and a certificate per node (naming it) are made
    /// in the cluster's temp dir, and every config gets a `[cluster.tls]` section.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Write the configs, start every node with `binary` (the `roster` executable: tests pass
    /// `env!("CARGO_BIN_EXE_roster")`) and wait until each answers `/ready` with 200.
    pub fn start(self, binary: impl Into<PathBuf>) -> Cluster {
        let mut cluster = self.create(binary);
        for i in 0..cluster.len() {
            cluster.start_node(i);
        }
        for i in 0..cluster.len() {
            cluster.wait_ready(i);
        }
        cluster
    }

    /// Write the configs and create the proxies, but start no node: start them with
    /// [`Cluster::start_node`] (e.g. one node only after the others hold some state).
    pub fn create(self, binary: impl Into<PathBuf>) -> Cluster {
        Cluster::create(self, binary.into())
    }

    /// The config file of node `i` (see [`Cluster`] for how the addresses differ per node).
    pub fn render_config(&self, i: usize, layout: &Layout) -> String {
        let t = &self.timings;
        let lines = |v: &[(String, String)]| v.iter().map(|(_, l)| format!("{l}\n")).collect::<String>();
        let mut out = format!(
            "# Written by roster-testkit for node {name}.\n\
             [auth]\nsecret = \"{SECRET}\"\napi_key = \"{API_KEY}\"\n\n\
             [server]\n{server}\n\
             [presence]\n{presence}\n\
             [cluster]\ncookie = \"{COOKIE}\"\ndata_dir = {data_dir}\n\
             heartbeat_ms = {hb}\nheartbeat_timeout_ms = {hbt}\nlease_ms = {lease}\nisolation_ms = {iso}\nmax_drift = {drift:?}\n{cluster}",
            name = node_name(i),
            server = lines(&self.server),
            presence = lines(&self.presence),
            data_dir = toml_string(&layout.data_dir.display().to_string()),
            hb = t.heartbeat_ms,
            hbt = t.heartbeat_timeout_ms,
            lease = t.lease_ms,
            iso = t.isolation_ms,
            drift = t.max_drift,
            cluster = lines(&self.cluster),
        );
        if let Some(dir) = layout.tls_dir.as_ref().filter(|_| self.tls) {
            let file = |name: &str| toml_string(&dir.join(name).display().to_string());
            out.push_str(&format!(
                "\n[cluster.tls]\ncert = {}\nkey = {}\nca = {}\n",
                file("{node}.crt"),
                file("{node}.key"),
                file("ca.crt")
            ));
        }
        for j in 0..self.nodes {
            // Node i dials node j only when i is listed earlier; then a proxy may sit between.
            let cluster_addr = match layout.proxies.get(&(i, j)) {
                Some(proxy) if i < j => *proxy,
                _ => layout.cluster_addrs[j],
            };
            out.push_str(&format!(
                "\n[[cluster.nodes]]\nname = \"{}\"\ncluster_addr = \"{cluster_addr}\"\nhttp_addr = \"{}\"\n",
                node_name(j),
                layout.http_addrs[j],
            ));
        }
        for policy in &self.policies {
            out.push_str(&format!("\n[[policy]]\n{policy}\n"));
        }
        out
    }
}

/// Where the nodes of a cluster listen, and where their proxies listen: the input of
/// [`ClusterSpec::render_config`].
#[derive(Clone, Debug)]
pub struct Layout {
    /// Every node's real `cluster_addr`, by index.
    pub cluster_addrs: Vec<SocketAddr>,
    /// Every node's `http_addr`, by index.
    pub http_addrs: Vec<SocketAddr>,
    /// For a proxied pair `(i, j)` with `i < j`: the proxy's address, which node `i` dials
    /// instead of `cluster_addrs[j]`.
    pub proxies: BTreeMap<(usize, usize), SocketAddr>,
    /// The `data_dir` shared by the node configs (each node keeps its file `data_dir/NAME`).
    pub data_dir: PathBuf,
    /// Where `ca.crt`, `NAME.crt` and `NAME.key` are, for a spec with [`ClusterSpec::tls`].
    pub tls_dir: Option<PathBuf>,
}

fn set_line(lines: &mut Vec<(String, String)>, line: &str) {
    let key = line.split('=').next().unwrap_or("").trim().to_owned();
    assert!(!key.is_empty() && line.contains('='), "not a `key = value` line: {line:?}");
    match lines.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = line.to_owned(),
        None => lines.push((key, line.to_owned())),
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// One node's process and its files.
struct NodeProc {
    name: String,
    config_path: PathBuf,
    /// The file `--records` appends this node's slot and lease records to, over all its starts.
    records_path: PathBuf,
    http_addr: SocketAddr,
    cluster_addr: SocketAddr,
    /// The process, behind a lock so `&self` methods can ask whether it exited.
    child: Mutex<Option<Child>>,
    /// Its id while it runs.
    pid: Option<u32>,
    /// Everything the node wrote to stderr, over all its starts.
    log: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
    starts: u32,
    stopped: bool,
}

impl NodeProc {
    fn take_child(&mut self) -> Option<Child> {
        self.pid = None;
        self.child.get_mut().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A running test cluster: see the module and crate docs. Every process is killed and the
/// temp dir removed on drop.
///
/// Node `i` is `roster serve --config <dir>/<name>.toml --node <name>`. The configs are equal
/// but for the peer addresses: for a proxied pair `(i, j)`, `i < j`, node `i`'s file gives
/// the proxy's address as `j`'s `cluster_addr`.
pub struct Cluster {
    spec: ClusterSpec,
    binary: PathBuf,
    dir: PathBuf,
    nodes: Vec<NodeProc>,
    proxies: BTreeMap<(usize, usize), FaultProxy>,
    /// `(node name, Unix ms)` of every `kill -9`, in order.
    kills: Vec<(String, u64)>,
    /// The CA of a TLS cluster, and where its files are.
    tls: Option<(TestCa, PathBuf)>,
}

impl Cluster {
    fn create(spec: ClusterSpec, binary: PathBuf) -> Cluster {
        static NEXT_DIR: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "roster-testkit-{}-{}-{nanos}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let ports = crate::ports::free_ports(2 * spec.nodes);
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let cluster_addrs: Vec<SocketAddr> = ports[..spec.nodes].iter().map(|&p| addr(p)).collect();
        let http_addrs: Vec<SocketAddr> = ports[spec.nodes..].iter().map(|&p| addr(p)).collect();
        let mut proxies = BTreeMap::new();
        for &(i, j) in &spec.proxied {
            let proxy = FaultProxy::start(cluster_addrs[j]).expect("start a fault proxy");
            proxies.insert((i, j), proxy);
        }
        let tls = spec.tls.then(|| {
            let ca = TestCa::new("roster-testkit CA");
            let names: Vec<String> = (0..spec.nodes).map(node_name).collect();
            let tls_dir = ca.write_cluster(&dir.join("tls"), &names);
            (ca, tls_dir)
        });
        let layout = Layout {
            cluster_addrs: cluster_addrs.clone(),
            http_addrs: http_addrs.clone(),
            proxies: proxies.iter().map(|(k, p)| (*k, p.addr())).collect(),
            data_dir: dir.join("data"),
            tls_dir: tls.as_ref().map(|(_, d)| d.clone()),
        };
        let nodes = (0..spec.nodes)
            .map(|i| {
                let name = node_name(i);
                let config_path = dir.join(format!("{name}.toml"));
                std::fs::write(&config_path, spec.render_config(i, &layout))
                    .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
                NodeProc {
                    records_path: dir.join(format!("{name}.records.jsonl")),
                    name,
                    config_path,
                    http_addr: http_addrs[i],
                    cluster_addr: cluster_addrs[i],
                    child: Mutex::new(None),
                    pid: None,
                    log: Arc::new(Mutex::new(String::new())),
                    readers: Vec::new(),
                    starts: 0,
                    stopped: false,
                }
            })
            .collect();
        Cluster { spec, binary, dir, nodes, proxies, kills: Vec::new(), tls }
    }

    /// The CA of a cluster started with [`ClusterSpec::tls`] and the directory of its files
    /// (`ca.crt`, `NAME.crt`, `NAME.key`): a test may issue other certificates with it, or
    /// replace a node's files before starting it.
    pub fn tls(&self) -> Option<(&TestCa, &Path)> {
        self.tls.as_ref().map(|(ca, dir)| (ca, dir.as_path()))
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never: a spec has at least one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Node `i`'s name (`a`, `b`, …).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Node `i`'s `http_addr`.
    pub fn http_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].http_addr
    }

    /// Node `i`'s real `cluster_addr` (not a proxy's).
    pub fn cluster_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].cluster_addr
    }

    /// `ws://127.0.0.1:PORT/socket` of node `i` (what phoenix's `new Socket(url)` takes).
    pub fn socket_url(&self, i: usize) -> String {
        format!("ws://{}/socket", self.nodes[i].http_addr)
    }

    /// Node `i`'s config file.
    pub fn config_path(&self, i: usize) -> &Path {
        &self.nodes[i].config_path
    }

    /// Every node's record log (`roster serve --records <dir>/<name>.records.jsonl`), by
    /// index: the slot and lease records of all its starts, Unix ms, one JSON object per line.
    /// A node that has written nothing yet has no file.
    pub fn record_logs(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|n| n.records_path.clone()).collect()
    }

    /// `(node name, Unix ms)` of every [`kill9`](Self::kill9) so far (including the one
    /// [`restart`](Self::restart) does on a running node), in order: the incarnation alive then
    /// ended at that instant, its slots held until their horizons.
    pub fn kills(&self) -> &[(String, u64)] {
        &self.kills
    }

    /// Node `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].pid
    }

    /// The proxy between nodes `a` and `b` (either order). Panics if the spec has none.
    pub fn proxy(&self, a: usize, b: usize) -> &FaultProxy {
        self.proxies.get(&(a.min(b), a.max(b))).unwrap_or_else(|| {
            panic!("no proxy between {} and {}: add .proxied({a}, {b}) to the spec", node_name(a), node_name(b))
        })
    }

    /// Start node `i` (its first start, or after [`kill9`](Self::kill9)); returns without
    /// waiting (see [`wait_ready`](Self::wait_ready)). Panics if it is running.
    pub fn start_node(&mut self, i: usize) {
        let binary = self.binary.clone();
        let node = &mut self.nodes[i];
        assert!(node.pid.is_none(), "node {} is already running", node.name);
        node.starts += 1;
        node.stopped = false;
        push_log(&node.log, &format!("=== roster-testkit: start #{} of node {} ===\n", node.starts, node.name));
        let mut command = Command::new(&binary);
        command.arg("serve").arg("--config").arg(&node.config_path).args(["--node", &node.name]);
        if self.spec.records {
            command.arg("--records").arg(&node.records_path);
        }
        let mut child = command
            .env_remove("ROSTER_SECRET")
            .env_remove("ROSTER_API_KEY")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {} serve for node {}: {e}", binary.display(), node.name));
        for pipe in [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as _),
        ]
        .into_iter()
        .flatten()
        {
            let log = node.log.clone();
            node.readers.push(thread::spawn(move || copy_to_log(pipe, &log)));
        }
        node.pid = Some(child.id());
        *node.child.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }

    /// Wait (up to 30 s) until node `i` answers `/ready` with 200; panics, with every node's
    /// output, if it exits or does not get ready.
    pub fn wait_ready(&mut self, i: usize) {
        let what = format!("node {} answers /ready with 200", self.nodes[i].name);
        self.wait_until(Duration::from_secs(30), &what, |c| {
            if let Some(status) = c.exited(i) {
                c.fail(&format!("node {} exited ({status}) while waiting for it to be ready", c.nodes[i].name));
            }
            matches!(c.http_get(i, "/ready"), Ok((200, _)))
        });
    }

    /// The exit status of node `i`'s process if it ended by itself (not by this harness).
    pub fn exited(&self, i: usize) -> Option<ExitStatus> {
        let mut child = self.nodes[i].child.lock().unwrap_or_else(|e| e.into_inner());
        child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// `kill -9` node `i` and reap it. Its data dir stays, for [`restart`](Self::restart).
    pub fn kill9(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut child = node.take_child().unwrap_or_else(|| panic!("kill9: node {} is not running", node.name));
        let _ = child.kill(); // SIGKILL, which also ends a stopped process
        let _ = child.wait();
        node.stopped = false;
        push_log(&node.log, &format!("=== roster-testkit: node {} killed with SIGKILL ===\n", node.name));
        // Taken once the process is reaped, so every record it wrote is at or before it.
        let name = node.name.clone();
        self.kills.push((name, unix_ms()));
    }

    /// Send SIGTERM to node `i` (a graceful shutdown) and wait up to `timeout` for it to exit.
    pub fn terminate(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        self.signal(i, "TERM");
        let deadline = Instant::now() + timeout;
        loop {
            let node = &mut self.nodes[i];
            node.pid?;
            if let Some(status) = self.exited(i) {
                self.nodes[i].take_child();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// `kill -STOP` node `i`: the process hangs (sockets open, nothing answered).
    pub fn sigstop(&mut self, i: usize) {
        self.signal(i, "STOP");
        self.nodes[i].stopped = true;
    }

    /// `kill -CONT` node `i` after [`sigstop`](Self::sigstop).
    pub fn sigcont(&mut self, i: usize) {
        self.signal(i, "CONT");
        self.nodes[i].stopped = false;
    }

    fn signal(&mut self, i: usize, signal: &str) {
        let node = &self.nodes[i];
        let pid = node.pid.unwrap_or_else(|| panic!("kill -{signal}: node {} is not running", node.name));
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("run kill -{signal} {pid}: {e}"));
        assert!(status.success(), "kill -{signal} {pid} (node {}) failed: {status}", node.name);
        push_log(&node.log, &format!("=== roster-testkit: node {} sent SIG{signal} ===\n", node.name));
    }

    /// Start node `i` again with the same config and data dir (`kill -9` first if it runs); a
    /// new process is a new incarnation. Returns without waiting for it to be ready.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].pid.is_some() {
            self.kill9(i);
        }
        self.start_node(i);
    }

    /// Whether node `i`'s process runs (stopped counts as running).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].pid.is_some() && self.exited(i).is_none()
    }

    /// `GET path` on node `i` with the API key as a bearer token: `(status, body)`.
    pub fn http_get(&self, i: usize, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.nodes[i].http_addr, path, Some(API_KEY))
    }

    /// `GET path` on node `i` that must answer 200 with JSON; panics with every node's
    /// stderr otherwise.
    pub fn get_json(&self, i: usize, path: &str) -> Value {
        match self.http_get(i, path) {
            Ok((200, body)) => serde_json::from_str(&body).unwrap_or_else(|e| {
                self.fail(&format!("GET {path} on node {}: not JSON ({e}): {body}", self.nodes[i].name))
            }),
            Ok((status, body)) => {
                self.fail(&format!("GET {path} on node {}: HTTP {status}: {body}", self.nodes[i].name))
            }
            Err(e) => self.fail(&format!("GET {path} on node {}: {e}", self.nodes[i].name)),
        }
    }

    /// Node `i`'s presence list of `topic` (`GET /presence?topic=…`): `{key: {"metas": [...]}}`.
    pub fn presence(&self, i: usize, topic: &str) -> Value {
        self.get_json(i, &format!("/presence?topic={}", percent_encode(topic)))
    }

    /// Like [`presence`](Self::presence), but `None` instead of a panic when the node does not
    /// answer (for conditions polled while nodes come and go).
    pub fn try_presence(&self, i: usize, topic: &str) -> Option<Value> {
        match self.http_get(i, &format!("/presence?topic={}", percent_encode(topic))) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// Node `i`'s `GET /cluster`.
    pub fn cluster_view(&self, i: usize) -> Value {
        self.get_json(i, "/cluster")
    }

    /// What node `i`'s `/cluster` says about peer `peer` (its entry in `peers`), if it
    /// answers and lists it.
    pub fn peer_view(&self, i: usize, peer: usize) -> Option<Value> {
        let (200, body) = self.http_get(i, "/cluster").ok()? else { return None };
        let view: Value = serde_json::from_str(&body).ok()?;
        let name = node_name(peer);
        view["peers"].as_array()?.iter().find(|p| p["name"] == name.as_str()).cloned()
    }

    /// Poll `condition` every 10 ms until it holds and return how long that took; panic after
    /// `timeout` with `what` and every node's stderr tail. The condition gets the cluster, to
    /// read its HTTP views.
    pub fn wait_until(&self, timeout: Duration, what: &str, condition: impl FnMut(&Cluster) -> bool) -> Duration {
        let start = Instant::now();
        if !self.try_wait_until(timeout, condition) {
            self.fail(&format!("waited {timeout:?} for: {what}"));
        }
        start.elapsed()
    }

    /// Like [`wait_until`](Self::wait_until), but says whether the condition held in time
    /// instead of failing, so a test can add what it saw to its own failure message.
    pub fn try_wait_until(&self, timeout: Duration, mut condition: impl FnMut(&Cluster) -> bool) -> bool {
        let start = Instant::now();
        loop {
            if condition(self) {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            thread::sleep(POLL);
        }
    }

    /// Everything node `i` wrote to stdout and stderr, over all its starts.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last lines of every node's output, headed by its name and state, for failure
    /// messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let exited =
                node.child.lock().unwrap_or_else(|e| e.into_inner()).as_mut().and_then(|c| c.try_wait().ok().flatten());
            let state = match (node.pid, exited, node.stopped) {
                (None, _, _) => "not running".to_owned(),
                (Some(_), Some(status), _) => format!("EXITED by itself: {status}"),
                (Some(_), None, true) => "stopped (SIGSTOP)".to_owned(),
                (Some(_), None, false) => "running".to_owned(),
            };
            let log = node.log.lock().unwrap_or_else(|e| e.into_inner());
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
            out.push_str(&format!(
                "--- node {} ({state}, pid {:?}, {}), last {} lines:\n{}\n",
                node.name,
                node.pid,
                node.config_path.display(),
                tail.len(),
                tail.join("\n")
            ));
        }
        out
    }

    /// Panic with `message` and every node's output tail.
    pub fn fail(&self, message: &str) -> ! {
        panic!("{message}\n{}", self.log_tails())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.take_child() {
                let _ = child.kill();
                let _ = child.wait();
            }
            for reader in node.readers.drain(..) {
                let _ = reader.join();
            }
        }
        self.proxies.clear();
        if std::env::var_os("ROSTER_TESTKIT_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Now, in Unix milliseconds (the clock the nodes stamp their records with).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn push_log(log: &Mutex<String>, line: &str) {
    log.lock().unwrap_or_else(|e| e.into_inner()).push_str(line);
}

fn copy_to_log(mut pipe: Box<dyn Read + Send>, log: &Mutex<String>) {
    let mut buf = [0u8; 8192];
    while let Ok(n @ 1..) = pipe.read(&mut buf) {
        push_log(log, &String::from_utf8_lossy(&buf[..n]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(n: usize, proxies: &[((usize, usize), u16)]) -> Layout {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        Layout {
            cluster_addrs: (0..n as u16).map(|i| a(4370 + i)).collect(),
            http_addrs: (0..n as u16).map(|i| a(4000 + i)).collect(),
            proxies: proxies.iter().map(|&(k, p)| (k, a(p))).collect(),
            data_dir: PathBuf::from("/tmp/x/data"),
            tls_dir: Some(PathBuf::from("/tmp/x/tls")),
        }
    }

    #[test]
    fn names_are_letters() {
        assert_eq!((0..4).map(node_name).collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        assert_eq!(node_name(26), "n26");
    }

    #[test]
    fn default_timings_meet_the_timing_rule() {
        let t = Timings::DEFAULT;
        let bound = (t.lease_ms as f64 * (1.0 + t.max_drift)).max(t.heartbeat_timeout_ms as f64)
            + t.lease_ms as f64 / 4.0
            + 3.0 * t.heartbeat_ms as f64
            + 100.0;
        assert!(t.isolation_ms as f64 * (1.0 - t.max_drift) > bound);
    }

    #[test]
    fn fast_timings_meet_the_timing_rule_at_its_minimum() {
        let t = Timings::FAST;
        let need = |iso: u64| {
            iso as f64 * (1.0 - t.max_drift)
                > (t.lease_ms as f64 * (1.0 + t.max_drift)).max(t.heartbeat_timeout_ms as f64)
                    + t.lease_ms as f64 / 4.0
                    + 3.0 * t.heartbeat_ms as f64
                    + 100.0
        };
        assert!(need(t.isolation_ms));
        assert!(!need(t.isolation_ms - 1));
    }

    #[test]
    fn config_has_every_node_and_only_the_earlier_node_of_a_proxied_pair_dials_the_proxy() {
        let spec = ClusterSpec::new(3)
            .proxied(1, 0)
            .server_key("max_topics_per_socket = 2000")
            .presence_key("diff_ms = 20")
            .policy("topic = \"*\"\nexempt_roles = [\"admin\"]");
        let l = layout(3, &[((0, 1), 5555)]);
        let a = spec.render_config(0, &l);
        let b = spec.render_config(1, &l);
        let c = spec.render_config(2, &l);
        assert!(a.contains("name = \"b\"\ncluster_addr = \"127.0.0.1:5555\""), "{a}");
        assert!(a.contains("name = \"a\"\ncluster_addr = \"127.0.0.1:4370\""), "{a}");
        for other in [&b, &c] {
            assert!(!other.contains("5555"), "{other}");
            assert!(other.contains("name = \"b\"\ncluster_addr = \"127.0.0.1:4371\""), "{other}");
        }
        assert_eq!(a.replace("127.0.0.1:5555", "127.0.0.1:4371").replace("node a.", "node b."), b);
        assert!(a.contains("[server]\nmax_topics_per_socket = 2000\n"), "{a}");
        assert!(a.contains("[presence]\ndiff_ms = 20\nbroadcast_ms = 5\n"), "{a}");
        assert!(a.contains("heartbeat_ms = 100\nheartbeat_timeout_ms = 500\nlease_ms = 1000\nisolation_ms = 1677\nmax_drift = 0.01\n"), "{a}");
        assert!(a.contains("data_dir = \"/tmp/x/data\""), "{a}");
        assert!(a.ends_with("[[policy]]\ntopic = \"*\"\nexempt_roles = [\"admin\"]\n"), "{a}");
        assert_eq!(a.matches("[[cluster.nodes]]").count(), 3);
        assert!(!a.contains("[cluster.tls]"), "{a}");
    }

    #[test]
    fn a_tls_spec_writes_a_cluster_tls_section_with_the_node_placeholder() {
        let spec = ClusterSpec::new(2).tls();
        let a = spec.render_config(0, &layout(2, &[]));
        assert!(
            a.contains("[cluster.tls]\ncert = \"/tmp/x/tls/{node}.crt\"\nkey = \"/tmp/x/tls/{node}.key\"\nca = \"/tmp/x/tls/ca.crt\"\n"),
            "{a}"
        );
    }

    #[test]
    fn a_missing_binary_panics_with_its_path() {
        let mut cluster = ClusterSpec::new(1).create("/nonexistent/roster");
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cluster.start_node(0))).unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("/nonexistent/roster"), "{msg}");
    }
}
