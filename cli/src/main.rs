//! `shoal`: the command-line client of a Shoal cluster, with the commands
//! and output a Docker user already knows.

mod client;
mod commands;
mod output;
mod retry;
mod timestamp;
mod tls;

use anyhow::Result;
// The compose loader lives in the library (src/lib.rs), which the fuzz targets drive too.
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use commands::{
    cert::CertCommand,
    cluster::JoinToken,
    network::NetworkCommand,
    node::NodeCommand,
    objects::{self, ObjectCommand},
    service::ServiceCommand,
    stack::StackCommand,
    swarm::SwarmCommand,
};
use shoal_cli::compose;

#[derive(Parser)]
#[command(name = "shoal", version, about = "Shoal: a container orchestrator", long_about = None)]
struct Cli {
    /// The manager to talk to: unix:///path, tcp://host:port or host:port.
    /// Given before the command, as Docker's `-H` (`service create --host`
    /// is a container's host-to-IP mapping).
    #[arg(short = 'H', long, env = "SHOAL_HOST", default_value = concat!("unix://", "/run/shoal/manager.sock"))]
    host: String,
    #[command(flatten)]
    tls: tls::TlsArgs,
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
    /// Manage stacks.
    #[command(subcommand)]
    Stack(StackCommand),
    /// Manage overlay networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Manage secrets.
    #[command(subcommand)]
    Secret(ObjectCommand),
    /// Manage configs.
    #[command(subcommand)]
    Config(ObjectCommand),
    /// Manage the swarm: its settings, root CA, autolock and unlock key.
    #[command(subcommand)]
    Swarm(SwarmCommand),
    /// Show (or rotate) the join token for workers or managers (as `swarm join-token`).
    JoinToken(JoinToken),
    /// Manage client certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Get real time events from the cluster (Docker's swarm events, and tasks').
    Events(commands::events::EventsArgs),
    /// Show the Shoal version information.
    Version {
        /// Format output: 'table' (default), 'json', or a Go TEMPLATE (e.g. '{{.Server.Version}}').
        #[arg(short, long, default_value_t)]
        format: output::Format,
    },
}

/// The command line as clap sees it, with `secret`'s and `config`'s shared
/// subcommands worded for each.
fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("secret", |c| objects::Kind::Secret.name_texts(c))
        .mut_subcommand("config", |c| {
            // Docker's configs have no driver: not shown, and refused.
            objects::Kind::Config
                .name_texts(c)
                .mut_subcommand("create", |c| c.mut_arg("driver", |a| a.hide(true)))
        })
}

/// What `Cli::parse` does, over [`command`]'s texts.
fn parse() -> Cli {
    let mut command = command();
    Cli::from_arg_matches(&command.get_matches_mut())
        .unwrap_or_else(|error| error.format(&mut command).exit())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(error) = run(parse()).await {
        eprintln!("Error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Version { format } = cli.command {
        return commands::cluster::version(&cli.host, &cli.tls, format).await;
    }
    if let Command::Stack(StackCommand::Config {
        compose_file,
        skip_interpolation,
    }) = &cli.command
    {
        return commands::stack::config(compose_file, *skip_interpolation);
    }
    // `swarm init|join|leave` work on this host before any manager answers.
    if let Command::Swarm(c) = cli.command {
        return commands::swarm::run(&cli.host, &cli.tls, c).await;
    }
    let mut client = client::connect(&cli.host, &cli.tls).await?;
    match cli.command {
        Command::Node(c) => commands::node::run(&mut client, c).await,
        Command::Service(c) => commands::service::run(&mut client, c).await,
        Command::Stack(c) => commands::stack::run(&mut client, c).await,
        Command::Network(c) => commands::network::run(&mut client, c).await,
        Command::Secret(c) => objects::run(&mut client, objects::Kind::Secret, c).await,
        Command::Config(c) => objects::run(&mut client, objects::Kind::Config, c).await,
        Command::Swarm(_) => unreachable!("answered above"),
        Command::JoinToken(args) => commands::cluster::join_token(&mut client, args).await,
        Command::Cert(c) => commands::cert::run(&mut client, c).await,
        Command::Events(args) => commands::events::run(&mut client, args).await,
        Command::Version { .. } => unreachable!("answered above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_and_argument_says_what_it_does() {
        shoal_help_check::assert_documented(&command());
    }

    /// The help of `shoal KIND SUBCOMMAND`, as `--help` prints it.
    fn help(kind: &str, subcommand: &str) -> String {
        let mut command = command();
        command.build();
        command
            .find_subcommand_mut(kind)
            .and_then(|k| k.find_subcommand_mut(subcommand))
            .map(|s| s.render_help().to_string())
            .unwrap_or_else(|| panic!("no `shoal {kind} {subcommand}`"))
    }

    #[test]
    fn secrets_and_configs_are_named_in_their_own_texts() {
        for (kind, plural) in [("secret", "secrets"), ("config", "configs")] {
            assert!(help(kind, "ls").contains(&format!("List {plural}")));
            assert!(help(kind, "rm").contains(&format!("Remove one or more {plural}")));
            assert!(help(kind, "inspect").contains(&format!("The {plural} to inspect")));
            let create = help(kind, "create");
            assert!(create.contains(&format!("Create a {kind} from a file or STDIN")));
            assert!(create.contains(&format!("Name of the {kind}")));
            for subcommand in ["create", "ls", "inspect", "rm"] {
                let text = help(kind, subcommand);
                assert!(!text.contains("{object"), "{text}");
            }
        }
    }

    #[test]
    fn only_secrets_show_a_driver() {
        assert!(help("secret", "create").contains("--driver"));
        assert!(!help("config", "create").contains("--driver"));
    }

    #[test]
    fn the_worded_texts_parse_as_before() {
        let matches = command()
            .try_get_matches_from(["shoal", "config", "ls", "-q"])
            .expect("parses");
        let cli = Cli::from_arg_matches(&matches).expect("matches Cli");
        assert!(matches!(
            cli.command,
            Command::Config(ObjectCommand::Ls { quiet: true, .. })
        ));
    }
}
