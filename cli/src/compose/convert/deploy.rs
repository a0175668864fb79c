//! `deploy:` of a service (and `restart:`, `pids_limit`): mode and
//! replicas, placement, resources, restart policy, update and rollback
//! settings, endpoint mode, as Docker's converter reads them.

use shoal_api::pb::{
    GenericResource, Placement, ResourceRequirements, Resources, RestartCondition, RestartPolicy,
    ServiceMode, TaskSpec, UpdateConfig, UpdateFailureAction, UpdateOrder, generic_resource,
};

use crate::compose::{ComposeError, key, locate::Seg, model};

/// What `deploy:` sets besides the task.
pub(super) struct Settings {
    pub mode: ServiceMode,
    pub replicas: u64,
    /// A replicated job's tasks at once (all of its completions).
    pub max_concurrent: Option<u64>,
    pub update: Option<UpdateConfig>,
    pub rollback: Option<UpdateConfig>,
    pub endpoint_mode: String,
}

type Err<'a> = &'a dyn Fn(&[Seg], String) -> ComposeError;

/// Applies `deploy` (and the service's `restart` and `pids_limit`) to
/// `task`; `err` locates a problem under the service.
pub(super) fn apply(
    deploy: &model::Deploy,
    service: &model::Service,
    task: &mut TaskSpec,
    err: Err,
) -> Result<Settings, ComposeError> {
    let (mode, replicas, max_concurrent) = service_mode(deploy, err)?;
    let placement = &deploy.placement;
    if !placement.is_empty() {
        task.placement = Some(Placement {
            constraints: placement.constraints.clone(),
            spread: placement
                .preferences
                .iter()
                .map(|p| p.spread.clone())
                .collect(),
            max_replicas_per_node: placement.max_replicas_per_node,
        });
    }
    task.resources = resources(&deploy.resources, service.pids_limit, err)?;
    task.restart = match &deploy.restart_policy {
        Some(policy) => Some(restart_policy(policy, err)?),
        None => match &service.restart {
            Some(restart) => {
                restart_from_service(restart).map_err(|m| err(&[key("restart")], m))?
            }
            None => None,
        },
    };
    let mut configs = [None, None];
    for (slot, (which, config)) in configs.iter_mut().zip([
        ("update_config", &deploy.update_config),
        ("rollback_config", &deploy.rollback_config),
    ]) {
        if let Some(config) = config {
            *slot = Some(
                update_config(config)
                    .map_err(|(k, m)| err(&[key("deploy"), key(which), key(k)], m))?,
            );
        }
    }
    let [update, rollback] = configs;
    let endpoint_mode = deploy.endpoint_mode.to_ascii_lowercase();
    if !matches!(endpoint_mode.as_str(), "" | "vip" | "dnsrr") {
        return Err(err(
            &[key("deploy"), key("endpoint_mode")],
            format!("endpoint_mode {endpoint_mode:?}: expected vip or dnsrr"),
        ));
    }
    Ok(Settings {
        mode,
        replicas,
        max_concurrent,
        update,
        rollback,
        endpoint_mode,
    })
}

/// `deploy.mode` and `deploy.replicas` as `docker stack deploy` reads
/// them: (mode, replicas, max_concurrent). Replicas default to 1; a
/// replicated job runs `replicas` completions, all at once.
fn service_mode(
    deploy: &model::Deploy,
    err: Err,
) -> Result<(ServiceMode, u64, Option<u64>), ComposeError> {
    let here = |k: &str| [key("deploy"), key(k)];
    let mode = match deploy.mode.as_str() {
        "" | "replicated" => ServiceMode::Replicated,
        "global" => ServiceMode::Global,
        "replicated-job" => ServiceMode::ReplicatedJob,
        "global-job" => ServiceMode::GlobalJob,
        other => return Err(err(&here("mode"), format!("Unknown mode: {other}"))),
    };
    if !mode.is_replicated() && deploy.replicas.is_some() {
        return Err(err(
            &here("replicas"),
            "replicas can only be used with replicated or replicated-job mode".into(),
        ));
    }
    Ok(match mode {
        ServiceMode::Replicated => (mode, deploy.replicas.unwrap_or(1), None),
        ServiceMode::ReplicatedJob => {
            let n = deploy.replicas.unwrap_or(1);
            (mode, n, Some(n))
        }
        ServiceMode::Global | ServiceMode::GlobalJob => (mode, 0, None),
    })
}

