//! `shoal network connect|disconnect`: a container some node's engine runs
//! plugged into (or out of) an attachable network. The manager records the
//! plug as a task on that node; its agent plugs the container in, and every
//! node on the network can reach it (and find it by the name given).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use shoal_api::pb::{ConnectContainerRequest, DisconnectContainerRequest, TaskState};

use crate::{
    client::{self, Client, status_error},
    commands::swarm::host::Host,
};

/// How long connect waits for the node's agent to plug the container in.
const PLUG_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct ConnectArgs {
    /// The network (ID or name); it must be --attachable.
    network: String,
    /// The container (name or ID, as its node's engine knows it).
    container: String,
    /// Add network-scoped alias for the container; repeatable.
    #[arg(long)]
    alias: Vec<String>,
    /// IPv4 address (e.g., "172.30.100.104").
    #[arg(long)]
    ip: Option<String>,
    /// IPv6 address (not supported: Shoal's overlays carry IPv4 only).
    #[arg(long)]
    ip6: Option<String>,
    /// The node whose engine runs the container (ID or hostname; default: this host's node).
    #[arg(long)]
    node: Option<String>,
}

#[derive(Args)]
pub struct DisconnectArgs {
    /// The network (ID or name).
    network: String,
    /// The container (name or ID, as given to connect).
    container: String,
    /// Force the container to disconnect from a network (even if its node is down or gone).
    #[arg(short, long)]
    force: bool,
    /// The node whose engine runs the container (ID or hostname; default: this host's node).
    #[arg(long)]
    node: Option<String>,
}

/// The node given, else this host's (the id its agent keeps).
fn node_or_this_host(node: Option<String>) -> Result<String> {
    if let Some(node) = node {
        return Ok(node);
    }
    let path = Host::from_env().agent_dir().join("node-id");
    let id = std::fs::read_to_string(&path).unwrap_or_default();
    let id = id.trim();
    if id.is_empty() {
        bail!(
            "this host runs no agent of the cluster ({} is missing): give --node, the node whose engine runs the container",
            path.display()
        );
    }
    Ok(id.to_owned())
}

pub async fn connect(client: &mut Client, args: ConnectArgs) -> Result<()> {
    if args.ip6.is_some() {
        bail!("--ip6 is not supported: Shoal's overlays carry IPv4 only");
    }
    let node = node_or_this_host(args.node)?;
    let task = client
        .connect_container(ConnectContainerRequest {
            network: args.network.clone(),
            container: args.container.clone(),
            node,
            aliases: args.alias,
            ip: args.ip.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let id = task.meta.map(|m| m.id).unwrap_or_default();
    // Done when the node's agent has plugged it in, as Docker returns.
    let deadline = tokio::time::Instant::now() + PLUG_TIMEOUT;
    loop {
        let tasks = client::tasks(client).await?;
        let status = tasks
            .iter()
            .find(|t| t.meta.as_ref().is_some_and(|m| m.id == id))
            .and_then(|t| t.status.clone());
        match status {
            Some(s) if s.state() == TaskState::Running => return Ok(()),
            Some(s) if s.state().is_terminal() => {
                bail!(
                    "connecting {} to {}: {}",
                    args.container,
                    args.network,
                    if s.err.is_empty() { s.message } else { s.err }
                )
            }
            // Gone: the orchestrator forgot a refused attachment.
            None => bail!(
                "connecting {} to {}: the node refused it (is the container running there?)",
                args.container,
                args.network
            ),
            Some(_) => {}
        }
        if tokio::time::Instant::now() > deadline {
            return Err(anyhow::anyhow!(
                "the node did not plug {} in within {PLUG_TIMEOUT:?}",
                args.container
            ))
            .context("is its agent up? (shoal node ls)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn disconnect(client: &mut Client, args: DisconnectArgs) -> Result<()> {
    let node = node_or_this_host(args.node)?;
    client
        .disconnect_container(DisconnectContainerRequest {
            network: args.network,
            container: args.container,
            node,
            force: args.force,
        })
        .await
        .map_err(status_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_is_the_one_given_or_this_hosts() {
        assert_eq!(node_or_this_host(Some("n1".into())).unwrap(), "n1");
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: the only test of this binary that sets SHOAL_STATEDIR.
        unsafe { std::env::set_var("SHOAL_STATEDIR", dir.path()) };
        let err = node_or_this_host(None).unwrap_err().to_string();
        assert!(err.contains("give --node"), "{err}");
        std::fs::create_dir_all(dir.path().join("agent")).unwrap();
        std::fs::write(dir.path().join("agent/node-id"), "abc\n").unwrap();
        assert_eq!(node_or_this_host(None).unwrap(), "abc");
    }
}
