//! What a node needs to know of its networks: the networks its tasks use,
//! every task endpoint on them (its overlay's FDB and neighbour entries, and
//! its DNS answers), and the services reachable on them by name.

use std::collections::{BTreeSet, HashMap};

use shoal_api::{
    cidr::Ipv4Cidr,
    pb::{
        ClusterNode, Network, PublishedPort, ServiceRecord, Task, TaskEndpoint, TaskHealth,
        TaskState,
    },
};

use crate::{allocator::ipam::holds_addresses, api::attachments::container_of, store::State};

/// Swarm's stack label: a service `STACK_web` of stack `STACK` is also
/// `web` on the stack's networks.
pub const STACK_NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

pub struct NetworkView {
    pub networks: Vec<Network>,
    pub endpoints: Vec<TaskEndpoint>,
    pub services: Vec<ServiceRecord>,
    pub ingress_addr: String,
    pub published: Vec<PublishedPort>,
}

/// Every published port, by service.
fn published_ports(state: &State) -> Vec<PublishedPort> {
    let mut out = Vec::new();
    for (id, service) in &state.services {
        let ports = service
            .spec
            .as_ref()
            .and_then(|s| s.endpoint.as_ref())
            .map(|e| e.ports.as_slice())
            .unwrap_or_default();
        for port in ports.iter().filter(|p| p.published_port != 0) {
            out.push(PublishedPort {
                service_id: id.clone(),
                protocol: port.protocol.clone(),
                published_port: port.published_port,
                target_port: port.target_port,
                mode: port.publish_mode,
                allow: port.allow.clone(),
                direct_server_return: port.direct_server_return,
                proxy_protocol: port.proxy_protocol.clone(),
            });
        }
    }
    out
}

/// Every node's advertised address and its manager's API address, sorted
/// (a node list that did not change pushes nothing new). Down nodes stay:
/// they come back with the same address; removed ones go.
pub fn cluster_nodes(state: &State) -> Vec<ClusterNode> {
    let mut nodes: Vec<ClusterNode> = state
        .nodes
        .values()
        .filter_map(|node| {
            let addr = node.status.as_ref().map(|s| s.addr.clone())?;
            let manager_addr = node
                .manager_status
                .as_ref()
                .map(|m| m.addr.clone())
                .unwrap_or_default();
            (!addr.is_empty() || !manager_addr.is_empty())
                .then_some(ClusterNode { addr, manager_addr })
        })
        .collect();
    nodes.sort_by(|a, b| (&a.addr, &a.manager_addr).cmp(&(&b.addr, &b.manager_addr)));
    nodes.dedup();
    nodes
}

/// Whether a task takes new connections (mesh, VIP, DNS): running, meant
/// to run, and not failing its health check. One with a check reports
/// Running only after its first passing check.
pub fn in_rotation(task: &Task) -> bool {
    let status = task.status.clone().unwrap_or_default();
    status.state() == TaskState::Running
        && task.desired_state() == TaskState::Running
        && status.health() != TaskHealth::Failing
}

fn addr_of(cidr: &str) -> Option<String> {
    cidr.parse::<Ipv4Cidr>().ok().map(|c| c.addr.to_string())
}

/// What every node's view is cut from, found in one scan of the state and
/// shared by every node's set at that state: without it, each of a
/// thousand nodes scanned every task and service on each change.
#[derive(Default)]
pub struct NetworkIndex {
    published: Vec<PublishedPort>,
    ingress: Option<String>,
    /// Every endpoint by network: task endpoints, and on the ingress
    /// network each node's own address.
    endpoints: HashMap<String, Vec<TaskEndpoint>>,
    /// Every name record by network (services and connected containers).
    services: HashMap<String, Vec<ServiceRecord>>,
}

