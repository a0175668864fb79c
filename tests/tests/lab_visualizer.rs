//! The visualizer as a person sees it: Debian's headless chromium opens the
//! page a real manager serves, in the manager node's namespace, through its
//! loopback address (where the page asks for no certificate; on the node's
//! address it asks for a manager or admin one, checked here with curl).

use std::{
    collections::BTreeSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use shoal_tests::{
    bin, chromium::Browser, cmd, lab_cluster::LabCluster, require_images, topology::Host,
};

const WAIT: Duration = Duration::from_secs(30);
const PAGE: &str = "http://127.0.0.1:2378/";

/// What the page draws, read from its DOM: each node column with the cards
/// in it.
const DRAWN: &str = r#"[...document.querySelectorAll('.node')].map(n => ({
  id: n.dataset.nodeId, hostname: n.dataset.hostname, status: n.dataset.status,
  tasks: [...n.querySelectorAll('.task')].map(t => ({id: t.dataset.taskId, service: t.dataset.service, state: t.dataset.state}))
}))"#;

/// Where the screenshots go for a person to look at: target/visualizer/.
fn screenshot_dir() -> Result<PathBuf> {
    let debug = bin("shoal")?.parent().context("bin dir")?.to_owned();
    Ok(debug.parent().context("target dir")?.join("visualizer"))
}

fn drawn(browser: &mut Browser) -> Result<Vec<Value>> {
    Ok(browser.eval(DRAWN)?.as_array().cloned().unwrap_or_default())
}

/// Tasks of `service` on the page, by node hostname.
fn cards_of(columns: &[Value], service: &str) -> BTreeSet<(String, String)> {
    columns
        .iter()
        .flat_map(|c| {
            let host = c["hostname"].as_str().unwrap_or("").to_owned();
            c["tasks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |t| {
                    (t["service"] == service)
                        .then(|| (host.clone(), t["id"].as_str().unwrap_or("").to_owned()))
                })
        })
        .collect()
}

