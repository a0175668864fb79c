//! The mesh's connection tables. Confirmed connections (a TCP handshake
//! the client completed, a UDP flow its backend answered) live in
//! `MESH_CT`; new ones wait in `MESH_SYN`, a smaller LRU of their own, and
//! move over once confirmed. A flood of SYNs from spoofed sources never
//! completes a handshake, so it only ever evicts other unconfirmed
//! connections: established flows keep their entries whatever the flood.
//!
//! Every lookup tries `MESH_CT` first: an established flow's packets cost
//! one lookup, as with a single table; only handshakes look twice.

use aya_ebpf::{macros::map, maps::LruHashMap};
use shoal_agent_common::{CtEntry, CtKey, MESH_MAX_CONNECTIONS, MESH_MAX_EMBRYONIC};

const BPF_NOEXIST: u64 = 1;

#[map]
static MESH_CT: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(MESH_MAX_CONNECTIONS, 0);
#[map]
static MESH_SYN: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(MESH_MAX_EMBRYONIC, 0);

/// A tracked direction, and whether it is confirmed (in `MESH_CT`).
#[inline(always)]
pub fn lookup(key: &CtKey) -> Option<(CtEntry, bool)> {
    // SAFETY: entries are written whole; a torn read at worst sends one
    // packet to the previous backend of a reused key.
    if let Some(entry) = unsafe { MESH_CT.get(key) } {
        return Some((*entry, true));
    }
    // SAFETY: as above.
    unsafe { MESH_SYN.get(key) }.map(|e| (*e, false))
}

/// A tracked direction's entry (a copy, and where it is, for in-place
/// updates: it stays valid while the program runs, RCU), and whether it is
/// confirmed. One lookup, as [`lookup`].
#[inline(always)]
pub fn lookup_ptr(key: &CtKey) -> Option<(CtEntry, *mut CtEntry, bool)> {
    let (slot, confirmed) = get_ptr_mut(key)?;
    // SAFETY: as in `lookup`.
    Some((unsafe { *slot }, slot, confirmed))
}

/// A tracked direction's entry, from either table.
#[inline(always)]
pub fn get(key: &CtKey) -> Option<CtEntry> {
    lookup(key).map(|(e, _)| e)
}

/// A pointer to a tracked direction's entry, for in-place flag updates
/// (it stays valid while the program runs: RCU), and whether it is
/// confirmed.
#[inline(always)]
pub fn get_ptr_mut(key: &CtKey) -> Option<(*mut CtEntry, bool)> {
    if let Some(entry) = MESH_CT.get_ptr_mut(key) {
        return Some((entry, true));
    }
    MESH_SYN.get_ptr_mut(key).map(|e| (e, false))
}

/// Forgets a direction, wherever it is.
#[inline(always)]
pub fn remove(key: &CtKey) {
    let _ = MESH_CT.remove(key);
    let _ = MESH_SYN.remove(key);
}

/// Tracks a direction of a new connection, unconfirmed. `fresh`: only if
/// no entry holds the key (an old connection's entry, when the caller
/// decided to take its key over, goes from the confirmed table first, so
/// that lookups no longer find it there).
#[inline(always)]
pub fn insert_new(key: &CtKey, entry: &CtEntry, fresh: bool) -> bool {
    if fresh {
        return MESH_SYN.insert(key, entry, BPF_NOEXIST).is_ok();
    }
    let _ = MESH_CT.remove(key);
    MESH_SYN.insert(key, entry, 0).is_ok()
}

/// Moves both directions of a connection to the confirmed table.
#[inline(always)]
pub fn confirm(forward: &CtKey, reply: &CtKey) {
    // Reply first: a forward entry found confirmed always has its reply.
    for key in [reply, forward] {
        // SAFETY: as in `lookup`.
        if let Some(entry) = unsafe { MESH_SYN.get(key) }.copied()
            && MESH_CT.insert(key, entry, 0).is_ok()
        {
            let _ = MESH_SYN.remove(key);
        }
    }
}
