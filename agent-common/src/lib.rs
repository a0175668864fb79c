//! Keys and values shared by Shoal's eBPF programs (`agent-ebpf`) and the agent
//! that owns their maps. Every type here is `#[repr(C)]` and has the same layout
//! on both sides; a change to any of them must bump [`LAYOUT_VERSION`], which is
//! part of every pin path so that an agent never reuses a map pinned by an
//! older layout.
#![no_std]

pub mod close;
mod dns;
mod pick;
pub use close::{CT_ENDING, CT_FIN_CLIENT, CT_FIN_TASK, CT_RESET};
pub use dns::*;
pub use pick::*;

/// Version of the map layouts below. Pinned objects live under
/// `<bpffs root>/v<LAYOUT_VERSION>/`.
pub const LAYOUT_VERSION: u32 = 18;

/// Names of the maps and programs in the eBPF object, as the loader looks them up.
pub mod names {
    pub const IFACE_COUNTERS: &str = "IFACE_COUNTERS";
    pub const COUNT_INGRESS: &str = "count_ingress";
    pub const COUNT_EGRESS: &str = "count_egress";
    pub const MESH_CONFIG: &str = "MESH_CONFIG";
    pub const MESH_PORTS: &str = "MESH_PORTS";
    pub const MESH_BACKENDS: &str = "MESH_BACKENDS";
    pub const MESH_RR: &str = "MESH_RR";
    pub const MESH_CT: &str = "MESH_CT";
    pub const MESH_STATS: &str = "MESH_STATS";
    pub const MESH_LIVE: &str = "MESH_LIVE";
    pub const MESH_VIPS: &str = "MESH_VIPS";
    pub const MESH_TUNNELS: &str = "MESH_TUNNELS";
    pub const MESH_LOCAL: &str = "MESH_LOCAL";
    pub const MESH_SYN: &str = "MESH_SYN";
    pub const MESH_TARGETS: &str = "MESH_TARGETS";
    pub const MESH_RETURN: &str = "MESH_RETURN";
    pub const NODE_ADDRS: &str = "NODE_ADDRS";
    pub const GUARD_PORTS: &str = "GUARD_PORTS";
    pub const DROPS: &str = "DROPS";
    pub const MESH_PICK: &str = "MESH_PICK";
    pub const MESH_MAGLEV: &str = "MESH_MAGLEV";
    pub const MESH_AFFINITY: &str = "MESH_AFFINITY";
    pub const ALLOW_PORTS: &str = "ALLOW_PORTS";
    pub const ALLOW_CIDRS: &str = "ALLOW_CIDRS";
    pub const DNS_ASKERS: &str = "DNS_ASKERS";
    pub const DNS_NAMES: &str = "DNS_NAMES";
    pub const DNS_STATS: &str = "DNS_STATS";
    pub const TASK_SOURCES: &str = "TASK_SOURCES";
    /// On each task's host-side veth, TC ingress: connections to a VIP.
    pub const VIP_OUT: &str = "vip_out";
    /// On each task's host-side veth, TC egress: their replies.
    pub const VIP_IN: &str = "vip_in";
    /// On the underlay interface (TC ingress): published ports in.
    pub const MESH_INGRESS: &str = "mesh_ingress";
    /// On the ingress network's bridge (TC ingress): replies back out.
    pub const MESH_REPLY: &str = "mesh_reply";
}

/// Slots in the mesh's per-service maps: published ports take the lower
/// half, VIPs the upper, so a node serves up to 16,384 of each (a cluster
/// with 10,000 published ports is measured by `cargo xtask bench mesh`).
pub const MESH_MAX_SERVICES: u32 = 32768;
/// The UDP port of every VXLAN device Shoal creates (IANA's).
pub const VXLAN_PORT: u16 = 4789;

/// Backends one service can balance over.
pub const MESH_MAX_BACKENDS: u32 = 1024;
/// Connections tracked (both directions each take an entry); least
/// recently used ones go first when it fills. Only confirmed connections
/// live here (a TCP handshake the client completed, a UDP flow its backend
/// answered): new ones wait in a table of their own, so SYNs from spoofed
/// sources, which never complete, cannot push established flows out.
pub const MESH_MAX_CONNECTIONS: u32 = 262_144;
/// Connections not confirmed yet (both directions each take an entry):
/// least recently used ones go first, so a flood of spoofed SYNs evicts
/// only other unconfirmed connections.
pub const MESH_MAX_EMBRYONIC: u32 = 65_536;

