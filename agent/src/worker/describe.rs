//! What the agent tells the manager about its node: hostname, platform,
//! CPUs and memory (which the scheduler uses), engine version.

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

pub fn describe(hostname: &str, engine_version: &str) -> NodeDescription {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as i64;
    NodeDescription {
        hostname: hostname.to_owned(),
        platform: Some(platform()),
        resources: Some(Resources {
            nano_cpus: cpus * 1_000_000_000,
            memory_bytes: memory_bytes(),
        }),
        engine_version: engine_version.to_owned(),
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
        let d = super::describe("n1", "20.10.24");
        let r = d.resources.unwrap();
        assert!(r.nano_cpus >= 1_000_000_000 && r.memory_bytes > 0);
        assert_eq!(d.platform.unwrap().os, "linux");
    }
}
