//! Real agents on every lab node running real containers, driven by the
//! real CLI against a real manager.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use shoal_tests::{
    Lab, cmd, containers_of, get_in_container, lab_cluster::LabCluster, toolbox_in, topology,
};

const WAIT: Duration = Duration::from_secs(30);

/// Running tasks of a service per node, from `service ps --format json`.
fn running_per_node(cluster: &LabCluster, service: &str) -> Option<BTreeMap<String, usize>> {
    let rows = cluster.json_rows(&["service", "ps", service]).ok()?;
    let mut out = BTreeMap::new();
    for row in rows {
        let current = row["CurrentState"].as_str().unwrap_or("");
        if row["DesiredState"] == "Running" && current.starts_with("Running") {
            *out.entry(row["Node"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
        }
    }
    Some(out)
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn replicas_and_global_tasks_run_as_real_containers_and_heal() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "6",
        "--restart-delay",
        "1s",
        "shoal/echo:1",
    ])?;
    let two_each = counts(&[("n1", 2), ("n2", 2), ("n3", 2)]);
    cluster.wait("2 running web tasks on each node", WAIT, || {
        (running_per_node(&cluster, "web")? == two_each).then_some(())
    })?;
    ensure!(
        containers_of("web")?.len() == 6,
        "docker runs {} web containers",
        containers_of("web")?.len()
    );
    let ls = cluster.json_rows(&["service", "ls"])?;
    ensure!(ls[0]["Replicas"] == "6/6", "{ls:?}");
    // Nodes as the agents describe them: engine version, CPUs and memory.
    let nodes = cluster.json_rows(&["node", "ls"])?;
    ensure!(
        nodes.iter().all(|n| n["EngineVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("20."))),
        "{nodes:?}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&cluster.shoal(&["node", "inspect", "n2"])?)?;
    let resources = &inspect[0]["Description"]["Resources"];
    ensure!(
        resources["NanoCPUs"]
            .as_i64()
            .is_some_and(|c| c >= 1_000_000_000),
        "{resources}"
    );
    ensure!(
        resources["MemoryBytes"].as_i64().is_some_and(|m| m > 0),
        "{resources}"
    );

    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "agentd",
        "--mode",
        "global",
        "shoal/echo:1",
    ])?;
    let one_each = counts(&[("n1", 1), ("n2", 1), ("n3", 1)]);
    cluster.wait("one agentd task per node", WAIT, || {
        (running_per_node(&cluster, "agentd")? == one_each).then_some(())
    })?;

    // docker kill: replaced after the restart delay, the dead task kept as history.
    let victim = containers_of("web")?[0].clone();
    let killed_at = Instant::now();
    cmd::run("docker", &["kill", &victim])?;
    cluster.wait("6 running web tasks again", WAIT, || {
        let ids = containers_of("web").ok()?;
        (ids.len() == 6
            && !ids.contains(&victim)
            && running_per_node(&cluster, "web")?.values().sum::<usize>() == 6)
            .then_some(())
    })?;
    eprintln!(
        "killed container replaced after {:?} (restart delay 1 s)",
        killed_at.elapsed()
    );
    let table = cluster.shoal(&["service", "ps", "web"])?;
    ensure!(
        table.lines().any(|l| l.contains(" \\_ web.")
            && l.contains("Failed")
            && l.contains("non-zero exit (137)")),
        "no history row for the killed task:\n{table}"
    );

    // --restart-condition none: a killed task stays dead.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "once",
        "--restart-condition",
        "none",
        "shoal/echo:1",
    ])?;
    cluster.wait("once running", WAIT, || {
        (containers_of("once").ok()?.len() == 1).then_some(())
    })?;
    cmd::run("docker", &["kill", &containers_of("once")?[0]])?;
    std::thread::sleep(Duration::from_secs(3));
    ensure!(
        containers_of("once")?.is_empty(),
        "restart-condition none restarted the task"
    );
    let once = cluster.json_rows(&["service", "ps", "once"])?;
    ensure!(
        once.len() == 1
            && once[0]["CurrentState"]
                .as_str()
                .is_some_and(|s| s.starts_with("Failed")),
        "{once:?}"
    );
    Ok(())
}

