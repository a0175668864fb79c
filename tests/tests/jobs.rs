//! Jobs end to end on an in-process cluster (a real manager, simulated
//! agents speaking the real agent protocol): completions counted, the
//! concurrency cap held, failures restarted, a global job on a node that
//! joins later, and an update that runs the job again.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context, Result, ensure};
use shoal_api::pb::{
    Empty, RestartPolicy, ServiceMode, ServiceSpec, ServiceSummary, Task, TaskState, UpdateConfig,
    UpdateServiceRequest,
};
use shoal_tests::cluster::{TestCluster, is_running, replicated, wait_until};

const WAIT: Duration = Duration::from_secs(15);

fn job(
    name: &str,
    mode: ServiceMode,
    completions: u64,
    max_concurrent: Option<u64>,
) -> ServiceSpec {
    let mut spec = replicated(name, completions);
    spec.mode = mode as i32;
    spec.max_concurrent = max_concurrent;
    spec.task.as_mut().unwrap().restart = Some(RestartPolicy {
        delay_ms: Some(100),
        ..Default::default()
    });
    spec
}

fn id(task: &Task) -> String {
    task.meta.clone().unwrap_or_default().id
}

fn state(task: &Task) -> TaskState {
    task.status.as_ref().map(|s| s.state()).unwrap_or_default()
}

async fn tasks_of(cluster: &TestCluster, service: &str) -> Result<Vec<Task>> {
    Ok(cluster
        .tasks()
        .await?
        .into_iter()
        .filter(|t| t.service_id == service)
        .collect())
}

async fn summary(cluster: &TestCluster, service: &str) -> Result<ServiceSummary> {
    cluster
        .control()
        .await?
        .list_services(Empty {})
        .await?
        .into_inner()
        .services
        .into_iter()
        .find(|s| {
            s.service
                .as_ref()
                .and_then(|s| s.meta.as_ref())
                .is_some_and(|m| m.id == service)
        })
        .context("the job is not listed")
}

