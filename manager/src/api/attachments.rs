//! `network connect|disconnect`: a container some node's engine runs (a
//! plain `docker run` one) plugged into an attachable network, the way
//! swarmkit does it with network attachment tasks: a task of no service,
//! on that node, holding the container's address on the network. The node's
//! agent plugs a veth into the container; every node learns the endpoint
//! (FDB, neighbours, DNS by the container's name) as it learns tasks'.

use shoal_api::pb::{
    ConnectContainerRequest, DisconnectContainerRequest, Kind, Meta, Network, NetworkAttachment,
    NetworkAttachmentConfig, NetworkAttachmentSpec, Node, Task, TaskSpec, TaskState, TaskStatus,
};
use tonic::Status;

use crate::{
    allocator::{Ipam, ipam::holds_addresses},
    manager::Manager,
    store::{Batch, State},
};

/// The container a task plugs, if it is an attachment task.
pub fn container_of(task: &Task) -> Option<&str> {
    task.spec
        .as_ref()?
        .attachment
        .as_ref()
        .map(|a| a.container.as_str())
}

fn network<'a>(state: &'a State, query: &str) -> Result<&'a Network, Status> {
    state
        .networks
        .get(query)
        .or_else(|| {
            state
                .networks
                .values()
                .find(|n| n.spec.as_ref().is_some_and(|s| s.name == query))
        })
        .ok_or_else(|| Status::not_found(format!("network {query} not found")))
}

fn node<'a>(state: &'a State, query: &str) -> Result<&'a Node, Status> {
    if query.is_empty() {
        return Err(Status::invalid_argument(
            "name the node whose engine runs the container",
        ));
    }
    let by_name: Vec<&Node> = state
        .nodes
        .values()
        .filter(|n| n.description.as_ref().is_some_and(|d| d.hostname == query))
        .collect();
    match (state.nodes.get(query), by_name.as_slice()) {
        (Some(n), _) => Ok(n),
        (None, [n]) => Ok(n),
        (None, []) => Err(Status::not_found(format!("node {query} not found"))),
        (None, _) => Err(Status::invalid_argument(format!(
            "node {query} is ambiguous ({} nodes have that hostname): use its ID",
            by_name.len()
        ))),
    }
}

fn id_of(meta: &Option<Meta>) -> &str {
    meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// The live attachment of `container` on `node` to `network`, if any.
fn attached<'a>(
    state: &'a State,
    node_id: &str,
    container: &str,
    network_id: &str,
) -> Option<&'a Task> {
    state.tasks.values().find(|t| {
        t.node_id == node_id
            && container_of(t) == Some(container)
            && holds_addresses(t)
            && t.desired_state() <= TaskState::Running
            && t.networks.iter().any(|n| n.network_id == network_id)
    })
}

/// The attachment task for `request`, its address allocated, written.
pub async fn connect(manager: &Manager, request: ConnectContainerRequest) -> Result<Task, Status> {
    if request.container.is_empty() {
        return Err(Status::invalid_argument("name the container to connect"));
    }
    manager
        .update(|state| -> Result<_, Status> {
            let net = network(state, &request.network)?;
            let spec = net.spec.clone().unwrap_or_default();
            let network_id = id_of(&net.meta).to_owned();
            if spec.ingress || spec.config_only || !spec.attachable {
                return Err(Status::permission_denied(format!(
                    "Could not attach to network {}: network {} not manually attachable (create it with --attachable)",
                    request.network, spec.name
                )));
            }
            let node = node(state, &request.node)?;
            let node_id = id_of(&node.meta).to_owned();
            if attached(state, &node_id, &request.container, &network_id).is_some() {
                return Err(Status::already_exists(format!(
                    "endpoint with name {} already exists in network {}",
                    request.container, spec.name
                )));
            }
            let mut ipam = Ipam::from_state(state);
            let address = if request.ip.is_empty() {
                ipam.address(&network_id)
            } else {
                let ip = request.ip.parse().map_err(|_| {
                    Status::invalid_argument(format!(
                        "invalid IPv4 address {:?} (IPv6 is not supported)",
                        request.ip
                    ))
                })?;
                ipam.claim(&network_id, ip)
            }
            .map_err(|e| Status::invalid_argument(format!("network {}: {e}", spec.name)))?;
            let now = shoal_api::now_ms();
            let task = Task {
                meta: Some(Meta {
                    id: shoal_api::new_id(),
                    ..Default::default()
                }),
                node_id,
                service_name: request.container.clone(),
                spec: Some(TaskSpec {
                    attachment: Some(NetworkAttachmentSpec {
                        container: request.container.clone(),
                    }),
                    networks: vec![NetworkAttachmentConfig {
                        target: network_id.clone(),
                        aliases: request.aliases.clone(),
                    }],
                    ..Default::default()
                }),
                status: Some(TaskStatus {
                    timestamp: now,
                    state: TaskState::Assigned as i32,
                    message: "network attachment assigned to its node".into(),
                    ..Default::default()
                }),
                desired_state: TaskState::Running as i32,
                networks: vec![NetworkAttachment {
                    network_id,
                    addresses: vec![address],
                    aliases: request.aliases.clone(),
                }],
                ..Default::default()
            };
            let mut batch = Batch::default();
            batch.put_task(task.clone());
            Ok(Some((batch, task)))
        })
        .await?
        .ok_or_else(|| Status::internal("the attachment was not written"))
}

