//! The mesh's reply direction: a task's answers to a published-port
//! connection become `node:published -> client` again. `mesh_reply` (TC
//! ingress on the ingress network's bridge) takes them from local tasks
//! that answer through the bridge; `task_reply` (from `vip_out`, on a local
//! task's veth) takes them before the bridge; `tunnel_in` (from
//! `mesh_ingress`, on the underlay) takes the ingress network's VXLAN from
//! other nodes: a remote task's reply, unwrapped and sent on to its client,
//! or a packet for a task here, put straight into its container.

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use shoal_agent_common::{
    CT_CLOSING, CT_ESTABLISHED, CT_RETURN, CT_VIP, CtEntry, CtKey, MeshConfig,
};

use crate::{
    clientip, closing, conntrack, guard,
    mesh::{
        Flow, L4_OFF, PROTO_TCP, PROTO_UDP, TC_NEXT, TCP_RST, config, count, flow, flow_at,
        into_container, mac_of, out_of_underlay, rewrite,
    },
    segment::Segment,
    tunnel,
};

#[classifier]
pub fn mesh_reply(mut ctx: TcContext) -> i32 {
    match try_reply(&mut ctx) {
        Some(action) => action,
        None => TC_NEXT,
    }
}

#[inline(always)]
fn try_reply(ctx: &mut TcContext) -> Option<i32> {
    let cfg = config()?;
    let f = flow(ctx)?;
    if cfg.ingress_addr == 0 {
        return None;
    }
    let found = conntrack::get_ptr_mut(&f.key())?;
    let seg = Segment::read(ctx, &f, L4_OFF)?;
    reply(ctx, &cfg, &f, &seg, found)
}

/// VXLAN on the ingress network, arriving at the underlay interface
/// (`via`: the node it came from): a task's reply to a connection this
/// node forwards goes on to its client unwrapped; a packet for a task here
/// goes straight into its container. Anything else (ARP, VIP traffic, what
/// the tables do not know) keeps going to the kernel's VXLAN device and
/// the bridge.
#[inline(always)]
pub(crate) fn tunnel_in(ctx: &mut TcContext, cfg: &MeshConfig, via: u32) -> Option<i32> {
    let inner = flow_at(ctx, tunnel::INNER_IP_OFF)?;
    if inner.daddr == cfg.ingress_addr || clientip::is_reply_to_client(ctx, cfg, &inner) {
        return tunnel_reply(ctx, cfg, &inner);
    }
    let veth = tunnel::local_veth(inner.daddr)?;
    if let Some(entry) = clientip::forwarded_by(ctx, &inner)
        && let Some(verdict) = clientip::arrive(ctx, &inner, entry, via, veth)
    {
        return Some(verdict);
    }
    // Replies to a VIP connection a task here opened get the VIP back on
    // the task's veth (`vip_in`): those take the bridge.
    if conntrack::get(&inner.key()).is_some_and(|e| e.flags & CT_VIP != 0) {
        return None;
    }
    if !tunnel::unwrap(ctx) {
        return None;
    }
    Some(into_container(veth))
}

/// A task's reply that came wrapped in VXLAN to the underlay interface:
/// unwrapped here and sent on to the client, if it belongs to a connection
/// the mesh tracks (anything else keeps going to the kernel's device).
#[inline(always)]
fn tunnel_reply(ctx: &mut TcContext, cfg: &MeshConfig, inner: &Flow) -> Option<i32> {
    let Some((back, slot, confirmed)) = conntrack::lookup_ptr(&inner.key()) else {
        // Not the mesh's: the kernel's if it is a reply to the node's own
        // software, else dropped (see `guard`).
        if inner.daddr == cfg.ingress_addr
            && guard::untracked_reply(ctx, inner, tunnel::INNER_IP_OFF + 20)
        {
            return None;
        }
        return Some(guard::drop_packet(shoal_agent_common::DROP_VXLAN_PORT));
    };
    if back.flags & (CT_VIP | CT_RETURN) != 0 {
        return None;
    }
    // Read before the unwrap moves the header to standard offsets: the
    // same fields `reply` goes on with.
    let seg = Segment::read(ctx, inner, tunnel::INNER_IP_OFF + 20)?;
    let forward = forward_key(cfg, &back, inner.proto);
    if !answers(inner, &seg, &back, &forward) || !tunnel::unwrap(ctx) {
        return None;
    }
    // Unwrapped, it is no longer the kernel's to deliver.
    Some(reply(ctx, cfg, inner, &seg, (slot, confirmed)).unwrap_or(TC_ACT_SHOT))
}

