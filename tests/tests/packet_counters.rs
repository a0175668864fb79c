//! The first eBPF program: per-interface TC counters, loaded by shoal-agent,
//! counting real packets on a lab node's underlay interface.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use serde_json::Value;
use shoal_tests::{UdpEcho, lab, run_in_host, topology, udp_round_trips};

const PACKETS: usize = 50;
const PAYLOAD: usize = 100;
/// Ethernet (14) + IPv4 (20) + UDP (8) + payload: `skb->len` at TC.
const FRAME: u64 = 14 + 20 + 8 + PAYLOAD as u64;

fn counters(netns: &str, bpffs: &str) -> Result<Value> {
    let out = run_in_host(
        netns,
        "shoal-agent",
        &["--bpffs", bpffs, "datapath", "counters", "eth0", "--json"],
    )?;
    serde_json::from_str(out.lines().next().context("no counter line")?)
        .context("counter line is not JSON")
}

/// `shoal-agent datapath ARGS` on a lab node, with that node's bpffs tree.
fn datapath(node: &topology::Host, args: &[&str]) -> Result<String> {
    let bpffs = shoal_lab::Lab::bpffs_root(node).display().to_string();
    let mut full = vec!["--bpffs", bpffs.as_str(), "datapath"];
    full.extend_from_slice(args);
    run_in_host(&node.netns, "shoal-agent", &full)
}

fn field(v: &Value, name: &str) -> u64 {
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} missing in {v}"))
}

#[test]
fn counters_see_every_packet_in_and_out() -> Result<()> {
    let lab = lab()?;
    let n1 = lab.host("n1")?;
    let bpffs = shoal_lab::Lab::bpffs_root(&n1).display().to_string();
    let agent = |args: &[&str]| datapath(&n1, args);
    agent(&["detach", "eth0"]).ok(); // start from zero
    agent(&["attach", "eth0"])?;
    agent(&["attach", "eth0"])?; // idempotent: must not double-count

    let echo_addr = SocketAddr::from((n1.addr, 9999));
    let _echo = UdpEcho::start(&n1.netns, echo_addr)?;
    let before = counters(&n1.netns, &bpffs)?;
    let echoed = udp_round_trips(topology::CLIENT_NS, echo_addr, PACKETS, PAYLOAD)?;
    let after = counters(&n1.netns, &bpffs)?;
    assert_eq!(echoed, PACKETS, "the echo must answer every datagram");

    // The lab has no ARP and no IPv6: the datagrams are the only traffic.
    let delta = |name: &str| field(&after, name) - field(&before, name);
    assert_eq!(after["ifname"], "eth0");
    assert_eq!(delta("rx_packets"), PACKETS as u64);
    assert_eq!(delta("rx_bytes"), PACKETS as u64 * FRAME);
    assert_eq!(delta("tx_packets"), PACKETS as u64);
    assert_eq!(delta("tx_bytes"), PACKETS as u64 * FRAME);
    Ok(())
}

#[test]
fn counters_survive_the_loader_and_stop_at_detach() -> Result<()> {
    let lab = lab()?;
    let n3 = lab.host("n3")?;
    let bpffs = shoal_lab::Lab::bpffs_root(&n3).display().to_string();
    let agent = |args: &[&str]| datapath(&n3, args);
    agent(&["detach", "eth0"]).ok();
    // `attach` exits at once: the pinned links keep the programs attached.
    agent(&["attach", "eth0"])?;
    let echo_addr = SocketAddr::from((n3.addr, 9999));
    let _echo = UdpEcho::start(&n3.netns, echo_addr)?;
    assert_eq!(
        udp_round_trips(topology::CLIENT_NS, echo_addr, 10, PAYLOAD)?,
        10
    );
    assert_eq!(field(&counters(&n3.netns, &bpffs)?, "rx_packets"), 10);

    agent(&["detach", "eth0"])?;
    assert_eq!(
        udp_round_trips(topology::CLIENT_NS, echo_addr, 5, PAYLOAD)?,
        5
    );
    agent(&["attach", "eth0"])?;
    let fresh = counters(&n3.netns, &bpffs)?;
    assert_eq!(
        field(&fresh, "rx_packets"),
        0,
        "detached programs must not count: {fresh}"
    );
    agent(&["detach", "eth0"])?;
    Ok(())
}