/// The node's own facts the mesh programs need (one entry, index 0).
/// Addresses are in network byte order, as they sit in packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshConfig {
    /// The node's underlay address: published ports answer on it.
    pub node_addr: u32,
    /// The node's own address on the ingress network (its bridge's MAC is
    /// derived from it, and tasks' nodes learn it from that MAC to send the
    /// replies of a connection back to the node it entered by).
    pub ingress_addr: u32,
    pub underlay_ifindex: u32,
    pub bridge_ifindex: u32,
    pub bridge_mac: [u8; 6],
    /// The largest TCP segment the overlay carries (its MTU − 40): SYNs
    /// from the underlay asking for more are clamped to it.
    pub mss: u16,
    /// The ingress network's VXLAN id, for the packets the mesh
    /// encapsulates and decapsulates itself.
    pub ingress_vni: u32,
    /// [`GUARD_NODES`]: `NODE_ADDRS` lists the cluster's nodes, and VXLAN
    /// from any other address is dropped (an agent whose manager sends no
    /// node list would otherwise cut its overlays off).
    pub flags: u32,
}

/// `MeshConfig::flags`: VXLAN is accepted only from the nodes in `NODE_ADDRS`.
pub const GUARD_NODES: u32 = 1;

// `NODE_ADDRS` maps an IPv4 address (network order) to what it is to this
// node, as `ADDR_*` bits: VXLAN is accepted only from cluster nodes, and
// containers may reach no port of this node but its DNS server, and not
// the `GUARD_PORTS` of other nodes.

/// A cluster node's underlay address (this node's included).
pub const ADDR_CLUSTER_NODE: u32 = 1;
/// One of this node's own addresses: containers reach none of its ports…
pub const ADDR_LOCAL: u32 = 2;
/// …but port 53 where the node's DNS server listens (a network's gateway).
pub const ADDR_DNS: u32 = 4;

// `GUARD_PORTS` holds the `PortKey`s (port in network order, protocol) that
// containers may not reach on other nodes: the managers' API (2377 and any
// other port a manager listens on) and VXLAN (4789/udp, which the node's
// masquerade would make look as if it came from a cluster node).

/// A local task's address on the ingress network with the target port (and
/// protocol) of a port its service publishes in ingress mode: the only
/// packets the ingress network's VXLAN may bring to a task here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TargetKey {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// `MESH_TARGETS` values: the target is published (every entry has it)…
pub const TARGET_PUBLISHED: u32 = 1;
/// …with direct server return: the published port is in the upper 16 bits
/// (host order), the source port of the replies the task's node sends
/// straight to the client.
pub const TARGET_DSR: u32 = 2;

/// Slots of the per-CPU `DROPS` counters: why the data plane dropped a packet.
pub const DROP_VXLAN_SOURCE: u32 = 0;
/// Ingress-network VXLAN for no published port of a task here (nor a
/// reply to a connection this node forwards), or an IPv4 fragment or
/// options there, which would hide the ports.
pub const DROP_VXLAN_PORT: u32 = 1;
/// A container's packet to this node's own ports, or to another node's
/// `GUARD_PORTS`.
pub const DROP_CONTAINER_TO_NODE: u32 = 2;
/// A new connection to a published port from a source its allow-list
/// (the port's `--publish …,allow=CIDR`, or the node's `--ingress-allow`)
/// does not name.
pub const DROP_NOT_ALLOWED: u32 = 3;
/// A frame leaving a task (on its host-side veth) that claims an address
/// its task does not hold on that network (an IPv4 source, an ARP sender,
/// a MAC; `TASK_SOURCES`) or is of a kind the network does not carry
/// (IPv6, a VLAN tag, another EtherType).
pub const DROP_SPOOFED_SOURCE: u32 = 4;
/// How many drop reasons there are (slots in `DROPS`).
pub const DROP_REASONS: u32 = 5;
/// The reasons' names, by slot, as `shoal-agent datapath drops` prints them.
pub const DROP_NAMES: [&str; DROP_REASONS as usize] = [
    "vxlan-source",
    "vxlan-port",
    "container-to-node",
    "ingress-allow",
    "spoofed-source",
];

