//! Every field of a service spec, checked when a service is created or
//! updated — whether the spec comes from the CLI, a compose file or another
//! gRPC client — with Docker's rules and an error that names the field, so
//! that bad input is refused before anything is written instead of failing
//! each task at run time. What needs the cluster's state (secrets, configs
//! and networks that must exist, published ports already taken) is checked
//! by `control::complete_spec`; replica and task counts by the limits.

mod allow;
mod container;
mod engine;
mod files;
mod image;
mod lb;
mod templating;

use std::collections::BTreeSet;

use shoal_api::{
    pb::{
        EndpointSpec, Meta, NetworkAttachmentConfig, NodeDescription, Platform, PublishMode,
        ResourceRequirements, Resources, RestartCondition, RestartPolicy, ServiceMode, ServiceSpec,
        Task, TaskSpec, UpdateConfig, UpdateFailureAction, UpdateOrder,
    },
    template::Context,
};
use tonic::Status;

/// A refused field, with the message the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<Invalid> for Status {
    fn from(invalid: Invalid) -> Self {
        Status::invalid_argument(invalid.0)
    }
}

type Check = Result<(), Invalid>;

pub use allow::allow_list;
pub use engine::node_generic_resources;

/// `Err(Invalid(format!(…)))`.
macro_rules! invalid {
    ($($arg:tt)*) => {
        Err($crate::api::validate::Invalid(format!($($arg)*)))
    };
}
use invalid;

/// Swarm's smallest CPU and memory amounts.
const MIN_NANO_CPUS: i64 = 1_000_000;
const MIN_MEMORY_BYTES: i64 = 4 << 20;

/// Stand-ins for what only the task will know, to check templates and the
/// fields they expand into (swarmkit validates the same way). Ids have the
/// length of real ones, so a hostname that would be too long is caught.
const SAMPLE_SERVICE_ID: &str = "service0000000000000000000";
const SAMPLE_NODE_ID: &str = "node000000000000000000000";
const SAMPLE_TASK_ID: &str = "task000000000000000000000";
const SAMPLE_NODE_HOSTNAME: &str = "node";

/// Checks a secret's or config's template driver and templated content.
pub fn templating(kind: &str, name: &str, driver: &str, data: &[u8]) -> Result<(), Status> {
    Ok(templating::check(kind, name, driver, data)?)
}

/// Checks `spec` (of the service `service_id`; empty while it is being
/// created) before the manager completes and stores it.
pub fn service_spec(spec: &ServiceSpec, service_id: &str) -> Result<(), Status> {
    check_service(spec, service_id).map_err(Status::from)
}

fn check_service(spec: &ServiceSpec, service_id: &str) -> Check {
    known::<ServiceMode>("mode", spec.mode)?;
    labels("service label", &spec.labels)?;
    let default = TaskSpec::default();
    let task = spec.task.as_ref().unwrap_or(&default);
    let context = sample_context(spec, service_id);
    let container_spec = task.container.clone().unwrap_or_default();
    container::check(&container_spec, &context)?;
    files::check(&spec.name, &container_spec)?;
    engine::check(task)?;
    if let Some(resources) = &task.resources {
        resource_requirements(resources)?;
    }
    if let Some(restart) = &task.restart {
        restart_policy(restart)?;
    }
    networks(&task.networks)?;
    if let Some(endpoint) = &spec.endpoint {
        endpoint_spec(endpoint)?;
    }
    if let Some(update) = &spec.update {
        update_config("update", update)?;
    }
    if let Some(rollback) = &spec.rollback {
        update_config("rollback", rollback)?;
        if rollback.failure_action() == UpdateFailureAction::Rollback {
            return invalid!(
                "invalid rollback-failure-action rollback: expected pause or continue"
            );
        }
    }
    Ok(())
}

