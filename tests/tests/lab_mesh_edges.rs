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
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use shoal_tests::{client::say, cmd, lab_cluster::LabCluster, netns, run_in_host, topology};
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
    say(&mut stream, text)
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
        "--publish",
        &format!("mode=host,published=8098,target=7,allow={LISTED}"),
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

    // Host mode: only the task's node answers, with the same check.
    let task_node = cluster.shoal(&[
        "service",
        "ps",
        "listed",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}}",
    ])?;
    let task_node: usize = task_node
        .trim()
        .strip_prefix('n')
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("the node of listed's task: {task_node:?}"))?;
    cluster.wait("the host-mode port", WAIT, || {
        tcp_echo_from(
            topology::CLIENT_ADDR,
            SocketAddrV4::new(node_addr(task_node), 8098),
            "up",
        )
        .ok()
    })?;
    listed_in_stranger_dropped(task_node, 8098, None)?;

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

/// The node timeouts the idle test shortens (documented in README, "Idle
/// connections"), and what each is shortened to, in seconds.
const SHORT_TIMEOUTS: [(&str, &str); 6] = [
    ("net/netfilter/nf_conntrack_tcp_timeout_established", "5"),
    ("net/netfilter/nf_conntrack_tcp_timeout_close_wait", "5"),
    ("net/netfilter/nf_conntrack_tcp_timeout_unacknowledged", "5"),
    ("net/netfilter/nf_conntrack_udp_timeout", "5"),
    ("net/netfilter/nf_conntrack_udp_timeout_stream", "5"),
    ("net/netfilter/nf_conntrack_generic_timeout", "5"),
];
/// Longer than every shortened timeout, with room for the kernel's
/// garbage collection to have run.
const IDLE: Duration = Duration::from_secs(20);

