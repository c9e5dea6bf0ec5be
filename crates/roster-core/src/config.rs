//! `cluster.toml` as types: one struct per section, every key with its documented default,
//! unknown keys rejected, and [`Config::validate`] refusing combinations that cannot work
//! (above all the timing rule of DESIGN.md, "Homes, leases and partitions", rule 11).
//!
//! Also the slot policy resolution: [`Config::policy_for`] picks the first `[[policy]]` whose
//! pattern matches a topic (or the built-in default) and returns a resolved [`Policy`], whose
//! [`Policy::scope_key`] names the slot a join competes for.
//!
//! Every duration is a `u64` of milliseconds whose name ends in `_ms`; nothing here reads a
//! clock or a file (the caller reads the file and passes its text).

use crate::ids::{NodeName, Role, Topic};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Why a configuration was refused. Nothing was loaded: the caller still has whatever
/// configuration it had before (at start-up, none: the node must not start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not TOML, has a key this version does not know, or a value of the wrong
    /// type. The message is the TOML parser's, with line and column.
    #[error("cluster.toml could not be read: {0}")]
    Parse(String),
    /// The file parsed but asks for something impossible. The message names each offending
    /// key, the value given and how to fix it (one line per problem).
    #[error("cluster.toml is not usable: {0}")]
    Invalid(String),
    /// The node asked for (`roster serve --node NAME`) is not in `[[cluster.nodes]]`.
    #[error("no [[cluster.nodes]] entry has name = \"{name}\"; the configured names are: {}", names(.known))]
    UnknownNode {
        /// The name asked for.
        name: NodeName,
        /// The names the configuration has, in file order.
        known: Vec<NodeName>,
    },
}

fn names(known: &[NodeName]) -> String {
    if known.is_empty() {
        return "(none)".to_owned();
    }
    known.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
}

/// The whole `cluster.toml`: one node's or a whole cluster's configuration. Every section is
/// optional; every key in it has a default (see each field). Build one with
/// [`Config::from_toml_str`] or [`Config::single_node`]; there is deliberately no `Default`,
/// because a configuration without nodes is not valid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[auth]`: token and API secrets.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[server]`: the client-facing WebSocket and HTTP side of each node.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[presence]`: the replicated presence table.
    #[serde(default)]
    pub presence: PresenceConfig,
    /// `[cluster]`: membership, partitions, heartbeats and leases.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// `[[policy]]`: slot policies, first match wins. Default: none, so every topic gets
    /// [`Policy::built_in`].
    #[serde(default)]
    pub policy: Vec<PolicyConfig>,
}

/// The shortest `[auth] secret` (or `ROSTER_SECRET`) accepted, in bytes: HMAC-SHA256 wants a
/// key at least as long as its output (RFC 7518, section 3.2), so a token cannot be forged by
/// guessing a short secret offline from one token.
pub const MIN_SECRET_BYTES: usize = 32;

/// The longest `[auth] token_leeway_ms` accepted: five minutes. A leeway is for clocks that
/// disagree by seconds, not for keeping expired tokens alive.
pub const MAX_TOKEN_LEEWAY_MS: u64 = 300_000;

/// `[auth]`: how tokens are checked and how backends reach the HTTP API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HMAC-SHA256 key for client tokens; `ROSTER_SECRET` overrides it. Default: empty, which
    /// makes the server generate a secret at start and print it on stdout (fine for one node;
    /// a cluster needs the same secret on every node). When set, at least
    /// [`MIN_SECRET_BYTES`] (32) bytes.
    pub secret: String,
    /// Bearer key for `/presence`, `/slot` and `/kick`, and for `/cluster` and `/metrics`
    /// unless `open_endpoints` lists them; `ROSTER_API_KEY` overrides it. Default: empty,
    /// which leaves those endpoints disabled.
    pub api_key: String,
    /// How far past its `exp` a token is still accepted, for clocks of the minting backend and
    /// of the node that disagree a little. It applies at connect and to an open socket, which
    /// is closed when its token expires. Default: 30000. At most 300000.
    pub token_leeway_ms: u64,
    /// Operational endpoints served without the `api_key` (to anyone who can reach
    /// `http_addr`): `"cluster"` and/or `"metrics"`. Default: `[]`, both need the key.
    pub open_endpoints: Vec<OpenEndpoint>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { secret: String::new(), api_key: String::new(), token_leeway_ms: 30_000, open_endpoints: Vec::new() }
    }
}

/// An operational endpoint that `[auth] open_endpoints` may serve without the `api_key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenEndpoint {
    /// `GET /cluster`: the node's view of the cluster (peers, leases, counts).
    Cluster,
    /// `GET /metrics`: the Prometheus counters.
    Metrics,
}

/// `[server]`: limits and timings of client sockets and of the HTTP side. Every limit has a
/// default and no "unlimited" value; `docs/security.md` says what each one protects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Origins allowed to open a socket (the `Origin` header), e.g.
    /// `["https://app.example.com"]`. Default: `[]`, which allows any origin.
    pub allowed_origins: Vec<String>,
    /// Largest message a client may send, in bytes, and largest single WebSocket frame of it
    /// (a frame whose header announces more is refused before its payload is read).
    /// Default: 65536. At least 1024.
    pub max_frame_bytes: u32,
    /// Topics one socket may join at once (more: `too_many_topics`). Default: 100. At least 1.
    pub max_topics_per_socket: u32,
    /// Pushes one socket may send per second. Default: 50. At least 1.
    pub max_pushes_per_second: u32,
    /// Joins and leaves one socket may send per second, together (more: `rate_limited`).
    /// Default: 100, so a reconnecting client rejoining all of `max_topics_per_socket`'s
    /// default 100 topics at once is served in one second. At least 1.
    pub max_joins_per_second: u32,
    /// Largest meta, in bytes of JSON, a join or a `presence:update` may carry (more:
    /// `meta_too_large`). Every node and every subscriber of the topic receives it.
    /// Default: 2048. At least 2 (a meta above `max_frame_bytes` cannot arrive anyway).
    pub max_meta_bytes: u32,
    /// Open connections to this node's `http_addr` (each WebSocket is one, so are plain HTTP
    /// requests while their connection is open); more are answered 503 and closed at once.
    /// Default: 20000. At least 1.
    pub max_sockets: u32,
    /// Open connections from one client address (an IPv6 client: its /64); more are answered
    /// 429 and closed at once. Behind a reverse proxy every client has the proxy's address: raise
    /// it to `max_sockets`. Default: 1000. At least 1.
    pub max_sockets_per_ip: u32,
    /// Whether loopback clients (127.0.0.0/8, ::1) are exempt from `max_sockets_per_ip`, so a
    /// proxy or a load test on the same host is only bound by `max_sockets`. Default: true.
    pub loopback_exempt: bool,
    /// WebSockets one user (a token's `sub`) may have open on this node; more are refused with
    /// HTTP 429 before the upgrade. Default: 32. At least 1.
    pub max_sockets_per_user: u32,
    /// Frames queued towards one socket before the client is deemed too slow and closed
    /// (code 1013). Default: 1024. At least 1.
    pub outbound_queue: u32,
    /// Bytes queued towards one socket before the client is deemed too slow and closed (code
    /// 1013). A frame shared by many sockets (a diff, a `presence_state`, a broadcast) is held
    /// once in memory and counts its size once in each queue it waits in. Default: 16777216
    /// (16 MiB), above the largest `presence_state` of a 10,000-member room (about 1 MB with
    /// small metas, 10 MB with 1 KB metas). At least `max_frame_bytes`.
    pub outbound_queue_bytes: u64,
    /// WebSocket ping interval; a socket silent for two pings is closed. Default: 5000.
    pub ping_ms: u64,
    /// Flow control by pings: bytes of data written to a socket beyond the last ping its
    /// client answered (pings carry the offset of the data before them, one in line with every
    /// 16 KiB); the rest waits in the node's queue. A client process reading thousands of
    /// sockets reads each one's window in turn, so a smaller window keeps its turns short; a
    /// client far away reads at most a window per round trip. Default: 16384 (measured:
    /// `BENCHMARKS.md`, issue 13 fifth round). At least
    /// [`MIN_FLOW_WINDOW_BYTES`] (one in-line ping's worth, or the window would fill before a
    /// ping goes out with it).
    pub flow_window_bytes: u64,
    /// Longest a join may wait (policy `wait`, an in-doubt slot, a partition without a home)
    /// before it fails with `wait_timed_out` or `no_quorum`. Default: 10000.
    pub join_wait_ms: u64,
    /// Demo mode: serve the demo room page at `/`, a dev-only token endpoint
    /// (`/demo/token`, which signs a token for any user who asks) and the dashboard without
    /// the `api_key`. For trying Roster on one machine, never for production: refused unless
    /// every node's `http_addr` is a loopback address. Default: `false` (`true` for
    /// `roster serve` without a config, see [`Config::demo`]).
    pub demo: bool,
    /// A request's head (request line and headers) must arrive within this long of the
    /// connection opening, or of the previous response on a kept-alive connection; otherwise
    /// the connection is closed. Ends idle and slowloris connections. Default: 5000. At least 1.
    pub header_read_timeout_ms: u64,
    /// Once its head is read, a request must be answered within this long (a WebSocket: its
    /// upgrade done): a body sent byte by byte, or anything else that stalls it, gets 408 and
    /// the connection is closed. Default: 10000. At least 1.
    pub request_timeout_ms: u64,
}

/// The smallest `[server] flow_window_bytes`: the data a socket is written between two
/// in-line pings.
pub const MIN_FLOW_WINDOW_BYTES: u64 = 16 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_frame_bytes: 65_536,
            max_topics_per_socket: 100,
            max_pushes_per_second: 50,
            max_joins_per_second: 100,
            max_meta_bytes: 2048,
            max_sockets: 20_000,
            max_sockets_per_ip: 1000,
            loopback_exempt: true,
            max_sockets_per_user: 32,
            outbound_queue: 1024,
            outbound_queue_bytes: 16 << 20,
            ping_ms: 5000,
            flow_window_bytes: 16 * 1024,
            join_wait_ms: 10_000,
            demo: false,
            header_read_timeout_ms: 5000,
            request_timeout_ms: 10_000,
        }
    }
}

/// `[presence]`: the replicated presence table and its coalescing windows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Presence shards per node (topics are spread over them by hash). Default: 8. At least 1.
    pub shards: u32,
    /// Window over which presence deltas to peers are coalesced. Default: 5.
    pub broadcast_ms: u64,
    /// Window over which `presence_diff` frames are coalesced per topic. Default: 20.
    pub diff_ms: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { shards: 8, broadcast_ms: 5, diff_ms: 20 }
    }
}

/// The most `cluster.partitions` a config may name: a node keeps a place per partition up to
/// the highest it holds (`node/partition_map.rs`), so the count bounds that list.
pub const MAX_PARTITIONS: u32 = 65_536;

/// The development cookie, [`ClusterConfig::cookie`]'s default: refused by
/// [`Config::validate`] as soon as any `cluster_addr` is not a loopback address.
pub const DEV_COOKIE: &str = "roster-dev";