// `TASK_SOURCES` maps a task's host-side veth (ifindex) to the address
// (network order) its task holds on that veth's network, the one source
// its packets may carry: a container that sends from another task's
// address could otherwise take over that task's tracked connections.

/// Task veths the anti-spoofing map holds, at most.
pub const TASK_MAX_VETHS: u32 = 16_384;

// Allow-lists of published ports. `ALLOW_PORTS` holds the `PortKey`s that
// have a list (a port without one admits every source), and
// [`ALLOW_NODE_PORT`] when the node has one (`shoal node update
// --ingress-allow`), which every published port of the node applies too.
// `ALLOW_CIDRS` is one LPM trie for all the lists: its key is an
// [`AllowKey`] after a prefix length of 32 (port, protocol, padding: the
// list) plus the CIDR's own prefix length.

/// The `PortKey` under which `ALLOW_PORTS` and `ALLOW_CIDRS` hold the
/// node's own list (port 0 is never published).
pub const ALLOW_NODE_PORT: PortKey = PortKey {
    port: 0,
    proto: 0,
    _pad: 0,
};
/// CIDRs all allow-lists of a node hold together.
pub const ALLOW_MAX_CIDRS: u32 = 65_536;
/// Bits of an [`AllowKey`] before its address: the list it belongs to.
pub const ALLOW_LIST_BITS: u32 = 32;

/// The data of an `ALLOW_CIDRS` key: a list (a published port, or
/// [`ALLOW_NODE_PORT`]) and a source address, both in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AllowKey {
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
    pub addr: u32,
}

/// A published port: `(port, protocol)`; the port in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// What a published port leads to: a service slot and how many backends
/// it has now (`MESH_BACKENDS` holds indexes `0..backends`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortEntry {
    pub service: u32,
    pub backends: u16,
    /// [`MODE_INGRESS`] or [`MODE_HOST`].
    pub mode: u16,
}

/// Ingress mode: every node answers, any task serves, and it sees the
/// client's own address (its replies go back through the entry node).
pub const MODE_INGRESS: u16 = 0;
/// Host mode: only nodes with a task answer, a local task serves, and it
/// sees the client's own address.
pub const MODE_HOST: u16 = 1;
/// Ingress mode with direct server return: the task's node sends the
/// replies straight to the client (the entry node sees only the client's
/// side, so it confirms a connection on the client's first ACK).
pub const MODE_INGRESS_DSR: u16 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub service: u32,
    pub index: u32,
}

/// A task's address on the ingress network and its target port (network
/// byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Backend {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

// `MESH_TUNNELS` maps a task's ingress address (network order) to the
// underlay address of the node it runs on, for tasks on other nodes only:
// the entry node wraps a connection's packets in VXLAN itself and sends
// them straight out of the underlay interface. Node ingress addresses are
// in it too (the tasks' replies go to them).
//
// `MESH_LOCAL` maps the ingress address of a task on this node to the
// ifindex of its host-side veth: packets for it go straight into the
// container (`bpf_redirect_peer`), past the bridge.

// `MESH_LIVE` is keyed by `Backend` (every backend in the tables now, with
// its service slot as value): a tracked connection whose backend left is
// sent to another one at its next SYN (TCP) or datagram (UDP).

/// A connection as one direction's packets show it (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// What to write into a packet of a tracked connection: the other side's
/// address and port, and the port to put on this side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// Forward: the backend; reply: the client.
    pub addr: u32,
    /// Forward: the backend's port; reply: the client's port.
    pub port: u16,
    /// Forward: the source port after NAT; reply: the published port.
    pub nat_port: u16,
    pub service: u32,
    /// Reply entries: [`CT_ESTABLISHED`] once the backend answered.
    pub flags: u32,
    /// Forward TCP entries: the client's initial sequence number, which
    /// tells a retransmitted SYN (same connection) from a new connection
    /// that reuses the ports of an old one.
    pub syn_seq: u32,
    /// TCP: the sequence number of the client's last segment seen here
    /// (host order; its initial one at first), against which its FIN or
    /// RST is checked (see [`close`]). Kept in the entries its packets
    /// find: the forward entry, or on a task's node the reply entry.
    pub client_seq: u32,
}

