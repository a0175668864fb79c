//! How each service slot's backends are picked: the typed wrapper over
//! `MESH_PICK` (per slot: Maglev, affinity, which table generation is in
//! use), `MESH_MAGLEV` (the tables) and `MESH_AFFINITY` (the clients each
//! node remembers). See `agent-ebpf/src/pick.rs` for the reading side.
//!
//! A new table is written whole into the generation readers do not use,
//! then one field flips them over to it, then the old one is removed:
//! the fast path never sees a half-written table.

use std::{collections::HashMap, path::PathBuf};

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use shoal_agent_common::{
    AffinityEntry, AffinityKey, Backend, BackendKey, MAGLEV_GENERATION_BIT, PICK_AFFINITY,
    PICK_MAGLEV, PickEntry, names,
};

use super::{BpfRoot, DatapathError, maglev, mesh::open_map};

/// What a service asks of the pick, as the manager pushed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PickPolicy {
    /// `--lb maglev`.
    pub maglev: bool,
    /// `--endpoint-affinity client-ip:TIMEOUT`, in seconds; 0: off.
    pub affinity_timeout_s: u32,
}

impl PickPolicy {
    fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.maglev {
            flags |= PICK_MAGLEV;
        }
        if self.affinity_timeout_s > 0 {
            flags |= PICK_AFFINITY;
        }
        flags
    }
}

/// What one slot's pick holds now: its entry and the backends its table
/// in use was built from (`None`: not known, e.g. after a restart).
struct Held {
    entry: PickEntry,
    built_from: Option<Vec<Backend>>,
}

pub struct PickMaps {
    root: PathBuf,
    pick: Array<MapData, PickEntry>,
    maglev: BpfHashMap<MapData, BackendKey, Backend>,
    affinity: BpfHashMap<MapData, AffinityKey, AffinityEntry>,
    held: HashMap<u32, Held>,
}

impl PickMaps {
    pub fn open(root: &BpfRoot) -> Result<Self, DatapathError> {
        let error = |name: &str| {
            let path = root.map(name);
            move |source| DatapathError::Map { path, source }
        };
        Ok(Self {
            root: root.maps_dir(),
            pick: Array::try_from(open_map(root, names::MESH_PICK)?)
                .map_err(error(names::MESH_PICK))?,
            maglev: BpfHashMap::try_from(open_map(root, names::MESH_MAGLEV)?)
                .map_err(error(names::MESH_MAGLEV))?,
            affinity: BpfHashMap::try_from(open_map(root, names::MESH_AFFINITY)?)
                .map_err(error(names::MESH_AFFINITY))?,
            held: HashMap::new(),
        })
    }

    fn error(&self, source: aya::maps::MapError) -> DatapathError {
        DatapathError::Map {
            path: self.root.clone(),
            source,
        }
    }

    /// Makes `slot` pick its `backends` (in the order `MESH_BACKENDS`
    /// has them) as `policy` says. Writes nothing when nothing changed.
    pub fn apply(
        &mut self,
        slot: u32,
        policy: PickPolicy,
        backends: &[Backend],
    ) -> Result<(), DatapathError> {
        let mut entry = self.held(slot)?;
        let flags = policy.flags();
        if flags == 0 {
            if entry.flags != 0 {
                entry.flags = 0;
                self.write(slot, entry)?;
                self.forget_clients(slot);
            }
            for generation in 0..2 {
                if entry.sizes[generation] != 0 {
                    self.remove_table(slot, generation as u32, entry.sizes[generation]);
                    entry.sizes[generation] = 0;
                    self.write(slot, entry)?;
                }
            }
            self.set_built_from(slot, None);
            return Ok(());
        }
        let current = self.held.get(&slot).and_then(|h| h.built_from.as_deref());
        if current != Some(backends) {
            entry = self.replace_table(slot, entry, backends)?;
            self.set_built_from(slot, Some(backends.to_vec()));
        }
        if entry.affinity_timeout_s != policy.affinity_timeout_s {
            entry.affinity_timeout_s = policy.affinity_timeout_s;
            self.write(slot, entry)?;
        }
        if entry.flags != flags {
            if flags & PICK_AFFINITY == 0 {
                self.forget_clients(slot);
            }
            entry.flags = flags;
            self.write(slot, entry)?;
        }
        Ok(())
    }

