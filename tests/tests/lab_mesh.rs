//! The eBPF routing mesh on real agents and containers, with a real client
//! in the lab's `shoal-client` host: a published port answers on every
//! node, round-robin per connection over every task, and keeps answering
//! while tasks die, scale and the entry node's agent is killed.

use std::{
    collections::BTreeMap,
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use shoal_tests::{bin, client, cmd, containers_of, lab_cluster::LabCluster, toolbox_in};

const WAIT: Duration = Duration::from_secs(30);
const NODES: [&str; 3] = ["192.0.2.11", "192.0.2.12", "192.0.2.13"];

/// Task names answering `count` fresh connections to `url`, by count.
fn answers(url: &str, count: usize) -> Result<BTreeMap<String, usize>> {
    let out = client::toolbox_output(&["http-get", url, "--count", &count.to_string()])?;
    let mut by_task = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let json = line.splitn(3, ' ').nth(2).unwrap_or("");
        let task = serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v["task"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("error: {line}"));
        *by_task.entry(task).or_default() += 1;
    }
    Ok(by_task)
}

#[test]
fn a_published_port_answers_on_every_node_round_robin_over_every_task() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "6",
        "--publish",
        "8080:80",
        "--publish",
        "8082:7",
        "shoal/echo:1",
    ])?;
    cluster.wait("6 running web tasks", WAIT, || {
        (cluster.running_tasks("web") == 6).then_some(())
    })?;
    let tasks: Vec<String> = (1..=6).map(|i| format!("web.{i}")).collect();
    for node in NODES {
        // `service ps` says Running as the manager learns it; the nodes'
        // tables follow a push later: wait until every task answers.
        let url = format!("http://{node}:8080/");
        cluster.wait(&format!("{node} to balance over 6 tasks"), WAIT, || {
            (answers(&url, 6).ok()?.len() == 6).then_some(())
        })?;
    }
    for node in NODES {
        let got = answers(&format!("http://{node}:8080/"), 60)?;
        let want: BTreeMap<String, usize> = tasks.iter().map(|t| (t.clone(), 10)).collect();
        ensure!(got == want, "60 connections to {node}:8080 went {got:?}");
        println!("{node}:8080 -> {got:?}");
    }
    // Full-size segments from the underlay fit the overlay: the mesh clamps
    // the SYN's MSS (3,000 bytes through the TCP echo, via a remote task).
    let big = "x".repeat(3000);
    let out = client::toolbox_output(&["tcp-connect", "192.0.2.13:8082", "--send", &big])?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains(&big),
        "3,000 bytes through the mesh did not come back: {out:?}"
    );
    // Transfers of many segments, both ways through the mesh's own VXLAN
    // and its fallbacks, arrive whole through every node.
    client::big_replies_arrive_whole(&NODES)?;

    // The nodes' counters reach `service inspect` with their heartbeats.
    let counted = cluster.wait("180 connections counted in service inspect", WAIT, || {
        let inspect: serde_json::Value =
            serde_json::from_str(&cluster.shoal(&["service", "inspect", "web"]).ok()?).ok()?;
        let lb = &inspect[0]["LoadBalancer"];
        (lb["Connections"].as_u64()? >= 180 && lb["Bytes"].as_u64()? > 0).then(|| lb.clone())
    })?;
    println!("service inspect web: LoadBalancer {counted}");

    // UDP, and a node with no task of the service still answers.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "dns-like",
        "--replicas",
        "2",
        "--constraint",
        "node.hostname==n1",
        "--publish",
        "5353:80/udp",
        "shoal/echo:1",
    ])?;
    cluster.wait("2 running dns-like tasks", WAIT, || {
        (cluster.running_tasks("dns-like") == 2).then_some(())
    })?;
    let udp_task = || -> Option<String> {
        let out = client::toolbox_output(&["udp-send", "192.0.2.13:5353", "whoami"]).ok()?;
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        reply["task"].as_str().map(str::to_owned)
    };
    cluster.wait("n3 to balance UDP over both tasks", WAIT, || {
        (udp_task()? != udp_task()?).then_some(())
    })?;
    let mut seen = BTreeMap::new();
    for _ in 0..4 {
        let out = client::toolbox_output(&["udp-send", "192.0.2.13:5353", "whoami"])?;
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("UDP via n3 (no task there): {out:?}"))?;
        *seen
            .entry(reply["task"].as_str().unwrap_or("").to_owned())
            .or_insert(0) += 1;
    }
    ensure!(
        seen.values().all(|n| *n == 2) && seen.len() == 2,
        "UDP went {seen:?}"
    );
    // Host mode: only nodes running a task answer, each with its own task,
    // which sees the client's own address.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "hm",
        "--replicas",
        "2",
        "--constraint",
        "node.hostname!=n3",
        "--publish",
        "mode=host,published=8081,target=80",
        "shoal/echo:1",
    ])?;
    cluster.wait("2 running hm tasks", WAIT, || {
        (cluster.running_tasks("hm") == 2).then_some(())
    })?;
    let mut host_tasks = Vec::new();
    for node in &NODES[..2] {
        let url = format!("http://{node}:8081/");
        cluster.wait(&format!("{node}:8081 to answer"), WAIT, || {
            (answers(&url, 1).ok()?.keys().all(|k| k.starts_with("hm."))).then_some(())
        })?;
    }
    for node in &NODES[..2] {
        let out =
            client::toolbox_output(&["http-get", &format!("http://{node}:8081/"), "--count", "3"])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            text.lines().count() == 3 && text.lines().all(|l| l.contains(" 200 ")),
            "host mode via {node}: {text}"
        );
        ensure!(
            text.contains("\"client\":\"192.0.2.100:"),
            "host mode hid the client's address: {text}"
        );
        let tasks: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split("\"task\":\"").nth(1)?.split('"').next())
            .collect();
        ensure!(tasks.len() == 1, "host mode via {node} reached {tasks:?}");
        host_tasks.extend(tasks.into_iter().map(str::to_owned));
    }
    ensure!(
        host_tasks.len() == 2 && host_tasks[0] != host_tasks[1],
        "{host_tasks:?}"
    );
    let out = client::toolbox_output(&["--timeout-ms", "500", "tcp-connect", "192.0.2.13:8081"])?;
    ensure!(
        !out.status.success(),
        "host mode answered on a node without a task"
    );

    // Unpublished ports are not taken: the stack refuses them as before.
    let out = client::toolbox_output(&["--timeout-ms", "500", "tcp-connect", "192.0.2.11:8089"])?;
    ensure!(!out.status.success(), "an unpublished port answered");
    Ok(())
}

