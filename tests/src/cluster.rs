//! An in-process cluster for manager tests: real managers (Raft on disk in a
//! temporary directory, gRPC on loopback) and simulated agents speaking the
//! real agent protocol.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use shoal_agent::{
    session::{self, SessionConfig, SessionState},
    sim::SimExecutor,
};
use shoal_api::pb::{
    ContainerSpec, Empty, Node, NodeDescription, Platform, Resources, ServiceMode, ServiceSpec,
    Task, TaskSpec, TaskState, control_client::ControlClient,
};
use shoal_manager::{
    daemon::{self, Bootstrap, Options, RunningManager},
    limits::Limits,
    manager::Settings,
    raft::Timing,
};
use tokio::{sync::watch, task::JoinHandle};
use tonic::transport::Channel;

/// Short periods keep the tests fast; the behaviour is the same.
pub const HEARTBEAT: Duration = Duration::from_millis(300);

pub fn timing() -> Timing {
    Timing {
        heartbeat_ms: 100,
        election_min_ms: 600,
        election_max_ms: 1200,
        snapshot_every: 200,
    }
}

/// The manager settings of test clusters: short periods, and a leader
/// lease of twice the longest election timeout, as in production.
pub fn settings() -> Settings {
    Settings {
        heartbeat_period: HEARTBEAT,
        leader_lease: Duration::from_millis(2 * timing().election_max_ms),
        ..Settings::default()
    }
}

pub struct TestAgent {
    pub hostname: String,
    /// Its certificate, key and trusted roots (renewal replaces them).
    pub credentials: Arc<shoal_pki::Credentials>,
    pub executor: Arc<SimExecutor>,
    pub state: watch::Receiver<SessionState>,
    handle: JoinHandle<()>,
}

impl TestAgent {
    pub fn node_id(&self) -> String {
        self.state.borrow().node_id.clone()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub managers: Vec<Option<RunningManager>>,
    options: Vec<Options>,
    pub agents: Vec<TestAgent>,
    pub worker_token: String,
    pub manager_token: String,
    /// The unlock key of a cluster started with autolock.
    pub unlock_key: Option<String>,
}

impl TestCluster {
    /// `managers` managers: the first inits, the others join.
    pub async fn start(managers: usize) -> Result<Self> {
        Self::start_with_limits(managers, Limits::default()).await
    }

    /// As `start`, every manager enforcing `limits`.
    pub async fn start_with_limits(managers: usize, limits: Limits) -> Result<Self> {
        let settings = Settings {
            limits,
            ..settings()
        };
        Self::start_with(managers, settings, false).await
    }

    /// As `start`, every manager started with `settings`.
    pub async fn start_with_settings(managers: usize, settings: Settings) -> Result<Self> {
        Self::start_with(managers, settings, false).await
    }

    /// As `start`, initialised with `--autolock`; each manager has a control
    /// socket in the cluster's directory (a locked one is unlocked there).
    pub async fn start_autolocked(managers: usize) -> Result<Self> {
        Self::start_with(managers, settings(), true).await
    }

    async fn start_with(managers: usize, settings: Settings, autolock: bool) -> Result<Self> {
        // RUST_LOG=info shows what the managers and agents do.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir()?;
        let mut options = Vec::new();
        for i in 0..managers {
            let listen = shoal_api::test_port::unused_loopback_port()?;
            options.push(Options {
                data_dir: dir.path().join(format!("m{i}")),
                listen,
                advertise: listen.to_string(),
                socket: autolock.then(|| dir.path().join(format!("m{i}.sock"))),
                hostname: format!("manager{i}"),
                metrics: None,
                timing: timing(),
                settings: settings.clone(),
            });
        }
        let first = daemon::start(
            options[0].clone(),
            Bootstrap::Init {
                default_addr_pool: vec!["198.18.0.0/15".into()],
                subnet_size: 24,
                autolock,
            },
        )
        .await?;
        let (worker_token, manager_token) =
            first.init_tokens.clone().context("init gives tokens")?;
        let unlock_key = first.init_unlock_key.clone();
        let remote = first.addr().to_owned();
        let mut running = vec![Some(first)];
        for o in &options[1..] {
            let joined = daemon::start(
                o.clone(),
                Bootstrap::Join {
                    token: manager_token.clone(),
                    remote: remote.clone(),
                },
            )
            .await?;
            running.push(Some(joined));
        }
        Ok(Self {
            dir,
            managers: running,
            options,
            agents: Vec::new(),
            worker_token,
            manager_token,
            unlock_key,
        })
    }

    /// How manager `i` is started.
    pub fn options(&self, i: usize) -> &Options {
        &self.options[i]
    }

