//! Keys and values shared by Shoal's eBPF programs (`agent-ebpf`) and the agent
//! that owns their maps. Every type here is `#[repr(C)]` and has the same layout
//! on both sides; a change to any of them must bump [`LAYOUT_VERSION`], which is
//! part of every pin path so that an agent never reuses a map pinned by an
//! older layout.
#![no_std]

/// Version of the map layouts below. Pinned objects live under
/// `<bpffs root>/v<LAYOUT_VERSION>/`.
pub const LAYOUT_VERSION: u32 = 1;

/// Names of the maps and programs in the eBPF object, as the loader looks them up.
pub mod names {
    pub const IFACE_COUNTERS: &str = "IFACE_COUNTERS";
    pub const COUNT_INGRESS: &str = "count_ingress";
    pub const COUNT_EGRESS: &str = "count_egress";
}

/// How many interfaces one node's counter map can track.
pub const MAX_COUNTED_INTERFACES: u32 = 1024;

/// Packet and byte counts of one interface, one slot per CPU in the map
/// (the agent sums them). Bytes are `skb->len`: the frame from the Ethernet
/// header on, as the interface saw it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

impl IfaceCounters {
    /// Adds another CPU's slot (or another sample) to this one.
    pub fn add(&mut self, other: &IfaceCounters) {
        self.rx_packets = self.rx_packets.wrapping_add(other.rx_packets);
        self.rx_bytes = self.rx_bytes.wrapping_add(other.rx_bytes);
        self.tx_packets = self.tx_packets.wrapping_add(other.tx_packets);
        self.tx_bytes = self.tx_bytes.wrapping_add(other.tx_bytes);
    }
}

// SAFETY: plain-old-data: `#[repr(C)]`, only u64 fields, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for IfaceCounters {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_no_padding() {
        assert_eq!(core::mem::size_of::<IfaceCounters>(), 32);
        assert_eq!(core::mem::align_of::<IfaceCounters>(), 8);
    }

    #[test]
    fn add_sums_every_field() {
        let mut a = IfaceCounters {
            rx_packets: 1,
            rx_bytes: 60,
            tx_packets: 2,
            tx_bytes: 120,
        };
        a.add(&IfaceCounters {
            rx_packets: 3,
            rx_bytes: 180,
            tx_packets: 4,
            tx_bytes: 240,
        });
        assert_eq!(
            a,
            IfaceCounters {
                rx_packets: 4,
                rx_bytes: 240,
                tx_packets: 6,
                tx_bytes: 360
            }
        );
    }
}
