//! Replicated writes in alternating rounds: both clusters stay up for the
//! whole run and take turns (etcd then Shoal in odd rounds, Shoal then etcd
//! in even ones), so a build or a burst of another process on this shared
//! machine weighs on both rather than on whichever ran second. Each phase
//! records its writes/s, p50, p99, the load average at its start, and the
//! CPU its cluster's three processes spent per write (utime + stime from
//! `/proc/PID/stat` before and after). After its last write a cluster is
//! given time to settle (until its processes are idle) before the other
//! starts: work a system defers past its answers (state files written in
//! the background, compaction) is counted in its own CPU per write and
//! does not slow the other system's phase.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use shoal_api::pb::{Config, ConfigSpec, Meta, StoreBatch, membership_client::MembershipClient};
use shoal_manager::store::Batch;
use tonic::transport::Channel;

use super::{Load, etcd, load};
use crate::proc_stat;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Etcd,
    Shoal,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Etcd => "etcd 3.4",
            System::Shoal => "shoal",
        })
    }
}

/// The order of round `round` (counted from 0): who writes first.
pub fn order(round: usize) -> [System; 2] {
    if round.is_multiple_of(2) {
        [System::Etcd, System::Shoal]
    } else {
        [System::Shoal, System::Etcd]
    }
}

/// One system's phase of one round.
pub struct Phase {
    pub load: Load,
    /// The 1-minute load average when the phase started.
    pub loadavg: f64,
    /// The cluster's processes' CPU time over the phase and its settling,
    /// per write.
    pub cpu_per_write_us: f64,
    /// How long the cluster stayed busy after its last write was answered.
    pub settled_after: Duration,
    /// The machine's idle and stolen shares while the writes ran: idle
    /// CPU says the system waited on something else than CPU (a round
    /// trip, a disk); stolen time (the hypervisor running other guests)
    /// slows a phase for reasons outside the machine, and explains most of
    /// the spread between runs on a shared VM.
    pub machine: proc_stat::Shares,
}

/// A load: `clients` concurrent writers sharing `conns` connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub clients: usize,
    pub conns: usize,
}

impl Shape {
    /// The load of the plaintext figures in `PLAINTEXT`.
    pub const PLAINTEXT: Shape = Shape {
        clients: 64,
        conns: 1,
    };

    /// `CLIENTSxCONNS`, e.g. `1000x100`: at least one of each, and no more
    /// connections than writers.
    pub fn parse(text: &str) -> Result<Shape, String> {
        let (clients, conns) = text
            .split_once('x')
            .ok_or_else(|| format!("`{text}`: expected CLIENTSxCONNS, e.g. 1000x100"))?;
        let number = |what: &str, n: &str| {
            n.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("`{text}`: {what} must be a whole number above 0"))
        };
        let shape = Shape {
            clients: number("clients", clients)?,
            conns: number("connections", conns)?,
        };
        if shape.conns > shape.clients {
            return Err(format!("`{text}`: more connections than clients"));
        }
        Ok(shape)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} writers on {} connection{}",
            self.clients,
            self.conns,
            if self.conns == 1 { "" } else { "s" }
        )
    }
}

/// What the rounds write to, and with what.
pub struct Targets {
    /// Connections to etcd's leader (as many as to Shoal's); write `i`
    /// goes over connection `i % len`.
    pub etcd: Vec<Channel>,
    pub etcd_pids: Vec<u32>,
    pub shoal: Vec<Channel>,
    pub shoal_pids: Vec<u32>,
    pub writes: usize,
    pub clients: usize,
    pub value: Vec<u8>,
    /// Names this load's keys apart from every other load's of the run
    /// (a Shoal create of a name that exists is refused).
    pub load_index: usize,
}

