//! `shoal swarm init` and `shoal swarm join` on a host: the manager's data
//! dir made by `shoal-manager init|join --no-serve`, the agent's token and
//! managers written where its unit reads them, both daemons handed to
//! systemd, then Docker's messages.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use shoal_api::pb::{
    Availability, Empty, NodeRole, UpdateCertificatesRequest, UpdateClusterRequest,
    UpdateNodeRequest,
};

use super::host::{Host, Units, with_flag};
use crate::client::{self, Client, status_error};

/// How long the daemons have to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub struct InitArgs {
    /// Advertised address (format: "<ip>[:port]").
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Listen address (format: "<ip>[:port]") (default 0.0.0.0:2377).
    #[arg(long)]
    listen_addr: Option<String>,
    /// Enable manager autolocking (requiring an unlock key to start a stopped manager).
    #[arg(long)]
    autolock: bool,
    /// Availability of the node ("active", "pause", "drain").
    #[arg(long, default_value = "active")]
    availability: String,
    /// Validity period for node certificates (ns|us|ms|s|m|h).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    cert_expiry: Option<Duration>,
    /// Default address pool in CIDR format; repeatable (default 10.0.0.0/8).
    #[arg(long = "default-addr-pool", value_name = "CIDR")]
    default_addr_pool: Vec<String>,
    /// Default address pool subnet mask length.
    #[arg(long, default_value_t = 24)]
    default_addr_pool_mask_length: u32,
    /// Dispatcher heartbeat period (ns|us|ms|s|m|h).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    dispatcher_heartbeat: Option<Duration>,
    /// Task history retention limit (default 5).
    #[arg(long)]
    task_history_limit: Option<u64>,
    /// Port number to use for data path traffic: only 4789 (or 0, the default).
    #[arg(long, default_value_t = 0)]
    data_path_port: u32,
    /// Force create a new cluster from current state (not supported: refused).
    #[arg(long)]
    force_new_cluster: bool,
}

#[derive(Args)]
pub struct JoinArgs {
    /// Token for entry into the swarm.
    #[arg(long, required = true)]
    token: String,
    /// Advertised address (format: "<ip>[:port]").
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Listen address of a manager (format: "<ip>[:port]") (default 0.0.0.0:2377).
    #[arg(long)]
    listen_addr: Option<String>,
    /// Availability of the node ("active", "pause", "drain").
    #[arg(long, default_value = "active")]
    availability: String,
    /// A manager of the swarm (HOST:PORT).
    #[arg(value_name = "HOST:PORT")]
    remote: String,
}

fn availability(word: &str) -> Result<Availability> {
    Availability::from_word(word).with_context(|| {
        format!(
            "invalid availability {word:?}: expected one of {}",
            Availability::words().join(", ")
        )
    })
}

fn with_port(addr: &str) -> String {
    if addr.contains(':') {
        addr.to_owned()
    } else {
        format!("{addr}:{}", shoal_api::DEFAULT_PORT)
    }
}

