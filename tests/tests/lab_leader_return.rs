//! A manager that leads again after losing the lead without restarting
//! (chaos seed 12). The leader is cut off until the others have elected a
//! new one, marked it `Down` and replaced its tasks; healed, it follows.
//! Then the new leader is killed and the old one is made to win the
//! election (the third manager is down while a write commits without it,
//! so its log is behind). Under a steady load of new connections to the published port
//! through every node, nothing may fail and no node may be marked `Down`:
//! every agent stays connected to its data plane and registers again
//! within the heartbeat grace. Before the fix the returning leader counted
//! the sessions of its first term, whose last heartbeats dated from before
//! the cut, marked every node it had not heard from again within its first
//! check `Down`, replaced their tasks, and the mesh refused connections on
//! every node until the replacements ran.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use shoal_tests::{bin, lab_cluster::LabCluster, topology};

const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// The heartbeat period for the test (Swarm's is 5 s): a node is down after
/// three missed ones, 6 s.
const HEARTBEAT: &str = "2s";
const WAIT: Duration = Duration::from_secs(30);
/// New connections per second over the three nodes.
const RATE: u32 = 40;

fn addr_of(node: &str) -> String {
    let index: usize = node.trim_start_matches('n').parse().unwrap_or(1);
    topology::Host::node(index).addr.to_string()
}

/// New connections to the published port through every node, from the
/// lab's client (`shoal-toolbox load`), each line kept.
struct Load {
    child: Child,
    stdout: std::thread::JoinHandle<String>,
}

impl Load {
    fn start() -> Result<Self> {
        let entries: Vec<String> = NODES
            .iter()
            .map(|n| format!("{}:8080", addr_of(n)))
            .collect();
        let mut child = Command::new("ip")
            .args(["netns", "exec", topology::CLIENT_NS])
            .arg(bin("shoal-toolbox")?)
            .args(["--timeout-ms", "2000", "load"])
            .args(&entries)
            .args(["--rate", &RATE.to_string(), "--workers", "8"])
            .args(["--seconds", "120"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the load client")?;
        let mut pipe = child.stdout.take().context("the load client's stdout")?;
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        });
        Ok(Self { child, stdout })
    }

    /// Stops it (SIGTERM: it finishes the requests in flight); returns
    /// (answered, failed lines).
    fn finish(self) -> Result<(usize, Vec<String>)> {
        shoal_lab::cmd::run("kill", &["-TERM", &self.child.id().to_string()])?;
        let _ = self.child.wait_with_output();
        let text = self
            .stdout
            .join()
            .map_err(|_| anyhow::anyhow!("reading the load client's output failed"))?;
        let requests: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let failed: Vec<String> = requests
            .iter()
            .filter(|l| l.contains(" FAILED "))
            .map(|l| l.to_string())
            .collect();
        Ok((requests.len() - failed.len(), failed))
    }
}

