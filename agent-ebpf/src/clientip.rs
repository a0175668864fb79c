//! The task sees its client's own address (tunnel return). The entry node
//! forwards a published-port connection as `client:port → task:target`
//! (no source NAT), wrapped in the mesh's VXLAN with its bridge's MAC, which
//! the agent derives from the node's ingress address, as the inner source.
//! The task's node learns from that frame which node the connection came
//! by, keeps it in a reply entry (`CT_RETURN`, in the mesh's connection
//! tables), and wraps the task's replies back to that node, whatever their
//! destination; the entry node unwraps them and answers the client as
//! `node:published`, as it did when it sent from its ingress address.
//!
//! The same client address and port may reach the same task through two
//! entry nodes: the task would see one connection. The second gets another
//! client port on the task's node (`MESH_RETURN` keeps the change, keyed by
//! entry node too), which is put back on its replies.

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::map, maps::LruHashMap, programs::TcContext};
use shoal_agent_common::{
    CT_CLOSING, CT_DSR, CT_RETURN, CtEntry, CtKey, MESH_MAX_EMBRYONIC, MeshConfig, ReturnKey,
    TARGET_DSR,
};

use crate::{
    closing, conntrack, guard,
    mesh::{Flow, PROTO_TCP, PROTO_UDP, TCP_SYN, into_container, out_of_underlay, rewrite},
    segment::Segment,
    tunnel,
};

/// Connections whose client port the task's node changed: few (a client
/// port reaching one task through two nodes at once), least recently used
/// first out.
#[map]
static MESH_RETURN: LruHashMap<ReturnKey, u32> = LruHashMap::pinned(MESH_MAX_EMBRYONIC, 0);

/// The ingress address of the node a wrapped frame was forwarded by with
/// its client's own address: the inner source MAC is that node's bridge's
/// (`02:42` and its ingress address) while the source address is another.
/// A task's own frames carry its own address in their MAC.
#[inline(always)]
pub fn forwarded_by(ctx: &TcContext, inner: &Flow) -> Option<u32> {
    let mac: [u8; 6] = ctx.load(tunnel::INNER_ETH_OFF + 6).ok()?;
    if mac[0] != 0x02 || mac[1] != 0x42 {
        return None;
    }
    let node = u32::from_ne_bytes([mac[2], mac[3], mac[4], mac[5]]);
    (node != inner.saddr).then_some(node)
}

/// Whether a wrapped frame is a task's reply sent back to this node for
/// its client: addressed to the client, but to this node's bridge's MAC.
#[inline(always)]
pub fn is_reply_to_client(ctx: &TcContext, cfg: &MeshConfig, inner: &Flow) -> bool {
    inner.daddr != cfg.ingress_addr
        && ctx
            .load::<[u8; 6]>(tunnel::INNER_ETH_OFF)
            .is_ok_and(|mac| mac == cfg.bridge_mac)
}

/// A forwarded packet for a task here, still wrapped: its reply entry
/// learnt (or found), its client port changed if it had to be, unwrapped
/// and handed to the task. `entry`: the entry node's ingress address,
/// `via`: its underlay address (the outer source). None: not the mesh's
/// (the kernel's way).
#[inline(always)]
pub fn arrive(ctx: &mut TcContext, inner: &Flow, entry: u32, via: u32, veth: u32) -> Option<i32> {
    let seen = match task_port(ctx, inner, entry, via) {
        Ok(port) => port,
        Err(true) => return Some(TC_ACT_SHOT),
        Err(false) => return None,
    };
    if !tunnel::unwrap(ctx) {
        return None;
    }
    if seen != inner.sport
        && rewrite(ctx, inner, inner.saddr, inner.daddr, seen, inner.dport).is_none()
    {
        return Some(TC_ACT_SHOT); // unwrapped: no longer the kernel's
    }
    Some(into_container(veth))
}

/// The client port the task sees for this packet. `Err(true)`: drop it (no
/// port free for a new connection); `Err(false)`: not a mesh connection.
#[inline(always)]
fn task_port(ctx: &TcContext, inner: &Flow, entry: u32, via: u32) -> Result<u16, bool> {
    let seg = Segment::read(ctx, inner, tunnel::INNER_IP_OFF + 20).ok_or(false)?;
    let mut reply = CtKey {
        saddr: inner.daddr,
        daddr: inner.saddr,
        sport: inner.dport,
        dport: inner.sport,
        proto: inner.proto,
        _pad: [0; 3],
    };
    // The common case, one lookup: the pair is this connection's. (A SYN
    // on an ended connection's ports is a new connection: learnt afresh,
    // so that it gets its own published port's mode.)
    let restarts = |back: &CtEntry| seg.is_syn() && back.flags & CT_CLOSING != 0;
    if let Some((slot, _)) = conntrack::get_ptr_mut(&reply) {
        // SAFETY: the entry stays valid while this program runs (RCU).
        let back = unsafe { *slot };
        if back.flags & CT_RETURN != 0
            && back.addr == entry
            && back.port == inner.sport
            && !restarts(&back)
        {
            if inner.proto == PROTO_TCP {
                let _ = closing::from_client(&seg, slot);
            }
            return Ok(inner.sport);
        }
    }
    let moved = ReturnKey {
        client: inner.saddr,
        task: inner.daddr,
        entry: via,
        client_port: inner.sport,
        task_port: inner.dport,
        proto: inner.proto,
        _pad: [0; 3],
    };
    // SAFETY: whole u32 values.
    if let Some(port) = unsafe { MESH_RETURN.get(moved) }.map(|p| *p as u16) {
        reply.dport = port;
        if let Some((slot, _)) = conntrack::get_ptr_mut(&reply) {
            // SAFETY: as above.
            let back = unsafe { *slot };
            if back.flags & CT_RETURN != 0
                && back.addr == entry
                && back.port == inner.sport
                && !restarts(&back)
            {
                if inner.proto == PROTO_TCP {
                    let _ = closing::from_client(&seg, slot);
                }
                return Ok(port);
            }
        }
    }
    learn(inner, entry, via, &seg, &moved)
}

