//! `shoal`: the command-line client of a Shoal cluster, with the commands
//! and output a Docker user already knows.

mod client;
mod commands;
mod compose;
mod output;
mod retry;

use anyhow::Result;
use clap::{Parser, Subcommand};
use commands::{
    cluster::JoinToken,
    network::NetworkCommand,
    node::NodeCommand,
    objects::{self, ObjectCommand},
    service::ServiceCommand,
    stack::StackCommand,
};

#[derive(Parser)]
#[command(name = "shoal", version, about = "Shoal: a container orchestrator", long_about = None)]
struct Cli {
    /// The manager to talk to: unix:///path, tcp://host:port or host:port.
    #[arg(short = 'H', long, global = true, env = "SHOAL_HOST", default_value = concat!("unix://", "/run/shoal/manager.sock"))]
    host: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage cluster nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage overlay networks.
    #[command(subcommand)]
    Stack(StackCommand),
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Manage secrets.
    #[command(subcommand)]
    Secret(ObjectCommand),
    /// Manage configs.
    #[command(subcommand)]
    Config(ObjectCommand),
    /// Show (or rotate) the join token for workers or managers.
    JoinToken(JoinToken),
    /// Show the Shoal version information.
    Version {
        #[arg(long, value_enum, default_value_t)]
        format: output::Format,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(error) = run(Cli::parse()).await {
        eprintln!("Error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Version { format } = cli.command {
        return commands::cluster::version(&cli.host, format).await;
    }
    if let Command::Stack(StackCommand::Config { compose_file }) = &cli.command {
        return commands::stack::config(compose_file);
    }
    let mut client = client::connect(&cli.host).await?;
    match cli.command {
        Command::Node(c) => commands::node::run(&mut client, c).await,
        Command::Service(c) => commands::service::run(&mut client, c).await,
        Command::Stack(c) => commands::stack::run(&mut client, c).await,
        Command::Network(c) => commands::network::run(&mut client, c).await,
        Command::Secret(c) => objects::run(&mut client, objects::Kind::Secret, c).await,
        Command::Config(c) => objects::run(&mut client, objects::Kind::Config, c).await,
        Command::JoinToken(args) => commands::cluster::join_token(&mut client, args).await,
        Command::Version { .. } => unreachable!("answered above"),
    }
}