/// Runs `rounds` alternating rounds; returns (etcd, shoal) per round.
pub async fn run(targets: &Targets, rounds: usize) -> Result<Vec<(Phase, Phase)>> {
    let mut results = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut etcd_phase = None;
        let mut shoal_phase = None;
        for system in order(round) {
            let phase = phase(targets, system, round).await?;
            print_phase(round, system, &phase);
            match system {
                System::Etcd => etcd_phase = Some(phase),
                System::Shoal => shoal_phase = Some(phase),
            }
        }
        if let (Some(e), Some(s)) = (etcd_phase, shoal_phase) {
            println!(
                "round {}: shoal/etcd writes/s {:.2}, p99 {:.2}",
                round + 1,
                s.load.per_second / e.load.per_second,
                s.load.p99.as_secs_f64() / e.load.p99.as_secs_f64()
            );
            results.push((e, s));
        }
    }
    Ok(results)
}

async fn phase(targets: &Targets, system: System, round: usize) -> Result<Phase> {
    let pids = match system {
        System::Etcd => &targets.etcd_pids,
        System::Shoal => &targets.shoal_pids,
    };
    let loadavg = loadavg();
    let cpu_before = cpu_ticks(pids)?;
    let machine_before = proc_stat::machine()?;
    let load = match system {
        System::Etcd => etcd_writes(targets, round).await?,
        System::Shoal => shoal_writes(targets, round).await?,
    };
    let machine = machine_before.shares_until(&proc_stat::machine()?);
    let settled_after = settle(pids).await?;
    let cpu = proc_stat::seconds(cpu_ticks(pids)?.saturating_sub(cpu_before));
    Ok(Phase {
        load,
        loadavg,
        cpu_per_write_us: cpu * 1e6 / targets.writes as f64,
        settled_after,
        machine,
    })
}

/// A cluster counts as idle once its processes spend at most this much CPU
/// (clock ticks, summed) over [`IDLE_WINDOW`]: heartbeats and timers only.
const IDLE_TICKS: u64 = 3;
const IDLE_WINDOW: Duration = Duration::from_millis(500);
/// Settling gives up after this long (the phase is then reported as such).
const SETTLE_AT_MOST: Duration = Duration::from_secs(20);

/// Waits until `pids` are idle; returns how long that took, less the
/// idle window that showed it.
async fn settle(pids: &[u32]) -> Result<Duration> {
    let started = Instant::now();
    let mut before = cpu_ticks(pids)?;
    loop {
        tokio::time::sleep(IDLE_WINDOW).await;
        let now = cpu_ticks(pids)?;
        if now.saturating_sub(before) <= IDLE_TICKS || started.elapsed() >= SETTLE_AT_MOST {
            return Ok(started.elapsed().saturating_sub(IDLE_WINDOW));
        }
        before = now;
    }
}

async fn etcd_writes(targets: &Targets, round: usize) -> Result<Load> {
    let tag = targets.load_index;
    let channels = targets.etcd.clone();
    let value = targets.value.clone();
    load(targets.writes, targets.clients, move |i| {
        let mut kv = etcd::KvClient::new(channels[i % channels.len()].clone());
        let value = value.clone();
        async move {
            kv.put(etcd::PutRequest {
                key: format!("bench/{tag}/{round:02}/{i:08}").into_bytes(),
                value,
            })
            .await?;
            Ok(())
        }
    })
    .await
}

async fn shoal_writes(targets: &Targets, round: usize) -> Result<Load> {
    let tag = targets.load_index;
    let channels = targets.shoal.clone();
    let value = Arc::new(targets.value.clone());
    load(targets.writes, targets.clients, move |i| {
        let mut membership = MembershipClient::new(channels[i % channels.len()].clone());
        let name = format!("bench{tag}-{round:02}-{i:08}");
        let mut batch = Batch::default();
        batch.put_config(Config {
            meta: Some(Meta {
                id: name.clone(),
                ..Default::default()
            }),
            spec: Some(ConfigSpec {
                name,
                data: value.as_ref().clone(),
                ..Default::default()
            }),
        });
        let batch: StoreBatch = batch.into_proto();
        async move {
            membership.propose(batch).await?;
            Ok(())
        }
    })
    .await
}

