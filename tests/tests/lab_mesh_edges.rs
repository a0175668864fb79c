//! The routing mesh's edges (issue 16, points 5 and 6), on real agents,
//! containers and eBPF, played from the lab's `shoal-client`:
//!
//! - an allow-list on a published port (`--publish …,allow=CIDR`) or on a
//!   node (`shoal node update --ingress-allow`) lets a listed client in
//!   and drops any other source at every entry node, TCP and UDP, each
//!   drop counted (`shoal-agent datapath drops`, reason `ingress-allow`);
//! - idle connections through the mesh and a VIP outlive every timeout
//!   of the nodes (shortened for the test) and still carry data.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use shoal_tests::{cmd, lab_cluster::LabCluster, netns, run_in_host, topology};
use socket2::{Domain, Protocol, Socket, Type};

const WAIT: Duration = Duration::from_secs(30);
/// A second address of the client, on no allow-list.
const STRANGER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);
const LISTED: &str = "192.0.2.100/32";

fn node_addr(n: usize) -> Ipv4Addr {
    topology::Host::node(n).addr
}

fn wait_running(cluster: &LabCluster, service: &str, n: usize) -> Result<()> {
    cluster.wait(&format!("{n} running {service}"), WAIT, || {
        let rows = cluster.json_rows(&["service", "ps", service]).ok()?;
        let running = rows
            .iter()
            .filter(|r| r["DesiredState"] == "Running")
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Running"))
            })
            .count();
        (running == n).then_some(())
    })
}

/// The `ingress-allow` drop counter of node `n` (1-based).
fn allow_drops(n: usize) -> Result<u64> {
    let host = topology::Host::node(n);
    let bpffs = shoal_lab::Lab::bpffs_root(&host).display().to_string();
    let out = run_in_host(
        &host.netns,
        "shoal-agent",
        &["--bpffs", &bpffs, "datapath", "drops", "--json"],
    )?;
    let v: Value = serde_json::from_str(out.trim()).with_context(|| format!("drops: {out}"))?;
    v["ingress-allow"]
        .as_u64()
        .with_context(|| format!("no ingress-allow counter on n{n}: {out}"))
}

/// The client's second address, removed when dropped.
struct SecondAddress;

impl SecondAddress {
    fn add() -> Result<Self> {
        let cidr = format!("{STRANGER}/24");
        let _ = cmd::run(
            "ip",
            &[
                "-n",
                topology::CLIENT_NS,
                "addr",
                "del",
                &cidr,
                "dev",
                "eth0",
            ],
        );
        cmd::run(
            "ip",
            &[
                "-n",
                topology::CLIENT_NS,
                "addr",
                "add",
                &cidr,
                "dev",
                "eth0",
            ],
        )?;
        Ok(Self)
    }
}

impl Drop for SecondAddress {
    fn drop(&mut self) {
        let cidr = format!("{STRANGER}/24");
        let _ = cmd::run(
            "ip",
            &[
                "-n",
                topology::CLIENT_NS,
                "addr",
                "del",
                &cidr,
                "dev",
                "eth0",
            ],
        );
    }
}

/// A TCP connection from the client's `from` address to `to`, echoing
/// `text` (the echo image's TCP echo).
fn tcp_echo_from(from: Ipv4Addr, to: SocketAddrV4, text: &str) -> Result<()> {
    let mut stream = netns::run_in(
        topology::CLIENT_NS,
        move || -> std::io::Result<TcpStream> {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            socket.bind(&SocketAddr::from(SocketAddrV4::new(from, 0)).into())?;
            socket.connect_timeout(&SocketAddr::from(to).into(), Duration::from_secs(3))?;
            Ok(socket.into())
        },
    )??;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(text.as_bytes())?;
    let mut back = vec![0u8; text.len()];
    stream.read_exact(&mut back)?;
    ensure!(
        back == text.as_bytes(),
        "echoed {:?}",
        String::from_utf8_lossy(&back)
    );
    Ok(())
}

/// One UDP exchange from `from` to `to` (the echo image answers `whoami`);
/// the answer, if one came within a second.
fn udp_from(from: Ipv4Addr, to: SocketAddrV4) -> Result<Option<String>> {
    let socket = netns::run_in(topology::CLIENT_NS, move || {
        UdpSocket::bind(SocketAddrV4::new(from, 0))
    })??;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    socket.send_to(b"whoami", to)?;
    let mut buf = [0u8; 2048];
    Ok(match socket.recv_from(&mut buf) {
        Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    })
}

