//! Connections end in the mesh's tables too (see
//! `shoal_agent_common::close`): every TCP packet of a tracked connection
//! passes here with the entry its lookup found. The client's sequence
//! number is kept (one store in an entry already at hand, no lookup), so
//! that its FIN or RST counts only in its window; the task's are believed
//! (they come from its own veth, or wrapped by a cluster node). An entry
//! of an ended connection is left for the agent's sweeper, which removes
//! it once it has lingered (retransmitted FINs and last ACKs still pass).

use shoal_agent_common::{CT_ENDING, CtEntry, CtKey, close};

use crate::{
    conntrack,
    mesh::{TCP_FIN, TCP_RST},
    segment::Segment,
};

/// A client's packet (its TCP fields: `seg`) on the connection of `slot`:
/// its sequence number kept, its FIN or RST marking the connection ending
/// if it is in the client's window (a guess from off the path is not).
/// Returns the ending bits to copy to the connection's other entry, if any.
#[inline(always)]
pub fn from_client(seg: &Segment, slot: *mut CtEntry) -> Option<u32> {
    let (seq, tcp_flags) = (u32::from_be(seg.seq), seg.flags);
    // SAFETY: the entry stays valid while this program runs (RCU); whole
    // words are read and written.
    let (last, flags) = unsafe { ((*slot).client_seq, (*slot).flags) };
    if tcp_flags & (TCP_FIN | TCP_RST) == 0 {
        if seg.is_syn() {
            // A SYN on the ports again: this connection starts afresh.
            // SAFETY: as above.
            unsafe {
                (*slot).flags = flags & !CT_ENDING;
                (*slot).client_seq = seq;
            }
        } else if seq != last {
            // SAFETY: as above.
            unsafe { (*slot).client_seq = seq };
        }
        return None;
    }
    if !close::client_in_window(seq, last) {
        return None; // not from where the client's stream is
    }
    let wanted = close::after(flags, tcp_flags, true);
    // SAFETY: as above.
    unsafe {
        (*slot).client_seq = seq;
        (*slot).flags = wanted;
    }
    Some(wanted & CT_ENDING)
}

/// A task's packet (its TCP fields: `seg`) on the connection of `slot`: its
/// FIN or RST marks the connection ending. Returns the ending bits to copy
/// to the connection's other entry, if any.
#[inline(always)]
pub fn from_task(seg: &Segment, slot: *mut CtEntry) -> Option<u32> {
    let tcp_flags = seg.flags;
    if tcp_flags & (TCP_FIN | TCP_RST) == 0 {
        return None;
    }
    // SAFETY: as in `from_client`.
    let flags = unsafe { (*slot).flags };
    let wanted = close::after(flags, tcp_flags, false);
    if wanted != flags {
        // SAFETY: as above.
        unsafe { (*slot).flags = wanted };
    }
    Some(wanted & CT_ENDING)
}

/// Copies a connection's ending bits to its other direction's entry.
#[inline(always)]
pub fn copy_to(key: &CtKey, ending: u32) {
    if let Some((slot, _)) = conntrack::get_ptr_mut(key) {
        // SAFETY: as in `from_client`.
        unsafe { (*slot).flags |= ending };
    }
}
