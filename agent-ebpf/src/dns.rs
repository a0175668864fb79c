//! Service-name DNS answered as the query leaves the task (TC ingress of
//! its host-side veth, inside `vip_out`), so that the common query never
//! reaches userspace: a datagram from the veth's own task address to its
//! resolver's port 53 carrying exactly the plain case of the agent's
//! server (`agent/src/dns/plain_a.rs`: one question, A, IN, no EDNS, no
//! other record), for a name the agent put in `DNS_NAMES` for the veth's
//! view. The packet becomes the answer the server would have written,
//! byte for byte (header flags, the question, one A record per address
//! with a pointer to the question's name, rotated round-robin by a
//! per-name counter), and goes back into the task. A bare name (one label)
//! the view does not hold gets the server's NXDOMAIN: bare names are the
//! cluster's to answer (`Records::resolve`), and the view holds every name
//! its networks give, those it cannot answer here as empty entries (the
//! agent clears the askers when a sync fails, so a view an asker points at
//! is whole). Anything else — other types, EDNS, dotted names the map does
//! not hold (upstream, denied), names with no address or too many, too
//! long — passes unchanged to the server.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::{
        bpf_csum_diff, bpf_redirect, bpf_skb_change_tail, bpf_skb_load_bytes, bpf_skb_store_bytes,
    },
    macros::map,
    maps::{HashMap, PerCpuArray},
    programs::TcContext,
};
use shoal_agent_common::{
    DNS_ANSWERED, DNS_COUNTERS, DNS_MAX_ADDRS, DNS_MAX_ASKERS, DNS_MAX_NAME, DNS_MAX_NAMES,
    DNS_PASSED, DNS_UDP_LIMIT, DnsAnswer, DnsAsker, DnsNameKey,
};

use crate::mesh::{ETH_HLEN, Flow, L4_OFF};

/// Task veth (ifindex) → its address, resolver and view.
#[map]
static DNS_ASKERS: HashMap<u32, DnsAsker> = HashMap::pinned(DNS_MAX_ASKERS, 0);
/// (view, wire name) → the A records the server answers.
#[map]
static DNS_NAMES: HashMap<DnsNameKey, DnsAnswer> = HashMap::pinned(DNS_MAX_NAMES, 0);
/// Queries answered here, and queries of known askers left to the server.
#[map]
static DNS_STATS: PerCpuArray<u64> = PerCpuArray::pinned(DNS_COUNTERS, 0);

/// Room for the lookup key and the records written, too big for the stack.
#[repr(C)]
struct Scratch {
    key: DnsNameKey,
    records: [[u8; RECORD]; DNS_MAX_ADDRS],
}

#[map]
static DNS_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

pub(crate) const DNS_PORT: u16 = 53;
const IP_LEN_OFF: usize = ETH_HLEN + 2;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const UDP_LEN_OFF: usize = L4_OFF + 4;
const UDP_CSUM_OFF: usize = L4_OFF + 6;
const UDP_HLEN: usize = 8;
const DNS_OFF: usize = L4_OFF + UDP_HLEN;
const DNS_HEADER: usize = 12;
/// The response codes written here.
const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;
/// The longest DNS label (RFC 1035).
const MAX_LABEL: usize = 63;
/// QTYPE A, QCLASS IN.
const TYPE_A_CLASS_IN: [u8; 4] = [0, 1, 0, 1];
/// QDCOUNT 1, ANCOUNT, NSCOUNT, ARCOUNT 0.
const ONE_QUESTION: [u8; 8] = [0, 1, 0, 0, 0, 0, 0, 0];
/// One answer: a pointer to the name at offset 12, A, IN, TTL, 4, address.
const RECORD: usize = 16;

const BPF_F_PSEUDO_HDR: u64 = 0x10;
const BPF_F_MARK_MANGLED_0: u64 = 0x20;

