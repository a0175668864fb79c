//! Which backend a new connection goes to. Round-robin (`mesh::next_backend`)
//! unless the service's `MESH_PICK` slot asks for more:
//! - `--lb maglev`: the Maglev table the agent built for the service,
//!   indexed by a hash of the flow (client address and port, service port,
//!   protocol). Every node has the same table and computes the same hash,
//!   so a flow reaches the same task whichever node it enters at.
//! - `--endpoint-affinity client-ip`: a client seen within its timeout
//!   keeps its backend (`MESH_AFFINITY`, per node, refreshed by each new
//!   connection); a new one is picked from the table by a hash of its
//!   address alone, so every node sends it to the same task.
//!
//! Only a connection's first packet comes here: an established flow's
//! packets cost nothing more than before.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, LruHashMap},
};
use shoal_agent_common::{
    AffinityEntry, AffinityKey, Backend, BackendKey, MAGLEV_GENERATION_BIT, MESH_MAX_AFFINITY,
    MESH_MAX_MAGLEV_ENTRIES, MESH_MAX_SERVICES, PICK_AFFINITY, PICK_MAGLEV, PickEntry, PortEntry,
    client_hash, flow_hash,
};

use crate::mesh::{self, Flow};

/// Entries are allocated as tables are written: round-robin services
/// cost no memory.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map]
static MESH_PICK: Array<PickEntry> = Array::pinned(MESH_MAX_SERVICES, 0);
#[map]
static MESH_MAGLEV: HashMap<BackendKey, Backend> =
    HashMap::pinned(MESH_MAX_MAGLEV_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static MESH_AFFINITY: LruHashMap<AffinityKey, AffinityEntry> =
    LruHashMap::pinned(MESH_MAX_AFFINITY, 0);

/// The backend for a new connection `f` to `service`.
#[inline(always)]
pub(crate) fn backend(service: &PortEntry, f: &Flow) -> Option<Backend> {
    let pick = MESH_PICK.get(service.service).copied().unwrap_or_default();
    if pick.flags & (PICK_MAGLEV | PICK_AFFINITY) == 0 {
        return mesh::next_backend(service);
    }
    let generation = pick.generation & 1;
    let size = if generation == 0 {
        pick.sizes[0]
    } else {
        pick.sizes[1]
    };
    if size == 0 {
        return mesh::next_backend(service); // no table written yet
    }
    let table = Table {
        service: service.service,
        generation,
        size,
    };
    let chosen = if pick.flags & PICK_AFFINITY != 0 {
        affine(&table, &pick, f)
    } else {
        table.get(flow_hash(f.saddr, f.sport, f.dport, f.proto))
    };
    // A table entry missing (a reader that raced the agent's removal of
    // the previous generation) costs balance for one connection, never
    // the connection.
    chosen.or_else(|| mesh::next_backend(service))
}

/// One service's Maglev table in use.
struct Table {
    service: u32,
    generation: u32,
    size: u32,
}

impl Table {
    #[inline(always)]
    fn get(&self, hash: u32) -> Option<Backend> {
        let mut index = hash % self.size;
        if self.generation != 0 {
            index |= MAGLEV_GENERATION_BIT;
        }
        let key = BackendKey {
            service: self.service,
            index,
        };
        // SAFETY: the agent writes whole entries before a generation is
        // read, and never changes one while it is in use.
        unsafe { MESH_MAGLEV.get(key) }.copied()
    }
}

/// The client's backend on this node while it comes back within the
/// timeout and the backend still takes new connections (not draining:
/// stopping or failing its health check); else the table's pick for
/// its address, remembered from now on.
#[inline(always)]
fn affine(table: &Table, pick: &PickEntry, f: &Flow) -> Option<Backend> {
    let key = AffinityKey {
        service: table.service,
        client: f.saddr,
    };
    // SAFETY: a helper with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let timeout_ns = u64::from(pick.affinity_timeout_s) * 1_000_000_000;
    if let Some(entry) = MESH_AFFINITY.get_ptr_mut(key) {
        // SAFETY: the entry stays valid while the program runs (RCU);
        // fields are read and written whole.
        let entry = unsafe { &mut *entry };
        let backend = entry.backend;
        if now.wrapping_sub(entry.used_ns) < timeout_ns
            && mesh::is_pickable_backend(backend.addr, backend.port)
        {
            entry.used_ns = now;
            return Some(backend);
        }
    }
    let backend = table.get(client_hash(f.saddr))?;
    let _ = MESH_AFFINITY.insert(
        key,
        AffinityEntry {
            backend,
            used_ns: now,
        },
        0,
    );
    Some(backend)
}
