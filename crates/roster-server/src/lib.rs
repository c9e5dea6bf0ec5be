//! # roster-server
//!
//! Roster's gateway: what a client or a backend sees of a node. The Phoenix Channels v2
//! frames of the WebSocket, the client tokens, the JSON form of presence metas, and the
//! `roster` command line.
//!
//! ## Layout
//! - `token`: client tokens, `base64url(claims JSON).base64url(HMAC-SHA256)` ([`mint`],
//!   [`verify`], [`generate_secret`]).
//! - `frame`: the v2 serializer, `[join_ref, ref, topic, event, payload]` ([`Frame`]) and the
//!   frames the server sends (replies, `phx_close`, `phx_error`, pushes).
//! - `meta_json`: a client's JSON meta to the core's [`roster_core::Meta`] and back.
//! - `app`: the router ([`router`]) and [`serve`]: `/socket/websocket`, `/health`, `/ready`,
//!   `/cluster`, `/metrics`, and the backend API `/presence`, `/slot`, `/kick`.
//! - `connections`: the accept loop behind [`serve`]: connection limits, hyper's HTTP/1.1 with
//!   the header-read timeout and a deadline per request.
//! - `limits`: connections in total and per address, sockets per user, rate windows.
//! - `guard`: what one socket may send (reserved events, joins per second, meta size, the
//!   token's topics and expiry).
//! - `socket`: one Phoenix v2 WebSocket over a runtime connection.
//! - `user_api`: `GET /user?id=U`, a user as its home sees it ([`user_json`]).
//! - `demo`: demo mode's room page at `/` and its dev-only token endpoint.
//! - `dashboard`: the live dashboard at `/dashboard` and the admin topic that feeds it
//!   ([`Dashboard`]).
//! - `assets`: the pages' HTML, scripts and styles (`src/assets/`), compiled in.
//! - `metrics`: the Prometheus counters.
//! - `cli`: `roster serve | token | status` parsing ([`Cli`]) and the commands that only
//!   compute something ([`token_command`], [`status_command`]).
//!
//! The binary `roster` (`src/main.rs`) parses, installs the `tracing` subscriber (`RUST_LOG`,
//! default `info`, on stderr) and runs the command; `serve` is in `src/serve.rs`.
//!
//! The protocol and token format, for people writing their own client or backend, are in
//! `docs/protocol.md`.

mod app;
mod assets;
mod channels;
mod cli;
mod connections;
mod dashboard;
mod demo;
mod frame;
mod guard;
mod http_get;
mod limits;
mod meta_json;
mod metrics;
mod socket;
mod spare;
mod token;
mod user_api;
mod wire;

pub use app::{router, serve, AllocatorProbe, AppState};
pub use cli::*;
pub use dashboard::Dashboard;
pub use frame::*;
pub use meta_json::*;
pub use metrics::{Kind, Metrics};
pub use token::*;
pub use user_api::user_json;
