//! How the mesh tells that a tracked TCP connection has ended, shared by
//! the eBPF programs (which mark it) and the agent (whose sweeper removes
//! the entries of ended connections once they have lingered).
//!
//! The side that opened the connection (the client of a published port or
//! of a VIP) may be anyone on the network, so its FINs and RSTs count only
//! if their sequence number is where that side's stream is (RFC 5961's
//! spirit: an off-path packet cannot end someone else's connection). The
//! other side's packets come from a task's own veth or from a cluster
//! node's VXLAN (accepted from cluster nodes only), so they are believed.

use crate::{CT_CLOSING, CT_DSR, CT_RETURN, CtEntry};

/// The client sent a FIN (in its window).
pub const CT_FIN_CLIENT: u32 = 64;
/// The task (the backend) sent a FIN.
pub const CT_FIN_TASK: u32 = 128;
/// Either side reset the connection (the client's RST in its window).
pub const CT_RESET: u32 = 256;
/// Every bit that says the connection is ending.
pub const CT_ENDING: u32 = CT_CLOSING | CT_FIN_CLIENT | CT_FIN_TASK | CT_RESET;

/// How far past the start of the client's last segment its FIN or RST may
/// be: a legitimate one carries the client's next sequence number, at
/// most one segment past the last (a GRO super-packet is up to 64 KiB),
/// so 256 KiB is ample, and a blind guess hits it once in 16,384 tries.
/// The receiver's real window cannot be known here without its scale
/// option; the receiver checks its own again (Linux to RFC 5961).
pub const CLIENT_WINDOW: u32 = 256 * 1024;

/// Whether a FIN or RST from the client with sequence number `seq` (host
/// order) is in its stream, whose last segment started at `last` (the
/// client's initial sequence number before it sent any): `last <= seq <
/// last + CLIENT_WINDOW`, modulo 2^32.
#[inline(always)]
pub fn client_in_window(seq: u32, last: u32) -> bool {
    seq.wrapping_sub(last) < CLIENT_WINDOW
}

/// Whether a connection's entry is for an ended connection: reset, or
/// closed by both sides. Such an entry lingers (retransmitted FINs and the
/// last ACKs still need it) and then goes.
#[inline(always)]
pub fn is_closed(flags: u32) -> bool {
    flags & CT_RESET != 0 || flags & (CT_FIN_CLIENT | CT_FIN_TASK) == CT_FIN_CLIENT | CT_FIN_TASK
}

/// The flags after a TCP packet with `tcp_flags` (its header's flags
/// byte) went by: what a FIN or RST adds, `from_client` saying which side
/// sent it (its window already checked), and what a new SYN clears (a
/// connection reusing the ports starts from nothing).
#[inline(always)]
pub fn after(flags: u32, tcp_flags: u8, from_client: bool) -> u32 {
    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const ACK: u8 = 0x10;
    if tcp_flags & RST != 0 {
        return flags | CT_CLOSING | CT_RESET;
    }
    if tcp_flags & FIN != 0 {
        let side = if from_client {
            CT_FIN_CLIENT
        } else {
            CT_FIN_TASK
        };
        return flags | CT_CLOSING | side;
    }
    if tcp_flags & (SYN | ACK) == SYN {
        return flags & !CT_ENDING;
    }
    flags
}

/// Whether this node has seen all it will of the connection's end, so
/// that the sweeper may remove its entry once it has lingered: it is
/// closed (see [`is_closed`]), or it is an entry node's entry of direct
/// server return (`CT_DSR` without `CT_RETURN`) whose client sent its FIN.
///
/// With direct server return the task's packets, its FIN among them,
/// leave the task's node straight to the client and never pass the entry
/// node, so the client's FIN is all of the end that node sees (the data
/// plane lets a new connection take such an entry's ports on the same
/// ground). Kept until both FINs, those entries stayed until the table
/// was full, and then the LRU evicted the longest-idle entries first: the
/// live idle connections of every service on the node (20,625 of 20,662
/// entries on the lab's entry node after a bench). The cost: a client
/// that half-closes and keeps reading for longer than the linger
/// (`--mesh-close-linger`) loses the entry, and its ACKs are then refused.
/// IPVS in direct routing judges the same way, with its FIN_WAIT timeout.
#[inline(always)]
pub fn has_ended_here(flags: u32) -> bool {
    is_closed(flags) || (flags & (CT_DSR | CT_RETURN) == CT_DSR && flags & CT_FIN_CLIENT != 0)
}

