//! A fingerprint, per node, of everything its assignment set is cut from,
//! taken in the shared scan: a stream whose node's fingerprint did not move
//! since the set it last computed has nothing new to send (but a changed
//! node list, which travels apart), so it neither rebuilds, clones nor
//! compares that set. Without it every change made each of a thousand
//! streams rebuild and compare its whole set: O(tasks) per change.
//!
//! What a set holds (its tasks and [`super::set_around`]): the node's live
//! tasks (their id and the version at which they last changed in anything
//! but their status: the node reports that status, it is not sent back;
//! see [`crate::store::State::assignment_version`]), the secrets and configs they name (id and version), the node
//! itself (role, ingress address and allow-list), the networks its tasks
//! use plus the ingress network while a port is published (the network
//! object's version and the content of every endpoint and name record on
//! it), and what every set shares (published ports, load-balancing
//! policies, the roots, the ingress network's id). A 64-bit SipHash of
//! these: two different inputs share a fingerprint with odds of 2^-64.

use std::{
    collections::{BTreeSet, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
};

use prost::Message;
use shoal_api::pb::{LbPolicy, PublishedPort};

use crate::store::{
    State,
    task_index::{LiveOnNode, is_live},
};

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// An order-free fingerprint of `items` (each hashed by its encoding, so a
/// field added to the message later counts too): maps iterate in orders
/// that may differ between two scans of equal content.
pub fn of_messages<'a, M: Message + 'a>(items: impl IntoIterator<Item = &'a M>) -> u64 {
    let mut buf = Vec::new();
    let mut sum = 0u64;
    let mut count = 0u64;
    for item in items {
        buf.clear();
        // A Vec grows as needed: encoding into it cannot fail.
        if item.encode(&mut buf).is_ok() {
            sum = sum.wrapping_add(hash_of(&buf));
        }
        count += 1;
    }
    hash_of((sum, count))
}

/// What every node's set shares.
pub fn global(
    published: &[PublishedPort],
    lb_policies: &std::collections::BTreeMap<String, LbPolicy>,
    trust_pem: &str,
    root_issuer: &str,
    ingress: Option<&str>,
) -> u64 {
    hash_of((
        of_messages(published),
        lb_policies,
        trust_pem,
        root_issuer,
        ingress,
    ))
}

fn version(meta: Option<&shoal_api::pb::Meta>) -> u64 {
    meta.map(|m| m.version).unwrap_or(0)
}

/// Node `node_id`'s fingerprint: `networks` is each network's endpoint
/// and record fingerprint, `global` what every set shares, `ingress` the
/// ingress network when a port is published (every node then has it).
pub fn of_node(
    state: &State,
    node_id: &str,
    node: &shoal_api::pb::Node,
    networks: &HashMap<String, u64>,
    global: u64,
    ingress: Option<&str>,
) -> u64 {
    let Some(kept) = state.live_on_node(node_id) else {
        return of_node_walked(state, node_id, node, networks, global, ingress);
    };
    let empty = LiveOnNode::default();
    finish(
        state,
        node,
        networks,
        global,
        ingress,
        kept.unwrap_or(&empty),
    )
}

/// As [`of_node`], from the node's tasks summed up afresh: what the
/// store's running sums must equal (tests), and the way when its index is
/// not whole.
pub fn of_node_walked(
    state: &State,
    node_id: &str,
    node: &shoal_api::pb::Node,
    networks: &HashMap<String, u64>,
    global: u64,
    ingress: Option<&str>,
) -> u64 {
    let mut live = LiveOnNode::default();
    for task in state.tasks_on_node(node_id).filter(|t| is_live(t)) {
        let id = task
            .meta
            .as_ref()
            .map(|m| m.id.as_str())
            .unwrap_or_default();
        live.add(id, task, state.assignment_version(task));
    }
    finish(state, node, networks, global, ingress, &live)
}

/// Each id with the version `version_of` gives it.
fn with_versions<'a>(
    ids: impl Iterator<Item = &'a String>,
    version_of: impl Fn(&str) -> u64,
) -> BTreeSet<(&'a str, u64)> {
    ids.map(|id| (id.as_str(), version_of(id))).collect()
}

