//! `shoal service logs` on the lab, flag by flag, as Docker's CLI prints
//! them: `SERVICE.SLOT.TASK@NODE    | LINE` (stderr lines on stderr),
//! `-t`, `--since`, `--tail`, `-f`, `--no-task-ids`, `--no-trunc`, `--raw`,
//! `--details`, and a task instead of a service.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, ensure};
use shoal_tests::lab_cluster::LabCluster;

const WAIT: Duration = Duration::from_secs(60);

/// `shoal service logs ARGS`: (stdout, stderr), or the error's text.
fn logs(cluster: &LabCluster, args: &[&str]) -> Result<(String, String)> {
    let host = cluster.lab_host()?;
    let output = Command::new(cluster.bins.join("shoal"))
        .args(["--host", &host, "service", "logs"])
        .args(args)
        .output()?;
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    ensure!(output.status.success(), "service logs {args:?}: {err}");
    Ok((out, err))
}

/// The part before `    | ` of each line.
fn prefixes(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.split_once("    | ").map(|(p, _)| p))
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[test]
fn service_logs_take_dockers_flags_and_print_dockers_prefixes() -> Result<()> {
    shoal_tests::require_images()?;
    let cluster = LabCluster::start(1, true)?;
    // shoal-echo says hello on stderr; the ticker writes a line to stdout
    // every 200 ms (a refused connection each time).
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "talk",
        "--replicas",
        "3",
        "shoal/echo:1",
    ])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "ticker",
        "shoal/toolbox",
        "http-get",
        "http://127.0.0.1:9/",
        "--count",
        "100000",
        "--interval-ms",
        "200",
    ])?;
    let (_, err) = cluster.wait("a line from each talk task", WAIT, || {
        let (out, err) = logs(&cluster, &["talk"]).ok()?;
        let mut seen = prefixes(&err);
        seen.sort();
        seen.dedup();
        (seen.len() == 3).then_some((out, err))
    })?;
    // Docker's prefix: name, slot, 12-character task id, node; the line.
    for line in err.lines() {
        let (prefix, text) = line.split_once("    | ").context("a prefix")?;
        let (task, node) = prefix.split_once('@').context("an @")?;
        let parts: Vec<&str> = task.split('.').collect();
        ensure!(parts.len() == 3 && parts[0] == "talk", "prefix {prefix:?}");
        ensure!(
            ["1", "2", "3"].contains(&parts[1]) && parts[2].len() == 12,
            "{prefix:?}"
        );
        ensure!(node.starts_with('n'), "{prefix:?}");
        ensure!(text.starts_with("shoal-echo"), "{line:?}");
    }
    let (out, _) = logs(&cluster, &["talk"])?;
    ensure!(out.is_empty(), "stderr lines went to stdout: {out}");

    let (_, err) = logs(&cluster, &["--no-task-ids", "talk"])?;
    ensure!(
        prefixes(&err).iter().all(|p| p
            .split('@')
            .next()
            .is_some_and(|t| t.split('.').count() == 2)),
        "{err}"
    );
    let (_, err) = logs(&cluster, &["--no-trunc", "talk"])?;
    ensure!(
        prefixes(&err).iter().all(|p| p
            .split('@')
            .next()
            .and_then(|t| t.split('.').nth(2))
            .is_some_and(|id| id.len() == 25)),
        "{err}"
    );
    // -t: RFC 3339 with nine fraction digits, UTC, first.
    let (_, err) = logs(&cluster, &["-t", "talk"])?;
    for line in err.lines() {
        let (stamp, rest) = line.split_once(' ').context("a timestamp")?;
        ensure!(
            stamp.len() == 30 && stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
            "{line:?}"
        );
        ensure!(rest.starts_with("talk."), "{line:?}");
    }
    // --details: the driver's extra attributes (none here), then the line.
    let (_, err) = logs(&cluster, &["--details", "talk"])?;
    ensure!(
        err.lines().all(|l| l.contains("    |  shoal-echo")),
        "{err}"
    );
    // --raw: the lines as they are; with --details, the task's context first.
    let (_, err) = logs(&cluster, &["--raw", "talk"])?;
    ensure!(
        err.lines().count() == 3 && err.lines().all(|l| l.starts_with("shoal-echo")),
        "{err}"
    );
    let (_, err) = logs(&cluster, &["--raw", "--details", "talk"])?;
    ensure!(
        err.lines()
            .all(|l| l.starts_with("com.docker.swarm.node.id=")
                && l.contains(",com.docker.swarm.task.id=")),
        "{err}"
    );

    // A task instead of a service: its lines only.
    let task = cluster.shoal(&["service", "ps", "-q", "--no-trunc", "talk"])?;
    let task = task.lines().next().context("a talk task")?.to_owned();
    let (_, err) = logs(&cluster, &[&task[..8]])?;
    ensure!(
        err.lines().count() == 1 && prefixes(&err)[0].contains(&task[..12]),
        "{err}"
    );
    let failed = Command::new(cluster.bins.join("shoal"))
        .args(["--host", &cluster.lab_host()?, "service", "logs", "nope"])
        .output()?;
    let message = String::from_utf8_lossy(&failed.stderr);
    ensure!(
        !failed.status.success() && message.contains("no such task or service: nope"),
        "{message}"
    );

    // --tail and --since on the ticker's stream of lines. 60 lines are
    // about 12 s of them. The `--since 2s` window starts at a whole second
    // (up to 3 s back), and on a loaded CI machine each `service logs`
    // call takes a second or more. With 20 lines (4 s), CI once found 15 of
    // them in the window (2026-12-03).
    cluster.wait("ticker lines", WAIT, || {
        let (out, _) = logs(&cluster, &["ticker"]).ok()?;
        (out.lines().count() >= 60).then_some(())
    })?;
    let (out, _) = logs(&cluster, &["--tail", "2", "ticker"])?;
    ensure!(out.lines().count() == 2, "{out}");
    let (out, _) = logs(&cluster, &["--tail", "0", "ticker"])?;
    ensure!(out.is_empty(), "{out}");
    let (all, _) = logs(&cluster, &["ticker"])?;
    let (recent, _) = logs(&cluster, &["--since", "2s", "ticker"])?;
    let (recent_n, all_n) = (recent.lines().count(), all.lines().count());
    ensure!(
        recent_n > 0 && recent_n + 5 < all_n,
        "since 2s: {recent_n} of {all_n} lines"
    );
    let future = (unix_now() + 3600).to_string();
    let (out, _) = logs(&cluster, &["--since", &future, "ticker"])?;
    ensure!(out.is_empty(), "lines from the future: {out}");

    // -f: new lines keep coming.
    let mut follow = Command::new(cluster.bins.join("shoal"))
        .args([
            "--host",
            &cluster.lab_host()?,
            "service",
            "logs",
            "-f",
            "--tail",
            "0",
            "ticker",
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = follow.stdout.take().context("piped stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut followed = Vec::new();
    while followed.len() < 5 && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            followed.push(line);
        }
    }
    ensure!(followed.len() >= 5, "following gave {followed:?}");
    ensure!(
        followed.iter().all(|l| l.starts_with("ticker.1.")),
        "{followed:?}"
    );
    // As Docker's, following a service follows the task that replaces one.
    let first_task = prefixes(&followed[0])[0].to_owned();
    let container = shoal_tests::containers_of("ticker")?;
    shoal_tests::cmd::run(
        "docker",
        &["kill", container.first().context("the ticker's container")?],
    )?;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut replaced = None;
    while replaced.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500))
            && line.starts_with("ticker.1.")
            && !line.starts_with(&first_task)
        {
            replaced = Some(line);
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    ensure!(
        replaced.is_some(),
        "no line from the task replacing {first_task}"
    );
    Ok(())
}
