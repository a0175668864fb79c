//! The cluster's limits end to end, on in-process managers (Raft on disk,
//! gRPC on loopback) and simulated agents: a request over a limit is
//! refused naming it and writes nothing; the scheduler places no more on a
//! node than it holds.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use shoal_api::pb::{Empty, TaskState, UpdateServiceRequest};
use shoal_manager::limits::Limits;
use shoal_tests::cluster::{TestCluster, is_running, replicated, wait_until};

const WAIT: Duration = Duration::from_secs(15);

/// The last log index of every running manager.
fn log_indexes(cluster: &TestCluster) -> Vec<Option<u64>> {
    cluster
        .managers
        .iter()
        .flatten()
        .map(|m| m.manager.raft_metrics().last_log_index)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_beyond_the_limit_are_refused_naming_it_and_nothing_is_written() -> Result<()> {
    let cluster = TestCluster::start(3).await?;
    let leader = cluster.wait_for_leader(WAIT).await?;
    // The cluster is done forming (joins, membership changes): every
    // manager holds the same log, unchanged for a while.
    let mut settled = log_indexes(&cluster);
    let mut since = std::time::Instant::now();
    let deadline = since + WAIT;
    while since.elapsed() < Duration::from_millis(1500) || !settled.windows(2).all(|w| w[0] == w[1])
    {
        ensure!(
            std::time::Instant::now() < deadline,
            "the log never settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = log_indexes(&cluster);
        if now != settled {
            settled = now;
            since = std::time::Instant::now();
        }
    }
    let mut control = cluster.control().await?;
    let err = control
        .create_service(replicated("huge", 99_999_999_999))
        .await
        .expect_err("99999999999 replicas were accepted");
    ensure!(
        err.code() == tonic::Code::InvalidArgument,
        "{:?}",
        err.code()
    );
    ensure!(
        err.message()
            == "service huge: replicas 99999999999 exceeds the cluster's limit of 10000 replicas per service (shoal-manager --max-replicas-per-service)",
        "{}",
        err.message()
    );
    // Through a follower, which forwards to the leader: the same answer.
    let follower = cluster
        .managers
        .iter()
        .enumerate()
        .find(|(i, m)| *i != leader && m.is_some())
        .and_then(|(_, m)| m.as_ref())
        .context("a follower")?
        .addr()
        .to_owned();
    let mut via_follower = shoal_api::pb::control_client::ControlClient::new(
        shoal_pki::transport::channel(&follower, cluster.admin_dialer().await?).await?,
    );
    let err = via_follower
        .create_service(replicated("huge", 99_999_999_999))
        .await
        .expect_err("accepted through a follower");
    ensure!(
        err.message().contains("--max-replicas-per-service"),
        "{}",
        err.message()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        log_indexes(&cluster) == settled,
        "the refused requests wrote to the Raft log: {settled:?} then {:?}",
        log_indexes(&cluster)
    );
    ensure!(
        control
            .list_services(Empty {})
            .await?
            .into_inner()
            .services
            .is_empty(),
        "a refused service was stored"
    );
    ensure!(cluster.tasks().await?.is_empty(), "tasks were written");

    // Scaling an existing service past the limit: refused, nothing changes.
    let web = control
        .create_service(replicated("web", 2))
        .await?
        .into_inner();
    let meta = web.meta.clone().unwrap_or_default();
    let mut spec = web.spec.clone().unwrap_or_default();
    spec.replicas = 99_999_999_999;
    let err = control
        .update_service(UpdateServiceRequest {
            id: meta.id.clone(),
            version: meta.version,
            spec: Some(spec),
            rollback: false,
        })
        .await
        .expect_err("a scale to 99999999999 was accepted");
    ensure!(
        err.message()
            .contains("replicas 99999999999 exceeds the cluster's limit of 10000"),
        "{}",
        err.message()
    );
    let stored = control.list_services(Empty {}).await?.into_inner().services;
    let stored = stored[0].service.clone().unwrap_or_default();
    ensure!(
        stored.spec.unwrap_or_default().replicas == 2
            && stored.meta.unwrap_or_default().version == meta.version,
        "the refused scale changed the service"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_beyond_what_the_nodes_hold_stay_pending_naming_the_limit() -> Result<()> {
    let mut cluster = TestCluster::start_with_limits(
        1,
        Limits {
            max_tasks_per_node: 2,
            ..Default::default()
        },
    )
    .await?;
    cluster.add_agent("n1", &[]).await?;
    cluster.add_agent("n2", &[]).await?;
    let mut control = cluster.control().await?;
    let web = control
        .create_service(replicated("web", 6))
        .await?
        .into_inner();
    let id = web.meta.clone().unwrap_or_default().id;
    let pending = wait_until(WAIT, "4 running and 2 pending tasks", || async {
        let tasks = cluster.tasks().await.ok()?;
        let running = tasks.iter().filter(|t| is_running(t)).count();
        let pending: Vec<String> = tasks
            .iter()
            .filter(|t| t.status.as_ref().map(|s| s.state()) == Some(TaskState::Pending))
            .map(|t| t.status.clone().unwrap_or_default().err)
            .filter(|err| !err.is_empty())
            .collect();
        (running == 4 && pending.len() == 2).then_some(pending)
    })
    .await?;
    // (The manager's own node runs no agent: it is not available.)
    for err in &pending {
        ensure!(
            err.starts_with("no suitable node (")
                && err.contains("2 nodes at their task limit of 2 tasks"),
            "{err}"
        );
    }
    let per_node = cluster.running_per_node(&id).await?;
    ensure!(
        per_node.values().all(|n| *n == 2),
        "a node runs more than its 2: {per_node:?}"
    );
    // Nothing more starts while they wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let running: usize = cluster
        .agents
        .iter()
        .map(|a| a.executor.running().len())
        .sum();
    ensure!(running == 4, "the agents run {running} tasks");

    // Scaled within what the nodes hold: nothing stays pending.
    let mut spec = web.spec.clone().unwrap_or_default();
    spec.replicas = 4;
    control
        .update_service(UpdateServiceRequest {
            id: id.clone(),
            version: 0,
            spec: Some(spec),
            rollback: false,
        })
        .await?;
    wait_until(WAIT, "4 running tasks and none pending", || async {
        let tasks = cluster.tasks().await.ok()?;
        let live_pending = tasks.iter().any(|t| {
            t.desired_state() == TaskState::Running
                && t.status.as_ref().map(|s| s.state()) == Some(TaskState::Pending)
        });
        (tasks.iter().filter(|t| is_running(t)).count() == 4 && !live_pending).then_some(())
    })
    .await?;
    Ok(())
}
