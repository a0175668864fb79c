//! Jobs in the CLI: `--mode`/`--replicas`/`--max-concurrent` as Docker reads
//! them, update and scale of jobs, and how ls, ps and inspect show them.

use clap::Parser;
use shoal_api::pb::{
    JobStatus, Meta, Node, Service, ServiceMode, ServiceSpec, ServiceSummary, Task, TaskState,
    TaskStatus,
};

use super::{CreateArgs, inspect::inspect_json, job};
use crate::commands::service_update::UpdateArgs;
use crate::commands::tasks::{PsOptions, task_filters, task_listing};
use crate::output::Format;

#[derive(Parser)]
struct Create {
    #[command(flatten)]
    args: CreateArgs,
}

#[derive(Parser)]
struct Update {
    #[command(flatten)]
    args: UpdateArgs,
}

fn create(flags: &[&str]) -> anyhow::Result<ServiceSpec> {
    let mut argv = vec!["shoal", "--name", "batch"];
    argv.extend_from_slice(flags);
    argv.push("shoal/toolbox");
    Create::try_parse_from(argv)?.args.spec()
}

fn error(flags: &[&str]) -> String {
    format!("{:#}", create(flags).unwrap_err())
}

#[test]
fn create_reads_job_modes_with_docker_s_defaults() {
    let spec = create(&[
        "--mode",
        "replicated-job",
        "--replicas",
        "5",
        "--max-concurrent",
        "2",
    ])
    .unwrap();
    assert_eq!(
        (spec.mode(), spec.replicas, spec.max_concurrent),
        (ServiceMode::ReplicatedJob, 5, Some(2))
    );
    // --max-concurrent defaults to --replicas, and the other way round.
    let spec = create(&["--mode", "replicated-job", "--replicas", "4"]).unwrap();
    assert_eq!((spec.replicas, spec.max_concurrent), (4, Some(4)));
    let spec = create(&["--mode", "replicated-job", "--max-concurrent", "3"]).unwrap();
    assert_eq!((spec.replicas, spec.max_concurrent), (3, Some(3)));
    let spec = create(&["--mode", "replicated-job"]).unwrap();
    assert_eq!((spec.replicas, spec.max_concurrent), (1, Some(1)));
    let spec = create(&["--mode", "global-job"]).unwrap();
    assert_eq!(
        (spec.mode(), spec.replicas, spec.max_concurrent),
        (ServiceMode::GlobalJob, 0, None)
    );
    let spec = create(&["--replicas", "2"]).unwrap();
    assert_eq!(
        (spec.mode(), spec.max_concurrent),
        (ServiceMode::Replicated, None)
    );
}

#[test]
fn create_refuses_what_docker_refuses_for_each_mode() {
    assert_eq!(
        error(&["--max-concurrent", "2"]),
        "--max-concurrent can only be used with replicated-job mode"
    );
    assert_eq!(
        error(&["--mode", "global", "--max-concurrent", "2"]),
        "--max-concurrent can only be used with replicated-job mode"
    );
    assert_eq!(
        error(&["--mode", "global-job", "--replicas", "2"]),
        "--replicas can only be used with replicated or replicated-job mode"
    );
    assert_eq!(
        error(&["--mode", "global-job", "--replicas-max-per-node", "1"]),
        "--replicas-max-per-node can only be used with replicated or replicated-job mode"
    );
    assert_eq!(
        error(&["--mode", "replicated-job", "--update-parallelism", "2"]),
        "update and rollback configuration is not supported for jobs"
    );
    assert_eq!(
        error(&["--mode", "global-job", "--rollback-order", "start-first"]),
        "update and rollback configuration is not supported for jobs"
    );
    assert!(error(&["--mode", "cron"]).contains("replicated-job"));
}

fn update(flags: &[&str], spec: ServiceSpec) -> anyhow::Result<ServiceSpec> {
    let mut argv = vec!["shoal", "batch"];
    argv.extend_from_slice(flags);
    Update::try_parse_from(argv)?.args.changed(spec, &[])
}

#[test]
fn update_changes_a_replicated_job_s_completions_and_concurrency() {
    let job = create(&[
        "--mode",
        "replicated-job",
        "--replicas",
        "5",
        "--max-concurrent",
        "2",
    ])
    .unwrap();
    let out = update(&["--replicas", "8", "--max-concurrent", "4"], job.clone()).unwrap();
    assert_eq!((out.replicas, out.max_concurrent), (8, Some(4)));
    let err = update(&["--update-delay", "1s"], job.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "update and rollback configuration is not supported for jobs"
    );
    // --force alone runs the job again (a new iteration on the manager).
    assert_eq!(
        update(&["--force"], job)
            .unwrap()
            .task
            .unwrap()
            .force_update,
        1
    );
    let service = create(&["--replicas", "2"]).unwrap();
    let err = update(&["--max-concurrent", "2"], service).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--max-concurrent can only be used with replicated-job mode"
    );
    let global = create(&["--mode", "global-job"]).unwrap();
    let err = update(&["--replicas", "2"], global).unwrap_err();
    assert!(
        err.to_string().contains("replicated or replicated-job"),
        "{err}"
    );
}

