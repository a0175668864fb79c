//! `shoal service create|ls|ps|inspect|scale|rm`.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use shoal_api::pb::{
    ContainerSpec, Empty, EndpointSpec, HealthConfig, IdRequest, Node, Placement,
    ResourceRequirements, Resources, RestartCondition, RestartPolicy, Service, ServiceMode,
    ServiceSpec, ServiceSummary, Task, TaskSpec, TaskState, UpdateServiceRequest,
};

use super::{resolve, service_flags as flags};
use crate::{
    client::{self, Client, status_error},
    output::{Format, Listing, ago, print_inspect, rfc3339, short, title},
};

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
    /// Fetch the output of a service's tasks, from every node.
    Logs {
        /// The service whose output to fetch (ID or name).
        service: String,
        /// Follow the output.
        #[arg(short, long)]
        follow: bool,
        /// Lines to show from the end of each task's output ("all" or a number).
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
    },
    /// Update a service; changed tasks are replaced as its update config says.
    Update(Box<super::service_update::UpdateArgs>),
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
    },
    /// Remove one or more services.
    #[command(alias = "remove")]
    Rm {
        /// The services to remove (ID or name).
        #[arg(required = true)]
        services: Vec<String>,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// The image to run (must be on the nodes: no registry is assumed).
    image: String,
    /// Command and arguments, in place of the image's CMD.
    #[arg(trailing_var_arg = true)]
    command: Vec<String>,
    /// Service name.
    #[arg(long)]
    name: Option<String>,
    /// Number of tasks (replicated mode; default 1).
    #[arg(long)]
    replicas: Option<u64>,
    /// Service mode: a number of replicas, or one task on every node.
    #[arg(long, value_parser = ["replicated", "global"], default_value = "replicated")]
    mode: String,
    /// Placement constraint, e.g. node.labels.zone==east; repeatable.
    #[arg(long)]
    constraint: Vec<String>,
    /// Placement preference, e.g. spread=node.labels.zone; repeatable.
    #[arg(long = "placement-pref")]
    placement_pref: Vec<String>,
    /// Maximum number of tasks per node (0: unlimited).
    #[arg(long)]
    replicas_max_per_node: Option<u64>,
    /// Reserve CPUs (e.g. 0.5): only nodes with that much unreserved get tasks.
    #[arg(long)]
    reserve_cpu: Option<String>,
    /// Reserve memory (e.g. 512m, 1g): only nodes with that much unreserved get tasks.
    #[arg(long)]
    reserve_memory: Option<String>,
    /// Limit CPUs (e.g. 1.5).
    #[arg(long)]
    limit_cpu: Option<String>,
    /// Limit memory (e.g. 256m).
    #[arg(long)]
    limit_memory: Option<String>,
    /// Set environment variables (KEY=VALUE); repeatable.
    #[arg(short, long)]
    env: Vec<String>,
    /// Service labels (key=value); repeatable.
    #[arg(short, long)]
    label: Vec<String>,
    /// Container labels (key=value); repeatable.
    #[arg(long)]
    container_label: Vec<String>,
    /// Restart a task's container when this condition is met.
    #[arg(long, value_parser = ["none", "on-failure", "any"])]
    restart_condition: Option<String>,
    /// Delay between restart attempts (e.g. 5s).
    #[arg(long)]
    restart_delay: Option<String>,
    /// Maximum number of restarts before giving up.
    #[arg(long)]
    restart_max_attempts: Option<u64>,
    /// Window used to evaluate the restart policy (e.g. 1m).
    #[arg(long)]
    restart_window: Option<String>,
    /// Publish a port: published:target[/proto][,mode=ingress|host]; repeatable.
    #[arg(short, long)]
    publish: Vec<String>,
    /// Network to attach to; repeatable.
    #[arg(long)]
    network: Vec<String>,
    /// Secret to expose: name or source=…,target=…,uid=…,gid=…,mode=…; repeatable.
    #[arg(long)]
    secret: Vec<String>,
    /// Config to expose: name or source=…,target=…,uid=…,gid=…,mode=…; repeatable.
    #[arg(long)]
    config: Vec<String>,
    /// Attach a filesystem mount (type=bind|volume|tmpfs,source=…,target=…); repeatable.
    #[arg(long)]
    mount: Vec<String>,
    /// Command to run to check health: a shell command, or a JSON array
    /// for images without a shell (`'["CMD","/echo","healthcheck"]'`).
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between running the check (e.g. 30s).
    #[arg(long)]
    health_interval: Option<String>,
    /// Maximum time to allow one check to run (e.g. 5s).
    #[arg(long)]
    health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long)]
    health_retries: Option<u64>,
    /// Start period for the container to initialize before failures count (e.g. 10s).
    #[arg(long)]
    health_start_period: Option<String>,
    /// Disable any container-specified health check.
    #[arg(long)]
    no_healthcheck: bool,
    /// Time to wait before force killing a container (e.g. 10s).
    #[arg(long)]
    stop_grace_period: Option<String>,
    /// Signal to stop the container (e.g. SIGTERM).
    #[arg(long)]
    stop_signal: Option<String>,
    /// Container hostname (templates such as {{.Task.Slot}} allowed).
    #[arg(long)]
    hostname: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Endpoint mode (vip or dnsrr).
    #[arg(long, value_parser = ["vip", "dnsrr"])]
    endpoint_mode: Option<String>,
    /// Return at once instead of showing the tasks' progress.
    #[arg(short, long, env = "SHOAL_DETACH")]
    detach: bool,
    /// Print only the service ID.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    update: super::service_update::UpdateFlags,
    #[command(flatten)]
    rollback: super::service_update::RollbackFlags,
}

