//! `service update` and `service rollback`, and the `--update-*` /
//! `--rollback-*` flags `service create` shares with them.

use anyhow::{Context, Result, bail};
use clap::Args;
use shoal_api::pb::{
    Network, ServiceSpec, UpdateConfig, UpdateFailureAction, UpdateOrder, UpdateServiceRequest,
};

use super::{service::job, service_flags as flags};

/// How tasks are replaced when the spec changes (`--update-*`).
#[derive(Args, Default, Clone)]
pub struct UpdateFlags {
    /// Tasks updated at once (0: all at once; default 1).
    #[arg(long)]
    pub update_parallelism: Option<u64>,
    /// Pause between batches (e.g. 2s).
    #[arg(long)]
    pub update_delay: Option<String>,
    /// What a failed update does: pause, continue or rollback.
    #[arg(long, value_parser = ["pause", "continue", "rollback"])]
    pub update_failure_action: Option<String>,
    /// How long each new task is watched for failure (default 5s).
    #[arg(long)]
    pub update_monitor: Option<String>,
    /// Failures tolerated, as a fraction of the tasks updated (0 to 1).
    #[arg(long)]
    pub update_max_failure_ratio: Option<f32>,
    /// Update order: stop the old task first (default) or start the new one first.
    #[arg(long, value_parser = ["stop-first", "start-first"])]
    pub update_order: Option<String>,
}

/// How a rollback replaces tasks (`--rollback-*`).
#[derive(Args, Default, Clone)]
pub struct RollbackFlags {
    /// Tasks rolled back at once (0: all at once; default 1).
    #[arg(long)]
    pub rollback_parallelism: Option<u64>,
    /// Pause between batches of the rollback.
    #[arg(long)]
    pub rollback_delay: Option<String>,
    /// What a failed rollback does: pause or continue.
    #[arg(long, value_parser = ["pause", "continue"])]
    pub rollback_failure_action: Option<String>,
    /// How long each rolled-back task is watched for failure.
    #[arg(long)]
    pub rollback_monitor: Option<String>,
    /// Failures tolerated during a rollback (0 to 1).
    #[arg(long)]
    pub rollback_max_failure_ratio: Option<f32>,
    /// Rollback order: stop the task first (default) or start its replacement first.
    #[arg(long, value_parser = ["stop-first", "start-first"])]
    pub rollback_order: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn apply(
    config: &mut Option<UpdateConfig>,
    what: &str,
    parallelism: Option<u64>,
    delay: &Option<String>,
    failure_action: &Option<String>,
    monitor: &Option<String>,
    max_failure_ratio: Option<f32>,
    order: &Option<String>,
) -> Result<()> {
    let untouched = parallelism.is_none()
        && delay.is_none()
        && failure_action.is_none()
        && monitor.is_none()
        && max_failure_ratio.is_none()
        && order.is_none();
    if untouched {
        return Ok(());
    }
    let c = config.get_or_insert_with(Default::default);
    if let Some(p) = parallelism {
        c.parallelism = Some(p);
    }
    if let Some(d) = delay {
        c.delay_ms = flags::duration_ms(d).with_context(|| format!("--{what}-delay"))?;
    }
    if let Some(a) = failure_action {
        c.failure_action = match a.as_str() {
            "continue" => UpdateFailureAction::Continue,
            "rollback" => UpdateFailureAction::Rollback,
            _ => UpdateFailureAction::Pause,
        } as i32;
    }
    if let Some(m) = monitor {
        c.monitor_ms = Some(flags::duration_ms(m).with_context(|| format!("--{what}-monitor"))?);
    }
    if let Some(r) = max_failure_ratio {
        if !(0.0..=1.0).contains(&r) {
            bail!("invalid --{what}-max-failure-ratio {r}: expected a number from 0 to 1");
        }
        c.max_failure_ratio = r;
    }
    if let Some(o) = order {
        c.order = if o == "start-first" {
            UpdateOrder::StartFirst
        } else {
            UpdateOrder::StopFirst
        } as i32;
    }
    Ok(())
}

impl UpdateFlags {
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<()> {
        apply(
            &mut spec.update,
            "update",
            self.update_parallelism,
            &self.update_delay,
            &self.update_failure_action,
            &self.update_monitor,
            self.update_max_failure_ratio,
            &self.update_order,
        )
    }
}

impl RollbackFlags {
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<()> {
        apply(
            &mut spec.rollback,
            "rollback",
            self.rollback_parallelism,
            &self.rollback_delay,
            &self.rollback_failure_action,
            &self.rollback_monitor,
            self.rollback_max_failure_ratio,
            &self.rollback_order,
        )
    }
}

#[derive(Args)]
pub struct UpdateArgs {
    /// The service to update (ID or name).
    pub service: String,
    /// A new image for the service's tasks.
    #[arg(long)]
    pub image: Option<String>,
    /// Add or change an environment variable (KEY=VALUE); repeatable.
    #[arg(long)]
    pub env_add: Vec<String>,
    /// Remove an environment variable (KEY); repeatable.
    #[arg(long)]
    pub env_rm: Vec<String>,
    /// Number of tasks (replicated mode), or a replicated job's completions.
    #[arg(long)]
    pub replicas: Option<u64>,
    /// Number of job tasks to run concurrently (replicated-job mode).
    #[arg(long)]
    pub max_concurrent: Option<u64>,
    /// Publish a port (as --publish); repeatable.
    #[arg(long)]
    pub publish_add: Vec<String>,
    /// Stop publishing a port: its target (80, 80/udp) or PUBLISHED:TARGET.
    #[arg(long)]
    pub publish_rm: Vec<String>,
    /// Give the tasks a secret (as --secret); repeatable.
    #[arg(long)]
    pub secret_add: Vec<String>,
    /// Take a secret away (its name); repeatable.
    #[arg(long)]
    pub secret_rm: Vec<String>,
    /// Give the tasks a config (as --config); repeatable.
    #[arg(long)]
    pub config_add: Vec<String>,
    /// Take a config away (its name); repeatable.
    #[arg(long)]
    pub config_rm: Vec<String>,
    /// Replace the tasks even if nothing changed.
    #[arg(long)]
    pub force: bool,
    /// Rollback to previous specification (no other change may be asked with it).
    #[arg(long = "rollback")]
    pub rollback_now: bool,
    /// Return at once instead of showing the update's progress.
    #[arg(short, long, env = "SHOAL_DETACH")]
    pub detach: bool,
    /// Suppress progress output.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub spec: crate::commands::service::spec_flags::SpecFlags,
    #[command(flatten)]
    pub lists: crate::commands::service::update_lists::UpdateLists,
    #[command(flatten)]
    pub update: UpdateFlags,
    #[command(flatten)]
    pub rollback: RollbackFlags,
}

impl UpdateArgs {
    /// Whether networks are named (the caller then lists them, to match
    /// names with the ids a spec holds).
    pub fn names_networks(&self) -> bool {
        !self.lists.network_add.is_empty() || !self.lists.network_rm.is_empty()
    }

