//! `service create`: its flags and the spec they make.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use clap::Args;
use shoal_api::pb::{
    ContainerSpec, EndpointSpec, HealthConfig, Placement, ResourceRequirements, Resources,
    RestartCondition, RestartPolicy, ServiceMode, ServiceSpec, TaskSpec,
};

use crate::commands::service_flags as flags;

#[derive(Args)]
pub struct CreateArgs {
    /// The image to run (must be on the nodes: no registry is assumed).
    image: String,
    /// Command and arguments, in place of the image's CMD.
    #[arg(trailing_var_arg = true)]
    command: Vec<String>,
    /// Service name.
    #[arg(long)]
    name: Option<String>,
    /// Number of tasks (replicated mode; default 1).
    #[arg(long)]
    replicas: Option<u64>,
    /// Service mode: a number of replicas, or one task on every node.
    #[arg(long, value_parser = ["replicated", "global"], default_value = "replicated")]
    mode: String,
    /// Placement constraint, e.g. node.labels.zone==east; repeatable.
    #[arg(long)]
    constraint: Vec<String>,
    /// Placement preference, e.g. spread=node.labels.zone; repeatable.
    #[arg(long = "placement-pref")]
    placement_pref: Vec<String>,
    /// Maximum number of tasks per node (0: unlimited).
    #[arg(long)]
    replicas_max_per_node: Option<u64>,
    /// Reserve CPUs (e.g. 0.5): only nodes with that much unreserved get tasks.
    #[arg(long)]
    reserve_cpu: Option<String>,
    /// Reserve memory (e.g. 512m, 1g): only nodes with that much unreserved get tasks.
    #[arg(long)]
    reserve_memory: Option<String>,
    /// Limit CPUs (e.g. 1.5).
    #[arg(long)]
    limit_cpu: Option<String>,
    /// Limit memory (e.g. 256m).
    #[arg(long)]
    limit_memory: Option<String>,
    /// Set environment variables (KEY=VALUE); repeatable.
    #[arg(short, long)]
    env: Vec<String>,
    /// Service labels (key=value); repeatable.
    #[arg(short, long)]
    label: Vec<String>,
    /// Container labels (key=value); repeatable.
    #[arg(long)]
    container_label: Vec<String>,
    /// Restart a task's container when this condition is met.
    #[arg(long, value_parser = ["none", "on-failure", "any"])]
    restart_condition: Option<String>,
    /// Delay between restart attempts (e.g. 5s).
    #[arg(long)]
    restart_delay: Option<String>,
    /// Maximum number of restarts before giving up.
    #[arg(long)]
    restart_max_attempts: Option<u64>,
    /// Window used to evaluate the restart policy (e.g. 1m).
    #[arg(long)]
    restart_window: Option<String>,
    /// Publish a port: published:target[/proto][,mode=ingress|host]; repeatable.
    #[arg(short, long)]
    publish: Vec<String>,
    /// Network to attach to; repeatable.
    #[arg(long)]
    network: Vec<String>,
    /// Secret to expose: name or source=…,target=…,uid=…,gid=…,mode=…; repeatable.
    #[arg(long)]
    secret: Vec<String>,
    /// Config to expose: name or source=…,target=…,uid=…,gid=…,mode=…; repeatable.
    #[arg(long)]
    config: Vec<String>,
    /// Attach a filesystem mount (type=bind|volume|tmpfs,source=…,target=…); repeatable.
    #[arg(long)]
    mount: Vec<String>,
    /// Command to run to check health: a shell command, or a JSON array
    /// for images without a shell (`'["CMD","/echo","healthcheck"]'`).
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between running the check (e.g. 30s).
    #[arg(long)]
    health_interval: Option<String>,
    /// Maximum time to allow one check to run (e.g. 5s).
    #[arg(long)]
    health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long)]
    health_retries: Option<u64>,
    /// Start period for the container to initialize before failures count (e.g. 10s).
    #[arg(long)]
    health_start_period: Option<String>,
    /// Disable any container-specified health check.
    #[arg(long)]
    no_healthcheck: bool,
    /// Time to wait before force killing a container (e.g. 10s).
    #[arg(long)]
    stop_grace_period: Option<String>,
    /// Signal to stop the container (e.g. SIGTERM).
    #[arg(long)]
    stop_signal: Option<String>,
    /// Container hostname (templates such as {{.Task.Slot}} allowed).
    #[arg(long)]
    hostname: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Endpoint mode (vip or dnsrr).
    #[arg(long, value_parser = ["vip", "dnsrr"])]
    endpoint_mode: Option<String>,
    /// Return at once instead of showing the tasks' progress.
    #[arg(short, long, env = "SHOAL_DETACH")]
    pub(super) detach: bool,
    /// Print only the service ID.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    update: crate::commands::service_update::UpdateFlags,
    #[command(flatten)]
    rollback: crate::commands::service_update::RollbackFlags,
}