/// Every node's shortened timeouts, the originals written back when dropped.
struct ShortTimeouts(Vec<(String, &'static str, String)>);

impl ShortTimeouts {
    fn apply() -> Result<Self> {
        let mut saved = Vec::new();
        for n in 1..=3 {
            let netns_name = topology::Host::node(n).netns;
            for (key, value) in SHORT_TIMEOUTS {
                let path = format!("/proc/sys/{key}");
                let old = netns::run_in(&netns_name, move || std::fs::read_to_string(path))?
                    .with_context(|| format!("reading {key} in {netns_name}"))?;
                netns::write_sysctl(&netns_name, key, value)?;
                saved.push((netns_name.clone(), key, old.trim().to_owned()));
            }
        }
        Ok(Self(saved))
    }
}

impl Drop for ShortTimeouts {
    fn drop(&mut self) {
        for (netns_name, key, old) in &self.0 {
            let _ = netns::write_sysctl(netns_name, key, old);
        }
    }
}

/// The bridges' FDB ageing (learned entries), shortened to 1 s on every
/// node: a learned entry that ages out makes the bridge flood, and the
/// overlay's own FDB entries are permanent, so nothing may depend on it.
fn shorten_bridge_ageing() -> Result<()> {
    for n in 1..=3 {
        let netns_name = topology::Host::node(n).netns;
        let out = cmd::stdout(
            "ip",
            &["-n", &netns_name, "-o", "link", "show", "type", "bridge"],
        )?;
        for bridge in out.lines().filter_map(|l| l.split(": ").nth(1)) {
            let bridge = bridge.split('@').next().unwrap_or(bridge);
            cmd::run(
                "ip",
                &[
                    "-n",
                    &netns_name,
                    "link",
                    "set",
                    "dev",
                    bridge,
                    "type",
                    "bridge",
                    "ageing_time",
                    "100",
                ],
            )?;
        }
    }
    Ok(())
}

/// The service's VIP on `network`.
fn vip_of(cluster: &LabCluster, service: &str, network: &str) -> Result<Ipv4Addr> {
    let net: Value = serde_json::from_str(&cluster.shoal(&["network", "inspect", network])?)?;
    let id = net[0]["Id"].as_str().context("network id")?.to_owned();
    let svc: Value = serde_json::from_str(&cluster.shoal(&["service", "inspect", service])?)?;
    let vips = svc[0]["Endpoint"]["VirtualIPs"]
        .as_array()
        .context("no VIPs")?;
    let vip = vips
        .iter()
        .find(|v| v["NetworkID"] == id.as_str())
        .and_then(|v| v["Addr"].as_str())
        .with_context(|| format!("no VIP on {network}: {vips:?}"))?;
    Ok(vip.split('/').next().unwrap_or(vip).parse()?)
}

#[test]
fn idle_connections_outlive_every_node_timeout() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&["network", "create", "--driver", "overlay", "idlenet"])?;
    // The task runs on n1 only: connections entering at n2 and n3 cross
    // the mesh to another node.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "idle",
        "--network",
        "idlenet",
        "--constraint",
        "node.hostname==n1",
        "--publish",
        "8091:7",
        "--publish",
        "published=8092,target=80,protocol=udp",
        "shoal/echo:1",
    ])?;
    // Three tasks: a new UDP flow would get another one, round-robin.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "spread",
        "--replicas",
        "3",
        "--publish",
        "published=8093,target=80,protocol=udp",
        "shoal/echo:1",
    ])?;
    // A client container on n3, on the same overlay: east-west via the VIP.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "idler",
        "--network",
        "idlenet",
        "--constraint",
        "node.hostname==n3",
        "shoal/echo:1",
    ])?;
    wait_running(&cluster, "idle", 1)?;
    wait_running(&cluster, "spread", 3)?;
    wait_running(&cluster, "idler", 1)?;
    let vip = vip_of(&cluster, "idle", "idlenet")?;
    let _timeouts = ShortTimeouts::apply()?;
    shorten_bridge_ageing()?;

    let mut held: Vec<(String, TcpStream)> = Vec::new();
    for node in [2, 3] {
        let entry = SocketAddrV4::new(node_addr(node), 8091);
        let mut stream = cluster.wait(&format!("a connection through n{node}"), WAIT, || {
            netns::run_in(topology::CLIENT_NS, move || {
                TcpStream::connect_timeout(&entry.into(), Duration::from_secs(3))
            })
            .ok()?
            .ok()
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        say(&mut stream, "before")?;
        held.push((format!("published port 8091 through n{node}"), stream));
    }
    let idler = shoal_tests::containers_of("idler")?
        .pop()
        .context("no idler container")?;
    let ns_path = format!("/proc/{}/ns/net", shoal_tests::pid_of(&idler)?);
    let to_vip = SocketAddrV4::new(vip, 7);
    let mut stream = cluster.wait("a connection to the VIP", WAIT, || {
        netns::run_in_path(&ns_path, move || {
            TcpStream::connect_timeout(&to_vip.into(), Duration::from_secs(3))
        })
        .ok()?
        .ok()
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    say(&mut stream, "before")?;
    held.push((format!("VIP {to_vip} from a container on n3"), stream));

    // UDP flows: one to `idle` through n2, one to `spread` through n3
    // (whose backend other flows then move on from).
    let udp_idle = netns::run_in(topology::CLIENT_NS, || UdpSocket::bind("0.0.0.0:0"))??;
    let udp_spread = netns::run_in(topology::CLIENT_NS, || UdpSocket::bind("0.0.0.0:0"))??;
    for s in [&udp_idle, &udp_spread] {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
    }
    let ask = |s: &UdpSocket, to: SocketAddrV4| -> Result<String> {
        s.send_to(b"whoami", to)?;
        let mut buf = [0u8; 2048];
        let (n, _) = s
            .recv_from(&mut buf)
            .with_context(|| format!("no answer from {to}"))?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let idle_udp = SocketAddrV4::new(node_addr(2), 8092);
    let spread_udp = SocketAddrV4::new(node_addr(3), 8093);
    let first_idle = cluster.wait("UDP through n2", WAIT, || ask(&udp_idle, idle_udp).ok())?;
    let first_spread = ask(&udp_spread, spread_udp)?;

    // The kernel's conntrack of no node knows these connections (the
    // mesh's packets never reach netfilter; bridged east-west traffic is
    // NOTRACK): none of its timeouts can touch them.
    for n in 1..=3 {
        let netns_name = topology::Host::node(n).netns;
        let table = netns::run_in(&netns_name, || {
            std::fs::read_to_string("/proc/net/nf_conntrack")
        })??;
        let ours: Vec<&str> = table
            .lines()
            .filter(|l| l.contains(" dport=7 ") || l.contains(" sport=7 "))
            .collect();
        ensure!(
            ours.is_empty(),
            "n{n}'s conntrack tracks the echo connections: {ours:?}"
        );
    }
    let started = std::time::Instant::now();
    std::thread::sleep(IDLE / 2);
    // Other flows meanwhile: the round-robin moves on.
    let mut others = Vec::new();
    for _ in 0..4 {
        let s = netns::run_in(topology::CLIENT_NS, || UdpSocket::bind("0.0.0.0:0"))??;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        others.push(ask(&s, spread_udp)?);
    }
    std::thread::sleep(IDLE.saturating_sub(started.elapsed()));

    let mut failed = Vec::new();
    for (what, stream) in held.iter_mut() {
        if let Err(error) = say(stream, "after a long silence") {
            failed.push(format!("{what}: {error:#}"));
        }
    }
    let again_idle = ask(&udp_idle, idle_udp);
    let again_spread = ask(&udp_spread, spread_udp);
    println!(
        "after {:?} idle (node timeouts shortened to 5 s, bridge ageing 1 s): {} of {} TCP \
         connections still echo; UDP to idle {:?}, to spread first {first_spread:?} then \
         {again_spread:?} (other flows meanwhile: {others:?})",
        started.elapsed(),
        held.len() - failed.len(),
        held.len(),
        again_idle.as_ref().map(|_| "answered"),
    );
    ensure!(failed.is_empty(), "idle connections broke: {failed:?}");
    ensure!(
        again_idle? == first_idle,
        "the idle UDP flow to `idle` changed task"
    );
    ensure!(
        again_spread? == first_spread,
        "the idle UDP flow to `spread` changed task (it is tracked with no timeout)"
    );
    ensure!(
        others.iter().any(|o| *o != first_spread),
        "every new flow went to one task: round-robin proves nothing here ({others:?})"
    );
    Ok(())
}