/// The shortest cookie [`Config::validate`] accepts when any `cluster_addr` is not a loopback
/// address: 32 bytes, e.g. `openssl rand -hex 16`.
pub const MIN_COOKIE_BYTES: usize = 32;

/// `[cluster]`: static membership and the timings that keep the single slot safe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Shared secret of the nodes: a node proves it in the link handshake before anything
    /// else is exchanged. Default: `"roster-dev"`, accepted only while every `cluster_addr` is a
    /// loopback address; otherwise at least [`MIN_COOKIE_BYTES`] bytes and not the default.
    pub cookie: String,
    /// Directory where node `NAME` keeps its highest granted epoch, in `data_dir/NAME`.
    /// Default: `"./roster-data"`.
    pub data_dir: String,
    /// Fixed buckets of users; a user's home is the holder of its partition. Default: 256.
    /// At least 1. Every node must use the same value.
    pub partitions: u32,
    /// Interval of node-to-node heartbeats. Default: 200. At least 1.
    pub heartbeat_ms: u64,
    /// Silence after which a peer is declared down and its presences removed. Default: 1000.
    /// Greater than `heartbeat_ms`.
    pub heartbeat_timeout_ms: u64,
    /// Length of a partition lease; renewed every `lease_ms / 4`. Default: 2000. At least 4.
    pub lease_ms: u64,
    /// How long a slot outlives the last heartbeat its home echoed. Default: 4000. Must obey
    /// the timing rule: see [`ClusterConfig::required_isolation_ms`].
    pub isolation_ms: u64,
    /// Largest difference of clock rates between nodes, as a fraction (0.01: 1 %).
    /// Default: 0.01. In `[0, 0.5)`.
    pub max_drift: f64,
    /// Longest a node-to-node connection may take from its TCP accept (or connect) until the
    /// session is ready: TLS, the cookie handshake and the session set-up. A connection that
    /// has not finished by then is closed. Default: 2000. At least 100.
    pub handshake_timeout_ms: u64,
    /// Connections on the cluster port still in their handshake at once; one more is closed
    /// as soon as it is accepted. Default: 16. At least 1.
    pub max_pending_sessions: u32,
    /// `[cluster.tls]`: mutual TLS on node-to-node links. Default: off.
    pub tls: ClusterTlsConfig,
    /// `[[cluster.nodes]]`: every node of the cluster, the same list on every node.
    /// Default: none, which does not validate (at least one node is needed).
    pub nodes: Vec<NodeConfig>,
}

/// `[cluster.tls]`: mutual TLS between nodes. Either all three paths are set (TLS on: every
/// link is TLS 1.3 or 1.2, both sides present a certificate signed by `ca`) or none (TLS off,
/// the default). A node's certificate must name the node: a subject alternative name of type
/// DNS equal to its `[[cluster.nodes]] name`. Each path may contain `{node}`, replaced by the
/// node's name, so one `cluster.toml` serves every node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterTlsConfig {
    /// PEM file with this node's certificate chain (its own certificate first), e.g.
    /// `"/etc/roster/{node}.crt"`. Default: `""` (TLS off).
    pub cert: String,
    /// PEM file with this node's private key (PKCS#8, PKCS#1 or SEC1), e.g.
    /// `"/etc/roster/{node}.key"`. Default: `""` (TLS off).
    pub key: String,
    /// PEM file with the certificate(s) of the authority that signs the nodes' certificates:
    /// a private CA for this cluster only (any certificate it signs that names a node may act
    /// as that node). Default: `""` (TLS off).
    pub ca: String,
}

impl ClusterTlsConfig {
    /// Whether TLS is on (the three paths are set; [`Config::validate`] refuses a partial set).
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty()
    }

    /// The `(cert, key, ca)` paths for node `node`, with `{node}` replaced by its name.
    pub fn paths_for(&self, node: &NodeName) -> (String, String, String) {
        let fill = |p: &str| p.replace("{node}", node.as_str());
        (fill(&self.cert), fill(&self.key), fill(&self.ca))
    }

    fn check(&self, nodes: &[NodeConfig], problems: &mut Vec<String>) {
        let set: Vec<&str> = [("cert", &self.cert), ("key", &self.key), ("ca", &self.ca)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| k)
            .collect();
        if set.is_empty() {
            return;
        }
        if set.len() < 3 {
            let missing: Vec<&str> = ["cert", "key", "ca"].into_iter().filter(|k| !set.contains(k)).collect();
            problems.push(format!(
                "[cluster.tls] sets {} but not {}: TLS needs all three (this node's certificate, its key and the                  cluster's CA), or none of them for plaintext links",
                set.join(" and "),
                missing.join(" and ")
            ));
            return;
        }
        for (i, node) in nodes.iter().enumerate() {
            if !node.name.as_str().is_empty() && !is_dns_name(node.name.as_str()) {
                problems.push(format!(
                    "cluster.nodes[{i}].name = \"{}\" cannot be a certificate's DNS name, which [cluster.tls] needs: \
                     use labels of letters, digits, '-' and '_' separated by '.', not starting or ending with '-', \
                     the last one not all digits",
                    node.name
                ));
            }
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            cookie: DEV_COOKIE.to_owned(),
            data_dir: "./roster-data".to_owned(),
            partitions: 256,
            heartbeat_ms: 200,
            heartbeat_timeout_ms: 1000,
            lease_ms: 2000,
            isolation_ms: 4000,
            max_drift: 0.01,
            handshake_timeout_ms: 2000,
            max_pending_sessions: 16,
            tls: ClusterTlsConfig::default(),
            nodes: Vec::new(),
        }
    }
}

/// One `[[cluster.nodes]]` entry. All three keys are required.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name (`roster serve --node NAME`): its identity across restarts and the
    /// name of its file in `data_dir`. ASCII letters, digits, `-`, `_`, `.`; not starting
    /// with `.`.
    pub name: NodeName,
    /// `HOST:PORT` for node-to-node traffic, as the other nodes dial it.
    pub cluster_addr: String,
    /// `HOST:PORT` for clients: `/socket/websocket`, `/health`, `/ready`, `/cluster`,
    /// `/metrics` and the API.
    pub http_addr: String,
}

/// A policy's `scope`: what a user's slots are counted over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopeKind {
    /// `"topic"`: one set of slots per user per topic.
    #[default]
    Topic,
    /// `"global"`: one set of slots per user across every topic the policy matches.
    Global,
}

/// A policy's `on_conflict`: what a join does when the user already holds `max_slots`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// `"takeover"`: the newest wins; the oldest holder is revoked (`logged_in_elsewhere`).
    #[default]
    Takeover,
    /// `"reject"`: the newcomer gets `already_joined`.
    Reject,
    /// `"wait"`: the newcomer waits up to `wait_ms` for a slot, then is rejected.
    Wait,
}

/// A policy's `anonymous`: how connections without a token appear in presence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnonymousMode {
    /// `"deny"`: anonymous joins are refused (`unauthorized`).
    Deny,
    /// `"count"`: one presence key `anonymous` whose single meta's `count` is the cluster-wide
    /// total.
    #[default]
    Count,
    /// `"list"`: one meta per anonymous connection under the key `anonymous`.
    List,
}

/// A policy's `presence`: how signed-in users appear in presence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceMode {
    /// `"list"`: one key per user, one meta per connection (Phoenix's shape).
    #[default]
    List,
    /// `"count"`: one presence key `users` whose single meta's `count` is the cluster-wide
    /// number of distinct signed-in users; no user is listed, so a join costs the others a
    /// count, not an entry (stream rooms where nobody renders the list).
    Count,
}

/// One `[[policy]]` entry as written. Only `topic` is required.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The topics it applies to: an exact topic (`"lobby"`), a prefix ending in `*`
    /// (`"room:*"`), or `"*"` for all. Required; `*` only as the last character.
    pub topic: String,
    /// Slots per topic or across all matching topics. Default: `"topic"`.
    #[serde(default)]
    pub scope: ScopeKind,
    /// Live sessions allowed per user per scope. Default: 1. At least 1.
    #[serde(default = "default_max_slots")]
    pub max_slots: u32,
    /// What a join beyond `max_slots` does. Default: `"takeover"`.
    #[serde(default)]
    pub on_conflict: OnConflict,
    /// For `on_conflict = "wait"`: how long the newcomer waits. Default: 5000. Above 0 and at
    /// most `server.join_wait_ms` when `wait` is used.
    #[serde(default = "default_wait_ms")]
    pub wait_ms: u64,
    /// After an unclean disconnect, how long the slot stays reserved for the same `tab_id`.
    /// Default: 0.
    #[serde(default)]
    pub reserve_ms: u64,
    /// Roles that skip the slot check, e.g. `["admin"]`. Default: `[]`.
    #[serde(default)]
    pub exempt_roles: Vec<Role>,
    /// How anonymous viewers appear. Default: `"count"`.
    #[serde(default)]
    pub anonymous: AnonymousMode,
    /// How signed-in users appear: `"list"` or `"count"`. Default: `"list"`.
    #[serde(default)]
    pub presence: PresenceMode,
}

fn default_max_slots() -> u32 {
    1
}

fn default_wait_ms() -> u64 {
    5000
}

impl PolicyConfig {
    /// A policy for `topic` with every other key at its default.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            scope: ScopeKind::default(),
            max_slots: default_max_slots(),
            on_conflict: OnConflict::default(),
            wait_ms: default_wait_ms(),
            reserve_ms: 0,
            exempt_roles: Vec::new(),
            anonymous: AnonymousMode::default(),
            presence: PresenceMode::default(),
        }
    }
}

/// Which policy a [`Policy`] came from. It is how global scopes are told apart, so it is only
/// meaningful between nodes that share the same `[[policy]]` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyId {
    /// The `[[policy]]` entry at this position (from 0, in file order).
    Configured(u32),
    /// No entry matched: the built-in default.
    BuiltIn,
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Configured(i) => write!(f, "policy[{i}]"),
            Self::BuiltIn => f.write_str("built-in"),
        }
    }
}

/// The slot a join competes for: a user holds at most `max_slots` per `(user, ScopeKey)`.
///
/// Either a topic ([`ScopeKey::topic`]) or a global scope ([`ScopeKey::global`]); read which
/// with [`ScopeKey::scope`]. One pointer (8 bytes, not the 16 of an enum of the two): a key is
/// kept per presence (the gateway's slots, the home's scopes), so a topic scope's key is the
/// topic's own `Arc` and a global scope's a shared name of the same type (`ids.rs`,
/// `TopicBody`). Equality, order, hashing, `Debug` and the encodings (node codec and JSON) are
/// those of [`Scope`], as when the key was that enum.
#[derive(Clone)]
pub struct ScopeKey(Topic);

/// What a [`ScopeKey`] is, borrowed: match on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename = "ScopeKey")]
pub enum Scope<'a> {
    /// `scope = "topic"`: this topic alone.
    Topic(&'a Topic),
    /// `scope = "global"`: every topic this policy matches shares one scope.
    Global(PolicyId),
}

