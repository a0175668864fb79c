//! Overlay networks and service-name DNS on real agents and containers:
//! tasks on three nodes reach each other over VXLAN by address and by name,
//! other networks cannot reach them, and devices come and go with tasks.

use std::{
    collections::BTreeSet,
    process::Output,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use shoal_tests::{bin, cmd, containers_of, lab_cluster::LabCluster, pid_of, toolbox_in};

const WAIT: Duration = Duration::from_secs(30);

/// The container's address on its first interface.
fn address_of(container: &str) -> Result<String> {
    let pid = pid_of(container)?;
    let out = cmd::stdout(
        "nsenter",
        &[
            "-t", &pid, "-n", "ip", "-4", "-o", "addr", "show", "dev", "eth0",
        ],
    )?;
    let cidr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .with_context(|| format!("no IPv4 address on eth0 of {container}: {out}"))?;
    Ok(cidr.split('/').next().unwrap_or("").to_owned())
}

/// Runs the toolbox program in a container's network namespace (the echo
/// image has no client of its own); names are not resolved there.
fn toolbox_in_netns_of(container: &str, args: &[&str]) -> Result<Output> {
    let pid = pid_of(container)?;
    let toolbox = bin("shoal-toolbox")?.display().to_string();
    let mut all = vec!["-t", &pid, "-n", &toolbox];
    all.extend(args);
    Ok(std::process::Command::new("nsenter").args(&all).output()?)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn resolve(container: &str, name: &str) -> Result<(i32, BTreeSet<String>)> {
    let o = toolbox_in(container, &["dns", name])?;
    let addrs = stdout(&o).lines().map(str::to_owned).collect();
    Ok((o.status.code().unwrap_or(-1), addrs))
}

fn one_container(cluster: &LabCluster, service: &str) -> Result<String> {
    cluster.wait(&format!("a running {service} container"), WAIT, || {
        let running = cluster
            .json_rows(&["service", "ps", service])
            .ok()?
            .iter()
            .any(|r| {
                r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Running"))
            });
        let ids = containers_of(service).ok()?;
        (running && ids.len() == 1).then(|| ids[0].clone())
    })
}

fn vxlan_id(cluster: &LabCluster, network: &str) -> Result<String> {
    let inspect: serde_json::Value =
        serde_json::from_str(&cluster.shoal(&["network", "inspect", network])?)?;
    inspect[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
        .as_str()
        .map(str::to_owned)
        .context("no VXLAN id")
}

fn has_link(node: &str, name: &str) -> bool {
    cmd::stdout(
        "ip",
        &[
            "netns",
            "exec",
            &format!("shoal-{node}"),
            "ip",
            "-o",
            "link",
            "show",
        ],
    )
    .map(|out| {
        out.lines().any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|n| n.trim_end_matches(':').split('@').next() == Some(name))
        })
    })
    .unwrap_or(false)
}