#[test]
fn a_restarted_agent_adopts_its_containers_and_a_silent_node_loses_its_tasks() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "6",
        "shoal/echo:1",
    ])?;
    cluster.wait("6 running tasks", WAIT, || {
        (running_per_node(&cluster, "web")?.values().sum::<usize>() == 6).then_some(())
    })?;
    let before = containers_of("web")?;
    let tasks_before = cluster.json_rows(&["service", "ps", "web"])?.len();

    // SIGKILL n2's agent and start it again: same containers, same tasks.
    cluster.lab.kill_node("n2")?;
    cluster.lab.start_node("n2")?;
    std::thread::sleep(Duration::from_secs(3));
    cluster.wait("the agent back and all 6 tasks running", WAIT, || {
        (running_per_node(&cluster, "web")? == counts(&[("n1", 2), ("n2", 2), ("n3", 2)]))
            .then_some(())
    })?;
    ensure!(
        containers_of("web")? == before,
        "containers changed across the agent restart"
    );
    let tasks_after = cluster.json_rows(&["service", "ps", "web"])?.len();
    ensure!(
        tasks_after == tasks_before,
        "tasks went from {tasks_before} to {tasks_after}"
    );

    // n3's agent stops for good: the node goes down and its tasks move.
    cluster.lab.kill_node("n3")?;
    let stopped = Instant::now();
    cluster.wait("n3 down", Duration::from_secs(40), || {
        let rows = cluster.json_rows(&["node", "ls"]).ok()?;
        rows.iter()
            .any(|r| r["Hostname"] == "n3" && r["Status"] == "Down")
            .then_some(())
    })?;
    let down = stopped.elapsed();
    cluster.wait(
        "6 running tasks on n1 and n2",
        Duration::from_secs(40),
        || {
            let per = running_per_node(&cluster, "web")?;
            (!per.contains_key("n3") && per.values().sum::<usize>() == 6).then_some(())
        },
    )?;
    let moved = stopped.elapsed();
    eprintln!(
        "agent stopped: node down after {down:?}, its tasks running elsewhere after {moved:?} (heartbeat 5 s x 3)"
    );
    ensure!(
        moved < Duration::from_secs(25),
        "tasks moved only after {moved:?}"
    );
    Ok(())
}

#[test]
fn secrets_reach_only_the_container_and_unhealthy_tasks_never_run() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let value = format!("s3cret-{}", std::process::id());
    let mut child = std::process::Command::new(cluster.bins.join("shoal"))
        .args([
            "--host",
            &cluster.lab.shoal_host()?,
            "secret",
            "create",
            "db_password",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(value.as_bytes())?;
    ensure!(child.wait()?.success(), "secret create from stdin failed");
    cluster.shoal(&["config", "create", "app_conf", "/etc/hostname"])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "db",
        "--secret",
        "db_password",
        "--config",
        "source=app_conf,target=/etc/app.conf,mode=0440",
        "shoal/echo:1",
    ])?;
    let container = cluster.wait("db running", WAIT, || {
        containers_of("db").ok()?.into_iter().next()
    })?;
    let (code, body) = get_in_container(&container, "/file/run/secrets/db_password")?;
    ensure!(
        code == 200 && body == value,
        "secret in the container: {code} {body:?}"
    );
    let (code, body) = get_in_container(&container, "/file/etc/app.conf")?;
    ensure!(
        code == 200 && body == std::fs::read_to_string("/etc/hostname")?,
        "config: {code} {body:?}"
    );
    // Not in docker inspect, not on the node's disk (data dir), and the
    // run dir holding it is a tmpfs.
    let inspect = cmd::stdout("docker", &["inspect", &container])?;
    ensure!(!inspect.contains(&value), "docker inspect shows the secret");
    let data_dir = cluster.lab.state().path().to_owned();
    let grep = std::process::Command::new("grep")
        .args(["-r", "-l", "-s", "--exclude-dir=agent-run", &value])
        .arg(&data_dir)
        .output()?;
    ensure!(
        grep.stdout.is_empty(),
        "the secret is in files: {}",
        String::from_utf8_lossy(&grep.stdout)
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    ensure!(
        mounts
            .lines()
            .any(|l| l.contains("agent-run/tasks/") && l.contains(" tmpfs ")),
        "no per-task tmpfs"
    );

    // A task with a health check runs once healthy; one whose check fails
    // is never reported running, and is restarted.
    let health = r#"["CMD","/echo","healthcheck"]"#;
    let check = [
        "--health-cmd",
        health,
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
    ];
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec!["service", "create", "--name", name, "--restart-delay", "1s"];
        args.extend(check);
        args.extend(extra);
        args.push("shoal/echo:1");
        cluster.shoal(&args)
    };
    create("fine", &[])?;
    create("sick", &["--env", "ECHO_UNHEALTHY=1"])?;
    cluster.wait("fine running once healthy", WAIT, || {
        let rows = cluster.json_rows(&["service", "ps", "fine"]).ok()?;
        rows.iter()
            .any(|r| {
                r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Running"))
            })
            .then_some(())
    })?;
    let fine = containers_of("fine")?;
    let health_status = cmd::stdout(
        "docker",
        &["inspect", "-f", "{{.State.Health.Status}}", &fine[0]],
    )?;
    ensure!(
        health_status.trim() == "healthy",
        "fine runs while {health_status}"
    );
    let failed = cluster.wait("the unhealthy task failed and replaced", WAIT, || {
        let rows = cluster.json_rows(&["service", "ps", "sick"]).ok()?;
        let failed = rows
            .iter()
            .filter(|r| r["Error"].as_str().is_some_and(|e| e.contains("unhealthy")))
            .count();
        (failed >= 1 && rows.len() >= 2).then_some(rows)
    })?;
    ensure!(
        failed.iter().all(|r| !r["CurrentState"]
            .as_str()
            .unwrap_or("")
            .starts_with("Running")),
        "an unhealthy task was reported running: {failed:?}"
    );
    Ok(())
}

