//! The routing mesh's maps and programs on one node: typed wrappers over
//! the pinned maps (config, published ports, backends, per-service stats)
//! and the attachment of `mesh_ingress` (underlay, TC ingress) and
//! `mesh_reply` (ingress bridge, TC ingress) through pinned TCX links, so
//! connections keep flowing while the agent is down.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    path::PathBuf,
};

use aya::{
    EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray},
    programs::{LinkOrder, TcAttachType},
};
use shoal_agent_common::{
    Backend, BackendKey, LIVE_DRAINING, MESH_FIRST_VIP_SLOT, MESH_MAX_SERVICES, MeshConfig,
    PortEntry, PortKey, ServiceStats, names,
};

use super::{
    BpfRoot, DatapathError, EBPF_OBJECT,
    loader::attach,
    pick::{PickMaps, PickPolicy},
};

/// Network-order u32 of an address, as packets carry it.
pub fn be_addr(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

pub(crate) fn be_port(port: u16) -> u16 {
    u16::from_ne_bytes(port.to_be_bytes())
}

pub fn proto_number(protocol: &str) -> Option<u8> {
    match protocol {
        "tcp" | "" => Some(6),
        "udp" => Some(17),
        _ => None,
    }
}

/// Loads the object once so that its maps exist (pinned), if they do not.
pub fn ensure_maps(root: &BpfRoot) -> Result<(), DatapathError> {
    root.prepare()?;
    // Maps a newer object added (the DNS ones) are created by loading it
    // again: pinned maps that exist are reused as they are.
    if root.map(names::MESH_CONFIG).exists()
        && root.map(names::DNS_NAMES).exists()
        && root.map(names::TASK_SOURCES).exists()
    {
        return Ok(());
    }
    EbpfLoader::new()
        .default_map_pin_directory(root.maps_dir())
        .load(EBPF_OBJECT)?;
    Ok(())
}

/// The routing mesh: `mesh_ingress` on the underlay and `mesh_reply` on
/// the ingress bridge (TC ingress both).
pub fn attach_mesh(root: &BpfRoot, underlay: u32, bridge: u32) -> Result<(), DatapathError> {
    // After the counters, which go first and pass every packet on.
    attach(
        root,
        &[
            (names::MESH_INGRESS, underlay, TcAttachType::Ingress),
            (names::MESH_REPLY, bridge, TcAttachType::Ingress),
        ],
        LinkOrder::last,
    )
}

/// `mesh_ingress` alone on the underlay (TC ingress): it guards the
/// node's VXLAN port (see `guard`) before the ingress network, and the
/// rest of the mesh, are there.
pub fn attach_underlay(root: &BpfRoot, underlay: u32) -> Result<(), DatapathError> {
    attach(
        root,
        &[(names::MESH_INGRESS, underlay, TcAttachType::Ingress)],
        LinkOrder::last,
    )
}

/// VIP balancing on a task's host-side veth: `vip_out` on what the task
/// sends, `vip_in` on what it receives. `source` is the task's address on
/// the veth's network, the only source `vip_out` lets its packets carry;
/// written before the programs are attached.
pub fn attach_vip(root: &BpfRoot, veth: u32, source: Ipv4Addr) -> Result<(), DatapathError> {
    set_task_source(root, veth, source)?;
    attach(
        root,
        &[
            (names::VIP_OUT, veth, TcAttachType::Ingress),
            (names::VIP_IN, veth, TcAttachType::Egress),
        ],
        LinkOrder::last,
    )
}

/// What [`ensure_vips`] had to put back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ensured {
    /// Veths that got their VIP programs (and source) back.
    pub attached: usize,
    /// Veths that kept their programs but whose `TASK_SOURCES` entry was
    /// missing or another address.
    pub sources: usize,
}

