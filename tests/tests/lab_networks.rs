//! Networks as `docker network` makes them, on the lab: plain containers
//! (`docker run`, no task's) connected to an attachable overlay reach
//! services by name and are reached by name; a network of several subnets
//! with a range and a gateway of its own carries tasks on each subnet.

use std::{process::Output, time::Duration};

use anyhow::{Result, ensure};
use serde_json::Value;
use shoal_tests::{cmd, containers_of, lab_cluster::LabCluster, pid_of, toolbox_in};

const WAIT: Duration = Duration::from_secs(60);

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A container of the lab's Docker that is no task's (`--network none`:
/// the lab's hosts have no Docker networking), labelled for `lab down`.
fn plain_container(name: &str, image: &str, dns: &str) -> Result<()> {
    let _ = cmd::run("docker", &["rm", "-f", name]);
    cmd::run(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--dns",
            dns,
            "--label",
            &format!("{}=1", shoal_lab::CONTAINER_LABEL),
            image,
        ],
    )?;
    Ok(())
}

fn one_running(cluster: &LabCluster, service: &str, n: usize) -> Result<Vec<String>> {
    cluster.wait(&format!("{n} running {service} tasks"), WAIT, || {
        let running = cluster
            .json_rows(&["service", "ps", service, "-f", "desired-state=running"])
            .ok()?
            .iter()
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Running")
            })
            .count();
        let ids = containers_of(service).ok()?;
        (running == n && ids.len() == n).then_some(ids)
    })
}

fn inspect(cluster: &LabCluster, args: &[&str]) -> Result<Value> {
    let mut all = vec!["network", "inspect"];
    all.extend(args);
    let out: Value = serde_json::from_str(&cluster.shoal(&all)?)?;
    Ok(out[0].clone())
}

/// `toolbox http-get URL` succeeds in `container`.
fn reaches(container: &str, url: &str) -> bool {
    toolbox_in(container, &["http-get", url])
        .map(|o| stdout(&o).contains(" 200 "))
        .unwrap_or(false)
}

#[test]
fn a_connected_container_reaches_services_by_name_and_is_reached_by_name() -> Result<()> {
    shoal_tests::require_images()?;
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--subnet",
        "198.19.40.0/24",
        "--gateway",
        "198.19.40.1",
        "front",
    ])?;
    cluster.shoal(&["network", "create", "--subnet", "198.19.41.0/24", "closed"])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--network",
        "front",
        "--replicas",
        "2",
        "shoal/echo:1",
    ])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "probe",
        "--network",
        "front",
        "shoal/toolbox",
    ])?;
    one_running(&cluster, "web", 2)?;
    let probe = one_running(&cluster, "probe", 1)?.remove(0);

    // A client on n2 and a server on n3, both plain `docker run` ones.
    plain_container("lab-client", "shoal/toolbox", "198.19.40.1")?;
    plain_container("lab-server", "shoal/echo:1", "198.19.40.1")?;
    let err = cluster
        .shoal(&["network", "connect", "--node", "n2", "closed", "lab-client"])
        .unwrap_err()
        .to_string();
    ensure!(err.contains("not manually attachable"), "{err}");
    cluster.shoal(&["network", "connect", "--node", "n2", "front", "lab-client"])?;
    cluster.shoal(&[
        "network",
        "connect",
        "--node",
        "n3",
        "--alias",
        "backend",
        "--ip",
        "198.19.40.200",
        "front",
        "lab-server",
    ])?;
    let err = cluster
        .shoal(&["network", "connect", "--node", "n3", "front", "lab-server"])
        .unwrap_err()
        .to_string();
    ensure!(err.contains("already exists in network front"), "{err}");
    let err = cluster
        .shoal(&[
            "network",
            "connect",
            "--node",
            "n3",
            "front",
            "no-such-container",
        ])
        .unwrap_err()
        .to_string();
    ensure!(
        err.contains("No such container: no-such-container"),
        "{err}"
    );

    // The connected client reaches the service by name (its VIP, across
    // nodes), and its tasks by `tasks.web`.
    cluster.wait("lab-client to reach web by name", WAIT, || {
        reaches("lab-client", "http://web/").then_some(())
    })?;
    let out = toolbox_in("lab-client", &["dns", "tasks.web"])?;
    ensure!(
        stdout(&out).lines().count() == 2,
        "tasks.web: {}",
        stdout(&out)
    );
    // A task reaches the connected server by its name, its alias and the
    // address asked for.
    for url in [
        "http://lab-server/",
        "http://backend/",
        "http://198.19.40.200/",
    ] {
        cluster.wait(&format!("probe to reach {url}"), WAIT, || {
            reaches(&probe, url).then_some(())
        })?;
    }
    // And the two plain containers each other, by name.
    ensure!(reaches("lab-client", "http://lab-server/"));

    // inspect -v lists them with their addresses.
    let front = inspect(&cluster, &["-v", "front"])?;
    ensure!(
        front["Services"]["lab-server"]["Tasks"][0]["EndpointIP"] == "198.19.40.200",
        "{front:#}"
    );
    ensure!(front["Services"]["web"]["Tasks"].as_array().map(Vec::len) == Some(2));

    // Disconnected: gone from the network and from DNS.
    cluster.shoal(&[
        "network",
        "disconnect",
        "--node",
        "n3",
        "front",
        "lab-server",
    ])?;
    cluster.wait("lab-server out of DNS", WAIT, || {
        let out = toolbox_in(&probe, &["dns", "lab-server"]).ok()?;
        // Not the cluster's name any more: NXDOMAIN, or the upstream's refusal.
        (out.status.code() != Some(0) && stdout(&out).trim().is_empty()).then_some(())
    })?;
    let pid = pid_of("lab-server")?;
    let links = cmd::stdout("nsenter", &["-t", &pid, "-n", "ip", "-o", "link"])?;
    ensure!(
        !links.contains("eth0"),
        "lab-server kept its interface: {links}"
    );
    // A stopped container leaves the network by itself.
    cmd::run("docker", &["rm", "-f", "lab-client"])?;
    cluster.wait("lab-client's attachment to end", WAIT, || {
        let v = inspect(&cluster, &["-v", "front"]).ok()?;
        v["Services"].get("lab-client").is_none().then_some(())
    })?;
    let _ = cmd::run("docker", &["rm", "-f", "lab-server"]);
    Ok(())
}