impl NetworkIndex {
    pub fn of(state: &State) -> Self {
        let ingress = crate::allocator::ingress_network(state).map(str::to_owned);
        let mut endpoints: HashMap<String, Vec<TaskEndpoint>> = HashMap::new();
        // Only tasks on a network have endpoints (an index, not a scan).
        for task in state.tasks_on_networks() {
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
            let task_id = task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
            // A connected container is a "service" of its own for DNS: its
            // name answers its address (see `attachment_records`).
            let service_id = if container_of(task).is_some() {
                task_id.clone()
            } else {
                task.service_id.clone()
            };
            for attachment in &task.networks {
                for addr in attachment.addresses.iter().filter_map(|a| addr_of(a)) {
                    endpoints
                        .entry(attachment.network_id.clone())
                        .or_default()
                        .push(TaskEndpoint {
                            network_id: attachment.network_id.clone(),
                            task_id: task_id.clone(),
                            service_id: service_id.clone(),
                            addr,
                            node_addr: node_addr.clone(),
                            running: in_rotation(task),
                            draining: observed == TaskState::Running && !in_rotation(task),
                        });
                }
            }
        }
        // Each node's own ingress address: the mesh's replies come back to it.
        if let Some(ingress) = &ingress {
            for (id, node) in &state.nodes {
                let (Some(addr), Some(status)) =
                    (addr_of(&node.ingress_addr), node.status.as_ref())
                else {
                    continue;
                };
                endpoints
                    .entry(ingress.clone())
                    .or_default()
                    .push(TaskEndpoint {
                        network_id: ingress.clone(),
                        task_id: format!("node:{id}"),
                        service_id: String::new(),
                        addr,
                        node_addr: status.addr.clone(),
                        running: false,
                        draining: false,
                    });
            }
        }
        let mut services: HashMap<String, Vec<ServiceRecord>> = HashMap::new();
        for (service_id, service) in &state.services {
            // Most services of a big cluster may be on no network: they
            // cost one look here (this runs at every scan a node's write
            // touches), no copy.
            let Some(spec) = service.spec.as_ref() else {
                continue;
            };
            let on = crate::allocator::service_networks(state, spec);
            if on.is_empty() {
                continue;
            }
            let short = spec
                .labels
                .get(STACK_NAMESPACE_LABEL)
                .and_then(|stack| spec.name.strip_prefix(&format!("{stack}_")))
                .map(str::to_owned);
            for (network_id, aliases) in on {
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
                services
                    .entry(network_id.clone())
                    .or_default()
                    .push(ServiceRecord {
                        service_id: service_id.clone(),
                        network_id,
                        names,
                        vip,
                    });
            }
        }
        for record in attachment_records(state) {
            services
                .entry(record.network_id.clone())
                .or_default()
                .push(record);
        }
        Self {
            published: published_ports(state),
            ingress,
            endpoints,
            services,
        }
    }
}

impl NetworkIndex {
    /// Each network's endpoints and name records, fingerprinted (see
    /// [`super::digest`]).
    pub fn digests(&self) -> HashMap<String, u64> {
        let mut out: HashMap<String, u64> = HashMap::new();
        for (id, endpoints) in &self.endpoints {
            out.insert(id.clone(), super::digest::of_messages(endpoints));
        }
        for (id, records) in &self.services {
            let records = super::digest::of_messages(records);
            let entry = out.entry(id.clone()).or_default();
            *entry = entry.rotate_left(1) ^ records;
        }
        out
    }

    /// The network every node has (see [`view`]): the ingress network while
    /// any port is published.
    /// Whether there is no ingress network, no endpoint or name record on
    /// any network, and no published port: a node's addresses are then in
    /// no one's set but the node list.
    pub fn is_empty(&self) -> bool {
        self.ingress.is_none()
            && self.endpoints.is_empty()
            && self.services.is_empty()
            && self.published.is_empty()
    }

    pub fn shared_ingress(&self) -> Option<&str> {
        self.ingress
            .as_deref()
            .filter(|_| !self.published.is_empty())
    }

    pub fn published(&self) -> &[PublishedPort] {
        &self.published
    }
}

