//! What every node's assignment set is cut from and only a scan of the
//! whole state finds (live tasks by node, endpoints and names by network,
//! published ports, the node list, load-balancing policies, the roots):
//! scanned once per store index and shared by every node's stream. Without
//! it, a change made each of a thousand streams scan every task and
//! service: O(nodes x state) per change.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use shoal_api::{
    node_list::NodeList,
    pb::{LbPolicy, Task},
};

use super::{digest, lb_policy, networks, touched::Touched};
use crate::store::{State, Store};

pub struct Shared {
    /// The store index the scan holds at least.
    pub index: u64,
    pub networks: Arc<networks::NetworkIndex>,
    /// Each network's fingerprint of its endpoints and name records.
    network_digests: Arc<HashMap<String, u64>>,
    /// Every node's set holds it; it is sent apart (see
    /// [`shoal_api::node_list`]): sorted and diffed here, once per change.
    pub nodes: Arc<NodeList>,
    pub lb_policies: Arc<BTreeMap<String, LbPolicy>>,
    pub trust_pem: String,
    pub root_issuer: String,
    /// The fingerprint of what every set shares (see [`digest::global`]).
    global: u64,
    /// Each node's fingerprint of what its set is cut from (see
    /// [`super::digest`]).
    digests: HashMap<String, u64>,
}

/// A task's id (empty without metadata).
pub fn task_id(task: &Task) -> &str {
    task.meta
        .as_ref()
        .map(|m| m.id.as_str())
        .unwrap_or_default()
}

/// Whether a node is told about a task: assigned to it and not finished.
pub fn live(task: &Task) -> bool {
    crate::store::task_index::is_live(task)
}

impl Shared {
    /// A scan with a node list of its own (tests; streams take
    /// [`SharedCache::at`], whose lists follow each other).
    pub fn of(state: &State, index: u64) -> Self {
        Self::after(state, index, &Arc::default())
    }

    /// The whole scan of `state` at `index`, its node list following
    /// `nodes`.
    pub(super) fn after(state: &State, index: u64, nodes: &Arc<NodeList>) -> Self {
        let (trust_pem, root_issuer) = state
            .cluster
            .as_ref()
            .map(|c| (crate::ca::trust_pem(c), crate::certificates::root_issuer(c)))
            .unwrap_or_default();
        let networks = networks::NetworkIndex::of(state);
        let network_digests = networks.digests();
        let lb_policies = lb_policy::lb_policies(state);
        let global = digest::global(
            networks.published(),
            &lb_policies,
            &trust_pem,
            &root_issuer,
            networks.shared_ingress(),
        );
        let mut shared = Self {
            index,
            networks: Arc::new(networks),
            network_digests: Arc::new(network_digests),
            nodes: NodeList::update(nodes, networks::cluster_nodes(state)),
            lb_policies: Arc::new(lb_policies),
            trust_pem,
            root_issuer,
            global,
            digests: HashMap::with_capacity(state.nodes.len()),
        };
        for node_id in state.nodes.keys() {
            shared.digest_node(state, node_id);
        }
        shared
    }

    /// The scan of `state` at `index` from the one before it, redoing only
    /// what the writes between them `touched`: a write to one service's
    /// tasks costs the fingerprints of the nodes they are on, not a scan
    /// of every task (which, once per write, was O(tasks) per write).
    pub(super) fn next(prev: &Shared, state: &State, index: u64, touched: &Touched) -> Self {
        if touched.everything {
            return Self::after(state, index, &prev.nodes);
        }
        let mut shared = Self {
            index,
            networks: prev.networks.clone(),
            network_digests: prev.network_digests.clone(),
            nodes: prev.nodes.clone(),
            lb_policies: prev.lb_policies.clone(),
            trust_pem: prev.trust_pem.clone(),
            root_issuer: prev.root_issuer.clone(),
            global: prev.global,
            digests: prev.digests.clone(),
        };
        let mut all_nodes = false;
        if touched.networks {
            let networks = networks::NetworkIndex::of(state);
            let network_digests = networks.digests();
            let lb_policies = lb_policy::lb_policies(state);
            shared.global = digest::global(
                networks.published(),
                &lb_policies,
                &shared.trust_pem,
                &shared.root_issuer,
                networks.shared_ingress(),
            );
            // Which nodes use a network whose records moved is the nodes'
            // own business: all of them look again (networks change
            // seldom; their tasks' endpoints more often, but then so do
            // the nodes that hold them).
            all_nodes = shared.global != prev.global || network_digests != *prev.network_digests;
            shared.networks = Arc::new(networks);
            shared.network_digests = Arc::new(network_digests);
            shared.lb_policies = Arc::new(lb_policies);
        }
        if touched.node_list {
            shared.nodes = NodeList::update(&prev.nodes, networks::cluster_nodes(state));
        }
        if all_nodes {
            shared.digests.clear();
            for node_id in state.nodes.keys() {
                shared.digest_node(state, node_id);
            }
        } else {
            for node_id in &touched.nodes {
                if state.nodes.contains_key(node_id) {
                    shared.digest_node(state, node_id);
                } else {
                    shared.digests.remove(node_id);
                }
            }
        }
        shared
    }