/// The backend answered the connection's SYN (until then, a reset from it
/// is hidden from the client, whose retransmitted SYN goes elsewhere).
/// Set in a `MESH_LIVE` value (the service's slot otherwise): the backend
/// keeps its open connections but takes no new one (stopping, or failing
/// its health check). Affinity must not send a returning client there.
pub const LIVE_DRAINING: u32 = 1 << 31;

pub const CT_ESTABLISHED: u32 = 1;
/// A host-mode connection: the client's address is kept both ways.
pub const CT_HOST_MODE: u32 = 2;
/// Direct server return: on the entry node, the connection is confirmed by
/// the client's first ACK (no reply passes by); on the task's node (with
/// `CT_RETURN`), replies go straight to the client from the entry node's
/// address and `service` holds the published port (host order).
pub const CT_DSR: u32 = 32;
/// A connection to a service VIP (east-west): the reply entry's `addr` is
/// the VIP to put back as the source.
pub const CT_VIP: u32 = 4;
/// On a VIP connection, its reply entry (keyed backend → client task, `addr`
/// the VIP). The forward entry (client task → VIP, `addr` the backend) has
/// the same shape of ports, so without this mark a packet of the forward
/// direction pushed onto the task's veth (a spoof, a hairpin) matched it in
/// `vip_in` and confirmed the connection without its reply entry.
pub const CT_VIP_REPLY: u32 = 512;
/// A FIN or RST went by: the connection is ending, and a new connection
/// may take its source port towards the same backend.
pub const CT_CLOSING: u32 = 8;

/// On a task's node, the reply entry of a connection another node (its
/// entry node) forwarded with the client's own address: `addr` is that
/// node's ingress address (the replies are wrapped back to it), `port` the
/// client's port, `nat_port` the port the task sees (the client's, unless
/// another connection to the task held that pair).
pub const CT_RETURN: u32 = 16;

/// On a task's node, a connection whose client port it had to change (the
/// same client address and port reached the same task through two entry
/// nodes): `MESH_RETURN` maps it to the port the task sees (network order,
/// in a `u32`). Addresses and ports in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReturnKey {
    pub client: u32,
    pub task: u32,
    /// The entry node's underlay address.
    pub entry: u32,
    pub client_port: u16,
    pub task_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// VIP slots start here in the per-service maps (published ports below).
pub const MESH_FIRST_VIP_SLOT: u32 = MESH_MAX_SERVICES / 2;

/// Per service and per CPU: connections opened and what they carried.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub connections: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Packets the mesh dropped at this published port (a client its
    /// allow-lists do not admit).
    pub drops: u64,
}

impl ServiceStats {
    pub fn add(&mut self, other: &ServiceStats) {
        self.connections = self.connections.wrapping_add(other.connections);
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
        self.drops = self.drops.wrapping_add(other.drops);
    }
}

// SAFETY (all below): plain-old-data, `#[repr(C)]`, explicit padding fields.
#[cfg(feature = "user")]
unsafe impl aya::Pod for MeshConfig {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for PortKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for PortEntry {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for BackendKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Backend {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtEntry {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ServiceStats {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for TargetKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for AllowKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ReturnKey {}

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
    fn mesh_layouts_have_no_hidden_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<MeshConfig>(), 32);
        assert_eq!(size_of::<TargetKey>(), 8);
        assert_eq!(size_of::<AllowKey>(), 8);
        assert_eq!(size_of::<PortKey>(), 4);
        assert_eq!(size_of::<PortEntry>(), 8);
        assert_eq!(size_of::<BackendKey>(), 8);
        assert_eq!(size_of::<Backend>(), 8);
        assert_eq!(size_of::<CtKey>(), 16);
        assert_eq!(size_of::<CtEntry>(), 24);
        assert_eq!(size_of::<ServiceStats>(), 32);
        assert_eq!(size_of::<ReturnKey>(), 20);
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
