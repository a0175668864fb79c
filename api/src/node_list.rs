//! The cluster's node list as every assignment stream shares it. Every
//! node's set holds the whole list (the overlays and the mesh reach every
//! node), so a join changed a thousand sets: each stream compared, sorted
//! and diffed a thousand entries per change, a million per join. The list
//! is now sorted and diffed once per change, for every stream: a stream
//! sends what changed since the generation it sent last, composed from the
//! last few changes, and compares nothing while the list stays the same.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use crate::{
    assignments::{diff_list, node_key},
    pb::ClusterNode,
};

/// Changes kept: a stream further behind than this diffs whole lists.
const HISTORY: usize = 64;

/// One generation of the list, with the changes that led to it.
#[derive(Debug, Default, PartialEq)]
pub struct NodeList {
    /// Moves on every change of the list (0: the empty first one).
    pub generation: u64,
    /// In key order ([`node_key`]), each key once.
    pub nodes: Vec<ClusterNode>,
    /// Shared by the generations after it (a step is written once).
    history: VecDeque<Arc<Step>>,
}

/// What one generation changed: items added (or changed, whole) and the
/// keys of items removed.
#[derive(Debug, PartialEq)]
struct Step {
    generation: u64,
    changed: Vec<ClusterNode>,
    removed: Vec<String>,
}

/// Items to send whole, and keys to remove.
pub type NodesDelta = (Vec<ClusterNode>, Vec<String>);

impl NodeList {
    /// The list that holds `nodes` after `prev`: `prev` itself when
    /// nothing changed, so that streams see the same generation.
    pub fn update(prev: &Arc<NodeList>, mut nodes: Vec<ClusterNode>) -> Arc<NodeList> {
        nodes.sort_by_cached_key(node_key);
        nodes.dedup_by(|a, b| node_key(a) == node_key(b));
        if nodes == prev.nodes {
            return prev.clone();
        }
        let (changed, removed) = diff_list(&prev.nodes, &nodes, node_key);
        let generation = prev.generation + 1;
        let mut history = prev.history.clone();
        history.push_back(Arc::new(Step {
            generation,
            changed,
            removed,
        }));
        if history.len() > HISTORY {
            history.pop_front();
        }
        Arc::new(NodeList {
            generation,
            nodes,
            history,
        })
    }

    /// What turns generation `from` of this list's line into this one;
    /// None when `from` is older than the changes kept (or newer than
    /// this).
    pub fn since(&self, from: u64) -> Option<NodesDelta> {
        if from > self.generation {
            return None;
        }
        if from == self.generation {
            return Some(Default::default());
        }
        if self.history.front()?.generation > from + 1 {
            return None;
        }
        // The last word on each key wins.
        let mut net: BTreeMap<String, Option<&ClusterNode>> = BTreeMap::new();
        for step in self.history.iter().filter(|s| s.generation > from) {
            for key in &step.removed {
                net.insert(key.clone(), None);
            }
            for node in &step.changed {
                net.insert(node_key(node), Some(node));
            }
        }
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        for (key, node) in net {
            match node {
                Some(node) => changed.push(node.clone()),
                None => removed.push(key),
            }
        }
        Some((changed, removed))
    }

    /// What turns `held` (an earlier list of the same line, or any list)
    /// into this one.
    pub fn delta_from(&self, held: &NodeList) -> NodesDelta {
        self.since(held.generation)
            .unwrap_or_else(|| diff_list(&held.nodes, &self.nodes, node_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(addr: &str) -> ClusterNode {
        ClusterNode {
            addr: addr.into(),
            manager_addr: String::new(),
        }
    }

    fn list(addrs: &[&str]) -> Vec<ClusterNode> {
        addrs.iter().map(|a| node(a)).collect()
    }

    #[test]
    fn the_same_nodes_keep_the_generation_and_changes_compose() {
        let first = NodeList::update(&Arc::default(), list(&["b", "a"]));
        assert_eq!(first.generation, 1);
        assert_eq!(first.nodes, list(&["a", "b"]), "sorted by key");
        let same = NodeList::update(&first, list(&["a", "b", "a"]));
        assert!(Arc::ptr_eq(&first, &same), "nothing changed: the same list");

        let second = NodeList::update(&first, list(&["a", "b", "c"]));
        let third = NodeList::update(&second, list(&["b", "c", "d"]));
        assert_eq!(third.since(2), Some((list(&["d"]), vec!["a/".to_string()])));
        assert_eq!(
            third.since(1),
            Some((list(&["c", "d"]), vec!["a/".to_string()])),
            "two changes composed"
        );
        assert_eq!(third.since(3), Some(Default::default()));
        assert_eq!(third.since(4), None);
        // Removed, then back: sent whole.
        let fourth = NodeList::update(&third, list(&["a", "b", "c", "d"]));
        assert_eq!(fourth.since(1), Some((list(&["a", "c", "d"]), vec![])));
    }

    #[test]
    fn a_stream_further_behind_than_the_history_diffs_whole_lists() {
        let start = NodeList::update(&Arc::default(), list(&["x"]));
        let mut now = start.clone();
        for i in 0..(HISTORY + 5) {
            now = NodeList::update(&now, vec![node("x"), node(&format!("n{i}"))]);
        }
        assert_eq!(now.since(start.generation), None);
        let (changed, removed) = now.delta_from(&start);
        assert_eq!(changed, list(&[&format!("n{}", HISTORY + 4)]));
        assert!(removed.is_empty());
    }
}