/// Whether `entry` may be removed now: it has ended as far as this node
/// can see (see [`has_ended_here`]) and is unchanged since `seen` was read
/// (the same connection: a new one on the same ports would have another
/// initial sequence number or clean flags).
pub fn same_closed(seen: &CtEntry, now: &CtEntry) -> bool {
    has_ended_here(now.flags)
        && seen.syn_seq == now.syn_seq
        && seen.addr == now.addr
        && seen.port == now.port
        && seen.nat_port == now.nat_port
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_next_sequence_number_is_in_its_window() {
        // The last segment started at 1000 and carried 500 bytes: the
        // FIN or RST comes at 1500.
        assert!(client_in_window(1500, 1000));
        assert!(client_in_window(1000, 1000)); // a pure ACK was last
        assert!(client_in_window(1000 + CLIENT_WINDOW - 1, 1000));
    }

    #[test]
    fn a_guess_outside_the_window_is_not() {
        assert!(!client_in_window(1000 + CLIENT_WINDOW, 1000));
        assert!(!client_in_window(999, 1000)); // behind the stream
        assert!(!client_in_window(0x8000_0000, 1000));
        assert!(!client_in_window(0, 1000));
    }

    #[test]
    fn the_window_wraps_around_the_sequence_space() {
        let last = u32::MAX - 100;
        assert!(client_in_window(last, last));
        assert!(client_in_window(50, last)); // past the wrap
        assert!(client_in_window(last.wrapping_add(CLIENT_WINDOW - 1), last));
        assert!(!client_in_window(last.wrapping_add(CLIENT_WINDOW), last));
        assert!(!client_in_window(last - 1, last));
    }

    #[test]
    fn closed_takes_both_fins_or_a_reset() {
        assert!(!is_closed(0));
        assert!(!is_closed(CT_CLOSING | CT_FIN_CLIENT));
        assert!(!is_closed(CT_CLOSING | CT_FIN_TASK));
        assert!(is_closed(CT_CLOSING | CT_FIN_CLIENT | CT_FIN_TASK));
        assert!(is_closed(CT_CLOSING | CT_RESET));
    }

    #[test]
    fn an_entry_node_of_direct_server_return_takes_the_clients_fin_for_the_end() {
        let entry_node = CT_DSR | CT_CLOSING | CT_FIN_CLIENT;
        assert!(has_ended_here(entry_node));
        // The task's node sees the task's FIN too: both, as for the rest.
        let task_node = CT_DSR | CT_RETURN | CT_CLOSING | CT_FIN_CLIENT;
        assert!(!has_ended_here(task_node));
        assert!(has_ended_here(task_node | CT_FIN_TASK));
        // Without direct server return the client's FIN alone is not the end.
        assert!(!has_ended_here(CT_CLOSING | CT_FIN_CLIENT));
        // Nor is a direct connection the client has not closed.
        assert!(!has_ended_here(CT_DSR | crate::CT_ESTABLISHED));
        // A reset ends every kind.
        assert!(has_ended_here(CT_DSR | CT_RETURN | CT_CLOSING | CT_RESET));
        assert!(has_ended_here(CT_CLOSING | CT_RESET));
    }

    #[test]
    fn fins_rsts_and_syns_change_the_flags() {
        let est = crate::CT_ESTABLISHED;
        let fin_ack = 0x11;
        let rst = 0x04;
        let syn = 0x02;
        let ack = 0x10;
        let half = after(est, fin_ack, true);
        assert_eq!(half, est | CT_CLOSING | CT_FIN_CLIENT);
        let both = after(half, fin_ack, false);
        assert!(is_closed(both));
        assert_eq!(after(est, rst, false), est | CT_CLOSING | CT_RESET);
        assert_eq!(after(est, ack, true), est);
        // A new connection on the same ports: nothing of the old ending.
        assert_eq!(after(both, syn, true), est);
        // A SYN-ACK is no new connection.
        assert_eq!(after(half, syn | ack, false), half);
    }

    #[test]
    fn only_the_same_closed_connection_is_removed() {
        let seen = CtEntry {
            addr: 1,
            port: 2,
            nat_port: 3,
            service: 4,
            flags: CT_CLOSING | CT_RESET,
            syn_seq: 77,
            client_seq: 0,
        };
        assert!(same_closed(&seen, &seen));
        let reopened = CtEntry {
            flags: crate::CT_ESTABLISHED,
            ..seen
        };
        assert!(!same_closed(&seen, &reopened));
        let other = CtEntry {
            syn_seq: 78,
            ..seen
        };
        assert!(!same_closed(&seen, &other));
    }
}
