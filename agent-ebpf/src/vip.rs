//! East-west balancing: a task's connection to a service VIP becomes a
//! connection to the service's next task as it leaves the task (`vip_out`,
//! TC ingress of its host-side veth), and the replies get the VIP back as
//! they reach it (`vip_in`, TC egress of the same veth). `vip_out` is also
//! where a container's packets are first seen: the guards against a
//! spoofed source and against reaching the node's own ports sit there, and
//! the plain service-name DNS queries are answered there (see `dns`).

use aya_ebpf::{
    macros::{classifier, map},
    maps::HashMap,
    programs::TcContext,
};
use shoal_agent_common::{
    CT_ESTABLISHED, CT_VIP, CT_VIP_REPLY, CtEntry, CtKey, MESH_MAX_SERVICES, PortEntry,
};

use crate::{
    closing, conntrack, dns, guard,
    mesh::{
        Flow, L4_OFF, PROTO_TCP, PROTO_UDP, TC_NEXT, confirm_handshake, count, flow, mac_of,
        rewrite, still_there,
    },
    pick, reply,
    segment::Segment,
};

/// Service VIP (network order) → its slot and backends (ports kept).
#[map]
static MESH_VIPS: HashMap<u32, PortEntry> = HashMap::pinned(MESH_MAX_SERVICES, 0);

/// A task's connection to a service VIP, as it leaves the task (TC ingress
/// of its host-side veth): the VIP becomes the service's next task,
/// round-robin, its port kept; the task's own address stays the source.
///
/// Other packets of a task on the ingress network take a shorter way than
/// the bridge when the mesh knows them: its replies to a published-port
/// connection go out of the underlay interface (rewritten here, or wrapped
/// in VXLAN to the entry node that forwarded the connection).
#[classifier]
pub fn vip_out(mut ctx: TcContext) -> i32 {
    // Judged before anything is parsed: every frame the task sends, not
    // only those the mesh reads.
    // SAFETY: a read of the context the kernel gave this program.
    let veth = unsafe { (*ctx.skb.skb).ifindex };
    if guard::spoofed(&ctx, veth) {
        return guard::drop_packet(shoal_agent_common::DROP_SPOOFED_SOURCE);
    }
    let Some(f) = flow(&ctx) else {
        return TC_NEXT;
    };
    let Some(seg) = Segment::read(&ctx, &f, L4_OFF) else {
        return TC_NEXT;
    };
    if guard::container_blocked(&f, &seg) {
        return guard::drop_packet(shoal_agent_common::DROP_CONTAINER_TO_NODE);
    }
    // A plain query for a service name: answered here, never reaching the
    // agent's server (which gets every other query unchanged).
    if f.proto == PROTO_UDP
        && f.dport == dns::DNS_PORT.to_be()
        && let Some(verdict) = dns::answer(&mut ctx, &f)
    {
        return verdict;
    }
    // SAFETY: the agent writes whole entries.
    if let Some(service) = unsafe { MESH_VIPS.get(f.daddr) }.copied() {
        // No interface holds a VIP, so a packet from one is spoofed.
        // Tracked, its reply entry (from a backend to the VIP) would be
        // keyed like a connection to the VIP, which a task's own
        // connection could then hit. (Looked up for VIP traffic only.)
        // SAFETY: a lookup; nothing is read from the value.
        if unsafe { MESH_VIPS.get(f.saddr) }.is_none() {
            let _ = try_vip_out(&mut ctx, &f, &seg, &service);
        }
        return TC_NEXT;
    }
    reply::task_reply(&mut ctx, &f, &seg).unwrap_or(TC_NEXT)
}

