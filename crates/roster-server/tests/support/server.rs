//! A real `roster serve` process for the end-to-end tests: one node on 127.0.0.1 with free
//! ports, a config written for the test, a fresh data dir, and its stderr kept for failure
//! messages. Killed (and its files removed) on drop.
//!
//! ```ignore
//! let server = Server::builder().server_key("max_pushes_per_second = 10").policy(r#"topic = "call:*""#).start();
//! let input = server.input(&[("alice", server.token("alice"))]);
//! server.run_scenario("flood.mjs", &input); // tests/js/scenarios/flood.mjs
//! ```
//!
//! `cargo test -p roster-server --test bad_input -- --nocapture` shows each script's steps.

#![allow(dead_code)]

use roster_server::{mint, Claims};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The HMAC secret of every test server.
pub const SECRET: &str = "srvtest-secret-0123456789abcdef0123";
/// The backend API key of every test server.
pub const API_KEY: &str = "srvtest-api-key";
/// How long a server may take to answer `/health` and `/ready`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one scenario script may run.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// What to put in a test server's config beyond the fixed parts.
#[derive(Default)]
pub struct ServerBuilder {
    server_keys: Vec<String>,
    auth_keys: Vec<String>,
    policies: Vec<String>,
    secret: Option<String>,
}

impl ServerBuilder {
    /// A `key = value` line for the `[auth]` table.
    pub fn auth_key(mut self, line: &str) -> Self {
        self.auth_keys.push(line.to_owned());
        self
    }

    /// Another `[auth] secret` than [`SECRET`] (`""`: the server generates one).
    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = Some(secret.to_owned());
        self
    }

    /// A `key = value` line for the `[server]` table.
    pub fn server_key(mut self, line: &str) -> Self {
        self.server_keys.push(line.to_owned());
        self
    }

    /// The body of one `[[policy]]` table (TOML lines), in order.
    pub fn policy(mut self, body: &str) -> Self {
        self.policies.push(body.to_owned());
        self
    }

    /// Write the config and start the node; returns once `/health` and `/ready` answer 200.
    pub fn start(self) -> Server {
        Server::start(self)
    }
}

