//! Jobs on real agents and containers: a replicated job of 5 completions,
//! at most 2 at once, ends with 5 Complete tasks and never had more than
//! 2 containers running at a time (counted from Docker itself); a global
//! job completes once on every lab node. `service create` waits for each
//! to complete, as Docker's does.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Result, ensure};
use shoal_tests::{bin, containers_of, lab_cluster::LabCluster};

/// `shoal ARGS` as a person runs it: not detached (the lab's own runner
/// detaches), so `service create` waits and shows progress.
fn shoal_waiting(cluster: &LabCluster, args: &[&str]) -> Result<String> {
    let host = cluster.lab_host()?;
    let out = std::process::Command::new(bin("shoal")?)
        .args(["--host", &host])
        .args(args)
        .env_remove("SHOAL_DETACH")
        .output()?;
    ensure!(
        out.status.success(),
        "shoal {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Samples how many containers of `service` Docker runs at once, every
/// 100 ms, until stopped; keeps the highest count seen.
struct Sampler {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    handle: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(service: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(AtomicUsize::new(0));
        let (s, m, service) = (stop.clone(), most.clone(), service.to_owned());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(running) = containers_of(&service) {
                    m.fetch_max(running.len(), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { stop, most, handle }
    }

    fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
        self.most.load(Ordering::Relaxed)
    }
}

fn text(value: &serde_json::Value) -> &str {
    value.as_str().unwrap_or("")
}

#[test]
fn a_replicated_job_completes_five_tasks_two_at_a_time_and_a_global_job_runs_on_every_node()
-> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let nodes = cluster.json_rows(&["node", "ls"])?.len();
    ensure!(nodes >= 2, "the lab has {nodes} nodes");

    let sampler = Sampler::start("batch");
    // Not detached: returns once the job has completed.
    let out = shoal_waiting(
        &cluster,
        &[
            "service",
            "create",
            "--name",
            "batch",
            "--mode",
            "replicated-job",
            "--replicas",
            "5",
            "--max-concurrent",
            "2",
            "shoal/toolbox",
            "sleep",
            "1500",
        ],
    )?;
    let most = sampler.finish();
    ensure!(out.contains("job complete"), "create did not wait: {out}");
    ensure!(
        out.contains("job progress: 5 out of 5 complete"),
        "no job progress shown: {out}"
    );
    ensure!(
        most == 2,
        "at most 2 containers were to run at once, and 2 did: {most} seen"
    );

    let tasks = cluster.json_rows(&["service", "ps", "batch"])?;
    ensure!(tasks.len() == 5, "5 tasks, one per completion: {tasks:?}");
    for task in &tasks {
        ensure!(
            text(&task["CurrentState"]).starts_with("Complete")
                && text(&task["DesiredState"]) == "Complete",
            "{task}"
        );
    }
    let names: BTreeSet<&str> = tasks.iter().map(|t| text(&t["Name"])).collect();
    ensure!(
        names == BTreeSet::from(["batch.1", "batch.2", "batch.3", "batch.4", "batch.5"]),
        "{names:?}"
    );
    let listed = cluster.json_rows(&["service", "ls"])?;
    let row = listed
        .iter()
        .find(|r| text(&r["Name"]) == "batch")
        .cloned()
        .unwrap_or_default();
    ensure!(
        text(&row["Mode"]) == "replicated job" && text(&row["Replicas"]) == "0/2 (5/5 completed)",
        "{row}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&cluster.shoal(&["service", "inspect", "batch"])?)?;
    let service = &inspect[0];
    ensure!(
        service["Spec"]["Mode"]["ReplicatedJob"]
            == serde_json::json!({ "MaxConcurrent": 2, "TotalCompletions": 5 }),
        "{}",
        service["Spec"]["Mode"]
    );
    ensure!(
        service["JobStatus"]["JobIteration"]["Index"] == 0,
        "{}",
        service["JobStatus"]
    );
    ensure!(
        containers_of("batch")?.is_empty(),
        "no container of the job still runs"
    );

    let out = shoal_waiting(
        &cluster,
        &[
            "service",
            "create",
            "--name",
            "setup",
            "--mode",
            "global-job",
            "shoal/toolbox",
            "sleep",
            "300",
        ],
    )?;
    ensure!(out.contains("job complete"), "create did not wait: {out}");
    let tasks = cluster.json_rows(&["service", "ps", "setup"])?;
    let on: BTreeSet<&str> = tasks.iter().map(|t| text(&t["Node"])).collect();
    ensure!(
        tasks.len() == nodes && on.len() == nodes,
        "one task on each of the {nodes} nodes: {tasks:?}"
    );
    ensure!(
        tasks
            .iter()
            .all(|t| text(&t["CurrentState"]).starts_with("Complete")),
        "{tasks:?}"
    );
    let listed = cluster.json_rows(&["service", "ls"])?;
    let row = listed
        .iter()
        .find(|r| text(&r["Name"]) == "setup")
        .cloned()
        .unwrap_or_default();
    let expected = format!("0/0 ({nodes}/{nodes} completed)");
    ensure!(
        text(&row["Mode"]) == "global job" && text(&row["Replicas"]) == expected,
        "{row}"
    );
    Ok(())
}
