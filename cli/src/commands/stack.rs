//! `shoal stack`: compose files deployed as stacks, the way `docker stack`
//! does it: the client reads the files and creates or updates the
//! stack's networks, secrets, configs and services, all named
//! `STACK_NAME` and labelled with the stack.

use std::{collections::BTreeSet, path::PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use shoal_api::pb::{Empty, IdRequest, ServiceSummary, UpdateServiceRequest};

use super::{
    objects::{self, Kind},
    progress, service,
};
use crate::{
    client::{Client, status_error},
    compose::{
        self,
        convert::{FileObject, STACK_LABEL},
    },
    output::{Columns, Format, Listing},
};

pub static COLUMNS: Columns = Columns {
    table: "table {{.Name}}\t{{.Services}}",
    headers: &[("Name", "NAME"), ("Services", "SERVICES")],
};

/// `stack ls` rows: each stack (services labelled with it) and how many
/// services it has, by name.
fn stack_listing(all: &[ServiceSummary]) -> Listing {
    let mut stacks: std::collections::BTreeMap<&str, usize> = Default::default();
    for summary in all {
        if let Some(name) = summary
            .service
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.labels.get(STACK_LABEL))
        {
            *stacks.entry(name).or_default() += 1;
        }
    }
    let mut names: Vec<(&str, usize)> = stacks.into_iter().collect();
    names.sort_by(|a, b| super::tasks::natural_cmp(a.0, b.0));
    let mut listing = Listing::new(&COLUMNS);
    for (name, count) in names {
        listing.row(serde_json::json!({ "Name": name, "Services": count.to_string() }));
    }
    listing
}

#[derive(Subcommand)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing one from compose files.
    #[command(alias = "up")]
    Deploy {
        /// Path to a Compose file, or "-" to read from stdin; repeat to
        /// merge several, in order.
        #[arg(short = 'c', long = "compose-file", required = true)]
        compose_file: Vec<PathBuf>,
        /// Remove services of the stack that the files no longer name.
        #[arg(long)]
        prune: bool,
        /// Exit immediately instead of waiting for the stack services to
        /// converge (default true: `--detach=false` waits, showing progress).
        #[arg(
            short,
            long,
            env = "SHOAL_DETACH",
            value_name = "true|false",
            num_args = 0..=1,
            require_equals = true,
            default_value_t = true,
            default_missing_value = "true",
            action = clap::ArgAction::Set
        )]
        detach: bool,
        /// Suppress progress output.
        #[arg(short, long)]
        quiet: bool,
        /// Name of the stack to deploy or update.
        stack: String,
    },
    /// List stacks.
    #[command(alias = "list")]
    Ls {
        /// Format output: 'table' (default), 'table TEMPLATE', 'json', or a Go TEMPLATE.
        #[arg(long, default_value_t)]
        format: Format,
    },
    /// List the services in a stack.
    Services {
        /// The stack whose services to list.
        stack: String,
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
    /// List the tasks in a stack.
    Ps {
        /// The stack whose tasks to list.
        stack: String,
        #[command(flatten)]
        ps: super::tasks::PsArgs,
    },
    /// Remove one or more stacks.
    #[command(alias = "remove", alias = "down")]
    Rm {
        /// The stacks to remove.
        #[arg(required = true)]
        stacks: Vec<String>,
        /// Do not wait for stack removal (default true: `--detach=false`
        /// waits until every task of the stack has stopped).
        #[arg(
            short,
            long,
            env = "SHOAL_DETACH",
            value_name = "true|false",
            num_args = 0..=1,
            require_equals = true,
            default_value_t = true,
            default_missing_value = "true",
            action = clap::ArgAction::Set
        )]
        detach: bool,
    },
    /// Outputs the final config file, after doing merges and interpolations.
    Config {
        /// Path to a Compose file, or "-" to read from stdin; repeat to
        /// merge several, in order.
        #[arg(short = 'c', long = "compose-file", required = true)]
        compose_file: Vec<PathBuf>,
        /// Skip interpolation and output only merged config.
        #[arg(long)]
        skip_interpolation: bool,
    },
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The files loaded and converted as the stack `name`, with every warning
/// printed: `stack deploy` and `stack config` share this, so that a file
/// `stack config` prints deploys, and both refuse a file with the same
/// words.
fn load(
    files: &[PathBuf],
    name: &str,
    options: compose::Options,
) -> Result<(compose::Project, compose::convert::Stack)> {
    if files.iter().filter(|f| f.as_os_str() == "-").count() > 1 {
        bail!("the standard input (-) can be read once: give -c - at most once");
    }
    let project = compose::load(files, &env, options)?;
    for warning in &project.warnings {
        eprintln!("{warning}");
    }
    let stack = compose::convert::convert(&project, name)?;
    for warning in &stack.warnings {
        eprintln!("{warning}");
    }
    Ok((project, stack))
}

