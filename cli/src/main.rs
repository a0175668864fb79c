//! `shoal`: the command-line client of a Shoal cluster. The cluster commands
//! (`node`, `service`, `stack`, `network`, `secret`, `config`) arrive with
//! the control API in [2/6]; today it reports its own version.

use std::path::Path;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use shoal_api::VersionInfo;

#[derive(Parser)]
#[command(name = "shoal", version, about = "Shoal: a container orchestrator", long_about = None)]
struct Cli {
    /// The manager to talk to: a unix socket path (`unix:///run/shoal/manager.sock`).
    #[arg(long, global = true, env = "SHOAL_HOST", default_value = concat!("unix://", "/run/shoal/manager.sock"))]
    host: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the Shoal version information.
    Version {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let socket = cli
        .host
        .strip_prefix("unix://")
        .with_context(|| {
            format!(
                "--host {:?}: only unix:// sockets are supported until the control API lands",
                cli.host
            )
        })?
        .to_owned();
    match cli.command {
        Command::Version { format } => {
            let info = VersionInfo::of(
                "shoal",
                env!("CARGO_PKG_VERSION"),
                shoal_agent_common::LAYOUT_VERSION,
            );
            // Like `docker version`: the client always, the server when it answers.
            let server = shoal_api::socket::query_version(Path::new(&socket));
            match format {
                Format::Json => {
                    let server = server.as_ref().ok();
                    println!(
                        "{}",
                        serde_json::json!({ "Client": info, "Server": server })
                    );
                }
                Format::Table => {
                    print_version("Client", &info);
                    match &server {
                        Ok(server) => print_version("Server", server),
                        Err(error) => {
                            println!("\nServer: cannot reach a manager at {socket}: {error}")
                        }
                    }
                }
            }
            if server.is_err() {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

fn print_version(title: &str, info: &VersionInfo) {
    println!("{title}: {}", info.component);
    println!(" Version:       {}", info.version);
    if info.ebpf_layout > 0 {
        println!(" eBPF layout:   v{}", info.ebpf_layout);
    }
    println!(" OS/Arch:       {}/{}", info.os, info.arch);
}
