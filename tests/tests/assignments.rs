//! Assignment pushes are deltas: real managers and simulated agents over the
//! real protocol (mutual TLS). A change to one service reaches only the node
//! that needs it, as a delta; an agent that reconnects starts from a
//! complete set and keeps running what it ran.

use std::time::Duration;

use anyhow::Result;
use shoal_agent::session::SessionState;
use shoal_api::pb::{Empty, UpdateServiceRequest};
use shoal_tests::cluster::{TestCluster, replicated, wait_until};

const WAIT: Duration = Duration::from_secs(20);

fn counters(cluster: &TestCluster) -> Vec<SessionState> {
    cluster
        .agents
        .iter()
        .map(|a| a.state.borrow().clone())
        .collect()
}

async fn running(cluster: &TestCluster, service_id: &str, n: usize) -> Result<()> {
    wait_until(WAIT, &format!("{n} running tasks"), || async {
        let sum: usize = cluster
            .running_per_node(service_id)
            .await
            .ok()?
            .values()
            .sum();
        (sum == n).then_some(())
    })
    .await
}

/// Waits until no agent has received anything for a while: the pushes of
/// the last change (assigned, then running) are all in.
async fn quiet(cluster: &TestCluster) -> Vec<SessionState> {
    let mut last = counters(cluster);
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = counters(cluster);
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_service_scaled_by_one_pushes_a_delta_to_its_node_only_and_a_reconnect_starts_complete()
-> Result<()> {
    let mut cluster = TestCluster::start(1).await?;
    for host in ["n1", "n2", "n3", "n4"] {
        cluster.add_agent(host, &[]).await?;
    }
    let mut control = cluster.control().await?;
    let other = control
        .create_service(replicated("other", 4))
        .await?
        .into_inner();
    let web = control
        .create_service(replicated("web", 1))
        .await?
        .into_inner();
    let id = |s: &shoal_api::pb::Service| s.meta.clone().unwrap_or_default().id;
    running(&cluster, &id(&other), 4).await?;
    running(&cluster, &id(&web), 1).await?;
    let before = quiet(&cluster).await;
    for (agent, s) in cluster.agents.iter().zip(&before) {
        assert_eq!(
            s.complete_assignments, 1,
            "{}: one complete set, at the stream's start; deltas after",
            agent.hostname
        );
        assert!(
            s.assignments_received > 1,
            "{}: deltas came",
            agent.hostname
        );
    }

    let per_node_before = cluster.running_per_node(&id(&web)).await?;
    let current = control
        .list_services(Empty {})
        .await?
        .into_inner()
        .services
        .into_iter()
        .filter_map(|s| s.service)
        .find(|s| id(s) == id(&web))
        .expect("web is listed");
    let mut spec = current.spec.clone().unwrap_or_default();
    spec.replicas = 2;
    control
        .update_service(UpdateServiceRequest {
            id: id(&web),
            version: current.meta.unwrap_or_default().version,
            spec: Some(spec),
            rollback: false,
        })
        .await?;
    running(&cluster, &id(&web), 2).await?;
    let after = quiet(&cluster).await;
    let per_node_after = cluster.running_per_node(&id(&web)).await?;
    let grew: Vec<&String> = per_node_after
        .iter()
        .filter(|(node, n)| per_node_before.get(*node).copied().unwrap_or(0) < **n)
        .map(|(node, _)| node)
        .collect();
    assert_eq!(
        grew.len(),
        1,
        "one node got the new task: {per_node_after:?}"
    );
    for ((agent, b), a) in cluster.agents.iter().zip(&before).zip(&after) {
        let reached = a.assignments_received > b.assignments_received;
        let needs = agent.hostname == *grew[0];
        assert_eq!(
            reached, needs,
            "{}: pushed to only when it needs the change ({} -> {} messages)",
            agent.hostname, b.assignments_received, a.assignments_received
        );
        assert_eq!(
            a.complete_assignments, b.complete_assignments,
            "{}: the change came as deltas",
            agent.hostname
        );
        if needs {
            let bytes = a.assignment_bytes - b.assignment_bytes;
            let messages = a.assignments_received - b.assignments_received;
            assert!(
                bytes / messages < a.set_bytes,
                "{}: a delta ({bytes} bytes in {messages}) is smaller than the set ({} bytes)",
                agent.hostname,
                a.set_bytes
            );
        }
    }

    // The manager restarts: every agent registers again, gets a complete
    // set on its new stream, and keeps running what it ran. That holds for
    // an agent back within its heartbeat grace; the test's 300 ms period
    // gives a restarted leader's nodes 0.9 s, which a loaded machine can
    // miss (the node then goes Down and its tasks move, rightly), so the
    // period is raised first: the grace then lasts 3 x 5 s.
    cluster
        .control()
        .await?
        .update_cluster(shoal_api::pb::UpdateClusterRequest {
            heartbeat_period_ms: Some(5_000),
            ..Default::default()
        })
        .await?;
    let ran: Vec<Vec<String>> = cluster
        .agents
        .iter()
        .map(|a| a.executor.running())
        .collect();
    cluster.stop_manager(0).await;
    cluster.restart_manager(0).await?;
    wait_until(WAIT, "every agent back with a complete set", || async {
        let now = counters(&cluster);
        now.iter()
            .zip(&after)
            .all(|(n, a)| {
                n.connected_to.is_some() && n.complete_assignments > a.complete_assignments
            })
            .then_some(())
    })
    .await?;
    running(&cluster, &id(&web), 2).await?;
    running(&cluster, &id(&other), 4).await?;
    quiet(&cluster).await;
    for (agent, ran) in cluster.agents.iter().zip(&ran) {
        assert_eq!(
            &agent.executor.running(),
            ran,
            "{}: the complete set after reconnecting is the same work",
            agent.hostname
        );
    }
    Ok(())
}
