//! Hand-made packets for the lab tests that play an attacker: VXLAN frames
//! carrying a chosen inner packet, spoofed TCP, UDP and ICMP (with IP
//! options, as fragments), sent from a lab host or a container through a
//! raw socket (the kernel writes no header of its own), and ARP replies
//! through a packet socket.
//! Sources must stay inside the lab's 192.0.2.0/24.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context, Result, ensure};
use socket2::{Domain, Protocol, Socket, Type};

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMP: u8 = 1;
const IPPROTO_RAW: i32 = 255;

/// The Internet checksum of `data` (RFC 1071), starting from `sum`.
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet (no options, DF, TTL 64) around `payload`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[6] = 0x40;
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&h, 0);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// The pseudo-header sum of TCP and UDP checksums.
fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut sum = 0u32;
    for pair in src.octets().chunks(2).chain(dst.octets().chunks(2)) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    sum + u32::from(proto) + len as u32
}

/// A UDP datagram (with its checksum) in an IPv4 packet.
pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut d = Vec::with_capacity(len);
    d.extend_from_slice(&src.port().to_be_bytes());
    d.extend_from_slice(&dst.port().to_be_bytes());
    d.extend_from_slice(&(len as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let sum = checksum(&d, pseudo(*src.ip(), *dst.ip(), PROTO_UDP, len));
    d[6..8].copy_from_slice(&sum.to_be_bytes());
    ipv4(*src.ip(), *dst.ip(), PROTO_UDP, &d)
}

/// A TCP SYN (MSS option 1460) in an IPv4 packet.
pub fn tcp_syn(src: SocketAddrV4, dst: SocketAddrV4, seq: u32) -> Vec<u8> {
    let mut t = vec![0u8; 24];
    t[0..2].copy_from_slice(&src.port().to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 6 << 4; // 24 bytes of header
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let sum = checksum(&t, pseudo(*src.ip(), *dst.ip(), PROTO_TCP, t.len()));
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    ipv4(*src.ip(), *dst.ip(), PROTO_TCP, &t)
}

/// A TCP RST (no ACK) with sequence number `seq` in an IPv4 packet: what
/// an off-path attacker sends to cut someone else's connection.
pub fn tcp_rst(src: SocketAddrV4, dst: SocketAddrV4, seq: u32) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&src.port().to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4; // 20 bytes of header
    t[13] = 0x04; // RST
    let sum = checksum(&t, pseudo(*src.ip(), *dst.ip(), PROTO_TCP, t.len()));
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    ipv4(*src.ip(), *dst.ip(), PROTO_TCP, &t)
}

/// `packet` (an IPv4 packet from [`ipv4`]) with one word of options
/// (four NOPs) in its header: the mesh reads no packet with options, but
/// every kernel takes them.
pub fn with_ip_options(packet: &[u8]) -> Vec<u8> {
    let mut p = packet[..20].to_vec();
    p.extend_from_slice(&[1, 1, 1, 1]);
    p.extend_from_slice(&packet[20..]);
    p[0] = 0x46;
    finish_header(&mut p);
    p
}

/// `packet` (an IPv4 packet from [`ipv4`]) as a later fragment (offset
/// 1,480 bytes, no DF): it carries no ports.
pub fn as_later_fragment(packet: &[u8]) -> Vec<u8> {
    let mut p = packet.to_vec();
    p[6..8].copy_from_slice(&185u16.to_be_bytes());
    finish_header(&mut p);
    p
}

/// Sets an IPv4 header's total length and checksum.
fn finish_header(p: &mut [u8]) {
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[10..12].copy_from_slice(&[0, 0]);
    let header = usize::from(p[0] & 0x0f) * 4;
    let sum = checksum(&p[..header], 0);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// An ICMP echo request in an IPv4 packet.
pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(b"spoofed!");
    let sum = checksum(&m, 0);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4(src, dst, PROTO_ICMP, &m)
}

/// A broadcast Ethernet frame from `src_mac` carrying `ethertype`'s
/// `payload`, behind 802.1Q tags with these VLAN ids (outermost first).
pub fn ethernet(src_mac: [u8; 6], vlans: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src_mac);
    for vlan in vlans {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&vlan.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A broadcast Ethernet frame holding an ARP reply that says `sender_ip`
/// is at `sender_mac`: what poisons a neighbour's cache.
pub fn arp_reply(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender_ip.octets());
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&target_ip.octets());
    f
}

/// A VXLAN payload (the UDP datagram's content to port 4789): VNI `vni`,
/// an Ethernet frame to `dst_mac` carrying the IPv4 packet `inner`.
pub fn vxlan(vni: u32, dst_mac: [u8; 6], inner: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0];
    v.extend_from_slice(&(vni << 8).to_be_bytes());
    v.extend_from_slice(&dst_mac);
    v.extend_from_slice(&[0x02, 0x00, 0x5e, 0x00, 0x00, 0x01]);
    v.extend_from_slice(&[0x08, 0x00]);
    v.extend_from_slice(inner);
    v
}