#[test]
fn several_subnets_a_range_and_a_gateway_carry_tasks_on_each_subnet() -> Result<()> {
    shoal_tests::require_images()?;
    let cluster = LabCluster::start(1, true)?;
    let err = cluster
        .shoal(&["network", "create", "--ipv6", "v6"])
        .unwrap_err()
        .to_string();
    ensure!(err.contains("IPv4 only"), "{err}");
    cluster.shoal(&[
        "network",
        "create",
        "--subnet",
        "198.19.50.0/29",
        "--subnet",
        "198.19.51.0/24",
        "--ip-range",
        "198.19.51.128/25",
        "--gateway",
        "198.19.51.254",
        "--ipam-opt",
        "o=1",
        "multi",
    ])?;
    let multi = inspect(&cluster, &["multi"])?;
    let config = multi["IPAM"]["Config"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(config.len() == 2, "{multi:#}");
    ensure!(config[1]["IPRange"] == "198.19.51.128/25" && config[1]["Gateway"] == "198.19.51.254");
    ensure!(multi["IPAM"]["Options"]["o"] == "1");

    // The /29 holds its gateway, a VIP and four tasks: the rest come from
    // the second subnet's range.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--network",
        "multi",
        "--replicas",
        "6",
        "shoal/echo:1",
    ])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "probe",
        "--network",
        "multi",
        "shoal/toolbox",
    ])?;
    one_running(&cluster, "web", 6)?;
    let probe = one_running(&cluster, "probe", 1)?.remove(0);
    let v = inspect(&cluster, &["-v", "multi"])?;
    let addrs: Vec<String> = v["Services"]["web"]["Tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| t["EndpointIP"].as_str().unwrap_or("").to_owned())
        .collect();
    ensure!(addrs.len() == 6, "{v:#}");
    ensure!(
        addrs.iter().filter(|a| a.starts_with("198.19.50.")).count() == 4,
        "{addrs:?}"
    );
    ensure!(
        addrs
            .iter()
            .filter(|a| a.starts_with("198.19.51."))
            .all(|a| a
                .rsplit('.')
                .next()
                .and_then(|o| o.parse::<u8>().ok())
                .is_some_and(|o| o >= 128)),
        "outside the range: {addrs:?}"
    );
    // The probe (second subnet) reaches every task on either subnet, and
    // the service by name (DNS at the first subnet's gateway).
    for addr in &addrs {
        cluster.wait(&format!("probe to reach {addr}"), WAIT, || {
            reaches(&probe, &format!("http://{addr}/")).then_some(())
        })?;
    }
    ensure!(reaches(&probe, "http://web/"));

    // rm -f of a network that is not there is no error; prune keeps what is used.
    cluster.shoal(&["network", "rm", "-f", "no-such-network"])?;
    cluster.shoal(&["network", "create", "unused"])?;
    let out = cluster.shoal(&["network", "prune", "-f"])?;
    ensure!(out.contains("Deleted Networks:\nunused"), "{out}");
    ensure!(!out.contains("multi"), "{out}");
    Ok(())
}
