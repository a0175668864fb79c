//! The certificate life cycle in process (real managers, simulated agents
//! speaking the real protocol over mutual TLS): renewal before half-life
//! with no restart, a removed node told so, a root CA rotation that moves
//! every node and changes the join tokens.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use shoal_api::pb::{Empty, RemoveNodeRequest, UpdateCertificatesRequest};
use shoal_tests::cluster::{TestCluster, wait_until};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_renew_before_half_life_without_a_restart() -> Result<()> {
    let mut cluster = TestCluster::start(1).await?;
    let mut control = cluster.control().await?;
    control
        .update_certificates(UpdateCertificatesRequest {
            cert_expiry_ms: 12_000,
            rotate_ca: false,
        })
        .await?;
    let i = cluster.add_agent("n1", &[]).await?;
    let agent = &cluster.agents[i];
    let first = agent.credentials.identity();
    // 12 s, plus the quarter it is backdated by for clock skew.
    let left = first
        .not_after
        .duration_since(std::time::SystemTime::now())?;
    ensure!(left <= Duration::from_secs(12), "issued for {left:?} more");
    // Two renewals, each before half of the certificate's life; the
    // session is never interrupted and the node stays Ready.
    let mut seen = vec![first.not_after];
    let started = std::time::Instant::now();
    while seen.len() < 3 {
        ensure!(
            started.elapsed() < WAIT,
            "renewals seen: {}",
            seen.len() - 1
        );
        let now = agent.credentials.identity();
        if now.not_after != *seen.last().unwrap_or(&first.not_after) {
            // Renewed while the previous one had more than half its life left.
            let previous = *seen.last().unwrap_or(&first.not_after);
            let left = previous
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            ensure!(
                left >= Duration::from_secs(5),
                "renewed with only {left:?} left"
            );
            ensure!(now.node_id == first.node_id, "renewal changed the node");
            seen.push(now.not_after);
        }
        ensure!(
            agent.state.borrow().connected_to.is_some(),
            "the session dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = agent.node_id();
    let node = cluster
        .nodes()
        .await?
        .into_iter()
        .find(|n| n.meta.as_ref().is_some_and(|m| m.id == id))
        .context("the agent's node")?;
    ensure!(
        node.status
            .as_ref()
            .is_some_and(|s| s.state() == shoal_api::pb::NodeState::Ready),
        "{node:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_node_is_refused_and_its_agent_says_so() -> Result<()> {
    let mut cluster = TestCluster::start(1).await?;
    let i = cluster.add_agent("n1", &[]).await?;
    let id = cluster.agents[i].node_id();
    let mut control = cluster.control().await?;
    control
        .remove_node(RemoveNodeRequest {
            id: id.clone(),
            force: true,
        })
        .await?;
    let mut state = cluster.agents[i].state.clone();
    let refused = tokio::time::timeout(WAIT, state.wait_for(|s| s.refused.is_some()))
        .await
        .context("the agent was not told")??
        .refused
        .clone()
        .unwrap_or_default();
    ensure!(refused.contains("removed"), "{refused}");
    ensure!(
        cluster
            .nodes()
            .await?
            .iter()
            .all(|n| n.meta.as_ref().is_none_or(|m| m.id != id)),
        "the removed node came back"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_root_ca_rotation_moves_every_node_and_changes_the_tokens() -> Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    for host in ["n1", "n2"] {
        cluster.add_agent(host, &[]).await?;
    }
    let mut control = cluster.control().await?;
    let before = control.get_cluster(Empty {}).await?.into_inner();
    let old_issuer: Vec<String> = cluster
        .agents
        .iter()
        .map(|a| a.credentials.identity().issuer)
        .collect();
    control
        .update_certificates(UpdateCertificatesRequest {
            cert_expiry_ms: 0,
            rotate_ca: true,
        })
        .await?;
    let after = wait_until(WAIT, "the rotation to complete", || {
        let mut control = control.clone();
        async move {
            let info = control.get_cluster(Empty {}).await.ok()?.into_inner();
            (!info.ca_rotation_in_progress).then_some(info)
        }
    })
    .await?;
    ensure!(
        after.root_ca_pem != before.root_ca_pem,
        "the root did not change"
    );
    ensure!(
        after.worker_token != before.worker_token,
        "the worker token did not change"
    );
    for (agent, old) in cluster.agents.iter().zip(&old_issuer) {
        ensure!(
            agent.credentials.identity().issuer != *old,
            "{} kept its old certificate",
            agent.hostname
        );
        ensure!(
            agent.state.borrow().connected_to.is_some(),
            "{} lost its session",
            agent.hostname
        );
    }
    // New connections on the new root only: a client of the old root is
    // refused, a new node joins with the new token, not the old one.
    let old_token = cluster.worker_token.clone();
    cluster.worker_token = after.worker_token.clone();
    cluster.add_agent("n3", &[]).await?;
    let refused =
        shoal_agent::identity::obtain(None, &cluster.manager_addrs(), Some(&old_token), "", "late")
            .await;
    let err = format!("{:#}", refused.err().context("the old token still joins")?);
    ensure!(err.contains("another cluster"), "{err}");
    Ok(())
}
