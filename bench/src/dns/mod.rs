//! `dns`: Shoal's DNS server against dnsmasq serving the same records, on
//! the same lab node, in the same run, with the same query mix (service
//! names, `tasks.*` names, unknown names), driven by dnsperf from the lab's
//! client host. Throughput at full load, then latency at the same offered
//! load for both (p50/p99 from dnsperf's per-query report). Each
//! throughput run also records what it cost ([`cpu`]): the server's own
//! CPU per query, dnsperf's, the machine's softirq and idle time, so that
//! the servers are compared on what they can do per core even when the
//! client or the path is the ceiling of raw queries/s.
//!
//! The veth rows run dnsperf where a container sits ([`seat`]): behind a
//! veth carrying the agent's `vip_out`, which answers the plain service-name
//! queries in eBPF before they reach any server, asking Shoal's server (for
//! the rest) or dnsmasq at the veth's gateway address. Their CPU per query
//! counts the machine's softirq time with the server's: the program runs
//! there, in the sender's context.

mod cpu;
mod seat;

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
    /// dnsperf threads (`-T`).
    #[arg(long, default_value_t = 1)]
    dnsperf_threads: usize,
    /// Alternating throughput runs per server.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// dnsperf on CPU 0, the server under test on CPU 1 (Shoal's receive
    /// loops; dnsmasq).
    #[arg(long)]
    pin: bool,
    /// Offered load for the latency runs (queries/s, the same for both).
    #[arg(long, default_value_t = 20_000)]
    latency_qps: u64,
    /// Datagrams Shoal's server takes per `recvmmsg` (1: a call per query).
    #[arg(long, default_value_t = shoal_agent::dns::MAX_UDP_BATCH)]
    udp_batch: usize,
    /// UDP sockets for Shoal's server: 1 is shared by `--udp-loops` loops; more
    /// are a SO_REUSEPORT group, a loop each.
    #[arg(long, default_value_t = 1)]
    udp_sockets: usize,
    /// Receive loops on Shoal's one socket (default: one per two cores it
    /// may run on, as the agent).
    #[arg(long)]
    udp_loops: Option<usize>,
}