/// A running `roster serve` process. See the module documentation.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`, the node's `http_addr`.
    pub http_addr: String,
    dir: PathBuf,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// A server with the given config additions.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    fn start(b: ServerBuilder) -> Server {
        static NEXT_DIR: AtomicU32 = AtomicU32::new(0);
        let [http_port, cluster_port] = free_ports();
        let http_addr = format!("127.0.0.1:{http_port}");
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "roster-srvtest-{}-{}-{nanos}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the test server's dir");
        let config = format!(
            r#"[auth]
secret = "{secret}"
api_key = "{API_KEY}"
{auth_keys}

[server]
{server_keys}

[presence]
diff_ms = 10

[cluster]
data_dir = "{data_dir}"

[[cluster.nodes]]
name = "n1"
cluster_addr = "127.0.0.1:{cluster_port}"
http_addr = "{http_addr}"
{policies}"#,
            secret = b.secret.as_deref().unwrap_or(SECRET),
            auth_keys = b.auth_keys.join("\n"),
            server_keys = b.server_keys.join("\n"),
            data_dir = dir.join("data").display(),
            policies = b.policies.iter().map(|p| format!("\n[[policy]]\n{p}\n")).collect::<String>(),
        );
        let config_path = dir.join("cluster.toml");
        std::fs::write(&config_path, &config).expect("write the test server's config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_roster"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(["--node", "n1"])
            .env_remove("ROSTER_SECRET")
            .env_remove("ROSTER_API_KEY")
            // Its log ends up in failure messages; RUST_LOG=debug cargo test ... for more.
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start roster serve");
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut out_pipe = child.stdout.take().expect("piped stdout");
        let out_sink = stdout.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out_pipe.read(&mut buf) {
                out_sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        let stderr_reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut server = Server { child, http_addr, dir, stdout, stderr, stderr_reader: Some(stderr_reader) };
        server.wait_until_serving(&config);
        server
    }

    /// Retry `/health`, then `/ready`, until both answer 200 (or the process exits, or
    /// [`START_TIMEOUT`] passes: then panic with its stderr).
    fn wait_until_serving(&mut self, config: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        for path in ["/health", "/ready"] {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "roster serve exited ({status}) before serving.\nconfig:\n{config}\nstderr:\n{}",
                        self.stderr()
                    );
                }
                if matches!(http_get(&self.http_addr, path), Ok((200, _))) {
                    break;
                }
                if Instant::now() >= deadline {
                    panic!(
                        "roster serve did not answer {path} with 200 within {START_TIMEOUT:?}.\nconfig:\n{config}\nstderr:\n{}",
                        self.stderr()
                    );
                }
                // Retrying a connection while the process starts up.
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `ws://127.0.0.1:PORT/socket` (what `new Socket(url)` takes; phoenix.js appends `/websocket`).
    pub fn socket_url(&self) -> String {
        format!("ws://{}/socket", self.http_addr)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// `GET path` on this server, without the API key: status, response head (lowercased) and
    /// body.
    pub fn get_with_head(&self, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(&self.http_addr).expect("connect to the test server");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("set a read timeout");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.http_addr)
            .expect("send the request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read the response");
        let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    /// A token for `user` with role `user`, valid for an hour.
    pub fn token(&self, user: &str) -> String {
        token_with(SECRET, user, "user", now_s() + 3600)
    }

    /// What the server wrote to stderr (its log) so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// What the server wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// `GET path` with the API key: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get_with(&self.http_addr, path, Some(API_KEY)).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The value of one sample of `/metrics` (e.g. `roster_limited_total{reason="max_sockets"}`),
    /// 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap_or_else(|_| panic!("{sample} = {v:?}")))
    }

    /// The JSON a scenario script takes as its argument: the URLs, the API key, and `tokens`.
    pub fn input(&self, tokens: &[(&str, String)]) -> String {
        let tokens: serde_json::Map<String, serde_json::Value> =
            tokens.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(v.as_str()))).collect();
        serde_json::json!({
            "ws": self.socket_url(),
            "http": self.http_url(),
            "apiKey": API_KEY,
            "tokens": tokens,
        })
        .to_string()
    }
}

impl Server {
    /// Run `tests/js/scenarios/<script>` with `input` (see [`Server::input`]) and assert that it
    /// succeeds and prints `ok` last; on failure, panic with its output and this server's stderr.
    pub fn run_scenario(&self, script: &str, input: &str) {
        let path = super::js::js_dir().join("scenarios").join(script);
        let (status, stdout, stderr) = super::js::run_node_script(&path, &[input], SCENARIO_TIMEOUT);
        // The script's steps (shown by the test harness with --nocapture).
        eprintln!("--- {script}:\n{stderr}");
        if !status.success() || stdout.lines().last() != Some("ok") {
            panic!(
                "scenario {script} failed ({status}).\n--- its stdout:\n{stdout}\n--- its stderr:\n{stderr}\n--- the server's stderr:\n{}",
                self.stderr()
            );
        }
    }
}

impl Server {
    /// The server process's id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A token signed with `secret` (any user, role and expiry: the bad-token tests need them).
pub fn token_with(secret: &str, user: &str, role: &str, exp: u64) -> String {
    mint(secret.as_bytes(), &Claims::new(user, role, exp))
}

/// Now, in Unix seconds.
pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// Two free ports below the kernel's ephemeral range, never the same port twice in this
/// test process (`roster_testkit::ports`: no outgoing connection takes one before the server
/// binds it).
fn free_ports() -> [u16; 2] {
    let ports = roster_testkit::ports::free_ports(2);
    [ports[0], ports[1]]
}

/// `GET path` over plain HTTP/1.1: status and body.
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_get_with(addr, path, None)
}

/// `GET path` over plain HTTP/1.1, with `Authorization: Bearer <key>` when given: status and
/// body.
pub fn http_get_with(addr: &str, path: &str, key: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}
