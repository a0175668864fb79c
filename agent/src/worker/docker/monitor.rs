//! Watches tracked containers: exits become Complete/Failed, health
//! results move Starting → Running, take a running task out of the routing
//! mesh's rotation at its first failed check (and back at the next passing
//! one), or fail it once Docker calls it unhealthy (Swarm replaces it).

use std::{sync::Arc, time::Duration};

use bollard::{
    models::{Health, HealthStatusEnum},
    query_parameters::{InspectContainerOptions, StopContainerOptions},
};
use shoal_api::pb::{TaskHealth, TaskState};

use super::{DockerExecutor, Tracked, status};

/// How often running containers are checked (exit, health): a failed
/// check reaches the manager at most this long after Docker ran it.
const MONITOR_PERIOD: Duration = Duration::from_millis(250);

/// What a container's health check says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// No check: running is all there is to know.
    NoCheck,
    /// No check has passed yet.
    Starting,
    /// The last check passed.
    Passing,
    /// The last check failed (Docker still says healthy or starting until
    /// `retries` fail in a row); the output says why.
    Failing(String),
    /// Docker gave up on it.
    Unhealthy,
}

/// Reads Docker's health state: its status, and the last check's result
/// (Docker keeps the last five), which moves before the status does.
pub(super) fn verdict(health: Option<&Health>) -> Verdict {
    let Some(health) = health else {
        return Verdict::NoCheck;
    };
    let last = health.log.as_ref().and_then(|log| log.last());
    let last_failed = last.is_some_and(|r| r.exit_code.unwrap_or(0) != 0);
    match health.status {
        None | Some(HealthStatusEnum::NONE) | Some(HealthStatusEnum::EMPTY) => Verdict::NoCheck,
        Some(HealthStatusEnum::UNHEALTHY) => Verdict::Unhealthy,
        Some(HealthStatusEnum::STARTING) => Verdict::Starting,
        Some(HealthStatusEnum::HEALTHY) if last_failed => Verdict::Failing(
            last.and_then(|r| r.output.as_deref())
                .map(|o| o.trim().chars().take(200).collect())
                .unwrap_or_default(),
        ),
        Some(HealthStatusEnum::HEALTHY) => Verdict::Passing,
    }
}

/// The health a verdict reports for a running task.
fn task_health(verdict: &Verdict) -> TaskHealth {
    match verdict {
        Verdict::NoCheck => TaskHealth::None,
        Verdict::Starting => TaskHealth::Starting,
        Verdict::Passing => TaskHealth::Healthy,
        Verdict::Failing(_) | Verdict::Unhealthy => TaskHealth::Failing,
    }
}

pub(super) async fn run(executor: Arc<DockerExecutor>) {
    loop {
        tokio::time::sleep(MONITOR_PERIOD).await;
        let tracked: Vec<(String, Tracked)> = executor
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, t)| {
                !t.container.is_empty() && !t.stopping && !t.starting && !t.reported.is_terminal()
            })
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        for (id, t) in tracked {
            check(&executor, &id, &t).await;
        }
    }
}

async fn check(executor: &DockerExecutor, id: &str, t: &Tracked) {
    let inspect = executor
        .docker
        .inspect_container(&t.container, None::<InspectContainerOptions>)
        .await;
    let state = match inspect {
        Ok(info) => info.state.unwrap_or_default(),
        Err(_) => {
            executor.set_reported(id, TaskState::Failed);
            executor.send(
                id,
                status(
                    TaskState::Failed,
                    "",
                    "the container is gone",
                    0,
                    &t.container,
                ),
            );
            return;
        }
    };
    if !state.running.unwrap_or(false) {
        let code = state.exit_code.unwrap_or(0) as i32;
        let (next, err) = if code == 0 {
            (TaskState::Complete, String::new())
        } else {
            (TaskState::Failed, format!("task: non-zero exit ({code})"))
        };
        executor.set_reported(id, next);
        executor.send(id, status(next, "finished", &err, code, &t.container));
        return;
    }
    let verdict = verdict(state.health.as_ref());
    let health = task_health(&verdict);
    match verdict {
        Verdict::Unhealthy => {
            // A task never runs unhealthy: stop it and say why.
            executor.set_reported(id, TaskState::Failed);
            let _ = executor
                .docker
                .stop_container(&t.container, None::<StopContainerOptions>)
                .await;
            executor.send(
                id,
                status(
                    TaskState::Failed,
                    "",
                    "task: unhealthy container",
                    0,
                    &t.container,
                ),
            );
        }
        Verdict::Starting => {}
        Verdict::NoCheck | Verdict::Passing if t.reported < TaskState::Running => {
            report_running(executor, id, t, health, "started");
        }
        // Out of the rotation at the first failed check, back at the next
        // passing one: the manager reads the health from the status.
        Verdict::Failing(output) if t.reported == TaskState::Running && t.health != health => {
            tracing::info!(task = %id, %output, "health check failing: no new connections");
            let message = if output.is_empty() {
                "health check failing".to_owned()
            } else {
                format!("health check failing: {output}")
            };
            report_running(executor, id, t, health, &message);
        }
        Verdict::Passing if t.reported == TaskState::Running && t.health != health => {
            tracing::info!(task = %id, "health check passing again");
            report_running(executor, id, t, health, "started");
        }
        _ => {}
    }
}

fn report_running(
    executor: &DockerExecutor,
    id: &str,
    t: &Tracked,
    health: TaskHealth,
    message: &str,
) {
    executor.set_reported(id, TaskState::Running);
    if let Some(tracked) = executor
        .tasks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(id)
    {
        tracked.health = health;
    }
    let mut report = status(TaskState::Running, message, "", 0, &t.container);
    report.health = health as i32;
    executor.send(id, report);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::HealthcheckResult;

    fn health(status: HealthStatusEnum, exits: &[i64]) -> Health {
        Health {
            status: Some(status),
            failing_streak: None,
            log: Some(
                exits
                    .iter()
                    .map(|code| HealthcheckResult {
                        exit_code: Some(*code),
                        output: Some(format!("exit {code}\n")),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn the_last_check_decides_before_docker_calls_it_unhealthy() {
        assert_eq!(verdict(None), Verdict::NoCheck);
        assert_eq!(
            verdict(Some(&health(HealthStatusEnum::STARTING, &[1]))),
            Verdict::Starting,
            "no check has passed yet: not in the rotation, not failing either"
        );
        assert_eq!(
            verdict(Some(&health(HealthStatusEnum::HEALTHY, &[1, 0]))),
            Verdict::Passing
        );
        assert_eq!(
            verdict(Some(&health(HealthStatusEnum::HEALTHY, &[0, 1]))),
            Verdict::Failing("exit 1".into()),
            "one failed check is enough to leave the rotation"
        );
        assert_eq!(
            verdict(Some(&health(HealthStatusEnum::UNHEALTHY, &[1, 1, 1]))),
            Verdict::Unhealthy
        );
        assert_eq!(
            task_health(&Verdict::Failing(String::new())),
            TaskHealth::Failing
        );
        assert_eq!(task_health(&Verdict::Passing), TaskHealth::Healthy);
    }
}
