//! How many tasks a node can hold, from what its agent describes. The agent
//! refuses tasks past this number and the manager's scheduler places no
//! more than this (nor more than its own `--max-tasks-per-node`), so both
//! sides use this one function.
//!
//! Swarm has no such number: a `--replicas` far beyond what the hosts hold
//! makes agents start containers until the host runs out of process ids
//! and the engine dies. Every task costs, whatever the service asks for:
//! a container shim (about ten threads), the task's own processes, and the
//! shim's and engine's memory for it.

use crate::pb::NodeDescription;

/// Memory each task is counted at, at least: a container's shim and the
/// engine's bookkeeping take a few MiB before the task's own process runs,
/// and a node should keep room for the task's own use. 32 MiB holds 32
/// tasks on a 1 GiB host and 768 on the lab machine's 24 GiB.
pub const TASK_MEMORY_FLOOR: i64 = 32 << 20;

/// Process ids each task is counted at: its shim's threads (about ten) and
/// room for its own processes and threads. With Linux's default pid_max of
/// 32768, 1024 tasks: about a third of the pid space for shims, so the
/// tasks' own processes, the engine and the host keep the rest.
pub const PIDS_PER_TASK: u64 = 32;

/// The most tasks `description`'s node holds: its operator's cap when one
/// is set, else the smaller of memory / [`TASK_MEMORY_FLOOR`] and pids /
/// [`PIDS_PER_TASK`] (at least 1); None when the node told neither.
pub fn tasks_per_node(description: &NodeDescription) -> Option<u64> {
    if description.max_tasks > 0 {
        return Some(description.max_tasks);
    }
    let memory = description
        .resources
        .map(|r| r.memory_bytes)
        .filter(|m| *m > 0)
        .map(|m| (m / TASK_MEMORY_FLOOR).max(1) as u64);
    let pids = (description.pids_max > 0).then(|| (description.pids_max / PIDS_PER_TASK).max(1));
    match (memory, pids) {
        (Some(m), Some(p)) => Some(m.min(p)),
        (m, p) => m.or(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::Resources;

    fn node(memory_bytes: i64, pids_max: u64, max_tasks: u64) -> NodeDescription {
        NodeDescription {
            resources: Some(Resources {
                pids: Default::default(),
                nano_cpus: 2_000_000_000,
                memory_bytes,
            }),
            pids_max,
            max_tasks,
            ..Default::default()
        }
    }

    #[test]
    fn the_smaller_of_memory_and_pids_bounds_a_node() {
        // 1 GiB: 32 tasks by memory; 32768 pids: 1024 by pids.
        assert_eq!(tasks_per_node(&node(1 << 30, 32768, 0)), Some(32));
        // 24 GiB (the lab machine) with the default pid_max: 768 by memory.
        assert_eq!(tasks_per_node(&node(24 << 30, 32768, 0)), Some(768));
        // Plenty of memory, a small pid space: pids decide.
        assert_eq!(tasks_per_node(&node(256 << 30, 4096, 0)), Some(128));
        // A tiny host still takes one task.
        assert_eq!(tasks_per_node(&node(1 << 20, 10, 0)), Some(1));
    }

    #[test]
    fn the_operators_cap_wins_and_an_undescribed_node_has_no_number() {
        assert_eq!(tasks_per_node(&node(1 << 30, 32768, 3)), Some(3));
        assert_eq!(tasks_per_node(&node(1 << 30, 32768, 5000)), Some(5000));
        assert_eq!(tasks_per_node(&node(0, 0, 0)), None);
        assert_eq!(tasks_per_node(&node(0, 32768, 0)), Some(1024));
        assert_eq!(tasks_per_node(&NodeDescription::default()), None);
    }
}
