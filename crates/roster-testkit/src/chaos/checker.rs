//! The checker of P2–P5 over a chaos history, from the clients' side (P1 is judged over the
//! nodes' record logs by the simulation's checker, through [`crate::records`]).
//!
//! Every promise is stated as DESIGN.md states it, in the exact form the chaos run can see:
//!
//! - **P2** A resume (the same `tab_id` on a new socket) after an unclean drop, of a channel
//!   that held its slot when dropped, is granted within `resume_bound_ms` (500) of its
//!   `phx_join`, when it happens in a *stable* stretch: no node or link fault within
//!   [`Params::stable_ms`] before the drop, nor until the bound has passed (the home lives and
//!   is settled).
//! - **P3** A join's presence is gone, from every client's view and every node's list, within
//!   its bound after its connection's end (the first of: the client's close, drop or leave,
//!   the server's `slot_revoked`/`phx_close`/`phx_error` or socket close, its gateway's death):
//!   1 s; `heartbeat_timeout_ms + 1 s` (plus any link delay) when the gateway, the observer or
//!   the link between them was in trouble around the end; from a stall (a client that stops
//!   reading), `2 × ping_ms + 1 s`. And while a gateway is stopped, or cut off from an
//!   observer's node (both ways, or in the direction towards the observer), its presences are
//!   gone from that node within `heartbeat_timeout_ms + 1 s`. Views are judged only while
//!   their node runs and has run for a second (a stopped node cannot send the leave).
//! - **P4** At a quiet check (no operation, no fault, no unanswered join for 2 s), all nodes'
//!   lists of each topic are equal, and every live client's view equals them.
//! - **P5** Every join is answered (ok, error, or its channel ended) within `join_wait_ms`
//!   (plus the time its gateway was stopped) while its socket stays open and the client has
//!   not left it; and at every quiet
//!   check, every acknowledged join whose channel the client has not seen end is in every
//!   node's list and in its own view.
//!
//! Every bound gets `margin_ms` on top: the nodes, the proxies and the clients share two
//! cores, so a verdict is about the code, not the machine.

use crate::chaos::history::{Event, JoinKind, Ms};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The bounds the checker judges by.
#[derive(Clone, Debug)]
pub struct Params {
    /// `heartbeat_timeout_ms`.
    pub heartbeat_timeout_ms: u64,
    /// `[server] ping_ms`.
    pub ping_ms: u64,
    /// `[server] join_wait_ms`.
    pub join_wait_ms: u64,
    /// P2's bound: 500.
    pub resume_bound_ms: u64,
    /// P3's bound for a clean end or a killed process: 1000.
    pub purge_bound_ms: u64,
    /// How long with no fault before a drop makes a stretch stable for P2.
    pub stable_ms: u64,
    /// Added to every bound.
    pub margin_ms: u64,
}

/// A broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChaosViolation {
    /// `P2` … `P5`.
    pub promise: &'static str,
    /// When it is visible (Unix ms).
    pub at: Ms,
    /// What broke, with the joins, sockets and nodes involved.
    pub what: String,
}

impl fmt::Display for ChaosViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.promise, self.at, self.what)
    }
}

#[derive(Clone, Debug, Default)]
struct SocketInfo {
    node: String,
    user: Option<String>,
    tab: Option<String>,
    opened: Ms,
    end: Option<(Ms, String)>,
    stalled: Option<Ms>,
}

#[derive(Clone, Debug)]
struct JoinInfo {
    socket: u32,
    topic: String,
    kind: JoinKind,
    sent: Ms,
    reply: Option<(Ms, bool, Option<String>)>,
    ended: Option<(Ms, String)>,
    left: Option<Ms>,
}

/// A span of trouble: a node down or stopped, or a link fault.
#[derive(Clone, Debug)]
struct Span {
    from: Ms,
    to: Ms,
    /// `down`, `stopped`, or a link mode.
    what: String,
    /// For a link: its two nodes; for a node: itself twice.
    a: String,
    b: String,
}

/// One change of an observer's view: `(at, metas that appeared, metas that disappeared)`.
type ViewChange = (Ms, Vec<u32>, Vec<u32>);

