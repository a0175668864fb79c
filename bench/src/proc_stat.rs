//! CPU times of a process or thread from its `/proc/.../stat` line: the
//! one parser the benches share (the scale bench's leader, the DNS bench's
//! servers and dnsperf).

use anyhow::{Context, Result};

/// Clock ticks per second of /proc's CPU times (USER_HZ: 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Clock ticks as seconds.
pub fn seconds(ticks: u64) -> f64 {
    ticks as f64 / TICKS_PER_SECOND
}

/// utime, stime, cutime and cstime (fields 14 to 17), in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    pub utime: u64,
    pub stime: u64,
    /// Of the children waited for.
    pub cutime: u64,
    pub cstime: u64,
}

impl CpuTimes {
    /// User + system time of the process (or thread) itself.
    pub fn own(&self) -> u64 {
        self.utime + self.stime
    }
}

/// The CPU times in the stat file at `path` (`/proc/PID/stat`,
/// `/proc/self/task/TID/stat`).
pub fn read(path: &str) -> Result<CpuTimes> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse(&stat).with_context(|| format!("{path}: not a stat line: {stat:?}"))
}

/// Fields count from after the command name's last ')': the name may hold
/// spaces and parentheses.
fn parse(stat: &str) -> Option<CpuTimes> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse().ok();
    Some(CpuTimes {
        utime: field(11)?,
        stime: field(12)?,
        cutime: field(13)?,
        cstime: field(14)?,
    })
}

/// The whole machine's CPU time from `/proc/stat`'s `cpu` line, in clock
/// ticks summed over its CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineTimes {
    /// Idle and waiting for I/O.
    pub idle: u64,
    /// Time the hypervisor ran something else while this VM's CPUs had work.
    pub steal: u64,
    pub total: u64,
}

impl MachineTimes {
    /// The shares of `later - self` that were idle and stolen.
    pub fn shares_until(&self, later: &MachineTimes) -> Shares {
        let total = later.total.saturating_sub(self.total).max(1) as f64;
        Shares {
            idle: later.idle.saturating_sub(self.idle) as f64 / total,
            steal: later.steal.saturating_sub(self.steal) as f64 / total,
        }
    }
}

/// Shares of the machine's CPU time over an interval (0 to 1).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Shares {
    pub idle: f64,
    pub steal: f64,
}

/// The machine's CPU times now.
pub fn machine() -> Result<MachineTimes> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_machine(&stat).with_context(|| "/proc/stat: no cpu line".to_string())
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`
/// (guest time is counted in user already).
fn parse_machine(stat: &str) -> Option<MachineTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(MachineTimes {
        idle: field(3) + field(4),
        steal: field(7),
        total: (0..8).map(field).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_shares_count_idle_and_stolen_time() {
        let before = parse_machine("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        let after = parse_machine("cpu  300 0 100 900 50 0 0 150 0 0\n").unwrap();
        assert_eq!(before.total, 1000);
        let shares = before.shares_until(&after);
        assert!((shares.idle - 0.2).abs() < 1e-9, "{shares:?}");
        assert!((shares.steal - 0.3).abs() < 1e-9, "{shares:?}");
        assert!(parse_machine("intr 1 2 3\n").is_none());
    }

    #[test]
    fn reads_stat_lines_whatever_the_command_name() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 9 4 20 0 1 0";
        let t = parse(line).expect("parsed");
        assert_eq!((t.utime, t.stime, t.cutime, t.cstime), (250, 75, 9, 4));
        assert!(parse("42 (cut short) S 1").is_none());
    }
}
