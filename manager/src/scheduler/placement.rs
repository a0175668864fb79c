//! Placement: which node each pending task goes to. A pure function of the
//! state, so it is tested and benchmarked without a cluster.
//!
//! As Swarm's scheduler: filters first (node ready and active, constraints,
//! resources and generic resources, max replicas per node, host-mode port
//! conflicts), and, beyond
//! Swarm, the node's task limit ([`Limits::tasks_on_node`]), then spread:
//! placement-preference groups with fewer tasks of the service first, then
//! nodes with fewer tasks of the service, then fewer tasks overall.

use std::collections::{BTreeMap, HashMap, HashSet};

use shoal_api::pb::{
    Availability, GenericResource, Node, NodeState, PublishMode, Resources, Task, TaskState,
};

use super::{constraint::Constraint, generic::Pool};
use crate::{limits::Limits, store::State};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Assign(String),
    /// Stays pending; the reason `service ps` shows.
    Unplaceable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub task_id: String,
    pub outcome: Outcome,
    /// The generic resources the task takes on its node (assigned only).
    pub generic: Vec<GenericResource>,
}

/// A task waiting for a node: allocated (PENDING), not yet assigned, and
/// meant to run.
pub fn is_pending(task: &Task) -> bool {
    task.status.as_ref().map(|s| s.state()).unwrap_or_default() == TaskState::Pending
        && task.desired_state() <= TaskState::Running
}

pub use crate::store::task_index::occupies_node;
use crate::store::task_index::{generic_reservations, reservations};

/// Whether new tasks may go to `node` at all.
pub fn accepts_tasks(node: &Node) -> bool {
    node.status
        .as_ref()
        .is_some_and(|s| s.state() == NodeState::Ready)
        && node
            .spec
            .as_ref()
            .map(|s| s.availability())
            .unwrap_or_default()
            == Availability::Active
}

struct Candidate<'a> {
    node: &'a Node,
    id: &'a str,
    free: Resources,
    /// Whether the node reported its resources (a node that did not cannot
    /// take tasks that reserve any).
    known_resources: bool,
    /// Generic resources not taken yet.
    generic: Pool,
    total: u32,
    /// The most tasks the node holds.
    capacity: u64,
    host_ports: HashSet<(String, u32)>,
}

#[derive(Default)]
struct Refusals {
    nodes: BTreeMap<&'static str, u32>,
    /// The smallest and largest task limit of the nodes at theirs.
    task_limits: Option<(u64, u64)>,
}

impl Refusals {
    fn add(&mut self, why: &'static str) {
        *self.nodes.entry(why).or_default() += 1;
    }

    fn at_task_limit(&mut self, limit: u64) {
        self.add(TASK_LIMIT);
        self.task_limits = Some(match self.task_limits {
            Some((low, high)) => (low.min(limit), high.max(limit)),
            None => (limit, limit),
        });
    }

    fn set(&mut self, why: &'static str, count: u32) {
        if count > 0 {
            self.nodes.insert(why, count);
        }
    }

    fn reason(&self) -> String {
        if self.nodes.is_empty() {
            return "no suitable node (no nodes in the cluster)".into();
        }
        let parts: Vec<String> = self
            .nodes
            .iter()
            .map(|(why, n)| {
                let nodes = if *n == 1 { "node" } else { "nodes" };
                if *why == NOT_AVAILABLE {
                    format!("{n} {nodes} {why}")
                } else if *why == TASK_LIMIT {
                    let their = if *n == 1 { "its" } else { "their" };
                    let (low, high) = self.task_limits.unwrap_or_default();
                    let tasks = if high == 1 { "task" } else { "tasks" };
                    let range = if low == high {
                        format!("{high}")
                    } else {
                        format!("{low} to {high}")
                    };
                    format!("{n} {nodes} at {their} task limit of {range} {tasks}")
                } else {
                    format!("{why} on {n} {nodes}")
                }
            })
            .collect();
        format!("no suitable node ({})", parts.join("; "))
    }
}

const NOT_AVAILABLE: &str = "not available for new tasks";
const CONSTRAINTS: &str = "scheduling constraints not satisfied";
const RESOURCES: &str = "insufficient resources";
const MAX_REPLICAS: &str = "max replicas per node limit exceed";
const PORTS: &str = "host-mode port already in use";
const TASK_LIMIT: &str = "task limit";