/// What templates expand to while the spec is checked: the context of a
/// sample task of the service (slot 1, or the node's id when global).
fn sample_context(spec: &ServiceSpec, service_id: &str) -> Context {
    let service_id = if service_id.is_empty() {
        SAMPLE_SERVICE_ID
    } else {
        service_id
    };
    let task = Task {
        meta: Some(Meta {
            id: SAMPLE_TASK_ID.into(),
            ..Default::default()
        }),
        service_id: service_id.to_owned(),
        service_name: spec.name.clone(),
        service_labels: spec.labels.clone(),
        node_id: SAMPLE_NODE_ID.into(),
        slot: u64::from(spec.mode().is_replicated()),
        ..Default::default()
    };
    let node = NodeDescription {
        hostname: SAMPLE_NODE_HOSTNAME.into(),
        platform: Some(Platform {
            os: std::env::consts::OS.into(),
            architecture: std::env::consts::ARCH.into(),
        }),
        ..Default::default()
    };
    Context::new(&task, &node)
}

/// An enum field a gRPC client may have set to a number no variant has.
fn known<E: TryFrom<i32>>(field: &str, value: i32) -> Check {
    match E::try_from(value) {
        Ok(_) => Ok(()),
        Err(_) => invalid!("invalid {field} {value}: not a value Shoal knows"),
    }
}

/// Docker's rule for labels: a name that is not empty.
fn labels<'a>(what: &str, labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Check {
    for (key, value) in labels {
        if key.trim().is_empty() {
            return invalid!("invalid {what} {key:?}={value:?}: empty name");
        }
        if key.contains('\0') || value.contains('\0') {
            return invalid!("invalid {what} {key:?}: contains a NUL byte");
        }
    }
    Ok(())
}

fn resources(which: &str, r: &Resources) -> Check {
    if r.nano_cpus < 0 || (r.nano_cpus != 0 && r.nano_cpus < MIN_NANO_CPUS) {
        return invalid!(
            "invalid {which}-cpu {}: must be at least {}",
            r.nano_cpus as f64 / 1e9,
            MIN_NANO_CPUS as f64 / 1e9
        );
    }
    if r.memory_bytes < 0 || (r.memory_bytes != 0 && r.memory_bytes < MIN_MEMORY_BYTES) {
        return invalid!(
            "invalid {which}-memory {}: must be at least 4MiB",
            r.memory_bytes
        );
    }
    Ok(())
}

/// Non-negative amounts no smaller than Swarm's minimums, and no
/// reservation above its limit (such a task could never start).
fn resource_requirements(r: &ResourceRequirements) -> Check {
    let (limits, reservations) = (
        r.limits.unwrap_or_default(),
        r.reservations.unwrap_or_default(),
    );
    resources("limit", &limits)?;
    resources("reserve", &reservations)?;
    if limits.nano_cpus > 0 && reservations.nano_cpus > limits.nano_cpus {
        return invalid!(
            "invalid resources: reserve-cpu {} is more than limit-cpu {}",
            reservations.nano_cpus as f64 / 1e9,
            limits.nano_cpus as f64 / 1e9
        );
    }
    if limits.memory_bytes > 0 && reservations.memory_bytes > limits.memory_bytes {
        return invalid!(
            "invalid resources: reserve-memory {} bytes is more than limit-memory {} bytes",
            reservations.memory_bytes,
            limits.memory_bytes
        );
    }
    Ok(())
}

fn restart_policy(r: &RestartPolicy) -> Check {
    known::<RestartCondition>("restart-condition", r.condition)?;
    if let Some(delay) = r.delay_ms.filter(|d| *d < 0) {
        return invalid!("invalid restart-delay {delay}ms: cannot be negative");
    }
    if r.window_ms < 0 {
        return invalid!(
            "invalid restart-window {}ms: cannot be negative",
            r.window_ms
        );
    }
    Ok(())
}

