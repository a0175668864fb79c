//! `control-plane`: (a) the scheduler placing 100,000 tasks on 1,000
//! simulated nodes; (b) replicated writes per second and p99 commit latency
//! of 3 `shoal-manager` processes on loopback, beside 3 `etcd` members on the
//! same machine and disk, with the same client stack (tonic over rustls),
//! concurrency and value size, both with mutual TLS between clients and
//! members, the managers with the product's default settings, in rounds
//! that alternate who writes first (see `rounds`); (c) simulated nodes
//! joining at once (certificate, then registration).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use shoal_api::pb::{
    Meta, Node, NodeDescription, NodeSpec, NodeState, NodeStatus, Resources, Task, TaskSpec,
    TaskState, TaskStatus,
};
use shoal_manager::{
    scheduler::placement::{Outcome, plan},
    store::State,
};
use shoal_pki::transport::Dialer;

mod etcd;
pub(crate) mod joins;
mod rounds;
pub(crate) mod shoal;

/// Replicated writes before TLS, as bench/RESULTS.md records them
/// (2026-11-24, this bench with plaintext gRPC for both, 64 writers on one
/// connection): what the TLS figures at that load are compared with. etcd's own change shows how much of a
/// difference is the machine's mood rather than TLS.
const PLAINTEXT: [(&str, f64, f64); 2] = [("shoal", 14_360.0, 6.66), ("etcd", 14_350.0, 9.74)];

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Writes per system and round (long enough that run-to-run noise
    /// stays small).
    #[arg(long, default_value_t = 50_000)]
    writes: usize,
    /// Rounds of writes; the two systems alternate who writes first, and
    /// the ratio is printed as a spread over the rounds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// An extra flag for every manager (repeat for more), to compare a
    /// setting with the defaults, e.g. `--manager-arg=--worker-threads
    /// --manager-arg=2`. None: the product's defaults.
    #[arg(long, allow_hyphen_values = true)]
    manager_arg: Vec<String>,
    /// The loads to write at, each `CLIENTSxCONNS`: concurrent writers
    /// sharing that many connections (the same for both systems; write `i`
    /// goes over connection `i % CONNS`). By default two: 64 writers on one
    /// connection, and etcd's own throughput shape, 1,000 writers on 100
    /// connections (`benchmark --conns=100 --clients=1000 put`, etcd's
    /// performance guide), where each system runs at its capacity.
    #[arg(long, value_delimiter = ',', default_value = "64x1,1000x100", value_parser = rounds::Shape::parse)]
    loads: Vec<rounds::Shape>,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// The shoal-manager binary (release build).
    #[arg(long)]
    manager_bin: PathBuf,
    /// Simulated nodes that join at once after the writes (0: none).
    #[arg(long, default_value_t = 100)]
    joins: usize,
    /// Where both clusters keep their data (the same disk for both).
    #[arg(long, default_value = "/var/tmp")]
    data_root: PathBuf,
}

pub async fn run(args: Args) -> Result<()> {
    scheduler(&args)?;
    writes(&args).await
}

