//! A process's CPU time and memory, read from /proc.

use std::time::Duration;

use anyhow::{Context, Result};

/// CPU time (user + system) process `pid` used so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    Ok(crate::proc_stat::read(&format!("/proc/{pid}/stat"))?.own())
}

pub use crate::proc_stat::seconds;

/// A field of /proc/PID/status in kB, as MiB.
fn status_mib(pid: u32, name: &str) -> Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .with_context(|| format!("{path}: no {name}"))
}

pub struct Idle {
    pub cpu_percent: f64,
    pub rss_mib: f64,
    /// The most resident memory the process ever had (VmHWM).
    pub hwm_mib: f64,
}

/// Process `pid`'s share of one core over `period`, and its memory after.
pub async fn idle(pid: u32, period: Duration) -> Result<Idle> {
    let before = cpu_ticks(pid)?;
    let started = std::time::Instant::now();
    tokio::time::sleep(period).await;
    let used = seconds(cpu_ticks(pid)? - before);
    Ok(Idle {
        cpu_percent: 100.0 * used / started.elapsed().as_secs_f64(),
        rss_mib: status_mib(pid, "VmRSS")?,
        hwm_mib: status_mib(pid, "VmHWM")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_ticks(pid).expect("stat") > 0);
        assert!(status_mib(pid, "VmRSS").expect("status") > 0.1);
    }
}
