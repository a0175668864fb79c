//! Rolling updates and rollbacks: a service whose tasks run an older spec
//! than its own gets them replaced `parallelism` at a time, waiting for
//! each batch to run, then `delay`; a new task that fails, or that once
//! started does not pass its health check within the monitor window
//! (Starting past it), counts as a failure (a container being created or
//! started, Ready, is not timed: a slow host is not a failed task), and
//! too many failures pause the update, roll it back, or are ignored, as
//! its `failure_action` says. Swarm's defaults throughout. A pure function
//! of the state and the clock, like the rest of the orchestrators; its
//! progress lives in the service's `update_status`.

use shoal_api::pb::{
    Service, ServiceMode, Task, TaskState, UpdateConfig, UpdateFailureAction, UpdateOrder,
    UpdateStatus,
};

use super::reconcile::{id, new_task, shut_down, state_of};
use crate::store::Batch;

pub const UPDATING: &str = "updating";
pub const PAUSED: &str = "paused";
pub const COMPLETED: &str = "completed";
pub const ROLLBACK_STARTED: &str = "rollback_started";
pub const ROLLBACK_PAUSED: &str = "rollback_paused";
pub const ROLLBACK_COMPLETED: &str = "rollback_completed";

/// Swarm's default monitor window.
const DEFAULT_MONITOR_MS: i64 = 5_000;

/// The config in force and Swarm's defaults for what it leaves unset.
struct Config {
    parallelism: usize,
    delay_ms: i64,
    failure_action: UpdateFailureAction,
    monitor_ms: i64,
    max_failure_ratio: f32,
    start_first: bool,
}

impl Config {
    fn of(config: Option<&UpdateConfig>) -> Self {
        let c = config.copied().unwrap_or_default();
        Self {
            parallelism: match c.parallelism.unwrap_or(1) {
                0 => usize::MAX,
                n => n as usize,
            },
            delay_ms: c.delay_ms.max(0),
            failure_action: c.failure_action(),
            monitor_ms: c.monitor_ms.unwrap_or(DEFAULT_MONITOR_MS).max(0),
            max_failure_ratio: c.max_failure_ratio,
            start_first: c.order() == UpdateOrder::StartFirst,
        }
    }
}

/// Whether a task runs an older spec than its service's.
/// Tasks a rebalance marked count as outdated: the update replaces them.
pub fn is_outdated(service: &Service, task: &Task) -> bool {
    task.rebalance || task.spec.as_ref() != service.spec.as_ref().and_then(|s| s.task.as_ref())
}

/// The status a service gets when its task spec changes.
pub fn started(now: i64, rollback: bool, message: &str) -> UpdateStatus {
    UpdateStatus {
        state: if rollback { ROLLBACK_STARTED } else { UPDATING }.into(),
        started_at: now,
        completed_at: 0,
        message: message.into(),
        // No batch is under way yet.
        batch_done_at: now,
    }
}

/// How long a new task may take to become running (healthy) before it
/// counts as failed: the monitor window, at least a second.
fn start_deadline(task: &Task, monitor_ms: i64) -> i64 {
    task.status.as_ref().map_or(0, |s| s.timestamp) + monitor_ms.max(1_000)
}

fn is_failure(task: &Task, monitor_ms: i64, now: i64) -> bool {
    let state = state_of(task);
    let exited_badly = task.status.as_ref().is_some_and(|s| s.exit_code != 0);
    matches!(state, TaskState::Failed | TaskState::Rejected)
        || (state.is_terminal() && exited_badly && task.desired_state() <= TaskState::Running)
        || (state == TaskState::Starting && now > start_deadline(task, monitor_ms))
}

