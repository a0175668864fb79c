//! What the control API does differently for jobs: their spec's rules and
//! defaults, the iteration every create or update starts, and the counts
//! `service ls` shows (Docker's ServiceStatus for jobs).

use shoal_api::pb::{JobStatus, Service, ServiceMode, ServiceSpec, TaskState};
use tonic::Status;

use crate::{orchestrator::jobs::is_complete, store::State};

/// Checks the mode-specific fields of `spec` and fills in Docker's daemon
/// default for a replicated job's `max_concurrent` (1).
pub fn complete_mode(spec: &mut ServiceSpec) -> Result<(), Status> {
    let mode = spec.mode();
    if mode != ServiceMode::ReplicatedJob && spec.max_concurrent.is_some() {
        return Err(Status::invalid_argument(
            "max-concurrent can only be used with replicated-job mode",
        ));
    }
    if !mode.is_job() {
        return Ok(());
    }
    if mode == ServiceMode::GlobalJob && spec.replicas != 0 {
        return Err(Status::invalid_argument(
            "replicas can only be used with replicated or replicated-job mode",
        ));
    }
    // swarmkit's words: a job's tasks are not replaced in rolling batches.
    if spec.update.is_some() {
        return Err(Status::invalid_argument(
            "Jobs may not have an update config",
        ));
    }
    if mode == ServiceMode::ReplicatedJob {
        let concurrent = *spec.max_concurrent.get_or_insert(1);
        // Docker takes 0 and then waits forever: say so instead.
        if concurrent == 0 && spec.replicas > 0 {
            return Err(Status::invalid_argument(format!(
                "max-concurrent 0 would never run any of the job's {} tasks: give at least 1",
                spec.replicas
            )));
        }
    }
    Ok(())
}

/// Starts the next iteration of a job (the first when it has none): its
/// tasks run again from the start. Does nothing to other services.
pub fn start_iteration(service: &mut Service, now: i64) {
    if !service.spec.as_ref().is_some_and(|s| s.mode().is_job()) {
        service.job_status = None;
        return;
    }
    service.job_status = Some(JobStatus {
        job_iteration: service
            .job_status
            .as_ref()
            .map_or(0, |j| j.job_iteration + 1),
        last_execution: now,
    });
}