#[test]
fn a_leader_back_for_a_second_term_marks_no_node_down_and_the_mesh_refuses_nothing() -> Result<()> {
    let began = Instant::now();
    let cluster = LabCluster::start(3, true)?;
    cluster.shoal(&["swarm", "update", "--dispatcher-heartbeat", HEARTBEAT])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "--publish",
        "8080:80",
        "--restart-delay",
        "1s",
        "shoal/echo:1",
    ])?;
    let first = cluster.wait("a leader", WAIT, || cluster.leader_via("n1"))?;
    let others: Vec<&str> = NODES.into_iter().filter(|n| *n != first).collect();
    cluster.wait("3 web tasks, one on each node", WAIT, || {
        let now = cluster.running_task_nodes_via(&first, "web").ok()?;
        (now.len() == 3 && NODES.iter().all(|n| now.values().any(|on| on == n))).then_some(())
    })?;

    // The leader is cut off: the others elect one of them, mark it down
    // and run its task elsewhere. Healed, it follows the new leader, its
    // first term's sessions still in its memory.
    cluster.lab.isolate(&first)?;
    let outcome = cluster.wait("the cut-off leader down, its task elsewhere", WAIT, || {
        let down = cluster
            .node_statuses_via(others[0])
            .ok()?
            .get(first.as_str())
            .is_some_and(|s| s == "Down");
        let now = cluster.running_task_nodes_via(others[0], "web").ok()?;
        (down && now.len() == 3 && now.values().all(|on| *on != first)).then_some(())
    });
    cluster.lab.heal(&first)?;
    outcome?;
    let second = cluster.wait("every node Ready, a leader", WAIT, || {
        let all_ready = cluster
            .node_statuses_via(&first)
            .ok()?
            .values()
            .all(|s| s == "Ready");
        cluster.leader_via(&first).filter(|_| all_ready)
    })?;
    ensure!(second != first, "{first} leads again right after the heal");
    let third = others
        .iter()
        .find(|n| **n != second)
        .context("a third manager")?
        .to_string();
    let tasks_before = cluster.running_task_nodes_via(&first, "web")?;
    ensure!(
        tasks_before.len() == 3,
        "web before the kill: {tasks_before:?}"
    );

    let load = Load::start()?;
    std::thread::sleep(Duration::from_secs(2));
    // The first is made to win the next election: the third manager is
    // killed, a write commits on the second and the first alone (the
    // third's log is now behind, so it can win no vote from the first),
    // the second leader is killed, and the third is started again from its
    // data directory to vote. Frozen (SIGSTOP) instead of killed, the third
    // still received the write into its sockets' buffers and appended it
    // when thawed: with equal logs either could win, and the third did
    // (CI, 2026-12-04).
    let third_manager = format!("{third}-manager");
    cluster.lab.kill_process(&third_manager)?;
    let data = std::env::temp_dir().join(format!("shoal-leader-return-{}", std::process::id()));
    std::fs::write(&data, b"x")?;
    let wrote = cluster
        .lab
        .shoal_via(
            &cluster.bins,
            &first,
            &["secret", "create", "behind", &data.display().to_string()],
        )
        .map(|_| ());
    let _ = std::fs::remove_file(&data);
    wrote?;
    cluster.lab.kill_process(&format!("{second}-manager"))?;
    let killed = Instant::now();
    cluster.lab.start_process(&third_manager)?;
    let back = cluster.wait("a new leader", WAIT, || {
        cluster.leader_via(&first).filter(|l| *l != second)
    })?;
    let elected = killed.elapsed();
    if back != first {
        let _ = load.finish();
        bail!(
            "{back} won the election, not {first}: the case under test (a leader's second term) did not happen"
        );
    }
    // Watch the nodes through the new leader's first checks (it marks a
    // node down after three missed heartbeats: 6 s) and a while after.
    let mut not_ready = Vec::new();
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(10) {
        if let Ok(now) = cluster.node_statuses_via(&first) {
            for (node, status) in now.iter().filter(|(_, s)| *s != "Ready") {
                not_ready.push(format!(
                    "{node} {status} at +{:.1} s",
                    killed.elapsed().as_secs_f64()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (answered, failed) = load.finish()?;
    let tasks_after = cluster.running_task_nodes_via(&first, "web")?;
    cluster.lab.start_process(&format!("{second}-manager"))?;
    eprintln!(
        "{first} led, was cut off and led again {elected:?} after {second} was killed; \
         {answered} requests answered, {} failed; nodes not Ready: {not_ready:?}; took {:?}",
        failed.len(),
        began.elapsed()
    );
    ensure!(answered > 0, "no request was answered");
    ensure!(
        not_ready.is_empty() && failed.is_empty(),
        "after the leader change, though every agent ran: nodes not Ready {not_ready:?}; \
         {} of {} new connections failed through healthy nodes to healthy tasks, the first: {:?}",
        failed.len(),
        answered + failed.len(),
        &failed[..failed.len().min(10)]
    );
    ensure!(
        tasks_after == tasks_before,
        "tasks moved though no node was lost: {tasks_before:?} -> {tasks_after:?}"
    );
    Ok(())
}
