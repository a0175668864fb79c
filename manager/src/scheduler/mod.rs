//! The scheduler: runs on the leader and assigns pending tasks to nodes
//! whenever the store changes.

pub mod constraint;
pub mod generic;
pub mod placement;

use std::sync::Arc;

use shoal_api::pb::{Task, TaskState, TaskStatus};

use crate::{
    limits::Limits,
    manager::{Manager, WriteError},
    store::{Batch, State},
};
use placement::{Outcome, plan};

/// Turns placement decisions into task updates; writes only what changes,
/// a pass's worth at most (the rest follow in the next pass).
pub fn assignments(state: &State, limits: &Limits) -> Batch {
    let mut batch = Batch::default();
    // Most writes (a task's status from its node) leave nothing pending:
    // a plan then weighs every task for nothing.
    if !state.tasks_waiting().any(placement::is_pending) {
        return batch;
    }
    let now = shoal_api::now_ms();
    for decision in plan(state, limits) {
        if batch.is_full() {
            break;
        }
        let Some(task) = state.tasks.get(&decision.task_id) else {
            continue;
        };
        let status = task.status.clone().unwrap_or_default();
        let updated = match decision.outcome {
            Outcome::Assign(node) => Task {
                node_id: node,
                assigned_generic_resources: decision.generic,
                status: Some(TaskStatus {
                    timestamp: now,
                    state: TaskState::Assigned as i32,
                    message: "scheduler assigned task to node".into(),
                    ..Default::default()
                }),
                ..task.clone()
            },
            Outcome::Unplaceable(reason) => {
                if status.state() == TaskState::Pending && status.err == reason {
                    continue;
                }
                Task {
                    status: Some(TaskStatus {
                        timestamp: now,
                        state: TaskState::Pending as i32,
                        message: "pending task scheduling".into(),
                        err: reason,
                        ..Default::default()
                    }),
                    ..task.clone()
                }
            }
        };
        batch.put_task(updated);
    }
    batch
}

/// The least time between two plans (see [`run`]).
const MIN_PLAN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Assigns tasks until leadership is lost (the caller aborts the task).
pub async fn run(manager: Arc<Manager>) {
    let mut applied = manager.store.applied();
    let mut last_plan = std::time::Instant::now() - MIN_PLAN_INTERVAL;
    loop {
        // A read first: most writes leave nothing pending, and a pass
        // that writes nothing still takes the store's write lock.
        let pending = {
            let state = manager.store.read().await;
            state.tasks_waiting().any(placement::is_pending)
        };
        if pending {
            plan_once(&manager, &mut last_plan).await;
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

/// One plan and its write.
async fn plan_once(manager: &Manager, last_plan: &mut std::time::Instant) {
    // A plan weighs every task on every node (O(tasks)): a burst of
    // creations (thousands of services) becomes one plan per interval
    // for all its pending tasks, not one per write.
    let since = last_plan.elapsed();
    if since < MIN_PLAN_INTERVAL {
        tokio::time::sleep(MIN_PLAN_INTERVAL - since).await;
    }
    *last_plan = std::time::Instant::now();
    let started = std::time::Instant::now();
    let written = manager
        .update(|state| {
            let batch = assignments(state, &manager.settings.limits);
            Ok::<_, WriteError>(Some((batch, ())))
        })
        .await;
    manager
        .metrics
        .scheduler_pass
        .observe(started.elapsed().as_secs_f64());
    match written {
        Ok(Some(())) => {}
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, "scheduler write failed");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod loads_tests;
#[cfg(test)]
mod tests;
