//! The lab the run uses: 5 nodes, 3 managers, an agent on every node, a
//! published service of 5 tasks on an overlay, and a toolbox task on the
//! same overlay to reach its VIP from.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use shoal_lab::{Lab, cluster::manager_socket, topology::Host};

use crate::{control::Manager, view};

pub const NODES: usize = 5;
pub const MANAGERS: usize = 3;
pub const WEB: &str = "web";
pub const WEB_REPLICAS: usize = 5;
pub const PORT: u16 = 8080;
pub const TOOLBOX: &str = "tb";
/// Heartbeat period while the run lasts: a lost node is declared down
/// after three missed heartbeats (Swarm's default period is 5 s).
pub const HEARTBEAT: &str = "2s";

/// A fresh lab and cluster (whatever was up is taken down first).
pub fn lab_and_cluster(lab: &Lab, bin_dir: &Path) -> Result<()> {
    let progress = &mut |line: &str| eprintln!("[lab] {line}");
    lab.down(progress)?;
    lab.up(NODES, progress)?;
    lab.start_cluster(MANAGERS, bin_dir, progress)?;
    Ok(())
}

/// The managers' sockets, by node.
pub fn managers(lab: &Lab) -> Vec<Manager> {
    (1..=MANAGERS)
        .map(Host::node)
        .map(|h| Manager::new(h.name.clone(), manager_socket(lab, &h)))
        .collect()
}

/// The services the load runs through, once all their tasks run.
pub fn services(lab: &Lab, bin_dir: &Path, rt: &tokio::runtime::Runtime) -> Result<()> {
    let shoal = |args: &[&str]| -> Result<String> { Ok(lab.shoal(bin_dir, args)?) };
    shoal(&["swarm", "update", "--dispatcher-heartbeat", HEARTBEAT])?;
    shoal(&["network", "create", "chaosnet"])?;
    let replicas = WEB_REPLICAS.to_string();
    let publish = format!("{PORT}:80");
    shoal(&[
        "service",
        "create",
        "--name",
        WEB,
        "--replicas",
        &replicas,
        "--network",
        "chaosnet",
        "--publish",
        &publish,
        "--restart-delay",
        "1s",
        "shoal/echo:1",
    ])?;
    shoal(&[
        "service",
        "create",
        "--name",
        TOOLBOX,
        "--network",
        "chaosnet",
        "shoal/toolbox",
    ])?;
    let mut managers = managers(lab);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(view) = rt.block_on(view::ask(&mut managers, Duration::from_secs(5)))
            && view.running(WEB).len() == WEB_REPLICAS
            && view.running(TOOLBOX).len() == 1
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{WEB} ({WEB_REPLICAS} tasks) and {TOOLBOX} (1) are not all running after 90 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