    pub fn manager_addrs(&self) -> Vec<String> {
        self.options.iter().map(|o| o.advertise.clone()).collect()
    }

    /// Starts a simulated agent; returns its index once it is registered.
    pub async fn add_agent(&mut self, hostname: &str, labels: &[(&str, &str)]) -> Result<usize> {
        let advertise = format!("192.0.2.{}", 100 + self.agents.len());
        self.add_agent_at(hostname, &advertise, labels).await
    }

    /// Starts one more manager on `ip` (a loopback address such as
    /// 127.0.0.2 stands for another host), joining with the manager token.
    pub async fn add_manager(&mut self, hostname: &str, ip: &str) -> Result<usize> {
        let listen = std::net::TcpListener::bind((ip, 0))?.local_addr()?;
        let options = Options {
            data_dir: self.dir.path().join(format!("m{}", self.options.len())),
            listen,
            advertise: listen.to_string(),
            socket: None,
            hostname: hostname.to_owned(),
            metrics: None,
            timing: timing(),
            settings: self.options[0].settings.clone(),
        };
        let remote = self.manager_addrs()[0].clone();
        let joined = daemon::start(
            options.clone(),
            Bootstrap::Join {
                token: self.manager_token.clone(),
                remote,
            },
        )
        .await?;
        self.options.push(options);
        self.managers.push(Some(joined));
        Ok(self.managers.len() - 1)
    }

    /// As `add_agent`, offering `generic` resources (`shoal-agent join
    /// --generic-resource`).
    pub async fn add_agent_offering(
        &mut self,
        hostname: &str,
        generic: Vec<shoal_api::pb::GenericResource>,
    ) -> Result<usize> {
        let advertise = format!("192.0.2.{}", 100 + self.agents.len());
        self.add_agent_described(hostname, &advertise, &[], generic, 0)
            .await
    }

    /// As `add_agent`, holding up to `max_tasks` tasks (`shoal-agent join
    /// --max-tasks`) instead of the 128 its simulated 4 GiB allow.
    pub async fn add_agent_holding(&mut self, hostname: &str, max_tasks: u64) -> Result<usize> {
        let advertise = format!("192.0.2.{}", 100 + self.agents.len());
        self.add_agent_described(hostname, &advertise, &[], Vec::new(), max_tasks)
            .await
    }

    /// As `add_agent`, advertising `advertise`.
    pub async fn add_agent_at(
        &mut self,
        hostname: &str,
        advertise: &str,
        labels: &[(&str, &str)],
    ) -> Result<usize> {
        self.add_agent_described(hostname, advertise, labels, Vec::new(), 0)
            .await
    }

    async fn add_agent_described(
        &mut self,
        hostname: &str,
        advertise: &str,
        labels: &[(&str, &str)],
        generic_resources: Vec<shoal_api::pb::GenericResource>,
        max_tasks: u64,
    ) -> Result<usize> {
        let executor = Arc::new(SimExecutor::default());
        let (tx, rx) = watch::channel(SessionState::default());
        // Joins as a real agent does: a certificate for the token first.
        let credentials = shoal_agent::identity::obtain(
            None,
            &self.manager_addrs(),
            Some(&self.worker_token),
            advertise,
            hostname,
        )
        .await?;
        let config = SessionConfig {
            managers: self.manager_addrs(),
            credentials: credentials.clone(),
            advertise_addr: advertise.to_owned(),
            description: NodeDescription {
                hostname: hostname.to_owned(),
                platform: Some(Platform {
                    os: "linux".into(),
                    architecture: "x86_64".into(),
                }),
                resources: Some(Resources {
                    nano_cpus: 2_000_000_000,
                    memory_bytes: 4 << 30,
                    pids: 0,
                }),
                engine_version: "sim".into(),
                generic_resources,
                max_tasks,
                ..Default::default()
            },
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        };
        let handle = tokio::spawn(session::run(config, executor.clone(), tx));
        let mut state = rx.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            state.wait_for(|s| s.connected_to.is_some()),
        )
        .await
        .context("agent did not register within 10 s")??;
        self.agents.push(TestAgent {
            hostname: hostname.to_owned(),
            credentials,
            executor,
            state: rx,
            handle,
        });
        Ok(self.agents.len() - 1)
    }