    /// The spec after these changes; `networks` are the cluster's (for
    /// `--network-add`/`--network-rm` by name).
    pub fn changed(&self, mut spec: ServiceSpec, networks: &[Network]) -> Result<ServiceSpec> {
        let network_id = |query: &str| {
            networks
                .iter()
                .find(|n| {
                    n.meta.as_ref().is_some_and(|m| m.id == query)
                        || n.spec.as_ref().is_some_and(|s| s.name == query)
                })
                .and_then(|n| n.meta.as_ref().map(|m| m.id.clone()))
        };
        self.spec.apply(&mut spec)?;
        self.lists.apply(&mut spec, &network_id)?;
        if let Some(replicas) = self.replicas {
            if !spec.mode().is_replicated() {
                bail!("--replicas can only be used with replicated or replicated-job mode");
            }
            spec.replicas = replicas;
        }
        job::set_max_concurrent(&mut spec, self.max_concurrent)?;
        let task = spec.task.get_or_insert_with(Default::default);
        let container = task.container.get_or_insert_with(Default::default);
        if let Some(image) = &self.image {
            container.image = image.clone();
        }
        for key in &self.env_rm {
            container
                .env
                .retain(|e| e.split('=').next() != Some(key.as_str()));
        }
        for add in &self.env_add {
            let add = flags::parse_env(add)?;
            let key = add.split('=').next().unwrap_or_default().to_owned();
            container
                .env
                .retain(|e| e.split('=').next() != Some(key.as_str()));
            container.env.push(add);
        }
        for name in &self.secret_rm {
            let before = container.secrets.len();
            container
                .secrets
                .retain(|s| &s.secret_name != name && &s.secret_id != name);
            if before == container.secrets.len() {
                bail!("--secret-rm {name}: the service does not use that secret");
            }
        }
        for add in &self.secret_add {
            container.secrets.push(flags::parse_secret(add)?);
        }
        for name in &self.config_rm {
            let before = container.configs.len();
            container
                .configs
                .retain(|c| &c.config_name != name && &c.config_id != name);
            if before == container.configs.len() {
                bail!("--config-rm {name}: the service does not use that config");
            }
        }
        for add in &self.config_add {
            container.configs.push(flags::parse_config(add)?);
        }
        if self.force {
            task.force_update += 1;
        }
        let endpoint = spec.endpoint.get_or_insert_with(Default::default);
        for rm in &self.publish_rm {
            let (port, protocol) = rm.split_once('/').unwrap_or((rm, "tcp"));
            let (published, target) = match port.split_once(':') {
                Some((p, t)) => (Some(p), t),
                None => (None, port),
            };
            let target: u32 = target.parse().with_context(|| {
                format!("invalid --publish-rm {rm:?}: expected TARGET[/PROTO] or PUBLISHED:TARGET")
            })?;
            let before = endpoint.ports.len();
            endpoint.ports.retain(|p| {
                !(p.target_port == target
                    && p.protocol == protocol
                    && published.is_none_or(|pp| pp == p.published_port.to_string()))
            });
            if before == endpoint.ports.len() {
                bail!("--publish-rm {rm}: the service does not publish that port");
            }
        }
        for add in &self.publish_add {
            endpoint.ports.push(flags::parse_publish(add)?);
        }
        let configs = (spec.update, spec.rollback);
        self.update.apply(&mut spec)?;
        self.rollback.apply(&mut spec)?;
        if (spec.update, spec.rollback) != configs {
            job::refuse_update_config(&spec)?;
        }
        Ok(spec)
    }

