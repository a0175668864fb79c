//! A simulated executor: tasks "run" the moment they are assigned, stop when
//! told to, and fail when a test says so. It speaks the real protocol
//! through [`crate::session`], so manager tests and scale benchmarks use
//! many nodes without a container engine.

use std::{collections::BTreeMap, sync::Mutex};

use shoal_api::pb::{AssignmentSet, TaskState, TaskStatus, TaskStatusUpdate};
use tokio::sync::mpsc;

use crate::session::Executor;

#[derive(Default)]
pub struct SimExecutor {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Observed state per task id, as this "node" last reported it.
    tasks: BTreeMap<String, TaskState>,
    /// The service of each task it was given.
    services: BTreeMap<String, String>,
    report: Option<mpsc::UnboundedSender<TaskStatusUpdate>>,
    /// How long applying a set takes (as an engine under load may).
    apply_delay: std::time::Duration,
    /// Log requests in the sets it began to apply.
    log_requests_seen: usize,
    /// Sets it began to apply, and sets it finished applying.
    sets_begun: usize,
    sets_applied: usize,
}

fn update(task_id: &str, state: TaskState, exit_code: i32, message: &str) -> TaskStatusUpdate {
    TaskStatusUpdate {
        task_id: task_id.to_owned(),
        status: Some(TaskStatus {
            timestamp: shoal_api::now_ms(),
            state: state as i32,
            message: message.to_owned(),
            err: if state == TaskState::Failed {
                format!("task: non-zero exit ({exit_code})")
            } else {
                String::new()
            },
            exit_code,
            container_id: String::new(),
            health: 0,
        }),
    }
}

impl SimExecutor {
    /// Ids of the tasks this node runs now.
    pub fn running(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .tasks
            .iter()
            .filter(|(_, s)| **s == TaskState::Running)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many tasks this node runs now.
    pub fn running_count(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .tasks
            .values()
            .filter(|s| **s == TaskState::Running)
            .count()
    }

    /// Ids of the tasks of service `service_id` this node runs now.
    pub fn running_of(&self, service_id: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .tasks
            .iter()
            .filter(|(_, s)| **s == TaskState::Running)
            .filter(|(id, _)| inner.services.get(*id).map(String::as_str) == Some(service_id))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Makes every later set take `delay` to apply.
    pub fn set_apply_delay(&self, delay: std::time::Duration) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply_delay = delay;
    }

    /// How many log requests came in the sets this node began to apply
    /// (a session answers them once the set is applied).
    pub fn log_requests_seen(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log_requests_seen
    }

    /// How many sets this node began to apply, and how many it finished.
    pub fn sets_begun_and_applied(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.sets_begun, inner.sets_applied)
    }

    /// Makes a running task exit with `exit_code` (0: complete, else failed).
    pub fn exit(&self, task_id: &str, exit_code: i32) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.tasks.get(task_id) != Some(&TaskState::Running) {
            return false;
        }
        let state = if exit_code == 0 {
            TaskState::Complete
        } else {
            TaskState::Failed
        };
        inner.tasks.insert(task_id.to_owned(), state);
        if let Some(report) = &inner.report {
            let _ = report.send(update(task_id, state, exit_code, "finished"));
        }
        true
    }
}

#[tonic::async_trait]
impl Executor for SimExecutor {
    async fn reconcile(
        &self,
        set: &AssignmentSet,
        report: &mpsc::UnboundedSender<TaskStatusUpdate>,
    ) {
        let delay = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.log_requests_seen += set.log_requests.len();
            inner.sets_begun += 1;
            inner.apply_delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.report = Some(report.clone());
        for task in &set.tasks {
            let id = task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
            if !inner.services.contains_key(&id) {
                inner.services.insert(id.clone(), task.service_id.clone());
            }
            let known = inner.tasks.get(&id).copied();
            let desired = task.desired_state();
            if desired <= TaskState::Running {
                // A set does not carry a task's status (the node reports
                // it): what this node did is what it remembers.
                match known {
                    None | Some(TaskState::Ready) if desired == TaskState::Running => {
                        inner.tasks.insert(id.clone(), TaskState::Running);
                        let _ = report.send(update(&id, TaskState::Running, 0, "started"));
                    }
                    None => {
                        inner.tasks.insert(id.clone(), TaskState::Ready);
                        let _ = report.send(update(&id, TaskState::Ready, 0, "prepared"));
                    }
                    Some(_) => {}
                }
            } else if known.is_none_or(|s| !s.is_terminal()) {
                inner.tasks.insert(id.clone(), TaskState::Shutdown);
                let _ = report.send(update(&id, TaskState::Shutdown, 0, "shutdown"));
            }
        }
        inner.sets_applied += 1;
    }
}