#[test]
fn hostname_templates_expand_and_a_missing_image_is_rejected_clearly() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    // A bind source per slot, on the host every lab node's engine shares.
    let base = cluster.lab.state().path().join("templates");
    std::fs::create_dir_all(base.join("named-1"))?;
    let mount = format!(
        "type=bind,source={}/{{{{.Service.Name}}}}-{{{{.Task.Slot}}}},target=/data/{{{{.Task.Slot}}}}",
        base.display()
    );
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "named",
        "--label",
        "tier=front",
        "--hostname",
        "{{.Service.Name}}-{{.Task.Slot}}.{{.Node.Hostname}}",
        "--env",
        "NODE_ID={{.Node.ID}}",
        "--env",
        "TIER={{index .Service.Labels \"tier\"}}",
        "--env",
        "WHERE={{.Task.Name}} on {{.Node.Platform.OS}}/{{.Node.Platform.Architecture}}",
        "--mount",
        &mount,
        "shoal/echo:1",
    ])?;
    let container = cluster.wait("named running", WAIT, || {
        containers_of("named").ok()?.into_iter().next()
    })?;
    let inspect = |format: &str| cmd::stdout("docker", &["inspect", "-f", format, &container]);
    let hostname = inspect("{{.Config.Hostname}}")?;
    let row = &cluster.json_rows(&["service", "ps", "--no-trunc", "named"])?[0];
    let node = row["Node"].as_str().unwrap_or("").to_owned();
    ensure!(
        hostname.trim() == format!("named-1.{node}"),
        "hostname {hostname:?} on {node}"
    );
    // Env values and mount paths expand too (Swarm's --env and --mount).
    let node_id = inspect("{{index .Config.Labels \"com.shoal.node.id\"}}")?;
    let task_id = row["ID"].as_str().unwrap_or("");
    let env = inspect("{{json .Config.Env}}")?;
    let env: Vec<String> = serde_json::from_str(&env)?;
    for want in [
        format!("NODE_ID={}", node_id.trim()),
        "TIER=front".to_owned(),
        format!(
            "WHERE=named.1.{task_id} on {}/{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
    ] {
        ensure!(env.contains(&want), "{want:?} not in {env:?}");
    }
    let mounts: serde_json::Value = serde_json::from_str(&inspect("{{json .Mounts}}")?)?;
    let bind = &mounts[0];
    ensure!(
        bind["Source"] == format!("{}/named-1", base.display()) && bind["Destination"] == "/data/1",
        "{mounts}"
    );

    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "ghost",
        "--restart-condition",
        "none",
        "shoal/not-built:1",
    ])?;
    let rows = cluster.wait("the task rejected", WAIT, || {
        let rows = cluster
            .json_rows(&["service", "ps", "--no-trunc", "ghost"])
            .ok()?;
        rows.iter()
            .any(|r| {
                r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Rejected"))
            })
            .then_some(rows)
    })?;
    let error = rows[0]["Error"].as_str().unwrap_or("");
    ensure!(
        error.contains("image shoal/not-built:1 is not on this node"),
        "{error}"
    );
    Ok(())
}

