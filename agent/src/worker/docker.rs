//! The Docker executor (bollard): one container per task, with no Docker
//! network (the overlay plugs them in), labels naming the cluster objects,
//! health checks mapped into task state, and adoption of the containers an
//! earlier run of the agent started.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use bollard::{
    Docker,
    models::Mount,
    query_parameters::{
        CreateContainerOptions, InspectContainerOptions, ListContainersOptions,
        RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
    },
};
use shoal_api::{
    pb::{
        AssignmentSet, NodeDescription, Task, TaskHealth, TaskState, TaskStatus, TaskStatusUpdate,
    },
    template,
};
use tokio::sync::mpsc;

use super::{
    admission::Admission,
    container_body::{self, task_name},
    files,
};
use crate::{network::Overlay, session::Executor};

mod monitor;

pub const LABEL_CLUSTER: &str = "com.shoal.cluster.id";
pub const LABEL_NODE: &str = "com.shoal.node.id";
pub const LABEL_SERVICE_ID: &str = "com.shoal.service.id";
pub const LABEL_SERVICE_NAME: &str = "com.shoal.service.name";
pub const LABEL_TASK_ID: &str = "com.shoal.task.id";
pub const LABEL_TASK_NAME: &str = "com.shoal.task.name";

/// Swarm's default stop grace period.
const DEFAULT_GRACE_MS: i64 = 10_000;

/// What the executor knows of one task's container.
#[derive(Debug, Clone)]
struct Tracked {
    container: String,
    /// `SERVICE.SLOT` (or `SERVICE.NODE`), for log prefixes.
    name: String,
    /// The last state reported for the task.
    reported: TaskState,
    /// Being stopped because the manager said so.
    stopping: bool,
    /// Being created, started and plugged in: the monitor and the network
    /// repair leave it alone until `start` has reported.
    starting: bool,
    /// What its health check said when last reported.
    health: TaskHealth,
}

pub struct DockerExecutor {
    docker: Docker,
    /// The node's id; set again if the manager gives another at registration.
    node_id: Mutex<String>,
    cluster_id: Mutex<String>,
    /// Extra labels on every container (the lab marks its own for cleanup).
    extra_labels: HashMap<String, String>,
    /// Where each task's secrets and configs get their tmpfs.
    run_dir: std::path::PathBuf,
    /// For `{{.Node.Hostname}}` in templates.
    node_hostname: String,
    tasks: Arc<Mutex<HashMap<String, Tracked>>>,
    report: Arc<Mutex<Option<mpsc::UnboundedSender<TaskStatusUpdate>>>>,
    /// Plugs containers into their networks (none: containers stay
    /// unplugged, as in executor tests without netlink).
    overlay: Option<Arc<Overlay>>,
    /// How many tasks may run here, and start at once.
    admission: Admission,
    /// Containers `network connect` plugged in (no task's own).
    attachments: Arc<super::attachments::Attachments>,
}

fn status(
    state: TaskState,
    message: &str,
    err: &str,
    exit_code: i32,
    container: &str,
) -> TaskStatus {
    TaskStatus {
        timestamp: shoal_api::now_ms(),
        state: state as i32,
        message: message.to_owned(),
        err: err.to_owned(),
        exit_code,
        container_id: container.to_owned(),
        health: TaskHealth::None as i32,
    }
}

fn task_id(task: &Task) -> String {
    task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}

/// Docker's name for a task's container: `SERVICE.SLOT.TASKID` (global
/// services: `SERVICE.NODEID.TASKID`), as Swarm names them.
pub fn container_name(task: &Task) -> String {
    template::task_name(task)
}

