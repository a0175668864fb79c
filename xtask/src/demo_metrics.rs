//! The demo's metrics section: every manager's and agent's `/metrics`
//! endpoint, an admin client certificate to read them with, a Prometheus
//! configuration that scrapes them all (`shoal_lab::prometheus`), and a
//! few series read through the first manager's endpoint.

use std::{net::SocketAddr, path::Path};

use anyhow::{Context, Result};
use shoal_lab::{
    Lab, cmd,
    prometheus::{self, Scrape},
    state::StateDir,
    topology,
};

/// Prints the endpoints, writes the certificate and configuration under
/// the lab's state dir, and shows a few series.
pub fn show(lab: &Lab, bins: &Path, nodes: usize, managers: usize) -> Result<()> {
    let dir = StateDir::from_env().path().join("metrics");
    let certs = dir.join("admin");
    if !certs.join("cert.pem").exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let out = certs.display().to_string();
        lab.shoal(bins, &["cert", "issue", "--out", &out])?;
    }
    let at =
        |index: usize, port: u16| SocketAddr::new(topology::Host::node(index).addr.into(), port);
    let manager_addrs: Vec<SocketAddr> = (1..=managers)
        .map(|i| at(i, prometheus::MANAGER_PORT))
        .collect();
    let agent_addrs: Vec<SocketAddr> = (1..=nodes).map(|i| at(i, prometheus::AGENT_PORT)).collect();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        prometheus::config(&Scrape {
            managers: &manager_addrs,
            agents: &agent_addrs,
            certs: &certs,
            interval: "5s",
        }),
    )
    .with_context(|| format!("writing {}", config.display()))?;

    println!(
        "\n== Metrics for Prometheus: HTTPS, readable with a manager or admin client certificate"
    );
    for addr in &manager_addrs {
        println!(
            "manager  https://{addr}/metrics   (server name {})",
            prometheus::MANAGER_SERVER_NAME
        );
    }
    for addr in &agent_addrs {
        println!(
            "agent    https://{addr}/metrics   (server name {})",
            prometheus::AGENT_SERVER_NAME
        );
    }
    println!(
        "An admin certificate: {0}/{{ca,cert,key}}.pem; a Prometheus configuration scraping them all: {1}\n\
         (`ip netns exec {2} prometheus --config.file={1} --storage.tsdb.path=/tmp/shoal-prometheus`).",
        certs.display(),
        config.display(),
        topology::CLIENT_NS
    );
    let first = manager_addrs.first().context("no manager")?;
    let text = scrape(&certs, *first, prometheus::MANAGER_SERVER_NAME)?;
    println!("From https://{first}/metrics:");
    for line in text.lines().filter(|l| {
        l.starts_with("shoal_raft_term ")
            || l.starts_with("shoal_raft_is_leader ")
            || l.starts_with("shoal_tasks{")
            || l.starts_with("shoal_dispatcher_sessions ")
    }) {
        println!("  {line}");
    }
    Ok(())
}

/// `GET /metrics` from the lab's client host, with the admin certificate.
fn scrape(certs: &Path, addr: SocketAddr, server_name: &str) -> Result<String> {
    let file = |name: &str| certs.join(name).display().to_string();
    let connect_to = format!("{server_name}:{0}:{1}:{0}", addr.port(), addr.ip());
    let url = format!("https://{server_name}:{}/metrics", addr.port());
    Ok(cmd::stdout(
        "ip",
        &[
            "netns",
            "exec",
            topology::CLIENT_NS,
            "curl",
            "-sf",
            "--max-time",
            "5",
            "--cacert",
            &file("ca.pem"),
            "--cert",
            &file("cert.pem"),
            "--key",
            &file("key.pem"),
            "--connect-to",
            &connect_to,
            &url,
        ],
    )?)
}
