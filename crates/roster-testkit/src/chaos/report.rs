//! The summary of a chaos run: operations, faults by kind, grants and refusals, revokes by
//! reason, and the waits (p50/p99) of resumes, of new tabs after a kill and of presence purges
//! after a kill.

use crate::chaos::checker::Waits;
use crate::chaos::history::Event;
use std::collections::BTreeMap;
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
    /// The waits.
    pub waits: Waits,
    /// How long the run took.
    pub elapsed: Duration,
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
    fn a_distribution_reads_its_percentiles() {
        assert_eq!(dist(&[]), "- (n 0)");
        assert_eq!(dist(&[5]), "p50 5 ms, p99 5 ms, max 5 ms (n 1)");
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(dist(&v), "p50 50 ms, p99 99 ms, max 100 ms (n 100)");
    }
}