/// `stack config` needs no cluster. It converts the files as a deploy
/// would (under a placeholder stack name), then prints the resolved model
/// as `docker stack config` does.
pub fn config(files: &[PathBuf], skip_interpolation: bool) -> Result<()> {
    let options = compose::Options { skip_interpolation };
    let (project, _) = load(files, "stack", options)?;
    print!("{}", project.to_yaml());
    Ok(())
}

fn in_stack(labels: &std::collections::BTreeMap<String, String>, stack: &str) -> bool {
    labels.get(STACK_LABEL).is_some_and(|s| s == stack)
}

fn service_in_stack(summary: &ServiceSummary, stack: &str) -> bool {
    summary
        .service
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .is_some_and(|spec| in_stack(&spec.labels, stack))
}

pub async fn run(client: &mut Client, command: StackCommand) -> Result<()> {
    match command {
        StackCommand::Deploy {
            compose_file,
            prune,
            detach,
            quiet,
            stack,
        } => {
            let wait = match (detach, quiet) {
                (true, _) => Wait::No,
                (false, false) => Wait::WithProgress,
                (false, true) => Wait::Quietly,
            };
            deploy(client, &compose_file, prune, wait, &stack).await
        }
        StackCommand::Config {
            compose_file,
            skip_interpolation,
        } => config(&compose_file, skip_interpolation),
        StackCommand::Ls { format } => {
            let all = service::services(client).await?;
            stack_listing(&all).print(&format, false)?;
            Ok(())
        }
        StackCommand::Services {
            stack,
            filter,
            quiet,
            format,
        } => {
            let mut filters = service::service_filters(&filter)?;
            filters.add("label", &format!("{STACK_LABEL}={stack}"));
            let all = service::services(client).await?;
            let listing = service::service_listing(&all, &filters);
            if listing.len() == 0 {
                eprintln!("Nothing found in stack: {stack}");
                return Ok(());
            }
            listing.print(&format, quiet)?;
            Ok(())
        }
        StackCommand::Ps { stack, ps } => {
            let listing = super::tasks::fetch_tasks(client, &ps, |filters| {
                filters.add("label", &format!("{STACK_LABEL}={stack}"));
            })
            .await?;
            if listing.len() == 0 {
                bail!("nothing found in stack: {stack}");
            }
            listing.print(&ps.format, ps.quiet)?;
            Ok(())
        }
        StackCommand::Rm { stacks, detach } => {
            let mut failed = false;
            for stack in &stacks {
                let removed = match remove(client, stack).await {
                    Ok(removed) => removed,
                    Err(error) => {
                        eprintln!("Error: {error:#}");
                        failed = true;
                        continue;
                    }
                };
                if !detach && let Err(error) = super::wait::tasks_stopped(client, &removed).await {
                    eprintln!("Error: failed to wait on tasks of stack: {stack}: {error:#}");
                    failed = true;
                }
            }
            if failed {
                bail!("not every stack was removed");
            }
            Ok(())
        }
    }
}

/// Whether `stack deploy` waits for its services to converge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    No,
    WithProgress,
    Quietly,
}

