//! Task ids by service and by node, kept by [`super::State`]'s `put` and
//! `delete`. Sets of ids, in id order, as a scan of the task map would
//! find them: passes that walk one service's tasks decide in the same
//! order as before.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
};

use shoal_api::pb::{GenericResource, Resources, Task, TaskState};

/// A task not yet on a node: New (the allocator's) or Pending (the
/// scheduler's).
pub fn is_waiting(task: &Task) -> bool {
    task.status.as_ref().map(|s| s.state()).unwrap_or_default() < TaskState::Assigned
}

/// A task its node runs or is to run: placed (Assigned or later) and not
/// ended. These make a node's assignment set.
pub fn is_live(task: &Task) -> bool {
    let observed = task.status.as_ref().map(|s| s.state()).unwrap_or_default();
    !task.node_id.is_empty() && observed >= TaskState::Assigned && !observed.is_terminal()
}

/// A task that holds a place on its node (its reservations, its share of
/// the node's task limit and of spread): placed, not ended, and still
/// meant to run. The scheduler's test.
pub fn occupies_node(task: &Task) -> bool {
    let observed = task.status.as_ref().map(|s| s.state()).unwrap_or_default();
    !task.node_id.is_empty()
        && task.desired_state() <= TaskState::Running
        && observed >= TaskState::Assigned
        && observed <= TaskState::Running
}

/// The CPU and memory a task reserves on its node.
pub fn reservations(task: &Task) -> Resources {
    task.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.reservations)
        .unwrap_or_default()
}

/// The generic resources (GPUs, …) a task reserves on its node.
pub fn generic_reservations(task: &Task) -> &[GenericResource] {
    task.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .map(|r| r.generic_reservations.as_slice())
        .unwrap_or_default()
}

/// What the tasks that [`occupies_node`] take from their node, kept as they
/// are written: a scheduler pass reads a node's load here instead of
/// walking every task of the cluster (100,000 of them, at every pass of a
/// burst of creations, under the store's write lock).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OccupiedOnNode {
    pub tasks: u32,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    /// Of those, the ones that reserve or were given generic resources: a
    /// pool's claims depend on which instances each took, so the scheduler
    /// walks such a node's tasks for them.
    pub with_generic: u32,
}

impl OccupiedOnNode {
    /// Adds `task`'s share (or takes it out).
    pub fn account(&mut self, task: &Task, add: bool) {
        let r = reservations(task);
        let generic = u32::from(
            !task.assigned_generic_resources.is_empty() || !generic_reservations(task).is_empty(),
        );
        if add {
            self.tasks += 1;
            self.nano_cpus += r.nano_cpus;
            self.memory_bytes += r.memory_bytes;
            self.with_generic += generic;
        } else {
            self.tasks = self.tasks.saturating_sub(1);
            self.nano_cpus -= r.nano_cpus;
            self.memory_bytes -= r.memory_bytes;
            self.with_generic = self.with_generic.saturating_sub(generic);
        }
    }
}

/// One live task's share of its node's fingerprint: its id and
/// assignment version (see [`TaskIndex::assignment_version`]).
fn task_fingerprint(id: &str, assignment_version: u64) -> u64 {
    let mut hasher = DefaultHasher::new();
    (Some(id), assignment_version).hash(&mut hasher);
    hasher.finish()
}

/// What a node's live tasks add up to, kept as they are written, so that
/// the node's fingerprint costs what it names, not a walk of its tasks
/// (each a lookup among every task of the cluster).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveOnNode {
    /// The wrapping sum of the tasks' [`task_fingerprint`]s.
    pub sum: u64,
    pub count: usize,
    /// Secret, config and network ids the tasks name, each with how many
    /// tasks name it.
    pub secrets: BTreeMap<String, u32>,
    pub configs: BTreeMap<String, u32>,
    pub networks: BTreeMap<String, u32>,
    /// The tasks, each at its assignment version: what a node's stream
    /// compares with what it told the node, with no lookup among every
    /// task of the cluster.
    pub tasks: BTreeMap<String, u64>,
    /// How many of them may have their stop held ([`may_hold_stop`]).
    pub holding: usize,
}

/// Whether `task`'s stop may be held back from its node until every node
/// stopped sending it connections (see the dispatcher's `drain`): it runs,
/// is to stop, and is on a network.
pub fn may_hold_stop(task: &Task) -> bool {
    let observed = task.status.as_ref().map(|s| s.state()).unwrap_or_default();
    task.desired_state() > TaskState::Running
        && observed == TaskState::Running
        && !task.networks.is_empty()
}