/// A stream of fresh connections through `node` in the background: one
/// every 20 ms, each allowed 5 s (SYN retransmits included).
fn stream(node: &str, count: usize) -> Result<Child> {
    client::http_stream(&format!("http://{node}:8080/"), count)
}

/// Waits for a stream; returns (ok, failed) and the failed lines.
fn finish(stream: Child) -> Result<(usize, usize, Vec<String>)> {
    let out = stream.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<String> = text
        .lines()
        .filter(|l| !l.contains(" 200 "))
        .map(str::to_owned)
        .collect();
    let ok = text.lines().filter(|l| l.contains(" 200 ")).count();
    Ok((ok, failed.len(), failed))
}

#[test]
fn no_connection_fails_while_tasks_die_scale_and_the_entry_agent_is_killed() -> Result<()> {
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
        "--publish",
        "8080:80",
        "shoal/echo:1",
    ])?;
    cluster.wait("6 running web tasks", WAIT, || {
        (cluster.running_tasks("web") == 6).then_some(())
    })?;

    // A task killed, then 6 -> 3 -> 6, under a stream of new connections.
    let spawned = std::time::Instant::now();
    let traffic = stream(NODES[1], 500)?;
    std::thread::sleep(Duration::from_secs(1));
    let filter = "label=com.shoal.service.name=web";
    let victim = cmd::stdout("docker", &["ps", "-q", "--filter", filter])?;
    let victim = victim
        .split_whitespace()
        .next()
        .context("no web container")?
        .to_owned();
    cmd::run("docker", &["kill", &victim])?;
    let killed_by = spawned.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    cluster.shoal(&["service", "scale", "web=3"])?;
    cluster.wait("3 running", WAIT, || {
        (cluster.running_tasks("web") == 3).then_some(())
    })?;
    std::thread::sleep(Duration::from_secs(1));
    cluster.shoal(&["service", "scale", "web=6"])?;
    cluster.wait("6 running", WAIT, || {
        (cluster.running_tasks("web") == 6).then_some(())
    })?;
    let (ok, _, lines) = finish(traffic)?;
    // The one request that may be on the victim when SIGKILL lands is cut
    // mid-answer: nothing can finish it. The stream is sequential (one
    // request, then 20 ms), so at most one is, and it started before the
    // kill. A refusal, a timeout, a cut later on or a second cut fails.
    let (cut, failed): (Vec<&String>, Vec<&String>) = lines
        .iter()
        .partition(|line| in_flight_at_the_kill(line, killed_by));
    println!(
        "kill + scale 6->3->6: {ok} connections answered, {} failed, {} cut by the kill",
        failed.len(),
        cut.len()
    );
    ensure!(
        failed.is_empty() && cut.len() <= 1 && ok + cut.len() == 500,
        "failed: {failed:?}, cut: {cut:?}"
    );

    // The entry node's agent SIGKILLed and restarted mid-stream, as an
    // upgrade whose programs changed (same map layout) would be: its entry
    // program's link carries another build's name, so the agent must put
    // its own in and take that one away, with connections flowing.
    let traffic = stream(NODES[1], 300)?;
    std::thread::sleep(Duration::from_secs(1));
    cluster.lab.kill_node("n2")?;
    let root = shoal_lab::Lab::bpffs_root(&cluster.lab.host("n2")?);
    let pins = pins_named(&root, "mesh_ingress@");
    ensure!(pins.len() == 1, "n2's entry program pins: {pins:?}");
    let other_build = pins[0].with_file_name("mesh_ingress@0000000000000000");
    std::fs::rename(&pins[0], &other_build)?;
    std::thread::sleep(Duration::from_secs(2));
    cluster.lab.start_node("n2")?;
    let (ok, failed, lines) = finish(traffic)?;
    println!(
        "entry agent SIGKILL + restart as another build: {ok} connections answered, {failed} failed"
    );
    ensure!(failed == 0 && ok == 300, "{failed} failed: {lines:?}");
    let pins = pins_named(&root, "mesh_ingress@");
    ensure!(
        pins.len() == 1 && !other_build.exists(),
        "the other build's entry program is still pinned: {pins:?}"
    );
    Ok(())
}

