//! `shoal network …`: overlay networks, as `docker network` shows them.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::json;
use shoal_api::pb::{Empty, IdRequest, Network, NetworkSpec};

use super::{
    network_list::{self, id, name},
    resolve,
    service_flags::parse_label,
};
use crate::{
    client::{Client, status_error},
    output::{Format, inspect::fail_on_missing, print_inspect_as, rfc3339},
};

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create an overlay network.
    Create {
        /// Name of the network.
        name: String,
        /// Driver to manage the network: only `overlay` is supported.
        #[arg(short, long, default_value = "overlay")]
        driver: String,
        /// Subnet in CIDR form; default: the next free one of the cluster's address pool.
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address in the subnet; default: its first address.
        #[arg(long)]
        gateway: Option<String>,
        /// Let standalone containers attach (recorded; Shoal runs services only).
        #[arg(long)]
        attachable: bool,
        /// Restrict external access: containers reach only the network itself.
        #[arg(long)]
        internal: bool,
        /// Set metadata on the network (key=value); repeatable.
        #[arg(long)]
        label: Vec<String>,
        /// Set driver specific options (key=value); none is supported yet, so any is an error.
        #[arg(short, long)]
        opt: Vec<String>,
    },
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
        /// Verbose output: the services on the network and their tasks.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Remove one or more networks (refused while a service uses them).
    #[command(alias = "remove")]
    Rm {
        /// The networks to remove (ID or name).
        #[arg(required = true)]
        names: Vec<String>,
    },
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

/// `docker network inspect`'s shape.
pub fn inspect_json(n: &Network) -> serde_json::Value {
    let meta = n.meta.clone().unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    json!({
        "Name": spec.name,
        "Id": meta.id,
        "Created": rfc3339(meta.created_at),
        "Scope": "swarm",
        "Driver": spec.driver,
        "EnableIPv6": false,
        "IPAM": { "Driver": "default", "Config": [{ "Subnet": n.subnet, "Gateway": n.gateway }] },
        "Internal": spec.internal,
        "Attachable": spec.attachable,
        "Ingress": spec.ingress,
        "Options": { "com.docker.network.driver.overlay.vxlanid_list": n.vxlan_id.to_string() },
        "Labels": spec.labels,
    })
}

fn parse_opts(opts: &[String]) -> Result<BTreeMap<String, String>> {
    opts.iter()
        .map(|o| {
            let (k, v) = o.split_once('=').unwrap_or((o, ""));
            if k.is_empty() {
                bail!("invalid --opt {o:?}: expected key=value");
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

pub async fn run(client: &mut Client, command: NetworkCommand) -> Result<()> {
    match command {
        NetworkCommand::Create {
            name,
            driver,
            subnet,
            gateway,
            attachable,
            internal,
            label,
            opt,
        } => {
            let spec = NetworkSpec {
                name,
                labels: label
                    .iter()
                    .map(|l| parse_label(l))
                    .collect::<Result<_>>()?,
                driver,
                internal,
                attachable,
                ingress: false,
                subnet: subnet.unwrap_or_default(),
                gateway: gateway.unwrap_or_default(),
                options: parse_opts(&opt)?.into_iter().collect(),
            };
            let network = client
                .create_network(spec)
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
            let (services, tasks, nodes) = if verbose {
                (
                    service_specs(client).await?,
                    crate::client::tasks(client).await?,
                    crate::client::nodes(client).await?,
                )
            } else {
                Default::default()
            };
            let mut out = Vec::new();
            let mut missing = Vec::new();
            for q in &names {
                match resolve("network", q, &networks, id, name) {
                    Ok(n) => {
                        let mut json = inspect_json(n);
                        if verbose {
                            json["Services"] =
                                network_list::verbose_services(n, &services, &tasks, &nodes);
                        }
                        out.push(json);
                    }
                    Err(error) => missing.push(error),
                }
            }
            print_inspect_as(out, format.as_deref())?;
            fail_on_missing(missing)?;
        }
        NetworkCommand::Rm { names } => {
            let networks = list(client).await?;
            for q in &names {
                let n = resolve("network", q, &networks, id, name)?;
                client
                    .remove_network(IdRequest {
                        id: id(n).to_owned(),
                    })
                    .await
                    .map_err(status_error)?;
                println!("{q}");
            }
        }
    }
    Ok(())
}
