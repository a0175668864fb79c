//! Connections end in the mesh's tables too (issue 16, point 5), on real
//! agents, containers and eBPF, played from the lab's `shoal-client`:
//!
//! - once a client closes a connection (FIN both ways, or its RST), the
//!   connection's entries leave every node's tables within the linger
//!   (`--mesh-close-linger`, 2 s here) and two sweeps;
//! - an RST forged from the client's address with a sequence number out of
//!   the client's window neither removes a live connection's entries nor
//!   cuts it, and an idle connection (no FIN) stays as long as it likes;
//! - a connection of direct server return leaves the entry node's tables
//!   too, although the task's FIN never passes there.
//!
//! The tables are read with `shoal-agent datapath conntrack --json` on
//! each node.

use std::{
    io::Read,
    net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use shoal_tests::{client::say, lab_cluster::LabCluster, netns, packets, run_in_host, topology};

const WAIT: Duration = Duration::from_secs(30);
const LINGER: &str = "2s";
/// The linger and two sweeps (one a second at this linger) take about
/// 4 s; this test's own reads of three nodes' tables (a process in each
/// namespace per read) add seconds on a loaded machine (8.7 s was seen in
/// CI). Nothing but the sweeper removes an ended entry within a test's
/// time (the tables evict only when full), so any bound well under `WAIT`
/// shows the sweeper at work; the time taken is printed, not judged.
const GONE_WITHIN: Duration = Duration::from_secs(20);
const PORT: u16 = 8094;
/// The same echo, published with direct server return.
const DSR_PORT: u16 = 8095;

fn node_addr(n: usize) -> Ipv4Addr {
    topology::Host::node(n).addr
}

/// Node `n`'s tracked connections (both tables).
fn conntrack(n: usize) -> Result<Vec<Value>> {
    let host = topology::Host::node(n);
    let bpffs = shoal_lab::Lab::bpffs_root(&host).display().to_string();
    let out = run_in_host(
        &host.netns,
        "shoal-agent",
        &["--bpffs", &bpffs, "datapath", "conntrack", "--json"],
    )?;
    out.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("n{n}: not JSON: {l}")))
        .collect()
}

/// The entries, on every node, of the client's connection from `port`.
fn entries_of(port: u16) -> Result<Vec<(usize, Value)>> {
    let client = format!("{}:{port}", topology::CLIENT_ADDR);
    let mut out = Vec::new();
    for n in 1..=3 {
        for row in conntrack(n)? {
            if row["source"] == client.as_str() || row["destination"] == client.as_str() {
                out.push((n, row));
            }
        }
    }
    Ok(out)
}

