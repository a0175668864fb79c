//! Starting a manager: its data directory (locked, one manager per
//! directory), Raft with the on-disk log and state, the gRPC services on the
//! TCP address and the local unix socket, and the leader-only components.

use std::{
    collections::BTreeMap,
    fs::File,
    net::SocketAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use shoal_api::pb::{
    Cluster, ClusterSpec, JoinManagerRequest, Meta, Network, NetworkSpec, NodeRole, RootCaRequest,
    control_server::ControlServer, dispatcher_server::DispatcherServer, lock_server::LockServer,
    membership_client::MembershipClient, membership_server::MembershipServer,
};
use tokio::{net::UnixListener, task::JoinSet};
use tokio_stream::wrappers::UnixListenerStream;

use crate::{
    allocator,
    api::{
        control::ControlService,
        membership::{MembershipService, new_manager_node},
    },
    ca,
    dispatcher::Dispatcher,
    encryption::{
        self, Cipher, UnlockKey,
        data_keys::{self, Start},
        files,
    },
    manager::{Manager, Settings},
    orchestrator,
    raft::{
        Timing,
        log_store::LogStore,
        network::{self, Network as RaftNetwork},
        state_machine::StateMachine,
    },
    scheduler,
    store::{Batch, Store},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("data directory {0} is in use by another shoal-manager")]
    DataDirInUse(PathBuf),
    #[error("control socket {0} is served by another process")]
    SocketInUse(PathBuf),
}

/// Swarm's default address pool; the lab passes its own.
pub const DEFAULT_ADDR_POOL: &str = "10.0.0.0/8";
pub const DEFAULT_SUBNET_SIZE: u32 = 24;

#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    /// Where the gRPC services listen (TCP).
    pub listen: SocketAddr,
    /// host:port other managers and agents use; defaults to `listen`. A
    /// restart ignores it: the data dir holds the address the cluster knows.
    pub advertise: String,
    /// The local control socket; None serves TCP only.
    pub socket: Option<PathBuf>,
    pub hostname: String,
    pub timing: Timing,
    pub settings: Settings,
}

/// How this start relates to the cluster.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    /// Create a new cluster.
    Init {
        default_addr_pool: Vec<String>,
        subnet_size: u32,
        /// Turn autolock on from the start (`init --autolock`).
        autolock: bool,
    },
    /// Join the cluster of the manager at `remote` with a manager token.
    Join { token: String, remote: String },
    /// Restart from the data directory.
    Restart,
}

/// What a manager keeps about itself next to its Raft files.
#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    raft_id: u64,
    advertise: String,
}

const IDENTITY: &str = "manager.json";

pub struct RunningManager {
    pub manager: Arc<Manager>,
    pub init_tokens: Option<(String, String)>,
    /// The unlock key of a cluster just initialised with autolock.
    pub init_unlock_key: Option<String>,
    tasks: JoinSet<()>,
    /// Tells the API servers to stop: they close every connection, so no
    /// peer keeps talking to this manager's stopped Raft.
    stop_serving: tokio::sync::watch::Sender<bool>,
    socket: Option<PathBuf>,
    _lock: File,
}

impl RunningManager {
    pub fn addr(&self) -> &str {
        &self.manager.addr
    }

    /// Stops serving and leaves the data directory as it is.
    pub async fn shutdown(mut self) {
        self.stop_serving.send_replace(true);
        let _ = self.manager.raft.shutdown().await;
        // Streams end within a second once Raft is down; then give up waiting.
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(3), drain)
            .await
            .is_err()
        {
            self.tasks.shutdown().await;
        }
        if let Some(socket) = self.socket.take() {
            let _ = std::fs::remove_file(socket);
        }
    }
}

impl Drop for RunningManager {
    fn drop(&mut self) {
        self.tasks.abort_all();
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

fn lock_data_dir(data_dir: &Path) -> Result<File> {
    files::private_dir(data_dir)?;
    let lock = files::private_file(&data_dir.join("LOCK"))?;
    // SAFETY: flock on an open descriptor; released when the File closes.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(DaemonError::DataDirInUse(data_dir.to_owned()).into());
    }
    Ok(lock)
}

pub(crate) fn bind_socket(socket: &Path) -> Result<UnixListener> {
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    if socket.exists() {
        // A live manager answers; a dead one left its socket file behind.
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(DaemonError::SocketInUse(socket.to_owned()).into());
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale {}", socket.display()))?;
    }
    UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))
}

