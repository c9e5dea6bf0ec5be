//! The partition ring: which bucket a user falls in, and which live node would best be its
//! home.
//!
//! Users are spread over `cluster.partitions` fixed buckets by a stable hash of their id
//! (XXH3-64, a specified algorithm: the same on every platform, Rust version and build, unlike
//! std's randomly seeded hasher), so every node, every restart and every version agrees on a
//! user's partition. A partition's *preferred* home is the live node with the highest
//! rendezvous (highest-random-weight) hash of `(partition, node name)`: when a node leaves,
//! only its own partitions change preference, and they spread evenly over the others.
//!
//! Preference is not possession. A partition stays with the node that holds its lease while
//! that node lives; it moves to a returning preferred node only by handover, which is the
//! cluster's business (see the lease machine), not this module's.

use crate::ids::{NodeName, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// One of the `cluster.partitions` buckets of users, numbered from 0. All of a user's scopes
/// live in one partition, so one home decides all of that user's slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// The partition of `user` among `partitions` buckets: `xxh3_64(user id bytes) % partitions`.
/// Fixed forever for a given id and count; changing `cluster.partitions` moves almost every
/// user, so all nodes must use the same count.
///
/// # Panics
///
/// If `partitions` is 0, which [`Config::validate`](crate::Config::validate) refuses.
pub fn partition_of(user: &UserId, partitions: u32) -> PartitionId {
    assert!(partitions > 0, "partition_of needs at least one partition (cluster.partitions = 0 does not validate)");
    let bucket = xxh3_64(user.as_str().as_bytes()) % u64::from(partitions);
    PartitionId(bucket as u32)
}

/// The live node that would best be `partition`'s home: the one with the highest rendezvous
/// weight for it (ties, which need a 64-bit collision, go to the greater name). `None` when
/// no node is live. The answer depends only on the set of names, not on their order, and
/// removing any node other than the preferred one never changes it.
///
/// This is only the *preferred* home: the actual home is whichever node holds the
/// partition's lease, and it keeps the partition while it lives. Handing it over to the
/// preferred node is the cluster's business.
pub fn preferred_home<'a>(partition: PartitionId, live: impl IntoIterator<Item = &'a NodeName>) -> Option<NodeName> {
    live.into_iter().max_by_key(|node| (rendezvous_weight(partition, node), *node)).cloned()
}

/// The weight of `node` for `partition`: XXH3-64 of the node's name, seeded with the
/// partition number, so each partition ranks the nodes in its own independent order.
fn rendezvous_weight(partition: PartitionId, node: &NodeName) -> u64 {
    xxh3_64_with_seed(node.as_str().as_bytes(), u64::from(partition.0))
}

/// The presence shard of `topic` among `shards` (a stable hash, like [`partition_of`]).
pub fn shard_of(topic: &crate::ids::Topic, shards: u32) -> usize {
    (xxh3_64(topic.as_str().as_bytes()) % u64::from(shards.max(1))) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn names(ns: &[&str]) -> Vec<NodeName> {
        ns.iter().map(|n| NodeName::from(*n)).collect()
    }

    #[test]
    fn partition_of_is_pinned_so_a_hash_change_is_caught() {
        // If these change, every running cluster would disagree with the new build about
        // where users live: a hash change is a breaking change.
        assert_eq!(partition_of(&UserId::from("42"), 256), PartitionId(145));
        assert_eq!(partition_of(&UserId::from("alice@example.com"), 1000), PartitionId(167));
    }

    #[test]
    fn the_hash_is_standard_xxh3_64() {
        // The reference value of XXH3-64 for empty input with seed 0 (xxHash's own test vector).
        assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
    }

    #[test]
    fn partition_of_is_deterministic_and_in_range() {
        for i in 0..1000 {
            let u = UserId::from(format!("user-{i}"));
            let p = partition_of(&u, 7);
            assert_eq!(p, partition_of(&u.clone(), 7));
            assert!(p.0 < 7);
        }
        assert_eq!(partition_of(&UserId::from("anyone"), 1), PartitionId(0));
    }

    #[test]
    fn ten_thousand_users_spread_roughly_evenly_over_256_partitions() {
        let mut counts = vec![0u32; 256];
        for i in 0..10_000 {
            counts[partition_of(&UserId::from(format!("user-{i}")), 256).0 as usize] += 1;
        }
        // 39 expected per partition, standard deviation about 6.
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        assert!(min >= 15, "least loaded partition has {min} users");
        assert!(max <= 70, "most loaded partition has {max} users");
    }

    #[test]
    #[should_panic(expected = "at least one partition")]
    fn partition_of_zero_partitions_panics() {
        partition_of(&UserId::from("42"), 0);
    }

    #[test]
    fn preferred_home_of_no_live_node_is_none() {
        assert_eq!(preferred_home(PartitionId(3), &Vec::<NodeName>::new()), None);
    }

    #[test]
    fn preferred_home_of_a_single_node_is_that_node() {
        let live = names(&["only"]);
        assert_eq!(preferred_home(PartitionId(9), &live), Some(NodeName::from("only")));
    }

    #[test]
    fn three_nodes_each_prefer_about_a_third_of_256_partitions() {
        let live = names(&["a", "b", "c"]);
        let mut counts: BTreeMap<NodeName, u32> = BTreeMap::new();
        for p in 0..256 {
            *counts.entry(preferred_home(PartitionId(p), &live).unwrap()).or_default() += 1;
        }
        assert_eq!(counts.len(), 3);
        for (node, n) in counts {
            assert!((55..=115).contains(&n), "{node} prefers {n} of 256 partitions");
        }
    }

    #[test]
    fn losing_a_node_moves_only_its_own_partitions() {
        let all = names(&["a", "b", "c", "d"]);
        let without_c = names(&["a", "b", "d"]);
        for p in (0..256).map(PartitionId) {
            let before = preferred_home(p, &all).unwrap();
            let after = preferred_home(p, &without_c).unwrap();
            if before.as_str() != "c" {
                assert_eq!(before, after, "{p} moved although its node stayed");
            }
        }
    }

    fn distinct_names() -> impl Strategy<Value = Vec<NodeName>> {
        proptest::collection::btree_set("[a-z0-9-]{1,8}", 1..8)
            .prop_map(|set| set.into_iter().map(NodeName::from).collect::<Vec<_>>())
    }

    proptest! {
        #[test]
        fn preferred_home_ignores_the_order_of_the_live_set(
            (live, shuffled) in distinct_names().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
            partition in 0u32..4096,
        ) {
            let p = PartitionId(partition);
            prop_assert_eq!(preferred_home(p, &live), preferred_home(p, &shuffled));
        }

        #[test]
        fn removing_a_non_preferred_node_never_changes_the_preference(
            live in distinct_names(),
            partition in 0u32..4096,
            pick in any::<prop::sample::Index>(),
        ) {
            let p = PartitionId(partition);
            let preferred = preferred_home(p, &live).unwrap();
            let gone = &live[pick.index(live.len())];
            prop_assume!(gone != &preferred);
            let rest: Vec<NodeName> = live.iter().filter(|n| *n != gone).cloned().collect();
            prop_assert_eq!(preferred_home(p, &rest), Some(preferred));
        }
    }
}
