//! The commands `README.md` and `docs/` show work as written, for someone who has only the clone.
//!
//! - The README's start command (the first of "The two commands") is run exactly as written,
//!   from the repository root, until the node it starts serves `/health` on `127.0.0.1:4000`;
//!   the token hint that node prints on stdout is run as printed and must mint a token.
//! - `.ci/run` runs exactly the README's test command.
//! - Every other command in a shell block or an inline code span is checked: `roster …` must be
//!   written `cargo run --bin roster -- …` (nobody with only the clone has `roster` on the
//!   `PATH`) and is run (with a timeout; `serve` until it serves `/health`, then stopped when its
//!   block ends, so a later `status` in the block can talk to it); `cargo test`, `cargo bench` and
//!   `cargo run --example` must name packages, targets and tests that exist; scripts must exist
//!   and parse. A command of a kind this file does not know fails the test, so a new kind of
//!   command in the docs is taught here rather than left unchecked.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The tests of this file that start nodes take turns: the README's node and the sample
/// cluster's node `a` both listen on 127.0.0.1:4000.
static NODES_ON_FIXED_PORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How long a `serve` may take to answer `/health` (a `cargo run` may build first).
const SERVE_DEADLINE: Duration = Duration::from_secs(240);
/// How long any other command may run.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One command line as the docs show it.
#[derive(Clone, Debug)]
struct DocCommand {
    /// `file:line`, for messages.
    at: String,
    /// The line as written (comments and a `$ ` prompt removed).
    text: String,
    /// Commands of one fenced block share servers; an inline span is a block of its own.
    block: usize,
}

/// Every command of one markdown file: lines of `sh`/`bash`/`shell`/`console` blocks, and inline
/// code spans that start like a command.
fn commands_of(file: &str, text: &str, first_block: usize) -> Vec<DocCommand> {
    let mut out = Vec::new();
    let mut block = first_block;
    let mut fence: Option<bool> = None; // Some(is_shell) inside a fenced block
    let mut pending = String::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("{file}:{}", i + 1);
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => {
                    block += 1;
                    Some(matches!(info.trim(), "sh" | "bash" | "shell" | "console"))
                }
            };
            continue;
        }
        match fence {
            Some(true) => {
                let mut l = strip_comment(trimmed.strip_prefix("$ ").unwrap_or(trimmed)).trim().to_string();
                if l.is_empty() {
                    continue;
                }
                if let Some(head) = l.strip_suffix('\\') {
                    pending.push_str(head);
                    pending.push(' ');
                    continue;
                }
                if !pending.is_empty() {
                    l = std::mem::take(&mut pending) + &l;
                }
                out.push(DocCommand { at, text: l, block });
            }
            Some(false) => {}
            None => {
                for span in inline_spans(line) {
                    if looks_like_command(span) {
                        block += 1;
                        out.push(DocCommand { at: at.clone(), text: span.to_string(), block });
                    }
                }
            }
        }
    }
    out
}

/// A trailing ` # comment` (outside quotes) removed.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => return &line[..i],
            None if c == '#' && i == 0 => return "",
            None => {}
        }
        prev = c;
    }
    line
}

fn inline_spans(line: &str) -> impl Iterator<Item = &str> {
    line.split('`').enumerate().filter(|(i, _)| i % 2 == 1).map(|(_, s)| s)
}

