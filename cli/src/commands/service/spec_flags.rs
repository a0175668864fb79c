//! The flags `service create` and `service update` share, each setting one
//! field of the spec (`--user`, `--limit-pids`, `--init`, `--health-*`,
//! `--restart-*`, `--log-driver` …): `create` applies them to a new spec,
//! `update` to the service's, changing only what was given, as Docker's
//! `addServiceFlags` and `updateService` do.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use clap::Args;
use shoal_api::pb::{
    HealthConfig, LogDriver, RestartCondition, RestartPolicy, ServiceSpec, TaskSpec,
};

use crate::commands::service_flags as flags;

#[derive(Args, Default, Clone)]
pub struct SpecFlags {
    /// Container hostname (templates such as {{.Task.Slot}} allowed).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image (split as a shell would).
    #[arg(long, value_name = "COMMAND")]
    pub entrypoint: Option<String>,
    /// Use an init inside each service container to forward signals and reap processes.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub init: Option<bool>,
    /// Allocate a pseudo-TTY.
    #[arg(short, long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub tty: Option<bool>,
    /// Mount the container's root filesystem as read only.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub read_only: Option<bool>,
    /// Tune host's OOM preferences (-1000 to 1000).
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(-1000..=1000))]
    pub oom_score_adj: Option<i64>,
    /// Time to wait before force killing a container (e.g. 10s).
    #[arg(long)]
    pub stop_grace_period: Option<String>,
    /// Signal to stop the container (e.g. SIGTERM).
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Endpoint mode (vip or dnsrr).
    #[arg(long, value_parser = ["vip", "dnsrr"])]
    pub endpoint_mode: Option<String>,
    /// Maximum number of tasks per node (0: unlimited).
    #[arg(long)]
    pub replicas_max_per_node: Option<u64>,
    /// Reserve CPUs (e.g. 0.5): only nodes with that much unreserved get tasks.
    #[arg(long)]
    pub reserve_cpu: Option<String>,
    /// Reserve memory (e.g. 512m, 1g): only nodes with that much unreserved get tasks.
    #[arg(long)]
    pub reserve_memory: Option<String>,
    /// Limit CPUs (e.g. 1.5).
    #[arg(long)]
    pub limit_cpu: Option<String>,
    /// Limit memory (e.g. 256m).
    #[arg(long)]
    pub limit_memory: Option<String>,
    /// Limit maximum number of processes (0: unlimited).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    pub limit_pids: Option<i64>,
    /// Restart a task's container when this condition is met.
    #[arg(long, value_parser = ["none", "on-failure", "any"])]
    pub restart_condition: Option<String>,
    /// Delay between restart attempts (e.g. 5s).
    #[arg(long)]
    pub restart_delay: Option<String>,
    /// Maximum number of restarts before giving up.
    #[arg(long)]
    pub restart_max_attempts: Option<u64>,
    /// Window used to evaluate the restart policy (e.g. 1m).
    #[arg(long)]
    pub restart_window: Option<String>,
    /// Command to run to check health: a shell command, or a JSON array
    /// for images without a shell (`'["CMD","/echo","healthcheck"]'`).
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between running the check (e.g. 30s).
    #[arg(long)]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (e.g. 5s).
    #[arg(long)]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long)]
    pub health_retries: Option<u64>,
    /// Start period for the container to initialize before failures count (e.g. 10s).
    #[arg(long)]
    pub health_start_period: Option<String>,
    /// Time between running the check during the start period (e.g. 1s).
    #[arg(long)]
    pub health_start_interval: Option<String>,
    /// Disable any container-specified health check.
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Logging driver for service (json-file, local, syslog, journald, none, …).
    #[arg(long)]
    pub log_driver: Option<String>,
    /// Logging driver option (key=value); repeatable.
    #[arg(long)]
    pub log_opt: Vec<String>,
    #[command(flatten)]
    pub lb: super::lb_flags::LbFlags,
}

/// Sets `field` when the flag was given, read by `read`.
fn set<T, U>(value: &Option<T>, field: &mut U, read: impl FnOnce(&T) -> Result<U>) -> Result<()> {
    if let Some(v) = value {
        *field = read(v)?;
    }
    Ok(())
}

impl SpecFlags {
    fn any_health(&self) -> bool {
        self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
            || self.health_start_interval.is_some()
    }

    /// Sets what was given on `spec`, leaving the rest as it is.
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<()> {
        if let Some(mode) = &self.endpoint_mode {
            spec.endpoint.get_or_insert_with(Default::default).mode = mode.clone();
        }
        self.lb.apply(spec)?;
        let task = spec.task.get_or_insert_with(Default::default);
        self.apply_container(task)?;
        self.apply_resources(task)?;
        self.apply_restart(task)?;
        self.apply_log_driver(task)?;
        if let Some(max) = self.replicas_max_per_node {
            task.placement
                .get_or_insert_with(Default::default)
                .max_replicas_per_node = max;
        }
        Ok(())
    }