impl DockerExecutor {
    /// Connects to the local engine (negotiating the API version: Debian's
    /// 20.10 speaks 1.41) and adopts this node's existing containers.
    pub async fn connect(
        node_id: &str,
        extra_labels: HashMap<String, String>,
        run_dir: &std::path::Path,
        node_hostname: &str,
        overlay: Option<Arc<Overlay>>,
        admission: Admission,
    ) -> anyhow::Result<Arc<Self>> {
        // Tasks' secrets go under it: root's alone before any is written.
        super::task_dir::secure_run_dir(run_dir)?;
        let docker = Docker::connect_with_local_defaults()?
            .negotiate_version()
            .await?;
        let attachments = super::attachments::Attachments::new(docker.clone(), overlay.clone());
        let executor = Arc::new(Self {
            attachments,
            docker,
            node_id: Mutex::new(node_id.to_owned()),
            cluster_id: Mutex::default(),
            extra_labels,
            run_dir: run_dir.to_owned(),
            node_hostname: node_hostname.to_owned(),
            tasks: Arc::default(),
            report: Arc::default(),
            overlay,
            admission,
        });
        executor.adopt().await?;
        tokio::spawn(monitor::run(executor.clone()));
        Ok(executor)
    }

    /// The ids the manager knows this node and its cluster by (labels on
    /// new containers).
    pub fn set_identity(&self, node_id: &str, cluster_id: &str) {
        *self.node_id.lock().unwrap_or_else(|e| e.into_inner()) = node_id.to_owned();
        *self.cluster_id.lock().unwrap_or_else(|e| e.into_inner()) = cluster_id.to_owned();
    }

    fn node_id(&self) -> String {
        self.node_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The engine's version, for the node description.
    pub async fn engine_version(&self) -> String {
        self.docker
            .version()
            .await
            .ok()
            .and_then(|v| v.version)
            .unwrap_or_default()
    }

    fn send(&self, task: &str, status: TaskStatus) {
        if let Some(report) = self
            .report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = report.send(TaskStatusUpdate {
                task_id: task.to_owned(),
                status: Some(status),
            });
        }
    }

    fn set_reported(&self, task: &str, state: TaskState) {
        if let Some(t) = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(task)
        {
            t.reported = state;
            t.starting = false;
        }
    }

