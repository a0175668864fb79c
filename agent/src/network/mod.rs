//! The overlay data path on one node: for each network its tasks use, a
//! bridge (holding the network's gateway address, where this node's DNS
//! server listens) and a VXLAN device (UDP 4789 from the node's advertise
//! address, no learning, no flooding); one veth per container and network;
//! permanent FDB and neighbour entries for every remote endpoint, as the
//! manager pushes them. Everything is named after what it serves, so a
//! restarted agent finds, keeps and repairs what an earlier run built.

mod allow;
mod dns_maps;
pub mod firewall;
pub mod guard;
pub mod netlink;
mod plug;
pub mod routes;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use shoal_api::{
    cidr::Ipv4Cidr,
    pb::{AssignmentSet, Network, Task},
};

use crate::{
    datapath::{
        BpfRoot,
        guard::GuardMaps,
        mesh::{self, MeshMaps, MeshService, VipService},
    },
    dns::{DnsServer, Records},
    relay::{Relay, RelayPort},
};
use netlink::{Entry, Netlink};

/// IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

const BRIDGE_PREFIX: &str = "shbr";
const VXLAN_PREFIX: &str = "shvx";

pub fn bridge_name(vni: u32) -> String {
    format!("{BRIDGE_PREFIX}{vni}")
}

pub fn vxlan_name(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni}")
}