#[test]
fn tasks_on_three_nodes_talk_over_the_overlay_and_find_services_by_name() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&["network", "create", "-d", "overlay", "appnet"])?;
    cluster.shoal(&["network", "create", "other"])?;
    cluster.shoal(&["network", "create", "--internal", "sealed"])?;
    // Options Shoal cannot honour are refused, never ignored.
    let err = cluster
        .shoal(&["network", "create", "--opt", "encrypted", "secure"])
        .unwrap_err();
    ensure!(
        format!("{err:#}").contains("option \"encrypted\" is not supported"),
        "{err:#}"
    );
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
        "tb",
        "--network",
        "appnet",
        "shoal/toolbox",
    ])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "outsider",
        "--network",
        "other",
        "shoal/toolbox",
    ])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "sealed",
        "--network",
        "sealed",
        "shoal/toolbox",
    ])?;
    let web = cluster.wait("3 web tasks on 3 nodes", WAIT, || {
        let rows = cluster.json_rows(&["service", "ps", "web"]).ok()?;
        let nodes: BTreeSet<String> = rows
            .iter()
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Running"))
            })
            .map(|r| r["Node"].as_str().unwrap_or("").to_owned())
            .collect();
        let ids = containers_of("web").ok()?;
        (nodes.len() == 3 && ids.len() == 3).then_some(ids)
    })?;
    let tb = one_container(&cluster, "tb")?;
    let outsider = one_container(&cluster, "outsider")?;
    let sealed = one_container(&cluster, "sealed")?;

    // Every task reaches every other by address: HTTP and TCP echo over
    // TCP, and UDP.
    let addrs: Vec<String> = web.iter().map(|c| address_of(c)).collect::<Result<_>>()?;
    for (i, from) in web.iter().enumerate() {
        for (j, to) in addrs.iter().enumerate() {
            if i == j {
                continue;
            }
            let http = toolbox_in_netns_of(from, &["http-get", &format!("http://{to}/")])?;
            ensure!(
                stdout(&http).contains(" 200 "),
                "HTTP {i} -> {to}: {http:?}"
            );
            let tcp = toolbox_in_netns_of(
                from,
                &["tcp-connect", &format!("{to}:7"), "--send", "over-vxlan"],
            )?;
            ensure!(
                stdout(&tcp).contains("over-vxlan"),
                "TCP echo {i} -> {to}: {tcp:?}"
            );
            let udp = toolbox_in_netns_of(from, &["udp-send", &format!("{to}:80"), "whoami"])?;
            ensure!(
                stdout(&udp).contains("\"task\":\"web."),
                "UDP {i} -> {to}: {udp:?}"
            );
        }
    }
    // Another network cannot reach them, by address or by name.
    let cut = toolbox_in(&outsider, &["tcp-connect", &format!("{}:80", addrs[0])])?;
    ensure!(
        !cut.status.success(),
        "a task on another network reached web: {cut:?}"
    );
    ensure!(
        resolve(&outsider, "web")?.0 == 3,
        "web resolved from another network"
    );

    // Names: the VIP, exactly the task addresses, then five after scaling.
    let inspect: serde_json::Value =
        serde_json::from_str(&cluster.shoal(&["service", "inspect", "web"])?)?;
    let vip = inspect[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .context("web has no VIP")?
        .to_owned();
    ensure!(
        resolve(&tb, "web")? == (0, BTreeSet::from([vip.clone()])),
        "web -> {:?}, VIP {vip}",
        resolve(&tb, "web")?
    );
    let tasks: BTreeSet<String> = addrs.iter().cloned().collect();
    ensure!(
        resolve(&tb, "tasks.web")? == (0, tasks.clone()),
        "tasks.web -> {:?}, tasks {tasks:?}",
        resolve(&tb, "tasks.web")?
    );
    // Scale up, then time DNS from the moment the manager has 5 running
    // tasks: answers must follow a task change within a second (how long
    // containers take to start is not DNS's part).
    let scaled = Instant::now();
    cluster.shoal(&["service", "scale", "web=5"])?;
    let five_running = cluster.wait("5 running web tasks", WAIT, || {
        let rows = cluster.json_rows(&["service", "ps", "web"]).ok()?;
        let running = rows
            .iter()
            .filter(|r| r["DesiredState"] == "Running")
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Running"))
            })
            .count();
        (running == 5).then(Instant::now)
    })?;
    let mut last = None;
    let waited = cluster.wait("tasks.web to give 5 addresses", WAIT, || {
        let answer = resolve(&tb, "tasks.web").ok()?;
        let done = answer.0 == 0 && answer.1.len() == 5;
        last = Some(answer);
        done.then_some(())
    });
    if let Err(error) = waited {
        bail!("{error:#}; the last answer: {last:?}; first tasks: {tasks:?}");
    }
    let (total, dns) = (scaled.elapsed(), five_running.elapsed());
    println!(
        "tasks.web gave 5 addresses {total:?} after `service scale web=5`, {dns:?} after the manager saw 5 running"
    );
    ensure!(
        dns < Duration::from_secs(1),
        "DNS took {dns:?} to follow 5 running tasks"
    );

    // Other names go upstream; unknown ones are NXDOMAIN.
    ensure!(resolve(&tb, "www.upstream.test")? == (0, BTreeSet::from(["192.0.2.200".to_owned()])));
    ensure!(
        resolve(&tb, "nosuch")?.0 == 3,
        "a bare unknown name must be NXDOMAIN"
    );
    ensure!(
        resolve(&tb, "nosuch.upstream.test")?.0 == 3,
        "upstream's NXDOMAIN passes through"
    );
    // A malformed query gets an error answer and the server lives on.
    let gateway = cluster.shoal(&["network", "inspect", "appnet"])?;
    let gateway: serde_json::Value = serde_json::from_str(&gateway)?;
    let gateway = gateway[0]["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let _ = toolbox_in(
        &tb,
        &[
            "udp-send",
            &format!("{gateway}:53"),
            "this is not a DNS message at all",
        ],
    )?;
    ensure!(
        resolve(&tb, "web")?.0 == 0,
        "the DNS server stopped answering after a malformed query"
    );

    // A task on two networks has two interfaces, overlay MTU (1500 - 50),
    // an alias, and its default route through the network with egress.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "multi",
        "--network",
        "sealed",
        "--network",
        "name=appnet,alias=both",
        "shoal/toolbox",
    ])?;
    let multi = one_container(&cluster, "multi")?;
    let pid = pid_of(&multi)?;
    let links = cmd::stdout("nsenter", &["-t", &pid, "-n", "ip", "-o", "link", "show"])?;
    for eth in ["eth0", "eth1"] {
        let line = links
            .lines()
            .find(|l| l.contains(&format!(" {eth}:")) || l.contains(&format!(" {eth}@")))
            .with_context(|| format!("multi has no {eth}: {links}"))?;
        ensure!(line.contains("mtu 1450"), "{eth} of multi: {line}");
    }
    let route = cmd::stdout(
        "nsenter",
        &["-t", &pid, "-n", "ip", "route", "show", "default"],
    )?;
    ensure!(
        route.contains("dev eth1"),
        "multi's default route is not through appnet (eth1): {route}"
    );
    let (code, both) = resolve(&tb, "both")?;
    ensure!(
        code == 0 && both.len() == 1 && !both.contains(&vip),
        "alias `both`: {both:?}"
    );
    ensure!(
        toolbox_in(&multi, &["tcp-connect", "192.0.2.53:53"])?
            .status
            .success(),
        "multi has no egress"
    );

    // Egress through the node; none from an internal network.
    let out = toolbox_in(&tb, &["tcp-connect", "192.0.2.53:53"])?;
    ensure!(out.status.success(), "no egress from appnet: {out:?}");
    let out = toolbox_in(&sealed, &["tcp-connect", "192.0.2.53:53"])?;
    ensure!(
        !out.status.success(),
        "an internal network reached the outside: {out:?}"
    );
    ensure!(
        resolve(&sealed, "www.upstream.test")?.0 == 3,
        "an internal network resolved an outside name"
    );

    // The last task of a network leaving a node takes its devices along.
    let vni = vxlan_id(&cluster, "other")?;
    let node = cluster.json_rows(&["service", "ps", "outsider"])?[0]["Node"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let (bridge, vxlan) = (format!("shbr{vni}"), format!("shvx{vni}"));
    ensure!(
        has_link(&node, &bridge) && has_link(&node, &vxlan),
        "{node} has no {bridge}/{vxlan}"
    );
    let err = cluster.shoal(&["network", "rm", "other"]).unwrap_err();
    ensure!(
        format!("{err:#}").contains("in use by the following service: outsider"),
        "{err:#}"
    );
    cluster.shoal(&["service", "rm", "outsider"])?;
    cluster.wait("the bridge and VXLAN device of `other` to go", WAIT, || {
        (!has_link(&node, &bridge) && !has_link(&node, &vxlan)).then_some(())
    })?;
    cluster.shoal(&["network", "rm", "other"])?;
    Ok(())
}

