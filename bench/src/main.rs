//! `shoal-bench`: benchmarks that measure Shoal against a named peer in the
//! same run and print ratios. Run through `cargo xtask bench NAME`, which
//! builds in release mode; results go to bench/RESULTS.md.

mod control_plane;
mod dns;
mod mesh;
mod mesh_baseline;
mod mesh_peers;
mod mesh_rounds;
mod proc_stat;
mod proxyv2;
mod scale;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "shoal-bench", about = "Shoal benchmarks")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Scheduler placements per second, and replicated writes of a
    /// 3-manager cluster beside a 3-member etcd cluster.
    ControlPlane(control_plane::Args),
    /// Shoal's DNS server beside dnsmasq serving the same records (dnsperf).
    Dns(dns::Args),
    /// The routing mesh beside direct, HAProxy and iptables DNAT (wrk).
    Mesh(mesh::Args),
    /// Simulated nodes join, services are created until every task runs;
    /// then idle cost, bytes pushed per change, a rolling update.
    Scale(scale::Args),
    /// A relayed `proxy-protocol=v2` port beside the eBPF mesh (wrk).
    ProxyV2(proxyv2::Args),
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().bench {
        Bench::ControlPlane(args) => control_plane::run(args).await,
        Bench::Dns(args) => dns::run(args).await,
        Bench::Mesh(args) => tokio::task::spawn_blocking(move || mesh::run(args)).await?,
        Bench::Scale(args) => scale::run(args).await,
        Bench::ProxyV2(args) => tokio::task::spawn_blocking(move || proxyv2::run(args)).await?,
    }
}
