//! The certificate life cycle on the managers' side: managers renew their
//! own certificates (they hold the CA), follow the cluster's trusted roots,
//! and the leader ends a CA rotation once every ready node moved to the
//! new root.
//!
//! A rotation (`shoal swarm ca --rotate`): a new root is made and
//! cross-signed by the old one; both are trusted; every certificate the new
//! root issues comes with the cross-signed one, so nodes still trusting only
//! the old root accept it. Each node, told of the new root (agents in their
//! assignments, managers from the store), renews at once. When every ready
//! node holds a certificate of the new root, the old one is dropped. No
//! connection closes on the way: TLS checks certificates at handshakes.

use std::{sync::Arc, time::Duration};

use shoal_api::pb::{Cluster, NodeState};
use shoal_pki::{CertificateAuthority, KeyAndCsr, Role, credentials::CredentialFiles, join};
use tonic::Status;

use crate::{ca, manager::Manager, store::Batch};

/// The fingerprint certificates issued by the cluster's current root
/// carry as their issuer.
///
/// Asked for every node's assignments on every push: the answer for the
/// last root is kept, so the certificate is parsed once per root.
pub fn root_issuer(cluster: &Cluster) -> String {
    static LAST: std::sync::Mutex<Option<(String, String)>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((pem, issuer)) = last.as_ref()
        && *pem == cluster.root_ca_cert_pem
    {
        return issuer.clone();
    }
    let issuer = shoal_pki::certs_from_pem(&cluster.root_ca_cert_pem)
        .ok()
        .and_then(|certs| shoal_pki::identity::subject_fingerprint(&certs[0]).ok())
        .unwrap_or_default();
    *last = Some((cluster.root_ca_cert_pem.clone(), issuer.clone()));
    issuer
}

/// Starts a CA rotation: the cluster with a new root, cross-signed by the
/// current one, both trusted.
pub fn rotate(cluster: &Cluster) -> anyhow::Result<Cluster> {
    let old = CertificateAuthority::from_pem(&cluster.root_ca_cert_pem, &cluster.root_ca_key_pem)?;
    let new = CertificateAuthority::create(ca::cluster_id(cluster))?;
    let cross = old.cross_sign(&new)?;
    let mut next = cluster.clone();
    // While a rotation runs, the roots of every rotation not yet finished
    // stay trusted (a second --rotate starts from the newest).
    next.trust_pem = format!("{}{}", ca::trust_pem(cluster), new.cert_pem());
    next.root_ca_cert_pem = new.cert_pem().to_owned();
    next.root_ca_key_pem = new.key_pem();
    next.cross_signed_pem = cross;
    Ok(next)
}

/// Nodes still on an old root: ready nodes whose agent's certificate the
/// current root did not issue, and every manager whose own certificate it
/// did not issue (up or down: a manager down during the rotation must still
/// reach the others when it returns, to renew).
pub fn nodes_on_old_roots(state: &crate::store::State) -> u64 {
    let Some(cluster) = &state.cluster else {
        return 0;
    };
    let root = root_issuer(cluster);
    state
        .nodes
        .values()
        .filter(|n| {
            let ready = n.status.as_ref().map(|s| s.state()) == Some(NodeState::Ready);
            let agent_old = ready && n.cert_issuer != root;
            let manager_old = n
                .manager_status
                .as_ref()
                .is_some_and(|m| m.cert_issuer != root);
            agent_old || manager_old
        })
        .count() as u64
}

/// Records the root that issued this manager's own certificate.
async fn record_manager_issuer(manager: &Manager, issuer: &str) -> Result<(), Status> {
    let raft_id = manager.raft_id;
    manager
        .update(|state| -> Result<_, Status> {
            let Some(mut node) = state
                .nodes
                .values()
                .find(|n| {
                    n.manager_status
                        .as_ref()
                        .is_some_and(|m| m.raft_id == raft_id)
                })
                .cloned()
            else {
                return Ok(None);
            };
            let status = node.manager_status.get_or_insert_with(Default::default);
            if status.cert_issuer == issuer {
                return Ok(None);
            }
            status.cert_issuer = issuer.to_owned();
            let mut batch = Batch::default();
            batch.put_node(node);
            Ok(Some((batch, ())))
        })
        .await?;
    Ok(())
}

