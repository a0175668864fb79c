//! The agent's DNS server on one datagram (`DnsServer::answer`, what the
//! UDP loop calls): the first byte picks the asker (one of this node's
//! tasks, or a stranger), the rest is the datagram. An answer must be a
//! well-formed response to the query's id, within 512 bytes unless the
//! query has EDNS; a stranger gets nothing.
#![no_main]

use std::{net::Ipv4Addr, sync::Arc, sync::OnceLock};

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use shoal_agent::dns::{DnsServer, Records, Reply};
use shoal_api::pb::{AssignmentSet, Meta, ServiceRecord, Task, TaskEndpoint};

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 200);

fn endpoint(task: &str, service: &str, addr: Ipv4Addr) -> TaskEndpoint {
    TaskEndpoint {
        network_id: "n".into(),
        task_id: task.into(),
        service_id: service.into(),
        addr: addr.to_string(),
        node_addr: String::new(),
        running: true,
        draining: false,
    }
}

/// A node with one local task of `web` (VIP) and 60 tasks of `many`
/// (DNSRR, enough to overflow 512 bytes).
fn server() -> &'static Arc<DnsServer> {
    static SERVER: OnceLock<Arc<DnsServer>> = OnceLock::new();
    SERVER.get_or_init(|| {
        let mut endpoints = vec![endpoint("t", "web", LOCAL)];
        endpoints.extend(
            (0..60).map(|i| endpoint(&format!("m{i}"), "many", Ipv4Addr::new(10, 0, 2, i + 1))),
        );
        let records = Records::from_assignments(&AssignmentSet {
            tasks: vec![Task {
                meta: Some(Meta {
                    id: "t".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            endpoints,
            services: vec![
                ServiceRecord {
                    service_id: "web".into(),
                    network_id: "n".into(),
                    names: vec!["web".into(), "stack_web".into()],
                    vip: "10.0.1.2".into(),
                },
                ServiceRecord {
                    service_id: "many".into(),
                    network_id: "n".into(),
                    names: vec!["many".into()],
                    vip: String::new(),
                },
            ],
            ..Default::default()
        });
        let server = DnsServer::new(vec![]);
        server.update(records);
        server
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, datagram)) = data.split_first() else {
        return;
    };
    let asker = if who & 1 == 0 { LOCAL } else { STRANGER };
    let reply = server().answer(datagram, asker, "n");
    if asker == STRANGER {
        assert_eq!(reply, Reply::Refuse, "a stranger got an answer");
        return;
    }
    let Reply::Send(bytes) = reply else {
        return;
    };
    assert!(bytes.len() >= 12, "an answer shorter than a header");
    assert_eq!(
        bytes[..2],
        datagram[..2],
        "the answer's id is not the query's"
    );
    let answer =
        Message::from_vec(&bytes).unwrap_or_else(|e| panic!("an answer that does not parse: {e}"));
    assert_eq!(answer.metadata.message_type, MessageType::Response);
    let edns = Message::from_vec(datagram).is_ok_and(|q| q.edns.is_some());
    if !edns && !answer.answers.is_empty() {
        assert!(bytes.len() <= 512, "{} bytes without EDNS", bytes.len());
    }
});
