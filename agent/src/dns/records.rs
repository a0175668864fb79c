//! The names one node answers, built from its assignment set: per network,
//! each service's names (its name, its short name in a stack, its aliases)
//! and `tasks.NAME`, which networks each local container is on, and where
//! the names that are not the cluster's go for a container whose service
//! gave DNS servers (`--dns`; the node's own upstreams otherwise).

use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr},
};

use shoal_api::pb::AssignmentSet;

/// TTL of a VIP answer: a VIP lives as long as its service.
pub const VIP_TTL: u32 = 5;
/// TTL of task addresses (`tasks.NAME`, dnsrr): they change as tasks come
/// and go, so clients must ask again soon (Docker says 600 s).
pub const TASKS_TTL: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Vip(Ipv4Addr),
    Tasks(Vec<Ipv4Addr>),
}

impl Entry {
    pub fn ttl(&self) -> u32 {
        match self {
            Entry::Vip(_) => VIP_TTL,
            Entry::Tasks(_) => TASKS_TTL,
        }
    }
}

/// What a name is, seen from some networks.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Found(&'a Entry),
    /// A service's name, but on none of the asker's networks.
    NotShared,
    /// Not a name of this cluster.
    Unknown,
}

/// What the server does with a name asked by one of its containers.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved<'a> {
    Found(&'a Entry),
    /// NXDOMAIN: a service's name on none of the asker's networks, or a
    /// name that is this cluster's to answer and is not known.
    NoSuchName,
    /// Not this cluster's: the upstream resolvers are asked.
    Upstream,
}

#[derive(Debug, Default)]
pub struct Records {
    /// A container's address → the networks it is attached to.
    networks_of: HashMap<Ipv4Addr, Vec<String>>,
    /// The addresses of this node's own tasks: the only askers answered.
    local: HashSet<Ipv4Addr>,
    /// Network → lowercase name → answer.
    names: HashMap<String, HashMap<String, Entry>>,
    /// Every name of every network this node knows.
    known: HashSet<String>,
    /// Networks with no way out (`--internal`): their names are all there is.
    internal: HashSet<String>,
    /// A local container's address → its service's DNS servers, asked in
    /// place of the node's upstreams (Swarm's `--dns` behind its embedded DNS).
    upstreams: HashMap<Ipv4Addr, Vec<SocketAddr>>,
}

impl Records {
    pub fn from_assignments(set: &AssignmentSet) -> Self {
        let mut records = Records::default();
        let mut task_networks: HashMap<&str, Vec<String>> = HashMap::new();
        for e in &set.endpoints {
            task_networks
                .entry(e.task_id.as_str())
                .or_default()
                .push(e.network_id.clone());
        }
        let here: HashSet<&str> = set
            .tasks
            .iter()
            .filter_map(|t| t.meta.as_ref().map(|m| m.id.as_str()))
            .collect();
        let servers_of: HashMap<&str, Vec<SocketAddr>> = set
            .tasks
            .iter()
            .filter_map(|t| Some((t.meta.as_ref()?.id.as_str(), dns_servers(t))))
            .filter(|(_, servers)| !servers.is_empty())
            .collect();
        for e in &set.endpoints {
            if let (Ok(addr), Some(nets)) = (e.addr.parse(), task_networks.get(e.task_id.as_str()))
            {
                records.networks_of.insert(addr, nets.clone());
                if here.contains(e.task_id.as_str()) {
                    records.local.insert(addr);
                }
                if let Some(servers) = servers_of.get(e.task_id.as_str()) {
                    records.upstreams.insert(addr, servers.clone());
                }
            }
        }
        for service in &set.services {
            let tasks: Vec<Ipv4Addr> = set
                .endpoints
                .iter()
                .filter(|e| {
                    e.running
                        && e.service_id == service.service_id
                        && e.network_id == service.network_id
                })
                .filter_map(|e| e.addr.parse().ok())
                .collect();
            let by_name = records.names.entry(service.network_id.clone()).or_default();
            let main = match service.vip.parse() {
                Ok(vip) => Entry::Vip(vip),
                Err(_) => Entry::Tasks(tasks.clone()),
            };
            for name in &service.names {
                let name = name.to_ascii_lowercase();
                by_name.insert(format!("tasks.{name}"), Entry::Tasks(tasks.clone()));
                by_name.insert(name, main.clone());
            }
        }
        for by_name in records.names.values() {
            records.known.extend(by_name.keys().cloned());
        }
        records.internal = set
            .networks
            .iter()
            .filter(|n| n.spec.as_ref().is_some_and(|s| s.internal))
            .filter_map(|n| n.meta.as_ref().map(|m| m.id.clone()))
            .collect();
        records
    }

    /// The networks of the container at `addr`, if it is one of this node's.
    pub fn networks_of(&self, addr: Ipv4Addr) -> Option<&[String]> {
        self.networks_of.get(&addr).map(Vec::as_slice)
    }

    /// Whether `addr` is one of this node's tasks (the set's own tasks,
    /// on any of their networks).
    pub fn is_local(&self, addr: Ipv4Addr) -> bool {
        self.local.contains(&addr)
    }