    fn digest_node(&mut self, state: &State, node_id: &str) {
        if let Some(node) = state.nodes.get(node_id) {
            let digest = digest::of_node(
                state,
                node_id,
                node,
                &self.network_digests,
                self.global,
                self.networks.shared_ingress(),
            );
            self.digests.insert(node_id.to_owned(), digest);
        }
    }

    /// The fingerprint of what node `node_id`'s set is cut from in this
    /// scan: equal in two scans, the set is equal too (but for the node
    /// list, sent apart). None for a node the scan does not know.
    pub fn digest_of(&self, node_id: &str) -> Option<u64> {
        self.digests.get(node_id).copied()
    }

    /// Node `node_id`'s live tasks as `state` has them now, in id order
    /// (`state` may be newer than the scan: its fingerprints then move at
    /// the next scan, and the set is rebuilt once more).
    pub fn tasks_of<'a>(&self, state: &'a State, node_id: &'a str) -> Vec<&'a Task> {
        let mut tasks: Vec<&Task> = state.tasks_on_node(node_id).filter(|t| live(t)).collect();
        tasks.sort_by(|a, b| task_id(a).cmp(task_id(b)));
        tasks
    }
}

/// The latest scan, made by whichever stream first needs a newer one; the
/// others wait for it rather than scan too. It follows the store's change
/// events to redo only what they touched.
#[derive(Default)]
pub struct SharedCache(tokio::sync::Mutex<Cached>);

#[derive(Default)]
struct Cached {
    scan: Option<Arc<Shared>>,
    /// Subscribed under the read lock of the first whole scan: no write
    /// after that scan is missed.
    touched: Option<super::touched::Tracker>,
}

impl SharedCache {
    /// A scan holding at least store index `index`, made from `state` (read
    /// under `store`'s read lock after `index` was published) if the cached
    /// one is older.
    pub async fn at(&self, store: &Store, state: &State, index: u64) -> Arc<Shared> {
        let mut guard = self.0.lock().await;
        let cached = &mut *guard;
        if let Some(shared) = cached.scan.as_ref().filter(|s| s.index >= index) {
            return shared.clone();
        }
        let shared = match (cached.scan.as_ref(), cached.touched.as_mut()) {
            (Some(prev), Some(tracker)) => {
                let touched = tracker.take(state, &prev.networks);
                Arc::new(Shared::next(prev, state, index, &touched))
            }
            _ => {
                let tracker = super::touched::Tracker::new(store, state);
                let nodes = cached
                    .scan
                    .as_ref()
                    .map(|s| s.nodes.clone())
                    .unwrap_or_default();
                cached.touched = Some(tracker);
                Arc::new(Shared::after(state, index, &nodes))
            }
        };
        cached.scan = Some(shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{
        assignments::{Receiver, Sender},
        pb::{Meta, Node, NodeStatus, TaskState, TaskStatus},
    };

    fn task(id: &str, service: &str, node: &str, state: TaskState) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            service_id: service.into(),
            node_id: node.into(),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            desired_state: TaskState::Running as i32,
            ..Default::default()
        }
    }

