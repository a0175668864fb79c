//! `mesh`: the routing mesh beside what users build by hand, in one run,
//! with the same backends (two `shoal/echo` tasks on n1 and n2) and the same
//! client (wrk in the lab's `shoal-client` host, entering at n3, which runs
//! no task):
//!
//! - (a) direct: n1's task through a host-mode port on n1 (the limit);
//! - (b) Shoal ingress: n3:8080, balanced in eBPF over both tasks (VXLAN);
//! - (c) HAProxy 2.6 on n3 (`mode tcp`, roundrobin) to the task addresses;
//! - (d) iptables DNAT on n3 (`statistic nth` + SNAT), as kube-proxy does.
//! - Shoal ingress again with `--lb maglev` (n3:8083) and with
//!   `--endpoint-affinity client-ip` (n3:8084), over two other tasks on
//!   the same nodes: each as a ratio of round-robin's figure in the run.
//! - Shoal ingress entered at the node of its one task (n1:8086, and with
//!   `--lb maglev` n1:8087): the mesh's own cost against direct, with no
//!   hop between nodes (n3's rows pay one, which the "routed through n3"
//!   row measures alone).
//!
//! Keep-alive requests/s, new connections/s (`Connection: close`), p99,
//! every row measured in interleaved rounds (`mesh_rounds`): the machine is
//! shared, and one run per row swung ±15% between runs.
//! Then connection latency with 1, 100, 1,000 and 10,000 published services for
//! Shoal and for iptables (one DNAT rule per service ahead of the measured
//! one): the mesh looks a port up in a hash map, iptables walks its rules.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use shoal_lab::{Lab, cmd, topology};

use crate::mesh_rounds::{self, Rate, Row, Runs};

#[derive(clap::Args)]
pub struct Args {
    /// Directory of the release binaries (shoal, shoal-manager, shoal-agent).
    #[arg(long)]
    bin_dir: PathBuf,
    /// Seconds per wrk slice: within a round the rows take turns in
    /// slices this long, so that two compared rows are measured seconds
    /// apart, not a minute.
    #[arg(long, default_value_t = 1)]
    seconds: u64,
    /// Palindrome cycles per round and per kind of load (keep-alive, new
    /// connections): each cycle runs every row twice, `r0 … rN rN … r0`,
    /// so that a drift of the machine over the cycle weighs on every row
    /// alike; a round's ratio is the median of its cycles' ratios.
    #[arg(long, default_value_t = 2)]
    cycles: usize,
    /// Rounds: each starts today's lab afresh and measures every row in
    /// its cycles; rows are medians of the rounds and ratios medians of
    /// per-round ratios, judged by the median's 95% confidence interval:
    /// 9 rounds is the fewest that lets one wild round fall outside it
    /// (under 6 even min-max holds it with less than 95%).
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// wrk connections (2 threads).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Service counts for the latency-vs-services part.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000,10000")]
    services: Vec<usize>,
    /// Binaries of an older build (`cargo xtask bench mesh --baseline-rev
    /// REV` builds them): every round then also starts the lab afresh with
    /// them and measures their default rows (direct, shoal ingress), so
    /// that today's rows compare with the old default round by round.
    #[arg(long)]
    baseline_bin_dir: Option<PathBuf>,
}

const ENTRY: &str = "n3";
const ENTRY_ADDR: &str = "192.0.2.13";

pub(crate) fn in_netns(netns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut full = vec![format!("--net=/run/netns/{netns}"), program.to_owned()];
    full.extend(args.iter().map(|a| a.to_string()));
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    Ok(cmd::stdout("nsenter", &full)?)
}

/// The IPv4 addresses on `dev` in `netns`.
fn addresses(netns: &str, dev: &str) -> Result<Vec<String>> {
    let out = in_netns(netns, "ip", &["-4", "-o", "addr", "show", "dev", dev])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .filter_map(|c| c.split('/').next())
        .map(str::to_owned)
        .collect())
}

pub(crate) struct Wrk {
    pub(crate) rps: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: u64,
}

fn parse_ms(text: &str) -> Option<f64> {
    let (num, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        _ => return None,
    })
}

