//! `shoal-agent`: the daemon that runs on every Shoal node.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use shoal_agent::datapath::{self, BpfRoot, CounterMap, InterfaceCount};

#[derive(Parser)]
#[command(name = "shoal-agent", version, about = "Shoal node agent", long_about = None)]
struct Cli {
    /// This node's tree of pinned eBPF objects (one per node).
    #[arg(long, global = true, env = "SHOAL_BPFFS", default_value = datapath::DEFAULT_ROOT)]
    bpffs: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the node's eBPF data plane.
    #[command(subcommand)]
    Datapath(DatapathCommand),
}

#[derive(Subcommand)]
enum DatapathCommand {
    /// Attach the packet and byte counters to interfaces (TC ingress and
    /// egress, pinned: they keep counting after this command exits).
    Attach {
        #[arg(required = true, value_name = "IFACE")]
        interfaces: Vec<String>,
    },
    /// Detach the counters from interfaces and forget their counts.
    Detach {
        #[arg(required = true, value_name = "IFACE")]
        interfaces: Vec<String>,
    },
    /// Detach everything and remove this node's pinned tree.
    Remove,
    /// Print packet and byte counts per interface.
    Counters {
        /// Only these interfaces (default: every counted one).
        #[arg(value_name = "IFACE")]
        interfaces: Vec<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let root = BpfRoot::new(cli.bpffs);
    match cli.command {
        Command::Datapath(command) => run_datapath(&root, command),
    }
}

fn run_datapath(root: &BpfRoot, command: DatapathCommand) -> Result<()> {
    match command {
        DatapathCommand::Attach { interfaces } => {
            for iface in &interfaces {
                datapath::attach_counters(root, iface)
                    .with_context(|| format!("attaching the counters to {iface}"))?;
            }
        }
        DatapathCommand::Detach { interfaces } => {
            for iface in &interfaces {
                let ifindex = datapath::ifindex_of(iface)?;
                if !datapath::detach_counters(root, ifindex)? {
                    tracing::warn!(iface, "no counters were attached");
                }
            }
        }
        DatapathCommand::Remove => datapath::remove_all(root)?,
        DatapathCommand::Counters { interfaces, json } => {
            let map = CounterMap::open(root)?;
            let counts = if interfaces.is_empty() {
                map.read_all()?
            } else {
                interfaces
                    .iter()
                    .map(|iface| map.read(datapath::ifindex_of(iface)?))
                    .collect::<Result<Vec<_>, _>>()?
            };
            print_counts(&counts, json)?;
        }
    }
    Ok(())
}

fn print_counts(counts: &[InterfaceCount], json: bool) -> Result<()> {
    if json {
        for count in counts {
            println!("{}", serde_json::to_string(count)?);
        }
        return Ok(());
    }
    println!(
        "{:<16} {:>8} {:>12} {:>14} {:>12} {:>14}",
        "INTERFACE", "INDEX", "RX PACKETS", "RX BYTES", "TX PACKETS", "TX BYTES"
    );
    for c in counts {
        println!(
            "{:<16} {:>8} {:>12} {:>14} {:>12} {:>14}",
            c.ifname.as_deref().unwrap_or("-"),
            c.ifindex,
            c.rx_packets,
            c.rx_bytes,
            c.tx_packets,
            c.tx_bytes
        );
    }
    Ok(())
}