#[test]
fn a_restarted_agent_keeps_the_overlay_working_and_repairs_what_is_missing() -> Result<()> {
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
        "tb",
        "--network",
        "appnet",
        "--constraint",
        "node.hostname==n1",
        "shoal/toolbox",
    ])?;
    let tb = one_container(&cluster, "tb")?;
    let n2_id = cluster
        .json_rows(&["node", "ls"])?
        .into_iter()
        .find(|n| n["Hostname"] == "n2")
        .and_then(|n| n["ID"].as_str().map(str::to_owned))
        .context("no node n2")?;
    // Plugged, not only started: the agent plugs a container after it starts.
    let (web_on_n2, addr) = cluster.wait("a plugged web container on n2", WAIT, || {
        let container = containers_of("web").ok()?.into_iter().find(|c| {
            cmd::stdout(
                "docker",
                &[
                    "inspect",
                    "-f",
                    "{{index .Config.Labels \"com.shoal.node.id\"}}",
                    c,
                ],
            )
            .is_ok_and(|l| l.trim() == n2_id)
        })?;
        let addr = address_of(&container).ok()?;
        Some((container, addr))
    })?;
    let url = format!("http://{addr}/");
    let reach = || toolbox_in(&tb, &["http-get", &url]).map(|o| stdout(&o).contains(" 200 "));
    ensure!(reach()?, "tb cannot reach web on n2 at {addr}");

    // Killed: what it built keeps working.
    cluster.lab.kill_node("n2")?;
    ensure!(reach()?, "the overlay broke when the agent died");
    // Something goes missing while it is down: its host-side veth.
    let out = cmd::stdout(
        "ip",
        &["netns", "exec", "shoal-n2", "ip", "-o", "link", "show"],
    )?;
    let veths: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|n| {
            n.trim_end_matches(':')
                .split('@')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .filter(|n| n.starts_with("shv") && !n.starts_with("shvx"))
        .collect();
    ensure!(!veths.is_empty(), "no task veth on n2: {out}");
    for v in &veths {
        cmd::run("ip", &["netns", "exec", "shoal-n2", "ip", "link", "del", v])?;
    }
    ensure!(!reach()?, "web on n2 still answered without its veth");
    let started = Instant::now();
    cluster.lab.start_node("n2")?;
    cluster.wait("web on n2 to answer again", WAIT, || {
        reach().ok()?.then_some(())
    })?;
    println!(
        "a restarted agent re-plugged its containers in {:?}",
        started.elapsed()
    );
    // The same container, not a replacement.
    ensure!(
        containers_of("web")?.contains(&web_on_n2),
        "the web container on n2 was replaced"
    );
    if !veths.iter().all(|v| has_link("n2", v)) {
        bail!("the agent did not recreate {veths:?}");
    }
    Ok(())
}
