//! The data plane's guards on real agents and containers, one threat per
//! test, each played from the lab's `shoal-client` host (not a member):
//!
//! - VXLAN from an address that is no node reaches no container, and
//!   VXLAN spoofed from a node's address reaches only a published port;
//! - a flood of spoofed SYNs on a published port, larger than the
//!   connection table, leaves every established connection working;
//! - the node's DNS server answers its containers and nobody else;
//! - containers reach neither the managers' port nor any port of their own
//!   node but DNS, on an ordinary overlay or an `--internal` one;
//! - a container cannot send from another task's address (to take over
//!   its connections through a VIP).
//!
//! Every drop is counted: `shoal-agent datapath drops` proves where a
//! packet went.

use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use shoal_tests::{
    bin, client, cmd, containers_of,
    lab_cluster::LabCluster,
    netns,
    packets::{self, RawSender},
    pid_of, run_in_host, toolbox_in, topology,
};

const WAIT: Duration = Duration::from_secs(30);
const N1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const N2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
const N3: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 13);

fn wait_running(cluster: &LabCluster, service: &str, n: usize) -> Result<()> {
    cluster.wait(&format!("{n} running {service}"), WAIT, || {
        (cluster.running_tasks(service) == n).then_some(())
    })
}

/// The one container of a service.
fn container(service: &str) -> Result<String> {
    match containers_of(service)?.as_slice() {
        [one] => Ok(one.clone()),
        other => bail!("{service} has {} containers, expected one", other.len()),
    }
}

/// `shoal-agent datapath drops --json` on node `n` (1-based).
fn drops(n: usize) -> Result<Value> {
    let host = topology::Host::node(n);
    let bpffs = shoal_lab::Lab::bpffs_root(&host).display().to_string();
    let out = run_in_host(
        &host.netns,
        "shoal-agent",
        &["--bpffs", &bpffs, "datapath", "drops", "--json"],
    )?;
    serde_json::from_str(out.trim()).with_context(|| format!("drops of n{n}: {out}"))
}

fn dropped(n: usize, reason: &str) -> Result<u64> {
    drops(n)?[reason]
        .as_u64()
        .with_context(|| format!("no {reason} counter on n{n}"))
}

/// A network's field from `shoal network inspect`.
fn inspect_network(cluster: &LabCluster, name: &str) -> Result<Value> {
    let out = cluster.shoal(&["network", "inspect", name])?;
    let v: Value = serde_json::from_str(&out)?;
    Ok(v[0].clone())
}