/// CPUs as Docker's `ParseCPUs` reads them: a decimal, in whole nano-CPUs.
fn nano_cpus(text: &str) -> Result<i64, String> {
    let cpus: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid CPU value {text:?}: expected a number like 0.5"))?;
    if !cpus.is_finite() || cpus < 0.0 {
        return Err(format!("invalid CPU value {text:?}: cannot be negative"));
    }
    let nanos = cpus * 1e9;
    if nanos > i64::MAX as f64 {
        return Err(format!("invalid CPU value {text:?}: too large"));
    }
    if (nanos - nanos.round()).abs() > 1e-6 {
        return Err(format!("invalid CPU value {text:?}: value is too precise"));
    }
    Ok(nanos.round() as i64)
}

fn resources(
    resources: &model::Resources,
    pids_limit: Option<i64>,
    err: Err,
) -> Result<Option<ResourceRequirements>, ComposeError> {
    let here = |which: &str, k: &str| [key("deploy"), key("resources"), key(which), key(k)];
    let cpus = |text: &str, which: &str| -> Result<i64, ComposeError> {
        if text.is_empty() {
            return Ok(0);
        }
        nano_cpus(text).map_err(|m| err(&here(which, "cpus"), m))
    };
    let mut limits = match &resources.limits {
        Some(l) => Some(Resources {
            nano_cpus: cpus(&l.cpus, "limits")?,
            memory_bytes: l.memory.0,
            pids: l.pids,
        }),
        None => None,
    };
    if let Some(pids) = pids_limit {
        let limits = limits.get_or_insert_default();
        if limits.pids != 0 && limits.pids != pids {
            return Err(err(
                &[key("pids_limit")],
                format!(
                    "pids_limit {pids} and deploy.resources.limits.pids {} differ: give one",
                    limits.pids
                ),
            ));
        }
        limits.pids = pids;
    }
    if limits.as_ref().is_some_and(|l| l.pids < 0) {
        return Err(err(
            &here("limits", "pids"),
            "a pids limit is 1 or more (0: no limit)".into(),
        ));
    }
    let mut generic = Vec::new();
    let reservations = match &resources.reservations {
        Some(r) => {
            for (i, resource) in r.generic_resources.iter().enumerate() {
                let Some(spec) = &resource.discrete_resource_spec else {
                    continue;
                };
                if spec.kind.is_empty() || spec.value < 1 {
                    return Err(err(
                        &[
                            key("deploy"),
                            key("resources"),
                            key("reservations"),
                            key("generic_resources"),
                            Seg::Index(i),
                        ],
                        format!(
                            "a generic resource needs a kind and a value of 1 or more, found kind {:?} value {}",
                            spec.kind, spec.value
                        ),
                    ));
                }
                generic.push(GenericResource {
                    kind: spec.kind.clone(),
                    value: Some(generic_resource::Value::Discrete(spec.value)),
                });
            }
            Some(Resources {
                nano_cpus: cpus(&r.cpus, "reservations")?,
                memory_bytes: r.memory.0,
                pids: 0,
            })
        }
        None => None,
    };
    if limits.is_none() && reservations.is_none() {
        return Ok(None);
    }
    Ok(Some(ResourceRequirements {
        limits,
        reservations,
        generic_reservations: generic,
    }))
}

fn restart_policy(policy: &model::RestartPolicy, err: Err) -> Result<RestartPolicy, ComposeError> {
    let here = |k: &str| [key("deploy"), key("restart_policy"), key(k)];
    Ok(RestartPolicy {
        condition: match policy.condition.as_str() {
            "" | "any" => RestartCondition::Any,
            "on-failure" => RestartCondition::OnFailure,
            "none" => RestartCondition::None,
            other => {
                return Err(err(
                    &here("condition"),
                    format!("condition {other:?}: expected none, on-failure or any"),
                ));
            }
        } as i32,
        delay_ms: policy.delay.map(|d| d.millis()),
        max_attempts: policy.max_attempts.unwrap_or(0),
        window_ms: policy.window.map_or(0, |d| d.millis()),
    })
}

