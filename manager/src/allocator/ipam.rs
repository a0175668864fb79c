//! Address management: VXLAN ids, network subnets, task addresses and
//! service VIPs. The in-use sets are derived from the replicated state each
//! time (nothing is kept in memory on one manager), so a new leader that has
//! applied the log knows exactly what is taken: nothing is handed out twice
//! across leader changes.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
};

use shoal_api::{
    cidr::Ipv4Cidr,
    pb::{IpamConfig, Network, NetworkSpec, Task, TaskState},
};

use crate::store::State;

/// Swarm's first VXLAN id (the ones below are left to other users).
pub const FIRST_VNI: u32 = 4096;
/// The largest id a VXLAN header carries.
const LAST_VNI: u32 = (1 << 24) - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("network {0} has no free address left")]
    NetworkFull(String),
    #[error("the address pools {0:?} have no free /{1} subnet left")]
    PoolsFull(Vec<String>, u8),
    #[error("no VXLAN id is free")]
    NoVni,
    #[error("network {0} is not known")]
    UnknownNetwork(String),
    #[error("subnet {0} overlaps network {1}'s subnet {2}")]
    Overlap(String, String, String),
    #[error("{0}")]
    Invalid(String),
}

/// Whether a task's addresses are still taken: until it is terminal.
pub fn holds_addresses(task: &Task) -> bool {
    !task
        .status
        .as_ref()
        .map(|s| s.state())
        .unwrap_or(TaskState::New)
        .is_terminal()
}

/// One address block of a network: its subnet and the range task
/// addresses come from.
#[derive(Debug, Clone, Copy)]
struct Block {
    subnet: Ipv4Cidr,
    range: Ipv4Cidr,
}

impl Block {
    /// Addresses of the range a task may take: not the subnet's network or
    /// broadcast address.
    fn candidates(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let last = self.subnet.nth(self.subnet.size().saturating_sub(1));
        (0..self.range.size())
            .filter_map(|n| self.range.nth(n))
            .filter(move |a| *a != self.subnet.network() && Some(*a) != last)
    }
}

struct NetworkAddrs {
    name: String,
    blocks: Vec<Block>,
    used: BTreeSet<Ipv4Addr>,
}

fn invalid(message: String) -> AllocError {
    AllocError::Invalid(message)
}

fn parse_cidr(what: &str, text: &str) -> Result<Ipv4Cidr, AllocError> {
    text.parse::<Ipv4Cidr>()
        .map_err(|e| invalid(format!("{what}: {e}")))
}

pub struct Ipam {
    pools: Vec<Ipv4Cidr>,
    pool_names: Vec<String>,
    subnet_size: u8,
    vnis: BTreeSet<u32>,
    networks: HashMap<String, NetworkAddrs>,
}

/// An [`Ipam`] built from the state the first time an address is asked
/// for: building one reads every node's ingress address and every
/// service's VIPs, and most services created and tasks allocated use no
/// network at all (a 1,000-node cluster paid 1,000 address parses per
/// service created for nothing).
pub struct LazyIpam<'a> {
    state: &'a State,
    ipam: Option<Ipam>,
}

impl<'a> LazyIpam<'a> {
    pub fn new(state: &'a State) -> Self {
        Self { state, ipam: None }
    }

    pub fn get(&mut self) -> &mut Ipam {
        self.ipam
            .get_or_insert_with(|| Ipam::from_state(self.state))
    }
}

