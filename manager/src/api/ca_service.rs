//! The Ca service: the root CA for anyone, node certificates for a join
//! token (first time) or for the node's current certificate (renewal).

use std::{net::IpAddr, sync::Arc};

use shoal_api::pb::{
    CheckJoinTokenRequest, CheckJoinTokenResponse, IssueNodeCertificateRequest, Node,
    NodeCertificate, NodeRole, RenewNodeCertificateRequest, RootCaRequest, RootCaResponse,
    ca_server::Ca,
};
use shoal_pki::Role;
use tonic::{Request, Response, Status};

use crate::{
    api::{authz, membership::new_manager_node},
    ca,
    manager::Manager,
    store::{Batch, State},
};

/// The largest CSR taken (an ECDSA P-256 request is ~250 bytes).
const MAX_CSR: usize = 16 * 1024;

pub struct CaService {
    pub manager: Arc<Manager>,
}

fn cluster(state: &State) -> Result<&shoal_api::pb::Cluster, Status> {
    state
        .cluster
        .as_ref()
        .ok_or_else(|| Status::unavailable("this manager has no cluster state yet"))
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr)
}

/// The node a newly joining node becomes: the node of a manager on its host
/// that has no agent yet (its agent joins with a worker token), or the
/// worker being promoted on its host (`shoal-manager join` after `node
/// promote`). Matched on the address the request came from, which a caller
/// cannot choose, as well as the one it advertises.
fn node_on_host<'a>(
    state: &'a State,
    role: NodeRole,
    peer: IpAddr,
    advertised: &str,
) -> Option<&'a Node> {
    let peer = peer.to_string();
    if !advertised.is_empty() && host_of(advertised) != peer {
        return None;
    }
    state.nodes.values().find(|n| {
        let at_peer = n.status.as_ref().is_some_and(|s| s.addr == peer);
        at_peer
            && match role {
                NodeRole::Worker => {
                    n.role() == NodeRole::Manager
                        && n.description
                            .as_ref()
                            .is_none_or(|d| d.engine_version.is_empty())
                }
                // Only a worker an operator promoted (`node promote`).
                NodeRole::Manager => {
                    n.manager_status.is_none()
                        && n.spec.as_ref().map(|s| s.desired_role()) == Some(NodeRole::Manager)
                }
            }
    })
}

fn internal(e: anyhow::Error) -> Status {
    Status::internal(format!("{e:#}"))
}

#[tonic::async_trait]
impl Ca for CaService {
    async fn get_root_ca(
        &self,
        _: Request<RootCaRequest>,
    ) -> Result<Response<RootCaResponse>, Status> {
        let state = self.manager.store.read().await;
        let cluster = cluster(&state)?;
        Ok(Response::new(RootCaResponse {
            cert_pem: cluster.root_ca_cert_pem.clone(),
            trust_pem: ca::trust_pem(cluster),
        }))
    }