fn gateway_of(cluster: &LabCluster, network: &str) -> Result<Ipv4Addr> {
    inspect_network(cluster, network)?["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .with_context(|| format!("{network} has no gateway"))?
        .parse()
        .context("gateway")
}

/// The IPv4 addresses inside a container, by `nsenter` into its namespace.
fn container_addrs(container: &str) -> Result<Vec<Ipv4Addr>> {
    let pid = pid_of(container)?;
    let out = cmd::stdout("nsenter", &["-t", &pid, "-n", "ip", "-o", "-4", "addr"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .filter(|a: &Ipv4Addr| !a.is_loopback())
        .collect())
}

/// Waits up to `within` for a datagram on `socket`; its text if one came.
fn receive(socket: &UdpSocket, within: Duration) -> Option<String> {
    socket.set_read_timeout(Some(within)).ok()?;
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn vxlan_from_strangers_and_to_unpublished_ports_reaches_no_container() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    // One task on n1, published over TCP only: its UDP echo on port 80
    // is not published (until later).
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--constraint",
        "node.hostname==n1",
        "--publish",
        "8080:80",
        "shoal/echo:1",
    ])?;
    wait_running(&cluster, "web", 1)?;
    let ingress = inspect_network(&cluster, "ingress")?;
    let vni: u32 = ingress["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
        .as_str()
        .context("ingress VNI")?
        .parse()?;
    let task = *container_addrs(&container("web")?)?
        .first()
        .context("the task has no address")?;
    // The inner packet: UDP to the task's echo, from a client socket that
    // sees the echo's answer if the container ever gets it.
    let listener = netns::run_in(topology::CLIENT_NS, || {
        UdpSocket::bind((topology::CLIENT_ADDR, 0))
    })??;
    let reply_to = match listener.local_addr()? {
        std::net::SocketAddr::V4(v4) => v4,
        other => bail!("not IPv4: {other}"),
    };
    let inner = packets::udp(reply_to, SocketAddrV4::new(task, 80), b"whoami");
    let frame = packets::vxlan(vni, packets::task_mac(task), &inner);
    let before = drops(1)?;

    // 1. From the client's own address: not a node.
    let plain = netns::run_in(topology::CLIENT_NS, || UdpSocket::bind("0.0.0.0:0"))??;
    for _ in 0..3 {
        plain.send_to(&frame, (N1, 4789))?;
    }
    let heard = receive(&listener, Duration::from_secs(2));
    ensure!(
        heard.is_none(),
        "VXLAN from the client reached the container: it answered {heard:?}"
    );
    let after = drops(1)?;
    let counted = |v: &Value, r: &str| v[r].as_u64().unwrap_or(0);
    ensure!(
        counted(&after, "vxlan-source") >= counted(&before, "vxlan-source") + 3,
        "the 3 frames from the client were not counted as dropped: {before} -> {after}"
    );

    // 2. Spoofed from n2's address (a node): to a port no service
    // publishes, dropped all the same.
    let raw = RawSender::open(topology::CLIENT_NS)?;
    let spoofed = packets::udp(
        SocketAddrV4::new(N2, 53_000),
        SocketAddrV4::new(N1, 4789),
        &frame,
    );
    for _ in 0..3 {
        raw.send(&spoofed)?;
    }
    let heard = receive(&listener, Duration::from_secs(2));
    ensure!(
        heard.is_none(),
        "VXLAN spoofed from a node reached an unpublished port: the container answered {heard:?}"
    );
    let later = drops(1)?;
    ensure!(
        counted(&later, "vxlan-port") >= counted(&after, "vxlan-port") + 3,
        "the 3 spoofed frames were not counted as dropped: {after} -> {later}"
    );

    // 3. The same frame once UDP 80 is published: the packet was well
    // made, and only the port kept it out.
    cluster.shoal(&[
        "service",
        "update",
        "--publish-add",
        "published=8081,target=80,protocol=udp",
        "web",
    ])?;
    wait_running(&cluster, "web", 1)?;
    let task = *container_addrs(&container("web")?)?
        .first()
        .context("the task has no address")?;
    let inner = packets::udp(reply_to, SocketAddrV4::new(task, 80), b"whoami");
    let frame = packets::vxlan(vni, packets::task_mac(task), &inner);
    let spoofed = packets::udp(
        SocketAddrV4::new(N2, 53_000),
        SocketAddrV4::new(N1, 4789),
        &frame,
    );
    let heard = cluster.wait("the published port's frame answered", WAIT, || {
        raw.send(&spoofed).ok()?;
        receive(&listener, Duration::from_millis(500))
    })?;
    ensure!(heard.contains("web"), "not the echo's answer: {heard}");
    println!(
        "n1 drops: {} (frames from the client and to an unpublished port; the published one answered: {heard})",
        drops(1)?
    );
    Ok(())
}

/// Each connection takes two entries (both directions): a flood of this
/// many SYNs would fill the table four times over if each were tracked.
const FLOOD_SYNS: usize = 2 * shoal_agent_common::MESH_MAX_CONNECTIONS as usize;
const ESTABLISHED: usize = 64;

#[test]
fn a_spoofed_syn_flood_larger_than_the_table_leaves_established_connections_working() -> Result<()>
{
    let cluster = LabCluster::start(1, true)?;
    // Three backends (one per node): past the 65,536 source ports the
    // mesh can give connections to one backend, the flood fills the table.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "echo",
        "--replicas",
        "3",
        "--publish",
        "8090:7",
        "shoal/echo:1",
    ])?;
    wait_running(&cluster, "echo", 3)?;
    let entry = SocketAddrV4::new(N3, 8090);
    let mut streams = Vec::with_capacity(ESTABLISHED);
    for i in 0..ESTABLISHED {
        let mut stream = netns::run_in(topology::CLIENT_NS, move || {
            TcpStream::connect_timeout(&entry.into(), Duration::from_secs(5))
        })??;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        client::say(&mut stream, &format!("hello {i}"))
            .with_context(|| format!("connection {i} before the flood"))?;
        streams.push(stream);
    }

    // Spoofed SYNs from addresses of the lab's subnet no host has, from
    // every port: each would be a new connection to the mesh.
    let raw = RawSender::open(topology::CLIENT_NS)?;
    let started = Instant::now();
    let mut seed: u32 = 0x2545_f491;
    for i in 0..FLOOD_SYNS {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let host = 150 + (i % 50) as u8; // .150 to .199: no lab host
        let port = 1024 + (seed % 64_000) as u16;
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, host), port);
        raw.send(&packets::tcp_syn(src, entry, seed))?;
    }
    let took = started.elapsed();
    // Let the nodes work through it (and the backends' SYN-ACKs).
    std::thread::sleep(Duration::from_secs(3));
    let mut failed = Vec::new();
    for (i, stream) in streams.iter_mut().enumerate() {
        if let Err(error) = client::say(stream, &format!("again {i}")) {
            failed.push(format!("{i}: {error:#}"));
        }
    }
    // What the mesh took in: new connections counted on the entry node.
    let seen = cluster.wait("the flood in the service's counters", WAIT, || {
        let out = cluster.shoal(&["service", "inspect", "echo"]).ok()?;
        let v: Value = serde_json::from_str(&out).ok()?;
        let n = v[0]["LoadBalancer"]["Connections"].as_u64()?;
        (n >= ESTABLISHED as u64 + 1000).then_some(n)
    })?;
    println!(
        "SYN flood: {FLOOD_SYNS} spoofed SYNs to {entry} in {:.1} s ({:.0}/s); the mesh opened {seen} \
         connections (table: {} entries, both directions each); {}/{ESTABLISHED} established \
         connections still echo",
        took.as_secs_f64(),
        FLOOD_SYNS as f64 / took.as_secs_f64(),
        shoal_agent_common::MESH_MAX_CONNECTIONS,
        ESTABLISHED - failed.len()
    );
    ensure!(
        failed.is_empty(),
        "{} of {ESTABLISHED} established connections broke under the flood: {failed:?}",
        failed.len()
    );
    // And new connections still work.
    let mut fresh = netns::run_in(topology::CLIENT_NS, move || {
        TcpStream::connect_timeout(&entry.into(), Duration::from_secs(5))
    })??;
    fresh.set_read_timeout(Some(Duration::from_secs(10)))?;
    client::say(&mut fresh, "new after the flood")?;
    Ok(())
}

