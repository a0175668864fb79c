//! `shoal network inspect`: `docker network inspect`'s shape, and with
//! `-v` the network's services, their tasks and the nodes they run on
//! (what Docker's verbose output shows of a swarm network).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shoal_api::pb::{Network, Node, Service, Task};

use crate::output::rfc3339;

fn no_prefix(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// `docker network inspect`'s shape.
pub fn inspect_json(n: &Network) -> Value {
    let meta = n.meta.clone().unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    // A config-only network has its settings only in its spec.
    let blocks = if spec.config_only {
        spec.ipam_configs.clone()
    } else {
        shoal_api::network::blocks(n)
    };
    let config: Vec<Value> = blocks
        .iter()
        .map(|b| {
            let mut c = json!({ "Subnet": b.subnet });
            if !b.ip_range.is_empty() {
                c["IPRange"] = json!(b.ip_range);
            }
            if !b.gateway.is_empty() {
                c["Gateway"] = json!(b.gateway);
            }
            if !b.aux_addresses.is_empty() {
                c["AuxiliaryAddresses"] = json!(b.aux_addresses);
            }
            c
        })
        .collect();
    let mut options = serde_json::Map::new();
    if n.vxlan_id != 0 {
        options.insert(
            "com.docker.network.driver.overlay.vxlanid_list".into(),
            json!(n.vxlan_id.to_string()),
        );
    }
    for (k, v) in &spec.options {
        options.insert(k.clone(), json!(v));
    }
    json!({
        "Name": spec.name,
        "Id": meta.id,
        "Created": rfc3339(meta.created_at),
        "Scope": if spec.config_only { "local" } else { "swarm" },
        "Driver": spec.driver,
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": if spec.ipam_options.is_empty() { Value::Null } else { json!(spec.ipam_options) },
            "Config": config,
        },
        "Internal": spec.internal,
        "Attachable": spec.attachable,
        "Ingress": spec.ingress,
        "ConfigFrom": { "Network": spec.config_from },
        "ConfigOnly": spec.config_only,
        "Options": options,
        "Labels": spec.labels,
    })
}

/// `-v`: every service on the network with its VIP and its tasks there
/// (their address and node), and the nodes that have the network.
pub fn verbose(
    network: &Network,
    services: &[Service],
    tasks: &[Task],
    nodes: &[Node],
) -> (Value, Value) {
    let id = network.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    let node_addr = |node_id: &str| -> (String, String) {
        nodes
            .iter()
            .find(|n| n.meta.as_ref().is_some_and(|m| m.id == node_id))
            .map(|n| {
                (
                    n.description.clone().unwrap_or_default().hostname,
                    n.status.clone().unwrap_or_default().addr,
                )
            })
            .unwrap_or_default()
    };
    let mut by_service: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut peers: BTreeMap<String, String> = BTreeMap::new();
    for task in tasks {
        let live = task
            .status
            .as_ref()
            .is_some_and(|s| !s.state().is_terminal());
        let Some(attachment) = task.networks.iter().find(|a| a.network_id == id) else {
            continue;
        };
        if !live || task.node_id.is_empty() {
            continue;
        }
        let (hostname, addr) = node_addr(&task.node_id);
        peers.insert(hostname, addr.clone());
        let task_id = task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
        // A connected container shows by its name, as Docker lists it.
        let name = match task.spec.as_ref().and_then(|s| s.attachment.as_ref()) {
            Some(attachment) => attachment.container.clone(),
            None => shoal_api::template::task_name(task),
        };
        by_service
            .entry(task.service_id.clone())
            .or_default()
            .push(json!({
                "Name": name,
                "EndpointID": task_id,
                "EndpointIP": attachment.addresses.first().map(|a| no_prefix(a)).unwrap_or(""),
                "Info": { "Host IP": addr },
            }));
    }
    let mut out = serde_json::Map::new();
    for service in services {
        let service_id = service.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
        let vip = service
            .endpoint
            .iter()
            .flat_map(|e| &e.virtual_ips)
            .find(|v| v.network_id == id)
            .map(|v| no_prefix(&v.addr).to_owned());
        let tasks = by_service.remove(service_id);
        if vip.is_none() && tasks.is_none() {
            continue;
        }
        let name = service
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let ports: Vec<String> = service
            .spec
            .iter()
            .flat_map(|s| &s.endpoint)
            .flat_map(|e| &e.ports)
            .map(|p| format!("Target: {}, Publish: {}", p.target_port, p.published_port))
            .collect();
        out.insert(
            name,
            json!({
                "VIP": vip.unwrap_or_default(),
                "Ports": ports,
                "LocalLBIndex": 0,
                "Tasks": tasks.unwrap_or_default(),
            }),
        );
    }
    // Tasks of no service (containers connected by `network connect`):
    // under their own names, as Docker lists them.
    for (_, tasks) in by_service {
        for task in tasks {
            let name = task["Name"].as_str().unwrap_or("").to_owned();
            out.insert(
                name,
                json!({ "VIP": "", "Ports": [], "LocalLBIndex": 0, "Tasks": [task] }),
            );
        }
    }
    let peers: Vec<Value> = peers
        .into_iter()
        .map(|(name, ip)| json!({ "Name": name, "IP": ip }))
        .collect();
    (Value::Object(out), Value::Array(peers))
}