/// Whether a stream's failed line (`N error WHY`) is the request that a
/// task's SIGKILL, done within `killed_by` of the stream's start, cut
/// mid-answer: request N starts no sooner than (N - 1) x 20 ms in.
fn in_flight_at_the_kill(line: &str, killed_by: Duration) -> bool {
    let mut words = line.splitn(3, ' ');
    let (Some(n), Some("error"), Some(why)) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    let Ok(n) = n.parse::<u128>() else {
        return false;
    };
    let cut = why.contains("no end of headers") || why.contains("reset");
    cut && n.saturating_sub(1) * 20 <= killed_by.as_millis()
}

/// Pinned objects under `dir` (at any depth) whose names start with `prefix`.
fn pins_named(dir: &std::path::Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(pins_named(&path, prefix));
        } else if entry.file_name().to_string_lossy().starts_with(prefix) {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_service_vip_balances_connections_from_containers_round_robin() -> Result<()> {
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
        "shoal/echo:1",
    ])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "rr",
        "--replicas",
        "2",
        "--network",
        "appnet",
        "--endpoint-mode",
        "dnsrr",
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
    for (service, n) in [("web", 3), ("rr", 2), ("tb", 1)] {
        cluster.wait(&format!("{n} running {service}"), WAIT, || {
            (cluster.running_tasks(service) == n).then_some(())
        })?;
    }
    let tb = cmd::stdout(
        "docker",
        &["ps", "-q", "--filter", "label=com.shoal.service.name=tb"],
    )?;
    let tb = tb.trim().to_owned();
    // 30 fresh connections to the VIP (by name): 10 to each task, each
    // seeing the client's own address.
    let out = toolbox_in(&tb, &["http-get", "http://web/", "--count", "30"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let by_task = client::tally_tasks(&text)?;
    let pid = shoal_tests::pid_of(&tb)?;
    let own = cmd::stdout(
        "nsenter",
        &["-t", &pid, "-n", "ip", "-4", "-o", "addr", "show"],
    )?;
    for line in text.lines() {
        let json = client::answer_json(line)?;
        let seen = json["client"].as_str().unwrap_or("");
        // `address:port`
        let addr = seen.rsplit_once(':').map_or(seen, |(addr, _)| addr);
        ensure!(
            !addr.is_empty() && own.contains(&format!("inet {addr}/")),
            "the VIP hid the client: the task saw {seen:?}, the client has {own}"
        );
    }
    let want: BTreeMap<String, usize> = (1..=3).map(|i| (format!("web.{i}"), 10)).collect();
    ensure!(
        by_task == want,
        "30 connections to the VIP went {by_task:?}"
    );
    // UDP and the TCP echo through the VIP too.
    let udp = toolbox_in(&tb, &["udp-send", "web:80", "whoami"])?;
    ensure!(
        String::from_utf8_lossy(&udp.stdout).contains("\"task\":\"web."),
        "UDP via the VIP: {udp:?}"
    );
    let tcp = toolbox_in(&tb, &["tcp-connect", "web:7", "--send", "via-vip"])?;
    ensure!(
        String::from_utf8_lossy(&tcp.stdout).contains("via-vip"),
        "TCP echo via the VIP: {tcp:?}"
    );
    // dnsrr: no VIP; the name gives the tasks themselves.
    let inspect: serde_json::Value =
        serde_json::from_str(&cluster.shoal(&["service", "inspect", "rr"])?)?;
    ensure!(
        inspect[0]["Endpoint"]["VirtualIPs"]
            .as_array()
            .is_some_and(|v| v.is_empty()),
        "dnsrr got a VIP"
    );
    let names = toolbox_in(&tb, &["dns", "rr"])?;
    ensure!(
        String::from_utf8_lossy(&names.stdout).lines().count() == 2,
        "rr resolves to {names:?}"
    );
    Ok(())
}

#[test]
fn shoal_agent_leave_takes_the_node_s_mesh_overlay_and_tasks_away() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--mode",
        "global",
        "--publish",
        "8080:80",
        "shoal/echo:1",
    ])?;
    cluster.wait("3 running web tasks", WAIT, || {
        (cluster.running_tasks("web") == 3).then_some(())
    })?;
    let url = "http://192.0.2.13:8080/";
    cluster.wait("n3 to answer on 8080", WAIT, || {
        (answers(url, 1).ok()?.keys().all(|k| k.starts_with("web."))).then_some(())
    })?;
    let host = cluster.lab.host("n3")?;
    let root = shoal_tests::Lab::bpffs_root(&host);
    ensure!(root.exists(), "n3 has no pinned tree at {}", root.display());
    cluster.lab.kill_node("n3")?;
    let data_dir = shoal_lab::cluster::node_dir(&cluster.lab, &host).join("agent");
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", host.netns))
        .arg(bin("shoal-agent")?)
        .arg("--bpffs")
        .arg(&root)
        .arg("leave")
        .arg("--data-dir")
        .arg(&data_dir)
        .output()?;
    ensure!(out.status.success(), "leave failed: {out:?}");
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
    ensure!(
        !root.exists(),
        "the pinned tree is still at {}",
        root.display()
    );
    let links = cmd::stdout(
        "ip",
        &["netns", "exec", &host.netns, "ip", "-o", "link", "show"],
    )?;
    ensure!(
        !links.contains("shbr") && !links.contains("shvx"),
        "overlay devices left on n3: {links}"
    );
    let out = client::toolbox_output(&["--timeout-ms", "500", "tcp-connect", "192.0.2.13:8080"])?;
    ensure!(!out.status.success(), "n3 still answers 8080 after leave");
    let left = cmd::stdout(
        "docker",
        &["ps", "-q", "--filter", "label=com.shoal.service.name=web"],
    )?;
    ensure!(
        left.split_whitespace().count() == 2,
        "n3's task container is still there: {left}"
    );
    Ok(())
}