/// The answer's verdict (a redirect back into the task) when `f` is a
/// plain query this veth's view holds the name of; None leaves the packet
/// as it was, to the server.
#[inline(always)]
pub(crate) fn answer(ctx: &mut TcContext, f: &Flow) -> Option<i32> {
    // SAFETY: the kernel hands every TC program a valid __sk_buff.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: the agent writes whole entries.
    let asker = unsafe { DNS_ASKERS.get(ifindex) }.copied()?;
    // Only the veth's own task, asking its own resolver: the answer goes
    // back into this veth, so a spoofed source learns nothing the server
    // would not tell it.
    if asker.addr != f.saddr || asker.gateway != f.daddr {
        return None;
    }
    let Some(answer) = plain_answer(ctx, asker.view) else {
        bump(DNS_PASSED);
        return None;
    };
    if write_answer(ctx, f, &answer).is_none() {
        // Half rewritten: no longer the query, not yet the answer. The
        // asker asks again (a helper failing here is not expected).
        return Some(TC_ACT_SHOT);
    }
    bump(DNS_ANSWERED);
    // SAFETY: a plain helper call with an ifindex and no flags.
    Some(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

/// What the answer to a plain query needs, read before anything changes.
#[derive(Clone, Copy)]
struct Plain {
    ip_len_raw: u16,
    udp_len_raw: u16,
    /// Query header bytes 2 and 3 (flags).
    flags: [u8; 2],
    /// NOERROR with `count` records, or NXDOMAIN with none.
    code: u8,
    /// Where the records go: right after the question.
    records_at: usize,
    records_len: usize,
    count: usize,
}

#[inline(always)]
fn bump(counter: u32) {
    if let Some(slot) = DNS_STATS.get_ptr_mut(counter) {
        // SAFETY: a per-CPU slot, touched only by this CPU while we run.
        unsafe { *slot += 1 };
    }
}

/// The answer to the packet, if it is a plain query for a name `view`
/// holds, with its records written to this CPU's scratch. Reads only.
#[inline(always)]
fn plain_answer(ctx: &TcContext, view: u32) -> Option<Plain> {
    let ip_len_raw: u16 = ctx.load(IP_LEN_OFF).ok()?;
    let udp_len_raw: u16 = ctx.load(UDP_LEN_OFF).ok()?;
    let ip_len = u16::from_be(ip_len_raw) as usize;
    let udp_len = u16::from_be(udp_len_raw) as usize;
    // The datagram fills the IP packet, which fills the frame.
    if ip_len != L4_OFF - ETH_HLEN + udp_len || ctx.len() as usize != ETH_HLEN + ip_len {
        return None;
    }
    // The question's name runs from the header to the type and class,
    // which end the message.
    let name_len = udp_len.checked_sub(UDP_HLEN + DNS_HEADER + TYPE_A_CLASS_IN.len())?;
    if !(2..=DNS_MAX_NAME).contains(&name_len) {
        return None;
    }
    let header: [u8; DNS_HEADER] = ctx.load(DNS_OFF).ok()?;
    // QR 0 and opcode QUERY; exactly one question and no other record.
    if header[2] & 0xf8 != 0 || header[4..] != ONE_QUESTION {
        return None;
    }
    let question_end = DNS_OFF + DNS_HEADER + name_len;
    let kind: [u8; 4] = ctx.load(question_end).ok()?;
    if kind != TYPE_A_CLASS_IN {
        return None;
    }
    let scratch = DNS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's own slot, used only while this program runs.
    let scratch = unsafe { &mut *scratch };
    scratch.key.view = view;
    scratch.key.len = name_len as u32;
    scratch.key.name = [0; DNS_MAX_NAME];
    // `name_len` again, in a form the verifier can bound (1..=128) where
    // it reaches the helper: the check above does not survive compilation
    // as one. Equal to `name_len` for every length that passed it.
    const _: () = assert!(DNS_MAX_NAME.is_power_of_two());
    let bounded = ((name_len as u32 - 1) & (DNS_MAX_NAME as u32 - 1)) + 1;
    // SAFETY: `bounded` is within 1..=DNS_MAX_NAME, the buffer's size.
    let loaded = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            (DNS_OFF + DNS_HEADER) as u32,
            scratch.key.name.as_mut_ptr() as *mut _,
            bounded,
        )
    };
    if loaded != 0 {
        return None;
    }
    // ASCII lowercase, as the server looks names up. Label lengths (at most
    // 63) are no letters; a name the map holds is valid wire format, so a
    // match means the question's name is that name in some case.
    for b in scratch.key.name.iter_mut() {
        if b.is_ascii_uppercase() {
            *b |= 0x20;
        }
    }
    let no_records = Plain {
        ip_len_raw,
        udp_len_raw,
        flags: [header[2], header[3]],
        code: NXDOMAIN,
        records_at: 0,
        records_len: 0,
        count: 0,
    };
    // By reference: the key stays in the scratch map, off the stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let Some(entry) = DNS_NAMES.get_ptr_mut(&scratch.key) else {
        return is_plain_bare_name(&scratch.key.name, name_len).then_some(no_records);
    };
    // SAFETY: map values stay valid while this program runs (RCU); the
    // agent replaces whole entries.
    let (count, ttl, addrs) = unsafe { ((*entry).count as usize, (*entry).ttl, (*entry).addrs) };
    // Empty: a name of the view that the server answers (no address, or
    // more than fit here).
    if count == 0 || count > DNS_MAX_ADDRS {
        return None;
    }
    let records_len = count * RECORD;
    if UDP_HLEN + DNS_HEADER + name_len + TYPE_A_CLASS_IN.len() + records_len
        > UDP_HLEN + DNS_UDP_LIMIT
    {
        return None;
    }
    // One counter per name, shared by all CPUs: round-robin across queries.
    // Read, then add (as `mesh::next_backend`: BPF ISA v1 has no fetch-and-
    // add returning the old value): two queries at the same instant on two
    // CPUs may get the same turn, no increment is lost.
    // SAFETY: the entry is 8-byte aligned and valid while this program runs.
    let counter = unsafe { &raw mut (*entry).turn };
    // SAFETY: as above.
    let turn = unsafe { core::ptr::read_volatile(counter) };
    // SAFETY: as above; the result is unused, which v1's XADD allows.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, 1) };
    let start = (turn % count as u64) as usize;
    let ttl = ttl.to_ne_bytes();
    for i in 0..DNS_MAX_ADDRS {
        if i >= count {
            break;
        }
        let at = opaque((start + i) % count) & (DNS_MAX_ADDRS - 1);
        let addr = addrs[at].to_ne_bytes();
        scratch.records[i] = [
            0xc0,
            DNS_HEADER as u8,
            0,
            1,
            0,
            1,
            ttl[0],
            ttl[1],
            ttl[2],
            ttl[3],
            0,
            4,
            addr[0],
            addr[1],
            addr[2],
            addr[3],
        ];
    }
    Some(Plain {
        ip_len_raw,
        udp_len_raw,
        flags: [header[2], header[3]],
        code: NOERROR,
        records_at: DNS_OFF + DNS_HEADER + name_len + TYPE_A_CLASS_IN.len(),
        records_len,
        count,
    })
}

