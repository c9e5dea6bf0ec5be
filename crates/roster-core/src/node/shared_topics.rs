//! One shared [`Topic`] per topic name in use: a client's join or leave names its topic in a
//! fresh string, and the node keeps that topic in many indexes (the socket's topics, the
//! gateway's slot, the rule-14 tokens given up, the home's scope, the presence table). Swapped
//! for the node's one copy as it comes in, every index holds the same `Arc`, so comparing two
//! copies is a pointer comparison (`ids.rs`) and a look-up reads no cold string per key.
//!
//! Names nobody else holds any more are forgotten each time the set has doubled since the last
//! sweep, so the sweeps cost O(1) a name, amortized, and the set stays within twice the
//! topics in use.

use crate::ids::Topic;

/// The smallest size a sweep waits for.
const FIRST_SWEEP_AT: usize = 64;

/// The topics in use, each once. See the module documentation.
#[derive(Debug)]
pub(super) struct SharedTopics {
    names: foldhash::HashSet<Topic>,
    /// The set's size that triggers the next sweep.
    sweep_at: usize,
}

impl Default for SharedTopics {
    fn default() -> Self {
        Self { names: foldhash::HashSet::default(), sweep_at: FIRST_SWEEP_AT }
    }
}

impl SharedTopics {
    /// The node's copy of `topic` (which becomes it, if the node has none).
    pub(super) fn share(&mut self, topic: Topic) -> Topic {
        if let Some(shared) = self.names.get(&topic) {
            return shared.clone();
        }
        if self.names.len() >= self.sweep_at {
            // Held by this set alone: no index, message or reader names it.
            self.names.retain(|t| t.strong_count() > 1);
            self.sweep_at = (2 * self.names.len()).max(FIRST_SWEEP_AT);
        }
        self.names.insert(topic.clone());
        topic
    }

    /// How many names are kept (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_named_again_is_the_first_copy() {
        let mut shared = SharedTopics::default();
        let first = shared.share(Topic::from("room:1"));
        let again = shared.share(Topic::from(String::from("room:1")));
        assert!(first.ptr_eq(&again));
        let other = shared.share(Topic::from("room:2"));
        assert!(!first.ptr_eq(&other));
        assert_eq!(other.as_str(), "room:2");
    }

    #[test]
    fn names_nobody_holds_are_forgotten_once_the_set_doubles() {
        let mut shared = SharedTopics::default();
        let held: Vec<Topic> = (0..10).map(|i| shared.share(Topic::from(format!("held:{i}")))).collect();
        for i in 0..FIRST_SWEEP_AT - 10 {
            shared.share(Topic::from(format!("gone:{i}")));
        }
        assert_eq!(shared.len(), FIRST_SWEEP_AT);
        // The next new name sweeps: only the ten still held stay, then the new one joins them.
        shared.share(Topic::from("new"));
        assert_eq!(shared.len(), 11);
        let again = shared.share(Topic::from("held:3"));
        assert!(again.ptr_eq(&held[3]), "a held name stays shared");
    }
}
