//! The routing mesh: a port published in ingress mode answers on every
//! node. `mesh_ingress` (TC ingress on the underlay interface) takes a new
//! connection to `node:published`, picks the service's next task round-robin
//! (one global counter per service, not per CPU: per-CPU counters would not
//! be round-robin), rewrites it to `client:port -> task:target` (the
//! client's own address; see `clientip` for how the replies find their way
//! back) and hands it to the ingress network's bridge, which carries it to
//! the task over VXLAN or to a local veth. The replies are turned back
//! into `node:published -> client` and sent out of the underlay interface
//! (see `reply`, with `mesh_reply` on that bridge). Both directions are kept in
//! one LRU connection table; checksums are fixed with the kernel's helpers.
//! For a task on another node, the entry node does the VXLAN wrapping and
//! unwrapping itself on the underlay interface (see `tunnel`), and the
//! bridge path serves local tasks and whatever the tunnel declines.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use crate::{allow, clientip, closing, conntrack, guard, pick, reply, segment::Segment, tunnel};
use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::TcContext,
};
use shoal_agent_common::{
    Backend, BackendKey, CT_CLOSING, CT_DSR, CT_ESTABLISHED, CT_HOST_MODE, CT_RETURN, CT_VIP,
    CtEntry, CtKey, LIVE_DRAINING, MESH_MAX_BACKENDS, MESH_MAX_SERVICES, MODE_HOST,
    MODE_INGRESS_DSR, MeshConfig, PortEntry, PortKey, ServiceStats, VXLAN_PORT, close,
};

/// `TCX_NEXT`: not ours; let the next program and the stack decide.
pub(crate) const TC_NEXT: i32 = -1;

pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const ETH_P_IP: u16 = 0x0800;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SRC_OFF: usize = ETH_HLEN + 12;
const IP_DST_OFF: usize = ETH_HLEN + 16;
/// The mesh handles IPv4 without options: L4 starts here.
pub(crate) const L4_OFF: usize = ETH_HLEN + 20;
const TCP_CSUM_OFF: usize = L4_OFF + 16;
const UDP_CSUM_OFF: usize = L4_OFF + 6;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_ACK: u8 = 0x10;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_FIN: u8 = 0x01;

const BPF_F_PSEUDO_HDR: u64 = 0x10;
const BPF_F_MARK_MANGLED_0: u64 = 0x20;

#[map]
static MESH_CONFIG: Array<MeshConfig> = Array::pinned(1, 0);
#[map]
static MESH_PORTS: HashMap<PortKey, PortEntry> = HashMap::pinned(MESH_MAX_SERVICES, 0);
#[map]
static MESH_BACKENDS: HashMap<BackendKey, Backend> =
    HashMap::pinned(MESH_MAX_SERVICES * 4 + MESH_MAX_BACKENDS, 0);
#[map]
static MESH_RR: Array<u64> = Array::pinned(MESH_MAX_SERVICES, 0);
#[map]
static MESH_STATS: PerCpuArray<ServiceStats> = PerCpuArray::pinned(MESH_MAX_SERVICES, 0);
#[map]
static MESH_LIVE: HashMap<Backend, u32> =
    HashMap::pinned(MESH_MAX_SERVICES * 4 + MESH_MAX_BACKENDS, 0);

/// The parts of an IPv4 TCP/UDP packet the mesh reads.
pub(crate) struct Flow {
    pub proto: u8,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
}

