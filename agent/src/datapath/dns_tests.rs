//! The veth DNS program (`vip_out`'s `dns`) under `BPF_PROG_TEST_RUN`, with
//! maps the agent's own [`DnsMaps::sync`] filled from [`Records`]: its
//! answers must be the server's plain path ([`plain_a::answer`]) byte for
//! byte, with valid IP and UDP checksums, and everything the server would
//! answer otherwise must pass unchanged. Needs root and a bpffs at
//! /sys/fs/bpf, as the agent does.

use std::{collections::HashMap, net::Ipv4Addr};

use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{Name, RecordType},
};
use shoal_agent_common::names;
use shoal_api::pb::{AssignmentSet, Meta, ServiceRecord, Task, TaskEndpoint};

use super::{
    BpfRoot,
    dns::{Asker, DnsCounts, DnsMaps},
    unattached::Unattached,
};
use crate::dns::{Records, plain_a};

const ASKER: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 9);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// `BPF_PROG_TEST_RUN` runs a TC program on the loopback device.
const LOOPBACK: u32 = 1;
const TC_NEXT: i32 = -1;
const TC_ACT_REDIRECT: i32 = 7;

/// `web` (VIP), `db` (dnsrr, `db_tasks` tasks), `big` (40 tasks), `far`
/// on a network the asker is not on.
fn records_with(db_tasks: u8) -> Records {
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
    for i in 0..db_tasks {
        endpoints.push(ep("n", &format!("db{i}"), "db", format!("198.18.2.{i}")));
    }
    for i in 0..40 {
        endpoints.push(ep("n", &format!("big{i}"), "big", format!("198.18.3.{i}")));
    }
    let service = |id: &str, net: &str, vip: &str| ServiceRecord {
        service_id: id.into(),
        network_id: net.into(),
        names: vec![id.into(), format!("stack_{id}")],
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

/// An A/IN query, RD set, for `wire_name` as given (labels unchecked).
fn raw_query(wire_name: &[u8]) -> Vec<u8> {
    let header = [0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    [&header[..], wire_name, &[0, 1, 0, 1]].concat()
}

/// One's complement sum of `bytes` (odd length padded), folded.
fn ones_sum(bytes: &[u8], mut sum: u32) -> u32 {
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    let sum = !(ones_sum(segment, ones_sum(&pseudo, 0)) as u16);
    if sum == 0 { 0xffff } else { sum }
}

/// An Ethernet frame: `src:sport` → `dst:dport` over UDP, checksums set.
pub(super) fn frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let sum = udp_checksum(src, dst, &udp);
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = !(ones_sum(&ip, 0) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut eth = vec![];
    eth.extend_from_slice(&crate::network::mac_of(dst));
    eth.extend_from_slice(&crate::network::mac_of(src));
    eth.extend_from_slice(&[0x08, 0x00]);
    [eth, ip, udp].concat()
}

/// Checks that `out` is a well-formed answer frame from the gateway to the
/// asker and returns its DNS message.
fn answer_payload(out: &[u8], sport: u16) -> Vec<u8> {
    assert_eq!(
        &out[..6],
        &crate::network::mac_of(ASKER),
        "to the asker's MAC"
    );
    assert_eq!(&out[6..12], &crate::network::mac_of(GATEWAY));
    let ip = &out[14..34];
    assert_eq!(
        usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        out.len() - 14
    );
    assert_eq!(ones_sum(ip, 0), 0xffff, "IP checksum");
    assert_eq!(&ip[12..16], &GATEWAY.octets());
    assert_eq!(&ip[16..20], &ASKER.octets());
    let udp = &out[34..];
    assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 53);
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), sport);
    assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), udp.len());
    let mut zeroed = udp.to_vec();
    zeroed[6..8].copy_from_slice(&[0, 0]);
    assert_eq!(
        u16::from_be_bytes([udp[6], udp[7]]),
        udp_checksum(GATEWAY, ASKER, &zeroed),
        "UDP checksum"
    );
    udp[8..].to_vec()
}

struct Fixture {
    programs: Unattached,
    maps: DnsMaps,
}

impl Fixture {
    fn new() -> Fixture {
        let root = BpfRoot::new(format!("/sys/fs/bpf/shoal-dns-test-{}", std::process::id()));
        let programs = Unattached::load(&root).expect("loads (needs root and bpffs)");
        let maps = DnsMaps::open(&root).expect("DNS maps pinned");
        // The loaded object and the open maps hold them: the pins can go.
        let _ = std::fs::remove_dir_all(root.root());
        Fixture { programs, maps }
    }

    fn run(&self, frame: &[u8]) -> (i32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 512];
        let result = self
            .programs
            .run(names::VIP_OUT, frame, &mut out)
            .expect("test run");
        out.truncate(result.len);
        (result.verdict, out)
    }
}

