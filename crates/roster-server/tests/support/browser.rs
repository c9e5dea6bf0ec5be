//! Running the browser scenarios (`tests/js/browser/*.mjs`): headless Chromium driven by
//! `playwright-core` under Node.
//!
//! Chromium is Debian's `chromium`, installed on first use by `scripts/browser-deps.sh`
//! (the npm packages by `scripts/js-deps.sh`). Scenarios run one at a time in a test process
//! (each starts a browser), print their steps on stderr and `ok` last on stdout, and may ask
//! the test to act (`@@ <request>` on stdout, answered with one line on stdin), e.g. to kill a
//! node. Screenshots go to `<target>/tmp/browser-screenshots/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long one browser scenario may run, start to end.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the scenarios save their screenshots (a test artifact under the target dir).
pub fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots")
}

/// Install Chromium if needed; panics with the script's output when that fails.
pub fn ensure_browser() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/browser-deps.sh");
        let output =
            Command::new("bash").arg(&script).output().map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/browser-deps.sh failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Run `tests/js/browser/<script>` with `input` (JSON), answering its `@@` requests with
/// `on_request`; panics with its output (and `context()`, e.g. the servers' logs) unless it
/// prints `ok` last within [`SCENARIO_TIMEOUT`].
pub fn run_browser_scenario(
    script: &str,
    input: &serde_json::Value,
    mut on_request: impl FnMut(&str) -> String,
    context: impl Fn() -> String,
) {
    // One browser at a time: several at once on a small machine measure the scheduler.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    super::js::ensure_js_deps();
    ensure_browser();
    let path = super::js::js_dir().join("browser").join(script);
    let mut child = Command::new("node")
        .arg(&path)
        .arg(input.to_string())
        .current_dir(super::js::js_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node (Node 20+ is needed for the browser tests): {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + SCENARIO_TIMEOUT;
    let mut out = Vec::new();
    let failure = loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(request) = line.strip_prefix("@@ ") {
                    let answer = on_request(request);
                    let _ = writeln!(stdin, "{answer}");
                    let _ = stdin.flush();
                }
                out.push(line);
            }
            // The script ended (its stdout closed).
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                break Some(format!("ran longer than {SCENARIO_TIMEOUT:?}; killed"));
            }
        }
    };
    let status = child.wait().expect("wait for node");
    let stderr = stderr.join().unwrap_or_default();
    eprintln!("--- {script}:\n{stderr}");
    let failure = failure.or_else(|| {
        (!status.success() || out.last().map(String::as_str) != Some("ok")).then(|| format!("failed ({status})"))
    });
    if let Some(why) = failure {
        panic!(
            "browser scenario {script} {why}.\n--- its stdout:\n{}\n--- its stderr:\n{stderr}\n{}",
            out.join("\n"),
            context()
        );
    }
}