/// A route from the client to one address through n1, gone when dropped.
struct ClientRoute(Ipv4Addr);

impl ClientRoute {
    fn via_n1(to: Ipv4Addr) -> Result<Self> {
        let to_s = to.to_string();
        cmd::run(
            "ip",
            &[
                "netns",
                "exec",
                topology::CLIENT_NS,
                "ip",
                "route",
                "replace",
                &to_s,
                "via",
                &N1.to_string(),
            ],
        )?;
        Ok(Self(to))
    }
}

impl Drop for ClientRoute {
    fn drop(&mut self) {
        let _ = cmd::run(
            "ip",
            &[
                "netns",
                "exec",
                topology::CLIENT_NS,
                "ip",
                "route",
                "del",
                &self.0.to_string(),
            ],
        );
    }
}

#[test]
fn the_node_dns_server_answers_its_containers_only() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&["network", "create", "-d", "overlay", "appnet"])?;
    for (name, image) in [("web", "shoal/echo:1"), ("tb", "shoal/toolbox")] {
        cluster.shoal(&[
            "service",
            "create",
            "--name",
            name,
            "--network",
            "appnet",
            "--constraint",
            "node.hostname==n1",
            image,
        ])?;
        wait_running(&cluster, name, 1)?;
    }
    let gateway = gateway_of(&cluster, "appnet")?;
    let tb = container("tb")?;
    let out = toolbox_in(&tb, &["dns", "web"])?;
    ensure!(out.status.success(), "a container's query failed: {out:?}");

    // The client reaches n1's gateway address (a route through n1): the
    // server is there, and says nothing to it.
    let _route = ClientRoute::via_n1(gateway)?;
    let server = format!("{gateway}:53");
    let out = cmd::in_netns(
        topology::CLIENT_NS,
        &bin("shoal-toolbox")?.display().to_string(),
    )
    .args(["--timeout-ms", "1500", "dns", "web", "--server", &server])
    .output()?;
    let text = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && text.contains("no answer"),
        "the client got an answer from {server}: {out:?}"
    );
    // The path was there: the client reaches the gateway (a TCP port
    // nothing listens on refuses at once, rather than timing out).
    let probe = netns::run_in(topology::CLIENT_NS, move || {
        TcpStream::connect_timeout(&(gateway, 9).into(), Duration::from_secs(2))
    })?;
    ensure!(
        probe
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "the client does not reach {gateway} at all ({probe:?}): the test proves nothing"
    );
    let out = toolbox_in(&tb, &["dns", "web"])?;
    ensure!(
        out.status.success(),
        "the server stopped answering: {out:?}"
    );
    Ok(())
}

/// A listener in a lab host's namespace, as a manager listening on every
/// address (the default, `0.0.0.0:2377`) would have.
fn listen_in(netns_name: &str, at: Ipv4Addr, port: u16) -> Result<TcpListener> {
    netns::run_in(netns_name, move || TcpListener::bind((at, port)))?
        .with_context(|| format!("listening on {at}:{port} in {netns_name}"))
}