/// A decoded [`ScopeKey`]: the shape [`Scope`] encodes.
#[derive(Deserialize)]
#[serde(rename = "ScopeKey")]
enum OwnedScope {
    Topic(Topic),
    Global(PolicyId),
}

impl ScopeKey {
    /// The scope of `topic` alone.
    pub fn topic(topic: Topic) -> Self {
        Self(topic)
    }

    /// The scope every topic of policy `id` shares (one shared name per policy and thread).
    pub fn global(id: PolicyId) -> Self {
        Self(Topic::global_scope(id))
    }

    /// Which scope this is.
    pub fn scope(&self) -> Scope<'_> {
        match self.0.global_policy() {
            None => Scope::Topic(&self.0),
            Some(id) => Scope::Global(id),
        }
    }

    /// The topic of a topic scope; `None` for a global one.
    pub fn as_topic(&self) -> Option<&Topic> {
        match self.scope() {
            Scope::Topic(t) => Some(t),
            Scope::Global(_) => None,
        }
    }

    /// Whether this is a global scope.
    pub fn is_global(&self) -> bool {
        self.0.global_policy().is_some()
    }
}

impl PartialEq for ScopeKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ptr_eq(&other.0) || self.scope() == other.scope()
    }
}

impl Eq for ScopeKey {}

impl PartialOrd for ScopeKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ScopeKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.0.ptr_eq(&other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.scope().cmp(&other.scope())
    }
}

impl std::hash::Hash for ScopeKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scope().hash(state)
    }
}

impl fmt::Debug for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.scope(), f)
    }
}

impl Serialize for ScopeKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.scope().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ScopeKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match OwnedScope::deserialize(deserializer)? {
            OwnedScope::Topic(t) => Self::topic(t),
            OwnedScope::Global(id) => Self::global(id),
        })
    }
}

impl fmt::Display for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scope() {
            Scope::Topic(t) => write!(f, "topic:{t}"),
            Scope::Global(id) => write!(f, "global:{id}"),
        }
    }
}

/// The slot policy that applies to a topic, resolved from the configuration by
/// [`Config::policy_for`]: the matched `[[policy]]` entry's values plus where they came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The entry it came from, or [`PolicyId::BuiltIn`].
    pub id: PolicyId,
    /// The entry's topic pattern (`"*"` for the built-in default).
    pub topic: String,
    /// Slots per topic or across every topic of this policy.
    pub scope: ScopeKind,
    /// Live sessions allowed per user per scope.
    pub max_slots: u32,
    /// What a join beyond `max_slots` does.
    pub on_conflict: OnConflict,
    /// For `wait`: how long the newcomer waits.
    pub wait_ms: u64,
    /// How long a slot stays reserved for its `tab_id` after an unclean disconnect.
    pub reserve_ms: u64,
    /// Roles that skip the slot check.
    pub exempt_roles: Vec<Role>,
    /// How anonymous viewers appear.
    pub anonymous: AnonymousMode,
    /// How signed-in users appear.
    pub presence: PresenceMode,
}

impl Policy {
    /// The policy of a topic that no `[[policy]]` matches: takeover, one slot per user per
    /// topic, anonymous viewers counted, no reservation, nobody exempt.
    pub fn built_in() -> Self {
        // Its entry made once: every join to a topic no `[[policy]]` matches resolves it.
        static BUILT_IN: std::sync::LazyLock<PolicyConfig> = std::sync::LazyLock::new(|| PolicyConfig::new("*"));
        Self::from_config(PolicyId::BuiltIn, &BUILT_IN)
    }

    fn from_config(id: PolicyId, p: &PolicyConfig) -> Self {
        Self {
            id,
            topic: p.topic.clone(),
            scope: p.scope,
            max_slots: p.max_slots,
            on_conflict: p.on_conflict,
            wait_ms: p.wait_ms,
            reserve_ms: p.reserve_ms,
            exempt_roles: p.exempt_roles.clone(),
            anonymous: p.anonymous,
            presence: p.presence,
        }
    }

    /// The scope a join to `topic` under this policy counts against: the topic itself, or
    /// for a global policy one key shared by every topic it matches.
    pub fn scope_key(&self, topic: &Topic) -> ScopeKey {
        match self.scope {
            ScopeKind::Topic => ScopeKey::topic(topic.clone()),
            ScopeKind::Global => ScopeKey::global(self.id),
        }
    }

    /// Whether a user with `role` skips the slot check under this policy.
    pub fn is_exempt(&self, role: &Role) -> bool {
        self.exempt_roles.contains(role)
    }

    /// How a topic of this policy shows its presences.
    pub fn presence_view(&self) -> crate::PresenceView {
        crate::PresenceView {
            anonymous: match self.anonymous {
                AnonymousMode::List => crate::AnonymousView::List,
                _ => crate::AnonymousView::Count,
            },
            users: match self.presence {
                PresenceMode::List => crate::UsersView::List,
                PresenceMode::Count => crate::UsersView::Count,
            },
        }
    }
}

/// The `[[policy]]` list alone, serialized for [`Config::fingerprint`].
#[derive(Serialize)]
struct PolicyList<'a> {
    policy: &'a [PolicyConfig],
}

impl Config {
    /// Parse `cluster.toml` text and [validate](Config::validate) it.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string().trim_end().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration of `roster serve` without a config file: one node named `local`
    /// (cluster on `127.0.0.1:4370`, clients on `127.0.0.1:4000`), every key at its default,
    /// an empty secret (the server generates one) and no policies (the built-in default
    /// applies to every topic).
    pub fn single_node() -> Config {
        Config {
            auth: AuthConfig::default(),
            server: ServerConfig::default(),
            presence: PresenceConfig::default(),
            cluster: ClusterConfig {
                nodes: vec![NodeConfig {
                    name: NodeName::from("local"),
                    cluster_addr: "127.0.0.1:4370".to_owned(),
                    http_addr: "127.0.0.1:4000".to_owned(),
                }],
                ..ClusterConfig::default()
            },
            policy: Vec::new(),
        }
    }

    /// The configuration of `roster serve` without a config file: [`Config::single_node`] in
    /// demo mode (`[server] demo = true`), with policies that let every behaviour of the demo
    /// page be tried: `call:*` rejects a second tab, `room:*` takes over with a
    /// `reserve_ms = 5000` grace for a refreshed tab, and admins are exempt everywhere.
    pub fn demo() -> Config {
        let mut config = Config::single_node();
        config.server.demo = true;
        let admin = vec![Role::from("admin")];
        config.policy = vec![
            PolicyConfig {
                on_conflict: OnConflict::Reject,
                exempt_roles: admin.clone(),
                ..PolicyConfig::new("call:*")
            },
            PolicyConfig { reserve_ms: 5000, exempt_roles: admin.clone(), ..PolicyConfig::new("room:*") },
            PolicyConfig { exempt_roles: admin, ..PolicyConfig::new("*") },
        ];
        config
    }

    /// The `[[cluster.nodes]]` entry named `name`, if any.
    pub fn node(&self, name: &NodeName) -> Option<&NodeConfig> {
        self.cluster.nodes.iter().find(|n| &n.name == name)
    }

    /// Like [`Config::node`], but an error that lists the configured names (for
    /// `roster serve --node NAME`).
    pub fn require_node(&self, name: &NodeName) -> Result<&NodeConfig, ConfigError> {
        self.node(name).ok_or_else(|| ConfigError::UnknownNode {
            name: name.clone(),
            known: self.cluster.nodes.iter().map(|n| n.name.clone()).collect(),
        })
    }

    /// A hash of everything that must be identical on every node of a cluster: the node names
    /// in order, partitions, heartbeat and lease timings, drift, and the `[[policy]]` list (a
    /// `PolicyId` is a list position). Addresses, secrets and per-node server settings are left
    /// out: each node may reach its peers through different addresses (a proxy, a NAT).
    /// Nodes refuse each other's messages when their fingerprints differ.
    pub fn fingerprint(&self) -> u64 {
        let c = &self.cluster;
        let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
        let shared = format!(
            "{names:?}|{}|{}|{}|{}|{}|{}|{}",
            c.partitions,
            c.heartbeat_ms,
            c.heartbeat_timeout_ms,
            c.lease_ms,
            c.isolation_ms,
            c.max_drift,
            toml::to_string(&PolicyList { policy: &self.policy }).unwrap_or_default(),
        );
        xxhash_rust::xxh3::xxh3_64(shared.as_bytes())
    }

    /// The slot policy of `topic`: the first `[[policy]]` whose pattern matches it, or
    /// [`Policy::built_in`] when none does.
    pub fn policy_for(&self, topic: &Topic) -> Policy {
        self.policy
            .iter()
            .enumerate()
            .find(|(_, p)| topic.matches(&p.topic))
            .map(|(i, p)| Policy::from_config(PolicyId::Configured(i as u32), p))
            .unwrap_or_else(Policy::built_in)
    }

    /// Check every rule a usable configuration obeys. The error lists every problem found,
    /// one per line, each naming the key (`cluster.isolation_ms`, `policy[1].topic`, with
    /// positions counted from 0 in file order), the value given and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.auth.check(&mut problems);
        self.server.check(&mut problems);
        self.check_demo(&mut problems);
        self.presence.check(&mut problems);
        self.cluster.check(&mut problems);
        check_policies(&self.policy, &self.server, &mut problems);
        match problems.len() {
            0 => Ok(()),
            1 => Err(ConfigError::Invalid(problems.remove(0))),
            n => Err(ConfigError::Invalid(format!("{n} problems:\n- {}", problems.join("\n- ")))),
        }
    }
}

impl Config {
    /// Demo mode hands a token to whoever asks: only where nobody else can ask.
    fn check_demo(&self, problems: &mut Vec<String>) {
        if !self.server.demo {
            return;
        }
        for (i, node) in self.cluster.nodes.iter().enumerate() {
            if is_host_port(&node.http_addr) && !is_loopback(&node.http_addr) {
                problems.push(format!(
                    "server.demo = true with cluster.nodes[{i}].http_addr = \"{}\": demo mode signs a token for \
                     anyone who asks, so it is only allowed when every http_addr is a loopback address \
                     (127.0.0.1, [::1], localhost); set server.demo = false, or bind http_addr to loopback",
                    node.http_addr
                ));
            }
        }
    }
}

