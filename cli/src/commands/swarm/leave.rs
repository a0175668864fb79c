//! `shoal swarm leave [--force]`: this host's node leaves the cluster, not
//! only its state. A manager refuses without `--force` (Docker's words on
//! quorum); with it, it leaves Raft, is removed, and its daemon stops and
//! clears its data dir. Then the agent: its unit stopped, `shoal-agent
//! leave` asks the managers to remove the node (with the node's own
//! certificate) and clears what the agent built.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use shoal_api::pb::{LeaveClusterRequest, Node, NodeRole};

use super::host::{Host, NOT_IN_SWARM, Units};
use crate::client::{self, status_error};

#[derive(Args)]
pub struct LeaveArgs {
    /// Force this node to leave the swarm, ignoring warnings.
    #[arg(short, long)]
    force: bool,
}

/// Docker's refusal for a manager leaving without `--force`, from the
/// reachable and unreachable managers (this one included).
pub fn manager_refusal(reachable: usize, unreachable: usize) -> String {
    let mut msg = String::from(
        "You are attempting to leave the swarm on a node that is participating as a manager. ",
    );
    // Removing it loses the quorum: what is left reachable is not a majority.
    if reachable.saturating_sub(2) <= unreachable {
        if reachable == 1 && unreachable == 0 {
            msg.push_str("Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message. ");
            return msg;
        }
        msg.push_str(&format!(
            "Removing this node leaves {} managers out of {}. Without a Raft quorum your swarm will be inaccessible. ",
            reachable.saturating_sub(1),
            reachable + unreachable
        ));
    }
    msg.push_str("The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message.");
    msg
}

fn manager_counts(nodes: &[Node]) -> (usize, usize) {
    let managers: Vec<_> = nodes
        .iter()
        .filter(|n| n.role() == NodeRole::Manager)
        .filter_map(|n| n.manager_status.as_ref())
        .collect();
    let reachable = managers
        .iter()
        .filter(|m| m.reachability == "reachable")
        .count();
    (reachable, managers.len() - reachable)
}

/// Waits until the local manager has stopped (its state dir cleared).
async fn manager_gone(host: &Host) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while host.has_manager() {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the manager left the cluster but still runs on {}: stop it (systemctl stop shoal-manager)",
                host.manager_dir().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

pub async fn leave(host_uri: &str, tls: &crate::tls::TlsArgs, args: LeaveArgs) -> Result<()> {
    let host = Host::from_env();
    let agent_dir = host.agent_dir();
    let has_agent = agent_dir.join("certificates").exists() || agent_dir.join("node-id").exists();
    if !host.has_manager() && !has_agent {
        bail!(NOT_IN_SWARM);
    }
    let units = Units::detect();
    if host.has_manager() {
        let mut client = client::connect(host_uri, tls).await?;
        if !args.force {
            let nodes = client::nodes(&mut client).await?;
            let (reachable, unreachable) = manager_counts(&nodes);
            bail!(manager_refusal(reachable.max(1), unreachable));
        }
        client
            .leave_cluster(LeaveClusterRequest { force: true })
            .await
            .map_err(status_error)?;
        // Its daemon stops by itself and clears its state; the unit must
        // not start it again.
        manager_gone(&host).await?;
        units.stop("manager")?;
    }
    if has_agent {
        units.stop("agent")?;
        let mut flags = vec![
            "leave".to_owned(),
            "--data-dir".to_owned(),
            agent_dir.display().to_string(),
        ];
        if args.force {
            flags.push("--force".to_owned());
        }
        host.run("shoal-agent", &flags, None)?;
    }
    println!("Node left the swarm.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manager_is_told_what_leaving_does_to_the_quorum_in_dockers_words() {
        let last = manager_refusal(1, 0);
        assert!(
            last.contains("Removing the last manager erases all current state of the swarm."),
            "{last}"
        );
        assert!(!last.contains("--force-new-cluster"));
        let two = manager_refusal(2, 0);
        assert!(
            two.contains("Removing this node leaves 1 managers out of 2."),
            "{two}"
        );
        assert!(two.ends_with("Use `--force` to suppress this message."));
        // Three reachable: one can go without losing the quorum.
        let three = manager_refusal(3, 0);
        assert!(!three.contains("Removing this node leaves"), "{three}");
        assert!(three.starts_with("You are attempting to leave the swarm on a node that is participating as a manager. The only way"));
        let degraded = manager_refusal(2, 1);
        assert!(
            degraded.contains("leaves 1 managers out of 3"),
            "{degraded}"
        );
    }
}
