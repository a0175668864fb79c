//! What a node needs to know of its networks: the networks its tasks use,
//! every task endpoint on them (its overlay's FDB and neighbour entries, and
//! its DNS answers), and the services reachable on them by name.

use std::collections::BTreeSet;

use shoal_api::{
    cidr::Ipv4Cidr,
    pb::{Network, ServiceRecord, Task, TaskEndpoint, TaskState},
};

use crate::{allocator::ipam::holds_addresses, store::State};

/// Swarm's stack label: a service `STACK_web` of stack `STACK` is also
/// `web` on the stack's networks.
pub const STACK_NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

pub struct NetworkView {
    pub networks: Vec<Network>,
    pub endpoints: Vec<TaskEndpoint>,
    pub services: Vec<ServiceRecord>,
}

fn addr_of(cidr: &str) -> Option<String> {
    cidr.parse::<Ipv4Cidr>().ok().map(|c| c.addr.to_string())
}

/// The view for a node running `local` tasks.
pub fn network_view(state: &State, local: &[Task]) -> NetworkView {
    let ids: BTreeSet<&str> = local
        .iter()
        .flat_map(|t| &t.networks)
        .map(|n| n.network_id.as_str())
        .collect();
    let networks = ids
        .iter()
        .filter_map(|id| state.networks.get(*id).cloned())
        .collect();
    let mut endpoints = Vec::new();
    for task in state.tasks.values() {
        if task.node_id.is_empty() || !holds_addresses(task) {
            continue;
        }
        let observed = task.status.as_ref().map(|s| s.state()).unwrap_or_default();
        if observed < TaskState::Assigned {
            continue;
        }
        let node_addr = state
            .nodes
            .get(&task.node_id)
            .and_then(|n| n.status.as_ref())
            .map(|s| s.addr.clone())
            .unwrap_or_default();
        for attachment in task
            .networks
            .iter()
            .filter(|a| ids.contains(a.network_id.as_str()))
        {
            for addr in attachment.addresses.iter().filter_map(|a| addr_of(a)) {
                endpoints.push(TaskEndpoint {
                    network_id: attachment.network_id.clone(),
                    task_id: task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
                    service_id: task.service_id.clone(),
                    addr,
                    node_addr: node_addr.clone(),
                    running: observed == TaskState::Running
                        && task.desired_state() == TaskState::Running,
                });
            }
        }
    }
    let mut services = Vec::new();
    for (service_id, service) in &state.services {
        let spec = service.spec.clone().unwrap_or_default();
        let short = spec
            .labels
            .get(STACK_NAMESPACE_LABEL)
            .and_then(|stack| spec.name.strip_prefix(&format!("{stack}_")))
            .map(str::to_owned);
        for (network_id, aliases) in crate::allocator::service_networks(state, &spec) {
            if !ids.contains(network_id.as_str()) {
                continue;
            }
            let is_ingress = state
                .networks
                .get(&network_id)
                .and_then(|n| n.spec.as_ref())
                .is_some_and(|s| s.ingress);
            if is_ingress {
                continue; // the routing mesh's network has no names
            }
            let mut names = vec![spec.name.clone()];
            names.extend(short.clone());
            names.extend(aliases);
            names.dedup();
            let vip = service
                .endpoint
                .iter()
                .flat_map(|e| &e.virtual_ips)
                .find(|v| v.network_id == network_id)
                .and_then(|v| addr_of(&v.addr))
                .unwrap_or_default();
            services.push(ServiceRecord {
                service_id: service_id.clone(),
                network_id,
                names,
                vip,
            });
        }
    }
    NetworkView {
        networks,
        endpoints,
        services,
    }
}