impl ServerConfig {
    fn check(&self, problems: &mut Vec<String>) {
        if self.max_frame_bytes < 1024 {
            problems.push(format!(
                "server.max_frame_bytes = {} is too small: it must be at least 1024 so a join and its meta fit \
                 in one frame (default 65536)",
                self.max_frame_bytes
            ));
        }
        if self.max_topics_per_socket == 0 {
            problems.push(
                "server.max_topics_per_socket = 0 would let no socket join any topic: set it to at least 1 \
                 (default 100)"
                    .to_owned(),
            );
        }
        if self.max_pushes_per_second == 0 {
            problems.push(
                "server.max_pushes_per_second = 0 is not allowed (there is no \"unlimited\" value): set it to at \
                 least 1 (default 50)"
                    .to_owned(),
            );
        }
        if self.outbound_queue == 0 {
            problems.push(
                "server.outbound_queue = 0 would close every client as too slow on its first frame: set it to at \
                 least 1 (default 1024)"
                    .to_owned(),
            );
        }
        if self.outbound_queue_bytes < u64::from(self.max_frame_bytes) {
            problems.push(format!(
                "server.outbound_queue_bytes = {} is below max_frame_bytes ({}): a socket could not be sent one \
                 frame of that size (default 16777216)",
                self.outbound_queue_bytes, self.max_frame_bytes
            ));
        }
        if self.ping_ms == 0 {
            problems.push("server.ping_ms = 0: set it to at least 1 (default 5000)".to_owned());
        }
        if self.flow_window_bytes < MIN_FLOW_WINDOW_BYTES {
            problems.push(format!(
                "server.flow_window_bytes = {} is below {MIN_FLOW_WINDOW_BYTES}, the data between two in-line pings: \
                 the window would fill before a ping goes out with it (default 16384)",
                self.flow_window_bytes
            ));
        }
        for (key, value, default) in [
            ("max_joins_per_second", self.max_joins_per_second, 100),
            ("max_sockets", self.max_sockets, 20_000),
            ("max_sockets_per_ip", self.max_sockets_per_ip, 1000),
            ("max_sockets_per_user", self.max_sockets_per_user, 32),
        ] {
            if value == 0 {
                problems.push(format!(
                    "server.{key} = 0 is not allowed (there is no \"unlimited\" value): set it to at least 1 \
                     (default {default})"
                ));
            }
        }
        if self.max_meta_bytes < 2 {
            problems.push(format!(
                "server.max_meta_bytes = {} leaves no room for a meta (the empty meta {{}} is 2 bytes): set it to \
                 at least 2 (default 2048)",
                self.max_meta_bytes
            ));
        }
        for (key, value, default) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms, 5000),
            ("request_timeout_ms", self.request_timeout_ms, 10_000),
        ] {
            if value == 0 {
                problems.push(format!(
                    "server.{key} = 0 would drop every connection at once: set it to at least 1 (default {default})"
                ));
            }
        }
    }
}

impl AuthConfig {
    fn check(&self, problems: &mut Vec<String>) {
        if !self.secret.is_empty() && self.secret.len() < MIN_SECRET_BYTES {
            problems.push(format!(
                "auth.secret is {} bytes long: a token secret needs at least {MIN_SECRET_BYTES} bytes (HMAC-SHA256 \
                 with a shorter key can be guessed from one token); `roster serve` without a secret prints a \
                 fresh one, or use e.g. `openssl rand -base64 32`",
                self.secret.len()
            ));
        }
        if self.token_leeway_ms > MAX_TOKEN_LEEWAY_MS {
            problems.push(format!(
                "auth.token_leeway_ms = {} is more than {MAX_TOKEN_LEEWAY_MS} (5 minutes): a leeway covers clocks \
                 that disagree by seconds; mint tokens with a later exp instead (default 30000)",
                self.token_leeway_ms
            ));
        }
    }
}

impl PresenceConfig {
    fn check(&self, problems: &mut Vec<String>) {
        if self.shards == 0 {
            problems.push("presence.shards = 0: a node needs at least 1 presence shard (default 8)".to_owned());
        }
    }
}

impl ClusterConfig {
    /// The timing rule's lower bound on `isolation_ms` (DESIGN.md, rule 11): `isolation_ms`
    /// must be strictly greater than
    /// `(max(lease_ms × (1 + max_drift), heartbeat_timeout_ms) + lease_ms / 4 + 3 × heartbeat_ms + 100) / (1 − max_drift)`,
    /// so that a dead home is replaced and its users' live connections re-attached before
    /// their validity horizons pass. The defaults need about 3252.5 and have 4000.
    pub fn required_isolation_ms(&self) -> f64 {
        self.timing_budget_ms() / (1.0 - self.max_drift)
    }

    /// The right-hand side of the timing rule: what `isolation_ms × (1 − max_drift)` must exceed.
    fn timing_budget_ms(&self) -> f64 {
        let lease = self.lease_ms as f64;
        let renewal_gap = (lease * (1.0 + self.max_drift)).max(self.heartbeat_timeout_ms as f64);
        renewal_gap + lease / 4.0 + 3.0 * self.heartbeat_ms as f64 + 100.0
    }

    fn isolation_is_enough(&self, isolation_ms: u64) -> bool {
        isolation_ms as f64 * (1.0 - self.max_drift) > self.timing_budget_ms()
    }

    /// The smallest whole `isolation_ms` that passes the timing rule.
    fn min_isolation_ms(&self) -> u64 {
        let mut min = self.required_isolation_ms().floor().max(0.0) as u64;
        while !self.isolation_is_enough(min) {
            min += 1;
        }
        while min > 0 && self.isolation_is_enough(min - 1) {
            min -= 1;
        }
        min
    }

    fn check(&self, problems: &mut Vec<String>) {
        let mut timings_ok = true;
        if self.nodes.is_empty() {
            problems.push(
                "cluster.nodes is empty: add at least one [[cluster.nodes]] table with name, cluster_addr and \
                 http_addr"
                    .to_owned(),
            );
        }
        self.check_nodes(problems);
        self.check_cookie(problems);
        self.tls.check(&self.nodes, problems);
        if self.handshake_timeout_ms < 100 {
            problems.push(format!(
                "cluster.handshake_timeout_ms = {} is too short for a TLS and cookie handshake: set it to at least \
                 100 (default 2000)",
                self.handshake_timeout_ms
            ));
        }
        if self.max_pending_sessions == 0 {
            problems.push(
                "cluster.max_pending_sessions = 0 would refuse every peer: set it to at least 1 (default 16)"
                    .to_owned(),
            );
        }
        if self.partitions == 0 {
            problems.push("cluster.partitions = 0: set it to at least 1 (default 256)".to_owned());
        }
        if self.partitions > MAX_PARTITIONS {
            problems.push(format!(
                "cluster.partitions = {}: at most {MAX_PARTITIONS} (default 256; a node keeps a place per partition)",
                self.partitions
            ));
        }
        if self.heartbeat_ms == 0 {
            timings_ok = false;
            problems.push("cluster.heartbeat_ms = 0: set it to at least 1 (default 200)".to_owned());
        }
        if self.heartbeat_timeout_ms <= self.heartbeat_ms {
            timings_ok = false;
            problems.push(format!(
                "cluster.heartbeat_timeout_ms = {} must be greater than cluster.heartbeat_ms = {}, or peers are \
                 declared down between two heartbeats (defaults: 1000 and 200)",
                self.heartbeat_timeout_ms, self.heartbeat_ms
            ));
        }
        if self.lease_ms < 4 {
            timings_ok = false;
            problems.push(format!(
                "cluster.lease_ms = {} is too short: leases are renewed every lease_ms / 4, so it must be at \
                 least 4 (default 2000)",
                self.lease_ms
            ));
        }
        if !(0.0..0.5).contains(&self.max_drift) {
            timings_ok = false;
            problems.push(format!(
                "cluster.max_drift = {} must be at least 0 and below 0.5: it is the fraction by which clock rates \
                 may differ (0.01 means 1 %, the default)",
                self.max_drift
            ));
        }
        // The timing rule is meaningless over values already refused above.
        if timings_ok && !self.isolation_is_enough(self.isolation_ms) {
            problems.push(format!(
                "cluster.isolation_ms = {} is too short for the other timings: the timing rule \
                 isolation_ms × (1 − max_drift) > max(lease_ms × (1 + max_drift), heartbeat_timeout_ms) + \
                 lease_ms / 4 + 3 × heartbeat_ms + 100 needs isolation_ms above {:.1}, so at least {}; raise \
                 cluster.isolation_ms or lower cluster.lease_ms, cluster.heartbeat_timeout_ms or \
                 cluster.heartbeat_ms",
                self.isolation_ms,
                self.required_isolation_ms(),
                self.min_isolation_ms()
            ));
        }
    }

    /// Whether every `cluster_addr` is a loopback address (a development cluster on one
    /// machine), where the default cookie is allowed.
    pub fn is_loopback_only(&self) -> bool {
        self.nodes.iter().all(|n| is_loopback_host(&n.cluster_addr))
    }

    fn check_cookie(&self, problems: &mut Vec<String>) {
        let Some(exposed) = self.nodes.iter().position(|n| !is_loopback_host(&n.cluster_addr)) else {
            return;
        };
        let addr = &self.nodes[exposed].cluster_addr;
        if self.cookie == DEV_COOKIE {
            problems.push(format!(
                "cluster.cookie is the development default \"{DEV_COOKIE}\", but cluster.nodes[{exposed}].cluster_addr = \
                 \"{addr}\" is not a loopback address: set a secret cookie of at least {MIN_COOKIE_BYTES} bytes (e.g. \
                 `openssl rand -hex 16`), the same on every node"
            ));
        } else if self.cookie.len() < MIN_COOKIE_BYTES {
            problems.push(format!(
                "cluster.cookie is {} bytes long, but cluster.nodes[{exposed}].cluster_addr = \"{addr}\" is not a \
                 loopback address: a cookie reachable from the network needs at least {MIN_COOKIE_BYTES} bytes (e.g. \
                 `openssl rand -hex 16`)",
                self.cookie.len()
            ));
        }
    }

    fn check_nodes(&self, problems: &mut Vec<String>) {
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut addrs: BTreeMap<&str, String> = BTreeMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let name = node.name.as_str();
            if name.is_empty() {
                problems.push(format!(
                    "cluster.nodes[{i}].name is empty: give every node a short unique name such as \"a\""
                ));
            } else if !is_file_safe(name) {
                problems.push(format!(
                    "cluster.nodes[{i}].name = \"{name}\" may only use ASCII letters, digits, '-', '_' and '.' and \
                     must not start with '.', because it names the node's file in cluster.data_dir"
                ));
            } else if let Some(first) = names.get(name) {
                problems.push(format!(
                    "cluster.nodes[{i}].name = \"{name}\" is also the name of cluster.nodes[{first}]: node names \
                     must be unique"
                ));
            } else {
                names.insert(name, i);
            }
            for (key, addr) in [("cluster_addr", &node.cluster_addr), ("http_addr", &node.http_addr)] {
                let here = format!("cluster.nodes[{i}].{key}");
                if !is_host_port(addr) {
                    problems.push(format!(
                        "{here} = \"{addr}\" is not HOST:PORT: write it like \"127.0.0.1:4370\" or \
                         \"roster-a.internal:4370\""
                    ));
                } else if let Some(first) = addrs.get(addr.as_str()) {
                    problems.push(format!(
                        "{here} = \"{addr}\" is already used by {first}: every cluster_addr and http_addr must be \
                         a different address"
                    ));
                } else {
                    addrs.insert(addr, here);
                }
            }
        }
    }
}

