//! Health decides DNS too (issue 16, point 4), with real containers and
//! every node's DNS server: a task failing its health check leaves
//! `tasks.<service>` and a dnsrr service's own name on every node within
//! one check interval of its first failed check, and comes back within one
//! interval of its first passing one. Read from a toolbox container on
//! each node, all at once (one thread per node, asking from inside the
//! container's network namespace).

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use shoal_testbins::dns::{Answer, resolve_a};
use shoal_tests::{
    cmd, containers_of, get_in_container, lab_cluster::LabCluster, netns, toolbox_in,
};

const WAIT: Duration = Duration::from_secs(60);
/// The service's check interval.
const INTERVAL: Duration = Duration::from_secs(1);

/// What `name` resolves to from container `tb` (the node's DNS server).
fn resolve(tb: &str, name: &str) -> Result<BTreeSet<Ipv4Addr>> {
    let out = toolbox_in(tb, &["dns", name])?;
    ensure!(
        out.status.success() || out.status.code() == Some(3),
        "dns {name} in {tb}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Both names of the dnsrr service `web` from `tb`, which must agree.
fn answers(tb: &str) -> Result<BTreeSet<Ipv4Addr>> {
    let tasks = resolve(tb, "tasks.web")?;
    let name = resolve(tb, "web")?;
    ensure!(
        tasks == name,
        "tasks.web {tasks:?} and web {name:?} differ in {tb}"
    );
    Ok(tasks)
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// When each health check of a container ended (Unix ms) and its exit code.
fn checks_of(container: &str) -> Result<Vec<(u128, i64)>> {
    let out = cmd::stdout(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range .State.Health.Log}}{{.End.UnixNano}} {{.ExitCode}}\n{{end}}",
            container,
        ],
    )?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (end, code) = l.split_once(' ')?;
            Some((end.parse::<u128>().ok()? / 1_000_000, code.parse().ok()?))
        })
        .collect())
}