/// Whether a packet from a task belongs to the mesh connection its
/// reply entry names. Entries outlive their connections (the LRU frees
/// them when it needs room), and whatever else sends from this node's
/// ingress address (a proxy, NAT rules) may get the same ports: a SYN-ACK
/// is the mesh's only if it acknowledges the SYN the mesh forwarded. One
/// that does not starts a connection that is not the mesh's on those
/// ports, so the entry of the one that had them before goes, and the rest
/// of the new connection goes to the kernel too. (An entry the mesh has
/// just written, for a SYN no answer has come to yet, stays: the SYN-ACK
/// may be a late one for an earlier connection.) The forward entry that
/// led to the old entry goes with it: left alone, it would send the
/// client's packets on to a connection that is no longer the mesh's, and
/// stay until the table needed room. `forward`: the connection's
/// client-to-node key ([`forward_key`]).
#[inline(always)]
fn answers(f: &Flow, seg: &Segment, back: &CtEntry, forward: &CtKey) -> bool {
    if f.proto != PROTO_TCP || !seg.is_syn_ack() {
        return true;
    }
    // Whether the forward entry acknowledges this SYN-ACK, and whether it
    // leads to this reply entry's connection (a newer connection from the
    // same client ports may hold its key): read at once, two flags.
    let (ours, leads_here) = match conntrack::get(forward) {
        Some(e) => (
            u32::from_be(e.syn_seq).wrapping_add(1) == u32::from_be(seg.ack),
            e.addr == f.saddr && e.port == f.sport && e.nat_port == f.dport,
        ),
        None => (false, false),
    };
    if !ours && back.flags & (CT_ESTABLISHED | CT_CLOSING) != 0 {
        if leads_here {
            conntrack::remove(forward);
        }
        conntrack::remove(&f.key());
    }
    ours
}

/// The client-to-node key of a published-port connection, from its reply
/// entry (which names the client and the published port).
#[inline(always)]
fn forward_key(cfg: &MeshConfig, back: &CtEntry, proto: u8) -> CtKey {
    CtKey {
        saddr: back.addr,
        daddr: cfg.node_addr,
        sport: back.port,
        dport: back.nat_port,
        proto,
        _pad: [0; 3],
    }
}

/// A task's reply to a published-port connection, at standard offsets, to
/// the client itself (or to this node's ingress address, for connections
/// forwarded before it kept the client's address); wrapped back to the
/// entry node if that is another node (`clientip`). `found`: the caller's
/// lookup of the packet's entry (one lookup a packet).
#[inline(always)]
fn reply(
    ctx: &mut TcContext,
    cfg: &MeshConfig,
    f: &Flow,
    seg: &Segment,
    (slot, confirmed): (*mut CtEntry, bool),
) -> Option<i32> {
    let key = f.key();
    // SAFETY: the entry stays valid while this program runs (RCU).
    let back = unsafe { *slot };
    if back.flags & CT_VIP != 0 {
        return None; // east-west: the task's own veth handles it
    }
    if back.flags & CT_RETURN != 0 {
        return Some(clientip::send_back(ctx, cfg, f, seg, slot, confirmed));
    }
    let forward = forward_key(cfg, &back, f.proto);
    if !answers(f, seg, &back, &forward) {
        return None;
    }
    if f.proto == PROTO_TCP && back.flags & CT_ESTABLISHED == 0 {
        if seg.flags & TCP_RST != 0 {
            // A backend refused a connection it never accepted (it died,
            // or is stopping): forget the pick and hide the reset. The
            // client's retransmitted SYN goes to another backend.
            conntrack::remove(&forward);
            conntrack::remove(&key);
            return Some(TC_ACT_SHOT);
        }
        // The SYN-ACK's sequence number: the client's ACK of it confirms
        // the connection (`confirm_handshake`).
        // SAFETY: as above; whole words.
        unsafe {
            (*slot).syn_seq = seg.seq;
            (*slot).flags = back.flags | CT_ESTABLISHED;
        }
    }
    if f.proto == PROTO_UDP && !confirmed {
        // The backend answered: the flow is confirmed.
        conntrack::confirm(&forward, &key);
    }
    if f.proto == PROTO_TCP
        && let Some(ending) = closing::from_task(seg, slot)
    {
        closing::copy_to(&forward, ending);
    }
    rewrite(ctx, f, cfg.node_addr, back.addr, back.nat_port, back.port)?;
    count(back.service, ctx.len(), false);
    Some(out_of_underlay(cfg))
}

/// A local task's packet to a mesh client: a reply this node rewrites (the
/// connection entered here), one it wraps back to the node the connection
/// entered by (`clientip`), or one to another node's ingress address
/// (wrapped to that node). Only from the veth of the task that owns the
/// source address.
#[inline(always)]
pub(crate) fn task_reply(ctx: &mut TcContext, f: &Flow, seg: &Segment) -> Option<i32> {
    let cfg = config()?;
    if cfg.ingress_addr == 0 {
        return None;
    }
    let veth = tunnel::local_veth(f.saddr)?;
    // SAFETY: a read of the context the kernel gave this program.
    if veth != unsafe { (*ctx.skb.skb).ifindex } {
        return None;
    }
    if let Some(found) = conntrack::get_ptr_mut(&f.key()) {
        return reply(ctx, &cfg, f, seg, found);
    }
    let node = tunnel::node_of(ctx, &cfg, f.daddr)?;
    match tunnel::wrap(ctx, &cfg, f, &mac_of(f.saddr), f.daddr, node) {
        Ok(()) => Some(out_of_underlay(&cfg)),
        Err(true) => Some(TC_ACT_SHOT),
        Err(false) => None,
    }
}
