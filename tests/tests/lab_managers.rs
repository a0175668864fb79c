//! Three real `shoal-manager` processes on lab nodes, driven by the real
//! `shoal` CLI: Raft across the underlay, leader loss and return, a cut
//! link, and what the CLI prints. (Agents arrive in [3/6]; until then tasks
//! stay pending with the reason the scheduler gives.)

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use shoal_tests::lab_cluster::LabCluster;

/// Manager status per hostname, from `node ls`.
fn managers(cluster: &LabCluster) -> Result<Vec<(String, String)>> {
    Ok(cluster
        .json_rows(&["node", "ls"])?
        .iter()
        .map(|r| {
            (
                r["Hostname"].as_str().unwrap_or("").to_owned(),
                r["ManagerStatus"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect())
}

fn wait_for(
    cluster: &LabCluster,
    what: &str,
    timeout: Duration,
    check: impl Fn(&[(String, String)]) -> bool,
) -> Result<Vec<(String, String)>> {
    let result = cluster.wait(what, timeout, || {
        managers(cluster).ok().filter(|m| check(m))
    });
    result.map_err(|e| anyhow::anyhow!("{e}; last node ls: {:?}", managers(cluster)))
}

fn leader(managers: &[(String, String)]) -> Option<String> {
    let leaders: Vec<_> = managers.iter().filter(|(_, s)| s == "Leader").collect();
    (leaders.len() == 1).then(|| leaders[0].0.clone())
}

#[test]
fn three_managers_survive_leader_loss_restart_and_a_cut_link() -> Result<()> {
    let cluster = LabCluster::start(3, false)?;
    let first = wait_for(
        &cluster,
        "one leader and two reachable managers",
        Duration::from_secs(15),
        |m| {
            m.len() == 3
                && leader(m).is_some()
                && m.iter().filter(|(_, s)| s == "Reachable").count() == 2
        },
    )?;
    let table = cluster.shoal(&["node", "ls"])?;
    ensure!(table.starts_with("ID "), "node ls table:\n{table}");
    ensure!(table.contains("MANAGER STATUS"), "node ls table:\n{table}");

    // Writes through the CLI, then the tasks' pending reason.
    let id = cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "shoal/echo:1",
    ])?;
    ensure!(id.trim().len() == 25, "service create printed {id:?}");
    // The scheduler writes its reason moments after the create.
    let deadline = Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let rows = cluster.json_rows(&["service", "ps", "web"])?;
        let pending = |row: &Value| {
            row["Error"]
                .as_str()
                // Docker quotes task errors, in JSON too.
                .is_some_and(|e| e.trim_matches('"').starts_with("no suitable node"))
        };
        if rows.len() == 2 && rows.iter().all(pending) || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(rows.len() == 2, "service ps rows: {rows:?}");
    for row in &rows {
        ensure!(row["DesiredState"] == "Running", "{row}");
        ensure!(
            row["CurrentState"]
                .as_str()
                .is_some_and(|s| s.starts_with("Pending ")),
            "{row}"
        );
        ensure!(
            row["Error"]
                .as_str()
                // Docker quotes task errors, in JSON too.
                .is_some_and(|e| e.trim_matches('"').starts_with("no suitable node")),
            "{row}"
        );
    }
    let ls = cluster.json_rows(&["service", "ls"])?;
    ensure!(
        ls[0]["Replicas"] == "0/2" && ls[0]["Mode"] == "replicated",
        "{ls:?}"
    );

    // Leader loss: SIGKILL its node's processes; another manager leads.
    let old = leader(&first).context("a leader")?;
    cluster.lab.kill_node(&old)?;
    let killed_at = Instant::now();
    let after = wait_for(&cluster, "a new leader", Duration::from_secs(15), |m| {
        leader(m).is_some_and(|l| l != old)
            && m.iter().any(|(h, s)| *h == old && s == "Unreachable")
    })?;
    eprintln!(
        "new leader {:?} after {:?}",
        leader(&after),
        killed_at.elapsed()
    );
    ensure!(
        cluster.json_rows(&["service", "ls"])?.len() == 1,
        "the service was lost with the leader"
    );

    // The killed manager restarts from its data directory and rejoins.
    cluster.lab.start_node(&old)?;
    wait_for(
        &cluster,
        "all three managers reachable again",
        Duration::from_secs(15),
        |m| leader(m).is_some() && m.iter().filter(|(_, s)| s == "Reachable").count() == 2,
    )?;

    // A cut underlay link makes a follower unreachable; healing brings it back.
    let now = managers(&cluster)?;
    let follower = if leader(&now).as_deref() == Some("n2") {
        "n3"
    } else {
        "n2"
    };
    cluster.lab.isolate(follower)?;
    wait_for(
        &cluster,
        "the isolated follower unreachable",
        Duration::from_secs(15),
        |m| m.iter().any(|(h, s)| h == follower && s == "Unreachable"),
    )?;
    cluster.lab.heal(follower)?;
    wait_for(
        &cluster,
        "the healed follower reachable",
        Duration::from_secs(15),
        |m| m.iter().any(|(h, s)| h == follower && s == "Reachable"),
    )?;
    Ok(())
}

#[test]
fn the_cli_names_bad_input_and_hides_secret_data() -> Result<()> {
    let cluster = LabCluster::start(1, false)?;
    let err = cluster
        .shoal(&["service", "scale", "nope=3"])
        .unwrap_err()
        .to_string();
    ensure!(err.contains("service nope not found"), "{err}");
    let err = cluster
        .shoal(&[
            "service",
            "create",
            "--name",
            "g",
            "--mode",
            "global",
            "--replicas",
            "2",
            "shoal/echo:1",
        ])
        .unwrap_err()
        .to_string();
    ensure!(
        err.contains("--replicas can only be used with replicated or replicated-job mode"),
        "{err}"
    );
    let err = cluster
        .shoal(&[
            "service",
            "create",
            "--name",
            "c",
            "--constraint",
            "node.labels.zone=east",
            "shoal/echo:1",
        ])
        .unwrap_err()
        .to_string();
    ensure!(err.contains("expected KEY==VALUE"), "{err}");
    ensure!(
        cluster.shoal(&["service", "ls", "-q"])?.trim().is_empty(),
        "a refused service was written"
    );

    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), "hunter2")?;
    let path = file.path().display().to_string();
    cluster.shoal(&["secret", "create", "db_password", &path])?;
    let inspect = cluster.shoal(&["secret", "inspect", "db_password"])?;
    ensure!(
        !inspect.contains("hunter2") && !inspect.contains("aHVudGVyMg"),
        "secret data shown:\n{inspect}"
    );
    let rows = cluster.json_rows(&["secret", "ls"])?;
    ensure!(
        rows.len() == 1 && rows[0]["Name"] == "db_password",
        "{rows:?}"
    );
    let err = cluster
        .shoal(&["secret", "create", "db_password", &path])
        .unwrap_err()
        .to_string();
    ensure!(err.contains("already exists"), "{err}");

    let token = cluster.shoal(&["join-token", "-q", "worker"])?;
    ensure!(token.trim().starts_with("SHTKN-1-"), "{token}");
    let rotated = cluster.shoal(&["join-token", "--rotate", "-q", "worker"])?;
    ensure!(rotated != token, "rotation kept the token");
    Ok(())
}