/// A connection this node has no reply entry for: only from the node its
/// entry-node MAC names (the tables say where each ingress address lives),
/// with the client's own port unless another connection to the task holds
/// that pair, then another one (a connection's first packet only: a TCP
/// connection already under way cannot change ports).
#[inline(always)]
fn learn(
    inner: &Flow,
    entry: u32,
    via: u32,
    seg: &Segment,
    moved: &ReturnKey,
) -> Result<u16, bool> {
    if tunnel::node_holding(entry) != Some(via) {
        return Err(false);
    }
    // Direct server return, if the port was published with it: the
    // published port is the replies' source port.
    let target = guard::target(inner.daddr, inner.dport, inner.proto).unwrap_or(0);
    let (mode, published) = if target & TARGET_DSR != 0 {
        (CT_DSR, target >> 16)
    } else {
        (0, 0)
    };
    let first = inner.proto == PROTO_UDP || seg.is_syn();
    let mut port = inner.sport;
    for attempt in 0u16..8 {
        let reply = CtKey {
            saddr: inner.daddr,
            daddr: inner.saddr,
            sport: inner.dport,
            dport: port,
            proto: inner.proto,
            _pad: [0; 3],
        };
        let taken = conntrack::get(&reply);
        let free = taken.is_none_or(|old| old.flags & CT_CLOSING != 0);
        let back = CtEntry {
            addr: entry,
            port: inner.sport,
            nat_port: port,
            service: published,
            flags: CT_RETURN | mode,
            syn_seq: 0,
            client_seq: u32::from_be(seg.seq),
        };
        if free && conntrack::insert_new(&reply, &back, taken.is_none()) {
            if port == inner.sport {
                let _ = MESH_RETURN.remove(moved);
                return Ok(port);
            }
            return match MESH_RETURN.insert(moved, u32::from(port), 0) {
                Ok(()) => Ok(port),
                Err(_) => {
                    conntrack::remove(&reply);
                    Err(true)
                }
            };
        }
        if !first {
            break;
        }
        // Another port from the ephemeral range, spread by the attempt.
        let host = u16::from_be(inner.sport) ^ attempt.wrapping_mul(0x9e37).wrapping_add(attempt);
        port = (32768 + host % 28232).to_be();
    }
    Err(true)
}

/// A task's packet on a connection another node forwarded (`slot`: its
/// reply entry): the client's own port back on it, confirmed once the task
/// answers past the handshake (its own TCP checked the client's ACK; a
/// spoofed SYN's entry stays with the unconfirmed ones), and wrapped back
/// to the entry node. Never the kernel's: its routes would send it to the
/// client from the task's address.
#[inline(always)]
pub fn send_back(
    ctx: &mut TcContext,
    cfg: &MeshConfig,
    f: &Flow,
    seg: &Segment,
    slot: *mut CtEntry,
    confirmed: bool,
) -> i32 {
    // SAFETY: the entry stays valid while this program runs (RCU).
    let back = unsafe { *slot };
    // Marked before a confirmation moves the entry (a task that closes at
    // once): the confirmed copy carries the mark.
    if f.proto == PROTO_TCP {
        let _ = closing::from_task(seg, slot);
    }
    if !confirmed && (f.proto == PROTO_UDP || seg.flags & TCP_SYN == 0) {
        let key = f.key();
        conntrack::confirm(&key, &key);
    }
    let Some(node) = tunnel::node_holding(back.addr) else {
        return TC_ACT_SHOT; // the entry node left
    };
    if back.flags & CT_DSR != 0 {
        // Straight to the client, as the entry node would have sent it.
        let published = (back.service as u16).to_be();
        return match rewrite(ctx, f, node, f.daddr, published, back.port) {
            Some(()) => out_of_underlay(cfg),
            None => TC_ACT_SHOT,
        };
    }
    if back.port != f.dport && rewrite(ctx, f, f.saddr, f.daddr, f.sport, back.port).is_none() {
        return TC_ACT_SHOT;
    }
    match tunnel::wrap(ctx, cfg, f, &crate::mesh::mac_of(f.saddr), back.addr, node) {
        Ok(()) => out_of_underlay(cfg),
        Err(_) => TC_ACT_SHOT,
    }
}

/// On the entry node, a connection with direct server return: its replies
/// never pass by, so the client's first packet after its SYN (TCP) or its
/// second datagram (UDP) confirms it. (A client spoofing its source could
/// confirm one with a blind ACK: the SYN-ACK check is not possible here.)
#[inline(always)]
pub fn confirm_direct(f: &Flow, seg: &Segment, forward: &CtKey, reply: &CtKey) {
    if f.proto == PROTO_TCP && seg.flags & TCP_SYN != 0 {
        return;
    }
    conntrack::confirm(forward, reply);
}
