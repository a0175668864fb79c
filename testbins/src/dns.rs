//! A minimal DNS client for A records over UDP (RFC 1035): enough for the
//! toolbox to ask a given server, or the one in /etc/resolv.conf.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The addresses of every A record in the answer section (possibly none).
    Addresses(Vec<Ipv4Addr>),
    NxDomain,
    /// Any other non-zero RCODE (2 SERVFAIL, 5 REFUSED, …).
    Error(u8),
}

#[derive(Debug)]
pub enum DnsError {
    Io(std::io::Error),
    Timeout,
    BadName(String),
    Malformed(&'static str),
}

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsError::Io(e) => write!(f, "{e}"),
            DnsError::Timeout => write!(f, "no answer before the timeout"),
            DnsError::BadName(n) => write!(f, "not a valid DNS name: {n:?}"),
            DnsError::Malformed(why) => write!(f, "malformed answer: {why}"),
        }
    }
}

impl std::error::Error for DnsError {}

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;

/// Encodes a recursive query for the A records of `name`.
pub fn encode_query(id: u16, name: &str) -> Result<Vec<u8>, DnsError> {
    let mut packet = Vec::with_capacity(32 + name.len());
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
    let trimmed = name.trim_end_matches('.');
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(DnsError::BadName(name.to_owned()));
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(DnsError::BadName(name.to_owned()));
        }
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&TYPE_A.to_be_bytes());
    packet.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(packet)
}

/// Decodes the answer to the query with this id.
pub fn decode_answer(id: u16, packet: &[u8]) -> Result<Answer, DnsError> {
    let read_u16 = |at: usize| -> Result<u16, DnsError> {
        packet
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(DnsError::Malformed("truncated"))
    };
    if read_u16(0)? != id {
        return Err(DnsError::Malformed("id does not match the query"));
    }
    let flags = read_u16(2)?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::Malformed("not a response"));
    }
    match (flags & 0x000f) as u8 {
        0 => {}
        3 => return Ok(Answer::NxDomain),
        rcode => return Ok(Answer::Error(rcode)),
    }
    let questions = read_u16(4)?;
    let answers = read_u16(6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(packet, at)? + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..answers {
        at = skip_name(packet, at)?;
        let rtype = read_u16(at)?;
        let class = read_u16(at + 2)?;
        let len = read_u16(at + 8)? as usize;
        let data = packet
            .get(at + 10..at + 10 + len)
            .ok_or(DnsError::Malformed("truncated record"))?;
        if rtype == TYPE_A && class == CLASS_IN && len == 4 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    Ok(Answer::Addresses(addresses))
}

/// Returns the offset just past the (possibly compressed) name at `at`.
fn skip_name(packet: &[u8], mut at: usize) -> Result<usize, DnsError> {
    loop {
        let len = *packet
            .get(at)
            .ok_or(DnsError::Malformed("truncated name"))?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => return Ok(at + 2), // pointer ends the name
            l if l & 0xc0 == 0 => at += 1 + l as usize,
            _ => return Err(DnsError::Malformed("bad label")),
        }
    }
}

/// Asks `server` for the A records of `name`, retrying once on timeout.
pub fn resolve_a(server: SocketAddr, name: &str, timeout: Duration) -> Result<Answer, DnsError> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("literal");
    let socket = UdpSocket::bind(bind).map_err(DnsError::Io)?;
    socket
        .set_read_timeout(Some(timeout / 2))
        .map_err(DnsError::Io)?;
    let id = (std::process::id() as u16) ^ (nanos() as u16);
    let query = encode_query(id, name)?;
    let mut buf = [0u8; 1500];
    for _attempt in 0..2 {
        socket.send_to(&query, server).map_err(DnsError::Io)?;
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) if from == server => match decode_answer(id, &buf[..n]) {
                    // A stale or foreign answer: keep waiting for ours.
                    Err(DnsError::Malformed("id does not match the query")) => continue,
                    other => return other,
                },
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(DnsError::Io(e)),
            }
        }
    }
    Err(DnsError::Timeout)
}

/// The first nameserver of /etc/resolv.conf, on port 53.
pub fn system_resolver() -> Option<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "nameserver").then_some(())?;
        let ip: IpAddr = words.next()?.parse().ok()?;
        Some(SocketAddr::new(ip, 53))
    })
}

/// An IPv4 literal as is, or the first A record of a name from the system resolver.
pub fn lookup_host(host: &str, timeout: Duration) -> Result<Ipv4Addr, String> {
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    let server = system_resolver().ok_or("no nameserver in /etc/resolv.conf")?;
    match resolve_a(server, host, timeout).map_err(|e| format!("resolving {host}: {e}"))? {
        Answer::Addresses(addrs) => addrs
            .first()
            .copied()
            .ok_or_else(|| format!("{host} has no A record")),
        Answer::NxDomain => Err(format!("{host}: NXDOMAIN")),
        Answer::Error(rcode) => Err(format!("{host}: server answered rcode {rcode}")),
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `www.upstream.test A` with one compressed-name record.
    fn answer(id: u16, rcode: u8, records: &[[u8; 4]]) -> Vec<u8> {
        let mut p = encode_query(id, "www.upstream.test").unwrap();
        p[2] = 0x81;
        p[3] = 0x80 | rcode;
        p[7] = records.len() as u8;
        for addr in records {
            p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
            p.extend_from_slice(addr);
        }
        p
    }

    #[test]
    fn query_encodes_labels() {
        let q = encode_query(0x1234, "a.bc").unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..], &[1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1]);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(encode_query(1, "").is_err());
        assert!(encode_query(1, "a..b").is_err());
        assert!(encode_query(1, &"x".repeat(64)).is_err());
    }

    #[test]
    fn decodes_addresses_and_rcodes() {
        let two = answer(7, 0, &[[192, 0, 2, 200], [192, 0, 2, 201]]);
        assert_eq!(
            decode_answer(7, &two).unwrap(),
            Answer::Addresses(vec![
                Ipv4Addr::new(192, 0, 2, 200),
                Ipv4Addr::new(192, 0, 2, 201)
            ])
        );
        assert_eq!(
            decode_answer(7, &answer(7, 3, &[])).unwrap(),
            Answer::NxDomain
        );
        assert_eq!(
            decode_answer(7, &answer(7, 5, &[])).unwrap(),
            Answer::Error(5)
        );
    }

    #[test]
    fn rejects_foreign_and_truncated_answers() {
        let good = answer(7, 0, &[[192, 0, 2, 200]]);
        assert!(decode_answer(8, &good).is_err());
        assert!(decode_answer(7, &good[..good.len() - 2]).is_err());
        assert!(decode_answer(7, &good[..5]).is_err());
    }
}
