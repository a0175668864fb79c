//! The peer: 3 etcd members on loopback with TLS on both sides, as Shoal
//! runs: clients and members present certificates of one CA and check each
//! other's (`--client-cert-auth`, `--peer-client-cert-auth`).

use std::{net::IpAddr, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result};
use shoal_pki::{CertificateAuthority, NodeRequest, Role, transport::Dialer};
use tonic::transport::Channel;

use super::{Procs, spawn_quiet, wait_for};

mod pb {
    tonic::include_proto!("etcdserverpb");
}

pub use pb::{PutRequest, kv_client::KvClient};
use pb::{StatusRequest, maintenance_client::MaintenanceClient};

const MEMBERS: usize = 3;

/// The running members and a client of the leader.
pub struct EtcdCluster {
    /// Stopped when the cluster is dropped.
    pub procs: Procs,
    pub channel: Channel,
    leader: String,
    dialer: Dialer,
}

impl EtcdCluster {
    /// `n` connections to the leader: the first is `channel`, each other
    /// one a connection of its own (a tonic channel is one HTTP/2
    /// connection, however many clones of it write).
    pub fn connections(&self, n: usize) -> Result<Vec<Channel>> {
        let mut channels = vec![self.channel.clone()];
        for _ in 1..n {
            channels.push(shoal_pki::transport::lazy_channel(
                &self.leader,
                self.dialer.clone(),
            )?);
        }
        Ok(channels)
    }
}

/// The bench's own CA for etcd, and what each member and the client hold.
struct Certificates {
    ca: CertificateAuthority,
}

impl Certificates {
    fn new() -> Result<Self> {
        Ok(Self {
            ca: CertificateAuthority::create("bench-etcd")?,
        })
    }

    fn request(id: &str, role: Role) -> NodeRequest<'_> {
        NodeRequest {
            node_id: id,
            role,
            cluster_id: "bench-etcd",
            validity: Duration::from_secs(24 * 3600),
        }
    }

    /// Writes member `i`'s certificate and key (and the CA) to `dir`;
    /// returns the paths (cert, key, ca). The certificate names 127.0.0.1,
    /// which members check when they dial each other by address, and the
    /// name Shoal's client checks, so the bench dials etcd with the same
    /// TLS client as Shoal's managers.
    fn member(&self, dir: &Path, i: usize) -> Result<[String; 3]> {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let id = format!("etcd{i}");
        let (chain, key) = self
            .ca
            .issue_with_new_key_for_addresses(&Self::request(&id, Role::Manager), &[loopback])?;
        let paths = [
            dir.join(format!("{id}.crt")),
            dir.join(format!("{id}.key")),
            dir.join("etcd-ca.crt"),
        ];
        for (path, text) in paths
            .iter()
            .zip([&chain, &key, &self.ca.cert_pem().to_owned()])
        {
            write_private(path, text)?;
        }
        Ok(paths.map(|p| p.display().to_string()))
    }

    /// The bench's client identity for etcd.
    fn client(&self) -> Result<Dialer> {
        let (chain, key) = self
            .ca
            .issue_with_new_key(&Self::request("bench-client", Role::Admin))?;
        Ok(Dialer::with_certificate(&chain, &key, self.ca.cert_pem())?)
    }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

/// Starts the members with their data under `root` and waits until the
/// cluster takes a write.
pub async fn start(root: &Path) -> Result<EtcdCluster> {
    let certificates = Certificates::new()?;
    let client_url = |i: usize| format!("https://127.0.0.1:{}", 23791 + i);
    let peer_url = |i: usize| format!("https://127.0.0.1:{}", 23801 + i);
    let cluster: Vec<String> = (0..MEMBERS)
        .map(|i| format!("etcd{i}={}", peer_url(i)))
        .collect();
    let mut procs = Procs(Vec::new());
    for i in 0..MEMBERS {
        let [cert, key, ca] = certificates.member(root, i)?;
        let mut command = Command::new("etcd");
        command
            .args(["--name", &format!("etcd{i}")])
            .args([
                "--data-dir",
                &root.join(format!("etcd{i}")).display().to_string(),
            ])
            .args(["--listen-client-urls", &client_url(i)])
            .args(["--advertise-client-urls", &client_url(i)])
            .args(["--listen-peer-urls", &peer_url(i)])
            .args(["--initial-advertise-peer-urls", &peer_url(i)])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", "new", "--log-level", "error"])
            .args(["--cert-file", &cert, "--key-file", &key])
            .args(["--client-cert-auth", "--trusted-ca-file", &ca])
            .args(["--peer-cert-file", &cert, "--peer-key-file", &key])
            .args(["--peer-client-cert-auth", "--peer-trusted-ca-file", &ca]);
        procs.0.push(
            spawn_quiet(&mut command)
                .context("starting etcd (cargo xtask setup installs etcd-server)")?,
        );
    }
    let dialer = certificates.client()?;
    let address = |i: usize| format!("127.0.0.1:{}", 23791 + i);
    let member = |i: usize| shoal_pki::transport::lazy_channel(&address(i), dialer.clone());
    let first = member(0)?;
    wait_for("etcd to accept a write over TLS", || {
        let mut kv = KvClient::new(first.clone());
        async move {
            kv.put(PutRequest {
                key: b"warmup".to_vec(),
                value: b"x".to_vec(),
            })
            .await
            .ok()
        }
    })
    .await?;
    // Writes go to the leader, as Shoal's do: a follower would forward each
    // one, a hop Shoal's writes do not take.
    let mut channel = None;
    for i in 0..MEMBERS {
        let candidate = member(i)?;
        let status = MaintenanceClient::new(candidate.clone())
            .status(StatusRequest {})
            .await
            .with_context(|| format!("asking etcd{i} for its status"))?
            .into_inner();
        if status.header.is_some_and(|h| h.member_id == status.leader) {
            channel = Some((candidate, address(i)));
            break;
        }
    }
    let (channel, leader) = channel.context("no etcd member says it leads")?;
    wait_for("etcd's leader to accept a write over TLS", || {
        let mut kv = KvClient::new(channel.clone());
        async move {
            kv.put(PutRequest {
                key: b"warmup".to_vec(),
                value: b"x".to_vec(),
            })
            .await
            .ok()
        }
    })
    .await?;
    Ok(EtcdCluster {
        procs,
        channel,
        leader,
        dialer,
    })
}