fn print_phase(round: usize, system: System, phase: &Phase) {
    println!(
        "round {} {:<8} {:>8.0} writes/s   p50 {:>7.2} ms   p99 {:>7.2} ms   CPU {:>6.1} µs/write   busy {:.1} s after   load {:.1}   idle {:>2.0}%   stolen {:>2.0}%",
        round + 1,
        system,
        phase.load.per_second,
        phase.load.p50.as_secs_f64() * 1e3,
        phase.load.p99.as_secs_f64() * 1e3,
        phase.cpu_per_write_us,
        phase.settled_after.as_secs_f64(),
        phase.loadavg,
        phase.machine.idle * 100.0,
        phase.machine.steal * 100.0
    );
}

/// The spread of Shoal's ratios to etcd over the rounds.
pub struct Spread {
    pub writes: [f64; 3],
    pub p99: [f64; 3],
}

/// (min, mean, max) of Shoal/etcd writes/s and p99 over `rounds`.
pub fn spread(rounds: &[(Phase, Phase)]) -> Option<Spread> {
    let stats = |ratio: &dyn Fn(&Phase, &Phase) -> f64| {
        let ratios: Vec<f64> = rounds.iter().map(|(e, s)| ratio(e, s)).collect();
        let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        [min, ratios.iter().sum::<f64>() / ratios.len() as f64, max]
    };
    (!rounds.is_empty()).then(|| Spread {
        writes: stats(&|e, s| s.load.per_second / e.load.per_second),
        p99: stats(&|e, s| s.load.p99.as_secs_f64() / e.load.p99.as_secs_f64()),
    })
}

/// Summed utime + stime of `pids`, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> Result<u64> {
    let mut ticks = 0;
    for pid in pids {
        ticks += proc_stat::read(&format!("/proc/{pid}/stat"))?.own();
    }
    Ok(ticks)
}

/// The 1-minute load average (0 when /proc/loadavg is unreadable: the
/// figure is only printed beside the measurement).
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(per_second: f64, p99_ms: u64) -> Phase {
        Phase {
            load: Load {
                per_second,
                p50: Duration::from_millis(1),
                p99: Duration::from_millis(p99_ms),
            },
            loadavg: 0.0,
            cpu_per_write_us: 0.0,
            settled_after: Duration::ZERO,
            machine: Default::default(),
        }
    }

    #[test]
    fn a_load_is_clients_x_connections() {
        assert_eq!(
            Shape::parse("1000x100"),
            Ok(Shape {
                clients: 1000,
                conns: 100
            })
        );
        assert_eq!(Shape::parse("64x1"), Ok(Shape::PLAINTEXT));
        for bad in ["64", "0x1", "64x0", "x1", "64x", "1x2", "ax1", "-1x1"] {
            assert!(Shape::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Shape::PLAINTEXT.to_string(), "64 writers on 1 connection");
    }

    #[test]
    fn rounds_alternate_who_writes_first() {
        assert_eq!(order(0), [System::Etcd, System::Shoal]);
        assert_eq!(order(1), [System::Shoal, System::Etcd]);
        assert_eq!(order(2), [System::Etcd, System::Shoal]);
    }

    #[test]
    fn the_spread_is_min_mean_max_of_the_ratios() {
        let rounds = vec![
            (phase(1000.0, 40), phase(2000.0, 20)),
            (phase(1000.0, 40), phase(3000.0, 40)),
        ];
        let spread = spread(&rounds).expect("two rounds");
        assert_eq!(spread.writes, [2.0, 2.5, 3.0]);
        assert_eq!(spread.p99, [0.5, 0.75, 1.0]);
        assert!(super::spread(&[]).is_none());
    }
}
