//! Injecting one fault of the schedule into the lab and recovering from it.
//!
//! The lab shares one Docker engine between its nodes, so restarting
//! dockerd would hit every node at once. `RestartEngine` does to one node
//! what a dockerd restart does to its tasks: every task container of that
//! node is stopped at once (SIGTERM, then SIGKILL after 10 s, as dockerd's
//! shutdown), and the agent sees them exit. Not simulated: the agent's
//! engine connection going away for the restart's duration.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use shoal_lab::{Lab, cmd, readiness};

use crate::schedule::Fault;

/// The label every task container carries with its node's id.
const NODE_LABEL: &str = "com.shoal.node.id";
/// How long a restarted manager has to open its socket.
const MANAGER_START: Duration = Duration::from_secs(20);

/// A fault in effect, and what its recovery needs.
#[derive(Clone, Debug)]
pub struct Injected {
    pub fault: Fault,
    /// The node hit.
    pub node: String,
    /// Process records to start again (names such as `n2-manager`).
    pub killed: Vec<String>,
}

/// SIGKILLs the lab process `name` (`n2-manager`, `n4-agent`).
fn kill_process(lab: &Lab, name: &str) -> Result<()> {
    let record = lab
        .state()
        .process(name)
        .with_context(|| format!("the lab runs no process {name}"))?;
    if !record.alive() {
        bail!("{name} is not running");
    }
    cmd::run("kill", &["-KILL", &record.pid.to_string()])?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while record.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Starts a killed lab process again; a manager once its socket is open.
fn restart_process(lab: &Lab, name: &str) -> Result<()> {
    let record = lab
        .state()
        .process(name)
        .with_context(|| format!("the lab runs no process {name}"))?;
    if record.alive() {
        return Ok(());
    }
    let restarted = lab.state().respawn(&record)?;
    if let Some(node) = name.strip_suffix("-manager") {
        let host = lab.host(node)?;
        let socket = shoal_lab::cluster::manager_socket(lab, &host);
        readiness::wait_for_socket(&restarted, &socket, MANAGER_START)?;
    }
    Ok(())
}

/// Stops every task container of `node_id` at once, as a dockerd shutdown
/// does; returns how many.
fn stop_task_containers(node_id: &str) -> Result<usize> {
    let filter = format!("label={NODE_LABEL}={node_id}");
    let ids = cmd::stdout("docker", &["ps", "-q", "--filter", &filter])?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["stop", "--time", "10"];
        args.extend(&ids);
        cmd::run("docker", &args)?;
    }
    Ok(ids.len())
}

/// Injects `fault` on `node` (already chosen); `node_id` is its node id.
pub fn inject(lab: &Lab, fault: Fault, node: &str, node_id: &str) -> Result<Injected> {
    let mut killed = Vec::new();
    match fault {
        Fault::KillLeader | Fault::KillFollower => {
            let name = format!("{node}-manager");
            kill_process(lab, &name)?;
            killed.push(name);
        }
        Fault::KillAgent => {
            let name = format!("{node}-agent");
            kill_process(lab, &name)?;
            killed.push(name);
        }
        Fault::RestartEngine => {
            let stopped = stop_task_containers(node_id)?;
            eprintln!("[chaos] {node}: stopped {stopped} task containers (engine restart)");
        }
        Fault::Isolate => lab.isolate(node)?,
    }
    Ok(Injected {
        fault,
        node: node.to_owned(),
        killed,
    })
}

/// Undoes a fault: processes started again, the link healed.
pub fn recover(lab: &Lab, injected: &Injected) -> Result<()> {
    if injected.fault == Fault::Isolate {
        lab.heal(&injected.node)?;
    }
    for name in &injected.killed {
        restart_process(lab, name)?;
    }
    Ok(())
}
