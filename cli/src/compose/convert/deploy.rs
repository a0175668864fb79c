//! `deploy:` of a service: placement, resources, restart policy, update
//! and rollback settings, endpoint mode.

use shoal_api::pb::{
    Placement, ResourceRequirements, Resources, RestartCondition, RestartPolicy, TaskSpec,
    UpdateConfig, UpdateFailureAction, UpdateOrder,
};

use super::{super::ComposeError, flags, ms};
use crate::compose::{key, locate::Seg, model};

/// What `deploy:` sets besides the task.
#[derive(Default)]
pub(super) struct Settings {
    pub update: Option<UpdateConfig>,
    pub rollback: Option<UpdateConfig>,
    pub endpoint_mode: String,
}

/// Applies `deploy` to `task`; `err` locates a problem under the service.
pub(super) fn apply(
    deploy: &model::Deploy,
    task: &mut TaskSpec,
    err: &dyn Fn(&[Seg], String) -> ComposeError,
) -> Result<Settings, ComposeError> {
    let mut update = None;
    let mut rollback = None;
    let mut endpoint_mode = String::new();
    if let Some(placement) = &deploy.placement {
        task.placement = Some(Placement {
            constraints: placement.constraints.clone(),
            spread: placement
                .preferences
                .iter()
                .map(|p| p.spread.clone())
                .collect(),
            max_replicas_per_node: placement.max_replicas_per_node.map_or(0, |m| m.0),
        });
    }
    if let Some(resources) = &deploy.resources {
        let amounts = |a: &Option<model::ResourceAmounts>,
                       which: &str|
         -> Result<Option<Resources>, ComposeError> {
            let Some(a) = a else { return Ok(None) };
            if a.pids.is_some() {
                return Err(err(
                    &[key("deploy"), key("resources"), key(which), key("pids")],
                    "pids limits are not supported".into(),
                ));
            }
            Ok(Some(Resources {
                pids: 0,
                nano_cpus: a
                    .cpus
                    .as_ref()
                    .map(|c| flags::parse_cpus(&c.0))
                    .transpose()
                    .map_err(|e| {
                        err(
                            &[key("deploy"), key("resources"), key(which), key("cpus")],
                            e.to_string(),
                        )
                    })?
                    .unwrap_or(0),
                memory_bytes: a
                    .memory
                    .as_ref()
                    .map(|m| flags::parse_bytes(&m.0))
                    .transpose()
                    .map_err(|e| {
                        err(
                            &[key("deploy"), key("resources"), key(which), key("memory")],
                            e.to_string(),
                        )
                    })?
                    .unwrap_or(0),
            }))
        };
        task.resources = Some(ResourceRequirements {
            limits: amounts(&resources.limits, "limits")?,
            reservations: amounts(&resources.reservations, "reservations")?,
            ..Default::default()
        });
    }
    if let Some(policy) = &deploy.restart_policy {
        let here = |k: &str| [key("deploy"), key("restart_policy"), key(k)];
        task.restart = Some(RestartPolicy {
            condition: match policy.condition.as_deref().unwrap_or("any") {
                "any" => RestartCondition::Any,
                "on-failure" => RestartCondition::OnFailure,
                "none" => RestartCondition::None,
                other => {
                    return Err(err(
                        &here("condition"),
                        format!("condition {other:?}: expected none, on-failure or any"),
                    ));
                }
            } as i32,
            delay_ms: policy
                .delay
                .as_deref()
                .map(ms)
                .transpose()
                .map_err(|m| err(&here("delay"), m))?,
            max_attempts: policy.max_attempts.map_or(0, |m| m.0),
            window_ms: policy
                .window
                .as_deref()
                .map(ms)
                .transpose()
                .map_err(|m| err(&here("window"), m))?
                .unwrap_or(0),
        });
    }
    for (which, config, out) in [
        ("update_config", &deploy.update_config, &mut update),
        ("rollback_config", &deploy.rollback_config, &mut rollback),
    ] {
        if let Some(config) = config {
            *out = Some(
                update_config(config)
                    .map_err(|(k, m)| err(&[key("deploy"), key(which), key(k)], m))?,
            );
        }
    }
    if let Some(mode) = &deploy.endpoint_mode {
        if mode != "vip" && mode != "dnsrr" {
            return Err(err(
                &[key("deploy"), key("endpoint_mode")],
                format!("endpoint_mode {mode:?}: expected vip or dnsrr"),
            ));
        }
        endpoint_mode = mode.clone();
    }
    Ok(Settings {
        update,
        rollback,
        endpoint_mode,
    })
}

fn update_config(config: &model::UpdateConfig) -> Result<UpdateConfig, (&'static str, String)> {
    Ok(UpdateConfig {
        parallelism: config.parallelism.map(|p| p.0),
        delay_ms: config
            .delay
            .as_deref()
            .map(ms)
            .transpose()
            .map_err(|m| ("delay", m))?
            .unwrap_or(0),
        failure_action: match config.failure_action.as_deref().unwrap_or("pause") {
            "pause" => UpdateFailureAction::Pause,
            "continue" => UpdateFailureAction::Continue,
            "rollback" => UpdateFailureAction::Rollback,
            other => {
                return Err((
                    "failure_action",
                    format!("{other:?}: expected pause, continue or rollback"),
                ));
            }
        } as i32,
        monitor_ms: config
            .monitor
            .as_deref()
            .map(ms)
            .transpose()
            .map_err(|m| ("monitor", m))?,
        max_failure_ratio: match &config.max_failure_ratio {
            None => 0.0,
            Some(r) => {
                r.0.parse::<f32>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or((
                        "max_failure_ratio",
                        format!("{:?}: expected a number from 0 to 1", r.0),
                    ))?
            }
        },
        order: match config.order.as_deref().unwrap_or("stop-first") {
            "stop-first" => UpdateOrder::StopFirst,
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