/// `restart:` (Docker's container policy) when `deploy.restart_policy` is
/// absent, as Docker converts it: `no` none, `always` and
/// `unless-stopped` any, `on-failure[:N]` on-failure with N attempts.
fn restart_from_service(restart: &str) -> Result<Option<RestartPolicy>, String> {
    let (name, count) = match restart.split_once(':') {
        Some((name, count)) => (name, Some(count)),
        None => (restart, None),
    };
    let attempts = match count {
        None => 0,
        Some(count) => {
            if name != "on-failure" {
                return Err(format!(
                    "invalid restart policy {restart:?}: maximum retry count cannot be used with restart policy '{name}'"
                ));
            }
            count.parse::<u64>().map_err(|_| {
                format!("invalid restart policy {restart:?}: the retry count must be a number")
            })?
        }
    };
    let condition = match name {
        "" | "no" => return Ok(None),
        "always" | "unless-stopped" => RestartCondition::Any,
        "on-failure" => RestartCondition::OnFailure,
        _ => return Err(format!("unknown restart policy: {restart}")),
    };
    Ok(Some(RestartPolicy {
        condition: condition as i32,
        delay_ms: None,
        max_attempts: attempts,
        window_ms: 0,
    }))
}

fn update_config(config: &model::UpdateConfig) -> Result<UpdateConfig, (&'static str, String)> {
    Ok(UpdateConfig {
        parallelism: config.parallelism,
        delay_ms: config.delay.millis(),
        failure_action: match config.failure_action.as_str() {
            "" | "pause" => UpdateFailureAction::Pause,
            "continue" => UpdateFailureAction::Continue,
            "rollback" => UpdateFailureAction::Rollback,
            other => {
                return Err((
                    "failure_action",
                    format!("{other:?}: expected pause, continue or rollback"),
                ));
            }
        } as i32,
        monitor_ms: (!config.monitor.is_zero()).then(|| config.monitor.millis()),
        max_failure_ratio: {
            let r = config.max_failure_ratio;
            if !(0.0..=1.0).contains(&r) {
                return Err((
                    "max_failure_ratio",
                    format!("{r}: expected a number from 0 to 1"),
                ));
            }
            r as f32
        },
        order: match config.order.as_str() {
            "" | "stop-first" => UpdateOrder::StopFirst,
            "start-first" => UpdateOrder::StartFirst,
            other => {
                return Err((
                    "order",
                    format!("{other:?}: expected stop-first or start-first"),
                ));
            }
        } as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_becomes_the_restart_policy_as_docker_converts_it() {
        assert_eq!(restart_from_service("no").unwrap(), None);
        let always = restart_from_service("always").unwrap().unwrap();
        assert_eq!(always.condition(), RestartCondition::Any);
        assert_eq!(
            restart_from_service("unless-stopped")
                .unwrap()
                .unwrap()
                .condition(),
            RestartCondition::Any
        );
        let on_failure = restart_from_service("on-failure:3").unwrap().unwrap();
        assert_eq!(
            (on_failure.condition(), on_failure.max_attempts),
            (RestartCondition::OnFailure, 3)
        );
        assert!(restart_from_service("sometimes").is_err());
        assert!(restart_from_service("always:3").is_err());
    }

    #[test]
    fn cpus_are_whole_nano_cpus() {
        assert_eq!(nano_cpus("0.5"), Ok(500_000_000));
        assert_eq!(nano_cpus("2"), Ok(2_000_000_000));
        assert_eq!(nano_cpus("0"), Ok(0));
        assert!(nano_cpus("0.0000000001").is_err());
        assert!(nano_cpus("-1").is_err());
        assert!(nano_cpus("lots").is_err());
    }
}