/// The first check of `container` ending at or after `since` (Unix ms)
/// with a zero (`passing`) or non-zero exit code.
fn first_check(container: &str, since: u128, passing: bool) -> Result<u128> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = checks_of(container)?
            .into_iter()
            .find(|(end, code)| *end >= since && (*code == 0) == passing);
        if let Some((end, _)) = found {
            return Ok(end);
        }
        ensure!(
            Instant::now() < deadline,
            "no {} check of {container} since {since}",
            if passing { "passing" } else { "failing" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asks a toolbox container's DNS server from inside its network namespace
/// (no `docker exec`, whose hundreds of milliseconds would blur the timing).
struct Asker {
    ns: String,
    server: SocketAddr,
}

impl Asker {
    fn of(container: &str) -> Result<Self> {
        let pid = shoal_tests::pid_of(container)?;
        let conf = std::fs::read_to_string(format!("/proc/{pid}/root/etc/resolv.conf"))?;
        let server = conf
            .lines()
            .find_map(|l| l.strip_prefix("nameserver "))
            .and_then(|ip| ip.trim().parse::<Ipv4Addr>().ok())
            .with_context(|| format!("no nameserver in {container}'s resolv.conf: {conf}"))?;
        Ok(Self {
            ns: format!("/proc/{pid}/ns/net"),
            server: SocketAddr::from((server, 53)),
        })
    }

    fn tasks(&self) -> Result<BTreeSet<Ipv4Addr>> {
        let server = self.server;
        let answer = netns::run_in_path(&self.ns, move || {
            resolve_a(server, "tasks.web", Duration::from_secs(2))
        })?
        .map_err(|e| anyhow::anyhow!("asking {server} for tasks.web: {e:?}"))?;
        match answer {
            Answer::Addresses(addrs) => Ok(addrs.into_iter().collect()),
            other => anyhow::bail!("{server} answered tasks.web with {other:?}"),
        }
    }
}

/// Polls `tasks.web` on every toolbox at once (a thread each), runs
/// `toggle`, and returns, per toolbox, the Unix ms at which `addr`'s
/// presence became `present` (the end of the first lookup that saw it).
fn when_everywhere(
    toolboxes: &[Asker],
    addr: Ipv4Addr,
    present: bool,
    toggle: impl FnOnce() -> Result<()>,
) -> Result<Vec<u128>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = toolboxes
            .iter()
            .map(|tb| {
                scope.spawn(move || -> Result<u128> {
                    let deadline = Instant::now() + WAIT;
                    loop {
                        let seen = tb.tasks()?;
                        let at = unix_ms();
                        if seen.contains(&addr) == present {
                            return Ok(at);
                        }
                        ensure!(
                            Instant::now() < deadline,
                            "{}: {addr} still {} in {seen:?}",
                            tb.ns,
                            if present { "missing" } else { "there" }
                        );
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        // Every poller under way before the health changes.
        std::thread::sleep(Duration::from_millis(500));
        let toggled = toggle();
        let times: Result<Vec<u128>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a lookup thread panicked"))?
            })
            .collect();
        toggled?;
        times
    })
}

/// The task name the echo at `addr` answers with, asked from `tb`.
fn task_at(tb: &str, addr: Ipv4Addr) -> Result<String> {
    let out = toolbox_in(tb, &["http-get", &format!("http://{addr}/")])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let json: serde_json::Value = serde_json::from_str(text.splitn(3, ' ').nth(2).unwrap_or(""))
        .with_context(|| format!("not an answer from {addr}: {text}"))?;
    Ok(json["task"].as_str().unwrap_or("").to_owned())
}

#[test]
fn a_failing_task_leaves_dns_on_every_node_and_comes_back() -> Result<()> {
    shoal_tests::require_images()?;
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&["network", "create", "dnsnet"])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "--network",
        "dnsnet",
        "--endpoint-mode",
        "dnsrr",
        "--health-cmd",
        r#"["CMD","/echo","healthcheck"]"#,
        "--health-interval",
        "1s",
        // High enough that the flap does not get the task replaced.
        "--health-retries",
        "30",
        "shoal/echo:1",
    ])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "tb",
        "--mode",
        "global",
        "--network",
        "dnsnet",
        "shoal/toolbox",
    ])?;
    let toolboxes = cluster.wait("a toolbox on each of the 3 nodes", WAIT, || {
        containers_of("tb").ok().filter(|c| c.len() == 3)
    })?;
    let all = cluster.wait("3 healthy tasks in every node's DNS", WAIT, || {
        let first = answers(&toolboxes[0]).ok()?;
        let same = toolboxes[1..]
            .iter()
            .all(|tb| answers(tb).ok().as_ref() == Some(&first));
        (first.len() == 3 && same).then_some(first)
    })?;
    let container = containers_of("web")?.pop().context("no web container")?;
    let askers = toolboxes
        .iter()
        .map(|tb| Asker::of(tb))
        .collect::<Result<Vec<_>>>()?;

    let (_, body) = get_in_container(&container, "/")?;
    let task: serde_json::Value = serde_json::from_str(&body)?;
    let task = task["task"].as_str().context("no task name")?.to_owned();
    let mut failing = None;
    for addr in &all {
        if task_at(&toolboxes[0], *addr)? == task {
            failing = Some(*addr);
        }
    }
    let failing = failing.with_context(|| format!("no address of {all:?} answers as {task}"))?;

    let toggled = unix_ms();
    let gone = when_everywhere(&askers, failing, false, || {
        let (status, _) = get_in_container(&container, "/healthz/fail")?;
        ensure!(status == 200, "/healthz/fail answered {status}");
        Ok(())
    })?;
    let failed = first_check(&container, toggled, false)?;
    let left_after = gone
        .iter()
        .max()
        .copied()
        .unwrap_or(0)
        .saturating_sub(failed);
    println!(
        "{task} ({failing}): first failed check at {failed}, out of every node's DNS {left_after} ms later"
    );
    ensure!(
        left_after < INTERVAL.as_millis(),
        "{failing} still answered {left_after} ms after its failed check (interval {INTERVAL:?})"
    );
    // It stays out while it fails, and the others stay in.
    std::thread::sleep(2 * INTERVAL);
    for tb in &toolboxes {
        let now = answers(tb)?;
        let expected: BTreeSet<Ipv4Addr> = all.iter().copied().filter(|a| *a != failing).collect();
        ensure!(
            now == expected,
            "while {failing} fails, {tb} answers {now:?}"
        );
    }

    let toggled = unix_ms();
    let back = when_everywhere(&askers, failing, true, || {
        get_in_container(&container, "/healthz/pass").map(|_| ())
    })?;
    let passed = first_check(&container, toggled, true)?;
    let back_after = back
        .iter()
        .max()
        .copied()
        .unwrap_or(0)
        .saturating_sub(passed);
    println!(
        "{failing}: passing again at {passed}, back in every node's DNS {back_after} ms later"
    );
    ensure!(
        back_after < INTERVAL.as_millis(),
        "{failing} came back {back_after} ms after its passing check (interval {INTERVAL:?})"
    );
    for tb in &toolboxes {
        ensure!(
            answers(tb)? == all,
            "{tb} does not answer all 3 tasks again"
        );
    }
    Ok(())
}
