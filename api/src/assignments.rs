//! Incremental assignment sets, as swarmkit's dispatcher sends them: the
//! stream's first message is complete, later ones carry only what changed
//! since the one before (new or changed items whole, the keys of removed
//! ones), each numbered so that an agent that misses one starts over from a
//! complete set. A change to one service then costs the nodes it concerns a
//! few hundred bytes, not their whole set, and costs the others nothing.
//!
//! The manager keeps a [`Sender`] per stream, the agent a [`Receiver`]; the
//! agent's executor still gets the complete resulting set each time.

use std::{cmp::Ordering, collections::HashMap, sync::Arc};

use crate::node_list::NodeList;
use crate::pb::{
    AssignmentRemovals, AssignmentSet, ClusterNode, Config, Network, PublishedPort, Secret,
    ServiceRecord, Task, TaskEndpoint,
};

fn meta_id(meta: Option<&crate::pb::Meta>) -> String {
    meta.map(|m| m.id.clone()).unwrap_or_default()
}

/// Each keyed list's key: the identity of its items (an item whose key
/// stays but whose content changes is sent again whole).
pub fn task_key(t: &Task) -> String {
    meta_id(t.meta.as_ref())
}
pub fn secret_key(s: &Secret) -> String {
    meta_id(s.meta.as_ref())
}
pub fn config_key(c: &Config) -> String {
    meta_id(c.meta.as_ref())
}
pub fn network_key(n: &Network) -> String {
    meta_id(n.meta.as_ref())
}
pub fn endpoint_key(e: &TaskEndpoint) -> String {
    format!("{}/{}", e.network_id, e.task_id)
}
pub fn service_key(s: &ServiceRecord) -> String {
    format!("{}/{}", s.network_id, s.service_id)
}
pub fn published_key(p: &PublishedPort) -> String {
    format!(
        "{}/{}/{}/{}/{}",
        p.service_id, p.protocol, p.published_port, p.target_port, p.mode
    )
}
pub fn node_key(n: &ClusterNode) -> String {
    format!("{}/{}", n.addr, n.manager_addr)
}

/// Sorts a keyed list by key; false if two items share a key (a delta
/// could not tell them apart).
fn sort_list<T>(list: &mut [T], key: fn(&T) -> String) -> bool {
    list.sort_by_cached_key(key);
    list.windows(2).all(|w| key(&w[0]) != key(&w[1]))
}

/// Puts every keyed list of `set` in key order, the order a set rebuilt
/// from deltas has. False if some list repeats a key: such a set can only
/// be sent complete.
pub fn normalize(set: &mut AssignmentSet) -> bool {
    // Every list is sorted, whatever the first answer.
    let unique = [
        sort_list(&mut set.tasks, task_key),
        sort_list(&mut set.secrets, secret_key),
        sort_list(&mut set.configs, config_key),
        sort_list(&mut set.networks, network_key),
        sort_list(&mut set.endpoints, endpoint_key),
        sort_list(&mut set.services, service_key),
        sort_list(&mut set.published, published_key),
        sort_list(&mut set.nodes, node_key),
    ];
    unique.iter().all(|u| *u)
}

/// The items of `new` not in `old` as they are, and the keys of `old`'s
/// items that `new` lacks (in key order).
pub(crate) fn diff_list<T: Clone + PartialEq>(
    old: &[T],
    new: &[T],
    key: fn(&T) -> String,
) -> (Vec<T>, Vec<String>) {
    // Most lists of most pushes did not change (a thousand nodes' list,
    // pushed to each of them on a change to one task).
    if old == new {
        return (Vec::new(), Vec::new());
    }
    diff_sorted(old, new, key).unwrap_or_else(|| diff_unsorted(old, new, key))
}

