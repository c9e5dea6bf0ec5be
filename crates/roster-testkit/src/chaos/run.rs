//! The coordinator of a chaos run: the cluster, the fault schedule (on this thread), the
//! workload (on a tokio runtime), the list sampler (a thread), the quiet checks, then the
//! verdict.

use crate::chaos::checker::{self, ChaosViolation, Params};
use crate::chaos::history::{Event, ListSnap, Recorder};
use crate::chaos::report::Summary;
use crate::chaos::schedule::{self, Fault, Step};
use crate::chaos::workload::{self, Control, NodeSlot, Workload, TOPICS};
use crate::chaos::{ChaosError, ChaosSpec, Outcome};
use crate::cluster::{node_name, unix_ms, Cluster, ClusterSpec, API_KEY};
use crate::fault_proxy::Direction;
use crate::http::{http_get, percent_encode};
use crate::records::{self, ProcessEnd};
use roster_core::Config;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How often the sampler reads every node's lists.
const SAMPLE_EVERY: Duration = Duration::from_millis(1000);
/// No operation and no fault for this long before a quiet check compares (P4).
const QUIET: Duration = Duration::from_millis(2000);

/// Run `spec`: see the module docs of [`crate::chaos`].
pub fn run(spec: &ChaosSpec, out: &mut dyn FnMut(&str)) -> Result<Outcome, ChaosError> {
    let started = Instant::now();
    let t = spec.timings;
    let steps = schedule::plan(spec.seed, spec.nodes, spec.duration.as_millis() as u64, &t);
    out(&format!(
        "roster-chaos: seed {} nodes {} for {:?}; workload {} users x {} tabs + {} anonymous; margin {} ms",
        spec.seed,
        spec.nodes,
        spec.duration,
        spec.workload.users,
        spec.workload.tabs,
        spec.workload.anonymous,
        spec.margin_ms
    ));
    let mut cs = ClusterSpec::new(spec.nodes)
        .timings(t)
        .server_key(&format!("ping_ms = {}", spec.workload.ping_ms))
        .server_key(&format!("join_wait_ms = {}", spec.join_wait_ms));
    for a in 0..spec.nodes {
        for b in a + 1..spec.nodes {
            cs = cs.proxied(a, b);
        }
    }
    for p in workload::policies() {
        cs = cs.policy(&p);
    }
    let mut cluster = cs.start(&spec.binary);
    let config_text = std::fs::read_to_string(cluster.config_path(0)).map_err(|e| ChaosError::Setup(e.to_string()))?;
    let config = Config::from_toml_str(&config_text).map_err(|e| ChaosError::Setup(e.to_string()))?;
    out(&format!("cluster ready in {:?} ({})", started.elapsed(), cluster.config_path(0).display()));

    let recorder = Arc::new(Recorder::default());
    let nodes: Arc<Vec<NodeSlot>> = Arc::new(
        (0..spec.nodes)
            .map(|i| NodeSlot { name: node_name(i), addr: cluster.http_addr(i), available: AtomicBool::new(true) })
            .collect(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ChaosError::Setup(e.to_string()))?;
    let workload = Workload::new(spec.workload.clone(), spec.seed, nodes.clone(), recorder.clone());
    let ops = workload.ops.clone();
    let (control, control_rx) = mpsc::unbounded_channel();
    let driver = rt.spawn(workload.run(control_rx));

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (nodes, recorder, sampling) = (nodes.clone(), recorder.clone(), sampling.clone());
        thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                for n in nodes.iter().filter(|n| n.available.load(Ordering::SeqCst)) {
                    for topic in TOPICS {
                        if let Some(list) = read_list(n, topic) {
                            let cs = list.iter().filter_map(|m| m.c).collect();
                            recorder.record(Event::Sample {
                                at: unix_ms(),
                                node: n.name.clone(),
                                topic: topic.into(),
                                cs,
                            });
                        }
                    }
                }
                thread::sleep(SAMPLE_EVERY);
            }
        })
    };

    let mut ends: Vec<ProcessEnd> = Vec::new();
    let mut fault_id = 0u32;
    let mut quiet_checks = 0usize;
    let mut faults_by_kind: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let mut run = Runner { cluster: &mut cluster, nodes: &nodes, recorder: &recorder, ends: &mut ends, out };
    for step in &steps {
        match step {
            Step::Fault(fault) => {
                fault_id += 1;
                *faults_by_kind.entry(fault.kind()).or_default() += 1;
                run.fault(fault_id, fault);
            }
            Step::Pause(ms) | Step::Calm(ms) => thread::sleep(Duration::from_millis(*ms)),
            Step::Quiet => {
                quiet_checks += 1;
                run.quiet(&rt, &control);
                let _ = control.send(Control::Resume);
            }
        }
    }
    // The end: a quiet check (the plan ends with one), then every socket closes.
    if steps.last() != Some(&Step::Quiet) {
        quiet_checks += 1;
        run.quiet(&rt, &control);
    }
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.join();
    let (done, done_rx) = oneshot::channel();
    let _ = control.send(Control::Stop(done));
    let _ = rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(10), done_rx).await;
        driver.await
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    let end = unix_ms();

    // The verdict.
    let events = recorder.events();
    let params = Params {
        heartbeat_timeout_ms: t.heartbeat_timeout_ms,
        ping_ms: spec.workload.ping_ms,
        join_wait_ms: spec.join_wait_ms,
        resume_bound_ms: 500,
        purge_bound_ms: 1000,
        stable_ms: schedule::stable_ms(&t),
        margin_ms: spec.margin_ms,
    };
    let mut violations: Vec<ChaosViolation> = checker::check(&events, &params);
    let logs: Vec<PathBuf> = cluster.record_logs();
    let logs: Vec<&std::path::Path> = logs.iter().map(PathBuf::as_path).collect();
    let history = records::read_history(&config, &logs, &ends, end).map_err(ChaosError::Records)?;
    let verdict = roster_sim::check(&history);
    for v in &verdict.violations {
        violations.push(ChaosViolation {
            promise: if v.is_p1() { "P1" } else { "P1-records" },
            at: v.at(),
            what: v.to_string(),
        });
    }
    violations.sort_by_key(|v| v.at);
    let waits = checker::waits(&events, &params);
    let summary = Summary::new(
        &events,
        &ops.lock().unwrap_or_else(|e| e.into_inner()),
        &faults_by_kind,
        quiet_checks,
        history.records.len(),
        &waits,
        started.elapsed(),
    );
    drop(cluster);
    Ok(Outcome { seed: spec.seed, steps, events, violations, summary })
}

