//! `shoal-manager`: the brain of a Shoal cluster.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use shoal_api::{DEFAULT_PORT, DEFAULT_SOCKET, VersionInfo};
use shoal_manager::{
    daemon::{self, Bootstrap, DEFAULT_SUBNET_SIZE, Options},
    limits::Limits,
    manager::Settings,
    raft::Timing,
};

#[derive(Parser)]
#[command(name = "shoal-manager", version, about = "Shoal cluster manager", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new cluster with this manager as its first member, and serve.
    ///
    /// Prints the join tokens for workers and managers first.
    Init {
        #[command(flatten)]
        common: Common,
        /// Address pool (CIDR) overlay subnets are taken from; repeatable.
        #[arg(long = "default-addr-pool", default_value = daemon::DEFAULT_ADDR_POOL)]
        default_addr_pool: Vec<String>,
        /// Prefix length of each subnet taken from the pool.
        #[arg(long = "default-addr-pool-mask-length", default_value_t = DEFAULT_SUBNET_SIZE)]
        subnet_size: u32,
        /// How often agents heartbeat; a node missing 3 periods is down.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        heartbeat_period: Duration,
        /// Enable manager autolocking (requiring an unlock key to start a
        /// stopped manager); the key is printed once.
        #[arg(long)]
        autolock: bool,
        /// Exit once the cluster is created and the tokens printed, instead
        /// of serving: `shoal-manager run` (the systemd unit) serves it then.
        #[arg(long)]
        no_serve: bool,
    },
    /// Join an existing cluster as a manager, and serve.
    ///
    /// Needs the cluster's manager join token (`shoal join-token manager`).
    Join {
        #[command(flatten)]
        common: Common,
        /// The cluster's manager join token (`shoal join-token manager`). It
        /// shows in `ps`: prefer --token-file, --token-stdin or SHOAL_JOIN_TOKEN.
        #[arg(long, conflicts_with_all = ["token_file", "token_stdin"])]
        token: Option<String>,
        /// Read the join token from FILE, which only its owner may read
        /// (mode 0600), keeping the token out of `ps`.
        #[arg(long, value_name = "FILE", conflicts_with = "token_stdin")]
        token_file: Option<PathBuf>,
        /// Read the join token from standard input (as `docker login
        /// --password-stdin`). With no token flag, SHOAL_JOIN_TOKEN is read.
        #[arg(long)]
        token_stdin: bool,
        /// Address (host:port) of a manager of the cluster.
        remote: String,
        /// Exit once this manager has joined, instead of serving:
        /// `shoal-manager run` (the systemd unit) serves it then.
        #[arg(long)]
        no_serve: bool,
    },
    /// Restart a manager from its data directory: it rejoins with all state.
    Run {
        #[command(flatten)]
        common: Common,
    },
    /// Print version information as JSON.
    Version,
}

#[derive(Args)]
struct Common {
    /// Where the manager keeps its Raft log and state (one manager per directory).
    #[arg(long, default_value = "/var/lib/shoal/manager")]
    data_dir: PathBuf,
    /// Address other managers and agents reach this one at (IP or IP:port);
    /// `run` takes it from the data dir.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Address the API listens on.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
    listen_addr: SocketAddr,
    /// Where `/metrics` is served for Prometheus: IP:PORT, an IP (port
    /// 9323), or `none`. HTTPS readable with a manager or admin client
    /// certificate only (default: the --listen-addr IP, port 9323).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// The local control socket the `shoal` CLI talks to.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The name this manager's node shows (default: the host's name).
    #[arg(long)]
    hostname: Option<String>,
    /// Where the visualizer web page is served (IP:port; repeat for more;
    /// `none`: not served). Default: the --listen-addr IP at port 2378.
    /// Over TLS asking a manager or admin client certificate
    /// (`shoal cert issue`), or plain HTTP on a loopback address.
    #[arg(long, value_name = "ADDR")]
    web_addr: Vec<String>,
    /// What one request may ask of the cluster; refused past these with an
    /// error naming the limit. Give every manager the same.
    #[command(flatten)]
    limits: Limits,
    /// Threads running the manager's tasks (API calls, Raft, the
    /// dispatcher, the scheduler). Default: half the cores, at least one.
    /// A write passes through a dozen tasks, and handing it between
    /// threads costs a wake-up each time: on 2 cores one worker took
    /// 9-14% less CPU per write than two, and 10-25% less to schedule
    /// 100,000 tasks (bench/RESULTS.md, "one worker thread by default").
    /// The work that spreads over cores has threads of its own: TLS
    /// handshakes (a worker per core), the Raft log's writes and fsyncs,
    /// the state file. Give more to a manager whose own tasks fill them.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
}

