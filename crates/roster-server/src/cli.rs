//! The `roster` command line: `serve`, `token` and `status`.
//!
//! Parsing is [`Cli`] (clap derive). The subcommands that only compute something live here as
//! plain functions that take their inputs (the environment's secret, the clock) as arguments
//! and return what to print, so tests call them directly; the binary prints and sets the exit
//! code. `serve` lives in the binary.

use crate::http_get;
use crate::token::{self, Claims};
use clap::{Args, Parser, Subcommand};
use roster_core::{Config, ConfigError, NodeName, UserId, MIN_SECRET_BYTES};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable whose value, when set and not empty, replaces `[auth] secret`.
pub const SECRET_ENV: &str = "ROSTER_SECRET";

/// The environment variable whose value, when set and not empty, replaces `[auth] api_key`.
pub const API_KEY_ENV: &str = "ROSTER_API_KEY";

/// Default lifetime of a token minted by `roster token`: 24 hours.
pub const DEFAULT_TOKEN_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// `roster`: a presence cluster with a cluster-wide single slot per user.
#[derive(Debug, Parser)]
#[command(name = "roster", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `roster`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node. Without --config: one node on 127.0.0.1:4000 with a generated secret.
    Serve(ServeArgs),
    /// Print a client token signed with the configured secret.
    Token(TokenArgs),
    /// Print a node's view of the cluster (its GET /cluster).
    Status(StatusArgs),
}

/// `roster serve [--config FILE] [--node NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ServeArgs {
    /// The cluster configuration (cluster.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Which [[cluster.nodes]] entry this process is; required when the config has several.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Append every slot and lease record (grant, horizon, revoke, close, lease change) to
    /// FILE as JSON lines with Unix-millisecond times, for checking a run afterwards.
    #[arg(long, value_name = "FILE")]
    pub records: Option<PathBuf>,
}

/// `roster token (--config FILE | --secret S) --user U [--role R] [--ttl-ms N] [--topic P]...`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct TokenArgs {
    /// Sign with this config's [auth] secret (ROSTER_SECRET overrides it).
    #[arg(long, value_name = "FILE", conflicts_with = "secret")]
    pub config: Option<PathBuf>,
    /// Sign with this secret (visible in `ps`: prefer ROSTER_SECRET or --config).
    #[arg(long, value_name = "S")]
    pub secret: Option<String>,
    /// The user id (the token's `sub`); neither empty nor "anonymous".
    #[arg(long, value_name = "U")]
    pub user: String,
    /// The user's role (the token's `role`), matched against a policy's exempt_roles.
    #[arg(long, value_name = "R", default_value = "user")]
    pub role: String,
    /// How long the token holds, in milliseconds (rounded up to whole seconds).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TOKEN_TTL_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl_ms: u64,
    /// Limit the token to topics matching PATTERN (`room:*`, `lobby`, `*`): its `topics`
    /// claim. Repeat for several; without it, any topic.
    #[arg(long = "topic", value_name = "PATTERN")]
    pub topics: Vec<String>,
}

/// `roster status [--config FILE] [--node NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct StatusArgs {
    /// The cluster configuration; without it, the node `roster serve` runs alone
    /// (127.0.0.1:4000).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Which node to ask; default: the first of [[cluster.nodes]].
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

