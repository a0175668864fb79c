//! Per-interface packet and byte counters, attached at TC ingress and egress.
//! They never change a packet's fate: they return `TCX_NEXT` so programs
//! attached after them (the routing mesh) still run.

use aya_ebpf::{
    macros::{classifier, map},
    maps::PerCpuHashMap,
    programs::TcContext,
};
use shoal_agent_common::{IfaceCounters, MAX_COUNTED_INTERFACES};

/// `TCX_NEXT` (and `TC_ACT_UNSPEC` on the legacy hook): let the next program decide.
const TC_NEXT: i32 = -1;
const BPF_NOEXIST: u64 = 1;

/// Keyed by ifindex. Per-CPU so that counting needs no atomics. Pinned by
/// name: every load on a node shares the one map, and it outlives the agent.
#[map]
static IFACE_COUNTERS: PerCpuHashMap<u32, IfaceCounters> =
    PerCpuHashMap::pinned(MAX_COUNTED_INTERFACES, 0);

#[classifier]
pub fn count_ingress(ctx: TcContext) -> i32 {
    count(&ctx, Direction::Rx);
    TC_NEXT
}

#[classifier]
pub fn count_egress(ctx: TcContext) -> i32 {
    count(&ctx, Direction::Tx);
    TC_NEXT
}

enum Direction {
    Rx,
    Tx,
}

#[inline(always)]
fn count(ctx: &TcContext, direction: Direction) {
    // SAFETY: the kernel hands every TC program a valid __sk_buff.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let len = u64::from(ctx.len());
    let slot = match IFACE_COUNTERS.get_ptr_mut(ifindex) {
        Some(slot) => slot,
        None => {
            // First packet on this interface (from this CPU's view): create the
            // entry. Another CPU may win the race; BPF_NOEXIST keeps its entry.
            let _ = IFACE_COUNTERS.insert(ifindex, IfaceCounters::default(), BPF_NOEXIST);
            match IFACE_COUNTERS.get_ptr_mut(ifindex) {
                Some(slot) => slot,
                None => return, // map full: count nothing rather than fail the packet
            }
        }
    };
    // SAFETY: a per-CPU slot is only touched by this CPU while this program runs.
    let counters = unsafe { &mut *slot };
    match direction {
        Direction::Rx => {
            counters.rx_packets += 1;
            counters.rx_bytes += len;
        }
        Direction::Tx => {
            counters.tx_packets += 1;
            counters.tx_bytes += len;
        }
    }
}
