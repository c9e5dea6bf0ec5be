//! User actors over real processes: every node is a process running the full HTTP server
//! and an application's user behaviour (a counter), started by roster-testkit like
//! `roster serve`. The home of a user is killed with SIGKILL, cut off from both peers, and
//! brought back; at every step the user has one live activation, reached from every node
//! (`GET /user` and calls agree), a failover starts it fresh and a handover keeps its state;
//! at the end the nodes' record logs are judged by the simulation's checker: never two
//! activations of one user at once, tokens growing, every activation inside its lease (and
//! P1 for slots, as in every cluster test).
//!
//! This file has its own `main` (`harness = false`): run as `<this test> serve --config F
//! --node N --records R` it *is* a node (what the testkit starts), otherwise it runs its
//! tests, one at a time, under a lock shared with the other multi-process tests' runs:
//!
//! ```text
//! flock /tmp/roster-heavy.lock cargo test -p roster-server --test user_actors
//! ```
//!
//! `user_call_latency` is a measurement, not a test: it runs only when named with `--ignored`.

use roster_core::{partition_of, preferred_home, Config, NodeName, PartitionId, UserId};
use roster_runtime::{JoinRequest, Node, NodeOptions, Session, UserBehaviour, UserCtx};
use roster_testkit::{unix_ms, Cluster, ClusterSpec, Timings};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Deadline for conditions with no promised bound (a new home, a handover).
const SETTLE: Duration = Duration::from_secs(30);
const T: Timings = Timings::FAST;

// ---- the application the nodes run ---------------------------------------------------

/// A counter per user: the state a failover loses and a handover keeps.
struct Counter;

#[derive(Default, Serialize, Deserialize)]
struct Count {
    value: u64,
}

#[derive(Serialize, Deserialize)]
enum CounterMsg {
    Add(u64),
    Get,
}

#[derive(Serialize, Deserialize)]
struct CounterReply {
    value: u64,
    token: String,
    node: String,
}

impl UserBehaviour for Counter {
    type State = Count;
    type Msg = CounterMsg;
    type Reply = CounterReply;

    fn start(&self, _ctx: &UserCtx, handed_over: Option<Count>) -> Count {
        handed_over.unwrap_or_default()
    }

    async fn handle(&self, ctx: &UserCtx, state: &mut Count, msg: CounterMsg) -> CounterReply {
        if let CounterMsg::Add(n) = msg {
            state.value += n;
        }
        CounterReply { value: state.value, token: ctx.token().to_string(), node: ctx.node().to_string() }
    }
}

// ---- node mode: what the testkit starts ----------------------------------------------

mod node {
    use super::*;
    use axum::extract::{Query, State};
    use axum::routing::get;
    use axum::{Json, Router};
    use roster_server::{load_config, AppState};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    struct Extra {
        node: Node,
        sessions: Mutex<HashMap<String, Session>>,
    }

    #[derive(Deserialize)]
    struct Who {
        user: String,
        #[serde(default)]
        tab: String,
        #[serde(default)]
        n: u64,
    }

