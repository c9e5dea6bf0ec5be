//! Running the JS test scripts (`tests/js/*.mjs`, the real `phoenix` client) under Node.
//!
//! The npm packages are installed on first use by `scripts/js-deps.sh` (once per test
//! process; the script itself does nothing when they are current).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The folder of the JS test scripts and their `package.json`.
#[allow(dead_code)]
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Install the npm packages if needed; panics with npm's output when that fails.
pub fn ensure_js_deps() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let output = Command::new("bash")
            .arg(root.join("scripts/js-deps.sh"))
            .output()
            .map_err(|e| format!("cannot run bash scripts/js-deps.sh: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/js-deps.sh failed ({}):\n{}{}",
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

/// Run `node <script> <args...>` (after [`ensure_js_deps`]) and return its exit status,
/// stdout and stderr. Panics, with the output so far, if it runs longer than `timeout`
/// (the process is killed first).
pub fn run_node_script(script: &Path, args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
    ensure_js_deps();
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(js_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node (Node 20+ is needed for the JS tests): {e}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "node {} {args:?} ran longer than {timeout:?}; killed.\nstdout:\n{}\nstderr:\n{}",
                script.display(),
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    (status, stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default())
}

/// Read a pipe to its end on a thread, so a chatty child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
