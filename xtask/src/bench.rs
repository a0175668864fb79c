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
    /// A relayed `proxy-protocol=v2` port vs the eBPF mesh to the same kind of tasks (wrk).
    ProxyV2,
}

#[derive(Args)]
pub struct BenchArgs {
    /// The benchmark to run.
    name: Name,
    /// Extra arguments for the bench (`-- --help` lists them).
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
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
        Name::Mesh => {
            sh::run(sh::cargo().args(["build", "--release", "-q", "--bins"]))?;
            crate::images::build_all()?;
            command.arg("mesh").arg("--bin-dir").arg(&release);
        }
        Name::ProxyV2 => {
            sh::run(sh::cargo().args(["build", "--release", "-q", "--bins"]))?;
            crate::images::build_all()?;
            command.arg("proxy-v2").arg("--bin-dir").arg(&release);
        }
    }
    sh::run(command.args(&args.args))
}
