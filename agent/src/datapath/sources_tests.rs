//! `vip_out`'s source check under `BPF_PROG_TEST_RUN`: a veth whose task
//! source the agent wrote lets out only frames from that source (and its
//! MAC), drops the rest and counts them (`spoofed-source`); a veth with no
//! entry is not judged.
//! Needs root and a bpffs at /sys/fs/bpf, as the agent does.

use std::net::Ipv4Addr;

use shoal_agent_common::names;

use super::{BpfRoot, dns_tests::frame, guard, mesh, unattached::Unattached};

const TASK: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 9);
const OTHER_TASK: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 10);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 20);
/// `BPF_PROG_TEST_RUN` runs a TC program on the loopback device.
const LOOPBACK: u32 = 1;
const TC_NEXT: i32 = -1;
const TC_ACT_SHOT: i32 = 2;

/// An index no interface has.
const GONE: u32 = 0x7fff_fff0;

/// The veths `TASK_SOURCES` holds, in order.
fn held(root: &BpfRoot) -> Vec<u32> {
    let (_, held) = mesh::open_hash::<u32, u32>(root, names::TASK_SOURCES).expect("pinned");
    let mut veths: Vec<u32> = held.into_keys().collect();
    veths.sort();
    veths
}

fn spoofed_count(root: &BpfRoot) -> u64 {
    guard::drops(root)
        .expect("drop counters")
        .into_iter()
        .find(|(name, _)| *name == "spoofed-source")
        .expect("a spoofed-source counter")
        .1
}

#[test]
fn a_veth_lets_out_only_its_tasks_source() {
    let root = BpfRoot::new(format!(
        "/sys/fs/bpf/shoal-sources-test-{}",
        std::process::id()
    ));
    let programs = Unattached::load(&root).expect("loads (needs root and bpffs)");
    let run = |src: Ipv4Addr| {
        let f = frame(src, PEER, 40_000, 7, b"hello");
        let mut out = vec![0u8; f.len() + 512];
        let result = programs
            .run(names::VIP_OUT, &f, &mut out)
            .expect("test run");
        result.verdict
    };

    // No entry: not judged (a missing write never cuts a task off).
    assert_eq!(run(OTHER_TASK), TC_NEXT);
    assert_eq!(spoofed_count(&root), 0);

    mesh::set_task_source(&root, LOOPBACK, TASK).expect("written");
    assert_eq!(run(TASK), TC_NEXT, "the task's own packet");
    for _ in 0..3 {
        assert_eq!(run(OTHER_TASK), TC_ACT_SHOT, "another task's address");
    }
    assert_eq!(spoofed_count(&root), 3);

    // The veth goes (and its index may come back for another task).
    mesh::forget_interface(&root, LOOPBACK);
    assert_eq!(run(OTHER_TASK), TC_NEXT);
    mesh::set_task_source(&root, LOOPBACK, OTHER_TASK).expect("written");
    assert_eq!(run(OTHER_TASK), TC_NEXT);
    assert_eq!(run(TASK), TC_ACT_SHOT);
    assert_eq!(spoofed_count(&root), 4);

    // Sweeping gone interfaces keeps a live one's entry (lo is live) and
    // drops a gone one's (no interface has that index).
    mesh::set_task_source(&root, GONE, TASK).expect("written");
    assert_eq!(held(&root), vec![LOOPBACK, GONE]);
    mesh::forget_gone_interfaces(&root);
    assert_eq!(held(&root), vec![LOOPBACK]);
    assert_eq!(run(TASK), TC_ACT_SHOT);
    let _ = std::fs::remove_dir_all(root.root());
}

/// The task's MAC, as the agent derives it from its address.
const TASK_MAC: [u8; 6] = [0x02, 0x42, 198, 18, 9, 9];
const OTHER_MAC: [u8; 6] = [0x02, 0x42, 198, 18, 9, 10];

