//! The routing mesh's maps and programs on one node: typed wrappers over
//! the pinned maps (config, published ports, backends, per-service stats)
//! and the attachment of `mesh_ingress` (underlay, TC ingress) and
//! `mesh_reply` (ingress bridge, TC ingress) through pinned TCX links, so
//! connections keep flowing while the agent is down.

use std::{collections::HashMap, net::Ipv4Addr, path::PathBuf};

use aya::{
    EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray},
    programs::{LinkOrder, TcAttachType},
};
use shoal_agent_common::{
    Backend, BackendKey, MESH_FIRST_VIP_SLOT, MESH_MAX_SERVICES, MeshConfig, PortEntry, PortKey,
    ServiceStats, names,
};

use super::{BpfRoot, DatapathError, EBPF_OBJECT, loader::attach};

/// Network-order u32 of an address, as packets carry it.
pub fn be_addr(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

fn be_port(port: u16) -> u16 {
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
    if root.map(names::MESH_CONFIG).exists() {
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

/// VIP balancing on a task's host-side veth: `vip_out` on what the task
/// sends, `vip_in` on what it receives.
pub fn attach_vip(root: &BpfRoot, veth: u32) -> Result<(), DatapathError> {
    attach(
        root,
        &[
            (names::VIP_OUT, veth, TcAttachType::Ingress),
            (names::VIP_IN, veth, TcAttachType::Egress),
        ],
        LinkOrder::last,
    )
}

/// Forgets the pins under one ifindex: a new interface may get the index
/// of one that is gone, and must not be taken as attached already.
pub fn forget_interface(root: &BpfRoot, ifindex: u32) {
    let _ = std::fs::remove_dir_all(root.links_dir(ifindex));
}

/// Forgets the pins of interfaces that are gone (a task's veth goes with
/// its container; the kernel has already detached its links).
pub fn forget_gone_interfaces(root: &BpfRoot) {
    let dir = root.links_dir(0);
    let Some(links) = dir.parent() else { return };
    let Ok(entries) = std::fs::read_dir(links) else {
        return;
    };
    for entry in entries.flatten() {
        let gone = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|ifindex| super::ifname_of(ifindex).is_none());
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
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
    /// Service id (ports) or VIP key → slot in the per-service maps.
    slots: HashMap<String, u32>,
}

impl MeshMaps {
    /// Opens the maps an earlier `attach_mesh` pinned.
    pub fn open(root: &BpfRoot) -> Result<Self, DatapathError> {
        fn open_map(root: &BpfRoot, name: &str) -> Result<Map, DatapathError> {
            let path = root.map(name);
            let error = |source| DatapathError::Map {
                path: path.clone(),
                source,
            };
            let data = MapData::from_pin(&path).map_err(error)?;
            Map::from_map_data(data).map_err(error)
        }
        let error = |name: &str| {
            let path = root.map(name);
            move |source| DatapathError::Map { path, source }
        };
        let config = Array::try_from(open_map(root, names::MESH_CONFIG)?)
            .map_err(error(names::MESH_CONFIG))?;
        let ports = BpfHashMap::try_from(open_map(root, names::MESH_PORTS)?)
            .map_err(error(names::MESH_PORTS))?;
        let backends = BpfHashMap::try_from(open_map(root, names::MESH_BACKENDS)?)
            .map_err(error(names::MESH_BACKENDS))?;
        let stats = PerCpuArray::try_from(open_map(root, names::MESH_STATS)?)
            .map_err(error(names::MESH_STATS))?;
        let live = BpfHashMap::try_from(open_map(root, names::MESH_LIVE)?)
            .map_err(error(names::MESH_LIVE))?;
        let vips = BpfHashMap::try_from(open_map(root, names::MESH_VIPS)?)
            .map_err(error(names::MESH_VIPS))?;
        Ok(Self {
            root: root.maps_dir(),
            config,
            ports,
            backends,
            stats,
            live,
            vips,
            slots: HashMap::new(),
        })
    }

    fn error(&self, source: aya::maps::MapError) -> DatapathError {
        DatapathError::Map {
            path: self.root.clone(),
            source,
        }
    }

    pub fn set_config(&mut self, config: MeshConfig) -> Result<(), DatapathError> {
        let current = self.config.get(&0, 0).map_err(|e| self.error(e))?;
        if current != config {
            self.config.set(0, config, 0).map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// Makes the published ports, the VIPs and their backends exactly
    /// these. Backends are written before a count grows and removed after
    /// it shrinks, so a packet never reads an index that is not there.
    pub fn sync(
        &mut self,
        services: &[MeshService],
        vips: &[VipService],
    ) -> Result<(), DatapathError> {
        let mut existing: HashMap<PortKey, PortEntry> = HashMap::new();
        for item in self.ports.iter() {
            let (key, entry) = item.map_err(|e| self.error(e))?;
            existing.insert(key, entry);
        }
        let mut existing_vips: HashMap<u32, PortEntry> = HashMap::new();
        for item in self.vips.iter() {
            let (key, entry) = item.map_err(|e| self.error(e))?;
            existing_vips.insert(key, entry);
        }
        // Slots survive agent restarts: what is in the maps keeps its slot.
        for s in services {
            if let Some(entry) = existing.get(&port_key(s)) {
                self.slots.entry(s.slot_key()).or_insert(entry.service);
            }
        }
        for v in vips {
            if let Some(entry) = existing_vips.get(&be_addr(v.vip)) {
                self.slots.entry(v.key.clone()).or_insert(entry.service);
            }
        }
        self.slots.retain(|id, _| {
            services.iter().any(|s| s.slot_key() == *id) || vips.iter().any(|v| &v.key == id)
        });
        let mut live_now: HashMap<Backend, u32> = HashMap::new();
        for s in services {
            let slot = self.slot(&s.slot_key(), 0..MESH_FIRST_VIP_SLOT)?;
            let key = port_key(s);
            let previous = existing.remove(&key);
            let before = previous
                .filter(|e| e.service == slot)
                .map_or(0, |e| u32::from(e.backends));
            let backends: Vec<Backend> = s
                .backends
                .iter()
                .map(|(addr, port)| Backend {
                    addr: be_addr(*addr),
                    port: be_port(*port),
                    _pad: 0,
                })
                .collect();
            self.write_backends(slot, &backends)?;
            let entry = PortEntry {
                service: slot,
                backends: backends.len().min(usize::from(u16::MAX)) as u16,
                mode: s.mode,
            };
            if previous != Some(entry) {
                self.ports
                    .insert(key, entry, 0)
                    .map_err(|e| self.error(e))?;
            }
            self.trim_backends(slot, backends.len() as u32, before);
            live_now.extend(backends.into_iter().map(|b| (b, slot)));
        }
        for v in vips {
            let slot = self.slot(&v.key, MESH_FIRST_VIP_SLOT..MESH_MAX_SERVICES)?;
            let key = be_addr(v.vip);
            let previous = existing_vips.remove(&key);
            let before = previous
                .filter(|e| e.service == slot)
                .map_or(0, |e| u32::from(e.backends));
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
            self.write_backends(slot, &backends)?;
            let entry = PortEntry {
                service: slot,
                backends: backends.len().min(usize::from(u16::MAX)) as u16,
                mode: 0,
            };
            if previous != Some(entry) {
                self.vips.insert(key, entry, 0).map_err(|e| self.error(e))?;
            }
            self.trim_backends(slot, backends.len() as u32, before);
            live_now.extend(backends.into_iter().map(|b| (b, slot)));
        }
        // Which backends exist at all: a connection tracked to one that is
        // gone moves at its next SYN.
        let stale: Vec<Backend> = self
            .live
            .keys()
            .filter_map(Result::ok)
            .filter(|b| !live_now.contains_key(b))
            .collect();
        for backend in stale {
            let _ = self.live.remove(&backend);
        }
        for (backend, slot) in live_now {
            if self.live.get(&backend, 0).ok() != Some(slot) {
                self.live
                    .insert(backend, slot, 0)
                    .map_err(|e| self.error(e))?;
            }
        }
        // Ports and VIPs nothing publishes any more.
        for (key, entry) in existing {
            self.ports.remove(&key).map_err(|e| self.error(e))?;
            self.trim_backends(entry.service, 0, u32::from(entry.backends));
        }
        for (key, entry) in existing_vips {
            self.vips.remove(&key).map_err(|e| self.error(e))?;
            self.trim_backends(entry.service, 0, u32::from(entry.backends));
        }
        Ok(())
    }

    /// The slot of `id`, or the first free one in `range`.
    fn slot(&mut self, id: &str, range: std::ops::Range<u32>) -> Result<u32, DatapathError> {
        if let Some(slot) = self.slots.get(id) {
            return Ok(*slot);
        }
        let used: std::collections::HashSet<u32> = self.slots.values().copied().collect();
        let end = range.end;
        let slot = range
            .into_iter()
            .find(|i| !used.contains(i))
            .ok_or_else(|| {
                self.error(aya::maps::MapError::OutOfBounds {
                    index: end,
                    max_entries: MESH_MAX_SERVICES,
                })
            })?;
        self.slots.insert(id.to_owned(), slot);
        Ok(slot)
    }

    fn write_backends(&mut self, slot: u32, backends: &[Backend]) -> Result<(), DatapathError> {
        for (i, backend) in backends.iter().enumerate() {
            let key = BackendKey {
                service: slot,
                index: i as u32,
            };
            if self.backends.get(&key, 0).ok() != Some(*backend) {
                self.backends
                    .insert(key, *backend, 0)
                    .map_err(|e| self.error(e))?;
            }
        }
        Ok(())
    }

    fn trim_backends(&mut self, slot: u32, from: u32, to: u32) {
        for index in from..to {
            let _ = self.backends.remove(&BackendKey {
                service: slot,
                index,
            });
        }
    }

    /// Connections, packets and bytes per service on this node (its
    /// published ports and its VIPs together).
    pub fn stats(&self) -> HashMap<String, ServiceStats> {
        let mut out: HashMap<String, ServiceStats> = HashMap::new();
        for (id, slot) in &self.slots {
            let Ok(per_cpu) = self.stats.get(slot, 0) else {
                continue;
            };
            // Slot keys are `SERVICE:PORT/PROTO` and `SERVICE/NETWORK`.
            let service = id.split([':', '/']).next().unwrap_or(id).to_owned();
            let total = out.entry(service).or_default();
            for s in per_cpu.iter() {
                total.add(s);
            }
        }
        out
    }
}

fn port_key(s: &MeshService) -> PortKey {
    PortKey {
        port: be_port(s.port),
        proto: s.proto,
        _pad: 0,
    }
}
