//! The mesh's own VXLAN: an entry node wraps a connection's packets for a
//! task on another node and sends them straight back out of the underlay
//! interface, and unwraps that task's replies where they arrive, on the
//! same interface. The kernel's path for the same packets is the ingress
//! bridge, the VXLAN device and the IP stack (with netfilter) both ways:
//! on a busy entry node that is most of the mesh's cost. The frames are
//! exactly what the node's VXLAN device would send and receive, so the
//! other node's kernel cannot tell them apart; whatever this path declines
//! (GSO super-packets, frames that would not fit the underlay, unknown
//! tasks) takes the kernel's.

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    macros::map,
    maps::HashMap,
    programs::TcContext,
};
use shoal_agent_common::{MESH_MAX_BACKENDS, MESH_MAX_SERVICES, MeshConfig, VXLAN_PORT};

use crate::mesh::{ETH_HLEN, Flow, L4_OFF, PROTO_TCP, PROTO_UDP, mac_of};

/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const OVERHEAD: usize = 50;
/// Where the inner frame's IPv4 header starts in a wrapped packet.
pub const INNER_IP_OFF: usize = ETH_HLEN + OVERHEAD;
const VXLAN_OFF: usize = L4_OFF + 8;
/// Where the inner Ethernet header starts in a wrapped packet.
pub const INNER_ETH_OFF: usize = VXLAN_OFF + 8;
/// VXLAN's "valid VNI" flag (RFC 7348).
const VXLAN_FLAG_VNI: u8 = 0x08;
const ENCAP_L2_SHIFT: u64 = 56;

/// A task's ingress address (network order) → the underlay address of the
/// node it runs on; tasks on other nodes only (the agent keeps it).
#[map]
static MESH_TUNNELS: HashMap<u32, u32> =
    HashMap::pinned(MESH_MAX_SERVICES * 4 + MESH_MAX_BACKENDS, 0);

/// A task's ingress address (network order) → its host-side veth, for
/// tasks on this node (the agent keeps it).
#[map]
static MESH_LOCAL: HashMap<u32, u32> =
    HashMap::pinned(MESH_MAX_SERVICES * 4 + MESH_MAX_BACKENDS, 0);

/// The host-side veth of a task on this node.
#[inline(always)]
pub fn local_veth(task: u32) -> Option<u32> {
    // SAFETY: the agent writes whole u32 values.
    unsafe { MESH_LOCAL.get(task) }.copied()
}

/// The node a remote task runs on, if the mesh may wrap this packet for
/// it itself: not a GSO super-packet (the kernel's device segments those)
/// and small enough to cross the underlay once wrapped.
#[inline(always)]
pub fn node_of(ctx: &TcContext, cfg: &MeshConfig, task: u32) -> Option<u32> {
    // SAFETY: a read of the context the kernel gave this program.
    if unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return None;
    }
    let ip_len = (ctx.len() as usize).checked_sub(ETH_HLEN)?;
    if ip_len > usize::from(cfg.mss) + 40 {
        return None;
    }
    // SAFETY: the agent writes whole u32 values.
    unsafe { MESH_TUNNELS.get(task) }.copied()
}

/// The underlay address of the node that holds `addr` (a task's or a
/// node's ingress address) on the ingress network, whatever the packet.
#[inline(always)]
pub fn node_holding(addr: u32) -> Option<u32> {
    // SAFETY: the agent writes whole u32 values.
    unsafe { MESH_TUNNELS.get(addr) }.copied()
}

/// Wraps the packet (already rewritten) in VXLAN from this node to
/// `node`, as a frame from `src_mac` to the owner of `dst`. On an error
/// the packet is left as it was, unless the error came after the headers
/// were added (then it is to be dropped: `Err(true)`).
#[inline(always)]
pub fn wrap(
    ctx: &mut TcContext,
    cfg: &MeshConfig,
    inner: &Flow,
    src_mac: &[u8; 6],
    dst: u32,
    node: u32,
) -> Result<(), bool> {
    let ip_len = (ctx.len() as usize).saturating_sub(ETH_HLEN);
    let outer_len = (ip_len + OVERHEAD) as u16;
    let mut h = [0u8; OVERHEAD];
    // Outer IPv4: no options, DF (the size was checked), TTL 64, UDP.
    h[0] = 0x45;
    h[2..4].copy_from_slice(&outer_len.to_be_bytes());
    h[6] = 0x40;
    h[8] = 64;
    h[9] = PROTO_UDP;
    h[12..16].copy_from_slice(&cfg.node_addr.to_ne_bytes());
    h[16..20].copy_from_slice(&node.to_ne_bytes());
    let checksum = ipv4_checksum(&h);
    h[10..12].copy_from_slice(&checksum.to_be_bytes());
    // UDP: a source port from the inner flow, so that the underlay's
    // multipath hashing spreads connections as it does the kernel's; no
    // checksum (allowed over IPv4; the inner packet carries its own).
    h[20..22].copy_from_slice(&source_port(inner).to_be_bytes());
    h[22..24].copy_from_slice(&VXLAN_PORT.to_be_bytes());
    h[24..26].copy_from_slice(&(outer_len - 20).to_be_bytes());
    // VXLAN: the flag, then the 24-bit VNI.
    h[28] = VXLAN_FLAG_VNI;
    h[32] = (cfg.ingress_vni >> 16) as u8;
    h[33] = (cfg.ingress_vni >> 8) as u8;
    h[34] = cfg.ingress_vni as u8;
    h[36..42].copy_from_slice(&mac_of(dst));
    h[42..48].copy_from_slice(src_mac);
    h[48] = 0x08;
    let flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 as u64
        | BPF_F_ADJ_ROOM_ENCAP_L4_UDP as u64
        | BPF_F_ADJ_ROOM_ENCAP_L2_ETH as u64
        | ((ETH_HLEN as u64) << ENCAP_L2_SHIFT);
    ctx.adjust_room(OVERHEAD as i32, BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| false)?;
    ctx.store(ETH_HLEN, &h, 0).map_err(|_| true)
}

