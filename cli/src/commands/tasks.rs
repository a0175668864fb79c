//! Task listings shared by `service ps`, `stack ps` and `node ps`, as
//! Docker's task formatter prints them: tasks sorted by name (service and
//! slot, or node for global services), newest first, older ones of the
//! same slot as ` \_ ` rows in tables; Docker's task filters.

use std::{cmp::Ordering, collections::HashMap};

use anyhow::{Result, bail};
use serde_json::json;
use shoal_api::pb::{Empty, Node, Service, Task, TaskState};

use super::{resolve, service::service_name};
use crate::{
    client::{self, Client},
    output::{Columns, Filters, Format, Listing, listing::ellipsis, title},
};

pub static COLUMNS: Columns = Columns {
    table: "table {{.ID}}\t{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}\t{{.Ports}}",
    headers: &[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Image", "IMAGE"),
        ("Node", "NODE"),
        ("DesiredState", "DESIRED STATE"),
        ("CurrentState", "CURRENT STATE"),
        ("Error", "ERROR"),
        ("Ports", "PORTS"),
    ],
};

/// The keys Docker's task listings take.
pub const FILTER_KEYS: &[&str] = &[
    "desired-state",
    "id",
    "label",
    "name",
    "node",
    "runtime",
    "service",
];

/// The flags Docker's `service ps`, `stack ps` and `node ps` share.
#[derive(clap::Args)]
pub struct PsArgs {
    /// Filter output based on conditions provided (desired-state, id, label, name, node, service).
    #[arg(short, long = "filter", value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Format output: 'table' (default), 'table TEMPLATE', 'json', or a Go TEMPLATE.
    #[arg(long, default_value_t)]
    pub format: Format,
    /// Do not map IDs to Names.
    #[arg(long)]
    pub no_resolve: bool,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only display task IDs.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Prints the tasks `scope` narrows the user's filters to (the services
/// of `service ps`, the nodes of `node ps`).
pub async fn print_tasks(
    client: &mut Client,
    args: &PsArgs,
    scope: impl FnOnce(&mut Filters),
) -> Result<()> {
    fetch_tasks(client, args, scope)
        .await?
        .print(&args.format, args.quiet)?;
    Ok(())
}

/// The rows `print_tasks` prints.
pub async fn fetch_tasks(
    client: &mut Client,
    args: &PsArgs,
    scope: impl FnOnce(&mut Filters),
) -> Result<Listing> {
    let services: Vec<Service> = super::service::services(client)
        .await?
        .into_iter()
        .filter_map(|s| s.service)
        .collect();
    let nodes = client::nodes(client).await?;
    let me = if args.filter.iter().any(|f| f.contains("self")) {
        self_node(client, &nodes).await
    } else {
        None
    };
    let mut filters = task_filters(&args.filter, &services, &nodes, me.as_deref())?;
    scope(&mut filters);
    let tasks = client::tasks(client).await?;
    let options = PsOptions {
        no_trunc: args.no_trunc,
        no_resolve: args.no_resolve,
        format: &args.format,
    };
    Ok(task_listing(&services, &tasks, &nodes, &filters, &options))
}

/// The node whose manager the CLI talks to (Docker's "self"): the one
/// holding that manager's Raft ID.
pub async fn self_node(client: &mut Client, nodes: &[Node]) -> Option<String> {
    let raft_id = client
        .get_version(Empty {})
        .await
        .ok()?
        .into_inner()
        .raft_id;
    nodes
        .iter()
        .find(|n| {
            n.manager_status
                .as_ref()
                .is_some_and(|m| m.raft_id == raft_id)
        })
        .map(|n| node_id_of(n).to_owned())
}

/// How `ps` prints: `--no-trunc`, `--no-resolve`, `--format`, `-q`.
pub struct PsOptions<'a> {
    pub no_trunc: bool,
    pub no_resolve: bool,
    pub format: &'a Format,
}

/// `--filter` of a task listing, with `node` and `service` values (IDs,
/// names or ID prefixes, `self` for the node the CLI talks to) turned into
/// IDs as Docker's daemon does.
pub fn task_filters(
    flags: &[String],
    services: &[Service],
    nodes: &[Node],
    self_node: Option<&str>,
) -> Result<Filters> {
    let mut filters = Filters::parse(flags, FILTER_KEYS)?;
    for state in filters.get("desired-state") {
        if TaskState::from_word(state).is_none() {
            bail!("Invalid desired-state filter: '{state}'");
        }
    }
    let node_ids = filters
        .get("node")
        .iter()
        .map(|q| node_id(q, nodes, self_node))
        .collect::<Result<Vec<_>>>()?;
    let service_ids = filters
        .get("service")
        .iter()
        .map(|q| {
            resolve(
                "service",
                q,
                services,
                super::service::service_id,
                service_name,
            )
            .map(|s| super::service::service_id(s).to_owned())
        })
        .collect::<Result<Vec<_>>>()?;
    filters.set("node", node_ids);
    filters.set("service", service_ids);
    Ok(filters)
}

/// A node named as Docker's `node.Reference` takes it: `self`, an ID, a
/// hostname or a unique ID prefix.
pub fn node_id(query: &str, nodes: &[Node], self_node: Option<&str>) -> Result<String> {
    if query == "self" {
        return self_node
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("this manager's node is not in the node list"));
    }
    let node = resolve("node", query, nodes, node_id_of, hostname)?;
    Ok(node_id_of(node).to_owned())
}