    fn apply_container(&self, task: &mut TaskSpec) -> Result<()> {
        let c = task.container.get_or_insert_with(Default::default);
        let text = |v: &String| Ok(v.clone());
        set(&self.hostname, &mut c.hostname, text)?;
        set(&self.user, &mut c.user, text)?;
        set(&self.workdir, &mut c.dir, text)?;
        set(&self.stop_signal, &mut c.stop_signal, text)?;
        set(&self.entrypoint, &mut c.command, |e| {
            split_words(e, "--entrypoint")
        })?;
        set(&self.stop_grace_period, &mut c.stop_grace_period_ms, |g| {
            Ok(Some(flags::duration_ms(g)?))
        })?;
        if self.init.is_some() {
            c.init = self.init;
        }
        set(&self.tty, &mut c.tty, |t| Ok(*t))?;
        set(&self.read_only, &mut c.read_only, |r| Ok(*r))?;
        if self.oom_score_adj.is_some() {
            c.oom_score_adj = self.oom_score_adj;
        }
        if self.no_healthcheck {
            if self.any_health() {
                bail!("--no-healthcheck conflicts with --health-* options");
            }
            c.healthcheck = Some(HealthConfig {
                test: vec!["NONE".into()],
                ..Default::default()
            });
        } else if self.any_health() {
            let h = c.healthcheck.get_or_insert_with(Default::default);
            // Options on a disabled check turn it back on (the image's test
            // unless --health-cmd gives one).
            if h.test.first().map(String::as_str) == Some("NONE") {
                h.test.clear();
            }
            // An empty command goes back to the image's test, as Docker's update.
            set(&self.health_cmd, &mut h.test, |cmd| {
                if cmd.is_empty() {
                    Ok(Vec::new())
                } else {
                    super::create::health_test(cmd)
                }
            })?;
            let ms = |d: &String| flags::duration_ms(d);
            set(&self.health_interval, &mut h.interval_ms, ms)?;
            set(&self.health_timeout, &mut h.timeout_ms, ms)?;
            set(&self.health_start_period, &mut h.start_period_ms, ms)?;
            set(&self.health_start_interval, &mut h.start_interval_ms, ms)?;
            set(&self.health_retries, &mut h.retries, |r| Ok(*r))?;
        }
        Ok(())
    }

    fn apply_resources(&self, task: &mut TaskSpec) -> Result<()> {
        let limits =
            self.limit_cpu.is_some() || self.limit_memory.is_some() || self.limit_pids.is_some();
        let reservations = self.reserve_cpu.is_some() || self.reserve_memory.is_some();
        if !limits && !reservations {
            return Ok(());
        }
        let r = task.resources.get_or_insert_with(Default::default);
        let cpus = |c: &String| flags::parse_cpus(c);
        let bytes = |m: &String| flags::parse_bytes(m);
        if limits {
            let l = r.limits.get_or_insert_with(Default::default);
            set(&self.limit_cpu, &mut l.nano_cpus, cpus)?;
            set(&self.limit_memory, &mut l.memory_bytes, bytes)?;
            set(&self.limit_pids, &mut l.pids, |p| Ok(*p))?;
        }
        if reservations {
            let res = r.reservations.get_or_insert_with(Default::default);
            set(&self.reserve_cpu, &mut res.nano_cpus, cpus)?;
            set(&self.reserve_memory, &mut res.memory_bytes, bytes)?;
        }
        Ok(())
    }

    fn apply_restart(&self, task: &mut TaskSpec) -> Result<()> {
        let any = self.restart_condition.is_some()
            || self.restart_delay.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_window.is_some();
        if !any {
            return Ok(());
        }
        let r = task.restart.get_or_insert_with(RestartPolicy::default);
        set(&self.restart_condition, &mut r.condition, |c| {
            Ok(RestartCondition::from_word(c).unwrap_or_default() as i32)
        })?;
        set(&self.restart_delay, &mut r.delay_ms, |d| {
            Ok(Some(flags::duration_ms(d)?))
        })?;
        set(&self.restart_max_attempts, &mut r.max_attempts, |m| Ok(*m))?;
        set(&self.restart_window, &mut r.window_ms, |w| {
            flags::duration_ms(w)
        })?;
        Ok(())
    }

