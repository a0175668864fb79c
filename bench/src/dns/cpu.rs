//! Who pays for a DNS throughput run: the CPU time (user + system, from
//! /proc) of the server under test, of dnsperf, and the machine's softirq
//! and idle time, read before and after each run. With both on one 2-core
//! machine, queries/s alone says which of them ran out first only when
//! these say so too: a server's own CPU per query is what it can do.

use anyhow::{Context, Result};

use crate::proc_stat;

/// Whose CPU time is the server's.
#[derive(Clone, Copy)]
pub enum Server {
    /// Shoal's receive loops: this process's threads named `dns-N`.
    OwnThreads,
    /// A process of its own (dnsmasq).
    Process(u32),
}

/// The counters at one instant.
#[derive(Clone, Copy)]
pub struct Snapshot {
    server: u64,
    /// Children this process waited for (dnsperf, once its run ended).
    children: u64,
    softirq: u64,
    idle: u64,
    /// Softirq on the server's own CPU, when it is pinned to one.
    server_cpu_softirq: u64,
}

/// What one run cost, in seconds of CPU over `wall` seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub server: f64,
    pub dnsperf: f64,
    pub softirq: f64,
    pub idle: f64,
    /// Softirq time on the server's CPU (pinned runs; 0 otherwise): there
    /// the kernel delivers the server's answers to dnsperf's socket, in the
    /// server's own system call, but counts it as softirq, not as the
    /// server's time.
    pub server_cpu_softirq: f64,
}

/// The counters now; `server_cpu`: the CPU the server is pinned to.
pub fn snapshot(server: Server, server_cpu: Option<&str>) -> Result<Snapshot> {
    let server = match server {
        Server::OwnThreads => own_threads("dns-")?,
        Server::Process(pid) => proc_stat::read(&format!("/proc/{pid}/stat"))?.own(),
    };
    let me = proc_stat::read("/proc/self/stat")?;
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let (softirq, idle) =
        parse_system(&stat, "cpu").with_context(|| format!("/proc/stat: no cpu line: {stat:?}"))?;
    let server_cpu_softirq = match server_cpu {
        Some(n) => {
            let line = format!("cpu{n}");
            parse_system(&stat, &line)
                .with_context(|| format!("/proc/stat: no {line} line"))?
                .0
        }
        None => 0,
    };
    Ok(Snapshot {
        server,
        children: me.cutime + me.cstime,
        softirq,
        idle,
        server_cpu_softirq,
    })
}

impl Snapshot {
    /// The CPU used since `self`, read from `later`.
    pub fn until(&self, later: &Snapshot) -> Usage {
        let s = |a: u64, b: u64| proc_stat::seconds(b.saturating_sub(a));
        Usage {
            server: s(self.server, later.server),
            dnsperf: s(self.children, later.children),
            softirq: s(self.softirq, later.softirq),
            idle: s(self.idle, later.idle),
            server_cpu_softirq: s(self.server_cpu_softirq, later.server_cpu_softirq),
        }
    }
}

/// utime + stime of this process's threads whose name starts with `prefix`.
fn own_threads(prefix: &str) -> Result<u64> {
    let mut ticks = 0;
    for id in own_thread_ids(prefix)? {
        ticks += proc_stat::read(&format!("/proc/self/task/{id}/stat"))?.own();
    }
    Ok(ticks)
}

/// Softirq and idle (with iowait) ticks of `/proc/stat`'s line `cpu`
/// (all CPUs) or `cpuN` (one).
fn parse_system(stat: &str, cpu: &str) -> Option<(u64, u64)> {
    let mut fields = stat
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut f| (f.next() == Some(cpu)).then_some(f))?;
    // cpu user nice system idle iowait irq softirq ...
    let f: Vec<u64> = fields
        .by_ref()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    Some((*f.get(6)?, f.get(3)? + f.get(4)?))
}

/// The TIDs of this process's threads named `prefix*` (to pin them).
pub fn own_thread_ids(prefix: &str) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").context("reading /proc/self/task")? {
        let dir = task?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if let (true, Some(id)) = (
            comm.starts_with(prefix),
            dir.file_name().and_then(|n| n.to_str()?.parse().ok()),
        ) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn reads_softirq_and_idle_from_proc_stat() {
        let stat = "cpu  10 1 20 300 5 0 7 0 0 0\ncpu0 5 0 10 150 2 0 3 0 0 0\n";
        assert_eq!(parse_system(stat, "cpu"), Some((7, 305)));
        assert_eq!(parse_system(stat, "cpu0"), Some((3, 152)));
        assert_eq!(parse_system(stat, "cpu1"), None);
        assert_eq!(parse_system("intr 1 2\n", "cpu"), None);
    }

    #[test]
    fn counts_this_process_and_its_named_threads() {
        let worker = std::thread::Builder::new()
            .name("dns-test".into())
            .spawn(|| {
                let started = Instant::now();
                let mut x = 0u64;
                while started.elapsed().as_millis() < 300 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
                }
                x
            })
            .expect("thread");
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(own_thread_ids("dns-test").expect("ids").len(), 1);
        let _ = worker.join();
        let before = Snapshot {
            server: 0,
            children: 0,
            softirq: 0,
            idle: 0,
            server_cpu_softirq: 0,
        };
        let now = snapshot(Server::Process(std::process::id()), Some("0")).expect("snapshot");
        assert!(before.until(&now).server > 0.1, "300 ms of work counted");
    }
}