/// Why a command failed. Nothing was printed on stdout; the binary prints this on stderr and
/// exits with status 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The config file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The config file was read but refused (syntax, unknown key, invalid value, unknown node).
    #[error("{}: {error}", path.display())]
    Config {
        /// The file (or `(built-in single node)` when none was given).
        path: PathBuf,
        /// What is wrong with it.
        error: ConfigError,
    },
    /// `roster token` has no secret to sign with.
    #[error("no secret to sign with: pass --config FILE (with [auth] secret), or --secret S, or set {SECRET_ENV}")]
    NoSecret,
    /// The config's `[auth] secret` is empty (the server would generate a random one, which
    /// no token minted here could match) and `ROSTER_SECRET` is not set.
    #[error(
        "{} has an empty [auth] secret (a server started with it generates a random secret at start): set \
         [auth] secret, or {SECRET_ENV}",
        path.display()
    )]
    EmptyConfigSecret {
        /// The config file.
        path: PathBuf,
    },
    /// `--secret ""`.
    #[error("--secret is empty")]
    EmptySecret,
    /// The secret to sign with (`--secret` or `ROSTER_SECRET`) is shorter than
    /// [`MIN_SECRET_BYTES`]: no server would accept it.
    #[error(
        "the secret is {0} bytes long: a token secret needs at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand \
         -base64 32`)"
    )]
    ShortSecret(usize),
    /// A `--topic` is not a topic pattern.
    #[error("--topic {0:?} is not a topic pattern: a topic, a prefix ending in '*', or \"*\" ('*' only last)")]
    BadTopic(String),
    /// `--user` names no user a token may carry.
    #[error("--user: {0}")]
    BadUser(token::TokenError),
    /// The node's HTTP address did not answer.
    #[error("node {node} at {addr} did not answer ({detail}); is `roster serve` running for it?")]
    Unreachable {
        /// The node asked.
        node: NodeName,
        /// Its `http_addr`.
        addr: String,
        /// The transport error.
        detail: String,
    },
    /// The node answered with an HTTP error or a body that is not JSON.
    #[error("GET {url} failed: {detail}")]
    BadResponse {
        /// The URL asked.
        url: String,
        /// The status and body, or the parse error.
        detail: String,
    },
}

/// Read and validate a `cluster.toml`.
pub fn load_config(path: &Path) -> Result<Config, CliError> {
    let text = std::fs::read_to_string(path).map_err(|error| CliError::ReadConfig { path: path.to_owned(), error })?;
    Config::from_toml_str(&text).map_err(|error| CliError::Config { path: path.to_owned(), error })
}

/// The secret tokens are signed and checked with: `ROSTER_SECRET` when set and not empty,
/// else the config's `[auth] secret` when not empty, else none (a server then generates one).
pub fn effective_secret(config: &Config, env_secret: Option<&str>) -> Option<String> {
    let env = env_secret.filter(|s| !s.is_empty());
    let configured = Some(config.auth.secret.as_str()).filter(|s| !s.is_empty());
    env.or(configured).map(str::to_owned)
}

/// Refuse a secret shorter than [`MIN_SECRET_BYTES`] (the config's is checked when it loads;
/// this is for `ROSTER_SECRET` and `--secret`).
pub fn check_secret(secret: &str) -> Result<(), CliError> {
    match secret.len() {
        n if n < MIN_SECRET_BYTES => Err(CliError::ShortSecret(n)),
        _ => Ok(()),
    }
}

/// `roster token`: the token to print. `env_secret` is `ROSTER_SECRET` (if set), `now_unix_s`
/// the clock. The secret is `--secret`, else `ROSTER_SECRET`, else the config's.
pub fn token_command(args: &TokenArgs, env_secret: Option<&str>, now_unix_s: u64) -> Result<String, CliError> {
    let user = UserId::from(args.user.as_str());
    token::check_subject(&user).map_err(CliError::BadUser)?;
    if let Some(bad) = args.topics.iter().find(|p| !token::is_topic_pattern(p)) {
        return Err(CliError::BadTopic(bad.clone()));
    }
    let secret = match (&args.secret, &args.config) {
        (Some(s), _) if s.is_empty() => return Err(CliError::EmptySecret),
        (Some(s), _) => s.clone(),
        (None, Some(path)) => {
            let config = load_config(path)?;
            effective_secret(&config, env_secret).ok_or_else(|| CliError::EmptyConfigSecret { path: path.clone() })?
        }
        (None, None) => env_secret.filter(|s| !s.is_empty()).ok_or(CliError::NoSecret)?.to_owned(),
    };
    check_secret(&secret)?;
    let exp = now_unix_s.saturating_add(args.ttl_ms.div_ceil(1000));
    let mut claims = Claims::new(user, args.role.as_str(), exp);
    if !args.topics.is_empty() {
        claims = claims.with_topics(args.topics.iter().cloned());
    }
    Ok(token::mint(secret.as_bytes(), &claims))
}

