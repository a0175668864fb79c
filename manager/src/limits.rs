//! The cluster's limits: what one request may ask of the cluster, refused
//! when it is asked (service create, update, scale; secret and config
//! create; `service logs`), with an error that names the limit, its value
//! and the flag that sets it.
//!
//! Swarm has none of these but the object sizes: `--replicas 99999999999`
//! makes its manager write tasks without end and its agents start
//! containers until the hosts run out of process ids. The defaults are
//! chosen so that a 2-core lab machine running three nodes and a real
//! 100-node cluster both live with them:
//!
//! | limit | default | why |
//! |---|---|---|
//! | replicas per service | 10,000 | 100 nodes × 100 tasks: more than one service of a 100-node cluster uses, and 10,000 task objects (a few MB) is what the store replicates comfortably at once |
//! | tasks in the cluster | 25,000 | 100 nodes at the per-node default: the total the managers keep in memory and replicate |
//! | services | 1,000 | each service costs a VIP per network, DNS records and load-balancer entries on every node; Swarm clusters run hundreds |
//! | tasks per node | 250 | kubelet's `--max-pods` is 110; Swarm operators pack denser. 3 lab nodes × 250 containers stay well inside one host's 32768 process ids; nodes also cap themselves by memory and pids ([`shoal_api::capacity`]) |
//! | secret size | 500 KiB | Swarm's |
//! | config size | 1000 KiB | Swarm's |
//! | log streams | 64 | each open `service logs` holds a log reader per task on every node it touches |
//!
//! Each manager enforces the limits it was started with while it leads:
//! start every manager with the same flags (as the installed units do).

use shoal_api::pb::{ConfigSpec, SecretSpec, ServiceSpec};

use crate::store::State;

pub const DEFAULT_MAX_REPLICAS_PER_SERVICE: u64 = 10_000;
pub const DEFAULT_MAX_TASKS: u64 = 25_000;
pub const DEFAULT_MAX_SERVICES: u64 = 1_000;
pub const DEFAULT_MAX_TASKS_PER_NODE: u64 = 250;
pub const DEFAULT_MAX_SECRET_BYTES: u64 = 500 * 1024;
pub const DEFAULT_MAX_CONFIG_BYTES: u64 = 1000 * 1024;
pub const DEFAULT_MAX_LOG_STREAMS: u64 = 64;

/// Objects one pass of the orchestrator, the allocator or the scheduler
/// writes at most (the rest follow in the next pass): a scale to thousands
/// of replicas becomes a series of small Raft entries, never one giant one.
pub const MAX_WRITES_PER_PASS: usize = 1_000;
/// Encoded bytes of one such pass, at most (tasks carry their service's
/// spec, which may be large).
pub const MAX_BYTES_PER_PASS: usize = 1 << 20;
/// Writes queued together share one Raft entry up to this size (one write
/// alone may be larger: a service spec is bounded by the API's message
/// size).
pub const MAX_BYTES_PER_ENTRY: usize = 4 << 20;

/// The limits a manager enforces (`shoal-manager init|join|run --max-…`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Limits {
    /// Most replicas one service may ask for.
    #[arg(help_heading = "Limits", long, value_name = "N", default_value_t = DEFAULT_MAX_REPLICAS_PER_SERVICE,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_replicas_per_service: u64,
    /// Most tasks all services together may ask for (replicas, plus one per
    /// node for each global service).
    #[arg(help_heading = "Limits", long, value_name = "N", default_value_t = DEFAULT_MAX_TASKS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tasks: u64,
    /// Most services in the cluster.
    #[arg(help_heading = "Limits", long, value_name = "N", default_value_t = DEFAULT_MAX_SERVICES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_services: u64,
    /// Most tasks the scheduler places on one node; a node also holds no
    /// more than its memory and process ids allow (32 MiB and 32 pids a
    /// task) or than its agent's --max-tasks.
    #[arg(help_heading = "Limits", long, value_name = "N", default_value_t = DEFAULT_MAX_TASKS_PER_NODE,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tasks_per_node: u64,
    /// Largest secret, in bytes (Swarm's 500 KiB).
    #[arg(help_heading = "Limits", long = "max-secret-size", value_name = "BYTES", default_value_t = DEFAULT_MAX_SECRET_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_secret_bytes: u64,
    /// Largest config, in bytes (Swarm's 1000 KiB).
    #[arg(help_heading = "Limits", long = "max-config-size", value_name = "BYTES", default_value_t = DEFAULT_MAX_CONFIG_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_config_bytes: u64,
    /// Most `service logs` streams open at once (on the leader, which
    /// serves them all).
    #[arg(help_heading = "Limits", long, value_name = "N", default_value_t = DEFAULT_MAX_LOG_STREAMS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_log_streams: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_replicas_per_service: DEFAULT_MAX_REPLICAS_PER_SERVICE,
            max_tasks: DEFAULT_MAX_TASKS,
            max_services: DEFAULT_MAX_SERVICES,
            max_tasks_per_node: DEFAULT_MAX_TASKS_PER_NODE,
            max_secret_bytes: DEFAULT_MAX_SECRET_BYTES,
            max_config_bytes: DEFAULT_MAX_CONFIG_BYTES,
            max_log_streams: DEFAULT_MAX_LOG_STREAMS,
        }
    }
}

