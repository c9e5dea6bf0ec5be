//! The server's counters, rendered as Prometheus text at `/metrics`. One registry per server
//! (not process-global), so tests can run several servers in one process.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label set with one `reason` (or `kind`) label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// The reason or kind.
    pub reason: String,
}

/// A label set with one `kind` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// The kind.
    pub kind: String,
}

/// Every counter the gateway keeps.
#[derive(Default)]
pub struct Metrics {
    registry: Registry,
    /// Open WebSockets.
    pub sockets: Gauge,
    /// WebSockets accepted.
    pub sockets_opened: Counter,
    /// Joins answered ok.
    pub joins: Counter,
    /// Joins refused, by reason.
    pub join_rejects: Family<Reason, Counter>,
    /// Slots revoked, by reason.
    pub revokes: Family<Reason, Counter>,
    /// Frames refused, by kind (`invalid_json`, `wrong_length`, `too_large`, ...).
    pub bad_frames: Family<Reason, Counter>,
    /// Sockets closed because they did not drain their outbound queue.
    pub slow_clients: Counter,
    /// Pushes refused by the per-socket rate limit.
    pub rate_limited: Counter,
    /// Refusals by a configured limit, labelled by its `[server]` key: `max_sockets`,
    /// `max_sockets_per_ip`, `max_sockets_per_user`, `max_joins_per_second`, `max_meta_bytes`,
    /// `header_read_timeout_ms`, `request_timeout_ms`.
    pub limited: Family<Reason, Counter>,
    /// Open connections to `http_addr` (WebSockets and plain HTTP; updated at each scrape).
    pub connections: Gauge,
    /// `POST /kick` requests accepted (their free-text reasons are never labels).
    pub kicks: Counter,
    /// Tokens refused (bad signature, malformed, expired).
    pub bad_tokens: Family<Reason, Counter>,
    /// Sockets refused for an `Origin` not in `allowed_origins`.
    pub refused_origins: Counter,
    /// Sockets closed for not answering pings.
    pub ping_timeouts: Counter,
    /// Presence entries in this node's replica (updated at each scrape).
    pub presence_entries: Gauge,
    /// Slots held by this node's connections (updated at each scrape).
    pub slots: Gauge,
    /// The cluster link's counters, by kind (`frames_sent`, `refused`, `sessions_down`, ...),
    /// brought up to the link's own counts at each scrape.
    pub cluster_link: Family<Reason, Counter>,
    /// Peers whose cluster link is up (updated at each scrape).
    pub cluster_links_up: Gauge,
    /// Peers this node hears heartbeats from (updated at each scrape).
    pub cluster_peers_alive: Gauge,
    /// What the process's allocator says of itself, by kind (`allocated`, `active`, ...), read
    /// at each scrape; registered only when the server was given a probe
    /// ([`Metrics::register_allocator`]).
    pub allocator_bytes: Family<Kind, Gauge>,
}

impl Metrics {
    /// Counters registered under the `roster` prefix.
    pub fn new() -> Self {
        let mut m = Metrics::default();
        let mut r = Registry::with_prefix("roster");
        r.register("sockets", "Open WebSockets", m.sockets.clone());
        r.register("sockets_opened", "WebSockets accepted", m.sockets_opened.clone());
        r.register("joins", "Joins answered ok", m.joins.clone());
        r.register("join_rejects", "Joins refused, by reason", m.join_rejects.clone());
        r.register("revokes", "Slots revoked, by reason", m.revokes.clone());
        r.register("bad_frames", "Frames refused, by kind", m.bad_frames.clone());
        r.register("slow_clients_closed", "Sockets closed for a full outbound queue", m.slow_clients.clone());
        r.register("rate_limited", "Pushes refused by the rate limit", m.rate_limited.clone());
        r.register("limited", "Refusals by a configured limit, by its [server] key", m.limited.clone());
        r.register("connections", "Open connections to http_addr", m.connections.clone());
        r.register("kicks", "POST /kick requests accepted", m.kicks.clone());
        r.register("bad_tokens", "Tokens refused, by reason", m.bad_tokens.clone());
        r.register("refused_origins", "Sockets refused for their Origin", m.refused_origins.clone());
        r.register("ping_timeouts", "Sockets closed for not answering pings", m.ping_timeouts.clone());
        r.register("presence_entries", "Presence entries in this node's replica", m.presence_entries.clone());
        r.register("slots", "Slots held by this node's connections", m.slots.clone());
        r.register("cluster_link", "Cluster link events, by kind", m.cluster_link.clone());
        r.register("cluster_links_up", "Peers whose cluster link is up", m.cluster_links_up.clone());
        r.register("cluster_peers_alive", "Peers heard within heartbeat_timeout_ms", m.cluster_peers_alive.clone());
        m.registry = r;
        m
    }

    /// Show `roster_allocator_bytes{kind}`: the server was given an allocator probe. Without
    /// this call the family is not in the registry and `/metrics` shows neither samples nor
    /// its description.
    pub fn register_allocator(&mut self) {
        self.registry.register(
            "allocator_bytes",
            "The process's allocator's own figures, by kind, read at each scrape",
            self.allocator_bytes.clone(),
        );
    }

    /// Set `roster_allocator_bytes` to exactly `figures`: a kind the probe did not give this
    /// time (a failed read) shows no sample rather than a stale one.
    pub fn set_allocator(&self, figures: &[(&'static str, u64)]) {
        self.allocator_bytes.clear();
        for &(kind, bytes) in figures {
            let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
            self.allocator_bytes.get_or_create(&Kind { kind: kind.to_owned() }).set(bytes);
        }
    }

    /// Count one under a reason label.
    pub fn inc(family: &Family<Reason, Counter>, reason: &str) {
        family.get_or_create(&Reason { reason: reason.to_owned() }).inc();
    }

    /// Bring a counter up to `value`, a count kept elsewhere that only grows.
    pub fn catch_up(family: &Family<Reason, Counter>, reason: &str, value: u64) {
        let c = family.get_or_create(&Reason { reason: reason.to_owned() });
        c.inc_by(value.saturating_sub(c.get()));
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
