//! `shoal node ls|ps|inspect|update|promote|demote|rm`.

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::json;
use shoal_api::pb::{
    Availability, Empty, Node, NodeRole, NodeState, RemoveNodeRequest, UpdateNodeRequest,
};

use super::{
    resolve,
    service_flags::parse_allow,
    tasks::{hostname, natural_cmp, node_id, node_id_of, print_tasks, self_node},
};
use crate::{
    client::{self, Client, status_error},
    output::{
        Columns, Filters, Format, Listing, inspect::fail_on_missing, print_inspect_as, rfc3339,
        title,
    },
};

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List nodes in the cluster.
    #[command(alias = "list")]
    Ls {
        /// Filter output based on conditions provided (id, label, membership, name, node.label, role).
        #[arg(short, long = "filter", value_name = "FILTER")]
        filter: Vec<String>,
        /// Only display IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Format output: 'table' (default), 'table TEMPLATE', 'json', or a Go TEMPLATE.
        #[arg(long, default_value_t)]
        format: Format,
    },
    /// List tasks running on one or more nodes, defaults to the node the manager runs on.
    Ps {
        /// The nodes whose tasks to list (ID, hostname or `self`).
        #[arg(default_value = "self")]
        nodes: Vec<String>,
        #[command(flatten)]
        ps: super::tasks::PsArgs,
    },
    /// Display detailed information on one or more nodes.
    Inspect {
        /// The nodes to inspect (ID, hostname or `self`).
        #[arg(required = true)]
        nodes: Vec<String>,
        /// Format output: 'json', 'pretty', or a Go TEMPLATE over the inspect JSON.
        #[arg(short, long)]
        format: Option<String>,
        /// Print the information in a human friendly format.
        #[arg(long)]
        pretty: bool,
    },
    /// Update a node's availability, role or labels.
    Update {
        /// The node to update (ID, hostname or `self`).
        node: String,
        /// Availability of the node: drain moves its tasks elsewhere.
        #[arg(long, value_parser = ["active", "pause", "drain"])]
        availability: Option<String>,
        /// Role of the node: a worker promoted to manager still needs a
        /// shoal-manager joined on it.
        #[arg(long, value_parser = ["worker", "manager"])]
        role: Option<String>,
        /// Add or update a node label (key=value or key); repeatable.
        #[arg(long = "label-add")]
        label_add: Vec<String>,
        /// Remove a node label if it exists; repeatable.
        #[arg(long = "label-rm")]
        label_rm: Vec<String>,
        /// Only these clients (IPv4 CIDRs or addresses, comma-separated;
        /// repeatable) may connect to the ports published on this node.
        #[arg(long = "ingress-allow", value_name = "CIDR[,CIDR]")]
        ingress_allow: Vec<String>,
        /// Remove CIDRs from the node's ingress allow-list; repeatable.
        #[arg(long = "ingress-allow-rm", value_name = "CIDR")]
        ingress_allow_rm: Vec<String>,
        /// Empty the node's ingress allow-list: every client may connect.
        #[arg(long = "ingress-allow-clear")]
        ingress_allow_clear: bool,
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
        /// Force remove a node from the cluster, even if it is not down.
        #[arg(short, long)]
        force: bool,
    },
}

fn id(n: &Node) -> &str {
    node_id_of(n)
}

fn manager_status(n: &Node) -> String {
    match &n.manager_status {
        Some(m) if m.leader => "Leader".into(),
        Some(m) => title(&m.reachability),
        None => String::new(),
    }
}

pub static COLUMNS: Columns = Columns {
    table: "table {{.ID}} {{if .Self}}*{{else}} {{ end }}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}\t{{.EngineVersion}}",
    headers: &[
        ("ID", "ID"),
        ("Self", ""),
        ("Hostname", "HOSTNAME"),
        ("Status", "STATUS"),
        ("Availability", "AVAILABILITY"),
        ("ManagerStatus", "MANAGER STATUS"),
        ("EngineVersion", "ENGINE VERSION"),
        ("TLSStatus", "TLS STATUS"),
    ],
};

/// The keys Docker's `node ls` takes.
pub const FILTER_KEYS: &[&str] = &["id", "label", "membership", "name", "node.label", "role"];

/// `--filter` of `node ls`, with Docker's errors for roles and memberships.
pub fn node_filters(flags: &[String]) -> Result<Filters> {
    let filters = Filters::parse(flags, FILTER_KEYS)?;
    for role in filters.get("role") {
        if NodeRole::from_word(role).is_none() && !role.is_empty() {
            bail!("Invalid role filter: '{role}'");
        }
    }
    for membership in filters.get("membership") {
        if !["accepted", "pending"].contains(&membership.to_lowercase().as_str())
            && !membership.is_empty()
        {
            bail!("Invalid membership filter: '{membership}'");
        }
    }
    Ok(filters)
}

/// Whether `n` passes `filters`. Shoal nodes are accepted when they join
/// (no pending membership) and report no engine labels, which `label`
/// matches in Docker (`node.label` matches the node's own labels).
fn passes(filters: &Filters, n: &Node) -> bool {
    let labels = n.spec.as_ref().map(|s| &s.labels);
    let role_word = n.role().word();
    filters.prefix("name", hostname(n))
        && filters.prefix("id", id(n))
        && filters.labels("label", |_| None)
        && filters.labels("node.label", |k| {
            labels.and_then(|l| l.get(k)).map(String::as_str)
        })
        && (!filters.has("role")
            || filters
                .get("role")
                .iter()
                .any(|r| r.eq_ignore_ascii_case(role_word)))
        && (!filters.has("membership")
            || filters
                .get("membership")
                .iter()
                .any(|m| m.eq_ignore_ascii_case("accepted")))
}

