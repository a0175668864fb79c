//! The agent's DNS server on one datagram, as the UDP loop answers it: the
//! plain-A fast path (`plain_a::answer`) first, the general path
//! (`DnsServer::answer`) for what it leaves. The first byte picks the
//! asker (one of this node's tasks, or a stranger) and the answers'
//! rotation, the rest is the datagram. An answer must be a well-formed
//! response to the query's id, within 512 bytes unless the query has EDNS;
//! a stranger gets nothing; and where the fast path answers, it answers
//! what the general path does (the same message, the addresses perhaps in
//! another rotation).
#![no_main]

use std::{net::Ipv4Addr, sync::Arc, sync::OnceLock};

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use shoal_agent::dns::{DnsServer, Records, Reply, plain_a};
use shoal_api::pb::{AssignmentSet, Meta, ServiceRecord, Task, TaskEndpoint};

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 200);
const NETWORK: &str = "n";

fn endpoint(task: &str, service: &str, addr: Ipv4Addr) -> TaskEndpoint {
    TaskEndpoint {
        network_id: NETWORK.into(),
        task_id: task.into(),
        service_id: service.into(),
        addr: addr.to_string(),
        node_addr: String::new(),
        running: true,
        draining: false,
    }
}

/// A node with one local task of `web` (VIP), 3 tasks of `few` (DNSRR,
/// within 512 bytes: the fast path's) and 60 tasks of `many` (DNSRR,
/// enough to overflow 512 bytes).
fn records() -> Records {
    let mut endpoints = vec![endpoint("t", "web", LOCAL)];
    endpoints
        .extend((0..3).map(|i| endpoint(&format!("f{i}"), "few", Ipv4Addr::new(10, 0, 3, i + 1))));
    endpoints.extend(
        (0..60).map(|i| endpoint(&format!("m{i}"), "many", Ipv4Addr::new(10, 0, 2, i + 1))),
    );
    let service = |id: &str, names: &[&str], vip: &str| ServiceRecord {
        service_id: id.into(),
        network_id: NETWORK.into(),
        names: names.iter().map(|n| n.to_string()).collect(),
        vip: vip.into(),
    };
    Records::from_assignments(&AssignmentSet {
        tasks: vec![Task {
            meta: Some(Meta {
                id: "t".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        endpoints,
        services: vec![
            service("web", &["web", "stack_web"], "10.0.1.2"),
            service("few", &["few"], ""),
            service("many", &["many"], ""),
        ],
        ..Default::default()
    })
}

/// The server (general path) and the records the fast path reads: the same.
fn node() -> &'static (Arc<DnsServer>, Records) {
    static NODE: OnceLock<(Arc<DnsServer>, Records)> = OnceLock::new();
    NODE.get_or_init(|| {
        let server = DnsServer::new(vec![]);
        server.update(records());
        (server, records())
    })
}

/// An answer's message with its answers in one order (the two paths
/// rotate multi-address answers independently).
fn sorted(bytes: &[u8]) -> Message {
    let mut message =
        Message::from_vec(bytes).unwrap_or_else(|e| panic!("an answer that does not parse: {e}"));
    message.answers.sort_by_key(|r| r.data.to_string());
    message
}

fn check_answer(datagram: &[u8], bytes: &[u8]) {
    assert!(bytes.len() >= 12, "an answer shorter than a header");
    assert_eq!(
        bytes[..2],
        datagram[..2],
        "the answer's id is not the query's"
    );
    let answer = sorted(bytes);
    assert_eq!(answer.metadata.message_type, MessageType::Response);
    let edns = Message::from_vec(datagram).is_ok_and(|q| q.edns.is_some());
    if !edns && !answer.answers.is_empty() {
        assert!(bytes.len() <= 512, "{} bytes without EDNS", bytes.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, datagram)) = data.split_first() else {
        return;
    };
    let (server, records) = node();
    let asker = if who & 1 == 0 { LOCAL } else { STRANGER };
    let turn = usize::from(who >> 1);
    let mut fast = Vec::new();
    let plain = plain_a::answer(records, datagram, asker, NETWORK, turn, &mut fast);
    let reply = server.answer(datagram, asker, NETWORK);
    if asker == STRANGER {
        assert!(!plain, "a stranger got a fast answer");
        assert_eq!(reply, Reply::Refuse, "a stranger got an answer");
        return;
    }
    if plain {
        check_answer(datagram, &fast);
        let Reply::Send(general) = &reply else {
            panic!("the fast path answered what the general path does not: {reply:?}");
        };
        assert_eq!(
            fast.len(),
            general.len(),
            "the two paths' answers differ in size"
        );
        assert_eq!(
            sorted(&fast),
            sorted(general),
            "the two paths answer differently"
        );
    }
    if let Reply::Send(bytes) = reply {
        check_answer(datagram, &bytes);
    }
});
