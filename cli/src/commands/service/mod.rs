//! `shoal service create|ls|ps|inspect|scale|rm|update|rollback|logs`: the
//! command enum and its dispatch here; each concern in its own module.

mod create;
mod inspect;
mod list;
mod logs;
#[cfg(test)]
mod tests;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;
use shoal_api::pb::{Empty, IdRequest, Service, ServiceMode, ServiceSummary, UpdateServiceRequest};

use super::{resolve, service_update};
use crate::{
    client::{Client, status_error},
    output::{Format, print_inspect},
};
pub use create::CreateArgs;
use inspect::{inspect_json, print_pretty};
pub(crate) use list::{print_service_list, print_tasks};

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Create a new service.
    Create(Box<CreateArgs>),
    /// List services.
    #[command(alias = "list")]
    Ls {
        /// Only display IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Print an aligned table or one JSON object per line.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List the tasks of one or more services.
    Ps {
        /// The services whose tasks to list (ID or name).
        #[arg(required = true)]
        services: Vec<String>,
        /// Do not truncate output.
        #[arg(long)]
        no_trunc: bool,
        /// Filter output (desired-state=running|shutdown|accepted, node=N, name=N, id=ID).
        #[arg(short, long = "filter")]
        filter: Vec<String>,
        /// Only display task IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Print an aligned table or one JSON object per line.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Display detailed information on one or more services.
    Inspect {
        /// The services to inspect (ID or name).
        #[arg(required = true)]
        services: Vec<String>,
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
    /// Scale one or more replicated services (SERVICE=REPLICAS).
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

fn ports(s: &Service) -> String {
    s.spec
        .as_ref()
        .and_then(|s| s.endpoint.as_ref())
        .map(|e| {
            e.ports
                .iter()
                .map(|p| format!("*:{}->{}/{}", p.published_port, p.target_port, p.protocol))
                .collect::<Vec<_>>()
                .join(", ")
        })
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
            let detach = args.detach;
            let spec = args.spec()?;
            let service = client
                .create_service(spec)
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}", service_id(&service));
            if !detach {
                super::progress::converge(client, &[service_id(&service).to_owned()], false)
                    .await?;
            }
        }
        ServiceCommand::Update(args) => {
            let all = services(client).await?;
            let s = find(&all, &args.service)?;
            let id = service_id(s).to_owned();
            let request = args.request(
                &id,
                s.meta.as_ref().map_or(0, |m| m.version),
                s.spec.clone().unwrap_or_default(),
            )?;
            client.update_service(request).await.map_err(status_error)?;
            println!("{}", args.service);
            if !args.detach {
                super::progress::converge(client, &[id], false).await?;
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
        ServiceCommand::Ls { quiet, format } => {
            let all = services(client).await?;
            print_service_list(&all, quiet, format);
        }
        ServiceCommand::Ps {
            services: queries,
            no_trunc,
            filter,
            quiet,
            format,
        } => {
            let all = services(client).await?;
            let mut wanted = Vec::new();
            for q in &queries {
                wanted.push(find(&all, q)?.clone());
            }
            print_tasks(client, &wanted, &filter, no_trunc, quiet, format).await?;
        }
        ServiceCommand::Inspect {
            services: queries,
            pretty,
        } => {
            let all = services(client).await?;
            let mut out = Vec::new();
            for q in &queries {
                let s = find(&all, q)?;
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
                print_inspect(out)?;
            }
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
                    if spec.mode() != ServiceMode::Replicated {
                        bail!("scale can only be used with replicated mode ({query} is global)");
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