/// The fingerprint of a node's set from what its live tasks add up to and
/// the ids they name (each looked up for its version).
fn finish(
    state: &State,
    node: &shoal_api::pb::Node,
    networks: &HashMap<String, u64>,
    global: u64,
    ingress: Option<&str>,
    live: &LiveOnNode,
) -> u64 {
    let secrets = with_versions(live.secrets.keys(), |id| {
        version(state.secrets.get(id).and_then(|s| s.meta.as_ref()))
    });
    let configs = with_versions(live.configs.keys(), |id| {
        version(state.configs.get(id).and_then(|c| c.meta.as_ref()))
    });
    let mut nets: BTreeSet<&str> = live.networks.keys().map(String::as_str).collect();
    nets.extend(ingress);
    let nets: Vec<(&str, u64, u64)> = nets
        .into_iter()
        .map(|id| {
            let object = version(state.networks.get(id).and_then(|n| n.meta.as_ref()));
            (id, object, networks.get(id).copied().unwrap_or(0))
        })
        .collect();
    hash_of((
        global,
        version(node.meta.as_ref()),
        (live.sum, live.count),
        secrets,
        configs,
        nets,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::{
        ConfigReference, ContainerSpec, Meta, NetworkAttachment, Node, SecretReference, Task,
        TaskSpec, TaskState, TaskStatus,
    };

    fn task(id: &str, node: &str, observed: TaskState, refs: &[&str]) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            service_id: "svc".into(),
            node_id: node.into(),
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    secrets: refs
                        .iter()
                        .map(|r| SecretReference {
                            secret_id: format!("s-{r}"),
                            ..Default::default()
                        })
                        .collect(),
                    configs: refs
                        .iter()
                        .map(|r| ConfigReference {
                            config_id: format!("c-{r}"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            networks: refs
                .iter()
                .map(|r| NetworkAttachment {
                    network_id: format!("n-{r}"),
                    ..Default::default()
                })
                .collect(),
            status: Some(TaskStatus {
                state: observed as i32,
                ..Default::default()
            }),
            desired_state: TaskState::Running as i32,
            ..Default::default()
        }
    }

    /// Every node's fingerprint from the store's kept sums equals the one
    /// from walking its tasks, and the sums equal fresh ones.
    fn check(state: &State, nodes: &[&str]) {
        let nets = HashMap::from([("n-x".to_string(), 7u64)]);
        for id in nodes {
            let node = Node::default();
            assert_eq!(
                of_node(state, id, &node, &nets, 1, Some("ingress")),
                of_node_walked(state, id, &node, &nets, 1, Some("ingress")),
                "node {id}"
            );
        }
        let mut fresh = State::default();
        for t in state.tasks.values() {
            fresh.put(shoal_api::pb::Object {
                object: Some(shoal_api::pb::object::Object::Task(t.clone())),
            });
        }
        for id in nodes {
            let kept = state.live_on_node(id).expect("the index is whole");
            let fresh = fresh.live_on_node(id).expect("the index is whole");
            assert_eq!(
                kept.map(|l| (l.count, l.tasks.keys().collect::<Vec<_>>(), l.holding)),
                fresh.map(|l| (l.count, l.tasks.keys().collect::<Vec<_>>(), l.holding)),
                "node {id}"
            );
            // Each at the version the store's index gives it (a fresh store
            // starts every task's afresh: compared with the one it came from).
            for (task, version) in kept.map(|l| &l.tasks).into_iter().flatten() {
                assert_eq!(
                    *version,
                    state.assignment_version(&state.tasks[task]),
                    "node {id}, task {task}"
                );
            }
            assert_eq!(
                kept.map(|l| (&l.secrets, &l.configs, &l.networks)),
                fresh.map(|l| (&l.secrets, &l.configs, &l.networks)),
                "node {id}"
            );
        }
    }

    fn apply(state: &mut State, index: u64, put: Vec<Task>, delete: &[&str]) {
        state.apply_tasks(index, put, delete);
    }

    #[test]
    fn the_kept_sums_give_the_fingerprint_a_walk_of_the_tasks_gives() {
        use TaskState::{Assigned, Failed, Pending, Running};
        let nodes = ["a", "b", "c"];
        let mut state = State::default();
        apply(
            &mut state,
            1,
            vec![
                task("t1", "a", Assigned, &["x"]),
                task("t2", "a", Assigned, &["x", "y"]),
                task("t3", "b", Assigned, &[]),
                task("t4", "", Pending, &["y"]),
            ],
            &[],
        );
        check(&state, &nodes);
        // Reports: t1 runs, t3 fails (it leaves b's set).
        apply(
            &mut state,
            2,
            vec![
                task("t1", "a", Running, &["x"]),
                task("t3", "b", Failed, &[]),
            ],
            &[],
        );
        check(&state, &nodes);
        // t4 is placed on c; t2 moves to b with other references.
        apply(
            &mut state,
            3,
            vec![
                task("t4", "c", Assigned, &["y"]),
                task("t2", "b", Assigned, &["z"]),
            ],
            &[],
        );
        check(&state, &nodes);
        // t1 and t3 deleted: a has no live task left.
        apply(&mut state, 4, vec![], &["t1", "t3"]);
        check(&state, &nodes);
        assert_eq!(state.live_on_node("a"), Some(None));

        // A group commit that failed puts the old objects back.
        let before = state.clone();
        apply(
            &mut state,
            5,
            vec![task("t2", "c", Running, &["x"])],
            &["t4"],
        );
        for t in before.tasks.values() {
            state.put(shoal_api::pb::Object {
                object: Some(shoal_api::pb::object::Object::Task(t.clone())),
            });
        }
        check(&state, &nodes);
    }
}
