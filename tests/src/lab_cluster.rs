//! A Shoal cluster of real processes on the lab: managers on the first
//! nodes, optionally an agent on every node, driven by the real CLI. It is
//! stopped (processes, task containers, data) when dropped: later lab tests
//! count packets on the underlay.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{Lab, bin, lab};

pub struct LabCluster {
    pub lab: Lab,
    pub bins: PathBuf,
}

impl Drop for LabCluster {
    fn drop(&mut self) {
        if let Some(nodes) = self.lab.nodes() {
            for i in 1..=nodes {
                let _ = self.lab.heal(&format!("n{i}"));
            }
        }
        let _ = self.lab.stop_cluster();
    }
}

impl LabCluster {
    /// A new cluster: `managers` managers, and agents on every node if asked.
    pub fn start(managers: usize, agents: bool) -> Result<Self> {
        Self::launch(managers, agents.then_some(&[]))
    }

    /// A new cluster with agents on every node, each started with
    /// `agent_args` too (`--max-tasks 3`).
    pub fn start_with_agent_args(managers: usize, agent_args: &[&str]) -> Result<Self> {
        let args: Vec<String> = agent_args.iter().map(|a| a.to_string()).collect();
        Self::launch(managers, Some(&args))
    }

    fn launch(managers: usize, agents: Option<&[String]>) -> Result<Self> {
        let lab = lab()?;
        lab.stop_cluster()?;
        let bins = bin("shoal-manager")?
            .parent()
            .context("bin dir")?
            .to_owned();
        bin("shoal")?;
        // Lab tests probe the cluster with the toolbox; a missing one must
        // fail here, by name, not as a wait that times out.
        bin("shoal-toolbox")?;
        lab.start_managers(managers, &bins, &mut |_| {})?;
        let cluster = Self { lab, bins };
        if let Some(agent_args) = agents {
            bin("shoal-agent")?;
            cluster
                .lab
                .start_agents_with(&cluster.bins, agent_args, &mut |_| {})?;
            let nodes = cluster.lab.nodes().unwrap_or(0);
            let hosts: Vec<_> = (1..=nodes).map(crate::topology::Host::node).collect();
            cluster.lab.wait_ready(
                &cluster.bins,
                &hosts,
                shoal_lab::readiness::READY_TIMEOUT,
                &mut |_| {},
            )?;
        }
        Ok(cluster)
    }

    /// The `--host` value that reaches a live manager.
    pub fn lab_host(&self) -> Result<String> {
        Ok(self.lab.shoal_host()?)
    }

    pub fn shoal(&self, args: &[&str]) -> Result<String> {
        Ok(self.lab.shoal(&self.bins, args)?)
    }

    /// `shoal … --format json` rows.
    pub fn json_rows(&self, args: &[&str]) -> Result<Vec<Value>> {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        parse_rows(&self.shoal(&all)?)
    }

    /// `service`'s (first) VIP, from `service inspect`.
    pub fn vip(&self, service: &str) -> Result<std::net::Ipv4Addr> {
        let inspect: Value = serde_json::from_str(&self.shoal(&["service", "inspect", service])?)?;
        inspect[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .with_context(|| format!("{service} has no VIP"))?
            .parse()
            .with_context(|| format!("{service}'s VIP"))
    }

    /// How many of `service`'s tasks are running and meant to be.
    pub fn running_tasks(&self, service: &str) -> usize {
        self.json_rows(&["service", "ps", service])
            .map(|rows| {
                rows.iter()
                    .filter(|r| r["DesiredState"] == "Running")
                    .filter(|r| {
                        r["CurrentState"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("Running"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Every node's status by hostname, as the manager on `via` sees it.
    pub fn node_statuses_via(&self, via: &str) -> Result<BTreeMap<String, String>> {
        Ok(self
            .json_rows_via(via, &["node", "ls"])?
            .iter()
            .map(|r| {
                (
                    r["Hostname"].as_str().unwrap_or("").to_owned(),
                    r["Status"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect())
    }

    /// The leader's hostname, as the manager on `via` sees it.
    pub fn leader_via(&self, via: &str) -> Option<String> {
        self.json_rows_via(via, &["node", "ls"])
            .ok()?
            .iter()
            .find(|r| r["ManagerStatus"] == "Leader")
            .and_then(|r| r["Hostname"].as_str().map(str::to_owned))
    }

    /// `service`'s tasks running and meant to be, as the manager on `via`
    /// sees them: task id → node.
    pub fn running_task_nodes_via(
        &self,
        via: &str,
        service: &str,
    ) -> Result<BTreeMap<String, String>> {
        Ok(self
            .json_rows_via(via, &["service", "ps", service])?
            .iter()
            .filter(|r| r["DesiredState"] == "Running")
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Running"))
            })
            .map(|r| {
                (
                    r["ID"].as_str().unwrap_or("").to_owned(),
                    r["Node"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect())
    }

    /// `shoal … --format json` rows from the manager on `node`.
    pub fn json_rows_via(&self, node: &str, args: &[&str]) -> Result<Vec<Value>> {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        parse_rows(&self.lab.shoal_via(&self.bins, node, &all)?)
    }

    /// Polls `check` every 200 ms until it returns Some.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check() {
                return Ok(value);
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One JSON object per line, as `--format json` prints them.
fn parse_rows(text: &str) -> Result<Vec<Value>> {
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}