    /// `--log-driver` replaces the driver and its options; `--log-opt`
    /// alone changes the options of the driver the service has.
    fn apply_log_driver(&self, task: &mut TaskSpec) -> Result<()> {
        let options = self
            .log_opt
            .iter()
            .map(|o| {
                let (k, v) = o.split_once('=').unwrap_or((o, ""));
                if k.is_empty() {
                    bail!("invalid --log-opt {o:?}: expected key=value");
                }
                Ok((k.to_owned(), v.to_owned()))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        match &self.log_driver {
            Some(name) if name.is_empty() => task.log_driver = None,
            Some(name) => {
                task.log_driver = Some(LogDriver {
                    name: name.clone(),
                    options,
                })
            }
            None if options.is_empty() => {}
            None => match task.log_driver.as_mut() {
                Some(driver) => driver.options = options,
                None => bail!("--log-opt needs --log-driver (the service has no log driver)"),
            },
        }
        Ok(())
    }
}

/// A command line split into words as a shell would (quotes, escapes), as
/// Docker reads `--entrypoint` and `--args`.
pub fn split_words(text: &str, flag: &str) -> Result<Vec<String>> {
    shlex::split(text).ok_or_else(|| {
        anyhow::anyhow!("invalid {flag} {text:?}: unbalanced quotes or a trailing backslash")
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use shoal_api::pb::{ContainerSpec, ResourceRequirements, Resources};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: SpecFlags,
    }

    fn apply(argv: &[&str], mut spec: ServiceSpec) -> Result<ServiceSpec> {
        let mut all = vec!["shoal"];
        all.extend_from_slice(argv);
        Cli::try_parse_from(all)?.flags.apply(&mut spec)?;
        Ok(spec)
    }

    fn container(spec: &ServiceSpec) -> ContainerSpec {
        spec.task.clone().unwrap().container.unwrap()
    }

    #[test]
    fn each_flag_sets_its_field_and_only_that() {
        let base = ServiceSpec {
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "shoal/echo:1".into(),
                    user: "app".into(),
                    ..Default::default()
                }),
                resources: Some(ResourceRequirements {
                    limits: Some(Resources {
                        memory_bytes: 64 << 20,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(apply(&[], base.clone()).unwrap(), base);
        let out = apply(
            &[
                "--init",
                "-t",
                "--read-only",
                "--oom-score-adj",
                "-500",
                "--limit-pids",
                "100",
                "--entrypoint",
                "/bin/sh -c 'echo hi'",
                "--health-start-interval",
                "2s",
                "--log-driver",
                "json-file",
                "--log-opt",
                "max-size=10m",
                "--hostname",
                "h-{{.Task.Slot}}",
            ],
            base.clone(),
        )
        .unwrap();
        let c = container(&out);
        assert_eq!((c.init, c.tty, c.read_only), (Some(true), true, true));
        assert_eq!(c.oom_score_adj, Some(-500));
        assert_eq!(c.command, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.user, "app", "untouched");
        assert_eq!(c.hostname, "h-{{.Task.Slot}}");
        assert_eq!(c.healthcheck.unwrap().start_interval_ms, 2_000);
        let task = out.task.unwrap();
        let limits = task.resources.unwrap().limits.unwrap();
        assert_eq!((limits.pids, limits.memory_bytes), (100, 64 << 20));
        let log = task.log_driver.unwrap();
        assert_eq!(
            (log.name.as_str(), log.options["max-size"].as_str()),
            ("json-file", "10m")
        );
        // Booleans go back off with =false, as Docker's.
        let off = apply(&["--init=false", "--tty=false", "--read-only=false"], {
            let mut s = base.clone();
            let c = s.task.as_mut().unwrap().container.as_mut().unwrap();
            (c.init, c.tty, c.read_only) = (Some(true), true, true);
            s
        })
        .unwrap();
        let c = container(&off);
        assert_eq!((c.init, c.tty, c.read_only), (Some(false), false, false));
    }

    #[test]
    fn health_flags_edit_the_check_and_no_healthcheck_stands_alone() {
        let out = apply(&["--no-healthcheck"], ServiceSpec::default()).unwrap();
        assert_eq!(container(&out).healthcheck.unwrap().test, ["NONE"]);
        let again = apply(&["--health-interval", "5s"], out).unwrap();
        let h = container(&again).healthcheck.unwrap();
        assert!(h.test.is_empty(), "back to the image's check: {h:?}");
        assert_eq!(h.interval_ms, 5_000);
        let with_cmd = apply(&["--health-cmd", "true"], again).unwrap();
        assert_eq!(
            container(&with_cmd).healthcheck.unwrap().test,
            ["CMD-SHELL", "true"]
        );
        let cleared = apply(&["--health-cmd", ""], with_cmd).unwrap();
        assert!(container(&cleared).healthcheck.unwrap().test.is_empty());
        let err = apply(
            &["--no-healthcheck", "--health-retries", "3"],
            ServiceSpec::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--no-healthcheck conflicts with --health-* options"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_their_flag() {
        let err = apply(&["--log-opt", "max-size=1m"], ServiceSpec::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--log-opt needs --log-driver"), "{err}");
        let err = apply(&["--entrypoint", "sh -c 'oops"], ServiceSpec::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid --entrypoint"), "{err}");
        assert!(apply(&["--oom-score-adj", "1001"], ServiceSpec::default()).is_err());
        assert!(apply(&["--limit-pids", "-1"], ServiceSpec::default()).is_err());
        assert!(apply(&["--init=maybe"], ServiceSpec::default()).is_err());
    }
}