/// A listed client gets in at `entry`; the stranger does not, and `entry`'s
/// node counts the drops.
fn listed_in_stranger_dropped(node: usize, tcp: u16, udp: Option<u16>) -> Result<()> {
    let addr = node_addr(node);
    let entry = SocketAddrV4::new(addr, tcp);
    tcp_echo_from(topology::CLIENT_ADDR, entry, "listed")
        .with_context(|| format!("the listed client through n{node}:{tcp}"))?;
    let before = allow_drops(node)?;
    if tcp_echo_from(STRANGER, entry, "stranger").is_ok() {
        bail!("{STRANGER} got through n{node}:{tcp}/tcp, which allows only {LISTED}");
    }
    let after_tcp = allow_drops(node)?;
    ensure!(
        after_tcp > before,
        "n{node} dropped {STRANGER}'s SYN to {tcp}/tcp without counting it ({before} → {after_tcp})"
    );
    if let Some(udp) = udp {
        let entry = SocketAddrV4::new(addr, udp);
        let heard = udp_from(topology::CLIENT_ADDR, entry)?;
        ensure!(
            heard.is_some(),
            "the listed client got no UDP answer through n{node}:{udp}"
        );
        ensure!(
            udp_from(STRANGER, entry)?.is_none(),
            "{STRANGER} got a UDP answer through n{node}:{udp}"
        );
        let after_udp = allow_drops(node)?;
        ensure!(
            after_udp > after_tcp,
            "n{node} dropped {STRANGER}'s datagram to {udp}/udp without counting it"
        );
    }
    println!(
        "n{node}: {LISTED} in, {STRANGER} dropped ({} counted)",
        allow_drops(node)?
    );
    Ok(())
}

#[test]
fn allow_lists_drop_unlisted_sources_at_every_entry_node_and_count_them() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let _second = SecondAddress::add()?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "listed",
        "--publish",
        &format!("published=8095,target=7,allow={LISTED}"),
        "--publish",
        &format!("published=8096,target=80,protocol=udp,allow=10.0.0.0/8;{LISTED}"),
        "shoal/echo:1",
    ])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "open",
        "--publish",
        "8097:7",
        "shoal/echo:1",
    ])?;
    wait_running(&cluster, "listed", 1)?;
    wait_running(&cluster, "open", 1)?;
    let inspect: Value = serde_json::from_str(&cluster.shoal(&["service", "inspect", "listed"])?)?;
    let ports = &inspect[0]["Spec"]["EndpointSpec"]["Ports"];
    ensure!(
        ports[0]["Allow"] == serde_json::json!([LISTED]),
        "inspect: {ports}"
    );

    // The port's list, at every entry node (one runs the task, two do not).
    for node in 1..=3 {
        cluster.wait(&format!("n{node} serving 8095"), WAIT, || {
            tcp_echo_from(
                topology::CLIENT_ADDR,
                SocketAddrV4::new(node_addr(node), 8095),
                "up",
            )
            .ok()
        })?;
        listed_in_stranger_dropped(node, 8095, Some(8096))?;
        // A port without a list admits the stranger's SYN (its answer
        // cannot come back to .101, which the nodes do not know): no drop.
        let before = allow_drops(node)?;
        let _ = tcp_echo_from(STRANGER, SocketAddrV4::new(node_addr(node), 8097), "open");
        ensure!(
            allow_drops(node)? == before,
            "n{node} dropped a SYN to a port without a list"
        );
    }

    // The node's list: every published port of the node, here 8097.
    for node in 1..=3 {
        cluster.shoal(&[
            "node",
            "update",
            "--ingress-allow",
            LISTED,
            &format!("n{node}"),
        ])?;
    }
    let node: Value = serde_json::from_str(&cluster.shoal(&["node", "inspect", "n2"])?)?;
    ensure!(
        node[0]["Spec"]["IngressAllow"] == serde_json::json!([LISTED]),
        "node inspect: {}",
        node[0]["Spec"]
    );
    for node in 1..=3 {
        let entry = SocketAddrV4::new(node_addr(node), 8097);
        cluster.wait(&format!("n{node} applying its list"), WAIT, || {
            let before = allow_drops(node).ok()?;
            let _ = tcp_echo_from(STRANGER, entry, "stranger");
            (allow_drops(node).ok()? > before).then_some(())
        })?;
        listed_in_stranger_dropped(node, 8097, None)?;
    }
    for node in 1..=3 {
        cluster.shoal(&[
            "node",
            "update",
            "--ingress-allow-clear",
            &format!("n{node}"),
        ])?;
    }
    let node: Value = serde_json::from_str(&cluster.shoal(&["node", "inspect", "n2"])?)?;
    ensure!(
        node[0]["Spec"].get("IngressAllow").is_none(),
        "{}",
        node[0]["Spec"]
    );
    let bad = cluster.shoal(&["node", "update", "--ingress-allow", "192.0.2.0/40", "n1"]);
    ensure!(
        bad.as_ref()
            .is_err_and(|e| format!("{e:#}").contains("192.0.2.0/40")),
        "a bad CIDR: {bad:?}"
    );
    Ok(())
}