fn count_in(map: &mut BTreeMap<String, u32>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else {
        map.insert(key.to_owned(), 1);
    }
}

fn count_out(map: &mut BTreeMap<String, u32>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl LiveOnNode {
    /// Adds live task `id`'s share, at `assignment_version`.
    pub fn add(&mut self, id: &str, task: &Task, assignment_version: u64) {
        self.account(id, task, assignment_version, true);
    }

    /// Adds (`add`) or takes out task `id`'s share.
    fn account(&mut self, id: &str, task: &Task, assignment_version: u64, add: bool) {
        let share = task_fingerprint(id, assignment_version);
        let change: fn(&mut BTreeMap<String, u32>, &str) = if add { count_in } else { count_out };
        let holding = usize::from(may_hold_stop(task));
        if add {
            self.sum = self.sum.wrapping_add(share);
            self.count += 1;
            self.tasks.insert(id.to_owned(), assignment_version);
            self.holding += holding;
        } else {
            self.sum = self.sum.wrapping_sub(share);
            self.count = self.count.saturating_sub(1);
            self.tasks.remove(id);
            self.holding = self.holding.saturating_sub(holding);
        }
        if let Some(c) = task.spec.as_ref().and_then(|s| s.container.as_ref()) {
            for r in &c.secrets {
                change(&mut self.secrets, &r.secret_id);
            }
            for r in &c.configs {
                change(&mut self.configs, &r.config_id);
            }
        }
        for n in &task.networks {
            change(&mut self.networks, &n.network_id);
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct TaskIndex {
    by_service: HashMap<String, BTreeSet<String>>,
    by_node: HashMap<String, BTreeSet<String>>,
    /// Tasks [`is_waiting`].
    waiting: BTreeSet<String>,
    /// Tasks attached to a network (the only ones holding addresses).
    on_networks: BTreeSet<String>,
    /// How many tasks the index holds.
    len: usize,
    /// Per task, the store version at which it last changed in anything
    /// its node is told ([`same_for_its_node`]): a status report moves the
    /// task's version but not this one, so the node is not sent back what
    /// it just said.
    assignment_version: HashMap<String, u64>,
    /// Per node, its live tasks' sum (see [`LiveOnNode`]).
    live_on_node: HashMap<String, LiveOnNode>,
    /// Per node, what the tasks holding a place on it take.
    occupied_on_node: HashMap<String, OccupiedOnNode>,
}

/// Whether `a` and `b` differ at most in what the node reports (status)
/// and the store's bookkeeping (meta). The pattern names every field: a
/// field added to `Task` fails to compile here until it is decided on.
pub fn same_for_its_node(a: &Task, b: &Task) -> bool {
    let Task {
        meta: _,
        status: _,
        service_id,
        slot,
        node_id,
        spec,
        spec_version,
        desired_state,
        service_name,
        restarts,
        start_after,
        networks,
        service_labels,
        job_iteration,
        assigned_generic_resources,
        rebalance,
    } = a;
    *service_id == b.service_id
        && *slot == b.slot
        && *node_id == b.node_id
        && *spec_version == b.spec_version
        && *desired_state == b.desired_state
        && *start_after == b.start_after
        && *job_iteration == b.job_iteration
        && *rebalance == b.rebalance
        && *service_name == b.service_name
        && *restarts == b.restarts
        && *networks == b.networks
        && *assigned_generic_resources == b.assigned_generic_resources
        && *service_labels == b.service_labels
        && *spec == b.spec
}

fn version(task: &Task) -> u64 {
    task.meta.as_ref().map(|m| m.version).unwrap_or(0)
}

fn add(map: &mut HashMap<String, BTreeSet<String>>, key: &str, id: &str) -> bool {
    if let Some(set) = map.get_mut(key) {
        return set.insert(id.to_owned());
    }
    map.insert(key.to_owned(), BTreeSet::from([id.to_owned()]));
    true
}

/// Removes `id` from `key`'s set; whether it was there.
fn take(map: &mut HashMap<String, BTreeSet<String>>, key: &str, id: &str) -> bool {
    let Some(set) = map.get_mut(key) else {
        return false;
    };
    let removed = set.remove(id);
    if set.is_empty() {
        map.remove(key);
    }
    removed
}

impl TaskIndex {
    /// Indexes task `id` under its service and node (again, for a task
    /// already known: see [`TaskIndex::forget_old`]), `old` being what the
    /// store held under that id.
    pub fn insert(&mut self, id: &str, task: &Task, old: Option<&Task>) {
        // What the index holds of `old` (nothing when it was put around
        // the index, as some tests do).
        let held = self.assignment_version.get(id).copied();
        if let (Some(old), Some(held)) = (old, held) {
            self.account_live(id, old, held, false);
            self.account_occupied(old, false);
        }
        let kept = old.filter(|old| same_for_its_node(old, task)).and(held);
        let assignment_version = kept.unwrap_or_else(|| version(task));
        self.assignment_version
            .insert(id.to_owned(), assignment_version);
        self.account_live(id, task, assignment_version, true);
        self.account_occupied(task, true);
        if add(&mut self.by_service, &task.service_id, id) {
            self.len += 1;
        }
        if !task.node_id.is_empty() {
            add(&mut self.by_node, &task.node_id, id);
        }
        if is_waiting(task) {
            self.waiting.insert(id.to_owned());
        } else {
            self.waiting.remove(id);
        }
        if task.networks.is_empty() {
            self.on_networks.remove(id);
        } else {
            self.on_networks.insert(id.to_owned());
        }
    }

    /// After task `id` was replaced by `new`: drops the keys only `old`
    /// had (a task moved to a node, or a test's task changing service).
    pub fn forget_old(&mut self, id: &str, old: &Task, new: &Task) {
        if old.service_id != new.service_id && take(&mut self.by_service, &old.service_id, id) {
            self.len -= 1;
        }
        if old.node_id != new.node_id && !old.node_id.is_empty() {
            take(&mut self.by_node, &old.node_id, id);
        }
    }

    /// Adds or takes out `task`'s share of its node's [`LiveOnNode`], if
    /// it is live.
    fn account_live(&mut self, id: &str, task: &Task, assignment_version: u64, add: bool) {
        if !is_live(task) {
            return;
        }
        if add {
            self.live_on_node
                .entry(task.node_id.clone())
                .or_default()
                .account(id, task, assignment_version, true);
        } else if let Some(live) = self.live_on_node.get_mut(&task.node_id) {
            live.account(id, task, assignment_version, false);
            if live.count == 0 {
                self.live_on_node.remove(&task.node_id);
            }
        }
    }

    /// Adds or takes out `task`'s share of its node's [`OccupiedOnNode`],
    /// if it holds a place there.
    fn account_occupied(&mut self, task: &Task, add: bool) {
        if !occupies_node(task) {
            return;
        }
        if add {
            self.occupied_on_node
                .entry(task.node_id.clone())
                .or_default()
                .account(task, true);
        } else if let Some(occupied) = self.occupied_on_node.get_mut(&task.node_id) {
            occupied.account(task, false);
            if occupied.tasks == 0 {
                self.occupied_on_node.remove(&task.node_id);
            }
        }
    }

    pub fn remove(&mut self, id: &str, task: &Task) {
        if let Some(held) = self.assignment_version.get(id).copied() {
            self.account_live(id, task, held, false);
            self.account_occupied(task, false);
        }
        if self
            .by_service
            .get(&task.service_id)
            .is_some_and(|s| s.contains(id))
        {
            self.len -= 1;
        }
        take(&mut self.by_service, &task.service_id, id);
        take(&mut self.by_node, &task.node_id, id);
        self.assignment_version.remove(id);
        self.waiting.remove(id);
        self.on_networks.remove(id);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn of_service<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.by_service.get(service_id).into_iter().flatten()
    }

    pub fn waiting(&self) -> impl Iterator<Item = &String> + '_ {
        self.waiting.iter()
    }

    pub fn on_networks(&self) -> impl Iterator<Item = &String> + '_ {
        self.on_networks.iter()
    }

    /// See [`TaskIndex::assignment_version`]; None for a task the index
    /// does not hold.
    pub fn assignment_version(&self, id: &str) -> Option<u64> {
        self.assignment_version.get(id).copied()
    }

    /// Node `node_id`'s live tasks' sum; None when it has none.
    pub fn live_on_node(&self, node_id: &str) -> Option<&LiveOnNode> {
        self.live_on_node.get(node_id)
    }

    /// What the tasks holding a place on node `node_id` take; None when
    /// none does.
    pub fn occupied_on_node(&self, node_id: &str) -> Option<&OccupiedOnNode> {
        self.occupied_on_node.get(node_id)
    }

    pub fn on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.by_node.get(node_id).into_iter().flatten()
    }
}