    /// Takes over the containers an earlier run started for this node; the
    /// monitor reports their real state.
    async fn adopt(&self) -> anyhow::Result<()> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_NODE}={}", self.node_id())],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for c in list {
            let (Some(id), Some(labels)) = (c.id, c.labels) else {
                continue;
            };
            let Some(task) = labels.get(LABEL_TASK_ID) else {
                continue;
            };
            tracing::info!(task = %task, container = %id, "adopted container");
            // "New" so the monitor reports what it finds.
            tasks.insert(
                task.clone(),
                Tracked {
                    container: id,
                    name: labels.get(LABEL_TASK_NAME).cloned().unwrap_or_default(),
                    reported: TaskState::New,
                    stopping: false,
                    starting: false,
                    health: TaskHealth::None,
                },
            );
        }
        Ok(())
    }

    async fn start(self: Arc<Self>, task: Task, mounts: Vec<Mount>) {
        let id = task_id(&task);
        let _turn = self.admission.start_turn().await;
        // The manager may have stopped it while it waited for its turn.
        let wanted = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .is_some_and(|t| t.starting && !t.stopping);
        if !wanted {
            return;
        }
        match self.create_and_start(&task, mounts).await {
            Ok((container, has_health)) => {
                let state = if has_health {
                    TaskState::Starting
                } else {
                    TaskState::Running
                };
                let message = if has_health {
                    "waiting for the health check"
                } else {
                    "started"
                };
                self.set_reported(&id, state);
                self.send(&id, status(state, message, "", 0, &container));
            }
            Err((state, err, container)) => {
                tracing::warn!(task = %id, error = %err, "task did not start");
                self.set_reported(&id, state);
                self.send(&id, status(state, "", &err, 0, &container));
            }
        }
    }

    /// Creates and starts the container; on failure, the state to report.
    async fn create_and_start(
        &self,
        task: &Task,
        mounts: Vec<Mount>,
    ) -> Result<(String, bool), (TaskState, String, String)> {
        let id = task_id(task);
        let container = task
            .spec
            .as_ref()
            .and_then(|s| s.container.clone())
            .unwrap_or_default();
        self.send(&id, status(TaskState::Preparing, "preparing", "", 0, ""));
        if self.docker.inspect_image(&container.image).await.is_err() {
            return Err((
                TaskState::Rejected,
                format!(
                    "image {} is not on this node (no registry is assumed: load it first)",
                    container.image
                ),
                String::new(),
            ));
        }
        // Named volumes first: the container mounts them.
        for request in mounts
            .iter()
            .filter_map(|m| container_body::volume(m, &task.service_name))
        {
            let name = request.name.clone().unwrap_or_default();
            if let Err(e) = self.docker.create_volume(request).await {
                return Err((
                    TaskState::Rejected,
                    format!("creating volume {name}: {e}"),
                    String::new(),
                ));
            }
        }
        let owner = container_body::Owner {
            node_id: self.node_id(),
            cluster_id: self
                .cluster_id
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            extra_labels: &self.extra_labels,
        };
        let own_resolv_conf = self
            .overlay
            .as_ref()
            .is_some_and(|o| o.resolver_for(task).is_some());
        let body = container_body::body(task, &id, &container, owner, mounts, own_resolv_conf);
        let healthcheck = body.healthcheck.clone();
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(container_name(task)),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| {
                (
                    TaskState::Rejected,
                    format!("creating the container: {e}"),
                    String::new(),
                )
            })?;
        if let Some(t) = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&id)
        {
            t.container = created.id.clone();
        }
        // Created, not started: Ready, as Swarm names it. Starting is for a
        // started container waiting for its health check, which a rolling
        // update times against its monitor window; the start itself and
        // the network plumbing after it are not timed (on a loaded host
        // they took past a 2 s window, and a healthy update rolled back).
        self.send(&id, status(TaskState::Ready, "created", "", 0, &created.id));
        self.docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .map_err(|e| {
                (
                    TaskState::Failed,
                    format!("starting the container: {e}"),
                    created.id.clone(),
                )
            })?;
        if let Err(e) = self.plug(task, &created.id).await {
            let _ = self
                .docker
                .remove_container(
                    &created.id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
            return Err((
                TaskState::Failed,
                format!("network: {e:#}"),
                created.id.clone(),
            ));
        }
        let has_health = healthcheck.is_some_and(|h| {
            h.test
                .as_ref()
                .is_some_and(|t| t.first().map(String::as_str) != Some("NONE"))
        }) || self.image_has_healthcheck(&container.image).await;
        Ok((created.id, has_health))
    }

    /// The task with Swarm's templates in its hostname, env values and
    /// mounts expanded for this node (the manager refused bad ones at
    /// create time; a task from an older manager can still fail here).
    fn expanded(&self, task: &Task) -> Result<Task, template::FieldError> {
        let mut task = task.clone();
        if task.node_id.is_empty() {
            task.node_id = self.node_id();
        }
        let context = self.template_context(&task);
        if let Some(container) = task.spec.as_mut().and_then(|s| s.container.as_mut()) {
            *container = template::expand_container(container, &context)?;
        }
        Ok(task)
    }

    /// Swarm's template context of `task` on this node.
    fn template_context(&self, task: &Task) -> template::Context {
        let node = NodeDescription {
            hostname: self.node_hostname.clone(),
            platform: Some(super::describe::platform()),
            ..Default::default()
        };
        template::Context::new(task, &node)
    }

    /// Plugs a started container into the task's networks.
    async fn plug(&self, task: &Task, container: &str) -> anyhow::Result<()> {
        let Some(overlay) = &self.overlay else {
            return Ok(());
        };
        if task.networks.is_empty() {
            return Ok(());
        }
        let pid = self
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await?
            .state
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| anyhow::anyhow!("the container is not running"))?;
        overlay.attach(task, pid as u32).await
    }

    /// Re-plugs a running container whose interfaces are missing (after an
    /// agent restart, or someone deleted them).
    async fn repair(self: Arc<Self>, task: Task, container: String) {
        let Some(overlay) = &self.overlay else { return };
        if task.networks.is_empty() || overlay.is_attached(&task).await {
            return;
        }
        tracing::warn!(task = %task_id(&task), "container is missing interfaces: plugging it again");
        if let Err(error) = self.plug(&task, &container).await {
            tracing::warn!(task = %task_id(&task), error = %format!("{error:#}"), "repairing the network failed");
        }
    }

    async fn image_has_healthcheck(&self, image: &str) -> bool {
        self.docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.config)
            .and_then(|c| c.healthcheck)
            .and_then(|h| h.test)
            .is_some_and(|t| t.first().map(String::as_str) != Some("NONE"))
    }

    async fn stop(self: Arc<Self>, task: Task, container: String) {
        let id = task_id(&task);
        let grace = task
            .spec
            .as_ref()
            .and_then(|s| s.container.as_ref())
            .and_then(|c| c.stop_grace_period_ms)
            .unwrap_or(DEFAULT_GRACE_MS);
        // No wait here: the manager sends the stop only once every node
        // has taken the task out of its tables (see the manager's
        // `dispatcher::drain`), so no new connection reaches it from now on.
        let options = StopContainerOptions {
            t: Some((grace / 1000).max(0) as i32),
            ..Default::default()
        };
        if let Err(error) = self.docker.stop_container(&container, Some(options)).await {
            tracing::debug!(task = %id, %error, "stop");
        }
        let _ = self
            .docker
            .remove_container(
                &container,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        files::remove(&self.run_dir, &id);
        self.send(
            &id,
            status(TaskState::Shutdown, "shutdown", "", 0, &container),
        );
    }
}

