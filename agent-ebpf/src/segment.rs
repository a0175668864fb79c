//! The TCP header fields the mesh decides on (sequence and acknowledgment
//! numbers, flags), read with one load where a program first needs them
//! and handed along: before, each step loaded the ones it looked at, up to
//! five helper calls a packet for what one call reads.

use aya_ebpf::programs::TcContext;

use crate::mesh::{Flow, PROTO_TCP, TCP_ACK, TCP_SYN};

/// A packet's TCP fields; all zero for UDP.
#[derive(Clone, Copy)]
pub(crate) struct Segment {
    /// The sequence number as on the wire (network order), as the
    /// connection entries keep it.
    pub seq: u32,
    /// The acknowledgment number, as on the wire.
    pub ack: u32,
    pub flags: u8,
}

impl Segment {
    /// The TCP fields of `f`'s packet, whose TCP or UDP header starts at
    /// `l4`. None: a TCP header too short to hold its flags, which is no
    /// connection's (the mesh leaves it to the kernel, which drops it).
    #[inline(always)]
    pub(crate) fn read(ctx: &TcContext, f: &Flow, l4: usize) -> Option<Segment> {
        if f.proto != PROTO_TCP {
            return Some(Segment {
                seq: 0,
                ack: 0,
                flags: 0,
            });
        }
        // Bytes 4 to 13: sequence, acknowledgment, data offset, flags.
        let raw: [u8; 10] = ctx.load(l4 + 4).ok()?;
        Some(Segment {
            seq: u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]),
            ack: u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]),
            flags: raw[9],
        })
    }

    /// A SYN without ACK: the first packet of a connection.
    #[inline(always)]
    pub(crate) fn is_syn(&self) -> bool {
        self.flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// A SYN-ACK: the server's answer to a connection's SYN.
    #[inline(always)]
    pub(crate) fn is_syn_ack(&self) -> bool {
        self.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
    }
}