impl CreateArgs {
    fn spec(self) -> Result<ServiceSpec> {
        let mode = ServiceMode::from_word(&self.mode).unwrap_or_default();
        if mode == ServiceMode::Global && self.replicas.is_some() {
            bail!("--replicas can only be used with replicated mode");
        }
        if mode == ServiceMode::Global && self.replicas_max_per_node.is_some() {
            bail!("--replicas-max-per-node can only be used with replicated mode");
        }
        let resources =
            |cpu: &Option<String>, memory: &Option<String>| -> Result<Option<Resources>> {
                if cpu.is_none() && memory.is_none() {
                    return Ok(None);
                }
                Ok(Some(Resources {
                    nano_cpus: cpu
                        .as_deref()
                        .map(flags::parse_cpus)
                        .transpose()?
                        .unwrap_or(0),
                    memory_bytes: memory
                        .as_deref()
                        .map(flags::parse_bytes)
                        .transpose()?
                        .unwrap_or(0),
                }))
            };
        let reservations = resources(&self.reserve_cpu, &self.reserve_memory)?;
        let limits = resources(&self.limit_cpu, &self.limit_memory)?;
        let restart = RestartPolicy {
            condition: self
                .restart_condition
                .as_deref()
                .map(|c| RestartCondition::from_word(c).unwrap_or_default())
                .unwrap_or_default() as i32,
            delay_ms: self
                .restart_delay
                .as_deref()
                .map(flags::duration_ms)
                .transpose()?,
            max_attempts: self.restart_max_attempts.unwrap_or(0),
            window_ms: self
                .restart_window
                .as_deref()
                .map(flags::duration_ms)
                .transpose()?
                .unwrap_or(0),
        };
        let mut spread = Vec::new();
        for pref in &self.placement_pref {
            let Some(descriptor) = pref.strip_prefix("spread=") else {
                bail!("invalid --placement-pref {pref:?}: expected spread=node.labels.NAME");
            };
            spread.push(descriptor.to_owned());
        }
        let healthcheck = if self.no_healthcheck {
            Some(HealthConfig {
                test: vec!["NONE".into()],
                ..Default::default()
            })
        } else if self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
        {
            Some(HealthConfig {
                test: match &self.health_cmd {
                    Some(cmd) => health_test(cmd)?,
                    None => Vec::new(),
                },
                interval_ms: self
                    .health_interval
                    .as_deref()
                    .map(flags::duration_ms)
                    .transpose()?
                    .unwrap_or(0),
                timeout_ms: self
                    .health_timeout
                    .as_deref()
                    .map(flags::duration_ms)
                    .transpose()?
                    .unwrap_or(0),
                retries: self.health_retries.unwrap_or(0),
                start_period_ms: self
                    .health_start_period
                    .as_deref()
                    .map(flags::duration_ms)
                    .transpose()?
                    .unwrap_or(0),
            })
        } else {
            None
        };
        let name = match self.name {
            Some(n) => n,
            None => bail!("--name is required (Shoal does not invent service names)"),
        };
        let mut spec = ServiceSpec {
            name,
            labels: self
                .label
                .iter()
                .map(|l| flags::parse_label(l))
                .collect::<Result<BTreeMap<_, _>>>()?,
            mode: mode as i32,
            replicas: match mode {
                ServiceMode::Replicated => self.replicas.unwrap_or(1),
                ServiceMode::Global => 0,
            },
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: self.image,
                    args: self.command,
                    env: self
                        .env
                        .iter()
                        .map(|e| flags::parse_env(e))
                        .collect::<Result<_>>()?,
                    labels: self
                        .container_label
                        .iter()
                        .map(|l| flags::parse_label(l))
                        .collect::<Result<_>>()?,
                    hostname: self.hostname.unwrap_or_default(),
                    user: self.user.unwrap_or_default(),
                    dir: self.workdir.unwrap_or_default(),
                    mounts: self
                        .mount
                        .iter()
                        .map(|m| flags::parse_mount(m))
                        .collect::<Result<_>>()?,
                    secrets: self
                        .secret
                        .iter()
                        .map(|s| flags::parse_secret(s))
                        .collect::<Result<_>>()?,
                    configs: self
                        .config
                        .iter()
                        .map(|c| flags::parse_config(c))
                        .collect::<Result<_>>()?,
                    healthcheck,
                    stop_grace_period_ms: self
                        .stop_grace_period
                        .as_deref()
                        .map(flags::duration_ms)
                        .transpose()?,
                    stop_signal: self.stop_signal.unwrap_or_default(),
                    ..Default::default()
                }),
                resources: (reservations.is_some() || limits.is_some()).then_some(
                    ResourceRequirements {
                        limits,
                        reservations,
                    },
                ),
                restart: Some(restart),
                placement: Some(Placement {
                    constraints: self.constraint,
                    spread,
                    max_replicas_per_node: self.replicas_max_per_node.unwrap_or(0),
                }),
                networks: self
                    .network
                    .iter()
                    .map(|n| flags::parse_network(n))
                    .collect::<Result<_>>()?,
                force_update: 0,
            }),
            endpoint: Some(EndpointSpec {
                mode: self.endpoint_mode.unwrap_or_else(|| "vip".into()),
                ports: self
                    .publish
                    .iter()
                    .map(|p| flags::parse_publish(p))
                    .collect::<Result<_>>()?,
            }),
            update: None,
            rollback: None,
        };
        self.update.apply(&mut spec)?;
        self.rollback.apply(&mut spec)?;
        Ok(spec)
    }
}

