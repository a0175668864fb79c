//! `--publish …,proxy-protocol=v2` (issue 16, point 1): every connection to
//! such a port, entering at any node, reaches a task through the agent's
//! relay with a PROXY protocol v2 header first (read strictly by the echo
//! and by this test with `shoal_testbins::proxy`, not by Shoal's writer)
//! carrying the client's own address and port and the node's published
//! address and port; then the client's stream, both ways, half-close
//! included. A port without the option gets no header. A task failing
//! its health check gets no new relayed connection, and gets them again
//! once it passes. Real agents, real containers, the lab's client host.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use shoal_testbins::proxy;
use shoal_tests::{containers_of, get_in_container, lab_cluster::LabCluster, netns, topology};
use socket2::{Domain, Protocol, Socket, Type};

const WAIT: Duration = Duration::from_secs(60);
const NODES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(192, 0, 2, 11),
    Ipv4Addr::new(192, 0, 2, 12),
    Ipv4Addr::new(192, 0, 2, 13),
];

/// A connection from the lab's client host (192.0.2.100) to `to`.
fn connect(to: SocketAddrV4) -> Result<TcpStream> {
    let socket = netns::run_in(topology::CLIENT_NS, || -> std::io::Result<Socket> {
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
    })??;
    socket.connect_timeout(&SocketAddr::V4(to).into(), Duration::from_secs(3))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    Ok(stream)
}

fn local_port(stream: &TcpStream) -> Result<u16> {
    Ok(stream.local_addr()?.port())
}

/// `GET path` on a fresh connection: the client port it came from and
/// the body.
fn get(to: SocketAddrV4, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut stream = connect(to)?;
    let port = local_port(&stream)?;
    stream.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("GET {path} via {to}: no HTTP answer: {raw:?}"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path} via {to}: {head}"
    );
    Ok((port, raw[split + 4..].to_vec()))
}

/// The echo's identity line for a fresh `GET /` through `to`, checked: the
/// header carried this connection's client address and port and `to`.
fn proxied_identity(to: SocketAddrV4) -> Result<Value> {
    let (port, body) = get(to, "/")?;
    let v: Value = serde_json::from_slice(&body)
        .with_context(|| format!("not the echo's line: {}", String::from_utf8_lossy(&body)))?;
    let client = SocketAddrV4::new(topology::CLIENT_ADDR, port);
    ensure!(
        v["proxy_source"] == client.to_string(),
        "via {to}: the header said the client was {}, not {client}: {v}",
        v["proxy_source"]
    );
    ensure!(
        v["proxy_destination"] == to.to_string(),
        "via {to}: the header said the destination was {}: {v}",
        v["proxy_destination"]
    );
    // The task's peer is the relay (the node's ingress address).
    ensure!(
        v["client"]
            .as_str()
            .is_some_and(|c| !c.starts_with("192.0.2.")),
        "via {to}: the task's peer was {}, not a relay on the ingress network",
        v["client"]
    );
    Ok(v)
}

fn running(cluster: &LabCluster, service: &str, healthy: bool) -> usize {
    cluster
        .json_rows(&["service", "ps", service])
        .map(|rows| {
            rows.iter()
                .filter(|r| r["DesiredState"] == "Running")
                .filter(|r| {
                    r["CurrentState"].as_str().is_some_and(|s| {
                        s.starts_with("Running") && (!healthy || s.ends_with("(healthy)"))
                    })
                })
                .count()
        })
        .unwrap_or(0)
}

/// The tasks `count` fresh connections through each node reached.
fn tasks_reached(port: u16, count: usize) -> Result<BTreeSet<String>> {
    let mut tasks = BTreeSet::new();
    for node in NODES {
        for _ in 0..count {
            let to = SocketAddrV4::new(node, port);
            let v = proxied_identity(to).with_context(|| format!("GET / via {to}"))?;
            tasks.insert(v["task"].as_str().unwrap_or_default().to_owned());
        }
    }
    Ok(tasks)
}

/// Sends `data` on `stream` from another thread while reading everything
/// the other side sends until it closes; closes the sending side once
/// `data` is out (a half-close: the answer still comes).
fn exchange(stream: TcpStream, data: Vec<u8>) -> Result<Vec<u8>> {
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(&data)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut reader = stream;
    let mut got = Vec::new();
    reader.read_to_end(&mut got)?;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sending thread panicked"))??;
    Ok(got)
}