/// The view for the node `node_id` running `local` tasks, cut from an index
/// of the same state. Every node has the ingress network while any port is
/// published: a node with no task of a service still answers its port.
pub fn view(
    index: &NetworkIndex,
    state: &State,
    node_id: &str,
    local: &BTreeSet<&str>,
) -> NetworkView {
    let ingress = index.ingress.as_deref();
    let mut ids = local.clone();
    if !index.published.is_empty()
        && let Some(ingress) = ingress
    {
        ids.insert(ingress);
    }
    let networks = ids
        .iter()
        .filter_map(|id| state.networks.get(*id).cloned())
        .collect();
    let endpoints = on_networks(&index.endpoints, &ids);
    let services = on_networks(&index.services, &ids);
    let ingress_addr = state
        .nodes
        .get(node_id)
        .and_then(|n| addr_of(&n.ingress_addr))
        .filter(|_| ingress.is_some_and(|i| ids.contains(i)))
        .unwrap_or_default();
    NetworkView {
        networks,
        endpoints,
        services,
        ingress_addr,
        published: index.published.clone(),
    }
}

/// The items of `by` on the networks `ids`.
fn on_networks<T: Clone>(by: &HashMap<String, Vec<T>>, ids: &BTreeSet<&str>) -> Vec<T> {
    ids.iter()
        .filter_map(|id| by.get(*id))
        .flatten()
        .cloned()
        .collect()
}

/// DNS for containers connected to networks: the name given to `network
/// connect` (and its aliases) answers the container's address.
fn attachment_records(state: &State) -> Vec<ServiceRecord> {
    let mut out = Vec::new();
    for task in state.tasks_on_networks().filter(|t| holds_addresses(t)) {
        let Some(container) = container_of(task) else {
            continue;
        };
        let task_id = task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
        for attachment in &task.networks {
            let mut names = vec![container.to_owned()];
            names.extend(attachment.aliases.iter().cloned());
            names.dedup();
            out.push(ServiceRecord {
                service_id: task_id.clone(),
                network_id: attachment.network_id.clone(),
                names,
                vip: String::new(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::{ManagerStatus, Node, NodeStatus};

    fn node(addr: &str, manager: Option<&str>) -> Node {
        Node {
            status: Some(NodeStatus {
                addr: addr.into(),
                ..Default::default()
            }),
            manager_status: manager.map(|m| ManagerStatus {
                addr: m.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_running_healthy_tasks_take_connections_and_stopping_ones_drain() {
        use shoal_api::pb::TaskStatus;
        let task = |state: TaskState, health: TaskHealth, desired: TaskState| Task {
            status: Some(TaskStatus {
                state: state as i32,
                health: health as i32,
                ..Default::default()
            }),
            desired_state: desired as i32,
            ..Default::default()
        };
        let (run, start, stop) = (TaskState::Running, TaskState::Starting, TaskState::Shutdown);
        for (t, rotation, why) in [
            (
                task(run, TaskHealth::None, run),
                true,
                "no check: running is enough",
            ),
            (task(run, TaskHealth::Healthy, run), true, "passing"),
            (
                task(run, TaskHealth::Failing, run),
                false,
                "its last check failed",
            ),
            (
                task(start, TaskHealth::Starting, run),
                false,
                "no check passed yet",
            ),
            (task(run, TaskHealth::Healthy, stop), false, "being stopped"),
        ] {
            assert_eq!(in_rotation(&t), rotation, "{why}");
        }
    }

    #[test]
    fn every_node_with_an_address_is_listed_once_in_order() {
        let mut state = State::default();
        state
            .nodes
            .insert("b".into(), node("192.0.2.12", Some("192.0.2.12:2377")));
        state.nodes.insert("a".into(), node("192.0.2.13", None));
        state.nodes.insert("c".into(), node("", None));
        state.nodes.insert("d".into(), Node::default());
        let listed = cluster_nodes(&state);
        let pairs: Vec<(&str, &str)> = listed
            .iter()
            .map(|n| (n.addr.as_str(), n.manager_addr.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("192.0.2.12", "192.0.2.12:2377"), ("192.0.2.13", "")],
            "nodes that never reported an address are left out"
        );
    }
}
