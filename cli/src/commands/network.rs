//! `shoal network …`: overlay networks, as `docker network` shows them.

mod connect;
mod create;
mod inspect;
mod prune;

use anyhow::{Result, bail};
use clap::Subcommand;
use shoal_api::pb::{Empty, IdRequest, Network};

use super::{
    network_list::{self, id, name},
    resolve,
};
use crate::{
    client::{self, Client, status_error},
    output::{Format, inspect::fail_on_missing, print_inspect_as},
};
pub use inspect::inspect_json;

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a network (an overlay across the swarm).
    Create(Box<create::CreateArgs>),
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Provide filter values (dangling, driver, id, label, name, scope, type), e.g. "driver=overlay".
        #[arg(short, long = "filter", value_name = "FILTER")]
        filter: Vec<String>,
        /// Format output: 'table' (default), 'table TEMPLATE', 'json', or a Go TEMPLATE.
        #[arg(long, default_value_t)]
        format: Format,
        /// Do not truncate the output.
        #[arg(long)]
        no_trunc: bool,
        /// Only display network IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Display detailed information on one or more networks.
    Inspect {
        /// The networks to inspect (ID or name).
        #[arg(required = true)]
        names: Vec<String>,
        /// Format output: 'json' or a Go TEMPLATE over the inspect JSON.
        #[arg(short, long)]
        format: Option<String>,
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

/// Every service's spec (what `dangling` and `inspect -v` look at).
async fn service_specs(client: &mut Client) -> Result<Vec<shoal_api::pb::Service>> {
    Ok(super::service::services(client)
        .await?
        .into_iter()
        .filter_map(|s| s.service)
        .collect())
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
        NetworkCommand::Ls {
            filter,
            format,
            no_trunc,
            quiet,
        } => {
            let filters = network_list::network_filters(&filter)?;
            let networks = list(client).await?;
            let services = if filters.has("dangling") {
                service_specs(client).await?
            } else {
                Vec::new()
            };
            network_list::listing(&networks, &services, &filters, no_trunc)
                .print(&format, quiet)?;
        }
        NetworkCommand::Inspect {
            names,
            format,
            verbose,
        } => {
            let networks = list(client).await?;
            let (services, tasks, nodes): (Vec<_>, Vec<_>, Vec<_>) = if verbose {
                (
                    service_specs(client).await?,
                    client::tasks(client).await?,
                    client::nodes(client).await?,
                )
            } else {
                Default::default()
            };
            let mut out = Vec::new();
            let mut missing = Vec::new();
            for q in &names {
                match resolve("network", q, &networks, id, name) {
                    Ok(network) => {
                        let mut json = inspect_json(network);
                        if verbose {
                            let (services, peers) =
                                inspect::verbose(network, &services, &tasks, &nodes);
                            json["Services"] = services;
                            json["Peers"] = peers;
                        }
                        out.push(json);
                    }
                    Err(error) => missing.push(error),
                }
            }
            print_inspect_as(out, format.as_deref())?;
            fail_on_missing(missing)?;
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
