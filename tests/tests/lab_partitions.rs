//! Partitions on the lab, under a steady client load: a node whose underlay
//! link is cut (the leader's, a follower manager's, a worker's) is the only
//! one marked `Down`; only its tasks are rescheduled, after the heartbeat
//! period × 3; requests entering at the other nodes fail only for the cut
//! node's tasks and only until they are replaced; after the heal the node
//! is `Ready` again within a heartbeat period and no task moves back.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use shoal_tests::{client, lab_cluster::LabCluster, topology};

/// The lab managers' heartbeat period (Swarm's default): a node is down
/// after 3 missed heartbeats.
const HEARTBEAT: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(60);

fn addr_of(node: &str) -> String {
    let index: usize = node.trim_start_matches('n').parse().unwrap_or(1);
    topology::Host::node(index).addr.to_string()
}

fn leader(cluster: &LabCluster) -> Result<String> {
    cluster
        .json_rows(&["node", "ls"])?
        .iter()
        .find(|r| r["ManagerStatus"] == "Leader")
        .and_then(|r| r["Hostname"].as_str().map(str::to_owned))
        .context("no leader in node ls")
}

/// A client in `shoal-client` opening a fresh connection to `node`:8080
/// every 50 ms; each answer's line is stamped as it arrives.
struct Load {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    reader: std::thread::JoinHandle<()>,
}

/// Each attempt's own time limit: a connection to a cut-off task fails
/// after this long.
const ATTEMPT: Duration = Duration::from_millis(1000);

impl Load {
    fn start(node: &str, count: usize) -> Result<Self> {
        let mut child = client::toolbox(&["--timeout-ms", &ATTEMPT.as_millis().to_string()])?
            .args(["http-get", &format!("http://{}:8080/", addr_of(node))])
            .args(["--count", &count.to_string(), "--interval-ms", "50"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("toolbox stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((Instant::now(), line));
            }
        });
        Ok(Self {
            child,
            lines,
            reader,
        })
    }

    /// Stops the client; returns (answered, failed at these instants).
    fn stop(mut self) -> (usize, Vec<Instant>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.reader.join();
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let ok = lines.iter().filter(|(_, l)| l.contains(" 200 ")).count();
        let failed = lines
            .iter()
            .filter(|(_, l)| !l.contains(" 200 "))
            .map(|(at, _)| *at)
            .collect();
        (ok, failed)
    }
}

