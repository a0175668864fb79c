//! How the mesh picks a task, on real agents and containers with a real
//! client in the lab's `shoal-client` host:
//! - `--lb maglev`: the same flow (client address and port) reaches the
//!   same task whichever node it enters at, TCP and UDP; when one task of
//!   five goes, the share of 10,000 flows that change task stays under
//!   1.2/5 (measured entering at a node that saw none of them before).
//! - `--endpoint-affinity client-ip:3s`: every connection of a client
//!   reaches one task from every node, keeps reaching it while the backend
//!   set changes (as long as it comes back within 3 s), and may move once
//!   it stayed away longer.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use shoal_tests::{cmd, lab_cluster::LabCluster, netns, topology};

const WAIT: Duration = Duration::from_secs(60);
const NODES: [&str; 3] = ["192.0.2.11", "192.0.2.12", "192.0.2.13"];

/// The task named in a `shoal/echo` identity line.
fn task_of(reply: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(reply).ok()?;
    let start = text.find('{')?;
    let json: serde_json::Value = serde_json::from_str(text[start..].trim()).ok()?;
    json["task"].as_str().map(str::to_owned)
}

/// `whoami` over UDP from each `(client address, client port)` to `to`,
/// from the client host, 500 at a time; the task that answered each
/// (`None`: no answer after two tries).
fn udp_whoami(flows: &[(Ipv4Addr, u16)], to: SocketAddr) -> Result<Vec<Option<String>>> {
    let flows = flows.to_vec();
    netns::run_in(
        topology::CLIENT_NS,
        move || -> Result<Vec<Option<String>>> {
            let mut out = Vec::with_capacity(flows.len());
            if let Some((addr, port)) = flows.iter().find(|(_, p)| !is_fixed_client_port(*p)) {
                bail!(
                    "{addr}:{port}: a fixed client port must stay below the kernel's ephemeral range"
                );
            }
            for batch in flows.chunks(500) {
                let sockets: Vec<UdpSocket> = batch
                    .iter()
                    .map(|(addr, port)| {
                        let s: UdpSocket =
                            bind_reusable(socket2::Type::DGRAM, SocketAddrV4::new(*addr, *port))
                                .with_context(|| format!("binding {addr}:{port}"))?
                                .into();
                        s.set_read_timeout(Some(Duration::from_millis(500)))?;
                        Ok(s)
                    })
                    .collect::<Result<_>>()?;
                let mut answers: Vec<Option<String>> = vec![None; sockets.len()];
                for _try in 0..2 {
                    for (s, answer) in sockets.iter().zip(&answers) {
                        if answer.is_none() {
                            s.send_to(b"whoami", to)?;
                        }
                    }
                    let mut buf = [0u8; 2048];
                    for (s, answer) in sockets.iter().zip(answers.iter_mut()) {
                        if answer.is_none()
                            && let Ok((n, _)) = s.recv_from(&mut buf)
                        {
                            *answer = task_of(&buf[..n]);
                        }
                    }
                }
                out.extend(answers);
            }
            Ok(out)
        },
    )?
}

/// A socket of `kind` bound to `addr` with `SO_REUSEADDR`. The same flows
/// are asked of each node in turn, so a port is bound again as soon as the
/// socket before it is dropped; a process another thread of the test
/// spawns at that moment (a `shoal` command) holds a copy of every open
/// descriptor until it execs, and the dropped socket with it: without the
/// option, that instant's bind fails with "address in use".
fn bind_reusable(kind: socket2::Type, addr: SocketAddrV4) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, kind, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from(addr).into())?;
    Ok(socket)
}

/// `GET /` over TCP from `client:port` to `to`: the task that answered.
fn tcp_whoami(client: Ipv4Addr, port: u16, to: SocketAddr) -> Result<String> {
    ensure!(
        is_fixed_client_port(port),
        "{client}:{port}: a fixed client port must stay below the kernel's ephemeral range"
    );
    netns::run_in(topology::CLIENT_NS, move || -> Result<String> {
        let socket = bind_reusable(socket2::Type::STREAM, SocketAddrV4::new(client, port))?;
        socket.connect_timeout(&to.into(), Duration::from_secs(3))?;
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply)?;
        task_of(&reply).with_context(|| {
            format!(
                "no task in the answer to {client}:{port} -> {to}: {}",
                String::from_utf8_lossy(&reply)
            )
        })
    })?
}

/// Whether a test may bind `port` on the client host: below the kernel's
/// ephemeral range there, so no other socket can hold it already.
fn is_fixed_client_port(port: u16) -> bool {
    port < topology::CLIENT_EPHEMERAL_PORTS_START
}

