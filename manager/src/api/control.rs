//! The Control service behind the `shoal` CLI. Any manager answers: a
//! follower forwards the call to the leader, which reads linearizably and
//! writes through Raft.

use std::{collections::BTreeSet, sync::Arc};

use shoal_api::pb::{
    ClusterInfo, Config, ConfigList, ConfigSpec, ConnectContainerRequest,
    DisconnectContainerRequest, Empty, IdRequest, Kind, LeaveClusterRequest, Meta, Network,
    NetworkList, NetworkSpec, NodeList, NodeRole, NodeState, RemoveNodeRequest,
    RotateJoinTokenRequest, Secret, SecretList, SecretSpec, Service, ServiceList, ServiceSpec,
    TaskList, UnlockKeyResponse, UpdateClusterRequest, UpdateConfigRequest, UpdateNodeRequest,
    UpdateSecretRequest, UpdateServiceRequest, VersionResponse, control_server::Control,
};
use tonic::{Request, Response, Status};

use super::{
    attachments, authz, autolock, cluster_settings, forward, leave, networks, secrets_configs,
    service_logs, services,
};
use crate::{
    ca,
    manager::Manager,
    store::{Batch, State},
};

/// Published ports handed out when a service asks for none.
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u32> = 30000..=32767;

/// A manager that answered the leader within this window is reachable.
const REACHABLE_WINDOW: std::time::Duration = std::time::Duration::from_millis(1500);

pub struct ControlService {
    pub manager: Arc<Manager>,
}

/// Makes sure the leader answers the call (see [`forward::to_leader`]):
/// returns the leader's answer on a follower, goes on on the leader.
/// `forward!(self, method, request)` for a call that changes the
/// cluster; `forward!(self, method, request, Read)` for one that only
/// reads it (see [`forward::Kind`]).
macro_rules! forward {
    ($self:ident, $method:ident, $request:ident) => {
        forward!($self, $method, $request, Write)
    };
    ($self:ident, $method:ident, $request:ident, $kind:ident) => {
        let answer = forward::to_leader(
            &$self.manager,
            &$request,
            forward::Kind::$kind,
            |mut leader, call| async move { leader.$method(call).await },
        );
        if let Some(answer) = answer.await? {
            return Ok(answer);
        }
    };
}

impl ControlService {
    fn cluster_info(&self, state: &State) -> Result<ClusterInfo, Status> {
        let cluster = state
            .cluster
            .as_ref()
            .ok_or_else(|| Status::unavailable("the cluster is not initialised"))?;
        let spec = cluster.spec.clone().unwrap_or_default();
        let token = |role| {
            ca::join_token(cluster, role)
                .map(|t| t.to_string())
                .map_err(|e| Status::internal(e.to_string()))
        };
        Ok(ClusterInfo {
            id: cluster.meta.clone().unwrap_or_default().id,
            name: spec.name,
            worker_token: token(NodeRole::Worker)?,
            manager_token: token(NodeRole::Manager)?,
            root_ca_digest: ca::digest_of_pem(&cluster.root_ca_cert_pem).unwrap_or_default(),
            default_addr_pool: spec.default_addr_pool,
            heartbeat_period_ms: spec.heartbeat_period_ms,
            task_history_limit: spec.task_history_limit,
            raft_index: cluster.meta.clone().unwrap_or_default().version,
            cert_expiry_ms: ca::cert_expiry(cluster).as_millis() as i64,
            ca_rotation_in_progress: !cluster.cross_signed_pem.is_empty(),
            nodes_on_old_ca: crate::certificates::nodes_on_old_roots(state),
            root_ca_pem: cluster.root_ca_cert_pem.clone(),
            autolock_managers: spec.autolock_managers,
            rebalance: spec.rebalance,
        })
    }
}

pub(super) fn not_found(kind: &str, id: &str) -> Status {
    Status::not_found(format!("{kind} {id} not found"))
}