#[test]
fn answers_plain_queries_as_the_server_does_and_passes_the_rest() {
    let mut fx = Fixture::new();
    let asker = Asker {
        ifindex: LOOPBACK,
        addr: ASKER,
        gateway: GATEWAY,
    };
    let records = records_with(3);
    fx.maps.sync(&records, &[asker]).unwrap();
    // Queries per name so far: the program's per-name rotation counter.
    let mut asked: HashMap<String, usize> = HashMap::new();
    let mut answered = 0;
    for name in [
        "web",
        "WeB.",
        "stack_web",
        "db",
        "tasks.DB",
        "stack_db",
        "db",
        // Bare names the view does not hold: the server's NXDOMAIN (one
        // unknown, one a service on a network the asker is not on).
        "nosuch",
        "FAR",
    ] {
        for rd in [true, false] {
            for _ in 0..3 {
                let q = query(name, RecordType::A, rd, false);
                let (verdict, out) = fx.run(&frame(ASKER, GATEWAY, 40_001, 53, &q));
                assert_eq!(verdict, TC_ACT_REDIRECT, "{name} answered");
                let key = name.trim_end_matches('.').to_ascii_lowercase();
                let turn = asked.entry(key).or_default();
                let mut expected = Vec::new();
                assert!(plain_a::answer(
                    &records,
                    &q,
                    ASKER,
                    "n",
                    *turn,
                    &mut expected
                ));
                assert_eq!(
                    answer_payload(&out, 40_001),
                    expected,
                    "{name} rd={rd} turn={turn}"
                );
                *turn += 1;
                answered += 1;
            }
        }
    }
    // Everything else goes to the server untouched.
    let to_server = [
        query("web", RecordType::AAAA, true, false),
        query("web", RecordType::A, true, true),
        query("www.example.test", RecordType::A, true, false),
        query("tasks.big", RecordType::A, true, false),
        // A bare name with 40 addresses: held empty, not NXDOMAIN.
        query("big", RecordType::A, true, false),
        // No task: an empty NOERROR, the server's to write.
        query("tasks.web", RecordType::A, true, false),
        // Dotted names the view does not hold: NXDOMAIN or upstream, the
        // server decides.
        query("tasks.nosuch", RecordType::A, true, false),
        query("nosuch.stack", RecordType::A, true, false),
        // Bare in length only: a dot or a non-ASCII byte in the label is
        // not the plain path's.
        raw_query(b"\x03a.b\x00"),
        raw_query(b"\x04caf\xe9\x00"),
        [query("web", RecordType::A, true, false), vec![0]].concat(),
        query(
            &["a".repeat(63), "b".repeat(63)].join("."),
            RecordType::A,
            true,
            false,
        ),
    ];
    for (i, q) in to_server.iter().enumerate() {
        let f = frame(ASKER, GATEWAY, 40_002, 53, q);
        assert_eq!(fx.run(&f), (TC_NEXT, f.clone()), "case {i}");
    }
    let web = query("web", RecordType::A, true, false);
    // Not the veth's task, not its resolver, not port 53.
    for f in [
        frame(Ipv4Addr::new(198, 18, 9, 10), GATEWAY, 40_003, 53, &web),
        frame(ASKER, Ipv4Addr::new(198, 18, 0, 2), 40_003, 53, &web),
        frame(ASKER, GATEWAY, 40_003, 5353, &web),
    ] {
        assert_eq!(fx.run(&f), (TC_NEXT, f.clone()));
    }
    assert_eq!(
        fx.maps.counts().unwrap(),
        DnsCounts {
            answered,
            passed: to_server.len() as u64,
        }
    );

    // Scaled: the answer follows the sync; a service gone is the server's.
    let scaled = records_with(2);
    fx.maps.sync(&scaled, &[asker]).unwrap();
    let q = query("db", RecordType::A, true, false);
    let (verdict, out) = fx.run(&frame(ASKER, GATEWAY, 40_004, 53, &q));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let payload = answer_payload(&out, 40_004);
    let matches_a_turn = (0..2).any(|turn| {
        let mut expected = Vec::new();
        plain_a::answer(&scaled, &q, ASKER, "n", turn, &mut expected) && expected == payload
    });
    assert!(matches_a_turn, "db after scaling to 2 tasks");
    // Askers cleared (a sync failed): a veth plugged before the next good
    // sync stays with the server, its view may lack the server's names.
    fx.maps.clear_askers().unwrap();
    let f = frame(ASKER, GATEWAY, 40_006, 53, &q);
    assert_eq!(fx.run(&f), (TC_NEXT, f.clone()), "no asker after a clear");
    assert!(
        !fx.maps.plugged(asker).unwrap(),
        "plugged into a stale view"
    );
    assert_eq!(fx.run(&f), (TC_NEXT, f.clone()), "still the server's");
    fx.maps.sync(&scaled, &[asker]).unwrap();
    assert_eq!(fx.run(&f).0, TC_ACT_REDIRECT, "answered after a good sync");

    fx.maps.sync(&Records::default(), &[asker]).unwrap();
    let f = frame(ASKER, GATEWAY, 40_005, 53, &q);
    assert_eq!(fx.run(&f), (TC_NEXT, f.clone()), "nothing left to answer");
    assert_eq!(fx.maps.names_held(), 0);
}
