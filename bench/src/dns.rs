//! `dns`: Shoal's DNS server against dnsmasq serving the same records, on
//! the same lab node, in the same run, with the same query mix (service
//! names, `tasks.*` names, unknown names), driven by dnsperf from the lab's
//! client host. Throughput at full load, then latency at the same offered
//! load for both (p50/p99 from dnsperf's per-query report).

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use shoal_agent::dns::{DnsServer, Records};
use shoal_api::pb::{AssignmentSet, Meta, ServiceRecord, Task, TaskEndpoint};
use shoal_lab::{Lab, cmd, netns, topology};

#[derive(clap::Args)]
pub struct Args {
    /// Services, each with a VIP and `tasks.NAME`.
    #[arg(long, default_value_t = 150)]
    services: usize,
    #[arg(long, default_value_t = 3)]
    tasks_per_service: usize,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// dnsperf clients (sockets) and queries outstanding.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    #[arg(long, default_value_t = 200)]
    outstanding: usize,
    /// Offered load for the latency runs (queries/s, the same for both).
    #[arg(long, default_value_t = 20_000)]
    latency_qps: u64,
    /// Datagrams Shoal's server takes per `recvmmsg` (1: a call per query).
    #[arg(long, default_value_t = shoal_agent::dns::MAX_UDP_BATCH)]
    udp_batch: usize,
    /// UDP sockets for Shoal's server: 1 is shared by a loop per core; more
    /// are a SO_REUSEPORT group, a loop each.
    #[arg(long, default_value_t = 1)]
    udp_sockets: usize,
}

const NODE_NS: &str = "shoal-n1";
const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const SHOAL_PORT: u16 = 5301;
const DNSMASQ_PORT: u16 = 5302;
const NETWORK: &str = "bench-net";

fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (i as u32) * 8 + 1)
}

fn task_addr(i: usize, t: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(vip(i)) + 1 + t as u32)
}

