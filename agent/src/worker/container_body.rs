//! What the Docker engine is asked to create for a task: its container's
//! body (image, command, env, labels naming the cluster objects, hostname,
//! health check, limits, mounts) and the named volumes it mounts. Pure: the
//! executor ([`super::docker`]) makes the calls.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, Mount, MountType, VolumeCreateRequest,
};
use shoal_api::{
    pb::{ContainerSpec, Task},
    template,
};

use super::docker::{
    LABEL_CLUSTER, LABEL_NODE, LABEL_SERVICE_ID, LABEL_SERVICE_NAME, LABEL_TASK_ID, LABEL_TASK_NAME,
};

/// `SERVICE.SLOT` (global services: `SERVICE.NODEID`): a task's default
/// hostname, its `com.shoal.task.name` label and `SHOAL_TASK_NAME`.
pub fn task_name(task: &Task) -> String {
    format!("{}.{}", task.service_name, template::task_slot(task))
}

/// Who the container belongs to, as its labels say.
pub struct Owner<'a> {
    pub node_id: String,
    pub cluster_id: String,
    /// The agent's `--container-label`s.
    pub extra_labels: &'a HashMap<String, String>,
}

/// The body of `task`'s container (`container` is its spec, templates
/// already expanded), mounting `mounts`. `own_resolv_conf`: the agent
/// writes its resolv.conf (see [`super::engine_options`]).
pub fn body(
    task: &Task,
    task_id: &str,
    container: &ContainerSpec,
    owner: Owner<'_>,
    mounts: Vec<Mount>,
    own_resolv_conf: bool,
) -> ContainerCreateBody {
    let mut labels: HashMap<String, String> = container.labels.clone().into_iter().collect();
    labels.extend(owner.extra_labels.clone());
    labels.insert(LABEL_NODE.into(), owner.node_id);
    labels.insert(LABEL_CLUSTER.into(), owner.cluster_id);
    labels.insert(LABEL_SERVICE_ID.into(), task.service_id.clone());
    labels.insert(LABEL_SERVICE_NAME.into(), task.service_name.clone());
    labels.insert(LABEL_TASK_ID.into(), task_id.to_owned());
    labels.insert(LABEL_TASK_NAME.into(), task_name(task));
    let mut env = container.env.clone();
    env.push(format!("SHOAL_TASK_NAME={}", task_name(task)));
    let healthcheck = container.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.clone()),
        interval: (h.interval_ms > 0).then_some(h.interval_ms * 1_000_000),
        timeout: (h.timeout_ms > 0).then_some(h.timeout_ms * 1_000_000),
        retries: (h.retries > 0).then_some(h.retries as i64),
        start_period: (h.start_period_ms > 0).then_some(h.start_period_ms * 1_000_000),
        ..Default::default()
    });
    let resources = task
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.limits);
    // Templates were expanded before the task got here (`expanded`).
    let hostname = if container.hostname.is_empty() {
        task_name(task)
    } else {
        container.hostname.clone()
    };
    let mut body = ContainerCreateBody {
        image: Some(container.image.clone()),
        cmd: (!container.args.is_empty()).then(|| container.args.clone()),
        entrypoint: (!container.command.is_empty()).then(|| container.command.clone()),
        env: Some(env),
        labels: Some(labels),
        hostname: Some(hostname),
        user: (!container.user.is_empty()).then(|| container.user.clone()),
        working_dir: (!container.dir.is_empty()).then(|| container.dir.clone()),
        healthcheck,
        stop_signal: (!container.stop_signal.is_empty()).then(|| container.stop_signal.clone()),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            mounts: (!mounts.is_empty()).then_some(mounts),
            nano_cpus: resources.map(|r| r.nano_cpus).filter(|n| *n > 0),
            memory: resources.map(|r| r.memory_bytes).filter(|n| *n > 0),
            ..Default::default()
        }),
        ..Default::default()
    };
    super::engine_options::apply(task, container, own_resolv_conf, &mut body);
    body
}

/// The named volume `mount` uses, to create through the volume API (local
/// driver): it outlives the task, so a replacement finds its data. None for
/// other mounts.
pub fn volume(mount: &Mount, service_name: &str) -> Option<VolumeCreateRequest> {
    let (Some(MountType::VOLUME), Some(name)) = (&mount.typ, &mount.source) else {
        return None;
    };
    // `volume-label` and `volume-opt` apply when the volume is created
    // (Docker ignores them for one that exists).
    let options = mount.volume_options.clone().unwrap_or_default();
    let mut labels = options.labels.unwrap_or_default();
    labels.insert(LABEL_SERVICE_NAME.to_owned(), service_name.to_owned());
    Some(VolumeCreateRequest {
        name: Some(name.clone()),
        driver: Some("local".into()),
        driver_opts: options.driver_config.and_then(|d| d.options),
        labels: Some(labels),
        ..Default::default()
    })
}