pub(crate) fn wrk(
    url: &str,
    connections: usize,
    threads: usize,
    seconds: u64,
    close: bool,
) -> Result<Wrk> {
    let mut args = vec![
        "netns".to_owned(),
        "exec".into(),
        topology::CLIENT_NS.into(),
        "wrk".into(),
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
        "--latency".into(),
    ];
    if close {
        args.extend(["-H".into(), "Connection: close".into()]);
    }
    args.push(url.into());
    let out = Command::new("ip")
        .args(&args)
        .output()
        .context("running wrk (cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "wrk {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| parse_ms(v.trim()))
        .with_context(|| format!("no 99% latency in wrk's output:\n{text}"))?;
    // Failed connections and timeouts, and error answers; wrk's "read"
    // errors are servers closing after `Connection: close`, not failures.
    let field = |line: &str, name: &str| -> u64 {
        line.split(',')
            .find_map(|part| part.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let socket = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"));
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let errors = socket.map_or(0, |s| field(s, "connect") + field(s, "timeout")) + non_2xx;
    Ok(Wrk {
        rps,
        p99_ms,
        errors,
    })
}

pub(crate) fn shoal(lab: &Lab, bins: &Path, args: &[&str]) -> Result<String> {
    Ok(lab.shoal(bins, args)?)
}

pub(crate) fn running(lab: &Lab, bins: &Path, service: &str) -> usize {
    shoal(lab, bins, &["service", "ps", service, "--format", "json"])
        .map(|out| {
            out.lines()
                .filter(|l| {
                    l.contains("\"DesiredState\":\"Running\"")
                        && l.contains("\"CurrentState\":\"Running")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Creates services `idle{i}` (no replicas, port 10000+i published) for
/// every i in `range`, several CLI calls at a time: one at a time, 10,000
/// services take longer than the rest of the bench.
fn create_idle_services(lab: &Lab, bins: &Path, range: std::ops::Range<usize>) -> Result<()> {
    const IN_FLIGHT: usize = 8;
    let next = std::sync::atomic::AtomicUsize::new(range.start);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= range.end {
                            return Ok(());
                        }
                        shoal(
                            lab,
                            bins,
                            &[
                                "service",
                                "create",
                                "--name",
                                &format!("idle{i}"),
                                "--replicas",
                                "0",
                                "--publish",
                                &format!("{}:80", 10000 + i),
                                "shoal/echo:1",
                            ],
                        )
                        .with_context(|| format!("creating idle{i}"))?;
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| anyhow::anyhow!("a creating thread panicked"))?
        })
    })
}

/// CPU time (clock ticks) of every shoal-manager and shoal-agent process.
fn control_plane_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| stat.contains("(shoal-manager)") || stat.contains("(shoal-agent)"))
        .filter_map(|stat| {
            // Fields after the command: state is 3rd; utime and stime 14th, 15th.
            let rest = stat.rsplit_once(") ")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Waits until the manager and agents use under 5% of a core over a
/// second; false if that did not happen within `limit`.
fn wait_for_idle_control_plane(limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        let before = control_plane_ticks();
        std::thread::sleep(Duration::from_secs(1));
        // 100 ticks a second: 5 ticks is 5% of one core.
        if control_plane_ticks().saturating_sub(before) < 5 {
            return true;
        }
    }
    false
}

/// Published ports in a node's pinned mesh map.
fn published_ports(bpffs_root: &Path) -> Result<usize> {
    let root = shoal_agent::datapath::BpfRoot::new(bpffs_root);
    Ok(shoal_agent::datapath::mesh::MeshMaps::open(&root)?.published_ports())
}

/// p99 of one connection at a time (`Connection: close`), the median of
/// three 3-second runs: a single run's p99 moves with whatever else the
/// two cores did in those seconds.
fn median_p99(url: &str) -> Result<f64> {
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(wrk(url, 1, 1, 3, true)?.p99_ms);
    }
    runs.sort_by(f64::total_cmp);
    Ok(runs[1])
}

/// One row of the rate table: keep-alive and new-connection rates, their
/// p99s and the errors of both.
pub(crate) fn print_row(name: &str, keep: &Wrk, close: &Wrk) {
    println!(
        "{name:<32} {:>12.0} {:>10.2} {:>14.0} {:>10.2} {:>7}",
        keep.rps,
        keep.p99_ms,
        close.rps,
        close.p99_ms,
        keep.errors + close.errors
    );
}

pub(crate) fn wait(what: &str, mut ok: impl FnMut() -> bool) -> Result<()> {
    for _ in 0..150 {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("timed out waiting for {what}")
}

/// A 3-node lab cluster (1 manager) of the binaries in `bins`, with the
/// `web` service: 2 tasks on n1 and n2, 8080 in ingress mode, 8081 in
/// host mode.
pub(crate) fn start_with_web(lab: &Lab, bins: &Path) -> Result<()> {
    lab.up(3, &mut |_| {})?;
    lab.stop_cluster()?;
    lab.start_managers(1, bins, &mut |_| {})?;
    lab.start_agents(bins, &mut |_| {})?;
    // The client closes first, so its ports sit in TIME_WAIT; without
    // reuse, a few seconds of new connections exhaust them and connect()
    // itself becomes the bottleneck (measured: 7,400 → 460 connections/s
    // against a plain server in a second run). Every path gets the same.
    shoal_lab::netns::write_sysctl(topology::CLIENT_NS, "net/ipv4/tcp_tw_reuse", "1")?;
    wait("3 ready nodes", || {
        shoal(lab, bins, &["node", "ls"]).is_ok_and(|o| o.matches(" Ready ").count() == 3)
    })?;
    shoal(
        lab,
        bins,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--constraint",
            "node.hostname!=n3",
            "--publish",
            "8080:80",
            "--publish",
            "mode=host,published=8081,target=80",
            "shoal/echo:1",
        ],
    )?;
    wait("2 running web tasks", || running(lab, bins, "web") == 2)
}

/// The rows measured in today's lab, round by round.
const DIRECT: Row = Row {
    name: "direct (host mode, n1's task)",
    url: "http://192.0.2.11:8081/",
};
const ROUTED: Row = Row {
    name: "direct, routed through n3",
    url: "http://192.0.2.11:8081/",
};
const SHOAL: Row = Row {
    name: "shoal ingress, client IP (n3)",
    url: "http://192.0.2.13:8080/",
};
const TODAY: [Row; 8] = [
    DIRECT,
    ROUTED,
    SHOAL,
    Row {
        name: "shoal ingress, --lb maglev",
        url: "http://192.0.2.13:8083/",
    },
    Row {
        name: "shoal ingress, affinity",
        url: "http://192.0.2.13:8084/",
    },
    Row {
        name: "shoal ingress, dsr (n3)",
        url: "http://192.0.2.13:8085/",
    },
    Row {
        name: "shoal ingress at its task's node (n1)",
        url: "http://192.0.2.11:8086/",
    },
    Row {
        name: "--lb maglev at its task's node (n1)",
        url: "http://192.0.2.11:8087/",
    },
];
const I_DIRECT: usize = 0;
const I_ROUTED: usize = 1;
const I_SHOAL: usize = 2;
const I_MAGLEV: usize = 3;
const I_AFFINITY: usize = 4;
const I_DSR: usize = 5;
const I_LOCAL: usize = 6;
const I_LOCAL_MAGLEV: usize = 7;
/// The peers' rows, in rounds of their own (with the direct path, their
/// yardstick): their iptables rules must be out while Shoal runs.
const PEERS: [Row; 3] = [
    DIRECT,
    Row {
        name: "haproxy 2.6 on n3",
        url: "http://192.0.2.13:9000/",
    },
    Row {
        name: "iptables DNAT on n3",
        url: "http://192.0.2.13:9001/",
    },
];

/// What today's lab needs beyond `start_with_web`: the other picks'
/// services, and the addresses the peers forward to and from.
struct Today {
    tasks: [String; 2],
    ingress: String,
}

/// Starts today's lab afresh: `web`, then the same two nodes' tasks for
/// the other picks (issue 16): Maglev, client-IP affinity (all of wrk's
/// connections come from one client address, so they all reach one task:
/// a bound, not a flaw), and direct server return (the tasks' nodes
/// answer the client themselves; a port's target can have it once: its
/// own tasks).
fn start_today(lab: &Lab, bins: &Path) -> Result<Today> {
    lab.down(&mut |_| {})?;
    start_with_web(lab, bins)?;
    for (name, port, replicas, pick) in [
        ("web-maglev", "8083:80", 2, &["--lb", "maglev"][..]),
        (
            "web-affinity",
            "8084:80",
            2,
            &["--endpoint-affinity", "client-ip"][..],
        ),
        ("web-dsr", "published=8085,target=80,dsr=true", 2, &[][..]),
        // One task, on n1: entered at n1, no hop between nodes.
        (
            "web-local",
            "8086:80",
            1,
            &["--constraint", "node.hostname==n1"][..],
        ),
        (
            "web-local-maglev",
            "8087:80",
            1,
            &["--constraint", "node.hostname==n1", "--lb", "maglev"][..],
        ),
    ] {
        let count = replicas.to_string();
        let mut create = vec![
            "service",
            "create",
            "--name",
            name,
            "--replicas",
            &count,
            "--constraint",
            "node.hostname!=n3",
            "--publish",
            port,
        ];
        create.extend(pick);
        create.push("shoal/echo:1");
        shoal(lab, bins, &create)?;
        wait(&format!("{replicas} running {name} tasks"), || {
            running(lab, bins, name) == replicas
        })?;
    }
    let containers = cmd::stdout(
        "docker",
        &["ps", "-q", "--filter", "label=com.shoal.service.name=web"],
    )?;
    let mut tasks = Vec::new();
    for c in containers.split_whitespace() {
        let pid = cmd::stdout("docker", &["inspect", "-f", "{{.State.Pid}}", c])?;
        let out = cmd::stdout(
            "nsenter",
            &[
                "-t",
                pid.trim(),
                "-n",
                "ip",
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
                "eth0",
            ],
        )?;
        let addr = out
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|c| c.split('/').next())
            .context("task address")?;
        tasks.push(addr.to_owned());
    }
    let tasks: [String; 2] = tasks
        .try_into()
        .map_err(|t| anyhow::anyhow!("expected 2 web tasks, found {t:?}"))?;
    let entry_ns = format!("shoal-{ENTRY}");
    wait("n3's ingress address", || {
        addresses(&entry_ns, "shbr4096").is_ok_and(|a| a.len() == 2)
    })?;
    let ingress = addresses(&entry_ns, "shbr4096")?
        .into_iter()
        .find(|a| !a.ends_with(".1"))
        .context("n3 has no ingress address")?;
    settle();
    Ok(Today { tasks, ingress })
}

/// Lets every node's tables follow the last push, and the control plane
/// go quiet, before a lab's rows run.
pub(crate) fn settle() {
    std::thread::sleep(Duration::from_secs(2));
    if !wait_for_idle_control_plane(Duration::from_secs(30)) {
        eprintln!("[bench] the control plane did not go idle within 30 s: measuring anyway");
    }
}

/// The direct path with n3 as a plain IP router on the way both ways (no
/// NAT, no VXLAN): what entering at a node with no task costs in this lab
/// before any load balancing, since each hop is one more veth crossing on
/// the same two cores.
fn routed_via_entry(on: bool) -> Result<()> {
    let entry_ns = format!("shoal-{ENTRY}");
    shoal_lab::netns::write_sysctl(&entry_ns, "net/ipv4/conf/all/send_redirects", "0")?;
    shoal_lab::netns::write_sysctl(&entry_ns, "net/ipv4/conf/eth0/send_redirects", "0")?;
    for (ns, to) in [
        (topology::CLIENT_NS, "192.0.2.11/32"),
        ("shoal-n1", "192.0.2.100/32"),
    ] {
        if on {
            cmd::ip_in(ns, &["route", "replace", to, "via", ENTRY_ADDR])?;
        } else {
            let _ = cmd::ip_in(ns, &["route", "del", to]);
        }
    }
    Ok(())
}

/// The mesh's packets and the peers' share n3's ingress address and the
/// client's ports: the tasks' TIME_WAIT sockets of one side's connections
/// must expire before the other side's rows (and the mesh's reply program
/// would take the peers' replies for its own finished connections).
fn wait_for_time_wait() {
    println!("(waiting 65 s for the tasks' TIME_WAIT sockets of the other side's connections)");
    std::thread::sleep(Duration::from_secs(65));
}

pub fn run(args: Args) -> Result<()> {
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    ensure!(args.seconds >= 1, "--seconds must be at least 1");
    ensure!(args.cycles >= 1, "--cycles must be at least 1");
    ensure!(
        args.connections >= 2,
        "--connections must be at least 2 (wrk -t2)"
    );
    let lab = Lab::new();
    let bins = args.bin_dir.as_path();
    let rate = Rate {
        connections: args.connections,
        seconds: args.seconds,
        cycles: args.cycles,
    };
    let started = std::time::Instant::now();
    println!(
        "mesh: 2 shoal/echo tasks (n1, n2); wrk -t2 -c{} -d{}s slices from {}; entry node n3 runs no task",
        args.connections,
        args.seconds,
        topology::CLIENT_NS
    );
    println!(
        "{} rounds of {} palindrome cycles (r0 .. rN rN .. r0, keep-alive, then Connection: close){}.\n\
         A row's figure in a cycle is the mean of its two slices; in a round the median of its cycles.\n\
         Rows: median of the rounds [min-max]. Ratios: per round the median of the per-cycle ratios,\n\
         then the median of the rounds [min-max],\n\
         and the median's distribution-free confidence interval where it is narrower (the order\n\
         statistics that hold the median with >= 95%): a verdict is \"met\" when that interval is\n\
         at or above the target, \"BELOW\" when it is under it.",
        args.rounds,
        args.cycles,
        if args.baseline_bin_dir.is_some() {
            "; each round starts today's lab afresh, then the baseline build's"
        } else {
            ""
        }
    );
    let dir = tempfile::tempdir()?;
    let mut today = TODAY.map(|_| Runs::default());
    let mut peers_runs = PEERS.map(|_| Runs::default());
    let mut old = crate::mesh_baseline::ROWS.map(|_| Runs::default());
    let mut latency = Vec::new();
    for round in 0..args.rounds {
        let block = std::time::Instant::now();
        let setup = start_today(&lab, bins)?;
        eprintln!(
            "[bench] round {}: today's lab up in {:.0?}",
            round + 1,
            block.elapsed()
        );
        if round == 0 {
            // The peers and the iptables half of the latency part first,
            // in their own rounds.
            let peers = crate::mesh_peers::Peers::start(
                &format!("shoal-{ENTRY}"),
                ENTRY_ADDR,
                &setup.ingress,
                setup.tasks.clone(),
                dir.path(),
            )?;
            for peers_round in 0..args.rounds {
                mesh_rounds::round(&PEERS, &mut peers_runs, peers_round, rate, |_, _| Ok(()))?;
            }
            for &n in &args.services {
                peers.set_other_services(n, dir.path())?;
                std::thread::sleep(Duration::from_secs(1));
                latency.push((n, median_p99("http://192.0.2.13:9001/")?, f64::NAN));
            }
            drop(peers);
            wait_for_time_wait();
        }
        mesh_rounds::round(&TODAY, &mut today, round, rate, |row, before| {
            if row.name == ROUTED.name {
                routed_via_entry(before)?;
            }
            Ok(())
        })?;
        if round == 0 {
            shoal_latency(&lab, bins, &mut latency)?;
        }
        if let Some(old_bins) = &args.baseline_bin_dir {
            let block = std::time::Instant::now();
            crate::mesh_baseline::start(&lab, old_bins)?;
            eprintln!(
                "[bench] round {}: the baseline's lab up in {:.0?}",
                round + 1,
                block.elapsed()
            );
            mesh_rounds::round(
                &crate::mesh_baseline::ROWS,
                &mut old,
                round,
                rate,
                |_, _| Ok(()),
            )?;
        }
    }
    let rows: Vec<(&str, &Runs)> = TODAY.iter().map(|r| r.name).zip(&today).collect();
    mesh_rounds::print_table("path", &rows);
    let peer_rows: Vec<(&str, &Runs)> = PEERS.iter().map(|r| r.name).zip(&peers_runs).collect();
    mesh_rounds::print_table("path (the peers' own rounds)", &peer_rows);
    println!();
    let (direct, shoal_rr) = (&today[I_DIRECT], &today[I_SHOAL]);
    let print_ratio = mesh_rounds::print_ratio;
    print_ratio(
        "shoal / direct",
        mesh_rounds::ratio(shoal_rr, direct),
        Some(0.9),
    );
    print_ratio(
        "the extra hop alone (direct, routed through n3) / direct",
        mesh_rounds::ratio(&today[I_ROUTED], direct),
        None,
    );
    print_ratio(
        "shoal / direct routed through n3",
        mesh_rounds::ratio(shoal_rr, &today[I_ROUTED]),
        None,
    );
    for i in [I_MAGLEV, I_AFFINITY] {
        let name = TODAY[i].name;
        print_ratio(
            &format!("{name} / round-robin"),
            mesh_rounds::ratio(&today[i], shoal_rr),
            Some(0.95),
        );
        print_ratio(
            &format!("{name} / direct"),
            mesh_rounds::ratio(&today[i], direct),
            Some(0.9),
        );
    }
    // The tasks see the client's own address on every shoal row but dsr's
    // replies leave n1 and n2 straight to the client.
    print_ratio(
        "shoal at its task's node / direct (the mesh's own cost, no hop)",
        mesh_rounds::ratio(&today[I_LOCAL], direct),
        Some(0.9),
    );
    print_ratio(
        "--lb maglev at its task's node / direct (Maglev's own cost, no hop)",
        mesh_rounds::ratio(&today[I_LOCAL_MAGLEV], direct),
        Some(0.9),
    );
    print_ratio(
        "shoal dsr / direct",
        mesh_rounds::ratio(&today[I_DSR], direct),
        None,
    );
    print_ratio(
        "shoal dsr / shoal (tunnel return)",
        mesh_rounds::ratio(&today[I_DSR], shoal_rr),
        None,
    );
    for i in 1..PEERS.len() {
        // Different rounds (minutes apart): each against its own direct.
        print_ratio(
            &format!(
                "shoal / {} (each against direct in its own rounds; target >= 1 on throughput)",
                PEERS[i].name
            ),
            mesh_rounds::ratio_against_direct((shoal_rr, direct), (&peers_runs[i], &peers_runs[0])),
            None,
        );
    }
    if let Some(old_bins) = &args.baseline_bin_dir {
        let today_rows = [I_SHOAL, I_MAGLEV, I_AFFINITY, I_DSR].map(|i| (TODAY[i].name, &today[i]));
        crate::mesh_baseline::print(old_bins, &old, direct, &today_rows);
    }
    println!("\nconnection latency (1 client, Connection: close) vs published services:");
    println!(
        "{:>9} {:>18} {:>18}",
        "services", "shoal p99 ms", "iptables p99 ms"
    );
    for (n, iptables_ms, shoal_ms) in latency {
        println!("{n:>9} {shoal_ms:>18.3} {iptables_ms:>18.3}");
    }
    println!(
        "\nbench took {:.0?}. The lab cluster stays up (cargo xtask lab down).",
        started.elapsed()
    );
    Ok(())
}

/// The Shoal half of the latency part: creates the idle services up to
/// each count and fills `latency`'s third column (the iptables half ran
/// with the peers).
fn shoal_latency(lab: &Lab, bins: &Path, latency: &mut [(usize, f64, f64)]) -> Result<()> {
    let mut created = 1;
    let entry_maps = Lab::bpffs_root(&lab.host(ENTRY)?);
    for (n, _, shoal_ms) in latency.iter_mut() {
        let n = *n;
        let started = std::time::Instant::now();
        create_idle_services(lab, bins, created..n)?;
        created = n.max(created);
        let pushed = started.elapsed();
        // Measure once the entry node serves every port (web's 8080 and
        // n-1 idle ones), so the figure is the lookup's, not a backlog's.
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while published_ports(&entry_maps).unwrap_or(0) < n {
            ensure!(
                std::time::Instant::now() < deadline,
                "{ENTRY} did not serve {n} published ports within 300 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let served = started.elapsed();
        // The other nodes and the manager may still be working through the
        // last pushes on the same two cores: measure the lookup once they
        // are idle, not the catch-up.
        let settled = wait_for_idle_control_plane(Duration::from_secs(180));
        eprintln!(
            "[bench] {n} services created in {pushed:.1?}; {ENTRY} served them {served:.1?} after the first create; the control plane was idle {:.1?} after it{}",
            started.elapsed(),
            if settled {
                ""
            } else {
                " (never fully: measured anyway)"
            }
        );
        *shoal_ms = median_p99("http://192.0.2.13:8080/")?;
    }
    Ok(())
}
