//! A node leaving the cluster (`shoal swarm leave`), on the leader: a
//! manager leaves Raft first (the others keep their quorum), then the node
//! is removed and its certificate refused, so the cluster forgets it and
//! its tasks are rescheduled. Only a node may make itself leave: the node
//! is the one the caller's certificate names (or, on the local socket, the
//! manager that serves it); `node rm` is how an operator removes another.

use std::{collections::BTreeSet, time::Duration};

use shoal_api::pb::{Kind, LeaveClusterRequest, NodeRole, control_client::ControlClient};
use tonic::Status;

use crate::{manager::Manager, store::Batch};

/// What is left to do once the leader has done its part.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The node is out of Raft and removed.
    Done,
    /// The cluster's last manager leaves: nothing to tell anyone.
    LastManager,
    /// The leader took itself out of Raft (it steps down once that is
    /// committed): the next leader removes the node, when asked by it
    /// through one of these managers (host:port).
    SteppedDown { others: Vec<String> },
}

/// Docker's words for a manager that would leave without `--force`.
pub const LAST_MANAGER: &str = "this node is the cluster's last manager: leaving ends the cluster and erases all its state (use --force to leave anyway)";

/// Removes `node_id` from the store and refuses its certificate from now
/// on; its tasks are rescheduled by the orchestrator ("node was removed").
pub async fn remove_node(manager: &Manager, node_id: &str) -> Result<(), Status> {
    manager
        .update(|state| -> Result<_, Status> {
            let Some(node) = state.nodes.get(node_id) else {
                return Ok(None); // gone already: leaving twice is leaving
            };
            let mut batch = Batch::default();
            batch.delete(
                Kind::Node,
                node_id,
                node.meta.as_ref().map(|m| m.version).unwrap_or(0),
            );
            if let Some(mut cluster) = state.cluster.clone()
                && !cluster.removed_nodes.iter().any(|n| n == node_id)
            {
                cluster.removed_nodes.push(node_id.to_owned());
                batch.put_cluster(cluster);
            }
            Ok(Some((batch, ())))
        })
        .await?;
    tracing::info!(node = %node_id, "node left the cluster");
    Ok(())
}

/// A worker leaves (the dispatcher's `Leave`): a manager must leave Raft
/// first, through `LeaveCluster` on its own host.
pub async fn worker_leaves(manager: &Manager, node_id: &str) -> Result<(), Status> {
    let role = manager
        .store
        .read()
        .await
        .nodes
        .get(node_id)
        .map(|n| n.role());
    if role == Some(NodeRole::Manager) {
        return Err(Status::failed_precondition(format!(
            "node {node_id} is a manager: it leaves Raft first (`shoal swarm leave --force` on it)"
        )));
    }
    remove_node(manager, node_id).await
}

/// A manager's node leaves, on the leader: out of the Raft voters (unless
/// it is the last one), then removed.
pub async fn manager_leaves(
    manager: &Manager,
    node_id: &str,
    force: bool,
) -> Result<Outcome, Status> {
    let raft_id = {
        let state = manager.store.read().await;
        let Some(node) = state.nodes.get(node_id) else {
            return Ok(Outcome::Done);
        };
        node.manager_status.as_ref().map(|m| m.raft_id)
    };
    let voters: BTreeSet<u64> = manager.voters().into_iter().collect();
    if let Some(raft_id) = raft_id.filter(|id| voters.contains(id)) {
        if voters.len() == 1 {
            return if force {
                Ok(Outcome::LastManager)
            } else {
                Err(Status::failed_precondition(LAST_MANAGER))
            };
        }
        let members = manager.members();
        let remaining: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != raft_id).collect();
        manager
            .raft
            .change_membership(remaining.clone(), false)
            .await
            .map_err(|e| Status::unavailable(format!("leaving Raft: {e}")))?;
        tracing::info!(node = %node_id, raft_id, "manager left Raft");
        if raft_id == manager.raft_id {
            let others = remaining
                .iter()
                .filter_map(|id| members.get(id).cloned())
                .collect();
            return Ok(Outcome::SteppedDown { others });
        }
    }
    remove_node(manager, node_id).await?;
    Ok(Outcome::Done)
}

/// After a leader took itself out of Raft: asks the others (with this
/// manager's certificate, which names the node) until the new leader has
/// removed the node. An election takes a few seconds.
pub async fn finish_elsewhere(manager: &Manager, others: &[String]) -> Result<(), Status> {
    let deadline = tokio::time::Instant::now() + manager.settings.leader_wait * 2;
    let mut targets: Vec<String> = others.to_vec();
    let mut last = Status::unavailable("no other manager to ask");
    while tokio::time::Instant::now() < deadline {
        let Some(addr) = targets.first().cloned() else {
            break;
        };
        let channel = manager
            .channel(&addr)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut request = tonic::Request::new(LeaveClusterRequest { force: false });
        request.set_timeout(Duration::from_secs(5));
        match ControlClient::new(channel).leave_cluster(request).await {
            Ok(_) => return Ok(()),
            Err(status) => {
                // A follower names the leader; go there next.
                let leader = status
                    .metadata()
                    .get(shoal_api::LEADER_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                tracing::debug!(%addr, error = %status.message(), "asking for this node's removal");
                targets.rotate_left(1);
                if let Some(leader) = leader.filter(|l| !l.is_empty() && *l != manager.addr) {
                    targets.retain(|t| *t != leader);
                    targets.insert(0, leader);
                }
                last = status;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    Err(Status::unavailable(format!(
        "this manager left Raft, but no other manager removed its node: {}",
        last.message()
    )))
}
