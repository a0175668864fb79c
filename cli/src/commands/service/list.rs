//! `service ls` and `service ps`: filters and listings.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, bail};
use shoal_api::pb::{Node, Service, ServiceSummary, Task, TaskState};

use super::{image, ports, service_id, service_name};
use crate::{
    client::{self, Client},
    output::{Format, Listing, ago, short, title},
};

pub(super) struct Filters {
    desired: Option<Vec<TaskState>>,
    node: Option<String>,
    name: Option<String>,
    id: Option<String>,
}

impl Filters {
    pub(super) fn parse(filters: &[String]) -> Result<Self> {
        let mut out = Filters {
            desired: None,
            node: None,
            name: None,
            id: None,
        };
        for f in filters {
            let (key, value) = f
                .split_once('=')
                .with_context(|| format!("invalid filter {f:?}: expected key=value"))?;
            match key {
                "desired-state" => {
                    let states = match value {
                        "running" => vec![TaskState::Running, TaskState::Ready],
                        "shutdown" => vec![TaskState::Shutdown, TaskState::Remove],
                        "accepted" => vec![TaskState::Accepted],
                        other => bail!(
                            "invalid filter 'desired-state={other}': expected running, shutdown or accepted"
                        ),
                    };
                    out.desired = Some(states);
                }
                "node" => out.node = Some(value.to_owned()),
                "name" => out.name = Some(value.to_owned()),
                "id" => out.id = Some(value.to_owned()),
                other => {
                    bail!("invalid filter {other:?}: expected desired-state, node, name or id")
                }
            }
        }
        Ok(out)
    }
}

/// `service ls` (and `stack services`): one row per service, by name.
pub(crate) fn print_service_list(all: &[ServiceSummary], quiet: bool, format: Format) {
    let mut all: Vec<&ServiceSummary> = all.iter().collect();
    all.sort_by(|a, b| {
        let name = |s: &ServiceSummary| {
            s.service
                .as_ref()
                .map(service_name)
                .unwrap_or("")
                .to_owned()
        };
        name(a).cmp(&name(b))
    });
    let mut listing = Listing::new(&[
        ("ID", "ID"),
        ("NAME", "Name"),
        ("MODE", "Mode"),
        ("REPLICAS", "Replicas"),
        ("IMAGE", "Image"),
        ("PORTS", "Ports"),
    ]);
    for summary in all {
        let Some(s) = &summary.service else { continue };
        let mode = s.spec.as_ref().map(|x| x.mode()).unwrap_or_default();
        listing.row(vec![
            short(service_id(s), false),
            service_name(s).to_owned(),
            super::job::mode_column(mode).to_owned(),
            super::job::replicas_column(summary),
            image(s),
            ports(s),
        ]);
    }
    listing.print(format, quiet);
}

/// `service ps` (and `stack ps`): the tasks of `services`, with their nodes.
pub(crate) async fn print_tasks(
    client: &mut Client,
    services: &[Service],
    filter: &[String],
    no_trunc: bool,
    quiet: bool,
    format: Format,
) -> Result<()> {
    let filters = Filters::parse(filter)?;
    let tasks = client::tasks(client).await?;
    let nodes = client::nodes(client).await?;
    task_listing(services, &tasks, &nodes, &filters, no_trunc, format).print(format, quiet);
    Ok(())
}

/// `service ps`'s rows: per slot (global: per node) the newest task, then
/// its history as ` \_ ` rows.
pub(super) fn task_listing(
    services: &[Service],
    tasks: &[Task],
    nodes: &[Node],
    filters: &Filters,
    no_trunc: bool,
    format: Format,
) -> Listing {
    let hostnames: HashMap<&str, &str> = nodes
        .iter()
        .map(|n| {
            (
                n.meta.as_ref().map(|m| m.id.as_str()).unwrap_or(""),
                n.description
                    .as_ref()
                    .map(|d| d.hostname.as_str())
                    .unwrap_or(""),
            )
        })
        .collect();
    let mut listing = Listing::new(&[
        ("ID", "ID"),
        ("NAME", "Name"),
        ("IMAGE", "Image"),
        ("NODE", "Node"),
        ("DESIRED STATE", "DesiredState"),
        ("CURRENT STATE", "CurrentState"),
        ("ERROR", "Error"),
        ("PORTS", "Ports"),
    ]);
    for service in services {
        let name = service_name(service);
        // Group by slot (global: by node); newest first, the rest as history.
        let mut groups: BTreeMap<(u64, String), Vec<&Task>> = BTreeMap::new();
        for t in tasks.iter().filter(|t| t.service_id == service_id(service)) {
            let key = if t.slot > 0 {
                (t.slot, String::new())
            } else {
                (0, t.node_id.clone())
            };
            groups.entry(key).or_default().push(t);
        }
        for ((slot, node), mut group) in groups {
            group.sort_by_key(|t| {
                std::cmp::Reverse(t.meta.as_ref().map(|m| (m.created_at, m.version)))
            });
            let mut first = true;
            for t in group {
                let task_id = t.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
                let task_name = if slot > 0 {
                    format!("{name}.{slot}")
                } else {
                    format!("{name}.{node}")
                };
                let host = hostnames.get(t.node_id.as_str()).copied().unwrap_or("");
                if filters
                    .desired
                    .as_ref()
                    .is_some_and(|d| !d.contains(&super::job::desired_state(t)))
                {
                    continue;
                }
                if filters
                    .node
                    .as_ref()
                    .is_some_and(|n| n != host && n != &t.node_id)
                {
                    continue;
                }
                if filters
                    .name
                    .as_ref()
                    .is_some_and(|n| !task_name.starts_with(n.as_str()))
                {
                    continue;
                }
                if filters
                    .id
                    .as_ref()
                    .is_some_and(|i| !task_id.starts_with(i.as_str()))
                {
                    continue;
                }
                let status = t.status.clone().unwrap_or_default();
                let display_name = if first {
                    task_name.clone()
                } else {
                    format!(" \\_ {task_name}")
                };
                first = false;
                let error = if status.err.is_empty() {
                    String::new()
                } else if no_trunc || format == Format::Json {
                    status.err.clone()
                } else {
                    format!("\"{}\"", truncate(&status.err, 27))
                };
                listing.row(vec![
                    short(task_id, no_trunc),
                    display_name,
                    t.spec
                        .as_ref()
                        .and_then(|s| s.container.as_ref())
                        .map(|c| c.image.clone())
                        .unwrap_or_default(),
                    host.to_owned(),
                    title(super::job::desired_state(t).word()),
                    format!("{} {}", title(status.state().word()), ago(status.timestamp)),
                    error,
                    String::new(),
                ]);
            }
        }
    }
    listing
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}
