//! What the agent tells the manager about its node: hostname, platform,
//! CPUs, memory and process ids (which the scheduler uses), the operator's
//! cap on its tasks, engine version.

use shoal_api::pb::{NodeDescription, Platform, Resources};

/// Total memory from /proc/meminfo, in bytes.
fn memory_bytes() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The host's process id space: the smaller of kernel.pid_max and
/// kernel.threads-max (threads take ids too); 0 when unreadable.
fn pids_max() -> u64 {
    ["pid_max", "threads-max"]
        .iter()
        .filter_map(|name| {
            std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .min()
        .unwrap_or(0)
}

/// `max_tasks`: the operator's cap (`--max-tasks`), 0 for none.
pub fn describe(hostname: &str, engine_version: &str, max_tasks: u64) -> NodeDescription {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as i64;
    NodeDescription {
        hostname: hostname.to_owned(),
        platform: Some(platform()),
        resources: Some(Resources {
            nano_cpus: cpus * 1_000_000_000,
            memory_bytes: memory_bytes(),
            pids: 0,
        }),
        engine_version: engine_version.to_owned(),
        pids_max: pids_max(),
        max_tasks,
        generic_resources: Vec::new(),
    }
}

/// This machine's OS and architecture (`{{.Node.Platform.OS}}` …).
pub fn platform() -> Platform {
    Platform {
        os: std::env::consts::OS.to_owned(),
        architecture: std::env::consts::ARCH.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_this_machine() {
        let d = super::describe("n1", "20.10.24", 0);
        assert!(d.pids_max > 0);
        assert!(shoal_api::capacity::tasks_per_node(&d).is_some_and(|n| n >= 1));
        assert_eq!(
            shoal_api::capacity::tasks_per_node(&super::describe("n1", "", 3)),
            Some(3)
        );
        let r = d.resources.unwrap();
        assert!(r.nano_cpus >= 1_000_000_000 && r.memory_bytes > 0);
        assert_eq!(d.platform.unwrap().os, "linux");
    }
}