fn at(node: &str, port: u16) -> SocketAddr {
    format!("{node}:{port}").parse().expect("address")
}

/// Waits until `port` on every node answers UDP from exactly `tasks`
/// tasks (the nodes' tables follow the manager's pushes).
fn wait_balanced(cluster: &LabCluster, port: u16, tasks: usize) -> Result<()> {
    let probe: Vec<(Ipv4Addr, u16)> = (0..100)
        .map(|i| (topology::CLIENT_ADDR, 40_000 + i))
        .collect();
    let mut round = 0u16;
    for node in NODES {
        cluster.wait(&format!("{node}:{port} over {tasks} tasks"), WAIT, || {
            round = (round + 1) % 90;
            // Fresh ports each time: a tracked flow keeps its task.
            let flows: Vec<_> = probe.iter().map(|(a, p)| (*a, p + 100 * round)).collect();
            let got = udp_whoami(&flows, at(node, port)).ok()?;
            let distinct: std::collections::BTreeSet<_> = got.iter().flatten().collect();
            (distinct.len() == tasks && got.iter().all(Option::is_some)).then_some(())
        })?;
    }
    Ok(())
}

#[test]
fn maglev_picks_the_same_task_from_every_node_and_moves_few_flows_when_one_goes() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "mg",
        "--replicas",
        "5",
        "--lb",
        "maglev",
        "--publish",
        "8091:80/udp",
        "--publish",
        "8092:80",
        "shoal/echo:1",
    ])?;
    cluster.wait("5 running mg tasks", WAIT, || {
        (cluster.running_tasks("mg") == 5).then_some(())
    })?;
    let inspect: serde_json::Value =
        serde_json::from_str(&cluster.shoal(&["service", "inspect", "mg"])?)?;
    ensure!(
        inspect[0]["Spec"]["EndpointSpec"]["LB"] == "maglev",
        "service inspect: {}",
        inspect[0]["Spec"]["EndpointSpec"]
    );
    wait_balanced(&cluster, 8091, 5)?;

    // TCP: one connection per client port through each node, same task.
    for port in [31_001u16, 31_002, 31_003, 31_004, 31_005, 31_006] {
        let tasks: Vec<String> = NODES
            .iter()
            .map(|node| tcp_whoami(topology::CLIENT_ADDR, port, at(node, 8092)))
            .collect::<Result<_>>()?;
        ensure!(
            tasks.iter().all(|t| *t == tasks[0]),
            "TCP from port {port} through the three nodes reached {tasks:?}"
        );
    }

    // UDP: 10,000 flows through n1, then the same flows through n2.
    let flows: Vec<(Ipv4Addr, u16)> = (0..10_000u16)
        .map(|i| (topology::CLIENT_ADDR, 20_000 + i))
        .collect();
    let first = udp_whoami(&flows, at(NODES[0], 8091))?;
    let second = udp_whoami(&flows, at(NODES[1], 8091))?;
    let answered = first.iter().filter(|t| t.is_some()).count();
    ensure!(
        answered >= 9_990,
        "only {answered} of 10,000 flows answered via n1"
    );
    let differ = first
        .iter()
        .zip(&second)
        .filter(|(a, b)| a.is_some() && b.is_some() && a != b)
        .count();
    ensure!(
        differ == 0,
        "{differ} of 10,000 flows reached another task via n2"
    );
    let mut share: BTreeMap<&str, usize> = BTreeMap::new();
    for task in first.iter().flatten() {
        *share.entry(task).or_default() += 1;
    }
    println!("10,000 flows over 5 tasks: {share:?}");
    ensure!(
        share.values().all(|n| (1_700..=2_300).contains(n)),
        "unbalanced: {share:?}"
    );

    // One task of five goes; the flows enter at n3, which saw none of
    // them (no connection entry keeps any of them where it was).
    cluster.shoal(&["service", "scale", "mg=4"])?;
    cluster.wait("4 running mg tasks", WAIT, || {
        (cluster.running_tasks("mg") == 4).then_some(())
    })?;
    wait_balanced(&cluster, 8091, 4)?;
    let third = udp_whoami(&flows, at(NODES[2], 8091))?;
    let compared = first
        .iter()
        .zip(&third)
        .filter(|(a, b)| a.is_some() && b.is_some())
        .count();
    let moved = first
        .iter()
        .zip(&third)
        .filter(|(a, b)| a.is_some() && b.is_some() && a != b)
        .count();
    ensure!(
        compared >= 9_980,
        "only {compared} flows answered both times"
    );
    let moved_share = moved as f64 / compared as f64;
    println!(
        "scale 5 -> 4: {moved} of {compared} flows changed task ({:.1}%, limit {:.1}%)",
        moved_share * 100.0,
        120.0 / 5.0
    );
    ensure!(
        moved_share <= 1.2 / 5.0,
        "{moved} of {compared} flows moved"
    );
    Ok(())
}