/// Whether the packet is VXLAN from another node on the ingress network
/// to this node: the inner packet's IPv4 header then starts at
/// [`INNER_IP_OFF`].
#[inline(always)]
pub fn is_ingress_vxlan(ctx: &TcContext, cfg: &MeshConfig, outer: &Flow) -> bool {
    if outer.proto != PROTO_UDP || outer.daddr != cfg.node_addr || outer.dport != VXLAN_PORT.to_be()
    {
        return false;
    }
    // SAFETY: a read of the context the kernel gave this program.
    if unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return false;
    }
    let (Ok(flags), Ok(vni), Ok(ethertype)) = (
        ctx.load::<u8>(VXLAN_OFF),
        ctx.load::<u32>(VXLAN_OFF + 4),
        ctx.load::<u16>(INNER_ETH_OFF + 12),
    ) else {
        return false;
    };
    flags & VXLAN_FLAG_VNI != 0
        && u32::from_be(vni) >> 8 == cfg.ingress_vni
        && u16::from_be(ethertype) == 0x0800
}

/// The VNI of a VXLAN packet to this node (outer headers at standard offsets).
#[inline(always)]
pub fn vni(ctx: &TcContext) -> Option<u32> {
    let flags: u8 = ctx.load(VXLAN_OFF).ok()?;
    if flags & VXLAN_FLAG_VNI == 0 {
        return None;
    }
    let vni: u32 = ctx.load(VXLAN_OFF + 4).ok()?;
    Some(u32::from_be(vni) >> 8)
}

/// What a VXLAN packet carries, as far as ports go.
pub enum Inner {
    /// An IPv4 TCP or UDP packet whose ports are there to read.
    Ports(Flow),
    /// Not TCP or UDP over IPv4 (ARP, ICMP): no ports.
    Other,
    /// TCP or UDP whose ports cannot be read at their place: IPv4 options
    /// or a fragment. The mesh never sends those (DF, no options).
    Hidden,
}

/// The inner packet of a VXLAN packet to this node, read before anything
/// else decides (a GSO super-packet too: its first headers are there).
#[inline(always)]
pub fn inner_flow(ctx: &TcContext) -> Inner {
    let (Ok(ethertype), Ok(version_ihl), Ok(frag), Ok(proto)) = (
        ctx.load::<u16>(INNER_ETH_OFF + 12),
        ctx.load::<u8>(INNER_IP_OFF),
        ctx.load::<u16>(INNER_IP_OFF + 6),
        ctx.load::<u8>(INNER_IP_OFF + 9),
    ) else {
        return Inner::Other;
    };
    if u16::from_be(ethertype) != 0x0800 {
        return Inner::Other;
    }
    let fragment = u16::from_be(frag) & 0x3fff != 0;
    if version_ihl != 0x45 || fragment {
        // A later fragment carries no header to tell TCP and UDP from the
        // rest by: any fragment, and options, are refused.
        return Inner::Hidden;
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Inner::Other;
    }
    let (Ok(saddr), Ok(daddr), Ok(sport), Ok(dport)) = (
        ctx.load::<u32>(INNER_IP_OFF + 12),
        ctx.load::<u32>(INNER_IP_OFF + 16),
        ctx.load::<u16>(INNER_IP_OFF + 20),
        ctx.load::<u16>(INNER_IP_OFF + 22),
    ) else {
        return Inner::Hidden;
    };
    Inner::Ports(Flow {
        proto,
        saddr,
        daddr,
        sport,
        dport,
    })
}

/// Takes the outer headers off: the inner IPv4 packet follows the outer
/// Ethernet header, as if it had arrived unwrapped.
#[inline(always)]
pub fn unwrap(ctx: &mut TcContext) -> bool {
    ctx.adjust_room(
        -(OVERHEAD as i32),
        BPF_ADJ_ROOM_MAC,
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4 as u64,
    )
    .is_ok()
}

#[inline(always)]
fn ipv4_checksum(h: &[u8; OVERHEAD]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < 20 {
        sum += u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// In 49152–65535, from the inner flow's addresses and ports.
#[inline(always)]
fn source_port(f: &Flow) -> u16 {
    let mut x = f.saddr ^ f.daddr ^ (u32::from(f.sport) << 16 | u32::from(f.dport));
    x ^= x >> 16;
    x = x.wrapping_mul(0x045d_9f3b);
    x ^= x >> 16;
    0xc000 | (x as u16 & 0x3fff)
}
