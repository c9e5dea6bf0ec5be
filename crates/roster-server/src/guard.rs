//! What one socket may send, checked before a frame reaches the node: event names the protocol
//! reserves, joins and leaves per second (`max_joins_per_second`), the size of a meta
//! (`max_meta_bytes`), the topics its token may join (the `topics` claim), and the instant its
//! token expires.
//!
//! A refused frame is answered with a [`Refusal`]'s reason and counted; the socket, its
//! channels and every other client are unchanged.

use crate::frame::{Frame, PHOENIX_TOPIC};
use crate::limits::RateWindow;
use crate::token::Claims;
use roster_core::ServerConfig;
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Events only the server sends, or that the protocol gives a meaning: a client pushing one
/// would have it relayed to every member of the topic, whose phoenix client would obey it
/// (a relayed `phx_close` ends their channel for good). Besides these, every event beginning
/// with `phx_` or `presence_` is reserved.
const RESERVED_EVENTS: &[&str] = &["slot_revoked", "heartbeat"];

/// Whether `event` is reserved by the protocol: `phx_*` (`phx_reply`, `phx_close`,
/// `phx_error`, ...; `phx_join` and `phx_leave` are handled before any push), `presence_*`
/// (`presence_state`, `presence_diff`), `slot_revoked`, and `heartbeat` outside the `phoenix`
/// topic. A client's `presence:update` (with a colon) is not reserved.
pub(crate) fn is_reserved_event(event: &str) -> bool {
    event.starts_with("phx_") || event.starts_with("presence_") || RESERVED_EVENTS.contains(&event)
}

/// Why a frame was refused: what the client is answered, and how it is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The `reason` of the error reply.
    pub reply: &'static str,
    /// The label it is counted under: a `roster_bad_frames_total` kind, or for a limit the
    /// `[server]` key in `roster_limited_total`.
    pub counter: Counter,
    /// What happened, for the log (once per socket and kind).
    pub what: &'static str,
}