/// A job's (running, desired, completed) as Docker counts them: tasks of
/// the current iteration only; desired is a replicated job's
/// `max_concurrent`, and for a global job the tasks still to complete.
/// None for services that are not jobs.
pub fn summary(state: &State, service: &Service) -> Option<(u64, u64, u64)> {
    let spec = service.spec.as_ref()?;
    let iteration = crate::orchestrator::jobs::iteration(service)?;
    let id = service.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    let (mut running, mut to_complete, mut completed) = (0, 0, 0);
    for task in state
        .tasks_of_service(id)
        .filter(|t| t.job_iteration == Some(iteration))
    {
        let observed = task.status.as_ref().map(|s| s.state()).unwrap_or_default();
        if observed == TaskState::Running {
            running += 1;
        }
        if is_complete(task) {
            completed += 1;
        } else if task.desired_state() == TaskState::Running {
            to_complete += 1;
        }
    }
    let desired = match spec.mode() {
        ServiceMode::ReplicatedJob => spec.max_concurrent.unwrap_or(1),
        _ => to_complete,
    };
    Some((running, desired, completed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::{Meta, Task, TaskStatus, UpdateConfig};

    fn spec(mode: ServiceMode, replicas: u64) -> ServiceSpec {
        ServiceSpec {
            name: "job".into(),
            mode: mode as i32,
            replicas,
            ..Default::default()
        }
    }

    fn message(spec: &mut ServiceSpec) -> String {
        complete_mode(spec).unwrap_err().message().to_owned()
    }

    #[test]
    fn modes_take_only_their_own_fields_and_get_docker_defaults() {
        let mut job = spec(ServiceMode::ReplicatedJob, 5);
        complete_mode(&mut job).unwrap();
        assert_eq!(job.max_concurrent, Some(1), "the daemon's default");
        let mut job = spec(ServiceMode::ReplicatedJob, 5);
        job.max_concurrent = Some(2);
        complete_mode(&mut job).unwrap();
        assert_eq!(job.max_concurrent, Some(2));

        let mut service = spec(ServiceMode::Replicated, 3);
        service.max_concurrent = Some(2);
        assert_eq!(
            message(&mut service),
            "max-concurrent can only be used with replicated-job mode"
        );
        let mut global = spec(ServiceMode::GlobalJob, 3);
        assert_eq!(
            message(&mut global),
            "replicas can only be used with replicated or replicated-job mode"
        );
        let mut updating = spec(ServiceMode::GlobalJob, 0);
        updating.update = Some(UpdateConfig::default());
        assert_eq!(message(&mut updating), "Jobs may not have an update config");
        let mut stuck = spec(ServiceMode::ReplicatedJob, 4);
        stuck.max_concurrent = Some(0);
        assert!(message(&mut stuck).contains("never run any of the job's 4 tasks"));
        // No completions asked: nothing to run, nothing to refuse.
        let mut empty = spec(ServiceMode::ReplicatedJob, 0);
        empty.max_concurrent = Some(0);
        complete_mode(&mut empty).unwrap();
    }

    #[test]
    fn each_update_starts_the_next_iteration_and_services_have_none() {
        let mut job = Service {
            spec: Some(spec(ServiceMode::GlobalJob, 0)),
            ..Default::default()
        };
        start_iteration(&mut job, 10);
        assert_eq!(
            job.job_status,
            Some(JobStatus {
                job_iteration: 0,
                last_execution: 10
            })
        );
        start_iteration(&mut job, 20);
        assert_eq!(
            job.job_status,
            Some(JobStatus {
                job_iteration: 1,
                last_execution: 20
            })
        );
        let mut service = Service {
            spec: Some(spec(ServiceMode::Replicated, 1)),
            ..Default::default()
        };
        start_iteration(&mut service, 10);
        assert_eq!(service.job_status, None);
    }

    #[test]
    fn counts_cover_the_current_iteration_only() {
        let mut state = State::default();
        let mut job = spec(ServiceMode::ReplicatedJob, 5);
        job.max_concurrent = Some(2);
        let service = Service {
            meta: Some(Meta {
                id: "job".into(),
                ..Default::default()
            }),
            spec: Some(job),
            job_status: Some(JobStatus {
                job_iteration: 1,
                last_execution: 0,
            }),
            ..Default::default()
        };
        let task = |id: &str, iteration: u64, state: TaskState, desired: TaskState| Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            service_id: "job".into(),
            job_iteration: Some(iteration),
            desired_state: desired as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        for t in [
            task("old", 0, TaskState::Complete, TaskState::Complete),
            task("old-running", 0, TaskState::Running, TaskState::Shutdown),
            task("a", 1, TaskState::Complete, TaskState::Complete),
            task("b", 1, TaskState::Complete, TaskState::Running),
            task("c", 1, TaskState::Running, TaskState::Running),
            task("d", 1, TaskState::Pending, TaskState::Running),
        ] {
            state.tasks.insert(t.meta.clone().unwrap().id, t);
        }
        assert_eq!(summary(&state, &service), Some((1, 2, 2)));
        let mut global = service.clone();
        global.spec.as_mut().unwrap().mode = ServiceMode::GlobalJob as i32;
        // Desired: the tasks still to complete (c and d).
        assert_eq!(summary(&state, &global), Some((1, 2, 2)));
        let mut plain = service.clone();
        plain.spec.as_mut().unwrap().mode = ServiceMode::Replicated as i32;
        assert_eq!(summary(&state, &plain), None);
    }
}
