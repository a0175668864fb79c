//! The allow-lists of published ports (agent-ebpf's `allow`) as the agent
//! keeps them: `ALLOW_PORTS` says which lists exist (a published port's,
//! and the node's under `ALLOW_NODE_PORT`), `ALLOW_CIDRS` holds their CIDRs
//! in one LPM trie keyed by (list, address).

use std::collections::{HashMap, HashSet};

use aya::maps::{
    HashMap as BpfHashMap, MapData,
    lpm_trie::{Key, LpmTrie},
};
use shoal_agent_common::{ALLOW_LIST_BITS, ALLOW_NODE_PORT, AllowKey, PortKey, names};
use shoal_api::cidr::Ipv4Cidr;

use super::{
    BpfRoot, DatapathError,
    mesh::{be_addr, be_port, open_hash, open_map, replace_all},
};

/// What the allow-lists must hold; the agent builds it from each push.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowTables {
    /// (published port, protocol number) → its list (never empty: a port
    /// without a list is not here).
    pub ports: HashMap<(u16, u8), Vec<Ipv4Cidr>>,
    /// The node's own list; empty: none.
    pub node: Vec<Ipv4Cidr>,
}

impl AllowTables {
    /// The `ALLOW_PORTS` entries: one per list.
    fn lists(&self) -> HashMap<PortKey, u32> {
        let mut lists: HashMap<PortKey, u32> = self
            .ports
            .keys()
            .map(|(port, proto)| (port_key(*port, *proto), 1))
            .collect();
        if !self.node.is_empty() {
            lists.insert(ALLOW_NODE_PORT, 1);
        }
        lists
    }

    /// The `ALLOW_CIDRS` entries, as (prefix length, data).
    fn cidrs(&self) -> HashSet<(u32, AllowKey)> {
        let ports = self
            .ports
            .iter()
            .flat_map(|((port, proto), cidrs)| cidrs.iter().map(|c| (port_key(*port, *proto), c)));
        let node = self.node.iter().map(|c| (ALLOW_NODE_PORT, c));
        ports
            .chain(node)
            .map(|(list, cidr)| {
                let key = AllowKey {
                    port: list.port,
                    proto: list.proto,
                    _pad: 0,
                    addr: be_addr(cidr.network()),
                };
                (ALLOW_LIST_BITS + u32::from(cidr.prefix), key)
            })
            .collect()
    }
}

fn port_key(port: u16, proto: u8) -> PortKey {
    PortKey {
        port: be_port(port),
        proto,
        _pad: 0,
    }
}

/// The allow-lists' pinned maps on one node.
pub struct AllowMaps {
    root: std::path::PathBuf,
    lists: BpfHashMap<MapData, PortKey, u32>,
    cidrs: LpmTrie<MapData, AllowKey, u32>,
    written_lists: HashMap<PortKey, u32>,
    written_cidrs: HashSet<(u32, AllowKey)>,
}

impl AllowMaps {
    /// Opens the pinned maps (`mesh::ensure_maps` creates them).
    pub fn open(root: &BpfRoot) -> Result<Self, DatapathError> {
        let (lists, written_lists) = open_hash(root, names::ALLOW_PORTS)?;
        let error = |source| DatapathError::Map {
            path: root.map(names::ALLOW_CIDRS),
            source,
        };
        let cidrs: LpmTrie<MapData, AllowKey, u32> =
            LpmTrie::try_from(open_map(root, names::ALLOW_CIDRS)?).map_err(error)?;
        let written_cidrs = cidrs
            .keys()
            .map(|key| key.map(|k| (k.prefix_len(), k.data())))
            .collect::<Result<_, _>>()
            .map_err(error)?;
        Ok(Self {
            root: root.maps_dir(),
            lists,
            cidrs,
            written_lists,
            written_cidrs,
        })
    }

    /// Makes the maps hold exactly `tables`, writing only what changed.
    /// New CIDRs go in before the lists that name them, and lists go
    /// before their CIDRs: a listed client is never dropped in between.
    pub fn sync(&mut self, tables: &AllowTables) -> Result<(), DatapathError> {
        let error = |source| DatapathError::Map {
            path: self.root.clone(),
            source,
        };
        let cidrs = tables.cidrs();
        for (prefix, data) in cidrs.difference(&self.written_cidrs) {
            self.cidrs
                .insert(&Key::new(*prefix, *data), 1, 0)
                .map_err(error)?;
        }
        self.written_cidrs.extend(cidrs.iter().copied());
        replace_all(&mut self.lists, &mut self.written_lists, tables.lists()).map_err(error)?;
        let gone: Vec<_> = self.written_cidrs.difference(&cidrs).copied().collect();
        for (prefix, data) in gone {
            let _ = self.cidrs.remove(&Key::new(prefix, data));
            self.written_cidrs.remove(&(prefix, data));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_cidrs_name_port_protocol_and_prefix() {
        let tables = AllowTables {
            ports: [((8080, 6), vec!["192.0.2.100/32".parse().unwrap()])].into(),
            node: vec!["192.0.2.0/24".parse().unwrap()],
        };
        let lists = tables.lists();
        assert_eq!(lists.len(), 2);
        assert!(lists.contains_key(&port_key(8080, 6)));
        assert!(lists.contains_key(&ALLOW_NODE_PORT));
        let cidrs = tables.cidrs();
        let port = AllowKey {
            port: be_port(8080),
            proto: 6,
            _pad: 0,
            addr: be_addr("192.0.2.100".parse().unwrap()),
        };
        let node = AllowKey {
            port: 0,
            proto: 0,
            _pad: 0,
            addr: be_addr("192.0.2.0".parse().unwrap()),
        };
        assert_eq!(cidrs, [(64, port), (56, node)].into());
    }

    #[test]
    fn host_bits_of_a_cidr_do_not_matter() {
        let tables = AllowTables {
            ports: [((53, 17), vec!["10.1.2.3/8".parse().unwrap()])].into(),
            node: Vec::new(),
        };
        let (prefix, key) = tables.cidrs().into_iter().next().unwrap();
        assert_eq!(prefix, 40);
        assert_eq!(key.addr, be_addr("10.0.0.0".parse().unwrap()));
        assert!(!tables.lists().contains_key(&ALLOW_NODE_PORT));
    }
}