/// A request over a limit. The message names the limit, its value and the
/// flag that changes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "service {service}: replicas {asked} exceeds the cluster's limit of {limit} replicas per service (shoal-manager --max-replicas-per-service)"
    )]
    Replicas {
        service: String,
        asked: u64,
        limit: u64,
    },
    #[error(
        "service {service}: its {asked} tasks would bring the cluster to {total} tasks, over its limit of {limit} tasks (shoal-manager --max-tasks)"
    )]
    Tasks {
        service: String,
        asked: u64,
        total: u64,
        limit: u64,
    },
    #[error(
        "service {service}: the cluster already has {count} services, its limit (shoal-manager --max-services)"
    )]
    Services { service: String, count: u64 },
    #[error("{kind} {name}: data must not be empty")]
    Empty { kind: &'static str, name: String },
    #[error(
        "{kind} {name}: {size} bytes exceed the cluster's limit of {limit} bytes per {kind} (shoal-manager --max-{kind}-size)"
    )]
    Size {
        kind: &'static str,
        name: String,
        size: u64,
        limit: u64,
    },
    #[error(
        "{open} log streams are open, the cluster's limit (shoal-manager --max-log-streams): retry when one ends"
    )]
    LogStreams { open: u64 },
}

impl From<LimitError> for tonic::Status {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Replicas { .. } | LimitError::Empty { .. } | LimitError::Size { .. } => {
                tonic::Status::invalid_argument(e.to_string())
            }
            LimitError::Tasks { .. }
            | LimitError::Services { .. }
            | LimitError::LogStreams { .. } => tonic::Status::resource_exhausted(e.to_string()),
        }
    }
}

/// The tasks a service asks for: its replicas, or one per node when global
/// (every node counts: it may become eligible).
fn desired_tasks(state: &State, spec: &ServiceSpec) -> u64 {
    crate::store::service_index::desired_tasks(spec, state.nodes.len() as u64)
}

impl Limits {
    /// Checks a service being created or updated (`service_id` names it;
    /// it is new when the state does not hold it). A request that does not
    /// grow the service passes even over a limit (limits lowered since),
    /// so scaling down always works.
    pub fn check_service(
        &self,
        state: &State,
        spec: &ServiceSpec,
        service_id: &str,
    ) -> Result<(), LimitError> {
        let current = state.services.get(service_id).and_then(|s| s.spec.as_ref());
        let service = spec.name.clone();
        if current.is_none() && state.services.len() as u64 >= self.max_services {
            return Err(LimitError::Services {
                service,
                count: state.services.len() as u64,
            });
        }
        let asked = desired_tasks(state, spec);
        let before = current.map_or(0, |c| desired_tasks(state, c));
        if asked <= before {
            return Ok(());
        }
        if spec.mode().is_replicated() && spec.replicas > self.max_replicas_per_service {
            return Err(LimitError::Replicas {
                service,
                asked: spec.replicas,
                limit: self.max_replicas_per_service,
            });
        }
        let others = state.desired_tasks_except(service_id);
        let total = others.saturating_add(asked);
        if total > self.max_tasks {
            return Err(LimitError::Tasks {
                service,
                asked,
                total,
                limit: self.max_tasks,
            });
        }
        Ok(())
    }

    pub fn check_secret(&self, spec: &SecretSpec) -> Result<(), LimitError> {
        check_size(
            "secret",
            &spec.name,
            &spec.data,
            self.max_secret_bytes,
            false,
        )
    }

    /// Configs may be empty (an empty file is a valid config, as in Swarm).
    pub fn check_config(&self, spec: &ConfigSpec) -> Result<(), LimitError> {
        check_size(
            "config",
            &spec.name,
            &spec.data,
            self.max_config_bytes,
            true,
        )
    }

    /// Whether one more log stream may open while `open` are.
    pub fn check_log_streams(&self, open: usize) -> Result<(), LimitError> {
        if open as u64 >= self.max_log_streams {
            return Err(LimitError::LogStreams { open: open as u64 });
        }
        Ok(())
    }

    /// The most tasks the scheduler places on a node: this manager's
    /// per-node limit, lowered to what the node itself holds.
    pub fn tasks_on_node(&self, node: &shoal_api::pb::Node) -> u64 {
        node.description
            .as_ref()
            .and_then(shoal_api::capacity::tasks_per_node)
            .map_or(self.max_tasks_per_node, |n| n.min(self.max_tasks_per_node))
    }
}

fn check_size(
    kind: &'static str,
    name: &str,
    data: &[u8],
    limit: u64,
    empty_ok: bool,
) -> Result<(), LimitError> {
    if data.is_empty() && !empty_ok {
        return Err(LimitError::Empty {
            kind,
            name: name.to_owned(),
        });
    }
    if data.len() as u64 > limit {
        return Err(LimitError::Size {
            kind,
            name: name.to_owned(),
            size: data.len() as u64,
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