/// The running tasks of `service` as `service ps` lists them: (node, id).
fn listed(cluster: &LabCluster, service: &str) -> Result<BTreeSet<(String, String)>> {
    Ok(cluster
        .json_rows(&[
            "service",
            "ps",
            "--no-trunc",
            "--filter",
            "desired-state=running",
            service,
        ])?
        .iter()
        .map(|r| {
            (
                r["Node"].as_str().unwrap_or("").to_owned(),
                r["ID"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect())
}

#[test]
fn the_page_draws_the_cluster_and_follows_it_live() -> Result<()> {
    require_images()?;
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "shoal/echo:1",
    ])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "api",
        "--replicas",
        "2",
        "shoal/echo:2",
    ])?;
    cluster.wait("5 tasks running", WAIT, || {
        let rows = cluster.json_rows(&["service", "ps", "web"]).ok()?;
        let more = cluster.json_rows(&["service", "ps", "api"]).ok()?;
        (rows
            .iter()
            .chain(&more)
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Running"))
            })
            .count()
            == 5)
            .then_some(())
    })?;

    let n1 = Host::node(1);
    let mut browser = Browser::start(Some(&n1.netns), 1366, 768)?;
    browser.navigate(PAGE)?;

    // Every node of `node ls` is a column with its status, every task of
    // `service ps` a card in its node's column.
    let nodes = cluster.json_rows(&["node", "ls"])?;
    let expected_nodes: BTreeSet<(String, String)> = nodes
        .iter()
        .map(|r| {
            (
                r["Hostname"].as_str().unwrap_or("").to_owned(),
                r["Status"].as_str().unwrap_or("").to_lowercase(),
            )
        })
        .collect();
    let (web, api) = (listed(&cluster, "web")?, listed(&cluster, "api")?);
    ensure!(
        web.len() == 3 && api.len() == 2,
        "service ps: {web:?} {api:?}"
    );
    let deadline = Instant::now() + WAIT;
    let mut columns;
    loop {
        columns = drawn(&mut browser)?;
        let shown: BTreeSet<(String, String)> = columns
            .iter()
            .map(|c| {
                (
                    c["hostname"].as_str().unwrap_or("").to_owned(),
                    c["status"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        if shown == expected_nodes
            && cards_of(&columns, "web") == web
            && cards_of(&columns, "api") == api
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the page does not draw the cluster: nodes {expected_nodes:?}, web {web:?}, api {api:?}; page: {columns:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = screenshot_dir()?;
    browser.screenshot(&dir.join("lab-cluster.png"))?;

    // A scale-up shows without a reload (the mark set in this page
    // survives) within 2 s of the command.
    browser.eval("window.__notReloaded = true")?;
    let asked = Instant::now();
    cluster.shoal(&["service", "scale", "--detach", "web=6"])?;
    let appeared = loop {
        let count = cards_of(&drawn(&mut browser)?, "web").len();
        if count == 6 {
            break asked.elapsed();
        }
        ensure!(
            asked.elapsed() < Duration::from_secs(2),
            "the scale-up to 6 did not show within 2 s (the page draws {count} web tasks)"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(
        browser.eval("window.__notReloaded === true")? == Value::Bool(true),
        "the page reloaded"
    );
    println!("scale-up drawn {appeared:?} after the command");
    cluster.wait("6 web tasks running", WAIT, || {
        (listed(&cluster, "web").ok()?.len() == 6).then_some(())
    })?;

    // A killed node turns Down on the page (3 missed heartbeats of 5 s).
    cluster.lab.kill_node("n3")?;
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(40);
    loop {
        let columns = drawn(&mut browser)?;
        if columns
            .iter()
            .any(|c| c["hostname"] == "n3" && c["status"] == "down")
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "n3 is not drawn down: {columns:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("n3 drawn down {:?} after it was killed", killed.elapsed());
    ensure!(
        browser.eval("window.__notReloaded === true")? == Value::Bool(true),
        "the page reloaded"
    );
    browser.screenshot(&dir.join("lab-cluster-n3-down.png"))?;
    println!("screenshots in {}", dir.display());
    Ok(())
}

#[test]
fn on_the_nodes_address_the_page_asks_a_manager_or_admin_certificate() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let n1 = Host::node(1);
    // Managers' certificates name `shoal-manager`: curl checks it and the
    // cluster's CA when it is given them.
    let resolve = format!("shoal-manager:2378:{}", n1.addr);
    let url = "https://shoal-manager:2378/".to_string();
    let curl = |extra: &[&str]| -> Result<String> {
        let mut args = vec![
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ];
        args.extend(["--resolve", &resolve]);
        args.extend(extra);
        args.push(&url);
        let output = cmd::in_netns("shoal-client", args[0])
            .args(&args[1..])
            .output()
            .context("running curl")?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    // No certificate: the TLS connection is made, the page refused.
    ensure!(
        curl(&["-k"])? == "401",
        "no certificate: {}",
        curl(&["-k"])?
    );
    // An admin certificate of the cluster, as `shoal cert issue` writes it.
    let dir = tempfile::tempdir()?;
    let out = dir.path().display().to_string();
    cluster.shoal(&["cert", "issue", "--out", &out])?;
    let (ca, cert, key) = (
        format!("{out}/ca.pem"),
        format!("{out}/cert.pem"),
        format!("{out}/key.pem"),
    );
    let with_cert = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    ensure!(
        curl(&with_cert)? == "200",
        "admin certificate: {}",
        curl(&with_cert)?
    );
    // A worker's own certificate (n2's agent) is of the cluster, and
    // refused: the control API's rule.
    let worker = shoal_lab::cluster::node_dir(&cluster.lab, &Host::node(2))
        .join("agent/certificates/current");
    let (worker_cert, worker_key) = (
        worker.join("node.crt").display().to_string(),
        worker.join("node.key").display().to_string(),
    );
    let as_worker = [
        "--cacert",
        &ca,
        "--cert",
        &worker_cert,
        "--key",
        &worker_key,
    ];
    ensure!(
        curl(&as_worker)? == "403",
        "worker certificate: {}",
        curl(&as_worker)?
    );
    // A plain-HTTP request on the TLS port gets nothing.
    let plain = format!("http://{}:2378/", n1.addr);
    let output = cmd::in_netns("shoal-client", "curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            &plain,
        ])
        .output()?;
    ensure!(
        String::from_utf8_lossy(&output.stdout) != "200",
        "the TLS port answered plain HTTP"
    );
    Ok(())
}