/// `roster status`: ask the node for `GET /cluster` and render the answer as text. The request
/// carries the API key (`env_api_key`, `ROSTER_API_KEY` when set, else the config's `[auth]
/// api_key`), which `/cluster` needs unless `[auth] open_endpoints` lists it.
pub fn status_command(args: &StatusArgs, env_api_key: Option<&str>) -> Result<String, CliError> {
    let (config, path) = match &args.config {
        Some(path) => (load_config(path)?, path.clone()),
        None => (Config::single_node(), PathBuf::from("(built-in single node)")),
    };
    let node = match &args.node {
        Some(name) => {
            config.require_node(&NodeName::from(name.as_str())).map_err(|error| CliError::Config { path, error })?
        }
        None => config
            .cluster
            .nodes
            .first()
            .ok_or_else(|| CliError::Config { path, error: ConfigError::Invalid("no [[cluster.nodes]]".to_owned()) })?,
    };
    let api_key = env_api_key.filter(|k| !k.is_empty()).unwrap_or(&config.auth.api_key);
    let status = fetch_cluster_status(&node.name, &node.http_addr, Some(api_key), Duration::from_secs(5))?;
    Ok(render_cluster_status(&status))
}

/// `GET http://<http_addr>/cluster` (with `Authorization: Bearer <api_key>` when the key is
/// given and not empty), parsed as JSON.
pub fn fetch_cluster_status(
    node: &NodeName,
    http_addr: &str,
    api_key: Option<&str>,
    timeout: Duration,
) -> Result<Value, CliError> {
    let url = format!("http://{http_addr}/cluster");
    let bearer = api_key.filter(|k| !k.is_empty());
    let response = http_get::get(http_addr, "/cluster", bearer, timeout).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            CliError::BadResponse { url: url.clone(), detail: e.to_string() }
        }
        _ => CliError::Unreachable { node: node.clone(), addr: http_addr.to_owned(), detail: e.to_string() },
    })?;
    if response.status != 200 {
        return Err(CliError::BadResponse {
            url,
            detail: format!("HTTP {}: {}", response.status, response.body.trim()),
        });
    }
    serde_json::from_str(&response.body).map_err(|e| CliError::BadResponse { url, detail: format!("not JSON: {e}") })
}

/// A `/cluster` answer as text: its scalar top-level fields as `key: value` lines, then its
/// `nodes` (an array of objects, or an object of objects keyed by name) as a table with a
/// column per field found. Any other shape is printed as pretty JSON.
pub fn render_cluster_status(status: &Value) -> String {
    let Some(obj) = status.as_object() else { return pretty(status) };
    // A node's /cluster lists its "peers"; a table of them reads best.
    let list_key = if obj.contains_key("nodes") { "nodes" } else { "peers" };
    let rows: Vec<Vec<(String, String)>> = match obj.get(list_key) {
        Some(Value::Array(nodes)) if nodes.iter().all(Value::is_object) => nodes
            .iter()
            .filter_map(Value::as_object)
            .map(|n| n.iter().map(|(k, v)| (k.clone(), cell(v))).collect())
            .collect(),
        Some(Value::Object(nodes)) if nodes.values().all(Value::is_object) => nodes
            .iter()
            .map(|(name, n)| {
                let fields = n.as_object().into_iter().flatten().filter(|(k, _)| *k != "name");
                std::iter::once(("name".to_owned(), name.clone()))
                    .chain(fields.map(|(k, v)| (k.clone(), cell(v))))
                    .collect()
            })
            .collect(),
        _ => return pretty(status),
    };
    let mut out = String::new();
    for (key, value) in obj.iter().filter(|(k, _)| *k != list_key) {
        out.push_str(&format!("{key}: {}\n", cell(value)));
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&table(&rows));
    out
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// One table cell: strings bare, short lists of scalars joined by commas, long lists counted,
/// anything else as compact JSON cut to a readable width.
fn cell(value: &Value) -> String {
    const MAX_LIST: usize = 8;
    const MAX_WIDTH: usize = 40;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) if items.len() > MAX_LIST => format!("{} items", items.len()),
        Value::Array(items) if items.iter().all(|v| !v.is_array() && !v.is_object()) => {
            items.iter().map(cell).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    };
    if text.chars().count() > MAX_WIDTH {
        let cut: String = text.chars().take(MAX_WIDTH - 1).collect();
        return format!("{cut}…");
    }
    text
}