/// Extra client addresses on the client host (the lab writes neighbour
/// entries ahead of time, no ARP): removed again when dropped.
struct ExtraClients(Vec<Ipv4Addr>);

impl ExtraClients {
    fn add(count: u8) -> Result<Self> {
        let addrs: Vec<Ipv4Addr> = (0..count)
            .map(|i| Ipv4Addr::new(192, 0, 2, 120 + i))
            .collect();
        let mac = topology::Host::client().mac();
        let extra = Self(addrs.clone());
        for addr in &addrs {
            let cidr = format!("{addr}/{}", topology::PREFIX_LEN);
            cmd::run(
                "ip",
                &[
                    "netns",
                    "exec",
                    topology::CLIENT_NS,
                    "ip",
                    "addr",
                    "replace",
                    &cidr,
                    "dev",
                    "eth0",
                ],
            )?;
            for n in 1..=NODES.len() {
                let ns = topology::Host::node(n).netns;
                cmd::run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &ns,
                        "ip",
                        "neigh",
                        "replace",
                        &addr.to_string(),
                        "lladdr",
                        &mac,
                        "dev",
                        "eth0",
                        "nud",
                        "permanent",
                    ],
                )?;
            }
        }
        Ok(extra)
    }
}

impl Drop for ExtraClients {
    fn drop(&mut self) {
        for addr in &self.0 {
            let cidr = format!("{addr}/{}", topology::PREFIX_LEN);
            let _ = cmd::run(
                "ip",
                &[
                    "netns",
                    "exec",
                    topology::CLIENT_NS,
                    "ip",
                    "addr",
                    "del",
                    &cidr,
                    "dev",
                    "eth0",
                ],
            );
        }
    }
}

/// One `whoami` per client through each node, from a port of its own
/// for each round (1 to 799; each round's flows are new to every node;
/// 8,000 + 50 × round + client stays below the ephemeral range):
/// the task each (client, node) reached. Clients do not share a source
/// port: connections of several clients to one task through one node
/// need distinct ports on the node's ingress address, and the mesh tries
/// only a few others when the client's own is taken.
fn affinity_round(
    clients: &[Ipv4Addr],
    port: u16,
    round: u16,
) -> Result<BTreeMap<(Ipv4Addr, &'static str), Option<String>>> {
    let mut out = BTreeMap::new();
    for node in NODES {
        let flows: Vec<(Ipv4Addr, u16)> = clients
            .iter()
            .zip(0u16..)
            .map(|(c, i)| (*c, 8_000 + round * 50 + i))
            .collect();
        for (c, task) in clients.iter().zip(udp_whoami(&flows, at(node, port))?) {
            out.insert((*c, node), task);
        }
    }
    Ok(out)
}