/// One step of `service`'s update, given all its tasks and the live ones
/// (holding a slot). Writes go to `batch`; returns when to look again.
pub fn step(
    service: &Service,
    tasks: &[&Task],
    live: &[&Task],
    now: i64,
    batch: &mut Batch,
) -> Option<i64> {
    let spec = service.spec.as_ref()?;
    let status = service.update_status.clone().unwrap_or_default();
    let rolling_back = status.state.starts_with("rollback");
    let in_progress = status.state == UPDATING || status.state == ROLLBACK_STARTED;
    // Tasks holding a slot: running, starting, or waiting for a delayed
    // restart.
    let holding: Vec<&&Task> = live
        .iter()
        .filter(|t| matches!(t.desired_state(), TaskState::Running | TaskState::Ready))
        .collect();
    let outdated: Vec<&&Task> = holding
        .iter()
        .copied()
        .filter(|t| is_outdated(service, t))
        .collect();
    if !in_progress {
        if outdated.is_empty() || status.state == PAUSED || status.state == ROLLBACK_PAUSED {
            return None;
        }
        // Outdated tasks with no update under way (a spec written by an
        // older manager): start one.
        let mut next = service.clone();
        next.update_status = Some(started(now, false, "update in progress"));
        batch.put_service(next);
        return None;
    }
    let config = Config::of(if rolling_back {
        spec.rollback.as_ref()
    } else {
        spec.update.as_ref()
    });

    // Failures among the tasks this update started.
    let fresh: Vec<&&Task> = tasks.iter().filter(|t| !is_outdated(service, t)).collect();
    let failed: Vec<&&Task> = fresh
        .iter()
        .copied()
        .filter(|t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.timestamp >= status.started_at)
        })
        .filter(|t| is_failure(t, config.monitor_ms, now))
        .collect();
    if !failed.is_empty() && config.failure_action != UpdateFailureAction::Continue {
        let updated = fresh.len().max(1) as f32;
        if failed.len() as f32 > config.max_failure_ratio * updated {
            let culprit = id(&failed[0].meta);
            let mut next = service.clone();
            // A rebalance changed no spec: there is nothing to roll back.
            if config.failure_action == UpdateFailureAction::Rollback
                && !rolling_back
                && !super::rebalance::is_rebalance(service)
                && let Some(previous) = service.previous_spec.clone()
            {
                next.previous_spec = service.spec.clone();
                next.spec = Some(previous);
                next.update_status = Some(started(
                    now,
                    true,
                    &format!(
                        "update rolled back due to failure or early termination of task {culprit}"
                    ),
                ));
                batch.put_service(next);
                return None;
            }
            let mut paused = status.clone();
            paused.state = if rolling_back {
                ROLLBACK_PAUSED
            } else {
                PAUSED
            }
            .into();
            paused.message = format!(
                "{} paused due to failure or early termination of task {culprit}",
                if rolling_back { "rollback" } else { "update" }
            );
            next.update_status = Some(paused);
            batch.put_service(next);
            return None;
        }
    }

    // Start-first: an old task leaves once its slot's new one runs.
    let key = |t: &Task| {
        (
            t.slot,
            if t.slot == 0 {
                t.node_id.clone()
            } else {
                String::new()
            },
        )
    };
    let mut wrote = false;
    for old in &outdated {
        let replaced = holding.iter().any(|t| {
            key(t) == key(old) && !is_outdated(service, t) && state_of(t) == TaskState::Running
        });
        if replaced {
            batch.put_task(shut_down(old, "replaced by an updated task"));
            wrote = true;
        }
    }
    if wrote {
        return None;
    }
    // New tasks not running yet hold the batch back; with `continue`, one
    // restarting after a failure does not (the update goes on past it).
    let ignore_restarting = config.failure_action == UpdateFailureAction::Continue;
    let in_flight: Vec<&&&Task> = holding
        .iter()
        .filter(|t| !is_outdated(service, t) && state_of(t) < TaskState::Running)
        .filter(|t| !ignore_restarting || t.restarts.is_empty())
        .collect();
    if !in_flight.is_empty() {
        // Look again when a starting one would count as failed.
        return in_flight
            .iter()
            .filter(|t| state_of(t) == TaskState::Starting)
            .map(|t| start_deadline(t, config.monitor_ms) + 1)
            .min();
    }

    // The batch under way has finished: note when, once.
    if status.batch_done_at == 0 {
        let mut next = service.clone();
        let mut done = status.clone();
        done.batch_done_at = now;
        next.update_status = Some(done);
        batch.put_service(next);
        return Some(now + config.delay_ms.min(config.monitor_ms).max(1));
    }
    if outdated.is_empty() {
        let until = status.batch_done_at + config.monitor_ms;
        if now < until {
            return Some(until);
        }
        let mut next = service.clone();
        let mut done = status.clone();
        done.state = if rolling_back {
            ROLLBACK_COMPLETED
        } else {
            COMPLETED
        }
        .into();
        done.completed_at = now;
        done.message = if rolling_back {
            "rollback completed"
        } else {
            "update completed"
        }
        .into();
        next.update_status = Some(done);
        batch.put_service(next);
        return None;
    }
    // The delay is between batches: none before the first.
    let first = !holding.iter().any(|t| !is_outdated(service, t));
    let next_batch = status.batch_done_at + if first { 0 } else { config.delay_ms };
    if now < next_batch {
        return Some(next_batch);
    }

    // The next batch, in slot (or node) order.
    let mut todo: Vec<&&Task> = outdated.clone();
    todo.sort_by_key(|t| key(t));
    todo.dedup_by_key(|t| key(t));
    for old in todo.into_iter().take(config.parallelism) {
        let node = if spec.mode() == ServiceMode::Global {
            old.node_id.as_str()
        } else {
            ""
        };
        if !config.start_first {
            batch.put_task(shut_down(old, "updating"));
        }
        let mut task = new_task(service, old.slot, node);
        task.restarts.clear();
        batch.put_task(task);
    }
    let mut next = service.clone();
    let mut under_way = status;
    under_way.batch_done_at = 0;
    next.update_status = Some(under_way);
    batch.put_service(next);
    None
}
