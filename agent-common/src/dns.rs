//! The maps of service-name DNS answered at a task's veth (`agent-ebpf`'s
//! `dns`): which veth asks through which view of the names, and each
//! name's addresses in that view. Only what the agent's server would
//! answer straight from its records (one question, A, IN, no EDNS, a name
//! the cluster holds) is here; everything else misses and goes on to it.

/// The longest name in the map, in wire format with its root label (a
/// name of up to about 120 characters); longer names go to the server.
pub const DNS_MAX_NAME: usize = 128;
/// Addresses one answer carries at most (longer answers go to the server).
pub const DNS_MAX_ADDRS: usize = 16;
/// Names one node's map holds, all views together (each view holds every
/// name its networks give; a restarted agent's first sync briefly holds
/// the views of the agent before it too).
pub const DNS_MAX_NAMES: u32 = 65_536;
/// Task veths one node's map holds.
pub const DNS_MAX_ASKERS: u32 = 8192;
/// Slots of the per-CPU counter array.
pub const DNS_ANSWERED: u32 = 0;
/// Queries from a known asker to its resolver's port 53 left to the server.
pub const DNS_PASSED: u32 = 1;
pub const DNS_COUNTERS: u32 = 2;
/// The largest DNS message the plain case answers over UDP (RFC 1035).
pub const DNS_UDP_LIMIT: usize = 512;

/// A task's host-side veth (the key: its ifindex): the only source address
/// it may ask from, the resolver it asks (its network's gateway), and the
/// view of the names its networks give it. Addresses in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsAsker {
    pub addr: u32,
    pub gateway: u32,
    pub view: u32,
    pub _pad: u32,
}

/// A name in one view: its wire format (labels, lowercase ASCII, the
/// root label included, zeros after), and how many bytes of it count.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnsNameKey {
    pub view: u32,
    pub len: u32,
    pub name: [u8; DNS_MAX_NAME],
}

impl Default for DnsNameKey {
    fn default() -> Self {
        Self {
            view: 0,
            len: 0,
            name: [0; DNS_MAX_NAME],
        }
    }
}

/// The A records of a name: TTL in network order, `count` addresses in
/// network order, and the rotation counter the program advances (one per
/// entry, shared by all CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsAnswer {
    pub turn: u64,
    pub ttl: u32,
    pub count: u32,
    pub addrs: [u32; DNS_MAX_ADDRS],
}

impl DnsAnswer {
    /// The same records, whatever the rotation counter says.
    pub fn same_records(&self, other: &DnsAnswer) -> bool {
        self.ttl == other.ttl && self.count == other.count && self.addrs == other.addrs
    }
}

// SAFETY (all three): plain-old-data, `#[repr(C)]`, explicit padding fields
// (sizes checked in the tests below).
#[cfg(feature = "user")]
unsafe impl aya::Pod for DnsAsker {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for DnsNameKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for DnsAnswer {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_hidden_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<DnsAsker>(), 16);
        assert_eq!(size_of::<DnsNameKey>(), 8 + DNS_MAX_NAME);
        assert_eq!(size_of::<DnsAnswer>(), 16 + 4 * DNS_MAX_ADDRS);
    }
}