fn host_ports(
    task: &Task,
    service_ports: &HashMap<&str, Vec<(String, u32)>>,
) -> Vec<(String, u32)> {
    service_ports
        .get(task.service_id.as_str())
        .cloned()
        .unwrap_or_default()
}

/// How a plan learns what the tasks already on each node hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loads {
    /// From the store's per-node sums (`State::occupied_on_node`), walking
    /// only the nodes with generic resources taken and the tasks of
    /// services that publish host-mode ports; a walk when the store's
    /// index is not whole.
    Kept,
    /// From every task of the cluster: what the kept sums must equal.
    Walked,
}

/// Decides a node for every pending task of `state`, placing no more on a
/// node than `limits` and the node itself allow.
pub fn plan(state: &State, limits: &Limits) -> Vec<Decision> {
    plan_with(state, limits, Loads::Kept)
}

/// As [`plan`], with node loads learnt the way `loads` says.
pub fn plan_with(state: &State, limits: &Limits, loads: Loads) -> Vec<Decision> {
    let service_ports = host_port_services(state);
    let (mut candidates, index_of, unavailable) =
        loaded_candidates(state, limits, loads, &service_ports);

    // The pending tasks, from the store's index of waiting ones.
    let mut pending: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for task in state.tasks_waiting().filter(|t| is_pending(t)) {
        pending.entry(&task.service_id).or_default().push(task);
    }
    // Spread counts only for the services placed now, from the store's
    // index of each service's tasks.
    let mut per_service: HashMap<&str, HashMap<usize, u32>> = HashMap::new();
    for service_id in pending.keys() {
        for task in state
            .tasks_of_service(service_id)
            .filter(|t| occupies_node(t))
        {
            if let Some(&i) = index_of.get(task.node_id.as_str()) {
                *per_service
                    .entry(service_id)
                    .or_default()
                    .entry(i)
                    .or_default() += 1;
            }
        }
    }

    let mut decisions = Vec::new();
    for (service_id, mut tasks) in pending {
        tasks.sort_by_key(|t| (t.slot, t.meta.as_ref().map(|m| m.created_at)));
        let placement = tasks[0]
            .spec
            .as_ref()
            .and_then(|s| s.placement.clone())
            .unwrap_or_default();
        let constraints = match Constraint::parse_all(&placement.constraints) {
            Ok(c) => c,
            Err(e) => {
                for t in tasks {
                    decisions.push(Decision {
                        task_id: id_of(t),
                        outcome: Outcome::Unplaceable(e.to_string()),
                        generic: Vec::new(),
                    });
                }
                continue;
            }
        };
        // Tasks of this service per candidate node, by candidate index.
        let mut counts = vec![0u32; candidates.len()];
        for (i, n) in per_service.get(service_id).into_iter().flatten() {
            counts[*i] = *n;
        }
        // Nodes that pass the constraints, with their preference group
        // (interned: the hot loop compares numbers, not label strings).
        let mut groups: HashMap<Vec<String>, usize> = HashMap::new();
        let mut eligible: Vec<(usize, usize)> = Vec::new();
        let mut constraint_refusals = 0u32;
        for (i, c) in candidates.iter().enumerate() {
            if constraints.iter().all(|k| k.matches(c.node)) {
                let values: Vec<String> = placement
                    .spread
                    .iter()
                    .map(|descriptor| label_value(c.node, descriptor))
                    .collect();
                let next = groups.len();
                let group = *groups.entry(values).or_insert(next);
                eligible.push((i, group));
            } else {
                constraint_refusals += 1;
            }
        }
        let mut group_counts = vec![0u32; groups.len()];
        for (i, group) in &eligible {
            group_counts[*group] += counts[*i];
        }
        let ports = tasks
            .first()
            .map(|t| host_ports(t, &service_ports))
            .unwrap_or_default();
        for task in tasks {
            let need = reservations(task);
            let need_generic = generic_reservations(task);
            let mut refusals = Refusals::default();
            let fits = |c: &Candidate, count: u32, refusals: &mut Refusals| -> bool {
                if u64::from(c.total) >= c.capacity {
                    refusals.at_task_limit(c.capacity);
                    return false;
                }
                if (need.nano_cpus > 0 || need.memory_bytes > 0)
                    && (!c.known_resources
                        || c.free.nano_cpus < need.nano_cpus
                        || c.free.memory_bytes < need.memory_bytes)
                {
                    refusals.add(RESOURCES);
                    return false;
                }
                if !need_generic.is_empty() && c.generic.claim(need_generic).is_none() {
                    refusals.add(RESOURCES);
                    return false;
                }
                if placement.max_replicas_per_node > 0
                    && count as u64 >= placement.max_replicas_per_node
                {
                    refusals.add(MAX_REPLICAS);
                    return false;
                }
                if ports.iter().any(|p| c.host_ports.contains(p)) {
                    refusals.add(PORTS);
                    return false;
                }
                true
            };
            let mut best: Option<(usize, usize, (u32, u32, u32))> = None;
            let preset = (!task.node_id.is_empty()).then_some(task.node_id.as_str());
            for &(i, group) in &eligible {
                let c = &candidates[i];
                if preset.is_some_and(|p| p != c.id) {
                    continue;
                }
                let count = counts[i];
                if !fits(c, count, &mut refusals) {
                    continue;
                }
                let key = (group_counts[group], count, c.total);
                if best.is_none_or(|(_, _, b)| key < b) {
                    best = Some((i, group, key));
                }
            }
            let mut generic = Vec::new();
            let outcome = match best {
                Some((i, group, _)) => {
                    let c = &mut candidates[i];
                    generic = c.generic.claim(need_generic).unwrap_or_default();
                    c.generic.take(&generic);
                    c.free.nano_cpus -= need.nano_cpus;
                    c.free.memory_bytes -= need.memory_bytes;
                    c.total += 1;
                    c.host_ports.extend(ports.iter().cloned());
                    counts[i] += 1;
                    group_counts[group] += 1;
                    Outcome::Assign(c.id.to_owned())
                }
                None => {
                    match preset {
                        None => {
                            refusals.set(CONSTRAINTS, constraint_refusals);
                            refusals.set(NOT_AVAILABLE, unavailable);
                        }
                        Some(node) if !index_of.contains_key(node) => {
                            refusals.set(NOT_AVAILABLE, 1)
                        }
                        Some(node) if !eligible.iter().any(|&(i, _)| candidates[i].id == node) => {
                            refusals.set(CONSTRAINTS, 1)
                        }
                        Some(_) => {}
                    }
                    Outcome::Unplaceable(refusals.reason())
                }
            };
            decisions.push(Decision {
                task_id: id_of(task),
                outcome,
                generic,
            });
        }
    }
    decisions
}

