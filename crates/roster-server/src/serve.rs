//! `roster serve`: run one node until it is stopped.
//!
//! With no `--config`, one node on 127.0.0.1:4000 with demo mode on (`Config::demo`: the demo
//! page at `/`, its policies, an open dashboard), `/cluster` and `/metrics` open (it listens on
//! loopback only), and a generated secret. A generated secret is printed once, on stdout, with
//! a command that mints a token with it; never through the log, which often ends up in a log
//! store. SIGINT and SIGTERM shut down gracefully: slots and leases are released at once and
//! every client is closed with 1012 (reconnect).

use anyhow::{bail, Context};
use roster_core::{Config, NodeName, OpenEndpoint};
use roster_runtime::{Node, NodeOptions};
use roster_server::{
    check_secret, effective_secret, generate_secret, load_config, AppState, PhoenixEncoder, ServeArgs, API_KEY_ENV,
    SECRET_ENV,
};
use std::sync::Arc;

/// Run the node `args` describe until it is stopped (SIGINT/SIGTERM).
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (config, default_config) = match &args.config {
        Some(path) => (load_config(path)?, false),
        None => {
            let mut config = Config::demo();
            config.auth.open_endpoints = vec![OpenEndpoint::Cluster, OpenEndpoint::Metrics];
            (config, true)
        }
    };
    let node = match (&args.node, config.cluster.nodes.as_slice()) {
        (Some(n), _) => NodeName::from(n.as_str()),
        (None, [only]) => only.name.clone(),
        (None, _) => bail!("this config has several nodes: say which one this is with --node NAME"),
    };
    let http_addr = config.require_node(&node)?.http_addr.clone();
    let env_secret = std::env::var(SECRET_ENV).ok();
    let secret = match effective_secret(&config, env_secret.as_deref()) {
        Some(s) => {
            check_secret(&s).with_context(|| format!("{SECRET_ENV} (or [auth] secret)"))?;
            s
        }
        None if config.cluster.nodes.len() > 1 => bail!(
            "no token secret: a cluster needs the same [auth] secret (or {SECRET_ENV}) on every node, so none \
             can be generated here"
        ),
        None => {
            let s = generate_secret();
            print_token_hint(&s);
            s
        }
    };
    let api_key =
        std::env::var(API_KEY_ENV).ok().filter(|k| !k.is_empty()).unwrap_or_else(|| config.auth.api_key.clone());
    // Every shared push (a topic window's diff, a presence_state, a broadcast) is encoded once.
    let mut opts = NodeOptions::for_node(config, node.clone()).encoder(Arc::new(PhoenixEncoder));
    if default_config {
        opts = opts.data_dir(std::env::temp_dir().join("roster-data"));
    }
    if let Some(path) = &args.records {
        opts = opts.records(path);
    }
    tracing::info!(allocator = %crate::allocator::describe(), "memory");
    let node_handle = Node::start(opts).await.context("starting the node")?;
    let listener = tokio::net::TcpListener::bind(&http_addr).await.with_context(|| format!("binding {http_addr}"))?;
    eprintln!("roster node {node} serving ws://{http_addr}/socket/websocket (health: http://{http_addr}/health)");
    if node_handle.config().server.demo {
        // On stdout beside the token hint: what a newcomer reads, not a log line.
        println!("Demo: open http://{http_addr}/?topic=room:lobby&user=alice in two tabs (dashboard: http://{http_addr}/dashboard)");
    }
    let mut state = AppState::new(node_handle.clone(), secret.into_bytes(), api_key);
    if let Some(probe) = crate::allocator::probe() {
        state = state.with_allocator_probe(probe);
    }
    let state = Arc::new(state);
    let shutdown_node = node_handle.clone();
    let shutdown = async move {
        stop_signal().await;
        tracing::info!("shutting down: releasing slots and leases, closing clients with 1012");
        shutdown_node.shutdown().await;
    };
    roster_server::serve(listener, state, shutdown).await?;
    Ok(())
}

/// Tell a newcomer how to mint a token for the secret generated for this run. On stdout, never
/// through the tracing log (which may be shipped elsewhere), and as a command that runs as
/// printed in the shell that started this node.
fn print_token_hint(secret: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "No secret configured: generated one for this run. Mint a token with:");
    let _ = writeln!(out, "  {} token --secret={secret} --user 42", self_invocation());
    let _ = out.flush();
}

/// How the shell that started this process runs this binary again: `cargo run --bin roster --`
/// when `cargo run` started it, `roster` when that is what the `PATH` finds, else its full path.
fn self_invocation() -> String {
    let started_by_cargo = std::env::var_os("CARGO_MANIFEST_DIR").is_some()
        && std::env::var("CARGO_PKG_NAME").is_ok_and(|p| p == env!("CARGO_PKG_NAME"));
    if started_by_cargo {
        return "cargo run --bin roster --".into();
    }
    let Ok(me) = std::env::current_exe().and_then(|p| p.canonicalize()) else { return "roster".into() };
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("roster"))
            .find(|candidate| candidate.is_file())
            .and_then(|found| found.canonicalize().ok())
            .is_some_and(|found| found == me)
    });
    if on_path {
        "roster".into()
    } else {
        me.display().to_string()
    }
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
