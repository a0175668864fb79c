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
    pb::{Network, NetworkSpec, Task, TaskState},
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

struct NetworkAddrs {
    name: String,
    subnet: Ipv4Cidr,
    used: BTreeSet<Ipv4Addr>,
}

pub struct Ipam {
    pools: Vec<Ipv4Cidr>,
    pool_names: Vec<String>,
    subnet_size: u8,
    vnis: BTreeSet<u32>,
    networks: HashMap<String, NetworkAddrs>,
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
            ipam.vnis.insert(network.vxlan_id);
            let Ok(subnet) = network.subnet.parse::<Ipv4Cidr>() else {
                continue;
            };
            let mut used = BTreeSet::new();
            if let Ok(gateway) = network.gateway.parse() {
                used.insert(gateway);
            }
            let name = network
                .spec
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            ipam.networks
                .insert(id.clone(), NetworkAddrs { name, subnet, used });
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
        for task in state.tasks.values().filter(|t| holds_addresses(t)) {
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

    /// A free address on the network, in CIDR form with the subnet's prefix.
    pub fn address(&mut self, network_id: &str) -> Result<String, AllocError> {
        let n = self
            .networks
            .get_mut(network_id)
            .ok_or_else(|| AllocError::UnknownNetwork(network_id.to_owned()))?;
        let addr = n
            .subnet
            .hosts()
            .find(|a| !n.used.contains(a))
            .ok_or_else(|| AllocError::NetworkFull(n.name.clone()))?;
        n.used.insert(addr);
        Ok(Ipv4Cidr {
            addr,
            prefix: n.subnet.prefix,
        }
        .to_string())
    }

    /// VXLAN id, subnet and gateway for a new network: the subnet the spec
    /// asks for (checked against every other network), or the first free
    /// one of the pools.
    pub fn network(&mut self, id: &str, spec: &NetworkSpec) -> Result<Network, AllocError> {
        let vni = (FIRST_VNI..=LAST_VNI)
            .find(|v| !self.vnis.contains(v))
            .ok_or(AllocError::NoVni)?;
        let subnet = if spec.subnet.is_empty() {
            self.free_subnet()?
        } else {
            let subnet: Ipv4Cidr = spec
                .subnet
                .parse()
                .map_err(|e: shoal_api::cidr::CidrError| AllocError::Invalid(e.to_string()))?;
            if subnet.prefix > 30 {
                return Err(AllocError::Invalid(format!(
                    "subnet {subnet} is too small: use /30 or larger"
                )));
            }
            let subnet = subnet.trunc();
            if let Some(other) = self.networks.values().find(|n| n.subnet.overlaps(&subnet)) {
                return Err(AllocError::Overlap(
                    subnet.to_string(),
                    other.name.clone(),
                    other.subnet.to_string(),
                ));
            }
            subnet
        };
        let gateway = if spec.gateway.is_empty() {
            subnet.nth(1).unwrap_or(subnet.addr)
        } else {
            let gateway: Ipv4Addr = spec
                .gateway
                .parse()
                .map_err(|_| AllocError::Invalid(format!("invalid gateway {:?}", spec.gateway)))?;
            if !subnet.hosts().any(|h| h == gateway) {
                return Err(AllocError::Invalid(format!(
                    "gateway {gateway} is not a host address of subnet {subnet}"
                )));
            }
            gateway
        };
        self.vnis.insert(vni);
        self.networks.insert(
            id.to_owned(),
            NetworkAddrs {
                name: spec.name.clone(),
                subnet,
                used: BTreeSet::from([gateway]),
            },
        );
        Ok(Network {
            meta: None,
            spec: Some(spec.clone()),
            vxlan_id: vni,
            subnet: subnet.to_string(),
            gateway: gateway.to_string(),
        })
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
                match self
                    .networks
                    .values()
                    .find(|n| n.subnet.overlaps(&candidate))
                {
                    // Skip past whatever is in the way.
                    Some(n) => {
                        let end = u64::from(u32::from(n.subnet.network())) + n.subnet.size();
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
}