impl CreateArgs {
    pub(super) fn spec(self) -> Result<ServiceSpec> {
        let mode = ServiceMode::from_word(&self.mode).unwrap_or_default();
        if mode == ServiceMode::Global && self.replicas.is_some() {
            bail!("--replicas can only be used with replicated mode");
        }
        if mode == ServiceMode::Global && self.replicas_max_per_node.is_some() {
            bail!("--replicas-max-per-node can only be used with replicated mode");
        }
        let resources =
            |cpu: &Option<String>, memory: &Option<String>| -> Result<Option<Resources>> {
                if cpu.is_none() && memory.is_none() {
                    return Ok(None);
                }
                Ok(Some(Resources {
                    pids: 0,
                    nano_cpus: cpu
                        .as_deref()
                        .map(flags::parse_cpus)
                        .transpose()?
                        .unwrap_or(0),
                    memory_bytes: memory
                        .as_deref()
                        .map(flags::parse_bytes)
                        .transpose()?
                        .unwrap_or(0),
                }))
            };
        let reservations = resources(&self.reserve_cpu, &self.reserve_memory)?;
        let limits = resources(&self.limit_cpu, &self.limit_memory)?;
        let restart = RestartPolicy {
            condition: self
                .restart_condition
                .as_deref()
                .map(|c| RestartCondition::from_word(c).unwrap_or_default())
                .unwrap_or_default() as i32,
            delay_ms: self
                .restart_delay
                .as_deref()
                .map(flags::duration_ms)
                .transpose()?,
            max_attempts: self.restart_max_attempts.unwrap_or(0),
            window_ms: self
                .restart_window
                .as_deref()
                .map(flags::duration_ms)
                .transpose()?
                .unwrap_or(0),
        };
        let mut spread = Vec::new();
        for pref in &self.placement_pref {
            let Some(descriptor) = pref.strip_prefix("spread=") else {
                bail!("invalid --placement-pref {pref:?}: expected spread=node.labels.NAME");
            };
            spread.push(descriptor.to_owned());
        }
        let healthcheck = if self.no_healthcheck {
            Some(HealthConfig {
                test: vec!["NONE".into()],
                ..Default::default()
            })
        } else if self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
        {
            Some(HealthConfig {
                start_interval_ms: 0,
                test: match &self.health_cmd {
                    Some(cmd) => health_test(cmd)?,
                    None => Vec::new(),
                },
                interval_ms: self
                    .health_interval
                    .as_deref()
                    .map(flags::duration_ms)
                    .transpose()?
                    .unwrap_or(0),
                timeout_ms: self
                    .health_timeout
                    .as_deref()
                    .map(flags::duration_ms)
                    .transpose()?
                    .unwrap_or(0),
                retries: self.health_retries.unwrap_or(0),
                start_period_ms: self
                    .health_start_period
                    .as_deref()
                    .map(flags::duration_ms)
                    .transpose()?
                    .unwrap_or(0),
            })
        } else {
            None
        };
        let name = match self.name {
            Some(n) => n,
            None => bail!("--name is required (Shoal does not invent service names)"),
        };
        let mut spec = ServiceSpec {
            name,
            labels: self
                .label
                .iter()
                .map(|l| flags::parse_label(l))
                .collect::<Result<BTreeMap<_, _>>>()?,
            mode: mode as i32,
            replicas: match mode {
                ServiceMode::Replicated => self.replicas.unwrap_or(1),
                ServiceMode::Global => 0,
            },
            task: Some(TaskSpec {
                log_driver: None,
                attachment: None,
                container: Some(ContainerSpec {
                    image: self.image,
                    args: self.command,
                    env: self
                        .env
                        .iter()
                        .map(|e| flags::parse_env(e))
                        .collect::<Result<_>>()?,
                    labels: self
                        .container_label
                        .iter()
                        .map(|l| flags::parse_label(l))
                        .collect::<Result<_>>()?,
                    hostname: self.hostname.unwrap_or_default(),
                    user: self.user.unwrap_or_default(),
                    dir: self.workdir.unwrap_or_default(),
                    mounts: self
                        .mount
                        .iter()
                        .map(|m| flags::parse_mount(m))
                        .collect::<Result<_>>()?,
                    secrets: self
                        .secret
                        .iter()
                        .map(|s| flags::parse_secret(s))
                        .collect::<Result<_>>()?,
                    configs: self
                        .config
                        .iter()
                        .map(|c| flags::parse_config(c))
                        .collect::<Result<_>>()?,
                    healthcheck,
                    stop_grace_period_ms: self
                        .stop_grace_period
                        .as_deref()
                        .map(flags::duration_ms)
                        .transpose()?,
                    stop_signal: self.stop_signal.unwrap_or_default(),
                    ..Default::default()
                }),
                resources: (reservations.is_some() || limits.is_some()).then_some(
                    ResourceRequirements {
                        limits,
                        reservations,
                        ..Default::default()
                    },
                ),
                restart: Some(restart),
                placement: Some(Placement {
                    constraints: self.constraint,
                    spread,
                    max_replicas_per_node: self.replicas_max_per_node.unwrap_or(0),
                }),
                networks: self
                    .network
                    .iter()
                    .map(|n| flags::parse_network(n))
                    .collect::<Result<_>>()?,
                force_update: 0,
            }),
            endpoint: Some(EndpointSpec {
                mode: self.endpoint_mode.unwrap_or_else(|| "vip".into()),
                ports: self
                    .publish
                    .iter()
                    .map(|p| flags::parse_publish(p))
                    .collect::<Result<_>>()?,
            }),
            update: None,
            rollback: None,
        };
        self.update.apply(&mut spec)?;
        self.rollback.apply(&mut spec)?;
        Ok(spec)
    }
}

/// Docker's health test for `--health-cmd`: `CMD-SHELL cmd`, or the exec
/// form given as a JSON array.
pub(super) fn health_test(cmd: &str) -> Result<Vec<String>> {
    if !cmd.trim_start().starts_with('[') {
        return Ok(vec!["CMD-SHELL".to_owned(), cmd.to_owned()]);
    }
    let words: Vec<String> = serde_json::from_str(cmd).with_context(|| {
        format!("invalid --health-cmd {cmd:?}: expected a JSON array of strings")
    })?;
    match words.first().map(String::as_str) {
        Some("CMD") | Some("CMD-SHELL") | Some("NONE") => Ok(words),
        _ => Ok([vec!["CMD".to_owned()], words].concat()),
    }
}
