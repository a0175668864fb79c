//! The query nearly every asker sends, answered straight into bytes: one
//! question, type A, class IN, no EDNS and nothing else (glibc's stub
//! resolver and dnsperf ask so), for a name the cluster holds or denies.
//! It skips hickory's parse and encode (an allocation per label and per
//! record) and writes what the general path ([`super::DnsServer::answer`])
//! would, byte for byte; anything else (other types or classes, EDNS,
//! compressed or non-ASCII names, names that go upstream, answers over
//! 512 bytes) is left to that path.

use std::net::Ipv4Addr;

use super::{
    message::UDP_LIMIT,
    records::{Entry, Records, Resolved},
};

const HEADER: usize = 12;
/// QDCOUNT 1, ANCOUNT, NSCOUNT, ARCOUNT 0.
const ONE_QUESTION: [u8; 8] = [0, 1, 0, 0, 0, 0, 0, 0];
const TYPE_A_CLASS_IN: [u8; 4] = [0, 1, 0, 1];
/// The longest name in dotted text (RFC 1035 §2.3.4: 255 on the wire).
const MAX_NAME: usize = 253;
const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;

/// Writes the answer to `query` from `asker` (received on `network`'s
/// address) into `out` and returns true, when it is the plain case; false
/// leaves `out` to be ignored and the query to the general path. `turn`
/// rotates multi-address answers.
pub fn answer(
    records: &Records,
    query: &[u8],
    asker: Ipv4Addr,
    network: &str,
    turn: usize,
    out: &mut Vec<u8>,
) -> bool {
    // QR 0 and opcode QUERY; exactly one question and no other record.
    if query.len() < HEADER + 5 || query[2] & 0xf8 != 0 || query[4..HEADER] != ONE_QUESTION {
        return false;
    }
    if !records.is_local(asker) {
        return false;
    }
    let mut name = [0u8; MAX_NAME];
    let (mut len, mut at) = (0, HEADER);
    loop {
        let Some(&label) = query.get(at) else {
            return false;
        };
        at += 1;
        if label == 0 {
            break;
        }
        // A pointer (or a reserved label type) in a question: not plain.
        let label = usize::from(label);
        if label > 63 || at + label > query.len() || len + label + 1 > MAX_NAME {
            return false;
        }
        if len > 0 {
            name[len] = b'.';
            len += 1;
        }
        for &b in &query[at..at + label] {
            if !b.is_ascii() || b == b'.' {
                return false;
            }
            name[len] = b.to_ascii_lowercase();
            len += 1;
        }
        at += label;
    }
    // The root name, or anything but A/IN closing the message.
    if len == 0 || query.get(at..) != Some(&TYPE_A_CLASS_IN[..]) {
        return false;
    }
    let question_end = at + TYPE_A_CLASS_IN.len();
    let Ok(name) = std::str::from_utf8(&name[..len]) else {
        return false;
    };
    let (code, entry) = match records.resolve(asker, network, name) {
        Resolved::Found(entry) => (NOERROR, Some(entry)),
        Resolved::NoSuchName => (NXDOMAIN, None),
        Resolved::Upstream => return false,
    };
    let addrs: &[Ipv4Addr] = match entry {
        Some(Entry::Vip(vip)) => std::slice::from_ref(vip),
        Some(Entry::Tasks(tasks)) => tasks,
        None => &[],
    };
    // Each answer: a pointer to the question's name, A, IN, TTL, 4 bytes.
    if question_end + addrs.len() * 16 > UDP_LIMIT {
        return false;
    }
    out.clear();
    out.extend_from_slice(&query[..2]);
    // QR, the query's RD; RA and the code (as the general path's header).
    out.push(0x80 | (query[2] & 0x01));
    out.push(0x80 | code);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[HEADER..question_end]);
    if let Some(entry) = entry {
        let ttl = entry.ttl().to_be_bytes();
        let start = if addrs.is_empty() {
            0
        } else {
            turn % addrs.len()
        };
        for addr in addrs[start..].iter().chain(&addrs[..start]) {
            out.extend_from_slice(&[0xc0, HEADER as u8, 0, 1, 0, 1]);
            out.extend_from_slice(&ttl);
            out.extend_from_slice(&[0, 4]);
            out.extend_from_slice(&addr.octets());
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{DnsServer, Reply};
    use hickory_proto::{
        op::{Edns, Message, Query},
        rr::{Name, RecordType},
    };
    use shoal_api::pb::{AssignmentSet, Meta, NetworkSpec, ServiceRecord, Task, TaskEndpoint};

    const ASKER: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 9);

    /// `web` (VIP), `db` (dnsrr, 3 tasks), `big` (40 tasks), `far` on a
    /// network the asker is not on, `sealed` on an internal one.
    fn records() -> Records {
        let ep = |net: &str, task: &str, service: &str, addr: String| TaskEndpoint {
            network_id: net.into(),
            task_id: task.into(),
            service_id: service.into(),
            addr,
            node_addr: String::new(),
            running: true,
            draining: false,
        };
        let mut endpoints = vec![ep("n", "me", "c", ASKER.to_string())];
        for i in 0..3 {
            endpoints.push(ep("n", &format!("db{i}"), "db", format!("198.18.2.{i}")));
        }
        for i in 0..40 {
            endpoints.push(ep("n", &format!("big{i}"), "big", format!("198.18.3.{i}")));
        }
        let service = |id: &str, net: &str, vip: &str| ServiceRecord {
            service_id: id.into(),
            network_id: net.into(),
            names: vec![id.into()],
            vip: vip.into(),
        };
        Records::from_assignments(&AssignmentSet {
            tasks: vec![Task {
                meta: Some(Meta {
                    id: "me".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            endpoints,
            services: vec![
                service("web", "n", "198.18.1.2"),
                service("db", "n", ""),
                service("big", "n", ""),
                service("far", "other", "198.18.7.2"),
            ],
            networks: vec![shoal_api::pb::Network {
                meta: Some(Meta {
                    id: "sealed".into(),
                    ..Default::default()
                }),
                spec: Some(NetworkSpec {
                    internal: true,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn query(name: &str, kind: RecordType, rd: bool, edns: bool) -> Vec<u8> {
        let mut q = Message::query();
        q.metadata.id = 0xbeef;
        q.metadata.recursion_desired = rd;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        if edns {
            q.set_edns(Edns::new());
        }
        q.to_vec().unwrap()
    }

    /// The general path's answer, with the rotation the fast path used.
    fn general(server: &DnsServer, query: &[u8], network: &str, turn: usize) -> Option<Vec<u8>> {
        server
            .turn
            .store(turn, std::sync::atomic::Ordering::Relaxed);
        match server.answer(query, ASKER, network) {
            Reply::Send(bytes) => Some(bytes),
            _ => None,
        }
    }

    #[test]
    fn writes_what_the_general_path_writes_byte_for_byte() {
        let records = records();
        let server = DnsServer::new(vec![]);
        server.update(self::records());
        let mut out = Vec::new();
        for name in [
            "web",
            "WeB.",
            "tasks.web",
            "db",
            "tasks.db",
            "nosuch",
            "tasks.nosuch",
            "far",
        ] {
            for rd in [true, false] {
                for turn in 0..4 {
                    let q = query(name, RecordType::A, rd, false);
                    assert!(
                        answer(&records, &q, ASKER, "n", turn, &mut out),
                        "{name} is the plain case"
                    );
                    assert_eq!(
                        Some(out.clone()),
                        general(&server, &q, "n", turn),
                        "{name} rd={rd} turn={turn}"
                    );
                }
            }
        }
    }

    #[test]
    fn leaves_everything_else_to_the_general_path() {
        let records = records();
        let mut out = Vec::new();
        let not_plain = [
            // Other types, EDNS, upstream names, too big for 512 bytes.
            query("web", RecordType::AAAA, true, false),
            query("web", RecordType::ANY, true, false),
            query("web", RecordType::A, true, true),
            query("www.example.test", RecordType::A, true, false),
            query("tasks.big", RecordType::A, true, false),
            // Not a question at all, or a truncated one.
            vec![
                0xbe, 0xef, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'e', b'b', 0, 0, 1, 0, 1,
            ],
            vec![0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'e'],
            // A compression pointer in the question.
            vec![
                0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
            ],
            // Trailing bytes after the question.
            [query("web", RecordType::A, true, false), vec![0]].concat(),
        ];
        for (i, q) in not_plain.iter().enumerate() {
            assert!(!answer(&records, q, ASKER, "n", 0, &mut out), "case {i}");
        }
        // Strangers are the general path's to refuse (and count).
        let q = query("web", RecordType::A, true, false);
        assert!(!answer(
            &records,
            &q,
            "192.0.2.1".parse().unwrap(),
            "n",
            0,
            &mut out
        ));
        // Garbage never panics.
        for seed in 0u32..3000 {
            let mut bytes: Vec<u8> = (0..(seed % 48))
                .map(|i| (seed.wrapping_mul(37).wrapping_add(i * 13) % 256) as u8)
                .collect();
            if bytes.len() > 12 {
                bytes[2] = 1;
                bytes[4..12].copy_from_slice(&ONE_QUESTION);
            }
            let _ = answer(&records, &bytes, ASKER, "n", seed as usize, &mut out);
        }
    }
}