    /// A slot nothing uses any more: no table, no remembered clients (a
    /// service given the slot later must not inherit them).
    pub fn clear(&mut self, slot: u32) -> Result<(), DatapathError> {
        self.apply(slot, PickPolicy::default(), &[])?;
        self.forget_clients(slot);
        self.held.remove(&slot);
        Ok(())
    }

    /// The slot's entry, read from the map the first time (an agent that
    /// restarted continues the generations the data plane is using).
    fn held(&mut self, slot: u32) -> Result<PickEntry, DatapathError> {
        if let Some(held) = self.held.get(&slot) {
            return Ok(held.entry);
        }
        let entry = self.pick.get(&slot, 0).map_err(|e| self.error(e))?;
        self.held.insert(
            slot,
            Held {
                entry,
                built_from: None,
            },
        );
        Ok(entry)
    }

    fn set_built_from(&mut self, slot: u32, backends: Option<Vec<Backend>>) {
        if let Some(held) = self.held.get_mut(&slot) {
            held.built_from = backends;
        }
    }

    /// Writes the slot's entry. Callers change one field per write: the
    /// kernel copies an array value in place, so a reader may see some
    /// fields of the old value and some of the new.
    fn write(&mut self, slot: u32, entry: PickEntry) -> Result<(), DatapathError> {
        self.pick.set(slot, entry, 0).map_err(|e| self.error(e))?;
        if let Some(held) = self.held.get_mut(&slot) {
            held.entry = entry;
        }
        Ok(())
    }

    /// Builds the table of `backends` into the generation not in use,
    /// flips readers over to it, and removes the old one.
    fn replace_table(
        &mut self,
        slot: u32,
        mut entry: PickEntry,
        backends: &[Backend],
    ) -> Result<PickEntry, DatapathError> {
        let active = entry.generation & 1;
        let inactive = 1 - active;
        // Whatever an interrupted earlier write left in the inactive half.
        self.remove_table(slot, inactive, entry.sizes[inactive as usize]);
        let size = if backends.is_empty() {
            0
        } else {
            maglev::table_size(backends.len())
        };
        let identities: Vec<[u8; 6]> = backends.iter().map(identity).collect();
        let table = maglev::build(&identities, size);
        for (index, chosen) in table.iter().enumerate() {
            let key = table_key(slot, inactive, index as u32);
            self.maglev
                .insert(key, backends[*chosen as usize], 0)
                .map_err(|e| self.error(e))?;
        }
        entry.sizes[inactive as usize] = size;
        self.write(slot, entry)?;
        entry.generation = inactive;
        self.write(slot, entry)?;
        // A reader that took the old generation just before the flip may
        // find its entry gone: it falls back to round-robin for that one
        // connection.
        self.remove_table(slot, active, entry.sizes[active as usize]);
        entry.sizes[active as usize] = 0;
        self.write(slot, entry)?;
        Ok(entry)
    }

    fn remove_table(&mut self, slot: u32, generation: u32, size: u32) {
        for index in 0..size {
            let _ = self.maglev.remove(&table_key(slot, generation, index));
        }
    }

    /// Removes the clients remembered for `slot` (rare: a service turning
    /// affinity off, or going away).
    fn forget_clients(&mut self, slot: u32) {
        let keys: Vec<AffinityKey> = self
            .affinity
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.service == slot)
            .collect();
        for key in keys {
            let _ = self.affinity.remove(&key);
        }
    }
}

/// A backend's stable identity for its Maglev permutation: its address
/// and port as the maps hold them (a task keeps both for its life).
pub(crate) fn identity(backend: &Backend) -> [u8; 6] {
    let mut id = [0u8; 6];
    id[..4].copy_from_slice(&backend.addr.to_ne_bytes());
    id[4..].copy_from_slice(&backend.port.to_ne_bytes());
    id
}

fn table_key(slot: u32, generation: u32, index: u32) -> BackendKey {
    BackendKey {
        service: slot,
        index: if generation == 0 {
            index
        } else {
            index | MAGLEV_GENERATION_BIT
        },
    }
}
