//! One chaos run: the lab, the clients and the load, the faults in the
//! seed's order, then the checks and the figures.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use shoal_lab::Lab;

use crate::{
    addresses,
    failures::Window,
    faults,
    report::{Report, Scan},
    schedule::{self, Fault, Step},
    setup::{self, MANAGERS, NODES, TOOLBOX, WEB, WEB_REPLICAS},
    store_ops::Recorder,
    traffic::{self, MeshLoad},
    view::{self, View},
    workload::{self, Counters},
};

pub struct Options {
    pub minutes: f64,
    pub seed: u64,
    pub bin_dir: PathBuf,
    /// Concurrent store clients (the failover prober comes on top).
    pub clients: usize,
    /// Leave the lab up at the end (to look at it).
    pub keep: bool,
}

pub const TIMING: schedule::Timing = schedule::Timing {
    hold: (Duration::from_secs(10), Duration::from_secs(16)),
    settle: Duration::from_secs(12),
};
/// How long a call may go unanswered before its outcome counts as unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(8);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the cluster has to be whole again after a recovery.
const HEAL_TIMEOUT: Duration = Duration::from_secs(60);
/// After the cluster is whole again, failed requests still count against
/// the fault for this long (connections in flight, DNS caches).
const GRACE: Duration = Duration::from_secs(5);
const ASK: Duration = Duration::from_secs(3);
/// The longest a lost node is held while its tasks are not yet elsewhere.
const MAX_LOSS_HOLD: Duration = Duration::from_secs(40);

pub fn run(options: &Options) -> Result<Report> {
    let budget = Duration::from_secs_f64(options.minutes * 60.0);
    let steps = schedule::plan(options.seed, budget, TIMING);
    println!(
        "[chaos] seed {} (--seed {0} repeats this schedule)",
        options.seed
    );
    for (i, step) in steps.iter().enumerate() {
        println!(
            "[chaos] schedule {:>2}: {:<14} hold {:.1} s, pick {}",
            i + 1,
            step.fault.to_string(),
            step.hold.as_secs_f64(),
            step.pick % 1000
        );
    }
    let lab = Lab::new();
    setup::lab_and_cluster(&lab, &options.bin_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = drive(&lab, &rt, options, &steps);
    if !options.keep {
        lab.down(&mut |line| eprintln!("[lab] {line}"))?;
    }
    result
}

fn micros(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

fn drive(
    lab: &Lab,
    rt: &tokio::runtime::Runtime,
    options: &Options,
    steps: &[Step],
) -> Result<Report> {
    setup::services(lab, &options.bin_dir, rt)?;
    let mut observer = setup::managers(lab);
    let start = Instant::now();
    let recorder = Arc::new(Recorder::new(start));
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sockets: Vec<(String, PathBuf)> = observer
        .iter()
        .map(|m| (m.node.clone(), m.socket.clone()))
        .collect();
    let mut clients = Vec::new();
    for id in 0..=options.clients {
        let prober = id == options.clients;
        let client = workload::Client {
            id,
            sockets: sockets.clone(),
            timeout: if prober { PROBE_TIMEOUT } else { CALL_TIMEOUT },
            seed: options.seed,
            prober,
        };
        clients.push(rt.spawn(workload::run(
            client,
            recorder.clone(),
            counters.clone(),
            stop.clone(),
        )));
    }

    let requests: traffic::Log = Arc::new(Mutex::new(Vec::new()));
    let mesh = MeshLoad::start(
        &options.bin_dir,
        NODES,
        setup::PORT,
        40,
        start,
        requests.clone(),
    )?;
    let hostnames = rt
        .block_on(view::ask(&mut observer, ASK))
        .context("no manager answers")?
        .hostnames;
    let vip = {
        let (log, stop) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            traffic::vip_rounds(TOOLBOX, WEB, 10, start, log, stop, |id| {
                hostnames.get(id).cloned().unwrap_or_else(|| id.to_owned())
            })
        })
    };

    let mut windows = Vec::new();
    let mut node_loss = Vec::new();
    let mut not_rescheduled = Vec::new();
    let mut scans = Vec::new();
    let mut leader_kills = Vec::new();
    let mut errors = Vec::new();
    let budget = Duration::from_secs_f64(options.minutes * 60.0);
    for (i, step) in steps.iter().enumerate() {
        if i > 0 && i % schedule::ALL.len() == 0 && start.elapsed() >= budget {
            break;
        }
        match one_fault(lab, rt, &mut observer, step, start) {
            Ok(done) => {
                if step.fault == Fault::KillLeader {
                    leader_kills.push(done.window.from);
                }
                if let Some(lost) = done.node_loss {
                    match lost {
                        Ok(took) => node_loss.push(took),
                        Err(why) => not_rescheduled.push(why),
                    }
                }
                windows.push(done.window);
            }
            Err(error) => {
                eprintln!("[chaos] step {} ({}): {error:#}", i + 1, step.fault);
                errors.push(format!("step {} ({}): {error:#}", i + 1, step.fault));
            }
        }
        scans.push(scan(rt, &mut observer, format!("after step {}", i + 1)));
    }

    // The end: the clients stop, one last read of everything, the load ends.
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for client in clients {
            let _ = tokio::time::timeout(CALL_TIMEOUT * 2, client).await;
        }
    });
    rt.block_on(workload::final_reads(
        &sockets,
        recorder.clone(),
        counters.clone(),
    ));
    mesh.stop();
    let _ = vip.join();
    scans.push(scan(rt, &mut observer, "at the end".into()));

    let history = recorder.history();
    let requests = requests.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Report::build(crate::report::Inputs {
        seed: options.seed,
        steps: steps.to_vec(),
        history,
        counters,
        requests,
        windows,
        leader_kills,
        node_loss,
        not_rescheduled,
        scans,
        errors,
        elapsed: start.elapsed(),
    }))
}