/// An inline span that is a command someone would paste into a shell.
fn looks_like_command(span: &str) -> bool {
    let words: Vec<&str> = span.split_whitespace().skip_while(|w| is_assignment(w)).collect();
    match words.as_slice() {
        ["cargo", sub, ..] => ["run", "test", "bench", "build", "clippy", "fmt"].contains(sub),
        ["roster", sub, ..] => ["serve", "token", "status"].contains(sub),
        ["bash", script, ..] => script.starts_with("scripts/"),
        ["flock", _, rest @ ..] => looks_like_command(&rest.join(" ")),
        [first, ..] => first.starts_with("scripts/") || first.starts_with("./scripts/"),
        [] => false,
    }
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// A command split into its environment, program and arguments.
struct Parsed {
    env: Vec<(String, String)>,
    program: String,
    args: Vec<String>,
}

fn parse(cmd: &DocCommand) -> Result<Parsed, String> {
    let words = shell_words::split(&cmd.text).map_err(|e| format!("{}: cannot split `{}`: {e}", cmd.at, cmd.text))?;
    let mut env = Vec::new();
    let mut rest = words.into_iter().peekable();
    while let Some(w) = rest.next_if(|w| is_assignment(w)) {
        let (k, v) = w.split_once('=').expect("an assignment");
        env.push((k.to_string(), v.to_string()));
    }
    let program = rest.next().ok_or_else(|| format!("{}: empty command", cmd.at))?;
    Ok(Parsed { env, program, args: rest.collect() })
}

/// One target of a package: its kind (`bin`, `test`, `example`, ...), name and source file.
struct Target {
    kind: String,
    name: String,
    src: PathBuf,
}

/// What `cargo metadata` says about the workspace.
struct Workspace {
    /// Package name → its manifest dir and its targets.
    packages: BTreeMap<String, (PathBuf, Vec<Target>)>,
    default_members: Vec<String>,
}

impl Workspace {
    fn load() -> Self {
        let out = Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
            .current_dir(repo())
            .output()
            .expect("cargo metadata");
        assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
        let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
        let mut packages = BTreeMap::new();
        let mut ids = BTreeMap::new();
        for p in meta["packages"].as_array().expect("packages") {
            let name = p["name"].as_str().expect("name").to_string();
            let dir =
                PathBuf::from(p["manifest_path"].as_str().expect("manifest")).parent().expect("dir").to_path_buf();
            let targets = p["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .flat_map(|t| {
                    let tname = t["name"].as_str().expect("target name").to_string();
                    let src = PathBuf::from(t["src_path"].as_str().expect("src_path"));
                    t["kind"].as_array().expect("kind").iter().map(move |k| Target {
                        kind: k.as_str().expect("kind").to_string(),
                        name: tname.clone(),
                        src: src.clone(),
                    })
                })
                .collect();
            ids.insert(p["id"].as_str().expect("id").to_string(), name.clone());
            packages.insert(name, (dir, targets));
        }
        let default_members = meta["workspace_default_members"]
            .as_array()
            .map(|a| a.iter().filter_map(|id| ids.get(id.as_str()?).cloned()).collect())
            .unwrap_or_default();
        Self { packages, default_members }
    }

    /// The packages a cargo command without `-p` selects.
    fn selected<'a>(&'a self, package: Option<&'a str>) -> Vec<&'a str> {
        match package {
            Some(p) => vec![p],
            None => self.default_members.iter().map(String::as_str).collect(),
        }
    }

    /// The `(package, source path)` of each target of `kind` named `name` in the selection.
    fn find(&self, package: Option<&str>, kind: &str, name: &str) -> Vec<(String, PathBuf)> {
        self.selected(package)
            .into_iter()
            .filter_map(|p| self.packages.get(p).map(|t| (p, t)))
            .flat_map(|(p, (_, targets))| {
                targets.iter().filter(|t| t.kind == kind && t.name == name).map(move |t| (p.to_string(), t.src.clone()))
            })
            .collect()
    }
}

/// The cargo flags this checker reads, and the rest.
#[derive(Default)]
struct CargoArgs {
    sub: String,
    package: Option<String>,
    bin: Option<String>,
    example: Option<String>,
    test: Option<String>,
    bench: Option<String>,
    filters: Vec<String>,
    after_dashes: Vec<String>,
}

