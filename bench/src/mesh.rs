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
//!
//! Keep-alive requests/s, new connections/s (`Connection: close`), p99.
//! Then connection latency with 1, 100, 1,000 and 10,000 published services for
//! Shoal and for iptables (one DNAT rule per service ahead of the measured
//! one): the mesh looks a port up in a hash map, iptables walks its rules.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use shoal_lab::{Lab, cmd, topology};

#[derive(clap::Args)]
pub struct Args {
    /// Directory of the release binaries (shoal, shoal-manager, shoal-agent).
    #[arg(long)]
    bin_dir: PathBuf,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// wrk connections (2 threads).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Service counts for the latency-vs-services part.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000,10000")]
    services: Vec<usize>,
    /// Binaries of an older build (`cargo xtask bench mesh --baseline-rev
    /// REV` builds them): at the end, the lab is started afresh with them
    /// and the default rows (direct, shoal ingress) measured again, so
    /// that today's default compares with the old one in the same run.
    #[arg(long)]
    baseline_bin_dir: Option<PathBuf>,
}

const ENTRY: &str = "n3";
const ENTRY_ADDR: &str = "192.0.2.13";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_netns(netns: &str, program: &str, args: &[&str]) -> Result<String> {
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

pub fn run(args: Args) -> Result<()> {
    let lab = Lab::new();
    let bins = args.bin_dir.as_path();
    start_with_web(&lab, bins)?;
    // The same two nodes' tasks for the other picks (issue 16): Maglev,
    // and client-IP affinity (all of wrk's connections come from one
    // client address, so they all reach one task: a bound, not a flaw).
    for (name, port, pick) in [
        ("web-maglev", "8083:80", ["--lb", "maglev"]),
        (
            "web-affinity",
            "8084:80",
            ["--endpoint-affinity", "client-ip"],
        ),
    ] {
        shoal(
            &lab,
            bins,
            &[
                "service",
                "create",
                "--name",
                name,
                "--replicas",
                "2",
                "--constraint",
                "node.hostname!=n3",
                "--publish",
                port,
                pick[0],
                pick[1],
                "shoal/echo:1",
            ],
        )?;
        wait(&format!("2 running {name} tasks"), || {
            running(&lab, bins, name) == 2
        })?;
    }
    // The same, with direct server return: the tasks' nodes answer the
    // client themselves (a port's target can have it once: its own tasks).
    shoal(
        &lab,
        bins,
        &[
            "service",
            "create",
            "--name",
            "web-dsr",
            "--replicas",
            "2",
            "--constraint",
            "node.hostname!=n3",
            "--publish",
            "published=8085,target=80,dsr=true",
            "shoal/echo:1",
        ],
    )?;
    wait("2 running web-dsr tasks", || {
        running(&lab, bins, "web-dsr") == 2
    })?;
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
    ensure!(tasks.len() == 2, "tasks: {tasks:?}");
    let entry_ns = format!("shoal-{ENTRY}");
    wait("n3's ingress address", || {
        addresses(&entry_ns, "shbr4096").is_ok_and(|a| a.len() == 2)
    })?;
    let ingress = addresses(&entry_ns, "shbr4096")?
        .into_iter()
        .find(|a| !a.ends_with(".1"))
        .context("n3 has no ingress address")?;
    // Let every node's tables follow the last push.
    std::thread::sleep(Duration::from_secs(2));

    // (c) HAProxy on the entry node, L4 like the others.
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
             frontend f\n  bind {ENTRY_ADDR}:9000\n  default_backend b\n\
             backend b\n  balance roundrobin\n  source {ingress}\n  server t1 {}:80\n  server t2 {}:80\n",
            tasks[0], tasks[1]
        ),
    )?;
    let _haproxy = Killed(
        cmd::in_netns(&entry_ns, "haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting haproxy (cargo xtask setup installs it)")?,
    );
    // (d) iptables DNAT on the entry node, round-robin by `statistic nth`.
    let iptables = |rule: &[&str]| -> Result<()> {
        in_netns(&entry_ns, "iptables", &[&["-w"], rule].concat())?;
        Ok(())
    };
    let dnat = |port: u16, every: &str, packet: &str, to: &str| -> Vec<String> {
        vec![
            "-t".into(),
            "nat".into(),
            "-A".into(),
            "SHOAL_BENCH".into(),
            "-d".into(),
            ENTRY_ADDR.into(),
            "-p".into(),
            "tcp".into(),
            "--dport".into(),
            port.to_string(),
            "-m".into(),
            "statistic".into(),
            "--mode".into(),
            "nth".into(),
            "--every".into(),
            every.into(),
            "--packet".into(),
            packet.into(),
            "-j".into(),
            "DNAT".into(),
            "--to-destination".into(),
            format!("{to}:80"),
        ]
    };
    let _ = in_netns(
        &entry_ns,
        "iptables",
        &["-w", "-t", "nat", "-N", "SHOAL_BENCH"],
    );
    iptables(&["-t", "nat", "-F", "SHOAL_BENCH"])?;
    let _ = in_netns(
        &entry_ns,
        "iptables",
        &["-w", "-t", "nat", "-D", "PREROUTING", "-j", "SHOAL_BENCH"],
    );
    iptables(&["-t", "nat", "-I", "PREROUTING", "-j", "SHOAL_BENCH"])?;
    for rule in [
        dnat(9001, "2", "0", &tasks[0]),
        dnat(9001, "1", "0", &tasks[1]),
    ] {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        iptables(&rule)?;
    }
    let snat = [
        "-t",
        "nat",
        "-I",
        "POSTROUTING",
        "-d",
        "198.18.0.0/15",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-j",
        "SNAT",
        "--to-source",
        &ingress,
    ];
    iptables(&snat)?;
    // The iptables path's rules must not touch the mesh's packets: they
    // meet n3's netfilter too once bridged (br_netfilter), and a SNAT
    // binding, or a conntrack entry left in TIME_WAIT, rewrites their ports.
    shoal_lab::netns::write_sysctl(
        &entry_ns,
        "net/netfilter/nf_conntrack_tcp_timeout_time_wait",
        "1",
    )?;
    let peers_off = || -> Result<()> {
        let del = [&["-w"], &snat[..]].concat();
        let del: Vec<&str> = del
            .iter()
            .map(|a| if *a == "-I" { "-D" } else { a })
            .collect();
        let _ = in_netns(&entry_ns, "iptables", &del);
        let _ = in_netns(
            &entry_ns,
            "iptables",
            &["-w", "-t", "nat", "-D", "PREROUTING", "-j", "SHOAL_BENCH"],
        );
        Ok(())
    };
    let peers_on = || -> Result<()> {
        iptables(&["-t", "nat", "-I", "PREROUTING", "-j", "SHOAL_BENCH"])?;
        iptables(&snat)
    };

    // (e) The direct path again, with n3 as a plain IP router on the way
    // both ways (no NAT, no VXLAN): what entering at a node with no task
    // costs in this lab before any load balancing, since each hop is one
    // more veth crossing on the same two cores.
    let routed_via_entry = |on: bool| -> Result<()> {
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
    };
    let targets = [
        ("direct (host mode, n1's task)", "http://192.0.2.11:8081/"),
        ("direct, routed through n3", "http://192.0.2.11:8081/"),
        ("shoal ingress, client IP (n3)", "http://192.0.2.13:8080/"),
        ("haproxy 2.6 on n3", "http://192.0.2.13:9000/"),
        ("iptables DNAT on n3", "http://192.0.2.13:9001/"),
        ("shoal ingress, --lb maglev", "http://192.0.2.13:8083/"),
        ("shoal ingress, affinity", "http://192.0.2.13:8084/"),
        ("shoal ingress, dsr (n3)", "http://192.0.2.13:8085/"),
    ];
    println!(
        "mesh: 2 shoal/echo tasks (n1, n2); wrk -t2 -c{} -d{}s from {}; entry node n3 runs no task",
        args.connections,
        args.seconds,
        topology::CLIENT_NS
    );
    println!(
        "\n{:<32} {:>12} {:>10} {:>14} {:>10} {:>7}",
        "path", "keep-alive/s", "p99 ms", "new conns/s", "p99 ms", "errors"
    );
    // The peers run before Shoal: they send from n3's ingress address too
    // (the only one the tasks can answer), and the mesh's reply program
    // would take their replies for its own connections where a finished
    // mesh connection's entry has the same ports (entries stay until the
    // LRU needs the room). Host mode (direct) tracks by client address.
    // Between the peers and Shoal, the tasks' TIME_WAIT sockets of the
    // peers' connections (same source address and ports) must expire.
    let mut measured = Vec::new();
    for i in [0, 1, 3, 4, 2, 5, 6, 7] {
        let (name, url) = targets[i];
        if i == 2 {
            peers_off()?;
            println!("(waiting 65 s for the tasks' TIME_WAIT sockets of the peers' connections)");
            std::thread::sleep(Duration::from_secs(65));
        }
        routed_via_entry(i == 1)?;
        let runs = (
            wrk(url, args.connections, 2, args.seconds, false),
            wrk(url, args.connections, 2, args.seconds, true),
        );
        routed_via_entry(false)?;
        measured.push((i, name, runs.0?, runs.1?));
    }
    measured.sort_by_key(|m| m.0);
    let mut results = Vec::new();
    for (_, name, keep, close) in measured {
        print_row(name, &keep, &close);
        results.push((name, keep, close));
    }
    let (_, direct_k, direct_c) = &results[0];
    let (_, hop_k, hop_c) = &results[1];
    let (_, shoal_k, shoal_c) = &results[2];
    println!(
        "\nshoal / direct:   keep-alive {:.2}x, new connections {:.2}x (target >= 0.9)",
        shoal_k.rps / direct_k.rps,
        shoal_c.rps / direct_c.rps
    );
    println!(
        "the extra hop alone (direct, routed through n3) / direct: keep-alive {:.2}x, new connections {:.2}x",
        hop_k.rps / direct_k.rps,
        hop_c.rps / direct_c.rps
    );
    println!(
        "shoal / direct routed through n3: keep-alive {:.2}x, new connections {:.2}x",
        shoal_k.rps / hop_k.rps,
        shoal_c.rps / hop_c.rps
    );
    // The other picks against round-robin in the same run (target >= 0.95)
    // and against direct (target >= 0.9).
    for (name, k, c) in &results[5..7] {
        println!(
            "{name} / round-robin: keep-alive {:.2}x, new connections {:.2}x (target >= 0.95); / direct: {:.2}x, {:.2}x (target >= 0.9)",
            k.rps / shoal_k.rps,
            c.rps / shoal_c.rps,
            k.rps / direct_k.rps,
            c.rps / direct_c.rps,
        );
    }
    // The tasks see the client's own address on both shoal rows (tunnel
    // return is the default; issue 16): compare with the SNAT figures of
    // earlier runs in bench/RESULTS.md.
    let (_, dsr_k, dsr_c) = &results[7];
    println!(
        "shoal dsr / direct: keep-alive {:.2}x, new connections {:.2}x; dsr / shoal (tunnel return): {:.2}x / {:.2}x",
        dsr_k.rps / direct_k.rps,
        dsr_c.rps / direct_c.rps,
        dsr_k.rps / shoal_k.rps,
        dsr_c.rps / shoal_c.rps
    );
    for (name, k, c) in &results[3..5] {
        println!(
            "shoal / {name}: keep-alive {:.2}x, new connections {:.2}x, p99 {:.2}x / {:.2}x (lower is better; target >= 1 on throughput)",
            shoal_k.rps / k.rps,
            shoal_c.rps / c.rps,
            shoal_k.p99_ms / k.p99_ms,
            shoal_c.p99_ms / c.p99_ms,
        );
    }

    // Connection latency against the number of published services.
    println!("\nconnection latency (1 client, Connection: close) vs published services:");
    println!(
        "{:>9} {:>18} {:>18}",
        "services", "shoal p99 ms", "iptables p99 ms"
    );
    // iptables first (see above), then Shoal, which creates the services.
    // Shoal's connections just now used the same ingress address and
    // client ports: their TIME_WAIT sockets on the tasks must expire first
    // (iptables' NAT cannot know of them, and keeps the client's port).
    std::thread::sleep(Duration::from_secs(65));
    peers_on()?;
    let mut iptables_p99 = Vec::new();
    for &n in &args.services {
        // n-1 rules for other services ahead of the measured ones.
        iptables(&["-t", "nat", "-F", "SHOAL_BENCH"])?;
        let mut restore = String::from("*nat\n");
        for i in 1..n {
            restore.push_str(&format!(
                "-A SHOAL_BENCH -d {ENTRY_ADDR}/32 -p tcp -m tcp --dport {} -j DNAT --to-destination {}:80\n",
                20000 + i,
                tasks[0]
            ));
        }
        for (every, to) in [("2", &tasks[0]), ("1", &tasks[1])] {
            restore.push_str(&format!(
                "-A SHOAL_BENCH -d {ENTRY_ADDR}/32 -p tcp -m tcp --dport 9001 -m statistic --mode nth --every {every} --packet 0 -j DNAT --to-destination {to}:80\n"
            ));
        }
        restore.push_str("COMMIT\n");
        let file = dir.path().join("rules");
        std::fs::write(&file, restore)?;
        in_netns(
            &entry_ns,
            "iptables-restore",
            &["-w", "--noflush", &file.display().to_string()],
        )?;
        std::thread::sleep(Duration::from_secs(1));
        iptables_p99.push(median_p99("http://192.0.2.13:9001/")?);
    }
    peers_off()?;
    std::thread::sleep(Duration::from_secs(65)); // TIME_WAIT, as above
    let mut created = 1;
    let entry_maps = Lab::bpffs_root(&lab.host(ENTRY)?);
    for (&n, iptables_ms) in args.services.iter().zip(iptables_p99) {
        let started = std::time::Instant::now();
        create_idle_services(&lab, bins, created..n)?;
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
        let shoal_ms = median_p99("http://192.0.2.13:8080/")?;
        println!("{n:>9} {shoal_ms:>18.3} {iptables_ms:>18.3}");
    }
    let _ = in_netns(
        &entry_ns,
        "iptables",
        &["-w", "-t", "nat", "-F", "SHOAL_BENCH"],
    );
    peers_off()?;
    if let Some(old) = &args.baseline_bin_dir {
        crate::mesh_baseline::compare(&lab, old, (args.connections, args.seconds), &results)?;
    }
    println!("\nThe lab cluster stays up (cargo xtask lab down).");
    Ok(())
}