    fn cluster(nodes: &[&str]) -> State {
        let mut state = State::default();
        for (i, id) in nodes.iter().enumerate() {
            state.nodes.insert(
                (*id).into(),
                Node {
                    status: Some(NodeStatus {
                        addr: format!("192.0.2.{}", i + 10),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
        }
        state
    }

    #[test]
    fn a_change_to_one_service_reaches_only_the_node_that_needs_it() {
        let nodes = ["n1", "n2", "n3", "n4"];
        let mut state = cluster(&nodes);
        for (id, service, node) in [("a1", "a", "n1"), ("a2", "a", "n2"), ("b1", "b", "n3")] {
            state
                .tasks
                .insert(id.into(), task(id, service, node, TaskState::Running));
        }
        let mut senders: Vec<Sender> = nodes.iter().map(|_| Sender::new(true)).collect();
        let mut receivers: Vec<Receiver> = nodes.iter().map(|_| Receiver::default()).collect();
        // One line of node lists, as the cache keeps it.
        let mut list = Arc::default();
        let mut push = |state: &State, senders: &mut Vec<Sender>, receivers: &mut Vec<Receiver>| {
            let shared = Shared::after(state, 1, &list);
            list = shared.nodes.clone();
            let mut reached = Vec::new();
            for (i, node) in nodes.iter().enumerate() {
                let set = super::super::assignment_set_from(state, &shared, node);
                if let Some(message) = senders[i].next_shared(set.clone(), &shared.nodes) {
                    reached.push((*node, message.delta));
                    let got = receivers[i].take(message).expect("in order").clone();
                    let mut want = set;
                    want.nodes = shared.nodes.nodes.clone();
                    shoal_api::assignments::normalize(&mut want);
                    assert_eq!(got, want, "{node}: the deltas add up to its set");
                }
            }
            reached
        };
        let first = push(&state, &mut senders, &mut receivers);
        assert_eq!(first.len(), 4, "every node gets a first, complete set");
        assert!(first.iter().all(|(_, delta)| !delta));

        // Service a scaled by one: its new task goes to n4.
        state
            .tasks
            .insert("a3".into(), task("a3", "a", "n4", TaskState::Assigned));
        assert_eq!(push(&state, &mut senders, &mut receivers), [("n4", true)]);
        // It runs: only n4 hears of it again.
        state
            .tasks
            .insert("a3".into(), task("a3", "a", "n4", TaskState::Running));
        assert_eq!(push(&state, &mut senders, &mut receivers), [("n4", true)]);
        // Nothing changed: nobody is pushed to.
        assert_eq!(push(&state, &mut senders, &mut receivers), []);
        // A task that ended leaves its node's set, and only its node's.
        state
            .tasks
            .insert("b1".into(), task("b1", "b", "n3", TaskState::Complete));
        assert_eq!(push(&state, &mut senders, &mut receivers), [("n3", true)]);
    }

    #[test]
    fn a_scan_older_than_the_state_leaves_out_what_finished_since() {
        let mut state = cluster(&["n1"]);
        state
            .tasks
            .insert("t1".into(), task("t1", "a", "n1", TaskState::Running));
        state
            .tasks
            .insert("t2".into(), task("t2", "a", "n1", TaskState::Running));
        let scan = Shared::of(&state, 5);
        state
            .tasks
            .insert("t2".into(), task("t2", "a", "n1", TaskState::Failed));
        let ids: Vec<String> = scan
            .tasks_of(&state, "n1")
            .iter()
            .filter_map(|t| t.meta.as_ref().map(|m| m.id.clone()))
            .collect();
        assert_eq!(ids, ["t1"]);
    }

    #[tokio::test]
    async fn the_cache_scans_once_per_index_and_never_goes_back() {
        let mut state = cluster(&["n1"]);
        let store = Store::new();
        let cache = SharedCache::default();
        let first = cache.at(&store, &state, 3).await;
        assert!(Arc::ptr_eq(&first, &cache.at(&store, &state, 3).await));
        assert!(
            Arc::ptr_eq(&first, &cache.at(&store, &state, 2).await),
            "a newer scan serves an older index"
        );
        state
            .tasks
            .insert("t1".into(), task("t1", "a", "n1", TaskState::Running));
        let next = cache.at(&store, &state, 4).await;
        assert!(!Arc::ptr_eq(&first, &next));
        assert_eq!(next.tasks_of(&state, "n1").len(), 1);
    }
}