pub(super) fn meta_id(meta: &Option<Meta>) -> &str {
    meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

pub(super) fn validate_name(kind: &str, name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid {kind} name {name:?}: use 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn get_version(&self, _: Request<Empty>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            raft_id: self.manager.raft_id,
            leader_raft_id: self.manager.leader_id().unwrap_or(0),
        }))
    }

    async fn issue_client_certificate(
        &self,
        request: Request<shoal_api::pb::IssueClientCertificateRequest>,
    ) -> Result<Response<shoal_api::pb::NodeCertificate>, Status> {
        let caller = request.extensions().get::<super::authz::Caller>().cloned();
        let answer = super::certificates::issue_client_certificate(
            &self.manager,
            caller.as_ref(),
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(answer))
    }

    async fn update_certificates(
        &self,
        request: Request<shoal_api::pb::UpdateCertificatesRequest>,
    ) -> Result<Response<ClusterInfo>, Status> {
        forward!(self, update_certificates, request);
        super::certificates::update_certificates(&self.manager, request.into_inner()).await?;
        let state = self.manager.store.read().await;
        Ok(Response::new(self.cluster_info(&state)?))
    }

    async fn get_cluster(&self, request: Request<Empty>) -> Result<Response<ClusterInfo>, Status> {
        forward!(self, get_cluster, request, Read);
        let state = self.manager.store.read().await;
        Ok(Response::new(self.cluster_info(&state)?))
    }

    async fn rotate_join_token(
        &self,
        request: Request<RotateJoinTokenRequest>,
    ) -> Result<Response<ClusterInfo>, Status> {
        forward!(self, rotate_join_token, request);
        let role = request.get_ref().role();
        self.manager
            .update(|state| -> Result<_, Status> {
                let mut cluster = state
                    .cluster
                    .clone()
                    .ok_or_else(|| Status::unavailable("the cluster is not initialised"))?;
                match role {
                    NodeRole::Worker => cluster.worker_secret = shoal_api::token::new_secret(),
                    NodeRole::Manager => cluster.manager_secret = shoal_api::token::new_secret(),
                }
                let mut batch = Batch::default();
                batch.put_cluster(cluster);
                Ok(Some((batch, ())))
            })
            .await?;
        let state = self.manager.store.read().await;
        Ok(Response::new(self.cluster_info(&state)?))
    }

    async fn list_nodes(&self, request: Request<Empty>) -> Result<Response<NodeList>, Status> {
        forward!(self, list_nodes, request, Read);
        let leader = self.manager.leader_id();
        let voters: BTreeSet<u64> = self.manager.voters().into_iter().collect();
        let state = self.manager.store.read().await;
        let mut nodes: Vec<_> = state.nodes.values().cloned().collect();
        for node in &mut nodes {
            if let Some(status) = node.manager_status.as_mut() {
                status.leader = leader == Some(status.raft_id);
                // The leader hears from each voter every Raft heartbeat.
                let reachable = status.leader
                    || (voters.contains(&status.raft_id)
                        && self
                            .manager
                            .peer_health
                            .answered_within(status.raft_id, REACHABLE_WINDOW));
                status.reachability = if reachable {
                    "reachable"
                } else {
                    "unreachable"
                }
                .into();
            }
        }
        Ok(Response::new(NodeList { nodes }))
    }

    async fn update_node(
        &self,
        request: Request<UpdateNodeRequest>,
    ) -> Result<Response<shoal_api::pb::Node>, Status> {
        forward!(self, update_node, request);
        let request = request.into_inner();
        let spec = request.spec.clone().unwrap_or_default();
        super::validate::allow_list(&format!("node {}", request.id), &spec.ingress_allow)?;
        let (current_role, raft_id) = {
            let state = self.manager.store.read().await;
            let node = state
                .nodes
                .get(&request.id)
                .ok_or_else(|| not_found("node", &request.id))?;
            (node.role(), node.manager_status.as_ref().map(|m| m.raft_id))
        };
        // Demotion leaves the Raft membership first: the node stops voting
        // before the store says it is a worker.
        if current_role == NodeRole::Manager && spec.desired_role() == NodeRole::Worker {
            let voters: BTreeSet<u64> = self.manager.voters().into_iter().collect();
            if let Some(raft_id) = raft_id.filter(|id| voters.contains(id)) {
                if voters.len() == 1 {
                    return Err(Status::failed_precondition(
                        "cannot demote the last manager of the cluster",
                    ));
                }
                let remaining: BTreeSet<u64> =
                    voters.into_iter().filter(|v| *v != raft_id).collect();
                self.manager
                    .raft
                    .change_membership(remaining, false)
                    .await
                    .map_err(|e| {
                        Status::unavailable(format!("removing the manager from Raft: {e}"))
                    })?;
            }
        }
        let node = self
            .manager
            .update(|state| -> Result<_, Status> {
                let mut node = state
                    .nodes
                    .get(&request.id)
                    .cloned()
                    .ok_or_else(|| not_found("node", &request.id))?;
                let version = node.meta.as_ref().map(|m| m.version).unwrap_or(0);
                if request.version != 0 && request.version != version {
                    return Err(Status::aborted(format!(
                        "node {} changed since it was read (version {} is now {version}); retry",
                        request.id, request.version
                    )));
                }
                if spec.desired_role() == NodeRole::Worker && node.role() == NodeRole::Manager {
                    node.role = NodeRole::Worker as i32;
                    node.manager_status = None;
                }
                node.spec = Some(spec.clone());
                let mut batch = Batch::default();
                batch.put_node(node.clone());
                Ok(Some((batch, node)))
            })
            .await?
            .unwrap_or_default();
        Ok(Response::new(node))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<Empty>, Status> {
        forward!(self, remove_node, request);
        let request = request.into_inner();
        self.manager
            .update(|state| -> Result<_, Status> {
                let node = state.nodes.get(&request.id).ok_or_else(|| not_found("node", &request.id))?;
                let name = node.description.as_ref().map(|d| d.hostname.as_str()).unwrap_or("");
                if node.role() == NodeRole::Manager {
                    return Err(Status::failed_precondition(format!(
                        "node {name} is a cluster manager and is a member of the Raft cluster: demote it before removal"
                    )));
                }
                let ready = node.status.as_ref().map(|s| s.state()) == Some(NodeState::Ready);
                if ready && !request.force {
                    return Err(Status::failed_precondition(format!(
                        "node {name} is not down and can't be removed (use --force to remove it anyway)"
                    )));
                }
                let mut batch = Batch::default();
                batch.delete(Kind::Node, &request.id, node.meta.as_ref().map(|m| m.version).unwrap_or(0));
                // Its certificate is refused from now on (and node ids are
                // never reused): the node must join again with a token.
                if let Some(mut cluster) = state.cluster.clone() {
                    cluster.removed_nodes.push(request.id.clone());
                    batch.put_cluster(cluster);
                }
                Ok(Some((batch, ())))
            })
            .await?;
        Ok(Response::new(Empty {}))
    }

    async fn create_service(
        &self,
        request: Request<ServiceSpec>,
    ) -> Result<Response<Service>, Status> {
        forward!(self, create_service, request);
        Ok(Response::new(
            services::create(&self.manager, request.into_inner()).await?,
        ))
    }

    async fn list_services(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ServiceList>, Status> {
        forward!(self, list_services, request, Read);
        Ok(Response::new(services::list(&self.manager).await?))
    }

    async fn update_service(
        &self,
        request: Request<UpdateServiceRequest>,
    ) -> Result<Response<Service>, Status> {
        forward!(self, update_service, request);
        Ok(Response::new(
            services::update(&self.manager, request.into_inner()).await?,
        ))
    }

    async fn remove_service(&self, request: Request<IdRequest>) -> Result<Response<Empty>, Status> {
        forward!(self, remove_service, request);
        Ok(Response::new(
            services::remove(&self.manager, request.into_inner().id).await?,
        ))
    }

    async fn list_tasks(&self, request: Request<Empty>) -> Result<Response<TaskList>, Status> {
        forward!(self, list_tasks, request, Read);
        let state = self.manager.store.read().await;
        // Tasks carry secret references, never secret data.
        let tasks = state.tasks.values().cloned().collect();
        Ok(Response::new(TaskList { tasks }))
    }

    async fn update_secret(
        &self,
        request: Request<UpdateSecretRequest>,
    ) -> Result<Response<Secret>, Status> {
        forward!(self, update_secret, request);
        Ok(Response::new(
            secrets_configs::update_secret(&self.manager, request.into_inner()).await?,
        ))
    }

    async fn update_config(
        &self,
        request: Request<UpdateConfigRequest>,
    ) -> Result<Response<Config>, Status> {
        forward!(self, update_config, request);
        Ok(Response::new(
            secrets_configs::update_config(&self.manager, request.into_inner()).await?,
        ))
    }

    async fn create_secret(
        &self,
        request: Request<SecretSpec>,
    ) -> Result<Response<Secret>, Status> {
        forward!(self, create_secret, request);
        Ok(Response::new(
            secrets_configs::create_secret(&self.manager, request.into_inner()).await?,
        ))
    }

    async fn list_secrets(&self, request: Request<Empty>) -> Result<Response<SecretList>, Status> {
        forward!(self, list_secrets, request, Read);
        Ok(Response::new(
            secrets_configs::list_secrets(&self.manager).await?,
        ))
    }

    async fn remove_secret(&self, request: Request<IdRequest>) -> Result<Response<Empty>, Status> {
        forward!(self, remove_secret, request);
        Ok(Response::new(
            secrets_configs::remove_secret(&self.manager, request.into_inner().id).await?,
        ))
    }

    async fn create_config(
        &self,
        request: Request<ConfigSpec>,
    ) -> Result<Response<Config>, Status> {
        forward!(self, create_config, request);
        Ok(Response::new(
            secrets_configs::create_config(&self.manager, request.into_inner()).await?,
        ))
    }

    async fn list_configs(&self, request: Request<Empty>) -> Result<Response<ConfigList>, Status> {
        forward!(self, list_configs, request, Read);
        Ok(Response::new(
            secrets_configs::list_configs(&self.manager).await?,
        ))
    }

    async fn remove_config(&self, request: Request<IdRequest>) -> Result<Response<Empty>, Status> {
        forward!(self, remove_config, request);
        Ok(Response::new(
            secrets_configs::remove_config(&self.manager, request.into_inner().id).await?,
        ))
    }

    type ServiceLogsStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<shoal_api::pb::LogLine, Status>> + Send>,
    >;

    async fn service_logs(
        &self,
        request: Request<shoal_api::pb::LogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        // A stream cannot go through `forward!`: relay the leader's.
        let deadline = tokio::time::Instant::now() + self.manager.settings.leader_wait;
        if let crate::manager::Route::Leader(addr) = self.manager.route(deadline, None).await? {
            let stream = forward::leader_client(&self.manager, &addr)?
                .service_logs(request.into_inner())
                .await?
                .into_inner();
            return Ok(Response::new(Box::pin(stream)));
        }
        let request = request.into_inner();
        let options = service_logs::options(&request)?;
        let (targets, unavailable) = {
            let state = self.manager.store.read().await;
            let mut targets = service_logs::targets(&state, &request)?;
            // Followed, a node that is down is asked all the same (it
            // answers when it comes back); otherwise it is named at the end.
            let unavailable = if options.follow {
                Default::default()
            } else {
                service_logs::take_unavailable(&state, &mut targets)
            };
            (targets, unavailable)
        };
        let lines = self
            .manager
            .logs
            .subscribe(targets.nodes.clone(), options, unavailable)?;
        if options.follow && !request.service_id.is_empty() {
            return Ok(Response::new(Box::pin(service_logs::follow_service(
                self.manager.clone(),
                request.service_id.clone(),
                options,
                targets,
                lines,
            ))));
        }
        Ok(Response::new(Box::pin(service_logs::annotated(
            lines,
            targets.tasks,
        ))))
    }

    type EventsStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<shoal_api::pb::Event, Status>> + Send>,
    >;

    async fn events(
        &self,
        request: Request<shoal_api::pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        // Every manager applies the same log: this one's own events answer,
        // even with no leader.
        let request = request.into_inner();
        if let (Some(since), Some(until)) = (request.since_ns, request.until_ns)
            && until < since
        {
            return Err(Status::invalid_argument(format!(
                "--until ({until} ns) is before --since ({since} ns)"
            )));
        }
        let events = self
            .manager
            .events
            .stream(request.since_ns, request.until_ns);
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(events),
        )))
    }

    async fn rebalance_service(
        &self,
        request: Request<IdRequest>,
    ) -> Result<Response<shoal_api::pb::RebalanceResponse>, Status> {
        forward!(self, rebalance_service, request);
        let answer =
            crate::orchestrator::rebalance::request(&self.manager, &request.get_ref().id).await?;
        Ok(Response::new(answer))
    }

    async fn create_network(
        &self,
        request: Request<NetworkSpec>,
    ) -> Result<Response<Network>, Status> {
        forward!(self, create_network, request);
        let network = networks::create(&self.manager, request.into_inner()).await?;
        Ok(Response::new(network))
    }

    async fn remove_network(&self, request: Request<IdRequest>) -> Result<Response<Empty>, Status> {
        forward!(self, remove_network, request);
        networks::remove(&self.manager, &request.into_inner().id).await?;
        Ok(Response::new(Empty {}))
    }

    async fn connect_container(
        &self,
        request: Request<ConnectContainerRequest>,
    ) -> Result<Response<shoal_api::pb::Task>, Status> {
        forward!(self, connect_container, request);
        let task = attachments::connect(&self.manager, request.into_inner()).await?;
        Ok(Response::new(task))
    }

    async fn disconnect_container(
        &self,
        request: Request<DisconnectContainerRequest>,
    ) -> Result<Response<Empty>, Status> {
        forward!(self, disconnect_container, request);
        attachments::disconnect(&self.manager, request.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_networks(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<NetworkList>, Status> {
        forward!(self, list_networks, request, Read);
        let state = self.manager.store.read().await;
        Ok(Response::new(NetworkList {
            networks: state.networks.values().cloned().collect(),
        }))
    }

    // --- Encryption at rest and autolock (see api::autolock) ---

    async fn update_cluster(
        &self,
        request: Request<UpdateClusterRequest>,
    ) -> Result<Response<ClusterInfo>, Status> {
        forward!(self, update_cluster, request);
        cluster_settings::update(&self.manager, request.get_ref()).await?;
        autolock::update_cluster(&self.manager, request.get_ref()).await?;
        let state = self.manager.store.read().await;
        Ok(Response::new(self.cluster_info(&state)?))
    }

    async fn get_unlock_key(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<UnlockKeyResponse>, Status> {
        forward!(self, get_unlock_key, request, Read);
        Ok(Response::new(
            autolock::get_unlock_key(&self.manager).await?,
        ))
    }

    async fn rotate_unlock_key(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<UnlockKeyResponse>, Status> {
        forward!(self, rotate_unlock_key, request);
        Ok(Response::new(
            autolock::rotate_unlock_key(&self.manager).await?,
        ))
    }

    async fn leave_cluster(
        &self,
        request: Request<LeaveClusterRequest>,
    ) -> Result<Response<Empty>, Status> {
        let own = self.manager.credentials.identity().node_id;
        let (node_id, local) = match authz::caller(&request)? {
            authz::Caller::Local => (own.clone(), true),
            authz::Caller::Certified(identity) if identity.role == shoal_pki::Role::Manager => {
                (identity.node_id.clone(), false)
            }
            authz::Caller::Certified(identity) => {
                return Err(Status::permission_denied(format!(
                    "a {} certificate names no manager: a node leaves with `shoal swarm leave` on it",
                    identity.role.name()
                )));
            }
        };
        if !self.manager.is_leader() {
            // A certified caller must reach the leader itself (a forwarded
            // call would name this manager); the local one is this manager.
            if !local {
                return Err(self.manager.not_leader());
            }
            let answer = forward::to_leader(
                &self.manager,
                &request,
                forward::Kind::Write,
                |mut leader, call| async move { leader.leave_cluster(call).await },
            );
            if let Some(answer) = answer.await? {
                self.manager.left.send_replace(true);
                return Ok(answer);
            }
        }
        let force = request.get_ref().force;
        match leave::manager_leaves(&self.manager, &node_id, force).await? {
            leave::Outcome::Done | leave::Outcome::LastManager => {}
            leave::Outcome::SteppedDown { others } => {
                leave::finish_elsewhere(&self.manager, &others).await?;
            }
        }
        if node_id == own {
            self.manager.left.send_replace(true);
        }
        Ok(Response::new(Empty {}))
    }
}