/// A stack whose services publish ports and are on two networks of their
/// own besides ingress (the stack's default network and `back`), as a real
/// stack's services are: the tasks' way out is then not only ingress.
const SEVERAL_NETWORKS: &str = r#"
version: "3.8"
services:
  hm:
    image: shoal/echo:1
    deploy:
      mode: global
    ports:
      - { target: 80, published: 8081, protocol: tcp, mode: host }
      - { target: 80, published: 8081, protocol: udp, mode: host }
    networks: [default, back]
  im:
    image: shoal/echo:1
    deploy:
      replicas: 3
      placement:
        max_replicas_per_node: 1
    ports:
      - "8080:80"
      - "8080:80/udp"
    networks: [default, back]
  tb:
    image: shoal/toolbox
    # Publishes a port only to be on ingress too, as hm and im are.
    ports:
      - { target: 9, published: 8083, mode: host }
    networks: [default, back]
networks:
  back: {}
"#;

/// The task of a global service on `hostname` (`service ps` names it
/// `SERVICE.NODE-ID`, as the task's own name is).
fn global_task_on(cluster: &LabCluster, service: &str, hostname: &str) -> Option<String> {
    cluster
        .json_rows(&["service", "ps", "--no-trunc", service])
        .ok()?
        .iter()
        .find(|r| r["Node"] == hostname && r["DesiredState"] == "Running")
        .and_then(|r| r["Name"].as_str().map(str::to_owned))
}

