//! Who may send what through the node's data plane, and the counters of
//! what it dropped.
//!
//! - VXLAN (UDP 4789 to the node's underlay address, for the mesh's own
//!   tunnel and the kernel's overlay devices alike) only from the
//!   cluster's nodes; on the ingress network, only for the published
//!   target port of a task here or as a reply to a connection this node
//!   forwards: the ingress network carries the routing mesh and nothing
//!   else, so a node's address spoofed by a stranger reaches no other port.
//! - Containers reach no port of this node but its DNS server, and not the
//!   managers' API nor VXLAN on other nodes.
//! - A task's frames claim only its own addresses on that network (its
//!   MAC, the IPv4 source of every packet, the sender of every ARP packet)
//!   and are IPv4 or ARP, untagged: see [`spoofed`].

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    macros::map,
    maps::{HashMap, PerCpuArray},
    programs::TcContext,
};
use shoal_agent_common::{
    ADDR_CLUSTER_NODE, ADDR_DNS, ADDR_LOCAL, CtKey, DROP_REASONS, DROP_VXLAN_PORT,
    DROP_VXLAN_SOURCE, GUARD_NODES, MESH_MAX_SERVICES, MeshConfig, PortKey, TASK_MAX_VETHS,
    TargetKey,
};

use crate::{
    conntrack,
    mesh::{self, Flow, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_SYN},
    segment::Segment,
    tunnel,
};

/// Cluster nodes and this node's own addresses, as `ADDR_*` bits.
#[map]
static NODE_ADDRS: HashMap<u32, u32> = HashMap::pinned(MESH_MAX_SERVICES, 0);
/// Ports of other nodes containers may not reach.
#[map]
static GUARD_PORTS: HashMap<PortKey, u32> = HashMap::pinned(256, 0);
/// Local tasks' published target ports on the ingress network.
#[map]
static MESH_TARGETS: HashMap<TargetKey, u32> = HashMap::pinned(MESH_MAX_SERVICES * 4, 0);
/// A task's host-side veth (ifindex) → the one source address its packets
/// may carry (network order).
#[map]
static TASK_SOURCES: HashMap<u32, u32> = HashMap::pinned(TASK_MAX_VETHS, 0);
/// Packets dropped, per reason (`DROP_*`) and per CPU.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::pinned(DROP_REASONS, 0);

const DNS_PORT: u16 = 53;
const ETH_P_ARP: u16 = 0x0806;
/// The source MAC in an Ethernet header.
const ETH_SOURCE_OFF: usize = 6;
/// The EtherType in an Ethernet header.
const ETH_TYPE_OFF: usize = 12;
/// An IPv4 header's source address, after the Ethernet header.
const IPV4_SADDR_OFF: usize = mesh::ETH_HLEN + 12;
/// An ARP packet's sender hardware address, after the Ethernet header and
/// the fixed fields (hardware and protocol types and lengths, operation).
const ARP_SENDER_MAC_OFF: usize = mesh::ETH_HLEN + 8;
/// An ARP packet's sender protocol address, after the sender's 6-byte
/// hardware address.
const ARP_SENDER_OFF: usize = ARP_SENDER_MAC_OFF + 6;

/// Counts a drop and says to drop.
#[inline(always)]
pub fn drop_packet(reason: u32) -> i32 {
    if let Some(count) = DROPS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot, touched only by this CPU while we run.
        unsafe { *count += 1 };
    }
    TC_ACT_SHOT
}

#[inline(always)]
fn addr_flags(addr: u32) -> u32 {
    // SAFETY: the agent writes whole u32 values.
    unsafe { NODE_ADDRS.get(addr) }.copied().unwrap_or(0)
}

/// Whether a frame leaving a task on its host-side veth `veth` is one its
/// task may not send there. A task holds one IPv4 address on the veth's
/// network and the MAC derived from it, and Shoal's networks carry IPv4
/// and ARP alone, so it may send only:
/// - frames from its own MAC (a neighbour's MAC would move the bridge's
///   entry for it to this port);
/// - untagged (a VLAN tag the kernel took off, or a second one still on,
///   would carry the inner packet past these checks);
/// - IPv4 from its own address, of any kind (not only the TCP and UDP the
///   mesh reads: options, fragments and other protocols reach the overlay
///   too), or ARP with its own MAC and address as sender (0.0.0.0 for a
///   probe, RFC 5227), never another's (a neighbour's cache poisoned).
///
/// Everything else (another address, IPv6, other EtherTypes, a frame too
/// short to say who sends it) is judged spoofed. A veth the agent wrote no
/// address for is not judged: a missing write never cuts a task off.
#[inline(always)]
pub fn spoofed(ctx: &TcContext, veth: u32) -> bool {
    // SAFETY: the agent writes whole u32 values.
    let Some(held) = unsafe { TASK_SOURCES.get(veth) }.copied() else {
        return false;
    };
    let mac = mesh::mac_of(held);
    // SAFETY: a read of the context the kernel gave this program.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return true;
    }
    if ctx.load::<[u8; 6]>(ETH_SOURCE_OFF) != Ok(mac) {
        return true;
    }
    let Ok(ethertype) = ctx.load::<u16>(ETH_TYPE_OFF) else {
        return true;
    };
    match u16::from_be(ethertype) {
        mesh::ETH_P_IP => ctx.load::<u32>(IPV4_SADDR_OFF) != Ok(held),
        ETH_P_ARP => {
            ctx.load::<[u8; 6]>(ARP_SENDER_MAC_OFF) != Ok(mac)
                || !matches!(ctx.load::<u32>(ARP_SENDER_OFF), Ok(sender) if sender == held || sender == 0)
        }
        _ => true,
    }
}

