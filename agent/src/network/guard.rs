//! What the data plane's guards must know, from a push and the node's own
//! addresses (see `datapath::guard`): which addresses are the cluster's
//! nodes (VXLAN comes only from them), which are this node's (containers
//! reach none of their ports but the DNS server's 53 at each network's
//! gateway), which ports of other nodes containers may not reach (the
//! managers' API, VXLAN), and which task ports the ingress network's VXLAN
//! may bring packets to (the targets of ports published in ingress mode,
//! for the tasks here).

use std::net::{Ipv4Addr, SocketAddr};

use shoal_agent_common::{ADDR_CLUSTER_NODE, ADDR_DNS, ADDR_LOCAL, VXLAN_PORT};
use shoal_api::pb::{AssignmentSet, PublishMode};

use crate::datapath::{guard::GuardTables, mesh::proto_number};

const TCP: u8 = 6;
const UDP: u8 = 17;

/// The guards' tables for this push. `own` holds the node's addresses (all
/// of its namespace's IPv4 addresses), `local` its underlay address.
pub fn tables(set: &AssignmentSet, own: &[Ipv4Addr], local: Ipv4Addr) -> GuardTables {
    let mut t = GuardTables::default();
    // Managers listen on 2377 unless told otherwise; the ports they
    // advertise are added below.
    t.node_ports.insert((shoal_api::DEFAULT_PORT, TCP));
    t.node_ports.insert((VXLAN_PORT, UDP));
    // Nor do they scrape the nodes' /metrics or open the managers'
    // visualizer (at their default ports).
    t.node_ports.insert((shoal_api::VISUALIZER_PORT, TCP));
    t.node_ports.insert((shoal_api::MANAGER_METRICS_PORT, TCP));
    t.node_ports.insert((shoal_api::AGENT_METRICS_PORT, TCP));
    for node in &set.nodes {
        if let Ok(addr) = node.addr.parse::<Ipv4Addr>() {
            *t.addrs.entry(addr).or_default() |= ADDR_CLUSTER_NODE;
        }
        if let Ok(api) = node.manager_addr.parse::<SocketAddr>() {
            t.node_ports.insert((api.port(), TCP));
            if let std::net::IpAddr::V4(v4) = api.ip()
                && !v4.is_unspecified()
            {
                *t.addrs.entry(v4).or_default() |= ADDR_CLUSTER_NODE;
            }
        }
    }
    let mut mine: Vec<Ipv4Addr> = own.iter().copied().filter(|a| !a.is_loopback()).collect();
    mine.push(local);
    mine.extend(set.ingress_addr.parse::<Ipv4Addr>().ok());
    for addr in mine {
        *t.addrs.entry(addr).or_default() |= ADDR_LOCAL;
    }
    let mut ingress = None;
    for network in &set.networks {
        let is_ingress = network.spec.as_ref().is_some_and(|s| s.ingress);
        if is_ingress {
            ingress = network.meta.as_ref().map(|m| m.id.as_str());
            continue;
        }
        if let Ok(gateway) = network.gateway.parse::<Ipv4Addr>() {
            *t.addrs.entry(gateway).or_default() |= ADDR_LOCAL | ADDR_DNS;
        }
    }
    let Some(ingress) = ingress else {
        return t;
    };
    let local = local.to_string();
    for p in &set.published {
        if p.mode() != PublishMode::Ingress {
            continue; // host mode never crosses VXLAN
        }
        let (Some(proto), Ok(port)) = (proto_number(&p.protocol), u16::try_from(p.target_port))
        else {
            continue;
        };
        // Every task of the service here, running or not: a stopping
        // task's connections finish.
        for e in set.endpoints.iter().filter(|e| {
            e.network_id == ingress && e.service_id == p.service_id && e.node_addr == local
        }) {
            if let Ok(addr) = e.addr.parse::<Ipv4Addr>() {
                t.targets.insert((addr, port, proto));
                if p.direct_server_return {
                    t.direct_return
                        .insert((addr, port, proto), p.published_port as u16);
                }
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::{ClusterNode, Meta, Network, NetworkSpec, PublishedPort, TaskEndpoint};

    fn network(id: &str, gateway: &str, ingress: bool) -> Network {
        Network {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(NetworkSpec {
                ingress,
                ..Default::default()
            }),
            gateway: gateway.into(),
            ..Default::default()
        }
    }

    fn endpoint(net: &str, service: &str, addr: &str, node: &str) -> TaskEndpoint {
        TaskEndpoint {
            network_id: net.into(),
            task_id: format!("{service}-{addr}"),
            service_id: service.into(),
            addr: addr.into(),
            node_addr: node.into(),
            running: false,
            draining: false,
        }
    }

    #[test]
    fn nodes_own_addresses_gateways_and_published_targets() {
        let set = AssignmentSet {
            nodes: vec![
                ClusterNode {
                    addr: "192.0.2.11".into(),
                    manager_addr: "192.0.2.11:2377".into(),
                },
                ClusterNode {
                    addr: "192.0.2.12".into(),
                    manager_addr: "10.9.9.9:4242".into(),
                },
                ClusterNode {
                    addr: "not an address".into(),
                    manager_addr: String::new(),
                },
            ],
            networks: vec![
                network("ing", "198.18.0.1", true),
                network("app", "198.18.1.1", false),
            ],
            ingress_addr: "198.18.0.9".into(),
            endpoints: vec![
                endpoint("ing", "web", "198.18.0.3", "192.0.2.11"),
                endpoint("ing", "web", "198.18.0.4", "192.0.2.12"),
                endpoint("app", "web", "198.18.1.3", "192.0.2.11"),
                endpoint("ing", "host", "198.18.0.5", "192.0.2.11"),
            ],
            published: vec![
                PublishedPort {
                    service_id: "web".into(),
                    protocol: "tcp".into(),
                    published_port: 8080,
                    target_port: 80,
                    mode: PublishMode::Ingress as i32,
                    direct_server_return: false,
                    ..Default::default()
                },
                PublishedPort {
                    service_id: "web".into(),
                    protocol: "udp".into(),
                    published_port: 8053,
                    target_port: 53,
                    mode: PublishMode::Ingress as i32,
                    direct_server_return: true,
                    ..Default::default()
                },
                PublishedPort {
                    service_id: "host".into(),
                    protocol: "tcp".into(),
                    published_port: 8081,
                    target_port: 80,
                    mode: PublishMode::Host as i32,
                    direct_server_return: false,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let own: Vec<Ipv4Addr> = ["127.0.0.1", "192.0.2.11", "172.17.0.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let t = tables(&set, &own, "192.0.2.11".parse().unwrap());
        let kind = |a: &str| t.addrs.get(&a.parse().unwrap()).copied().unwrap_or(0);
        assert_eq!(kind("192.0.2.11"), ADDR_CLUSTER_NODE | ADDR_LOCAL);
        assert_eq!(kind("192.0.2.12"), ADDR_CLUSTER_NODE);
        assert_eq!(
            kind("10.9.9.9"),
            ADDR_CLUSTER_NODE,
            "a manager's own API address"
        );
        assert_eq!(kind("172.17.0.1"), ADDR_LOCAL, "every address of the node");
        assert_eq!(kind("198.18.0.9"), ADDR_LOCAL, "its ingress address");
        assert_eq!(kind("198.18.1.1"), ADDR_LOCAL | ADDR_DNS, "a gateway: DNS");
        assert_eq!(
            kind("198.18.0.1"),
            0,
            "ingress has no DNS (its bridge, once made, is in `own`)"
        );
        assert_eq!(kind("127.0.0.1"), 0, "loopback is the container's own");
        assert_eq!(
            t.node_ports,
            [
                (2377, TCP),
                (4242, TCP),
                (4789, UDP),
                (2378, TCP),
                (9323, TCP),
                (9324, TCP)
            ]
            .into_iter()
            .collect()
        );
        let target = |a: &str, p, proto| (a.parse().unwrap(), p, proto);
        assert_eq!(
            t.targets,
            [target("198.18.0.3", 80, TCP), target("198.18.0.3", 53, UDP)]
                .into_iter()
                .collect(),
            "ingress-mode targets of the tasks here only"
        );
        assert_eq!(
            t.direct_return,
            [(target("198.18.0.3", 53, UDP), 8053)]
                .into_iter()
                .collect(),
            "targets with direct server return, with their published port"
        );
    }

    #[test]
    fn no_ingress_no_targets_and_no_nodes_no_cluster_addresses() {
        let set = AssignmentSet {
            networks: vec![network("app", "198.18.1.1", false)],
            ..Default::default()
        };
        let t = tables(&set, &[], "192.0.2.11".parse().unwrap());
        assert!(t.targets.is_empty());
        assert!(t.addrs.values().all(|k| k & ADDR_CLUSTER_NODE == 0));
    }
}
