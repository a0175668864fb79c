//! What the orchestrators change, as one pure function of the state and the
//! clock: replicated slots, global nodes, restart policies, rescheduling off
//! down or drained nodes, removed services, and task history.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shoal_api::pb::{
    Availability, Kind, Meta, Node, NodeState, RestartCondition, Service, ServiceMode, Task,
    TaskState, TaskStatus,
};

use crate::{
    scheduler::constraint::Constraint,
    store::{Batch, State},
};

/// Swarm's defaults.
pub const DEFAULT_RESTART_DELAY_MS: i64 = 5_000;
pub const DEFAULT_HISTORY_LIMIT: u64 = 5;

pub struct Plan {
    pub batch: Batch,
    /// When a delayed restart comes due, if one is waiting.
    pub wake_at: Option<i64>,
}

pub(super) fn state_of(task: &Task) -> TaskState {
    task.status.as_ref().map(|s| s.state()).unwrap_or_default()
}

/// A task that holds its slot: meant to run (or about to, after a delay).
pub fn is_live(task: &Task) -> bool {
    task.desired_state() <= TaskState::Running
}

pub(super) fn id(meta: &Option<Meta>) -> &str {
    meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// Moves a delayed restart on once its delay is over, or notes when to
/// look again.
pub(super) fn start_if_due(task: &Task, now: i64, batch: &mut Batch, wake_at: &mut Option<i64>) {
    if task.desired_state() != TaskState::Ready || task.start_after <= 0 {
        return;
    }
    if task.start_after <= now {
        let mut t = task.clone();
        t.desired_state = TaskState::Running as i32;
        batch.put_task(t);
    } else {
        *wake_at = Some(wake_at.map_or(task.start_after, |w| w.min(task.start_after)));
    }
}

/// Why a node can no longer keep a task, if it cannot.
pub(super) fn node_problem(node: Option<&Node>) -> Option<&'static str> {
    let Some(node) = node else {
        return Some("node was removed");
    };
    if node
        .status
        .as_ref()
        .is_some_and(|s| s.state() == NodeState::Down)
    {
        return Some("node is down");
    }
    if node
        .spec
        .as_ref()
        .is_some_and(|s| s.availability() == Availability::Drain)
    {
        return Some("node is drained");
    }
    None
}