fn has_flag(row: &Value, flag: &str) -> bool {
    row["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == flag))
}

/// A connection from the client to `node`'s published port, echoing once.
fn open(cluster: &LabCluster, node: usize) -> Result<TcpStream> {
    open_to(cluster, node, PORT)
}

/// A connection from the client to `node`'s port `port`, echoing once.
fn open_to(cluster: &LabCluster, node: usize, port: u16) -> Result<TcpStream> {
    let entry = SocketAddrV4::new(node_addr(node), port);
    let mut stream = cluster.wait(&format!("a connection through n{node}"), WAIT, || {
        netns::run_in(topology::CLIENT_NS, move || {
            TcpStream::connect_timeout(&entry.into(), Duration::from_secs(3))
        })
        .ok()?
        .ok()
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    say(&mut stream, "hello")?;
    Ok(stream)
}

fn local_port(stream: &TcpStream) -> Result<u16> {
    Ok(stream.local_addr()?.port())
}

/// Which nodes hold entries of the connection from `port`, at least `min`
/// on each of `nodes`.
fn ensure_tracked(port: u16, nodes: &[usize], what: &str) -> Result<Vec<(usize, Value)>> {
    let rows = entries_of(port)?;
    for n in nodes {
        ensure!(
            rows.iter().any(|(m, _)| m == n),
            "{what} (client port {port}): no entry on n{n}: {rows:?}"
        );
    }
    Ok(rows)
}

/// Closes gracefully: the client's FIN, the echo's FIN, the last ACK.
fn close(mut stream: TcpStream) -> Result<()> {
    stream.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .context("waiting for the echo to close its side")?;
    Ok(())
}

#[test]
fn closed_connections_leave_every_table_and_forged_resets_cut_nothing() -> Result<()> {
    let cluster = LabCluster::start_with_agent_args(1, &["--mesh-close-linger", LINGER])?;
    // The task runs on n1: connections entering at n2 and n3 cross the
    // mesh (entries on the entry node and on n1), those at n1 do not.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "closer",
        "--constraint",
        "node.hostname==n1",
        "--publish",
        &format!("{PORT}:7"),
        "shoal/echo:1",
    ])?;

    // Three connections that end: by FIN through n2 and through n1, by
    // the client's RST (SO_LINGER 0) through n3.
    let by_fin_remote = open(&cluster, 2)?;
    let by_fin_local = open(&cluster, 1)?;
    let by_rst = open(&cluster, 3)?;
    let ports = [
        local_port(&by_fin_remote)?,
        local_port(&by_fin_local)?,
        local_port(&by_rst)?,
    ];
    ensure_tracked(ports[0], &[1, 2], "through n2")?;
    ensure_tracked(ports[1], &[1], "through n1")?;
    ensure_tracked(ports[2], &[1, 3], "through n3")?;
    close(by_fin_remote)?;
    close(by_fin_local)?;
    socket2::SockRef::from(&by_rst).set_linger(Some(Duration::ZERO))?;
    drop(by_rst);
    let closed_at = Instant::now();
    // Ended, not gone yet: they linger.
    let lingering: Vec<_> = ports
        .iter()
        .map(|p| entries_of(*p))
        .collect::<Result<Vec<_>>>()?
        .concat();
    ensure!(
        !lingering.is_empty(),
        "entries went at once: retransmitted FINs would find none"
    );
    let gone_after = cluster.wait("the closed connections' entries to go", WAIT, || {
        let left: usize = ports
            .iter()
            .map(|p| entries_of(*p).map_or(1, |e| e.len()))
            .sum();
        (left == 0).then(|| closed_at.elapsed())
    })?;
    println!(
        "closed connections' entries ({} lingering at first) gone from every node after {gone_after:.1?}",
        lingering.len()
    );
    ensure!(
        gone_after <= GONE_WITHIN,
        "the closed connections' entries took {gone_after:.1?} to go (linger {LINGER}, allowed {GONE_WITHIN:?})"
    );

    // A live connection through n2, and an idle one through n3.
    let mut live = open(&cluster, 2)?;
    let mut idle = open(&cluster, 3)?;
    let live_port = local_port(&live)?;
    let idle_port = local_port(&idle)?;
    let rows = ensure_tracked(live_port, &[1, 2], "the live connection")?;
    let client = SocketAddrV4::new(topology::CLIENT_ADDR, live_port);
    let forward = rows
        .iter()
        .find(|(n, r)| *n == 2 && r["source"] == client.to_string().as_str())
        .context("no forward entry on n2")?;
    let seq = forward.1["client_seq"]
        .as_u64()
        .context("no client_seq in the forward entry")? as u32;
    // Forged RSTs from the client's address: far off its stream, and just
    // behind it (an old segment's number).
    let raw = packets::RawSender::open(topology::CLIENT_NS)?;
    let entry = SocketAddrV4::new(node_addr(2), PORT);
    for forged in [seq.wrapping_add(0x8000_0000), seq.wrapping_sub(1)] {
        raw.send(&packets::tcp_rst(client, entry, forged))?;
    }
    std::thread::sleep(GONE_WITHIN);
    let after = ensure_tracked(live_port, &[1, 2], "the live connection after forged RSTs")?;
    ensure!(
        !after.iter().any(|(_, r)| has_flag(r, "reset")),
        "a forged RST marked the live connection reset: {after:?}"
    );
    say(&mut live, "still here")
        .context("the live connection no longer works after forged RSTs")?;
    ensure_tracked(idle_port, &[1, 3], "the idle connection")?;
    say(&mut idle, "after a silence").context("the idle connection no longer works")?;
    println!(
        "forged RSTs (seq {} and {}) cut nothing; the idle connection outlived linger and sweeps",
        seq.wrapping_add(0x8000_0000),
        seq.wrapping_sub(1)
    );

    // Direct server return through n3: the echo on n1 answers the client
    // itself, so n3 sees the client's FIN and never the echo's.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "closer-dsr",
        "--constraint",
        "node.hostname==n1",
        "--publish",
        &format!("published={DSR_PORT},target=7,dsr=true"),
        "shoal/echo:1",
    ])?;
    let direct = open_to(&cluster, 3, DSR_PORT)?;
    let direct_port = local_port(&direct)?;
    let rows = ensure_tracked(direct_port, &[1, 3], "direct server return through n3")?;
    ensure!(
        rows.iter().any(|(n, r)| *n == 3 && has_flag(r, "dsr")),
        "n3's entries of the direct connection are not marked dsr: {rows:?}"
    );
    close(direct)?;
    let closed_at = Instant::now();
    // (Before 2026-12-03 n3's entries stayed until its table was full.)
    let gone_after = cluster.wait("the direct connection's entries to go", WAIT, || {
        let left = entries_of(direct_port).map_or(1, |e| e.len());
        (left == 0).then(|| closed_at.elapsed())
    })?;
    println!("the closed direct connection's entries gone from every node after {gone_after:.1?}");
    ensure!(
        gone_after <= GONE_WITHIN,
        "the direct connection's entries took {gone_after:.1?} to go (linger {LINGER}, allowed {GONE_WITHIN:?})"
    );
    Ok(())
}
