//! Operating a cluster on real agents, containers and the eBPF mesh:
//! tasks stay put when a node comes back (Swarm's default), move onto it
//! when asked (`service rebalance`, `swarm update --rebalance
//! on-node-ready`) as a rolling update with no failed connection through
//! the mesh; `shoal events` replays and streams what happened; `node ps
//! self` lists the tasks of the manager's own node.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use shoal_tests::{bin, client, lab_cluster::LabCluster};

const WAIT: Duration = Duration::from_secs(60);

/// Running tasks of `service` by node hostname.
fn spread(cluster: &LabCluster, service: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for row in cluster
        .json_rows(&["service", "ps", service])
        .unwrap_or_default()
    {
        let running = row["DesiredState"] == "Running"
            && row["CurrentState"]
                .as_str()
                .is_some_and(|s| s.starts_with("Running"));
        if running {
            let node = row["Node"].as_str().unwrap_or("").to_owned();
            *out.entry(node).or_default() += 1;
        }
    }
    out
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

/// Fresh connections through n1's published port from the lab's client,
/// one every 20 ms, each allowed 5 s.
fn traffic(count: usize) -> Result<Child> {
    client::http_stream("http://192.0.2.11:8080/", count)
}

/// (answered, failed lines) of a finished stream.
fn finish(stream: Child) -> Result<(usize, Vec<String>)> {
    let out = stream.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ok = text.lines().filter(|l| l.contains(" 200 ")).count();
    let failed = text
        .lines()
        .filter(|l| !l.contains(" 200 "))
        .map(str::to_owned)
        .collect();
    Ok((ok, failed))
}

/// n3's Shoal processes killed until the others have taken its tasks,
/// then started again (back Ready).
fn n3_away_and_back(cluster: &LabCluster) -> Result<()> {
    cluster.lab.kill_node("n3")?;
    cluster.wait("web's 6 tasks on n1 and n2", WAIT, || {
        (spread(cluster, "web") == counts(&[("n1", 3), ("n2", 3)])).then_some(())
    })?;
    cluster.lab.start_node("n3")?;
    Ok(())
}

#[test]
fn tasks_move_onto_a_returning_node_only_when_asked_and_no_connection_fails() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let start_ns = now_ns();
    cluster.shoal(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "6",
        "--publish",
        "8080:80",
        "--update-parallelism",
        "1",
        "--update-delay",
        "1s",
        "--update-order",
        "start-first",
        "shoal/echo:1",
    ])?;
    cluster.wait("web spread 2/2/2", WAIT, || {
        (spread(&cluster, "web") == counts(&[("n1", 2), ("n2", 2), ("n3", 2)])).then_some(())
    })?;

    // `node ps self`: the tasks of the node whose manager answers (n1).
    let mine = cluster.shoal(&["node", "ps", "self", "--format", "{{.Node}}"])?;
    ensure!(
        mine.lines().count() == 2 && mine.lines().all(|l| l == "n1"),
        "node ps self: {mine}"
    );

    // Swarm's default: a node that comes back gets nothing.
    n3_away_and_back(&cluster)?;
    std::thread::sleep(Duration::from_secs(8));
    let after = spread(&cluster, "web");
    ensure!(
        after == counts(&[("n1", 3), ("n2", 3)]),
        "tasks moved with rebalance off: {after:?}\n{}\n{}",
        cluster.shoal(&["service", "ps", "web"])?,
        cluster.shoal(&["node", "ls"])?
    );

    // Asked for, under traffic: a rolling update moves two tasks to n3.
    let stream = traffic(600)?;
    std::thread::sleep(Duration::from_secs(1));
    let out = cluster.shoal(&["service", "rebalance", "web"])?;
    ensure!(out.starts_with("web\n"), "{out}");
    cluster.wait("web rebalanced 2/2/2", WAIT, || {
        (spread(&cluster, "web") == counts(&[("n1", 2), ("n2", 2), ("n3", 2)])).then_some(())
    })?;
    let (ok, failed) = finish(stream)?;
    println!(
        "service rebalance: {ok} connections answered, {} failed",
        failed.len()
    );
    ensure!(
        failed.is_empty() && ok == 600,
        "{} failed: {failed:?}",
        failed.len()
    );
    let again = cluster.shoal(&["service", "rebalance", "web"])?;
    ensure!(again.contains("nothing to move"), "{again}");

    // The cluster setting: a node that becomes Ready gets its share back.
    cluster.shoal(&["swarm", "update", "--rebalance", "on-node-ready"])?;
    n3_away_and_back(&cluster)?;
    let stream = traffic(600)?;
    cluster.wait("web rebalanced on its own", WAIT, || {
        (spread(&cluster, "web") == counts(&[("n1", 2), ("n2", 2), ("n3", 2)])).then_some(())
    })?;
    let (ok, failed) = finish(stream)?;
    println!(
        "on-node-ready: {ok} connections answered, {} failed",
        failed.len()
    );
    ensure!(
        failed.is_empty() && ok == 600,
        "{} failed: {failed:?}",
        failed.len()
    );

    // `shoal events --since … --until …` replays what happened: n3 down
    // and ready again, the rebalances as service updates.
    let since = (start_ns as f64 / 1e9).to_string();
    let now = (now_ns() as f64 / 1e9).to_string();
    let nodes = cluster.shoal(&[
        "events",
        "--since",
        &since,
        "--until",
        &now,
        "--filter",
        "type=node",
        "--filter",
        "node=n3",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}} {{index .Actor.Attributes \"state.new\"}}",
    ])?;
    let lines: Vec<&str> = nodes.lines().collect();
    ensure!(
        lines.contains(&"update n3 down") && lines.contains(&"update n3 ready"),
        "node events: {nodes}"
    );
    let services = cluster.shoal(&[
        "events",
        "--since",
        &since,
        "--until",
        &now,
        "--filter",
        "service=web",
        "--filter",
        "type=service",
    ])?;
    ensure!(
        services.contains(" service create ") && services.contains("(name=web)"),
        "service events: {services}"
    );
    ensure!(
        services.contains("updatestate.new=updating"),
        "no rolling update in the events: {services}"
    );

    // Live: `shoal events` prints a change as it happens.
    let mut follow = Command::new(bin("shoal")?)
        .args(["-H", &cluster.lab_host()?])
        .args(["events", "--filter", "type=service", "--format", "json"])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = follow.stdout.take().context("stdout")?;
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    cluster.shoal(&["service", "scale", "--detach", "web=7"])?;
    // Other service events (the last update completing) may come first.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = lines_rx.recv_timeout(left) else {
            break false;
        };
        let event: serde_json::Value = serde_json::from_str(&line)?;
        ensure!(
            event["Type"] == "service",
            "a filtered-out event came: {line}"
        );
        seen.push(line);
        if event["Action"] == "update" && event["Actor"]["Attributes"]["replicas.new"] == "7" {
            break true;
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    ensure!(
        found,
        "no live event for the scale within 10 s; got {seen:?}"
    );
    Ok(())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}
