//! The mesh's connection tables (`MESH_CT`, confirmed connections, and
//! `MESH_SYN`, unconfirmed ones) as the agent reads them: for the sweeper
//! (`sweep`) and for `shoal-agent datapath conntrack`, which lists them.

use std::{
    net::Ipv4Addr,
    os::{fd::AsFd, unix::fs::MetadataExt},
};

use aya::maps::{HashMap as BpfHashMap, IterableMap, MapData};
use serde::Serialize;
use shoal_agent_common::{
    CT_CLOSING, CT_DSR, CT_ESTABLISHED, CT_FIN_CLIENT, CT_FIN_TASK, CT_HOST_MODE, CT_RESET,
    CT_RETURN, CT_VIP, CT_VIP_REPLY, CtEntry, CtKey, close::has_ended_here, names,
};

use super::{BpfRoot, DatapathError, batch, mesh::open_map, sweep::ConnectionTable};

/// A pinned connection table (`MESH_CT` or `MESH_SYN`).
pub struct PinnedTable {
    name: &'static str,
    map: BpfHashMap<MapData, CtKey, CtEntry>,
    pin: PinIdentity,
}

impl PinnedTable {
    /// Both of the node's tables, confirmed first; None if the data plane
    /// has not pinned them (yet).
    pub fn open_both(root: &BpfRoot) -> Result<Option<[Self; 2]>, DatapathError> {
        if !root.map(names::MESH_CT).exists() || !root.map(names::MESH_SYN).exists() {
            return Ok(None);
        }
        Ok(Some([
            Self::open(root, names::MESH_CT)?,
            Self::open(root, names::MESH_SYN)?,
        ]))
    }

    fn open(root: &BpfRoot, name: &'static str) -> Result<Self, DatapathError> {
        let path = root.map(name);
        let pin = PinIdentity::of(&path).map_err(|source| DatapathError::Bpffs {
            path: path.clone(),
            source,
        })?;
        let map =
            BpfHashMap::try_from(open_map(root, name)?).map_err(|source| DatapathError::Map {
                path: path.clone(),
                source,
            })?;
        Ok(Self { name, map, pin })
    }

    /// Whether this is still the table pinned under `root` (one stat, no
    /// map opened): the sweeper keeps its handles while it is.
    pub fn still_pinned(&self, root: &BpfRoot) -> bool {
        self.pin.still(&root.map(self.name))
    }

    /// Every entry now (an entry removed during the walk may end it early:
    /// the next sweep sees the rest).
    pub fn entries(&self) -> Vec<(CtKey, CtEntry)> {
        let mut out = Vec::new();
        self.walk(|key, entry| out.push((key, entry)));
        out
    }

