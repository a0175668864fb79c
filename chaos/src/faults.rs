//! Injecting one fault of the schedule into the lab and recovering from it.
//!
//! The lab shares one Docker engine between its nodes, so restarting
//! dockerd would hit every node at once. `RestartEngine` does to one node
//! what a dockerd restart does to its tasks: every task container of that
//! node is stopped at once (SIGTERM, then SIGKILL after 10 s, as dockerd's
//! shutdown), and the agent sees them exit. Not simulated: the agent's
//! engine connection going away for the restart's duration.

use anyhow::Result;
use shoal_lab::{Lab, cmd};

use crate::schedule::Fault;

/// The label every task container carries with its node's id.
const NODE_LABEL: &str = "com.shoal.node.id";

/// A fault in effect, and what its recovery needs.
#[derive(Clone, Debug)]
pub struct Injected {
    pub fault: Fault,
    /// The node hit.
    pub node: String,
    /// Process records to start again (names such as `n2-manager`).
    pub killed: Vec<String>,
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
            lab.kill_process(&name)?;
            killed.push(name);
        }
        Fault::KillAgent => {
            let name = format!("{node}-agent");
            lab.kill_process(&name)?;
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
        lab.start_process(name)?;
    }
    Ok(())
}
