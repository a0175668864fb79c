//! Lab: Debian's real Prometheus, in the lab's `shoal-client` host,
//! scrapes every manager's and every agent's `/metrics` over HTTPS with an
//! admin client certificate (`shoal cert issue`), with a configuration
//! `shoal_lab::prometheus` writes; its HTTP API then returns a series from
//! each node, and the mesh's counters for traffic the client sent. Without
//! a client certificate the endpoints answer 401.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use shoal_lab::prometheus::{self, Scrape};
use shoal_tests::{bin, lab_cluster::LabCluster, topology};

const WAIT: Duration = Duration::from_secs(60);
const NODES: [&str; 3] = ["192.0.2.11", "192.0.2.12", "192.0.2.13"];
const MANAGER_PORT: u16 = shoal_api::MANAGER_METRICS_PORT;
const AGENT_PORT: u16 = shoal_api::AGENT_METRICS_PORT;
// The demo's copy of the defaults (the lab crate has no API dependency).
const _: () =
    assert!(prometheus::MANAGER_PORT == MANAGER_PORT && prometheus::AGENT_PORT == AGENT_PORT);
/// Where Prometheus listens, inside the client's namespace.
const PROMETHEUS: &str = "127.0.0.1:9090";

/// `program args…` in the client's namespace.
fn in_client(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", topology::CLIENT_NS, program])
        .args(args);
    command
}