#[test]
fn published_ports_answer_on_every_node_when_tasks_are_on_several_networks() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("docker-compose.yml");
    std::fs::write(&file, SEVERAL_NETWORKS)?;
    cluster.shoal(&[
        "stack",
        "deploy",
        "-c",
        &file.display().to_string(),
        "multi",
    ])?;
    for (service, n) in [("multi_hm", 3), ("multi_im", 3), ("multi_tb", 1)] {
        cluster.wait(&format!("{n} running {service}"), WAIT, || {
            (cluster.running_tasks(service) == n).then_some(())
        })?;
    }

    // Ingress mode: every node balances over the 3 tasks, TCP and UDP. The
    // replies go to a node's ingress address, on the ingress subnet: they
    // leave by the ingress interface whatever the task's default route.
    let tasks: Vec<String> = (1..=3).map(|i| format!("multi_im.{i}")).collect();
    for node in NODES {
        let url = format!("http://{node}:8080/");
        cluster.wait(
            &format!("{node}:8080 to balance over 3 tasks"),
            WAIT,
            || (answers(&url, 3).ok()?.len() == 3).then_some(()),
        )?;
        let got = answers(&url, 30)?;
        let want: BTreeMap<String, usize> = tasks.iter().map(|t| (t.clone(), 10)).collect();
        ensure!(
            got == want,
            "30 connections to {node}:8080 (ingress mode, tasks on 3 networks) went {got:?}"
        );
        for _ in 0..3 {
            let out = client::toolbox_output(&["udp-send", &format!("{node}:8080"), "whoami"])?;
            ensure!(
                String::from_utf8_lossy(&out.stdout).contains("\"task\":\"multi_im."),
                "UDP to {node}:8080 (ingress mode, tasks on 3 networks): {out:?}"
            );
        }
        println!("{node}:8080 (ingress mode): {got:?}");
    }

    // Host mode, TCP and UDP: every node answers with its own task, which
    // sees the client's own address; every request is answered. The replies
    // go to the client itself, by the task's default route (and UDP's
    // source address comes from it): it must be the ingress network.
    for (i, node) in NODES.iter().enumerate() {
        let hostname = format!("n{}", i + 1);
        let task = cluster.wait(&format!("the hm task on {hostname}"), WAIT, || {
            global_task_on(&cluster, "multi_hm", &hostname)
        })?;
        let url = format!("http://{node}:8081/");
        cluster.wait(&format!("{node}:8081 (host mode) to answer"), WAIT, || {
            (answers(&url, 1).ok()?.contains_key(&task)).then_some(())
        })?;
        let out = client::toolbox_output(&["http-get", &url, "--count", "20"])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            text.lines().count() == 20
                && text.lines().all(|l| l.contains(" 200 ")
                    && l.contains(&format!("\"task\":\"{task}\""))
                    && l.contains("\"client\":\"192.0.2.100:")),
            "20 requests to {node}:8081 (host mode, task on 3 networks), all to {task} \
             from the client's own address, got: {text}"
        );
        for _ in 0..5 {
            let out = client::toolbox_output(&["udp-send", &format!("{node}:8081"), "whoami"])?;
            let reply = String::from_utf8_lossy(&out.stdout).into_owned();
            ensure!(
                out.status.success()
                    && reply.contains(&format!("\"task\":\"{task}\""))
                    && reply.contains("\"client\":\"192.0.2.100:"),
                "UDP to {node}:8081 (host mode, task on 3 networks): {out:?}"
            );
        }
        println!("{node}:8081 (host mode): 20 TCP + 5 UDP answered by {task}");
    }

    // A task of the same shape still finds services by name and outside
    // names (the resolver on its stack network), reaches their VIP, and
    // opens connections to the outside of its own.
    let tb = containers_of("multi_tb")?;
    let tb = tb.first().context("no multi_tb container")?;
    let out = toolbox_in(tb, &["http-get", "http://im/", "--count", "3"])?;
    ensure!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(" 200 ") && l.contains("\"task\":\"multi_im."))
            .count()
            == 3,
        "the VIP of im by name from a task on ingress + 2 networks: {out:?}"
    );
    let out = toolbox_in(tb, &["dns", "www.upstream.test"])?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "192.0.2.200",
        "an upstream name from a task on ingress + 2 networks: {out:?}"
    );
    let out = toolbox_in(tb, &["tcp-connect", "192.0.2.53:53"])?;
    ensure!(
        out.status.success(),
        "no egress from a task on ingress + 2 networks: {out:?}"
    );
    Ok(())
}
