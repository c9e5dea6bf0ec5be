//! The Rust side of `tests/js/driver.mjs`: one long-running Node process with the real
//! `phoenix` client, driven by JSON command lines (see the script's header for the commands
//! and events). Every line the driver writes is kept, in order, so a test can wait for a
//! reply or for an event that matches, with a deadline.
//!
//! ```ignore
//! let js = JsDriver::start();
//! js.connect("c1", &cluster.socket_url(0), &token);
//! let reply = js.join("c1", "room:1", "tab-1", json!({"name": "alice"}));
//! let list = js.presence("c1", "room:1"); // {key: [meta, ...]}, from phoenix's Presence
//! js.wait_event(Duration::from_secs(5), "c1 sees bob leave", |e| e["event"] == "presence_leave" && e["key"] == "bob")?;
//! ```

#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a command may take unless the caller says otherwise.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `node tests/js/driver.mjs`; killed on drop.
pub struct JsDriver {
    child: Child,
    stdin: Mutex<ChildStdin>,
    lines: Arc<(Mutex<Vec<Value>>, Condvar)>,
    stderr: Arc<Mutex<String>>,
    next_id: AtomicU64,
}

impl JsDriver {
    /// Install the npm packages if needed, start the driver and wait for its `driver_ready`.
    pub fn start() -> JsDriver {
        super::js::ensure_js_deps();
        let mut child = Command::new("node")
            .arg("driver.mjs")
            .current_dir(super::js::js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node (Node 20+ is needed for the JS tests): {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let lines: Arc<(Mutex<Vec<Value>>, Condvar)> = Arc::default();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let sink = lines.clone();
        thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line).unwrap_or_else(|_| json!({"event": "unparsed", "line": line}));
                sink.0.lock().unwrap().push(value);
                sink.1.notify_all();
            }
            sink.0.lock().unwrap().push(json!({"event": "driver_exit"}));
            sink.1.notify_all();
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let driver = JsDriver { child, stdin: Mutex::new(stdin), lines, stderr, next_id: AtomicU64::new(1) };
        driver
            .wait_line(0, Duration::from_secs(20), "driver_ready", |l| l["event"] == "driver_ready")
            .unwrap_or_else(|e| panic!("{e}"));
        driver
    }

    /// Send `cmd` (an object without `id`) and return the id it was given.
    pub fn send(&self, mut cmd: Value) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        cmd["id"] = id.into();
        let mut stdin = self.stdin.lock().unwrap();
        writeln!(stdin, "{cmd}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("write to the driver: {e}\n{}", self.describe()));
        id
    }

    /// The reply to command `id`, waiting up to `timeout`.
    pub fn reply(&self, id: u64, timeout: Duration) -> Result<Value, String> {
        self.wait_line(0, timeout, &format!("the reply to command {id}"), |l| l["reply"] == id)
    }

    /// Send `cmd` and wait for its reply; panics if none comes within `timeout`.
    pub fn request(&self, cmd: Value, timeout: Duration) -> Value {
        let what = cmd.to_string();
        let id = self.send(cmd);
        self.reply(id, timeout).unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Like [`request`](Self::request), and the reply must say `"ok": true`.
    pub fn call(&self, cmd: Value) -> Value {
        let what = cmd.to_string();
        let reply = self.request(cmd, COMMAND_TIMEOUT);
        assert_eq!(reply["ok"], true, "{what} failed: {reply}\n{}", self.describe());
        reply
    }

    /// Open socket `conn` to `url` with `token`; it reconnects by itself like a browser
    /// unless `reconnect` is false.
    pub fn connect_with(&self, conn: &str, url: &str, token: &str, reconnect: bool) {
        self.call(json!({"cmd": "connect", "conn": conn, "url": url, "token": token, "reconnect": reconnect}));
    }

    /// Open socket `conn` to `url` with `token` that does not reconnect (a test's sockets
    /// should not come back behind its back when a node dies).
    pub fn connect(&self, conn: &str, url: &str, token: &str) {
        self.connect_with(conn, url, token, false);
    }

    /// Join `topic` on `conn` with a `tab_id` and `meta`, events on; the reply must be ok.
    pub fn join(&self, conn: &str, topic: &str, tab_id: &str, meta: Value) -> Value {
        self.call(json!({"cmd": "join", "conn": conn, "topic": topic, "tab_id": tab_id, "meta": meta}))
    }

    /// Push `event` on `conn`'s channel of `topic`; returns the reply.
    pub fn push(&self, conn: &str, topic: &str, event: &str, payload: Value) -> Value {
        self.request(
            json!({"cmd": "push", "conn": conn, "topic": topic, "event": event, "payload": payload}),
            COMMAND_TIMEOUT,
        )
    }

    /// Close socket `conn` cleanly.
    pub fn disconnect(&self, conn: &str) {
        self.call(json!({"cmd": "disconnect", "conn": conn}));
    }

    /// The client-side presence list of `topic` on `conn` (phoenix's `Presence`):
    /// `{key: [meta, ...]}`.
    pub fn presence(&self, conn: &str, topic: &str) -> Value {
        self.call(json!({"cmd": "presence", "conn": conn, "topic": topic}))["list"].take()
    }

    /// How many lines the driver has written so far: pass it to
    /// [`wait_event_after`](Self::wait_event_after) to look only at what comes later.
    pub fn mark(&self) -> usize {
        self.lines.0.lock().unwrap().len()
    }

    /// The first event (not reply) that `matches`, waiting up to `timeout`; `Err` says what
    /// was awaited and shows the driver's last lines and stderr.
    pub fn wait_event(&self, timeout: Duration, what: &str, matches: impl Fn(&Value) -> bool) -> Result<Value, String> {
        self.wait_event_after(0, timeout, what, matches)
    }

    /// Like [`wait_event`](Self::wait_event), among the lines after `mark`.
    pub fn wait_event_after(
        &self,
        mark: usize,
        timeout: Duration,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        self.wait_line(mark, timeout, what, |l| l.get("event").is_some() && matches(l))
    }

    /// Every event so far that `matches`, in order.
    pub fn events(&self, matches: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.events_after(0, matches)
    }

    /// Every event after `mark` (see [`mark`](Self::mark)) that `matches`, in order.
    pub fn events_after(&self, mark: usize, matches: impl Fn(&Value) -> bool) -> Vec<Value> {
        let lines = self.lines.0.lock().unwrap();
        lines.iter().skip(mark).filter(|l| l.get("event").is_some() && matches(l)).cloned().collect()
    }

    fn wait_line(
        &self,
        from: usize,
        timeout: Duration,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        let (lock, ready) = &*self.lines;
        let mut lines = lock.lock().unwrap();
        let mut seen = from;
        loop {
            if let Some(found) = lines.iter().skip(seen).find(|l| matches(l)) {
                return Ok(found.clone());
            }
            seen = lines.len().max(from);
            let now = Instant::now();
            if now >= deadline {
                drop(lines);
                return Err(format!("JS driver: no {what} within {timeout:?}\n{}", self.describe()));
            }
            lines = ready.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// The driver's last 30 lines and its stderr.
    pub fn describe(&self) -> String {
        let lines = self.lines.0.lock().unwrap();
        let tail: Vec<String> = lines.iter().skip(lines.len().saturating_sub(30)).map(Value::to_string).collect();
        format!(
            "--- the JS driver's last {} lines:\n{}\n--- its stderr:\n{}",
            tail.len(),
            tail.join("\n"),
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for JsDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
