//! `shoal-manager`: the brain of a Shoal cluster. The Raft store, control
//! API, scheduler and orchestrators arrive in [2/6] (`init`, `join`); today
//! `run` holds the data directory and serves the local control socket.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use shoal_api::{VersionInfo, socket::DEFAULT_SOCKET};
use shoal_manager::daemon::Daemon;

#[derive(Parser)]
#[command(name = "shoal-manager", version, about = "Shoal cluster manager", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the manager daemon.
    Run {
        /// Where the manager keeps its state (locked: one manager per directory).
        #[arg(long, default_value = "/var/lib/shoal/manager")]
        data_dir: PathBuf,
        /// The local control socket the `shoal` CLI talks to.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Print version information as JSON.
    Version,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run { data_dir, socket } => {
            let daemon = Daemon::start(&data_dir, &socket)?;
            tracing::info!(data_dir = %data_dir.display(), socket = %socket.display(), "manager running");
            daemon.serve();
        }
        Command::Version => {
            let info = VersionInfo::of("shoal-manager", env!("CARGO_PKG_VERSION"), 0);
            println!("{}", serde_json::to_string(&info)?);
        }
    }
    Ok(())
}
