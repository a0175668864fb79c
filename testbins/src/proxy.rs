//! A strict reader of PROXY protocol v2 headers (HAProxy's
//! proxy-protocol.txt, section 2.2), written from the spec and not from
//! Shoal's writer, so that the lab checks the relay against the spec:
//! anything but a v2 PROXY header for TCP over IPv4 is an error naming
//! what is wrong.

use std::{
    io::{self, Read},
    net::{Ipv4Addr, SocketAddrV4},
};

/// The 12 bytes every v2 header starts with.
pub const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The spec's bound for what follows the first 16 bytes (a 16-bit length;
/// more than this from a relay would be a bug).
const MAX_BLOCK: usize = 4096;

/// What a v2 PROXY header for TCP over IPv4 says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The client, as the relay saw it.
    pub source: SocketAddrV4,
    /// What the client connected to (the relay's address and port).
    pub destination: SocketAddrV4,
    /// Bytes of TLVs after the addresses (skipped).
    pub tlv_len: usize,
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Reads exactly one header from the start of `stream`, and nothing more.
pub fn read_v2<R: Read>(stream: &mut R) -> io::Result<Header> {
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            invalid("PROXY v2: the connection ended within the first 16 bytes".into())
        } else {
            e
        }
    })?;
    if &fixed[..12] != SIGNATURE {
        return Err(invalid(format!(
            "PROXY v2: no signature, the stream starts with {:02x?}",
            &fixed[..12]
        )));
    }
    let (version, command) = (fixed[12] >> 4, fixed[12] & 0x0f);
    if version != 2 {
        return Err(invalid(format!("PROXY v2: version {version}, expected 2")));
    }
    if command != 1 {
        return Err(invalid(format!(
            "PROXY v2: command {command}, expected 1 (PROXY)"
        )));
    }
    let (family, transport) = (fixed[13] >> 4, fixed[13] & 0x0f);
    if (family, transport) != (1, 1) {
        return Err(invalid(format!(
            "PROXY v2: family {family} transport {transport}, expected 1 1 (TCP over IPv4)"
        )));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if !(12..=MAX_BLOCK).contains(&len) {
        return Err(invalid(format!(
            "PROXY v2: address block of {len} bytes, expected 12 to {MAX_BLOCK} for IPv4"
        )));
    }
    let mut block = vec![0u8; len];
    stream.read_exact(&mut block)?;
    let addr = |at: usize| Ipv4Addr::new(block[at], block[at + 1], block[at + 2], block[at + 3]);
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    Ok(Header {
        source: SocketAddrV4::new(addr(0), port(8)),
        destination: SocketAddrV4::new(addr(4), port(10)),
        tlv_len: len - 12,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's layout for 192.0.2.100:40001 → 192.0.2.11:8080.
    fn example() -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.extend([0x21, 0x11, 0x00, 0x0c]);
        h.extend([192, 0, 2, 100, 192, 0, 2, 11, 0x9c, 0x41, 0x1f, 0x90]);
        h
    }

    #[test]
    fn reads_the_header_and_leaves_the_stream() {
        let mut input = example();
        input.extend(b"GET / HTTP/1.1\r\n");
        let mut cursor = io::Cursor::new(input);
        let h = read_v2(&mut cursor).unwrap();
        assert_eq!(h.source, "192.0.2.100:40001".parse().unwrap());
        assert_eq!(h.destination, "192.0.2.11:8080".parse().unwrap());
        assert_eq!(h.tlv_len, 0);
        let mut rest = String::new();
        cursor.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "GET / HTTP/1.1\r\n");
    }

    #[test]
    fn refuses_what_is_not_exactly_v2_proxy_tcp4() {
        let refused = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut h = example();
            edit(&mut h);
            read_v2(&mut io::Cursor::new(h)).unwrap_err().to_string()
        };
        assert!(refused(&|h| h[0] = b'G').contains("no signature"));
        assert!(refused(&|h| h[12] = 0x11).contains("version 1"));
        assert!(refused(&|h| h[12] = 0x20).contains("command 0"));
        assert!(refused(&|h| h[13] = 0x12).contains("transport 2"));
        assert!(refused(&|h| h[13] = 0x21).contains("family 2"));
        assert!(refused(&|h| h[15] = 8).contains("8 bytes"));
        assert!(refused(&|h| h.truncate(10)).contains("first 16 bytes"));
        assert!(
            read_v2(&mut io::Cursor::new(b"GET / HTTP/1.1\r\n\r\n".to_vec()))
                .unwrap_err()
                .to_string()
                .contains("no signature")
        );
    }
}