impl Ipam {
    /// What `state` has taken.
    pub fn from_state(state: &State) -> Self {
        let spec = state
            .cluster
            .as_ref()
            .and_then(|c| c.spec.clone())
            .unwrap_or_default();
        let pools = spec
            .default_addr_pool
            .iter()
            .filter_map(|p| p.parse::<Ipv4Cidr>().ok())
            .map(|p| p.trunc())
            .collect();
        let mut ipam = Self {
            pools,
            pool_names: spec.default_addr_pool.clone(),
            subnet_size: if spec.subnet_size == 0 {
                24
            } else {
                spec.subnet_size.min(30) as u8
            },
            vnis: BTreeSet::new(),
            networks: HashMap::new(),
        };
        for (id, network) in &state.networks {
            if network.vxlan_id != 0 {
                ipam.vnis.insert(network.vxlan_id);
            }
            let mut blocks = Vec::new();
            let mut used = BTreeSet::new();
            for config in shoal_api::network::blocks(network) {
                let Ok(subnet) = config.subnet.parse::<Ipv4Cidr>() else {
                    continue;
                };
                let range = config.ip_range.parse::<Ipv4Cidr>().unwrap_or(subnet);
                blocks.push(Block { subnet, range });
                used.extend(config.gateway.parse::<Ipv4Addr>().ok());
                used.extend(
                    config
                        .aux_addresses
                        .values()
                        .filter_map(|a| a.parse::<Ipv4Addr>().ok()),
                );
            }
            if blocks.is_empty() {
                continue;
            }
            let name = network
                .spec
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            ipam.networks
                .insert(id.clone(), NetworkAddrs { name, blocks, used });
        }
        for service in state.services.values() {
            for vip in service.endpoint.iter().flat_map(|e| &e.virtual_ips) {
                ipam.mark(&vip.network_id, &vip.addr);
            }
        }
        let ingress = state
            .networks
            .iter()
            .find(|(_, n)| n.spec.as_ref().is_some_and(|s| s.ingress))
            .map(|(id, _)| id.clone());
        if let Some(ingress) = ingress {
            for node in state.nodes.values().filter(|n| !n.ingress_addr.is_empty()) {
                ipam.mark(&ingress, &node.ingress_addr);
            }
        }
        // Only tasks on a network hold addresses: not a scan of every task
        // (this runs for each service created and each allocator pass).
        for task in state.tasks_on_networks().filter(|t| holds_addresses(t)) {
            for attachment in &task.networks {
                for addr in &attachment.addresses {
                    ipam.mark(&attachment.network_id, addr);
                }
            }
        }
        ipam
    }

    fn mark(&mut self, network_id: &str, addr: &str) {
        if let (Some(n), Ok(cidr)) = (self.networks.get_mut(network_id), addr.parse::<Ipv4Cidr>()) {
            n.used.insert(cidr.addr);
        }
    }

    /// A free address on the network, in CIDR form with its subnet's
    /// prefix: from the first block's range with one left, in order.
    pub fn address(&mut self, network_id: &str) -> Result<String, AllocError> {
        let n = self
            .networks
            .get_mut(network_id)
            .ok_or_else(|| AllocError::UnknownNetwork(network_id.to_owned()))?;
        let found = n
            .blocks
            .iter()
            .find_map(|b| Some((b.candidates().find(|a| !n.used.contains(a))?, b.subnet)));
        let (addr, subnet) = found.ok_or_else(|| AllocError::NetworkFull(n.name.clone()))?;
        n.used.insert(addr);
        Ok(Ipv4Cidr {
            addr,
            prefix: subnet.prefix,
        }
        .to_string())
    }

    /// `addr` on the network if it is free and in one of its subnets (a
    /// caller's `--ip`), in CIDR form with that subnet's prefix.
    pub fn claim(&mut self, network_id: &str, addr: Ipv4Addr) -> Result<String, AllocError> {
        let n = self
            .networks
            .get_mut(network_id)
            .ok_or_else(|| AllocError::UnknownNetwork(network_id.to_owned()))?;
        let block = n
            .blocks
            .iter()
            .find(|b| b.subnet.contains(addr))
            .ok_or_else(|| invalid(format!("{addr} is in no subnet of network {}", n.name)))?;
        let host = addr != block.subnet.network()
            && Some(addr) != block.subnet.nth(block.subnet.size().saturating_sub(1));
        if !host {
            return Err(invalid(format!(
                "{addr} is not a host address of subnet {}",
                block.subnet
            )));
        }
        if !n.used.insert(addr) {
            return Err(invalid(format!(
                "address {addr} is already in use on network {}",
                n.name
            )));
        }
        Ok(Ipv4Cidr {
            addr,
            prefix: block.subnet.prefix,
        }
        .to_string())
    }

    /// The network that has a block overlapping `subnet`, if any.
    fn overlapping(&self, subnet: &Ipv4Cidr) -> Option<(&str, Ipv4Cidr)> {
        self.networks.values().find_map(|n| {
            n.blocks
                .iter()
                .find(|b| b.subnet.overlaps(subnet))
                .map(|b| (n.name.as_str(), b.subnet))
        })
    }