fn connects(container: &str, target: &str) -> Result<bool> {
    let out = toolbox_in(container, &["--timeout-ms", "1000", "tcp-connect", target])?;
    Ok(out.status.success())
}

#[test]
fn containers_reach_no_manager_port_and_no_port_of_their_node_but_dns() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&["network", "create", "-d", "overlay", "appnet"])?;
    cluster.shoal(&["network", "create", "-d", "overlay", "--internal", "sealed"])?;
    for (name, network, node) in [
        ("tb1", "appnet", "n1"),
        ("sealed1", "sealed", "n1"),
        ("tb2", "appnet", "n2"),
    ] {
        cluster.shoal(&[
            "service",
            "create",
            "--name",
            name,
            "--network",
            network,
            "--constraint",
            &format!("node.hostname=={node}"),
            "shoal/toolbox",
        ])?;
    }
    for name in ["tb1", "sealed1", "tb2"] {
        wait_running(&cluster, name, 1)?;
    }
    let (appnet_gw, sealed_gw) = (
        gateway_of(&cluster, "appnet")?,
        gateway_of(&cluster, "sealed")?,
    );
    // n1's manager listens on 192.0.2.11:2377; with the default listen
    // address it would answer on the gateways too: so do these.
    let _listeners = [
        listen_in("shoal-n1", appnet_gw, 2377)?,
        listen_in("shoal-n1", appnet_gw, 8500)?,
        listen_in("shoal-n1", sealed_gw, 2377)?,
        listen_in("shoal-n2", appnet_gw, 2377)?,
        // Not a node: containers keep reaching the world on any port.
        listen_in(topology::CLIENT_NS, topology::CLIENT_ADDR, 2377)?,
    ];
    let (tb1, sealed1, tb2) = (container("tb1")?, container("sealed1")?, container("tb2")?);
    let before = (
        dropped(1, "container-to-node")?,
        dropped(2, "container-to-node")?,
    );
    let client = format!("{}:2377", topology::CLIENT_ADDR);
    ensure!(
        connects(&tb1, &client)?,
        "a container cannot reach {client} (not a node): the guard blocks too much"
    );
    let blocked = [
        (&tb1, format!("{appnet_gw}:2377"), "its gateway"),
        (&tb1, format!("{N1}:2377"), "its node's manager"),
        (
            &tb1,
            format!("{appnet_gw}:8500"),
            "another port of its node",
        ),
        (
            &sealed1,
            format!("{sealed_gw}:2377"),
            "its gateway on --internal",
        ),
        (&tb2, format!("{appnet_gw}:2377"), "its gateway on n2"),
        (&tb2, format!("{N1}:2377"), "another node's manager"),
        (&tb2, format!("{N3}:2377"), "a third node's manager port"),
    ];
    let mut reached = Vec::new();
    for (c, target, what) in &blocked {
        if connects(c, target)? {
            reached.push(format!("{what} ({target})"));
        }
    }
    ensure!(reached.is_empty(), "containers reached {reached:?}");
    // DNS at the gateway still answers, on both kinds of network (tb2 is
    // not on sealed: NXDOMAIN, exit 3, is an answer too).
    let out = toolbox_in(&tb1, &["dns", "tb2"])?;
    ensure!(out.status.success(), "DNS from appnet failed: {out:?}");
    let out = toolbox_in(&sealed1, &["dns", "tb2"])?;
    ensure!(
        out.status.code() == Some(3),
        "DNS from sealed got no answer: {out:?}"
    );
    let after = (
        dropped(1, "container-to-node")?,
        dropped(2, "container-to-node")?,
    );
    ensure!(
        after.0 > before.0 && after.1 > before.1,
        "the blocked connections were not counted: n1 {} -> {}, n2 {} -> {}",
        before.0,
        after.0,
        before.1,
        after.1
    );
    Ok(())
}

