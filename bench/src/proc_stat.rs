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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_lines_whatever_the_command_name() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 9 4 20 0 1 0";
        let t = parse(line).expect("parsed");
        assert_eq!((t.utime, t.stime, t.cutime, t.cstime), (250, 75, 9, 4));
        assert!(parse("42 (cut short) S 1").is_none());
    }
}