    /// VXLAN id, subnets and gateways for a new network: each block the
    /// spec asks for (checked against every other network's), or the first
    /// free subnet of the pools for a block that names none. A config-only
    /// network takes nothing.
    pub fn network(&mut self, id: &str, spec: &NetworkSpec) -> Result<Network, AllocError> {
        if spec.config_only {
            return Ok(Network {
                spec: Some(spec.clone()),
                ..Default::default()
            });
        }
        let vni = (FIRST_VNI..=LAST_VNI)
            .find(|v| !self.vnis.contains(v))
            .ok_or(AllocError::NoVni)?;
        let mut configs = spec.ipam_configs.clone();
        if configs.is_empty() {
            configs.push(IpamConfig {
                subnet: spec.subnet.clone(),
                gateway: spec.gateway.clone(),
                ..Default::default()
            });
        }
        // Blocks are entered as they are taken: a later one of the same
        // network may not overlap an earlier one either.
        self.networks.insert(
            id.to_owned(),
            NetworkAddrs {
                name: spec.name.clone(),
                blocks: Vec::new(),
                used: BTreeSet::new(),
            },
        );
        let allocated = self.blocks(id, &configs);
        let subnets = match allocated {
            Ok(subnets) => subnets,
            Err(error) => {
                self.networks.remove(id);
                return Err(error);
            }
        };
        self.vnis.insert(vni);
        Ok(Network {
            meta: None,
            spec: Some(spec.clone()),
            vxlan_id: vni,
            subnet: subnets[0].subnet.clone(),
            gateway: subnets[0].gateway.clone(),
            subnets,
        })
    }

    fn blocks(&mut self, id: &str, configs: &[IpamConfig]) -> Result<Vec<IpamConfig>, AllocError> {
        let mut out = Vec::new();
        for config in configs {
            let subnet = if config.subnet.is_empty() {
                self.free_subnet()?
            } else {
                let subnet = parse_cidr("subnet", &config.subnet)?;
                if subnet.prefix > 30 {
                    return Err(invalid(format!(
                        "subnet {subnet} is too small: use /30 or larger"
                    )));
                }
                let subnet = subnet.trunc();
                if let Some((other, theirs)) = self.overlapping(&subnet) {
                    return Err(AllocError::Overlap(
                        subnet.to_string(),
                        other.to_owned(),
                        theirs.to_string(),
                    ));
                }
                subnet
            };
            let range = if config.ip_range.is_empty() {
                subnet
            } else {
                let range = parse_cidr("ip-range", &config.ip_range)?.trunc();
                if !subnet.contains(range.network()) || range.prefix < subnet.prefix {
                    return Err(invalid(format!(
                        "ip-range {range} is not inside subnet {subnet}"
                    )));
                }
                range
            };
            let host = |what: &str, text: &str| -> Result<Ipv4Addr, AllocError> {
                let addr: Ipv4Addr = text.parse().map_err(|_| {
                    invalid(format!("invalid {what} {text:?}: expected an IPv4 address"))
                })?;
                if !subnet.hosts().any(|h| h == addr) {
                    return Err(invalid(format!(
                        "{what} {addr} is not a host address of subnet {subnet}"
                    )));
                }
                Ok(addr)
            };
            let gateway = if config.gateway.is_empty() {
                subnet.nth(1).unwrap_or(subnet.addr)
            } else {
                host("gateway", &config.gateway)?
            };
            let mut reserved = BTreeSet::from([gateway]);
            for (name, aux) in &config.aux_addresses {
                reserved.insert(host(&format!("aux-address {name}"), aux)?);
            }
            let n = self
                .networks
                .get_mut(id)
                .ok_or_else(|| AllocError::UnknownNetwork(id.to_owned()))?;
            n.blocks.push(Block { subnet, range });
            n.used.extend(reserved);
            out.push(IpamConfig {
                subnet: subnet.to_string(),
                ip_range: if config.ip_range.is_empty() {
                    String::new()
                } else {
                    range.to_string()
                },
                gateway: gateway.to_string(),
                aux_addresses: config.aux_addresses.clone(),
            });
        }
        Ok(out)
    }