/// Node `n`'s list of `topic`, if it answers.
fn read_list(n: &NodeSlot, topic: &str) -> Option<Vec<crate::chaos::history::MetaObs>> {
    let (200, body) = http_get(n.addr, &format!("/presence?topic={}", percent_encode(topic)), Some(API_KEY)).ok()?
    else {
        return None;
    };
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let mut metas: Vec<_> = crate::chaos::client::read_map(&v).into_values().flatten().collect();
    metas.sort();
    Some(metas)
}

struct Runner<'a> {
    cluster: &'a mut Cluster,
    nodes: &'a Arc<Vec<NodeSlot>>,
    recorder: &'a Arc<Recorder>,
    ends: &'a mut Vec<ProcessEnd>,
    out: &'a mut dyn FnMut(&str),
}

impl Runner<'_> {
    fn say(&mut self, line: &str) {
        let stamp = unix_ms();
        (self.out)(&format!("[{stamp}] {line}"));
    }

    fn node_event(&mut self, event: Event) {
        self.recorder.record(event);
    }

    fn available(&self, i: usize, up: bool) {
        self.nodes[i].available.store(up, Ordering::SeqCst);
    }

    fn fault(&mut self, id: u32, fault: &Fault) {
        self.say(&format!("fault {id}: {fault}"));
        self.recorder.record(Event::FaultStart { at: unix_ms(), id, what: fault.to_string() });
        let name = |i: usize| node_name(i);
        match *fault {
            Fault::Kill { node, down_ms } => {
                self.available(node, false);
                self.cluster.kill9(node);
                let at = self.cluster.kills().last().map_or_else(unix_ms, |k| k.1);
                self.ends.push(ProcessEnd { node: name(node), at, graceful: false });
                self.node_event(Event::NodeKilled { at, node: name(node) });
                thread::sleep(Duration::from_millis(down_ms));
                self.cluster.start_node(node);
                self.node_event(Event::NodeStarted { at: unix_ms(), node: name(node) });
                self.available(node, true);
            }
            Fault::Pause { node, ms } => {
                self.available(node, false);
                self.cluster.sigstop(node);
                self.node_event(Event::NodeStopped { at: unix_ms(), node: name(node) });
                thread::sleep(Duration::from_millis(ms));
                self.cluster.sigcont(node);
                self.node_event(Event::NodeContinued { at: unix_ms(), node: name(node) });
                self.available(node, true);
            }
            Fault::Rolling => {
                for node in 0..self.cluster.len() {
                    self.available(node, false);
                    let status = self.cluster.terminate(node, Duration::from_secs(15));
                    let at = unix_ms();
                    if status.is_none() {
                        // Did not exit in time: kill it, and say so.
                        self.say(&format!("  node {} did not exit within 15 s of SIGTERM: killed", name(node)));
                        self.cluster.kill9(node);
                        self.ends.push(ProcessEnd { node: name(node), at: unix_ms(), graceful: false });
                        self.node_event(Event::NodeKilled { at: unix_ms(), node: name(node) });
                    } else {
                        self.ends.push(ProcessEnd { node: name(node), at, graceful: true });
                        self.node_event(Event::NodeTerminated { at, node: name(node) });
                    }
                    self.cluster.start_node(node);
                    self.node_event(Event::NodeStarted { at: unix_ms(), node: name(node) });
                    self.cluster.wait_ready(node);
                    self.available(node, true);
                    self.say(&format!("  node {} restarted and ready", name(node)));
                }
            }
            _ => {
                let Some((a, b, dir)) = fault.link() else { return };
                let proxy = self.cluster.proxy(a, b);
                let (mode, ms) = match *fault {
                    Fault::Cut { ms, .. } => {
                        proxy.cut();
                        ("cut".to_owned(), ms)
                    }
                    Fault::Hang { ms, .. } => {
                        proxy.stall();
                        ("stall".to_owned(), ms)
                    }
                    Fault::OneWay { from, to, ms } => {
                        proxy.stall_one_way(dir.unwrap_or(Direction::ToTarget));
                        (format!("one_way {}->{}", name(from), name(to)), ms)
                    }
                    Fault::Delay { delay_ms, ms, .. } => {
                        proxy.delay(Duration::from_millis(delay_ms));
                        (format!("delay {delay_ms}"), ms)
                    }
                    _ => return,
                };
                self.recorder.record(Event::LinkFault { at: unix_ms(), a: name(a), b: name(b), mode });
                thread::sleep(Duration::from_millis(ms));
                self.cluster.proxy(a, b).heal();
                self.recorder.record(Event::LinkHealed { at: unix_ms(), a: name(a), b: name(b) });
            }
        }
        self.recorder.record(Event::FaultEnd { at: unix_ms(), id });
    }

    /// Pause the workload, wait until no join is pending and no socket is stalled, hold 2 s of
    /// quiet, then record every node's lists and every client's views.
    fn quiet(&mut self, rt: &tokio::runtime::Runtime, control: &mpsc::UnboundedSender<Control>) {
        let _ = control.send(Control::Pause);
        let waited = Instant::now();
        // Bounded: a join waits at most join_wait_ms, a stalled socket is dropped within seconds.
        while (self.recorder.pending_joins() > 0 || self.recorder.stalled_sockets() > 0)
            && waited.elapsed() < Duration::from_secs(30)
        {
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(QUIET);
        let at = unix_ms();
        let mut lists = Vec::new();
        for i in 0..self.nodes.len() {
            for topic in TOPICS {
                match read_list(&self.nodes[i], topic) {
                    Some(metas) => {
                        lists.push(ListSnap { node: self.nodes[i].name.clone(), topic: topic.into(), metas })
                    }
                    None => {
                        self.say(&format!("  quiet check: node {} did not answer GET /presence", self.nodes[i].name))
                    }
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        let _ = control.send(Control::Snapshot(tx));
        let views =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), rx).await }).ok().and_then(Result::ok);
        let views = views.unwrap_or_default();
        let n_views = views.len();
        self.recorder.record(Event::Quiet { at, lists, views });
        self.say(&format!("quiet check: {n_views} client views against every node's lists"));
    }
}
