//! `scale`: simulated nodes (the real agent protocol over mutual TLS, many
//! in this process, each with a simulated executor) join a `shoal-manager`
//! cluster of release builds; services are created until every task runs;
//! then the leader is watched at idle, one service is scaled by one to
//! measure the bytes pushed for one change, and a service is updated
//! rolling. Printed beside the published anchors and this project's goals.

mod failure;
mod measure;
mod report;

use std::{
    path::PathBuf,
    sync::{Arc, atomic::AtomicUsize},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use shoal_agent::{session::SessionState, sim::SimExecutor};
use shoal_api::pb::{
    ContainerSpec, Empty, Service, ServiceMode, ServiceSpec, TaskSpec, UpdateConfig,
    UpdateServiceRequest, control_client::ControlClient,
};
use tokio::{sync::watch, task::JoinSet};
use tonic::transport::Channel;

use crate::control_plane::{joins, shoal};

#[derive(clap::Args)]
pub struct Args {
    /// Simulated nodes (all in this process).
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Services created, each with --replicas tasks.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    #[arg(long, default_value_t = 10)]
    replicas: u64,
    /// Managers: 1 or 3 (the first is the leader measured).
    #[arg(long, default_value_t = 1)]
    managers: usize,
    /// Tasks of the service updated rolling (created with the others).
    #[arg(long, default_value_t = 1000)]
    update_tasks: u64,
    /// Its update parallelism (tasks replaced at once; monitor 0, delay 0).
    #[arg(long, default_value_t = 100)]
    update_parallelism: u64,
    /// Concurrent joins, and concurrent service creations.
    #[arg(long, default_value_t = 100)]
    join_concurrency: usize,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// The longest one node may take to join.
    #[arg(long, default_value_t = 600)]
    join_timeout_seconds: u64,
    /// How long the leader's CPU and memory are sampled at idle.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// The longest any phase may take.
    #[arg(long, default_value_t = 900)]
    timeout_seconds: u64,
    /// The shoal-manager binary (release build).
    #[arg(long)]
    manager_bin: PathBuf,
    /// Where the managers keep their data.
    #[arg(long, default_value = "/var/tmp")]
    data_root: PathBuf,
}

/// A simulated node that joined.
struct Node {
    executor: Arc<SimExecutor>,
    state: watch::Receiver<SessionState>,
    _session: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn run(args: Args) -> Result<()> {
    if args.managers != 1 && args.managers != 3 {
        bail!("--managers {}: give 1 or 3", args.managers);
    }
    let total_tasks = args.services as u64 * args.replicas + args.update_tasks;
    let services = args.services + usize::from(args.update_tasks > 0);
    println!(
        "scale: {} simulated nodes (agent protocol, mutual TLS, in one process), {} manager(s), {services} services / {total_tasks} tasks ({} x {} + one of {} updated rolling)",
        args.nodes, args.managers, args.services, args.replicas, args.update_tasks
    );
    let root = tempfile::Builder::new()
        .prefix("shoal-bench-scale-")
        .tempdir_in(&args.data_root)?;
    // The cluster's limits let this many in (defaults: 1,000 services,
    // 25,000 tasks); a node's share stays under its default limit.
    let per_node = total_tasks.div_ceil(args.nodes.max(1) as u64);
    let flags: Vec<String> = [
        ("--max-services", services as u64 + 10),
        ("--max-tasks", total_tasks + 1000),
        ("--max-tasks-per-node", (per_node * 2).max(250)),
        (
            "--max-replicas-per-service",
            args.update_tasks.max(args.replicas) + 10,
        ),
    ]
    .iter()
    .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
    .collect();
    let (cluster, admin) =
        shoal::start_with(root.path(), &args.manager_bin, args.managers, &flags).await?;
    let leader = cluster.leader_pid();
    let timeout = Duration::from_secs(args.timeout_seconds);

    let started = Instant::now();
    let nodes = join(&cluster, &args).await?;
    let joined = started.elapsed();
    println!(
        "join: {} nodes registered in {:.2} s ({:.0} joins/s)",
        nodes.len(),
        joined.as_secs_f64(),
        nodes.len() as f64 / joined.as_secs_f64()
    );

    let channel = shoal_pki::transport::lazy_channel(cluster.leader(), admin)?;
    let control = ControlClient::new(channel)
        .max_decoding_message_size(512 << 20)
        .max_encoding_message_size(64 << 20);

    let started = Instant::now();
    let bench_cpu = measure::cpu_ticks(std::process::id())?;
    let leader_cpu = measure::cpu_ticks(leader)?;
    create(&control, &args).await?;
    let created = started.elapsed();
    println!(
        "create: {services} services accepted in {:.2} s ({:.0}/s)",
        created.as_secs_f64(),
        services as f64 / created.as_secs_f64()
    );
    wait_running(&nodes, total_tasks as usize, timeout, started).await?;
    let converged = started.elapsed();
    let leader_busy = measure::seconds(measure::cpu_ticks(leader)? - leader_cpu);
    let bench_busy = measure::seconds(measure::cpu_ticks(std::process::id())? - bench_cpu);
    println!(
        "converge: {total_tasks} tasks running {:.2} s after the first create; CPU meanwhile: leader {:.1} s, this process (the nodes and clients) {:.1} s",
        converged.as_secs_f64(),
        leader_busy,
        bench_busy
    );

    let idle = measure::idle(leader, Duration::from_secs(args.idle_seconds)).await?;
    println!(
        "idle: leader over {} s: {:.2}% of a core, RSS {:.1} MiB (peak so far {:.1} MiB)",
        args.idle_seconds, idle.cpu_percent, idle.rss_mib, idle.hwm_mib
    );

    let change = scale_one(&control, &nodes, timeout).await?;
    change.print();

    let update = if args.update_tasks > 0 {
        Some(rolling_update(&control, &nodes, &args, timeout).await?)
    } else {
        None
    };

    report::print(&report::Summary {
        nodes: nodes.len(),
        tasks: total_tasks,
        joined,
        converged,
        idle_cpu_percent: idle.cpu_percent,
        rolling: update.map(|d| (args.update_tasks, d)),
    });
    drop(nodes);
    drop(cluster);
    Ok(())
}

/// Joins every node, `--join-concurrency` at a time.
async fn join(cluster: &shoal::ShoalCluster, args: &Args) -> Result<Vec<Node>> {
    let joined = joins::join_all(
        cluster,
        args.nodes,
        args.join_concurrency,
        Duration::from_secs(args.join_timeout_seconds),
    )
    .await?;
    Ok(joined
        .into_iter()
        .map(|j| Node {
            executor: j.executor,
            state: j.state,
            _session: AbortOnDrop(j.session),
        })
        .collect())
}

fn spec(name: String, replicas: u64, update: Option<UpdateConfig>) -> ServiceSpec {
    ServiceSpec {
        name,
        mode: ServiceMode::Replicated as i32,
        replicas,
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "shoal/echo:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        update,
        ..Default::default()
    }
}

const ROLLING: &str = "scale-rolling";
const SCALED: &str = "scale-00000";

/// Creates the services from `--clients` concurrent clients.
async fn create(control: &ControlClient<Channel>, args: &Args) -> Result<()> {
    let mut specs: Vec<ServiceSpec> = (0..args.services)
        .map(|i| spec(format!("scale-{i:05}"), args.replicas, None))
        .collect();
    if args.update_tasks > 0 {
        specs.push(spec(
            ROLLING.into(),
            args.update_tasks,
            Some(UpdateConfig {
                parallelism: Some(args.update_parallelism),
                delay_ms: 0,
                monitor_ms: Some(0),
                ..Default::default()
            }),
        ));
    }
    let specs = Arc::new(specs);
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = JoinSet::new();
    for _ in 0..args.clients.max(1) {
        let (mut control, specs, next) = (control.clone(), specs.clone(), next.clone());
        clients.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(spec) = specs.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                control
                    .create_service(spec.clone())
                    .await
                    .map_err(|s| failure::describe(&format!("creating {}", spec.name), &s))?;
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done??;
    }
    Ok(())
}

fn running(nodes: &[Node]) -> usize {
    nodes.iter().map(|n| n.executor.running_count()).sum()
}

/// Waits until the nodes run `want` tasks in all, saying how far they are
/// every 5 s.
async fn wait_running(
    nodes: &[Node],
    want: usize,
    timeout: Duration,
    started: Instant,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut said = Instant::now();
    loop {
        let now = running(nodes);
        if now == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{now} of {want} tasks running after {timeout:?}");
        }
        if said.elapsed() > Duration::from_secs(5) {
            println!(
                "  ... {now} of {want} running at {:.0} s",
                started.elapsed().as_secs_f64()
            );
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A service by name (with the version an update must name).
async fn service(control: &ControlClient<Channel>, name: &str) -> Result<Service> {
    let services = control
        .clone()
        .list_services(Empty {})
        .await
        .map_err(|s| failure::describe("listing services", &s))?
        .into_inner()
        .services;
    services
        .into_iter()
        .filter_map(|s| s.service)
        .find(|s| s.spec.as_ref().is_some_and(|spec| spec.name == name))
        .with_context(|| format!("no service {name}"))
}

async fn update(
    control: &ControlClient<Channel>,
    name: &str,
    change: impl FnOnce(&mut ServiceSpec),
) -> Result<()> {
    let current = service(control, name).await?;
    let mut spec = current.spec.unwrap_or_default();
    change(&mut spec);
    control
        .clone()
        .update_service(UpdateServiceRequest {
            id: current
                .meta
                .as_ref()
                .map(|m| m.id.clone())
                .unwrap_or_default(),
            version: current.meta.map(|m| m.version).unwrap_or_default(),
            spec: Some(spec),
            rollback: false,
        })
        .await
        .map_err(|s| failure::describe(&format!("updating {name}"), &s))?;
    Ok(())
}

fn running_of(nodes: &[Node], service_id: &str) -> Vec<String> {
    nodes
        .iter()
        .flat_map(|n| n.executor.running_of(service_id))
        .collect()
}

/// What one service scaled by one cost in pushes.
struct Change {
    nodes_reached: usize,
    messages: u64,
    bytes: u64,
    complete_sets: u64,
    /// The mean complete set of the nodes reached: one push without deltas.
    mean_set_bytes: f64,
    took: Duration,
}

impl Change {
    fn print(&self) {
        let per_node = self.bytes as f64 / self.nodes_reached.max(1) as f64;
        println!(
            "change: {SCALED} scaled by one in {:.2} s: {} bytes in {} messages to {} node(s) ({} complete sets): {per_node:.0} bytes per node reached; a complete set there is {:.0} bytes: ratio delta/complete {:.3}",
            self.took.as_secs_f64(),
            self.bytes,
            self.messages,
            self.nodes_reached,
            self.complete_sets,
            self.mean_set_bytes,
            per_node / self.mean_set_bytes.max(1.0)
        );
    }
}

fn counters(nodes: &[Node]) -> Vec<SessionState> {
    nodes.iter().map(|n| n.state.borrow().clone()).collect()
}

async fn scale_one(
    control: &ControlClient<Channel>,
    nodes: &[Node],
    timeout: Duration,
) -> Result<Change> {
    let current = service(control, SCALED).await?;
    let id = current
        .meta
        .as_ref()
        .map(|m| m.id.clone())
        .unwrap_or_default();
    let replicas = current.spec.as_ref().map_or(0, |s| s.replicas);
    let before = counters(nodes);
    let started = Instant::now();
    update(control, SCALED, |spec| spec.replicas += 1).await?;
    let deadline = Instant::now() + timeout;
    while running_of(nodes, &id).len() != replicas as usize + 1 {
        if Instant::now() > deadline {
            bail!("{SCALED} did not reach {} running tasks", replicas + 1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    // The pushes that follow (the new task's running status) settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = counters(nodes);
    let mut change = Change {
        nodes_reached: 0,
        messages: 0,
        bytes: 0,
        complete_sets: 0,
        mean_set_bytes: 0.0,
        took,
    };
    let mut set_bytes = 0u64;
    for (b, a) in before.iter().zip(&after) {
        if a.assignments_received > b.assignments_received {
            change.nodes_reached += 1;
            change.messages += a.assignments_received - b.assignments_received;
            change.bytes += a.assignment_bytes - b.assignment_bytes;
            change.complete_sets += a.complete_assignments - b.complete_assignments;
            set_bytes += a.set_bytes;
        }
    }
    change.mean_set_bytes = set_bytes as f64 / change.nodes_reached.max(1) as f64;
    Ok(change)
}

/// Updates the rolling service's image; the time until all its tasks are
/// new ones and running.
async fn rolling_update(
    control: &ControlClient<Channel>,
    nodes: &[Node],
    args: &Args,
    timeout: Duration,
) -> Result<Duration> {
    let id = service(control, ROLLING)
        .await?
        .meta
        .map(|m| m.id)
        .unwrap_or_default();
    let old: std::collections::HashSet<String> = running_of(nodes, &id).into_iter().collect();
    let started = Instant::now();
    update(control, ROLLING, |spec| {
        if let Some(c) = spec.task.as_mut().and_then(|t| t.container.as_mut()) {
            c.image = "shoal/echo:2".into();
        }
    })
    .await?;
    let deadline = Instant::now() + timeout;
    let mut said = Instant::now();
    loop {
        let now = running_of(nodes, &id);
        let new = now.iter().filter(|t| !old.contains(*t)).count();
        if new == args.update_tasks as usize && now.len() == new {
            break;
        }
        if Instant::now() > deadline {
            bail!("rolling update: {new} of {} tasks new", args.update_tasks);
        }
        if said.elapsed() > Duration::from_secs(5) {
            println!(
                "  ... {new} of {} updated at {:.0} s",
                args.update_tasks,
                started.elapsed().as_secs_f64()
            );
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    println!(
        "update: {} tasks replaced rolling ({} at a time, monitor 0) in {:.2} s",
        args.update_tasks,
        args.update_parallelism,
        took.as_secs_f64()
    );
    Ok(took)
}