    fn free_subnet(&self) -> Result<Ipv4Cidr, AllocError> {
        for pool in &self.pools {
            if pool.prefix > self.subnet_size {
                continue;
            }
            let step = 1u64 << (32 - u32::from(self.subnet_size));
            let mut offset = 0u64;
            while offset < pool.size() {
                let Some(addr) = pool.nth(offset) else { break };
                let candidate = Ipv4Cidr {
                    addr,
                    prefix: self.subnet_size,
                };
                match self.overlapping(&candidate) {
                    // Skip past whatever is in the way.
                    Some((_, taken)) => {
                        let end = u64::from(u32::from(taken.network())) + taken.size();
                        let next = end.max(u64::from(u32::from(addr)) + step);
                        offset = next - u64::from(u32::from(pool.network()));
                        offset = offset.div_ceil(step) * step;
                    }
                    None => return Ok(candidate),
                }
            }
        }
        Err(AllocError::PoolsFull(
            self.pool_names.clone(),
            self.subnet_size,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::{
        Cluster, ClusterSpec, Endpoint, Meta, NetworkAttachment, Service, TaskStatus, VirtualIp,
    };

    fn state_with_pool(pool: &str, size: u32) -> State {
        State {
            cluster: Some(Cluster {
                spec: Some(ClusterSpec {
                    default_addr_pool: vec![pool.into()],
                    subnet_size: size,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn named(name: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            driver: "overlay".into(),
            ..Default::default()
        }
    }

    fn add(state: &mut State, id: &str, n: Network) {
        let mut n = n;
        n.meta = Some(Meta {
            id: id.into(),
            ..Default::default()
        });
        state.networks.insert(id.into(), n);
    }

    #[test]
    fn networks_get_distinct_vnis_and_subnets_from_the_pool() {
        let mut state = state_with_pool("198.18.0.0/15", 24);
        let a = Ipam::from_state(&state).network("a", &named("a")).unwrap();
        assert_eq!(
            (a.vxlan_id, a.subnet.as_str(), a.gateway.as_str()),
            (4096, "198.18.0.0/24", "198.18.0.1")
        );
        add(&mut state, "a", a);
        let mut fixed = named("b");
        fixed.subnet = "198.18.1.0/24".into();
        let b = Ipam::from_state(&state).network("b", &fixed).unwrap();
        add(&mut state, "b", b);
        // The next free one skips the fixed subnet.
        let c = Ipam::from_state(&state).network("c", &named("c")).unwrap();
        assert_eq!((c.vxlan_id, c.subnet.as_str()), (4098, "198.18.2.0/24"));
        // Overlaps are refused with both names.
        let mut overlapping = named("d");
        overlapping.subnet = "198.18.0.128/25".into();
        let err = Ipam::from_state(&state)
            .network("d", &overlapping)
            .unwrap_err();
        assert!(err.to_string().contains("overlaps network a"), "{err}");
        let mut bad_gw = named("e");
        bad_gw.subnet = "198.19.0.0/24".into();
        bad_gw.gateway = "198.19.1.1".into();
        assert!(Ipam::from_state(&state).network("e", &bad_gw).is_err());
    }

    #[test]
    fn a_full_pool_and_a_full_network_are_named() {
        let mut state = state_with_pool("198.18.0.0/29", 30);
        for id in ["a", "b"] {
            let n = Ipam::from_state(&state).network(id, &named(id)).unwrap();
            add(&mut state, id, n);
        }
        let err = Ipam::from_state(&state)
            .network("c", &named("c"))
            .unwrap_err();
        assert_eq!(err, AllocError::PoolsFull(vec!["198.18.0.0/29".into()], 30));
        // A /30 has two hosts: the gateway and one more.
        let mut ipam = Ipam::from_state(&state);
        assert_eq!(ipam.address("a").unwrap(), "198.18.0.2/30");
        assert_eq!(
            ipam.address("a").unwrap_err(),
            AllocError::NetworkFull("a".into())
        );
    }

    #[test]
    fn addresses_of_live_tasks_and_vips_are_taken_and_terminal_tasks_free_theirs() {
        let mut state = state_with_pool("198.18.0.0/15", 24);
        let n = Ipam::from_state(&state).network("n", &named("n")).unwrap();
        add(&mut state, "n", n);
        let task = |id: &str, addr: &str, s: TaskState| Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: s as i32,
                ..Default::default()
            }),
            networks: vec![NetworkAttachment {
                network_id: "n".into(),
                addresses: vec![addr.into()],
                aliases: vec![],
            }],
            ..Default::default()
        };
        state
            .tasks
            .insert("t1".into(), task("t1", "198.18.0.2/24", TaskState::Running));
        state
            .tasks
            .insert("t2".into(), task("t2", "198.18.0.3/24", TaskState::Failed));
        state.services.insert(
            "s".into(),
            Service {
                endpoint: Some(Endpoint {
                    virtual_ips: vec![VirtualIp {
                        network_id: "n".into(),
                        addr: "198.18.0.4/24".into(),
                    }],
                }),
                ..Default::default()
            },
        );
        let mut ipam = Ipam::from_state(&state);
        let got: Vec<_> = (0..3).map(|_| ipam.address("n").unwrap()).collect();
        assert_eq!(got, ["198.18.0.3/24", "198.18.0.5/24", "198.18.0.6/24"]);
    }

    fn block(subnet: &str, range: &str, gateway: &str) -> IpamConfig {
        IpamConfig {
            subnet: subnet.into(),
            ip_range: range.into(),
            gateway: gateway.into(),
            ..Default::default()
        }
    }

    #[test]
    fn several_subnets_fill_in_order_from_their_ranges() {
        let mut state = state_with_pool("198.18.0.0/15", 24);
        let mut spec = named("multi");
        spec.ipam_configs = vec![
            block("198.19.0.0/30", "", ""),
            block("198.19.1.0/24", "198.19.1.128/25", "198.19.1.254"),
        ];
        spec.ipam_configs[1]
            .aux_addresses
            .insert("printer".into(), "198.19.1.129".into());
        let n = Ipam::from_state(&state).network("m", &spec).unwrap();
        assert_eq!(
            (n.subnet.as_str(), n.gateway.as_str()),
            ("198.19.0.0/30", "198.19.0.1")
        );
        assert_eq!(n.subnets.len(), 2);
        assert_eq!(n.subnets[1].ip_range, "198.19.1.128/25");
        assert_eq!(n.subnets[1].gateway, "198.19.1.254");
        add(&mut state, "m", n);
        // The /30 has one host left past its gateway; then the range of the
        // second, skipping the aux address.
        let mut ipam = Ipam::from_state(&state);
        let got: Vec<_> = (0..3).map(|_| ipam.address("m").unwrap()).collect();
        assert_eq!(got, ["198.19.0.2/30", "198.19.1.128/24", "198.19.1.130/24"]);
        // A wanted address: in a subnet, free, a host.
        assert_eq!(
            ipam.claim("m", "198.19.1.5".parse().unwrap()).unwrap(),
            "198.19.1.5/24"
        );
        for (addr, why) in [
            ("198.19.1.5", "already in use"),
            ("198.19.1.254", "already in use"),
            ("198.19.2.1", "no subnet"),
            ("198.19.1.255", "not a host"),
        ] {
            let err = ipam
                .claim("m", addr.parse().unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{addr}: {err}");
        }
        // Another network may not overlap any block.
        let mut other = named("other");
        other.ipam_configs = vec![block("198.19.1.0/25", "", "")];
        let err = Ipam::from_state(&state).network("o", &other).unwrap_err();
        assert!(err.to_string().contains("overlaps network multi"), "{err}");
    }

    #[test]
    fn blocks_are_checked_against_their_subnet_and_each_other() {
        let state = state_with_pool("198.18.0.0/15", 24);
        for (configs, why) in [
            (
                vec![block("198.19.0.0/24", "198.19.1.0/25", "")],
                "not inside subnet",
            ),
            (
                vec![block("198.19.0.0/24", "198.19.0.0/23", "")],
                "not inside subnet",
            ),
            (
                vec![block("198.19.0.0/24", "", "198.19.1.1")],
                "not a host address",
            ),
            (
                vec![
                    block("198.19.0.0/24", "", ""),
                    block("198.19.0.0/25", "", ""),
                ],
                "overlaps network n",
            ),
        ] {
            let mut spec = named("n");
            spec.ipam_configs = configs;
            let err = Ipam::from_state(&state).network("n", &spec).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        // A config-only network takes no VXLAN id and no subnet.
        let mut spec = named("cfg");
        spec.config_only = true;
        spec.ipam_configs = vec![block("198.19.0.0/24", "", "")];
        let n = Ipam::from_state(&state).network("c", &spec).unwrap();
        assert_eq!((n.vxlan_id, n.subnet.as_str()), (0, ""));
    }
}
