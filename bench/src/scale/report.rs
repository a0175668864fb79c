//! The scale run beside the published anchors and this project's goals.

use std::time::Duration;

/// swarmkit's community test (Swarm2k, 2016): 2,384 nodes, 3 managers,
/// ~95,000 tasks.
const SWARM2K_NODES: f64 = 2_384.0;
const SWARM2K_TASKS: f64 = 95_000.0;
/// Nomad's 2 million container challenge (C2M, 2020): 2,000,000 containers
/// on 6,100 hosts in 22 min 14 s (~1,500 containers/s), 3 schedulers.
const C2M_CONTAINERS: f64 = 2_000_000.0;
const C2M_HOSTS: f64 = 6_100.0;
const C2M_SECONDS: f64 = 22.0 * 60.0 + 14.0;
/// This project's goals on its 2-core machine.
const GOAL_CONVERGED: Duration = Duration::from_secs(60);
const GOAL_IDLE_PERCENT: f64 = 5.0;

pub struct Summary {
    pub nodes: usize,
    pub tasks: u64,
    pub joined: Duration,
    pub converged: Duration,
    pub idle_cpu_percent: f64,
    /// Tasks updated rolling, and how long it took.
    pub rolling: Option<(u64, Duration)>,
}

pub fn print(s: &Summary) {
    let rate = s.tasks as f64 / s.converged.as_secs_f64();
    println!("--- anchors (published, other hardware: scale, not a same-run peer) ---");
    println!(
        "swarmkit Swarm2k: {SWARM2K_NODES:.0} nodes / {SWARM2K_TASKS:.0} tasks; this run: nodes {:.2}x, tasks {:.2}x",
        s.nodes as f64 / SWARM2K_NODES,
        s.tasks as f64 / SWARM2K_TASKS
    );
    println!(
        "Nomad C2M: {C2M_CONTAINERS:.0} containers on {C2M_HOSTS:.0} hosts in {C2M_SECONDS:.0} s ({:.0}/s); this run: {rate:.0} tasks/s to running, ratio {:.2}",
        C2M_CONTAINERS / C2M_SECONDS,
        rate / (C2M_CONTAINERS / C2M_SECONDS)
    );
    println!("--- goals on this 2-core machine ---");
    println!(
        "converged in {:.1} s, goal < {} s: ratio goal/measured {:.2} ({})",
        s.converged.as_secs_f64(),
        GOAL_CONVERGED.as_secs(),
        GOAL_CONVERGED.as_secs_f64() / s.converged.as_secs_f64(),
        verdict(s.converged < GOAL_CONVERGED)
    );
    println!(
        "idle leader {:.2}% of a core, goal < {GOAL_IDLE_PERCENT}%: ratio goal/measured {:.2} ({})",
        s.idle_cpu_percent,
        GOAL_IDLE_PERCENT / s.idle_cpu_percent.max(0.01),
        verdict(s.idle_cpu_percent < GOAL_IDLE_PERCENT)
    );
    println!("join: {} nodes in {:.1} s", s.nodes, s.joined.as_secs_f64());
    if let Some((tasks, took)) = s.rolling {
        println!(
            "rolling update: {tasks} tasks in {:.1} s ({:.0} tasks/s)",
            took.as_secs_f64(),
            tasks as f64 / took.as_secs_f64()
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}
