//! Health decides who gets new connections, and stopping tasks drain
//! (issue 16, point 4), with real containers and a real client: the
//! lab's client drives ≥ 1,000 short requests a second (each on a new
//! connection, entering at every node) through a rolling update of a
//! 3-replica service and through a health flap of one task, and not one
//! fails. The flapping task gets no new connection once its first check
//! has failed, and gets them again once one passes.

use std::{
    collections::BTreeMap,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use shoal_tests::{
    client, cmd, containers_of, get_in_container, lab_cluster::LabCluster, toolbox_in,
};

const WAIT: Duration = Duration::from_secs(60);
const ENTRIES: [&str; 3] = ["192.0.2.11:8080", "192.0.2.12:8080", "192.0.2.13:8080"];
/// The services' check interval.
const INTERVAL_MS: u128 = 1_000;
const RATE: u32 = 1_000;

/// `web`: 3 tasks of shoal/echo with a 1 s health check, draining on SIGTERM.
fn create_web(cluster: &LabCluster, retries: &str) -> Result<()> {
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "--publish",
        "8080:80",
        "--env",
        "ECHO_GRACEFUL=1",
        "--health-cmd",
        r#"["CMD","/echo","healthcheck"]"#,
        "--health-interval",
        "1s",
        "--health-retries",
        retries,
        "--stop-grace-period",
        "10s",
        "shoal/echo:1",
    ])?;
    cluster.wait("3 healthy web tasks answering at every node", WAIT, || {
        let rows = cluster.json_rows(&["service", "ps", "web"]).ok()?;
        let healthy = rows
            .iter()
            .filter(|r| r["DesiredState"] == "Running")
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Running") && s.ends_with("(healthy)"))
            })
            .count();
        (healthy == 3 && every_node_answers_all(3)).then_some(())
    })
}

/// Whether each entry node spreads 6 connections over `tasks` tasks.
fn every_node_answers_all(tasks: usize) -> bool {
    ENTRIES.iter().all(|entry| {
        let out =
            client::toolbox_output(&["http-get", &format!("http://{entry}/"), "--count", "6"]);
        let Ok(out) = out else { return false };
        let text = String::from_utf8_lossy(&out.stdout);
        let names: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split("\"task\":\"").nth(1)?.split('"').next())
            .collect();
        out.status.success() && names.len() == tasks
    })
}

/// The load client in the client's namespace, and when it started.
struct Load {
    child: Child,
    started: Instant,
    /// Its output, read as it comes (a full pipe would stall it).
    stdout: std::thread::JoinHandle<String>,
}

impl Load {
    fn start() -> Result<Self> {
        let mut child = client::toolbox(&["--timeout-ms", "3000", "load"])?
            .args(ENTRIES)
            .args(["--rate", &RATE.to_string(), "--workers", "32"])
            .args(["--seconds", "300"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the load client")?;
        let started = Instant::now();
        let mut pipe = child.stdout.take().context("the load client's stdout")?;
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        });
        Ok(Self {
            child,
            started,
            stdout,
        })
    }