    /// Calls `f` with each entry, as the walk reads it (nothing copied
    /// aside: a table holds up to 262,144 entries): in batches of
    /// [`batch::BATCH`], or entry by entry where the kernel has no batch
    /// reads (Linux before 5.6).
    fn walk(&self, mut f: impl FnMut(CtKey, CtEntry)) {
        match batch::read_all(self.map.map().fd().as_fd(), &mut f) {
            Ok(()) => return,
            Err(error) => {
                tracing::debug!(table = self.name, %error, "no batched read; reading entry by entry");
            }
        }
        // A kernel without batch reads refuses the first batch, so `f`
        // has seen nothing yet (one refused midway would show some
        // entries twice; the sweeper takes them as one).
        for item in self.map.iter() {
            match item {
                Ok((key, entry)) => f(key, entry),
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(error) => {
                    tracing::debug!(table = self.name, %error, "walking a connection table");
                    break;
                }
            }
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl ConnectionTable for PinnedTable {
    fn closed(&self) -> Result<Vec<(CtKey, CtEntry)>, DatapathError> {
        let mut closed = Vec::new();
        self.walk(|key, entry| {
            if has_ended_here(entry.flags) {
                closed.push((key, entry));
            }
        });
        Ok(closed)
    }

    fn get(&self, key: &CtKey) -> Option<CtEntry> {
        self.map.get(key, 0).ok()
    }

    fn remove(&mut self, key: &CtKey) -> bool {
        self.map.remove(key).is_ok()
    }
}

/// Which pin a table was opened from: its inode. A data plane pinned
/// anew (a node that left and joined again) has other pins, with other
/// inodes, under the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PinIdentity(u64);

impl PinIdentity {
    fn of(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self(std::fs::metadata(path)?.ino()))
    }

    /// Whether `path` is still this pin (false once it is gone or replaced).
    fn still(&self, path: &std::path::Path) -> bool {
        Self::of(path).is_ok_and(|now| now == *self)
    }
}

/// One direction of a tracked connection, as `datapath conntrack` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tracked {
    /// `MESH_CT` or `MESH_SYN`.
    pub table: &'static str,
    pub protocol: &'static str,
    pub source: String,
    pub destination: String,
    /// What the entry leads to (see `CtEntry`): the backend forward, the
    /// client (or the entry node) back.
    pub peer: String,
    pub nat_port: u16,
    pub flags: Vec<&'static str>,
    /// TCP: the sequence number of the client's last segment seen here
    /// (its FIN or RST counts only just past it).
    pub client_seq: u32,
}

const FLAG_NAMES: [(u32, &str); 10] = [
    (CT_ESTABLISHED, "established"),
    (CT_HOST_MODE, "host"),
    (CT_VIP, "vip"),
    (CT_VIP_REPLY, "vip-reply"),
    (CT_CLOSING, "closing"),
    (CT_RETURN, "return"),
    (CT_DSR, "dsr"),
    (CT_FIN_CLIENT, "fin-client"),
    (CT_FIN_TASK, "fin-task"),
    (CT_RESET, "reset"),
];

fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

fn port(be: u16) -> u16 {
    u16::from_be(be)
}

impl Tracked {
    pub fn new(table: &'static str, key: &CtKey, entry: &CtEntry) -> Self {
        Self {
            table,
            protocol: match key.proto {
                6 => "tcp",
                17 => "udp",
                _ => "other",
            },
            source: format!("{}:{}", addr(key.saddr), port(key.sport)),
            destination: format!("{}:{}", addr(key.daddr), port(key.dport)),
            peer: format!("{}:{}", addr(entry.addr), port(entry.port)),
            nat_port: port(entry.nat_port),
            flags: FLAG_NAMES
                .iter()
                .filter(|(bit, _)| entry.flags & bit != 0)
                .map(|(_, name)| *name)
                .collect(),
            client_seq: entry.client_seq,
        }
    }
}

/// Every entry of both tables now (none if the data plane is not there).
pub fn list(root: &BpfRoot) -> Result<Vec<Tracked>, DatapathError> {
    let Some(tables) = PinnedTable::open_both(root)? else {
        return Err(DatapathError::NotAttached(root.map(names::MESH_CT)));
    };
    Ok(tables
        .iter()
        .flat_map(|t| {
            t.entries()
                .into_iter()
                .map(|(k, e)| Tracked::new(t.name(), &k, &e))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_removed_or_made_anew_is_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("MESH_CT");
        std::fs::write(&path, b"").unwrap();
        let pin = PinIdentity::of(&path).unwrap();
        assert!(pin.still(&path));
        // Kept open elsewhere, as the old map is by the sweeper's handle:
        // the new file cannot reuse its inode.
        let _old = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(!pin.still(&path), "a pin that is gone");
        std::fs::write(&path, b"").unwrap();
        assert!(!pin.still(&path), "a pin made anew under the same name");
    }

    #[test]
    fn an_entry_prints_with_host_order_ports_and_its_flags() {
        let key = CtKey {
            saddr: u32::from_ne_bytes([192, 0, 2, 100]),
            daddr: u32::from_ne_bytes([192, 0, 2, 1]),
            sport: 40000u16.to_be(),
            dport: 8080u16.to_be(),
            proto: 6,
            _pad: [0; 3],
        };
        let entry = CtEntry {
            addr: u32::from_ne_bytes([10, 255, 0, 5]),
            port: 80u16.to_be(),
            nat_port: 40000u16.to_be(),
            service: 1,
            flags: CT_ESTABLISHED | CT_CLOSING | CT_FIN_CLIENT,
            syn_seq: 0,
            client_seq: 12345,
        };
        let t = Tracked::new("MESH_CT", &key, &entry);
        assert_eq!(t.source, "192.0.2.100:40000");
        assert_eq!(t.destination, "192.0.2.1:8080");
        assert_eq!(t.peer, "10.255.0.5:80");
        assert_eq!(t.nat_port, 40000);
        assert_eq!(t.flags, ["established", "closing", "fin-client"]);
        assert_eq!(t.client_seq, 12345);
    }
}