/// A frame from `mac`: Ethernet, then `ethertype`'s packet.
fn ethernet_from(mac: [u8; 6], ethertype: u16, packet: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0x42, 198, 18, 9, 1];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(packet);
    f
}

/// A frame as the task sends it, from its own MAC.
fn ethernet(ethertype: u16, packet: &[u8]) -> Vec<u8> {
    ethernet_from(TASK_MAC, ethertype, packet)
}

/// An IPv4 header from `src` (`ihl` words, so options when above 5) with
/// `proto`, `frag` (flags and offset) and 8 bytes of payload.
fn ipv4(src: Ipv4Addr, ihl: u8, proto: u8, frag: u16) -> Vec<u8> {
    let header = usize::from(ihl) * 4;
    let mut p = vec![0u8; header + 8];
    p[0] = 0x40 | ihl;
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[6..8].copy_from_slice(&frag.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&PEER.octets());
    // Options: NOPs (type 1), as any kernel accepts.
    p[20..header].fill(1);
    p
}

/// An ARP packet (Ethernet, IPv4) of operation `op` from `sender` at `mac`.
fn arp(op: u16, mac: [u8; 6], sender: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0x00, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&mac);
    p.extend_from_slice(&sender.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&PEER.octets());
    p
}

#[test]
fn every_frame_is_judged_not_only_what_the_mesh_reads() {
    let root = BpfRoot::new(format!(
        "/sys/fs/bpf/shoal-sources-any-test-{}",
        std::process::id()
    ));
    let programs = Unattached::load(&root).expect("loads (needs root and bpffs)");
    let run = |frame: &[u8]| {
        let mut out = vec![0u8; frame.len() + 512];
        programs
            .run(names::VIP_OUT, frame, &mut out)
            .expect("test run")
            .verdict
    };
    mesh::set_task_source(&root, LOOPBACK, TASK).expect("written");
    assert_eq!(mesh::be_addr(TASK).to_ne_bytes()[..], TASK.octets()[..]);
    assert_eq!(crate::network::mac_of(TASK), TASK_MAC);
    const ICMP: u8 = 1;
    const GRE: u8 = 47;
    const TCP: u8 = 6;
    const MORE_FRAGMENTS: u16 = 0x2000;
    const IPV4: u16 = 0x0800;
    const ARP: u16 = 0x0806;
    let tcp = ipv4(TASK, 5, TCP, 0);
    let spoofed = [
        (
            "IPv4 with options",
            ethernet(IPV4, &ipv4(OTHER_TASK, 6, TCP, 0)),
        ),
        ("ICMP", ethernet(IPV4, &ipv4(OTHER_TASK, 5, ICMP, 0))),
        ("GRE", ethernet(IPV4, &ipv4(OTHER_TASK, 5, GRE, 0))),
        (
            "a first fragment",
            ethernet(IPV4, &ipv4(OTHER_TASK, 5, TCP, MORE_FRAGMENTS)),
        ),
        (
            "a later fragment",
            ethernet(IPV4, &ipv4(OTHER_TASK, 5, TCP, 100)),
        ),
        (
            "TCP cut short of its ports",
            ethernet(IPV4, &ipv4(OTHER_TASK, 5, TCP, 0)[..22]),
        ),
        ("an ARP reply", ethernet(ARP, &arp(2, TASK_MAC, OTHER_TASK))),
        (
            "a gratuitous ARP request",
            ethernet(ARP, &arp(1, TASK_MAC, OTHER_TASK)),
        ),
        (
            "ARP cut short of its sender",
            ethernet(ARP, &arp(2, TASK_MAC, TASK)[..12]),
        ),
        (
            "its own address from another MAC",
            ethernet_from(OTHER_MAC, IPV4, &tcp),
        ),
        (
            "ARP naming its own address at another MAC",
            ethernet(ARP, &arp(2, OTHER_MAC, TASK)),
        ),
        (
            "a second VLAN tag over its own packet",
            ethernet(0x8100, &[&[0, 0, 0x08, 0x00][..], &tcp].concat()),
        ),
        (
            "IPv6 (no such address given)",
            ethernet(0x86dd, &[0x60; 48]),
        ),
        ("another EtherType", ethernet(0x88cc, &[0; 46])),
    ];
    let before = spoofed_count(&root);
    for (what, frame) in &spoofed {
        assert_eq!(run(frame), TC_ACT_SHOT, "{what}");
    }
    assert_eq!(spoofed_count(&root) - before, spoofed.len() as u64);

    let own = [
        ("IPv4 with options", ethernet(IPV4, &ipv4(TASK, 6, TCP, 0))),
        ("ICMP", ethernet(IPV4, &ipv4(TASK, 5, ICMP, 0))),
        ("a later fragment", ethernet(IPV4, &ipv4(TASK, 5, TCP, 100))),
        ("an ARP reply", ethernet(ARP, &arp(2, TASK_MAC, TASK))),
        (
            "an ARP probe (RFC 5227: sender 0.0.0.0)",
            ethernet(ARP, &arp(1, TASK_MAC, Ipv4Addr::UNSPECIFIED)),
        ),
    ];
    for (what, frame) in &own {
        assert_eq!(run(frame), TC_NEXT, "{what} from the task's own addresses");
    }
    assert_eq!(spoofed_count(&root) - before, spoofed.len() as u64);
    let _ = std::fs::remove_dir_all(root.root());
}

