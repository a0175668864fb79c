//! How the mesh picks a service's backend for a new connection when the
//! service asks for more than round-robin: a Maglev lookup table
//! (`--lb maglev`) indexed by a hash of the flow, and per-client affinity
//! (`--endpoint-affinity client-ip`) indexed by a hash of the client's
//! address. The hash lives here, in one place, because every entry node
//! (eBPF) and the agent's tests (userspace) must compute it the same way:
//! that is what lets every node pick the same task without shared state.

/// `PickEntry::flags`: pick from the Maglev table by a hash of the flow.
pub const PICK_MAGLEV: u32 = 1;
/// `PickEntry::flags`: a client keeps its backend (per node, while it
/// comes back within `affinity_timeout_s`); new clients are picked from
/// the Maglev table by a hash of their address alone.
pub const PICK_AFFINITY: u32 = 2;

/// `MESH_MAGLEV` keys are `BackendKey { service, index }` with the
/// table's generation (0 or 1) in this bit of `index`: the agent writes a
/// new table into the generation not in use, then flips
/// `PickEntry::generation`, so a reader never sees a half-written table.
pub const MAGLEV_GENERATION_BIT: u32 = 1 << 31;

/// Entries in `MESH_MAGLEV` over all services (both generations while a
/// table is being replaced). Allocated as used (`BPF_F_NO_PREALLOC`), so
/// round-robin services cost nothing. Room for 32 Maglev services of
/// more than 16 backends (65,521 entries each), or 512 of up to 8 (4,093).
pub const MESH_MAX_MAGLEV_ENTRIES: u32 = 1 << 21;

/// Clients remembered per node for affinity (least recently used go).
pub const MESH_MAX_AFFINITY: u32 = 65_536;

/// Per service slot (`MESH_PICK`, an array): how its backends are picked.
/// All zero: round-robin. The agent changes exactly one `u32` per write
/// (array values are copied in place, not swapped), so a reader sees
/// either the old or the new value of that field and never a mix: a new
/// table's size is written to `sizes[1 - generation]` before
/// `generation` flips to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PickEntry {
    /// [`PICK_MAGLEV`], [`PICK_AFFINITY`].
    pub flags: u32,
    /// Which of the two tables readers use (0 or 1).
    pub generation: u32,
    /// Size (a prime) of each generation's table; 0: no table.
    pub sizes: [u32; 2],
    /// How long a client's affinity lasts without a new connection.
    pub affinity_timeout_s: u32,
    pub _pad: u32,
}

/// `MESH_AFFINITY` key: a client of one service slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub service: u32,
    /// The client's address (network order).
    pub client: u32,
}

/// `MESH_AFFINITY` value: the backend a client was sent to, and when it
/// last opened a connection (`bpf_ktime_get_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityEntry {
    pub backend: crate::Backend,
    pub used_ns: u64,
}

/// A 32-bit finaliser (MurmurHash3's fmix32): every input bit flips
/// about half of the output bits.
#[inline(always)]
pub const fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

const FLOW_SEED: u32 = 0x5348_4f41; // "SHOA"

/// The hash a Maglev service picks a flow's backend by: the client's
/// address and port, the service's port (published or VIP) and the
/// protocol, as the packet carries them (network order). Not the address
/// the client sent to: entering at another node (another address) the
/// same flow must reach the same task.
#[inline(always)]
pub const fn flow_hash(client: u32, client_port: u16, service_port: u16, proto: u8) -> u32 {
    let ports = ((client_port as u32) << 16) | service_port as u32;
    mix32(mix32(mix32(client ^ FLOW_SEED) ^ ports) ^ proto as u32)
}

/// The hash an affinity service picks a new client's backend by: its
/// address alone, so all its connections agree on every node.
#[inline(always)]
pub const fn client_hash(client: u32) -> u32 {
    mix32(client ^ FLOW_SEED)
}

#[cfg(feature = "user")]
// SAFETY: plain-old-data, `#[repr(C)]`, explicit padding fields.
unsafe impl aya::Pod for PickEntry {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for AffinityKey {}
#[cfg(feature = "user")]
// SAFETY: as above (`Backend` is 8 bytes, then a u64).
unsafe impl aya::Pod for AffinityEntry {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_hidden_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<PickEntry>(), 24);
        assert_eq!(size_of::<AffinityKey>(), 8);
        assert_eq!(size_of::<AffinityEntry>(), 16);
    }

    #[test]
    fn flow_hash_depends_on_every_field() {
        let base = flow_hash(0x6400_02c0, 40000, 8080, 6);
        assert_ne!(base, flow_hash(0x6500_02c0, 40000, 8080, 6));
        assert_ne!(base, flow_hash(0x6400_02c0, 40001, 8080, 6));
        assert_ne!(base, flow_hash(0x6400_02c0, 40000, 8081, 6));
        assert_ne!(base, flow_hash(0x6400_02c0, 40000, 8080, 17));
        // Fixed across builds and nodes: the value an independent
        // implementation (MurmurHash3's fmix32, by hand) gives.
        assert_eq!(base, 0x163d_b7e6);
    }
}