impl Common {
    /// The visualizer's addresses (see `--web-addr`), and whether they
    /// are the default (which may be taken: another manager on this
    /// host's loopback, say; the manager then runs without a page).
    fn web_addrs(&self) -> Result<(Vec<SocketAddr>, bool)> {
        if self.web_addr.is_empty() {
            let default = SocketAddr::new(self.listen_addr.ip(), shoal_manager::web::DEFAULT_PORT);
            return Ok((vec![default], true));
        }
        if self.web_addr.iter().any(|a| a == "none") {
            if self.web_addr.len() > 1 {
                bail!("--web-addr none serves no visualizer: give it alone");
            }
            return Ok((Vec::new(), false));
        }
        let addrs = self
            .web_addr
            .iter()
            .map(|a| {
                a.parse().with_context(|| {
                    format!("--web-addr {a:?}: expected IP:port (e.g. 127.0.0.1:2378) or none")
                })
            })
            .collect::<Result<_>>()?;
        Ok((addrs, false))
    }

    /// The daemon's options; on a `restart` the advertise address may be
    /// left out: the data dir holds the one the cluster knows.
    fn options(&self, heartbeat_period: Duration, restart: bool) -> Result<Options> {
        let advertise = match &self.advertise_addr {
            Some(a) if a.contains(':') => a.clone(),
            Some(a) => format!("{a}:{}", self.listen_addr.port()),
            None if !self.listen_addr.ip().is_unspecified() => self.listen_addr.to_string(),
            None if restart => String::new(),
            None => bail!(
                "--advertise-addr is required when listening on {} (which address should other nodes use?)",
                self.listen_addr
            ),
        };
        let hostname = match &self.hostname {
            Some(h) => h.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into()),
        };
        let metrics = match &self.metrics_addr {
            Some(given) => shoal_api::metrics_addr(given, shoal_api::MANAGER_METRICS_PORT)
                .map_err(anyhow::Error::msg)?,
            None => Some(SocketAddr::new(
                self.listen_addr.ip(),
                shoal_api::MANAGER_METRICS_PORT,
            )),
        };
        Ok(Options {
            metrics,
            data_dir: self.data_dir.clone(),
            listen: self.listen_addr,
            advertise,
            socket: Some(self.socket.clone()),
            hostname,
            timing: Timing::default(),
            settings: Settings {
                heartbeat_period,
                limits: self.limits.clone(),
                ..Settings::default()
            },
        })
    }
}

/// Worker threads when `--worker-threads` is not given (see its help),
/// on a machine with `cores`.
fn default_worker_threads(cores: usize) -> u16 {
    u16::try_from(cores / 2).unwrap_or(u16::MAX).max(1)
}

/// The worker threads `command` runs with.
fn worker_threads(command: &Command) -> u16 {
    match command {
        Command::Init { common, .. } | Command::Join { common, .. } | Command::Run { common } => {
            common.worker_threads.unwrap_or_else(|| {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                default_worker_threads(cores)
            })
        }
        Command::Version => 1,
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(worker_threads(&cli.command)))
        .enable_all()
        .build()
        .context("starting the manager's runtime")?
        .block_on(serve(cli))
}