/// The sweep of gone interfaces can take a live veth's entry (its index
/// freed and taken again while it looks): every push's `ensure_vips`
/// writes a missing or wrong entry back, and attaches missing programs.
#[test]
fn ensure_vips_writes_a_lost_source_back() {
    // The programs go on the loopback of a network namespace of this
    // test's thread alone.
    // SAFETY: unshare(2) with CLONE_NEWNET moves only the calling thread;
    // no memory is involved.
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) },
        0,
        "unshare (needs root): {}",
        std::io::Error::last_os_error()
    );
    let root = BpfRoot::new(format!(
        "/sys/fs/bpf/shoal-ensure-test-{}",
        std::process::id()
    ));
    let ensured = mesh::ensure_vips(&root, &[(LOOPBACK, TASK)]);
    assert_eq!(
        ensured,
        mesh::Ensured {
            attached: 1,
            sources: 0
        }
    );
    assert_eq!(held(&root), vec![LOOPBACK]);
    assert_eq!(
        mesh::ensure_vips(&root, &[(LOOPBACK, TASK)]),
        mesh::Ensured::default(),
        "nothing to do the second time"
    );

    // Lost to a sweep: written back, the programs left as they are.
    let (mut sources, _) = mesh::open_hash::<u32, u32>(&root, names::TASK_SOURCES).expect("pinned");
    sources.remove(&LOOPBACK).expect("removed");
    drop(sources);
    mesh::forget_gone_interfaces(&root);
    assert_eq!(held(&root), Vec::<u32>::new());
    assert_eq!(
        mesh::ensure_vips(&root, &[(LOOPBACK, TASK)]),
        mesh::Ensured {
            attached: 0,
            sources: 1
        }
    );
    assert_eq!(held(&root), vec![LOOPBACK]);

    // Another address (the veth's task changed): the push's wins.
    mesh::set_task_source(&root, LOOPBACK, OTHER_TASK).expect("written");
    assert_eq!(
        mesh::ensure_vips(&root, &[(LOOPBACK, TASK)]),
        mesh::Ensured {
            attached: 0,
            sources: 1
        }
    );
    let (_, sources) = mesh::open_hash::<u32, u32>(&root, names::TASK_SOURCES).expect("pinned");
    assert_eq!(sources.get(&LOOPBACK), Some(&mesh::be_addr(TASK)));
    let _ = std::fs::remove_dir_all(root.root());
}
