//! The summary of a chaos run: operations, faults by kind, grants and refusals, revokes by
//! reason, and the waits (p50/p99) of resumes, of new tabs after a kill and of presence purges
//! after a kill.

use crate::chaos::checker::Waits;
use crate::chaos::history::Event;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

/// What a run did, counted.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Workload operations by name.
    pub ops: BTreeMap<String, u64>,
    /// Faults by kind.
    pub faults: BTreeMap<String, u64>,
    /// Quiet checks made.
    pub quiet_checks: usize,
    /// Sockets opened / failed to connect.
    pub sockets: (u64, u64),
    /// Joins sent.
    pub joins: u64,
    /// Joins answered ok.
    pub granted: u64,
    /// Joins refused, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Channel ends the clients saw, by how (`slot_revoked <reason>`, `phx_close`, `phx_error`).
    pub channel_ends: BTreeMap<String, u64>,
    /// Records the nodes wrote.
    pub records: usize,
    /// Events in the history.
    pub events: usize,
    /// Slots granted to signed-in users (admins hold none), by policy (`game:*`, `pair:*`, …).
    pub policies: BTreeMap<String, PolicyUse>,
    /// The waits.
    pub waits: Waits,
    /// How long the run took.
    pub elapsed: Duration,
}

/// How much of one policy the workload used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyUse {
    /// Joins granted.
    pub granted: u64,
    /// The nodes they were granted on.
    pub nodes: BTreeSet<String>,
    /// The users granted on at least two different nodes (one user's tabs across nodes).
    pub users_across_nodes: usize,
}

/// The policy a topic falls under: `room:1` → `room:*`.
pub fn policy_of(topic: &str) -> String {
    match topic.split_once(':') {
        Some((family, _)) => format!("{family}:*"),
        None => topic.to_owned(),
    }
}

impl Summary {
    pub(crate) fn new(
        events: &[Event],
        ops: &BTreeMap<String, u64>,
        faults: &BTreeMap<&'static str, u64>,
        quiet_checks: usize,
        records: usize,
        waits: &Waits,
        elapsed: Duration,
    ) -> Summary {
        let mut s = Summary {
            ops: ops.clone(),
            faults: faults.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            quiet_checks,
            records,
            events: events.len(),
            waits: waits.clone(),
            elapsed,
            ..Summary::default()
        };
        // socket → (node, user) for signed-in users; join → (socket, topic).
        let mut users: BTreeMap<u32, (&str, &str)> = BTreeMap::new();
        let mut joins: BTreeMap<u32, (u32, &str)> = BTreeMap::new();
        let mut held: BTreeMap<String, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
        for e in events {
            match e {
                Event::Connected { socket, node, user: Some(user), role, .. } if role == "user" => {
                    users.insert(*socket, (node.as_str(), user.as_str()));
                }
                Event::Join { join, socket, topic, .. } => {
                    joins.insert(*join, (*socket, topic.as_str()));
                }
                Event::Reply { join, ok: true, .. } => {
                    let Some(&(socket, topic)) = joins.get(join) else { continue };
                    let Some(&(node, user)) = users.get(&socket) else { continue };
                    let policy = policy_of(topic);
                    let u = s.policies.entry(policy.clone()).or_default();
                    u.granted += 1;
                    u.nodes.insert(node.to_owned());
                    held.entry(policy).or_default().entry(user).or_default().insert(node);
                }
                _ => {}
            }
        }
        for (policy, by_user) in held {
            if let Some(u) = s.policies.get_mut(&policy) {
                u.users_across_nodes = by_user.values().filter(|nodes| nodes.len() >= 2).count();
            }
        }
        for e in events {
            match e {
                Event::Connected { .. } => s.sockets.0 += 1,
                Event::ConnectFailed { .. } => s.sockets.1 += 1,
                Event::Join { .. } => s.joins += 1,
                Event::Reply { ok: true, .. } => s.granted += 1,
                Event::Reply { ok: false, detail, .. } => {
                    *s.refused.entry(detail.clone().unwrap_or_default()).or_default() += 1;
                }
                Event::ChannelEnd { how, .. } => *s.channel_ends.entry(how.clone()).or_default() += 1,
                _ => {}
            }
        }
        s
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let list = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "-".to_owned()
            } else {
                m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
            }
        };
        let _ = writeln!(
            t,
            "{:<28} {:.1} s, {} events, {} node records",
            "run",
            self.elapsed.as_secs_f64(),
            self.events,
            self.records
        );
        let _ = writeln!(t, "{:<28} {} ({})", "operations", self.ops.values().sum::<u64>(), list(&self.ops));
        let _ = writeln!(t, "{:<28} {} ({})", "faults", self.faults.values().sum::<u64>(), list(&self.faults));
        let _ = writeln!(t, "{:<28} {}", "quiet checks", self.quiet_checks);
        let _ = writeln!(t, "{:<28} {} opened, {} failed to connect", "sockets", self.sockets.0, self.sockets.1);
        let _ = writeln!(t, "{:<28} {} sent, {} granted", "joins", self.joins, self.granted);
        let _ = writeln!(t, "{:<28} {}", "refused", list(&self.refused));
        let _ = writeln!(t, "{:<28} {}", "channel ends seen", list(&self.channel_ends));
        let policies: Vec<String> = self
            .policies
            .iter()
            .map(|(p, u)| {
                let nodes: Vec<&str> = u.nodes.iter().map(String::as_str).collect();
                format!("{p} {} on {} ({} users across nodes)", u.granted, nodes.join("+"), u.users_across_nodes)
            })
            .collect();
        let _ = writeln!(t, "{:<28} {}", "slots granted by policy", policies.join("; "));
        for (name, samples) in [
            ("wait: resume", &self.waits.resume),
            ("wait: new tab after a kill", &self.waits.admission_after_kill),
            ("wait: purge after a kill", &self.waits.purge_after_kill),
        ] {
            let _ = writeln!(t, "{:<28} {}", name, dist(samples));
        }
        t
    }
}

