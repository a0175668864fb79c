//! Progress of a job after `service create|update|rollback` or `stack
//! deploy`, as Docker shows it: `job progress: N out of M complete`, for a
//! replicated job `active tasks: A out of B tasks`, a bar per slot (global:
//! per node) up to 20, then `job complete`. Only the tasks of the job's
//! current iteration count.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use shoal_api::pb::{Service, ServiceMode, Task, TaskState};

const BARS_SHOWN: usize = 20;
/// A global job whose iteration has no task yet after this long has no
/// eligible node: it is complete with nothing to run (Docker would wait
/// forever).
const NO_TASKS_GRACE: Duration = Duration::from_secs(5);
/// Nothing under way and not complete for this long: the restart policy
/// gave up on what is left, so the job cannot complete.
const STUCK_AFTER: Duration = Duration::from_secs(3);

/// What one look at a job found.
pub(super) struct JobView {
    pub lines: Vec<String>,
    pub complete: bool,
    /// Why the job cannot complete, once that is clear.
    pub failed: Option<String>,
}

/// Watches one job across polls (it needs time to tell "stuck" from
/// "between two tasks").
#[derive(Default)]
pub(super) struct JobWatch {
    idle_since: Option<Instant>,
    started: Option<Instant>,
}

impl JobWatch {
    pub(super) fn observe(&mut self, service: &Service, tasks: &[Task]) -> JobView {
        let started = *self.started.get_or_insert_with(Instant::now);
        let spec = service.spec.clone().unwrap_or_default();
        let iteration = service.job_status.as_ref().map_or(0, |j| j.job_iteration);
        let service_id = service.meta.as_ref().map_or("", |m| m.id.as_str());
        // Per slot (global: per node) the task furthest behind, as Docker's.
        let mut places: BTreeMap<(u64, &str), &Task> = BTreeMap::new();
        for task in tasks
            .iter()
            .filter(|t| t.service_id == service_id && t.job_iteration == Some(iteration))
        {
            let key = if task.slot > 0 {
                (task.slot, "")
            } else {
                (0, task.node_id.as_str())
            };
            let place = places.entry(key).or_insert(task);
            if state(task) < state(place) {
                *place = task;
            }
        }
        let replicated = spec.mode() == ServiceMode::ReplicatedJob;
        let total = if replicated {
            spec.replicas as usize
        } else {
            places.len()
        };
        let completed = places
            .values()
            .filter(|t| state(t) == TaskState::Complete)
            .count();
        let active = places
            .values()
            .filter(|t| state(t) < TaskState::Complete)
            .count();
        let width = total.to_string().len();
        let mut lines = vec![
            spec.name.clone(),
            format!(
                "job progress: {completed:>width$} out of {total} complete {}",
                bar(completed, total)
            ),
        ];
        if replicated {
            let concurrent = spec.max_concurrent.unwrap_or(1) as usize;
            let possible = total.saturating_sub(completed).min(concurrent);
            let w = concurrent.to_string().len();
            lines.push(format!(
                "active tasks: {active:>w$} out of {possible:>w$} tasks"
            ));
        }
        if total <= BARS_SHOWN {
            for (i, ((slot, node), task)) in places.iter().enumerate() {
                let label = if *slot > 0 {
                    format!("{slot}/{total}")
                } else if node.is_empty() {
                    format!("{}", i + 1)
                } else {
                    (*node).to_owned()
                };
                let status = task.status.clone().unwrap_or_default();
                let text = if status.err.is_empty() {
                    format!("{:<9} {}", state(task).word(), bar(step(state(task)), 10))
                } else {
                    status.err
                };
                lines.push(format!("{label}: {text}"));
            }
        }
        let waiting_for_tasks =
            !replicated && places.is_empty() && started.elapsed() < NO_TASKS_GRACE;
        if waiting_for_tasks {
            lines.truncate(1);
            lines.push("job progress: waiting for tasks".into());
        }
        let complete = !waiting_for_tasks && completed >= total;
        if complete {
            lines.push("job complete".into());
        }
        let idle = !complete && !waiting_for_tasks && active == 0;
        self.idle_since = if idle {
            self.idle_since.or_else(|| Some(Instant::now()))
        } else {
            None
        };
        let failed = self
            .idle_since
            .filter(|since| since.elapsed() >= STUCK_AFTER)
            .map(|_| {
                let culprit = places
                    .values()
                    .find(|t| state(t) != TaskState::Complete)
                    .and_then(|t| t.status.clone())
                    .map(|s| format!(": {}", if s.err.is_empty() { s.message } else { s.err }))
                    .unwrap_or_default();
                format!(
                    "{}: job cannot complete, {completed} of {total} tasks completed and the restart policy gave up on the rest{culprit}",
                    spec.name
                )
            });
        JobView {
            lines,
            complete,
            failed,
        }
    }
}

