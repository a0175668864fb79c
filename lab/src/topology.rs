//! Names, addresses and MACs of the lab's hosts. The lab only ever uses
//! 192.0.2.0/24 (TEST-NET-1) for its underlay and client.

use std::net::Ipv4Addr;

/// The namespace holding the underlay bridge. Never the root namespace:
/// Docker's br_netfilter and FORWARD DROP there would drop bridged traffic.
pub const WAN_NS: &str = "shoal-wan";
pub const WAN_BRIDGE: &str = "br-wan";
pub const CLIENT_NS: &str = "shoal-client";
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// The client host's kernel picks ephemeral ports from here up (IANA's
/// dynamic range) rather than from Linux's 32768: tests bind fixed client
/// ports below it (a flow is a client address and port) while other tests
/// share the host, and a fixed port inside the kernel's range could already
/// be some other test's ephemeral one (`EADDRINUSE`, seen in CI).
pub const CLIENT_EPHEMERAL_PORTS_START: u16 = 49152;
/// The upstream resolver (dnsmasq), a second address of the client host.
pub const UPSTREAM_DNS_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
pub const PREFIX_LEN: u8 = 24;
/// The fake external zone the upstream resolver serves.
pub const UPSTREAM_ZONE: &str = "upstream.test";
/// Names of the upstream zone and their addresses (in the lab's range, unrouted).
pub const UPSTREAM_RECORDS: [(&str, Ipv4Addr); 2] = [
    ("www.upstream.test", Ipv4Addr::new(192, 0, 2, 200)),
    ("api.upstream.test", Ipv4Addr::new(192, 0, 2, 201)),
];
/// Nodes are numbered from 1; the last octet leaves room below the client.
pub const MAX_NODES: usize = 9;

/// One host of the lab: a network namespace with `eth0` on the underlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// Short name: `n1`, `n2`, …, or `client`.
    pub name: String,
    pub netns: String,
    pub addr: Ipv4Addr,
}

impl Host {
    pub fn node(index: usize) -> Host {
        assert!(
            (1..=MAX_NODES).contains(&index),
            "node index {index} out of 1..={MAX_NODES}"
        );
        Host {
            name: format!("n{index}"),
            netns: format!("shoal-n{index}"),
            addr: Ipv4Addr::new(192, 0, 2, 10 + index as u8),
        }
    }

    pub fn client() -> Host {
        Host {
            name: "client".into(),
            netns: CLIENT_NS.into(),
            addr: CLIENT_ADDR,
        }
    }

    /// A fixed MAC derived from the address, so neighbour entries can be
    /// written ahead of time (no ARP in the lab: packet counts stay exact).
    pub fn mac(&self) -> String {
        mac_of(self.addr)
    }

    /// The underlay bridge port of this host, in the WAN namespace.
    pub fn wan_port(&self) -> String {
        format!("wan-{}", self.name)
    }
}

pub fn mac_of(addr: Ipv4Addr) -> String {
    let [a, b, c, d] = addr.octets();
    format!("02:5e:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Every host of a lab with `nodes` nodes, client last.
pub fn hosts(nodes: usize) -> Vec<Host> {
    let mut all: Vec<Host> = (1..=nodes).map(Host::node).collect();
    all.push(Host::client());
    all
}

/// Finds a host by short name (`n2`, `client`) or namespace (`shoal-n2`).
pub fn host_named(name: &str, nodes: usize) -> Option<Host> {
    hosts(nodes)
        .into_iter()
        .find(|h| h.name == name || h.netns == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_sit_on_test_net_1() {
        assert_eq!(Host::node(1).addr, Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(Host::node(3).netns, "shoal-n3");
        assert_eq!(Host::client().addr, Ipv4Addr::new(192, 0, 2, 100));
    }

    #[test]
    fn macs_are_locally_administered_and_unique() {
        let macs: Vec<String> = hosts(MAX_NODES).iter().map(Host::mac).collect();
        assert_eq!(Host::node(1).mac(), "02:5e:c0:00:02:0b");
        let mut unique = macs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), macs.len());
    }

    #[test]
    fn hosts_are_found_by_either_name() {
        assert_eq!(host_named("n2", 3), Some(Host::node(2)));
        assert_eq!(host_named("shoal-client", 3), Some(Host::client()));
        assert_eq!(host_named("n4", 3), None);
    }
}
