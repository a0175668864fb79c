//! `shoal swarm leave` on lab hosts, as an operator runs it there: the
//! node leaves the cluster (gone from `node ls`, its tasks rescheduled),
//! its agent stops and what it built goes; a manager refuses without
//! `--force` in Docker's words and, with it, leaves Raft first.

use std::time::Duration;

use anyhow::{Result, ensure};
use shoal_lab::cluster;
use shoal_tests::{Lab, cmd, lab_cluster::LabCluster, topology::Host};

const WAIT: Duration = Duration::from_secs(60);

/// `shoal swarm leave ARGS` in `node`'s namespace, with the node's own
/// paths (its state dir, its eBPF tree, its manager's socket): (success,
/// stdout, stderr).
fn leave(cluster: &LabCluster, node: &str, args: &[&str]) -> Result<(bool, String, String)> {
    let host = cluster.lab.host(node)?;
    let dir = cluster::node_dir(&cluster.lab, &host);
    let socket = format!(
        "unix://{}",
        cluster::manager_socket(&cluster.lab, &host).display()
    );
    let output = cmd::in_netns(
        &host.netns,
        &cluster.bins.join("shoal").display().to_string(),
    )
    .args(["--host", &socket, "swarm", "leave"])
    .args(args)
    .env("SHOAL_STATEDIR", &dir)
    .env("SHOAL_CONFDIR", dir.join("etc"))
    .env("SHOAL_BPFFS", Lab::bpffs_root(&host))
    .output()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// `node ls` rows: (hostname, status).
fn nodes(cluster: &LabCluster) -> Result<Vec<(String, String)>> {
    Ok(cluster
        .json_rows(&["node", "ls"])?
        .iter()
        .map(|r| {
            (
                r["Hostname"].as_str().unwrap_or("").to_owned(),
                r["Status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect())
}

/// Running tasks of `service` by node hostname.
fn running_on(cluster: &LabCluster, service: &str) -> Option<Vec<String>> {
    let rows = cluster
        .json_rows(&["service", "ps", service, "-f", "desired-state=running"])
        .ok()?;
    let mut out: Vec<String> = rows
        .iter()
        .filter(|r| {
            r["CurrentState"]
                .as_str()
                .unwrap_or("")
                .starts_with("Running")
        })
        .map(|r| r["Node"].as_str().unwrap_or("").to_owned())
        .collect();
    out.sort();
    Some(out)
}

/// Task containers Docker runs for the node `node` (by the agent's label).
fn containers_of_node(node_id: &str) -> Result<usize> {
    let out = cmd::run(
        "docker",
        &[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.shoal.node.id={node_id}"),
        ],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

fn node_id(cluster: &LabCluster, hostname: &str) -> Result<String> {
    let rows = cluster.json_rows(&["node", "ls"])?;
    Ok(rows
        .iter()
        .find(|r| r["Hostname"] == hostname)
        .and_then(|r| r["ID"].as_str())
        .unwrap_or("")
        .to_owned())
}

#[test]
fn a_worker_and_a_manager_leave_the_cluster_and_their_tasks_move() -> Result<()> {
    shoal_tests::require_images()?;
    let cluster = LabCluster::start(2, true)?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "shoal/echo:1",
    ])?;
    cluster.wait("a task on each node", WAIT, || {
        (running_on(&cluster, "web")? == ["n1", "n2", "n3"]).then_some(())
    })?;

    // The worker n3 leaves: the cluster forgets it and moves its task.
    let n3 = Host::node(3);
    let n3_id = node_id(&cluster, "n3")?;
    ensure!(!n3_id.is_empty() && containers_of_node(&n3_id)? == 1);
    let (ok, out, err) = leave(&cluster, "n3", &[])?;
    ensure!(ok, "leave on n3: {err}");
    ensure!(out.trim_end().ends_with("Node left the swarm."), "{out}");
    ensure!(
        !nodes(&cluster)?.iter().any(|(h, _)| h == "n3"),
        "n3 still listed: {:?}",
        nodes(&cluster)?
    );
    cluster.wait("web's 3 tasks on n1 and n2", WAIT, || {
        let on = running_on(&cluster, "web")?;
        (on.len() == 3 && !on.iter().any(|n| n == "n3")).then_some(())
    })?;
    ensure!(
        containers_of_node(&n3_id)? == 0,
        "n3's task container is left"
    );
    let agent = cluster.lab.state().process("n3-agent");
    ensure!(!agent.is_some_and(|p| p.alive()), "n3's agent still runs");
    let n3_dir = cluster::node_dir(&cluster.lab, &n3);
    ensure!(
        !n3_dir.join("agent").join("certificates").exists(),
        "n3 kept its certificate"
    );
    let links = cmd::run("ip", &["-n", &n3.netns, "-o", "link"])?;
    ensure!(
        !String::from_utf8_lossy(&links.stdout).contains("shvx"),
        "n3 kept its overlay devices"
    );
    // Not in a swarm any more: leaving again says so.
    let (ok, _, err) = leave(&cluster, "n3", &[])?;
    ensure!(
        !ok && err.contains("This node is not part of a swarm"),
        "{err}"
    );

    // The manager n2 refuses without --force, in Docker's words...
    let (ok, _, err) = leave(&cluster, "n2", &[])?;
    ensure!(!ok, "a manager left without --force");
    ensure!(
        err.contains("You are attempting to leave the swarm on a node that is participating as a manager. Removing this node leaves 1 managers out of 2."),
        "{err}"
    );
    // ...and with it leaves Raft, then the cluster.
    let (ok, out, err) = leave(&cluster, "n2", &["--force"])?;
    ensure!(ok, "leave --force on n2: {err}");
    ensure!(out.trim_end().ends_with("Node left the swarm."), "{out}");
    ensure!(
        nodes(&cluster)? == [("n1".to_owned(), "Ready".to_owned())],
        "{:?}",
        nodes(&cluster)?
    );
    for process in ["n2-manager", "n2-agent"] {
        let record = cluster.lab.state().process(process);
        ensure!(!record.is_some_and(|p| p.alive()), "{process} still runs");
    }
    let n2_dir = cluster::node_dir(&cluster.lab, &Host::node(2));
    ensure!(
        !n2_dir.join("manager").exists(),
        "n2 kept its manager state"
    );
    cluster.wait("web's 3 tasks on n1", WAIT, || {
        (running_on(&cluster, "web")? == ["n1", "n1", "n1"]).then_some(())
    })?;
    // The one manager left still leads and writes.
    cluster.shoal(&["service", "scale", "web=1"])?;
    cluster.wait("web scaled down", WAIT, || {
        (running_on(&cluster, "web")?.len() == 1).then_some(())
    })?;
    Ok(())
}