/// `node ls` rows: Docker's node context (`Self` marks the manager's own node).
pub fn node_listing(
    nodes: &[Node],
    filters: &Filters,
    me: Option<&str>,
    root_issuer: &str,
) -> Listing {
    let mut listing = Listing::new(&COLUMNS);
    for n in nodes.iter().filter(|n| passes(filters, n)) {
        let tls = if root_issuer.is_empty() || n.cert_issuer.is_empty() {
            "Unknown"
        } else if n.cert_issuer == root_issuer {
            "Ready"
        } else {
            "Needs Rotation"
        };
        listing.row(json!({
            "ID": id(n),
            "Self": me == Some(id(n)),
            "Hostname": hostname(n),
            "Status": title(n.status.as_ref().map(|s| s.state()).unwrap_or_default().word()),
            "Availability": title(n.spec.as_ref().map(|s| s.availability()).unwrap_or_default().word()),
            "ManagerStatus": manager_status(n),
            "EngineVersion": n.description.as_ref().map(|d| d.engine_version.clone()).unwrap_or_default(),
            "TLSStatus": tls,
        }));
    }
    listing
}

/// The fingerprint the cluster's current root puts in the certificates it
/// issues (as nodes record theirs): empty when it cannot be read.
async fn root_issuer(client: &mut Client) -> String {
    let Ok(info) = client.get_cluster(Empty {}).await else {
        return String::new();
    };
    shoal_pki::certs_from_pem(&info.into_inner().root_ca_pem)
        .ok()
        .and_then(|certs| certs.first().cloned())
        .and_then(|cert| shoal_pki::identity::subject_fingerprint(&cert).ok())
        .unwrap_or_default()
}

/// A node by ID, hostname, unique ID prefix or `self`.
fn find<'a>(query: &str, nodes: &'a [Node], me: Option<&str>) -> Result<&'a Node> {
    let wanted = node_id(query, nodes, me)?;
    nodes
        .iter()
        .find(|n| id(n) == wanted)
        .ok_or_else(|| anyhow::anyhow!("node {query} not found"))
}

pub async fn run(client: &mut Client, command: NodeCommand) -> Result<()> {
    let mut nodes = client::nodes(client).await?;
    nodes.sort_by(|a, b| natural_cmp(hostname(a), hostname(b)).then(id(a).cmp(id(b))));
    let me = self_node(client, &nodes).await;
    let me = me.as_deref();
    match command {
        NodeCommand::Ls {
            filter,
            quiet,
            format,
        } => {
            let filters = node_filters(&filter)?;
            let issuer = root_issuer(client).await;
            node_listing(&nodes, &filters, me, &issuer).print(&format, quiet)?;
        }
        NodeCommand::Ps { nodes: queries, ps } => {
            let mut ids = Vec::new();
            for q in &queries {
                ids.push(id(find(q, &nodes, me)?).to_owned());
            }
            print_tasks(client, &ps, |filters| {
                for node in &ids {
                    filters.add("node", node);
                }
            })
            .await?;
        }
        NodeCommand::Inspect {
            nodes: queries,
            format,
            pretty,
        } => {
            let pretty = pretty || format.as_deref() == Some("pretty");
            let mut out = Vec::new();
            let mut missing = Vec::new();
            for q in &queries {
                let n = match find(q, &nodes, me) {
                    Ok(n) => n,
                    Err(error) => {
                        missing.push(error);
                        continue;
                    }
                };
                if pretty {
                    print_pretty(n);
                } else {
                    out.push(inspect_json(n));
                }
            }
            if !pretty {
                print_inspect_as(out, format.as_deref())?;
            }
            fail_on_missing(missing)?;
        }
        NodeCommand::Update {
            node,
            availability,
            role,
            label_add,
            label_rm,
            ingress_allow,
            ingress_allow_rm,
            ingress_allow_clear,
        } => {
            let n = find(&node, &nodes, me)?;
            let mut spec = n.spec.clone().unwrap_or_default();
            if let Some(a) = availability {
                spec.availability = Availability::from_word(&a).unwrap_or_default() as i32;
            }
            if let Some(r) = role {
                spec.desired_role = NodeRole::from_word(&r).unwrap_or_default() as i32;
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
            if ingress_allow_clear {
                spec.ingress_allow.clear();
            }
            for cidr in ingress_allow_rm {
                let cidr = parse_allow(&cidr, "--ingress-allow-rm")?;
                let before = spec.ingress_allow.len();
                spec.ingress_allow.retain(|c| !cidr.contains(c));
                if spec.ingress_allow.len() == before {
                    bail!("{} is not in the node's ingress allow-list", cidr.join(","));
                }
            }
            for value in ingress_allow {
                for cidr in parse_allow(&value, "--ingress-allow")? {
                    if !spec.ingress_allow.contains(&cidr) {
                        spec.ingress_allow.push(cidr);
                    }
                }
            }
            update(client, n, spec).await?;
            println!("{node}");
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
    if !spec.ingress_allow.is_empty() {
        value["Spec"]["IngressAllow"] = json!(spec.ingress_allow);
    }
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
    if !spec.ingress_allow.is_empty() {
        println!(" Ingress Allow:\t\t{}", spec.ingress_allow.join(", "));
    }
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