/// The records both servers serve: as the manager would push them. The
/// server answers only the node's own tasks: dnsperf's host plays one.
fn assignments(args: &Args) -> AssignmentSet {
    let mut set = AssignmentSet::default();
    set.tasks.push(Task {
        meta: Some(Meta {
            id: "dnsperf".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    set.endpoints.push(TaskEndpoint {
        network_id: NETWORK.into(),
        task_id: "dnsperf".into(),
        service_id: String::new(),
        addr: topology::CLIENT_ADDR.to_string(),
        node_addr: NODE_ADDR.to_string(),
        running: true,
        draining: false,
    });
    for i in 0..args.services {
        set.services.push(ServiceRecord {
            service_id: format!("s{i}"),
            network_id: NETWORK.into(),
            names: vec![format!("svc{i}")],
            vip: vip(i).to_string(),
        });
        for t in 0..args.tasks_per_service {
            set.endpoints.push(TaskEndpoint {
                network_id: NETWORK.into(),
                task_id: format!("t{i}.{t}"),
                service_id: format!("s{i}"),
                addr: task_addr(i, t).to_string(),
                node_addr: NODE_ADDR.to_string(),
                running: true,
                draining: false,
            });
        }
    }
    set
}

/// dnsmasq's hosts file for the same names.
fn hosts_file(args: &Args) -> String {
    let mut out = String::new();
    for i in 0..args.services {
        let _ = writeln!(out, "{} svc{i}", vip(i));
        for t in 0..args.tasks_per_service {
            let _ = writeln!(out, "{} tasks.svc{i}", task_addr(i, t));
        }
    }
    out
}

/// One third service names, one third `tasks.*`, one third unknown names.
fn queries(args: &Args) -> String {
    let mut out = String::new();
    for i in 0..args.services {
        let _ = writeln!(out, "svc{i} A");
        let _ = writeln!(out, "tasks.svc{i} A");
        let _ = writeln!(out, "nosuch{i} A");
    }
    out
}

struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_dnsmasq(hosts: &Path) -> Result<Dnsmasq> {
    let child = cmd::in_netns(NODE_NS, "dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            // Bare names are never forwarded: unknown ones are NXDOMAIN, as Shoal's.
            "--domain-needed",
            "--bind-interfaces",
            "--pid-file=",
            "--user=root",
            "--local-ttl=1",
            "--cache-size=10000",
        ])
        .arg(format!("--addn-hosts={}", hosts.display()))
        .arg(format!("--listen-address={NODE_ADDR}"))
        .arg(format!("--port={DNSMASQ_PORT}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dnsmasq (cargo xtask setup installs it)")?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(Dnsmasq(child))
}

/// dnsperf from the client host; returns its stdout.
fn dnsperf(port: u16, file: &Path, extra: &[String]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", topology::CLIENT_NS, "dnsperf", "-s"])
        .arg(NODE_ADDR.to_string())
        .arg("-p")
        .arg(port.to_string())
        .arg("-d")
        .arg(file)
        .args(extra)
        .output()
        .context("running dnsperf (cargo xtask setup installs it)")?;
    ensure!(
        out.status.success(),
        "dnsperf failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn field(report: &str, name: &str) -> Result<f64> {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {name:?} in dnsperf's report:\n{report}"))
}

/// Response codes, as dnsperf counts them (same mix, same answers).
fn codes(report: &str) -> String {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Response codes:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// p50 and p99 of dnsperf's per-query latencies (`-v`), in microseconds.
fn percentiles(report: &str) -> Result<(f64, f64, usize)> {
    let mut lat: Vec<f64> = report
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .collect();
    if lat.is_empty() {
        bail!("dnsperf reported no query");
    }
    lat.sort_by(f64::total_cmp);
    let at = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] * 1e6;
    Ok((at(0.50), at(0.99), lat.len()))
}

pub async fn run(args: Args) -> Result<()> {
    let lab = Lab::new();
    lab.up(3, &mut |_| {})?;
    let dir = tempfile::tempdir()?;
    let hosts = dir.path().join("hosts");
    let query_file = dir.path().join("queries");
    std::fs::write(&hosts, hosts_file(&args))?;
    std::fs::write(&query_file, queries(&args))?;

    let server = DnsServer::with_udp_batch(Vec::new(), args.udp_batch);
    server.update(Records::from_assignments(&assignments(&args)));
    let at = SocketAddrV4::new(NODE_ADDR, SHOAL_PORT);
    let group = args.udp_sockets;
    let (sockets, tcp) = netns::run_in(NODE_NS, move || {
        Ok::<_, std::io::Error>((
            shoal_agent::dns::bind_udp_group(at, group)?,
            std::net::TcpListener::bind(at)?,
        ))
    })??;
    server.listen_sockets(NETWORK, sockets, tcp)?;
    let _dnsmasq = start_dnsmasq(&hosts)?;

    println!(
        "dns: {} services x {} tasks; query mix: svcN, tasks.svcN, nosuchN ({} names); \
         dnsperf -c {} -q {} from {}; both servers on {NODE_NS}; shoal's UDP batch {}, sockets {}",
        args.services,
        args.tasks_per_service,
        args.services * 3,
        args.clients,
        args.outstanding,
        topology::CLIENT_NS,
        args.udp_batch,
        args.udp_sockets
    );
    // The same answers first: one pass over the mix, response codes equal.
    let once = ["-n".to_owned(), "1".to_owned()];
    let (shoal_codes, dnsmasq_codes) = (
        codes(&dnsperf(SHOAL_PORT, &query_file, &once)?),
        codes(&dnsperf(DNSMASQ_PORT, &query_file, &once)?),
    );
    println!("response codes: shoal [{shoal_codes}], dnsmasq [{dnsmasq_codes}]");
    ensure!(
        shoal_codes == dnsmasq_codes,
        "the two servers answer the mix differently"
    );

    let load = [
        "-c".to_owned(),
        args.clients.to_string(),
        "-q".to_owned(),
        args.outstanding.to_string(),
        "-l".to_owned(),
        args.seconds.to_string(),
    ];
    // Alternating runs, best of two each: the machine's noise hits both.
    let mut best = [(0.0f64, 0.0f64); 2];
    for _round in 0..2 {
        for (i, port) in [SHOAL_PORT, DNSMASQ_PORT].into_iter().enumerate() {
            let report = dnsperf(port, &query_file, &load)?;
            let qps = field(&report, "Queries per second:")?;
            let lost = field(&report, "Queries lost:")?;
            if qps > best[i].0 {
                best[i] = (qps, lost);
            }
        }
    }
    let paced = [
        "-c".to_owned(),
        args.clients.to_string(),
        "-Q".to_owned(),
        args.latency_qps.to_string(),
        "-l".to_owned(),
        "5".to_owned(),
        "-v".to_owned(),
    ];
    let shoal_lat = percentiles(&dnsperf(SHOAL_PORT, &query_file, &paced)?)?;
    let dnsmasq_lat = percentiles(&dnsperf(DNSMASQ_PORT, &query_file, &paced)?)?;

    println!(
        "\n{:<10} {:>14} {:>8} {:>14} {:>14}",
        "server", "queries/s", "lost", "p50 (us)", "p99 (us)"
    );
    println!("{}", "-".repeat(64));
    for (name, (qps, lost), (p50, p99, _)) in [
        ("shoal", best[0], shoal_lat),
        ("dnsmasq", best[1], dnsmasq_lat),
    ] {
        println!("{name:<10} {qps:>14.0} {lost:>8.0} {p50:>14.0} {p99:>14.0}");
    }
    println!(
        "\nshoal / dnsmasq: queries/s {:.2}x, p99 at {} q/s {:.2}x (lower is better; {} and {} queries timed)",
        best[0].0 / best[1].0,
        args.latency_qps,
        shoal_lat.1 / dnsmasq_lat.1,
        shoal_lat.2,
        dnsmasq_lat.2,
    );
    println!("target: shoal >= 1.5x dnsmasq on queries/s, p99 no higher");
    Ok(())
}