#[test]
fn a_global_service_runs_on_a_node_that_joins_later() -> Result<()> {
    let cluster = LabCluster::start(1, false)?;
    for node in ["n1", "n2"] {
        cluster.lab.start_agent(node, &cluster.bins)?;
    }
    cluster.wait("n1 and n2 ready", WAIT, || {
        let rows = cluster.json_rows(&["node", "ls"]).ok()?;
        (rows.iter().filter(|r| r["Status"] == "Ready").count() == 2).then_some(())
    })?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "agentd",
        "--mode",
        "global",
        "shoal/echo:1",
    ])?;
    cluster.wait("one task on each of n1 and n2", WAIT, || {
        (running_per_node(&cluster, "agentd")? == counts(&[("n1", 1), ("n2", 1)])).then_some(())
    })?;
    cluster.lab.start_agent("n3", &cluster.bins)?;
    cluster.wait("a task on n3, which joined later", WAIT, || {
        (running_per_node(&cluster, "agentd")? == counts(&[("n1", 1), ("n2", 1), ("n3", 1)]))
            .then_some(())
    })?;
    ensure!(containers_of("agentd")?.len() == 3);
    Ok(())
}

#[test]
fn mounts_and_secret_files_are_what_the_service_asked_for() -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let cluster = LabCluster::start(1, true)?;
    let bind_dir = cluster.lab.state().path().join("bind-test");
    std::fs::create_dir_all(&bind_dir)?;
    std::fs::write(bind_dir.join("hello"), "from the host")?;
    let volume = format!("shoal-test-vol-{}", std::process::id());
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), "pw")?;
    cluster.shoal(&["secret", "create", "pw", &file.path().display().to_string()])?;
    let bind = format!(
        "type=bind,source={},target=/data,readonly",
        bind_dir.display()
    );
    let vol = format!("type=volume,source={volume},target=/vol");
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "m",
        "--restart-delay",
        "1s",
        "--mount",
        &bind,
        "--mount",
        &vol,
        "--mount",
        "type=tmpfs,target=/scratch,tmpfs-size=1m",
        "--secret",
        "source=pw,target=pw,uid=1000,gid=1000,mode=0400",
        "shoal/echo:1",
    ])?;
    let container = cluster.wait("m running", WAIT, || {
        containers_of("m").ok()?.into_iter().next()
    })?;
    let pid = cmd::stdout("docker", &["inspect", "-f", "{{.State.Pid}}", &container])?;
    let root = std::path::PathBuf::from(format!("/proc/{}/root", pid.trim()));
    ensure!(
        std::fs::read_to_string(root.join("data/hello"))? == "from the host",
        "bind mount"
    );
    let secret = std::fs::metadata(root.join("run/secrets/pw"))?;
    ensure!(
        secret.uid() == 1000
            && secret.gid() == 1000
            && secret.permissions().mode() & 0o777 == 0o400,
        "secret file uid {} gid {} mode {:o}",
        secret.uid(),
        secret.gid(),
        secret.permissions().mode() & 0o777
    );
    let mounts = cmd::stdout(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}",
            &container,
        ],
    )?;
    for wanted in ["bind:/data", "volume:/vol", "tmpfs:/scratch"] {
        ensure!(mounts.contains(wanted), "{wanted} missing from {mounts}");
    }
    // The named volume outlives the task it served.
    cmd::run("docker", &["kill", &container])?;
    cluster.wait("m replaced", WAIT, || {
        let ids = containers_of("m").ok()?;
        (ids.len() == 1 && ids[0] != container).then_some(())
    })?;
    ensure!(
        cmd::run("docker", &["volume", "inspect", &volume]).is_ok(),
        "the volume went with the task"
    );
    cluster.shoal(&["service", "rm", "m"])?;
    cluster.wait("m removed", WAIT, || {
        containers_of("m").ok()?.is_empty().then_some(())
    })?;
    let _ = cmd::run("docker", &["volume", "rm", &volume]);
    Ok(())
}

#[test]
fn service_logs_come_from_every_node_through_the_manager() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "talk",
        "--replicas",
        "3",
        "shoal/echo:1",
    ])?;
    cluster.wait("3 running tasks", WAIT, || {
        (running_per_node(&cluster, "talk")?.values().sum::<usize>() == 3).then_some(())
    })?;
    // shoal-echo writes to stderr: so do its lines, as Docker's CLI does.
    let logs_of = |service: &str| -> Option<String> {
        let host = cluster.lab_host().ok()?;
        let output = std::process::Command::new(cluster.bins.join("shoal"))
            .args(["--host", &host, "service", "logs", service])
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let logs = cluster.wait("a line from each task", WAIT, || {
        let out = logs_of("talk")?;
        let prefixes: std::collections::BTreeSet<&str> = out
            .lines()
            .filter_map(|l| l.split("    | ").next())
            .collect();
        (prefixes.len() == 3).then_some(out)
    })?;
    for line in logs.lines() {
        let (prefix, text) = line.split_once("    | ").unwrap_or(("", ""));
        ensure!(
            prefix.starts_with("talk.") && prefix.contains("@n"),
            "prefix {prefix:?}"
        );
        ensure!(text.contains("shoal-echo"), "line {text:?}");
    }
    // The same lines docker has for one of the containers.
    let container = containers_of("talk")?[0].clone();
    let docker = cmd::run("docker", &["logs", &container])?;
    let docker = String::from_utf8_lossy(&docker.stderr).into_owned()
        + &String::from_utf8_lossy(&docker.stdout);
    let first = docker.lines().next().unwrap_or("").to_owned();
    ensure!(
        logs.lines().any(|l| l.ends_with(&first)),
        "{first:?} not in:\n{logs}"
    );
    let err = cluster
        .shoal(&["service", "logs", "nope"])
        .unwrap_err()
        .to_string();
    ensure!(err.contains("no such task or service: nope"), "{err}");
    Ok(())
}

