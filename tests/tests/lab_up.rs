//! `lab up` with a cluster (`Lab::start_cluster`, what `cargo xtask lab up`
//! and the demo call): a binary that is not built is refused by name before
//! anything starts, success means every manager answers and every node is
//! `Ready`, and a dead process fails the wait at once, with its log.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use shoal_tests::{NODES, bin, lab, lab_cluster::LabCluster};

/// The cluster's processes, as the lab records them.
fn cluster_processes(lab: &shoal_tests::Lab) -> Vec<String> {
    lab.state()
        .processes()
        .into_iter()
        .filter(|p| p.name.ends_with("-manager") || p.name.ends_with("-agent"))
        .map(|p| p.name)
        .collect()
}

fn bin_dir() -> Result<std::path::PathBuf> {
    Ok(bin("shoal-manager")?
        .parent()
        .context("bin dir")?
        .to_owned())
}

#[test]
fn a_binary_that_is_not_built_is_refused_by_name() -> Result<()> {
    let lab = lab()?;
    lab.stop_cluster()?;
    // Stops whatever the test started, however it ends.
    let cluster = LabCluster {
        lab,
        bins: bin_dir()?,
    };

    let empty = tempfile::tempdir()?;
    let err = cluster
        .lab
        .start_cluster(1, empty.path(), &mut |_| {})
        .expect_err("an empty bin dir must be refused");
    let want = format!("{}/shoal-manager is not built", empty.path().display());
    ensure!(err.to_string().contains(&want), "{err}");
    ensure!(
        cluster_processes(&cluster.lab).is_empty(),
        "something started: {:?}",
        cluster_processes(&cluster.lab)
    );

    // What a clean checkout had after building only the CLI and the
    // manager: the managers start, and the agents are refused by name
    // rather than started to fail in their logs.
    let partial = tempfile::tempdir()?;
    for name in ["shoal", "shoal-manager"] {
        std::os::unix::fs::symlink(bin(name)?, partial.path().join(name))?;
    }
    let err = cluster
        .lab
        .start_cluster(1, partial.path(), &mut |_| {})
        .expect_err("a missing agent must be refused");
    let want = format!("{}/shoal-agent is not built", partial.path().display());
    ensure!(err.to_string().contains(&want), "{err}");
    ensure!(
        cluster_processes(&cluster.lab) == ["n1-manager"],
        "{:?}",
        cluster_processes(&cluster.lab)
    );
    Ok(())
}

#[test]
fn a_cluster_is_up_only_when_every_node_is_ready() -> Result<()> {
    let lab = lab()?;
    lab.stop_cluster()?;
    let cluster = LabCluster {
        lab,
        bins: bin_dir()?,
    };
    let mut lines = Vec::new();
    cluster
        .lab
        .start_cluster(NODES, &cluster.bins, &mut |l| lines.push(l.to_owned()))?;

    // No wait here: the call returned, so every node is Ready now.
    let rows = cluster.json_rows(&["node", "ls"])?;
    let mut ready: Vec<&str> = rows
        .iter()
        .filter(|r| r["Status"] == "Ready")
        .filter_map(|r| r["Hostname"].as_str())
        .collect();
    ready.sort();
    let want: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
    ensure!(ready == want, "ready nodes {ready:?}, rows {rows:?}");
    for i in 1..=NODES {
        for line in [
            format!("manager on n{i} answers"),
            format!("node n{i} is Ready"),
        ] {
            ensure!(lines.contains(&line), "no {line:?} in {lines:?}");
        }
    }
    // Every manager answers through its own socket.
    for i in 1..=NODES {
        let host = cluster.lab.host(&format!("n{i}"))?;
        let socket = shoal_lab::cluster::manager_socket(&cluster.lab, &host);
        let out = shoal_tests::cmd::stdout(
            &bin("shoal")?.display().to_string(),
            &[
                "--host",
                &format!("unix://{}", socket.display()),
                "node",
                "ls",
                "-q",
            ],
        )?;
        ensure!(out.lines().count() == NODES, "n{i}: {out}");
    }
    Ok(())
}

#[test]
fn a_dead_agent_fails_the_wait_at_once_with_its_log() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let n2 = cluster.lab.host("n2")?;
    ensure!(cluster.lab.kill_node("n2")? == ["n2-agent"]);
    let started = Instant::now();
    let err = cluster
        .lab
        .wait_ready(&cluster.bins, &[n2], Duration::from_secs(60), &mut |_| {})
        .expect_err("a dead agent cannot be Ready")
        .to_string();
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "the wait took {:?}",
        started.elapsed()
    );
    let log = cluster.lab.state().logs().join("n2-agent.log");
    ensure!(err.starts_with("n2-agent (pid "), "{err}");
    ensure!(err.contains(") exited"), "{err}");
    ensure!(
        err.contains(&format!("--- last lines of {}:", log.display())),
        "{err}"
    );
    ensure!(Path::new(&log).exists(), "{}", log.display());
    Ok(())
}