/// Gives back their VIP programs to task veths (ifindex, the task's
/// address on that network) that lost them: a container that outlived
/// its agent keeps its veths, but an agent of a new layout removed the old
/// layout's pins (and with them the programs), and one of a new build has
/// newer programs to put in. A veth that kept its programs gets its
/// `TASK_SOURCES` entry back if it lost it (the sweep of gone interfaces
/// can take the entry of an index freed and taken again while it looks):
/// a task is never left unjudged past the next push. A veth that went
/// meanwhile is skipped.
pub fn ensure_vips(root: &BpfRoot, veths: &[(u32, Ipv4Addr)]) -> Ensured {
    let mut ensured = Ensured::default();
    let mut sources = task_sources(root).ok();
    for (veth, source) in veths {
        let there = [names::VIP_OUT, names::VIP_IN]
            .iter()
            .all(|program| root.link(*veth, program).exists());
        if there {
            if let Some(sources) = &mut sources
                && sources.get(veth, 0).ok() != Some(be_addr(*source))
            {
                match sources.insert(veth, be_addr(*source), 0) {
                    Ok(()) => ensured.sources += 1,
                    Err(error) => {
                        tracing::warn!(veth, %source, %error, "could not write a task veth's source back");
                    }
                }
            }
            continue;
        }
        match attach_vip(root, *veth, *source) {
            Ok(()) => ensured.attached += 1,
            Err(error) => {
                tracing::warn!(veth, %source, %error, "could not give a task's veth its VIP programs back");
            }
        }
    }
    ensured
}

/// Writes the one source address `vip_out` lets packets from the task
/// behind `veth` carry (`TASK_SOURCES`).
pub fn set_task_source(root: &BpfRoot, veth: u32, source: Ipv4Addr) -> Result<(), DatapathError> {
    ensure_maps(root)?;
    task_sources(root)?
        .insert(veth, be_addr(source), 0)
        .map_err(map_error(root, names::TASK_SOURCES))
}

/// Forgets the pins under one ifindex: a new interface may get the index
/// of one that is gone, and must not be taken as attached already.
pub fn forget_interface(root: &BpfRoot, ifindex: u32) {
    let _ = std::fs::remove_dir_all(root.links_dir(ifindex));
    if let Ok(mut sources) = task_sources(root) {
        let _ = sources.remove(&ifindex);
    }
}

/// The pinned `TASK_SOURCES` map. Its entries are removed best effort: a
/// stale one is harmless (a new veth with its index is written before its
/// programs are attached), and every push sweeps those of gone interfaces.
fn task_sources(root: &BpfRoot) -> Result<BpfHashMap<MapData, u32, u32>, DatapathError> {
    BpfHashMap::try_from(open_map(root, names::TASK_SOURCES)?)
        .map_err(map_error(root, names::TASK_SOURCES))
}

/// Forgets the pins and task sources of interfaces that are gone (a
/// task's veth goes with its container; the kernel has already detached
/// its links).
pub fn forget_gone_interfaces(root: &BpfRoot) {
    let dir = root.links_dir(0);
    let entries = dir.parent().and_then(|links| std::fs::read_dir(links).ok());
    for entry in entries.into_iter().flatten().flatten() {
        let gone = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|ifindex| super::ifname_of(ifindex).is_none());
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    // Not under the link pins' lock with `plug`: an index freed and taken
    // again between the two calls below loses its new entry, and that veth
    // goes unjudged (never cut off) until the next push's `ensure_vips`
    // writes it back.
    if let Ok(mut sources) = task_sources(root) {
        let gone: Vec<u32> = sources
            .keys()
            .flatten()
            .filter(|veth| super::ifname_of(*veth).is_none())
            .collect();
        for veth in gone {
            let _ = sources.remove(&veth);
        }
    }
}

/// A service VIP on one network as the mesh balances it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipService {
    /// Stable name of the (service, network) pair.
    pub key: String,
    pub vip: Ipv4Addr,
    /// Task addresses on that network, in a stable order.
    pub backends: Vec<Ipv4Addr>,
    /// Tasks that take no new connection but keep their open ones
    /// (stopping, or failing their health check): live, not picked.
    pub draining: Vec<Ipv4Addr>,
    pub pick: PickPolicy,
}