    /// Milliseconds since the load started (its own clock, within the
    /// time `ip netns exec` takes to start it).
    fn now_ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }

    /// Stops it (SIGTERM: it finishes the requests in flight) and reads
    /// every request's outcome.
    fn finish(self) -> Result<Outcome> {
        cmd::run("kill", &["-TERM", &self.child.id().to_string()])?;
        let out = self.child.wait_with_output()?;
        let text = self
            .stdout
            .join()
            .map_err(|_| anyhow::anyhow!("reading the load client's output failed"))?;
        let summary = text
            .lines()
            .rfind(|l| l.starts_with("# "))
            .with_context(|| {
                format!(
                    "no summary from the load client: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?
            .to_owned();
        let field = |name: &str| -> Result<f64> {
            summary
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {name} in {summary:?}"))
        };
        let mut answers = Vec::new();
        let mut failures = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut parts = line.splitn(3, ' ');
            let (Some(at), Some(_entry), Some(what)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let at: u128 = at.parse().unwrap_or_default();
            if what.starts_with("FAILED") {
                failures.push(line.to_owned());
            } else {
                answers.push((at, what.to_owned()));
            }
        }
        Ok(Outcome {
            requests: field("requests")? as u64,
            failed: field("failed")? as u64,
            rate: field("rate")?,
            answers,
            failures,
            summary,
        })
    }
}

struct Outcome {
    requests: u64,
    failed: u64,
    rate: f64,
    /// (ms since the load started, task that answered).
    answers: Vec<(u128, String)>,
    failures: Vec<String>,
    summary: String,
}

impl Outcome {
    fn check(&self, what: &str) -> Result<()> {
        println!("{what}: {}", self.summary);
        let mut per_second: BTreeMap<u128, usize> = BTreeMap::new();
        for (at, _) in &self.answers {
            *per_second.entry(at / 1000).or_default() += 1;
        }
        println!("{what}: answers per second {per_second:?}");
        ensure!(
            self.failed == 0 && self.failures.is_empty(),
            "{what}: {} of {} requests failed, first: {:?}",
            self.failed,
            self.requests,
            &self.failures[..self.failures.len().min(5)]
        );
        ensure!(
            self.rate >= f64::from(RATE) * 0.98,
            "{what}: the client reached only {:.0} req/s",
            self.rate
        );
        Ok(())
    }
}

/// The task name an echo container answers with.
fn task_of_container(container: &str) -> Result<String> {
    let (_, body) = get_in_container(container, "/")?;
    let value: serde_json::Value = serde_json::from_str(&body)?;
    value["task"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no task in {body}"))
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

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

#[test]
fn a_rolling_update_under_a_thousand_requests_a_second_fails_none() -> Result<()> {
    shoal_tests::require_images()?;
    let cluster = LabCluster::start(1, true)?;
    create_web(&cluster, "3")?;
    let load = Load::start()?;
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    cluster.shoal(&[
        "service",
        "update",
        "--detach",
        "--image",
        "shoal/echo:2",
        "web",
    ])?;
    cluster.wait("the rolling update to complete", WAIT, || {
        let inspect: serde_json::Value =
            serde_json::from_str(&cluster.shoal(&["service", "inspect", "web"]).ok()?).ok()?;
        (inspect[0]["UpdateStatus"]["State"] == "completed").then_some(())
    })?;
    let took = started.elapsed();
    cluster.wait("3 version-2 tasks answering at every node", WAIT, || {
        every_node_answers_all(3).then_some(())
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let outcome = load.finish()?;
    println!("the rolling update took {took:.1?}");
    outcome.check("rolling update")?;
    let mut by_task: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, task) in &outcome.answers {
        *by_task.entry(task.as_str()).or_default() += 1;
    }
    println!("answers by task: {by_task:?}");
    Ok(())
}

#[test]
fn a_failing_health_check_takes_a_task_out_of_every_node_and_back() -> Result<()> {
    shoal_tests::require_images()?;
    let cluster = LabCluster::start(1, true)?;
    // Retries high enough that the flap does not get the task replaced.
    create_web(&cluster, "30")?;
    let container = containers_of("web")?.pop().context("no web container")?;
    let task = task_of_container(&container)?;
    let load = Load::start()?;
    let epoch = unix_ms() - load.now_ms(); // the load's start, Unix ms
    std::thread::sleep(Duration::from_secs(3));

    let (status, _) = get_in_container(&container, "/healthz/fail")?;
    ensure!(status == 200, "/healthz/fail answered {status}");
    let failed_at = load.now_ms();
    let shown = cluster.wait("service ps to show the task unhealthy", WAIT, || {
        let rows = cluster.json_rows(&["service", "ps", "web"]).ok()?;
        rows.iter()
            .find(|r| r["Name"] == task.as_str() && r["DesiredState"] == "Running")
            .and_then(|r| r["CurrentState"].as_str().map(str::to_owned))
            .filter(|s| s.ends_with("(unhealthy)"))
    })?;
    println!("{task}: {shown}");
    std::thread::sleep(Duration::from_secs(4));
    let checks = checks_of(&container)?;
    get_in_container(&container, "/healthz/pass")?;
    let passed_at = load.now_ms();
    cluster.wait("service ps to show the task healthy again", WAIT, || {
        let rows = cluster.json_rows(&["service", "ps", "web"]).ok()?;
        rows.iter()
            .any(|r| {
                r["Name"] == task.as_str()
                    && r["DesiredState"] == "Running"
                    && r["CurrentState"]
                        .as_str()
                        .is_some_and(|s| s.ends_with("(healthy)"))
            })
            .then_some(())
    })?;
    std::thread::sleep(Duration::from_secs(3));
    let after = checks_of(&container)?;
    let outcome = load.finish()?;
    outcome.check("health flap")?;

    // The first failed check after the toggle, on the load's clock.
    let first_failed = checks
        .iter()
        .map(|(end, code)| (end.saturating_sub(epoch), *code))
        .find(|(at, code)| *at >= failed_at && *code != 0)
        .map(|(at, _)| at)
        .with_context(|| format!("no failed check after the toggle: {checks:?}"))?;
    let first_passed = after
        .iter()
        .map(|(end, code)| (end.saturating_sub(epoch), *code))
        .find(|(at, code)| *at >= passed_at && *code == 0)
        .map(|(at, _)| at)
        .with_context(|| format!("no passing check after the toggle: {after:?}"))?;
    let mine = |from: u128, to: u128| {
        outcome
            .answers
            .iter()
            .filter(|(at, t)| *t == task && (from..to).contains(at))
            .map(|(at, _)| *at)
            .collect::<Vec<_>>()
    };
    // The last connection any node gave the task after its first failed
    // check: the time its removal took to reach the last node's tables.
    let late = mine(first_failed, passed_at);
    let last = late.last().copied().unwrap_or(first_failed);
    println!(
        "{task}: check failed at {first_failed} ms, last new connection at {last} ms \
         ({} ms later, {} connections meanwhile); passing again at {first_passed} ms",
        last - first_failed,
        late.len()
    );
    ensure!(
        last - first_failed < INTERVAL_MS,
        "{task} still got new connections {} ms after its failed check",
        last - first_failed
    );
    ensure!(
        mine(first_failed + INTERVAL_MS, passed_at).is_empty(),
        "{task} got connections while failing"
    );
    let back = mine(first_passed, u128::MAX);
    let first_back = back.first().copied().context("the task never came back")?;
    println!(
        "{task}: back {} ms after its passing check, {} connections since",
        first_back - first_passed,
        back.len()
    );
    ensure!(
        first_back - first_passed < INTERVAL_MS,
        "{task} came back only {} ms after passing",
        first_back - first_passed
    );
    Ok(())
}

/// Where `count` fresh connections from container `tb` to the VIP of
/// `web` went, by task.
fn vip_tally(tb: &str, count: usize) -> Result<BTreeMap<String, usize>> {
    let out = toolbox_in(
        tb,
        &["http-get", "http://web/", "--count", &count.to_string()],
    )?;
    client::tally_tasks(&String::from_utf8_lossy(&out.stdout))
}

/// Whether `service ps web` shows `task` running with this health word.
fn shows(cluster: &LabCluster, task: &str, health: &str) -> bool {
    cluster
        .json_rows(&["service", "ps", "web"])
        .is_ok_and(|rows| {
            rows.iter().any(|r| {
                r["Name"] == task
                    && r["DesiredState"] == "Running"
                    && r["CurrentState"]
                        .as_str()
                        .is_some_and(|s| s.ends_with(&format!("({health})")))
            })
        })
}

/// The same through a service VIP, from a container on the service's
/// network: a task failing its check gets none of the VIP's new
/// connections, and gets them again once it passes.
#[test]
fn a_failing_task_leaves_the_vip_and_comes_back() -> Result<()> {
    shoal_tests::require_images()?;
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&["network", "create", "appnet"])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "--network",
        "appnet",
        "--health-cmd",
        r#"["CMD","/echo","healthcheck"]"#,
        "--health-interval",
        "1s",
        "--health-retries",
        "30",
        "shoal/echo:1",
    ])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "tb",
        "--network",
        "appnet",
        "shoal/toolbox",
    ])?;
    let tb = cluster.wait("the toolbox container", WAIT, || {
        containers_of("tb").ok()?.pop()
    })?;
    cluster.wait("the VIP to reach 3 healthy tasks", WAIT, || {
        (vip_tally(&tb, 30).ok()?.len() == 3).then_some(())
    })?;
    let container = containers_of("web")?.pop().context("no web container")?;
    let task = task_of_container(&container)?;

    get_in_container(&container, "/healthz/fail")?;
    cluster.wait("service ps to show the task unhealthy", WAIT, || {
        shows(&cluster, &task, "unhealthy").then_some(())
    })?;
    // The manager knows: within one interval every node's tables follow.
    let deadline = Instant::now() + Duration::from_millis(INTERVAL_MS as u64);
    let failing = loop {
        let tally = vip_tally(&tb, 30)?;
        if !tally.contains_key(&task) || Instant::now() >= deadline {
            break tally;
        }
    };
    ensure!(
        !failing.contains_key(&task) && failing.values().sum::<usize>() == 30,
        "while {task} fails its check, 30 VIP connections went {failing:?}"
    );
    // And it stays out while it fails.
    let again = vip_tally(&tb, 30)?;
    ensure!(
        !again.contains_key(&task),
        "{task} got VIP connections while failing: {again:?}"
    );

    get_in_container(&container, "/healthz/pass")?;
    cluster.wait("service ps to show the task healthy again", WAIT, || {
        shows(&cluster, &task, "healthy").then_some(())
    })?;
    cluster.wait("the VIP to reach the task again", WAIT, || {
        vip_tally(&tb, 30).ok()?.contains_key(&task).then_some(())
    })?;
    Ok(())
}