/// Cuts `node` off under load entering at the other nodes and checks the
/// whole cycle; returns a line for the test's report.
fn cut_and_heal(cluster: &LabCluster, node: &str, replicas: usize) -> Result<String> {
    let others: Vec<String> = ["n1", "n2", "n3"]
        .into_iter()
        .filter(|n| *n != node)
        .map(str::to_owned)
        .collect();
    let via = others
        .iter()
        .find(|n| {
            let index: usize = n.trim_start_matches('n').parse().unwrap_or(1);
            shoal_lab::cluster::manager_socket(&cluster.lab, &topology::Host::node(index)).exists()
        })
        .context("a manager on a node that stays connected")?
        .clone();
    let via = via.as_str();
    let before = cluster.running_task_nodes_via(via, "web")?;
    ensure!(before.len() == replicas, "web before the cut: {before:?}");
    let loads = others
        .iter()
        .map(|n| Load::start(n, 2000))
        .collect::<Result<Vec<_>>>()?;
    std::thread::sleep(Duration::from_secs(1));

    cluster.lab.isolate(node)?;
    let cut = Instant::now();
    // Only the cut node goes down, and not before its heartbeats are missed.
    let down_after = cluster.wait(&format!("{node} Down"), WAIT, || {
        let now = cluster.node_statuses_via(via).ok()?;
        now.get(node).is_some_and(|s| s == "Down").then_some(now)
    });
    let down_after = match down_after {
        Ok(now) => {
            for other in &others {
                ensure!(
                    now.get(other).is_some_and(|s| s == "Ready"),
                    "{other} is not Ready while only {node} is cut: {now:?}"
                );
            }
            cut.elapsed()
        }
        Err(e) => {
            cluster.lab.heal(node)?;
            return Err(e.context(format!("node ls: {:?}", cluster.node_statuses_via(via))));
        }
    };
    ensure!(
        down_after >= HEARTBEAT * 2,
        "{node} was marked down {down_after:?} after the cut, before missing its heartbeats"
    );
    // Its tasks, and only those, are replaced on the other nodes.
    let replaced = cluster.wait("the cut node's tasks replaced", WAIT, || {
        let now = cluster.running_task_nodes_via(via, "web").ok()?;
        (now.len() == replicas && now.values().all(|n| n != node)).then_some(now)
    })?;
    let rescheduled_after = cut.elapsed();
    for (task, on) in &before {
        if on != node {
            ensure!(
                replaced.get(task) == Some(on),
                "task {task} on {on} (not cut) was moved: {replaced:?}"
            );
        }
    }
    // Traffic keeps flowing under the new placement before the heal.
    std::thread::sleep(Duration::from_secs(3));
    let mut failures = Vec::new();
    let mut answered = 0;
    for load in loads {
        let (ok, failed) = load.stop();
        answered += ok;
        failures.extend(failed);
    }
    failures.sort();
    ensure!(answered > 0, "no request was answered");
    let window = match (failures.first(), failures.last()) {
        (Some(first), Some(last)) => {
            // A failure is stamped when it ends: ATTEMPT after it began.
            ensure!(
                *last <= cut + rescheduled_after + ATTEMPT + Duration::from_secs(2),
                "requests still failed {:?} after the cut, {rescheduled_after:?} being when the tasks were replaced",
                *last - cut
            );
            ensure!(
                failures.len() * 2 < answered,
                "{} of {} requests failed: more than the cut node's share",
                failures.len(),
                answered + failures.len()
            );
            format!(
                "{} failed from +{:?} to +{:?}",
                failures.len(),
                first.saturating_duration_since(cut + ATTEMPT),
                *last - cut
            )
        }
        _ => "none failed".to_owned(),
    };

    cluster.lab.heal(node)?;
    let healed = Instant::now();
    cluster.wait(&format!("{node} Ready after the heal"), WAIT, || {
        let now = cluster.node_statuses_via(via).ok()?;
        now.values().all(|s| s == "Ready").then_some(())
    })?;
    let ready_after = healed.elapsed();
    ensure!(
        ready_after <= HEARTBEAT + Duration::from_secs(2),
        "{node} took {ready_after:?} after the heal to be Ready (a heartbeat period is {HEARTBEAT:?})"
    );
    // Nothing moves back (Swarm's rule): the placement stays as it is.
    std::thread::sleep(HEARTBEAT);
    let after = cluster.running_task_nodes_via(via, "web")?;
    ensure!(
        after == replaced,
        "tasks moved after the heal: {replaced:?} -> {after:?}"
    );
    Ok(format!(
        "{node}: down after {down_after:?}, tasks replaced after {rescheduled_after:?}, {answered} requests answered, {window}, Ready {ready_after:?} after the heal"
    ))
}

fn create_web(cluster: &LabCluster, replicas: usize) -> Result<()> {
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        &replicas.to_string(),
        "--publish",
        "8080:80",
        "shoal/echo:1",
    ])?;
    cluster.wait(&format!("{replicas} running web tasks"), WAIT, || {
        let now = cluster.running_task_nodes_via("n1", "web").ok()?;
        let nodes: BTreeSet<&String> = now.values().collect();
        (now.len() == replicas && nodes.len() == 3).then_some(())
    })?;
    Ok(())
}

#[test]
fn a_cut_off_manager_node_leader_or_follower_is_the_only_node_down() -> Result<()> {
    let cluster = LabCluster::start(3, true)?;
    create_web(&cluster, 6)?;
    let mut report = Vec::new();
    let first = leader(&cluster)?;
    report.push(format!(
        "leader {}",
        cut_and_heal(&cluster, &first, 6).with_context(|| format!("cutting the leader {first}"))?
    ));
    // The cluster is whole again: now the node of a follower that runs
    // tasks (the healed node got none back).
    let now = leader(&cluster)?;
    let placed = cluster.running_task_nodes_via(&now, "web")?;
    let follower = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != now && placed.values().any(|on| on == n))
        .context("a follower that runs tasks")?;
    report.push(format!(
        "follower {}",
        cut_and_heal(&cluster, follower, 6)
            .with_context(|| format!("cutting the follower {follower}"))?
    ));
    eprintln!("{}", report.join("\n"));
    Ok(())
}