/// One published port as the mesh serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshService {
    pub service_id: String,
    pub proto: u8,
    pub port: u16,
    /// `MODE_INGRESS` or `MODE_HOST` (backends: this node's tasks only).
    pub mode: u16,
    /// (task address on the ingress network, target port), in a stable order.
    pub backends: Vec<(Ipv4Addr, u16)>,
    /// As `backends`, the tasks that keep their open connections but take
    /// no new one (stopping, or failing their health check).
    pub draining: Vec<(Ipv4Addr, u16)>,
    /// Maglev and affinity (ingress mode only: host mode picks among
    /// this node's own tasks).
    pub pick: PickPolicy,
}

impl MeshService {
    /// One slot per published port: a service's ingress and host-mode
    /// ports have different backends.
    fn slot_key(&self) -> String {
        format!("{}:{}/{}", self.service_id, self.port, self.proto)
    }
}

/// The mesh's pinned maps on one node.
pub struct MeshMaps {
    root: PathBuf,
    config: Array<MapData, MeshConfig>,
    ports: BpfHashMap<MapData, PortKey, PortEntry>,
    backends: BpfHashMap<MapData, BackendKey, Backend>,
    stats: PerCpuArray<MapData, ServiceStats>,
    live: BpfHashMap<MapData, Backend, u32>,
    vips: BpfHashMap<MapData, u32, PortEntry>,
    tunnels: BpfHashMap<MapData, u32, u32>,
    local: BpfHashMap<MapData, u32, u32>,
    pick: PickMaps,
    /// What the maps hold: read once when opened, then kept by every
    /// write (the agent is their only writer), so a push costs map
    /// syscalls only for what changed, not for every entry.
    written: Written,
    /// Service id (ports) or VIP key → slot in the per-service maps.
    slots: HashMap<String, u32>,
    /// Where the next free-slot search starts, per slot range.
    next_slot: HashMap<u32, u32>,
    /// Last totals read per slot, and when idle slots were last read.
    stats_cache: HashMap<u32, ServiceStats>,
    idle_read_at: Option<std::time::Instant>,
}

/// How often the counters of ports and VIPs without backends are re-read.
const IDLE_STATS_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Default)]
struct Written {
    ports: HashMap<PortKey, PortEntry>,
    vips: HashMap<u32, PortEntry>,
    backends: HashMap<BackendKey, Backend>,
    live: HashMap<Backend, u32>,
    tunnels: HashMap<u32, u32>,
    local: HashMap<u32, u32>,
}

impl MeshMaps {
    /// Opens the maps an earlier `attach_mesh` pinned.
    pub fn open(root: &BpfRoot) -> Result<Self, DatapathError> {
        let config = Array::try_from(open_map(root, names::MESH_CONFIG)?)
            .map_err(map_error(root, names::MESH_CONFIG))?;
        let stats = PerCpuArray::try_from(open_map(root, names::MESH_STATS)?)
            .map_err(map_error(root, names::MESH_STATS))?;
        let (ports, held_ports) = open_hash(root, names::MESH_PORTS)?;
        let (backends, held_backends) = open_hash(root, names::MESH_BACKENDS)?;
        let (live, held_live) = open_hash(root, names::MESH_LIVE)?;
        let (vips, held_vips) = open_hash(root, names::MESH_VIPS)?;
        let (tunnels, held_tunnels) = open_hash(root, names::MESH_TUNNELS)?;
        let (local, held_local) = open_hash(root, names::MESH_LOCAL)?;
        let written = Written {
            ports: held_ports,
            vips: held_vips,
            backends: held_backends,
            live: held_live,
            tunnels: held_tunnels,
            local: held_local,
        };
        Ok(Self {
            root: root.maps_dir(),
            config,
            ports,
            backends,
            stats,
            live,
            vips,
            tunnels,
            local,
            pick: PickMaps::open(root)?,
            written,
            slots: HashMap::new(),
            next_slot: HashMap::new(),
            stats_cache: HashMap::new(),
            idle_read_at: None,
        })
    }

