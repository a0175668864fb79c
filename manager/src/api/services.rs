//! `service create|ls|update|rm` on the leader: a spec checked against the
//! cluster and completed (secret, config and network ids, dynamic published
//! ports), its endpoint allocated, and the service written.

use std::collections::BTreeSet;

use shoal_api::pb::{
    Empty, Kind, Meta, PublishMode, Service, ServiceList, ServiceMode, ServiceSpec, ServiceSummary,
    TaskState, UpdateServiceRequest,
};
use tonic::Status;

use super::{
    control::{DYNAMIC_PORTS, meta_id, not_found, validate_name},
    networks,
};
use crate::{
    allocator::{self, LazyIpam},
    manager::Manager,
    orchestrator::reconcile::is_live,
    scheduler::constraint::Constraint,
    store::{Batch, State},
};

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
    // (Only a spec that publishes ports looks at what every other service
    // publishes: a create among 10,000 services is not a scan of them all.)
    let mut taken: BTreeSet<(String, u32)> = BTreeSet::new();
    let publishes = spec.endpoint.as_ref().is_some_and(|e| !e.ports.is_empty());
    for (id, other) in state.services.iter().filter(|_| publishes) {
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

/// Creates a service (named as Docker names one when it has no name).
pub(super) async fn create(manager: &Manager, spec: ServiceSpec) -> Result<Service, Status> {
    let service = manager
        .update(|state| -> Result<_, Status> {
            let mut spec = spec.clone();
            let taken = |name: &str| state.service_name_taken(name);
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
            manager.settings.limits.check_service(state, &spec, &id)?;
            let endpoint =
                allocator::service_endpoint(state, &mut LazyIpam::new(state), &spec, None)
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
    let stored = manager
        .store
        .read()
        .await
        .services
        .get(&id)
        .cloned()
        .unwrap_or(service);
    Ok(stored)
}

/// Every service with its running and desired task counts.
pub(super) async fn list(manager: &Manager) -> Result<ServiceList, Status> {
    let state = manager.store.read().await;
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
                counters: Some(manager.service_counters(id)),
                completed,
            }
        })
        .collect();
    Ok(ServiceList { services })
}

/// Updates or rolls back a service; an unchanged spec writes nothing.
pub(super) async fn update(
    manager: &Manager,
    request: UpdateServiceRequest,
) -> Result<Service, Status> {
    let request_id = request.id.clone();
    let service = manager
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
            manager
                .settings
                .limits
                .check_service(state, &spec, &request.id)?;
            let endpoint = allocator::service_endpoint(
                state,
                &mut LazyIpam::new(state),
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
    let stored = manager
        .store
        .read()
        .await
        .services
        .get(&request_id)
        .cloned()
        .unwrap_or(service);
    Ok(stored)
}

/// Removes a service; the orchestrator then stops its tasks.
pub(super) async fn remove(manager: &Manager, id: String) -> Result<Empty, Status> {
    manager
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
    Ok(Empty {})
}
