//! `shoal service create|ls|ps|inspect|scale|rm|update|rollback|rebalance|logs`: the
//! command enum and its dispatch here; each concern in its own module.

mod create;
mod engine_lists;
mod env_file;
mod inspect;
mod inspect_engine;
pub(super) mod job;
#[cfg(test)]
mod job_tests;
pub(crate) use shoal_cli::commands::service::lb_flags;
mod list;
mod logs;
pub(crate) mod spec_flags;
#[cfg(test)]
mod tests;
pub(crate) mod update_lists;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;
use shoal_api::pb::{Empty, IdRequest, Service, ServiceSummary, UpdateServiceRequest};

use super::{resolve, service_update};
use crate::{
    client::{Client, status_error},
    output::{Format, print_inspect_as},
};
pub use create::CreateArgs;
use inspect::{inspect_json, print_pretty};
pub(crate) use inspect_engine::generic_resources_json;
pub(crate) use list::{print_service_list, service_filters, service_listing};

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Create a new service.
    Create(Box<CreateArgs>),
    /// List services.
    #[command(alias = "list")]
    Ls {
        /// Filter output based on conditions provided (id, label, mode, name).
        #[arg(short, long = "filter", value_name = "FILTER")]
        filter: Vec<String>,
        /// Only display IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Format output: 'table' (default), 'table TEMPLATE', 'json', or a Go TEMPLATE.
        #[arg(long, default_value_t)]
        format: Format,
    },
    /// List the tasks of one or more services.
    Ps {
        /// The services whose tasks to list (ID or name).
        #[arg(required = true)]
        services: Vec<String>,
        #[command(flatten)]
        ps: super::tasks::PsArgs,
    },
    /// Display detailed information on one or more services.
    Inspect {
        /// The services to inspect (ID or name).
        #[arg(required = true)]
        services: Vec<String>,
        /// Format output: 'json', 'pretty', or a Go TEMPLATE over the inspect JSON.
        #[arg(short, long)]
        format: Option<String>,
        /// Print the information in a human friendly format.
        #[arg(long)]
        pretty: bool,
    },
    /// Fetch the logs of a service or task.
    Logs(logs::LogsArgs),
    /// Update a service; changed tasks are replaced as its update config says.
    Update(Box<service_update::UpdateArgs>),
    /// Revert changes to a service's configuration (back to its previous spec).
    Rollback {
        /// The service to roll back (ID or name).
        service: String,
        /// Return at once instead of showing the rollback's progress.
        #[arg(short, long, env = "SHOAL_DETACH")]
        detach: bool,
    },
    /// Spread a replicated service's tasks evenly over its nodes, as a rolling update with its update config.
    Rebalance {
        /// The service to rebalance (ID or name).
        service: String,
        /// Return at once instead of showing the rebalance's progress.
        #[arg(short, long, env = "SHOAL_DETACH")]
        detach: bool,
        /// Suppress progress output.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Scale one or more replicated services or replicated jobs (SERVICE=REPLICAS).
    Scale {
        /// SERVICE=REPLICAS pairs, e.g. web=5.
        #[arg(required = true)]
        scales: Vec<String>,
        /// Exit immediately instead of waiting for the service to converge.
        #[arg(short, long, env = "SHOAL_DETACH")]
        detach: bool,
    },
    /// Remove one or more services.
    #[command(alias = "remove")]
    Rm {
        /// The services to remove (ID or name).
        #[arg(required = true)]
        services: Vec<String>,
    },
}

pub(crate) fn service_id(s: &Service) -> &str {
    s.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

pub(crate) fn service_name(s: &Service) -> &str {
    s.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

fn image(s: &Service) -> String {
    s.spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.container.as_ref())
        .map(|c| c.image.clone())
        .unwrap_or_default()
}

pub(crate) async fn services(client: &mut Client) -> Result<Vec<ServiceSummary>> {
    Ok(client
        .list_services(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .services)
}

fn find<'a>(all: &'a [ServiceSummary], query: &str) -> Result<&'a Service> {
    let summary = resolve(
        "service",
        query,
        all,
        |s| s.service.as_ref().map(service_id).unwrap_or(""),
        |s| s.service.as_ref().map(service_name).unwrap_or(""),
    )?;
    summary
        .service
        .as_ref()
        .context("the manager sent an empty service")
}