    async fn issue_node_certificate(
        &self,
        request: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<NodeCertificate>, Status> {
        let peer = authz::remote_addr(&request)
            .map(|a| a.ip().to_canonical())
            .ok_or_else(|| Status::failed_precondition("joining takes a TCP connection"))?;
        let request = request.into_inner();
        if request.csr_der.len() > MAX_CSR {
            return Err(Status::invalid_argument(format!(
                "the certificate signing request is {} bytes; at most {MAX_CSR}",
                request.csr_der.len()
            )));
        }
        // The token is checked and the certificate signed under a read
        // lock only: a flood of bad tokens holds up no write.
        let (node_id, role, certificate, create) = {
            let state = self.manager.store.read().await;
            let cluster = cluster(&state)?;
            let role = ca::check_token(cluster, &request.token, None)
                .map_err(|e| Status::permission_denied(e.to_string()))?;
            let existing = node_on_host(&state, role, peer, &request.advertise_addr);
            let node_id = existing
                .and_then(|n| n.meta.as_ref())
                .map(|m| m.id.clone())
                .unwrap_or_else(shoal_api::new_id);
            let certificate = ca::issue(cluster, &request.csr_der, &node_id, ca::cert_role(role))
                .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
            (
                node_id,
                role,
                certificate,
                role == NodeRole::Manager && existing.is_none(),
            )
        };
        // A manager's node exists before it joins Raft, so that its
        // certificate is a known manager's. A worker's node is created when
        // its agent registers.
        if create {
            let addr = if request.advertise_addr.is_empty() {
                peer.to_string()
            } else {
                request.advertise_addr.clone()
            };
            self.manager
                .update(|state| -> Result<_, Status> {
                    if state.nodes.contains_key(&node_id) {
                        return Ok(None);
                    }
                    let mut node = new_manager_node(&request.hostname, &addr);
                    node.meta.get_or_insert_with(Default::default).id = node_id.clone();
                    let mut batch = Batch::default();
                    batch.put_node(node);
                    Ok(Some((batch, ())))
                })
                .await?;
        }
        tracing::info!(node = %node_id, role = ?role, %peer, "issued a node certificate for a join token");
        self.answer(node_id, certificate).await
    }

    async fn check_join_token(
        &self,
        request: Request<CheckJoinTokenRequest>,
    ) -> Result<Response<CheckJoinTokenResponse>, Status> {
        let state = self.manager.store.read().await;
        let role = ca::check_token(cluster(&state)?, &request.get_ref().token, None)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        Ok(Response::new(CheckJoinTokenResponse {
            role: role.word().to_owned(),
        }))
    }

    async fn renew_node_certificate(
        &self,
        request: Request<RenewNodeCertificateRequest>,
    ) -> Result<Response<NodeCertificate>, Status> {
        let identity = authz::certified_node(&request)?.clone();
        let request = request.into_inner();
        if request.csr_der.len() > MAX_CSR {
            return Err(Status::invalid_argument(
                "the certificate signing request is too large",
            ));
        }
        let certificate = {
            let state = self.manager.store.read().await;
            let cluster = cluster(&state)?;
            if cluster.removed_nodes.contains(&identity.node_id) {
                return Err(Status::permission_denied(format!(
                    "node {} was removed from the cluster",
                    identity.node_id
                )));
            }
            // Renewal never raises a role: a manager certificate stays one
            // only while the node is (or is becoming) a manager.
            let role = match identity.role {
                Role::Admin => {
                    return Err(Status::permission_denied(
                        "client certificates are not renewed: issue a new one with `shoal cert issue`",
                    ));
                }
                Role::Worker => Role::Worker,
                Role::Manager => match state.nodes.get(&identity.node_id) {
                    Some(node)
                        if node.role() != NodeRole::Manager
                            && node.spec.as_ref().map(|s| s.desired_role())
                                != Some(NodeRole::Manager) =>
                    {
                        Role::Worker
                    }
                    _ => Role::Manager,
                },
            };
            ca::issue(cluster, &request.csr_der, &identity.node_id, role)
                .map_err(|e| Status::invalid_argument(format!("{e:#}")))?
        };
        tracing::debug!(node = %identity.node_id, "renewed a node certificate");
        // The node's recorded issuer is not changed here: the node may die
        // before it stores what it is sent. It changes when the node
        // registers with the new certificate (`Dispatcher::register`), which
        // agents do as soon as they stored it.
        self.answer(identity.node_id, certificate).await
    }
}

impl CaService {
    async fn answer(
        &self,
        node_id: String,
        chain_pem: String,
    ) -> Result<Response<NodeCertificate>, Status> {
        let state = self.manager.store.read().await;
        let cluster = cluster(&state)?;
        Ok(Response::new(NodeCertificate {
            node_id,
            chain_pem,
            trust_pem: ca::trust_pem(cluster),
            cluster_id: ca::cluster_id(cluster).to_owned(),
        }))
    }
}

/// Issues a certificate and key for `role` directly (the first manager at
/// `init`, operators' client certificates): (chain, key) PEM.
pub fn issue_with_new_key(
    cluster: &shoal_api::pb::Cluster,
    node_id: &str,
    role: Role,
    validity: Option<std::time::Duration>,
) -> Result<(String, String), Status> {
    ca::authority(cluster)
        .and_then(|authority| {
            Ok(authority.issue_with_new_key(&shoal_pki::NodeRequest {
                node_id,
                role,
                cluster_id: ca::cluster_id(cluster),
                validity: validity.unwrap_or_else(|| ca::cert_expiry(cluster)),
            })?)
        })
        .map_err(internal)
}