/// Docker's health test for `--health-cmd`: `CMD-SHELL cmd`, or the exec
/// form given as a JSON array.
fn health_test(cmd: &str) -> Result<Vec<String>> {
    if !cmd.trim_start().starts_with('[') {
        return Ok(vec!["CMD-SHELL".to_owned(), cmd.to_owned()]);
    }
    let words: Vec<String> = serde_json::from_str(cmd).with_context(|| {
        format!("invalid --health-cmd {cmd:?}: expected a JSON array of strings")
    })?;
    match words.first().map(String::as_str) {
        Some("CMD") | Some("CMD-SHELL") | Some("NONE") => Ok(words),
        _ => Ok([vec!["CMD".to_owned()], words].concat()),
    }
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
        ServiceCommand::Scale { scales } => {
            let all = services(client).await?;
            let mut failed = false;
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
                    Ok(())
                }
                .await;
                if let Err(error) = result {
                    eprintln!("{error:#}");
                    failed = true;
                }
            }
            if failed {
                std::process::exit(1);
            }
        }
        ServiceCommand::Logs {
            service,
            follow,
            tail,
        } => {
            let tail = match tail.as_str() {
                "all" => 0,
                n => n
                    .parse()
                    .with_context(|| format!("invalid --tail {n:?}: expected a number or all"))?,
            };
            let all = services(client).await?;
            let id = service_id(find(&all, &service)?).to_owned();
            let nodes = client::nodes(client).await?;
            let hostname = |id: &str| {
                nodes
                    .iter()
                    .find(|n| n.meta.as_ref().is_some_and(|m| m.id == id))
                    .and_then(|n| n.description.as_ref().map(|d| d.hostname.clone()))
                    .unwrap_or_else(|| id.to_owned())
            };
            let request = shoal_api::pb::LogsRequest {
                service_id: id,
                follow,
                tail,
            };
            let mut stream = client
                .service_logs(request)
                .await
                .map_err(status_error)?
                .into_inner();
            while let Some(line) = stream.message().await.map_err(status_error)? {
                let prefix = format!(
                    "{}.{}@{}",
                    line.task_name,
                    short(&line.task_id, false),
                    hostname(&line.node_id)
                );
                for text in String::from_utf8_lossy(&line.data).lines() {
                    println!("{prefix}    | {text}");
                }
            }
        }
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

