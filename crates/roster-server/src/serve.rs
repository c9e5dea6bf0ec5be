//! `roster serve`: run one node until it is stopped.
//!
//! With no `--config`, one node on 127.0.0.1:4000 with the built-in defaults and a generated
//! secret, printed so a newcomer can mint tokens. SIGINT and SIGTERM shut down gracefully:
//! slots and leases are released at once and every client is closed with 1012 (reconnect).

use anyhow::{bail, Context};
use roster_core::{Config, NodeName};
use roster_runtime::{Node, NodeOptions};
use roster_server::{
    effective_secret, generate_secret, load_config, AppState, Metrics, PhoenixEncoder, ServeArgs, SECRET_ENV,
};
use std::sync::Arc;

/// The environment variable that overrides the config's `[auth] api_key`.
const API_KEY_ENV: &str = "ROSTER_API_KEY";

/// Run the node `args` describe until it is stopped (SIGINT/SIGTERM).
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (config, default_config) = match &args.config {
        Some(path) => (load_config(path)?, false),
        None => (Config::single_node(), true),
    };
    let node = match (&args.node, config.cluster.nodes.as_slice()) {
        (Some(n), _) => NodeName::from(n.as_str()),
        (None, [only]) => only.name.clone(),
        (None, _) => bail!("this config has several nodes: say which one this is with --node NAME"),
    };
    let http_addr = config.require_node(&node)?.http_addr.clone();
    let env_secret = std::env::var(SECRET_ENV).ok();
    let secret = match effective_secret(&config, env_secret.as_deref()) {
        Some(s) => s,
        None => {
            let s = generate_secret();
            eprintln!("No secret configured: generated one for this run. Mint a token with:");
            eprintln!("  ROSTER_SECRET={s} roster token --user 42");
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
    let node_handle = Node::start(opts).await.context("starting the node")?;
    let listener = tokio::net::TcpListener::bind(&http_addr).await.with_context(|| format!("binding {http_addr}"))?;
    eprintln!("roster node {node} serving ws://{http_addr}/socket/websocket (health: http://{http_addr}/health)");
    let state =
        Arc::new(AppState { node: node_handle.clone(), secret: secret.into_bytes(), api_key, metrics: Metrics::new() });
    let shutdown_node = node_handle.clone();
    let shutdown = async move {
        stop_signal().await;
        tracing::info!("shutting down: releasing slots and leases, closing clients with 1012");
        shutdown_node.shutdown().await;
    };
    roster_server::serve(listener, state, shutdown).await?;
    Ok(())
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