pub fn node_id_of(n: &Node) -> &str {
    n.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

pub fn hostname(n: &Node) -> &str {
    n.description
        .as_ref()
        .map(|d| d.hostname.as_str())
        .unwrap_or("")
}

fn task_id(t: &Task) -> &str {
    t.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// Whether `task` passes `filters` (Docker's task filters, as swarmkit
/// applies them).
fn passes(filters: &Filters, task: &Task, service: &Service) -> bool {
    let swarm_name = format!(
        "{}.{}.{}",
        service_name(service),
        slot_or_node(task),
        task_id(task)
    );
    let labels = service.spec.as_ref().map(|s| &s.labels);
    let desired = desired_state(task);
    filters.prefix("name", &swarm_name)
        && filters.prefix("id", task_id(task))
        && filters.labels("label", |k| {
            labels.and_then(|l| l.get(k)).map(String::as_str)
        })
        && filters.exact("service", &task.service_id)
        && filters.exact("node", &task.node_id)
        && filters.exact("runtime", "container")
        && (!filters.has("desired-state")
            || filters.get("desired-state").iter().any(|s| {
                // `running` takes the tasks about to run too, `shutdown`
                // the ones being removed (what a user asking means).
                match TaskState::from_word(s) {
                    Some(TaskState::Running) => {
                        matches!(desired, TaskState::Running | TaskState::Ready)
                    }
                    Some(TaskState::Shutdown) => {
                        matches!(desired, TaskState::Shutdown | TaskState::Remove)
                    }
                    Some(state) => desired == state,
                    None => false,
                }
            }))
}

/// The desired state `ps` shows and filters on (the one seam for what a
/// job's finished task should read as).
fn desired_state(task: &Task) -> TaskState {
    super::service::job::desired_state(task)
}

fn slot_or_node(task: &Task) -> String {
    if task.slot > 0 {
        task.slot.to_string()
    } else {
        task.node_id.clone()
    }
}

/// The rows of `tasks` (of `services`) that pass `filters`.
pub fn task_listing(
    services: &[Service],
    tasks: &[Task],
    nodes: &[Node],
    filters: &Filters,
    options: &PsOptions,
) -> Listing {
    let by_id: HashMap<&str, &Service> = services
        .iter()
        .map(|s| (super::service::service_id(s), s))
        .collect();
    let hostnames: HashMap<&str, &str> =
        nodes.iter().map(|n| (node_id_of(n), hostname(n))).collect();
    let mut rows: Vec<(String, &Task, &Service)> = tasks
        .iter()
        .filter_map(|t| {
            let service = by_id.get(t.service_id.as_str())?;
            passes(filters, t, service).then_some(())?;
            let prefix = if options.no_resolve {
                t.service_id.as_str()
            } else {
                service_name(service)
            };
            Some((format!("{prefix}.{}", slot_or_node(t)), t, *service))
        })
        .collect();
    rows.sort_by(|(a, ta, _), (b, tb, _)| {
        natural_cmp(a, b).then_with(|| {
            let created = |t: &Task| t.meta.as_ref().map(|m| (m.created_at, m.version));
            created(tb).cmp(&created(ta))
        })
    });
    let trunc = !options.no_trunc;
    let mut listing = Listing::new(&COLUMNS);
    let mut previous = String::new();
    for (name, task, _) in rows {
        let shown = if name == previous && options.format.is_table() {
            format!(" \\_ {name}")
        } else {
            name.clone()
        };
        previous = name;
        let status = task.status.clone().unwrap_or_default();
        let image = task
            .spec
            .as_ref()
            .and_then(|s| s.container.as_ref())
            .map(|c| c.image.clone())
            .unwrap_or_default();
        let node = if options.no_resolve {
            task.node_id.clone()
        } else {
            hostnames
                .get(task.node_id.as_str())
                .map(|h| h.to_string())
                .unwrap_or_default()
        };
        let error = match (status.err.as_str(), trunc) {
            ("", _) => String::new(),
            (err, true) => format!("\"{}\"", ellipsis(err, 30)),
            (err, false) => format!("\"{err}\""),
        };
        listing.row(json!({
            "ID": crate::output::short(task_id(task), !trunc),
            "Name": shown,
            "Image": if trunc { familiar_image(&image) } else { image },
            "Node": node,
            "DesiredState": title(desired_state(task).word()),
            "CurrentState": format!(
                "{} {} ago{}",
                title(status.state().word()),
                shoal_api::display::human_duration(shoal_api::now_ms() - status.timestamp)
                    .to_lowercase(),
                health_suffix(&status)
            ),
            "Error": error,
            "Ports": "",
        }));
    }
    listing
}

/// A running task's health as `docker ps` words it (`Up 2 minutes
/// (healthy)`): ` (healthy)`, or ` (unhealthy)` from its first failed
/// check on (it takes no new connections then); nothing without a check.
fn health_suffix(status: &shoal_api::pb::TaskStatus) -> &'static str {
    use shoal_api::pb::{TaskHealth, TaskState};
    if status.state() != TaskState::Running {
        return "";
    }
    match status.health() {
        TaskHealth::Healthy => " (healthy)",
        TaskHealth::Failing => " (unhealthy)",
        TaskHealth::Starting => " (health: starting)",
        TaskHealth::None => "",
    }
}

/// An image as tables show it: without its digest.
fn familiar_image(image: &str) -> String {
    image.split('@').next().unwrap_or(image).to_owned()
}

/// Go's `sortorder.NaturalLess`: digit runs compare as numbers, so
/// `web.2` sorts before `web.10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (ra, rb) = (run(a), run(b));
                let trim = |s: &[u8]| {
                    let zeros = s.iter().take_while(|c| **c == b'0').count();
                    s[zeros..].to_vec()
                };
                let (na, nb) = (trim(&a[..ra]), trim(&b[..rb]));
                let order = na.len().cmp(&nb.len()).then_with(|| na.cmp(&nb));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[ra..];
                b = &b[rb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

#[cfg(test)]
mod tests;
