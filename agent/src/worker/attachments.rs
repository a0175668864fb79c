//! Containers of this node's engine that `network connect` plugged into a
//! network (attachment tasks): found by the name or id given, plugged in
//! while they run, unplugged on `disconnect`. They are not the agent's
//! containers: it never starts, stops or removes them, and they count
//! against no task limit.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bollard::{Docker, query_parameters::InspectContainerOptions};
use shoal_api::pb::{Task, TaskState, TaskStatus, TaskStatusUpdate};
use tokio::sync::mpsc;

use crate::network::Overlay;

/// How often plugged containers are checked (one that stops takes its
/// end of the veth with it).
const CHECK_PERIOD: Duration = Duration::from_secs(2);

/// The container an attachment task plugs, if `task` is one.
pub fn container_of(task: &Task) -> Option<&str> {
    task.spec
        .as_ref()?
        .attachment
        .as_ref()
        .map(|a| a.container.as_str())
}

fn id(task: &Task) -> String {
    task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}

fn status(state: TaskState, message: &str, err: &str, container: &str) -> TaskStatus {
    TaskStatus {
        timestamp: shoal_api::now_ms(),
        state: state as i32,
        message: message.to_owned(),
        err: err.to_owned(),
        container_id: container.to_owned(),
        ..Default::default()
    }
}

#[derive(Default)]
struct Known {
    /// What was last reported per task (reported once per change).
    reported: HashMap<String, TaskState>,
    /// Plugged tasks: their task, and the container they plug.
    plugged: HashMap<String, (Task, String)>,
    report: Option<mpsc::UnboundedSender<TaskStatusUpdate>>,
}

pub struct Attachments {
    docker: Docker,
    overlay: Option<Arc<Overlay>>,
    known: Mutex<Known>,
}

impl Attachments {
    pub fn new(docker: Docker, overlay: Option<Arc<Overlay>>) -> Arc<Self> {
        let attachments = Arc::new(Self {
            docker,
            overlay,
            known: Mutex::default(),
        });
        tokio::spawn(watch(Arc::downgrade(&attachments)));
        attachments
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, task: &str, status: TaskStatus) {
        let mut known = self.known();
        if known.reported.get(task) == Some(&status.state()) {
            return;
        }
        known.reported.insert(task.to_owned(), status.state());
        if let Some(report) = &known.report {
            let _ = report.send(TaskStatusUpdate {
                task_id: task.to_owned(),
                status: Some(status),
            });
        }
    }

    /// Brings the plugs in line with the node's attachment tasks.
    pub async fn sync(&self, tasks: &[&Task], report: &mpsc::UnboundedSender<TaskStatusUpdate>) {
        self.known().report = Some(report.clone());
        for task in tasks {
            let task_id = id(task);
            if task.desired_state() <= TaskState::Running {
                self.plug(task).await;
            } else {
                self.unplug(task).await;
                let container = self.known().plugged.remove(&task_id).map(|(_, c)| c);
                self.send(
                    &task_id,
                    status(
                        TaskState::Shutdown,
                        "disconnected",
                        "",
                        &container.unwrap_or_default(),
                    ),
                );
            }
        }
        // Tasks the manager let go of (a forced disconnect): unplugged too.
        let wanted: Vec<String> = tasks.iter().map(|t| id(t)).collect();
        let gone: Vec<Task> = {
            let mut known = self.known();
            known.reported.retain(|t, _| wanted.contains(t));
            let gone: Vec<String> = known
                .plugged
                .keys()
                .filter(|t| !wanted.contains(t))
                .cloned()
                .collect();
            gone.iter()
                .filter_map(|t| known.plugged.remove(t).map(|(task, _)| task))
                .collect()
        };
        for task in gone {
            self.unplug(&task).await;
        }
    }

    async fn plug(&self, task: &Task) {
        let task_id = id(task);
        if self.known().plugged.contains_key(&task_id) {
            return;
        }
        let Some(reference) = container_of(task) else {
            return;
        };
        let Some(overlay) = &self.overlay else {
            self.send(
                &task_id,
                status(TaskState::Rejected, "", "this node has no overlay", ""),
            );
            return;
        };
        let inspect = match self
            .docker
            .inspect_container(reference, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspect) => inspect,
            Err(error) => {
                tracing::debug!(container = %reference, %error, "network connect");
                let err = format!("No such container: {reference}");
                self.send(&task_id, status(TaskState::Rejected, "", &err, ""));
                return;
            }
        };
        let container = inspect.id.clone().unwrap_or_default();
        let pid = inspect
            .state
            .as_ref()
            .filter(|s| s.running == Some(true))
            .and_then(|s| s.pid)
            .filter(|p| *p > 0);
        let Some(pid) = pid else {
            let err = format!("container {reference} is not running");
            self.send(&task_id, status(TaskState::Rejected, "", &err, &container));
            return;
        };
        match overlay.attach_container(task, pid as u32).await {
            Ok(()) => {
                tracing::info!(task = %task_id, container = %reference, "container connected to its network");
                self.known()
                    .plugged
                    .insert(task_id.clone(), ((*task).clone(), container.clone()));
                self.send(
                    &task_id,
                    status(TaskState::Running, "connected", "", &container),
                );
            }
            Err(error) => {
                let err = format!("plugging {reference} in: {error:#}");
                self.send(&task_id, status(TaskState::Failed, "", &err, &container));
            }
        }
    }

    async fn unplug(&self, task: &Task) {
        if let Some(overlay) = &self.overlay
            && let Err(error) = overlay.detach(task).await
        {
            tracing::warn!(task = %id(task), error = %format!("{error:#}"), "network disconnect");
        }
    }

    /// Plugged containers that stopped: their veth went with them.
    async fn check(&self) {
        let Some(overlay) = &self.overlay else { return };
        let plugged: Vec<(String, Task, String)> = self
            .known()
            .plugged
            .iter()
            .map(|(id, (task, container))| (id.clone(), task.clone(), container.clone()))
            .collect();
        for (task_id, task, container) in plugged {
            if !overlay.is_attached(&task).await {
                self.known().plugged.remove(&task_id);
                self.send(
                    &task_id,
                    status(
                        TaskState::Complete,
                        "the container stopped: it left the network",
                        "",
                        &container,
                    ),
                );
            }
        }
    }
}

async fn watch(attachments: std::sync::Weak<Attachments>) {
    loop {
        tokio::time::sleep(CHECK_PERIOD).await;
        let Some(attachments) = attachments.upgrade() else {
            return;
        };
        attachments.check().await;
    }
}
