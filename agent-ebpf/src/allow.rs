//! Allow-lists of published ports: which client addresses may open a
//! connection to a port (`--publish …,allow=CIDR`) and to any published
//! port of this node (`shoal node update --ingress-allow CIDR`). Published
//! ports bypass the node's netfilter (the mesh takes them at TC ingress),
//! so host iptables rules cannot filter them: this does.
//!
//! Checked once, at a connection's first packet (one the connection
//! tables do not know): an established flow's packets never come here, so
//! the fast path pays nothing. A port (or node) with no list admits every
//! source; with both lists, a source must be on both.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, lpm_trie::Key},
};
use shoal_agent_common::{
    ALLOW_LIST_BITS, ALLOW_MAX_CIDRS, ALLOW_NODE_PORT, AllowKey, MESH_MAX_SERVICES, PortKey,
};

use crate::mesh::{self, Flow};

/// The lists that exist: published ports' `PortKey`s, and
/// `ALLOW_NODE_PORT` for the node's own.
#[map]
static ALLOW_PORTS: HashMap<PortKey, u32> = HashMap::pinned(MESH_MAX_SERVICES / 2 + 1, 0);
/// Every list's CIDRs, as `(list, address)` prefixes.
#[map]
static ALLOW_CIDRS: LpmTrie<AllowKey, u32> = LpmTrie::pinned(ALLOW_MAX_CIDRS, 0);

/// Whether a new connection `f` to a published port may go on (false:
/// drop it and count it).
#[inline(always)]
pub fn admits(f: &Flow) -> bool {
    let port = PortKey {
        port: f.dport,
        proto: f.proto,
        _pad: 0,
    };
    if !listed(&port, f.saddr) {
        return false;
    }
    // The node's list is for its published ports only: what else reaches
    // the node is the kernel's (and the host firewall's) to decide.
    !has_list(&ALLOW_NODE_PORT) || !mesh::is_published(&port) || listed(&ALLOW_NODE_PORT, f.saddr)
}

#[inline(always)]
fn has_list(list: &PortKey) -> bool {
    // SAFETY: a presence test.
    unsafe { ALLOW_PORTS.get(list) }.is_some()
}

/// Whether `addr` is on `list`, or `list` does not exist.
#[inline(always)]
fn listed(list: &PortKey, addr: u32) -> bool {
    if !has_list(list) {
        return true;
    }
    let key = Key::new(
        ALLOW_LIST_BITS + 32,
        AllowKey {
            port: list.port,
            proto: list.proto,
            _pad: 0,
            addr,
        },
    );
    ALLOW_CIDRS.get(&key).is_some()
}