pub async fn start(options: Options, bootstrap: Bootstrap) -> Result<RunningManager> {
    let lock = lock_data_dir(&options.data_dir)?;
    let identity_path = options.data_dir.join(IDENTITY);
    let identity: Identity = match (&bootstrap, identity_path.exists()) {
        (Bootstrap::Restart, true) => serde_json::from_slice(&std::fs::read(&identity_path)?)
            .with_context(|| format!("reading {}", identity_path.display()))?,
        (Bootstrap::Restart, false) => bail!(
            "{} holds no manager state: run `shoal-manager init` or `shoal-manager join` first",
            options.data_dir.display()
        ),
        (_, true) => bail!(
            "{} already holds a manager of a cluster: start it with `shoal-manager run`, or use an empty data directory",
            options.data_dir.display()
        ),
        (_, false) => Identity {
            raft_id: loop {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
                let id = u64::from_le_bytes(bytes) >> 1;
                if id != 0 {
                    break id;
                }
            },
            advertise: options.advertise.clone(),
        },
    };

    // A token of the wrong cluster fails before anything is written.
    if let Bootstrap::Join { token, remote } = &bootstrap {
        check_remote_ca(remote, token).await?;
    }

    // A locked manager (autolock) waits here, serving only the unlock call.
    let start = match &bootstrap {
        Bootstrap::Init { autolock, .. } => Start::New {
            autolock: *autolock,
        },
        Bootstrap::Join { .. } => Start::New { autolock: false },
        Bootstrap::Restart => Start::Restart,
    };
    let keys = data_keys::prepare(&options.data_dir, start, options.socket.as_deref()).await?;
    let cipher = Arc::new(Cipher::new(&keys.dek)?);

    let store = Store::new();
    let log = LogStore::open(&options.data_dir.join("raft-log.redb"), cipher.clone())
        .context("opening the Raft log")?;
    let state_machine = StateMachine::open(
        &options.data_dir.join("state.redb"),
        store.clone(),
        cipher.clone(),
    )
    .await
    .context("opening the state machine")?;
    let config = Arc::new(options.timing.config("shoal")?);
    let network = RaftNetwork::default();
    let peer_health = network.health.clone();
    let raft = openraft::Raft::new(identity.raft_id, config, network, log, state_machine)
        .await
        .context("starting Raft")?;
    let manager = Manager::new(
        raft.clone(),
        store,
        identity.raft_id,
        identity.advertise.clone(),
        options.hostname.clone(),
        options.settings.clone(),
        peer_health,
    );

    let mut tasks = JoinSet::new();
    let dispatcher = Dispatcher::new(manager.clone());
    let router = || {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(ControlServer::new(ControlService {
                manager: manager.clone(),
            }))
            .add_service(DispatcherServer::new(dispatcher.clone()))
            .add_service(LockServer::new(encryption::locked::NotLocked))
            .add_service(
                MembershipServer::new(MembershipService {
                    manager: manager.clone(),
                })
                .max_decoding_message_size(256 * 1024 * 1024),
            )
    };
    let tcp = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    // Raft and the APIs send small messages and wait for the answer: Nagle's
    // algorithm would hold them back for the peer's delayed ACK.
    let incoming = tonic::transport::server::TcpIncoming::from(tcp).with_nodelay(Some(true));
    let (stop_serving, tcp_stop) = tokio::sync::watch::channel(false);
    let unix_stop = tcp_stop.clone();
    let server = router();
    tasks.spawn(async move {
        if let Err(error) = server
            .serve_with_incoming_shutdown(incoming, stopped(tcp_stop))
            .await
        {
            tracing::error!(%error, "the TCP API server stopped");
        }
    });
    if let Some(socket) = &options.socket {
        let incoming = UnixListenerStream::new(bind_socket(socket)?);
        let server = router();
        tasks.spawn(async move {
            if let Err(error) = server
                .serve_with_incoming_shutdown(incoming, stopped(unix_stop))
                .await
            {
                tracing::error!(%error, "the unix socket API server stopped");
            }
        });
    }
    tasks.spawn(lead_when_leader(manager.clone(), dispatcher));
    let init_unlock_key = keys.unlock.as_ref().map(UnlockKey::to_string);
    tasks.spawn(encryption::rewrap::follow_cluster(
        manager.store.clone(),
        keys.file,
        keys.dek.clone(),
        keys.unlock.clone(),
    ));

    let mut init_tokens = None;
    match bootstrap {
        Bootstrap::Init {
            default_addr_pool,
            subnet_size,
            ..
        } => {
            let members =
                BTreeMap::from([(identity.raft_id, BasicNode::new(identity.advertise.clone()))]);
            raft.initialize(members)
                .await
                .context("initialising Raft")?;
            manager
                .wait_for_leader(Duration::from_secs(30))
                .await
                .context("no leader after initialising")?;
            init_tokens = Some(
                write_initial_state(
                    &manager,
                    default_addr_pool,
                    subnet_size,
                    keys.unlock.as_ref(),
                )
                .await?,
            );
        }
        Bootstrap::Join { token, remote } => {
            join(&manager, &token, &remote).await?;
        }
        Bootstrap::Restart => {}
    }
    files::write_private(&identity_path, &serde_json::to_vec_pretty(&identity)?)?;
    let init_unlock_key = init_unlock_key.filter(|_| init_tokens.is_some());
    Ok(RunningManager {
        manager,
        init_tokens,
        init_unlock_key,
        tasks,
        stop_serving,
        socket: options.socket.clone(),
        _lock: lock,
    })
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn check_remote_ca(remote: &str, token: &str) -> Result<()> {
    let parsed = shoal_api::token::JoinToken::parse(token)?;
    let channel = network::channel(remote)?;
    let ca = MembershipClient::new(channel)
        .get_root_ca(RootCaRequest {})
        .await
        .with_context(|| format!("asking the manager at {remote} for its root CA"))?
        .into_inner();
    if ca::digest_of_pem(&ca.cert_pem)? != parsed.ca_digest {
        bail!(
            "the join token belongs to another cluster: the manager at {remote} has a different root CA"
        );
    }
    Ok(())
}

/// Asks the cluster's leader to add this manager, following redirects.
async fn join(manager: &Manager, token: &str, remote: &str) -> Result<()> {
    let mut target = remote.to_owned();
    for _ in 0..10 {
        let channel = network::channel(&target)?;
        let reply = MembershipClient::new(channel)
            .join_manager(JoinManagerRequest {
                token: token.to_owned(),
                raft_id: manager.raft_id,
                addr: manager.addr.clone(),
                hostname: manager.hostname.clone(),
            })
            .await;
        match reply {
            Ok(reply) => {
                tracing::info!(cluster = %reply.get_ref().cluster_id, "joined the cluster as a manager");
                return Ok(());
            }
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                if let Some(leader) = status
                    .metadata()
                    .get(shoal_api::LEADER_METADATA)
                    .and_then(|v| v.to_str().ok())
                {
                    target = leader.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                bail!(
                    "the manager at {target} refused the token: {}",
                    status.message()
                )
            }
            Err(status) => {
                tracing::warn!(%target, error = %status.message(), "join failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    bail!("could not join the cluster through {remote}")
}

async fn write_initial_state(
    manager: &Manager,
    pools: Vec<String>,
    subnet_size: u32,
    unlock: Option<&UnlockKey>,
) -> Result<(String, String)> {
    let cluster_id = shoal_api::new_id();
    let root = ca::create_root_ca(&cluster_id)?;
    let pools = if pools.is_empty() {
        vec![DEFAULT_ADDR_POOL.to_owned()]
    } else {
        pools
    };
    let ingress_subnet = first_subnet(&pools[0], subnet_size)?;
    let cluster = Cluster {
        meta: Some(Meta {
            id: cluster_id,
            ..Default::default()
        }),
        spec: Some(ClusterSpec {
            name: "default".into(),
            heartbeat_period_ms: manager.settings.heartbeat_period.as_millis() as i64,
            task_history_limit: orchestrator::reconcile::DEFAULT_HISTORY_LIMIT,
            default_addr_pool: pools,
            subnet_size,
            autolock_managers: unlock.is_some(),
        }),
        root_ca_cert_pem: root.cert_pem,
        root_ca_key_pem: root.key_pem,
        worker_secret: shoal_api::token::new_secret(),
        manager_secret: shoal_api::token::new_secret(),
        manager_unlock_key: unlock.map(|k| k.0.as_bytes().to_vec()).unwrap_or_default(),
    };
    let (subnet, gateway) = ingress_subnet;
    let ingress = Network {
        meta: Some(Meta {
            id: shoal_api::new_id(),
            ..Default::default()
        }),
        spec: Some(NetworkSpec {
            name: "ingress".into(),
            driver: "overlay".into(),
            ingress: true,
            ..Default::default()
        }),
        vxlan_id: 4096,
        subnet,
        gateway,
    };
    let mut node = new_manager_node(&manager.hostname, &manager.addr);
    node.manager_status = Some(shoal_api::pb::ManagerStatus {
        raft_id: manager.raft_id,
        addr: manager.addr.clone(),
        ..Default::default()
    });
    let tokens = (
        ca::join_token(&cluster, NodeRole::Worker)?.to_string(),
        ca::join_token(&cluster, NodeRole::Manager)?.to_string(),
    );
    let mut batch = Batch::default();
    batch.put_cluster(cluster);
    batch.put_network(ingress);
    batch.put_node(node);
    manager.propose(batch.into_proto()).await?;
    Ok(tokens)
}

/// The first `/size` block of a pool and its first address (the gateway).
fn first_subnet(pool: &str, size: u32) -> Result<(String, String)> {
    let (base, bits) = pool
        .split_once('/')
        .with_context(|| format!("invalid address pool {pool:?}: expected CIDR like 10.0.0.0/8"))?;
    let base: std::net::Ipv4Addr = base
        .parse()
        .with_context(|| format!("invalid address pool {pool:?}"))?;
    let bits: u32 = bits
        .parse()
        .with_context(|| format!("invalid address pool {pool:?}"))?;
    if bits > size || size > 30 {
        bail!("address pool {pool} cannot hold /{size} subnets");
    }
    let net = u32::from(base) & (u32::MAX.checked_shl(32 - bits).unwrap_or(0));
    Ok((
        format!("{}/{size}", std::net::Ipv4Addr::from(net)),
        std::net::Ipv4Addr::from(net + 1).to_string(),
    ))
}

/// Runs the leader-only components while this manager leads.
async fn lead_when_leader(manager: Arc<Manager>, dispatcher: Dispatcher) {
    let mut metrics = manager.raft.metrics();
    let mut components: Option<JoinSet<()>> = None;
    loop {
        // With a quorum behind it: a leader cut off from the others stops
        // scheduling and marking nodes down (it could commit none of it).
        let leading = manager.is_leader();
        match (leading, components.is_some()) {
            (true, false) => {
                tracing::info!(
                    raft_id = manager.raft_id,
                    "leading: starting allocator, scheduler, orchestrators, dispatcher monitor"
                );
                let mut set = JoinSet::new();
                let (m, d) = (manager.clone(), dispatcher.clone());
                set.spawn(async move {
                    // A new leader may not have applied all that the old one
                    // committed: components that decide from a stale state
                    // would create tasks twice or hand out taken addresses
                    // (Swarm lost this race). They start once it has.
                    while let Err(error) = m.linearizable().await {
                        tracing::debug!(error = %error.message(), "waiting for the log to apply");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let mut components = JoinSet::new();
                    components.spawn(allocator::run(m.clone()));
                    components.spawn(scheduler::run(m.clone()));
                    components.spawn(orchestrator::run(m.clone()));
                    components.spawn(d.monitor());
                    components.join_all().await;
                });
                components = Some(set);
            }
            (false, true) => {
                tracing::info!(
                    raft_id = manager.raft_id,
                    "no longer leading: stopping leader components"
                );
                components = None; // dropping the set aborts its tasks
            }
            _ => {}
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_subnet_of_a_pool() {
        assert_eq!(
            first_subnet("198.18.0.0/15", 24).unwrap(),
            ("198.18.0.0/24".into(), "198.18.0.1".into())
        );
        assert!(first_subnet("10.0.0.0", 24).is_err());
        assert!(first_subnet("10.0.0.0/25", 24).is_err());
    }
}