/// The history read into what the checks ask.
pub(crate) struct Model {
    sockets: BTreeMap<u32, SocketInfo>,
    joins: BTreeMap<u32, JoinInfo>,
    /// Node down/stopped spans and link fault spans.
    spans: Vec<Span>,
    /// Node deaths (kill or graceful exit): `(node, at)`.
    deaths: Vec<(String, Ms)>,
    /// Every instant a node or link changed.
    changes: Vec<Ms>,
    /// Per observing join: its view changes `(at, add, del)`.
    views: BTreeMap<u32, Vec<ViewChange>>,
    end: Ms,
}

impl Model {
    pub(crate) fn new(events: &[Event]) -> Model {
        let mut m = Model {
            sockets: BTreeMap::new(),
            joins: BTreeMap::new(),
            spans: Vec::new(),
            deaths: Vec::new(),
            changes: Vec::new(),
            views: BTreeMap::new(),
            end: events.iter().map(Event::at).max().unwrap_or(0),
        };
        let mut open_node: BTreeMap<String, (Ms, &'static str)> = BTreeMap::new();
        let mut open_link: BTreeMap<(String, String), (Ms, String)> = BTreeMap::new();
        for e in events {
            match e {
                Event::NodeKilled { at, node } | Event::NodeTerminated { at, node } => {
                    m.changes.push(*at);
                    m.deaths.push((node.clone(), *at));
                    if let Some((from, what)) = open_node.remove(node) {
                        m.spans.push(Span { from, to: *at, what: what.into(), a: node.clone(), b: node.clone() });
                    }
                    open_node.insert(node.clone(), (*at, "down"));
                }
                Event::NodeStopped { at, node } => {
                    m.changes.push(*at);
                    open_node.insert(node.clone(), (*at, "stopped"));
                }
                Event::NodeStarted { at, node } | Event::NodeContinued { at, node } => {
                    m.changes.push(*at);
                    if let Some((from, what)) = open_node.remove(node) {
                        m.spans.push(Span { from, to: *at, what: what.into(), a: node.clone(), b: node.clone() });
                    }
                }
                Event::LinkFault { at, a, b, mode } => {
                    m.changes.push(*at);
                    open_link.insert((a.clone(), b.clone()), (*at, mode.clone()));
                }
                Event::LinkHealed { at, a, b } => {
                    m.changes.push(*at);
                    if let Some((from, what)) = open_link.remove(&(a.clone(), b.clone())) {
                        m.spans.push(Span { from, to: *at, what, a: a.clone(), b: b.clone() });
                    }
                }
                Event::Connected { at, socket, node, user, tab, .. } => {
                    let s = m.sockets.entry(*socket).or_default();
                    s.node = node.clone();
                    s.user = user.clone();
                    s.tab = tab.clone();
                    s.opened = *at;
                }
                Event::Stalled { at, socket } => {
                    m.sockets.entry(*socket).or_default().stalled = Some(*at);
                }
                Event::SocketEnd { at, socket, by } => {
                    m.sockets.entry(*socket).or_default().end = Some((*at, by.clone()));
                }
                Event::Join { at, socket, join, topic, kind, .. } => {
                    m.joins.insert(
                        *join,
                        JoinInfo {
                            socket: *socket,
                            topic: topic.clone(),
                            kind: *kind,
                            sent: *at,
                            reply: None,
                            ended: None,
                            left: None,
                        },
                    );
                }
                Event::Reply { at, join, ok, detail } => {
                    if let Some(j) = m.joins.get_mut(join) {
                        j.reply.get_or_insert((*at, *ok, detail.clone()));
                    }
                }
                Event::ChannelEnd { at, join, how } => {
                    if let Some(j) = m.joins.get_mut(join) {
                        j.ended.get_or_insert((*at, how.clone()));
                    }
                }
                Event::Leave { at, join } => {
                    if let Some(j) = m.joins.get_mut(join) {
                        j.left.get_or_insert(*at);
                    }
                }
                Event::View { at, join, add, del } => {
                    m.views.entry(*join).or_default().push((*at, add.clone(), del.clone()));
                }
                _ => {}
            }
        }
        for (node, (from, what)) in open_node {
            m.spans.push(Span { from, to: Ms::MAX, what: what.into(), a: node.clone(), b: node });
        }
        for ((a, b), (from, what)) in open_link {
            m.spans.push(Span { from, to: Ms::MAX, what, a, b });
        }
        m.changes.sort_unstable();
        m
    }

    fn node_of_join(&self, join: u32) -> Option<&str> {
        let j = self.joins.get(&join)?;
        self.sockets.get(&j.socket).map(|s| s.node.as_str())
    }

    /// When the gateway of `socket` died after it opened.
    fn gateway_death(&self, socket: &SocketInfo) -> Option<Ms> {
        self.deaths.iter().filter(|(n, at)| *n == socket.node && *at >= socket.opened).map(|(_, at)| *at).min()
    }

    /// The end of the join's connection and the extra time its bound allows (a stall's two
    /// pings), with what ended it.
    fn join_end(&self, join: u32, p: &Params) -> Option<(Ms, u64, String)> {
        let j = self.joins.get(&join)?;
        let s = self.sockets.get(&j.socket)?;
        let mut ends: Vec<(Ms, u64, String)> = Vec::new();
        if let Some((at, how)) = &j.ended {
            ends.push((*at, 0, how.clone()));
        }
        if let Some(at) = j.left {
            ends.push((at, 0, "left".into()));
        }
        if let Some((at, false, reason)) = &j.reply {
            ends.push((*at, 0, format!("refused {}", reason.as_deref().unwrap_or("?"))));
        }
        if let Some((at, by)) = &s.end {
            ends.push((*at, 0, format!("socket ended ({by})")));
        }
        if let Some(at) = s.stalled {
            ends.push((at, 2 * p.ping_ms, "client stalled".into()));
        }
        if let Some(at) = self.gateway_death(s) {
            ends.push((at, 0, format!("gateway {} died", s.node)));
        }
        ends.into_iter().min_by_key(|(at, extra, _)| at + extra)
    }

    /// Until when `join`'s view can follow the node: its connection's end, or the instant its
    /// client stopped reading, whichever came first. (The stall's extra two pings in
    /// [`Model::join_end`] bound the join's own presence, not what its client sees.)
    fn view_end(&self, join: u32, p: &Params) -> Ms {
        let end = self.join_end(join, p).map_or(Ms::MAX, |(at, _, _)| at);
        let stalled = self.joins.get(&join).and_then(|j| self.sockets.get(&j.socket)).and_then(|s| s.stalled);
        stalled.map_or(end, |at| end.min(at))
    }

    /// Node `node`'s trouble (down or stopped) overlapping `[from, to]`.
    fn node_trouble(&self, node: &str, from: Ms, to: Ms) -> bool {
        self.spans.iter().any(|s| s.a == node && s.b == node && s.from <= to && s.to >= from)
    }

    /// Link trouble between `a` and `b` overlapping `[from, to]`, and the largest delay among it.
    fn link_trouble(&self, a: &str, b: &str, from: Ms, to: Ms) -> Option<u64> {
        let mut found = None;
        for s in &self.spans {
            let pair = (s.a == a && s.b == b) || (s.a == b && s.b == a);
            if pair && s.a != s.b && s.from <= to && s.to >= from {
                let delay = s.what.strip_prefix("delay ").and_then(|d| d.parse().ok()).unwrap_or(0);
                found = Some(found.unwrap_or(0).max(delay));
            }
        }
        found
    }

    /// Whether node `o` ran, not stopped, over `[t − 1000, t]`.
    fn healthy(&self, o: &str, t: Ms) -> bool {
        !self.node_trouble(o, t.saturating_sub(1000), t)
    }

    /// The instant after which the presence of `join` must be gone from node `o`'s list and
    /// its clients' views, with why.
    fn deadline(&self, join: u32, o: &str, p: &Params) -> Option<(Ms, String)> {
        let (end, extra, why) = self.join_end(join, p)?;
        let g = self.node_of_join(join)?;
        let window = (end.saturating_sub(p.heartbeat_timeout_ms), end + p.purge_bound_ms + extra);
        let troubled = g != o
            && (self.node_trouble(g, window.0, window.1)
                || self.node_trouble(o, window.0, window.1)
                || self.link_trouble(g, o, window.0, window.1).is_some());
        let bound = if troubled {
            let delay = self.link_trouble(g, o, window.0, window.1).unwrap_or(0);
            p.heartbeat_timeout_ms + p.purge_bound_ms + delay
        } else {
            p.purge_bound_ms
        };
        Some((end + extra + bound + p.margin_ms, format!("{why} at {end}, bound {} ms + margin", extra + bound)))
    }

    /// Spans during which node `o` cannot hear gateway `g` (stopped, or the link cut, hung, or
    /// held from `g` to `o`): `(from, to, what)`.
    fn unheard(&self, g: &str, o: &str) -> Vec<(Ms, Ms, String)> {
        let mut out = Vec::new();
        for s in &self.spans {
            if s.a == g && s.b == g && s.what == "stopped" {
                out.push((s.from, s.to, format!("{g} stopped")));
            }
            let pair = (s.a == g && s.b == o) || (s.a == o && s.b == g);
            if pair && s.a != s.b {
                let one_way_to_o = s.what == format!("one_way {g}->{o}");
                if s.what == "cut" || s.what == "stall" || one_way_to_o {
                    out.push((s.from, s.to, format!("{} {}-{}", s.what, s.a, s.b)));
                }
            }
        }
        out
    }
}

/// Every violation of P2–P5 in `events` (sorted by time), and the model for the figures.
pub fn check(events: &[Event], p: &Params) -> Vec<ChaosViolation> {
    let m = Model::new(events);
    let mut out = Vec::new();
    check_p2(&m, p, &mut out);
    check_p3_views(&m, p, &mut out);
    check_p3_lists(&m, events, p, &mut out);
    check_quiet(&m, events, p, &mut out);
    check_unanswered(&m, p, &mut out);
    out.sort_by_key(|v| v.at);
    out
}

fn check_p2(m: &Model, p: &Params, out: &mut Vec<ChaosViolation>) {
    for (&id, j) in &m.joins {
        if j.kind != JoinKind::Resume {
            continue;
        }
        let Some(sock) = m.sockets.get(&j.socket) else { continue };
        let Some(tab) = &sock.tab else { continue };
        // The tab's previous socket, dropped by the client before this join.
        let Some((&prev_id, prev)) = m
            .sockets
            .iter()
            .filter(|(&sid, s)| sid < j.socket && s.tab.as_ref() == Some(tab))
            .max_by_key(|(&sid, _)| sid)
        else {
            continue;
        };
        let Some((dropped, by)) = &prev.end else { continue };
        if by != "client_drop" || *dropped > j.sent || prev.stalled.is_some_and(|s| s < *dropped) {
            continue;
        }
        // It held the topic when dropped: an acknowledged join with no end seen before.
        let held = m.joins.values().any(|j0| {
            j0.socket == prev_id
                && j0.topic == j.topic
                && matches!(j0.reply, Some((at, true, _)) if at <= *dropped)
                && j0.ended.as_ref().is_none_or(|(at, _)| at >= dropped)
                && j0.left.is_none_or(|at| at >= *dropped)
        });
        if !held {
            continue;
        }
        let deadline = j.sent + p.resume_bound_ms + p.margin_ms;
        // Another tab of the user joining the scope meanwhile (or still waiting for it) may
        // take a slot the node freed on seeing the drop first (`reserve_ms` keeps it only where
        // set): then this join is no longer a resume of a held slot.
        let scope = |topic: &str| if topic.starts_with("game:") { "game:*".to_owned() } else { topic.to_owned() };
        let rival = m.joins.values().any(|other| {
            let Some(os) = m.sockets.get(&other.socket) else { return false };
            let pending_at_drop = other.reply.as_ref().is_none_or(|r| r.0 + 1000 >= *dropped);
            os.user == sock.user
                && os.tab != sock.tab
                && scope(&other.topic) == scope(&j.topic)
                && (other.sent + 1000 >= *dropped || pending_at_drop)
                && other.sent <= deadline
        });
        if rival {
            continue;
        }
        let from = dropped.saturating_sub(p.stable_ms);
        let calm = !m.changes.iter().any(|&t| t >= from && t <= deadline)
            && !m.spans.iter().any(|s| s.from <= deadline && s.to >= from);
        if !calm {
            continue;
        }
        let granted = matches!(j.reply, Some((at, true, _)) if at <= deadline);
        if !granted {
            let answer = match &j.reply {
                Some((at, ok, d)) => {
                    format!("answered {} after {} ms ({:?})", if *ok { "ok" } else { "error" }, at - j.sent, d)
                }
                None => "never answered".to_owned(),
            };
            out.push(ChaosViolation {
                promise: "P2",
                at: deadline,
                what: format!(
                    "resume join {id} of tab {tab} to {} on socket {} ({}), {} ms after socket {prev_id} was dropped, \
                     in a stable stretch: {answer}; bound {} ms + margin {} ms",
                    j.topic,
                    j.socket,
                    sock.node,
                    j.sent - dropped,
                    p.resume_bound_ms,
                    p.margin_ms
                ),
            });
        }
    }
}

/// Where each `c` is visible in each observer's view: `(observer, c) → [(from, to)]`.
fn visibility(m: &Model) -> BTreeMap<(u32, u32), Vec<(Ms, Ms)>> {
    let mut out: BTreeMap<(u32, u32), Vec<(Ms, Ms)>> = BTreeMap::new();
    for (&ob, changes) in &m.views {
        let mut since: BTreeMap<u32, Ms> = BTreeMap::new();
        for (at, add, del) in changes {
            for &c in add {
                since.entry(c).or_insert(*at);
            }
            for c in del {
                if let Some(from) = since.remove(c) {
                    out.entry((ob, *c)).or_default().push((from, *at));
                }
            }
        }
        for (c, from) in since {
            out.entry((ob, c)).or_default().push((from, Ms::MAX));
        }
    }
    out
}

/// The first instant in `[from, to)` at which node `o` is healthy, trying the instant itself
/// and the end of each trouble span after it.
fn first_healthy(m: &Model, o: &str, from: Ms, to: Ms) -> Option<Ms> {
    let mut t = from;
    for _ in 0..8 {
        if t >= to {
            return None;
        }
        if m.healthy(o, t) {
            return Some(t);
        }
        let next = m
            .spans
            .iter()
            .filter(|s| s.a == o && s.b == o && s.from <= t && s.to >= t.saturating_sub(1000))
            .map(|s| s.to.saturating_add(1001))
            .max()?;
        t = next.max(t + 1);
    }
    None
}

fn check_p3_views(m: &Model, p: &Params, out: &mut Vec<ChaosViolation>) {
    for ((ob, c), intervals) in visibility(m) {
        let Some(o) = m.node_of_join(ob) else { continue };
        // The observer's own end closes its view, and so does its stall: a client that stopped
        // reading sees nothing sent after, whatever ends its socket later.
        let ob_end = m.view_end(ob, p);
        let g = m.node_of_join(c);
        for (from, to) in intervals {
            let to = to.min(ob_end).min(m.end);
            if let Some((deadline, why)) = m.deadline(c, o, p) {
                if let Some(t) = first_healthy(m, o, from.max(deadline), to) {
                    out.push(ChaosViolation {
                        promise: "P3",
                        at: t,
                        what: format!(
                            "join {ob}'s view on {o} still shows join {c} (gateway {}) at {t}: {why}; shown until {}",
                            g.unwrap_or("?"),
                            if to == m.end { "the end".to_owned() } else { to.to_string() }
                        ),
                    });
                    continue;
                }
            }
            let Some(g) = g else { continue };
            if g == o {
                continue;
            }
            for (s_from, s_to, what) in m.unheard(g, o) {
                let deadline = s_from + p.heartbeat_timeout_ms + p.purge_bound_ms + p.margin_ms;
                if let Some(t) = first_healthy(m, o, from.max(deadline), to.min(s_to)) {
                    out.push(ChaosViolation {
                        promise: "P3",
                        at: t,
                        what: format!(
                            "join {ob}'s view on {o} still shows join {c} of gateway {g} at {t}, {} ms after {what} began at {s_from} \
                             (bound heartbeat_timeout_ms + 1 s + margin)",
                            t - s_from
                        ),
                    });
                    break;
                }
            }
        }
    }
}

fn check_p3_lists(m: &Model, events: &[Event], p: &Params, out: &mut Vec<ChaosViolation>) {
    let mut lists: Vec<(Ms, &str, &str, Vec<u32>)> = Vec::new();
    for e in events {
        match e {
            Event::Sample { at, node, topic, cs } => lists.push((*at, node, topic, cs.clone())),
            Event::Quiet { at, lists: snaps, .. } => {
                for l in snaps {
                    lists.push((*at, &l.node, &l.topic, l.metas.iter().filter_map(|x| x.c).collect()));
                }
            }
            _ => {}
        }
    }
    for (at, o, topic, cs) in lists {
        if !m.healthy(o, at) {
            continue;
        }
        for c in cs {
            if let Some((deadline, why)) = m.deadline(c, o, p) {
                if at >= deadline {
                    out.push(ChaosViolation {
                        promise: "P3",
                        at,
                        what: format!("node {o}'s list of {topic} still shows join {c} at {at}: {why}"),
                    });
                    continue;
                }
            }
            let Some(g) = m.node_of_join(c) else { continue };
            if g == o {
                continue;
            }
            for (s_from, s_to, what) in m.unheard(g, o) {
                if at >= s_from + p.heartbeat_timeout_ms + p.purge_bound_ms + p.margin_ms && at < s_to {
                    out.push(ChaosViolation {
                        promise: "P3",
                        at,
                        what: format!(
                            "node {o}'s list of {topic} still shows join {c} of gateway {g} at {at}, {} ms after {what} began",
                            at - s_from
                        ),
                    });
                    break;
                }
            }
        }
    }
}

fn check_quiet(m: &Model, events: &[Event], p: &Params, out: &mut Vec<ChaosViolation>) {
    for e in events {
        let Event::Quiet { at, lists, views } = e else { continue };
        let topics: BTreeSet<&str> = lists.iter().map(|l| l.topic.as_str()).collect();
        for topic in topics {
            let of_topic: Vec<_> = lists.iter().filter(|l| l.topic == topic).collect();
            let first = of_topic[0];
            // P4: the nodes agree.
            for other in &of_topic[1..] {
                if other.metas != first.metas {
                    let a: BTreeSet<_> = first.metas.iter().collect();
                    let b: BTreeSet<_> = other.metas.iter().collect();
                    out.push(ChaosViolation {
                        promise: "P4",
                        at: *at,
                        what: format!(
                            "after quiet, {topic} differs: only on {}: {:?}; only on {}: {:?}",
                            first.node,
                            a.difference(&b).collect::<Vec<_>>(),
                            other.node,
                            b.difference(&a).collect::<Vec<_>>()
                        ),
                    });
                }
            }
            // P4: every live view equals its node's list.
            for v in views.iter().filter(|v| v.topic == topic) {
                let Some(o) = m.node_of_join(v.join) else { continue };
                let Some(list) = of_topic.iter().find(|l| l.node == o) else { continue };
                if v.metas != list.metas {
                    let a: BTreeSet<_> = v.metas.iter().collect();
                    let b: BTreeSet<_> = list.metas.iter().collect();
                    out.push(ChaosViolation {
                        promise: "P4",
                        at: *at,
                        what: format!(
                            "after quiet, join {}'s view of {topic} differs from node {o}'s list: only in the view: {:?}; only in the list: {:?}",
                            v.join,
                            a.difference(&b).collect::<Vec<_>>(),
                            b.difference(&a).collect::<Vec<_>>()
                        ),
                    });
                }
            }
        }
        // P5: every acknowledged join the client has not seen end is listed and in its own view.
        for (&id, j) in &m.joins {
            // An anonymous viewer has no meta of its own (the count stands for it).
            let acked = j.kind != JoinKind::Anonymous && matches!(j.reply, Some((t, true, _)) if t + 2000 <= *at);
            let live = m.join_end(id, p).is_none_or(|(t, _, _)| t > *at);
            if !acked || !live {
                continue;
            }
            for l in lists.iter().filter(|l| l.topic == j.topic) {
                if !l.metas.iter().any(|x| x.c == Some(id)) {
                    out.push(ChaosViolation {
                        promise: "P5",
                        at: *at,
                        what: format!(
                            "join {id} to {} (socket {}, acknowledged at {}) saw no end, but node {}'s list lacks it after quiet",
                            j.topic,
                            j.socket,
                            j.reply.as_ref().map_or(0, |r| r.0),
                            l.node
                        ),
                    });
                }
            }
            if let Some(v) = views.iter().find(|v| v.join == id) {
                if !v.metas.iter().any(|x| x.c == Some(id)) {
                    out.push(ChaosViolation {
                        promise: "P5",
                        at: *at,
                        what: format!("join {id} to {} saw no end, but its own view lacks it after quiet", j.topic),
                    });
                }
            }
        }
    }
}

fn check_unanswered(m: &Model, p: &Params, out: &mut Vec<ChaosViolation>) {
    for (&id, j) in &m.joins {
        // A join the client left before its answer no longer waits for one (phoenix.js
        // closes the channel on the leave's reply).
        if j.reply.is_some() || j.ended.is_some() || j.left.is_some_and(|t| t <= j.sent + p.join_wait_ms + p.margin_ms)
        {
            continue;
        }
        let Some(s) = m.sockets.get(&j.socket) else { continue };
        let base = j.sent + p.join_wait_ms + p.margin_ms;
        let mut deadline = base;
        // Each stop of its gateway while it waited stretches the wait by its length.
        let mut stops: Vec<&Span> =
            m.spans.iter().filter(|x| x.a == s.node && x.b == s.node && x.to >= j.sent).collect();
        stops.sort_by_key(|x| x.from);
        for span in stops {
            if span.from <= deadline {
                deadline = deadline.saturating_add(span.to.min(m.end) - span.from.max(j.sent));
            }
        }
        let socket_end = [s.end.as_ref().map(|e| e.0), s.stalled, m.gateway_death(s)].into_iter().flatten().min();
        if socket_end.is_some_and(|t| t <= deadline) || deadline > m.end {
            continue;
        }
        out.push(ChaosViolation {
            promise: "P5",
            at: deadline,
            what: format!(
                "join {id} to {} on socket {} ({}) sent at {} was never answered, its socket open past {deadline}",
                j.topic, j.socket, s.node, j.sent
            ),
        });
    }
}

/// Waits the summary reports, in ms.
#[derive(Clone, Debug, Default)]
pub struct Waits {
    /// `phx_join` → ok of every granted resume.
    pub resume: Vec<u64>,
    /// `phx_join` → ok of new tabs (`open`) sent within 10 s after a node was killed.
    pub admission_after_kill: Vec<u64>,
    /// Per kill: until every healthy observer's view had dropped the killed gateway's
    /// presences.
    pub purge_after_kill: Vec<u64>,
}

/// Measure the [`Waits`] of a history.
pub fn waits(events: &[Event], p: &Params) -> Waits {
    let m = Model::new(events);
    let mut w = Waits::default();
    let kills: Vec<(String, Ms)> = events
        .iter()
        .filter_map(|e| if let Event::NodeKilled { at, node } = e { Some((node.clone(), *at)) } else { None })
        .collect();
    for j in m.joins.values() {
        let Some((at, true, _)) = j.reply else { continue };
        match j.kind {
            JoinKind::Resume => w.resume.push(at - j.sent),
            JoinKind::Open if kills.iter().any(|(_, k)| j.sent >= *k && j.sent < k + 10_000) => {
                w.admission_after_kill.push(at - j.sent)
            }
            _ => {}
        }
    }
    let vis = visibility(&m);
    for (g, k) in &kills {
        let mut worst: Option<u64> = None;
        for ((ob, c), intervals) in &vis {
            let Some(o) = m.node_of_join(*ob) else { continue };
            if o == g || m.node_of_join(*c) != Some(g.as_str()) || !m.healthy(o, *k) {
                continue;
            }
            let ob_end = m.view_end(*ob, p);
            for (from, to) in intervals {
                if *from <= *k && *to > *k && *to != Ms::MAX && *to <= ob_end {
                    worst = Some(worst.unwrap_or(0).max(to - k));
                }
            }
        }
        if let Some(x) = worst {
            w.purge_after_kill.push(x);
        }
    }
    w
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