    fn error(&self, source: aya::maps::MapError) -> DatapathError {
        DatapathError::Map {
            path: self.root.clone(),
            source,
        }
    }

    /// How many published ports the data plane serves now (what the
    /// agent has applied, not what the manager has pushed).
    pub fn published_ports(&self) -> usize {
        self.written.ports.len()
    }

    /// Changes the node's config (read, changed by `change`, written back
    /// if it differs): the ingress network's setup and the guards each
    /// own some of its fields.
    pub fn update_config(
        &mut self,
        change: impl FnOnce(&mut MeshConfig),
    ) -> Result<(), DatapathError> {
        let current = self.config.get(&0, 0).map_err(|e| self.error(e))?;
        let mut config = current;
        change(&mut config);
        if current != config {
            self.config.set(0, config, 0).map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// Makes the tunnel table exactly `remote`: each task on the ingress
    /// network that runs on another node, with that node's underlay
    /// address. Call it before `sync`, so that a backend never names a
    /// task whose node the table has wrong (one it does not name at all
    /// goes through the kernel's VXLAN device instead).
    pub fn set_tunnels(
        &mut self,
        remote: &HashMap<Ipv4Addr, Ipv4Addr>,
    ) -> Result<(), DatapathError> {
        let wanted = remote
            .iter()
            .map(|(task, node)| (be_addr(*task), be_addr(*node)))
            .collect();
        replace_all(&mut self.tunnels, &mut self.written.tunnels, wanted).map_err(|e| self.error(e))
    }

    /// Makes the local-task table exactly `tasks`: the ingress address of
    /// each task on this node, with its host-side veth's ifindex.
    pub fn set_local_tasks(&mut self, tasks: &HashMap<Ipv4Addr, u32>) -> Result<(), DatapathError> {
        let wanted = tasks
            .iter()
            .map(|(task, veth)| (be_addr(*task), *veth))
            .collect();
        replace_all(&mut self.local, &mut self.written.local, wanted).map_err(|e| self.error(e))
    }

    /// Adds one task plugged in just now (before the next push lists it).
    pub fn add_local_task(&mut self, task: Ipv4Addr, veth: u32) -> Result<(), DatapathError> {
        let task = be_addr(task);
        if self.written.local.get(&task) != Some(&veth) {
            self.local
                .insert(task, veth, 0)
                .map_err(|e| self.error(e))?;
            self.written.local.insert(task, veth);
        }
        Ok(())
    }

    /// Makes the published ports, the VIPs and their backends exactly
    /// these. Backends are written before a count grows and removed after
    /// it shrinks, so a packet never reads an index that is not there.
    /// Linear in the number of services; map syscalls only for changes.
    pub fn sync(
        &mut self,
        services: &[MeshService],
        vips: &[VipService],
    ) -> Result<(), DatapathError> {
        let service_keys: Vec<String> = services.iter().map(MeshService::slot_key).collect();
        // Slots survive agent restarts: what is in the maps keeps its slot.
        for (s, id) in services.iter().zip(&service_keys) {
            if let Some(entry) = self.written.ports.get(&port_key(s)) {
                self.slots.entry(id.clone()).or_insert(entry.service);
            }
        }
        for v in vips {
            if let Some(entry) = self.written.vips.get(&be_addr(v.vip)) {
                self.slots.entry(v.key.clone()).or_insert(entry.service);
            }
        }
        let wanted: HashSet<&str> = service_keys
            .iter()
            .map(String::as_str)
            .chain(vips.iter().map(|v| v.key.as_str()))
            .collect();
        self.slots.retain(|id, _| wanted.contains(id.as_str()));
        let mut used: HashSet<u32> = self.slots.values().copied().collect();

        let mut gone_ports: HashSet<PortKey> = self.written.ports.keys().copied().collect();
        let mut gone_vips: HashSet<u32> = self.written.vips.keys().copied().collect();
        let mut live_now: HashMap<Backend, u32> = HashMap::new();
        for (s, id) in services.iter().zip(&service_keys) {
            let slot = self.slot(id, 0..MESH_FIRST_VIP_SLOT, &mut used)?;
            let key = port_key(s);
            gone_ports.remove(&key);
            let previous = self.written.ports.get(&key).copied();
            let backends: Vec<Backend> = s
                .backends
                .iter()
                .map(|(addr, port)| Backend {
                    addr: be_addr(*addr),
                    port: be_port(*port),
                    _pad: 0,
                })
                .collect();
            let entry = PortEntry {
                service: slot,
                backends: backends.len().min(usize::from(u16::MAX)) as u16,
                mode: s.mode,
            };
            // The table before the port: a new port never opens with a
            // round-robin pick it did not ask for.
            let policy = if s.mode == shoal_agent_common::MODE_INGRESS {
                s.pick
            } else {
                PickPolicy::default()
            };
            self.pick.apply(slot, policy, &backends)?;
            self.write_entry(previous, entry, &backends, |this, entry| {
                this.ports
                    .insert(key, entry, 0)
                    .map_err(|e| this.error(e))?;
                this.written.ports.insert(key, entry);
                Ok(())
            })?;
            live_now.extend(backends.into_iter().map(|b| (b, slot)));
            live_now.extend(s.draining.iter().map(|(addr, port)| {
                let backend = Backend {
                    addr: be_addr(*addr),
                    port: be_port(*port),
                    _pad: 0,
                };
                (backend, slot | LIVE_DRAINING)
            }));
        }
        for v in vips {
            let slot = self.slot(&v.key, MESH_FIRST_VIP_SLOT..MESH_MAX_SERVICES, &mut used)?;
            let key = be_addr(v.vip);
            gone_vips.remove(&key);
            let previous = self.written.vips.get(&key).copied();
            // Port 0: a VIP keeps the connection's port.
            let backends: Vec<Backend> = v
                .backends
                .iter()
                .map(|addr| Backend {
                    addr: be_addr(*addr),
                    port: 0,
                    _pad: 0,
                })
                .collect();
            let entry = PortEntry {
                service: slot,
                backends: backends.len().min(usize::from(u16::MAX)) as u16,
                mode: 0,
            };
            self.pick.apply(slot, v.pick, &backends)?;
            self.write_entry(previous, entry, &backends, |this, entry| {
                this.vips.insert(key, entry, 0).map_err(|e| this.error(e))?;
                this.written.vips.insert(key, entry);
                Ok(())
            })?;
            live_now.extend(backends.into_iter().map(|b| (b, slot)));
            live_now.extend(v.draining.iter().map(|addr| {
                let backend = Backend {
                    addr: be_addr(*addr),
                    port: 0,
                    _pad: 0,
                };
                (backend, slot | LIVE_DRAINING)
            }));
        }
        // Which backends exist at all (draining ones too: their open
        // connections stay where they are): a connection tracked to one that is
        // gone moves at its next SYN.
        let stale: Vec<Backend> = self
            .written
            .live
            .keys()
            .filter(|b| !live_now.contains_key(b))
            .copied()
            .collect();
        for backend in stale {
            let _ = self.live.remove(&backend);
            self.written.live.remove(&backend);
        }
        for (backend, slot) in live_now {
            if self.written.live.get(&backend) != Some(&slot) {
                self.live
                    .insert(backend, slot, 0)
                    .map_err(|e| self.error(e))?;
                self.written.live.insert(backend, slot);
            }
        }
        // Ports and VIPs nothing publishes any more.
        for key in gone_ports {
            if let Some(entry) = self.written.ports.get(&key).copied() {
                self.ports.remove(&key).map_err(|e| self.error(e))?;
                self.written.ports.remove(&key);
                self.trim_backends(entry.service, 0, u32::from(entry.backends));
                self.pick.clear(entry.service)?;
            }
        }
        for key in gone_vips {
            if let Some(entry) = self.written.vips.get(&key).copied() {
                self.vips.remove(&key).map_err(|e| self.error(e))?;
                self.written.vips.remove(&key);
                self.trim_backends(entry.service, 0, u32::from(entry.backends));
                self.pick.clear(entry.service)?;
            }
        }
        Ok(())
    }

    /// Writes a port's or VIP's backends, then its entry if it changed,
    /// then drops the backends past a shrunk count.
    fn write_entry(
        &mut self,
        previous: Option<PortEntry>,
        entry: PortEntry,
        backends: &[Backend],
        write: impl FnOnce(&mut Self, PortEntry) -> Result<(), DatapathError>,
    ) -> Result<(), DatapathError> {
        let before = previous
            .filter(|e| e.service == entry.service)
            .map_or(0, |e| u32::from(e.backends));
        self.write_backends(entry.service, backends)?;
        if previous != Some(entry) {
            write(self, entry)?;
        }
        self.trim_backends(entry.service, backends.len() as u32, before);
        Ok(())
    }

    /// The slot of `id`, or the next free one in `range` (searching on
    /// from the last one handed out, so filling N slots is linear).
    fn slot(
        &mut self,
        id: &str,
        range: std::ops::Range<u32>,
        used: &mut HashSet<u32>,
    ) -> Result<u32, DatapathError> {
        if let Some(slot) = self.slots.get(id) {
            return Ok(*slot);
        }
        let cursor = self
            .next_slot
            .get(&range.start)
            .copied()
            .filter(|c| range.contains(c))
            .unwrap_or(range.start);
        let slot = (cursor..range.end)
            .chain(range.start..cursor)
            .find(|i| !used.contains(i))
            .ok_or_else(|| {
                self.error(aya::maps::MapError::OutOfBounds {
                    index: range.end,
                    max_entries: MESH_MAX_SERVICES,
                })
            })?;
        used.insert(slot);
        self.next_slot.insert(range.start, slot + 1);
        self.slots.insert(id.to_owned(), slot);
        Ok(slot)
    }

    fn write_backends(&mut self, slot: u32, backends: &[Backend]) -> Result<(), DatapathError> {
        for (i, backend) in backends.iter().enumerate() {
            let key = BackendKey {
                service: slot,
                index: i as u32,
            };
            if self.written.backends.get(&key) != Some(backend) {
                self.backends
                    .insert(key, *backend, 0)
                    .map_err(|e| self.error(e))?;
                self.written.backends.insert(key, *backend);
            }
        }
        Ok(())
    }

    fn trim_backends(&mut self, slot: u32, from: u32, to: u32) {
        for index in from..to {
            let key = BackendKey {
                service: slot,
                index,
            };
            let _ = self.backends.remove(&key);
            self.written.backends.remove(&key);
        }
    }

    /// Connections, packets and bytes per service on this node (its
    /// published ports and its VIPs together).
    pub fn stats(&mut self) -> HashMap<String, ServiceStats> {
        let mut out: HashMap<String, ServiceStats> = HashMap::new();
        for (id, total) in self.slot_stats() {
            // Slot keys are `SERVICE:PORT/PROTO` and `SERVICE/NETWORK`.
            let service = id.split([':', '/']).next().unwrap_or(&id).to_owned();
            out.entry(service).or_default().add(&total);
        }
        out
    }

    /// Entries the agent keeps in each of the mesh's maps (its mirror of
    /// them: it is their only writer), by map name.
    pub fn occupancy(&self) -> [(&'static str, usize); 6] {
        let w = &self.written;
        [
            (names::MESH_PORTS, w.ports.len()),
            (names::MESH_VIPS, w.vips.len()),
            (names::MESH_BACKENDS, w.backends.len()),
            (names::MESH_LIVE, w.live.len()),
            (names::MESH_TUNNELS, w.tunnels.len()),
            (names::MESH_LOCAL, w.local.len()),
        ]
    }

    /// Connections, packets and bytes per slot: each published port
    /// (`SERVICE:PORT/PROTO`, the protocol's number) and each VIP
    /// (`SERVICE/NETWORK`).
    pub fn slot_stats(&mut self) -> Vec<(String, ServiceStats)> {
        // Only a port or VIP with backends can count anything new (a
        // connection is counted once it has one; established ones to a
        // backend just removed still count a while): the idle ones are
        // read once a minute, not on every heartbeat, which with thousands
        // of published services was a burst of syscalls every 5 s.
        let active: std::collections::HashSet<u32> = self
            .written
            .ports
            .values()
            .chain(self.written.vips.values())
            .filter(|e| e.backends > 0)
            .map(|e| e.service)
            .collect();
        let refresh_idle = self
            .idle_read_at
            .is_none_or(|at| at.elapsed() >= IDLE_STATS_PERIOD);
        if refresh_idle {
            self.idle_read_at = Some(std::time::Instant::now());
        }
        let mut out = Vec::with_capacity(self.slots.len());
        for (id, slot) in &self.slots {
            let cached = self.stats_cache.get(slot).copied();
            let total = match cached {
                Some(cached) if !refresh_idle && !active.contains(slot) => cached,
                _ => {
                    let Ok(per_cpu) = self.stats.get(slot, 0) else {
                        continue;
                    };
                    let mut total = ServiceStats::default();
                    for s in per_cpu.iter() {
                        total.add(s);
                    }
                    self.stats_cache.insert(*slot, total);
                    total
                }
            };
            out.push((id.clone(), total));
        }
        let in_use: std::collections::HashSet<u32> = self.slots.values().copied().collect();
        self.stats_cache.retain(|slot, _| in_use.contains(slot));
        out
    }
}

fn map_error(root: &BpfRoot, name: &str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    let path = root.map(name);
    move |source| DatapathError::Map {
        path: path.clone(),
        source,
    }
}

pub(super) fn open_map(root: &BpfRoot, name: &str) -> Result<Map, DatapathError> {
    let data = MapData::from_pin(root.map(name)).map_err(map_error(root, name))?;
    Map::from_map_data(data).map_err(map_error(root, name))
}

/// A pinned hash map and a copy of what it holds.
type Mirrored<K, V> = (BpfHashMap<MapData, K, V>, HashMap<K, V>);

/// A pinned hash map, and what it holds now (the mirror `MeshMaps` keeps).
pub(super) fn open_hash<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
    root: &BpfRoot,
    name: &str,
) -> Result<Mirrored<K, V>, DatapathError> {
    let map: BpfHashMap<MapData, K, V> =
        BpfHashMap::try_from(open_map(root, name)?).map_err(map_error(root, name))?;
    let held = map
        .iter()
        .collect::<Result<_, _>>()
        .map_err(map_error(root, name))?;
    Ok((map, held))
}

/// Makes an address-keyed map (and its mirror) hold exactly `wanted`,
/// writing only what differs.
pub(super) fn replace_all<K, V>(
    map: &mut BpfHashMap<MapData, K, V>,
    written: &mut HashMap<K, V>,
    wanted: HashMap<K, V>,
) -> Result<(), aya::maps::MapError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod + PartialEq,
{
    let gone: Vec<K> = written
        .keys()
        .filter(|key| !wanted.contains_key(key))
        .copied()
        .collect();
    for key in gone {
        let _ = map.remove(&key);
        written.remove(&key);
    }
    for (key, value) in wanted {
        if written.get(&key) != Some(&value) {
            map.insert(key, value, 0)?;
            written.insert(key, value);
        }
    }
    Ok(())
}

fn port_key(s: &MeshService) -> PortKey {
    PortKey {
        port: be_port(s.port),
        proto: s.proto,
        _pad: 0,
    }
}
