//! The Control service behind the `shoal` CLI. Any manager answers: a
//! follower forwards the call to the leader, which reads linearizably and
//! writes through Raft.

use std::{collections::BTreeSet, sync::Arc};

use shoal_api::pb::{
    ClusterInfo, Config, ConfigList, ConfigSpec, ConnectContainerRequest,
    DisconnectContainerRequest, Empty, IdRequest, Kind, LeaveClusterRequest, Meta, Network,
    NetworkList, NetworkSpec, NodeList, NodeRole, NodeState, PublishMode, RemoveNodeRequest,
    RotateJoinTokenRequest, Secret, SecretList, SecretSpec, Service, ServiceList, ServiceMode,
    ServiceSpec, ServiceSummary, TaskList, TaskState, UnlockKeyResponse, UpdateClusterRequest,
    UpdateConfigRequest, UpdateNodeRequest, UpdateSecretRequest, UpdateServiceRequest,
    VersionResponse, control_server::Control,
};
use tonic::{Request, Response, Status};

use super::{
    attachments, authz, autolock, cluster_settings, forward, leave, networks, service_logs,
};
use crate::{
    allocator::{self, Ipam},
    ca,
    manager::Manager,
    orchestrator::reconcile::is_live,
    scheduler::constraint::Constraint,
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
macro_rules! forward {
    ($self:ident, $method:ident, $request:ident) => {
        let answer = forward::to_leader(&$self.manager, &$request, |mut leader, call| async move {
            leader.$method(call).await
        });
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

/// What secrets and configs have in common: a name, labels and content.
trait FileSpec {
    fn name(&self) -> &str;
    fn data(&self) -> &[u8];
    fn labels(&self) -> &std::collections::BTreeMap<String, String>;
    fn labels_mut(&mut self) -> &mut std::collections::BTreeMap<String, String>;
    fn template_driver(&self) -> &str;
}

macro_rules! file_spec {
    ($ty:ty) => {
        impl FileSpec for $ty {
            fn name(&self) -> &str {
                &self.name
            }
            fn data(&self) -> &[u8] {
                &self.data
            }
            fn labels(&self) -> &std::collections::BTreeMap<String, String> {
                &self.labels
            }
            fn labels_mut(&mut self) -> &mut std::collections::BTreeMap<String, String> {
                &mut self.labels
            }
            fn template_driver(&self) -> &str {
                &self.template_driver
            }
        }
    };
}
file_spec!(SecretSpec);
file_spec!(ConfigSpec);

/// Secrets and configs keep their name and content for life; new content
/// needs a new name (services then move to it with an update). The spec
/// to store with `wanted`'s labels, or None when nothing changes.
fn relabelled<S: FileSpec>(kind: &str, mut current: S, wanted: &S) -> Result<Option<S>, Status> {
    let name = current.name().to_owned();
    if !wanted.name().is_empty() && wanted.name() != name {
        return Err(Status::invalid_argument(format!(
            "a {kind} cannot be renamed ({name})"
        )));
    }
    if !wanted.data().is_empty() && wanted.data() != current.data() {
        return Err(Status::failed_precondition(format!(
            "{kind} {name}: its content changed, but {kind}s are immutable (only labels can change): \
             give the new content a new name, e.g. {name}_v2, and point the services at it"
        )));
    }
    if !wanted.data().is_empty() && wanted.template_driver() != current.template_driver() {
        return Err(Status::failed_precondition(format!(
            "{kind} {name}: its template driver cannot change ({:?} to {:?}): give it a new name",
            current.template_driver(),
            wanted.template_driver()
        )));
    }
    if current.labels() == wanted.labels() {
        return Ok(None);
    }
    *current.labels_mut() = wanted.labels().clone();
    Ok(Some(current))
}

/// Checks a service spec (its fields in `validate`, then against the
/// cluster) and fills in what the manager decides (secret and config ids,
/// dynamic published ports).
fn complete_spec(state: &State, spec: &mut ServiceSpec, service_id: &str) -> Result<(), Status> {
    validate_name("service", &spec.name)?;
    super::validate::service_spec(spec, service_id)?;
    if spec.mode() == ServiceMode::Global && spec.replicas != 0 {
        return Err(Status::invalid_argument(
            "replicas can only be used with replicated mode",
        ));
    }
    super::jobs::complete_mode(spec)?;
    let task = spec.task.get_or_insert_with(Default::default);
    let container = task.container.get_or_insert_with(Default::default);
    let placement = task.placement.clone().unwrap_or_default();
    Constraint::parse_all(&placement.constraints)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    for pref in &placement.spread {
        if !pref.starts_with("node.labels.") || pref.len() <= "node.labels.".len() {
            return Err(Status::invalid_argument(format!(
                "invalid placement preference spread={pref}: expected spread=node.labels.NAME"
            )));
        }
    }
    for secret in &mut container.secrets {
        let found = state
            .secrets
            .values()
            .find(|s| {
                meta_id(&s.meta) == secret.secret_id
                    || s.spec
                        .as_ref()
                        .is_some_and(|sp| sp.name == secret.secret_name)
            })
            .ok_or_else(|| {
                Status::not_found(format!("secret not found: {}", secret.secret_name))
            })?;
        secret.secret_id = meta_id(&found.meta).to_owned();
        secret.secret_name = found.spec.clone().unwrap_or_default().name;
        let file = secret.file.get_or_insert_with(Default::default);
        if file.name.is_empty() {
            file.name = secret.secret_name.clone();
        }
    }
    for config in &mut container.configs {
        let found = state
            .configs
            .values()
            .find(|c| {
                meta_id(&c.meta) == config.config_id
                    || c.spec
                        .as_ref()
                        .is_some_and(|sp| sp.name == config.config_name)
            })
            .ok_or_else(|| {
                Status::not_found(format!("config not found: {}", config.config_name))
            })?;
        config.config_id = meta_id(&found.meta).to_owned();
        config.config_name = found.spec.clone().unwrap_or_default().name;
        let file = config.file.get_or_insert_with(Default::default);
        if file.name.is_empty() {
            file.name = format!("/{}", config.config_name);
        }
    }
    for network in &mut task.networks {
        let found = state
            .networks
            .values()
            .find(|n| {
                meta_id(&n.meta) == network.target
                    || n.spec.as_ref().is_some_and(|s| s.name == network.target)
            })
            .ok_or_else(|| Status::not_found(format!("network {} not found", network.target)))?;
        networks::check_attachable_by_service(found)?;
        network.target = meta_id(&found.meta).to_owned();
    }
    // Published ports: valid, not taken by another service, dynamic when 0.
    let mut taken: BTreeSet<(String, u32)> = BTreeSet::new();
    for (id, other) in &state.services {
        if id == service_id {
            continue;
        }
        for port in other
            .spec
            .as_ref()
            .and_then(|s| s.endpoint.as_ref())
            .map(|e| e.ports.as_slice())
            .unwrap_or_default()
        {
            if port.publish_mode() == PublishMode::Ingress {
                taken.insert((port.protocol.clone(), port.published_port));
            }
        }
    }
    let endpoint = spec.endpoint.get_or_insert_with(Default::default);
    if endpoint.mode.is_empty() {
        endpoint.mode = "vip".into();
    }
    if !matches!(endpoint.mode.as_str(), "vip" | "dnsrr") {
        return Err(Status::invalid_argument(format!(
            "invalid endpoint mode {:?}: expected vip or dnsrr",
            endpoint.mode
        )));
    }
    for port in &mut endpoint.ports {
        if port.protocol.is_empty() {
            port.protocol = "tcp".into();
        }
        if !matches!(port.protocol.as_str(), "tcp" | "udp") {
            return Err(Status::invalid_argument(format!(
                "invalid protocol {:?}: expected tcp or udp",
                port.protocol
            )));
        }
        if port.target_port == 0 || port.target_port > 65535 || port.published_port > 65535 {
            return Err(Status::invalid_argument(format!(
                "invalid port {}:{}: ports are 1 to 65535",
                port.published_port, port.target_port
            )));
        }
        if port.publish_mode() != PublishMode::Ingress {
            continue;
        }
        if port.published_port == 0 {
            port.published_port = DYNAMIC_PORTS
                .clone()
                .find(|p| !taken.contains(&(port.protocol.clone(), *p)))
                .ok_or_else(|| Status::resource_exhausted("no dynamic published port is free"))?;
        } else if taken.contains(&(port.protocol.clone(), port.published_port)) {
            return Err(Status::already_exists(format!(
                "port {}/{} is already published by another service",
                port.published_port, port.protocol
            )));
        }
        taken.insert((port.protocol.clone(), port.published_port));
    }
    Ok(())
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
        forward!(self, get_cluster, request);
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
        forward!(self, list_nodes, request);
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
        let spec = request.into_inner();
        let service = self
            .manager
            .update(|state| -> Result<_, Status> {
                let mut spec = spec.clone();
                let taken = |name: &str| {
                    state
                        .services
                        .values()
                        .any(|s| s.spec.as_ref().is_some_and(|x| x.name == name))
                };
                // Given no name, a service gets one, as Docker's does.
                if spec.name.is_empty() {
                    spec.name = super::names::service_name(taken);
                }
                if taken(&spec.name) {
                    return Err(Status::already_exists(format!(
                        "service {} already exists",
                        spec.name
                    )));
                }
                let id = shoal_api::new_id();
                complete_spec(state, &mut spec, &id)?;
                self.manager
                    .settings
                    .limits
                    .check_service(state, &spec, &id)?;
                let endpoint =
                    allocator::service_endpoint(state, &mut Ipam::from_state(state), &spec, None)
                        .map_err(|e| {
                        Status::resource_exhausted(format!("service {}: {e}", spec.name))
                    })?;
                let mut service = Service {
                    meta: Some(Meta {
                        id,
                        ..Default::default()
                    }),
                    spec: Some(spec),
                    previous_spec: None,
                    endpoint: Some(endpoint),
                    update_status: None,
                    job_status: None,
                };
                super::jobs::start_iteration(&mut service, shoal_api::now_ms());
                let mut batch = Batch::default();
                batch.put_service(service.clone());
                Ok(Some((batch, service)))
            })
            .await?
            .unwrap_or_default();
        let id = meta_id(&service.meta).to_owned();
        let stored = self
            .manager
            .store
            .read()
            .await
            .services
            .get(&id)
            .cloned()
            .unwrap_or(service);
        Ok(Response::new(stored))
    }

    async fn list_services(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ServiceList>, Status> {
        forward!(self, list_services, request);
        let state = self.manager.store.read().await;
        let services = state
            .services
            .values()
            .map(|service| {
                let id = meta_id(&service.meta);
                let spec = service.spec.clone().unwrap_or_default();
                let running = state
                    .tasks_of_service(id)
                    .filter(|t| {
                        t.desired_state() == TaskState::Running
                            && t.status.as_ref().map(|s| s.state()) == Some(TaskState::Running)
                    })
                    .count() as u64;
                let desired = match spec.mode() {
                    ServiceMode::Replicated => spec.replicas,
                    _ => state.tasks_of_service(id).filter(|t| is_live(t)).count() as u64,
                };
                let (running, desired, completed) =
                    super::jobs::summary(&state, service).unwrap_or((running, desired, 0));
                ServiceSummary {
                    service: Some(service.clone()),
                    running,
                    desired,
                    counters: Some(self.manager.service_counters(id)),
                    completed,
                }
            })
            .collect();
        Ok(Response::new(ServiceList { services }))
    }

    async fn update_service(
        &self,
        request: Request<UpdateServiceRequest>,
    ) -> Result<Response<Service>, Status> {
        forward!(self, update_service, request);
        let request = request.into_inner();
        let request_id = request.id.clone();
        let service = self
            .manager
            .update(|state| -> Result<_, Status> {
                let mut service = state
                    .services
                    .get(&request.id)
                    .cloned()
                    .ok_or_else(|| not_found("service", &request.id))?;
                let version = service.meta.as_ref().map(|m| m.version).unwrap_or(0);
                if request.version != 0 && request.version != version {
                    return Err(Status::aborted(format!(
                        "service {} changed since it was read (version {} is now {version}); retry",
                        request.id, request.version
                    )));
                }
                let current = service.spec.clone().unwrap_or_default();
                let mut spec = if request.rollback {
                    service.previous_spec.clone().ok_or_else(|| {
                        Status::failed_precondition(format!(
                            "service {} has no previous spec to roll back to",
                            current.name
                        ))
                    })?
                } else {
                    request.spec.clone().unwrap_or_default()
                };
                if spec.name != current.name {
                    return Err(Status::invalid_argument("a service cannot be renamed"));
                }
                if spec.mode != current.mode {
                    return Err(Status::invalid_argument("a service's mode cannot change"));
                }
                complete_spec(state, &mut spec, &request.id)?;
                self.manager
                    .settings
                    .limits
                    .check_service(state, &spec, &request.id)?;
                let endpoint = allocator::service_endpoint(
                    state,
                    &mut Ipam::from_state(state),
                    &spec,
                    service.endpoint.as_ref(),
                )
                .map_err(|e| Status::resource_exhausted(format!("service {}: {e}", spec.name)))?;
                // Any update of a job runs it again, as a new iteration
                // (swarmkit's): there is no rolling update to start.
                let job = spec.mode().is_job();
                if spec == current && !request.rollback && !job {
                    // Nothing changed (a stack deployed again): no write,
                    // no new version, no update.
                    return Ok(None);
                }
                if job {
                    super::jobs::start_iteration(&mut service, shoal_api::now_ms());
                } else if spec.task != current.task || request.rollback {
                    let message = if request.rollback {
                        "manually requested rollback"
                    } else {
                        "update in progress"
                    };
                    service.update_status = Some(crate::orchestrator::update::started(
                        shoal_api::now_ms(),
                        request.rollback,
                        message,
                    ));
                }
                service.endpoint = Some(endpoint);
                service.previous_spec = Some(current);
                service.spec = Some(spec);
                let mut batch = Batch::default();
                batch.put_service(service.clone());
                Ok(Some((batch, service)))
            })
            .await?
            .unwrap_or_default();
        // An unchanged spec writes nothing: answer with what is stored.
        let stored = self
            .manager
            .store
            .read()
            .await
            .services
            .get(&request_id)
            .cloned()
            .unwrap_or(service);
        Ok(Response::new(stored))
    }

    async fn remove_service(&self, request: Request<IdRequest>) -> Result<Response<Empty>, Status> {
        forward!(self, remove_service, request);
        let id = request.into_inner().id;
        self.manager
            .update(|state| -> Result<_, Status> {
                let service = state
                    .services
                    .get(&id)
                    .ok_or_else(|| not_found("service", &id))?;
                let mut batch = Batch::default();
                batch.delete(
                    Kind::Service,
                    &id,
                    service.meta.as_ref().map(|m| m.version).unwrap_or(0),
                );
                Ok(Some((batch, ())))
            })
            .await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_tasks(&self, request: Request<Empty>) -> Result<Response<TaskList>, Status> {
        forward!(self, list_tasks, request);
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
        let request = request.into_inner();
        let spec = request.spec.unwrap_or_default();
        let secret = self
            .manager
            .update(|state| -> Result<_, Status> {
                let mut secret = state
                    .secrets
                    .get(&request.id)
                    .cloned()
                    .ok_or_else(|| not_found("secret", &request.id))?;
                let current = secret.spec.clone().unwrap_or_default();
                let Some(next) = relabelled("secret", current, &spec)? else {
                    return Ok(Some((Batch::default(), secret)));
                };
                secret.spec = Some(next);
                let mut batch = Batch::default();
                batch.put_secret(secret.clone());
                Ok(Some((batch, secret)))
            })
            .await?
            .unwrap_or_default();
        Ok(Response::new(without_data(secret)))
    }

    async fn update_config(
        &self,
        request: Request<UpdateConfigRequest>,
    ) -> Result<Response<Config>, Status> {
        forward!(self, update_config, request);
        let request = request.into_inner();
        let spec = request.spec.unwrap_or_default();
        let config = self
            .manager
            .update(|state| -> Result<_, Status> {
                let mut config = state
                    .configs
                    .get(&request.id)
                    .cloned()
                    .ok_or_else(|| not_found("config", &request.id))?;
                let current = config.spec.clone().unwrap_or_default();
                let Some(next) = relabelled("config", current, &spec)? else {
                    return Ok(Some((Batch::default(), config)));
                };
                config.spec = Some(next);
                let mut batch = Batch::default();
                batch.put_config(config.clone());
                Ok(Some((batch, config)))
            })
            .await?
            .unwrap_or_default();
        Ok(Response::new(config))
    }

    async fn create_secret(
        &self,
        request: Request<SecretSpec>,
    ) -> Result<Response<Secret>, Status> {
        forward!(self, create_secret, request);
        let spec = request.into_inner();
        validate_name("secret", &spec.name)?;
        super::validate::templating("secret", &spec.name, &spec.template_driver, &spec.data)?;
        self.manager.settings.limits.check_secret(&spec)?;
        let secret = self
            .manager
            .update(|state| -> Result<_, Status> {
                if state
                    .secrets
                    .values()
                    .any(|s| s.spec.as_ref().is_some_and(|x| x.name == spec.name))
                {
                    return Err(Status::already_exists(format!(
                        "secret {} already exists",
                        spec.name
                    )));
                }
                let secret = Secret {
                    meta: Some(Meta {
                        id: shoal_api::new_id(),
                        ..Default::default()
                    }),
                    spec: Some(spec.clone()),
                };
                let mut batch = Batch::default();
                batch.put_secret(secret.clone());
                Ok(Some((batch, secret)))
            })
            .await?
            .unwrap_or_default();
        let stored = self
            .manager
            .store
            .read()
            .await
            .secrets
            .get(meta_id(&secret.meta))
            .cloned()
            .unwrap_or(secret);
        Ok(Response::new(without_data(stored)))
    }

    async fn list_secrets(&self, request: Request<Empty>) -> Result<Response<SecretList>, Status> {
        forward!(self, list_secrets, request);
        let state = self.manager.store.read().await;
        let secrets = state.secrets.values().cloned().map(without_data).collect();
        Ok(Response::new(SecretList { secrets }))
    }

    async fn remove_secret(&self, request: Request<IdRequest>) -> Result<Response<Empty>, Status> {
        forward!(self, remove_secret, request);
        let id = request.into_inner().id;
        self.manager
            .update(|state| -> Result<_, Status> {
                let secret = state
                    .secrets
                    .get(&id)
                    .ok_or_else(|| not_found("secret", &id))?;
                refuse_if_in_use(
                    state,
                    "secret",
                    secret.spec.as_ref().map(|s| s.name.as_str()),
                    |c| c.secrets.iter().any(|r| r.secret_id == id),
                )?;
                let mut batch = Batch::default();
                batch.delete(
                    Kind::Secret,
                    &id,
                    secret.meta.as_ref().map(|m| m.version).unwrap_or(0),
                );
                Ok(Some((batch, ())))
            })
            .await?;
        Ok(Response::new(Empty {}))
    }

    async fn create_config(
        &self,
        request: Request<ConfigSpec>,
    ) -> Result<Response<Config>, Status> {
        forward!(self, create_config, request);
        let spec = request.into_inner();
        validate_name("config", &spec.name)?;
        super::validate::templating("config", &spec.name, &spec.template_driver, &spec.data)?;
        self.manager.settings.limits.check_config(&spec)?;
        let config = self
            .manager
            .update(|state| -> Result<_, Status> {
                if state
                    .configs
                    .values()
                    .any(|c| c.spec.as_ref().is_some_and(|x| x.name == spec.name))
                {
                    return Err(Status::already_exists(format!(
                        "config {} already exists",
                        spec.name
                    )));
                }
                let config = Config {
                    meta: Some(Meta {
                        id: shoal_api::new_id(),
                        ..Default::default()
                    }),
                    spec: Some(spec.clone()),
                };
                let mut batch = Batch::default();
                batch.put_config(config.clone());
                Ok(Some((batch, config)))
            })
            .await?
            .unwrap_or_default();
        let stored = self
            .manager
            .store
            .read()
            .await
            .configs
            .get(meta_id(&config.meta))
            .cloned()
            .unwrap_or(config);
        Ok(Response::new(stored))
    }

    async fn list_configs(&self, request: Request<Empty>) -> Result<Response<ConfigList>, Status> {
        forward!(self, list_configs, request);
        let state = self.manager.store.read().await;
        Ok(Response::new(ConfigList {
            configs: state.configs.values().cloned().collect(),
        }))
    }

    async fn remove_config(&self, request: Request<IdRequest>) -> Result<Response<Empty>, Status> {
        forward!(self, remove_config, request);
        let id = request.into_inner().id;
        self.manager
            .update(|state| -> Result<_, Status> {
                let config = state
                    .configs
                    .get(&id)
                    .ok_or_else(|| not_found("config", &id))?;
                refuse_if_in_use(
                    state,
                    "config",
                    config.spec.as_ref().map(|s| s.name.as_str()),
                    |c| c.configs.iter().any(|r| r.config_id == id),
                )?;
                let mut batch = Batch::default();
                batch.delete(
                    Kind::Config,
                    &id,
                    config.meta.as_ref().map(|m| m.version).unwrap_or(0),
                );
                Ok(Some((batch, ())))
            })
            .await?;
        Ok(Response::new(Empty {}))
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
        let targets = {
            let state = self.manager.store.read().await;
            service_logs::targets(&state, &request)?
        };
        let lines = self
            .manager
            .logs
            .subscribe(targets.nodes.clone(), options)?;
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
        forward!(self, list_networks, request);
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
        forward!(self, get_unlock_key, request);
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
            let answer =
                forward::to_leader(&self.manager, &request, |mut leader, call| async move {
                    leader.leave_cluster(call).await
                });
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

fn container_of(service: &Service) -> Option<&shoal_api::pb::ContainerSpec> {
    service.spec.as_ref()?.task.as_ref()?.container.as_ref()
}

/// Refuses to remove a secret or config that services still use, naming them.
fn refuse_if_in_use(
    state: &State,
    kind: &str,
    name: Option<&str>,
    uses: impl Fn(&shoal_api::pb::ContainerSpec) -> bool,
) -> Result<(), Status> {
    let users: Vec<&str> = state
        .services
        .values()
        .filter(|s| container_of(s).is_some_and(&uses))
        .map(|s| s.spec.as_ref().map(|x| x.name.as_str()).unwrap_or(""))
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "{kind} {} is in use by the following service: {}",
        name.unwrap_or(""),
        users.join(", ")
    )))
}

/// Secret data never leaves the managers through the control API.
fn without_data(mut secret: Secret) -> Secret {
    if let Some(spec) = secret.spec.as_mut() {
        spec.data.clear();
    }
    secret
}