/// Host-mode published ports, of the services that publish any (most
/// publish none: the map stays small and usually empty).
fn host_port_services(state: &State) -> HashMap<&str, Vec<(String, u32)>> {
    state
        .services
        .iter()
        .map(|(id, s)| {
            let ports = s
                .spec
                .as_ref()
                .and_then(|s| s.endpoint.as_ref())
                .map(|e| {
                    e.ports
                        .iter()
                        .filter(|p| p.publish_mode() == PublishMode::Host && p.published_port != 0)
                        .map(|p| (p.protocol.clone(), p.published_port))
                        .collect()
                })
                .unwrap_or_default();
            (id.as_str(), ports)
        })
        .filter(|(_, ports): &(&str, Vec<(String, u32)>)| !ports.is_empty())
        .collect()
}

/// The nodes that accept tasks, each with what the tasks already on it
/// hold taken off; by node id, the index of its candidate; how many nodes
/// accept none.
fn loaded_candidates<'a>(
    state: &'a State,
    limits: &Limits,
    loads: Loads,
    service_ports: &HashMap<&str, Vec<(String, u32)>>,
) -> (Vec<Candidate<'a>>, HashMap<&'a str, usize>, u32) {
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    let mut unavailable = 0u32;
    for (id, node) in &state.nodes {
        if !accepts_tasks(node) {
            unavailable += 1;
            continue;
        }
        let resources = node
            .description
            .as_ref()
            .and_then(|d| d.resources)
            .unwrap_or_default();
        index_of.insert(id.as_str(), candidates.len());
        candidates.push(Candidate {
            node,
            id,
            free: resources,
            known_resources: resources.nano_cpus > 0 || resources.memory_bytes > 0,
            generic: Pool::of(node),
            total: 0,
            capacity: limits.tasks_on_node(node),
            host_ports: HashSet::new(),
        });
    }

    if loads == Loads::Kept && state.task_index_is_whole() {
        take_kept(state, &mut candidates, &index_of, service_ports);
    } else {
        take_walked(state, &mut candidates, &index_of, service_ports);
    }
    (candidates, index_of, unavailable)
}