/// Host-side veth of a task on a network (`shv` + 10 hex digits: names
/// are at most 15 characters), and the temporary name of its peer.
pub fn veth_names(task_id: &str, network_id: &str) -> (String, String) {
    // FNV-1a: stable across runs and versions, unlike std's hasher.
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in task_id.bytes().chain([0]).chain(network_id.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    let tag = format!("{:010x}", hash & 0xff_ffff_ffff);
    (format!("shv{tag}"), format!("shp{tag}"))
}

/// A container's MAC on an overlay, derived from its address (as Docker
/// does): remote nodes can program it knowing only the address.
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// How a service's new connections pick a task (`--lb`, `--endpoint-affinity`).
fn pick_policy(set: &AssignmentSet, service_id: &str) -> crate::datapath::pick::PickPolicy {
    set.lb_policies
        .get(service_id)
        .map(|p| crate::datapath::pick::PickPolicy {
            maglev: p.maglev,
            affinity_timeout_s: p.affinity_timeout_s,
        })
        .unwrap_or_default()
}

fn network_id(n: &Network) -> &str {
    n.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

fn is_internal(n: &Network) -> bool {
    n.spec.as_ref().is_some_and(|s| s.internal)
}

fn is_ingress(n: &Network) -> bool {
    n.spec.as_ref().is_some_and(|s| s.ingress)
}

/// A network's subnets with their gateways, first the main one.
struct Blocks(Vec<(Ipv4Cidr, Ipv4Addr)>);

impl Blocks {
    fn of(network: &Network) -> Result<Self> {
        let id = network_id(network);
        let blocks = shoal_api::network::blocks(network)
            .iter()
            .map(|b| {
                let subnet: Ipv4Cidr = b
                    .subnet
                    .parse()
                    .with_context(|| format!("network {id}: subnet {:?}", b.subnet))?;
                let gateway: Ipv4Addr = b
                    .gateway
                    .parse()
                    .with_context(|| format!("network {id}: gateway {:?}", b.gateway))?;
                Ok((subnet, gateway))
            })
            .collect::<Result<Vec<_>>>()?;
        anyhow::ensure!(!blocks.is_empty(), "network {id} has no subnet");
        Ok(Self(blocks))
    }

    fn first(&self) -> (Ipv4Cidr, Ipv4Addr) {
        self.0[0]
    }
}

/// The devices of one network on this node.
#[derive(Debug, Clone, Copy)]
struct Devices {
    bridge: u32,
    vxlan: u32,
}

pub struct Overlay {
    nl: Netlink,
    local: Ipv4Addr,
    underlay: u32,
    /// Overlay MTU: the underlay's minus the VXLAN overhead.
    mtu: u32,
    dns: Arc<DnsServer>,
    /// The networks of the last assignment set, by id.
    networks: Mutex<HashMap<String, Network>>,
    /// Bridges (by ifindex, with their internal flag) whose iptables rules
    /// this agent has put in place.
    rules_applied: Mutex<HashSet<(u32, bool)>>,
    /// Serialises changes to the node's devices.
    changing: tokio::sync::Mutex<()>,
    /// Where the routing mesh is pinned (none: no mesh, as in tests).
    bpf_root: Option<BpfRoot>,
    mesh: Mutex<Option<MeshMaps>>,
    /// The DNS names answered at the task veths (see `dns_maps`).
    dns_maps: Mutex<Option<crate::datapath::dns::DnsMaps>>,
    guard: Mutex<Option<GuardMaps>>,
    allow: allow::Allow,
    /// Published ports with `proxy-protocol=v2` (see `relay`).
    relay: Relay,
}

/// What the ingress network's push makes of the published ports: those
/// the mesh forwards, those the relay takes, and the node's ingress
/// address (the relay's source towards tasks).
#[derive(Default)]
struct Ingress {
    published: Vec<MeshService>,
    relayed: Vec<RelayPort>,
    source: Option<Ipv4Addr>,
}

impl Overlay {
    /// The overlay of the node whose underlay address is `local`.
    pub async fn new(
        local: Ipv4Addr,
        dns: Arc<DnsServer>,
        bpf_root: Option<BpfRoot>,
    ) -> Result<Arc<Self>> {
        let nl = Netlink::here()?;
        let underlay = nl.link_with_address(local).await?;
        Ok(Arc::new(Self {
            nl,
            local,
            underlay: underlay.index,
            mtu: underlay.mtu.max(576 + VXLAN_OVERHEAD) - VXLAN_OVERHEAD,
            dns,
            networks: Mutex::default(),
            rules_applied: Mutex::default(),
            changing: tokio::sync::Mutex::new(()),
            bpf_root,
            mesh: Mutex::default(),
            dns_maps: Mutex::default(),
            guard: Mutex::default(),
            allow: allow::Allow::default(),
            relay: Relay::new(local),
        }))
    }

    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    pub fn dns(&self) -> &Arc<DnsServer> {
        &self.dns
    }

    /// Brings the node's overlay in line with `set`: devices for each of
    /// its networks (and none for others), FDB and neighbour entries for
    /// every remote endpoint, DNS records and listeners.
    pub async fn sync(&self, set: &AssignmentSet) -> Result<()> {
        let _guard = self.changing.lock().await;
        *self.networks.lock().unwrap_or_else(|e| e.into_inner()) = set
            .networks
            .iter()
            .map(|n| (network_id(n).to_owned(), n.clone()))
            .collect();
        let records = Records::from_assignments(set);
        // One dump serves the whole sync: the devices it creates are
        // wanted ones, and the veths it looks up are made by `attach`
        // (which tells the mesh itself).
        let links = self.nl.links().await;
        let mut problems = Vec::new();
        // The veths' DNS answers change before (never after) the server's.
        let dns_maps = match &links {
            Ok(links) => self.sync_dns_maps(set, &records, links),
            Err(error) => Err(anyhow::anyhow!("listing links: {error:#}")),
        };
        if let Err(error) = dns_maps {
            self.stop_dns_at_veths();
            problems.push(format!("DNS maps: {error:#}"));
        }
        self.dns.update(records);
        let links = links?;
        self.ensure_task_veths(set, &links);
        let wanted: HashSet<u32> = set.networks.iter().map(|n| n.vxlan_id).collect();
        // Before any device or table: the guards know this push's nodes
        // and tasks before packets for them can come.
        if let Err(error) = self.program_guard(set).await {
            problems.push(format!("data plane guards: {error:#}"));
        }
        if let Some(root) = &self.bpf_root
            && let Err(error) = self.allow.apply(root, set)
        {
            problems.push(format!("published ports' allow-lists: {error:#}"));
        }
        let mut ingress = Ingress::default();
        for network in &set.networks {
            let result = async {
                let devices = self.ensure_network(network).await?;
                self.program_peers(network, devices, set).await?;
                if is_ingress(network) {
                    ingress = self.program_ingress(network, devices, set, &links).await?;
                }
                Ok::<_, anyhow::Error>(())
            }
            .await;
            if let Err(error) = result {
                problems.push(format!("{}: {error:#}", network_id(network)));
            }
        }
        if let Err(error) = self.program_tables(set, &ingress.published) {
            problems.push(format!("load balancing tables: {error:#}"));
        }
        // After the tables: a relayed port's entry (no backend) is in the
        // mesh, so its SYNs reach the relay's listener.
        if let Err(error) = self.relay.sync(&ingress.relayed, ingress.source) {
            problems.push(format!("{error}"));
        }
        // Devices of networks no task here uses any more go.
        for link in &links {
            let vni = link
                .name
                .strip_prefix(VXLAN_PREFIX)
                .or_else(|| link.name.strip_prefix(BRIDGE_PREFIX))
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(vni) = vni
                && !wanted.contains(&vni)
            {
                tracing::info!(link = %link.name, "removing an unused overlay device");
                self.nl.delete_link(link.index).await?;
                if link.name.starts_with(BRIDGE_PREFIX) {
                    firewall::clear(&link.name).await;
                    self.rules_applied
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|(index, _)| *index != link.index);
                }
            }
        }
        let listening: HashSet<String> = set
            .networks
            .iter()
            .map(|n| network_id(n).to_owned())
            .collect();
        for network in self.dns.listening() {
            if !listening.contains(&network) {
                self.dns.stop(&network);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("overlay: {}", problems.join("; "))
        }
    }

    async fn ensure_network(&self, network: &Network) -> Result<Devices> {
        let vni = network.vxlan_id;
        let blocks = Blocks::of(network)?;
        let (_, gateway) = blocks.first();
        let bridge = self.nl.ensure_bridge(&bridge_name(vni), self.mtu).await?;
        // A gateway address of every subnet: the node routes each one's
        // egress, and reaches its containers, as Docker's bridges do.
        for (subnet, gateway) in &blocks.0 {
            self.nl
                .ensure_address(bridge.index, *gateway, subnet.prefix)
                .await?;
        }
        // A bridge whose MAC was never set takes its lowest port's: a new
        // task's veth would change the gateway's MAC under every container
        // that has it in its ARP cache (DNS and egress lost until they ask
        // again). The ingress bridge gets the node's ingress MAC instead.
        if !is_ingress(network) && bridge.mac != Some(mac_of(gateway)) {
            self.nl.set_mac(bridge.index, mac_of(gateway)).await?;
        }
        let vxlan = self
            .nl
            .ensure_vxlan(
                &vxlan_name(vni),
                vni,
                self.local,
                self.underlay,
                self.mtu,
                bridge.index,
            )
            .await?;
        if vxlan.controller != Some(bridge.index) {
            self.nl.plug(vxlan.index, bridge.index).await?;
        }
        // Rules are checked once per bridge and kind in this agent's life
        // (a restarted agent checks again): spawning iptables on every
        // push made busy nodes fall behind the pushes.
        let rules_key = (bridge.index, is_internal(network));
        let applied = self
            .rules_applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&rules_key);
        if !applied {
            for (subnet, _) in &blocks.0 {
                firewall::apply(
                    &subnet.trunc().to_string(),
                    &bridge.name,
                    is_internal(network),
                )
                .await?;
            }
            self.rules_applied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(rules_key);
        }
        if !is_ingress(network) {
            self.dns.listen(network_id(network), gateway).await?;
        }
        Ok(Devices {
            bridge: bridge.index,
            vxlan: vxlan.index,
        })
    }

    /// FDB (MAC → node) and neighbour (IP → MAC) entries on the VXLAN
    /// device for every endpoint on another node; stale ones go.
    async fn program_peers(
        &self,
        network: &Network,
        devices: Devices,
        set: &AssignmentSet,
    ) -> Result<()> {
        let id = network_id(network);
        let mut wanted: BTreeMap<Ipv4Addr, Entry> = BTreeMap::new();
        for e in set.endpoints.iter().filter(|e| e.network_id == id) {
            let (Ok(ip), Ok(node)) = (e.addr.parse::<Ipv4Addr>(), e.node_addr.parse::<Ipv4Addr>())
            else {
                continue;
            };
            if node == self.local {
                continue;
            }
            wanted.insert(
                ip,
                Entry {
                    mac: mac_of(ip),
                    ip: node,
                },
            );
        }
        let fdb = self.nl.fdb(devices.vxlan).await?;
        let present: HashSet<Entry> = fdb.iter().map(|(e, _)| e.clone()).collect();
        for (entry, _) in fdb {
            if !wanted.values().any(|w| *w == entry) {
                self.nl.delete_fdb(devices.vxlan, &entry).await?;
            }
        }
        for entry in wanted.values() {
            if !present.contains(entry) {
                self.nl.set_fdb(devices.vxlan, entry).await?;
            }
        }
        // The VIPs of services here answer ARP too (from the VXLAN device's
        // table, as remote tasks do), with a MAC no task has: frames sent
        // to them are rewritten at the sender's veth, never delivered.
        let mut neighbour_ips: Vec<Ipv4Addr> = wanted.keys().copied().collect();
        neighbour_ips.extend(
            set.services
                .iter()
                .filter(|r| r.network_id == id)
                .filter_map(|r| r.vip.parse::<Ipv4Addr>().ok()),
        );
        let neighbours = self.nl.neighbours(devices.vxlan).await?;
        let present: HashSet<Entry> = neighbours.iter().map(|(e, _)| e.clone()).collect();
        for (entry, message) in neighbours {
            if !neighbour_ips.contains(&entry.ip) || entry.mac != mac_of(entry.ip) {
                self.nl.delete_entry(message).await?;
            }
        }
        for ip in &neighbour_ips {
            let entry = Entry {
                mac: mac_of(*ip),
                ip: *ip,
            };
            if !present.contains(&entry) {
                self.nl.set_neighbour(devices.vxlan, &entry).await?;
            }
        }
        Ok(())
    }

    /// The ingress network's bridge holds this node's ingress address (its
    /// MAC derived from it, as every endpoint's), where tasks reply to the
    /// mesh; the mesh programs go on the underlay and that bridge, with the
    /// node's facts in their config. Returns the published ports as the
    /// mesh and the relay will serve them.
    async fn program_ingress(
        &self,
        network: &Network,
        devices: Devices,
        set: &AssignmentSet,
        links: &[netlink::Link],
    ) -> Result<Ingress> {
        let Some(root) = &self.bpf_root else {
            return Ok(Ingress::default());
        };
        let Ok(ingress_addr) = set.ingress_addr.parse::<Ipv4Addr>() else {
            return Ok(Ingress::default()); // not allocated yet: the next push brings it
        };
        let subnet: Ipv4Cidr = network.subnet.parse()?;
        self.nl
            .ensure_address(devices.bridge, ingress_addr, subnet.prefix)
            .await?;
        let bridge_mac = mac_of(ingress_addr);
        let bridge = self
            .nl
            .link(&bridge_name(network.vxlan_id))
            .await?
            .context("the ingress bridge vanished")?;
        if bridge.mac != Some(bridge_mac) {
            self.nl.set_mac(devices.bridge, bridge_mac).await?;
        }
        mesh::attach_mesh(root, self.underlay, devices.bridge)?;
        self.with_maps(|maps| {
            maps.update_config(|config| {
                config.node_addr = mesh::be_addr(self.local);
                config.ingress_addr = mesh::be_addr(ingress_addr);
                config.underlay_ifindex = self.underlay;
                config.bridge_ifindex = devices.bridge;
                config.bridge_mac = bridge_mac;
                config.mss = (self.mtu - 40) as u16;
                config.ingress_vni = network.vxlan_id;
            })
        })?;
        let id = network_id(network);
        let local = self.local.to_string();
        // Where the mesh sends packets itself, past the bridge: to tasks
        // (and ingress addresses) of other nodes over its own VXLAN, into
        // the containers of tasks here through their veths.
        let remote: HashMap<Ipv4Addr, Ipv4Addr> = set
            .endpoints
            .iter()
            .filter(|e| e.network_id == id && e.node_addr != local)
            .filter_map(|e| Some((e.addr.parse().ok()?, e.node_addr.parse().ok()?)))
            .collect();
        let veths: HashMap<&str, u32> = links.iter().map(|l| (l.name.as_str(), l.index)).collect();
        let here: HashMap<Ipv4Addr, u32> = set
            .endpoints
            .iter()
            .filter(|e| e.network_id == id && e.node_addr == local)
            .filter_map(|e| {
                let (veth, _) = veth_names(&e.task_id, id);
                Some((e.addr.parse().ok()?, *veths.get(veth.as_str())?))
            })
            .collect();
        self.with_maps(|maps| {
            maps.set_tunnels(&remote)?;
            maps.set_local_tasks(&here)
        })?;
        let mut ingress = Ingress {
            source: Some(ingress_addr),
            ..Default::default()
        };
        for p in &set.published {
            let Some(proto) = mesh::proto_number(&p.protocol) else {
                continue;
            };
            let host_mode = p.mode() == shoal_api::pb::PublishMode::Host;
            let tasks = |draining: bool| {
                let mut out: Vec<(Ipv4Addr, u16)> = set
                    .endpoints
                    .iter()
                    .filter(|e| e.network_id == id && e.service_id == p.service_id)
                    .filter(|e| if draining { e.draining } else { e.running })
                    .filter(|e| !host_mode || e.node_addr == local)
                    .filter_map(|e| Some((e.addr.parse().ok()?, p.target_port as u16)))
                    .collect();
                out.sort();
                out
            };
            let (mut backends, mut draining) = (tasks(false), tasks(true));
            if host_mode && backends.is_empty() && draining.is_empty() {
                continue; // no task here: the port is not this node's
            }
            let mut pick = pick_policy(set, &p.service_id);
            if !host_mode && !p.proxy_protocol.is_empty() && proto == 6 {
                ingress.relayed.push(RelayPort {
                    published: p.published_port as u16,
                    backends: backends
                        .iter()
                        .map(|(a, port)| std::net::SocketAddrV4::new(*a, *port))
                        .collect(),
                    pick,
                });
                // In the mesh's table with no backend to pick: its
                // allow-lists apply, then it leaves the connection to the
                // node's stack. Its tasks are listed live but never picked
                // (as draining ones are), so their replies to the relay's
                // ingress address pass the guards (`untracked_reply`).
                draining.append(&mut backends);
                draining.sort();
                pick = Default::default();
            }
            ingress.published.push(MeshService {
                service_id: p.service_id.clone(),
                proto,
                port: p.published_port as u16,
                mode: if host_mode {
                    shoal_agent_common::MODE_HOST
                } else if p.direct_server_return {
                    shoal_agent_common::MODE_INGRESS_DSR
                } else {
                    shoal_agent_common::MODE_INGRESS
                },
                backends,
                draining,
                pick,
            });
        }
        Ok(ingress)
    }

    /// The data plane's guards (see `guard`): their tables, the node's
    /// facts in the config, and `mesh_ingress` on the underlay, which
    /// drops VXLAN from strangers whether or not the ingress network is
    /// here. Until a manager sends the node list (an older one sends
    /// none), VXLAN is not filtered by source: the overlays keep working.
    async fn program_guard(&self, set: &AssignmentSet) -> Result<()> {
        let Some(root) = &self.bpf_root else {
            return Ok(());
        };
        let own = self.nl.ipv4_addresses().await?;
        let tables = guard::tables(set, &own, self.local);
        mesh::ensure_maps(root)?;
        {
            let mut maps = self.guard.lock().unwrap_or_else(|e| e.into_inner());
            if maps.is_none() {
                *maps = Some(GuardMaps::open(root)?);
            }
            maps.as_mut().context("guard maps")?.sync(&tables)?;
        }
        let flags = if set.nodes.is_empty() {
            0
        } else {
            shoal_agent_common::GUARD_NODES
        };
        self.with_maps(|maps| {
            maps.update_config(|config| {
                config.node_addr = mesh::be_addr(self.local);
                config.underlay_ifindex = self.underlay;
                config.flags = flags;
            })
        })?;
        if set.nodes.is_empty() && !set.networks.is_empty() {
            tracing::warn!(
                "the manager sent no node list: VXLAN is accepted from any address until it does"
            );
        }
        mesh::attach_underlay(root, self.underlay)?;
        Ok(())
    }

    /// The load-balancing tables: published ports and every service VIP on
    /// this node's networks, each with its running tasks.
    fn program_tables(&self, set: &AssignmentSet, published: &[MeshService]) -> Result<()> {
        let Some(root) = &self.bpf_root else {
            return Ok(());
        };
        let mut vips = Vec::new();
        for record in &set.services {
            let Ok(vip) = record.vip.parse::<Ipv4Addr>() else {
                continue; // dnsrr: no VIP
            };
            let tasks = |draining: bool| {
                let mut out: Vec<Ipv4Addr> = set
                    .endpoints
                    .iter()
                    .filter(|e| {
                        e.network_id == record.network_id && e.service_id == record.service_id
                    })
                    .filter(|e| if draining { e.draining } else { e.running })
                    .filter_map(|e| e.addr.parse().ok())
                    .collect();
                out.sort();
                out
            };
            vips.push(VipService {
                key: format!("{}/{}", record.service_id, record.network_id),
                vip,
                backends: tasks(false),
                draining: tasks(true),
                pick: pick_policy(set, &record.service_id),
            });
        }
        if published.is_empty()
            && vips.is_empty()
            && !root.map(shoal_agent_common::names::MESH_CONFIG).exists()
        {
            return Ok(());
        }
        mesh::ensure_maps(root)?;
        mesh::forget_gone_interfaces(root);
        self.with_maps(|maps| maps.sync(published, &vips))?;
        Ok(())
    }

    fn with_maps<T>(
        &self,
        f: impl FnOnce(&mut MeshMaps) -> Result<T, crate::datapath::DatapathError>,
    ) -> Result<T> {
        let root = self.bpf_root.as_ref().context("no bpffs root")?;
        let mut guard = self.mesh.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            mesh::ensure_maps(root)?;
            *guard = Some(MeshMaps::open(root)?);
        }
        let maps = guard.as_mut().context("mesh maps")?;
        Ok(f(maps)?)
    }

    /// `f` on the mesh's maps if this agent has opened them (for
    /// `/metrics`; None before the first push set the mesh up).
    pub fn read_mesh<T>(&self, f: impl FnOnce(&mut MeshMaps) -> T) -> Option<T> {
        let mut guard = self.mesh.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_mut().map(f)
    }

    /// The load balancer's counters on this node, per service.
    pub fn counters(&self) -> Vec<shoal_api::pb::ServiceCounters> {
        let mut guard = self.mesh.lock().unwrap_or_else(|e| e.into_inner());
        let Some(maps) = guard.as_mut() else {
            return Vec::new();
        };
        let mut out: Vec<_> = maps
            .stats()
            .into_iter()
            .map(|(service_id, s)| shoal_api::pb::ServiceCounters {
                service_id,
                connections: s.connections,
                packets: s.packets,
                bytes: s.bytes,
            })
            .collect();
        out.sort_by(|a, b| a.service_id.cmp(&b.service_id));
        out
    }

    fn network(&self, id: &str) -> Option<Network> {
        self.networks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// The resolver a task's containers should use: the gateway of its
    /// first network that has names (not ingress).
    pub fn resolver_for(&self, task: &Task) -> Option<Ipv4Addr> {
        task.networks
            .iter()
            .filter_map(|a| self.network(&a.network_id))
            .find(|n| !is_ingress(n))
            .and_then(|n| n.gateway.parse().ok())
    }

    /// Whether every interface of the task is plugged in (its host-side
    /// veths exist).
    pub async fn is_attached(&self, task: &Task) -> bool {
        let id = task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
        for a in &task.networks {
            let (host, _) = veth_names(id, &a.network_id);
            if !matches!(self.nl.link(&host).await, Ok(Some(_))) {
                return false;
            }
        }
        true
    }
}

/// Deletes every overlay device (and its iptables rules) in this network
/// namespace, for `shoal-agent leave`. Returns how many went.
pub async fn remove_all_devices() -> Result<usize> {
    let nl = Netlink::here()?;
    let mut removed = 0;
    for link in nl.links().await? {
        if link.name.starts_with(VXLAN_PREFIX) || link.name.starts_with(BRIDGE_PREFIX) {
            nl.delete_link(link.index).await?;
            if link.name.starts_with(BRIDGE_PREFIX) {
                firewall::clear(&link.name).await;
            }
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_macs_follow_addresses() {
        let (host, peer) = veth_names("k2w9c7x4u0v3yq8e5r1t6m2n0", "a9s8d7f6g5h4j3k2l1z0x9c8v");
        assert!(host.len() <= 15 && peer.len() <= 15);
        assert_eq!(host[3..], peer[3..]);
        assert_ne!(host, veth_names("other", "a9s8d7f6g5h4j3k2l1z0x9c8v").0);
        assert_eq!(bridge_name(16_777_215).len(), 12);
        assert_eq!(
            mac_of("198.18.1.5".parse().unwrap()),
            [0x02, 0x42, 198, 18, 1, 5]
        );
    }
}