#[cfg(test)]
mod tests {
    use shoal_api::pb::{
        Endpoint, IpamConfig, Meta, NetworkAttachment, NetworkSpec, NodeDescription, NodeStatus,
        ServiceSpec, TaskState, TaskStatus, VirtualIp,
    };

    use super::*;

    fn meta(id: &str) -> Option<Meta> {
        Some(Meta {
            id: id.into(),
            ..Default::default()
        })
    }

    fn network() -> Network {
        Network {
            meta: meta("net"),
            spec: Some(NetworkSpec {
                name: "front".into(),
                driver: "overlay".into(),
                ipam_options: [("o".to_string(), "1".to_string())].into(),
                ..Default::default()
            }),
            vxlan_id: 4097,
            subnet: "10.1.0.0/24".into(),
            gateway: "10.1.0.1".into(),
            subnets: vec![
                IpamConfig {
                    subnet: "10.1.0.0/24".into(),
                    gateway: "10.1.0.1".into(),
                    ..Default::default()
                },
                IpamConfig {
                    subnet: "10.2.0.0/24".into(),
                    ip_range: "10.2.0.128/25".into(),
                    gateway: "10.2.0.1".into(),
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn every_subnet_shows_in_ipam_config() {
        let json = inspect_json(&network());
        let config = json["IPAM"]["Config"].as_array().unwrap();
        assert_eq!(config.len(), 2);
        assert_eq!(config[1]["IPRange"], "10.2.0.128/25");
        assert!(config[0].get("IPRange").is_none());
        assert_eq!(json["IPAM"]["Options"]["o"], "1");
        assert_eq!(
            json["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
            "4097"
        );
        assert_eq!(
            (json["Scope"].as_str(), json["ConfigOnly"].as_bool()),
            (Some("swarm"), Some(false))
        );
    }

    #[test]
    fn verbose_lists_services_their_tasks_and_the_nodes() {
        let service = Service {
            meta: meta("s1"),
            spec: Some(ServiceSpec {
                name: "web".into(),
                ..Default::default()
            }),
            endpoint: Some(Endpoint {
                virtual_ips: vec![VirtualIp {
                    network_id: "net".into(),
                    addr: "10.1.0.2/24".into(),
                }],
            }),
            ..Default::default()
        };
        let task = |id: &str, state: TaskState| Task {
            meta: meta(id),
            service_id: "s1".into(),
            service_name: "web".into(),
            slot: 1,
            node_id: "n1".into(),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            networks: vec![NetworkAttachment {
                network_id: "net".into(),
                addresses: vec!["10.1.0.3/24".into()],
                aliases: vec![],
            }],
            ..Default::default()
        };
        let node = Node {
            meta: meta("n1"),
            description: Some(NodeDescription {
                hostname: "node-1".into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addr: "192.0.2.11".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (services, peers) = verbose(
            &network(),
            &[service],
            &[
                task("t1", TaskState::Running),
                task("t0", TaskState::Shutdown),
            ],
            &[node],
        );
        let web = &services["web"];
        assert_eq!(web["VIP"], "10.1.0.2");
        let tasks = web["Tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 1, "stopped tasks hold no endpoint: {tasks:?}");
        assert_eq!(tasks[0]["EndpointIP"], "10.1.0.3");
        assert_eq!(tasks[0]["Info"]["Host IP"], "192.0.2.11");
        assert_eq!(peers, json!([{ "Name": "node-1", "IP": "192.0.2.11" }]));
    }
}