fn state(task: &Task) -> TaskState {
    task.status.as_ref().map(|s| s.state()).unwrap_or_default()
}

/// Docker's numbered states for job bars: new 1 … running 8, complete 9,
/// anything past that 10.
fn step(state: TaskState) -> usize {
    match state {
        TaskState::Complete => 9,
        s if s > TaskState::Complete => 10,
        s => s as usize + 1,
    }
}

fn bar(done: usize, of: usize) -> String {
    let width = 50;
    // Nothing to do is all done.
    let filled = (width * done.min(of)).checked_div(of).unwrap_or(width);
    if filled >= width {
        format!("[{}>]", "=".repeat(width))
    } else {
        format!("[{}>{}]", "=".repeat(filled), " ".repeat(width - filled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::{JobStatus, Meta, ServiceSpec, TaskStatus};

    fn job(mode: ServiceMode, replicas: u64, max: u64) -> Service {
        Service {
            meta: Some(Meta {
                id: "s".into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                name: "batch".into(),
                mode: mode as i32,
                replicas,
                max_concurrent: Some(max),
                ..Default::default()
            }),
            job_status: Some(JobStatus {
                job_iteration: 1,
                last_execution: 0,
            }),
            ..Default::default()
        }
    }

    fn task(slot: u64, node: &str, iteration: u64, state: TaskState) -> Task {
        Task {
            service_id: "s".into(),
            slot,
            node_id: node.into(),
            job_iteration: Some(iteration),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_replicated_job_shows_completions_active_tasks_and_a_bar_per_slot() {
        let service = job(ServiceMode::ReplicatedJob, 5, 2);
        let tasks = [
            task(1, "", 0, TaskState::Running),
            task(1, "", 1, TaskState::Complete),
            task(2, "", 1, TaskState::Failed),
            task(2, "", 1, TaskState::Running),
            task(3, "", 1, TaskState::Pending),
        ];
        let view = JobWatch::default().observe(&service, &tasks);
        assert!(!view.complete && view.failed.is_none());
        assert!(
            view.lines[1].starts_with("job progress: 1 out of 5 complete [=========="),
            "{:?}",
            view.lines
        );
        assert_eq!(view.lines[2], "active tasks: 2 out of 2 tasks");
        assert!(
            view.lines[3].starts_with("1/5: complete "),
            "{}",
            view.lines[3]
        );
        assert!(
            view.lines[4].starts_with("2/5: running "),
            "{}",
            view.lines[4]
        );
        assert!(
            view.lines[5].starts_with("3/5: pending "),
            "{}",
            view.lines[5]
        );

        let done: Vec<Task> = (1..=5)
            .map(|slot| task(slot, "", 1, TaskState::Complete))
            .collect();
        let view = JobWatch::default().observe(&service, &done);
        assert!(view.complete);
        assert_eq!(view.lines.last().unwrap(), "job complete");
    }

    #[test]
    fn a_global_job_counts_its_nodes_and_waits_for_its_first_tasks() {
        let service = job(ServiceMode::GlobalJob, 0, 0);
        let mut watch = JobWatch::default();
        let view = watch.observe(&service, &[]);
        assert!(!view.complete, "no task yet: waiting, not done");
        assert_eq!(view.lines[1], "job progress: waiting for tasks");
        let tasks = [
            task(0, "n1", 1, TaskState::Complete),
            task(0, "n2", 1, TaskState::Starting),
        ];
        let view = watch.observe(&service, &tasks);
        assert!(view.lines[1].starts_with("job progress: 1 out of 2 complete"));
        assert!(view.lines.iter().any(|l| l.starts_with("n2: starting")));
        assert!(!view.complete);
    }

    #[test]
    fn a_job_with_nothing_left_under_way_fails_once_that_lasts() {
        let service = job(ServiceMode::ReplicatedJob, 2, 1);
        let mut failed = task(2, "", 1, TaskState::Failed);
        failed.status.as_mut().unwrap().err = "task: non-zero exit (3)".into();
        let tasks = [task(1, "", 1, TaskState::Complete), failed];
        let mut watch = JobWatch::default();
        assert!(watch.observe(&service, &tasks).failed.is_none());
        watch.idle_since = Some(Instant::now() - STUCK_AFTER);
        let why = watch.observe(&service, &tasks).failed.unwrap();
        assert!(
            why.contains("1 of 2 tasks completed") && why.contains("non-zero exit (3)"),
            "{why}"
        );
    }
}