/// Each candidate node's load as [`plan_with`] sees it: id, free CPU and
/// memory, tasks, generic resources left, host ports taken (sorted).
#[cfg(test)]
pub fn node_loads(state: &State, limits: &Limits, loads: Loads) -> Vec<String> {
    let service_ports = host_port_services(state);
    let (candidates, _, _) = loaded_candidates(state, limits, loads, &service_ports);
    candidates
        .iter()
        .map(|c| {
            let mut ports: Vec<_> = c.host_ports.iter().collect();
            ports.sort();
            format!(
                "{} cpu {} mem {} tasks {} generic {:?} ports {ports:?}",
                c.id, c.free.nano_cpus, c.free.memory_bytes, c.total, c.generic
            )
        })
        .collect()
}

/// Takes from each candidate what an occupying task holds: its
/// reservations, a place in its task limit, the generic resources it was
/// given (or, placed before it was told, those it reserves) and the
/// host-mode ports its service publishes.
fn take_task(c: &mut Candidate, task: &Task, service_ports: &HashMap<&str, Vec<(String, u32)>>) {
    let r = reservations(task);
    c.free.nano_cpus -= r.nano_cpus;
    c.free.memory_bytes -= r.memory_bytes;
    take_generic(c, task);
    c.total += 1;
    if !service_ports.is_empty() {
        c.host_ports.extend(host_ports(task, service_ports));
    }
}

fn take_generic(c: &mut Candidate, task: &Task) {
    let held = if task.assigned_generic_resources.is_empty() {
        c.generic
            .claim(generic_reservations(task))
            .unwrap_or_default()
    } else {
        task.assigned_generic_resources.clone()
    };
    c.generic.take(&held);
}

/// Node loads from every task of the cluster.
fn take_walked(
    state: &State,
    candidates: &mut [Candidate],
    index_of: &HashMap<&str, usize>,
    service_ports: &HashMap<&str, Vec<(String, u32)>>,
) {
    for task in state.tasks.values() {
        if occupies_node(task)
            && let Some(&i) = index_of.get(task.node_id.as_str())
        {
            take_task(&mut candidates[i], task, service_ports);
        }
    }
}

/// Node loads from the store's sums: the same as [`take_walked`] (a
/// node's generic claims are made in task id order either way), at the
/// cost of the nodes rather than of every task.
fn take_kept(
    state: &State,
    candidates: &mut [Candidate],
    index_of: &HashMap<&str, usize>,
    service_ports: &HashMap<&str, Vec<(String, u32)>>,
) {
    for c in candidates.iter_mut() {
        let Some(Some(occupied)) = state.occupied_on_node(c.id) else {
            continue;
        };
        c.free.nano_cpus -= occupied.nano_cpus;
        c.free.memory_bytes -= occupied.memory_bytes;
        c.total += occupied.tasks;
        if occupied.with_generic > 0 {
            for task in state.tasks_on_node(c.id).filter(|t| occupies_node(t)) {
                take_generic(c, task);
            }
        }
    }
    for service_id in service_ports.keys() {
        for task in state
            .tasks_of_service(service_id)
            .filter(|t| occupies_node(t))
        {
            if let Some(&i) = index_of.get(task.node_id.as_str()) {
                candidates[i]
                    .host_ports
                    .extend(host_ports(task, service_ports));
            }
        }
    }
}

fn id_of(task: &Task) -> String {
    task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}

/// The value of a preference descriptor (`node.labels.zone`) on a node; ""
/// when the node lacks it, which makes its own group, as in Swarm.
fn label_value(node: &Node, descriptor: &str) -> String {
    let labels = node.spec.as_ref().map(|s| &s.labels);
    descriptor
        .strip_prefix("node.labels.")
        .and_then(|name| labels.and_then(|l| l.get(name)).cloned())
        .unwrap_or_default()
}