fn scheduler(args: &Args) -> Result<()> {
    let mut state = State::default();
    for i in 0..args.nodes {
        let id = format!("node{i:05}");
        state.nodes.insert(
            id.clone(),
            Node {
                meta: Some(Meta {
                    id: id.clone(),
                    ..Default::default()
                }),
                spec: Some(NodeSpec::default()),
                description: Some(NodeDescription {
                    hostname: id,
                    resources: Some(Resources {
                        pids: 0,
                        nano_cpus: 64_000_000_000,
                        memory_bytes: 256 << 30,
                    }),
                    ..Default::default()
                }),
                status: Some(NodeStatus {
                    state: NodeState::Ready as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
    }
    // 100 services of 1,000 tasks each, all pending.
    let services = 100.min(args.tasks).max(1);
    for i in 0..args.tasks {
        let id = format!("task{i:07}");
        state.tasks.insert(
            id.clone(),
            Task {
                meta: Some(Meta {
                    id,
                    ..Default::default()
                }),
                service_id: format!("svc{:03}", i % services),
                slot: (i / services + 1) as u64,
                spec: Some(TaskSpec::default()),
                status: Some(TaskStatus {
                    state: TaskState::Pending as i32,
                    ..Default::default()
                }),
                desired_state: TaskState::Running as i32,
                ..Default::default()
            },
        );
    }
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let decisions = plan(&state, &shoal_manager::limits::Limits::default());
        let elapsed = started.elapsed().as_secs_f64();
        let placed = decisions
            .iter()
            .filter(|d| matches!(d.outcome, Outcome::Assign(_)))
            .count();
        if placed != args.tasks {
            bail!("the scheduler placed {placed} of {} tasks", args.tasks);
        }
        best = best.min(elapsed);
    }
    let rate = args.tasks as f64 / best;
    println!(
        "scheduler: {} tasks on {} nodes placed in {:.3} s (best of 3)",
        args.tasks, args.nodes, best
    );
    println!(
        "scheduler: {rate:.0} placements/s; target 50,000/s: ratio {:.2}",
        rate / 50_000.0
    );
    Ok(())
}

pub struct Procs(Vec<Child>);

impl Procs {
    /// The processes' ids, in the order they were started.
    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Load {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `writes` writes from `clients` concurrent writers; `write(i)` does one.
async fn load<F, Fut>(writes: usize, clients: usize, write: F) -> Result<Load>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let write = Arc::new(write);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (write, next) = (write.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= writes {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                write(i).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(writes);
    for h in handles {
        all.extend(h.await??);
    }
    let elapsed = started.elapsed();
    if all.is_empty() {
        bail!("no writes to time: give --writes 1 or more");
    }
    all.sort();
    Ok(Load {
        per_second: writes as f64 / elapsed.as_secs_f64(),
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
    })
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `command` with its output discarded (the benches print their own).
fn spawn_quiet(command: &mut Command) -> std::io::Result<Child> {
    command.stdout(Stdio::null()).stderr(Stdio::null()).spawn()
}

/// The ratios of one load's rounds, and both systems against their
/// plaintext figures.
fn report(shape: &rounds::Shape, results: &[(rounds::Phase, rounds::Phase)]) {
    let Some(spread) = rounds::spread(results) else {
        return;
    };
    let [w_min, w_mean, w_max] = spread.writes;
    let [p_min, p_mean, p_max] = spread.p99;
    println!(
        "ratio shoal/etcd at {shape} over {} alternating rounds: writes/s {w_min:.2}-{w_max:.2} (mean {w_mean:.2}), p99 latency {p_min:.2}-{p_max:.2} (mean {p_mean:.2}, lower is better)",
        results.len()
    );
    if *shape != rounds::Shape::PLAINTEXT {
        return;
    }
    let mean = |f: &dyn Fn(&(rounds::Phase, rounds::Phase)) -> f64| {
        results.iter().map(f).sum::<f64>() / results.len() as f64
    };
    let shoal_mean = (
        mean(&|(_, s)| s.load.per_second),
        mean(&|(_, s)| s.load.p99.as_secs_f64() * 1e3),
    );
    let etcd_mean = (
        mean(&|(e, _)| e.load.per_second),
        mean(&|(e, _)| e.load.p99.as_secs_f64() * 1e3),
    );
    for ((name, writes, p99_ms), (now_writes, now_p99)) in
        PLAINTEXT.into_iter().zip([shoal_mean, etcd_mean])
    {
        println!(
            "{name} with TLS / plaintext (bench/RESULTS.md, 2026-11-24: {writes:.0} writes/s, p99 {p99_ms:.2} ms): writes/s {:.2}, p99 {:.2}",
            now_writes / writes,
            now_p99 / p99_ms
        );
    }
}

async fn writes(args: &Args) -> Result<()> {
    let root = tempfile::Builder::new()
        .prefix("shoal-bench-")
        .tempdir_in(&args.data_root)?;
    let value = vec![b'v'; args.value_size];
    println!(
        "writes: {} writes of {}-byte values per phase, 3 members each on loopback, data in {}, mutual TLS 1.3 for clients and members",
        args.writes,
        args.value_size,
        args.data_root.display()
    );

    let etcd_cluster = etcd::start(root.path()).await?;
    let cluster = shoal::start(root.path(), &args.manager_bin, &args.manager_arg).await?;
    if args.manager_arg.is_empty() {
        println!("shoal: 3 managers with the product's default settings");
    } else {
        println!(
            "shoal: 3 managers with {} (not the defaults)",
            args.manager_arg.join(" ")
        );
    }
    let writer = cluster.manager_identity("127.0.0.100").await?;
    let most = args.loads.iter().map(|l| l.conns).max().unwrap_or(1);
    let shoal = (0..most)
        .map(|_| shoal_pki::transport::lazy_channel(cluster.leader(), Dialer::Node(writer.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let etcd = etcd_cluster.connections(most)?;
    for (load_index, shape) in args.loads.iter().enumerate() {
        println!("load: {shape}");
        let targets = rounds::Targets {
            etcd: etcd[..shape.conns].to_vec(),
            etcd_pids: etcd_cluster.procs.pids(),
            shoal: shoal[..shape.conns].to_vec(),
            shoal_pids: cluster.pids(),
            writes: args.writes,
            clients: shape.clients,
            value: value.clone(),
            load_index,
        };
        let results = rounds::run(&targets, args.rounds as usize).await?;
        report(shape, &results);
    }
    drop(etcd_cluster);

    if args.joins > 0 {
        let j = joins::run(&cluster, args.joins).await?;
        let pct =
            |v: &[Duration], p: usize| v[(v.len() * p / 100).min(v.len() - 1)].as_secs_f64() * 1e3;
        println!(
            "joins: {} simulated nodes at once (key + CSR, certificate for the worker token, registration over mutual TLS) in {:.2} s: {:.1} joins/s",
            j.nodes,
            j.elapsed.as_secs_f64(),
            j.nodes as f64 / j.elapsed.as_secs_f64()
        );
        println!(
            "joins: to registered p50 {:>7.1} ms   p99 {:>7.1} ms; to certificate p50 {:>7.1} ms   p99 {:>7.1} ms",
            pct(&j.registered, 50),
            pct(&j.registered, 99),
            pct(&j.certified, 50),
            pct(&j.certified, 99)
        );
    }
    drop(cluster);
    Ok(())
}