fn job_service(mode: ServiceMode, replicas: u64, max: Option<u64>) -> Service {
    Service {
        meta: Some(Meta {
            id: "svc".into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            name: "batch".into(),
            mode: mode as i32,
            replicas,
            max_concurrent: max,
            ..Default::default()
        }),
        job_status: Some(JobStatus {
            job_iteration: 2,
            last_execution: 1_700_000_000_000,
        }),
        ..Default::default()
    }
}

#[test]
fn ls_shows_jobs_as_docker_does() {
    let summary = |service: Service, running, desired, completed| ServiceSummary {
        service: Some(service),
        running,
        desired,
        completed,
        counters: None,
    };
    let replicated = job_service(ServiceMode::ReplicatedJob, 5, Some(2));
    assert_eq!(
        job::replicas_column(&summary(replicated, 2, 2, 3)),
        "2/2 (3/5 completed)"
    );
    let global = job_service(ServiceMode::GlobalJob, 0, None);
    assert_eq!(
        job::replicas_column(&summary(global, 1, 1, 2)),
        "1/1 (2/3 completed)"
    );
    let plain = job_service(ServiceMode::Replicated, 3, None);
    assert_eq!(job::replicas_column(&summary(plain, 3, 3, 0)), "3/3");
    assert_eq!(
        job::mode_column(ServiceMode::ReplicatedJob),
        "replicated job"
    );
    assert_eq!(job::mode_column(ServiceMode::GlobalJob), "global job");
    assert_eq!(job::mode_column(ServiceMode::Global), "global");
}

#[test]
fn ps_shows_job_tasks_meant_to_complete_and_complete_ones() {
    let task = |id: &str, slot, created_at, desired: TaskState, state: TaskState| Task {
        meta: Some(Meta {
            id: id.into(),
            created_at,
            ..Default::default()
        }),
        service_id: "svc".into(),
        slot,
        desired_state: desired as i32,
        job_iteration: Some(2),
        status: Some(TaskStatus {
            state: state as i32,
            timestamp: shoal_api::now_ms(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let tasks = [
        task(
            "aaaaaaaaaaaaaaaa",
            1,
            1,
            TaskState::Complete,
            TaskState::Complete,
        ),
        task(
            "bbbbbbbbbbbbbbbb",
            2,
            2,
            TaskState::Running,
            TaskState::Running,
        ),
    ];
    let service = job_service(ServiceMode::ReplicatedJob, 2, Some(2));
    let format: Format = "table".parse().unwrap();
    let options = PsOptions {
        no_trunc: false,
        no_resolve: false,
        format: &format,
    };
    let filters = task_filters(&[], std::slice::from_ref(&service), &[], None).unwrap();
    let table = task_listing(&[service], &tasks, &[Node::default()], &filters, &options)
        .render(&format, false)
        .unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[1].contains("batch.1")
            && lines[1].contains("Complete   ")
            && lines[1].contains("Complete less than a second ago"),
        "{table}"
    );
    assert!(
        lines[2].contains("batch.2")
            && lines[2].contains("Complete ")
            && lines[2].contains("Running less than a second ago"),
        "a running job task is meant to complete: {table}"
    );
}

#[test]
fn inspect_shows_the_job_mode_and_status_in_docker_s_shape() {
    let json = inspect_json(&job_service(ServiceMode::ReplicatedJob, 5, Some(2)));
    assert_eq!(json["Spec"]["Mode"]["ReplicatedJob"]["MaxConcurrent"], 2);
    assert_eq!(json["Spec"]["Mode"]["ReplicatedJob"]["TotalCompletions"], 5);
    assert_eq!(json["JobStatus"]["JobIteration"]["Index"], 2);
    assert!(
        json["JobStatus"]["LastExecution"]
            .as_str()
            .is_some_and(|t| t.starts_with("2023-11-14T22:13:20")),
        "{}",
        json["JobStatus"]
    );
    let json = inspect_json(&job_service(ServiceMode::GlobalJob, 0, None));
    assert_eq!(json["Spec"]["Mode"], serde_json::json!({ "GlobalJob": {} }));
    let mut plain = job_service(ServiceMode::Replicated, 3, None);
    plain.job_status = None;
    let json = inspect_json(&plain);
    assert!(json["JobStatus"].is_null());
    assert_eq!(json["Spec"]["Mode"]["Replicated"]["Replicas"], 3);
}
