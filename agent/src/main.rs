//! `shoal-agent`: the daemon that runs on every Shoal node.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use shoal_agent::datapath::{self, BpfRoot, CounterMap, InterfaceCount};

#[derive(Parser)]
#[command(name = "shoal-agent", version, about = "Shoal node agent", long_about = None)]
struct Cli {
    /// This node's tree of pinned eBPF objects (one per node).
    #[arg(long, global = true, env = "SHOAL_BPFFS", default_value = datapath::DEFAULT_ROOT)]
    bpffs: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join a cluster and run its tasks on this node, until stopped.
    ///
    /// Run it again with the same data dir to rejoin as the same node.
    Join(Box<JoinArgs>),
    /// Manage the node's eBPF data plane.
    #[command(subcommand)]
    Datapath(DatapathCommand),
    /// Leave the cluster: the managers remove this node (asked with its own
    /// certificate), its agent stops, and everything it built goes.
    ///
    /// Takes off its task containers, overlay devices and their rules, the
    /// pinned eBPF programs and maps, and the node's certificate (joining
    /// again takes a token and makes a new node). `shoal swarm leave` runs it.
    Leave(LeaveArgs),
}

#[derive(clap::Args)]
struct LeaveArgs {
    /// The agent's data dir (it holds the node's certificate and id).
    #[arg(long, default_value = "/var/lib/shoal/agent")]
    data_dir: PathBuf,
    /// A manager to ask (host:port; port 2377 when omitted); repeatable.
    /// Default: the managers the agent last knew.
    #[arg(long = "manager", value_name = "MANAGER")]
    managers: Vec<String>,
    /// Clear this host even if no manager could be told (the cluster then
    /// still lists the node: `shoal node rm` it there).
    #[arg(short, long)]
    force: bool,
}

#[derive(clap::Args)]
struct JoinArgs {
    /// The cluster's join token (`shoal join-token worker`), needed the
    /// first time only (the node then has a certificate in its data dir).
    /// It shows in `ps`: prefer --token-file, --token-stdin or
    /// SHOAL_JOIN_TOKEN.
    #[arg(long, conflicts_with_all = ["token_file", "token_stdin"])]
    token: Option<String>,
    /// Read the join token from FILE, which only its owner may read (mode
    /// 0600): the systemd unit's way, keeping the token out of `ps`.
    #[arg(long, value_name = "FILE", conflicts_with = "token_stdin")]
    token_file: Option<PathBuf>,
    /// Read the join token from standard input (as `docker login
    /// --password-stdin`). With no token flag, SHOAL_JOIN_TOKEN is read.
    #[arg(long)]
    token_stdin: bool,
    /// Managers' addresses (host:port; port 2377 when omitted): the agent
    /// tries them in order and then follows the cluster's leader.
    #[arg(required = true, value_name = "MANAGER")]
    managers: Vec<String>,
    /// The address other nodes reach this one at.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// The node's name (default: the host's name).
    #[arg(long)]
    hostname: Option<String>,
    /// Node label (key=value) set when the node first joins; repeatable.
    #[arg(long)]
    label: Vec<String>,
    /// A user-defined resource this node offers, as dockerd's
    /// --node-generic-resource: KIND=COUNT (gpu=2) or, once per
    /// instance, KIND=NAME (gpu=UUID1); repeatable. Services reserve them
    /// with --generic-resource.
    #[arg(long, value_name = "KIND=VALUE")]
    generic_resource: Vec<String>,
    /// Where the agent keeps the node's identity.
    #[arg(long, default_value = "/var/lib/shoal/agent")]
    data_dir: PathBuf,
    /// Where tasks' secrets and configs get their tmpfs mounts.
    #[arg(long, default_value = "/run/shoal/agent")]
    run_dir: PathBuf,
    /// Extra label (key=value) on every container this agent starts.
    #[arg(long)]
    container_label: Vec<String>,
    /// Resolver for names not the cluster's (IP or IP:PORT; default: /etc/resolv.conf's); repeatable.
    #[arg(long = "dns-upstream", value_name = "ADDR")]
    dns_upstream: Vec<String>,
    /// Most tasks this node runs; the manager places no more here and the
    /// agent rejects any past it. Default: what its memory and process ids
    /// hold (32 MiB and 32 pids a task).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_tasks: Option<u64>,
    /// Most containers the agent starts at once.
    #[arg(long, value_name = "N", default_value_t = shoal_agent::worker::admission::DEFAULT_CONCURRENT_STARTS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_concurrent_starts: usize,
    /// Where `/metrics` is served for Prometheus: IP:PORT, an IP (port
    /// 9324), or `none`. HTTPS readable with a manager or admin client
    /// certificate only (default: this node's address, port 9324).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// How long the routing mesh keeps a TCP connection's entries after
    /// it ended (both sides sent a FIN, or one reset it; on the entry node
    /// of direct server return, the client's FIN), as TIME_WAIT:
    /// retransmitted FINs and last ACKs still pass meanwhile. 1s to 1h;
    /// entries go within it plus two sweeps (a sweep every quarter of it).
    #[arg(long, value_name = "DURATION", env = "SHOAL_MESH_CLOSE_LINGER", default_value = "10s",
          value_parser = parse_linger)]
    mesh_close_linger: std::time::Duration,
}