/// Whether `addr` is one of this node's own addresses.
#[inline(always)]
pub fn is_own_addr(addr: u32) -> bool {
    addr_flags(addr) & ADDR_LOCAL != 0
}

/// VXLAN to this node (`outer` is UDP to its address, port 4789): the
/// drop verdict, or None to go on.
#[inline(always)]
pub fn vxlan_in(ctx: &TcContext, cfg: &MeshConfig, outer: &Flow) -> Option<i32> {
    if cfg.flags & GUARD_NODES != 0 && addr_flags(outer.saddr) & ADDR_CLUSTER_NODE == 0 {
        return Some(drop_packet(DROP_VXLAN_SOURCE));
    }
    if cfg.ingress_addr == 0 || tunnel::vni(ctx) != Some(cfg.ingress_vni) {
        return None;
    }
    let inner = match tunnel::inner_flow(ctx) {
        tunnel::Inner::Ports(inner) => inner,
        tunnel::Inner::Other => return None, // ARP, ICMP: no ports to check
        tunnel::Inner::Hidden => return Some(drop_packet(DROP_VXLAN_PORT)),
    };
    let allowed = if inner.daddr == cfg.ingress_addr
        || crate::clientip::is_reply_to_client(ctx, cfg, &inner)
    {
        // A task's reply to a connection this node forwards: `tunnel_in`
        // looks it up anyway (and decides with `untracked_reply`), except
        // in a GSO super-packet, which it leaves to the kernel.
        // SAFETY: a read of the context the kernel gave this program.
        let gso = unsafe { (*ctx.skb.skb).gso_size };
        gso == 0
            || conntrack::get(&inner.key()).is_some()
            || untracked_reply(ctx, &inner, tunnel::INNER_IP_OFF + 20)
    } else {
        let target = TargetKey {
            addr: inner.daddr,
            port: inner.dport,
            proto: inner.proto,
            _pad: 0,
        };
        // SAFETY: a presence test.
        unsafe { MESH_TARGETS.get(target) }.is_some()
    };
    if allowed {
        None
    } else {
        Some(drop_packet(DROP_VXLAN_PORT))
    }
}

/// What `MESH_TARGETS` says of a local task's published target port
/// (`TARGET_*` bits), if it is one.
#[inline(always)]
pub fn target(addr: u32, port: u16, proto: u8) -> Option<u32> {
    let key = TargetKey {
        addr,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: the agent writes whole u32 values.
    unsafe { MESH_TARGETS.get(key) }.copied()
}

/// Whether a packet to this node's ingress address that no mesh connection
/// tracks may go on to the kernel: the node's own software may send from
/// that address to tasks (a proxy, NAT rules, as `cargo xtask bench mesh`'s
/// peers do), and gets its replies. Those come from a task's published
/// target port and never open a connection: a pure SYN, or a source that is
/// no live backend's port, is dropped. (`l4`: where the inner TCP or UDP
/// header starts.)
#[inline(always)]
pub fn untracked_reply(ctx: &TcContext, inner: &Flow, l4: usize) -> bool {
    if inner.proto == PROTO_TCP {
        let flags: u8 = ctx.load(l4 + 13).unwrap_or(TCP_SYN);
        if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            return false;
        }
    }
    mesh::is_live_backend(inner.saddr, inner.sport)
}

/// Whether a container's packet (as it leaves the container, on its
/// host-side veth) goes to a port of a node it may not reach. Only
/// connection attempts are checked for TCP (a SYN without ACK: no
/// connection can start without one, and a task's SYN-ACK to the mesh goes
/// to this node's ingress address), every datagram for UDP.
#[inline(always)]
pub fn container_blocked(f: &Flow, seg: &Segment) -> bool {
    if f.proto == PROTO_TCP && !seg.is_syn() {
        return false;
    }
    let kind = addr_flags(f.daddr);
    if kind == 0 {
        return false;
    }
    if kind & ADDR_LOCAL != 0 {
        if kind & ADDR_DNS != 0 && f.dport == DNS_PORT.to_be() {
            return false;
        }
        // A task's UDP reply to a connection the mesh forwarded to it goes
        // to this node's ingress address, and is tracked.
        let key = CtKey {
            saddr: f.saddr,
            daddr: f.daddr,
            sport: f.sport,
            dport: f.dport,
            proto: f.proto,
            _pad: [0; 3],
        };
        return !(f.proto == PROTO_UDP && conntrack::get(&key).is_some());
    }
    let port = PortKey {
        port: f.dport,
        proto: f.proto,
        _pad: 0,
    };
    // SAFETY: a presence test.
    kind & ADDR_CLUSTER_NODE != 0 && unsafe { GUARD_PORTS.get(port) }.is_some()
}