impl Flow {
    /// The connection-table key of this direction.
    #[inline(always)]
    pub(crate) fn key(&self) -> CtKey {
        CtKey {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

#[inline(always)]
pub(crate) fn flow(ctx: &TcContext) -> Option<Flow> {
    let ethertype: u16 = ctx.load(12).ok()?;
    if u16::from_be(ethertype) != ETH_P_IP {
        return None;
    }
    flow_at(ctx, ETH_HLEN)
}

/// The flow of the IPv4 packet whose header starts at `ip`.
#[inline(always)]
pub(crate) fn flow_at(ctx: &TcContext, ip: usize) -> Option<Flow> {
    let version_ihl: u8 = ctx.load(ip).ok()?;
    if version_ihl != 0x45 {
        return None; // IPv4 with options: not for the mesh
    }
    let frag: u16 = ctx.load(ip + 6).ok()?;
    if u16::from_be(frag) & 0x3fff != 0 {
        return None; // fragments carry no ports
    }
    let proto: u8 = ctx.load(ip + 9).ok()?;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    Some(Flow {
        proto,
        saddr: ctx.load(ip + 12).ok()?,
        daddr: ctx.load(ip + 16).ok()?,
        sport: ctx.load(ip + 20).ok()?,
        dport: ctx.load(ip + 22).ok()?,
    })
}

#[inline(always)]
pub(crate) fn config() -> Option<MeshConfig> {
    MESH_CONFIG.get(0).copied()
}

/// A task's MAC, derived from its address as the agent assigns it.
#[inline(always)]
pub(crate) fn mac_of(addr: u32) -> [u8; 6] {
    let o = addr.to_ne_bytes();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

#[inline(always)]
pub(crate) fn count(service: u32, bytes: u32, new: bool) {
    if let Some(stats) = MESH_STATS.get_ptr_mut(service) {
        // SAFETY: a per-CPU slot, touched only by this CPU while we run.
        let stats = unsafe { &mut *stats };
        stats.packets += 1;
        stats.bytes += u64::from(bytes);
        if new {
            stats.connections += 1;
        }
    }
}

/// Counts a packet dropped at a published port, for its service.
#[inline(always)]
fn count_drop(port: u16, proto: u8) {
    let key = PortKey {
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: the agent writes whole entries.
    let Some(service) = (unsafe { MESH_PORTS.get(key) }).map(|e| e.service) else {
        return;
    };
    if let Some(stats) = MESH_STATS.get_ptr_mut(service) {
        // SAFETY: a per-CPU slot, touched only by this CPU while we run.
        unsafe { (*stats).drops += 1 };
    }
}

/// Rewrites the addresses and ports of an IPv4 TCP/UDP packet, fixing the
/// IP and L4 checksums with the kernel's helpers.
#[inline(always)]
pub(crate) fn rewrite(
    ctx: &mut TcContext,
    f: &Flow,
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
) -> Option<()> {
    let (csum_off, mangled) = if f.proto == PROTO_TCP {
        (TCP_CSUM_OFF, 0)
    } else {
        (UDP_CSUM_OFF, BPF_F_MARK_MANGLED_0)
    };
    if saddr != f.saddr {
        ctx.l4_csum_replace(
            csum_off,
            u64::from(f.saddr),
            u64::from(saddr),
            BPF_F_PSEUDO_HDR | mangled | 4,
        )
        .ok()?;
        ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(f.saddr), u64::from(saddr), 4)
            .ok()?;
        ctx.store(IP_SRC_OFF, &saddr, 0).ok()?;
    }
    if daddr != f.daddr {
        ctx.l4_csum_replace(
            csum_off,
            u64::from(f.daddr),
            u64::from(daddr),
            BPF_F_PSEUDO_HDR | mangled | 4,
        )
        .ok()?;
        ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(f.daddr), u64::from(daddr), 4)
            .ok()?;
        ctx.store(IP_DST_OFF, &daddr, 0).ok()?;
    }
    if sport != f.sport {
        ctx.l4_csum_replace(csum_off, u64::from(f.sport), u64::from(sport), mangled | 2)
            .ok()?;
        ctx.store(L4_OFF, &sport, 0).ok()?;
    }
    if dport != f.dport {
        ctx.l4_csum_replace(csum_off, u64::from(f.dport), u64::from(dport), mangled | 2)
            .ok()?;
        ctx.store(L4_OFF + 2, &dport, 0).ok()?;
    }
    Some(())
}

#[classifier]
pub fn mesh_ingress(mut ctx: TcContext) -> i32 {
    match try_ingress(&mut ctx) {
        Some(action) => action,
        None => TC_NEXT,
    }
}

#[inline(always)]
fn try_ingress(ctx: &mut TcContext) -> Option<i32> {
    let cfg = config()?;
    let f = flow(ctx)?;
    if f.daddr != cfg.node_addr {
        return None;
    }
    // VXLAN from strangers goes nowhere, whichever device it was for.
    if f.proto == PROTO_UDP
        && f.dport == VXLAN_PORT.to_be()
        && let Some(verdict) = guard::vxlan_in(ctx, &cfg, &f)
    {
        return Some(verdict);
    }
    if cfg.ingress_addr == 0 {
        return None;
    }
    // No packet from the wire comes from an address this node holds (the
    // node's own traffic to itself stays on `lo`), so one that says so is
    // spoofed (see `from_own_addr`).
    if tunnel::is_ingress_vxlan(ctx, &cfg, &f) {
        if f.saddr == cfg.node_addr {
            return None;
        }
        return reply::tunnel_in(ctx, &cfg, f.saddr);
    }
    let key = f.key();
    let seg = Segment::read(ctx, &f, L4_OFF)?;
    let (entry, slot, new, confirmed) = match conntrack::lookup_ptr(&key) {
        Some((entry, slot, confirmed)) if still_there(&f, &seg, &entry, f.saddr) => {
            (entry, slot, false, confirmed)
        }
        _ if from_own_addr(&cfg, &f) => return None,
        _ if !allow::admits(&f) => {
            count_drop(f.dport, f.proto);
            return Some(guard::drop_packet(shoal_agent_common::DROP_NOT_ALLOWED));
        }
        _ => (
            new_connection(&f, &seg, &key)?,
            core::ptr::null_mut(),
            true,
            false,
        ),
    };
    if !new {
        let reply = CtKey {
            saddr: entry.addr,
            daddr: f.saddr,
            sport: entry.port,
            dport: entry.nat_port,
            proto: f.proto,
            _pad: [0; 3],
        };
        // Marked before a confirmation moves the entries: `slot` points
        // into the table the lookup found it in, and a move frees it there
        // (the confirmed copies carry the marks).
        if f.proto == PROTO_TCP
            && let Some(ending) = closing::from_client(&seg, slot)
        {
            closing::copy_to(&reply, ending);
        }
        if !confirmed && entry.flags & CT_DSR != 0 {
            clientip::confirm_direct(&f, &seg, &key, &reply);
        } else if !confirmed && f.proto == PROTO_TCP {
            confirm_handshake(&seg, &key, &reply);
        }
    }
    // The client's own address, in both modes (its port too, unless
    // another connection to the backend holds the pair).
    rewrite(ctx, &f, f.saddr, entry.addr, entry.nat_port, entry.port)?;
    if new && f.proto == PROTO_TCP {
        clamp_mss(ctx, cfg.mss);
    }
    count(entry.service, ctx.len(), new);
    if entry.flags & CT_HOST_MODE == 0
        && let Some(node) = tunnel::node_of(ctx, &cfg, entry.addr)
    {
        match tunnel::wrap(ctx, &cfg, &f, &cfg.bridge_mac, entry.addr, node) {
            Ok(()) => return Some(out_of_underlay(&cfg)),
            Err(true) => return Some(TC_ACT_SHOT),
            Err(false) => {} // unchanged: the bridge's way
        }
    }
    let macs = {
        let dst = mac_of(entry.addr);
        let mut both = [0u8; 12];
        both[..6].copy_from_slice(&dst);
        both[6..].copy_from_slice(&cfg.bridge_mac);
        both
    };
    ctx.store(0, &macs, 0).ok()?;
    if let Some(veth) = tunnel::local_veth(entry.addr) {
        return Some(into_container(veth));
    }
    // SAFETY: a plain helper call with an ifindex and no flags.
    Some(unsafe { bpf_redirect(cfg.bridge_ifindex, 0) } as i32)
}

/// Whether a tracked connection may go on to its backend: yes while the
/// backend is in the tables and its reply entry still leads back to this
/// client; otherwise a SYN (a new connection reusing an old one's ports, or
/// a retransmission that never got an answer) or a UDP datagram picks
/// again. `reply_to` is where the backend's replies go: the client itself.
#[inline(always)]
pub(crate) fn still_there(f: &Flow, seg: &Segment, entry: &CtEntry, reply_to: u32) -> bool {
    let reply = CtKey {
        saddr: entry.addr,
        daddr: reply_to,
        sport: entry.port,
        dport: entry.nat_port,
        proto: f.proto,
        _pad: [0; 3],
    };
    let intact = conntrack::get(&reply)
        .is_some_and(|back| back.addr == f.daddr || (back.addr == f.saddr && back.port == f.sport));
    if f.proto == PROTO_UDP {
        return intact && live(entry);
    }
    if !seg.is_syn() {
        // An established connection finishes (or fails) where it is.
        return true;
    }
    // A SYN: the same connection again (its first SYN got no answer) stays
    // while its backend does; a new connection on old ports starts afresh.
    intact && live(entry) && entry.syn_seq == seg.seq
}

/// The client's ACK that completes the handshake (it acknowledges the
/// backend's SYN-ACK, whose sequence number its reply entry keeps) moves
/// the connection to the confirmed table. A spoofed SYN's source never
/// sees the SYN-ACK, so it cannot send this ACK.
#[inline(always)]
pub(crate) fn confirm_handshake(seg: &Segment, forward: &CtKey, reply: &CtKey) {
    if seg.flags & (TCP_SYN | TCP_ACK) != TCP_ACK {
        return;
    }
    let Some(back) = conntrack::get(reply) else {
        return;
    };
    if back.flags & CT_ESTABLISHED != 0
        && u32::from_be(back.syn_seq).wrapping_add(1) == u32::from_be(seg.ack)
    {
        conntrack::confirm(forward, reply);
    }
}

/// A client on the underlay may offer segments larger than the overlay
/// carries (its MTU is the underlay's minus the VXLAN header): the SYN's MSS
/// option, when it comes first as Linux and most stacks send it, is
/// lowered to what fits, so no segment of the connection is too big.
#[inline(always)]
fn clamp_mss(ctx: &mut TcContext, mss: u16) {
    if mss == 0 {
        return;
    }
    let Ok(offset) = ctx.load::<u8>(L4_OFF + 12) else {
        return;
    };
    if offset >> 4 <= 5 {
        return; // no options
    }
    let (Ok(kind), Ok(len)) = (ctx.load::<u8>(L4_OFF + 20), ctx.load::<u8>(L4_OFF + 21)) else {
        return;
    };
    if kind != 2 || len != 4 {
        return;
    }
    let Ok(offered) = ctx.load::<u16>(L4_OFF + 22) else {
        return;
    };
    if u16::from_be(offered) <= mss {
        return;
    }
    let clamped = mss.to_be();
    if ctx
        .l4_csum_replace(TCP_CSUM_OFF, u64::from(offered), u64::from(clamped), 2)
        .is_ok()
    {
        let _ = ctx.store(L4_OFF + 22, &clamped, 0);
    }
}

/// Whether a port is published on this node (in either mode).
#[inline(always)]
pub(crate) fn is_published(port: &PortKey) -> bool {
    // SAFETY: a presence test.
    unsafe { MESH_PORTS.get(port) }.is_some()
}

/// Whether `addr:port` (network order) is a backend of a published port.
#[inline(always)]
pub(crate) fn is_live_backend(addr: u32, port: u16) -> bool {
    let backend = Backend {
        addr,
        port,
        _pad: 0,
    };
    // SAFETY: a presence test.
    unsafe { MESH_LIVE.get(backend) }.is_some()
}

/// Whether `addr:port` (network order) may take a new connection: live
/// and not draining.
#[inline(always)]
pub(crate) fn is_pickable_backend(addr: u32, port: u16) -> bool {
    let backend = Backend {
        addr,
        port,
        _pad: 0,
    };
    // SAFETY: a read of a whole u32 value.
    unsafe { MESH_LIVE.get(backend) }.is_some_and(|v| v & LIVE_DRAINING == 0)
}

/// Whether a tracked connection's backend is still in the tables.
#[inline(always)]
fn live(entry: &CtEntry) -> bool {
    // A VIP's backends keep the connection's port: they are live as port 0.
    let backend = Backend {
        addr: entry.addr,
        port: if entry.flags & CT_VIP != 0 {
            0
        } else {
            entry.port
        },
        _pad: 0,
    };
    // SAFETY: a presence test.
    unsafe { MESH_LIVE.get(backend) }.is_some()
}

/// The service's next backend, round-robin (`pick` decides when the
/// service asks for Maglev or affinity).
#[inline(always)]
pub(crate) fn next_backend(service: &PortEntry) -> Option<Backend> {
    let counter = MESH_RR.get_ptr_mut(service.service)?;
    // Read, then add atomically. A fetch-and-add that returns the old value
    // needs BPF ISA v3, and the toolchain builds for v1 (`--cpu generic`):
    // two connections opened at the same instant on two CPUs may get the
    // same turn (one backend twice), but no increment is ever lost, so the
    // rotation never drifts; sequential connections are exactly round-robin.
    // SAFETY: the slot lives as long as the map and is 8-byte aligned.
    let turn = unsafe { core::ptr::read_volatile(counter) };
    // SAFETY: as above; the result is unused, which v1's XADD allows.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, 1) };
    let key = BackendKey {
        service: service.service,
        index: (turn % u64::from(service.backends)) as u32,
    };
    // SAFETY: the agent writes whole entries.
    unsafe { MESH_BACKENDS.get(key) }.copied()
}

/// Whether a packet from the wire claims a source this node holds. It is
/// spoofed, and is left to the kernel's checks untracked: its reply entry
/// (from a task to that address) would be keyed like a connection to the
/// node. Asked only where a new connection would be tracked, off the path
/// of established ones (no entry is ever made for such a source).
#[inline(always)]
fn from_own_addr(cfg: &MeshConfig, f: &Flow) -> bool {
    f.saddr == cfg.node_addr || f.saddr == cfg.ingress_addr || guard::is_own_addr(f.saddr)
}

/// A connection's first packet (`key`: its direction's key): the next
/// backend, a source port no other connection to that backend uses, and
/// both directions tracked.
#[inline(always)]
fn new_connection(f: &Flow, seg: &Segment, key: &CtKey) -> Option<CtEntry> {
    let port = PortKey {
        port: f.dport,
        proto: f.proto,
        _pad: 0,
    };
    // SAFETY: the agent writes whole entries; see `try_ingress`.
    let service = *unsafe { MESH_PORTS.get(port) }?;
    if service.backends == 0 {
        return None; // nothing runs: let the stack refuse it
    }
    let host_mode = service.mode == MODE_HOST;
    if f.proto == PROTO_TCP && !seg.is_syn() {
        return None; // not a connection we saw begin
    }
    let backend = pick::backend(&service, f)?;
    // Keep the client's port unless another connection to this backend
    // already holds the pair (the client reaching the same task by two
    // published ports). A finished connection's port is taken
    // again at once by the same client and port, but by another client
    // only when nothing else is free: the backend keeps the finished
    // connection in TIME_WAIT for a minute, and a SYN from another client
    // (whose TCP timestamps start elsewhere) is answered there with an ACK
    // for the old connection, costing the client a reset and a 1 s retry.
    //
    // Two modes never change the port: host mode (the client's own
    // address and port reach a task here), and direct server return to a
    // task on another node, whose replies go straight to the client and so
    // never pass here to have a changed port put back.
    let direct = service.mode == MODE_INGRESS_DSR && tunnel::local_veth(backend.addr).is_none();
    let mut nat_port = f.sport;
    let mut found = false;
    let mut closing_port: Option<u16> = None;
    let reply_to = f.saddr;
    let mode_flag = match service.mode {
        MODE_HOST => CT_HOST_MODE,
        MODE_INGRESS_DSR => CT_DSR,
        _ => 0,
    };
    for attempt in 0u16..8 {
        let reply = reply_key(&backend, reply_to, nat_port, f.proto);
        let taken = conntrack::get(&reply);
        let free = match taken {
            None => true,
            Some(old) if old.flags & CT_CLOSING != 0 => {
                if closing_port.is_none() {
                    closing_port = Some(nat_port);
                }
                old.addr == f.saddr && old.port == f.sport
            }
            Some(_) => false,
        };
        if free && conntrack::insert_new(&reply, &reply_entry(f, &service), taken.is_none()) {
            found = true;
            break;
        }
        if direct && taken.is_some_and(|old| direct_may_take(f, &old)) {
            found = conntrack::insert_new(&reply, &reply_entry(f, &service), false);
            break;
        }
        if host_mode || direct {
            break; // the client's own port and address: nothing to choose
        }
        // Another port from the ephemeral range, spread by the attempt.
        let host = u16::from_be(f.sport) ^ attempt.wrapping_mul(0x9e37).wrapping_add(attempt);
        nat_port = (32768 + host % 28232).to_be();
    }
    if !found && let Some(port) = closing_port {
        let reply = reply_key(&backend, reply_to, port, f.proto);
        nat_port = port;
        found = conntrack::insert_new(&reply, &reply_entry(f, &service), false);
    }
    if !found {
        // No free source port towards this backend: drop the first packet
        // (the client's retry gets the next backend).
        return None;
    }
    let entry = CtEntry {
        addr: backend.addr,
        port: backend.port,
        nat_port,
        service: service.service,
        flags: mode_flag,
        syn_seq: seg.seq,
        client_seq: u32::from_be(seg.seq),
    };
    // Unconfirmed until the handshake completes (TCP) or the backend
    // answers (UDP); an old connection's entry on the same ports goes.
    conntrack::insert_new(key, &entry, false).then_some(entry)
}

/// Whether a direct-server-return connection to a task on another node
/// may take over the reply entry `old` holds on its client's own port
/// (it cannot have another): yes unless a live TCP connection this node
/// forwarded holds it.
/// - The same client, port and published port: this SYN is the client's
///   own new connection on the old one's ports (its stack let them go; the
///   task may have reset the old one, which this node never sees).
/// - An ended connection: its port is the client's to reuse (its TIME_WAIT
///   at the task is the same client's, whose timestamps go on). A direct
///   connection's entry here only ever sees the client's FIN, so that one
///   counts; any other must be closed both ways or reset (a half-closed
///   one may still be sending).
/// - A UDP entry never ends and is only the last flow's.
/// - An entry this node learnt as a task's node (`CT_RETURN`) is stale,
///   the task being elsewhere now.
///
/// Refused otherwise: the client's port is in use towards that task
/// through this node (another service's published port, once at the same
/// address).
#[inline(always)]
fn direct_may_take(f: &Flow, old: &CtEntry) -> bool {
    let ended = if old.flags & CT_DSR != 0 {
        old.flags & CT_CLOSING != 0
    } else {
        close::is_closed(old.flags)
    };
    f.proto == PROTO_UDP
        || ended
        || old.flags & CT_RETURN != 0
        || (old.addr == f.saddr && old.port == f.sport && old.nat_port == f.dport)
}

/// The key of the replies `backend` sends to `reply_to:nat_port`.
#[inline(always)]
fn reply_key(backend: &Backend, reply_to: u32, nat_port: u16, proto: u8) -> CtKey {
    CtKey {
        saddr: backend.addr,
        daddr: reply_to,
        sport: backend.port,
        dport: nat_port,
        proto,
        _pad: [0; 3],
    }
}

/// What a new connection's reply entry says: its client, its published
/// port, its service.
#[inline(always)]
fn reply_entry(f: &Flow, service: &PortEntry) -> CtEntry {
    CtEntry {
        addr: f.saddr,
        port: f.sport,
        nat_port: f.dport,
        service: service.service,
        flags: match service.mode {
            MODE_HOST => CT_HOST_MODE,
            MODE_INGRESS_DSR => CT_DSR,
            _ => 0,
        },
        syn_seq: 0,
        client_seq: 0,
    }
}

/// Straight into a local task's container: the peer of its host-side
/// veth receives the packet as if from the wire, past the bridge.
#[inline(always)]
pub(crate) fn into_container(veth: u32) -> i32 {
    // SAFETY: a plain helper call with an ifindex and no flags.
    unsafe { bpf_redirect_peer(veth, 0) as i32 }
}

/// Out of the underlay interface, the kernel filling in the MACs from its
/// FIB and neighbour tables.
#[inline(always)]
pub(crate) fn out_of_underlay(cfg: &MeshConfig) -> i32 {
    // SAFETY: no parameters: the helper looks the next hop up itself.
    let action = unsafe { bpf_redirect_neigh(cfg.underlay_ifindex, core::ptr::null_mut(), 0, 0) };
    if action < 0 {
        TC_ACT_SHOT
    } else {
        action as i32
    }
}