fn without_port(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

/// The flags `shoal-manager init|join` and `run` share; the control
/// socket is the one this CLI talks to (`--host unix://…`).
fn manager_flags(
    host: &Host,
    host_uri: &str,
    advertise: Option<&str>,
    listen: Option<&str>,
) -> Vec<String> {
    let mut flags = vec![
        "--data-dir".to_owned(),
        host.manager_dir().display().to_string(),
    ];
    if let Some(socket) = host_uri.strip_prefix("unix://") {
        flags.extend(["--socket".to_owned(), socket.to_owned()]);
    }
    if let Some(a) = advertise {
        flags.extend(["--advertise-addr".to_owned(), a.to_owned()]);
    }
    if let Some(l) = listen {
        flags.extend(["--listen-addr".to_owned(), with_port(l)]);
    }
    flags
}

/// The listen address, for `shoal-manager run` too (it takes it at each
/// start; the advertise address is in the data dir).
fn remember_listen_addr(host: &Host, listen: Option<&str>) -> Result<()> {
    if let Some(listen) = listen {
        let opts = host
            .env("manager.env", "SHOAL_MANAGER_OPTS")
            .unwrap_or_default();
        host.set_env(
            "manager.env",
            "SHOAL_MANAGER_OPTS",
            &with_flag(&opts, "--listen-addr", &with_port(listen)),
        )?;
    }
    Ok(())
}

/// The unlock key `shoal-manager init --autolock` printed.
fn unlock_key_in(output: &str) -> Option<String> {
    output
        .split_whitespace()
        .find(|w| w.starts_with("SHKEY-"))
        .map(str::to_owned)
}

/// The local manager, once it answers (unlocked with `unlock_key` first:
/// with autolock, the unit's restart of it waits for the key).
async fn local_manager(
    host_uri: &str,
    tls: &crate::tls::TlsArgs,
    unlock_key: Option<&str>,
) -> Result<Client> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        let attempt = async {
            if let Some(key) = unlock_key {
                let mut lock = shoal_api::pb::lock_client::LockClient::new(
                    client::channel(host_uri, tls).await?,
                );
                // A manager that is not locked answers so: nothing to do.
                let _ = lock
                    .unlock(shoal_api::pb::UnlockRequest {
                        unlock_key: key.to_owned(),
                    })
                    .await;
            }
            let mut c = client::connect(host_uri, tls).await?;
            c.get_cluster(Empty {}).await.map_err(status_error)?;
            Ok::<_, anyhow::Error>(c)
        };
        match attempt.await {
            Ok(c) => return Ok(c),
            Err(error) if tokio::time::Instant::now() > deadline => {
                return Err(error.context(format!(
                    "the manager did not answer at {host_uri} within {START_TIMEOUT:?} (see systemctl status shoal-manager)"
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// The agent: the worker token, the managers to join through, then its unit.
fn start_agent(
    host: &Host,
    units: &Units,
    token: &str,
    managers: &[String],
    advertise: Option<&str>,
) -> Result<()> {
    host.write_token(token)?;
    host.set_env("agent.env", "SHOAL_MANAGERS", &managers.join(" "))?;
    if let Some(advertise) = advertise {
        let opts = host
            .env("agent.env", "SHOAL_AGENT_OPTS")
            .unwrap_or_default();
        host.set_env(
            "agent.env",
            "SHOAL_AGENT_OPTS",
            &with_flag(&opts, "--advertise-addr", without_port(advertise)),
        )?;
    }
    units.start(
        "agent",
        &format!(
            "shoal-agent join --token-file {} --data-dir {} {}",
            host.confdir.join("join-token").display(),
            host.agent_dir().display(),
            managers.join(" ")
        ),
    )
}

/// Waits until the agent holds its certificate (it joined).
async fn agent_joined(host: &Host) -> Result<()> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    while !host.has_agent() {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the agent did not join within {START_TIMEOUT:?} (see systemctl status shoal-agent)"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// This manager's node: the one whose manager answers at `advertise`.
async fn own_node(client: &mut Client, advertise: &str) -> Result<shoal_api::pb::Node> {
    client::nodes(client)
        .await?
        .into_iter()
        .find(|n| {
            n.manager_status
                .as_ref()
                .is_some_and(|m| m.addr == advertise)
        })
        .with_context(|| format!("no node of the cluster has its manager at {advertise}"))
}

async fn set_availability(
    client: &mut Client,
    node: &shoal_api::pb::Node,
    wanted: Availability,
) -> Result<()> {
    if wanted == Availability::Active {
        return Ok(());
    }
    let mut spec = node.spec.clone().unwrap_or_default();
    spec.availability = wanted as i32;
    client
        .update_node(UpdateNodeRequest {
            id: node.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
            version: 0,
            spec: Some(spec),
        })
        .await
        .map_err(status_error)?;
    Ok(())
}

pub async fn init(host_uri: &str, tls: &crate::tls::TlsArgs, args: InitArgs) -> Result<()> {
    let host = Host::from_env();
    host.refuse_if_joined()?;
    if args.force_new_cluster {
        bail!(
            "--force-new-cluster is not supported: restore a manager's data dir, or init a new cluster"
        );
    }
    if args.data_path_port != 0 && args.data_path_port != 4789 {
        bail!(
            "--data-path-port {}: Shoal's VXLAN uses UDP 4789 only",
            args.data_path_port
        );
    }
    let wanted = availability(&args.availability)?;
    let units = Units::detect();
    let mut flags = vec!["init".to_owned(), "--no-serve".to_owned()];
    flags.extend(manager_flags(
        &host,
        host_uri,
        args.advertise_addr.as_deref(),
        args.listen_addr.as_deref(),
    ));
    for pool in &args.default_addr_pool {
        flags.extend(["--default-addr-pool".to_owned(), pool.clone()]);
    }
    flags.extend([
        "--default-addr-pool-mask-length".to_owned(),
        args.default_addr_pool_mask_length.to_string(),
    ]);
    if let Some(period) = args.dispatcher_heartbeat {
        flags.extend([
            "--heartbeat-period".to_owned(),
            humantime::format_duration(period).to_string(),
        ]);
    }
    if args.autolock {
        flags.push("--autolock".to_owned());
    }
    let output = host.run("shoal-manager", &flags, None)?;
    let unlock_key = unlock_key_in(&output);
    remember_listen_addr(&host, args.listen_addr.as_deref())?;
    units.start(
        "manager",
        &format!(
            "shoal-manager run --data-dir {}",
            host.manager_dir().display()
        ),
    )?;
    let mut client = local_manager(host_uri, tls, unlock_key.as_deref()).await?;
    if let Some(expiry) = args.cert_expiry {
        client
            .update_certificates(UpdateCertificatesRequest {
                cert_expiry_ms: expiry.as_millis() as i64,
                rotate_ca: false,
            })
            .await
            .map_err(status_error)?;
    }
    if args.task_history_limit.is_some() {
        client
            .update_cluster(UpdateClusterRequest {
                task_history_limit: args.task_history_limit,
                ..Default::default()
            })
            .await
            .map_err(status_error)?;
    }
    let info = client
        .get_cluster(Empty {})
        .await
        .map_err(status_error)?
        .into_inner();
    let nodes = client::nodes(&mut client).await?;
    let me = nodes
        .iter()
        .find(|n| n.manager_status.is_some())
        .context("the new cluster lists no manager")?
        .clone();
    let advertise = me.manager_status.clone().unwrap_or_default().addr;
    start_agent(
        &host,
        &units,
        &info.worker_token,
        std::slice::from_ref(&advertise),
        args.advertise_addr.as_deref(),
    )?;
    agent_joined(&host).await?;
    set_availability(&mut client, &me, wanted).await?;
    let id = me.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    println!("Swarm initialized: current node ({id}) is now a manager.\n");
    println!("To add a worker to this swarm, run the following command:\n");
    println!(
        "    shoal swarm join --token {} {advertise}\n",
        info.worker_token
    );
    println!(
        "To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n"
    );
    if let Some(key) = &unlock_key {
        print!("{}", shoal_api::token::unlock_key_notice(key));
    }
    Ok(())
}

pub async fn join(host_uri: &str, tls: &crate::tls::TlsArgs, args: JoinArgs) -> Result<()> {
    let host = Host::from_env();
    host.refuse_if_joined()?;
    let wanted = availability(&args.availability)?;
    let remote = with_port(&args.remote);
    let role = shoal_pki::join::token_role(&remote, &args.token).await?;
    let units = Units::detect();
    let (worker_token, managers) = match role {
        NodeRole::Manager => {
            let mut flags = vec![
                "join".to_owned(),
                "--no-serve".to_owned(),
                "--token-stdin".to_owned(),
            ];
            flags.extend(manager_flags(
                &host,
                host_uri,
                args.advertise_addr.as_deref(),
                args.listen_addr.as_deref(),
            ));
            flags.push(remote.clone());
            host.run("shoal-manager", &flags, Some(&format!("{}\n", args.token)))?;
            remember_listen_addr(&host, args.listen_addr.as_deref())?;
            units.start(
                "manager",
                &format!(
                    "shoal-manager run --data-dir {}",
                    host.manager_dir().display()
                ),
            )?;
            let mut client = local_manager(host_uri, tls, None).await?;
            let info = client
                .get_cluster(Empty {})
                .await
                .map_err(status_error)?
                .into_inner();
            let advertise = args.advertise_addr.as_deref().map(with_port);
            let mut managers = vec![remote.clone()];
            if let Some(a) = &advertise {
                managers.insert(0, a.clone());
                let me = own_node(&mut client, a).await?;
                set_availability(&mut client, &me, wanted).await?;
            }
            (info.worker_token, managers)
        }
        NodeRole::Worker => {
            if wanted != Availability::Active {
                bail!(
                    "--availability {}: a worker cannot set its own; run `shoal node update --availability {} NODE` on a manager once it joined",
                    args.availability,
                    args.availability
                );
            }
            (args.token.clone(), vec![remote.clone()])
        }
    };
    start_agent(
        &host,
        &units,
        &worker_token,
        &managers,
        args.advertise_addr.as_deref(),
    )?;
    agent_joined(&host).await?;
    println!("This node joined a swarm as a {}.", role.word());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_the_default_port_and_lose_it_for_the_agent() {
        assert_eq!(with_port("10.0.0.11"), "10.0.0.11:2377");
        assert_eq!(with_port("10.0.0.11:4000"), "10.0.0.11:4000");
        assert_eq!(without_port("10.0.0.11:2377"), "10.0.0.11");
        assert!(availability("drain").is_ok());
        assert!(
            availability("sleepy")
                .unwrap_err()
                .to_string()
                .contains("active, pause, drain")
        );
    }

    #[test]
    fn the_unlock_key_is_found_in_inits_notice() {
        let notice = shoal_api::token::unlock_key_notice("SHKEY-1-abc");
        let output = format!("Cluster initialized: ...\n\n{notice}");
        assert_eq!(unlock_key_in(&output).as_deref(), Some("SHKEY-1-abc"));
        assert_eq!(unlock_key_in("no key here"), None);
    }

    #[test]
    fn the_manager_runs_on_the_hosts_data_dir_with_the_given_addresses() {
        let host = Host {
            bindir: "/usr/local/bin".into(),
            confdir: "/etc/shoal".into(),
            statedir: "/var/lib/shoal".into(),
        };
        assert_eq!(
            manager_flags(
                &host,
                "unix:///run/shoal/manager.sock",
                Some("10.0.0.11"),
                Some("0.0.0.0")
            ),
            [
                "--data-dir",
                "/var/lib/shoal/manager",
                "--socket",
                "/run/shoal/manager.sock",
                "--advertise-addr",
                "10.0.0.11",
                "--listen-addr",
                "0.0.0.0:2377"
            ]
        );
    }
}
