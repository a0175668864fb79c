//! Waiting for what a command started to finish, where Docker's waits:
//! `stack rm --detach=false` until every task of the removed services has
//! stopped.

use std::time::Duration;

use anyhow::Result;
use shoal_api::pb::Task;

use crate::client::{Client, tasks};

const POLL: Duration = Duration::from_millis(500);

/// Whether a task has stopped for good (Docker's states past running).
fn stopped(task: &Task) -> bool {
    task.status
        .as_ref()
        .is_some_and(|s| s.state().is_terminal())
}

/// The tasks of `services` that have not stopped yet.
pub fn still_running<'a>(all: &'a [Task], services: &[String]) -> Vec<&'a Task> {
    all.iter()
        .filter(|t| services.contains(&t.service_id) && !stopped(t))
        .collect()
}

/// Polls until every task of `services` is stopped or gone.
pub async fn tasks_stopped(client: &mut Client, services: &[String]) -> Result<()> {
    if services.is_empty() {
        return Ok(());
    }
    loop {
        let all = tasks(client).await?;
        if still_running(&all, services).is_empty() {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::pb::{TaskState, TaskStatus};

    use super::*;

    fn task(service: &str, state: TaskState) -> Task {
        Task {
            service_id: service.into(),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_removed_services_unstopped_tasks_are_waited_for() {
        let all = [
            task("gone", TaskState::Running),
            task("gone", TaskState::Shutdown),
            task("gone", TaskState::Failed),
            task("kept", TaskState::Running),
        ];
        let waiting = still_running(&all, &["gone".to_string()]);
        assert_eq!(waiting.len(), 1);
        assert_eq!(
            waiting[0].status.as_ref().unwrap().state(),
            TaskState::Running
        );
        assert!(still_running(&all[1..3], &["gone".to_string()]).is_empty());
    }
}
