//! `control-plane`: (a) the scheduler placing 100,000 tasks on 1,000
//! simulated nodes; (b) replicated writes per second and p99 commit latency
//! of 3 `shoal-manager` processes on loopback, beside 3 `etcd` members on the
//! same machine and disk, with the same client stack (tonic), concurrency and
//! value size.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use shoal_api::pb::{
    Config, ConfigSpec, Empty, Meta, Node, NodeDescription, NodeSpec, NodeState, NodeStatus,
    Resources, StoreBatch, Task, TaskSpec, TaskState, TaskStatus, control_client::ControlClient,
    membership_client::MembershipClient,
};
use shoal_manager::{
    scheduler::placement::{Outcome, plan},
    store::{Batch, State},
};
use tonic::transport::Channel;

mod etcd {
    tonic::include_proto!("etcdserverpb");
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Writes per system (long enough that run-to-run noise stays small).
    #[arg(long, default_value_t = 50_000)]
    writes: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// The shoal-manager binary (release build).
    #[arg(long)]
    manager_bin: PathBuf,
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

struct Procs(Vec<Child>);

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

fn channel(addr: &str) -> Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_lazy())
}

async fn etcd_cluster(root: &Path) -> Result<(Procs, String)> {
    let peers: Vec<String> = (0..3)
        .map(|i| format!("e{i}=http://127.0.0.1:{}", 23801 + i))
        .collect();
    let mut procs = Procs(Vec::new());
    for i in 0..3 {
        let child = Command::new("etcd")
            .args(["--name", &format!("e{i}")])
            .args([
                "--data-dir",
                &root.join(format!("etcd{i}")).display().to_string(),
            ])
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", 23791 + i),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", 23791 + i),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", 23801 + i),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", 23801 + i),
            ])
            .args(["--initial-cluster", &peers.join(",")])
            .args(["--initial-cluster-state", "new", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcd (cargo xtask setup installs etcd-server)")?;
        procs.0.push(child);
    }
    let addr = "127.0.0.1:23791".to_owned();
    let ch = channel(&addr)?;
    wait_for("etcd to accept a write", || {
        let mut kv = etcd::kv_client::KvClient::new(ch.clone());
        async move {
            kv.put(etcd::PutRequest {
                key: b"warmup".to_vec(),
                value: b"x".to_vec(),
            })
            .await
            .ok()
        }
    })
    .await?;
    Ok((procs, addr))
}

async fn shoal_cluster(root: &Path, manager_bin: &Path) -> Result<(Procs, String)> {
    let mut procs = Procs(Vec::new());
    let addr = |i: usize| format!("127.0.0.1:{}", 23771 + i);
    let common = |i: usize| {
        vec![
            "--data-dir".to_owned(),
            root.join(format!("shoal{i}")).display().to_string(),
            "--listen-addr".into(),
            addr(i),
            "--socket".into(),
            root.join(format!("shoal{i}.sock")).display().to_string(),
            "--hostname".into(),
            format!("m{i}"),
        ]
    };
    let spawn = |args: Vec<String>| {
        Command::new(manager_bin)
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", manager_bin.display()))
    };
    let mut init = vec!["init".to_owned()];
    init.extend(common(0));
    procs.0.push(spawn(init)?);
    let first = channel(&addr(0))?;
    let token = wait_for("the first manager", || {
        let mut c = ControlClient::new(first.clone());
        async move {
            c.get_cluster(Empty {})
                .await
                .ok()
                .map(|r| r.into_inner().manager_token)
        }
    })
    .await?;
    for i in 1..3 {
        let mut join = vec!["join".to_owned(), "--token".into(), token.clone()];
        join.extend(common(i));
        join.push(addr(0));
        procs.0.push(spawn(join)?);
    }
    wait_for("three reachable managers", || {
        let mut c = ControlClient::new(first.clone());
        async move {
            let nodes = c.list_nodes(Empty {}).await.ok()?.into_inner().nodes;
            let reachable = nodes
                .iter()
                .filter_map(|n| n.manager_status.as_ref())
                .filter(|m| m.leader || m.reachability == "reachable")
                .count();
            (reachable == 3).then_some(())
        }
    })
    .await?;
    Ok((procs, addr(0)))
}

async fn writes(args: &Args) -> Result<()> {
    let root = tempfile::Builder::new()
        .prefix("shoal-bench-")
        .tempdir_in(&args.data_root)?;
    let value = vec![b'v'; args.value_size];
    println!(
        "writes: {} writes of {}-byte values from {} concurrent clients, 3 members each on loopback, data in {}",
        args.writes,
        args.value_size,
        args.clients,
        args.data_root.display()
    );

    let (etcd_procs, etcd_addr) = etcd_cluster(root.path()).await?;
    let ch = channel(&etcd_addr)?;
    let v = value.clone();
    let etcd = load(args.writes, args.clients, move |i| {
        let mut kv = etcd::kv_client::KvClient::new(ch.clone());
        let value = v.clone();
        async move {
            kv.put(etcd::PutRequest {
                key: format!("bench/{i:08}").into_bytes(),
                value,
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    drop(etcd_procs);
    println!(
        "etcd 3.4:  {:>8.0} writes/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        etcd.per_second,
        etcd.p50.as_secs_f64() * 1e3,
        etcd.p99.as_secs_f64() * 1e3
    );

    let (shoal_procs, leader) = shoal_cluster(root.path(), &args.manager_bin).await?;
    let ch = channel(&leader)?;
    let shoal = load(args.writes, args.clients, move |i| {
        let mut m = MembershipClient::new(ch.clone());
        let mut batch = Batch::default();
        batch.put_config(Config {
            meta: Some(Meta {
                id: format!("bench{i:08}"),
                ..Default::default()
            }),
            spec: Some(ConfigSpec {
                name: format!("bench{i:08}"),
                data: value.clone(),
                ..Default::default()
            }),
        });
        let batch: StoreBatch = batch.into_proto();
        async move {
            m.propose(batch).await?;
            Ok(())
        }
    })
    .await?;
    drop(shoal_procs);
    println!(
        "shoal:     {:>8.0} writes/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        shoal.per_second,
        shoal.p50.as_secs_f64() * 1e3,
        shoal.p99.as_secs_f64() * 1e3
    );
    println!(
        "ratio shoal/etcd: writes/s {:.2}, p99 latency {:.2} (lower is better)",
        shoal.per_second / etcd.per_second,
        shoal.p99.as_secs_f64() / etcd.p99.as_secs_f64()
    );
    Ok(())
}
