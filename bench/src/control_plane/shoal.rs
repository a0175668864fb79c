//! 3 `shoal-manager` processes on loopback, as an operator sets them up:
//! `init`, then an admin client certificate from the first manager's local
//! socket (what `shoal cert issue` does on a manager host), then two
//! `join`s with the manager token. Every TCP connection is mutual TLS.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use anyhow::{Context, Result};
use shoal_api::pb::{
    ClusterInfo, Empty, IssueClientCertificateRequest, control_client::ControlClient,
};
use shoal_pki::{
    Credentials, KeyAndCsr,
    join::{self, JoinRequest},
    transport::Dialer,
};
use tonic::transport::Channel;

use super::{Procs, spawn_quiet, wait_for};

const MANAGERS: usize = 3;

pub struct ShoalCluster {
    /// Stopped when the cluster is dropped.
    procs: Procs,
    /// Every manager's address, the first (the leader `init` made) first.
    pub addrs: Vec<String>,
    pub worker_token: String,
    pub manager_token: String,
}

impl ShoalCluster {
    pub fn leader(&self) -> &str {
        &self.addrs[0]
    }

    /// Every manager's process id, the leader `init` made first.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.pids()
    }

    /// The process id of the leader `init` made (the first manager).
    pub fn leader_pid(&self) -> u32 {
        self.procs.pids()[0]
    }

    /// Credentials to propose writes with: Membership/Propose is how a
    /// follower forwards a write to the leader, so it takes a manager
    /// certificate; this one is issued for the manager token, as to a
    /// joining manager (it adds a manager node that never starts, which
    /// nothing waits for). `advertise` is a loopback address of its own,
    /// so the CA does not take the writer for one of the managers.
    pub async fn manager_identity(&self, advertise: &str) -> Result<Arc<Credentials>> {
        join::join(
            &JoinRequest {
                manager: self.leader(),
                token: &self.manager_token,
                advertise_addr: advertise,
                hostname: "bench-writer",
            },
            None,
        )
        .await
        .context("getting a manager certificate for the bench's writer")
    }
}

/// A channel to a manager's local socket (no TLS: the socket is root's).
async fn local_channel(socket: &Path) -> Result<Channel> {
    Ok(shoal_api::local_socket::channel(socket).await?)
}

/// Starts the managers with their data under `root` and `flags` on their
/// command lines (none: the product's defaults, what operators run) and
/// waits until all three are reachable voters.
pub async fn start(root: &Path, manager_bin: &Path, flags: &[String]) -> Result<ShoalCluster> {
    Ok(start_with(root, manager_bin, MANAGERS, flags).await?.0)
}

/// Starts `managers` managers (the first `init`s, the others join) with
/// their data under `root` and `flags` on their command lines; waits until
/// all are reachable voters. Also returns an admin client's credentials.
pub async fn start_with(
    root: &Path,
    manager_bin: &Path,
    managers: usize,
    flags: &[String],
) -> Result<(ShoalCluster, Dialer)> {
    // Each manager on its own loopback address, as on its own host: the CA
    // tells a joining manager's node from others by the address it joins
    // from (two joining at once from one address get one node).
    let addrs: Vec<String> = (0..managers)
        .map(|i| format!("127.0.0.{}:{}", i + 1, 23771 + i))
        .collect();
    let socket = |i: usize| root.join(format!("shoal{i}.sock"));
    let command = |i: usize, verb: &str| {
        let mut command = Command::new(manager_bin);
        command
            .arg(verb)
            .arg("--data-dir")
            .arg(root.join(format!("shoal{i}")))
            .args(["--listen-addr", &addrs[i]])
            .arg("--socket")
            .arg(socket(i))
            .args(["--hostname", &format!("m{i}")])
            .args(flags)
            .env("RUST_LOG", "error");
        command
    };
    ports_free(&addrs)?;
    let started = |what: &Path| format!("starting {}", what.display());
    let mut procs = Procs(Vec::new());
    procs
        .0
        .push(spawn_quiet(&mut command(0, "init")).with_context(|| started(manager_bin))?);

    let first_socket: PathBuf = socket(0);
    let cluster: ClusterInfo = wait_for("the first manager", || {
        let socket = first_socket.clone();
        async move {
            let mut control = ControlClient::new(local_channel(&socket).await.ok()?);
            control
                .get_cluster(Empty {})
                .await
                .ok()
                .map(|r| r.into_inner())
        }
    })
    .await?;
    let admin = admin_dialer(&first_socket).await?;

    for i in 1..managers {
        // The token in the environment, not on the command line.
        let mut join = command(i, "join");
        join.env(shoal_api::token_input::ENV, &cluster.manager_token)
            .arg(&addrs[0]);
        procs
            .0
            .push(spawn_quiet(&mut join).with_context(|| started(manager_bin))?);
    }
    let control = ControlClient::new(shoal_pki::transport::lazy_channel(
        &addrs[0],
        admin.clone(),
    )?);
    wait_for("every manager reachable (control API over TLS)", || {
        let mut control = control.clone();
        async move {
            let nodes = control.list_nodes(Empty {}).await.ok()?.into_inner().nodes;
            let reachable = nodes
                .iter()
                .filter_map(|n| n.manager_status.as_ref())
                .filter(|m| m.leader || m.reachability == "reachable")
                .count();
            (reachable == managers).then_some(())
        }
    })
    .await?;
    Ok((
        ShoalCluster {
            procs,
            addrs,
            worker_token: cluster.worker_token,
            manager_token: cluster.manager_token,
        },
        admin,
    ))
}

/// Fails, naming the address, when a manager address is taken (by
/// another bench's cluster, most likely): the manager would fail to start
/// and the bench would only time out waiting for it.
fn ports_free(addrs: &[String]) -> Result<()> {
    for addr in addrs {
        std::net::TcpListener::bind(addr.as_str()).with_context(|| {
            format!("{addr} is in use (another bench's managers?): the managers need it")
        })?;
    }
    Ok(())
}

/// An admin client certificate, as `shoal cert issue` gets one: a key made
/// here, a CSR sent over the manager's local socket.
async fn admin_dialer(socket: &Path) -> Result<Dialer> {
    let key = KeyAndCsr::generate()?;
    let issued = ControlClient::new(local_channel(socket).await?)
        .issue_client_certificate(IssueClientCertificateRequest {
            role: "admin".into(),
            csr_der: key.csr_der,
            expiry_ms: 0,
        })
        .await
        .map_err(|s| anyhow::anyhow!("issuing an admin certificate: {}", s.message()))?
        .into_inner();
    Ok(Dialer::with_certificate(
        &issued.chain_pem,
        &key.key_pem,
        &issued.trust_pem,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_manager_address_is_named() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let error = ports_free(std::slice::from_ref(&addr)).unwrap_err();
        assert!(format!("{error:#}").starts_with(&format!("{addr} is in use")));
        drop(taken);
        ports_free(&[addr]).unwrap();
    }
}