    /// `name` (lowercase, no trailing dot) on the first of `networks` that has it.
    pub fn lookup<'a>(&'a self, networks: &[String], name: &str) -> Lookup<'a> {
        for network in networks {
            if let Some(entry) = self.names.get(network).and_then(|n| n.get(name)) {
                return Lookup::Found(entry);
            }
        }
        if self.known.contains(name) {
            Lookup::NotShared
        } else {
            Lookup::Unknown
        }
    }

    /// `name` (lowercase, no trailing dot) asked by the container at
    /// `asker` on `network`: looked up on the asker's networks (that one
    /// network for an asker this node does not know).
    pub fn resolve<'a>(&'a self, asker: Ipv4Addr, network: &str, name: &str) -> Resolved<'a> {
        let own;
        let networks: &[String] = match self.networks_of(asker) {
            Some(n) => n,
            None => {
                own = [network.to_owned()];
                &own
            }
        };
        match self.lookup(networks, name) {
            Lookup::Found(entry) => Resolved::Found(entry),
            Lookup::NotShared => Resolved::NoSuchName,
            // Bare names and tasks.* are this cluster's to answer: not
            // known means no such name, not a question for upstream. Nor
            // does anything leave an internal network, names included.
            Lookup::Unknown
                if !name.contains('.')
                    || name.starts_with("tasks.")
                    || self.all_internal(networks) =>
            {
                Resolved::NoSuchName
            }
            Lookup::Unknown => Resolved::Upstream,
        }
    }

    /// Every name `networks` hold, with the entry [`Self::lookup`] finds
    /// for it (the first of `networks` that has it): what the server
    /// answers an asker on exactly these networks. Other names (unknown,
    /// upstream, denied) are not here.
    pub fn found_on(&self, networks: &[String]) -> HashMap<&str, &Entry> {
        let mut found = HashMap::new();
        for network in networks {
            for (name, entry) in self.names.get(network).into_iter().flatten() {
                found.entry(name.as_str()).or_insert(entry);
            }
        }
        found
    }

    /// The addresses of this node's own tasks, the askers it answers.
    pub fn local_askers(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.local.iter().copied()
    }

    /// The DNS servers the container at `addr` forwards to, when its
    /// service gave its own.
    pub fn upstreams_of(&self, addr: Ipv4Addr) -> Option<&[SocketAddr]> {
        self.upstreams.get(&addr).map(Vec::as_slice)
    }

    /// Whether `networks` all lack egress: then no name goes upstream.
    pub fn all_internal(&self, networks: &[String]) -> bool {
        !networks.is_empty() && networks.iter().all(|n| self.internal.contains(n))
    }

    /// How many names it holds, for logs.
    pub fn len(&self) -> usize {
        self.names.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A task's `--dns` servers, port 53.
fn dns_servers(task: &shoal_api::pb::Task) -> Vec<SocketAddr> {
    task.spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .and_then(|c| c.dns_config.as_ref())
        .map(|d| {
            d.nameservers
                .iter()
                .filter_map(|n| n.parse::<std::net::IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::{ServiceRecord, TaskEndpoint};

    fn endpoint(net: &str, task: &str, service: &str, addr: &str, running: bool) -> TaskEndpoint {
        TaskEndpoint {
            network_id: net.into(),
            task_id: task.into(),
            service_id: service.into(),
            addr: addr.into(),
            node_addr: "192.0.2.11".into(),
            running,
            draining: false,
        }
    }

    #[test]
    fn names_resolve_per_network_and_only_running_tasks_count() {
        let set = AssignmentSet {
            endpoints: vec![
                endpoint("front", "t1", "web", "198.18.1.3", true),
                endpoint("front", "t2", "web", "198.18.1.4", false),
                endpoint("back", "t3", "db", "198.18.2.3", true),
                endpoint("back", "t4", "web", "198.18.2.5", true),
                endpoint("front", "t4", "web", "198.18.1.5", true),
            ],
            services: vec![
                ServiceRecord {
                    service_id: "web".into(),
                    network_id: "front".into(),
                    names: vec!["shop_web".into(), "web".into(), "Www".into()],
                    vip: "198.18.1.2".into(),
                },
                ServiceRecord {
                    service_id: "db".into(),
                    network_id: "back".into(),
                    names: vec!["db".into()],
                    vip: String::new(),
                },
            ],
            ..Default::default()
        };
        let r = Records::from_assignments(&set);
        let front = ["front".to_owned()];
        let vip = Entry::Vip("198.18.1.2".parse().unwrap());
        assert_eq!(r.lookup(&front, "web"), Lookup::Found(&vip));
        assert_eq!(r.lookup(&front, "shop_web"), Lookup::Found(&vip));
        assert_eq!(
            r.lookup(&front, "www"),
            Lookup::Found(&vip),
            "aliases, any case"
        );
        let tasks = Entry::Tasks(vec![
            "198.18.1.3".parse().unwrap(),
            "198.18.1.5".parse().unwrap(),
        ]);
        assert_eq!(r.lookup(&front, "tasks.web"), Lookup::Found(&tasks));
        // db lives on back only: a container on front does not see it.
        assert_eq!(r.lookup(&front, "db"), Lookup::NotShared);
        assert_eq!(r.lookup(&front, "nosuch"), Lookup::Unknown);
        // dnsrr: the name gives the task addresses.
        let back = ["back".to_owned()];
        assert_eq!(
            r.lookup(&back, "db"),
            Lookup::Found(&Entry::Tasks(vec!["198.18.2.3".parse().unwrap()]))
        );
        // t4 is on both networks.
        assert_eq!(
            r.networks_of("198.18.2.5".parse().unwrap()).unwrap().len(),
            2
        );
    }
}
