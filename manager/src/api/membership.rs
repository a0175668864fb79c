//! The Membership service: Raft traffic between managers, writes forwarded
//! by followers, the root CA for joining nodes, and manager joins.

use std::sync::Arc;

use openraft::BasicNode;
use shoal_api::pb::{
    JoinManagerRequest, JoinManagerResponse, ManagerStatus, Meta, Node, NodeDescription, NodeRole,
    NodeSpec, NodeState, NodeStatus, ProposeResponse, RaftMessage, RootCaRequest, RootCaResponse,
    StoreBatch, membership_server::Membership,
};
use tonic::{Request, Response, Status};

use crate::{ca, manager::Manager, store::Batch};

pub struct MembershipService {
    pub manager: Arc<Manager>,
}

fn decode<T: serde::de::DeserializeOwned>(m: &RaftMessage) -> Result<T, Status> {
    serde_json::from_slice(&m.json)
        .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    serde_json::to_vec(value)
        .map(|json| Response::new(RaftMessage { json }))
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl Membership for MembershipService {
    async fn get_root_ca(
        &self,
        _: Request<RootCaRequest>,
    ) -> Result<Response<RootCaResponse>, Status> {
        let state = self.manager.store.read().await;
        let cluster = state
            .cluster
            .as_ref()
            .ok_or_else(|| Status::unavailable("this manager has no cluster state yet"))?;
        Ok(Response::new(RootCaResponse {
            cert_pem: cluster.root_ca_cert_pem.clone(),
        }))
    }

    async fn join_manager(
        &self,
        request: Request<JoinManagerRequest>,
    ) -> Result<Response<JoinManagerResponse>, Status> {
        let request = request.into_inner();
        let manager = &self.manager;
        if !manager.is_leader() {
            return Err(manager.not_leader());
        }
        let (cluster_id, existing) = {
            let state = manager.store.read().await;
            let cluster = state
                .cluster
                .as_ref()
                .ok_or_else(|| Status::unavailable("the cluster is not initialised"))?;
            ca::check_token(cluster, &request.token, Some(NodeRole::Manager))
                .map_err(|e| Status::permission_denied(e.to_string()))?;
            let existing = state
                .nodes
                .values()
                .find(|n| {
                    n.manager_status
                        .as_ref()
                        .is_some_and(|m| m.raft_id == request.raft_id)
                })
                .cloned();
            (cluster.meta.clone().unwrap_or_default().id, existing)
        };
        let node = BasicNode::new(request.addr.clone());
        manager
            .raft
            .add_learner(request.raft_id, node, true)
            .await
            .map_err(|e| {
                Status::unavailable(format!("adding {} as a learner: {e}", request.addr))
            })?;
        let mut voters: std::collections::BTreeSet<u64> = manager.voters().into_iter().collect();
        voters.insert(request.raft_id);
        manager
            .raft
            .change_membership(voters, false)
            .await
            .map_err(|e| Status::unavailable(format!("making {} a voter: {e}", request.addr)))?;
        let node_id = manager
            .update(|state| -> Result<_, Status> {
                // A manager that rejoins (same Raft id) keeps its node; one
                // joining on a host whose agent registered a node (e.g. after
                // `node promote`) takes that node; otherwise a new one.
                let ip = request
                    .addr
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(&request.addr);
                let mut node = existing
                    .as_ref()
                    .and_then(|n| {
                        state
                            .nodes
                            .get(&n.meta.clone().unwrap_or_default().id)
                            .cloned()
                    })
                    .or_else(|| {
                        state
                            .nodes
                            .values()
                            .find(|n| {
                                n.manager_status.is_none()
                                    && n.status.as_ref().is_some_and(|s| s.addr == ip)
                            })
                            .cloned()
                    })
                    .unwrap_or_else(|| new_manager_node(&request.hostname, &request.addr));
                node.role = NodeRole::Manager as i32;
                node.spec.get_or_insert_with(Default::default).desired_role =
                    NodeRole::Manager as i32;
                node.manager_status = Some(ManagerStatus {
                    raft_id: request.raft_id,
                    addr: request.addr.clone(),
                    ..Default::default()
                });
                let id = node.meta.clone().unwrap_or_default().id;
                let mut batch = Batch::default();
                batch.put_node(node);
                Ok(Some((batch, id)))
            })
            .await?
            .unwrap_or_default();
        tracing::info!(raft_id = request.raft_id, addr = %request.addr, "manager joined");
        Ok(Response::new(JoinManagerResponse {
            cluster_id,
            node_id,
        }))
    }

    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(request.get_ref())?;
        encode(&self.manager.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(request.get_ref())?;
        encode(&self.manager.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(request.get_ref())?;
        encode(&self.manager.raft.install_snapshot(rpc).await)
    }

    async fn propose(
        &self,
        request: Request<StoreBatch>,
    ) -> Result<Response<ProposeResponse>, Status> {
        if !self.manager.is_leader() {
            return Err(Status::unavailable(
                "not the leader (leadership moved while forwarding)",
            ));
        }
        let index = self.manager.propose(request.into_inner()).await?;
        Ok(Response::new(ProposeResponse { index }))
    }
}

/// The Node object of a manager host, before its agent registers.
pub fn new_manager_node(hostname: &str, addr: &str) -> Node {
    let ip = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    Node {
        meta: Some(Meta {
            id: shoal_api::new_id(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            desired_role: NodeRole::Manager as i32,
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: hostname.to_owned(),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Unknown as i32,
            message: "waiting for the node's agent".into(),
            addr: ip.to_owned(),
        }),
        role: NodeRole::Manager as i32,
        manager_status: None,
        ingress_addr: String::new(),
    }
}