/// Unplugs: the agent takes the veth out and reports; a node that is gone
/// (or `force`) lets it go at once.
pub async fn disconnect(
    manager: &Manager,
    request: DisconnectContainerRequest,
) -> Result<(), Status> {
    manager
        .update(|state| -> Result<_, Status> {
            let net = network(state, &request.network)?;
            let name = net
                .spec
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            let network_id = id_of(&net.meta).to_owned();
            let node_id = match node(state, &request.node) {
                Ok(n) => id_of(&n.meta).to_owned(),
                // A node that left took its containers: only a forced
                // disconnect can still name it, by id.
                Err(_) if request.force => request.node.clone(),
                Err(e) => return Err(e),
            };
            let task =
                attached(state, &node_id, &request.container, &network_id).ok_or_else(|| {
                    Status::not_found(format!(
                        "container {} is not connected to network {name}",
                        request.container
                    ))
                })?;
            let mut batch = Batch::default();
            let node_gone = !state.nodes.contains_key(&node_id);
            if node_gone || request.force {
                batch.delete(
                    Kind::Task,
                    id_of(&task.meta),
                    task.meta.as_ref().map_or(0, |m| m.version),
                );
            } else {
                let mut task = task.clone();
                task.desired_state = TaskState::Remove as i32;
                batch.put_task(task);
            }
            Ok(Some((batch, ())))
        })
        .await?;
    Ok(())
}

/// How long an attachment that ended stays: `network connect` reads why
/// the node refused it (no such container) from it.
pub const KEEP_ENDED_MS: i64 = 10_000;

/// What the orchestrator does with attachment tasks: forget the ones whose
/// node is gone at once, and the ones that ended (their container went
/// away, the node refused them, they were unplugged) after a while.
/// Returns them, and when the next one is due.
pub fn finished(state: &State, now: i64) -> (Vec<&Task>, Option<i64>) {
    let mut due = Vec::new();
    let mut next: Option<i64> = None;
    for task in state.tasks.values().filter(|t| container_of(t).is_some()) {
        if !state.nodes.contains_key(&task.node_id) {
            due.push(task);
            continue;
        }
        let Some(status) = task.status.as_ref().filter(|s| s.state().is_terminal()) else {
            continue;
        };
        let at = status.timestamp + KEEP_ENDED_MS;
        if at <= now {
            due.push(task);
        } else {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    (due, next)
}

#[cfg(test)]
mod tests {
    use shoal_api::pb::{NetworkSpec, NodeDescription};

    use super::*;

    fn state() -> State {
        let mut state = State::default();
        state.networks.insert(
            "net".into(),
            Network {
                meta: Some(Meta {
                    id: "net".into(),
                    ..Default::default()
                }),
                spec: Some(NetworkSpec {
                    name: "front".into(),
                    attachable: true,
                    ..Default::default()
                }),
                vxlan_id: 4097,
                subnet: "10.9.0.0/24".into(),
                gateway: "10.9.0.1".into(),
                ..Default::default()
            },
        );
        state.nodes.insert(
            "n1".into(),
            Node {
                meta: Some(Meta {
                    id: "n1".into(),
                    ..Default::default()
                }),
                description: Some(NodeDescription {
                    hostname: "host1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        state
    }

    fn task(state_: TaskState, node: &str) -> Task {
        Task {
            node_id: node.into(),
            spec: Some(TaskSpec {
                attachment: Some(NetworkAttachmentSpec {
                    container: "c1".into(),
                }),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: state_ as i32,
                ..Default::default()
            }),
            desired_state: TaskState::Running as i32,
            networks: vec![NetworkAttachment {
                network_id: "net".into(),
                addresses: vec!["10.9.0.2/24".into()],
                aliases: vec![],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn nodes_and_networks_are_found_by_name_or_id() {
        let state = state();
        assert!(node(&state, "host1").is_ok() && node(&state, "n1").is_ok());
        assert_eq!(
            node(&state, "nope").unwrap_err().code(),
            tonic::Code::NotFound
        );
        assert!(
            node(&state, "")
                .unwrap_err()
                .message()
                .contains("name the node")
        );
        assert!(network(&state, "front").is_ok() && network(&state, "net").is_ok());
    }

    #[test]
    fn one_live_attachment_per_container_node_and_network() {
        let mut state = state();
        state
            .tasks
            .insert("t".into(), task(TaskState::Running, "n1"));
        assert!(attached(&state, "n1", "c1", "net").is_some());
        assert!(attached(&state, "n1", "c2", "net").is_none());
        state
            .tasks
            .insert("t".into(), task(TaskState::Shutdown, "n1"));
        assert!(
            attached(&state, "n1", "c1", "net").is_none(),
            "a stopped one frees the name"
        );
    }

    #[test]
    fn attachments_end_with_their_container_or_their_node() {
        let mut state = state();
        state
            .tasks
            .insert("live".into(), task(TaskState::Running, "n1"));
        let mut stopped = task(TaskState::Failed, "n1");
        stopped.status.as_mut().unwrap().timestamp = 1_000;
        state.tasks.insert("stopped".into(), stopped);
        state
            .tasks
            .insert("orphan".into(), task(TaskState::Running, "gone"));
        state.tasks.insert("service".into(), Task::default());
        // An ended one stays a while (connect reads why); one whose node
        // left goes at once.
        let (done, next) = finished(&state, 1_000 + KEEP_ENDED_MS - 1);
        let nodes: Vec<&str> = done.iter().map(|t| t.node_id.as_str()).collect();
        assert_eq!(nodes, ["gone"]);
        assert_eq!(next, Some(1_000 + KEEP_ENDED_MS));
        let (done, next) = finished(&state, 1_000 + KEEP_ENDED_MS);
        let mut nodes: Vec<&str> = done.iter().map(|t| t.node_id.as_str()).collect();
        nodes.sort();
        assert_eq!(nodes, ["gone", "n1"]);
        assert_eq!(next, None);
    }
}