/// Server CPU seconds below which a server did no measurable work (every
/// query answered at the veth: `/proc` counts in 10 ms ticks).
const NO_SERVER_WORK: f64 = 0.05;
const NODE_NS: &str = "shoal-n1";
const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const SHOAL_PORT: u16 = 5301;
const DNSMASQ_PORT: u16 = 5302;
const NETWORK: &str = "bench-net";
/// The listener at the veth seat's gateway (the records are `NETWORK`'s:
/// the seat's task is known, so its own networks decide).
const VETH_NETWORK: &str = "bench-veth";

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
    // dnsperf plays two of the node's tasks: on the lab's client host, and
    // in the veth seat.
    for (task, addr) in [
        ("dnsperf", topology::CLIENT_ADDR),
        ("dnsperf-veth", seat::CONTAINER_ADDR),
    ] {
        set.tasks.push(Task {
            meta: Some(Meta {
                id: task.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        set.endpoints.push(TaskEndpoint {
            network_id: NETWORK.into(),
            task_id: task.into(),
            service_id: String::new(),
            addr: addr.to_string(),
            node_addr: NODE_ADDR.to_string(),
            running: true,
            draining: false,
        });
    }
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

/// CPUs `taskset` pins to: dnsperf's and the servers'.
const CLIENT_CPU: &str = "0";
const SERVER_CPU: &str = "1";

fn start_dnsmasq(hosts: &Path, pin: bool) -> Result<Dnsmasq> {
    let mut command = if pin {
        let mut c = cmd::in_netns(NODE_NS, "taskset");
        c.args(["-c", SERVER_CPU, "dnsmasq"]);
        c
    } else {
        cmd::in_netns(NODE_NS, "dnsmasq")
    };
    let child = command
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
        .arg(format!("--listen-address={}", seat::GATEWAY))
        .arg(format!("--port={DNSMASQ_PORT}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dnsmasq (cargo xtask setup installs it)")?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(Dnsmasq(child))
}

/// Where dnsperf runs and whom it asks.
#[derive(Clone, Copy)]
struct Target {
    /// dnsperf's namespace.
    from: &'static str,
    server: Ipv4Addr,
    port: u16,
}

/// From the lab's client host to the node's address, as before the veth rows.
const fn from_client(port: u16) -> Target {
    Target {
        from: topology::CLIENT_NS,
        server: NODE_ADDR,
        port,
    }
}

/// From the veth seat to its gateway.
const fn from_seat(port: u16) -> Target {
    Target {
        from: seat::CONTAINER_NS,
        server: seat::GATEWAY,
        port,
    }
}

/// dnsperf (on [`CLIENT_CPU`] when `pin`); returns its stdout.
fn dnsperf(target: Target, file: &Path, pin: bool, extra: &[String]) -> Result<String> {
    let port = target.port;
    let mut command = Command::new("ip");
    command.args(["netns", "exec", target.from]);
    if pin {
        command.args(["taskset", "-c", CLIENT_CPU]);
    }
    let out = command
        .args(["dnsperf", "-s"])
        .arg(target.server.to_string())
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

/// One throughput run of one server.
struct Run {
    qps: f64,
    lost: f64,
    completed: f64,
    usage: cpu::Usage,
}

impl Run {
    /// The server's own CPU per answered query, in microseconds.
    fn server_us(&self) -> f64 {
        self.usage.server * 1e6 / self.completed.max(1.0)
    }

    /// Queries per second of one core of the server's own CPU ("-" when
    /// the server did no measurable work).
    fn per_core(&self) -> String {
        if self.usage.server < NO_SERVER_WORK {
            return "-".to_owned();
        }
        format!("{:.0}", self.completed / self.usage.server)
    }

    /// The server's CPU and the whole machine's softirq time per answered
    /// query, in microseconds: for the veth rows, where the program
    /// answers in softirq, the honest cost of an answer (it also counts
    /// the delivery of every answer to dnsperf, in all rows alike).
    fn all_softirq_us(&self) -> f64 {
        (self.usage.server + self.usage.softirq) * 1e6 / self.completed.max(1.0)
    }

    /// [`Self::server_us`] with the softirq time on the server's CPU
    /// (pinned runs): the most its answers could have cost.
    fn with_softirq_us(&self) -> f64 {
        (self.usage.server + self.usage.server_cpu_softirq) * 1e6 / self.completed.max(1.0)
    }
}

/// Pins this process's threads (Shoal's receive loops among them) and
/// every thread it starts later to [`SERVER_CPU`].
fn pin_self() -> Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", SERVER_CPU])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?;
    ensure!(status.success(), "taskset -a -p -c {SERVER_CPU} failed");
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub async fn run(args: Args) -> Result<()> {
    let lab = Lab::new();
    lab.up(3, &mut |_| {})?;
    if args.pin {
        // Before the server starts: it counts the cores it may use.
        pin_self()?;
    }
    let dir = tempfile::tempdir()?;
    let hosts = dir.path().join("hosts");
    let query_file = dir.path().join("queries");
    std::fs::write(&hosts, hosts_file(&args))?;
    std::fs::write(&query_file, queries(&args))?;

    let records = || Records::from_assignments(&assignments(&args));
    // Before the servers bind: the seat's veth holds the gateway address.
    let seat = seat::Seat::set_up(NODE_NS, &records())?;
    let server = DnsServer::with_udp(Vec::new(), args.udp_batch, args.udp_loops);
    server.update(records());
    let group = args.udp_sockets;
    for (network, at) in [
        (NETWORK, SocketAddrV4::new(NODE_ADDR, SHOAL_PORT)),
        // Port 53 at the gateway: the only port the veth program answers.
        (VETH_NETWORK, SocketAddrV4::new(seat::GATEWAY, 53)),
    ] {
        let (sockets, tcp) = netns::run_in(NODE_NS, move || {
            Ok::<_, std::io::Error>((
                shoal_agent::dns::bind_udp_group(at, group)?,
                std::net::TcpListener::bind(at)?,
            ))
        })??;
        server.listen_sockets(network, sockets, tcp)?;
    }
    let dnsmasq = start_dnsmasq(&hosts, args.pin)?;
    let loops = cpu::own_thread_ids("dns-")?.len();

    println!(
        "dns: {} services x {} tasks; query mix: svcN, tasks.svcN, nosuchN ({} names); \
         dnsperf -c {} -q {} -T {} from {} (and from {} for the veth rows); both servers on \
         {NODE_NS}; shoal's UDP batch {}, sockets {}, receive loops {loops}; {}",
        args.services,
        args.tasks_per_service,
        args.services * 3,
        args.clients,
        args.outstanding,
        args.dnsperf_threads,
        topology::CLIENT_NS,
        seat::CONTAINER_NS,
        args.udp_batch,
        args.udp_sockets,
        if args.pin {
            format!("pinned: dnsperf on CPU {CLIENT_CPU}, each server on CPU {SERVER_CPU}")
        } else {
            "not pinned".to_owned()
        }
    );
    let servers = [
        ("shoal", from_client(SHOAL_PORT), cpu::Server::OwnThreads),
        (
            "dnsmasq",
            from_client(DNSMASQ_PORT),
            cpu::Server::Process(dnsmasq.0.id()),
        ),
        ("shoal-veth", from_seat(53), cpu::Server::OwnThreads),
        (
            "dnsmasq-veth",
            from_seat(DNSMASQ_PORT),
            cpu::Server::Process(dnsmasq.0.id()),
        ),
    ];
    // The same answers first: one pass over the mix, response codes equal.
    let once = ["-n".to_owned(), "1".to_owned()];
    let before = seat.counts()?;
    let mut all_codes = Vec::new();
    for (name, target, _) in servers {
        let codes = codes(&dnsperf(target, &query_file, args.pin, &once)?);
        println!("response codes: {name} [{codes}]");
        all_codes.push(codes);
    }
    let after = seat.counts()?;
    ensure!(
        all_codes.iter().all(|c| *c == all_codes[0]),
        "the servers answer the mix differently"
    );
    println!(
        "one pass over the mix from the seat: {} answered at the veth, {} left to the server",
        after.answered - before.answered,
        after.passed - before.passed
    );

    let load = [
        "-c".to_owned(),
        args.clients.to_string(),
        "-q".to_owned(),
        args.outstanding.to_string(),
        "-T".to_owned(),
        args.dnsperf_threads.to_string(),
        "-l".to_owned(),
        args.seconds.to_string(),
    ];
    // Alternating runs: the machine's noise hits all of them.
    println!(
        "\n{:<12} {:>5} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10} {:>11} {:>12} {:>12} {:>12}  load",
        "server",
        "round",
        "queries/s",
        "lost",
        "server s",
        "dnsperf s",
        "softirq s",
        "idle s",
        "server us/q",
        "q/s per core",
        "+sirq us/q",
        "+allsirq us/q"
    );
    let server_cpu = args.pin.then_some(SERVER_CPU);
    let mut runs: [Vec<Run>; 4] = Default::default();
    let mut at_veth = (0u64, 0u64);
    let batching_before = server.udp_batching();
    for round in 1..=args.rounds.max(1) {
        for (i, (name, target, whose)) in servers.into_iter().enumerate() {
            let counts_before = seat.counts()?;
            let before = cpu::snapshot(whose, server_cpu)?;
            let report = dnsperf(target, &query_file, args.pin, &load)?;
            let usage = before.until(&cpu::snapshot(whose, server_cpu)?);
            let counts = seat.counts()?;
            if name == "shoal-veth" {
                at_veth.0 += counts.answered - counts_before.answered;
                at_veth.1 += counts.passed - counts_before.passed;
            }
            let run = Run {
                qps: field(&report, "Queries per second:")?,
                lost: field(&report, "Queries lost:")?,
                completed: field(&report, "Queries completed:")?,
                usage,
            };
            println!(
                "{name:<12} {round:>5} {:>10.0} {:>7.0} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>11.2} {:>12} {:>12} {:>12.2}  {}",
                run.qps,
                run.lost,
                usage.server,
                usage.dnsperf,
                usage.softirq,
                usage.idle,
                run.server_us(),
                run.per_core(),
                if args.pin {
                    format!("{:.2}", run.with_softirq_us())
                } else {
                    "-".to_owned()
                },
                run.all_softirq_us(),
                load_average(),
            );
            runs[i].push(run);
        }
    }
    let batching = server.udp_batching();
    let (receives, datagrams) = (
        batching.0 - batching_before.0,
        batching.1 - batching_before.1,
    );
    println!(
        "shoal's recvmmsg calls: {receives}, datagrams {datagrams}, mean batch {:.2}",
        datagrams as f64 / receives.max(1) as f64
    );
    println!(
        "shoal-veth runs: {} queries answered at the veth, {} left to the server ({:.1}% at the veth)",
        at_veth.0,
        at_veth.1,
        100.0 * at_veth.0 as f64 / (at_veth.0 + at_veth.1).max(1) as f64
    );

    let paced = [
        "-c".to_owned(),
        args.clients.to_string(),
        "-Q".to_owned(),
        args.latency_qps.to_string(),
        "-l".to_owned(),
        "5".to_owned(),
        "-v".to_owned(),
    ];
    let mut latencies = Vec::new();
    for (_, target, _) in servers {
        latencies.push(percentiles(&dnsperf(
            target,
            &query_file,
            args.pin,
            &paced,
        )?)?);
    }

    let best = |runs: &[Run]| runs.iter().map(|r| r.qps).fold(0.0, f64::max);
    let lost = |runs: &[Run]| runs.iter().map(|r| r.lost).fold(0.0, f64::max);
    // Per core: all of a server's runs together (queries over CPU seconds).
    // None when the server did no measurable work (every query answered
    // at the veth): a ratio would only divide by the clock's resolution.
    let per_core = |runs: &[Run]| {
        let cpu = runs.iter().map(|r| r.usage.server).sum::<f64>();
        (cpu >= NO_SERVER_WORK).then(|| runs.iter().map(|r| r.completed).sum::<f64>() / cpu)
    };
    let show = |v: Option<f64>, digits: usize| {
        v.map_or("n/a (no server CPU)".to_owned(), |v| {
            format!("{v:.digits$}")
        })
    };
    // Server CPU and all softirq per query, all runs together.
    let all_sirq_us = |runs: &[Run]| {
        runs.iter()
            .map(|r| r.usage.server + r.usage.softirq)
            .sum::<f64>()
            * 1e6
            / runs.iter().map(|r| r.completed).sum::<f64>().max(1.0)
    };
    // Server, dnsperf and all softirq per query: everything a query cost
    // the machine, wherever the kernel accounted the work (softirq run at
    // the end of dnsperf's send call may count as dnsperf's system time).
    let whole_us = |runs: &[Run]| {
        runs.iter()
            .map(|r| r.usage.server + r.usage.dnsperf + r.usage.softirq)
            .sum::<f64>()
            * 1e6
            / runs.iter().map(|r| r.completed).sum::<f64>().max(1.0)
    };
    println!(
        "\n{:<12} {:>12} {:>8} {:>14} {:>16} {:>14} {:>10} {:>10}",
        "server",
        "queries/s",
        "lost",
        "q/s per core",
        "srv+sirq us/q",
        "+dnsperf us/q",
        "p50 (us)",
        "p99 (us)"
    );
    println!("{}", "-".repeat(103));
    for (i, (name, _, _)) in servers.iter().enumerate() {
        let (p50, p99, _) = latencies[i];
        println!(
            "{name:<12} {:>12.0} {:>8.0} {:>14} {:>16.2} {:>14.2} {p50:>10.0} {p99:>10.0}",
            best(&runs[i]),
            lost(&runs[i]),
            show(per_core(&runs[i]), 0),
            all_sirq_us(&runs[i]),
            whole_us(&runs[i]),
        );
    }
    for (label, shoal, dnsmasq) in [("from the client host", 0, 1), ("from the veth seat", 2, 3)] {
        println!(
            "\nshoal / dnsmasq {label}: queries/s {:.2}x, queries per second of the server's own \
             CPU {}x, per (server + softirq) CPU {:.2}x, per (server + dnsperf + softirq) \
             CPU {:.2}x, p99 at {} q/s {:.2}x (lower is better; {} and {} queries timed)",
            best(&runs[shoal]) / best(&runs[dnsmasq]),
            show(
                per_core(&runs[shoal])
                    .zip(per_core(&runs[dnsmasq]))
                    .map(|(s, d)| s / d),
                2
            ),
            all_sirq_us(&runs[dnsmasq]) / all_sirq_us(&runs[shoal]),
            whole_us(&runs[dnsmasq]) / whole_us(&runs[shoal]),
            args.latency_qps,
            latencies[shoal].1 / latencies[dnsmasq].1,
            latencies[shoal].2,
            latencies[dnsmasq].2,
        );
    }
    if args.pin {
        // All of a server's runs together, as per_core.
        let us = |runs: &[Run]| {
            runs.iter()
                .map(|r| r.usage.server + r.usage.server_cpu_softirq)
                .sum::<f64>()
                * 1e6
                / runs.iter().map(|r| r.completed).sum::<f64>().max(1.0)
        };
        let (shoal_us, dnsmasq_us) = (us(&runs[0]), us(&runs[1]));
        println!(
            "with the softirq on CPU {SERVER_CPU} counted as the server's: shoal {shoal_us:.2} us per \
             query, dnsmasq {dnsmasq_us:.2}: {:.2}x the queries per core",
            dnsmasq_us / shoal_us
        );
    }
    println!("target: shoal >= 1.5x dnsmasq on queries/s, p99 no higher");
    drop(seat);
    Ok(())
}