#[test]
fn client_ip_affinity_holds_across_nodes_and_backend_changes_then_expires() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let clients = ExtraClients::add(40)?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "sticky",
        "--replicas",
        "4",
        "--endpoint-affinity",
        "client-ip:3s",
        "--publish",
        "8093:80/udp",
        "--publish",
        "8094:80",
        "shoal/echo:1",
    ])?;
    cluster.wait("4 running sticky tasks", WAIT, || {
        (cluster.running_tasks("sticky") == 4).then_some(())
    })?;
    let inspect: serde_json::Value =
        serde_json::from_str(&cluster.shoal(&["service", "inspect", "sticky"])?)?;
    let affinity = &inspect[0]["Spec"]["EndpointSpec"]["Affinity"];
    ensure!(
        affinity["Mode"] == "client-ip" && affinity["Timeout"] == 3_000_000_000u64,
        "service inspect: {affinity}"
    );
    // Every node has the tables once every client's connections through
    // every node answer and agree: a node that has 3 of the 4 tasks yet
    // answers every client too, but picks from 3 (and keeps the pick while
    // the client comes back). Picks that disagree are let expire (3 s idle)
    // before the next round.
    let mut round = 0u16;
    let mut last = String::new();
    let before = cluster.wait("every node to answer every client", WAIT, || {
        round = (round + 1).min(399);
        let got = match affinity_round(&clients.0, 8093, round) {
            Ok(got) => got,
            Err(e) => {
                last = format!("{e:#}");
                return None;
            }
        };
        let silent: Vec<_> = got
            .iter()
            .filter(|(_, t)| t.is_none())
            .map(|(k, _)| *k)
            .collect();
        let mut first: BTreeMap<Ipv4Addr, &Option<String>> = BTreeMap::new();
        let disagree: Vec<Ipv4Addr> = got
            .iter()
            .filter(|((client, _), task)| *first.entry(*client).or_insert(task) != *task)
            .map(|((client, _), _)| *client)
            .collect();
        last = format!(
            "{} of {} silent: {:?}; clients whose nodes disagree: {:?}",
            silent.len(),
            got.len(),
            &silent[..silent.len().min(6)],
            &disagree[..disagree.len().min(6)]
        );
        if silent.is_empty() && !disagree.is_empty() {
            std::thread::sleep(Duration::from_millis(3_500));
        }
        (silent.is_empty() && disagree.is_empty()).then_some(got)
    });
    let before = before.with_context(|| format!("last round: {last}"))?;
    let mut task_of_client: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for ((client, node), task) in &before {
        let task = task.clone().context("answered")?;
        let first = task_of_client
            .entry(*client)
            .or_insert_with(|| task.clone());
        ensure!(
            *first == task,
            "{client} reached {first} and, through {node}, {task}"
        );
    }
    let spread: std::collections::BTreeSet<&String> = task_of_client.values().collect();
    ensure!(spread.len() > 1, "40 clients all on one task: {spread:?}");
    // TCP too: the same task as the client's UDP flows, from every node.
    let client = clients.0[0];
    for (i, node) in NODES.iter().enumerate() {
        let task = tcp_whoami(client, 32_000 + i as u16, at(node, 8094))?;
        ensure!(
            task == task_of_client[&client],
            "TCP from {client} through {node} reached {task}, UDP {}",
            task_of_client[&client]
        );
    }

    // The backend set changes while every client keeps coming back (well
    // within 3 s) through every node: nobody moves.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let refresher = {
        let (stop, seen, addrs) = (stop.clone(), seen.clone(), clients.0.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut round = 400u16;
            while !stop.load(Ordering::Relaxed) {
                round = (round + 1).min(798);
                let got = affinity_round(&addrs, 8093, round)?;
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(got);
                std::thread::sleep(Duration::from_millis(300));
            }
            Ok(())
        })
    };
    let scaled = (|| -> Result<()> {
        cluster.shoal(&["service", "scale", "sticky=5"])?;
        cluster.wait("5 running sticky tasks", WAIT, || {
            (cluster.running_tasks("sticky") == 5).then_some(())
        })?;
        // The new task is in every node's table once a client never seen
        // before can reach it (a fresh address has no affinity entry).
        std::thread::sleep(Duration::from_secs(4));
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    refresher
        .join()
        .map_err(|_| anyhow::anyhow!("the refresher panicked"))??;
    scaled?;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    ensure!(seen.len() >= 10, "only {} refresh rounds", seen.len());
    for got in seen.iter() {
        for ((client, node), task) in got {
            if let Some(task) = task {
                ensure!(
                    *task == task_of_client[client],
                    "{client} moved from {} to {task} through {node} while it kept coming back",
                    task_of_client[client]
                );
            }
        }
    }
    println!(
        "{} rounds of 40 clients x 3 nodes during scale 4 -> 5: nobody moved",
        seen.len()
    );

    // Idle longer than the timeout: each client gets the table's pick for
    // the new set, the same from every node; about 1/5 of them move.
    std::thread::sleep(Duration::from_secs(4));
    let after = affinity_round(&clients.0, 8093, 799)?;
    let mut moved = 0;
    for client in &clients.0 {
        let tasks: Vec<&Option<String>> = NODES.iter().map(|n| &after[&(*client, *n)]).collect();
        let Some(Some(task)) = tasks.first() else {
            bail!("{client} got no answer after the timeout");
        };
        ensure!(
            tasks.iter().all(|t| t.as_ref() == Some(task)),
            "{client} after the timeout: {tasks:?}"
        );
        if *task != task_of_client[client] {
            moved += 1;
        }
    }
    println!("after 4 s idle (timeout 3 s): {moved} of 40 clients moved");
    ensure!(
        moved > 0,
        "no client moved after its affinity expired: the set change went unnoticed"
    );
    Ok(())
}
