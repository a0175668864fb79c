//! Bad input cannot take a host down: real agents on every lab node, real
//! containers, the real CLI. A request over the cluster's limits is refused
//! naming the limit; a service asking more replicas than the nodes hold
//! runs what they hold, the rest waits as Pending saying why, and every
//! host, its Docker engine and the other services stay healthy.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use shoal_tests::{cmd, containers_of, lab_cluster::LabCluster, require_images};

const WAIT: Duration = Duration::from_secs(60);
/// Each lab node's agent holds at most this many tasks (`--max-tasks`).
const PER_NODE: usize = 3;
const NODES: usize = shoal_tests::NODES;

/// Task containers on the machine (every lab node's engine is the host's).
fn task_containers() -> Result<usize> {
    let filter = format!("label={}", shoal_lab::cluster::TASK_LABEL);
    Ok(cmd::stdout("docker", &["ps", "-q", "--filter", &filter])?
        .split_whitespace()
        .count())
}

/// The engine answers, within a few seconds.
fn engine_answers() -> Result<()> {
    let started = Instant::now();
    let version = cmd::stdout("docker", &["version", "--format", "{{.Server.Version}}"])?;
    ensure!(
        !version.trim().is_empty() && started.elapsed() < Duration::from_secs(5),
        "the Docker engine answered {version:?} after {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Threads on the host (the 4th field of /proc/loadavg: running/total).
fn host_threads() -> Result<u64> {
    let loadavg = std::fs::read_to_string("/proc/loadavg")?;
    let total = loadavg
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split('/').nth(1))
        .and_then(|n| n.parse().ok());
    match total {
        Some(n) => Ok(n),
        None => bail!("unexpected /proc/loadavg: {loadavg}"),
    }
}

/// (running, pending errors) of a service's tasks meant to run.
fn task_states(cluster: &LabCluster, service: &str) -> Result<(usize, Vec<String>)> {
    let rows = cluster.json_rows(&["service", "ps", "--no-trunc", service])?;
    let mut running = 0;
    let mut pending = Vec::new();
    for row in rows.iter().filter(|r| r["DesiredState"] == "Running") {
        let current = row["CurrentState"].as_str().unwrap_or("");
        if current.starts_with("Running") {
            running += 1;
        } else if current.starts_with("Pending") {
            // Docker's ERROR column quotes the message (`"…"`), --no-trunc or not.
            let error = row["Error"].as_str().unwrap_or("");
            pending.push(error.trim_matches('"').to_owned());
        }
    }
    Ok((running, pending))
}

#[test]
fn a_service_asking_more_than_the_nodes_hold_leaves_every_host_healthy() -> Result<()> {
    require_images()?;
    let max_tasks = PER_NODE.to_string();
    let cluster = LabCluster::start_with_agent_args(1, &["--max-tasks", &max_tasks])?;

    // Refused when asked, naming the limit; nothing is stored.
    let err = match cluster.shoal(&[
        "service",
        "create",
        "--name",
        "huge",
        "--replicas",
        "99999999999",
        "shoal/echo:1",
    ]) {
        Ok(out) => bail!("99999999999 replicas were accepted: {out}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains(
            "replicas 99999999999 exceeds the cluster's limit of 10000 replicas per service (shoal-manager --max-replicas-per-service)"
        ),
        "{err}"
    );
    ensure!(
        cluster.json_rows(&["service", "ls"])?.is_empty(),
        "a refused service was stored"
    );

    // Another service runs first, one task per node.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "keep",
        "--replicas",
        "3",
        "shoal/echo:1",
    ])?;
    cluster.wait("keep's 3 tasks running", WAIT, || {
        (task_states(&cluster, "keep").ok()?.0 == 3).then_some(())
    })?;
    let threads_before = host_threads()?;

    // Ten times what the nodes hold: what fits runs, the rest waits.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "flood",
        "--replicas",
        "30",
        "shoal/echo:1",
    ])?;
    let room = NODES * PER_NODE - 3;
    let message =
        format!("no suitable node ({NODES} nodes at their task limit of {PER_NODE} tasks)");
    cluster.wait(
        &format!("{room} flood tasks running, {} pending", 30 - room),
        WAIT,
        || {
            let (running, pending) = task_states(&cluster, "flood").ok()?;
            (running == room && pending.len() == 30 - room && pending.iter().all(|e| *e == message))
                .then_some(())
        },
    )?;
    // Watched for a while: the hosts stay healthy and nothing more starts.
    let watched = Instant::now();
    let mut most_threads = 0;
    while watched.elapsed() < Duration::from_secs(10) {
        engine_answers()?;
        let containers = task_containers()?;
        ensure!(
            containers <= NODES * PER_NODE,
            "{containers} task containers run; the nodes hold {}",
            NODES * PER_NODE
        );
        ensure!(
            containers_of("keep")?.len() == 3,
            "keep lost containers: {:?}",
            containers_of("keep")?
        );
        let nodes = cluster.json_rows(&["node", "ls"])?;
        ensure!(
            nodes.len() == NODES && nodes.iter().all(|n| n["Status"] == "Ready"),
            "a node is not ready: {nodes:?}"
        );
        let (running, pending) = task_states(&cluster, "flood")?;
        ensure!(
            running == room && pending.len() == 30 - room,
            "flood: {running} running, {} pending",
            pending.len()
        );
        most_threads = most_threads.max(host_threads()?);
        std::thread::sleep(Duration::from_millis(500));
    }
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")?
        .trim()
        .parse()?;
    eprintln!(
        "host threads: {threads_before} before the flood, at most {most_threads} during it (pid_max {pid_max})"
    );
    ensure!(
        most_threads < pid_max / 2,
        "{most_threads} threads on the host, of {pid_max} process ids"
    );
    ensure!(
        task_states(&cluster, "keep")?.0 == 3,
        "keep stopped running"
    );

    // Removed: every flood container goes, keep stays; then keep goes.
    cluster.shoal(&["service", "rm", "flood"])?;
    cluster.wait("flood's containers gone", WAIT, || {
        containers_of("flood").ok()?.is_empty().then_some(())
    })?;
    ensure!(containers_of("keep")?.len() == 3, "keep lost containers");
    cluster.shoal(&["service", "rm", "keep"])?;
    cluster.wait("every task container gone", WAIT, || {
        (task_containers().ok()? == 0).then_some(())
    })?;
    engine_answers()?;
    Ok(())
}