/// A node name that is safe as a file name in `data_dir` on every platform.
fn is_file_safe(name: &str) -> bool {
    !name.starts_with('.') && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether the host of `HOST:PORT` is a loopback address: `localhost`, `127.0.0.0/8` or
/// `[::1]`. Any other name counts as reachable from the network (names are not resolved here).
fn is_loopback_host(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A syntactically valid DNS name, as a certificate's subject alternative name and TLS's
/// server name need: labels of 1 to 63 letters, digits, `-` and `_`, separated by `.`, not
/// starting or ending with `-`, the last one not all digits (which would read as an address).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && labels.last().is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
}

/// `HOST:PORT` with a non-empty host and a decimal port (`[::1]:4370` for IPv6). Names are
/// not resolved here: the core does no I/O.
fn is_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

/// Whether a `HOST:PORT` (already checked by [`is_host_port`]) names a loopback host: `localhost`,
/// an IPv4 address in 127.0.0.0/8, or `[::1]`. Names other than `localhost` are not resolved
/// (the core does no I/O), so they count as not loopback.
fn is_loopback(addr: &str) -> bool {
    let Some((host, _)) = addr.rsplit_once(':') else { return false };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether every topic `later` matches is already matched by `earlier`, so that a policy
/// with pattern `later` listed after `earlier` can never apply.
fn shadows(earlier: &str, later: &str) -> bool {
    match earlier.strip_suffix('*') {
        Some(prefix) => later.starts_with(prefix),
        None => earlier == later,
    }
}

fn check_policies(policies: &[PolicyConfig], server: &ServerConfig, problems: &mut Vec<String>) {
    for (i, p) in policies.iter().enumerate() {
        let here = format!("policy[{i}]");
        let topic = &p.topic;
        let pattern_ok = if topic.is_empty() {
            problems.push(format!(
                "{here}.topic is empty: use a topic (\"lobby\"), a prefix ending in '*' (\"room:*\") or \"*\" for \
                 every topic"
            ));
            false
        } else if topic.trim_end_matches('*').contains('*') || topic.ends_with("**") {
            problems.push(format!(
                "{here}.topic = \"{topic}\" has '*' before its end: '*' may only be the last character, as a \
                 prefix wildcard like \"room:*\""
            ));
            false
        } else {
            true
        };
        if pattern_ok {
            let earlier = policies[..i].iter().enumerate().find(|(_, e)| shadows(&e.topic, topic));
            if let Some((j, e)) = earlier {
                problems.push(format!(
                    "{here} (topic = \"{topic}\") can never apply: policy[{j}] (topic = \"{}\") comes first and \
                     matches every topic it would; move it above policy[{j}] or remove it",
                    e.topic
                ));
            }
        }
        if p.max_slots == 0 {
            problems.push(format!("{here}.max_slots = 0: a user needs at least 1 slot (default 1)"));
        }
        if p.on_conflict == OnConflict::Wait {
            if p.wait_ms == 0 {
                problems.push(format!(
                    "{here}.wait_ms = 0 with on_conflict = \"wait\" means never waiting: set wait_ms above 0 \
                     (default 5000) or use on_conflict = \"reject\""
                ));
            } else if p.wait_ms > server.join_wait_ms {
                problems.push(format!(
                    "{here}.wait_ms = {} is longer than server.join_wait_ms = {}, which ends every join's wait \
                     first: lower {here}.wait_ms or raise server.join_wait_ms",
                    p.wait_ms, server.join_wait_ms
                ));
            }
        }
        if let Some(k) = p.exempt_roles.iter().position(|r| r.as_str().is_empty()) {
            problems.push(format!("{here}.exempt_roles[{k}] is empty: name a role such as \"admin\""));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = include_str!("../../../cluster.toml");

    const ONE_NODE: &str = r#"
        [[cluster.nodes]]
        name = "a"
        cluster_addr = "127.0.0.1:4370"
        http_addr = "127.0.0.1:4000"
    "#;

    fn parse_with(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(&format!("{extra}\n{ONE_NODE}"))
    }

    /// The `Invalid` message of a config that must be refused.
    fn invalid(config: &Config) -> String {
        match config.validate() {
            Err(ConfigError::Invalid(msg)) => msg,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn assert_invalid(config: &Config, needles: &[&str]) {
        let msg = invalid(config);
        for needle in needles {
            assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        }
    }

    fn with_policy(p: PolicyConfig) -> Config {
        let mut c = Config::single_node();
        c.policy.push(p);
        c
    }

    #[test]
    fn fingerprint_ignores_addresses_but_not_shared_settings() {
        let base = Config::from_toml_str(SAMPLE).unwrap();
        let mut proxied = base.clone();
        proxied.cluster.nodes[1].cluster_addr = "127.0.0.1:9999".into();
        proxied.auth.secret = "another".into();
        proxied.server.ping_ms += 1;
        assert_eq!(proxied.fingerprint(), base.fingerprint());
        let mut other_lease = base.clone();
        other_lease.cluster.lease_ms += 1;
        assert_ne!(other_lease.fingerprint(), base.fingerprint());
        let mut other_policy = base.clone();
        other_policy.policy[0].max_slots += 1;
        assert_ne!(other_policy.fingerprint(), base.fingerprint());
        let mut reordered = base.clone();
        reordered.cluster.nodes.swap(0, 1);
        assert_ne!(reordered.fingerprint(), base.fingerprint());
    }

    #[test]
    fn repository_sample_parses_validates_and_has_three_nodes() {
        let c = Config::from_toml_str(SAMPLE).unwrap();
        assert_eq!(c.cluster.nodes.len(), 3);
        let names: Vec<&str> = c.cluster.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(c.policy_for(&Topic::from("call:1")).on_conflict, OnConflict::Reject);
        assert_eq!(c.policy_for(&Topic::from("room:1")).exempt_roles, [Role::from("admin")]);
    }

    #[test]
    fn repository_sample_sets_every_key_to_its_default_except_the_examples() {
        let c = Config::from_toml_str(SAMPLE).unwrap();
        assert_eq!(c.server, ServerConfig::default());
        assert_eq!(c.presence, PresenceConfig::default());
        let defaults = ClusterConfig { nodes: c.cluster.nodes.clone(), ..ClusterConfig::default() };
        assert_eq!(c.cluster, defaults);
    }

    #[test]
    fn every_key_has_its_documented_default() {
        let c: Config = toml::from_str(ONE_NODE).unwrap();
        assert_eq!(c.auth.secret, "");
        assert_eq!(c.auth.api_key, "");
        let s = &c.server;
        assert!(s.allowed_origins.is_empty());
        assert_eq!(s.max_frame_bytes, 65536);
        assert_eq!(s.max_topics_per_socket, 100);
        assert_eq!(s.max_pushes_per_second, 50);
        assert_eq!(s.outbound_queue, 1024);
        assert_eq!(s.outbound_queue_bytes, 16 << 20);
        assert_eq!(s.ping_ms, 5000);
        assert_eq!(s.join_wait_ms, 10000);
        assert_eq!(s.max_joins_per_second, 100);
        assert_eq!(s.max_meta_bytes, 2048);
        assert_eq!(s.max_sockets, 20_000);
        assert_eq!(s.max_sockets_per_ip, 1000);
        assert!(s.loopback_exempt);
        assert_eq!(s.max_sockets_per_user, 32);
        assert_eq!(s.header_read_timeout_ms, 5000);
        assert_eq!(s.request_timeout_ms, 10_000);
        assert_eq!(c.auth.token_leeway_ms, 30_000);
        assert!(c.auth.open_endpoints.is_empty());
        assert_eq!(c.presence.shards, 8);
        assert_eq!(c.presence.broadcast_ms, 5);
        assert_eq!(c.presence.diff_ms, 20);
        let k = &c.cluster;
        assert_eq!(k.cookie, "roster-dev");
        assert_eq!(k.data_dir, "./roster-data");
        assert_eq!(k.partitions, 256);
        assert_eq!(k.heartbeat_ms, 200);
        assert_eq!(k.heartbeat_timeout_ms, 1000);
        assert_eq!(k.lease_ms, 2000);
        assert_eq!(k.isolation_ms, 4000);
        assert_eq!(k.max_drift, 0.01);
        assert_eq!(k.handshake_timeout_ms, 2000);
        assert_eq!(k.max_pending_sessions, 16);
        assert_eq!(k.tls, ClusterTlsConfig::default());
        assert!(!k.tls.enabled());
        assert!(c.policy.is_empty());
    }

    /// A two-node config whose second node listens on `addr`.
    fn two_nodes_with(addr: &str, cookie: &str) -> Config {
        let mut c = Config::single_node();
        c.cluster.nodes = vec![node("a", 1), node("b", 2)];
        c.cluster.nodes[1].cluster_addr = addr.to_owned();
        c.cluster.cookie = cookie.to_owned();
        c
    }

    #[test]
    fn validate_refuses_the_default_cookie_when_a_cluster_addr_is_not_loopback() {
        for exposed in ["10.0.0.2:4370", "0.0.0.0:4370", "roster-b.internal:4370", "[fd00::2]:4370"] {
            let c = two_nodes_with(exposed, DEV_COOKIE);
            assert_invalid(&c, &["cluster.cookie", "development default", "cluster.nodes[1].cluster_addr", exposed]);
        }
        for loopback in ["127.0.0.1:4370", "127.1.2.3:4370", "localhost:4370", "[::1]:4370"] {
            two_nodes_with(loopback, DEV_COOKIE).validate().unwrap();
        }
    }

    #[test]
    fn validate_refuses_a_short_cookie_off_loopback_and_accepts_a_long_one() {
        let short = "x".repeat(MIN_COOKIE_BYTES - 1);
        assert_invalid(&two_nodes_with("10.0.0.2:4370", &short), &["cluster.cookie is 31 bytes", "at least 32"]);
        two_nodes_with("10.0.0.2:4370", &"x".repeat(MIN_COOKIE_BYTES)).validate().unwrap();
        two_nodes_with("127.0.0.1:4370", "short").validate().unwrap();
    }

    #[test]
    fn tls_needs_all_three_paths_or_none() {
        let mut c = Config::single_node();
        c.cluster.tls.cert = "/etc/roster/{node}.crt".into();
        assert_invalid(&c, &["[cluster.tls] sets cert but not key and ca"]);
        c.cluster.tls.ca = "/etc/roster/ca.crt".into();
        assert_invalid(&c, &["[cluster.tls] sets cert and ca but not key"]);
        c.cluster.tls.key = "/etc/roster/{node}.key".into();
        c.validate().unwrap();
        assert!(c.cluster.tls.enabled());
        let (cert, key, ca) = c.cluster.tls.paths_for(&NodeName::from("b"));
        assert_eq!(
            (cert.as_str(), key.as_str(), ca.as_str()),
            ("/etc/roster/b.crt", "/etc/roster/b.key", "/etc/roster/ca.crt")
        );
        let parsed = parse_with("[cluster.tls]\ncert = \"c\"\nkey = \"k\"\nca = \"a\"").unwrap();
        assert_eq!(parsed.cluster.tls.paths_for(&NodeName::from("a")), ("c".into(), "k".into(), "a".into()));
        assert!(matches!(parse_with("[cluster.tls]\ncertificate = \"c\""), Err(ConfigError::Parse(_))));
    }

    #[test]
    fn tls_needs_node_names_that_are_dns_names() {
        for bad in ["1", "a.2", "-a", "a-", "a..b", "a_b-"] {
            let mut c = Config::single_node();
            c.cluster.tls = ClusterTlsConfig { cert: "c".into(), key: "k".into(), ca: "a".into() };
            c.cluster.nodes[0].name = NodeName::from(bad);
            let msg = invalid(&c);
            assert!(msg.contains("cannot be a certificate's DNS name"), "{bad}: {msg}");
        }
        for good in ["a", "node-1", "roster_b", "b.roster.internal", "2b"] {
            let mut c = Config::single_node();
            c.cluster.tls = ClusterTlsConfig { cert: "c".into(), key: "k".into(), ca: "a".into() };
            c.cluster.nodes[0].name = NodeName::from(good);
            c.validate().unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn handshake_timeout_and_pending_sessions_have_lower_bounds() {
        let mut c = Config::single_node();
        c.cluster.handshake_timeout_ms = 99;
        c.cluster.max_pending_sessions = 0;
        assert_invalid(&c, &["cluster.handshake_timeout_ms = 99", "cluster.max_pending_sessions = 0"]);
    }

    #[test]
    fn policy_keys_default_as_documented() {
        let c = parse_with("[[policy]]\ntopic = \"room:*\"").unwrap();
        let p = &c.policy[0];
        assert_eq!(p, &PolicyConfig::new("room:*"));
        assert_eq!(p.scope, ScopeKind::Topic);
        assert_eq!(p.max_slots, 1);
        assert_eq!(p.on_conflict, OnConflict::Takeover);
        assert_eq!(p.wait_ms, 5000);
        assert_eq!(p.reserve_ms, 0);
        assert!(p.exempt_roles.is_empty());
        assert_eq!(p.anonymous, AnonymousMode::Count);
        assert_eq!(p.presence, PresenceMode::List);
    }

    #[test]
    fn policy_enums_are_written_in_lowercase() {
        let c = parse_with(
            "[[policy]]\ntopic = \"a\"\nscope = \"global\"\non_conflict = \"wait\"\nanonymous = \"list\"\n\
             [[policy]]\ntopic = \"b\"\non_conflict = \"reject\"\nanonymous = \"deny\"\npresence = \"count\"",
        )
        .unwrap();
        assert_eq!((c.policy[0].presence, c.policy[1].presence), (PresenceMode::List, PresenceMode::Count));
        let view = Policy::from_config(PolicyId::BuiltIn, &c.policy[1]).presence_view();
        assert_eq!((view.anonymous, view.users), (crate::AnonymousView::Count, crate::UsersView::Count));
        assert_eq!(c.policy[0].scope, ScopeKind::Global);
        assert_eq!(c.policy[0].on_conflict, OnConflict::Wait);
        assert_eq!(c.policy[0].anonymous, AnonymousMode::List);
        assert_eq!(c.policy[1].on_conflict, OnConflict::Reject);
        assert_eq!(c.policy[1].anonymous, AnonymousMode::Deny);
        assert!(matches!(parse_with("[[policy]]\ntopic = \"a\"\nscope = \"Global\""), Err(ConfigError::Parse(_))));
    }

    #[test]
    fn policy_without_topic_is_a_parse_error_naming_topic() {
        match parse_with("[[policy]]\nmax_slots = 2") {
            Err(ConfigError::Parse(msg)) => assert!(msg.contains("topic"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn single_node_default_validates_with_one_local_node_and_no_policies() {
        let c = Config::single_node();
        c.validate().unwrap();
        assert_eq!(c.cluster.nodes.len(), 1);
        let local = c.node(&NodeName::from("local")).unwrap();
        assert_eq!(local.cluster_addr, "127.0.0.1:4370");
        assert_eq!(local.http_addr, "127.0.0.1:4000");
        assert_eq!(c.auth.secret, "");
        assert!(c.policy.is_empty());
        assert_eq!(c.policy_for(&Topic::from("anything")), Policy::built_in());
    }

    #[test]
    fn demo_is_off_by_default_and_on_for_the_config_less_server_with_its_policies() {
        assert!(!Config::single_node().server.demo);
        assert!(!parse_with("").unwrap().server.demo);
        let demo = Config::demo();
        demo.validate().unwrap();
        assert!(demo.server.demo);
        let (call, room, other) = (
            demo.policy_for(&Topic::from("call:standup")),
            demo.policy_for(&Topic::from("room:lobby")),
            demo.policy_for(&Topic::from("lobby")),
        );
        assert_eq!((call.on_conflict, call.reserve_ms), (OnConflict::Reject, 0));
        assert_eq!((room.on_conflict, room.reserve_ms), (OnConflict::Takeover, 5000));
        assert_eq!(other.on_conflict, OnConflict::Takeover);
        for p in [&call, &room, &other] {
            assert!(p.is_exempt(&Role::from("admin")) && !p.is_exempt(&Role::from("user")), "{p:?}");
        }
    }

    #[test]
    fn demo_is_accepted_on_loopback_http_addrs_only() {
        for host in ["127.0.0.1", "127.3.2.1", "localhost", "LocalHost", "[::1]"] {
            let c = Config::from_toml_str(&format!(
                "[server]\ndemo = true\n[[cluster.nodes]]\nname = \"a\"\ncluster_addr = \"127.0.0.1:4370\"\n\
                 http_addr = \"{host}:4000\"\n"
            ));
            assert!(c.is_ok_and(|c| c.server.demo), "{host}");
        }
        for host in ["0.0.0.0", "10.0.0.1", "[::]", "example.com", "localhost.example.com"] {
            let mut c = Config::demo();
            c.cluster.nodes[0].http_addr = format!("{host}:4000");
            assert_invalid(&c, &["server.demo = true", &format!("cluster.nodes[0].http_addr = \"{host}:4000\"")]);
            c.server.demo = false;
            c.validate().unwrap();
        }
        // Every node of a cluster counts, not only the first.
        let mut c = Config::from_toml_str(SAMPLE).unwrap();
        c.server.demo = true;
        c.validate().unwrap();
        c.cluster.nodes[2].http_addr = "192.168.1.5:4002".into();
        assert_invalid(&c, &["cluster.nodes[2].http_addr"]);
    }

    #[test]
    fn unknown_key_at_top_level_is_rejected() {
        match parse_with("colour = \"red\"") {
            Err(ConfigError::Parse(msg)) => assert!(msg.contains("colour"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_with("[extra]\nx = 1"), Err(ConfigError::Parse(_))));
    }

    #[test]
    fn unknown_key_inside_a_section_is_rejected() {
        for section in ["auth", "server", "presence", "cluster"] {
            match parse_with(&format!("[{section}]\nheartbeat_mss = 1")) {
                Err(ConfigError::Parse(msg)) => assert!(msg.contains("heartbeat_mss"), "[{section}]: {msg}"),
                other => panic!("[{section}]: {other:?}"),
            }
        }
        let node = "[[cluster.nodes]]\nname = \"b\"\ncluster_addr = \"h:1\"\nhttp_addr = \"h:2\"\nport = 3";
        assert!(matches!(parse_with(node), Err(ConfigError::Parse(msg)) if msg.contains("port")));
    }

    #[test]
    fn unknown_key_inside_a_policy_is_rejected() {
        match parse_with("[[policy]]\ntopic = \"*\"\nmax_slot = 2") {
            Err(ConfigError::Parse(msg)) => assert!(msg.contains("max_slot"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_of_the_wrong_type_are_parse_errors() {
        assert!(matches!(parse_with("[cluster]\npartitions = \"many\""), Err(ConfigError::Parse(_))));
        assert!(matches!(parse_with("[cluster]\npartitions = -1"), Err(ConfigError::Parse(_))));
    }

    #[test]
    fn validate_rejects_no_nodes() {
        let mut c = Config::single_node();
        c.cluster.nodes.clear();
        assert_invalid(&c, &["cluster.nodes", "[[cluster.nodes]]"]);
        assert!(matches!(Config::from_toml_str(""), Err(ConfigError::Invalid(_))));
    }

    fn node(name: &str, port: u16) -> NodeConfig {
        NodeConfig {
            name: NodeName::from(name),
            cluster_addr: format!("127.0.0.1:{port}"),
            http_addr: format!("127.0.0.1:{}", port + 1000),
        }
    }

    #[test]
    fn validate_rejects_duplicate_node_names() {
        let mut c = Config::single_node();
        c.cluster.nodes = vec![node("a", 1), node("b", 2), node("a", 3)];
        assert_invalid(&c, &["cluster.nodes[2].name", "\"a\"", "cluster.nodes[0]", "unique"]);
    }

    #[test]
    fn validate_rejects_duplicate_addresses() {
        let mut c = Config::single_node();
        c.cluster.nodes = vec![node("a", 1), node("b", 1)];
        assert_invalid(&c, &["cluster.nodes[1].cluster_addr", "cluster.nodes[0].cluster_addr"]);
        let mut c = Config::single_node();
        c.cluster.nodes = vec![node("a", 1), node("b", 2)];
        c.cluster.nodes[1].http_addr = c.cluster.nodes[0].cluster_addr.clone();
        assert_invalid(&c, &["cluster.nodes[1].http_addr", "already used by cluster.nodes[0].cluster_addr"]);
    }

    #[test]
    fn validate_rejects_an_empty_node_name() {
        let mut c = Config::single_node();
        c.cluster.nodes[0].name = NodeName::from("");
        assert_invalid(&c, &["cluster.nodes[0].name is empty"]);
    }

    #[test]
    fn validate_rejects_node_names_unsafe_as_file_names() {
        for bad in ["../etc", "a/b", ".hidden", "a b"] {
            let mut c = Config::single_node();
            c.cluster.nodes[0].name = NodeName::from(bad);
            assert_invalid(&c, &["cluster.nodes[0].name", "data_dir"]);
        }
    }

    #[test]
    fn validate_rejects_addresses_that_are_not_host_port() {
        for bad in ["127.0.0.1", ":4000", "h:", "h:99999", "h:40a0"] {
            let mut c = Config::single_node();
            c.cluster.nodes[0].http_addr = bad.to_owned();
            assert_invalid(&c, &["cluster.nodes[0].http_addr", "HOST:PORT"]);
        }
        let mut c = Config::single_node();
        c.cluster.nodes[0].cluster_addr = "[::1]:4370".to_owned();
        c.validate().unwrap();
    }

    #[test]
    fn validate_rejects_zero_partitions() {
        let mut c = Config::single_node();
        c.cluster.partitions = 0;
        assert_invalid(&c, &["cluster.partitions = 0"]);
    }

    #[test]
    fn validate_rejects_more_partitions_than_a_node_keeps_places_for() {
        let mut c = Config::single_node();
        c.cluster.partitions = MAX_PARTITIONS;
        assert!(c.validate().is_ok());
        c.cluster.partitions = MAX_PARTITIONS + 1;
        assert_invalid(&c, &["cluster.partitions = 65537: at most 65536"]);
    }

    #[test]
    fn validate_rejects_zero_shards() {
        let mut c = Config::single_node();
        c.presence.shards = 0;
        assert_invalid(&c, &["presence.shards = 0"]);
    }

    #[test]
    fn validate_rejects_zero_heartbeat() {
        let mut c = Config::single_node();
        c.cluster.heartbeat_ms = 0;
        assert_invalid(&c, &["cluster.heartbeat_ms = 0"]);
    }

    #[test]
    fn validate_rejects_heartbeat_timeout_not_above_heartbeat() {
        let mut c = Config::single_node();
        c.cluster.heartbeat_timeout_ms = c.cluster.heartbeat_ms;
        assert_invalid(&c, &["cluster.heartbeat_timeout_ms = 200", "cluster.heartbeat_ms = 200"]);
        c.cluster.heartbeat_timeout_ms = 100;
        assert_invalid(&c, &["cluster.heartbeat_timeout_ms = 100"]);
    }

    #[test]
    fn validate_rejects_too_short_lease() {
        let mut c = Config::single_node();
        c.cluster.lease_ms = 3;
        assert_invalid(&c, &["cluster.lease_ms = 3"]);
    }

    #[test]
    fn validate_rejects_max_drift_outside_zero_to_one_half() {
        for bad in [-0.01, 0.5, 0.9, f64::NAN] {
            let mut c = Config::single_node();
            c.cluster.max_drift = bad;
            assert_invalid(&c, &["cluster.max_drift"]);
        }
        let mut c = Config::single_node();
        c.cluster.max_drift = 0.0;
        c.validate().unwrap();
    }

    #[test]
    fn validate_rejects_zero_max_slots() {
        let c = with_policy(PolicyConfig { max_slots: 0, ..PolicyConfig::new("*") });
        assert_invalid(&c, &["policy[0].max_slots = 0"]);
    }

    #[test]
    fn validate_rejects_wait_without_wait_ms() {
        let c = with_policy(PolicyConfig { on_conflict: OnConflict::Wait, wait_ms: 0, ..PolicyConfig::new("*") });
        assert_invalid(&c, &["policy[0].wait_ms = 0", "on_conflict = \"wait\""]);
        // wait_ms = 0 is harmless when nothing waits.
        with_policy(PolicyConfig { wait_ms: 0, ..PolicyConfig::new("*") }).validate().unwrap();
    }

    #[test]
    fn validate_rejects_wait_longer_than_join_wait() {
        let c = with_policy(PolicyConfig { on_conflict: OnConflict::Wait, wait_ms: 20_000, ..PolicyConfig::new("*") });
        assert_invalid(&c, &["policy[0].wait_ms = 20000", "server.join_wait_ms = 10000"]);
    }

    #[test]
    fn validate_rejects_empty_topic_pattern() {
        assert_invalid(&with_policy(PolicyConfig::new("")), &["policy[0].topic is empty"]);
    }

    #[test]
    fn validate_rejects_star_anywhere_but_the_end() {
        for bad in ["*:room", "room:*:x", "ro*m", "room:**", "**"] {
            assert_invalid(&with_policy(PolicyConfig::new(bad)), &["policy[0].topic", "last character"]);
        }
        for good in ["*", "room:*", "lobby"] {
            with_policy(PolicyConfig::new(good)).validate().unwrap();
        }
    }

    #[test]
    fn validate_rejects_a_policy_hidden_by_an_earlier_one() {
        let mut c = with_policy(PolicyConfig::new("room:*"));
        c.policy.push(PolicyConfig::new("room:vip:*"));
        assert_invalid(&c, &["policy[1]", "never apply", "policy[0]"]);
        let mut c = with_policy(PolicyConfig::new("lobby"));
        c.policy.push(PolicyConfig::new("lobby"));
        assert_invalid(&c, &["policy[1]", "never apply"]);
        // The specific one first is how it is meant to be written.
        let mut c = with_policy(PolicyConfig::new("room:vip:*"));
        c.policy.push(PolicyConfig::new("room:*"));
        c.policy.push(PolicyConfig::new("*"));
        c.validate().unwrap();
    }

    #[test]
    fn validate_rejects_tiny_frames() {
        let mut c = Config::single_node();
        c.server.max_frame_bytes = 1023;
        assert_invalid(&c, &["server.max_frame_bytes = 1023", "1024"]);
        c.server.max_frame_bytes = 1024;
        c.validate().unwrap();
    }

    #[test]
    fn validate_rejects_a_token_secret_shorter_than_32_bytes() {
        let mut c = Config::single_node();
        c.auth.secret = "x".repeat(31);
        assert_invalid(&c, &["auth.secret is 31 bytes long", "at least 32 bytes"]);
        c.auth.secret = "x".repeat(32);
        c.validate().unwrap();
        // Empty: the server generates one.
        c.auth.secret = String::new();
        c.validate().unwrap();
    }

    #[test]
    fn validate_rejects_a_token_leeway_over_five_minutes() {
        let mut c = Config::single_node();
        c.auth.token_leeway_ms = 300_001;
        assert_invalid(&c, &["auth.token_leeway_ms = 300001", "5 minutes"]);
        c.auth.token_leeway_ms = 300_000;
        c.validate().unwrap();
        c.auth.token_leeway_ms = 0;
        c.validate().unwrap();
    }

    #[test]
    fn open_endpoints_are_written_in_lowercase() {
        let c = parse_with("[auth]\nopen_endpoints = [\"metrics\", \"cluster\"]").unwrap();
        assert_eq!(c.auth.open_endpoints, [OpenEndpoint::Metrics, OpenEndpoint::Cluster]);
        assert!(matches!(parse_with("[auth]\nopen_endpoints = [\"presence\"]"), Err(ConfigError::Parse(_))));
    }

    #[test]
    fn validate_rejects_zero_socket_and_join_limits_and_timeouts() {
        let mut c = Config::single_node();
        c.server.max_joins_per_second = 0;
        c.server.max_sockets = 0;
        c.server.max_sockets_per_ip = 0;
        c.server.max_sockets_per_user = 0;
        c.server.header_read_timeout_ms = 0;
        c.server.request_timeout_ms = 0;
        assert_invalid(
            &c,
            &[
                "6 problems",
                "server.max_joins_per_second = 0",
                "server.max_sockets = 0",
                "server.max_sockets_per_ip = 0",
                "server.max_sockets_per_user = 0",
                "server.header_read_timeout_ms = 0",
                "server.request_timeout_ms = 0",
            ],
        );
    }

    #[test]
    fn validate_rejects_a_meta_limit_below_the_empty_meta() {
        let mut c = Config::single_node();
        c.server.max_meta_bytes = 1;
        assert_invalid(&c, &["server.max_meta_bytes = 1", "at least 2"]);
        c.server.max_meta_bytes = 2;
        c.validate().unwrap();
    }

    #[test]
    fn validate_rejects_zero_outbound_queue() {
        let mut c = Config::single_node();
        c.server.outbound_queue = 0;
        assert_invalid(&c, &["server.outbound_queue = 0"]);
    }

    #[test]
    fn validate_rejects_an_outbound_byte_bound_below_one_frame() {
        let mut c = Config::single_node();
        c.server.outbound_queue_bytes = u64::from(c.server.max_frame_bytes) - 1;
        assert_invalid(&c, &["server.outbound_queue_bytes = 65535"]);
    }

    #[test]
    fn validate_rejects_a_flow_window_smaller_than_the_in_line_ping_spacing() {
        let mut c = Config::single_node();
        c.server.flow_window_bytes = MIN_FLOW_WINDOW_BYTES;
        c.validate().unwrap();
        c.server.flow_window_bytes = MIN_FLOW_WINDOW_BYTES - 1;
        assert_invalid(&c, &["server.flow_window_bytes = 16383"]);
        let sample = SAMPLE.replace("flow_window_bytes = 16384", "flow_window_bytes = 65536");
        let parsed = Config::from_toml_str(&sample).unwrap();
        assert_eq!(parsed.server.flow_window_bytes, 65536);
    }

    #[test]
    fn validate_rejects_zero_socket_limits_and_ping() {
        let mut c = Config::single_node();
        c.server.max_topics_per_socket = 0;
        c.server.max_pushes_per_second = 0;
        c.server.ping_ms = 0;
        assert_invalid(
            &c,
            &[
                "3 problems",
                "server.max_topics_per_socket = 0",
                "server.max_pushes_per_second = 0",
                "server.ping_ms = 0",
            ],
        );
    }

    #[test]
    fn validate_lists_every_problem_at_once() {
        let mut c = Config::single_node();
        c.cluster.partitions = 0;
        c.presence.shards = 0;
        let msg = invalid(&c);
        assert!(msg.starts_with("2 problems:\n- "), "{msg}");
        assert!(msg.contains("cluster.partitions") && msg.contains("presence.shards"), "{msg}");
    }

    #[test]
    fn timing_rule_accepts_the_defaults_which_need_about_3253() {
        let c = Config::single_node();
        c.validate().unwrap();
        let need = c.cluster.required_isolation_ms();
        assert!((need - 3252.525).abs() < 0.01, "{need}");
        assert_eq!(c.cluster.min_isolation_ms(), 3253);
    }

    #[test]
    fn timing_rule_rejects_isolation_3200_naming_the_minimum() {
        let mut c = Config::single_node();
        c.cluster.isolation_ms = 3200;
        assert_invalid(&c, &["cluster.isolation_ms = 3200", "above 3252.5", "at least 3253"]);
        c.cluster.isolation_ms = 3252;
        assert_invalid(&c, &["at least 3253"]);
        c.cluster.isolation_ms = 3253;
        c.validate().unwrap();
    }

    #[test]
    fn timing_rule_uses_heartbeat_timeout_when_it_exceeds_the_lease() {
        let mut c = Config::single_node();
        c.cluster.heartbeat_timeout_ms = 5000;
        // (5000 + 500 + 600 + 100) / 0.99
        assert!((c.cluster.required_isolation_ms() - 6262.63).abs() < 0.01);
        assert_invalid(&c, &["cluster.isolation_ms = 4000", "at least 6263"]);
    }

    #[test]
    fn unknown_node_error_lists_configured_names() {
        let c = Config::from_toml_str(SAMPLE).unwrap();
        assert_eq!(c.require_node(&NodeName::from("b")).unwrap().http_addr, "127.0.0.1:4001");
        assert!(c.node(&NodeName::from("d")).is_none());
        let err = c.require_node(&NodeName::from("d")).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownNode { .. }));
        assert_eq!(
            err.to_string(),
            "no [[cluster.nodes]] entry has name = \"d\"; the configured names are: \"a\", \"b\", \"c\""
        );
    }

    #[test]
    fn policy_for_takes_the_first_matching_policy() {
        let mut c = Config::single_node();
        c.policy = vec![
            PolicyConfig { max_slots: 3, ..PolicyConfig::new("room:vip:*") },
            PolicyConfig { on_conflict: OnConflict::Reject, ..PolicyConfig::new("room:*") },
            PolicyConfig { anonymous: AnonymousMode::Deny, ..PolicyConfig::new("*") },
        ];
        c.validate().unwrap();
        let vip = c.policy_for(&Topic::from("room:vip:1"));
        assert_eq!((vip.id, vip.max_slots, vip.on_conflict), (PolicyId::Configured(0), 3, OnConflict::Takeover));
        let room = c.policy_for(&Topic::from("room:1"));
        assert_eq!((room.id, room.on_conflict), (PolicyId::Configured(1), OnConflict::Reject));
        let other = c.policy_for(&Topic::from("lobby"));
        assert_eq!((other.id, other.anonymous), (PolicyId::Configured(2), AnonymousMode::Deny));
    }

    #[test]
    fn policy_for_unmatched_topic_is_the_built_in_default() {
        let c = with_policy(PolicyConfig { on_conflict: OnConflict::Reject, ..PolicyConfig::new("call:*") });
        let p = c.policy_for(&Topic::from("room:1"));
        assert_eq!(p, Policy::built_in());
        assert_eq!(p.id, PolicyId::BuiltIn);
        assert_eq!(p.on_conflict, OnConflict::Takeover);
        assert_eq!(p.max_slots, 1);
        assert_eq!(p.anonymous, AnonymousMode::Count);
        assert_eq!(p.scope, ScopeKind::Topic);
        assert_eq!(p.scope_key(&Topic::from("room:1")), ScopeKey::topic(Topic::from("room:1")));
    }

    #[test]
    fn global_scope_gives_one_key_to_all_matching_topics() {
        let mut c = with_policy(PolicyConfig { scope: ScopeKind::Global, ..PolicyConfig::new("game:*") });
        c.policy.push(PolicyConfig { scope: ScopeKind::Global, ..PolicyConfig::new("call:*") });
        let (a, b) = (Topic::from("game:1"), Topic::from("game:2"));
        let key_a = c.policy_for(&a).scope_key(&a);
        assert_eq!(key_a, c.policy_for(&b).scope_key(&b));
        assert_eq!(key_a, ScopeKey::global(PolicyId::Configured(0)));
        let call = Topic::from("call:1");
        assert_ne!(key_a, c.policy_for(&call).scope_key(&call));
        // Topic scope keeps rooms apart.
        let room = Topic::from("room:1");
        assert_ne!(c.policy_for(&room).scope_key(&room), c.policy_for(&a).scope_key(&a));
    }

    #[test]
    fn exempt_roles_skip_the_slot_check() {
        let c = with_policy(PolicyConfig { exempt_roles: vec![Role::from("admin")], ..PolicyConfig::new("*") });
        let p = c.policy_for(&Topic::from("x"));
        assert!(p.is_exempt(&Role::from("admin")));
        assert!(!p.is_exempt(&Role::from("user")));
    }

    #[test]
    fn resolved_policy_and_scope_key_survive_serde() {
        let c = with_policy(PolicyConfig { scope: ScopeKind::Global, ..PolicyConfig::new("*") });
        let t = Topic::from("x");
        let p = c.policy_for(&t);
        let back: Policy = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        let key = p.scope_key(&t);
        let back: ScopeKey = serde_json::from_str(&serde_json::to_string(&key).unwrap()).unwrap();
        assert_eq!(back, key);
    }

    /// The shape a scope key had when it was an enum: its bytes, order, hash and `Debug` must
    /// not change.
    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
    enum OldScopeKey {
        Topic(Topic),
        Global(PolicyId),
    }

    #[test]
    fn a_scope_key_is_one_pointer_and_encodes_orders_and_hashes_as_the_enum_it_was() {
        assert_eq!(std::mem::size_of::<ScopeKey>(), 8);
        let texts = ["", "a", "room:1", "room:2", "global:built-in"];
        let ids = [PolicyId::Configured(0), PolicyId::Configured(1), PolicyId::Configured(u32::MAX), PolicyId::BuiltIn];
        let mut keys: Vec<(ScopeKey, OldScopeKey)> =
            texts.iter().map(|t| (ScopeKey::topic(Topic::from(*t)), OldScopeKey::Topic(Topic::from(*t)))).collect();
        keys.extend(ids.iter().map(|id| (ScopeKey::global(*id), OldScopeKey::Global(*id))));
        let hash = |x: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            x(&mut h);
            std::hash::Hasher::finish(&h)
        };
        use std::hash::Hash;
        for (key, old) in &keys {
            let bytes = crate::codec::encode(key).unwrap();
            assert_eq!(bytes, crate::codec::encode(old).unwrap(), "{old:?}");
            let json = serde_json::to_string(key).unwrap();
            assert_eq!(json, serde_json::to_string(old).unwrap());
            assert_eq!(format!("{key:?}"), format!("{old:?}"));
            assert_eq!(hash(&|h| key.hash(h)), hash(&|h| old.hash(h)), "{old:?}");
            let decoded: ScopeKey = crate::codec::decode(&bytes).unwrap();
            assert_eq!(&decoded, key);
            assert_eq!(serde_json::from_str::<ScopeKey>(&json).unwrap(), *key);
            for (other, other_old) in &keys {
                assert_eq!(key.cmp(other), old.cmp(other_old), "{old:?} against {other_old:?}");
                assert_eq!(key == other, old == other_old);
            }
        }
        // A global scope is never a topic, not even the empty one its name has no text for.
        let global = ScopeKey::global(PolicyId::BuiltIn);
        assert_eq!((global.as_topic(), global.is_global()), (None, true));
        assert_ne!(global, ScopeKey::topic(Topic::default()));
        assert_eq!(global.to_string(), "global:built-in");
        // A topic scope's key is the topic's own `Arc`; a global scope's name is shared.
        let room = Topic::from("room:1");
        let key = ScopeKey::topic(room.clone());
        assert!(key.as_topic().is_some_and(|t| t.ptr_eq(&room)) && !key.is_global());
        assert_eq!(room.strong_count(), 2);
        assert_eq!(key.to_string(), "topic:room:1");
        let again: ScopeKey = crate::codec::decode(&crate::codec::encode(&global).unwrap()).unwrap();
        assert!(again.0.ptr_eq(&global.0), "a decoded global key is the shared one");
        assert!(ScopeKey::global(PolicyId::Configured(3)).0.ptr_eq(&ScopeKey::global(PolicyId::Configured(3)).0));
    }

    fn valid_config() -> impl Strategy<Value = Config> {
        let server = (
            proptest::collection::vec("https://[a-z]{1,8}\\.example", 0..3),
            1024u32..1_000_000,
            1u32..1000,
            1u32..1000,
            1u32..100_000,
            1u64..60_000,
            1u64..60_000,
        );
        let limits = (
            (1u32..1000, 2u32..1024, 1u32..100_000, 1u32..100_000, any::<bool>(), 1u32..1000),
            (1u64..60_000, 1u64..60_000),
        );
        let server = (server, limits).prop_map(
            |(
                (allowed_origins, max_frame_bytes, topics, pushes, queue, ping_ms, join_wait_ms),
                ((joins, meta, sockets, per_ip, loopback_exempt, per_user), (header_ms, request_ms)),
            )| ServerConfig {
                allowed_origins,
                max_frame_bytes,
                max_topics_per_socket: topics,
                max_pushes_per_second: pushes,
                max_joins_per_second: joins,
                max_meta_bytes: meta,
                max_sockets: sockets,
                max_sockets_per_ip: per_ip,
                loopback_exempt,
                max_sockets_per_user: per_user,
                outbound_queue: queue,
                outbound_queue_bytes: 16 << 20,
                ping_ms,
                flow_window_bytes: 32 * 1024,
                join_wait_ms,
                header_read_timeout_ms: header_ms,
                request_timeout_ms: request_ms,
                demo: false,
            },
        );
        let presence = (1u32..64, 0u64..100, 0u64..1000).prop_map(|(shards, broadcast_ms, diff_ms)| PresenceConfig {
            shards,
            broadcast_ms,
            diff_ms,
        });
        let cluster = (
            "[a-z-]{0,12}",
            "[./a-z]{1,16}",
            1u32..4096,
            1u64..1000,
            1u64..10,
            4u64..20_000,
            0.0f64..0.49,
            0u64..5000,
            1usize..6,
        )
            .prop_map(|(cookie, data_dir, partitions, hb, timeout_factor, lease_ms, max_drift, slack, n)| {
                let mut c = ClusterConfig {
                    cookie,
                    data_dir,
                    partitions,
                    heartbeat_ms: hb,
                    heartbeat_timeout_ms: hb * (timeout_factor + 1),
                    lease_ms,
                    isolation_ms: 0,
                    max_drift,
                    nodes: (0..n).map(|i| node(&format!("n{i}"), 4370 + i as u16)).collect(),
                    ..ClusterConfig::default()
                };
                c.isolation_ms = c.min_isolation_ms() + slack;
                c
            });
        let policy = (
            prop_oneof![Just(ScopeKind::Topic), Just(ScopeKind::Global)],
            1u32..10,
            prop_oneof![Just(OnConflict::Takeover), Just(OnConflict::Reject), Just(OnConflict::Wait)],
            1u64..10_000,
            0u64..10_000,
            proptest::collection::vec("[a-z]{1,6}", 0..3),
            prop_oneof![Just(AnonymousMode::Deny), Just(AnonymousMode::Count), Just(AnonymousMode::List)],
            prop_oneof![Just(PresenceMode::List), Just(PresenceMode::Count)],
        )
            .prop_map(|(scope, max_slots, on_conflict, wait_ms, reserve_ms, roles, anonymous, presence)| {
                PolicyConfig {
                    topic: String::new(),
                    scope,
                    max_slots,
                    on_conflict,
                    wait_ms,
                    reserve_ms,
                    exempt_roles: roles.into_iter().map(Role::from).collect(),
                    anonymous,
                    presence,
                }
            });
        let policies = (proptest::collection::vec(policy, 0..5), any::<bool>()).prop_map(|(mut ps, catch_all)| {
            let last = ps.len().saturating_sub(1);
            for (i, p) in ps.iter_mut().enumerate() {
                // Distinct, non-overlapping patterns so none hides another; optionally "*" last.
                p.topic = match i % 2 {
                    _ if catch_all && i == last => "*".to_owned(),
                    0 => format!("t{i}"),
                    _ => format!("w{i}:*"),
                };
            }
            ps
        });
        let open =
            proptest::collection::vec(prop_oneof![Just(OpenEndpoint::Cluster), Just(OpenEndpoint::Metrics)], 0..3);
        let auth = (prop_oneof![Just(String::new()), "[ -~]{32,64}"], "[a-zA-Z0-9]{0,20}", 0u64..=300_000, open)
            .prop_map(|(secret, api_key, token_leeway_ms, open_endpoints)| AuthConfig {
                secret,
                api_key,
                token_leeway_ms,
                open_endpoints,
            });
        (auth, server, presence, cluster, policies).prop_map(|(auth, server, presence, cluster, mut policy)| {
            for p in &mut policy {
                p.wait_ms = p.wait_ms.min(server.join_wait_ms);
            }
            Config { auth, server, presence, cluster, policy }
        })
    }

    proptest! {
        #[test]
        fn valid_config_round_trips_through_toml(c in valid_config()) {
            c.validate().unwrap();
            let text = toml::to_string(&c).unwrap();
            let back = Config::from_toml_str(&text).unwrap();
            prop_assert_eq!(back, c);
        }
    }
}