async fn deploy(
    client: &mut Client,
    files: &[PathBuf],
    prune: bool,
    wait: Wait,
    name: &str,
) -> Result<()> {
    let (_, stack) = load(files, name, compose::Options::default())?;

    let networks = client
        .list_networks(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .networks;
    let network_named = |n: &str| {
        networks
            .iter()
            .any(|x| x.spec.as_ref().is_some_and(|s| s.name == n))
    };
    for external in &stack.external_networks {
        if !network_named(external) {
            bail!(
                "network {external:?} is declared as external, but could not be found: create it first \
                 (shoal network create -d overlay --attachable {external})"
            );
        }
    }
    for network in &stack.networks {
        if !network_named(&network.name) {
            println!("Creating network {}", network.name);
            client
                .create_network(network.clone())
                .await
                .map_err(status_error)
                .with_context(|| format!("creating network {}", network.name))?;
        }
    }

    for kind in [Kind::Secret, Kind::Config] {
        let wanted = match kind {
            Kind::Secret => &stack.secrets,
            Kind::Config => &stack.configs,
        };
        ensure_file_objects(client, kind, wanted, files).await?;
    }

    let existing = service::services(client).await?;
    let mut touched = Vec::new();
    for spec in &stack.services {
        let current = existing
            .iter()
            .filter_map(|s| s.service.as_ref())
            .find(|s| s.spec.as_ref().is_some_and(|x| x.name == spec.name));
        let id = match current {
            Some(current) => {
                let id = current
                    .meta
                    .as_ref()
                    .map(|m| m.id.clone())
                    .unwrap_or_default();
                let before = current.meta.as_ref().map_or(0, |m| m.version);
                let updated = client
                    .update_service(UpdateServiceRequest {
                        id: id.clone(),
                        version: before,
                        spec: Some(spec.clone()),
                        rollback: false,
                    })
                    .await
                    .map_err(status_error)
                    .with_context(|| format!("updating service {}", spec.name))?
                    .into_inner();
                if updated.meta.as_ref().map_or(0, |m| m.version) != before {
                    println!("Updating service {} (id: {id})", spec.name);
                }
                id
            }
            None => {
                println!("Creating service {}", spec.name);
                client
                    .create_service(spec.clone())
                    .await
                    .map_err(status_error)
                    .with_context(|| format!("creating service {}", spec.name))?
                    .into_inner()
                    .meta
                    .map(|m| m.id)
                    .unwrap_or_default()
            }
        };
        touched.push(id);
    }
    if prune {
        let wanted: BTreeSet<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
        for summary in existing.iter().filter(|s| service_in_stack(s, name)) {
            let Some(service) = &summary.service else {
                continue;
            };
            let service_name = service.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("");
            if !wanted.contains(service_name) {
                println!("Removing service {service_name}");
                client
                    .remove_service(IdRequest {
                        id: service
                            .meta
                            .as_ref()
                            .map(|m| m.id.clone())
                            .unwrap_or_default(),
                    })
                    .await
                    .map_err(status_error)?;
            }
        }
    }
    match wait {
        Wait::No => {}
        Wait::WithProgress => progress::converge(client, &touched, false).await?,
        Wait::Quietly => progress::converge_with(client, &touched, false, true).await?,
    }
    Ok(())
}

/// The stack's secrets (or configs): external ones must exist, file ones
/// are created, or kept if their content did not change.
async fn ensure_file_objects(
    client: &mut Client,
    kind: Kind,
    wanted: &[FileObject],
    files: &[PathBuf],
) -> Result<()> {
    let existing = objects::list(client, kind).await?;
    for object in wanted {
        let id = existing
            .iter()
            .find(|e| e.name == object.name)
            .map(|e| e.meta.id.clone());
        match (id, &object.data) {
            (None, None) => bail!(
                "{} {:?} is declared as external ({}), but could not be found",
                kind.word(),
                object.name,
                object.declared
            ),
            (Some(_), None) => {}
            (None, Some(data)) => {
                println!("Creating {} {}", kind.word(), object.name);
                kind.put(client, None, object, data)
                    .await
                    .map_err(status_error)
                    .with_context(|| format!("creating {} {}", kind.word(), object.name))?;
            }
            (Some(id), Some(data)) => kind
                .put(client, Some(id), object, data)
                .await
                .map_err(status_error)
                .with_context(|| format!("{} ({})", object.declared, files_list(files)))?,
        }
    }
    Ok(())
}

fn files_list(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Docker's order: services, secrets, configs, then networks once no task
/// holds them. Returns the ids of the services removed. A stack with
/// nothing in it is no error (Docker says so on stderr and goes on).
async fn remove(client: &mut Client, stack: &str) -> Result<Vec<String>> {
    let mut services: Vec<_> = service::services(client)
        .await?
        .into_iter()
        .filter(|s| service_in_stack(s, stack))
        .filter_map(|s| s.service)
        .collect();
    services.sort_by(|a, b| service::service_name(a).cmp(service::service_name(b)));
    let networks: Vec<_> = client
        .list_networks(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .networks
        .into_iter()
        .filter(|n| n.spec.as_ref().is_some_and(|s| in_stack(&s.labels, stack)))
        .collect();
    let mut files = Vec::new();
    for kind in [Kind::Secret, Kind::Config] {
        for listed in objects::list(client, kind).await? {
            if in_stack(&listed.labels, stack) {
                files.push((kind, listed));
            }
        }
    }
    if services.is_empty() && networks.is_empty() && files.is_empty() {
        eprintln!("Nothing found in stack: {stack}");
        return Ok(Vec::new());
    }
    for s in &services {
        println!("Removing service {}", service::service_name(s));
        client
            .remove_service(IdRequest {
                id: service::service_id(s).to_owned(),
            })
            .await
            .map_err(status_error)?;
    }
    for (kind, listed) in files {
        println!("Removing {} {}", kind.word(), listed.name);
        kind.remove(client, listed.meta.id)
            .await
            .map_err(status_error)?;
    }
    for n in &networks {
        let name = n.spec.as_ref().map(|x| x.name.as_str()).unwrap_or("");
        println!("Removing network {name}");
        let id = n.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
        // The removed services' tasks release the network as they stop:
        // the manager deletes no network a running task is plugged into.
        let mut tries = 0;
        loop {
            match client.remove_network(IdRequest { id: id.clone() }).await {
                Ok(_) => break,
                Err(status) if status.code() == tonic::Code::FailedPrecondition && tries < 60 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(status) => {
                    return Err(status_error(status))
                        .with_context(|| format!("removing network {name}"));
                }
            }
        }
    }
    Ok(services
        .iter()
        .map(|s| service::service_id(s).to_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        stack: StackCommand,
    }

    fn parse(args: &[&str]) -> StackCommand {
        Cli::try_parse_from([&["stack"], args].concat())
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .stack
    }

    fn deploy_detach(args: &[&str]) -> (bool, bool) {
        let all = [&["deploy", "-c", "f.yml"], args, &["app"]].concat();
        match parse(&all) {
            StackCommand::Deploy { detach, quiet, .. } => (detach, quiet),
            _ => panic!("deploy"),
        }
    }

    #[test]
    fn deploy_returns_at_once_unless_told_to_wait_as_docker_28() {
        assert_eq!(deploy_detach(&[]), (true, false));
        assert_eq!(deploy_detach(&["-d"]), (true, false));
        assert_eq!(deploy_detach(&["--detach=false"]), (false, false));
        assert_eq!(deploy_detach(&["--detach=false", "-q"]), (false, true));
        assert_eq!(deploy_detach(&["--detach=true"]), (true, false));
    }

    #[test]
    fn rm_returns_at_once_unless_told_to_wait() {
        let detach = |args: &[&str]| match parse(&[&["rm"], args, &["app"]].concat()) {
            StackCommand::Rm { detach, .. } => detach,
            _ => panic!("rm"),
        };
        assert!(detach(&[]));
        assert!(detach(&["-d"]));
        assert!(!detach(&["--detach=false"]));
    }
}