/// Which family a [`Refusal`] is counted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    /// `roster_bad_frames_total{reason}`: input no well-behaved client sends.
    BadFrame(&'static str),
    /// `roster_limited_total{reason}`: a configured limit, named by its `[server]` key.
    Limited(&'static str),
    /// `roster_join_rejects_total{reason}` alone: a join the token does not allow.
    JoinReject(&'static str),
}

const RESERVED_EVENT: Refusal = Refusal {
    reply: "bad_request",
    counter: Counter::BadFrame("reserved_event"),
    what: "a push of an event the protocol reserves (phx_*, presence_*, slot_revoked, heartbeat)",
};
const JOINS_RATE_LIMITED: Refusal = Refusal {
    reply: "rate_limited",
    counter: Counter::Limited("max_joins_per_second"),
    what: "joins and leaves over max_joins_per_second",
};
const META_TOO_LARGE: Refusal = Refusal {
    reply: "meta_too_large",
    counter: Counter::Limited("max_meta_bytes"),
    what: "a meta over max_meta_bytes",
};
const TOPIC_NOT_IN_TOKEN: Refusal = Refusal {
    reply: "forbidden_topic",
    counter: Counter::JoinReject("forbidden_topic"),
    what: "a join to a topic the token's `topics` claim does not list",
};

/// The per-socket checks. One per socket, owned by its task.
pub(crate) struct SocketGuard {
    joins: RateWindow,
    max_meta_bytes: usize,
    claims: Option<Claims>,
    expires_at: Option<Instant>,
}

impl SocketGuard {
    /// The checks for a socket whose token said `claims` (`None`: anonymous, or a refused
    /// token), opened at `now`.
    pub(crate) fn new(server: &ServerConfig, claims: Option<Claims>, token_leeway_ms: u64, now: Instant) -> Self {
        // An expiry too far away for the clock to represent is no expiry (the token says "never").
        let expires_at = claims.as_ref().and_then(|c| {
            let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            now.checked_add(Duration::from_millis(c.expires_at_ms(token_leeway_ms).saturating_sub(unix_ms)))
        });
        SocketGuard {
            joins: RateWindow::new(server.max_joins_per_second, now),
            max_meta_bytes: server.max_meta_bytes as usize,
            claims,
            expires_at,
        }
    }

    /// When the socket's token expires (`None`: no token). At that instant every channel is
    /// revoked with `token_expired` and the socket closed with 1008.
    pub(crate) fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// Check one parsed frame at `now`. `member` says whether the socket has (or is joining) the
    /// frame's topic. `Err`: answer the frame with the refusal's reason and go no further.
    pub(crate) fn check(&mut self, frame: &Frame, member: bool, now: Instant) -> Result<(), Refusal> {
        match (frame.topic.as_str(), frame.event.as_str()) {
            (PHOENIX_TOPIC, "heartbeat") => Ok(()),
            (_, "phx_join") => {
                if !self.joins.admit(now) {
                    return Err(JOINS_RATE_LIMITED);
                }
                if self.claims.as_ref().is_some_and(|c| !c.may_join(&frame.topic)) {
                    return Err(TOPIC_NOT_IN_TOKEN);
                }
                match frame.payload.get("meta") {
                    Some(meta) => self.check_meta(meta),
                    None => Ok(()),
                }
            }
            // Leaving a channel the socket has is always allowed (it frees what it held), but it
            // counts; a leave of nothing over the limit is refused like a join.
            (_, "phx_leave") => match self.joins.admit(now) || member {
                true => Ok(()),
                false => Err(JOINS_RATE_LIMITED),
            },
            (_, "presence:update") => self.check_meta(&frame.payload),
            (_, event) if is_reserved_event(event) => Err(RESERVED_EVENT),
            _ => Ok(()),
        }
    }

    fn check_meta(&self, meta: &Value) -> Result<(), Refusal> {
        match json_len(meta) > self.max_meta_bytes {
            true => Err(META_TOO_LARGE),
            false => Ok(()),
        }
    }
}

/// Resolves when a socket's token expires ([`SocketGuard::expires_at`]); never without a token.
pub(crate) async fn expiry(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The length of `value` written as compact JSON, without building the string.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The revocation reasons Roster itself gives; any other reason came from a backend's
/// `POST /kick` (free text).
const ROSTER_REVOKE_REASONS: &[&str] = &["logged_in_elsewhere", "node_isolated", "token_expired"];

/// The label a revocation is counted under in `roster_revokes_total{reason}`: Roster's own
/// reasons as they are, every kick's free-text reason as `kicked`, so that a backend cannot
/// grow the metrics without bound.
pub(crate) fn revoke_label(reason: &str) -> &'static str {
    ROSTER_REVOKE_REASONS.iter().find(|r| **r == reason).copied().unwrap_or("kicked")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(topic: &str, event: &str, payload: Value) -> Frame {
        Frame {
            join_ref: Some("1".into()),
            msg_ref: Some("2".into()),
            topic: topic.into(),
            event: event.into(),
            payload,
        }
    }

    fn guard(server: ServerConfig, claims: Option<Claims>) -> SocketGuard {
        SocketGuard::new(&server, claims, 0, Instant::now())
    }

    #[test]
    fn events_the_server_sends_are_reserved_and_app_events_are_not() {
        for event in [
            "phx_close",
            "phx_error",
            "phx_reply",
            "phx_join_",
            "phx_",
            "presence_state",
            "presence_diff",
            "slot_revoked",
            "heartbeat",
        ] {
            assert!(is_reserved_event(event), "{event}");
        }
        for event in ["shout", "presence:update", "typing", "Phx_close", "phx", "presence", "slot", ""] {
            assert!(!is_reserved_event(event), "{event}");
        }
    }

    #[test]
    fn pushing_a_reserved_event_is_a_bad_request_counted_as_reserved_event() {
        let mut g = guard(ServerConfig::default(), None);
        let now = Instant::now();
        for event in ["phx_close", "phx_error", "presence_diff", "slot_revoked", "phx_reply", "heartbeat"] {
            let refusal = g.check(&frame("room:1", event, json!({})), true, now).unwrap_err();
            assert_eq!((refusal.reply, refusal.counter), ("bad_request", Counter::BadFrame("reserved_event")));
        }
        assert_eq!(g.check(&frame("phoenix", "heartbeat", json!({})), false, now), Ok(()));
        assert_eq!(g.check(&frame("room:1", "shout", json!({})), true, now), Ok(()));
    }

    #[test]
    fn joins_and_leaves_share_one_rate_window() {
        let server = ServerConfig { max_joins_per_second: 3, ..ServerConfig::default() };
        let mut g = guard(server, None);
        let t0 = Instant::now();
        assert_eq!(g.check(&frame("a", "phx_join", json!({})), false, t0), Ok(()));
        assert_eq!(g.check(&frame("a", "phx_leave", json!({})), true, t0), Ok(()));
        assert_eq!(g.check(&frame("b", "phx_join", json!({})), false, t0), Ok(()));
        let refused = g.check(&frame("c", "phx_join", json!({})), false, t0).unwrap_err();
        assert_eq!((refused.reply, refused.counter), ("rate_limited", Counter::Limited("max_joins_per_second")));
        assert_eq!(g.check(&frame("x", "phx_leave", json!({})), false, t0), Err(JOINS_RATE_LIMITED));
        assert_eq!(g.check(&frame("b", "phx_leave", json!({})), true, t0), Ok(()), "leaving a member topic");
        assert_eq!(g.check(&frame("c", "phx_join", json!({})), false, t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn metas_over_the_limit_are_refused_on_join_and_update() {
        let server = ServerConfig { max_meta_bytes: 20, ..ServerConfig::default() };
        let mut g = guard(server, None);
        let now = Instant::now();
        let fits = json!({"name": "abcdefghi"}); // {"name":"abcdefghi"} is 20 bytes
        let over = json!({"name": "abcdefghij"});
        assert_eq!(json_len(&fits), 20);
        assert_eq!(g.check(&frame("a", "phx_join", json!({"meta": fits})), false, now), Ok(()));
        assert_eq!(g.check(&frame("b", "phx_join", json!({"meta": over})), false, now), Err(META_TOO_LARGE));
        assert_eq!(g.check(&frame("a", "presence:update", fits), true, now), Ok(()));
        let refused = g.check(&frame("a", "presence:update", over), true, now).unwrap_err();
        assert_eq!((refused.reply, refused.counter), ("meta_too_large", Counter::Limited("max_meta_bytes")));
    }

    #[test]
    fn a_token_with_topics_may_join_only_those() {
        let claims = Claims::new("42", "user", u64::MAX / 1000).with_topics(["room:*"]);
        let mut g = guard(ServerConfig::default(), Some(claims));
        let now = Instant::now();
        assert_eq!(g.check(&frame("room:1", "phx_join", json!({})), false, now), Ok(()));
        let refused = g.check(&frame("call:1", "phx_join", json!({})), false, now).unwrap_err();
        assert_eq!((refused.reply, refused.counter), ("forbidden_topic", Counter::JoinReject("forbidden_topic")));
        assert_eq!(
            guard(ServerConfig::default(), None).check(&frame("call:1", "phx_join", json!({})), false, now),
            Ok(())
        );
    }

    #[test]
    fn the_socket_expires_when_its_token_does_plus_the_leeway() {
        let now = Instant::now();
        let unix_s = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let g = SocketGuard::new(&ServerConfig::default(), Some(Claims::new("42", "user", unix_s + 10)), 5000, now);
        let left = g.expires_at().unwrap() - now;
        // exp is whole seconds: between 14 and 15 s from now.
        assert!(left > Duration::from_secs(13) && left <= Duration::from_secs(15), "{left:?}");
        assert_eq!(SocketGuard::new(&ServerConfig::default(), None, 5000, now).expires_at(), None);
        // The largest exp a token can carry neither panics nor expires early.
        let never =
            SocketGuard::new(&ServerConfig::default(), Some(Claims::new("42", "user", u64::MAX)), u64::MAX, now);
        assert!(never.expires_at().is_none_or(|at| at - now > Duration::from_secs(1_000_000_000)));
    }

    #[test]
    fn kick_reasons_are_counted_as_kicked_and_roster_reasons_as_themselves() {
        for reason in ["logged_in_elsewhere", "node_isolated", "token_expired"] {
            assert_eq!(revoke_label(reason), reason);
        }
        for reason in ["kicked", "banned for spam", "", "x".repeat(10_000).as_str()] {
            assert_eq!(revoke_label(reason), "kicked");
        }
    }
}