#[test]
fn every_entry_node_relays_with_the_clients_address_in_a_proxy_v2_header() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    // 8088: HTTP with the header; 8089: the echo's TCP echo (port 7) with
    // the header, which it echoes back like any byte; 8087: the same echo
    // port without the option.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "proxied",
        "--replicas",
        "3",
        "--env",
        "ECHO_PROXY_PROTOCOL=v2",
        "--publish",
        "published=8088,target=80,proxy-protocol=v2",
        "--publish",
        "published=8089,target=7,proxy-protocol=v2",
        "--publish",
        "8087:7",
        "shoal/echo:1",
    ])?;
    cluster.wait("3 running tasks", WAIT, || {
        (running(&cluster, "proxied", false) == 3).then_some(())
    })?;
    let inspect = cluster.shoal(&["service", "inspect", "proxied"])?;
    let shown: Value = serde_json::from_str(&inspect)?;
    let ports = shown[0]["Endpoint"]["Ports"]
        .as_array()
        .with_context(|| format!("no Endpoint.Ports in {inspect}"))?;
    for p in ports {
        let expected = if p["PublishedPort"] == 8087 {
            Value::Null
        } else {
            Value::from("v2")
        };
        ensure!(
            p["ProxyProtocol"] == expected,
            "service inspect shows port {p} (expected ProxyProtocol {expected})"
        );
    }
    cluster.wait("every node to relay to all 3 tasks", WAIT, || {
        (tasks_reached(8088, 3).ok()?.len() == 3).then_some(())
    })?;

    for node in NODES {
        // 12 fresh connections: each header names its own client port.
        let mut tasks = BTreeSet::new();
        for _ in 0..12 {
            let v = proxied_identity(SocketAddrV4::new(node, 8088))?;
            tasks.insert(v["task"].as_str().unwrap_or_default().to_owned());
        }
        ensure!(
            tasks.len() == 3,
            "12 connections via {node}:8088 reached {tasks:?}, not all 3 tasks"
        );

        // 4 MB each way through the echo port: the header first, then
        // exactly what was sent, after the client's half-close.
        let to = SocketAddrV4::new(node, 8089);
        let stream = connect(to)?;
        let port = local_port(&stream)?;
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let got = exchange(stream, data.clone())?;
        let mut cursor = std::io::Cursor::new(&got);
        let header = proxy::read_v2(&mut cursor)
            .with_context(|| format!("via {to}: the echoed stream did not start with a header"))?;
        ensure!(
            header.source == SocketAddrV4::new(topology::CLIENT_ADDR, port)
                && header.destination == to,
            "via {to}: the header said {header:?}, the client was port {port}"
        );
        let rest = &got[cursor.position() as usize..];
        ensure!(
            rest.len() == data.len() && rest == data.as_slice(),
            "via {to}: {} bytes came back after the header, {} sent (or they differ)",
            rest.len(),
            data.len()
        );

        // A 4 MB answer to a GET, intact.
        let (_, body) = get(SocketAddrV4::new(node, 8088), "/bytes/4000000")?;
        ensure!(
            body.len() == 4_000_000 && body.iter().all(|b| *b == b'x'),
            "via {node}:8088: a 4 MB answer came as {} bytes",
            body.len()
        );

        // Without the option: no header, the bytes alone.
        let got = exchange(connect(SocketAddrV4::new(node, 8087))?, b"hello".to_vec())?;
        ensure!(
            got == b"hello",
            "via {node}:8087 (no proxy-protocol) the echo sent back {:?}",
            String::from_utf8_lossy(&got)
        );
        println!(
            "{node}: 12 relayed connections over 3 tasks with the client's address and port, \
             4 MB both ways after the header, no header on 8087"
        );
    }
    Ok(())
}

#[test]
fn a_task_failing_its_health_check_gets_no_new_relayed_connection() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "checked",
        "--replicas",
        "3",
        "--env",
        "ECHO_PROXY_PROTOCOL=v2",
        "--publish",
        "published=8078,target=80,proxy-protocol=v2",
        "--health-cmd",
        r#"["CMD","/echo","healthcheck"]"#,
        "--health-interval",
        "1s",
        // Unhealthy for Docker (and replaced by the orchestrator) only
        // long after the mesh has taken it out.
        "--health-retries",
        "60",
        "shoal/echo:1",
    ])?;
    cluster.wait("3 healthy tasks", WAIT, || {
        (running(&cluster, "checked", true) == 3).then_some(())
    })?;
    cluster.wait("every node to relay to all 3 tasks", WAIT, || {
        (tasks_reached(8078, 3).ok()?.len() == 3).then_some(())
    })?;
    let container = containers_of("checked")?
        .into_iter()
        .next()
        .context("no container")?;
    // Its task's name, asked from inside (loopback needs no header).
    let (_, line) = get_in_container(&container, "/").context("GET / inside the task")?;
    let me: Value = serde_json::from_str(line.trim())?;
    let task = me["task"].as_str().context("no task name")?.to_owned();

    let (status, _) =
        get_in_container(&container, "/healthz/fail").context("GET /healthz/fail inside")?;
    ensure!(status == 200, "/healthz/fail answered {status}");
    cluster.wait(&format!("{task} to show unhealthy"), WAIT, || {
        let rows = cluster.json_rows(&["service", "ps", "checked"]).ok()?;
        rows.iter()
            .any(|r| {
                r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.ends_with("(unhealthy)"))
            })
            .then_some(())
    })?;
    // The agents read check results every 250 ms.
    std::thread::sleep(Duration::from_millis(500));
    let reached = tasks_reached(8078, 10).context("30 connections while a task fails")?;
    ensure!(
        !reached.contains(&task) && reached.len() == 2,
        "30 connections while {task} fails its check reached {reached:?}"
    );
    println!("{task} failing: 30 relayed connections reached only {reached:?}");

    let (status, _) =
        get_in_container(&container, "/healthz/pass").context("GET /healthz/pass inside")?;
    ensure!(status == 200, "/healthz/pass answered {status}");
    cluster.wait(
        &format!("{task} to get relayed connections again"),
        WAIT,
        || tasks_reached(8078, 3).ok()?.contains(&task).then_some(()),
    )?;
    Ok(())
}
