//! Task status reports from every node, written together: each report
//! waits for the write that records it (an agent forgets a report only once
//! it is acknowledged), but reports that arrive while a write is in flight
//! share the next one, as swarmkit's dispatcher batches task updates.
//! One write per report serialised a thousand nodes' reports behind each
//! other, a Raft round each.

use std::{collections::BTreeMap, sync::Arc};

use shoal_api::pb::{Task, TaskState, TaskStatusUpdate};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::{
    manager::Manager,
    store::{Batch, State},
};

/// The most task updates one write carries (a Raft entry stays a few MB).
const MAX_UPDATES_PER_WRITE: usize = 5_000;

struct Report {
    node_id: String,
    updates: Vec<TaskStatusUpdate>,
    done: oneshot::Sender<Result<(), Status>>,
}

#[derive(Clone)]
pub struct StatusWriter {
    tx: mpsc::UnboundedSender<Report>,
}

impl StatusWriter {
    /// Starts the writer (it ends when every handle is dropped).
    pub fn start(manager: Arc<Manager>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_reports(manager, rx));
        Self { tx }
    }

    /// Records `updates` of node `node_id`'s tasks; returns once written.
    pub async fn write(&self, node_id: &str, updates: Vec<TaskStatusUpdate>) -> Result<(), Status> {
        let (done, written) = oneshot::channel();
        self.tx
            .send(Report {
                node_id: node_id.to_owned(),
                updates,
                done,
            })
            .map_err(|_| Status::unavailable("the dispatcher is shutting down"))?;
        written
            .await
            .map_err(|_| Status::unavailable("the dispatcher is shutting down"))?
    }
}

async fn write_reports(manager: Arc<Manager>, mut rx: mpsc::UnboundedReceiver<Report>) {
    while let Some(first) = rx.recv().await {
        let mut count = first.updates.len();
        let mut reports = vec![first];
        while count < MAX_UPDATES_PER_WRITE {
            let Ok(more) = rx.try_recv() else { break };
            count += more.updates.len();
            reports.push(more);
        }
        let result = manager
            .update(|state| -> Result<_, Status> {
                let mut changed = BTreeMap::new();
                for report in &reports {
                    apply(state, &report.node_id, &report.updates, &mut changed);
                }
                let mut batch = Batch::default();
                for task in changed.into_values() {
                    batch.put_task(task);
                }
                Ok(Some((batch, ())))
            })
            .await
            .map(|_| ());
        for report in reports {
            let _ = report.done.send(result.clone());
        }
    }
}

/// Applies node `node_id`'s `updates` to its tasks, on top of what this
/// write already changed (`changed`, by task id).
pub fn apply(
    state: &State,
    node_id: &str,
    updates: &[TaskStatusUpdate],
    changed: &mut BTreeMap<String, Task>,
) {
    for update in updates {
        let Some(task) = changed
            .get(&update.task_id)
            .or_else(|| state.tasks.get(&update.task_id))
        else {
            continue;
        };
        if task.node_id != node_id {
            continue; // not this node's task (any more)
        }
        let Some(mut status) = update.status.clone() else {
            continue;
        };
        let current = task.status.clone().unwrap_or_default();
        // A health change of a running task is no new state: `service ps`
        // goes on saying since when it runs.
        if status.state() == TaskState::Running && current.state() == TaskState::Running {
            status.timestamp = current.timestamp;
        }
        // States only move forward; a repeat with news is kept.
        if status.state() < current.state() || status == current {
            continue;
        }
        let mut task = task.clone();
        task.status = Some(status);
        changed.insert(update.task_id.clone(), task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::{Meta, TaskStatus};

    fn update(id: &str, state: TaskState) -> TaskStatusUpdate {
        TaskStatusUpdate {
            task_id: id.into(),
            status: Some(TaskStatus {
                state: state as i32,
                timestamp: 7,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn reports_of_many_nodes_go_in_one_write_each_on_its_own_tasks() {
        let mut state = State::default();
        for (id, node) in [("t1", "n1"), ("t2", "n2")] {
            state.tasks.insert(
                id.into(),
                Task {
                    meta: Some(Meta {
                        id: id.into(),
                        ..Default::default()
                    }),
                    node_id: node.into(),
                    status: Some(TaskStatus {
                        state: TaskState::Assigned as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
        }
        let mut changed = BTreeMap::new();
        apply(
            &state,
            "n1",
            &[update("t1", TaskState::Running)],
            &mut changed,
        );
        // n1 may not report n2's task; n2's own report counts.
        apply(
            &state,
            "n1",
            &[update("t2", TaskState::Failed)],
            &mut changed,
        );
        apply(
            &state,
            "n2",
            &[update("t2", TaskState::Running)],
            &mut changed,
        );
        // A later report in the same write builds on the earlier one, and
        // a state never goes back.
        apply(
            &state,
            "n1",
            &[update("t1", TaskState::Complete)],
            &mut changed,
        );
        apply(
            &state,
            "n1",
            &[update("t1", TaskState::Starting)],
            &mut changed,
        );
        let states: Vec<(&str, TaskState)> = changed
            .iter()
            .map(|(id, t)| {
                (
                    id.as_str(),
                    t.status.as_ref().map(|s| s.state()).unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            states,
            [("t1", TaskState::Complete), ("t2", TaskState::Running)]
        );
    }
}