/// A task's MAC on an overlay, as the agent derives it from its address.
pub fn task_mac(addr: Ipv4Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// A raw IPv4 socket made in a lab host's network namespace: it sends
/// whole IPv4 packets, source address included.
pub struct RawSender(Socket);

impl RawSender {
    pub fn open(netns: &str) -> Result<Self> {
        Self::open_path(&format!("/run/netns/{netns}"))
    }

    /// The same in the namespace at `path` (a container's:
    /// `/proc/PID/ns/net`).
    pub fn open_path(path: &str) -> Result<Self> {
        let socket = crate::netns::run_in_path(path, || {
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))
        })?
        .context("opening a raw socket (root needed)")?;
        socket.set_header_included_v4(true)?;
        Ok(Self(socket))
    }

    /// Sends one IPv4 packet (its own header names the addresses).
    pub fn send(&self, packet: &[u8]) -> Result<()> {
        ensure!(packet.len() >= 20, "not an IPv4 packet");
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let to = SocketAddr::from((dst, 0));
        let sent = self.0.send_to(packet, &to.into())?;
        ensure!(
            sent == packet.len(),
            "sent {sent} of {} bytes",
            packet.len()
        );
        Ok(())
    }
}

/// A packet socket on one interface of a network namespace: sends whole
/// Ethernet frames (ARP included) as they are given.
pub struct FrameSender(Socket);

impl FrameSender {
    /// On `interface` of the namespace at `path` (`/proc/PID/ns/net`).
    pub fn open_path(path: &str, interface: &str) -> Result<Self> {
        let name = std::ffi::CString::new(interface)?;
        let what = format!("no interface {interface} in {path}");
        let socket = crate::netns::run_in_path(path, move || -> Result<Socket> {
            // SAFETY: a C string that lives across the call.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            ensure!(index != 0, "{what}");
            // Protocol 0: it sends, and receives nothing.
            let socket = Socket::new(Domain::PACKET, Type::RAW, None)
                .context("opening a packet socket (root needed)")?;
            let mut storage = socket2::SockAddrStorage::zeroed();
            // SAFETY: a sockaddr_ll is one of this platform's socket
            // addresses, and its fields are set below.
            let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
            ll.sll_family = libc::AF_PACKET as u16;
            ll.sll_ifindex = index as i32;
            let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `storage` holds a sockaddr_ll of `len` bytes.
            let address = unsafe { socket2::SockAddr::new(storage, len) };
            socket.bind(&address)?;
            Ok(socket)
        })??;
        Ok(Self(socket))
    }

    pub fn send(&self, frame: &[u8]) -> Result<()> {
        let sent = self.0.send(frame)?;
        ensure!(sent == frame.len(), "sent {sent} of {} bytes", frame.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 100), 40000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 3), 80);
        let packet = udp(src, dst, b"whoami");
        assert_eq!(checksum(&packet[..20], 0), 0, "IPv4 header");
        let l4 = &packet[20..];
        assert_eq!(
            checksum(l4, pseudo(*src.ip(), *dst.ip(), PROTO_UDP, l4.len())),
            0
        );
        let syn = tcp_syn(src, dst, 7);
        let l4 = &syn[20..];
        assert_eq!(
            checksum(l4, pseudo(*src.ip(), *dst.ip(), PROTO_TCP, l4.len())),
            0
        );
        assert_eq!(syn.len(), 44);
        let rst = tcp_rst(src, dst, 9);
        let l4 = &rst[20..];
        assert_eq!(
            checksum(l4, pseudo(*src.ip(), *dst.ip(), PROTO_TCP, l4.len())),
            0
        );
        assert_eq!(l4[13], 0x04);
        for p in [with_ip_options(&rst), as_later_fragment(&packet)] {
            let header = usize::from(p[0] & 0x0f) * 4;
            assert_eq!(checksum(&p[..header], 0), 0, "IPv4 header");
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        }
        assert_eq!(with_ip_options(&rst)[0], 0x46);
        let echo = icmp_echo(*src.ip(), *dst.ip(), 3);
        assert_eq!(checksum(&echo[20..], 0), 0, "ICMP");
        let arp = arp_reply(task_mac(*src.ip()), *src.ip(), *dst.ip());
        assert_eq!(arp.len(), 42);
        assert_eq!(&arp[28..32], &src.ip().octets(), "the sender address");
        let frame = vxlan(4096, task_mac(*dst.ip()), &packet);
        assert_eq!(&frame[4..7], &[0, 0x10, 0], "VNI 4096");
        assert_eq!(&frame[8..14], &[0x02, 0x42, 198, 18, 0, 3]);
    }
}
