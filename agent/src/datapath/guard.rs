//! The data plane's guards (agent-ebpf's `guard`) as the agent keeps them:
//! the cluster's node addresses and this node's own (VXLAN is accepted only
//! from nodes; containers reach none of this node's ports but DNS), the
//! ports of other nodes containers may not reach, the published target
//! ports of the tasks here (all the ingress network's VXLAN may bring), and
//! the counters of what was dropped.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use shoal_agent_common::{
    DROP_NAMES, DROP_REASONS, PortKey, TARGET_DSR, TARGET_PUBLISHED, TargetKey, names,
};

use super::{
    BpfRoot, DatapathError,
    mesh::{be_addr, be_port, open_hash, open_map, replace_all},
};

/// What the guards must know; the agent builds it from each push.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardTables {
    /// Address → `ADDR_*` bits.
    pub addrs: HashMap<Ipv4Addr, u32>,
    /// (port, protocol number) containers may not reach on other nodes.
    pub node_ports: HashSet<(u16, u8)>,
    /// (task's ingress address, target port, protocol number) of the
    /// ports published in ingress mode by tasks here.
    pub targets: HashSet<(Ipv4Addr, u16, u8)>,
    /// The targets published with direct server return, and the
    /// published port their replies leave from.
    pub direct_return: HashMap<(Ipv4Addr, u16, u8), u16>,
}

/// The guards' pinned maps on one node.
pub struct GuardMaps {
    root: std::path::PathBuf,
    addrs: BpfHashMap<MapData, u32, u32>,
    ports: BpfHashMap<MapData, PortKey, u32>,
    targets: BpfHashMap<MapData, TargetKey, u32>,
    written_addrs: HashMap<u32, u32>,
    written_ports: HashMap<PortKey, u32>,
    written_targets: HashMap<TargetKey, u32>,
}

impl GuardMaps {
    /// Opens the pinned maps (`mesh::ensure_maps` creates them).
    pub fn open(root: &BpfRoot) -> Result<Self, DatapathError> {
        let (addrs, written_addrs) = open_hash(root, names::NODE_ADDRS)?;
        let (ports, written_ports) = open_hash(root, names::GUARD_PORTS)?;
        let (targets, written_targets) = open_hash(root, names::MESH_TARGETS)?;
        Ok(Self {
            root: root.maps_dir(),
            addrs,
            ports,
            targets,
            written_addrs,
            written_ports,
            written_targets,
        })
    }

    /// Makes the maps hold exactly `tables`, writing only what changed.
    pub fn sync(&mut self, tables: &GuardTables) -> Result<(), DatapathError> {
        let error = |source| DatapathError::Map {
            path: self.root.clone(),
            source,
        };
        let addrs = tables
            .addrs
            .iter()
            .map(|(addr, kind)| (be_addr(*addr), *kind))
            .collect();
        replace_all(&mut self.addrs, &mut self.written_addrs, addrs).map_err(error)?;
        let ports = tables
            .node_ports
            .iter()
            .map(|(port, proto)| {
                let key = PortKey {
                    port: be_port(*port),
                    proto: *proto,
                    _pad: 0,
                };
                (key, 1)
            })
            .collect();
        replace_all(&mut self.ports, &mut self.written_ports, ports).map_err(error)?;
        let targets = tables
            .targets
            .iter()
            .map(|(addr, port, proto)| {
                let key = TargetKey {
                    addr: be_addr(*addr),
                    port: be_port(*port),
                    proto: *proto,
                    _pad: 0,
                };
                let value = match tables.direct_return.get(&(*addr, *port, *proto)) {
                    Some(published) => {
                        TARGET_PUBLISHED | TARGET_DSR | (u32::from(*published) << 16)
                    }
                    None => TARGET_PUBLISHED,
                };
                (key, value)
            })
            .collect();
        replace_all(&mut self.targets, &mut self.written_targets, targets).map_err(error)
    }
}

/// Packets the data plane dropped since its maps were made, per reason
/// (`DROP_NAMES` order), summed over the CPUs.
pub fn drops(root: &BpfRoot) -> Result<Vec<(&'static str, u64)>, DatapathError> {
    let path = root.map(names::DROPS);
    if !path.exists() {
        return Err(DatapathError::NotAttached(path));
    }
    let error = |source| DatapathError::Map {
        path: path.clone(),
        source,
    };
    let map: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(open_map(root, names::DROPS)?).map_err(error)?;
    let mut out = Vec::with_capacity(DROP_REASONS as usize);
    for (slot, name) in DROP_NAMES.iter().enumerate() {
        let per_cpu = map.get(&(slot as u32), 0).map_err(error)?;
        out.push((*name, per_cpu.iter().copied().fold(0u64, u64::wrapping_add)));
    }
    Ok(out)
}