#[tonic::async_trait]
impl Executor for Arc<DockerExecutor> {
    fn counters(&self) -> Vec<shoal_api::pb::ServiceCounters> {
        self.overlay
            .as_ref()
            .map(|o| o.counters())
            .unwrap_or_default()
    }

    fn logs(&self, request: &shoal_api::pb::LogRequest) -> Option<crate::session::LogStream> {
        let tasks: Vec<super::logs::TaskContainer> = {
            let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            request
                .task_ids
                .iter()
                .filter_map(|id| {
                    let t = tasks.get(id).filter(|t| !t.container.is_empty())?;
                    Some(super::logs::TaskContainer {
                        task_id: id.clone(),
                        task_name: t.name.clone(),
                        container: t.container.clone(),
                    })
                })
                .collect()
        };
        Some(super::logs::stream(
            &self.docker,
            &self.node_id(),
            tasks,
            request,
        ))
    }

    async fn reconcile(
        &self,
        set: &AssignmentSet,
        report: &mpsc::UnboundedSender<TaskStatusUpdate>,
    ) {
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
        if let Some(overlay) = &self.overlay
            && let Err(error) = overlay.sync(set).await
        {
            tracing::warn!(error = %format!("{error:#}"), "overlay");
        }
        // Containers plugged into networks by `network connect` are not
        // the executor's: they go their own way.
        let (plugs, tasks): (Vec<&Task>, Vec<&Task>) = set
            .tasks
            .iter()
            .partition(|t| super::attachments::container_of(t).is_some());
        self.attachments.sync(&plugs, report).await;
        let assigned: HashSet<String> = tasks.iter().map(|t| task_id(t)).collect();
        // Tasks that run or start here (one being stopped is on its way out,
        // as the scheduler counts it).
        let mut holding = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|t| !t.stopping && !t.reported.is_terminal())
            .count();
        for task in tasks {
            let id = task_id(task);
            let tracked = self
                .tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
                .cloned();
            match (task.desired_state(), tracked) {
                (TaskState::Running, None) => {
                    if let Err(err) = self.admission.admit(holding) {
                        tracing::warn!(task = %id, error = %err, "task refused");
                        // Tracked as refused, so a later assignment set does
                        // not start it; its shutdown forgets it.
                        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).insert(
                            id.clone(),
                            Tracked {
                                container: String::new(),
                                name: task_name(task),
                                reported: TaskState::Rejected,
                                stopping: false,
                                starting: false,
                                health: TaskHealth::None,
                            },
                        );
                        let _ = report.send(TaskStatusUpdate {
                            task_id: id.clone(),
                            status: Some(status(TaskState::Rejected, "", &err, 0, "")),
                        });
                        continue;
                    }
                    let task = match self.expanded(task) {
                        Ok(task) => task,
                        Err(error) => {
                            let err = format!("expanding templates: {error}");
                            let _ = report.send(TaskStatusUpdate {
                                task_id: id.clone(),
                                status: Some(status(TaskState::Rejected, "", &err, 0, "")),
                            });
                            continue;
                        }
                    };
                    let task = &task;
                    let mut mounts = files::service_mounts(task);
                    let resolver = self.overlay.as_ref().and_then(|o| o.resolver_for(task));
                    let context = self.template_context(task);
                    let prepared = files::prepare(&self.run_dir, task, set, resolver, &context);
                    match prepared {
                        Ok(more) => mounts.extend(more),
                        Err(error) => {
                            let err = format!("preparing secrets and configs: {error:#}");
                            let _ = report.send(TaskStatusUpdate {
                                task_id: id.clone(),
                                status: Some(status(TaskState::Rejected, "", &err, 0, "")),
                            });
                            continue;
                        }
                    }
                    self.tasks.lock().unwrap_or_else(|e| e.into_inner()).insert(
                        id.clone(),
                        Tracked {
                            container: String::new(),
                            name: task_name(task),
                            reported: TaskState::Preparing,
                            stopping: false,
                            starting: true,
                            health: TaskHealth::None,
                        },
                    );
                    holding += 1;
                    tokio::spawn(self.clone().start(task.clone(), mounts));
                }
                (desired, Some(t)) if desired > TaskState::Running && !t.stopping => {
                    if let Some(t) = self
                        .tasks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_mut(&id)
                    {
                        t.stopping = true;
                    }
                    tokio::spawn(self.clone().stop(task.clone(), t.container.clone()));
                }
                (TaskState::Running, Some(t))
                    if !t.container.is_empty()
                        && !t.stopping
                        && !t.starting
                        && !t.reported.is_terminal() =>
                {
                    tokio::spawn(self.clone().repair(task.clone(), t.container.clone()));
                }
                (desired, None) if desired > TaskState::Running => {
                    // Never started here (or already gone): say it is down.
                    let _ = report.send(TaskStatusUpdate {
                        task_id: id.clone(),
                        status: Some(status(TaskState::Shutdown, "shutdown", "", 0, "")),
                    });
                }
                _ => {}
            }
        }
        // Containers of tasks the manager no longer assigns here go away
        // (an adopted container whose task moved, or one already reported
        // finished).
        let gone: Vec<(String, Tracked)> = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(id, t)| !assigned.contains(*id) && !t.container.is_empty() && !t.stopping)
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        for (id, t) in gone {
            self.tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            let docker = self.docker.clone();
            let run_dir = self.run_dir.clone();
            tokio::spawn(async move {
                let options = RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                let _ = docker.remove_container(&t.container, Some(options)).await;
                files::remove(&run_dir, &id);
            });
        }
    }
}

/// Removes every container a node's agent started (`shoal-agent leave`).
pub async fn remove_node_containers(node_id: &str) -> anyhow::Result<usize> {
    let docker = Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await?;
    let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL_NODE}={node_id}")])]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await?;
    let mut removed = 0;
    for id in list.into_iter().filter_map(|c| c.id) {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        docker.remove_container(&id, Some(options)).await?;
        removed += 1;
    }
    Ok(removed)
}