/// Issues this manager a new certificate from the cluster's CA in the
/// store, and trusts the cluster's roots.
async fn renew_own(manager: &Manager) -> anyhow::Result<()> {
    let credentials = &manager.credentials;
    let identity = credentials.identity();
    let key = KeyAndCsr::generate()?;
    let (chain_pem, trust_pem) = {
        let state = manager.store.read().await;
        let cluster = state
            .cluster
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no cluster state yet"))?;
        // A demoted manager is no longer one: it issues itself nothing.
        if let Some(node) = state.nodes.get(&identity.node_id)
            && node.role() != shoal_api::pb::NodeRole::Manager
            && node.spec.as_ref().map(|s| s.desired_role())
                != Some(shoal_api::pb::NodeRole::Manager)
        {
            anyhow::bail!("node {} is no longer a manager", identity.node_id);
        }
        (
            ca::issue(cluster, &key.csr_der, &identity.node_id, Role::Manager)?,
            ca::trust_pem(cluster),
        )
    };
    credentials.replace(CredentialFiles {
        chain_pem,
        key_pem: key.key_pem,
        roots_pem: trust_pem,
    })?;
    // (The node's recorded issuer is its agent's: a manager renews from its
    // own store the moment it sees a rotation, its agent only when told.)
    tracing::info!(node = %identity.node_id, "renewed this manager's certificate");
    Ok(())
}

/// Keeps this manager's certificate valid and its trusted roots the
/// cluster's; runs on every manager for its life.
pub async fn keep_current(manager: Arc<Manager>) {
    let jitter = join::jitter();
    let mut applied = manager.store.applied();
    // What the loop acted on last: the cluster's roots (trusted PEM, root
    // CA PEM) with the current root's issuer name, and the issuer the store
    // records for this manager. Most writes change none of them and cost
    // one comparison here.
    let mut seen: Option<(String, String)> = None;
    let mut root = String::new();
    let mut recorded: Option<String> = None;
    loop {
        let changed_roots = {
            let state = manager.store.read().await;
            state.cluster.as_ref().and_then(|cluster| {
                let trust = ca::trusted(cluster);
                let same = seen
                    .as_ref()
                    .is_some_and(|(t, r)| t == trust && *r == cluster.root_ca_cert_pem);
                (!same).then(|| {
                    (
                        (trust.to_owned(), cluster.root_ca_cert_pem.clone()),
                        root_issuer(cluster),
                    )
                })
            })
        };
        if let Some(((trust, root_pem), issuer)) = changed_roots {
            if let Err(error) = manager.credentials.replace_roots(&trust) {
                tracing::warn!(%error, "trusting the cluster's roots");
            }
            seen = Some((trust, root_pem));
            root = issuer;
        }
        if seen.is_some() {
            let due = join::until_renewal(&manager.credentials, jitter).is_zero();
            let old_root = manager.credentials.identity().issuer != root;
            if (due || old_root)
                && let Err(error) = renew_own(&manager).await
            {
                tracing::warn!(error = %format!("{error:#}"), "renewing this manager's certificate");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            // Tell the cluster which root this manager is on (once it is
            // in the store and a leader takes writes).
            let issuer = manager.credentials.identity().issuer;
            if recorded.as_ref() != Some(&issuer) {
                let in_store = {
                    let state = manager.store.read().await;
                    state.nodes.values().any(|n| {
                        n.manager_status.as_ref().is_some_and(|m| {
                            m.raft_id == manager.raft_id && m.cert_issuer == issuer
                        })
                    })
                };
                if in_store {
                    recorded = Some(issuer);
                } else if manager.leader_id().is_some()
                    && let Err(status) = record_manager_issuer(&manager, &issuer).await
                {
                    tracing::debug!(error = %status.message(), "recording this manager's certificate issuer");
                }
            }
        }
        let wait =
            join::until_renewal(&manager.credentials, jitter).max(Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = applied.changed() => if changed.is_err() { return },
        }
    }
}

/// On the leader: ends a CA rotation once no ready node holds a
/// certificate of an old root.
pub async fn finish_rotations(manager: Arc<Manager>) {
    let mut applied = manager.store.applied();
    loop {
        // A read first: no rotation runs almost always, and this wakes on
        // every write.
        let can_finish = {
            let state = manager.store.read().await;
            state
                .cluster
                .as_ref()
                .is_some_and(|c| !c.cross_signed_pem.is_empty())
                && nodes_on_old_roots(&state) == 0
        };
        let result = if !can_finish {
            Ok(None)
        } else {
            manager.update(|state| -> Result<_, Status> {
                let Some(cluster) = &state.cluster else {
                    return Ok(None);
                };
                if cluster.cross_signed_pem.is_empty() || nodes_on_old_roots(state) > 0 {
                    return Ok(None);
                }
                let mut cluster = cluster.clone();
                cluster.trust_pem = cluster.root_ca_cert_pem.clone();
                cluster.cross_signed_pem.clear();
                let mut batch = Batch::default();
                batch.put_cluster(cluster);
                tracing::info!("every ready node holds a certificate of the new root CA: the rotation is complete");
                Ok(Some((batch, ())))
            })
            .await
        };
        if let Err(status) = result {
            tracing::warn!(error = %status.message(), "finishing the CA rotation");
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
