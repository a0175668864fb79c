//! A Prometheus configuration that scrapes a Shoal cluster's `/metrics`:
//! one job for the managers, one for the agents, each over HTTPS with a
//! client certificate (`shoal cert issue --out DIR` writes the `ca.pem`,
//! `cert.pem` and `key.pem` it names) and the server name the nodes'
//! certificates carry. The lab's metrics test and `cargo xtask demo` use
//! it; operators can start from it.

use std::{fmt::Write as _, net::SocketAddr, path::Path};

/// The daemons' default `/metrics` ports (`shoal_api::MANAGER_METRICS_PORT`
/// and `AGENT_METRICS_PORT`: this crate does not depend on the API's; the
/// lab's metrics test checks they agree).
pub const MANAGER_PORT: u16 = 9323;
pub const AGENT_PORT: u16 = 9324;

/// The name every manager certificate carries.
pub const MANAGER_SERVER_NAME: &str = "shoal-manager";
/// The name every worker (agent) certificate carries.
pub const AGENT_SERVER_NAME: &str = "shoal-worker";

/// What to scrape, and with which client certificate.
pub struct Scrape<'a> {
    pub managers: &'a [SocketAddr],
    pub agents: &'a [SocketAddr],
    /// A directory holding `ca.pem`, `cert.pem` and `key.pem`.
    pub certs: &'a Path,
    /// Prometheus's duration syntax: `1s`, `15s`.
    pub interval: &'a str,
}

/// The `prometheus.yml` text.
pub fn config(scrape: &Scrape<'_>) -> String {
    let mut out = format!(
        "global:\n  scrape_interval: {0}\n  evaluation_interval: {0}\nscrape_configs:\n",
        scrape.interval
    );
    for (job, targets, server_name) in [
        ("shoal-manager", scrape.managers, MANAGER_SERVER_NAME),
        ("shoal-agent", scrape.agents, AGENT_SERVER_NAME),
    ] {
        if targets.is_empty() {
            continue;
        }
        let file = |name: &str| yaml_string(&scrape.certs.join(name).display().to_string());
        let _ = write!(
            out,
            "  - job_name: {job}\n    scheme: https\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n      server_name: {server_name}\n    static_configs:\n      - targets: [{}]\n",
            file("ca.pem"),
            file("cert.pem"),
            file("key.pem"),
            targets
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
}

/// A YAML double-quoted string (paths may hold anything).
fn yaml_string(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_job_per_role_with_its_server_name() {
        let managers = ["192.0.2.11:9323".parse().unwrap()];
        let agents = [
            "192.0.2.11:9324".parse().unwrap(),
            "192.0.2.12:9324".parse().unwrap(),
        ];
        let text = config(&Scrape {
            managers: &managers,
            agents: &agents,
            certs: Path::new("/tmp/a \"b\""),
            interval: "1s",
        });
        assert!(text.contains("scrape_interval: 1s"), "{text}");
        assert!(
            text.contains("- job_name: shoal-manager\n    scheme: https\n"),
            "{text}"
        );
        assert!(text.contains("server_name: shoal-manager\n"), "{text}");
        assert!(text.contains("server_name: shoal-worker\n"), "{text}");
        assert!(
            text.contains("targets: ['192.0.2.11:9324', '192.0.2.12:9324']"),
            "{text}"
        );
        assert!(text.contains(r#"ca_file: "/tmp/a \"b\"/ca.pem""#), "{text}");
    }

    #[test]
    fn a_role_with_no_targets_has_no_job() {
        let text = config(&Scrape {
            managers: &["192.0.2.11:9323".parse().unwrap()],
            agents: &[],
            certs: Path::new("/c"),
            interval: "15s",
        });
        assert!(!text.contains("shoal-agent"), "{text}");
    }
}