/// `which` is `update` or `rollback`, as in the CLI's flags.
fn update_config(which: &str, u: &UpdateConfig) -> Check {
    known::<UpdateFailureAction>(&format!("{which}-failure-action"), u.failure_action)?;
    known::<UpdateOrder>(&format!("{which}-order"), u.order)?;
    if u.delay_ms < 0 {
        return invalid!("invalid {which}-delay {}ms: cannot be negative", u.delay_ms);
    }
    if let Some(monitor) = u.monitor_ms.filter(|m| *m < 0) {
        return invalid!("invalid {which}-monitor {monitor}ms: cannot be negative");
    }
    if !(0.0..=1.0).contains(&u.max_failure_ratio) {
        return invalid!(
            "invalid {which}-max-failure-ratio {}: expected a number from 0 to 1",
            u.max_failure_ratio
        );
    }
    Ok(())
}

fn networks(networks: &[NetworkAttachmentConfig]) -> Check {
    let mut seen = BTreeSet::new();
    for network in networks {
        if network.target.trim().is_empty() {
            return invalid!("invalid network \"\": a network name or id is required");
        }
        if !seen.insert(network.target.as_str()) {
            return invalid!(
                "network {} is attached twice: give it once, with all its aliases",
                network.target
            );
        }
        if let Some(alias) = network
            .aliases
            .iter()
            .find(|a| a.is_empty() || a.chars().any(|c| c.is_whitespace() || c == '\0'))
        {
            return invalid!(
                "invalid alias {alias:?} on network {}: a DNS name is expected",
                network.target
            );
        }
    }
    Ok(())
}

fn endpoint_spec(endpoint: &EndpointSpec) -> Check {
    if !matches!(endpoint.mode.as_str(), "" | "vip" | "dnsrr") {
        return invalid!(
            "invalid endpoint mode {:?}: expected vip or dnsrr",
            endpoint.mode
        );
    }
    lb::check(endpoint)?;
    let mut published = BTreeSet::new();
    for port in &endpoint.ports {
        let protocol = if port.protocol.is_empty() {
            "tcp"
        } else {
            port.protocol.as_str()
        };
        let shown = format!("{}:{}/{protocol}", port.published_port, port.target_port);
        match protocol {
            "tcp" | "udp" => {}
            // Docker's third protocol; the data plane balances TCP and UDP only.
            "sctp" => {
                return invalid!(
                    "invalid port {shown}: protocol sctp is not supported by Shoal (tcp or udp)"
                );
            }
            other => {
                return invalid!("invalid port {shown}: protocol {other:?}: expected tcp or udp");
            }
        }
        known::<PublishMode>(&format!("publish mode of port {shown}"), port.publish_mode)?;
        if port.target_port == 0 || port.target_port > 65535 || port.published_port > 65535 {
            return invalid!("invalid port {shown}: ports are 1 to 65535");
        }
        if port.direct_server_return && port.publish_mode() != PublishMode::Ingress {
            return invalid!(
                "invalid port {shown}: dsr (direct server return) is for ports published in ingress mode; in host mode the task answers from its own node already"
            );
        }
        // The relay's rule, shared with the CLI and the compose converter.
        if let Err(why) = shoal_api::proxy_protocol::check(port) {
            return invalid!("invalid port {shown}: {why}");
        }
        let same_target = |p: &&shoal_api::pb::PortConfig| {
            p.target_port == port.target_port
                && (if p.protocol.is_empty() {
                    "tcp"
                } else {
                    p.protocol.as_str()
                }) == protocol
                && p.publish_mode() == PublishMode::Ingress
        };
        if port.direct_server_return && endpoint.ports.iter().filter(same_target).count() > 1 {
            // The task's node knows a connection's target port, not which
            // published port it came by: its replies' source would be a guess.
            return invalid!(
                "invalid port {shown}: with dsr (direct server return), target {}/{protocol} may be published in ingress mode once",
                port.target_port
            );
        }
        if endpoint.mode == "dnsrr" && port.publish_mode() == PublishMode::Ingress {
            return invalid!(
                "invalid port {shown}: a port published in ingress mode cannot be used with endpoint mode dnsrr (publish it with mode=host)"
            );
        }
        allow_list(&format!("port {shown}"), &port.allow)?;
        if port.published_port != 0 && !published.insert((protocol, port.published_port)) {
            return invalid!(
                "invalid port {shown}: {}/{protocol} is published twice",
                port.published_port
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
