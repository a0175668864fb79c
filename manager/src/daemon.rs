//! Starting a manager: its data directory (locked, one manager per
//! directory), Raft with the on-disk log and state, the gRPC services on the
//! TCP address and the local unix socket, and the leader-only components.

use openraft::async_runtime::WatchReceiver as _;
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
    Cluster, ClusterSpec, JoinManagerRequest, Meta, Network, NetworkSpec, NodeRole,
    ca_server::CaServer, control_server::ControlServer, dispatcher_server::DispatcherServer,
    lock_server::LockServer, membership_client::MembershipClient,
    membership_server::MembershipServer,
};
use shoal_pki::{
    CertificateAuthority, Credentials, NodeRequest, Role, credentials::CredentialFiles,
};
use tokio::{net::UnixListener, task::JoinSet};
use tokio_stream::wrappers::UnixListenerStream;

use crate::{
    allocator,
    api::{
        authz::AuthorizeLayer,
        ca_service::CaService,
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
        Timing, log_store::LogStore, network::Network as RaftNetwork, state_machine::StateMachine,
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
    /// Where `/metrics` is served (HTTPS, manager or admin client
    /// certificate); None serves none.
    pub metrics: Option<SocketAddr>,
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

/// Where a manager keeps its key, certificate and trusted roots.
const CERTIFICATES: &str = "certificates";

/// What `init` decides before anything runs: the cluster's id and root
/// CA, and the first manager's node id (its certificate names it).
struct NewCluster {
    cluster_id: String,
    node_id: String,
    ca: CertificateAuthority,
}

pub struct RunningManager {
    pub manager: Arc<Manager>,
    pub init_tokens: Option<(String, String)>,
    /// The unlock key of a cluster just initialised with autolock.
    pub init_unlock_key: Option<String>,
    tasks: JoinSet<()>,
    /// Tells the API servers to stop: they close every connection, so no
    /// peer keeps talking to this manager's stopped Raft.
    stop_serving: tokio::sync::watch::Sender<bool>,
    /// Set (with the cluster's reason) once the cluster demoted or removed
    /// this manager: see `crate::demotion`.
    demoted: tokio::sync::watch::Receiver<Option<String>>,
    data_dir: PathBuf,
    socket: Option<PathBuf>,
    _lock: File,
}

impl RunningManager {
    pub fn addr(&self) -> &str {
        &self.manager.addr
    }

    /// A client identity for the control API over TCP, issued by this
    /// manager's CA: what `shoal cert issue` gives an operator (tests and
    /// benchmarks use it in process).
    pub async fn admin_dialer(&self) -> Result<shoal_pki::transport::Dialer> {
        let state = self.manager.store.read().await;
        let cluster = state.cluster.as_ref().context("no cluster state yet")?;
        let (chain, key) = crate::api::ca_service::issue_with_new_key(
            cluster,
            &format!("admin-{}", shoal_api::new_id()),
            Role::Admin,
            None,
        )
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        Ok(shoal_pki::transport::Dialer::with_certificate(
            &chain,
            &key,
            &ca::trust_pem(cluster),
        )?)
    }

    /// Resolves once the cluster has demoted or removed this manager, with
    /// the reason its peers gave; never for a manager that stays one.
    pub async fn demoted(&mut self) -> String {
        match self.demoted.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            // The watcher is gone only when the manager stops.
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops serving and erases the manager's state (the Raft log and
    /// state with the CA key, the data key, its certificates): what a
    /// demoted or removed manager must not keep.
    pub async fn shutdown_and_erase(self) -> Result<()> {
        let data_dir = self.data_dir.clone();
        self.shutdown().await;
        crate::demotion::erase(&data_dir, LOCK_FILE)
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

/// The file a running manager holds locked in its data directory.
const LOCK_FILE: &str = "LOCK";

fn lock_data_dir(data_dir: &Path) -> Result<File> {
    files::private_dir(data_dir)?;
    let lock = files::private_file(&data_dir.join(LOCK_FILE))?;
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
    // Bound with a umask that leaves no one but the owner in, then set
    // explicitly: there is no moment when others may connect.
    // SAFETY: umask(2) only swaps the process's file-creation mask.
    let previous = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(socket);
    // SAFETY: as above, restoring the mask.
    unsafe { libc::umask(previous) };
    let listener = bound.with_context(|| format!("binding {}", socket.display()))?;
    // Whoever can write to the socket controls the cluster (as with
    // docker.sock): the owner (root) only, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", socket.display()))?;
    Ok(listener)
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
    // The manager's own TLS key is sealed with its data key too: with
    // autolock it cannot be read without the unlock key.
    let key_seal: Arc<dyn shoal_pki::KeySeal> = Arc::new(SealWithDataKey(cipher.clone()));

    // The manager's credentials: made here at `init`, issued by the
    // cluster for the token at `join` (a token of the wrong cluster fails
    // before anything else is written), kept from before at a restart.
    let certs_dir = options.data_dir.join(CERTIFICATES);
    let mut new_cluster = None;
    let credentials = match &bootstrap {
        Bootstrap::Restart => Credentials::load_sealed(&certs_dir, Some(key_seal.clone()))?.with_context(|| {
            format!(
                "{} holds no certificate: this data directory is from before mutual TLS; join the cluster again with an empty one",
                certs_dir.display()
            )
        })?,
        Bootstrap::Init { .. } => {
            let cluster_id = shoal_api::new_id();
            let cluster = NewCluster {
                ca: CertificateAuthority::create(&cluster_id)?,
                cluster_id,
                node_id: shoal_api::new_id(),
            };
            let (chain_pem, key_pem) = cluster.ca.issue_with_new_key(&NodeRequest {
                node_id: &cluster.node_id,
                role: Role::Manager,
                cluster_id: &cluster.cluster_id,
                validity: ca::DEFAULT_CERT_EXPIRY,
            })?;
            let credentials = Credentials::create_sealed_in(
                &certs_dir,
                CredentialFiles {
                    chain_pem,
                    key_pem,
                    roots_pem: cluster.ca.cert_pem().to_owned(),
                },
                Some(key_seal.clone()),
            )?;
            new_cluster = Some(cluster);
            credentials
        }
        Bootstrap::Join { token, remote } => shoal_pki::join::join_sealed(
            &shoal_pki::join::JoinRequest {
                manager: remote,
                token,
                advertise_addr: &identity.advertise,
                hostname: &options.hostname,
            },
            Some(&certs_dir),
            Some(key_seal.clone()),
        )
        .await
        .context("getting this manager's certificate")?,
    };

    let store = Store::new();
    let log = LogStore::open(
        &options.data_dir.join("raft-log.redb"),
        &options.data_dir.join("raft-log"),
        cipher.clone(),
    )
    .context("opening the Raft log")?;
    let state_machine = StateMachine::open(
        &options.data_dir.join("state.redb"),
        store.clone(),
        cipher.clone(),
    )
    .await
    .context("opening the state machine")?;
    let config = Arc::new(options.timing.config("shoal")?);
    let network = RaftNetwork::new(credentials.clone());
    let peer_health = network.health.clone();
    let raft = openraft::Raft::new(identity.raft_id, config, network, log, state_machine)
        .await
        .context("starting Raft")?;
    let manager = Manager::new(
        raft.clone(),
        store,
        crate::manager::Member {
            raft_id: identity.raft_id,
            addr: identity.advertise.clone(),
            hostname: options.hostname.clone(),
        },
        options.settings.clone(),
        peer_health,
        credentials.clone(),
    );

    let mut tasks = JoinSet::new();
    let dispatcher = Dispatcher::new(manager.clone());
    // Every call passes the authorization layer first: it decides from the
    // caller's certificate (or the root-only socket) what it may call.
    let router = || {
        tonic::transport::Server::builder()
            .layer(AuthorizeLayer {
                manager: manager.clone(),
            })
            .add_service(CaServer::new(CaService {
                manager: manager.clone(),
            }))
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
    // A deep accept queue: joins come in bursts (see `ACCEPT_QUEUE`).
    let tcp = shoal_pki::transport::listen(options.listen)
        .with_context(|| format!("listening on {}", options.listen))?;
    // Nothing is served in plaintext on TCP: every connection is TLS 1.3
    // with this manager's certificate (with Nagle off: Raft and the APIs
    // send small messages and wait for the answer).
    let incoming = shoal_pki::transport::incoming(
        tcp,
        shoal_pki::transport::server_config(credentials.clone())?,
    );
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
    if let Some(addr) = options.metrics {
        // Bound before anything else is served, so a taken port fails the
        // start with its address rather than later in a log line.
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for /metrics on {addr} (--metrics-addr)"))?;
        let (m, d) = (manager.clone(), dispatcher.clone());
        tasks.spawn(async move {
            if let Err(error) = crate::metrics::endpoint::serve(listener, m, d).await {
                tracing::error!(%error, "the /metrics endpoint stopped");
            }
        });
    }
    tasks.spawn(crate::metrics::count_leader_changes(
        raft.clone(),
        manager.metrics.clone(),
    ));
    tasks.spawn(lead_when_leader(manager.clone(), dispatcher));
    tasks.spawn(crate::events::record(
        manager.store.clone(),
        manager.events.clone(),
    ));
    tasks.spawn(crate::certificates::keep_current(manager.clone()));
    let (demoted_tx, demoted) = tokio::sync::watch::channel(None);
    let watch_stop = stop_serving.subscribe();
    let watched = manager.clone();
    tasks.spawn(async move {
        tokio::select! {
            why = crate::demotion::watch(watched) => { demoted_tx.send_replace(Some(why)); }
            _ = stopped(watch_stop) => {}
        }
    });
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
            let cluster = new_cluster.take().context("init without a new cluster")?;
            init_tokens = Some(
                write_initial_state(
                    &manager,
                    cluster,
                    default_addr_pool,
                    subnet_size,
                    keys.unlock.as_ref(),
                )
                .await?,
            );
        }
        Bootstrap::Join { remote, .. } => {
            join(&manager, &remote).await?;
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
        demoted,
        data_dir: options.data_dir.clone(),
        socket: options.socket.clone(),
        _lock: lock,
    })
}

/// Seals the manager's TLS key with its data key.
struct SealWithDataKey(Arc<Cipher>);

/// What the sealed key is bound to: it opens as nothing else.
const NODE_KEY_CONTEXT: &[u8] = b"shoal manager node key";

impl shoal_pki::KeySeal for SealWithDataKey {
    fn seal(&self, key_pem: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.0
            .seal(NODE_KEY_CONTEXT, key_pem)
            .map_err(|e| e.to_string())
    }

    fn open(&self, sealed: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.0
            .open(NODE_KEY_CONTEXT, sealed, "the node key")
            .map_err(|e| e.to_string())
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Asks the cluster's leader to add this manager, following redirects.
async fn join(manager: &Manager, remote: &str) -> Result<()> {
    let mut target = remote.to_owned();
    for _ in 0..10 {
        let channel = manager.channel(&target)?;
        let reply = MembershipClient::new(channel)
            .join_manager(JoinManagerRequest {
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
                    "the manager at {target} refused this manager: {}",
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
    new: NewCluster,
    pools: Vec<String>,
    subnet_size: u32,
    unlock: Option<&UnlockKey>,
) -> Result<(String, String)> {
    let cluster_id = new.cluster_id;
    let pools = if pools.is_empty() {
        vec![DEFAULT_ADDR_POOL.to_owned()]
    } else {
        pools
    };
    // The size asked for must fit the pool, whatever ingress takes.
    allocator::pools::check_subnet_size(&pools[0], subnet_size)?;
    let ingress_subnet = allocator::pools::ingress_subnet(&pools[0], subnet_size)?;
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
            cert_expiry_ms: ca::DEFAULT_CERT_EXPIRY.as_millis() as i64,
            autolock_managers: unlock.is_some(),
            // Swarm's: running tasks never move on their own.
            rebalance: shoal_api::pb::Rebalance::Never as i32,
        }),
        root_ca_cert_pem: new.ca.cert_pem().to_owned(),
        root_ca_key_pem: new.ca.key_pem(),
        trust_pem: new.ca.cert_pem().to_owned(),
        worker_secret: shoal_api::token::new_secret(),
        manager_secret: shoal_api::token::new_secret(),
        manager_unlock_key: unlock.map(|k| k.0.as_bytes().to_vec()).unwrap_or_default(),
        ..Default::default()
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
        subnets: vec![shoal_api::pb::IpamConfig {
            subnet: subnet.clone(),
            gateway: gateway.clone(),
            ..Default::default()
        }],
        subnet,
        gateway,
    };
    let mut node = new_manager_node(&manager.hostname, &manager.addr);
    node.meta.get_or_insert_with(Default::default).id = new.node_id;
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

/// How often a leader checks its lease (`Manager::is_leader`) besides
/// when the vote or the leader changes: how late, at most, leader-only
/// components start after an election and stop after the lease ran out.
const LEASE_CHECK: Duration = Duration::from_millis(100);

/// Runs the leader-only components while this manager leads.
async fn lead_when_leader(manager: Arc<Manager>, dispatcher: Dispatcher) {
    // Not the full metrics: openraft sends them at every turn of its loop,
    // several times per write entry, and each would wake this task.
    let mut server = manager.raft.server_metrics();
    let mut lease_check = tokio::time::interval(LEASE_CHECK);
    lease_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    components.spawn(orchestrator::rebalance::follow(m.clone()));
                    components.spawn(d.monitor());
                    components.spawn(crate::certificates::finish_rotations(m.clone()));
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
        tokio::select! {
            changed = server.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = lease_check.tick() => {}
        }
    }
}