fn parse_linger(text: &str) -> Result<std::time::Duration, String> {
    let linger = humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}): expected e.g. 10s or 1m"))?;
    let (min, max) = datapath::sweep::LINGER_RANGE;
    if linger < min || linger > max {
        return Err(format!("{text:?} is out of range: 1s to 1h"));
    }
    Ok(linger)
}

#[derive(Subcommand)]
enum DatapathCommand {
    /// Attach the packet and byte counters to interfaces.
    ///
    /// They count at TC ingress and egress and are pinned: they keep counting
    /// after this command exits.
    Attach {
        /// The interfaces to count packets on (e.g. eth0).
        #[arg(required = true, value_name = "IFACE")]
        interfaces: Vec<String>,
    },
    /// Detach the counters from interfaces and forget their counts.
    Detach {
        /// The interfaces to stop counting on.
        #[arg(required = true, value_name = "IFACE")]
        interfaces: Vec<String>,
    },
    /// Detach everything and remove this node's pinned tree.
    Remove,
    /// Print packet and byte counts per interface.
    Counters {
        /// Only these interfaces (default: every counted one).
        #[arg(value_name = "IFACE")]
        interfaces: Vec<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the routing mesh's tracked connections (both directions of
    /// each: the confirmed table MESH_CT and the unconfirmed MESH_SYN).
    Conntrack {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print how many packets the data plane dropped, and why.
    ///
    /// vxlan-source: VXLAN from an address that is no cluster node;
    /// vxlan-port: ingress-network VXLAN for no published port of a task
    /// here; container-to-node: a container's packet to this node's ports
    /// (DNS aside) or to another node's manager or VXLAN port;
    /// ingress-allow: a client a published port's allow-list does not
    /// name; spoofed-source: a container's frame from an address (IPv4,
    /// ARP sender, MAC) its task does not hold, or of a kind its IPv4
    /// network does not carry (IPv6, VLAN tags, other EtherTypes).
    Drops {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let root = BpfRoot::new(cli.bpffs);
    match cli.command {
        Command::Join(args) => {
            // The data dir's lock goes last: `shoal-agent leave` (and so
            // `swarm leave`) takes its release for the agent's exit, and
            // the runtime, dropped at the end of the next statement, still
            // waits for its blocking work (a sweep of the connection
            // tables) after `join` returns.
            let mut lock = None;
            let result = tokio::runtime::Runtime::new()?.block_on(join(*args, root, &mut lock));
            drop(lock);
            result
        }
        Command::Datapath(command) => run_datapath(&root, command),
        Command::Leave(args) => tokio::runtime::Runtime::new()?.block_on(leave(&root, args)),
    }
}

fn key_value(text: &str) -> Result<(String, String)> {
    let (k, v) = text.split_once('=').unwrap_or((text, ""));
    anyhow::ensure!(!k.is_empty(), "invalid label {text:?}: expected key=value");
    Ok((k.to_owned(), v.to_owned()))
}

/// Runs the agent; `lock` receives the data dir's lock, held while it runs.
async fn join(
    args: JoinArgs,
    root: BpfRoot,
    lock: &mut Option<shoal_agent::leave::DataDirLock>,
) -> Result<()> {
    use shoal_agent::{session, worker};
    // A node that has its certificate needs no token: it is not read (its
    // file may be gone, or hold a token rotated since). Otherwise a missing
    // or malformed token fails before anything is written.
    let joined = args.data_dir.join("certificates").join("current").exists();
    let token = if joined {
        None
    } else {
        match shoal_api::token_input::read(&shoal_api::token_input::Given {
            token: args.token.as_deref(),
            file: args.token_file.as_deref(),
            stdin: args.token_stdin,
        }) {
            Ok(token) => Some(token),
            Err(shoal_api::token_input::TokenInputError::Missing) => None,
            Err(error) => return Err(error.into()),
        }
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    // Held while the agent runs: `shoal-agent leave` waits for it.
    *lock = Some(shoal_agent::leave::lock_data_dir(&args.data_dir)?);
    let container_labels = args
        .container_label
        .iter()
        .map(|l| key_value(l))
        .collect::<Result<_>>()?;
    let generic_resources = shoal_api::engine::parse_generic_resources(&args.generic_resource)
        .map_err(|why| anyhow::anyhow!("--generic-resource: {why}"))?;
    let hostname = match args.hostname {
        Some(h) => h,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into()),
    };
    let managers: Vec<String> = args.managers.iter().map(|m| with_port(m)).collect();
    shoal_agent::leave::save_managers(&args.data_dir, &managers);
    let local: std::net::Ipv4Addr = match &args.advertise_addr {
        Some(a) => a
            .parse()
            .with_context(|| format!("invalid --advertise-addr {a:?}: expected an IPv4 address"))?,
        None => route_to(managers.first().context("no manager address given")?).await?,
    };
    // The node's certificate says which node this is; the first time, the
    // cluster issues it for the join token.
    let credentials = shoal_agent::identity::obtain(
        Some(&args.data_dir.join("certificates")),
        &managers,
        token.as_ref().map(|t| t.expose()),
        &args.advertise_addr.clone().unwrap_or_default(),
        &hostname,
    )
    .await?;
    drop(token);
    let node_id = credentials.identity().node_id;
    // For `shoal-agent leave`, which finds the node's containers by it.
    let identity = args.data_dir.join("node-id");
    std::fs::write(&identity, &node_id)
        .with_context(|| format!("writing {}", identity.display()))?;
    let upstreams = if args.dns_upstream.is_empty() {
        shoal_agent::dns::system_upstreams()
    } else {
        args.dns_upstream
            .iter()
            .map(|u| {
                u.parse::<std::net::SocketAddr>()
                    .or_else(|_| u.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                    .with_context(|| {
                        format!("invalid --dns-upstream {u:?}: expected IP or IP:PORT")
                    })
            })
            .collect::<Result<_>>()?
    };
    let metrics_addr = match &args.metrics_addr {
        Some(given) => shoal_api::metrics_addr(given, shoal_api::AGENT_METRICS_PORT)
            .map_err(anyhow::Error::msg)?,
        None => Some((local, shoal_api::AGENT_METRICS_PORT).into()),
    };
    // Ended connections' entries leave the mesh's tables once they lingered.
    tokio::spawn(datapath::sweep::keep_sweeping(
        root.clone(),
        args.mesh_close_linger,
    ));
    let dns = shoal_agent::dns::DnsServer::new(upstreams);
    let overlay = shoal_agent::network::Overlay::new(local, dns.clone(), Some(root.clone()))
        .await
        .context("preparing the overlay")?;
    if let Some(addr) = metrics_addr {
        // Bound now, so a taken port fails the start naming it.
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for /metrics on {addr} (--metrics-addr)"))?;
        let sources = shoal_agent::metrics::Sources {
            overlay: overlay.clone(),
            dns,
            bpf: root,
        };
        let credentials = credentials.clone();
        tokio::spawn(async move {
            if let Err(error) =
                shoal_agent::metrics::endpoint::serve(listener, credentials, sources).await
            {
                tracing::error!(error = %format!("{error:#}"), "the /metrics endpoint stopped");
            }
        });
    }
    let mut description = worker::describe::describe(&hostname, "", args.max_tasks.unwrap_or(0));
    description.generic_resources = generic_resources;
    let capacity = shoal_api::capacity::tasks_per_node(&description);
    tracing::info!(
        max_tasks = capacity,
        concurrent_starts = args.max_concurrent_starts,
        "this node's task limits"
    );
    let executor = worker::docker::DockerExecutor::connect(
        &node_id,
        container_labels,
        &args.run_dir,
        &hostname,
        Some(overlay),
        worker::admission::Admission::new(capacity, args.max_concurrent_starts),
    )
    .await
    .context("connecting to the Docker engine")?;
    description.engine_version = executor.engine_version().await;
    let config = session::SessionConfig {
        managers,
        credentials: credentials.clone(),
        advertise_addr: args.advertise_addr.clone().unwrap_or_default(),
        description,
        labels: args
            .label
            .iter()
            .map(|l| key_value(l))
            .collect::<Result<_>>()?,
    };
    let (state, mut changes) = tokio::sync::watch::channel(session::SessionState {
        node_id: node_id.clone(),
        ..Default::default()
    });
    let watched = executor.clone();
    let mut refused = changes.clone();
    let data_dir = args.data_dir.clone();
    tokio::spawn(async move {
        let mut known: Vec<String> = Vec::new();
        while changes.changed().await.is_ok() {
            let (id, cluster, managers) = {
                let state = changes.borrow();
                (
                    state.node_id.clone(),
                    state.cluster_id.clone(),
                    state.managers.clone(),
                )
            };
            if !id.is_empty() {
                watched.set_identity(&id, &cluster);
            }
            // For `shoal-agent leave`, which asks them to remove the node.
            if managers != known {
                shoal_agent::leave::save_managers(&data_dir, &managers);
                known = managers;
            }
        }
    });
    let session = tokio::spawn(session::run(config, std::sync::Arc::new(executor), state));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = session => {}
    }
    if let Some(reason) = refused.borrow_and_update().refused.clone() {
        anyhow::bail!(
            "the cluster no longer accepts this node: {reason}. Its containers keep running: run `shoal-agent leave` to remove them, then join again with a token and an empty data dir"
        );
    }
    tracing::info!("agent stopping; its containers keep running and are adopted on restart");
    Ok(())
}

fn with_port(manager: &str) -> String {
    if manager.contains(':') {
        manager.to_owned()
    } else {
        format!("{manager}:{}", shoal_api::DEFAULT_PORT)
    }
}

async fn leave(root: &BpfRoot, args: LeaveArgs) -> Result<()> {
    use shoal_agent::leave::{self, Asked};
    let data_dir = args.data_dir.as_path();
    let node_id = std::fs::read_to_string(data_dir.join("node-id")).unwrap_or_default();
    let node_id = node_id.trim();
    if let Some(credentials) = shoal_pki::Credentials::load(&data_dir.join("certificates"))? {
        let managers: Vec<String> = if args.managers.is_empty() {
            leave::saved_managers(data_dir)
        } else {
            args.managers.iter().map(|m| with_port(m)).collect()
        };
        let id = credentials.identity().node_id;
        match leave::ask_to_leave(&credentials, &managers).await {
            Ok(Asked::Removed) => println!("the cluster removed node {id}"),
            Ok(Asked::AlreadyGone) => println!("the cluster had removed node {id} already"),
            Err(error) if args.force => {
                eprintln!("warning: {error:#}; clearing this host anyway");
                // No manager will refuse it: it would run on.
                leave::stop_agent(data_dir)?;
            }
            Err(error) => return Err(error),
        }
        // Refused from now on, the running agent stops by itself; one
        // that reaches no manager any more is told to.
        let wait = std::time::Duration::from_secs(10);
        if leave::wait_agent_stopped(data_dir, wait).await.is_err() {
            leave::stop_agent(data_dir)?;
            leave::wait_agent_stopped(data_dir, wait * 2).await?;
        }
    } else if leave::agent_running(data_dir) {
        anyhow::bail!(
            "an agent runs on {} but it has no certificate yet: stop it first",
            data_dir.display()
        );
    }
    if !node_id.is_empty() {
        let removed = shoal_agent::worker::docker::remove_node_containers(node_id)
            .await
            .context("removing the node's task containers")?;
        println!("removed {removed} task containers");
    }
    let removed = shoal_agent::network::remove_all_devices().await?;
    println!("removed {removed} overlay devices and their rules");
    datapath::remove_all(root)?;
    println!(
        "removed the pinned eBPF programs and maps under {}",
        root.root().display()
    );
    leave::forget_identity(data_dir)?;
    println!("forgot this node's certificate: joining again takes a token");
    Ok(())
}

/// The local address this host reaches `manager` from (no packet is sent:
/// connecting a UDP socket only picks the route).
async fn route_to(manager: &str) -> Result<std::net::Ipv4Addr> {
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
    socket
        .connect(manager)
        .await
        .with_context(|| format!("finding the route to {manager}"))?;
    match socket.local_addr()?.ip() {
        std::net::IpAddr::V4(v4) => Ok(v4),
        std::net::IpAddr::V6(_) => {
            anyhow::bail!("the route to {manager} is IPv6: give --advertise-addr")
        }
    }
}

fn run_datapath(root: &BpfRoot, command: DatapathCommand) -> Result<()> {
    match command {
        DatapathCommand::Attach { interfaces } => {
            for iface in &interfaces {
                datapath::attach_counters(root, iface)
                    .with_context(|| format!("attaching the counters to {iface}"))?;
            }
        }
        DatapathCommand::Detach { interfaces } => {
            for iface in &interfaces {
                let ifindex = datapath::ifindex_of(iface)?;
                if !datapath::detach_counters(root, ifindex)? {
                    tracing::warn!(iface, "no counters were attached");
                }
            }
        }
        DatapathCommand::Remove => datapath::remove_all(root)?,
        DatapathCommand::Counters { interfaces, json } => {
            let map = CounterMap::open(root)?;
            let counts = if interfaces.is_empty() {
                map.read_all()?
            } else {
                interfaces
                    .iter()
                    .map(|iface| map.read(datapath::ifindex_of(iface)?))
                    .collect::<Result<Vec<_>, _>>()?
            };
            print_counts(&counts, json)?;
        }
        DatapathCommand::Conntrack { json } => {
            let tracked = datapath::conntrack::list(root)?;
            if json {
                for t in &tracked {
                    println!("{}", serde_json::to_string(t)?);
                }
            } else {
                println!(
                    "{:<8} {:<5} {:<21} {:<21} {:<21} {:>8}  FLAGS",
                    "TABLE", "PROTO", "SOURCE", "DESTINATION", "PEER", "NAT-PORT"
                );
                for t in tracked {
                    println!(
                        "{:<8} {:<5} {:<21} {:<21} {:<21} {:>8}  {}",
                        t.table,
                        t.protocol,
                        t.source,
                        t.destination,
                        t.peer,
                        t.nat_port,
                        t.flags.join(",")
                    );
                }
            }
        }
        DatapathCommand::Drops { json } => {
            let drops = datapath::guard::drops(root)?;
            if json {
                let object: serde_json::Map<String, serde_json::Value> = drops
                    .iter()
                    .map(|(reason, count)| ((*reason).to_owned(), (*count).into()))
                    .collect();
                println!("{}", serde_json::Value::Object(object));
            } else {
                println!("{:<20} {:>12}", "REASON", "PACKETS");
                for (reason, count) in drops {
                    println!("{reason:<20} {count:>12}");
                }
            }
        }
    }
    Ok(())
}

fn print_counts(counts: &[InterfaceCount], json: bool) -> Result<()> {
    if json {
        for count in counts {
            println!("{}", serde_json::to_string(count)?);
        }
        return Ok(());
    }
    println!(
        "{:<16} {:>8} {:>12} {:>14} {:>12} {:>14}",
        "INTERFACE", "INDEX", "RX PACKETS", "RX BYTES", "TX PACKETS", "TX BYTES"
    );
    for c in counts {
        println!(
            "{:<16} {:>8} {:>12} {:>14} {:>12} {:>14}",
            c.ifname.as_deref().unwrap_or("-"),
            c.ifindex,
            c.rx_packets,
            c.rx_bytes,
            c.tx_packets,
            c.tx_bytes
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_and_argument_says_what_it_does() {
        shoal_help_check::assert_documented(&super::Cli::command());
    }
}