/// A Prometheus server, killed when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(dir: &Path, config: &str) -> Result<Prometheus> {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("prometheus is missing: run `cargo xtask setup` (Debian's `prometheus`)");
    }
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config)?;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    let child = in_client(
        "prometheus",
        &[
            &format!("--config.file={}", config_file.display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            &format!("--web.listen-address={PROMETHEUS}"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .context("starting prometheus")?;
    Ok(Prometheus(child))
}

/// The result vector of an instant query, or None while Prometheus is not
/// answering yet.
fn query(promql: &str) -> Option<Vec<Value>> {
    let out = in_client(
        "curl",
        &[
            "-s",
            "--max-time",
            "5",
            &format!("http://{PROMETHEUS}/api/v1/query"),
            "--data-urlencode",
            &format!("query={promql}"),
        ],
    )
    .output()
    .ok()?;
    let answer: Value = serde_json::from_slice(&out.stdout).ok()?;
    (answer["status"] == "success").then(|| answer["data"]["result"].as_array().cloned())?
}

/// The `instance` label of each series in `result`.
fn instances(result: &[Value]) -> BTreeSet<String> {
    result
        .iter()
        .filter_map(|s| s["metric"]["instance"].as_str().map(str::to_owned))
        .collect()
}

fn value(series: &Value) -> Option<f64> {
    series["value"][1].as_str()?.parse().ok()
}

fn addrs(port: u16) -> Vec<SocketAddr> {
    NODES
        .iter()
        .map(|n| SocketAddr::new(n.parse().expect("a lab address"), port))
        .collect()
}

/// The HTTP status of `GET /metrics` at `addr` from the client, verifying
/// the server as `server_name`, with the client certificate in `certs`
/// if given.
fn status_of(
    addr: SocketAddr,
    server_name: &str,
    ca: &Path,
    certs: Option<&Path>,
) -> Result<String> {
    let connect_to = format!("{server_name}:{0}:{1}:{0}", addr.port(), addr.ip());
    let url = format!("https://{server_name}:{}/metrics", addr.port());
    let ca = ca.display().to_string();
    let mut args = vec![
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        "--cacert",
        &ca,
        "--connect-to",
        &connect_to,
    ];
    let (cert, key);
    if let Some(certs) = certs {
        cert = certs.join("cert.pem").display().to_string();
        key = certs.join("key.pem").display().to_string();
        args.extend(["--cert", &cert, "--key", &key]);
    }
    args.push(&url);
    let out = in_client("curl", &args).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn prometheus_scrapes_every_manager_and_agent() -> Result<()> {
    let cluster = LabCluster::start(3, true)?;
    bin("shoal-toolbox")?;
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("admin");
    cluster.shoal(&[
        "cert",
        "issue",
        "--out",
        certs.to_str().context("utf-8 path")?,
    ])?;
    let ca = certs.join("ca.pem");

    // Protected: no client certificate, no metrics; the admin's reads them,
    // and each server proves the name its role's certificates carry.
    for (addr, name) in [
        (addrs(MANAGER_PORT)[0], prometheus::MANAGER_SERVER_NAME),
        (addrs(AGENT_PORT)[1], prometheus::AGENT_SERVER_NAME),
    ] {
        let anonymous = status_of(addr, name, &ca, None)?;
        ensure!(
            anonymous == "401",
            "{addr} without a certificate answered {anonymous}"
        );
        let admin = status_of(addr, name, &ca, Some(&certs))?;
        ensure!(
            admin == "200",
            "{addr} with an admin certificate answered {admin}"
        );
    }

    // Traffic through the mesh, for its counters.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "--publish",
        "8080:80",
        "shoal/echo:1",
    ])?;
    let toolbox = bin("shoal-toolbox")?.display().to_string();
    cluster.wait("web to answer on 192.0.2.13:8080", WAIT, || {
        let out = in_client(
            &toolbox,
            &["http-get", "http://192.0.2.13:8080/", "--count", "10"],
        )
        .output()
        .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text.lines().filter(|l| l.contains(" 200 ")).count() == 10)
            .then_some(())
    })?;

    // A port whose allow-list leaves the client out: its drops are counted
    // per port.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "closed",
        "--publish",
        "published=8081,target=80,allow=192.0.2.250/32",
        "shoal/echo:1",
    ])?;
    cluster.wait("closed to run", WAIT, || {
        let rows = cluster.json_rows(&["service", "ls"]).ok()?;
        rows.iter()
            .any(|r| r["Name"] == "closed" && r["Replicas"] == "1/1")
            .then_some(())
    })?;
    let refused = in_client(
        &toolbox,
        &[
            "--timeout-ms",
            "500",
            "http-get",
            "http://192.0.2.13:8081/",
            "--count",
            "1",
        ],
    )
    .output()?;
    ensure!(
        !String::from_utf8_lossy(&refused.stdout).contains(" 200 "),
        "a client the allow-list leaves out was answered"
    );

    let config = prometheus::config(&Scrape {
        managers: &addrs(MANAGER_PORT),
        agents: &addrs(AGENT_PORT),
        certs: &certs,
        interval: "1s",
    });
    let _prometheus = start_prometheus(dir.path(), &config)?;
    let managers: BTreeSet<String> = addrs(MANAGER_PORT).iter().map(|a| a.to_string()).collect();
    let agents: BTreeSet<String> = addrs(AGENT_PORT).iter().map(|a| a.to_string()).collect();
    let scraped = cluster.wait("a series from every manager and agent", WAIT, || {
        let raft = query("shoal_raft_term")?;
        let tasks = query("shoal_task_starts_total")?;
        (instances(&raft) == managers && instances(&tasks) == agents).then_some((raft, tasks))
    });
    let scraped = match scraped {
        Ok(scraped) => scraped,
        Err(error) => {
            let targets = in_client(
                "curl",
                &["-s", &format!("http://{PROMETHEUS}/api/v1/targets")],
            )
            .output()?;
            let log =
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            bail!(
                "{error}\ntargets: {}\nprometheus log (end): {}",
                String::from_utf8_lossy(&targets.stdout),
                &log[log.len().saturating_sub(2000)..]
            );
        }
    };
    println!("raft terms: {:?}", scraped.0);
    ensure!(
        scraped.0.iter().all(|s| value(s).is_some_and(|t| t >= 1.0)),
        "every manager is past term 0: {:?}",
        scraped.0
    );
    let up = query("up").context("querying up")?;
    ensure!(
        up.len() == 6 && up.iter().all(|s| value(s) == Some(1.0)),
        "every target up: {up:?}"
    );
    let leaders = query("sum(shoal_raft_is_leader)").context("querying leaders")?;
    ensure!(
        leaders.first().and_then(value) == Some(1.0),
        "exactly one leader: {leaders:?}"
    );
    // The 10 connections entered on n3; its mesh counted them.
    cluster.wait("the mesh's connections on 192.0.2.13", WAIT, || {
        let result = query(&format!(
            "shoal_mesh_connections_total{{instance=\"192.0.2.13:{AGENT_PORT}\",port=\"8080\",protocol=\"tcp\"}}"
        ))?;
        (result.first().and_then(value)? >= 10.0).then_some(())
    })?;
    cluster.wait("the allow-list's drops on 192.0.2.13:8081", WAIT, || {
        let result = query(&format!(
            "shoal_mesh_drops_total{{instance=\"192.0.2.13:{AGENT_PORT}\",port=\"8081\",protocol=\"tcp\"}}"
        ))?;
        (result.first().and_then(value)? >= 1.0).then_some(())
    })?;
    let running = query("shoal_tasks{state=\"running\"}").context("querying tasks")?;
    ensure!(
        running.iter().any(|s| value(s) == Some(3.0)),
        "the leader's store holds 3 running tasks: {running:?}"
    );
    Ok(())
}