/// A container (with Docker's default `NET_RAW`) sends TCP SYNs and UDP
/// datagrams to a VIP from another task's address and port, that task's
/// open connection to the VIP included: each is dropped at its veth and
/// counted (`spoofed-source`); the victim's connection keeps echoing, and
/// the attacker's own packets are not judged spoofed.
#[test]
fn a_container_cannot_send_from_another_tasks_address() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&["network", "create", "-d", "overlay", "appnet"])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "echo",
        "--replicas",
        "2",
        "--network",
        "appnet",
        "shoal/echo:1",
    ])?;
    for name in ["victim", "attacker"] {
        cluster.shoal(&[
            "service",
            "create",
            "--name",
            name,
            "--network",
            "appnet",
            "--constraint",
            "node.hostname==n1",
            "shoal/toolbox",
        ])?;
    }
    for (name, n) in [("echo", 2), ("victim", 1), ("attacker", 1)] {
        wait_running(&cluster, name, n)?;
    }
    let vip = cluster.vip("echo")?;
    let (victim, attacker) = (container("victim")?, container("attacker")?);
    let victim_addr = match container_addrs(&victim)?.as_slice() {
        [one] => *one,
        other => bail!("the victim has addresses {other:?}, expected one"),
    };
    // The victim's connection to the VIP, opened in its namespace (the
    // socket stays there).
    let target = SocketAddrV4::new(vip, 7);
    let victim_ns = format!("/proc/{}/ns/net", pid_of(&victim)?);
    let mut stream = netns::run_in_path(&victim_ns, move || {
        TcpStream::connect_timeout(&target.into(), Duration::from_secs(5))
    })??;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    client::say(&mut stream, "hello").context("the victim's connection to the VIP")?;
    let victim_port = stream.local_addr()?.port();

    let before = dropped(1, "spoofed-source")?;
    let attacker_ns = format!("/proc/{}/ns/net", pid_of(&attacker)?);
    let raw = RawSender::open_path(&attacker_ns)?;
    const SPOOFED: u32 = 50;
    for i in 0..SPOOFED {
        // The victim's own connection first, then other ports.
        let port = if i == 0 {
            victim_port
        } else {
            20_000 + i as u16
        };
        let from = SocketAddrV4::new(victim_addr, port);
        raw.send(&packets::tcp_syn(from, target, 0x1000 + i))?;
        raw.send(&packets::udp(from, target, b"spoofed"))?;
    }
    // What the mesh does not read is judged too: IPv4 with options, a
    // fragment, another protocol, and an ARP reply that would tell the
    // attacker's neighbours the victim's address is at its MAC.
    let from = SocketAddrV4::new(victim_addr, victim_port);
    let rst = packets::tcp_rst(from, target, 1);
    for packet in [
        packets::with_ip_options(&rst),
        packets::as_later_fragment(&packets::udp(from, target, b"spoofed")),
        packets::icmp_echo(victim_addr, *target.ip(), 7),
    ] {
        raw.send(&packet)?;
    }
    let frames = packets::FrameSender::open_path(&attacker_ns, "eth0")?;
    let attacker_addr = match container_addrs(&attacker)?.as_slice() {
        [one] => *one,
        other => bail!("the attacker has addresses {other:?}, expected one"),
    };
    frames.send(&packets::arp_reply(
        packets::task_mac(attacker_addr),
        victim_addr,
        victim_addr,
    ))?;
    // Its own address from the victim's MAC (the bridge would move the
    // victim's entry to the attacker's port), and its own packet behind a
    // VLAN tag (which the kernel takes off before the veth's programs see
    // the packet) or two.
    let own = packets::udp(SocketAddrV4::new(attacker_addr, 40_000), target, b"tagged");
    for frame in [
        packets::ethernet(packets::task_mac(victim_addr), &[], 0x0800, &own),
        packets::ethernet(packets::task_mac(attacker_addr), &[0], 0x0800, &own),
        packets::ethernet(packets::task_mac(attacker_addr), &[0, 0], 0x0800, &own),
    ] {
        frames.send(&frame)?;
    }
    const NOT_READ_BY_THE_MESH: u32 = 7;
    // Counted as the host-side veth takes them in (the first may wait
    // for the VIP's neighbour entry in the attacker's namespace).
    let expected = before + u64::from(2 * SPOOFED + NOT_READ_BY_THE_MESH);
    let after = cluster.wait("the spoofed packets counted", WAIT, || {
        dropped(1, "spoofed-source").ok().filter(|n| *n >= expected)
    })?;
    ensure!(
        after - before == u64::from(2 * SPOOFED + NOT_READ_BY_THE_MESH),
        "{} spoofed packets sent, spoofed-source counted {} ({before} -> {after})",
        2 * SPOOFED + NOT_READ_BY_THE_MESH,
        after - before
    );
    client::say(&mut stream, "still mine").context("the victim's connection after the spoofing")?;
    // The attacker's own packets pass: it reaches the VIP itself.
    ensure!(
        connects(&attacker, &target.to_string())?,
        "the attacker could not reach {target} from its own address: the guard blocks too much"
    );
    ensure!(
        dropped(1, "spoofed-source")? == after,
        "the attacker's own connection was counted as spoofed"
    );
    Ok(())
}