fn cargo_args(args: &[String]) -> CargoArgs {
    let mut c = CargoArgs { sub: args.first().cloned().unwrap_or_default(), ..Default::default() };
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        let value = args.get(i + 1).cloned();
        match a {
            "--" => {
                c.after_dashes = args[i + 1..].to_vec();
                break;
            }
            "-p" | "--package" => c.package = value,
            "--bin" => c.bin = value,
            "--example" => c.example = value,
            "--test" => c.test = value,
            "--bench" => c.bench = value,
            "--features" | "-F" | "-j" | "--jobs" | "--target-dir" | "--profile" => {}
            _ if a.starts_with('-') => {
                i += 1;
                continue;
            }
            _ => {
                c.filters.push(a.to_string());
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    c
}

/// Whether some function in the sources under `paths` has `filter` in its name (cargo's test
/// filter is a substring of the test's path).
fn a_test_matches(paths: &[PathBuf], filter: &str) -> bool {
    let last = filter.rsplit("::").next().unwrap_or(filter);
    paths.iter().any(|p| {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        text.match_indices("fn ").any(|(i, _)| {
            let name: String = text[i + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            name.contains(last)
        })
    })
}

fn rust_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "target" && n != "node_modules") {
            out.extend(rust_files_under(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// A command the checker runs, not only checks.
enum Runnable {
    /// The `roster` binary with these arguments.
    Roster(Vec<String>),
    /// A tool the docs use as is (`openssl`): the line runs in `bash`.
    Shell,
}

/// A check of one command's structure; `Ok(Some(..))` when it is to be run as well.
fn check(ws: &Workspace, cmd: &DocCommand) -> Result<Option<Runnable>, String> {
    let mut p = parse(cmd)?;
    // `flock LOCKFILE command…` (how heavy runs take turns on one machine): check the command.
    if p.program == "flock" && p.args.len() > 2 {
        let mut rest = p.args.split_off(1).into_iter();
        p.program = rest.next().expect("checked length");
        p.args = rest.collect();
    }
    let fail = |why: String| Err(format!("{}: `{}`: {why}", cmd.at, cmd.text));
    match p.program.as_str() {
        "roster" => fail(
            "`roster` is not on the PATH of someone who only has the clone: write `cargo run --bin roster -- …`".into(),
        ),
        "cargo" => {
            let c = cargo_args(&p.args);
            let package = c.package.as_deref();
            if let Some(name) = package {
                if !ws.packages.contains_key(name) {
                    return fail(format!("no package `{name}` in the workspace"));
                }
            }
            let placeholder = p.args.iter().any(|a| a == "..." || a == "…");
            match c.sub.as_str() {
                "run" => {
                    if let Some(bin) = &c.bin {
                        if ws.find(package, "bin", bin).is_empty() {
                            return fail(format!("no binary `{bin}` in {:?}", ws.selected(package)));
                        }
                        if bin == "roster" && !placeholder {
                            return Ok(Some(Runnable::Roster(c.after_dashes)));
                        }
                        return Ok(None);
                    }
                    if let Some(ex) = &c.example {
                        if ws.find(package, "example", ex).is_empty() {
                            return fail(format!("no example `{ex}` in {:?}", ws.selected(package)));
                        }
                        return Ok(None);
                    }
                    fail("a `cargo run` without `--bin` or `--example` is ambiguous in this workspace".into())
                }
                "test" | "bench" => {
                    if placeholder {
                        return Ok(None);
                    }
                    let (kind, target) = match (&c.test, &c.bench) {
                        (Some(t), _) => ("test", Some(t)),
                        (_, Some(b)) => ("bench", Some(b)),
                        _ => ("", None),
                    };
                    let sources: Vec<PathBuf> = match target {
                        Some(t) => {
                            let found = ws.find(package, kind, t);
                            if found.is_empty() {
                                return fail(format!("no {kind} target `{t}` in {:?}", ws.selected(package)));
                            }
                            found.into_iter().map(|(_, src)| src).collect()
                        }
                        None => ws
                            .selected(package)
                            .into_iter()
                            .filter_map(|p| ws.packages.get(p))
                            .flat_map(|(dir, _)| rust_files_under(dir))
                            .collect(),
                    };
                    for f in &c.filters {
                        if !a_test_matches(&sources, f) {
                            return fail(format!("no test or bench named like `{f}` there"));
                        }
                    }
                    Ok(None)
                }
                "build" | "fmt" | "clippy" => Ok(None),
                other => {
                    fail(format!("`cargo {other}` is not a command this checker knows: teach tests/doc_commands.rs"))
                }
            }
        }
        "bash" | "sh" => {
            let Some(script) = p.args.first() else { return fail("no script".into()) };
            check_script(&repo().join(script)).map_err(|why| format!("{}: `{}`: {why}", cmd.at, cmd.text))?;
            Ok(None)
        }
        s if s.starts_with("scripts/") || s.starts_with("./scripts/") => {
            check_script(&repo().join(s)).map_err(|why| format!("{}: `{}`: {why}", cmd.at, cmd.text))?;
            Ok(None)
        }
        // Certificates for `[cluster.tls]`, made the way docs/security.md shows.
        "openssl" => Ok(Some(Runnable::Shell)),
        other => fail(format!("`{other}` is not a command this checker knows: teach tests/doc_commands.rs")),
    }
}

fn check_script(path: &Path) -> Result<(), String> {
    if !path.is_file() {
        return Err(format!("{} does not exist", path.display()));
    }
    let out = Command::new("bash").arg("-n").arg(path).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("bash -n: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// The `roster` binary the test build made (`target/<profile>/roster`).
fn roster_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe.parent().and_then(|d| d.parent()).expect("target dir").join("roster");
    if !bin.exists() {
        let status =
            Command::new(env!("CARGO")).args(["build", "--bin", "roster"]).current_dir(repo()).status().expect("cargo");
        assert!(status.success(), "building the roster binary");
    }
    bin
}

/// `GET /health` answered 200.
fn healthy(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if std::io::Write::write_all(&mut s, req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

fn port_free(addr: &str) -> bool {
    TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_millis(300)).is_err()
}

/// A node started by a doc command; stopped (SIGTERM, then waited for) when dropped.
struct Server {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Start `cmd` and wait until `/health` on `addr` answers, or fail with what it printed.
    fn start(mut cmd: Command, addr: &str, what: &str) -> Server {
        assert!(port_free(addr), "{addr} is in use: stop whatever listens there to run `{what}`");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting `{what}`: {e}"));
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut server = Server { child, stdout, stderr };
        let deadline = Instant::now() + SERVE_DEADLINE;
        while !healthy(addr) {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("`{what}` exited ({status}) before serving /health on {addr}:\n{}", server.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "`{what}` did not serve /health on {addr} within {SERVE_DEADLINE:?}:\n{}",
                server.stderr()
            );
            std::thread::sleep(Duration::from_millis(100)); // polling an HTTP endpoint, not waiting for time
        }
        server
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next stdout line containing `needle`, within `within`.
    fn stdout_line(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a command to its end within `COMMAND_DEADLINE`; its stdout, or why it failed.
fn run_to_end(mut cmd: Command, what: &str) -> Result<String, String> {
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("starting `{what}`: {e}"))?;
    let deadline = Instant::now() + COMMAND_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let mut out = String::new();
            let mut err = String::new();
            child.stdout.take().expect("piped").read_to_string(&mut out).ok();
            child.stderr.take().expect("piped").read_to_string(&mut err).ok();
            return if status.success() { Ok(out) } else { Err(format!("`{what}` failed ({status}):\n{out}{err}")) };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("`{what}` did not end within {COMMAND_DEADLINE:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The HTTP address a `roster serve` invocation listens on.
fn serve_addr(args: &[String], cwd: &Path) -> String {
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .or_else(|| args.iter().find_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string)))
    };
    let Some(config) = flag("--config") else { return "127.0.0.1:4000".into() };
    let text = read(&cwd.join(config));
    let parsed: toml::Table = text.parse().expect("a TOML config");
    let nodes = parsed["cluster"]["nodes"].as_array().expect("[[cluster.nodes]]");
    let node = flag("--node").or_else(|| nodes.first()?.get("name")?.as_str().map(str::to_string));
    let chosen = nodes.iter().find(|n| n.get("name").and_then(|v| v.as_str()) == node.as_deref()).expect("the node");
    chosen["http_addr"].as_str().expect("http_addr").to_string()
}

/// The start command and the test command, in that order, from "The two commands".
fn readme_two_commands() -> (String, String) {
    let readme = read(&repo().join("README.md"));
    let section = readme.split("## The two commands").nth(1).expect("README has a \"## The two commands\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let cmds = commands_of("README.md", section, 0);
    let mut blocks: Vec<String> = Vec::new();
    for c in cmds {
        if blocks.len() < c.block {
            blocks.push(c.text);
        }
    }
    assert!(blocks.len() >= 2, "\"The two commands\" shows two shell blocks, found {blocks:?}");
    (blocks[0].clone(), blocks[1].clone())
}

#[test]
fn the_readme_start_command_serves_health_and_its_token_hint_runs_as_printed() {
    let _turn = NODES_ON_FIXED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let (start, _) = readme_two_commands();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("exec {start}")).current_dir(repo());
    let server = Server::start(cmd, "127.0.0.1:4000", &start);
    let hint = server
        .stdout_line("token", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("`{start}` printed no token hint on stdout; stderr:\n{}", server.stderr()));
    let line = server.stdout_line(" token ", Duration::from_secs(2)).unwrap_or(hint);
    let printed = line.trim();
    let token = run_to_end(
        {
            let mut c = Command::new("sh");
            c.arg("-c").arg(printed).current_dir(repo());
            c
        },
        printed,
    )
    .unwrap_or_else(|e| panic!("the printed hint does not run: {e}"));
    let token = token.trim();
    let (claims, sig) = token.split_once('.').unwrap_or_else(|| panic!("`{printed}` printed no token: {token:?}"));
    assert!(!sig.is_empty(), "a token has a signature: {token}");
    let claims = URL_SAFE_NO_PAD.decode(claims).expect("claims are base64url");
    let claims: Value = serde_json::from_slice(&claims).expect("claims are JSON");
    assert_eq!(claims["sub"], "42", "the hint mints a token for user 42: {claims}");
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let (_, test) = readme_two_commands();
    let ci = read(&repo().join(".ci/run"));
    let runs: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("exec "))
        .collect();
    assert_eq!(runs, [test.as_str()], ".ci/run must `exec` exactly the README's test command");
}

#[test]
fn every_command_in_the_readme_and_docs_runs_as_written() {
    let _turn = NODES_ON_FIXED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let ws = Workspace::load();
    let (start, test) = readme_two_commands();
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut all = Vec::new();
    for f in &files {
        let name = f.strip_prefix(repo()).unwrap_or(f).display().to_string();
        let first = all.last().map_or(0, |c: &DocCommand| c.block);
        all.extend(commands_of(&name, &read(f), first));
    }
    assert!(all.len() > 5, "the docs show commands: found {}", all.len());
    let mut problems = Vec::new();
    let mut to_run: Vec<(DocCommand, Parsed, Runnable)> = Vec::new();
    for c in &all {
        match check(&ws, c) {
            Ok(Some(run)) if c.text != start && c.text != test => {
                let parsed = parse(c).expect("checked");
                to_run.push((c.clone(), parsed, run));
            }
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
    }
    // Run each block's commands in order, in one scratch directory per block that holds copies
    // of the files the commands name (nothing is written into the clone); a block's servers
    // are kept until the block ends, so a `status` after a `serve` reaches it.
    let bin = roster_binary();
    let mut block = usize::MAX;
    let mut servers: Vec<Server> = Vec::new();
    let scratch = std::env::temp_dir().join(format!("roster-doc-commands-{}", std::process::id()));
    for (c, Parsed { env, args, .. }, run) in to_run {
        if c.block != block {
            servers.clear();
            block = c.block;
            let _ = std::fs::remove_dir_all(&scratch);
            std::fs::create_dir_all(&scratch).expect("scratch dir");
        }
        for a in &args {
            let src = repo().join(a);
            if src.is_file() && !a.contains('/') {
                std::fs::copy(&src, scratch.join(a)).expect("copy a named file");
            }
        }
        let what = format!("{} ({})", c.text, c.at);
        let args = match run {
            Runnable::Shell => {
                let mut cmd = Command::new("bash");
                cmd.arg("-c").arg(&c.text).current_dir(&scratch);
                if let Err(e) = run_to_end(cmd, &what) {
                    problems.push(e);
                }
                continue;
            }
            Runnable::Roster(args) => args,
        };
        let mut cmd = Command::new(&bin);
        cmd.args(&args).current_dir(&scratch).envs(env);
        if args.first().map(String::as_str) == Some("serve") {
            let addr = serve_addr(&args, &scratch);
            servers.push(Server::start(cmd, &addr, &what));
        } else if let Err(e) = run_to_end(cmd, &what) {
            problems.push(e);
        }
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(problems.is_empty(), "{} doc commands do not work as written:\n{}", problems.len(), problems.join("\n"));
}
