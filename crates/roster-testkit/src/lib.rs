//! What Roster's multi-process tests share: a cluster of real `roster serve` processes on
//! 127.0.0.1 and a TCP fault proxy to break the links between them.
//!
//! # Layout
//!
//! | module | what it holds |
//! |---|---|
//! | `cluster` | [`ClusterSpec`] (nodes, timings, config lines, policies, proxied pairs) and [`Cluster`] (the running processes: ready, `kill -9`, `SIGSTOP`/`SIGCONT`, restart, HTTP views, record logs and kill times for the P1 checker, [`Cluster::wait_until`]) |
//! | `fault_proxy` | [`FaultProxy`]: forwards TCP; [`cut`](FaultProxy::cut), [`stall`](FaultProxy::stall), [`heal`](FaultProxy::heal) |
//! | `http` | a minimal std-only HTTP `GET` for the nodes' views |
//! | [`ports`] | free ports for the nodes a test starts, below the kernel's ephemeral range (no outgoing connection takes one before the node binds it) |
//! | `tls` | [`TestCa`]: a CA and node certificates made by the test ([`ClusterSpec::tls`] uses it) |
//! | [`records`] | the nodes' record logs read into the simulation checker's history: P1 over a real cluster |
//! | [`chaos`] | `roster-chaos`: real nodes under a seeded client workload and fault schedule, the history, and the checker of P1–P5 (the binary is `src/bin/roster-chaos.rs`) |
//! | [`load`] | `roster-load`: N raw Phoenix v2 WebSockets against one node, and what they measure (the binary is `src/bin/roster-load.rs`) |
//!
//! The crate depends on `roster-sim` (for the simulation's checker) but not on `roster-server`: `roster-server`'s tests dev-depend on it and
//! pass the path of the binary they built (`env!("CARGO_BIN_EXE_roster")`). Its other
//! dependencies (tokio, tokio-tungstenite, clap, rcgen, …) are ones `roster-server` builds anyway.
//!
//! # A cluster in a test
//!
//! ```no_run
//! use roster_testkit::ClusterSpec;
//! use std::time::Duration;
//!
//! // Three nodes a, b, c; a dials b through a fault proxy (only the node listed earlier in
//! // [[cluster.nodes]] dials the later one, so only a's config names the proxy).
//! let mut cluster = ClusterSpec::new(3)
//!     .proxied(0, 1)
//!     .server_key("max_topics_per_socket = 2000")
//!     .policy("topic = \"*\"\nexempt_roles = [\"admin\"]")
//!     // In roster-server's tests: env!("CARGO_BIN_EXE_roster"), the binary cargo built.
//!     .start("target/debug/roster"); // waits until every node answers /ready
//!
//! cluster.proxy(0, 1).cut();
//! cluster.wait_until(Duration::from_secs(3), "a sees b down", |c| {
//!     c.peer_view(0, 1).is_some_and(|p| p["alive"] == false)
//! });
//! let list = cluster.presence(2, "room:lobby"); // c's replica: {key: {"metas": [...]}}
//! cluster.proxy(0, 1).heal();
//! cluster.kill9(2);
//! cluster.restart(2); // same config, same data dir, a new incarnation
//! cluster.wait_ready(2);
//! # let _ = list;
//! ```
//!
//! Each node gets its own config file `<tmp>/<name>.toml` (free ports; the configs differ
//! only in the peer addresses a proxy replaces), a `data_dir` under a fresh temp dir, and a
//! record log `<tmp>/<name>.records.jsonl` (`roster serve --records`: every slot and lease
//! record, for a P1 check over [`Cluster::record_logs`] and [`Cluster::kills`]). The
//! nodes' stdout and stderr are kept; every failure ([`Cluster::wait_until`] past its deadline,
//! a node exiting while awaited, an HTTP view that does not answer) panics with the last lines
//! of every node's output and its state (running, stopped, exited). Dropping the [`Cluster`]
//! kills every process and removes the temp dir (set `ROSTER_TESTKIT_KEEP=1` to keep it).
//!
//! # Timings
//!
//! [`Timings::FAST`]: heartbeats every 100 ms, a silent peer down after 500 ms, 1 s leases
//! and `isolation_ms = 1677`, the smallest the config's timing rule allows for them; the
//! spec adds `diff_ms = 10` and `broadcast_ms = 5`. A cold-started cluster is ready about
//! `isolation_ms` after its nodes start.
//!
//! # Rules for tests built on it
//!
//! - Wait for observable conditions with a deadline ([`Cluster::wait_until`]), never a
//!   sleep standing in for an event; assert timing only where a bound is promised (P3).
//! - Multi-process tests share two CPU cores with everything else and measure time bounds:
//!   run them one at a time (a static `Mutex` held for the whole test).

#![forbid(unsafe_code)]

pub mod chaos;
mod cluster;
mod fault_proxy;
mod http;
pub mod load;
pub mod ports;
pub mod records;
mod tls;

pub use cluster::{node_name, unix_ms, Cluster, ClusterSpec, Layout, Timings, API_KEY, COOKIE, SECRET};
pub use fault_proxy::{Direction, FaultProxy, LinkMode};
pub use http::{http_get, percent_encode};
pub use tls::TestCa;