    /// The update to send: the changed spec, or with `--rollback` the
    /// previous one (Docker's rule: nothing else may be asked with it).
    pub fn request(
        &self,
        id: &str,
        version: u64,
        spec: ServiceSpec,
        networks: &[Network],
    ) -> Result<UpdateServiceRequest> {
        if self.rollback_now {
            if self.force || self.changed(spec.clone(), networks)? != spec {
                bail!("other flags may not be combined with --rollback");
            }
            return Ok(UpdateServiceRequest {
                id: id.to_owned(),
                version,
                spec: None,
                rollback: true,
            });
        }
        Ok(UpdateServiceRequest {
            id: id.to_owned(),
            version,
            spec: Some(self.changed(spec, networks)?),
            rollback: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use shoal_api::pb::{ContainerSpec, EndpointSpec, PortConfig, SecretReference, TaskSpec};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: UpdateArgs,
    }

    fn update(argv: &[&str], spec: ServiceSpec) -> Result<ServiceSpec> {
        let mut all = vec!["shoal", "web"];
        all.extend_from_slice(argv);
        Cli::try_parse_from(all)?.args.changed(spec, &[])
    }

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            replicas: 2,
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "shoal/echo:1".into(),
                    env: vec!["A=1".into(), "B=2".into()],
                    secrets: vec![SecretReference {
                        secret_name: "old".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            endpoint: Some(EndpointSpec {
                mode: "vip".into(),
                ports: vec![PortConfig {
                    protocol: "tcp".into(),
                    target_port: 80,
                    published_port: 8080,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_flag_changes_what_it_names_and_nothing_else() {
        let out = update(
            &[
                "--image",
                "shoal/echo:2",
                "--env-add",
                "B=3",
                "--env-add",
                "C=4",
                "--env-rm",
                "A",
                "--replicas",
                "4",
                "--publish-rm",
                "80",
                "--publish-add",
                "9090:90/udp",
                "--secret-rm",
                "old",
                "--secret-add",
                "source=new,target=pw",
                "--force",
                "--update-parallelism",
                "2",
                "--update-delay",
                "2s",
                "--update-failure-action",
                "rollback",
                "--update-order",
                "start-first",
                "--rollback-parallelism",
                "0",
            ],
            spec(),
        )
        .unwrap();
        let task = out.task.clone().unwrap();
        let c = task.container.unwrap();
        assert_eq!(c.image, "shoal/echo:2");
        assert_eq!(c.env, ["B=3", "C=4"]);
        assert_eq!(out.replicas, 4);
        assert_eq!(c.secrets.len(), 1);
        assert_eq!(c.secrets[0].secret_name, "new");
        assert_eq!(c.secrets[0].file.as_ref().unwrap().name, "pw");
        assert_eq!(task.force_update, 1);
        let ports = out.endpoint.unwrap().ports;
        assert_eq!(
            (
                ports.len(),
                ports[0].published_port,
                ports[0].protocol.as_str()
            ),
            (1, 9090, "udp")
        );
        let u = out.update.unwrap();
        assert_eq!((u.parallelism, u.delay_ms), (Some(2), 2_000));
        assert_eq!(u.failure_action(), UpdateFailureAction::Rollback);
        assert_eq!(u.order(), UpdateOrder::StartFirst);
        assert_eq!(out.rollback.unwrap().parallelism, Some(0));
        // Nothing asked, nothing changed.
        assert_eq!(update(&[], spec()).unwrap(), spec());
    }

    #[test]
    fn removing_what_is_not_there_is_an_error_that_says_so() {
        let err = update(&["--secret-rm", "nope"], spec())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--secret-rm nope: the service does not use that secret"),
            "{err}"
        );
        let err = update(&["--publish-rm", "81"], spec())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not publish that port"), "{err}");
        let err = update(&["--update-max-failure-ratio", "2"], spec())
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a number from 0 to 1"), "{err}");
    }
}