pub async fn run(client: &mut Client, command: ServiceCommand) -> Result<()> {
    match command {
        ServiceCommand::Create(args) => {
            let (detach, quiet) = (args.detach, args.quiet);
            let spec = args.spec()?;
            let service = client
                .create_service(spec)
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}", service_id(&service));
            if !detach {
                let ids = [service_id(&service).to_owned()];
                super::progress::converge_with(client, &ids, false, quiet).await?;
            }
        }
        ServiceCommand::Update(args) => {
            let all = services(client).await?;
            let s = find(&all, &args.service)?;
            let id = service_id(s).to_owned();
            let networks = if args.names_networks() {
                client
                    .list_networks(Empty {})
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .networks
            } else {
                Vec::new()
            };
            let request = args.request(
                &id,
                s.meta.as_ref().map_or(0, |m| m.version),
                s.spec.clone().unwrap_or_default(),
                &networks,
            )?;
            client.update_service(request).await.map_err(status_error)?;
            println!("{}", args.service);
            if !args.detach {
                super::progress::converge_with(client, &[id], args.rollback_now, args.quiet)
                    .await?;
            }
        }
        ServiceCommand::Rollback { service, detach } => {
            let all = services(client).await?;
            let s = find(&all, &service)?;
            let id = service_id(s).to_owned();
            client
                .update_service(UpdateServiceRequest {
                    id: id.clone(),
                    version: s.meta.as_ref().map_or(0, |m| m.version),
                    spec: None,
                    rollback: true,
                })
                .await
                .map_err(status_error)?;
            println!("{service}");
            if !detach {
                super::progress::converge(client, &[id], true).await?;
            }
        }
        ServiceCommand::Rebalance {
            service,
            detach,
            quiet,
        } => {
            let all = services(client).await?;
            let id = service_id(find(&all, &service)?).to_owned();
            let answer = client
                .rebalance_service(IdRequest { id: id.clone() })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{service}");
            if answer.moving == 0 {
                if !quiet {
                    println!("nothing to move: its tasks are as evenly spread as its nodes allow");
                }
            } else if !detach {
                super::progress::converge_with(client, &[id], false, quiet).await?;
            }
        }
        ServiceCommand::Ls {
            filter,
            quiet,
            format,
        } => {
            let filters = list::service_filters(&filter)?;
            let all = services(client).await?;
            print_service_list(&all, &filters, quiet, &format)?;
        }
        ServiceCommand::Ps {
            services: queries,
            ps,
        } => {
            let all = services(client).await?;
            let mut ids = Vec::new();
            for q in &queries {
                ids.push(service_id(find(&all, q)?).to_owned());
            }
            super::tasks::print_tasks(client, &ps, |filters| {
                for id in &ids {
                    filters.add("service", id);
                }
            })
            .await?;
        }
        ServiceCommand::Inspect {
            services: queries,
            format,
            pretty,
        } => {
            if pretty && format.is_some() {
                bail!("--format is incompatible with human friendly format");
            }
            let pretty = pretty || format.as_deref() == Some("pretty");
            let all = services(client).await?;
            let mut out = Vec::new();
            let mut missing = Vec::new();
            for q in &queries {
                let s = match find(&all, q) {
                    Ok(s) => s,
                    Err(error) => {
                        missing.push(error);
                        continue;
                    }
                };
                let counters = all
                    .iter()
                    .find(|x| x.service.as_ref().map(service_id) == Some(service_id(s)))
                    .and_then(|x| x.counters.clone())
                    .unwrap_or_default();
                if pretty {
                    print_pretty(s, &counters);
                } else {
                    let mut json = inspect_json(s);
                    json["LoadBalancer"] = json!({
                        "Connections": counters.connections,
                        "Packets": counters.packets,
                        "Bytes": counters.bytes,
                    });
                    out.push(json);
                }
            }
            if !pretty {
                print_inspect_as(out, format.as_deref())?;
            }
            crate::output::inspect::fail_on_missing(missing)?;
        }
        ServiceCommand::Scale { scales, detach } => {
            let all = services(client).await?;
            let mut failed = false;
            let mut scaled = Vec::new();
            for scale in &scales {
                let result = async {
                    let (query, replicas) = scale.split_once('=').with_context(|| {
                        format!("invalid scale specifier {scale:?}: expected SERVICE=REPLICAS")
                    })?;
                    let replicas: u64 = replicas.parse().with_context(|| {
                        format!(
                            "invalid replicas value {replicas:?} for {query}: expected a number"
                        )
                    })?;
                    let s = find(&all, query)?;
                    let mut spec = s.spec.clone().unwrap_or_default();
                    // A replicated job's replicas are its completions: scaling
                    // it runs it again with the new total, as Docker's.
                    if !spec.mode().is_replicated() {
                        bail!(
                            "scale can only be used with replicated or replicated-job mode ({query} is {})",
                            spec.mode().word()
                        );
                    }
                    spec.replicas = replicas;
                    client
                        .clone()
                        .update_service(UpdateServiceRequest {
                            id: service_id(s).to_owned(),
                            version: s.meta.as_ref().map(|m| m.version).unwrap_or(0),
                            spec: Some(spec),
                            rollback: false,
                        })
                        .await
                        .map_err(status_error)?;
                    println!("{query} scaled to {replicas}");
                    Ok(service_id(s).to_owned())
                }
                .await;
                match result {
                    Ok(id) => scaled.push(id),
                    Err(error) => {
                        eprintln!("{error:#}");
                        failed = true;
                    }
                }
            }
            // Docker waits for each service it scaled, as `service update` does.
            if !detach {
                super::progress::converge(client, &scaled, false).await?;
            }
            if failed {
                std::process::exit(1);
            }
        }
        ServiceCommand::Logs(args) => logs::run(client, args).await?,
        ServiceCommand::Rm { services: queries } => {
            let all = services(client).await?;
            for q in &queries {
                let s = find(&all, q)?;
                client
                    .remove_service(IdRequest {
                        id: service_id(s).to_owned(),
                    })
                    .await
                    .map_err(status_error)?;
                println!("{q}");
            }
        }
    }
    Ok(())
}
