//! `cargo xtask bench NAME [-- ARGS]`: builds the benchmarks and what they
//! drive in release mode, then runs one. Each bench compares against a named
//! peer in the same run and prints ratios; record results in
//! bench/RESULTS.md with the command that produced them.

use anyhow::Result;
use clap::{Args, ValueEnum};

use crate::sh;

#[derive(Clone, Copy, ValueEnum)]
pub enum Name {
    /// Scheduler placements/s; replicated writes/s and p99 vs a 3-member etcd.
    ControlPlane,
    /// Shoal's DNS server vs dnsmasq with the same records: queries/s and p99 (dnsperf).
    Dns,
    /// The routing mesh vs direct, HAProxy and iptables DNAT (wrk); latency vs 1/100/1,000/10,000 services.
    Mesh,
    /// 1,000 simulated nodes, 10,000 services / 100,000 tasks: join, converge, idle, bytes per change, rolling update.
    Scale,
    /// A relayed `proxy-protocol=v2` port vs the eBPF mesh to the same kind of tasks (wrk).
    ProxyV2,
}

#[derive(Args)]
pub struct BenchArgs {
    /// The benchmark to run.
    name: Name,
    /// mesh: also measure the binaries of this git revision (e.g. 9f14783,
    /// the last main before issue 16: SNAT to the entry node's ingress
    /// address) in the same run, and print today's default against it.
    /// Its tree is exported (`git archive`) and built under
    /// target/baseline/REV, once.
    #[arg(long, value_name = "REV")]
    baseline_rev: Option<String>,
    /// Extra arguments for the bench (`-- --help` lists them).
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    anyhow::ensure!(
        args.baseline_rev.is_none() || matches!(args.name, Name::Mesh),
        "--baseline-rev applies to `bench mesh` only"
    );
    sh::run(sh::cargo().args([
        "build",
        "--release",
        "-q",
        "-p",
        "shoal-bench",
        "-p",
        "shoal-manager",
    ]))?;
    let release = sh::workspace_root().join("target/release");
    let mut command = std::process::Command::new(release.join("shoal-bench"));
    match args.name {
        Name::ControlPlane => {
            command
                .arg("control-plane")
                .arg("--manager-bin")
                .arg(release.join("shoal-manager"));
        }
        Name::Dns => {
            command.arg("dns");
        }
        Name::Scale => {
            command
                .arg("scale")
                .arg("--manager-bin")
                .arg(release.join("shoal-manager"));
        }
        Name::Mesh => {
            sh::run(sh::cargo().args(["build", "--release", "-q", "--bins"]))?;
            crate::images::build_all()?;
            command.arg("mesh").arg("--bin-dir").arg(&release);
            if let Some(rev) = &args.baseline_rev {
                command
                    .arg("--baseline-bin-dir")
                    .arg(crate::baseline::build(rev)?);
            }
        }
        Name::ProxyV2 => {
            sh::run(sh::cargo().args(["build", "--release", "-q", "--bins"]))?;
            crate::images::build_all()?;
            command.arg("proxy-v2").arg("--bin-dir").arg(&release);
        }
    }
    sh::run(command.args(&args.args))
}