pub fn new_task(service: &Service, slot: u64, node_id: &str) -> Task {
    let spec = service.spec.clone().unwrap_or_default();
    Task {
        meta: Some(Meta {
            id: shoal_api::new_id(),
            ..Default::default()
        }),
        service_id: id(&service.meta).to_owned(),
        slot,
        node_id: node_id.to_owned(),
        spec: spec.task,
        spec_version: service.meta.as_ref().map(|m| m.version).unwrap_or(0),
        status: Some(TaskStatus {
            timestamp: shoal_api::now_ms(),
            state: TaskState::New as i32,
            message: "created".into(),
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        service_name: spec.name,
        service_labels: spec.labels,
        restarts: Vec::new(),
        start_after: 0,
        // The allocator gives the addresses (NEW → PENDING).
        networks: Vec::new(),
        job_iteration: super::jobs::iteration(service),
        // The scheduler gives them (PENDING → ASSIGNED).
        assigned_generic_resources: Vec::new(),
        // A new task is where the scheduler put it: nothing to move.
        rebalance: false,
    }
}

pub(super) fn shut_down(task: &Task, why: &str) -> Task {
    let mut task = task.clone();
    task.desired_state = TaskState::Shutdown as i32;
    if task.node_id.is_empty() || state_of(&task) < TaskState::Assigned {
        // Never reached a node: nothing will report it, so it ends here.
        task.status = Some(TaskStatus {
            timestamp: shoal_api::now_ms(),
            state: TaskState::Shutdown as i32,
            message: why.to_owned(),
            ..Default::default()
        });
    }
    task
}

/// The restart policy's answer for a task that stopped while meant to run:
/// the replacement task, or None when the policy says to leave it.
fn restart(service: &Service, task: &Task, now: i64) -> Option<Task> {
    let state = state_of(task);
    let failed = matches!(state, TaskState::Failed | TaskState::Rejected)
        || task.status.as_ref().is_some_and(|s| s.exit_code != 0);
    restart_after(service, task, failed, now)
}

/// When a task whose restart policy ran out of attempts within its window
/// may restart again: the moment enough of the counted restarts age out of
/// the window. None when the window is not what holds it.
pub(super) fn restart_window_reopens(task: &Task, now: i64) -> Option<i64> {
    let policy = task
        .spec
        .as_ref()
        .and_then(|s| s.restart)
        .unwrap_or_default();
    if policy.condition() == RestartCondition::None
        || policy.window_ms <= 0
        || policy.max_attempts == 0
    {
        return None;
    }
    let max = usize::try_from(policy.max_attempts).ok()?;
    let mut within: Vec<i64> = task
        .restarts
        .iter()
        .copied()
        .filter(|t| now - t < policy.window_ms)
        .collect();
    if within.len() < max {
        return None;
    }
    within.sort_unstable();
    Some(within[within.len() - max] + policy.window_ms)
}

/// [`restart`] with the caller's word on whether the task failed (a job's
/// task failed whenever it ended other than complete).
pub(super) fn restart_after(
    service: &Service,
    task: &Task,
    failed: bool,
    now: i64,
) -> Option<Task> {
    let policy = task
        .spec
        .as_ref()
        .and_then(|s| s.restart)
        .unwrap_or_default();
    match policy.condition() {
        RestartCondition::None => return None,
        RestartCondition::OnFailure if !failed => return None,
        _ => {}
    }
    let mut restarts: Vec<i64> = task
        .restarts
        .iter()
        .copied()
        .filter(|t| policy.window_ms <= 0 || now - t < policy.window_ms)
        .collect();
    if policy.max_attempts > 0 && restarts.len() as u64 >= policy.max_attempts {
        return None;
    }
    restarts.push(now);
    let delay = policy.delay_ms.unwrap_or(DEFAULT_RESTART_DELAY_MS).max(0);
    let mut next = new_task(
        service,
        task.slot,
        if task.slot == 0 { &task.node_id } else { "" },
    );
    // The replacement runs the service's spec as it is now, as Swarm's
    // do: after a rollback, a task of the failed spec restarts as the
    // restored one, not as the image that failed.
    next.restarts = restarts;
    if delay > 0 {
        next.desired_state = TaskState::Ready as i32;
        next.start_after = now + delay;
        if let Some(status) = next.status.as_mut() {
            status.message = format!("restart delayed by {}s", delay / 1000);
        }
    }
    Some(next)
}

/// What the orchestrators would change now, a pass's worth at most
/// ([`Batch::is_full`]): a service scaled to thousands gets its tasks over
/// several passes, each a small Raft entry. A pass stops only between
/// whole decisions (a task shut down and its replacement go together), and
/// never creates tasks for a service whose tasks it did not all see.
pub fn reconcile(state: &State, now: i64) -> Plan {
    reconcile_in(state, now, Scope::All)
}

/// Which services a pass looks at.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// Every service, every removed service's tasks, ended attachments.
    All,
    /// These services only (a removed one's tasks are stopped), by id: the
    /// ones whose spec or tasks changed. A pass over every service on each
    /// write was O(tasks) per write, most of the leader's work at 100,000
    /// tasks; what a pass decides for one service depends only on that
    /// service, its tasks, the nodes they are on and the clock (the
    /// caller widens the scope for node changes and runs whole passes
    /// when the clock is due).
    Services(&'a BTreeSet<String>),
}

/// [`reconcile`] of the services in `scope`.
pub fn reconcile_in(state: &State, now: i64, scope: Scope) -> Plan {
    let mut batch = Batch::default();
    let history_limit = state
        .cluster
        .as_ref()
        .and_then(|c| c.spec.as_ref())
        .map(|s| s.task_history_limit)
        .filter(|l| *l > 0)
        .unwrap_or(DEFAULT_HISTORY_LIMIT);

    let mut by_service: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    let services: Box<dyn Iterator<Item = &Service>> = match scope {
        Scope::All => {
            for task in state.tasks.values() {
                by_service
                    .entry(task.service_id.as_str())
                    .or_default()
                    .push(task);
            }
            Box::new(state.services.values())
        }
        Scope::Services(ids) => {
            for id in ids {
                let tasks: Vec<&Task> = state.tasks_of_service(id).collect();
                if !tasks.is_empty() {
                    by_service.insert(id.as_str(), tasks);
                }
            }
            Box::new(ids.iter().filter_map(|id| state.services.get(id)))
        }
    };

    // Containers plugged into networks (`network connect`): forgotten
    // once they ended; they are no service's.
    let (ended, mut wake_at) = match scope {
        Scope::All => crate::api::attachments::finished(state, now),
        Scope::Services(_) => (Vec::new(), None),
    };
    for task in ended {
        batch.delete(
            Kind::Task,
            id(&task.meta),
            task.meta.as_ref().map(|m| m.version).unwrap_or(0),
        );
    }

    // Tasks of removed services: stop them, then forget them.
    for (service_id, tasks) in &by_service {
        if state.services.contains_key(*service_id) || service_id.is_empty() {
            continue;
        }
        for task in tasks {
            if batch.is_full() {
                break;
            }
            let node = state.nodes.get(&task.node_id);
            let finished = task.node_id.is_empty()
                || state_of(task) < TaskState::Assigned
                || state_of(task).is_terminal()
                || node_problem(node).is_some_and(|p| p != "node is drained");
            if finished {
                batch.delete(
                    Kind::Task,
                    id(&task.meta),
                    task.meta.as_ref().map(|m| m.version).unwrap_or(0),
                );
            } else if task.desired_state() < TaskState::Remove {
                let mut t = (*task).clone();
                t.desired_state = TaskState::Remove as i32;
                batch.put_task(t);
            }
        }
    }

    for service in services {
        if batch.is_full() {
            break;
        }
        let service_id = id(&service.meta);
        let tasks = by_service.get(service_id).map(Vec::as_slice).unwrap_or(&[]);
        let spec = service.spec.clone().unwrap_or_default();
        if spec.mode().is_job() {
            if !super::jobs::reconcile(state, service, tasks, now, &mut batch, &mut wake_at) {
                // The tasks not seen would look missing.
                break;
            }
            reap_history(tasks, history_limit, &mut batch);
            continue;
        }
        let mut live: Vec<&Task> = Vec::new();
        let writes_before = batch.len();

        let mut seen_all = true;
        for task in tasks {
            if batch.is_full() {
                seen_all = false;
                break;
            }
            if !is_live(task) {
                continue;
            }
            start_if_due(task, now, &mut batch, &mut wake_at);
            if !task.node_id.is_empty()
                && let Some(problem) = node_problem(state.nodes.get(&task.node_id))
            {
                batch.put_task(shut_down(task, problem));
                if task.slot > 0 {
                    // Replicated: the slot moves to another node at once.
                    let mut next = new_task(service, task.slot, "");
                    next.restarts = task.restarts.clone();
                    batch.put_task(next);
                }
                continue;
            }
            if state_of(task).is_terminal() {
                match restart(service, task, now) {
                    Some(next) => {
                        batch.put_task(shut_down(task, "restarting"));
                        batch.put_task(next);
                    }
                    // The policy keeps the stopped task in its slot, and
                    // when only its window's attempts did, a pass is due
                    // once the oldest of them ages out (a narrow pass
                    // would not come back to this service by itself).
                    None => {
                        if let Some(at) = restart_window_reopens(task, now) {
                            wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
                        }
                        live.push(task);
                    }
                }
                continue;
            }
            live.push(task);
        }
        if !seen_all {
            // The slots of the tasks not seen would look free.
            break;
        }

        match spec.mode() {
            ServiceMode::Replicated => {
                let mut slots: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
                for task in &live {
                    slots.entry(task.slot).or_default().push(task);
                }
                // Replacements created above hold their slots too.
                let replaced: BTreeSet<u64> = tasks
                    .iter()
                    .filter(|t| is_live(t) && !live.iter().any(|l| l.meta == t.meta))
                    .map(|t| t.slot)
                    .collect();
                let mut occupied: BTreeSet<u64> = slots.keys().copied().collect();
                occupied.extend(replaced);
                let wanted = spec.replicas;
                // Scale down: the highest slots go first.
                let excess = occupied.len().saturating_sub(wanted as usize);
                for slot in occupied
                    .iter()
                    .rev()
                    .take(excess)
                    .copied()
                    .collect::<Vec<_>>()
                {
                    for task in slots.get(&slot).into_iter().flatten() {
                        batch.put_task(shut_down(task, "scaled down"));
                    }
                    occupied.remove(&slot);
                }
                let mut slot = 1;
                while (occupied.len() as u64) < wanted && !batch.is_full() {
                    if !occupied.contains(&slot) {
                        batch.put_task(new_task(service, slot, ""));
                        occupied.insert(slot);
                    }
                    slot += 1;
                }
            }
            ServiceMode::Global => {
                let constraints = Constraint::parse_all(
                    &spec
                        .task
                        .as_ref()
                        .and_then(|t| t.placement.as_ref())
                        .map(|p| p.constraints.clone())
                        .unwrap_or_default(),
                )
                .unwrap_or_default();
                let mut on_node: HashMap<&str, Vec<&Task>> = HashMap::new();
                for task in &live {
                    on_node.entry(task.node_id.as_str()).or_default().push(task);
                }
                let replaced: BTreeSet<&str> = tasks
                    .iter()
                    .filter(|t| is_live(t) && !live.iter().any(|l| l.meta == t.meta))
                    .map(|t| t.node_id.as_str())
                    .collect();
                for (node_id, node) in &state.nodes {
                    let eligible = node_problem(Some(node)).is_none()
                        && constraints.iter().all(|c| c.matches(node));
                    let existing = on_node.remove(node_id.as_str()).unwrap_or_default();
                    if !eligible {
                        for task in existing {
                            batch.put_task(shut_down(task, "node no longer eligible"));
                        }
                        continue;
                    }
                    // One per node (and, while a start-first update overlaps
                    // them, one older beside it): extra tasks (a race) stop.
                    let (outdated, current): (Vec<&&Task>, Vec<&&Task>) = existing
                        .iter()
                        .partition(|t| super::update::is_outdated(service, t));
                    for task in current.iter().skip(1).chain(outdated.iter().skip(1)) {
                        batch.put_task(shut_down(task, "duplicate task on node"));
                    }
                    let ready = node
                        .status
                        .as_ref()
                        .is_some_and(|s| s.state() == NodeState::Ready);
                    let active = node
                        .spec
                        .as_ref()
                        .map(|s| s.availability())
                        .unwrap_or_default()
                        == Availability::Active;
                    if existing.is_empty()
                        && !replaced.contains(node_id.as_str())
                        && ready
                        && active
                        && !batch.is_full()
                    {
                        batch.put_task(new_task(service, 0, node_id));
                    }
                }
                for task in on_node.into_values().flatten() {
                    batch.put_task(shut_down(task, "node was removed"));
                }
            }
            // Reconciled by jobs::reconcile above.
            ServiceMode::ReplicatedJob | ServiceMode::GlobalJob => {}
        }

        // A rolling update moves only once the slots are as they should
        // be: its writes and theirs would otherwise cross.
        if batch.len() == writes_before
            && let Some(at) = super::update::step(service, tasks, &live, now, &mut batch)
        {
            wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
        }
        reap_history(tasks, history_limit, &mut batch);
    }
    Plan { batch, wake_at }
}

/// Keeps at most `limit` tasks per slot (per node for global services),
/// deleting the oldest finished ones.
fn reap_history(tasks: &[&Task], limit: u64, batch: &mut Batch) {
    let mut groups: BTreeMap<(u64, &str), Vec<&Task>> = BTreeMap::new();
    for task in tasks {
        let node = if task.slot == 0 {
            task.node_id.as_str()
        } else {
            ""
        };
        groups.entry((task.slot, node)).or_default().push(task);
    }
    for (_, mut group) in groups {
        if group.len() as u64 <= limit {
            continue;
        }
        group.sort_by_key(|t| {
            t.meta
                .as_ref()
                .map(|m| (m.created_at, m.version))
                .unwrap_or_default()
        });
        let mut excess = group.len() as u64 - limit;
        for task in group {
            if excess == 0 || batch.is_full() {
                break;
            }
            let finished =
                !is_live(task) && (state_of(task).is_terminal() || task.node_id.is_empty());
            if finished {
                batch.delete(
                    Kind::Task,
                    id(&task.meta),
                    task.meta.as_ref().map(|m| m.version).unwrap_or(0),
                );
                excess -= 1;
            }
        }
    }
}
