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
    pb::{LbPolicy, Task, TaskState},
};

use super::{digest, lb_policy, networks};
use crate::store::State;

pub struct Shared {
    /// The store index the scan holds at least.
    pub index: u64,
    /// The ids of each node's live tasks (assigned and not finished).
    tasks: HashMap<String, Vec<String>>,
    pub networks: networks::NetworkIndex,
    /// Every node's set holds it; it is sent apart (see
    /// [`shoal_api::node_list`]): sorted and diffed here, once per change.
    pub nodes: Arc<NodeList>,
    pub lb_policies: BTreeMap<String, LbPolicy>,
    pub trust_pem: String,
    pub root_issuer: String,
    /// Each node's fingerprint of what its set is cut from (see
    /// [`super::digest`]).
    digests: HashMap<String, u64>,
}

/// Whether a node is told about a task: assigned to it and not finished.
pub fn live(task: &Task) -> bool {
    let observed = task.status.as_ref().map(|s| s.state()).unwrap_or_default();
    !task.node_id.is_empty() && observed >= TaskState::Assigned && !observed.is_terminal()
}

impl Shared {
    /// A scan with a node list of its own (tests; streams take
    /// [`SharedCache::at`], whose lists follow each other).
    pub fn of(state: &State, index: u64) -> Self {
        Self::after(state, index, &Arc::default())
    }

    /// The scan of `state` at `index`, its node list following `nodes`.
    pub(super) fn after(state: &State, index: u64, nodes: &Arc<NodeList>) -> Self {
        let mut tasks: HashMap<String, Vec<String>> = HashMap::new();
        for (id, task) in state.tasks.iter().filter(|(_, t)| live(t)) {
            tasks
                .entry(task.node_id.clone())
                .or_default()
                .push(id.clone());
        }
        let (trust_pem, root_issuer) = state
            .cluster
            .as_ref()
            .map(|c| (crate::ca::trust_pem(c), crate::certificates::root_issuer(c)))
            .unwrap_or_default();
        let networks = networks::NetworkIndex::of(state);
        let lb_policies = lb_policy::lb_policies(state);
        let ingress = networks.shared_ingress();
        let global = digest::global(
            networks.published(),
            &lb_policies,
            &trust_pem,
            &root_issuer,
            ingress,
        );
        let digests = digest::per_node(state, &tasks, &networks.digests(), global, ingress);
        Self {
            index,
            tasks,
            networks,
            nodes: NodeList::update(nodes, networks::cluster_nodes(state)),
            lb_policies,
            trust_pem,
            root_issuer,
            digests,
        }
    }

    /// The fingerprint of what node `node_id`'s set is cut from in this
    /// scan: equal in two scans, the set is equal too (but for the node
    /// list, sent apart). None for a node the scan does not know.
    pub fn digest_of(&self, node_id: &str) -> Option<u64> {
        self.digests.get(node_id).copied()
    }

    /// Node `node_id`'s live tasks as `state` has them now, by id. `state`
    /// may be newer than the scan: a task that finished since is left out,
    /// one assigned since comes with the next index's scan.
    pub fn tasks_of(&self, state: &State, node_id: &str) -> Vec<Task> {
        self.tasks
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| state.tasks.get(id))
            .filter(|t| live(t) && t.node_id == node_id)
            .cloned()
            .collect()
    }
}

/// The latest scan, made by whichever stream first needs a newer one; the
/// others wait for it rather than scan too.
#[derive(Default)]
pub struct SharedCache(tokio::sync::Mutex<Option<Arc<Shared>>>);

impl SharedCache {
    /// A scan holding at least store index `index`, made from `state` (read
    /// after `index` was published) if the cached one is older.
    pub async fn at(&self, state: &State, index: u64) -> Arc<Shared> {
        let mut cached = self.0.lock().await;
        if let Some(shared) = cached.as_ref().filter(|s| s.index >= index) {
            return shared.clone();
        }
        let nodes = cached.as_ref().map(|s| s.nodes.clone()).unwrap_or_default();
        let shared = Arc::new(Shared::after(state, index, &nodes));
        *cached = Some(shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{
        assignments::{Receiver, Sender},
        pb::{Meta, Node, NodeStatus, TaskStatus},
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
        let cache = SharedCache::default();
        let first = cache.at(&state, 3).await;
        assert!(Arc::ptr_eq(&first, &cache.at(&state, 3).await));
        assert!(
            Arc::ptr_eq(&first, &cache.at(&state, 2).await),
            "a newer scan serves an older index"
        );
        state
            .tasks
            .insert("t1".into(), task("t1", "a", "n1", TaskState::Running));
        let next = cache.at(&state, 4).await;
        assert!(!Arc::ptr_eq(&first, &next));
        assert_eq!(next.tasks_of(&state, "n1").len(), 1);
    }
}