async fn serve(cli: Cli) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let (options, bootstrap, no_serve, web) = match cli.command {
        Command::Version => {
            let info = VersionInfo::of("shoal-manager", env!("CARGO_PKG_VERSION"), 0);
            println!("{}", serde_json::to_string(&info)?);
            return Ok(());
        }
        Command::Init {
            common,
            default_addr_pool,
            subnet_size,
            heartbeat_period,
            autolock,
            no_serve,
        } => (
            common.options(heartbeat_period, false)?,
            Bootstrap::Init {
                default_addr_pool,
                subnet_size,
                autolock,
            },
            no_serve,
            common.web_addrs()?,
        ),
        Command::Join {
            common,
            token,
            token_file,
            token_stdin,
            remote,
            no_serve,
        } => {
            // Held only until the join is done: `Bootstrap` goes with it.
            let token = shoal_api::token_input::read(&shoal_api::token_input::Given {
                token: token.as_deref(),
                file: token_file.as_deref(),
                stdin: token_stdin,
            })?;
            let remote = if remote.contains(':') {
                remote
            } else {
                format!("{remote}:{DEFAULT_PORT}")
            };
            (
                common.options(Duration::from_secs(5), false)?,
                Bootstrap::Join {
                    token: token.expose().to_owned(),
                    remote,
                },
                no_serve,
                common.web_addrs()?,
            )
        }
        Command::Run { common } => (
            common.options(Duration::from_secs(5), true)?,
            Bootstrap::Restart,
            false,
            common.web_addrs()?,
        ),
    };
    let data_dir = options.data_dir.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    // A locked manager (autolock) waits in `start` for its key: a stop
    // request must end that wait too.
    let running = tokio::select! {
        running = daemon::start(options, bootstrap) => running?,
        _ = term.recv() => return Ok(()),
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    let advertise = running.addr().to_owned();
    if let Some((worker, manager)) = &running.init_tokens {
        println!("Cluster initialized: this manager ({advertise}) is its leader.\n");
        println!(
            "To add a worker to this cluster, run on it:\n\n    shoal-agent join --token {worker} {advertise}\n"
        );
        println!(
            "To add a manager, run on it:\n\n    shoal-manager join --token {manager} {advertise}\n"
        );
    }
    if let Some(key) = &running.init_unlock_key {
        print!("{}", shoal_api::token::unlock_key_notice(key));
    }
    if no_serve {
        running.shutdown().await;
        println!(
            "This manager's state is in {}: serve it with `systemctl start shoal-manager` \
             (or `shoal-manager run --data-dir {0}`).",
            data_dir.display()
        );
        return Ok(());
    }
    tracing::info!(addr = %advertise, raft_id = running.manager.raft_id, "manager serving");
    let (web, defaulted) = web;
    for addr in web {
        match shoal_manager::web::serve(running.manager.clone(), addr).await {
            Ok(_) => {}
            Err(error) if defaulted => tracing::warn!("{error:#}; serving no visualizer"),
            Err(error) => return Err(error),
        }
    }
    let mut running = running;
    let mut left = running.manager.left.subscribe();
    let ended = tokio::select! {
        _ = term.recv() => Ended::Stopped,
        _ = tokio::signal::ctrl_c() => Ended::Stopped,
        _ = async { let _ = left.wait_for(|l| *l).await; } => Ended::Left,
        why = running.demoted() => Ended::Demoted(why),
    };
    match ended {
        Ended::Stopped => {
            tracing::info!("stopping");
            running.shutdown().await;
        }
        Ended::Left => {
            tracing::info!("stopping");
            running.shutdown().await;
            // `shoal swarm leave`: this node is no longer the cluster's, and
            // its state would only make a restart fail. Docker clears it too.
            std::fs::remove_dir_all(&data_dir)
                .with_context(|| format!("clearing {} after leaving", data_dir.display()))?;
            tracing::info!(data_dir = %data_dir.display(), "left the cluster; state cleared");
        }
        Ended::Demoted(why) => {
            // Demoted or removed: what only managers hold goes, and the
            // daemon ends without an error (a service manager restarts it
            // only on one).
            tracing::warn!(reason = %why, "this manager was demoted or removed: erasing its state");
            running.shutdown_and_erase().await?;
            eprintln!(
                "This node is no longer a manager of the cluster ({why}). Its manager state in {} \
                 (the Raft log with the cluster's CA key, the data key, the manager certificate) \
                 is erased; the node's agent keeps running its tasks. To make it a manager again: \
                 `shoal node promote` it, then `shoal-manager join` with a manager token.",
                data_dir.display()
            );
        }
    }
    Ok(())
}

/// Why the daemon stops serving.
enum Ended {
    /// SIGTERM or Ctrl-C.
    Stopped,
    /// `shoal swarm leave`.
    Left,
    /// The cluster demoted or removed this manager (with its peers' reason).
    Demoted(String),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_and_argument_says_what_it_does() {
        shoal_help_check::assert_documented(&super::Cli::command());
    }

    #[test]
    fn half_the_cores_by_default_more_on_request_and_zero_is_refused_naming_the_flag() {
        use clap::Parser;
        let threads = |args: &[&str]| -> Result<u16, clap::Error> {
            Ok(super::worker_threads(
                &super::Cli::try_parse_from(args)?.command,
            ))
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            threads(&["shoal-manager", "run"]).unwrap(),
            super::default_worker_threads(cores)
        );
        // Half the cores, at least one.
        let defaults = [1, 2, 3, 4, 8, 64].map(super::default_worker_threads);
        assert_eq!(defaults, [1, 1, 1, 2, 4, 32]);
        assert_eq!(
            threads(&["shoal-manager", "run", "--worker-threads", "4"]).unwrap(),
            4
        );
        let refused = threads(&["shoal-manager", "run", "--worker-threads", "0"])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("--worker-threads"), "{refused}");
    }
}