fn table(rows: &[Vec<(String, String)>]) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for (key, _) in rows.iter().flatten() {
        if !columns.contains(&key.as_str()) {
            columns.push(key);
        }
    }
    let grid: Vec<Vec<&str>> = std::iter::once(columns.clone())
        .chain(rows.iter().map(|row| {
            columns.iter().map(|c| row.iter().find(|(k, _)| k == c).map_or("", |(_, v)| v.as_str())).collect::<Vec<_>>()
        }))
        .collect();
    let widths: Vec<usize> =
        (0..columns.len()).map(|i| grid.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &grid {
        let line: Vec<String> = row.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    const NOW: u64 = 1_700_000_000;
    /// Secrets long enough to be accepted (32 bytes and more).
    const S: &str = "s-0123456789abcdef0123456789abcdef";
    const FLAG: &str = "flag-0123456789abcdef0123456789abcdef";
    const ENV: &str = "env-0123456789abcdef0123456789abcdef";
    const FROM_CONFIG: &str = "from-config-0123456789abcdef0123456789abcdef";

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("roster").chain(args.iter().copied()))
    }

    fn token_args(args: &[&str]) -> TokenArgs {
        match parse(&[&["token"], args].concat()).unwrap().command {
            Command::Token(t) => t,
            other => panic!("parsed as {other:?}"),
        }
    }

    /// A config file in the temp directory, removed on drop.
    struct TempConfig(PathBuf);

    impl TempConfig {
        fn new(name: &str, text: &str) -> Self {
            let path = std::env::temp_dir().join(format!("roster-cli-{}-{name}.toml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }

    impl Drop for TempConfig {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn one_node(secret: &str, http_addr: &str) -> String {
        format!(
            "[auth]\nsecret = \"{secret}\"\napi_key = \"config-key\"\n\n[[cluster.nodes]]\nname = \"a\"\ncluster_addr = \"127.0.0.1:4370\"\n\
             http_addr = \"{http_addr}\"\n"
        )
    }

    #[test]
    fn serve_parses_with_and_without_config() {
        let Command::Serve(bare) = parse(&["serve"]).unwrap().command else { panic!() };
        assert_eq!(bare, ServeArgs { config: None, node: None, records: None });
        let Command::Serve(full) = parse(&["serve", "--config", "cluster.toml", "--node", "b"]).unwrap().command else {
            panic!()
        };
        assert_eq!(full, ServeArgs { config: Some("cluster.toml".into()), node: Some("b".to_owned()), records: None });
    }

    #[test]
    fn token_defaults_to_role_user_and_one_day() {
        let t = token_args(&["--secret", S, "--user", "42"]);
        assert_eq!((t.role.as_str(), t.ttl_ms, t.config), ("user", 86_400_000, None));
        assert!(t.topics.is_empty());
    }

    #[test]
    fn token_requires_a_user_and_refuses_both_config_and_secret() {
        assert!(parse(&["token", "--secret", S]).is_err());
        let err = parse(&["token", "--config", "c.toml", "--secret", S, "--user", "1"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let err = parse(&["token", "--secret", S, "--user", "1", "--ttl-ms", "0"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn status_parses_config_and_node() {
        let Command::Status(s) = parse(&["status", "--config", "c.toml", "--node", "b"]).unwrap().command else {
            panic!()
        };
        assert_eq!(s, StatusArgs { config: Some("c.toml".into()), node: Some("b".to_owned()) });
    }

    #[test]
    fn token_from_secret_verifies_with_its_claims() {
        let args = token_args(&["--secret", S, "--user", "42", "--role", "admin", "--ttl-ms", "1500"]);
        let token = token_command(&args, None, NOW).unwrap();
        let claims = token::verify(S.as_bytes(), &token, NOW).unwrap();
        assert_eq!(claims, Claims::new("42", "admin", NOW + 2));
    }

    #[test]
    fn token_with_topics_carries_them_as_its_topics_claim() {
        let args = token_args(&["--secret", S, "--user", "42", "--topic", "room:*", "--topic", "lobby"]);
        let claims = token::verify(S.as_bytes(), &token_command(&args, None, NOW).unwrap(), NOW).unwrap();
        assert_eq!(claims.topics, Some(vec!["room:*".to_owned(), "lobby".to_owned()]));
        let args = token_args(&["--secret", S, "--user", "42", "--topic", "ro*m"]);
        assert!(matches!(token_command(&args, None, NOW), Err(CliError::BadTopic(p)) if p == "ro*m"));
    }

    #[test]
    fn token_with_a_secret_under_32_bytes_is_refused() {
        let args = token_args(&["--secret", "short", "--user", "42"]);
        let err = token_command(&args, None, NOW).unwrap_err();
        assert!(matches!(err, CliError::ShortSecret(5)), "{err}");
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        let args = token_args(&["--user", "42"]);
        assert!(matches!(token_command(&args, Some(&"x".repeat(31)), NOW), Err(CliError::ShortSecret(31))));
        assert!(token_command(&args, Some(&"x".repeat(32)), NOW).is_ok());
    }

    #[test]
    fn token_secret_flag_beats_env_and_env_beats_config() {
        let args = token_args(&["--secret", FLAG, "--user", "42"]);
        assert!(token::verify(FLAG.as_bytes(), &token_command(&args, Some(ENV), NOW).unwrap(), NOW).is_ok());

        let config = TempConfig::new("env-beats-config", &one_node(FROM_CONFIG, "127.0.0.1:4000"));
        let args = token_args(&["--config", config.0.to_str().unwrap(), "--user", "42"]);
        assert!(token::verify(ENV.as_bytes(), &token_command(&args, Some(ENV), NOW).unwrap(), NOW).is_ok());
        assert!(token::verify(FROM_CONFIG.as_bytes(), &token_command(&args, None, NOW).unwrap(), NOW).is_ok());
        // An empty ROSTER_SECRET counts as unset.
        assert!(token::verify(FROM_CONFIG.as_bytes(), &token_command(&args, Some(""), NOW).unwrap(), NOW).is_ok());
    }

    #[test]
    fn token_without_any_secret_is_a_clear_error() {
        let args = token_args(&["--user", "42"]);
        assert!(matches!(token_command(&args, None, NOW), Err(CliError::NoSecret)));
        assert!(matches!(token_command(&args, Some(""), NOW), Err(CliError::NoSecret)));
        assert!(token::verify(ENV.as_bytes(), &token_command(&args, Some(ENV), NOW).unwrap(), NOW).is_ok());
        let err = token_command(&token_args(&["--secret", "", "--user", "42"]), None, NOW).unwrap_err();
        assert!(matches!(err, CliError::EmptySecret));
    }

    #[test]
    fn token_with_config_of_empty_secret_is_a_clear_error() {
        let config = TempConfig::new("empty-secret", &one_node("", "127.0.0.1:4000"));
        let args = token_args(&["--config", config.0.to_str().unwrap(), "--user", "42"]);
        let err = token_command(&args, None, NOW).unwrap_err();
        assert!(matches!(&err, CliError::EmptyConfigSecret { path } if *path == config.0));
        assert!(err.to_string().contains("empty [auth] secret"), "{err}");
    }

    #[test]
    fn token_with_unreadable_or_invalid_config_names_the_file() {
        let args = token_args(&["--config", "/nonexistent/cluster.toml", "--user", "42"]);
        let err = token_command(&args, None, NOW).unwrap_err();
        assert!(matches!(err, CliError::ReadConfig { .. }) && err.to_string().contains("/nonexistent/cluster.toml"));

        let config = TempConfig::new("invalid", "[auth]\nsecret = \"s\"\nfoo = 1\n");
        let args = token_args(&["--config", config.0.to_str().unwrap(), "--user", "42"]);
        assert!(matches!(token_command(&args, None, NOW), Err(CliError::Config { .. })));
    }

    #[test]
    fn token_for_a_reserved_user_is_refused() {
        for user in ["anonymous", ""] {
            let args = token_args(&["--secret", S, "--user", user]);
            assert!(matches!(token_command(&args, None, NOW), Err(CliError::BadUser(_))), "{user:?}");
        }
    }

    /// Serve one HTTP request with `status` and `body`; returns the address and the request line
    /// followed by its `authorization` header, if any (name in lowercase).
    fn one_shot_http(status: &'static str, body: &'static str) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut seen = vec![request_line.trim_end().to_owned()];
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                if let Some((name, value)) = line.trim_end().split_once(": ") {
                    if name.eq_ignore_ascii_case("authorization") {
                        seen.push(format!("authorization: {value}"));
                    }
                }
                line.clear();
            }
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).unwrap();
            seen
        });
        (addr, handle)
    }

    #[test]
    fn status_gets_cluster_from_the_configured_node_and_prints_a_table() {
        let body = r#"{"node":"a","nodes":[{"name":"a","alive":true,"partitions":3},{"name":"b","alive":false}]}"#;
        let (addr, server) = one_shot_http("200 OK", body);
        let config = TempConfig::new("status", &one_node(S, &addr));
        let args = StatusArgs { config: Some(config.0.clone()), node: Some("a".to_owned()) };
        let text = status_command(&args, None).unwrap();
        assert_eq!(server.join().unwrap(), ["GET /cluster HTTP/1.1", "authorization: Bearer config-key"]);
        assert_eq!(text, "node: a\n\nname  alive  partitions\na     true   3\nb     false\n");
    }

    #[test]
    fn status_sends_the_env_api_key_over_the_configs() {
        let (addr, server) = one_shot_http("200 OK", r#"{"node":"a","peers":[]}"#);
        let config = TempConfig::new("status-env-key", &one_node(S, &addr));
        let args = StatusArgs { config: Some(config.0.clone()), node: None };
        assert!(status_command(&args, Some("env-key")).unwrap().starts_with("node: a\n"));
        assert_eq!(server.join().unwrap(), ["GET /cluster HTTP/1.1", "authorization: Bearer env-key"]);
    }

    #[test]
    fn status_of_an_unknown_node_lists_the_configured_ones() {
        let config = TempConfig::new("status-unknown", &one_node(S, "127.0.0.1:4000"));
        let args = StatusArgs { config: Some(config.0.clone()), node: Some("zz".to_owned()) };
        let err = status_command(&args, None).unwrap_err();
        assert!(err.to_string().contains("\"a\""), "{err}");
    }

    #[test]
    fn status_reports_http_errors_and_unreachable_nodes() {
        let (addr, server) = one_shot_http("503 Service Unavailable", "not ready");
        let err = fetch_cluster_status(&"a".into(), &addr, None, Duration::from_secs(5)).unwrap_err();
        server.join().unwrap();
        assert!(matches!(&err, CliError::BadResponse { detail, .. } if detail == "HTTP 503: not ready"), "{err}");

        // A port that was just free: nothing listens there.
        let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let err = fetch_cluster_status(&"a".into(), &free, None, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, CliError::Unreachable { .. }), "{err}");
    }

    #[test]
    fn cluster_status_of_nodes_keyed_by_name_is_a_table_too() {
        let status = json!({"nodes": {"a": {"alive": true, "held": [1, 2, 3]}, "b": {"alive": false, "held": []}}});
        assert_eq!(render_cluster_status(&status), "name  alive  held\na     true   1,2,3\nb     false  -\n");
    }

    #[test]
    fn cluster_status_cells_stay_readable() {
        let many: Vec<u32> = (0..256).collect();
        let status = json!({"nodes": [{"name": "a", "held": many, "lease": {"expires_ms": 1_700_000_000_000_u64, "epoch": 123_456_789_012_u64}}]});
        let text = render_cluster_status(&status);
        assert!(text.contains("256 items"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() < 80), "{text}");
    }

    #[test]
    fn cluster_status_of_unknown_shape_is_pretty_json() {
        for status in [json!({"hello": "world"}), json!([1, 2]), json!({"nodes": [1, 2]})] {
            assert_eq!(render_cluster_status(&status), format!("{}\n", serde_json::to_string_pretty(&status).unwrap()));
        }
    }
}
