//! Simulated nodes joining at once, each as a real agent does: a key and a
//! CSR made here, a certificate issued for the worker token
//! (`shoal_agent::identity::obtain`), then a dispatcher session that
//! registers the node over mutual TLS (a simulated executor runs no tasks).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use shoal_agent::{
    session::{self, SessionConfig, SessionState},
    sim::SimExecutor,
};
use shoal_api::pb::{NodeDescription, Platform, Resources};
use tokio::{sync::watch, task::JoinSet};

use super::shoal::ShoalCluster;

/// How long one node may take to join and register.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);

pub struct Joins {
    pub nodes: usize,
    pub elapsed: Duration,
    /// Per node, from the start to its certificate, and to its registration.
    pub certified: Vec<Duration>,
    pub registered: Vec<Duration>,
}

/// Node `i`'s own loopback address (127.0.1.x, 127.0.2.x, ...): each node
/// joins from its own address, as nodes on their own hosts do.
fn address(i: usize) -> String {
    format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250)
}

/// Joins `nodes` simulated nodes at once; the sessions end when this
/// returns.
pub async fn run(cluster: &ShoalCluster, nodes: usize) -> Result<Joins> {
    let started = Instant::now();
    let joined = join_all(cluster, nodes, nodes, JOIN_DEADLINE).await?;
    let elapsed = started.elapsed();
    let mut certified: Vec<Duration> = joined.iter().map(|j| j.certified).collect();
    let mut registered: Vec<Duration> = joined.iter().map(|j| j.registered).collect();
    for j in joined {
        j.session.abort();
    }
    certified.sort();
    registered.sort();
    Ok(Joins {
        nodes,
        elapsed,
        certified,
        registered,
    })
}

/// Joins `nodes` simulated nodes, `concurrency` at a time, each within
/// `deadline`; their sessions run until aborted (`Joined::session`).
/// Times count from the call.
pub async fn join_all(
    cluster: &ShoalCluster,
    nodes: usize,
    concurrency: usize,
    deadline: Duration,
) -> Result<Vec<Joined>> {
    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut joins = JoinSet::new();
    for i in 0..nodes {
        let managers = cluster.addrs.clone();
        let token = cluster.worker_token.clone();
        let permits = permits.clone();
        joins.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let executor = Arc::new(SimExecutor::default());
            let outcome =
                tokio::time::timeout(deadline, join_one(i, managers, token, started, executor))
                    .await;
            match outcome {
                Ok(outcome) => outcome.with_context(|| format!("simulated node {i}")),
                Err(_) => bail!("simulated node {i} did not join within {deadline:?}"),
            }
        });
    }
    let mut joined = Vec::with_capacity(nodes);
    while let Some(one) = joins.join_next().await {
        joined.push(one??);
    }
    Ok(joined)
}

/// A simulated node that joined.
pub struct Joined {
    /// From the start to its certificate, and to its registration.
    pub certified: Duration,
    pub registered: Duration,
    /// Its session (it ends when aborted) and where the session stands.
    pub session: tokio::task::JoinHandle<()>,
    pub state: watch::Receiver<SessionState>,
    /// What "runs" its tasks.
    pub executor: Arc<SimExecutor>,
}

/// Node `i` joins with its own address and `executor`; times count from
/// `started`.
pub async fn join_one(
    i: usize,
    managers: Vec<String>,
    token: String,
    started: Instant,
    executor: Arc<SimExecutor>,
) -> Result<Joined> {
    let advertise = address(i);
    let hostname = format!("sim{i:03}");
    let credentials =
        shoal_agent::identity::obtain(None, &managers, Some(&token), &advertise, &hostname).await?;
    let certified = started.elapsed();
    let (state_tx, mut state) = watch::channel(SessionState::default());
    let config = SessionConfig {
        managers,
        credentials,
        advertise_addr: advertise,
        description: NodeDescription {
            hostname,
            platform: Some(Platform {
                os: "linux".into(),
                architecture: "x86_64".into(),
            }),
            resources: Some(Resources {
                pids: 0,
                nano_cpus: 2_000_000_000,
                memory_bytes: 4 << 30,
            }),
            engine_version: "sim".into(),
            ..Default::default()
        },
        labels: Default::default(),
    };
    let session = tokio::spawn(session::run(config, executor.clone(), state_tx));
    let registered = state
        .wait_for(|s| s.connected_to.is_some() || s.refused.is_some())
        .await
        .map(|s| s.refused.clone())
        .context("the session ended before registering")?;
    if let Some(refused) = registered {
        session.abort();
        bail!("the cluster refused the node: {refused}");
    }
    Ok(Joined {
        certified,
        registered: started.elapsed(),
        session,
        state,
        executor,
    })
}