/// Makes the agent running `task` end it with `exit_code`.
fn exit(cluster: &TestCluster, task: &Task, exit_code: i32) -> Result<()> {
    let task_id = id(task);
    let ended = cluster
        .agents
        .iter()
        .any(|a| a.executor.exit(&task_id, exit_code));
    ensure!(ended, "no agent runs task {task_id}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replicated_job_completes_five_tasks_two_at_a_time_then_runs_again_on_update()
-> Result<()> {
    let mut cluster = TestCluster::start(1).await?;
    cluster.add_agent("n1", &[]).await?;
    cluster.add_agent("n2", &[]).await?;
    let mut control = cluster.control().await?;
    let created = control
        .create_service(job("batch", ServiceMode::ReplicatedJob, 5, Some(2)))
        .await?
        .into_inner();
    let service = created.meta.clone().unwrap_or_default().id;
    ensure!(
        created.job_status.as_ref().map(|j| j.job_iteration) == Some(0),
        "a new job is at iteration 0: {:?}",
        created.job_status
    );
    ensure!(created.spec.as_ref().and_then(|s| s.max_concurrent) == Some(2));

    let mut failed_once = false;
    let mut most_running = 0;
    for done in 0..5 {
        let remaining = 5 - done;
        let running = wait_until(WAIT, "the job's tasks running", || async {
            let tasks = tasks_of(&cluster, &service).await.ok()?;
            let running: Vec<Task> = tasks.into_iter().filter(is_running).collect();
            (running.len() == remaining.min(2)).then_some(running)
        })
        .await?;
        for _ in 0..5 {
            let now = tasks_of(&cluster, &service).await?;
            most_running = most_running.max(now.iter().filter(|t| is_running(t)).count());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !failed_once {
            // One failure on the way: restarted in its slot, not counted.
            failed_once = true;
            exit(&cluster, &running[0], 7)?;
            let slot = running[0].slot;
            wait_until(WAIT, "the failed task restarted in its slot", || async {
                let tasks = tasks_of(&cluster, &service).await.ok()?;
                tasks
                    .iter()
                    .any(|t| t.slot == slot && is_running(t) && id(t) != id(&running[0]))
                    .then_some(())
            })
            .await?;
            let tasks = tasks_of(&cluster, &service).await?;
            let running: Vec<&Task> = tasks.iter().filter(|t| is_running(t)).collect();
            exit(&cluster, running[0], 0)?;
        } else {
            exit(&cluster, &running[0], 0)?;
        }
        wait_until(WAIT, "one more completion", || async {
            let s = summary(&cluster, &service).await.ok()?;
            (s.completed == done as u64 + 1).then_some(())
        })
        .await?;
    }
    ensure!(most_running <= 2, "{most_running} tasks ran at once");
    let tasks = tasks_of(&cluster, &service).await?;
    let complete: BTreeSet<u64> = tasks
        .iter()
        .filter(|t| state(t) == TaskState::Complete)
        .map(|t| t.slot)
        .collect();
    ensure!(
        complete == BTreeSet::from([1, 2, 3, 4, 5]),
        "completed slots {complete:?}"
    );
    ensure!(
        tasks
            .iter()
            .any(|t| state(t) == TaskState::Failed && t.status.as_ref().unwrap().exit_code == 7),
        "the failed task is kept as history"
    );
    // Done: nothing runs, and nothing new starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = summary(&cluster, &service).await?;
    ensure!(
        (s.running, s.desired, s.completed) == (0, 2, 5),
        "summary {:?}",
        (s.running, s.desired, s.completed)
    );
    ensure!(tasks_of(&cluster, &service).await?.len() == tasks.len());

    // An update runs it again: iteration 1, from the start.
    let current = s.service.clone().unwrap_or_default();
    let updated = control
        .update_service(UpdateServiceRequest {
            id: service.clone(),
            version: current.meta.as_ref().map_or(0, |m| m.version),
            spec: current.spec.clone(),
            rollback: false,
        })
        .await?
        .into_inner();
    ensure!(
        updated.job_status.as_ref().map(|j| j.job_iteration) == Some(1),
        "an unchanged update still starts a new iteration: {:?}",
        updated.job_status
    );
    ensure!(
        updated.update_status.is_none(),
        "no rolling update for jobs"
    );
    wait_until(WAIT, "the second iteration running", || async {
        let tasks = tasks_of(&cluster, &service).await.ok()?;
        let running: Vec<&Task> = tasks
            .iter()
            .filter(|t| is_running(t) && t.job_iteration == Some(1))
            .collect();
        (running.len() == 2).then_some(())
    })
    .await?;
    let s = summary(&cluster, &service).await?;
    ensure!(
        s.completed == 0,
        "completions of iteration 0 no longer count"
    );

    // Update settings are refused for jobs, in swarmkit's words.
    let mut with_update = updated.spec.clone().unwrap_or_default();
    with_update.update = Some(UpdateConfig::default());
    let err = control
        .update_service(UpdateServiceRequest {
            id: service.clone(),
            version: 0,
            spec: Some(with_update),
            rollback: false,
        })
        .await
        .unwrap_err();
    ensure!(
        err.message() == "Jobs may not have an update config",
        "{}",
        err.message()
    );
    Ok(())
}

/// Waits for `expected` running tasks of `service`, then completes them.
async fn complete_all(cluster: &TestCluster, service: &str, expected: usize) -> Result<()> {
    let running = wait_until(WAIT, "a task running on each node", || async {
        let tasks = tasks_of(cluster, service).await.ok()?;
        let running: Vec<Task> = tasks.into_iter().filter(is_running).collect();
        (running.len() == expected).then_some(running)
    })
    .await?;
    for task in &running {
        exit(cluster, task, 0)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_global_job_completes_on_every_node_including_one_that_joins_later() -> Result<()> {
    let mut cluster = TestCluster::start(1).await?;
    cluster.add_agent("n1", &[]).await?;
    cluster.add_agent("n2", &[]).await?;
    let mut control = cluster.control().await?;
    let service = control
        .create_service(job("setup", ServiceMode::GlobalJob, 0, None))
        .await?
        .into_inner()
        .meta
        .unwrap_or_default()
        .id;
    complete_all(&cluster, &service, 2).await?;
    wait_until(WAIT, "2 of 2 completed", || async {
        let s = summary(&cluster, &service).await.ok()?;
        ((s.running, s.desired, s.completed) == (0, 0, 2)).then_some(())
    })
    .await?;
    cluster.add_agent("n3", &[]).await?;
    complete_all(&cluster, &service, 1).await?;
    wait_until(WAIT, "3 of 3 completed", || async {
        let s = summary(&cluster, &service).await.ok()?;
        (s.completed == 3).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tasks = tasks_of(&cluster, &service).await?;
    let nodes: BTreeSet<&str> = tasks.iter().map(|t| t.node_id.as_str()).collect();
    ensure!(
        tasks.len() == 3 && nodes.len() == 3,
        "one task per node, run once: {} tasks on {} nodes",
        tasks.len(),
        nodes.len()
    );
    ensure!(
        tasks
            .iter()
            .all(|t| state(t) == TaskState::Complete && t.slot == 0)
    );
    // Replicas make no sense for a global job.
    let err = control
        .create_service(job("bad", ServiceMode::GlobalJob, 2, None))
        .await
        .unwrap_err();
    ensure!(
        err.message() == "replicas can only be used with replicated or replicated-job mode",
        "{}",
        err.message()
    );
    Ok(())
}
