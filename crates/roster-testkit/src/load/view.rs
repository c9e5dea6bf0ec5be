//! One client's presence list of one topic, kept the way phoenix.js's `Presence` keeps it but
//! as 64-bit ids instead of JSON, so 10,000 clients of a 10,000-member room fit in memory.
//!
//! phoenix.js keys its state by presence key, each with a list of metas told apart by
//! `phx_ref` (unique per meta, renewed on every update). `syncState` makes the state equal to
//! the new one (as sets of `phx_ref` per key); `syncDiff` adds the joined metas a key does not
//! have yet, then removes the left ones, dropping a key whose last meta left. A state is
//! therefore exactly its set of `(key, phx_ref)` pairs, which is what [`View`] keeps: one
//! [`meta_id`] per pair. Diffs that arrive before the `presence_state` of the current join
//! wait and are applied after it (phoenix's `pendingDiffs`).
//!
//! Two lists are compared by [`View::digest`]: the wrapping sum of their ids, kept up to date
//! on every change, so the coordinator compares thousands of views with the node's list in
//! O(1) each (two different sets agree with probability about 2⁻⁶⁴).

use std::collections::HashSet;

/// A set of meta ids.
pub(crate) type IdSet = HashSet<u64, foldhash::fast::FixedState>;

/// The id of the meta `phx_ref` under `key`.
pub(crate) fn meta_id(key: &str, phx_ref: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(phx_ref.as_bytes(), key_id(key))
}

/// The id of a presence key (a user id).
pub(crate) fn key_id(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

/// What a `presence_diff` applied live did that a correct server never causes: a join of a
/// meta the view already has, a leave of a meta it does not have. phoenix.js absorbs both
/// silently; they are counted because they show a lost or repeated event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Anomalies {
    pub duplicate_joins: u32,
    pub unknown_leaves: u32,
}

/// One subscriber's list: see the module docs.
#[derive(Debug, Default)]
pub(crate) struct View {
    metas: IdSet,
    digest: u64,
    /// Whether the `presence_state` of the current join has arrived.
    synced: bool,
    /// Diffs received before it, as `(joins, leaves)`.
    pending: Vec<(Vec<u64>, Vec<u64>)>,
}

impl View {
    /// The digest of a list given by its meta ids.
    pub(crate) fn digest_of(ids: impl IntoIterator<Item = u64>) -> u64 {
        ids.into_iter().fold(0, u64::wrapping_add)
    }

    /// A new join of the channel: diffs wait for its `presence_state` again (phoenix's
    /// `inPendingSyncState` after a rejoin); the list itself stays until then.
    pub(crate) fn rejoin(&mut self) {
        self.synced = false;
        self.pending.clear();
    }

    /// `presence_state`: the list becomes `state`, then the diffs that waited for it apply.
    #[cfg(test)]
    pub(crate) fn sync_state(&mut self, state: impl IntoIterator<Item = u64>) {
        self.sync_state_set(state.into_iter().collect());
    }

    /// `presence_state` given as the set its parse built (no copy: a 10,000-member room's
    /// set is 150 KB per view).
    pub(crate) fn sync_state_set(&mut self, state: IdSet) {
        self.metas = state;
        self.digest = View::digest_of(self.metas.iter().copied());
        self.synced = true;
        for (joins, leaves) in std::mem::take(&mut self.pending) {
            self.apply(&joins, &leaves);
        }
    }

    /// `presence_diff`: joins then leaves, or kept until the `presence_state` arrives.
    pub(crate) fn sync_diff(&mut self, joins: Vec<u64>, leaves: Vec<u64>) -> Anomalies {
        if !self.synced {
            self.pending.push((joins, leaves));
            return Anomalies::default();
        }
        self.apply(&joins, &leaves)
    }

    fn apply(&mut self, joins: &[u64], leaves: &[u64]) -> Anomalies {
        let mut anomalies = Anomalies::default();
        for &id in joins {
            if self.metas.insert(id) {
                self.digest = self.digest.wrapping_add(id);
            } else {
                anomalies.duplicate_joins += 1;
            }
        }
        for &id in leaves {
            if self.metas.remove(&id) {
                self.digest = self.digest.wrapping_sub(id);
            } else {
                anomalies.unknown_leaves += 1;
            }
        }
        anomalies
    }

