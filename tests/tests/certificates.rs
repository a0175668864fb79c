//! The certificate life cycle in process (real managers, simulated agents
//! speaking the real protocol over mutual TLS): renewal before half-life
//! with no restart, a removed node told so, a root CA rotation that moves
//! every node and changes the join tokens, and only counts a node as moved
//! once it shows a certificate of the new root.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use shoal_api::pb::{
    Empty, HeartbeatRequest, RemoveNodeRequest, UpdateCertificatesRequest,
    dispatcher_client::DispatcherClient,
};
use shoal_pki::{
    credentials::Credentials,
    join,
    transport::{self, Dialer},
};
use shoal_tests::cluster::{TestCluster, register_node, wait_until};

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

/// A node the manager sent a certificate of the new root to, but which
/// never stored it (it died on the way), is still on the old root: the
/// rotation must not end, or the old root would be dropped while that node
/// can present only an old-root certificate. It ends once the node
/// registers with the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_sent_but_never_presented_does_not_end_a_rotation() -> Result<()> {
    let cluster = TestCluster::start(1).await?;
    let addr = cluster.manager_addrs()[0].clone();
    let node = shoal_agent::identity::obtain(
        None,
        &cluster.manager_addrs(),
        Some(&cluster.worker_token),
        "",
        "frozen",
    )
    .await?;
    let old_issuer = node.identity().issuer;
    let session = HandSession::register(&addr, node.clone()).await?;
    let mut control = cluster.control().await?;
    control
        .update_certificates(UpdateCertificatesRequest {
            cert_expiry_ms: 0,
            rotate_ca: true,
        })
        .await?;
    // The manager issues a new-root certificate; the node never gets it.
    let lost = Credentials::new(node.files())?;
    join::renew_through(&addr, &lost)
        .await
        .map_err(|s| anyhow::anyhow!("renewing: {}", s.message()))?;
    ensure!(
        lost.identity().issuer != old_issuer,
        "the renewal stayed on the old root"
    );
    let recorded = recorded_issuer(&cluster, &node.identity().node_id).await?;
    ensure!(
        recorded == old_issuer,
        "an issued certificate counted as held: {recorded} (old root {old_issuer})"
    );
    let info = control.get_cluster(Empty {}).await?.into_inner();
    ensure!(
        info.ca_rotation_in_progress,
        "the rotation ended with a node on the old root"
    );
    // The node stores the certificate and registers with it: done.
    node.replace(lost.files())?;
    drop(session);
    let _session = HandSession::register(&addr, node.clone()).await?;
    wait_until(WAIT, "the rotation to complete", || {
        let mut control = control.clone();
        async move {
            let info = control.get_cluster(Empty {}).await.ok()?.into_inner();
            (!info.ca_rotation_in_progress).then_some(())
        }
    })
    .await?;
    ensure!(
        recorded_issuer(&cluster, &node.identity().node_id).await? == lost.identity().issuer,
        "the new certificate was not recorded"
    );
    Ok(())
}

/// The root the cluster records for a node's certificate.
async fn recorded_issuer(cluster: &TestCluster, node_id: &str) -> Result<String> {
    cluster
        .nodes()
        .await?
        .into_iter()
        .find(|n| n.meta.as_ref().is_some_and(|m| m.id == node_id))
        .map(|n| n.cert_issuer)
        .context("the node is not listed")
}

/// A dispatcher session kept by hand (registered, heartbeating, renewing
/// nothing by itself), ended when dropped.
struct HandSession(tokio::task::JoinHandle<()>);

impl HandSession {
    async fn register(addr: &str, credentials: std::sync::Arc<Credentials>) -> Result<Self> {
        let channel = transport::channel(addr, Dialer::Node(credentials)).await?;
        let mut client = DispatcherClient::new(channel);
        let (session, period) = register_node(&mut client, "frozen").await?;
        Ok(Self(tokio::spawn(async move {
            let mut beat = tokio::time::interval(period);
            loop {
                beat.tick().await;
                let request = HeartbeatRequest {
                    session: Some(session.clone()),
                    counters: Vec::new(),
                };
                if client.heartbeat(request).await.is_err() {
                    return;
                }
            }
        })))
    }
}

impl Drop for HandSession {
    fn drop(&mut self) {
        self.0.abort();
    }
}