#[inline(always)]
fn try_vip_out(ctx: &mut TcContext, f: &Flow, seg: &Segment, service: &PortEntry) -> Option<()> {
    let key = f.key();
    let (backend, new) = match conntrack::lookup_ptr(&key) {
        Some((entry, slot, confirmed)) if still_there(f, seg, &entry, f.saddr) => {
            if f.proto == PROTO_TCP {
                let reply = CtKey {
                    saddr: entry.addr,
                    daddr: f.saddr,
                    sport: entry.port,
                    dport: entry.nat_port,
                    proto: f.proto,
                    _pad: [0; 3],
                };
                // Marked before a confirmation moves the entries (see
                // `mesh::try_ingress`).
                if let Some(ending) = closing::from_client(seg, slot) {
                    closing::copy_to(&reply, ending);
                }
                if !confirmed {
                    confirm_handshake(seg, &key, &reply);
                }
            }
            (entry.addr, false)
        }
        _ => (new_vip_connection(f, seg, &key, service)?, true),
    };
    rewrite(ctx, f, f.saddr, backend, f.sport, f.dport)?;
    ctx.store(0, &mac_of(backend), 0).ok()?;
    count(service.service, ctx.len(), new);
    Some(())
}

/// A task's first packet to a VIP (`forward`: its key): the service's
/// next task, both directions tracked.
#[inline(always)]
fn new_vip_connection(
    f: &Flow,
    seg: &Segment,
    forward: &CtKey,
    service: &PortEntry,
) -> Option<u32> {
    if service.backends == 0 {
        return None;
    }
    if f.proto == PROTO_TCP && !seg.is_syn() {
        return None;
    }
    let backend = pick::backend(service, f)?;
    let reply = CtKey {
        saddr: backend.addr,
        daddr: f.saddr,
        sport: f.dport,
        dport: f.sport,
        proto: f.proto,
        _pad: [0; 3],
    };
    let there = CtEntry {
        addr: backend.addr,
        port: f.dport,
        nat_port: f.sport,
        service: service.service,
        flags: CT_VIP,
        syn_seq: seg.seq,
        client_seq: u32::from_be(seg.seq),
    };
    let back = CtEntry {
        addr: f.daddr,
        port: f.sport,
        nat_port: f.dport,
        service: service.service,
        flags: CT_VIP | CT_VIP_REPLY,
        syn_seq: 0,
        client_seq: 0,
    };
    // Unconfirmed until the handshake completes, as at the mesh's entry:
    // a container sending SYNs from made-up sources must not push other
    // connections out either.
    (conntrack::insert_new(&reply, &back, false) && conntrack::insert_new(forward, &there, false))
        .then_some(backend.addr)
}

/// Replies to a task's VIP connection, as they reach it (TC egress of its
/// host-side veth): the task that answered becomes the VIP again.
#[classifier]
pub fn vip_in(mut ctx: TcContext) -> i32 {
    let _ = try_vip_in(&mut ctx);
    TC_NEXT
}

#[inline(always)]
fn try_vip_in(ctx: &mut TcContext) -> Option<()> {
    let f = flow(ctx)?;
    let key = f.key();
    let (slot, confirmed) = conntrack::get_ptr_mut(&key)?;
    // SAFETY: the entry stays valid while this program runs (RCU).
    let back = unsafe { *slot };
    // Only a reply entry: a packet that matched the forward entry is not a
    // reply (see `CT_VIP_REPLY`), and the kernel's to handle.
    if back.flags & CT_VIP_REPLY == 0 {
        return None;
    }
    let seg = Segment::read(ctx, &f, L4_OFF)?;
    // The client task's direction: to the VIP (`back.addr`), as it left.
    let forward = CtKey {
        saddr: f.daddr,
        daddr: back.addr,
        sport: f.dport,
        dport: f.sport,
        proto: f.proto,
        _pad: [0; 3],
    };
    if !confirmed {
        if f.proto == PROTO_TCP {
            if seg.is_syn_ack() {
                // The SYN-ACK: the client's ACK of it confirms the
                // connection (in `try_vip_out`).
                // SAFETY: as above; whole words.
                unsafe {
                    (*slot).syn_seq = seg.seq;
                    (*slot).flags = back.flags | CT_ESTABLISHED;
                }
            }
        } else {
            // The backend answered the datagram: confirmed.
            conntrack::confirm(&forward, &key);
        }
    }
    if f.proto == PROTO_TCP
        && let Some(ending) = closing::from_task(&seg, slot)
    {
        closing::copy_to(&forward, ending);
    }
    rewrite(ctx, &f, back.addr, f.daddr, f.sport, f.dport)?;
    ctx.store(6, &mac_of(back.addr), 0).ok()?;
    count(back.service, ctx.len(), false);
    Some(())
}
