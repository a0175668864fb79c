//! Jobs in the CLI: `--mode replicated-job|global-job` with `--replicas`
//! and `--max-concurrent` read as Docker's CLI and daemon read them, and
//! the words and counts listings show for jobs.

use anyhow::{Result, bail};
use serde_json::{Value, json};
use shoal_api::pb::{Service, ServiceMode, ServiceSpec, ServiceSummary, Task, TaskState};

use crate::output::rfc3339;

/// `--mode` values, as Docker's.
pub(crate) const MODES: [&str; 4] = ["replicated", "global", "replicated-job", "global-job"];

/// What `--mode`, `--replicas`, `--max-concurrent` and
/// `--replicas-max-per-node` make of a spec: its mode, replicas (a
/// replicated job's total completions) and max_concurrent. Docker's
/// defaults: a replicated job runs `--replicas` at once unless
/// `--max-concurrent` says otherwise, both default to each other, then 1.
pub(crate) fn mode_fields(
    mode: &str,
    replicas: Option<u64>,
    max_concurrent: Option<u64>,
    max_per_node: Option<u64>,
) -> Result<(ServiceMode, u64, Option<u64>)> {
    let Some(mode) = ServiceMode::from_word(mode) else {
        bail!(
            "invalid --mode {mode:?}: expected {}",
            ServiceMode::words().join(", ")
        );
    };
    if max_concurrent.is_some() && mode != ServiceMode::ReplicatedJob {
        bail!("--max-concurrent can only be used with replicated-job mode");
    }
    if !mode.is_replicated() {
        if replicas.is_some() {
            bail!("--replicas can only be used with replicated or replicated-job mode");
        }
        if max_per_node.is_some_and(|n| n > 0) {
            bail!(
                "--replicas-max-per-node can only be used with replicated or replicated-job mode"
            );
        }
    }
    Ok(match mode {
        ServiceMode::Replicated => (mode, replicas.unwrap_or(1), None),
        ServiceMode::ReplicatedJob => {
            let concurrent = max_concurrent.or(replicas).unwrap_or(1);
            (mode, replicas.unwrap_or(concurrent), Some(concurrent))
        }
        ServiceMode::Global | ServiceMode::GlobalJob => (mode, 0, None),
    })
}

/// Docker refuses update and rollback settings for jobs: they are not
/// replaced in rolling batches.
pub(crate) fn refuse_update_config(spec: &ServiceSpec) -> Result<()> {
    if spec.mode().is_job() && (spec.update.is_some() || spec.rollback.is_some()) {
        bail!("update and rollback configuration is not supported for jobs");
    }
    Ok(())
}

/// `service update --max-concurrent N` (Docker's CLI takes the flag and
/// ignores it; here it changes what it says).
pub(crate) fn set_max_concurrent(
    spec: &mut ServiceSpec,
    max_concurrent: Option<u64>,
) -> Result<()> {
    let Some(n) = max_concurrent else {
        return Ok(());
    };
    if spec.mode() != ServiceMode::ReplicatedJob {
        bail!("--max-concurrent can only be used with replicated-job mode");
    }
    spec.max_concurrent = Some(n);
    Ok(())
}

/// The MODE column, in Docker's words ("replicated job").
pub(crate) fn mode_column(mode: ServiceMode) -> &'static str {
    match mode {
        ServiceMode::ReplicatedJob => "replicated job",
        ServiceMode::GlobalJob => "global job",
        other => other.word(),
    }
}

/// The REPLICAS column: `running/desired`, and for jobs Docker's
/// `(completed/total completed)`.
pub(crate) fn replicas_column(summary: &ServiceSummary) -> String {
    let spec = summary
        .service
        .as_ref()
        .and_then(|s| s.spec.clone())
        .unwrap_or_default();
    let (running, desired, completed) = (summary.running, summary.desired, summary.completed);
    match spec.mode() {
        ServiceMode::ReplicatedJob => format!(
            "{running}/{desired} ({completed}/{} completed)",
            spec.replicas
        ),
        // A global job's total: the tasks still to complete and those done.
        ServiceMode::GlobalJob => format!(
            "{running}/{desired} ({completed}/{} completed)",
            desired + completed
        ),
        _ => format!("{running}/{desired}"),
    }
}

/// The DESIRED STATE of a task: a job's tasks are meant to complete
/// (swarmkit gives them desired state Complete; the manager marks them so
/// once they have).
pub(crate) fn desired_state(task: &Task) -> TaskState {
    match task.desired_state() {
        TaskState::Running if task.job_iteration.is_some() => TaskState::Complete,
        other => other,
    }
}

/// `Spec.Mode` in `service inspect`.
pub(crate) fn mode_json(spec: &ServiceSpec) -> Value {
    match spec.mode() {
        ServiceMode::Replicated => json!({ "Replicated": { "Replicas": spec.replicas } }),
        ServiceMode::Global => json!({ "Global": {} }),
        ServiceMode::ReplicatedJob => json!({ "ReplicatedJob": {
            "MaxConcurrent": spec.max_concurrent.unwrap_or(1),
            "TotalCompletions": spec.replicas,
        } }),
        ServiceMode::GlobalJob => json!({ "GlobalJob": {} }),
    }
}

/// `JobStatus` in `service inspect` (absent for services).
pub(crate) fn status_json(service: &Service) -> Option<Value> {
    service.job_status.as_ref().map(|j| {
        json!({
            "JobIteration": { "Index": j.job_iteration },
            "LastExecution": rfc3339(j.last_execution),
        })
    })
}

/// The mode lines of `service inspect --pretty`.
pub(crate) fn pretty_mode(spec: &ServiceSpec) -> Vec<String> {
    match spec.mode() {
        ServiceMode::Replicated => vec![
            "Service Mode:\tReplicated".into(),
            format!(" Replicas:\t{}", spec.replicas),
        ],
        ServiceMode::Global => vec!["Service Mode:\tGlobal".into()],
        ServiceMode::ReplicatedJob => vec![
            "Service Mode:\tReplicated job".into(),
            format!(" Max concurrent:\t{}", spec.max_concurrent.unwrap_or(1)),
            format!(" Total completions:\t{}", spec.replicas),
        ],
        ServiceMode::GlobalJob => vec!["Service Mode:\tGlobal job".into()],
    }
}