/// Whether `name` (the question's, `len` bytes in wire format, lowercase)
/// is one label the server's plain path takes: 1 to 63 ASCII bytes, no
/// dot among them, then the root label ending the name.
#[inline(always)]
fn is_plain_bare_name(name: &[u8; DNS_MAX_NAME], len: usize) -> bool {
    let label = name[0] as usize;
    if label == 0 || label > MAX_LABEL || len != label + 2 {
        return false;
    }
    // Within the buffer for the verifier; `label + 1` is at most 64.
    if name[opaque(label + 1) & (DNS_MAX_NAME - 1)] != 0 {
        return false;
    }
    for (i, b) in name.iter().enumerate().take(MAX_LABEL + 1).skip(1) {
        if i > label {
            break;
        }
        if !b.is_ascii() || *b == b'.' {
            return false;
        }
    }
    true
}

/// Rewrites the query into the answer `plain` describes: grows it by the
/// records (from this CPU's scratch), fixes header, lengths and checksums,
/// and turns it around. None: a helper failed part of the way.
#[inline(always)]
fn write_answer(ctx: &mut TcContext, f: &Flow, plain: &Plain) -> Option<()> {
    if plain.count > 0 {
        append_records(ctx, plain)?;
    }
    // Header: QR, the query's RD, RA, the code.
    let flags = plain.flags;
    let old_flags = u16::from_ne_bytes(flags);
    let new_flags = u16::from_ne_bytes([0x80 | (flags[0] & 0x01), 0x80 | plain.code]);
    replace_udp_word(ctx, DNS_OFF + 2, old_flags, new_flags, 0)?;
    // Back to the asker: addresses, ports and MACs swapped (sums unchanged).
    ctx.store(ETH_HLEN + 12, &[f.daddr, f.saddr], 0).ok()?;
    ctx.store(L4_OFF, &[f.dport, f.sport], 0).ok()?;
    let macs: [u8; 12] = ctx.load(0).ok()?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    ctx.store(0, &swapped, 0).ok()?;
    Some(())
}

