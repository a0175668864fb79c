//! The PROXY protocol v2 header the relay writes before a client's bytes
//! (HAProxy's proxy-protocol.txt, section 2.2): the 12-byte signature,
//! version 2 with the PROXY command, AF_INET over STREAM, then the
//! client's address and port (source) and the address and port it
//! connected to (destination: the entry node's published port), all in
//! network byte order. No TLVs: 16 + 12 bytes in all.

use std::net::SocketAddrV4;

/// `\r\n\r\n\0\r\nQUIT\n`: no valid HTTP, SMTP… request starts this way.
pub const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// High nibble 2 (the version), low nibble 1 (PROXY: a relayed connection).
const VERSION_2_PROXY: u8 = 0x21;
/// High nibble 1 (AF_INET), low nibble 1 (STREAM).
const TCP_OVER_IPV4: u8 = 0x11;
/// The address block for AF_INET: two addresses, two ports.
const IPV4_BLOCK: u16 = 12;

/// The header's length for a TCP connection over IPv4.
pub const TCP4_LEN: usize = 16 + IPV4_BLOCK as usize;

/// The header for a TCP connection from `client` to `server` (the address
/// and port the client connected to).
pub fn tcp4(client: SocketAddrV4, server: SocketAddrV4) -> [u8; TCP4_LEN] {
    let mut h = [0u8; TCP4_LEN];
    h[..12].copy_from_slice(&SIGNATURE);
    h[12] = VERSION_2_PROXY;
    h[13] = TCP_OVER_IPV4;
    h[14..16].copy_from_slice(&IPV4_BLOCK.to_be_bytes());
    h[16..20].copy_from_slice(&client.ip().octets());
    h[20..24].copy_from_slice(&server.ip().octets());
    h[24..26].copy_from_slice(&client.port().to_be_bytes());
    h[26..28].copy_from_slice(&server.port().to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_the_specs_layout_byte_for_byte() {
        let client: SocketAddrV4 = "192.0.2.100:40001".parse().unwrap();
        let node: SocketAddrV4 = "192.0.2.11:8080".parse().unwrap();
        // Written out from the spec's section 2.2, not from the encoder.
        let expected: [u8; 28] = [
            // signature
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
            // \x21: version 2, PROXY; \x11: TCP over IPv4; length 12
            0x21, 0x11, 0x00, 0x0C, //
            // src_addr 192.0.2.100, dst_addr 192.0.2.11
            192, 0, 2, 100, 192, 0, 2, 11, //
            // src_port 40001 (0x9C41), dst_port 8080 (0x1F90)
            0x9C, 0x41, 0x1F, 0x90,
        ];
        assert_eq!(tcp4(client, node), expected);
        assert_eq!(&SIGNATURE, b"\r\n\r\n\0\r\nQUIT\n");
    }
}