    /// The digest of the list (0 when empty).
    pub(crate) fn digest(&self) -> u64 {
        self.digest
    }

    /// How many metas the list holds.
    pub(crate) fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether the `presence_state` of the current join has arrived.
    #[cfg(test)]
    pub(crate) fn is_synced(&self) -> bool {
        self.synced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn ids(pairs: &[(&str, &str)]) -> Vec<u64> {
        pairs.iter().map(|(k, r)| meta_id(k, r)).collect()
    }

    /// phoenix.js's `syncState` and `syncDiff` on JSON, statement by statement (order of
    /// metas aside), as the oracle the id view is checked against.
    mod phoenix {
        use serde_json::{Map, Value};

        fn refs(p: &Value) -> Vec<String> {
            p["metas"].as_array().unwrap().iter().map(|m| m["phx_ref"].as_str().unwrap().to_owned()).collect()
        }

        pub fn sync_state(state: &mut Map<String, Value>, new_state: &Value) {
            let mut joins = Map::new();
            let mut leaves = Map::new();
            for (key, presence) in state.iter() {
                if new_state.get(key).is_none() {
                    leaves.insert(key.clone(), presence.clone());
                }
            }
            for (key, new_presence) in new_state.as_object().unwrap() {
                match state.get(key) {
                    Some(current) => {
                        let (new_refs, cur_refs) = (refs(new_presence), refs(current));
                        let joined: Vec<Value> = new_presence["metas"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter(|m| !cur_refs.contains(&m["phx_ref"].as_str().unwrap().to_owned()))
                            .cloned()
                            .collect();
                        let left: Vec<Value> = current["metas"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter(|m| !new_refs.contains(&m["phx_ref"].as_str().unwrap().to_owned()))
                            .cloned()
                            .collect();
                        if !joined.is_empty() {
                            joins.insert(key.clone(), serde_json::json!({ "metas": joined }));
                        }
                        if !left.is_empty() {
                            leaves.insert(key.clone(), serde_json::json!({ "metas": left }));
                        }
                    }
                    None => {
                        joins.insert(key.clone(), new_presence.clone());
                    }
                }
            }
            sync_diff(state, &serde_json::json!({"joins": joins, "leaves": leaves}));
        }

        pub fn sync_diff(state: &mut Map<String, Value>, diff: &Value) {
            for (key, new_presence) in diff["joins"].as_object().unwrap() {
                let mut presence = new_presence.clone();
                if let Some(current) = state.get(key) {
                    let joined = refs(&presence);
                    let cur: Vec<Value> = current["metas"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|m| !joined.contains(&m["phx_ref"].as_str().unwrap().to_owned()))
                        .cloned()
                        .collect();
                    let metas = presence["metas"].as_array_mut().unwrap();
                    metas.splice(0..0, cur);
                }
                state.insert(key.clone(), presence);
            }
            for (key, left) in diff["leaves"].as_object().unwrap() {
                let Some(current) = state.get_mut(key) else { continue };
                let gone = refs(left);
                current["metas"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|m| !gone.contains(&m["phx_ref"].as_str().unwrap().to_owned()));
                if current["metas"].as_array().unwrap().is_empty() {
                    state.remove(key);
                }
            }
        }

        pub fn ids(state: &Map<String, Value>) -> Vec<u64> {
            state.iter().flat_map(|(k, p)| refs(p).into_iter().map(move |r| super::meta_id(k, &r))).collect()
        }
    }

    fn map_ids(json: &Value) -> Vec<u64> {
        let mut out = Vec::new();
        crate::load::protocol::for_each_meta(&json.to_string(), |k, r| out.push(meta_id(k, r))).unwrap();
        out
    }

    fn sorted(mut v: Vec<u64>) -> Vec<u64> {
        v.sort_unstable();
        v
    }

    #[test]
    fn state_then_diffs_compose_like_phoenix_js() {
        let steps = [
            json!({"state": {"a": {"metas": [{"phx_ref": "1"}, {"phx_ref": "2"}]}, "b": {"metas": [{"phx_ref": "3"}]}}}),
            json!({"diff": {"joins": {"c": {"metas": [{"phx_ref": "4"}]}, "a": {"metas": [{"phx_ref": "5"}]}}, "leaves": {"a": {"metas": [{"phx_ref": "1"}]}}}}),
            // A leave of the last meta drops the key; a leave of an unknown key is ignored.
            json!({"diff": {"joins": {}, "leaves": {"b": {"metas": [{"phx_ref": "3"}]}, "zz": {"metas": [{"phx_ref": "9"}]}}}}),
            // A meta update: the old ref leaves, the new one joins, in one diff.
            json!({"diff": {"joins": {"c": {"metas": [{"phx_ref": "6"}]}}, "leaves": {"c": {"metas": [{"phx_ref": "4"}]}}}}),
            // A resync: keys gone, metas changed, metas kept.
            json!({"state": {"a": {"metas": [{"phx_ref": "5"}, {"phx_ref": "7"}]}, "d": {"metas": [{"phx_ref": "8"}]}}}),
            json!({"diff": {"joins": {"a": {"metas": [{"phx_ref": "5"}]}}, "leaves": {}}}),
        ];
        let mut oracle = serde_json::Map::new();
        let mut view = View::default();
        for step in &steps {
            if let Some(state) = step.get("state") {
                phoenix::sync_state(&mut oracle, state);
                view.sync_state(map_ids(state));
            } else {
                let diff = &step["diff"];
                phoenix::sync_diff(&mut oracle, diff);
                view.sync_diff(map_ids(&diff["joins"]), map_ids(&diff["leaves"]));
            }
            assert_eq!(sorted(view.metas.iter().copied().collect()), sorted(phoenix::ids(&oracle)), "after {step}");
            assert_eq!(view.digest(), View::digest_of(phoenix::ids(&oracle)));
            assert_eq!(view.len(), phoenix::ids(&oracle).len());
        }
    }

    #[test]
    fn diffs_before_the_state_wait_for_it() {
        let mut view = View::default();
        assert!(!view.is_synced());
        // This join arrived before the state, which already holds it: no anomaly, no duplicate.
        let early = view.sync_diff(ids(&[("a", "1"), ("b", "2")]), ids(&[("c", "3")]));
        assert_eq!((early, view.len(), view.digest()), (Anomalies::default(), 0, 0));
        view.sync_state(ids(&[("a", "1"), ("c", "3")]));
        assert!(view.is_synced());
        assert_eq!(view.digest(), View::digest_of(ids(&[("a", "1"), ("b", "2")])));
        // After a rejoin, diffs wait again until the new join's state.
        view.rejoin();
        view.sync_diff(ids(&[("d", "4")]), vec![]);
        assert_eq!(view.len(), 2);
        view.sync_state(ids(&[("a", "1")]));
        assert_eq!(view.digest(), View::digest_of(ids(&[("a", "1"), ("d", "4")])));
    }

    #[test]
    fn live_duplicate_joins_and_unknown_leaves_are_counted() {
        let mut view = View::default();
        view.sync_state(ids(&[("a", "1")]));
        let a = view.sync_diff(ids(&[("a", "1"), ("b", "2")]), ids(&[("x", "9"), ("b", "2")]));
        assert_eq!(a, Anomalies { duplicate_joins: 1, unknown_leaves: 1 });
        assert_eq!(view.digest(), View::digest_of(ids(&[("a", "1")])));
    }

    #[test]
    fn ids_tell_keys_and_refs_apart() {
        assert_ne!(meta_id("a", "1"), meta_id("a", "2"));
        assert_ne!(meta_id("a", "1"), meta_id("b", "1"));
        assert_ne!(meta_id("ab", "c"), meta_id("a", "bc"));
        assert_eq!(View::digest_of([]), 0);
    }
}