    /// `serve --config F --node N --records R`, as `roster serve` takes them.
    pub fn serve(args: &[String]) {
        let arg = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
        let config = load_config(std::path::Path::new(&arg("--config").expect("--config"))).expect("config");
        let name = NodeName::from(arg("--node").expect("--node").as_str());
        let records = arg("--records").expect("--records");
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let http = config.require_node(&name).expect("a configured node").http_addr.clone();
            let api_key = config.auth.api_key.clone();
            let secret = config.auth.secret.clone();
            let opts = NodeOptions::for_node(config, name).records(records).users(Counter);
            let node = Node::start(opts).await.expect("the node starts");
            let state = Arc::new(AppState::new(node.clone(), secret.into_bytes(), api_key));
            let extra = Arc::new(Extra { node: node.clone(), sessions: Mutex::new(HashMap::new()) });
            let app = roster_server::router(state).merge(
                Router::new()
                    .route("/test/join", get(join))
                    .route("/test/add", get(add))
                    .route("/test/bench", get(bench))
                    .with_state(extra),
            );
            let listener = tokio::net::TcpListener::bind(&http).await.expect("bind");
            axum::serve(listener, app).await.expect("serve");
        });
    }

    /// An embedded session of `user` with `tab` in `room:1`, kept until the process ends.
    async fn join(State(x): State<Arc<Extra>>, Query(w): Query<Who>) -> Json<Value> {
        match x.node.join(JoinRequest::user(w.user.as_str(), "room:1").tab(w.tab.as_str())).await {
            Ok(s) => {
                let token = s.token().map(|t| t.to_string());
                x.sessions.lock().unwrap().insert(format!("{}/{}", w.user, w.tab), s);
                Json(json!({"token": token}))
            }
            Err(e) => Json(json!({"error": e.reason()})),
        }
    }

    /// `UserRef::call` from this node.
    async fn add(State(x): State<Arc<Extra>>, Query(w): Query<Who>) -> Json<Value> {
        // Well inside the harness's 5 s HTTP timeout.
        let user = x.node.user(w.user.as_str()).timeout(std::time::Duration::from_secs(2));
        match user.call::<Counter>(CounterMsg::Add(w.n)).await {
            Ok(r) => Json(json!({"value": r.value, "token": r.token, "node": r.node})),
            Err(e) => Json(json!({"error": e.reason(), "detail": e.to_string()})),
        }
    }

    /// `n` calls one after another from this node: their latencies in µs.
    async fn bench(State(x): State<Arc<Extra>>, Query(w): Query<Who>) -> Json<Value> {
        let user = x.node.user(w.user.as_str());
        let mut us = Vec::with_capacity(w.n as usize);
        for _ in 0..w.n {
            let t = Instant::now();
            if let Err(e) = user.call::<Counter>(CounterMsg::Get).await {
                return Json(json!({"error": e.to_string()}));
            }
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        us.sort_by(|a, b| a.total_cmp(b));
        let at = |p: f64| us[((us.len() - 1) as f64 * p).round() as usize];
        let mean = us.iter().sum::<f64>() / us.len() as f64;
        Json(json!({"n": us.len(), "p50_us": at(0.5), "p99_us": at(0.99), "mean_us": mean}))
    }
}

// ---- the tests ------------------------------------------------------------------------

fn this_binary() -> PathBuf {
    std::env::current_exe().expect("the test binary's path")
}

fn config(c: &Cluster) -> Config {
    let text = std::fs::read_to_string(c.config_path(0)).expect("read config");
    Config::from_toml_str(&text).expect("config")
}

fn leases(c: &Cluster, i: usize) -> Option<BTreeSet<u32>> {
    let (200, body) = c.http_get(i, "/cluster").ok()? else { return None };
    let view: Value = serde_json::from_str(&body).ok()?;
    Some(
        view["leases"]
            .as_array()?
            .iter()
            .filter(|l| l["expires_in_ms"].as_i64().is_some_and(|e| e > 0))
            .filter_map(|l| l["partition"].as_u64().map(|p| p as u32))
            .collect(),
    )
}

/// `count` users named `<prefix>N` whose partition is held by `home` and prefers it (so it
/// comes back there by handover), once every partition is at its preferred node.
fn users_homed_on(c: &Cluster, home: usize, prefix: &str, count: usize) -> Vec<String> {
    let partitions = config(c).cluster.partitions;
    let names: Vec<NodeName> = (0..c.len()).map(|n| NodeName::from(c.name(n))).collect();
    let mut users = Vec::new();
    c.wait_until(SETTLE, "every partition at its preferred node", |c| {
        let mut homes = BTreeMap::new();
        for n in 0..c.len() {
            let Some(held) = leases(c, n) else { return false };
            for p in held {
                if homes.insert(p, n).is_some() {
                    return false;
                }
            }
        }
        let settled = homes.len() == partitions as usize
            && homes.iter().all(|(&p, &n)| preferred_home(PartitionId(p), &names).as_ref() == Some(&names[n]));
        if settled {
            users = (0..10_000)
                .map(|k| format!("{prefix}{k}"))
                .filter(|u| homes[&partition_of(&UserId::from(u.as_str()), partitions).0] == home)
                .take(count)
                .collect();
        }
        settled && users.len() == count
    });
    users
}