struct Done {
    window: Window,
    /// Kill or isolation of a node with tasks: how long until they all
    /// ran elsewhere, or why that was not seen during the hold.
    node_loss: Option<Result<Duration, String>>,
}

fn ask(rt: &tokio::runtime::Runtime, observer: &mut [crate::control::Manager]) -> Option<View> {
    rt.block_on(view::ask(observer, ASK))
}

fn one_fault(
    lab: &Lab,
    rt: &tokio::runtime::Runtime,
    observer: &mut [crate::control::Manager],
    step: &Step,
    start: Instant,
) -> Result<Done> {
    let before = ask(rt, observer).context("no manager answers before the fault")?;
    let managers: Vec<String> = (1..=MANAGERS).map(|i| format!("n{i}")).collect();
    let nodes: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
    let pick = |among: &[String]| among[(step.pick % among.len() as u64) as usize].clone();
    let node = match step.fault {
        Fault::KillLeader => before.leader.clone().context("no leader to kill")?,
        Fault::KillFollower => {
            let followers: Vec<String> = managers
                .iter()
                .filter(|m| Some(*m) != before.leader.as_ref())
                .cloned()
                .collect();
            pick(&followers)
        }
        _ => pick(&nodes),
    };
    let node_id = before
        .hostnames
        .iter()
        .find(|(_, h)| **h == node)
        .map(|(id, _)| id.clone())
        .with_context(|| format!("no node id for {node}"))?;
    let web_on: Vec<String> = before.running(WEB);
    let mut backends: BTreeSet<String> = web_on.iter().cloned().collect();
    backends.extend(before.running(TOOLBOX));
    let lost_here = web_on.iter().filter(|h| **h == node).count();

    let from = micros(start);
    let injected_at = Instant::now();
    let injected = faults::inject(lab, step.fault, &node, &node_id)?;
    println!(
        "[chaos] {:>6.1} s  {} on {node} (hold {:.1} s)",
        from as f64 / 1e6,
        step.fault,
        step.hold.as_secs_f64()
    );
    let measure_loss = matches!(step.fault, Fault::KillAgent | Fault::Isolate) && lost_here > 0;
    let mut node_loss = None;
    // A node's loss is held until its tasks run elsewhere (within bounds),
    // so that every such fault gives a measurement.
    let hold_until = |loss: &Option<Result<Duration, String>>| {
        let held = injected_at.elapsed();
        if measure_loss && loss.is_none() {
            held < MAX_LOSS_HOLD
        } else {
            held < step.hold
        }
    };
    while hold_until(&node_loss) {
        std::thread::sleep(Duration::from_millis(500));
        if measure_loss
            && node_loss.is_none()
            && let Some(view) = ask(rt, observer)
        {
            let elsewhere = view.running(WEB).iter().filter(|h| **h != node).count();
            if elsewhere >= WEB_REPLICAS {
                node_loss = Some(Ok(injected_at.elapsed()));
                println!(
                    "[chaos] {:>6.1} s  {WEB}'s tasks of {node} run elsewhere after {:.1} s",
                    micros(start) as f64 / 1e6,
                    injected_at.elapsed().as_secs_f64()
                );
            }
        }
    }
    if measure_loss && node_loss.is_none() {
        node_loss = Some(Err(format!(
            "{} on {node}: {lost_here} task(s) of {WEB} not running elsewhere within {:.1} s",
            step.fault,
            MAX_LOSS_HOLD.as_secs_f64()
        )));
    }
    faults::recover(lab, &injected)?;
    let recovered = micros(start);
    println!(
        "[chaos] {:>6.1} s  recovered {node}",
        recovered as f64 / 1e6
    );
    let whole = wait_whole(rt, observer)?;
    println!(
        "[chaos] {:>6.1} s  cluster whole again ({:.1} s after the recovery)",
        micros(start) as f64 / 1e6,
        whole.as_secs_f64()
    );
    Ok(Done {
        window: Window {
            fault: step.fault,
            node,
            from,
            to: micros(start) + GRACE.as_micros() as u64,
            backends,
        },
        node_loss,
    })
}

/// Waits until every node is Ready, every manager reachable with a
/// leader, and every task of the load's services runs.
fn wait_whole(
    rt: &tokio::runtime::Runtime,
    observer: &mut [crate::control::Manager],
) -> Result<Duration> {
    let started = Instant::now();
    let mut last = String::from("no manager answered");
    while started.elapsed() < HEAL_TIMEOUT {
        if let Some(view) = ask(rt, observer) {
            let web = view.running(WEB).len();
            let tb = view.running(TOOLBOX).len();
            if view.ready.len() == NODES
                && view.leader.is_some()
                && view.reachable_managers.len() == MANAGERS
                && web == WEB_REPLICAS
                && tb == 1
            {
                return Ok(started.elapsed());
            }
            last = format!(
                "ready {:?}, leader {:?}, reachable managers {:?}, {WEB} {web}/{WEB_REPLICAS}, {TOOLBOX} {tb}/1",
                view.ready, view.leader, view.reachable_managers
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    anyhow::bail!("the cluster is not whole {HEAL_TIMEOUT:?} after the recovery: {last}")
}

/// Scans the store's allocations and the containers' addresses.
fn scan(
    rt: &tokio::runtime::Runtime,
    observer: &mut [crate::control::Manager],
    when: String,
) -> Scan {
    let store = ask(rt, observer)
        .map(|v| addresses::in_store(&v))
        .unwrap_or_default();
    let containers = addresses::in_containers();
    Scan {
        when,
        allocations: store.len(),
        held: containers.len(),
        store: addresses::duplicates(&store),
        containers: addresses::duplicates(&containers),
    }
}