#[test]
fn agents_follow_a_new_leader_and_keep_the_cluster_healing() -> Result<()> {
    let cluster = LabCluster::start(3, true)?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "6",
        "shoal/echo:1",
    ])?;
    cluster.wait("2 running tasks on each node", WAIT, || {
        (running_per_node(&cluster, "web")? == counts(&[("n1", 2), ("n2", 2), ("n3", 2)]))
            .then_some(())
    })?;
    let labels = cmd::stdout(
        "docker",
        &[
            "inspect",
            "-f",
            "{{index .Config.Labels \"com.shoal.cluster.id\"}}",
            &containers_of("web")?[0],
        ],
    )?;
    ensure!(labels.trim().len() == 25, "cluster label {labels:?}");
    // n1 runs the leading manager and an agent: lose both.
    cluster.lab.kill_node("n1")?;
    let lost = Instant::now();
    // The agents of n2 and n3 re-register with the new leader, which marks
    // n1 down and moves its tasks to them.
    cluster.wait(
        "6 running tasks on n2 and n3",
        Duration::from_secs(60),
        || {
            let per = running_per_node(&cluster, "web")?;
            (!per.contains_key("n1") && per.values().sum::<usize>() == 6).then_some(())
        },
    )?;
    eprintln!(
        "leader and an agent lost: all tasks running on the other nodes after {:?}",
        lost.elapsed()
    );
    // And the new leader's cluster takes new work.
    cluster.shoal(&["service", "scale", "web=8"])?;
    cluster.wait("8 running tasks", WAIT, || {
        (running_per_node(&cluster, "web")?.values().sum::<usize>() == 8).then_some(())
    })?;
    Ok(())
}

/// An agent started over a data plane whose pins are gone (what an agent
/// of a new layout does to the old one's) adopts its containers without
/// plugging them again: their veths must get their VIP programs back at
/// its first push, or their VIP connections fail until they are replaced.
#[test]
fn adopted_containers_get_their_vip_programs_back_after_a_new_layout() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&["network", "create", "-d", "overlay", "appnet"])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "echo",
        "--replicas",
        "2",
        "--network",
        "appnet",
        "shoal/echo:1",
    ])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "client",
        "--network",
        "appnet",
        "--constraint",
        "node.hostname==n2",
        "shoal/toolbox",
    ])?;
    for (service, n) in [("echo", 2), ("client", 1)] {
        cluster.wait(&format!("{n} running {service}"), WAIT, || {
            (running_per_node(&cluster, service)?.values().sum::<usize>() == n).then_some(())
        })?;
    }
    let target = format!("{}:7", cluster.vip("echo")?);
    let client = match containers_of("client")?.as_slice() {
        [one] => one.clone(),
        other => bail!("client has {} containers", other.len()),
    };
    let reaches = || -> Result<bool> {
        let out = toolbox_in(&client, &["--timeout-ms", "1000", "tcp-connect", &target])?;
        Ok(out.status.success())
    };
    ensure!(reaches()?, "the client cannot reach {target} to begin with");

    // n2's agent dies, and its pins go as a new layout's agent removes
    // the old one's: the client's veth keeps no program.
    cluster.lab.kill_node("n2")?;
    let layout = Lab::bpffs_root(&topology::Host::node(2))
        .join(format!("v{}", shoal_agent_common::LAYOUT_VERSION));
    std::fs::remove_dir_all(&layout).with_context(|| format!("removing {}", layout.display()))?;
    ensure!(
        !reaches()?,
        "the client reached {target} with its veth's programs gone: the test shows nothing"
    );
    cluster.lab.start_node("n2")?;
    cluster.wait("the client reaching the VIP again", WAIT, || {
        reaches().ok().filter(|r| *r)
    })?;
    ensure!(
        containers_of("client")? == [client.clone()],
        "the client's container was replaced, not adopted"
    );
    Ok(())
}