/// `GET /user?id=…` on node `i`, if it answers 200.
fn user_view(c: &Cluster, i: usize, user: &str) -> Option<Value> {
    match c.http_get(i, &format!("/user?id={user}")) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

fn token_epoch(token: &Value) -> u64 {
    let t = token.as_str().unwrap_or_else(|| panic!("not a token: {token}"));
    t.split('.').next().and_then(|e| e.parse().ok()).unwrap_or_else(|| panic!("not <epoch>.<generation>: {t}"))
}

/// Wait until every node in `asked` reports `user` with one activation at `home`, other than
/// `not`, and the same view; returns it.
fn await_activation(c: &Cluster, asked: &[usize], user: &str, home: &[&str], not: Option<&Value>) -> Value {
    let mut seen = Value::Null;
    let what = format!("every node in {asked:?} reports one activation of {user} at {home:?}");
    c.wait_until(SETTLE, &what, |c| {
        let views: Option<Vec<Value>> = asked.iter().map(|&i| user_view(c, i, user)).collect();
        let Some(views) = views else { return false };
        seen = views[0].clone();
        views.iter().all(|v| *v == views[0])
            && home.contains(&views[0]["home"].as_str().unwrap_or(""))
            && !views[0]["activation"].is_null()
            && not.is_none_or(|old| views[0]["activation"] != *old)
    });
    seen
}

/// `UserRef::call` of `Add(n)` from node `i`: the reply (value, token, node).
fn add(c: &Cluster, i: usize, user: &str, n: u64) -> Value {
    let reply = c.get_json(i, &format!("/test/add?user={user}&n={n}"));
    if reply.get("error").is_some() {
        c.fail(&format!("Add({n}) to {user} from node {}: {reply}", c.name(i)));
    }
    reply
}

fn join(c: &Cluster, i: usize, user: &str, tab: &str) {
    let reply = c.get_json(i, &format!("/test/join?user={user}&tab={tab}"));
    if reply["token"].is_null() {
        c.fail(&format!("{user} joins on node {}: {reply}", c.name(i)));
    }
}

/// P1 and the activation rules over every node's record log, kills included.
fn assert_records(c: &Cluster) -> roster_sim::Verdict {
    let logs = c.record_logs();
    let logs: Vec<&std::path::Path> = logs.iter().map(PathBuf::as_path).collect();
    roster_testkit::records::assert_p1(&config(c), &logs, c.kills(), unix_ms())
}

fn a_users_one_activation_survives_sigkill_and_cut_off_of_its_home_and_follows_it_back() {
    let (a, b, home) = (0, 1, 2);
    let mut c = ClusterSpec::new(3).proxied(a, home).proxied(b, home).start(this_binary());
    let user = users_homed_on(&c, home, "ua", 1).remove(0);
    let user = user.as_str();
    join(&c, a, user, "t1");
    // And a user homed on a whose one session is on c: behind the cut, it is in doubt.
    let other = users_homed_on(&c, a, "uw", 1).remove(0);
    let other = other.as_str();

    // Every node reaches the activation on c; every node tells the same story.
    let first = await_activation(&c, &[a, b, home], user, &["c"], None);
    assert_eq!(first["sessions"][0]["node"], "a", "{first}");
    assert_eq!(first["sessions"][0]["tab_id"], "t1");
    assert_eq!(first["sessions"][0]["topic"], "room:1");
    assert_eq!(add(&c, b, user, 2)["value"], 2);
    let r = add(&c, a, user, 3);
    assert_eq!((r["value"].as_u64(), r["node"].as_str()), (Some(5), Some("c")));
    assert_eq!(r["token"], first["activation"]);

    // SIGKILL the home: a failover, so the new activation starts fresh.
    let killed = Instant::now();
    c.kill9(home);
    let second = await_activation(&c, &[a, b], user, &["a", "b"], Some(&first["activation"]));
    println!("home killed: a new activation on {} after {:?}", second["home"], killed.elapsed());
    assert!(token_epoch(&second["activation"]) > token_epoch(&first["activation"]));
    assert_eq!(second["handed_over_from"], Value::Null);
    assert_eq!(add(&c, b, user, 1)["value"], 1, "a failover starts fresh");

    // c comes back: once it has been up two leases its partitions are handed back, and the
    // state goes with them.
    c.restart(home);
    c.wait_ready(home);
    let third = await_activation(&c, &[a, b, home], user, &["c"], Some(&second["activation"]));
    assert_eq!(third["handed_over_from"], second["activation"], "{third}");
    assert_eq!(add(&c, a, user, 1)["value"], 2, "a handover keeps the state");

    join(&c, home, other, "tw");
    let held = await_activation(&c, &[a, b, home], other, &["a"], None);
    assert_eq!(
        (held["sessions"][0]["node"].as_str(), held["sessions"][0]["in_doubt"].as_bool()),
        (Some("c"), Some(false))
    );

    // Cut c off from both peers: its lease lapses, its activation is fenced at the deadline,
    // and a and b take the user over (a failover again).
    let cut = Instant::now();
    c.proxy(a, home).cut();
    c.proxy(b, home).cut();
    // a cannot hear c: the session there is in doubt, then lost (the user goes idle).
    c.wait_until(SETTLE, "a marks the session on c in doubt", |c| {
        user_view(c, a, other).is_some_and(|v| v["sessions"][0]["in_doubt"] == true)
    });
    c.wait_until(SETTLE, "a lets the session on c go, and the user's activation with it", |c| {
        user_view(c, a, other).is_some_and(|v| v["sessions"] == json!([]) && v["activation"].is_null())
    });
    println!("cut off: the session behind the cut was in doubt, then lost after {:?}", cut.elapsed());
    let fourth = await_activation(&c, &[a, b], user, &["a", "b"], Some(&third["activation"]));
    println!("home cut off: a new activation on {} after {:?}", fourth["home"], cut.elapsed());
    assert_eq!(add(&c, a, user, 1)["value"], 1, "a failover starts fresh");
    c.wait_until(SETTLE, "c, cut off, serves the user no more", |c| {
        let r = c.get_json(home, &format!("/test/add?user={user}&n=0"));
        r["error"].is_string()
    });

    c.proxy(a, home).heal();
    c.proxy(b, home).heal();
    let fifth = await_activation(&c, &[a, b, home], user, &["c"], Some(&fourth["activation"]));
    assert_eq!(fifth["handed_over_from"], fourth["activation"]);
    assert_eq!(add(&c, b, user, 1)["value"], 2);

    let verdict = assert_records(&c);
    let spans: Vec<String> = roster_sim::activations::activation_spans(
        &roster_testkit::records::read_history(
            &config(&c),
            &c.record_logs().iter().map(PathBuf::as_path).collect::<Vec<_>>(),
            &roster_testkit::records::kills(c.kills()),
            unix_ms(),
        )
        .expect("the record logs read"),
    )
    .into_iter()
    .filter(|s| s.user.as_str() == user)
    .map(|s| format!("{} {} from {:?}", s.node.node, s.token, s.handed_from.map(|t| t.to_string())))
    .collect();
    println!("{user}'s activations: {spans:#?}");
    assert_eq!(spans.len(), 5, "c, failover, back to c, failover, back to c: {spans:#?}");
    assert!(!verdict.leases.is_empty());
}

fn user_call_latency() {
    let (a, b) = (0, 1);
    let c = ClusterSpec::new(2).timings(T).start(this_binary());
    let user = users_homed_on(&c, a, "bench", 1).remove(0);
    join(&c, a, &user, "t");
    await_activation(&c, &[a, b], &user, &["a"], None);
    let n = std::env::var("CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000u64);
    for (label, from) in [("local (caller on the home)", a), ("remote (one round trip over the link)", b)] {
        let _warm = c.get_json(from, &format!("/test/bench?user={user}&n=200"));
        let r = c.get_json(from, &format!("/test/bench?user={user}&n={n}"));
        println!("UserRef::call {label}: {r}");
    }
}

// ---- the harness ----------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return node::serve(&args[2..]);
    }
    let tests: &[(&str, fn(), bool)] = &[
        (
            "a_users_one_activation_survives_sigkill_and_cut_off_of_its_home_and_follows_it_back",
            a_users_one_activation_survives_sigkill_and_cut_off_of_its_home_and_follows_it_back,
            false,
        ),
        ("user_call_latency", user_call_latency, true),
    ];
    let flags: Vec<&str> = args[1..].iter().map(String::as_str).filter(|a| a.starts_with('-')).collect();
    let filters: Vec<&str> = args[1..].iter().map(String::as_str).filter(|a| !a.starts_with('-')).collect();
    if flags.contains(&"--list") {
        for (name, _, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let ignored = flags.contains(&"--ignored") || flags.contains(&"--include-ignored");
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, test, is_ignored) in tests {
        let chosen = filters.is_empty() || filters.iter().any(|f| name.contains(f));
        if !chosen || (*is_ignored && !ignored) {
            continue;
        }
        ran += 1;
        println!("test {name} ...");
        let started = Instant::now();
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("test {name} ... ok ({:?})", started.elapsed()),
            Err(_) => {
                println!("test {name} ... FAILED ({:?})", started.elapsed());
                failed.push(*name);
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