/// Grows the query by the records (from this CPU's scratch) and sets
/// ANCOUNT, the lengths and the checksums for them.
#[inline(always)]
fn append_records(ctx: &mut TcContext, plain: &Plain) -> Option<()> {
    let Plain {
        ip_len_raw,
        udp_len_raw,
        records_at,
        records_len,
        count,
        ..
    } = *plain;
    let scratch = DNS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's own slot, filled by `plain_answer` just before.
    let records = unsafe { (*scratch).records.as_mut_ptr() } as *mut u8;
    if records_len == 0 || records_len > RECORD * DNS_MAX_ADDRS {
        return None;
    }
    // SAFETY: a plain helper call; the new length only grows the packet.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (records_at + records_len) as u32, 0) } != 0 {
        return None;
    }
    // SAFETY: `records` holds DNS_MAX_ADDRS records; `records_len` is at most that.
    let stored = unsafe {
        bpf_skb_store_bytes(
            ctx.skb.skb,
            records_at as u32,
            records as *const _,
            records_len as u32,
            0,
        )
    };
    if stored != 0 {
        return None;
    }
    // The records' sum, for the UDP checksum; records that start at an odd
    // offset of the datagram add their sum byte-swapped.
    // SAFETY: as above; a multiple of 4 bytes, as the helper wants.
    let sum = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            records as *mut u32,
            records_len as u32,
            0,
        )
    };
    if sum < 0 {
        return None;
    }
    let mut sum = sum as u64;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    if (records_at - L4_OFF) % 2 == 1 {
        sum = ((sum & 0xff) << 8) | (sum >> 8);
    }
    // Size 0: `to` is a sum to add.
    ctx.l4_csum_replace(UDP_CSUM_OFF, 0, sum, BPF_F_MARK_MANGLED_0)
        .ok()?;

    let answers = u16::from_ne_bytes((count as u16).to_be_bytes());
    replace_udp_word(ctx, DNS_OFF + 6, 0, answers, 0)?;
    // Lengths: UDP's (in its header and in the pseudo-header), then IP's.
    let new_udp_len = (u16::from_be(udp_len_raw) + records_len as u16).to_be();
    replace_udp_word(ctx, UDP_LEN_OFF, udp_len_raw, new_udp_len, 0)?;
    ctx.l4_csum_replace(
        UDP_CSUM_OFF,
        u64::from(udp_len_raw),
        u64::from(new_udp_len),
        BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 2,
    )
    .ok()?;
    let new_ip_len = (u16::from_be(ip_len_raw) + records_len as u16).to_be();
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(ip_len_raw), u64::from(new_ip_len), 2)
        .ok()?;
    ctx.store(IP_LEN_OFF, &new_ip_len, 0).ok()
}

/// `v`, through memory the compiler must read again: a mask applied to
/// the result stays in the program (the verifier needs it to bound an
/// index the compiler knows is in range and would drop it for).
#[inline(always)]
fn opaque(v: usize) -> usize {
    // SAFETY: a read of a local just written.
    unsafe { core::ptr::read_volatile(&v) }
}

/// Replaces a 16-bit word of the datagram (raw, as on the wire) and fixes
/// the UDP checksum for it.
#[inline(always)]
fn replace_udp_word(ctx: &mut TcContext, at: usize, old: u16, new: u16, flags: u64) -> Option<()> {
    ctx.l4_csum_replace(
        UDP_CSUM_OFF,
        u64::from(old),
        u64::from(new),
        flags | BPF_F_MARK_MANGLED_0 | 2,
    )
    .ok()?;
    ctx.store(at, &new, 0).ok()
}
