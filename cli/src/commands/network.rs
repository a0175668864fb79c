//! `shoal network …`: overlay networks, as `docker network` shows them.

mod connect;
mod create;
mod inspect;
mod prune;

use anyhow::{Result, bail};
use clap::Subcommand;
use shoal_api::pb::{Empty, IdRequest, Network};

use super::resolve;
use crate::{
    client::{self, Client, status_error},
    output::{Format, Listing, print_inspect},
};
pub use inspect::inspect_json;

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a network (an overlay across the swarm).
    Create(Box<create::CreateArgs>),
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only display network IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Print an aligned table or one JSON object per line.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Display detailed information on one or more networks.
    Inspect {
        /// The networks to inspect (ID or name).
        #[arg(required = true)]
        names: Vec<String>,
        /// Verbose output for diagnostics: the network's services, their
        /// tasks and the nodes they run on.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Remove one or more networks (refused while a service uses them).
    #[command(alias = "remove")]
    Rm {
        /// The networks to remove (ID or name).
        #[arg(required = true)]
        names: Vec<String>,
        /// Do not error if the network does not exist.
        #[arg(short, long)]
        force: bool,
    },
    /// Remove all unused networks.
    Prune(prune::PruneArgs),
    /// Connect a container to a network (a container some node's engine
    /// runs, to an --attachable network).
    Connect(connect::ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(connect::DisconnectArgs),
}

fn id(n: &Network) -> &str {
    n.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

fn name(n: &Network) -> &str {
    n.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

async fn list(client: &mut Client) -> Result<Vec<Network>> {
    let mut networks = client
        .list_networks(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .networks;
    networks.sort_by(|a, b| name(a).cmp(name(b)));
    Ok(networks)
}

pub fn listing(networks: &[Network]) -> Listing {
    let mut listing = Listing::new(&[
        ("NETWORK ID", "ID"),
        ("NAME", "Name"),
        ("DRIVER", "Driver"),
        ("SCOPE", "Scope"),
    ]);
    for n in networks {
        let short: String = id(n).chars().take(12).collect();
        let driver = n
            .spec
            .as_ref()
            .map(|s| s.driver.clone())
            .unwrap_or_default();
        listing.row(vec![short, name(n).to_owned(), driver, "swarm".into()]);
    }
    listing
}

pub async fn run(client: &mut Client, command: NetworkCommand) -> Result<()> {
    match command {
        NetworkCommand::Create(args) => {
            let network = client
                .create_network(args.spec()?)
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}", id(&network));
        }
        NetworkCommand::Ls { quiet, format } => {
            let networks = list(client).await?;
            listing(&networks).print(format, quiet);
        }
        NetworkCommand::Inspect { names, verbose } => {
            let networks = list(client).await?;
            let (services, tasks, nodes): (Vec<_>, Vec<_>, Vec<_>) = if verbose {
                (
                    super::service::services(client)
                        .await?
                        .into_iter()
                        .filter_map(|s| s.service)
                        .collect(),
                    client::tasks(client).await?,
                    client::nodes(client).await?,
                )
            } else {
                Default::default()
            };
            let mut out = Vec::new();
            for q in &names {
                let network = resolve("network", q, &networks, id, name)?;
                let mut json = inspect_json(network);
                if verbose {
                    let (services, peers) = inspect::verbose(network, &services, &tasks, &nodes);
                    json["Services"] = services;
                    json["Peers"] = peers;
                }
                out.push(json);
            }
            print_inspect(out)?;
        }
        NetworkCommand::Rm { names, force } => {
            let networks = list(client).await?;
            let mut failed = false;
            for q in &names {
                let result = async {
                    let n = match resolve("network", q, &networks, id, name) {
                        Ok(n) => n,
                        // Docker 28's `rm -f`: a network that is not there is no error.
                        Err(_) if force && !networks.iter().any(|n| name(n) == q) => return Ok(()),
                        Err(e) => return Err(e),
                    };
                    client
                        .remove_network(IdRequest {
                            id: id(n).to_owned(),
                        })
                        .await
                        .map_err(status_error)?;
                    Ok(())
                }
                .await;
                match result {
                    Ok(()) => println!("{q}"),
                    Err(error) => {
                        eprintln!("Error: {error:#}");
                        failed = true;
                    }
                }
            }
            if failed {
                bail!("not every network was removed");
            }
        }
        NetworkCommand::Connect(args) => connect::connect(client, args).await?,
        NetworkCommand::Disconnect(args) => connect::disconnect(client, args).await?,
        NetworkCommand::Prune(args) => {
            let networks = list(client).await?;
            prune::run(client, networks, args).await?;
        }
    }
    Ok(())
}
