//! What the runtime's tests share: a one-node config with given policies, a node in a temp
//! data dir, and waits on events with a timeout (never a sleep).

#![allow(dead_code)]

use roster_core::{Config, MetaValue, NodeName, PresenceDiff, PresenceList};
use roster_runtime::{ConnEvent, Node, NodeOptions, PresenceFeed, PresenceSubscription, Session};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long any awaited event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// One node named `local`, with these `[[policy]]` sections (TOML) and a short `diff_ms`.
pub fn config(policies: &str) -> Config {
    let text = format!(
        r#"
[presence]
diff_ms = 10

[[cluster.nodes]]
name = "local"
cluster_addr = "127.0.0.1:4370"
http_addr = "127.0.0.1:4000"

{policies}
"#
    );
    Config::from_toml_str(&text).expect("test config")
}

/// Start a node with `config` in a fresh temp data dir.
pub async fn start(config: Config) -> Node {
    let dir = std::env::temp_dir().join(format!("roster-test-{}", uuid::Uuid::new_v4()));
    let node = Node::start(NodeOptions::for_node(config, NodeName::from("local")).data_dir(dir)).await.expect("start");
    assert!(node.ready(WAIT).await, "a lone node is ready at once");
    node
}

/// The next event of a session, failing the test after [`WAIT`].
pub async fn next(session: &mut Session) -> ConnEvent {
    tokio::time::timeout(WAIT, session.next_event()).await.expect("an event in time").expect("session open")
}

/// The next event that is not presence (a `presence_state` or a diff).
pub async fn next_non_diff(session: &mut Session) -> ConnEvent {
    loop {
        match next(session).await {
            ConnEvent::Diff { .. } | ConnEvent::State { .. } => continue,
            other => return other,
        }
    }
}

/// The next item of a subscription, failing the test after [`WAIT`].
pub async fn next_feed(sub: &mut PresenceSubscription) -> PresenceFeed {
    tokio::time::timeout(WAIT, sub.next()).await.expect("an item in time").expect("subscribed")
}

/// The next diff of a subscription (its `presence_state` skipped).
pub async fn next_diff(sub: &mut PresenceSubscription) -> Arc<PresenceDiff> {
    loop {
        if let PresenceFeed::Diff(diff) = next_feed(sub).await {
            return diff;
        }
    }
}

/// The keys of a presence list with the number of metas under each.
pub fn shape(list: &PresenceList) -> BTreeMap<String, usize> {
    list.keys().map(|k| (k.to_owned(), list.metas_len(k))).collect()
}

/// A phoenix.js-style client copy: apply a diff as `Presence.syncDiff` does.
pub fn apply(view: &mut BTreeMap<String, Vec<BTreeMap<String, MetaValue>>>, diff: &PresenceDiff) {
    let json = serde_json::to_value(diff).expect("diff serializes");
    let refs = |m: &serde_json::Value| m["phx_ref"].as_str().unwrap_or_default().to_owned();
    for (key, entry) in json["joins"].as_object().expect("joins") {
        let metas = view.entry(key.clone()).or_default();
        for m in entry["metas"].as_array().expect("metas") {
            let r = refs(m);
            metas.retain(|x| !matches!(x.get("phx_ref"), Some(MetaValue::Str(s)) if *s == r));
            metas.push(BTreeMap::from([("phx_ref".to_owned(), MetaValue::Str(r))]));
        }
    }
    for (key, entry) in json["leaves"].as_object().expect("leaves") {
        if let Some(metas) = view.get_mut(key) {
            for m in entry["metas"].as_array().expect("metas") {
                let r = refs(m);
                metas.retain(|x| !matches!(x.get("phx_ref"), Some(MetaValue::Str(s)) if *s == r));
            }
            if metas.is_empty() {
                view.remove(key);
            }
        }
    }
}

/// A phoenix.js-style client copy: apply a subscription's item (`syncState` or `syncDiff`).
pub fn apply_feed(view: &mut BTreeMap<String, Vec<BTreeMap<String, MetaValue>>>, item: &PresenceFeed) {
    match item {
        PresenceFeed::State(list) => {
            *view = refs_of(list)
                .into_iter()
                .map(|(k, refs)| {
                    let metas = refs.into_iter().map(|r| BTreeMap::from([("phx_ref".to_owned(), MetaValue::Str(r))]));
                    (k, metas.collect())
                })
                .collect();
        }
        PresenceFeed::Diff(diff) => apply(view, diff),
    }
}

/// The same client-copy shape of a list: key -> phx_refs.
pub fn refs_of(list: &PresenceList) -> BTreeMap<String, Vec<String>> {
    let json = serde_json::to_value(list).expect("list serializes");
    json.as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| {
            let mut refs: Vec<String> = v["metas"]
                .as_array()
                .expect("metas")
                .iter()
                .map(|m| m["phx_ref"].as_str().unwrap().to_owned())
                .collect();
            refs.sort();
            (k.clone(), refs)
        })
        .collect()
}

/// Wait until `cond` holds, checking again whenever the runtime has run other tasks; fails
/// the test after [`WAIT`].
pub async fn wait_until<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "condition not reached in time");
        tokio::task::yield_now().await;
    }
}