    /// A node that joins with the worker token as `hostname` but runs no
    /// agent: its certificate, and a dispatcher client of the first manager
    /// presenting it, for tests that speak the node's side of the protocol
    /// themselves.
    pub async fn raw_node(
        &self,
        hostname: &str,
    ) -> Result<(
        Arc<shoal_pki::Credentials>,
        shoal_api::pb::dispatcher_client::DispatcherClient<Channel>,
    )> {
        let node = shoal_agent::identity::obtain(
            None,
            &self.manager_addrs(),
            Some(&self.worker_token),
            "",
            hostname,
        )
        .await?;
        let channel = shoal_pki::transport::channel(
            &self.manager_addrs()[0],
            shoal_pki::transport::Dialer::Node(node.clone()),
        )
        .await?;
        Ok((
            node,
            shoal_api::pb::dispatcher_client::DispatcherClient::new(channel),
        ))
    }

    /// A client of the first manager that is up, with an admin client
    /// certificate (mutual TLS, as `shoal cert issue` gives an operator).
    pub async fn control(&self) -> Result<ControlClient<Channel>> {
        let manager = self
            .managers
            .iter()
            .flatten()
            .next()
            .context("no manager is running")?;
        let channel =
            shoal_pki::transport::channel(manager.addr(), manager.admin_dialer().await?).await?;
        Ok(ControlClient::new(channel))
    }

    /// A TLS client identity for the control API (an admin certificate).
    pub async fn admin_dialer(&self) -> Result<shoal_pki::transport::Dialer> {
        self.managers
            .iter()
            .flatten()
            .next()
            .context("no manager is running")?
            .admin_dialer()
            .await
    }

    pub fn leader_index(&self) -> Option<usize> {
        self.managers
            .iter()
            .position(|m| m.as_ref().is_some_and(|m| m.manager.is_leader()))
    }

    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<usize> {
        wait_until(timeout, "a leader", || async { self.leader_index() }).await
    }

    /// Stops manager `i` (its data stays on disk).
    pub async fn stop_manager(&mut self, i: usize) {
        if let Some(m) = self.managers[i].take() {
            m.shutdown().await;
        }
    }

    /// Starts manager `i` again from its data directory.
    pub async fn restart_manager(&mut self, i: usize) -> Result<()> {
        let m = daemon::start(self.options[i].clone(), Bootstrap::Restart).await?;
        self.managers[i] = Some(m);
        Ok(())
    }

    pub async fn tasks(&self) -> Result<Vec<Task>> {
        Ok(self
            .control()
            .await?
            .list_tasks(Empty {})
            .await?
            .into_inner()
            .tasks)
    }

    pub async fn nodes(&self) -> Result<Vec<Node>> {
        Ok(self
            .control()
            .await?
            .list_nodes(Empty {})
            .await?
            .into_inner()
            .nodes)
    }

    /// Running tasks of a service per node hostname.
    pub async fn running_per_node(&self, service_id: &str) -> Result<BTreeMap<String, usize>> {
        let nodes = self.nodes().await?;
        let name = |id: &str| {
            nodes
                .iter()
                .find(|n| n.meta.as_ref().is_some_and(|m| m.id == id))
                .and_then(|n| n.description.as_ref().map(|d| d.hostname.clone()))
                .unwrap_or_default()
        };
        let mut out = BTreeMap::new();
        for t in self.tasks().await? {
            if t.service_id == service_id && is_running(&t) {
                *out.entry(name(&t.node_id)).or_default() += 1;
            }
        }
        Ok(out)
    }
}

/// A channel to a manager's local control socket.
pub async fn unix_channel(socket: &std::path::Path) -> Result<Channel> {
    Ok(shoal_api::local_socket::channel(socket).await?)
}

pub fn is_running(task: &Task) -> bool {
    task.desired_state() == TaskState::Running
        && task.status.as_ref().map(|s| s.state()) == Some(TaskState::Running)
}

/// A spec for `image` with `replicas` tasks.
pub fn replicated(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        mode: ServiceMode::Replicated as i32,
        replicas,
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "shoal/echo:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Polls `check` until it returns Some, or fails naming `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers a simulated node through `client` (its certificate names the
/// node) as `hostname`: the session to heartbeat and stream with (full
/// sets, no deltas), and the heartbeat period the manager told it.
pub async fn register_node(
    client: &mut shoal_api::pb::dispatcher_client::DispatcherClient<tonic::transport::Channel>,
    hostname: &str,
) -> Result<(shoal_api::pb::SessionRef, std::time::Duration)> {
    let registered = client
        .register(shoal_api::pb::RegisterRequest {
            description: Some(shoal_api::pb::NodeDescription {
                hostname: hostname.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let period = std::time::Duration::from_millis(registered.heartbeat_period_ms.max(50) as u64);
    Ok((
        shoal_api::pb::SessionRef {
            node_id: registered.node_id,
            session_id: registered.session_id,
            deltas: false,
        },
        period,
    ))
}
