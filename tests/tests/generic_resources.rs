//! Generic resources through the real manager and agent protocol: nodes
//! advertise them at registration (`shoal-agent join --generic-resource`),
//! and a service that reserves one runs only where a node offers it, no
//! more tasks there than it has, each told which instance it took.

use std::time::Duration;

use anyhow::{Result, ensure};
use shoal_api::{
    engine::{discrete, named},
    pb::{ResourceRequirements, TaskState},
};
use shoal_tests::cluster::{TestCluster, is_running, replicated, wait_until};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reservation_lands_only_on_nodes_that_offer_it_and_uses_them_up() -> Result<()> {
    let mut cluster = TestCluster::start(1).await?;
    cluster.add_agent("plain", &[]).await?;
    cluster
        .add_agent_offering("gpus", vec![named("gpu", "GPU-0"), named("gpu", "GPU-1")])
        .await?;
    cluster
        .add_agent_offering("counted", vec![discrete("gpu", 1)])
        .await?;
    let mut control = cluster.control().await?;

    // The nodes say what they offer.
    let nodes = cluster.nodes().await?;
    let offered = |host: &str| {
        nodes
            .iter()
            .find(|n| n.description.as_ref().is_some_and(|d| d.hostname == host))
            .and_then(|n| n.description.clone())
            .map(|d| d.generic_resources)
            .unwrap_or_default()
    };
    ensure!(offered("counted") == [discrete("gpu", 1)], "{nodes:?}");
    ensure!(offered("plain").is_empty());

    // Four tasks of one GPU each: three GPUs in the cluster.
    let mut spec = replicated("trainer", 4);
    spec.task.as_mut().unwrap().resources = Some(ResourceRequirements {
        generic_reservations: vec![discrete("gpu", 1)],
        ..Default::default()
    });
    let id = control
        .create_service(spec)
        .await?
        .into_inner()
        .meta
        .unwrap_or_default()
        .id;
    let placed = wait_until(WAIT, "3 tasks running, one pending", || async {
        let tasks = cluster.tasks().await.ok()?;
        let ours: Vec<_> = tasks.into_iter().filter(|t| t.service_id == id).collect();
        let running = ours.iter().filter(|t| is_running(t)).count();
        let pending = ours
            .iter()
            .filter(|t| t.status.as_ref().map(|s| s.state()) == Some(TaskState::Pending))
            .count();
        (running == 3 && pending == 1).then_some(ours)
    })
    .await?;
    let per_node = cluster.running_per_node(&id).await?;
    ensure!(
        per_node == [("counted".to_owned(), 1), ("gpus".to_owned(), 2)].into(),
        "{per_node:?}"
    );
    // Each task on the named node took its own GPU.
    let mut given: Vec<String> = placed
        .iter()
        .filter(|t| is_running(t))
        .flat_map(|t| t.assigned_generic_resources.clone())
        .filter_map(|r| match r.value {
            Some(shoal_api::pb::generic_resource::Value::Named(n)) => Some(n),
            _ => None,
        })
        .collect();
    given.sort();
    ensure!(given == ["GPU-0", "GPU-1"], "{given:?}");
    let pending = placed
        .iter()
        .find(|t| t.status.as_ref().map(|s| s.state()) == Some(TaskState::Pending))
        .and_then(|t| t.status.clone())
        .unwrap_or_default();
    // (The manager's own node, with no agent, is not available.)
    ensure!(
        pending
            .err
            .starts_with("no suitable node (insufficient resources on 3 nodes"),
        "{pending:?}"
    );

    // A named reservation is refused with Docker's words.
    let mut named_spec = replicated("named", 1);
    named_spec.task.as_mut().unwrap().resources = Some(ResourceRequirements {
        generic_reservations: vec![named("gpu", "GPU-0")],
        ..Default::default()
    });
    let refused = control
        .create_service(named_spec)
        .await
        .expect_err("a named reservation was accepted");
    ensure!(
        refused
            .message()
            .contains("Named Generic Resources is not supported"),
        "{refused:?}"
    );
    Ok(())
}