struct Filters {
    desired: Option<Vec<TaskState>>,
    node: Option<String>,
    name: Option<String>,
    id: Option<String>,
}

impl Filters {
    fn parse(filters: &[String]) -> Result<Self> {
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
            mode.word().to_owned(),
            format!("{}/{}", summary.running, summary.desired),
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
fn task_listing(
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
                    .is_some_and(|d| !d.contains(&t.desired_state()))
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
                    title(t.desired_state().word()),
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

fn inspect_json(s: &Service) -> serde_json::Value {
    let meta = s.meta.clone().unwrap_or_default();
    let spec = s.spec.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let c = task.container.clone().unwrap_or_default();
    let mode = match spec.mode() {
        ServiceMode::Replicated => json!({ "Replicated": { "Replicas": spec.replicas } }),
        ServiceMode::Global => json!({ "Global": {} }),
    };
    let restart = task.restart.unwrap_or_default();
    let placement = task.placement.clone().unwrap_or_default();
    let res = task.resources.unwrap_or_default();
    let resources = |r: Option<Resources>| {
        r.map(|r| json!({ "NanoCPUs": r.nano_cpus, "MemoryBytes": r.memory_bytes }))
    };
    let endpoint = spec.endpoint.clone().unwrap_or_default();
    let ports: Vec<_> = endpoint
        .ports
        .iter()
        .map(|p| json!({ "Protocol": p.protocol, "TargetPort": p.target_port, "PublishedPort": p.published_port, "PublishMode": p.publish_mode().word() }))
        .collect();
    let update_config = |u: &Option<shoal_api::pb::UpdateConfig>| {
        u.as_ref().map(|u| {
            json!({
                "Parallelism": u.parallelism.unwrap_or(1),
                "Delay": u.delay_ms * 1_000_000,
                "FailureAction": format!("{:?}", u.failure_action()).to_lowercase(),
                "Monitor": u.monitor_ms.unwrap_or(5_000) * 1_000_000,
                "MaxFailureRatio": u.max_failure_ratio,
                "Order": if u.order() == shoal_api::pb::UpdateOrder::StartFirst { "start-first" } else { "stop-first" },
            })
        })
    };
    let update_status = s.update_status.as_ref().map(|u| {
        json!({
            "State": u.state,
            "StartedAt": rfc3339(u.started_at),
            "CompletedAt": if u.completed_at > 0 { Some(rfc3339(u.completed_at)) } else { None },
            "Message": u.message,
        })
    });
    json!({
        "ID": meta.id,
        "Version": { "Index": meta.version },
        "UpdateStatus": update_status,
        "CreatedAt": rfc3339(meta.created_at),
        "UpdatedAt": rfc3339(meta.updated_at),
        "Spec": {
            "Name": spec.name,
            "Labels": spec.labels,
            "UpdateConfig": update_config(&spec.update),
            "RollbackConfig": update_config(&spec.rollback),
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": c.image,
                    "Args": c.args,
                    "Env": c.env,
                    "Labels": c.labels,
                    "Hostname": c.hostname,
                    "User": c.user,
                    "Dir": c.dir,
                    "Mounts": c.mounts.iter().map(|m| json!({ "Type": m.r#type, "Source": m.source, "Target": m.target, "ReadOnly": m.read_only })).collect::<Vec<_>>(),
                    "Secrets": c.secrets.iter().map(|r| json!({ "SecretID": r.secret_id, "SecretName": r.secret_name, "File": r.file.as_ref().map(|f| json!({ "Name": f.name, "UID": f.uid, "GID": f.gid, "Mode": f.mode })) })).collect::<Vec<_>>(),
                    "Configs": c.configs.iter().map(|r| json!({ "ConfigID": r.config_id, "ConfigName": r.config_name, "File": r.file.as_ref().map(|f| json!({ "Name": f.name, "UID": f.uid, "GID": f.gid, "Mode": f.mode })) })).collect::<Vec<_>>(),
                    "Healthcheck": c.healthcheck.as_ref().map(|h| json!({ "Test": h.test, "Interval": h.interval_ms * 1_000_000, "Timeout": h.timeout_ms * 1_000_000, "Retries": h.retries, "StartPeriod": h.start_period_ms * 1_000_000 })),
                    "StopGracePeriod": c.stop_grace_period_ms.unwrap_or(10_000) * 1_000_000,
                    "StopSignal": c.stop_signal,
                },
                "Resources": { "Limits": resources(res.limits), "Reservations": resources(res.reservations) },
                "RestartPolicy": {
                    "Condition": restart.condition().word(),
                    "Delay": restart.delay_ms.unwrap_or(5_000) * 1_000_000,
                    "MaxAttempts": restart.max_attempts,
                    "Window": restart.window_ms * 1_000_000,
                },
                "Placement": {
                    "Constraints": placement.constraints,
                    "Preferences": placement.spread.iter().map(|d| json!({ "Spread": { "SpreadDescriptor": d } })).collect::<Vec<_>>(),
                    "MaxReplicas": placement.max_replicas_per_node,
                },
                "Networks": task.networks.iter().map(|n| json!({ "Target": n.target, "Aliases": n.aliases })).collect::<Vec<_>>(),
                "ForceUpdate": task.force_update,
            },
            "Mode": mode,
            "EndpointSpec": { "Mode": endpoint.mode, "Ports": ports },
        },
        "Endpoint": {
            "Spec": { "Mode": endpoint.mode, "Ports": ports },
            "Ports": ports,
            "VirtualIPs": s.endpoint.iter().flat_map(|e| &e.virtual_ips).map(|v| json!({ "NetworkID": v.network_id, "Addr": v.addr })).collect::<Vec<_>>(),
        },
    })
}

fn print_pretty(s: &Service, counters: &shoal_api::pb::ServiceCounters) {
    let meta = s.meta.clone().unwrap_or_default();
    let spec = s.spec.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let c = task.container.clone().unwrap_or_default();
    let restart = task.restart.unwrap_or_default();
    println!();
    println!("ID:\t\t{}", meta.id);
    println!("Name:\t\t{}", spec.name);
    if !spec.labels.is_empty() {
        println!("Labels:");
        for (k, v) in &spec.labels {
            println!(" {k}={v}");
        }
    }
    match spec.mode() {
        ServiceMode::Replicated => {
            println!("Service Mode:\tReplicated");
            println!(" Replicas:\t{}", spec.replicas);
        }
        ServiceMode::Global => println!("Service Mode:\tGlobal"),
    }
    if let Some(p) = &task.placement
        && (!p.constraints.is_empty() || !p.spread.is_empty() || p.max_replicas_per_node > 0)
    {
        {
            println!("Placement:");
            if !p.constraints.is_empty() {
                println!(" Constraints:\t{:?}", p.constraints);
            }
            for d in &p.spread {
                println!(" Preferences:\tspread={d}");
            }
            if p.max_replicas_per_node > 0 {
                println!(" Max Replicas Per Node:\t{}", p.max_replicas_per_node);
            }
        }
    }
    if let Some(u) = &s.update_status {
        println!("UpdateStatus:");
        println!(" State:\t\t{}", u.state);
        println!(" Started:\t{}", crate::output::ago(u.started_at));
        if u.completed_at > 0 {
            println!(" Completed:\t{}", crate::output::ago(u.completed_at));
        }
        println!(" Message:\t{}", u.message);
    }
    for (title, config) in [
        ("UpdateConfig", &spec.update),
        ("RollbackConfig", &spec.rollback),
    ] {
        let u = config.unwrap_or_default();
        println!("{title}:");
        println!(" Parallelism:\t{}", u.parallelism.unwrap_or(1));
        if u.delay_ms > 0 {
            println!(" Delay:\t\t{}", human_ms(u.delay_ms));
        }
        println!(
            " On failure:\t{}",
            format!("{:?}", u.failure_action()).to_lowercase()
        );
        println!(
            " Monitoring Period: {}",
            human_ms(u.monitor_ms.unwrap_or(5_000))
        );
        println!(" Max failure ratio: {}", u.max_failure_ratio);
        println!(
            " Update order:      {}",
            if u.order() == shoal_api::pb::UpdateOrder::StartFirst {
                "start-first"
            } else {
                "stop-first"
            }
        );
    }
    println!("RestartPolicy:");
    println!(" Condition:\t{}", restart.condition().word());
    println!(" Delay:\t\t{}", human_ms(restart.delay_ms.unwrap_or(5_000)));
    println!(" Max attempts:\t{}", restart.max_attempts);
    if restart.window_ms > 0 {
        println!(" Window:\t{}", human_ms(restart.window_ms));
    }
    println!("ContainerSpec:");
    println!(" Image:\t\t{}", c.image);
    if !c.args.is_empty() {
        println!(" Args:\t\t{}", c.args.join(" "));
    }
    if !c.env.is_empty() {
        println!(" Env:\t\t{}", c.env.join(" "));
    }
    println!(
        " Stop grace period:\t{}",
        human_ms(c.stop_grace_period_ms.unwrap_or(10_000))
    );
    if !c.mounts.is_empty() {
        println!("Mounts:");
        for m in &c.mounts {
            println!(
                " Target:\t{}\n  Source:\t{}\n  ReadOnly:\t{}\n  Type:\t\t{}",
                m.target, m.source, m.read_only, m.r#type
            );
        }
    }
    if !c.secrets.is_empty() {
        println!("Secrets:");
        for r in &c.secrets {
            println!(
                " Target:\t{}\n  Source:\t{}",
                r.file.as_ref().map(|f| f.name.as_str()).unwrap_or(""),
                r.secret_name
            );
        }
    }
    if !c.configs.is_empty() {
        println!("Configs:");
        for r in &c.configs {
            println!(
                " Target:\t{}\n  Source:\t{}",
                r.file.as_ref().map(|f| f.name.as_str()).unwrap_or(""),
                r.config_name
            );
        }
    }
    if let Some(r) = &task.resources {
        println!("Resources:");
        for (title, res) in [("Reservations", r.reservations), ("Limits", r.limits)] {
            if let Some(res) = res {
                println!(" {title}:");
                if res.nano_cpus > 0 {
                    println!("  CPU:\t\t{}", res.nano_cpus as f64 / 1e9);
                }
                if res.memory_bytes > 0 {
                    println!("  Memory:\t{}", flags::format_bytes(res.memory_bytes));
                }
            }
        }
    }
    let endpoint = spec.endpoint.unwrap_or_default();
    println!("Endpoint Mode:\t{}", endpoint.mode);
    for vip in s.endpoint.iter().flat_map(|e| &e.virtual_ips) {
        println!(" VIP:\t\t{} (network {})", vip.addr, vip.network_id);
    }
    println!(
        "Load balancer:\t{} connections, {} packets, {} bytes (routing mesh and VIP, all nodes)",
        counters.connections, counters.packets, counters.bytes
    );
    if !endpoint.ports.is_empty() {
        println!("Ports:");
        for p in &endpoint.ports {
            println!(
                " PublishedPort = {}\n  Protocol = {}\n  TargetPort = {}\n  PublishMode = {}",
                p.published_port,
                p.protocol,
                p.target_port,
                p.publish_mode().word()
            );
        }
    }
}

fn human_ms(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::{Meta, NodeDescription, TaskStatus};

    fn task(
        id: &str,
        slot: u64,
        created_at: i64,
        desired: TaskState,
        state: TaskState,
        err: &str,
    ) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                created_at,
                ..Default::default()
            }),
            service_id: "svc".into(),
            slot,
            node_id: "node1".into(),
            desired_state: desired as i32,
            status: Some(TaskStatus {
                state: state as i32,
                timestamp: shoal_api::now_ms() - 8_000,
                err: err.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn health_cmd_takes_shell_or_exec_form() {
        assert_eq!(
            health_test("curl -f localhost").unwrap(),
            ["CMD-SHELL", "curl -f localhost"]
        );
        assert_eq!(
            health_test(r#"["/echo","healthcheck"]"#).unwrap(),
            ["CMD", "/echo", "healthcheck"]
        );
        assert_eq!(health_test(r#"["CMD","/x"]"#).unwrap(), ["CMD", "/x"]);
        assert!(
            health_test("[nope")
                .unwrap_err()
                .to_string()
                .contains("JSON array")
        );
    }

    #[test]
    fn ps_shows_history_rows_states_and_docker_json_fields() {
        let service = Service {
            meta: Some(Meta {
                id: "svc".into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                name: "web".into(),
                ..Default::default()
            }),
            previous_spec: None,
            endpoint: None,
            update_status: None,
        };
        let node = Node {
            meta: Some(Meta {
                id: "node1".into(),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: "n1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tasks = vec![
            task(
                "aaaaaaaaaaaaaaaa",
                1,
                2,
                TaskState::Running,
                TaskState::Running,
                "",
            ),
            task(
                "bbbbbbbbbbbbbbbb",
                1,
                1,
                TaskState::Shutdown,
                TaskState::Failed,
                "task: non-zero exit (1)",
            ),
        ];
        let none = Filters::parse(&[]).unwrap();
        let table = task_listing(
            std::slice::from_ref(&service),
            &tasks,
            std::slice::from_ref(&node),
            &none,
            false,
            Format::Table,
        )
        .render(Format::Table, false);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ID "), "{table}");
        assert!(lines[1].starts_with("aaaaaaaaaaaa   web.1 "), "{table}");
        assert!(lines[1].contains("Running 8 seconds ago"), "{table}");
        assert!(
            lines[2].contains(" \\_ web.1 ")
                && lines[2].contains("Shutdown")
                && lines[2].contains("Failed 8 seconds ago"),
            "{table}"
        );
        assert!(lines[2].contains("\"task: non-zero exit (1)\""), "{table}");

        let json = task_listing(
            std::slice::from_ref(&service),
            &tasks,
            std::slice::from_ref(&node),
            &none,
            true,
            Format::Json,
        )
        .render(Format::Json, false);
        let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        for field in [
            "ID",
            "Name",
            "Image",
            "Node",
            "DesiredState",
            "CurrentState",
            "Error",
            "Ports",
        ] {
            assert!(first.get(field).is_some(), "missing {field}: {first}");
        }
        assert_eq!(first["ID"], "aaaaaaaaaaaaaaaa", "--no-trunc keeps full IDs");
        assert_eq!(first["Node"], "n1");

        let running = Filters::parse(&["desired-state=running".into()]).unwrap();
        let only = task_listing(&[service], &tasks, &[node], &running, false, Format::Table)
            .render(Format::Table, true);
        assert_eq!(only, "aaaaaaaaaaaa\n");
        assert!(Filters::parse(&["desired-state=sleeping".into()]).is_err());
    }
}
