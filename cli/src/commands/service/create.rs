//! `service create`: its flags and the spec they make.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use clap::Args;
use shoal_api::pb::{ContainerSpec, EndpointSpec, Placement, RestartPolicy, ServiceSpec, TaskSpec};

use crate::commands::service_flags as flags;

#[derive(Args)]
pub struct CreateArgs {
    /// The image to run (must be on the nodes: no registry is assumed).
    image: String,
    /// Command and arguments, in place of the image's CMD.
    #[arg(trailing_var_arg = true)]
    command: Vec<String>,
    /// Service name (default: one the manager makes up, as Docker's).
    #[arg(long)]
    name: Option<String>,
    /// Number of tasks (replicated mode; default 1), or a replicated job's
    /// completions.
    #[arg(long)]
    replicas: Option<u64>,
    /// Service mode: replicas or one task on every node, kept running;
    /// or a job (replicated-job, global-job) whose tasks run to completion.
    #[arg(long, value_parser = super::job::MODES, default_value = "replicated")]
    mode: String,
    /// Number of job tasks to run concurrently (default equal to --replicas).
    #[arg(long)]
    max_concurrent: Option<u64>,
    /// Placement constraint, e.g. node.labels.zone==east; repeatable.
    #[arg(long)]
    constraint: Vec<String>,
    /// Placement preference, e.g. spread=node.labels.zone; repeatable.
    #[arg(long = "placement-pref")]
    placement_pref: Vec<String>,
    /// Set environment variables (KEY=VALUE); repeatable.
    #[arg(short, long)]
    env: Vec<String>,
    /// Read in a file of environment variables (KEY=VALUE lines, `#`
    /// comments; -e overrides them); repeatable.
    #[arg(long)]
    env_file: Vec<std::path::PathBuf>,
    /// Service labels (key=value); repeatable.
    #[arg(short, long)]
    label: Vec<String>,
    /// Container labels (key=value); repeatable.
    #[arg(long)]
    container_label: Vec<String>,
    /// Publish a port: published:target[/proto][,mode=ingress|host][,allow=CIDR[;CIDR]][,dsr=true]
    /// [,proxy-protocol=v2]; repeatable (dsr: direct server return, the task's node answers the
    /// client itself; proxy-protocol=v2: TCP in ingress mode, each connection reaches the task
    /// through the agent's relay with a PROXY protocol v2 header carrying the client's address).
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
    /// Return at once instead of showing the tasks' progress.
    #[arg(short, long, env = "SHOAL_DETACH")]
    pub(super) detach: bool,
    /// Suppress progress output.
    #[arg(short, long)]
    pub(super) quiet: bool,
    #[command(flatten)]
    flags: super::spec_flags::SpecFlags,
    #[command(flatten)]
    lists: super::engine_lists::EngineLists,
    #[command(flatten)]
    update: crate::commands::service_update::UpdateFlags,
    #[command(flatten)]
    rollback: crate::commands::service_update::RollbackFlags,
}

impl CreateArgs {
    pub(super) fn spec(self) -> Result<ServiceSpec> {
        let (mode, replicas, max_concurrent) = super::job::mode_fields(
            &self.mode,
            self.replicas,
            self.max_concurrent,
            self.flags.replicas_max_per_node,
        )?;
        let mut spread = Vec::new();
        for pref in &self.placement_pref {
            let Some(descriptor) = pref.strip_prefix("spread=") else {
                bail!("invalid --placement-pref {pref:?}: expected spread=node.labels.NAME");
            };
            spread.push(descriptor.to_owned());
        }
        // The manager names a service given none (Docker's way).
        let name = self.name.unwrap_or_default();
        let mut spec = ServiceSpec {
            name,
            labels: self
                .label
                .iter()
                .map(|l| flags::parse_label(l))
                .collect::<Result<BTreeMap<_, _>>>()?,
            mode: mode as i32,
            replicas,
            max_concurrent,
            task: Some(TaskSpec {
                attachment: None,
                container: Some(ContainerSpec {
                    image: self.image,
                    args: self.command,
                    env: environment(&self.env_file, &self.env)?,
                    labels: self
                        .container_label
                        .iter()
                        .map(|l| flags::parse_label(l))
                        .collect::<Result<_>>()?,
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
                    // Docker's create always says whether (its default: no).
                    init: Some(false),
                    ..Default::default()
                }),
                restart: Some(RestartPolicy::default()),
                placement: Some(Placement {
                    constraints: self.constraint,
                    spread,
                    max_replicas_per_node: 0,
                }),
                networks: self
                    .network
                    .iter()
                    .map(|n| flags::parse_network(n))
                    .collect::<Result<_>>()?,
                ..Default::default()
            }),
            endpoint: Some(EndpointSpec {
                mode: "vip".into(),
                ports: self
                    .publish
                    .iter()
                    .map(|p| flags::parse_publish(p))
                    .collect::<Result<_>>()?,
                ..Default::default()
            }),
            update: None,
            rollback: None,
        };
        self.flags.apply(&mut spec)?;
        if let Some(task) = spec.task.as_mut() {
            self.lists.apply(task)?;
        }
        self.update.apply(&mut spec)?;
        self.rollback.apply(&mut spec)?;
        super::job::refuse_update_config(&spec)?;
        Ok(spec)
    }
}

/// `--env-file` lines, then `--env`; of one name, the last given stays
/// (at its place), as Docker's makeEnv.
fn environment(files: &[std::path::PathBuf], env: &[String]) -> Result<Vec<String>> {
    let mut all = Vec::new();
    for file in files {
        all.extend(super::env_file::read(file, &|k| std::env::var(k).ok())?);
    }
    for e in env {
        all.push(flags::parse_env(e)?);
    }
    let mut out: Vec<String> = Vec::new();
    for entry in all {
        let key = entry
            .split_once('=')
            .map_or(entry.as_str(), |(k, _)| k)
            .to_owned();
        out.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        out.push(entry);
    }
    Ok(out)
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