#[test]
fn a_cut_off_worker_is_the_only_node_down() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    create_web(&cluster, 6)?;
    let line = cut_and_heal(&cluster, "n3", 6)?;
    eprintln!("worker {line}");
    Ok(())
}

/// What one stream of CLI calls through one manager saw.
#[derive(Debug, Default)]
struct Calls {
    ok: usize,
    /// Calls that started after the leader was killed and still failed.
    failed_after_kill: Vec<String>,
    /// Calls in flight at the kill that failed (their outcome is unknown).
    failed_in_flight: Vec<String>,
    slowest: Duration,
}

/// Writes (`secret create`) or reads (`secret ls`) through the manager on
/// `via` until `stop`, with the real CLI and its retries.
fn cli_calls(
    bins: std::path::PathBuf,
    socket: std::path::PathBuf,
    write: bool,
    killed_at: Arc<Mutex<Option<Instant>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Calls {
    let mut calls = Calls::default();
    let via = socket
        .parent()
        .and_then(|p| p.file_name())
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A file of this stream's own: the streams run in one process, and one
    // shared file, rewritten as each started, was read empty by another's
    // first `secret create` ("data must not be empty", CI 2026-12-04).
    let data = std::env::temp_dir().join(format!("shoal-secret-{}-{via}", std::process::id()));
    std::fs::write(&data, b"x").expect("writing the secret's data file");
    let host = format!("unix://{}", socket.display());
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let name = format!("s-{via}-{n}");
        let mut command = Command::new(bins.join("shoal"));
        command.args(["--host", &host]);
        if write {
            command.args(["secret", "create", &name]).arg(&data);
        } else {
            command.args(["secret", "ls", "-q"]);
        }
        let started = Instant::now();
        let output = command.output();
        calls.slowest = calls.slowest.max(started.elapsed());
        match output {
            Ok(o) if o.status.success() => calls.ok += 1,
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                let line = format!("call {n} ({:?}): {why}", started.elapsed());
                let killed = *killed_at.lock().unwrap_or_else(|e| e.into_inner());
                match killed {
                    Some(at) if started >= at => calls.failed_after_kill.push(line),
                    _ => calls.failed_in_flight.push(line),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    calls
}

#[test]
fn cli_calls_through_every_manager_succeed_while_the_leader_is_killed() -> Result<()> {
    let cluster = LabCluster::start(3, false)?;
    let old = cluster.wait("a leader", WAIT, || leader(&cluster).ok())?;
    let killed_at = Arc::new(Mutex::new(None));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut streams = Vec::new();
    for node in ["n1", "n2", "n3"].into_iter().filter(|n| *n != old) {
        let index: usize = node.trim_start_matches('n').parse().unwrap_or(1);
        let socket = shoal_lab::cluster::manager_socket(&cluster.lab, &topology::Host::node(index));
        for write in [true, false] {
            let (bins, socket, killed_at, stop) = (
                cluster.bins.clone(),
                socket.clone(),
                killed_at.clone(),
                stop.clone(),
            );
            streams.push((
                format!("{} via {node}", if write { "writes" } else { "reads" }),
                std::thread::spawn(move || cli_calls(bins, socket, write, killed_at, stop)),
            ));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    *killed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    cluster.lab.kill_node(&old)?;
    let new = cluster.wait("a new leader", WAIT, || {
        leader(&cluster).ok().filter(|l| *l != old)
    })?;
    // Calls go on under the new leader for a while.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (name, stream) in streams {
        let calls = stream
            .join()
            .map_err(|_| anyhow::anyhow!("{name} panicked"))?;
        report.push(format!(
            "{name}: {} ok, slowest {:?}, failed after the kill {:?}, in flight {:?}",
            calls.ok, calls.slowest, calls.failed_after_kill, calls.failed_in_flight
        ));
        if calls.ok == 0 || !calls.failed_after_kill.is_empty() || calls.failed_in_flight.len() > 1
        {
            failures.push(name);
        }
    }
    eprintln!("leader {old} killed, {new} elected\n{}", report.join("\n"));
    ensure!(failures.is_empty(), "{failures:?} failed: {report:#?}");
    cluster.lab.start_node(&old)?;
    Ok(())
}
