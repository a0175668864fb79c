//! `shoal node ls|inspect|update|promote|demote|rm`.

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::json;
use shoal_api::pb::{
    Availability, Node, NodeRole, NodeState, RemoveNodeRequest, UpdateNodeRequest,
};

use super::resolve;
use crate::{
    client::{self, Client, status_error},
    output::{Format, Listing, print_inspect, rfc3339, title},
};

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List nodes in the cluster.
    #[command(alias = "list")]
    Ls {
        /// Only display IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Print an aligned table or one JSON object per line.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Display detailed information on one or more nodes.
    Inspect {
        /// The nodes to inspect (ID or hostname).
        #[arg(required = true)]
        nodes: Vec<String>,
        /// Print the information in a human friendly format.
        #[arg(long)]
        pretty: bool,
    },
    /// Update a node's availability or labels.
    Update {
        /// The node to update (ID or hostname).
        node: String,
        /// Availability of the node: drain moves its tasks elsewhere.
        #[arg(long, value_parser = ["active", "pause", "drain"])]
        availability: Option<String>,
        /// Add or update a node label (key=value or key); repeatable.
        #[arg(long = "label-add")]
        label_add: Vec<String>,
        /// Remove a node label if it exists; repeatable.
        #[arg(long = "label-rm")]
        label_rm: Vec<String>,
    },
    /// Promote one or more nodes to manager.
    Promote {
        /// The nodes to promote (ID or hostname).
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Demote one or more managers to worker.
    Demote {
        /// The managers to demote (ID or hostname).
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Remove one or more nodes from the cluster.
    #[command(alias = "remove")]
    Rm {
        /// The nodes to remove (ID or hostname).
        #[arg(required = true)]
        nodes: Vec<String>,
        /// Remove a node even if it is not down.
        #[arg(short, long)]
        force: bool,
    },
}

fn id(n: &Node) -> &str {
    n.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

fn hostname(n: &Node) -> &str {
    n.description
        .as_ref()
        .map(|d| d.hostname.as_str())
        .unwrap_or("")
}

fn manager_status(n: &Node) -> String {
    match &n.manager_status {
        Some(m) if m.leader => "Leader".into(),
        Some(m) => title(&m.reachability),
        None => String::new(),
    }
}

pub async fn run(client: &mut Client, command: NodeCommand) -> Result<()> {
    let mut nodes = client::nodes(client).await?;
    nodes.sort_by(|a, b| hostname(a).cmp(hostname(b)).then(id(a).cmp(id(b))));
    match command {
        NodeCommand::Ls { quiet, format } => {
            let mut listing = Listing::new(&[
                ("ID", "ID"),
                ("HOSTNAME", "Hostname"),
                ("STATUS", "Status"),
                ("AVAILABILITY", "Availability"),
                ("MANAGER STATUS", "ManagerStatus"),
                ("ENGINE VERSION", "EngineVersion"),
            ]);
            for n in &nodes {
                listing.row(vec![
                    id(n).to_owned(),
                    hostname(n).to_owned(),
                    title(
                        n.status
                            .as_ref()
                            .map(|s| s.state())
                            .unwrap_or_default()
                            .word(),
                    ),
                    title(
                        n.spec
                            .as_ref()
                            .map(|s| s.availability())
                            .unwrap_or_default()
                            .word(),
                    ),
                    manager_status(n),
                    n.description
                        .as_ref()
                        .map(|d| d.engine_version.clone())
                        .unwrap_or_default(),
                ]);
            }
            listing.print(format, quiet);
        }
        NodeCommand::Inspect {
            nodes: queries,
            pretty,
        } => {
            let mut out = Vec::new();
            for q in &queries {
                let n = resolve("node", q, &nodes, id, hostname)?;
                if pretty {
                    print_pretty(n);
                } else {
                    out.push(inspect_json(n));
                }
            }
            if !pretty {
                print_inspect(out)?;
            }
        }
        NodeCommand::Update {
            node,
            availability,
            label_add,
            label_rm,
        } => {
            let n = resolve("node", &node, &nodes, id, hostname)?;
            let mut spec = n.spec.clone().unwrap_or_default();
            if let Some(a) = availability {
                spec.availability = Availability::from_word(&a).unwrap_or_default() as i32;
            }
            for label in label_add {
                let (k, v) = label.split_once('=').unwrap_or((label.as_str(), ""));
                if k.is_empty() {
                    bail!("invalid label {label:?}: expected key=value or key");
                }
                spec.labels.insert(k.to_owned(), v.to_owned());
            }
            for k in label_rm {
                if spec.labels.remove(&k).is_none() {
                    bail!("key {k} doesn't exist in node's labels");
                }
            }
            update(client, n, spec).await?;
            println!("{}", id(n));
        }
        NodeCommand::Promote { nodes: queries } => {
            set_role(client, &queries, NodeRole::Manager).await?
        }
        NodeCommand::Demote { nodes: queries } => {
            set_role(client, &queries, NodeRole::Worker).await?
        }
        NodeCommand::Rm {
            nodes: queries,
            force,
        } => {
            for q in &queries {
                let n = resolve("node", q, &nodes, id, hostname)?;
                client
                    .remove_node(RemoveNodeRequest {
                        id: id(n).to_owned(),
                        force,
                    })
                    .await
                    .map_err(status_error)?;
                println!("{}", q);
            }
        }
    }
    Ok(())
}

/// `promote` and `demote`.
pub async fn set_role(client: &mut Client, queries: &[String], role: NodeRole) -> Result<()> {
    let nodes = client::nodes(client).await?;
    for q in queries {
        let n = resolve("node", q, &nodes, id, hostname)?;
        if n.role() == role && n.spec.as_ref().map(|s| s.desired_role()) == Some(role) {
            println!("Node {q} is already a {}.", role.word());
            continue;
        }
        let mut spec = n.spec.clone().unwrap_or_default();
        spec.desired_role = role as i32;
        let updated = update(client, n, spec).await?;
        match role {
            NodeRole::Manager if updated.role() != NodeRole::Manager => println!(
                "Node {q} will become a manager when a shoal-manager joins on it (`shoal join-token manager`)."
            ),
            NodeRole::Manager => println!("Node {q} promoted to a manager in the cluster."),
            NodeRole::Worker => println!("Manager {q} demoted in the cluster."),
        }
    }
    Ok(())
}

async fn update(client: &mut Client, n: &Node, spec: shoal_api::pb::NodeSpec) -> Result<Node> {
    Ok(client
        .update_node(UpdateNodeRequest {
            id: id(n).to_owned(),
            version: n.meta.as_ref().map(|m| m.version).unwrap_or(0),
            spec: Some(spec),
        })
        .await
        .map_err(status_error)?
        .into_inner())
}

fn inspect_json(n: &Node) -> serde_json::Value {
    let meta = n.meta.clone().unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let d = n.description.clone().unwrap_or_default();
    let s = n.status.clone().unwrap_or_default();
    let platform = d.platform.unwrap_or_default();
    let resources = d.resources.unwrap_or_default();
    let mut value = json!({
        "ID": meta.id,
        "Version": { "Index": meta.version },
        "CreatedAt": rfc3339(meta.created_at),
        "UpdatedAt": rfc3339(meta.updated_at),
        "Spec": {
            "Labels": spec.labels,
            "Role": spec.desired_role().word(),
            "Availability": spec.availability().word(),
        },
        "Description": {
            "Hostname": d.hostname,
            "Platform": { "Architecture": platform.architecture, "OS": platform.os },
            "Resources": { "NanoCPUs": resources.nano_cpus, "MemoryBytes": resources.memory_bytes },
            "Engine": { "EngineVersion": d.engine_version },
        },
        "Status": { "State": s.state().word(), "Message": s.message, "Addr": s.addr },
    });
    if !d.generic_resources.is_empty() {
        value["Description"]["Resources"]["GenericResources"] =
            crate::commands::service::generic_resources_json(&d.generic_resources);
    }
    if let Some(m) = &n.manager_status {
        value["ManagerStatus"] = json!({
            "Leader": m.leader,
            "Reachability": m.reachability,
            "Addr": m.addr,
            "RaftID": format!("{:x}", m.raft_id),
        });
    }
    value
}

fn print_pretty(n: &Node) {
    let meta = n.meta.clone().unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let d = n.description.clone().unwrap_or_default();
    let s = n.status.clone().unwrap_or_default();
    let platform = d.platform.unwrap_or_default();
    let resources = d.resources.unwrap_or_default();
    println!("ID:\t\t\t{}", meta.id);
    println!("Hostname:\t\t{}", d.hostname);
    println!("Joined at:\t\t{}", rfc3339(meta.created_at));
    println!("Status:");
    println!(" State:\t\t\t{}", title(s.state().word()));
    println!(" Availability:\t\t{}", title(spec.availability().word()));
    println!(" Address:\t\t{}", s.addr);
    if s.state() != NodeState::Ready && !s.message.is_empty() {
        println!(" Message:\t\t{}", s.message);
    }
    if let Some(m) = &n.manager_status {
        println!("Manager Status:");
        println!(" Address:\t\t{}", m.addr);
        println!(" Raft Status:\t\t{}", title(&m.reachability));
        println!(" Leader:\t\t{}", if m.leader { "Yes" } else { "No" });
    }
    if !spec.labels.is_empty() {
        println!("Labels:");
        for (k, v) in &spec.labels {
            println!(" - {k}={v}");
        }
    }
    println!("Platform:");
    println!(" Operating System:\t{}", platform.os);
    println!(" Architecture:\t\t{}", platform.architecture);
    println!("Resources:");
    println!(" CPUs:\t\t\t{}", resources.nano_cpus / 1_000_000_000);
    println!(
        " Memory:\t\t{}",
        crate::commands::service_flags::format_bytes(resources.memory_bytes)
    );
    println!("Engine Version:\t\t{}", d.engine_version);
}