/// `p50 X ms, p99 Y ms, max Z ms (n N)`, or `-`.
fn dist(samples: &[u64]) -> String {
    if samples.is_empty() {
        return "- (n 0)".to_owned();
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let at = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    format!("p50 {} ms, p99 {} ms, max {} ms (n {})", at(0.5), at(0.99), v[v.len() - 1], v.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_by_policy_node_and_user_across_nodes() {
        use crate::chaos::history::JoinKind;
        let connected = |socket: u32, node: &str, user: &str, role: &str| Event::Connected {
            at: 0,
            socket,
            node: node.into(),
            user: Some(user.into()),
            role: role.into(),
            tab: None,
        };
        let join = |socket: u32, join: u32, topic: &str| Event::Join {
            at: 1,
            socket,
            join,
            topic: topic.into(),
            tab: None,
            kind: JoinKind::Open,
        };
        let reply = |join: u32, ok: bool| Event::Reply { at: 2, join, ok, detail: None };
        let events = vec![
            connected(1, "a", "u1", "user"),
            connected(2, "b", "u1", "user"),
            connected(3, "c", "u2", "user"),
            connected(4, "c", "u9", "admin"),
            join(1, 10, "game:1"),
            join(2, 11, "game:2"),
            join(3, 12, "game:1"),
            join(3, 13, "line:1"),
            join(4, 14, "game:1"),
            reply(10, true),
            reply(11, true),
            reply(12, true),
            reply(13, false),
            reply(14, true),
        ];
        let s = Summary::new(&events, &BTreeMap::new(), &BTreeMap::new(), 0, 0, &Waits::default(), Duration::ZERO);
        let game = &s.policies["game:*"];
        assert_eq!(game.granted, 3, "the admin holds no slot");
        assert_eq!(game.nodes.iter().map(String::as_str).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(game.users_across_nodes, 1, "u1 on a and b; u2 on c only");
        assert!(!s.policies.contains_key("line:*"), "refused joins hold nothing");
        assert!(s.table().contains("game:* 3 on a+b+c (1 users across nodes)"), "{}", s.table());
        assert_eq!(policy_of("pair:1"), "pair:*");
    }

    #[test]
    fn a_distribution_reads_its_percentiles() {
        assert_eq!(dist(&[]), "- (n 0)");
        assert_eq!(dist(&[5]), "p50 5 ms, p99 5 ms, max 5 ms (n 1)");
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(dist(&v), "p50 50 ms, p99 99 ms, max 100 ms (n 100)");
    }
}
