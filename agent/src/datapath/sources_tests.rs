//! `vip_out`'s source check under `BPF_PROG_TEST_RUN`: a veth whose task
//! source the agent wrote lets only that source out, drops the rest and
//! counts them (`spoofed-source`); a veth with no entry is not judged.
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