/// [`diff_list`] for lists in key order (as [`normalize`] leaves them):
/// one walk down both, a key made once per item, no map. None when a list
/// turns out not to be in order.
fn diff_sorted<T: Clone + PartialEq>(
    old: &[T],
    new: &[T],
    key: fn(&T) -> String,
) -> Option<(Vec<T>, Vec<String>)> {
    let (mut changed, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    let mut old_key = old.first().map(key);
    let mut new_key = new.first().map(key);
    // The next key of a list, None past its end; fails on a key that is
    // not above the one before.
    let next = |list: &[T], at: usize, previous: &str| -> Result<Option<String>, ()> {
        match list.get(at).map(key) {
            Some(k) if k.as_str() <= previous => Err(()),
            k => Ok(k),
        }
    };
    loop {
        // A list past its end sorts after every key.
        let order = match (&old_key, &new_key) {
            (None, None) => return Some((changed, removed)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(o), Some(n)) => o.cmp(n),
        };
        if order != Ordering::Greater {
            // `old`'s item: kept (compared) or gone.
            let o = old_key.take().unwrap_or_default();
            if order == Ordering::Equal {
                if old[i] != new[j] {
                    changed.push(new[j].clone());
                }
            } else {
                removed.push(o.clone());
            }
            i += 1;
            old_key = next(old, i, &o).ok()?;
        }
        if order != Ordering::Less {
            // `new`'s item: compared above, or added.
            let n = new_key.take().unwrap_or_default();
            if order == Ordering::Greater {
                changed.push(new[j].clone());
            }
            j += 1;
            new_key = next(new, j, &n).ok()?;
        }
    }
}

/// [`diff_list`] for lists in any order.
fn diff_unsorted<T: Clone + PartialEq>(
    old: &[T],
    new: &[T],
    key: fn(&T) -> String,
) -> (Vec<T>, Vec<String>) {
    let mut before: HashMap<String, &T> = old.iter().map(|t| (key(t), t)).collect();
    let mut changed = Vec::new();
    for item in new {
        match before.remove(&key(item)) {
            Some(was) if was == item => {}
            _ => changed.push(item.clone()),
        }
    }
    let mut removed: Vec<String> = before.into_keys().collect();
    removed.sort();
    (changed, removed)
}

/// `list` (in key order) with `removed` taken out and `changed` put in,
/// in key order again. A delta changes a few items of a long list (one
/// node of a thousand): each is found by binary search.
fn apply_list<T: Clone>(
    list: &mut Vec<T>,
    changed: &[T],
    removed: &[String],
    key: fn(&T) -> String,
) {
    for k in removed {
        if let Ok(at) = list.binary_search_by(|item| key(item).as_str().cmp(k)) {
            list.remove(at);
        }
    }
    for item in changed {
        let k = key(item);
        match list.binary_search_by(|probe| key(probe).cmp(&k)) {
            Ok(at) => list[at] = item.clone(),
            Err(at) => list.insert(at, item.clone()),
        }
    }
}

/// The delta that turns `old` into `new` (both normalized), numbered
/// `sequence`; None when it cannot say it (roots that became empty).
pub fn diff(old: &AssignmentSet, new: &AssignmentSet, sequence: u64) -> Option<AssignmentSet> {
    let trust_changed = old.trust_pem != new.trust_pem || old.root_issuer != new.root_issuer;
    if trust_changed && new.trust_pem.is_empty() && new.root_issuer.is_empty() {
        return None;
    }
    let mut removed = AssignmentRemovals::default();
    let mut delta = AssignmentSet {
        delta: true,
        sequence,
        role: new.role,
        ingress_addr: new.ingress_addr.clone(),
        ingress_allow: new.ingress_allow.clone(),
        log_requests: new.log_requests.clone(),
        version: new.version,
        trust_changed,
        ..Default::default()
    };
    if trust_changed {
        delta.trust_pem.clone_from(&new.trust_pem);
        delta.root_issuer.clone_from(&new.root_issuer);
    }
    (delta.tasks, removed.tasks) = diff_list(&old.tasks, &new.tasks, task_key);
    (delta.secrets, removed.secrets) = diff_list(&old.secrets, &new.secrets, secret_key);
    (delta.configs, removed.configs) = diff_list(&old.configs, &new.configs, config_key);
    (delta.networks, removed.networks) = diff_list(&old.networks, &new.networks, network_key);
    (delta.endpoints, removed.endpoints) = diff_list(&old.endpoints, &new.endpoints, endpoint_key);
    (delta.services, removed.services) = diff_list(&old.services, &new.services, service_key);
    (delta.published, removed.published) = diff_list(&old.published, &new.published, published_key);
    (delta.nodes, removed.nodes) = diff_list(&old.nodes, &new.nodes, node_key);
    for (service, policy) in &new.lb_policies {
        if old.lb_policies.get(service) != Some(policy) {
            delta.lb_policies.insert(service.clone(), *policy);
        }
    }
    removed.lb_policies = old
        .lb_policies
        .keys()
        .filter(|k| !new.lb_policies.contains_key(*k))
        .cloned()
        .collect();
    delta.removed = Some(removed);
    Some(delta)
}

/// Applies `delta` to `set` (the set the message before it left).
pub fn apply(set: &mut AssignmentSet, delta: &AssignmentSet) {
    let removed = delta.removed.clone().unwrap_or_default();
    apply_list(&mut set.tasks, &delta.tasks, &removed.tasks, task_key);
    apply_list(
        &mut set.secrets,
        &delta.secrets,
        &removed.secrets,
        secret_key,
    );
    apply_list(
        &mut set.configs,
        &delta.configs,
        &removed.configs,
        config_key,
    );
    apply_list(
        &mut set.networks,
        &delta.networks,
        &removed.networks,
        network_key,
    );
    apply_list(
        &mut set.endpoints,
        &delta.endpoints,
        &removed.endpoints,
        endpoint_key,
    );
    apply_list(
        &mut set.services,
        &delta.services,
        &removed.services,
        service_key,
    );
    apply_list(
        &mut set.published,
        &delta.published,
        &removed.published,
        published_key,
    );
    apply_list(&mut set.nodes, &delta.nodes, &removed.nodes, node_key);
    for k in &removed.lb_policies {
        set.lb_policies.remove(k);
    }
    for (service, policy) in &delta.lb_policies {
        set.lb_policies.insert(service.clone(), *policy);
    }
    if delta.trust_changed {
        set.trust_pem.clone_from(&delta.trust_pem);
        set.root_issuer.clone_from(&delta.root_issuer);
    }
    set.role = delta.role;
    set.ingress_addr.clone_from(&delta.ingress_addr);
    set.ingress_allow.clone_from(&delta.ingress_allow);
    set.log_requests.clone_from(&delta.log_requests);
    set.version = delta.version;
}

/// The manager's side of one assignment stream: what the agent holds, and
/// the next message's number.
#[derive(Debug, Default)]
pub struct Sender {
    /// The agent applies deltas (it said so opening the stream).
    deltas: bool,
    last: Option<AssignmentSet>,
    /// The node list the agent holds, when it is given apart from the set
    /// ([`Sender::next_shared`]; `last` then holds no nodes).
    nodes: Option<Arc<NodeList>>,
    sequence: u64,
}

impl Sender {
    pub fn new(deltas: bool) -> Self {
        Self {
            deltas,
            ..Default::default()
        }
    }

    /// The message that brings the agent to `set`, None if it holds that
    /// already. `set.version` does not count as news on its own.
    pub fn next(&mut self, mut set: AssignmentSet) -> Option<AssignmentSet> {
        let expressible = normalize(&mut set);
        if let Some(last) = &self.last {
            let version = std::mem::replace(&mut set.version, last.version);
            if set == *last {
                return None;
            }
            set.version = version;
        }
        self.sequence += 1;
        let message = match &self.last {
            Some(last) if self.deltas && expressible => diff(last, &set, self.sequence),
            _ => None,
        };
        let message = message.unwrap_or_else(|| AssignmentSet {
            sequence: self.sequence,
            ..set.clone()
        });
        self.last = Some(set);
        Some(message)
    }

    /// As [`Sender::next`], for a `set` without nodes and the node list
    /// every stream shares: a list this agent holds already costs nothing
    /// to compare, a changed one is sent as the changes since the
    /// generation it holds. Every list given to one sender must come from
    /// one line of [`NodeList::update`]s.
    pub fn next_shared(
        &mut self,
        mut set: AssignmentSet,
        nodes: &Arc<NodeList>,
    ) -> Option<AssignmentSet> {
        set.nodes.clear();
        let expressible = normalize(&mut set);
        let held = self.nodes.replace(nodes.clone());
        let nodes_held = held.as_ref().is_some_and(|h| Arc::ptr_eq(h, nodes));
        if let Some(last) = &self.last {
            let version = std::mem::replace(&mut set.version, last.version);
            if set == *last && nodes_held {
                return None;
            }
            set.version = version;
        }
        self.sequence += 1;
        let message = match (&self.last, &held) {
            (Some(last), Some(held)) if self.deltas && expressible => {
                diff(last, &set, self.sequence).map(|mut delta| {
                    if !nodes_held {
                        add_node_delta(&mut delta, nodes, held);
                    }
                    delta
                })
            }
            _ => None,
        };
        let message = message.unwrap_or_else(|| AssignmentSet {
            sequence: self.sequence,
            nodes: nodes.nodes.clone(),
            ..set.clone()
        });
        self.last = Some(set);
        Some(message)
    }
}

impl Sender {
    /// As [`Sender::next_shared`] when the caller knows how the tasks
    /// changed since the set this sender gave last: `set` holds every list
    /// but the tasks (its `tasks` is ignored), `changed` the tasks that are
    /// new or changed (whole, in any order), `removed` the ids of those
    /// gone. The tasks are then neither compared nor copied whole: a push
    /// costs what changed, not what the node runs (a hundred tasks, one of
    /// them new). Before a first set, `changed` must be every task.
    pub fn next_with_task_changes(
        &mut self,
        mut set: AssignmentSet,
        mut changed: Vec<Task>,
        removed: Vec<String>,
        nodes: &Arc<NodeList>,
    ) -> Option<AssignmentSet> {
        let Some(mut last) = self.last.take() else {
            set.tasks = changed;
            return self.next_shared(set, nodes);
        };
        set.nodes.clear();
        set.tasks.clear();
        let others_expressible = normalize(&mut set);
        sort_list(&mut changed, task_key);
        let mut tasks = std::mem::take(&mut last.tasks);
        apply_list(&mut tasks, &changed, &removed, task_key);
        let held = self.nodes.replace(nodes.clone());
        let nodes_held = held.as_ref().is_some_and(|h| Arc::ptr_eq(h, nodes));
        let version = std::mem::replace(&mut set.version, last.version);
        if changed.is_empty() && removed.is_empty() && set == last && nodes_held {
            last.tasks = tasks;
            self.last = Some(last);
            return None;
        }
        set.version = version;
        self.sequence += 1;
        let message = match &held {
            Some(held) if self.deltas && others_expressible => {
                // Every list but the tasks compared as `next_shared` does
                // (both sets without tasks here); the tasks as given.
                diff(&last, &set, self.sequence).map(|mut delta| {
                    delta.tasks = changed;
                    delta.removed.get_or_insert_with(Default::default).tasks = removed;
                    if !nodes_held {
                        add_node_delta(&mut delta, nodes, held);
                    }
                    delta
                })
            }
            _ => None,
        };
        set.tasks = tasks;
        let message = message.unwrap_or_else(|| AssignmentSet {
            sequence: self.sequence,
            nodes: nodes.nodes.clone(),
            ..set.clone()
        });
        self.last = Some(set);
        Some(message)
    }

    /// As [`Sender::next_shared`] for the set given last, unchanged (the
    /// caller knows nothing it holds moved): only a changed node list is
    /// news, and the set is neither rebuilt nor compared. None before a
    /// first set.
    pub fn next_nodes(&mut self, nodes: &Arc<NodeList>, version: u64) -> Option<AssignmentSet> {
        if self
            .nodes
            .as_ref()
            .is_some_and(|held| Arc::ptr_eq(held, nodes))
        {
            return None;
        }
        let mut set = self.last.clone()?;
        set.version = version;
        self.next_shared(set, nodes)
    }
}

/// Puts into `delta` how the node list `nodes` differs from the one the
/// agent holds (`held`).
fn add_node_delta(delta: &mut AssignmentSet, nodes: &NodeList, held: &NodeList) {
    let (changed, removed) = nodes.delta_from(held);
    delta.nodes = changed;
    delta.removed.get_or_insert_with(Default::default).nodes = removed;
}

/// A message that does not follow the one before: the agent must open the
/// stream again to get a complete set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("assignment message {got} after {had}: one is missing; a complete set is needed")]
pub struct Gap {
    pub had: u64,
    pub got: u64,
}

/// The agent's side of one assignment stream: the complete set the
/// messages so far add up to.
#[derive(Debug, Default)]
pub struct Receiver {
    set: Option<AssignmentSet>,
    sequence: u64,
}

impl Receiver {
    /// Takes the stream's next message; the complete set it leads to.
    pub fn take(&mut self, message: AssignmentSet) -> Result<&AssignmentSet, Gap> {
        // A manager that numbers nothing (sequence 0) sends complete sets.
        let follows = message.sequence == 0 || message.sequence == self.sequence + 1;
        if message.delta && (self.set.is_none() || !follows) {
            return Err(Gap {
                had: self.sequence,
                got: message.sequence,
            });
        }
        self.sequence = message.sequence;
        if message.delta {
            let set = self.set.get_or_insert_with(Default::default);
            apply(set, &message);
        } else {
            let mut set = message;
            set.delta = false;
            set.sequence = 0;
            self.set = Some(set);
        }
        Ok(self.set.get_or_insert_with(Default::default))
    }

    /// The complete set as of the last message taken.
    pub fn current(&self) -> Option<&AssignmentSet> {
        self.set.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{LbPolicy, LogRequest, Meta, TaskState};

    /// A small deterministic generator (xorshift): the same cases each run.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Keyed items: (key, content).
    fn keyed(k: &(String, u8)) -> String {
        k.0.clone()
    }

    #[test]
    fn the_walk_down_sorted_lists_finds_what_a_map_finds() {
        let mut rng = Rng(0x5eed_1234);
        for _ in 0..2000 {
            let list = |rng: &mut Rng| -> Vec<(String, u8)> {
                let mut l = Vec::new();
                for k in 0..20 {
                    if rng.below(2) == 0 {
                        l.push((format!("k{k:02}"), rng.below(3) as u8));
                    }
                }
                l
            };
            let (old, new) = (list(&mut rng), list(&mut rng));
            assert_eq!(
                diff_sorted(&old, &new, keyed),
                Some(diff_unsorted(&old, &new, keyed)),
                "{old:?} -> {new:?}"
            );
        }
        // Out of order, the walk gives up and the map answers.
        let old = vec![("b".to_string(), 0), ("a".to_string(), 0)];
        let new = vec![("a".to_string(), 1)];
        assert_eq!(diff_sorted(&old, &new, keyed), None);
        assert_eq!(
            diff_list(&old, &new, keyed),
            (vec![("a".to_string(), 1)], vec!["b".to_string()])
        );
    }

    fn meta(id: String) -> Option<Meta> {
        Some(Meta {
            id,
            ..Default::default()
        })
    }

    /// A random set drawn from a small universe, so that consecutive sets
    /// share, change and lose items.
    fn random_set(rng: &mut Rng) -> AssignmentSet {
        let mut set = AssignmentSet::default();
        for i in 0..12 {
            if rng.below(2) == 0 {
                set.tasks.push(Task {
                    meta: meta(format!("t{i}")),
                    desired_state: [TaskState::Running, TaskState::Shutdown][rng.below(2) as usize]
                        as i32,
                    ..Default::default()
                });
            }
            if rng.below(3) == 0 {
                set.secrets.push(Secret {
                    meta: meta(format!("s{i}")),
                    spec: None,
                });
            }
            if i < 4 && rng.below(2) == 0 {
                set.networks.push(Network {
                    meta: meta(format!("n{i}")),
                    ..Default::default()
                });
            }
            if rng.below(2) == 0 {
                set.endpoints.push(TaskEndpoint {
                    network_id: format!("n{}", i % 3),
                    task_id: format!("t{i}"),
                    running: rng.below(2) == 0,
                    ..Default::default()
                });
            }
            if rng.below(3) == 0 {
                set.services.push(ServiceRecord {
                    service_id: format!("svc{i}"),
                    network_id: "n0".into(),
                    names: vec![format!("web{}", rng.below(3))],
                    vip: String::new(),
                });
            }
            if rng.below(4) == 0 {
                set.published.push(PublishedPort {
                    service_id: format!("svc{i}"),
                    protocol: "tcp".into(),
                    published_port: 8000 + i,
                    target_port: 80,
                    allow: (0..rng.below(2)).map(|_| "10.0.0.0/8".into()).collect(),
                    ..Default::default()
                });
            }
            if rng.below(2) == 0 {
                set.nodes.push(ClusterNode {
                    addr: format!("192.0.2.{i}"),
                    manager_addr: String::new(),
                });
            }
            if rng.below(4) == 0 {
                set.lb_policies.insert(
                    format!("svc{i}"),
                    LbPolicy {
                        maglev: rng.below(2) == 0,
                        affinity_timeout_s: 0,
                    },
                );
            }
        }
        // Lists come in any order: the sender sorts them.
        set.tasks.reverse();
        set.trust_pem = format!("ROOTS{}", rng.below(2));
        set.ingress_addr = format!("10.255.0.{}", rng.below(3));
        if rng.below(3) == 0 {
            set.log_requests.push(LogRequest {
                id: "r1".into(),
                ..Default::default()
            });
        }
        set
    }

    #[test]
    fn a_shared_node_list_adds_up_to_the_same_sets() {
        let mut rng = Rng(0xfeed);
        let mut sender = Sender::new(true);
        let mut receiver = Receiver::default();
        let mut nodes = Arc::new(NodeList::default());
        let mut skipped = 0;
        let mut previous = AssignmentSet::default();
        for version in 1..500 {
            // Now and then nothing changes (the set pushed again at a new
            // version, the list as it was).
            let repeat = version > 1 && rng.below(4) == 0;
            let mut set = if repeat {
                previous.clone()
            } else {
                random_set(&mut rng)
            };
            set.version = version;
            previous = set.clone();
            // The list moves on some pushes and now and then by several
            // generations between two pushes to this stream.
            for _ in 0..if repeat { 0 } else { rng.below(3) } {
                let more = random_set(&mut rng).nodes;
                nodes = NodeList::update(&nodes, more);
            }
            set.nodes = nodes.nodes.clone();
            let Some(message) = sender.next_shared(set.clone(), &nodes) else {
                assert!(repeat, "version {version}: a change pushed nothing");
                skipped += 1;
                continue;
            };
            assert!(version == 1 || message.delta, "deltas after the first");
            let got = receiver.take(message).expect("in order").clone();
            let mut want = set;
            assert!(normalize(&mut want));
            assert_eq!(got, want, "version {version}");
        }
        assert!(skipped > 0, "an unchanged set and list push nothing");
    }

    #[test]
    fn an_unchanged_set_sends_only_a_moved_node_list() {
        let mut rng = Rng(0xbeef);
        let mut sender = Sender::new(true);
        let mut receiver = Receiver::default();
        let mut nodes = Arc::new(NodeList::default());
        assert!(
            sender.next_nodes(&nodes, 1).is_none(),
            "nothing before a first set"
        );
        let set = random_set(&mut rng);
        let first = sender
            .next_shared(set.clone(), &nodes)
            .expect("a first set");
        receiver.take(first).expect("in order");
        assert!(
            sender.next_nodes(&nodes, 2).is_none(),
            "the same list: nothing to send"
        );
        nodes = NodeList::update(&nodes, random_set(&mut rng).nodes);
        let message = sender.next_nodes(&nodes, 3).expect("the list moved");
        assert!(message.delta);
        assert!(message.tasks.is_empty(), "the set is not sent again");
        let got = receiver.take(message).expect("in order").clone();
        let mut want = set;
        want.nodes = nodes.nodes.clone();
        want.version = 3;
        assert!(normalize(&mut want));
        assert_eq!(got, want);
    }

    #[test]
    fn deltas_applied_in_order_equal_the_complete_set() {
        let mut rng = Rng(0x5eed);
        let mut sender = Sender::new(true);
        let mut receiver = Receiver::default();
        let mut deltas = 0;
        for version in 1..500 {
            let mut set = random_set(&mut rng);
            set.version = version;
            let Some(message) = sender.next(set.clone()) else {
                continue;
            };
            deltas += usize::from(message.delta);
            let got = receiver.take(message).expect("in order").clone();
            let mut want = set;
            assert!(normalize(&mut want));
            assert_eq!(got, want, "after version {version}");
        }
        assert!(deltas > 400, "later messages are deltas ({deltas})");
    }

    #[test]
    fn the_first_message_is_complete_and_an_unchanged_set_sends_nothing() {
        let mut rng = Rng(7);
        let set = random_set(&mut rng);
        let mut sender = Sender::new(true);
        let first = sender.next(set.clone()).expect("a first message");
        assert!(!first.delta);
        assert_eq!(first.sequence, 1);
        let again = AssignmentSet {
            version: 99,
            ..set.clone()
        };
        assert_eq!(sender.next(again), None, "a new version alone is no news");
        // A new stream (a reconnecting agent) starts complete again.
        let mut reconnected = Sender::new(true);
        assert!(!reconnected.next(set).expect("a message").delta);
    }

    #[test]
    fn a_delta_carries_only_what_changed() {
        let task = |id: &str| Task {
            meta: meta(id.into()),
            desired_state: TaskState::Running as i32,
            ..Default::default()
        };
        let mut set = AssignmentSet {
            tasks: (0..100).map(|i| task(&format!("t{i:03}"))).collect(),
            trust_pem: "ROOTS".into(),
            ..Default::default()
        };
        let mut sender = Sender::new(true);
        let full = sender.next(set.clone()).expect("first");
        set.tasks.remove(7);
        set.tasks.push(task("t100"));
        let delta = sender.next(set).expect("a change");
        assert!(delta.delta);
        assert_eq!(delta.tasks.len(), 1);
        assert_eq!(
            delta.removed.as_ref().map(|r| r.tasks.clone()),
            Some(vec!["t007".to_string()])
        );
        assert!(
            delta.trust_pem.is_empty() && !delta.trust_changed,
            "unchanged roots are not resent"
        );
        use prost::Message;
        assert!(delta.encoded_len() * 20 < full.encoded_len());
    }

    #[test]
    fn a_set_that_repeats_a_key_goes_complete() {
        let mut rng = Rng(5);
        let mut sender = Sender::new(true);
        sender.next(random_set(&mut rng)).expect("first");
        let mut set = random_set(&mut rng);
        let port = PublishedPort {
            service_id: "svc".into(),
            published_port: 80,
            ..Default::default()
        };
        set.published = vec![port.clone(), port];
        let message = sender.next(set.clone()).expect("news");
        assert!(!message.delta, "a delta could not tell the two apart");
        assert_eq!(message.published.len(), 2);
    }

    #[test]
    fn an_agent_that_asked_for_none_gets_complete_sets() {
        let mut rng = Rng(11);
        let mut sender = Sender::new(false);
        for _ in 0..20 {
            if let Some(m) = sender.next(random_set(&mut rng)) {
                assert!(!m.delta);
            }
        }
    }

    #[test]
    fn a_missing_message_is_a_gap_and_a_complete_set_heals_it() {
        let mut rng = Rng(3);
        let mut sender = Sender::new(true);
        let mut receiver = Receiver::default();
        let first = sender.next(random_set(&mut rng)).expect("first");
        receiver.take(first).expect("complete");
        let mut lost = None;
        while lost.is_none() {
            lost = sender.next(random_set(&mut rng));
        }
        let mut next = None;
        while next.is_none() {
            next = sender.next(random_set(&mut rng));
        }
        let next = next.expect("a delta");
        assert_eq!(receiver.take(next).unwrap_err(), Gap { had: 1, got: 3 });
        // A delta with nothing before it is a gap too.
        let mut fresh = Receiver::default();
        let delta = AssignmentSet {
            delta: true,
            sequence: 1,
            ..Default::default()
        };
        assert!(fresh.take(delta).is_err());
        let set = random_set(&mut rng);
        let complete = Sender::new(true).next(set.clone()).expect("complete");
        let mut want = set;
        normalize(&mut want);
        assert_eq!(*fresh.take(complete).expect("complete"), want);
    }
}
