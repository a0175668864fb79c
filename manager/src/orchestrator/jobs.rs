//! Jobs (`--mode replicated-job|global-job`): services whose tasks run to
//! completion, with swarmkit's semantics (manager/orchestrator/jobs).
//!
//! Every create or update of a job starts a new iteration
//! (`Service.job_status`); only the tasks of the current iteration count,
//! and those of earlier ones still under way are shut down and kept as
//! history. A replicated job fills slots `1..=replicas`, each until a task
//! completes in it, with at most `max_concurrent` tasks under way at once;
//! a global job runs one task to completion on every eligible node,
//! including nodes that join (or become eligible) later. A task that exits
//! 0 is done and is never restarted; any other end is a failure the restart
//! policy answers (`any` acts as `on-failure`). A failed task the policy
//! gives up on keeps its slot, so the job does not complete, but it no
//! longer counts against `max_concurrent`. Rolling updates do not apply.

use std::collections::BTreeSet;

use shoal_api::pb::{Availability, NodeState, Service, ServiceMode, Task, TaskState};

use super::reconcile::{
    is_live, new_task, node_problem, restart_after, shut_down, start_if_due, state_of,
};
use crate::{
    scheduler::constraint::Constraint,
    store::{Batch, State},
};

/// The iteration a new task of `service` runs for: None unless it is a job.
pub fn iteration(service: &Service) -> Option<u64> {
    let spec = service.spec.as_ref()?;
    spec.mode()
        .is_job()
        .then(|| service.job_status.as_ref().map_or(0, |j| j.job_iteration))
}

/// A task that ran to completion (exit 0).
pub fn is_complete(task: &Task) -> bool {
    state_of(task) == TaskState::Complete
}

/// What the current iteration's tasks hold after the first pass.
#[derive(Default)]
struct Holding<'a> {
    /// Slots (replicated) or nodes (global) done, under way, or given up on:
    /// no new task goes there.
    taken_slots: BTreeSet<u64>,
    taken_nodes: BTreeSet<&'a str>,
    /// Tasks under way (or waiting for a delayed restart): what
    /// `max_concurrent` caps.
    under_way: Vec<(u64, &'a str, Option<&'a Task>)>,
}

impl<'a> Holding<'a> {
    fn take(&mut self, slot: u64, node: &'a str) {
        if slot > 0 {
            self.taken_slots.insert(slot);
        } else {
            self.taken_nodes.insert(node);
        }
    }
}

/// One pass over a job: writes go to `batch`, the next delayed restart to
/// `wake_at`. Returns false when the batch filled before every task was
/// seen (nothing is created then: the unseen tasks' slots would look free).
pub(super) fn reconcile<'a>(
    state: &'a State,
    service: &Service,
    tasks: &[&'a Task],
    now: i64,
    batch: &mut Batch,
    wake_at: &mut Option<i64>,
) -> bool {
    let Some(iteration) = iteration(service) else {
        return true;
    };
    let spec = service.spec.clone().unwrap_or_default();
    let mut holding = Holding::default();
    for &task in tasks {
        if batch.is_full() {
            return false;
        }
        let current = task.job_iteration == Some(iteration);
        if is_complete(task) {
            if is_live(task) {
                // Done: desired state Complete, as swarmkit's job tasks have.
                let mut done = task.clone();
                done.desired_state = TaskState::Complete as i32;
                batch.put_task(done);
            }
            if current {
                holding.take(task.slot, &task.node_id);
            }
            continue;
        }
        if !current {
            // An earlier iteration's task still under way gives way.
            if is_live(task) {
                batch.put_task(shut_down(task, "superseded by a new job iteration"));
            }
            continue;
        }
        if !is_live(task) {
            continue;
        }
        start_if_due(task, now, batch, wake_at);
        if !task.node_id.is_empty()
            && let Some(problem) = node_problem(state.nodes.get(&task.node_id))
        {
            batch.put_task(shut_down(task, problem));
            if task.slot > 0 {
                // A replicated job's slot moves to another node at once.
                let mut next = new_task(service, task.slot, "");
                next.restarts = task.restarts.clone();
                batch.put_task(next);
                holding.take(task.slot, "");
                holding.under_way.push((task.slot, "", None));
            }
            continue;
        }
        holding.take(task.slot, &task.node_id);
        if state_of(task).is_terminal() {
            // Ended other than complete: a failure, whatever the exit code.
            // Given up on (no replacement): it keeps its slot, but runs
            // no more.
            if let Some(next) = restart_after(service, task, true, now) {
                batch.put_task(shut_down(task, "restarting"));
                batch.put_task(next);
                holding.under_way.push((task.slot, &task.node_id, None));
            }
            continue;
        }
        holding
            .under_way
            .push((task.slot, &task.node_id, Some(task)));
    }
    match spec.mode() {
        ServiceMode::ReplicatedJob => replicated(service, &holding, batch),
        ServiceMode::GlobalJob => global(state, service, &holding, batch),
        ServiceMode::Replicated | ServiceMode::Global => {}
    }
    true
}

/// New tasks for free slots, as many as `max_concurrent` leaves room for.
fn replicated(service: &Service, holding: &Holding, batch: &mut Batch) {
    let spec = service.spec.clone().unwrap_or_default();
    let total = spec.replicas;
    let mut under_way = 0u64;
    for (slot, _, task) in &holding.under_way {
        match task {
            // Past the total (defensive: a change of replicas starts a new
            // iteration): it stops.
            Some(task) if *slot > total => {
                batch.put_task(shut_down(task, "scaled down"));
            }
            _ => under_way += 1,
        }
    }
    let mut room = spec.max_concurrent.unwrap_or(1).saturating_sub(under_way);
    let mut slot = 1;
    while room > 0 && slot <= total && !batch.is_full() {
        if !holding.taken_slots.contains(&slot) {
            batch.put_task(new_task(service, slot, ""));
            room -= 1;
        }
        slot += 1;
    }
}

/// A task for every eligible node that has none of this iteration; tasks
/// under way on nodes that no longer match the constraints stop.
fn global(state: &State, service: &Service, holding: &Holding, batch: &mut Batch) {
    let constraints = Constraint::parse_all(
        &service
            .spec
            .as_ref()
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.placement.as_ref())
            .map(|p| p.constraints.clone())
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let matches = |node_id: &str| {
        state
            .nodes
            .get(node_id)
            .is_some_and(|n| constraints.iter().all(|c| c.matches(n)))
    };
    for (_, node_id, task) in &holding.under_way {
        if let Some(task) = task
            && !matches(node_id)
        {
            batch.put_task(shut_down(task, "node no longer eligible"));
        }
    }
    for (node_id, node) in &state.nodes {
        if batch.is_full() {
            return;
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
        let eligible = ready
            && active
            && node_problem(Some(node)).is_none()
            && constraints.iter().all(|c| c.matches(node));
        if eligible && !holding.taken_nodes.contains(node_id.as_str()) {
            batch.put_task(new_task(service, 0, node_id));
        }
    }
}
