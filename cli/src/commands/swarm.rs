//! `shoal swarm`, in Docker's shape: `init`, `join` and `leave` set up (or
//! clear) this host's daemons; `join-token`, `update`, `ca`, `unlock` and
//! `unlock-key` manage the cluster's tokens, settings, root CA and autolock
//! key, with Docker's flags and words.

pub mod host;
mod leave;
mod setup;

use std::{
    io::{BufRead, IsTerminal, Write},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use shoal_api::{
    pb::{
        Empty, Rebalance, UnlockRequest, UpdateCertificatesRequest, UpdateClusterRequest,
        lock_client::LockClient,
    },
    token::unlock_key_notice,
};

use crate::client::{self, Client, status_error};

#[derive(Subcommand)]
pub enum SwarmCommand {
    /// Initialize a swarm: this host's manager and agent, run by systemd.
    Init(Box<setup::InitArgs>),
    /// Join a swarm as a node and/or manager: this host's agent (and manager), run by systemd.
    Join(Box<setup::JoinArgs>),
    /// Manage join tokens.
    JoinToken(super::cluster::JoinToken),
    /// Leave the swarm: the cluster removes this node, and its daemons and state go.
    Leave(leave::LeaveArgs),
    /// Update the swarm.
    Update(UpdateArgs),
    /// Display and rotate the root CA.
    Ca(CaArgs),
    /// Unlock swarm: give a manager restarted with autolock its unlock key.
    ///
    /// The key is read from the terminal (not echoed) or from stdin.
    Unlock,
    /// Manage the unlock key.
    UnlockKey {
        /// Only display token.
        #[arg(short, long)]
        quiet: bool,
        /// Rotate unlock key.
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Args)]
pub struct UpdateArgs {
    /// Change manager autolocking setting (true|false).
    #[arg(
        long,
        value_name = "true|false",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    autolock: Option<bool>,
    /// Validity period for node certificates (ns|us|ms|s|m|h).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    cert_expiry: Option<Duration>,
    /// Dispatcher heartbeat period (ns|us|ms|s|m|h).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    dispatcher_heartbeat: Option<Duration>,
    /// Task history retention limit.
    #[arg(long)]
    task_history_limit: Option<u64>,
    /// Move tasks onto a node that becomes Ready, as a rolling update (on-node-ready|never; default never, as Swarm).
    #[arg(long, value_name = "on-node-ready|never", value_parser = ["on-node-ready", "never"])]
    rebalance: Option<String>,
}

#[derive(Args)]
pub struct CaArgs {
    /// Rotate the swarm CA: every node moves to a new root, with no restart.
    #[arg(long)]
    rotate: bool,
    /// Exit immediately instead of waiting for the root rotation to converge.
    #[arg(short, long)]
    detach: bool,
    /// Suppress progress output.
    #[arg(short, long)]
    quiet: bool,
}

/// `host` is the manager to talk to: `init`, `join` and `leave` work on
/// this host first, the others need the manager from the start.
pub async fn run(host: &str, tls: &crate::tls::TlsArgs, command: SwarmCommand) -> Result<()> {
    match command {
        SwarmCommand::Init(args) => return setup::init(host, tls, *args).await,
        SwarmCommand::Join(args) => return setup::join(host, tls, *args).await,
        SwarmCommand::Leave(args) => return leave::leave(host, tls, args).await,
        SwarmCommand::Unlock => return unlock(host, tls).await,
        _ => {}
    }
    let client = &mut client::connect(host, tls).await?;
    match command {
        SwarmCommand::JoinToken(args) => super::cluster::join_token(client, args).await,
        SwarmCommand::Update(args) => update(client, args).await,
        SwarmCommand::Ca(args) => ca(client, args).await,
        SwarmCommand::UnlockKey { quiet, rotate } => unlock_key(client, quiet, rotate).await,
        SwarmCommand::Init(_)
        | SwarmCommand::Join(_)
        | SwarmCommand::Leave(_)
        | SwarmCommand::Unlock => unreachable!("handled above"),
    }
}

async fn update(client: &mut Client, args: UpdateArgs) -> Result<()> {
    if args.autolock.is_none()
        && args.cert_expiry.is_none()
        && args.dispatcher_heartbeat.is_none()
        && args.task_history_limit.is_none()
        && args.rebalance.is_none()
    {
        bail!(
            "nothing to update: give --autolock, --cert-expiry, --dispatcher-heartbeat, --task-history-limit or --rebalance"
        );
    }
    if let Some(expiry) = args.cert_expiry {
        client
            .update_certificates(UpdateCertificatesRequest {
                cert_expiry_ms: expiry.as_millis() as i64,
                rotate_ca: false,
            })
            .await
            .map_err(status_error)?;
    }
    let rebalance =
        match args.rebalance.as_deref() {
            Some(word) => Some(Rebalance::from_word(word).with_context(|| {
                format!("invalid --rebalance {word:?}: use on-node-ready or never")
            })? as i32),
            None => None,
        };
    if args.dispatcher_heartbeat.is_some()
        || args.task_history_limit.is_some()
        || rebalance.is_some()
    {
        client
            .update_cluster(UpdateClusterRequest {
                heartbeat_period_ms: args.dispatcher_heartbeat.map(|d| d.as_millis() as i64),
                task_history_limit: args.task_history_limit,
                rebalance,
                ..Default::default()
            })
            .await
            .map_err(status_error)?;
    }
    if args.autolock.is_none() {
        println!("Swarm updated.");
        return Ok(());
    }
    let before = client
        .get_cluster(Empty {})
        .await
        .map_err(status_error)?
        .into_inner();
    let after = client
        .update_cluster(UpdateClusterRequest {
            autolock_managers: args.autolock,
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("Swarm updated.");
    if after.autolock_managers && !before.autolock_managers {
        let key = client
            .get_unlock_key(Empty {})
            .await
            .map_err(status_error)?
            .into_inner()
            .unlock_key;
        print!("{}", unlock_key_notice(&key));
    }
    Ok(())
}

async fn unlock_key(client: &mut Client, quiet: bool, rotate: bool) -> Result<()> {
    if rotate {
        client
            .rotate_unlock_key(Empty {})
            .await
            .map_err(status_error)?;
        if !quiet {
            println!("Successfully rotated manager unlock key.\n");
        }
    }
    let key = client
        .get_unlock_key(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .unlock_key;
    if quiet {
        println!("{key}");
    } else {
        print!("{}", unlock_key_notice(&key));
    }
    Ok(())
}

/// `shoal swarm unlock`: asks first whether the manager is locked (an empty
/// key is refused as malformed by a locked one, "not locked" by the
/// others), then for the key.
pub async fn unlock(host: &str, tls: &crate::tls::TlsArgs) -> Result<()> {
    let mut lock = LockClient::new(client::channel(host, tls).await?);
    let probe = lock
        .unlock(UnlockRequest {
            unlock_key: String::new(),
        })
        .await;
    match probe {
        Err(status) if status.code() == tonic::Code::InvalidArgument => {}
        Err(status) => return Err(status_error(status)),
        Ok(_) => bail!("the manager accepted an empty unlock key"),
    }
    let key = read_key("Enter unlock key: ")?;
    if key.is_empty() {
        bail!("no unlock key given");
    }
    lock.unlock(UnlockRequest { unlock_key: key })
        .await
        .map_err(status_error)?;
    Ok(())
}

/// A line from stdin; from a terminal with the prompt shown and echo off.
fn read_key(prompt: &str) -> Result<String> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        print!("{prompt}");
        std::io::stdout().flush()?;
        let saved = rustix::termios::tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)
            .context("turning the terminal's echo off")?;
        let read = stdin.lock().read_line(&mut line);
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &saved);
        println!();
        read.context("reading the unlock key")?;
    } else {
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the unlock key from stdin")?;
    }
    Ok(line.trim().to_owned())
}

async fn ca(client: &mut Client, args: CaArgs) -> Result<()> {
    if args.rotate {
        client
            .update_certificates(UpdateCertificatesRequest {
                cert_expiry_ms: 0,
                rotate_ca: true,
            })
            .await
            .map_err(status_error)?;
        if !args.detach {
            // Converged when every ready node holds a certificate of the
            // new root and the old one is no longer trusted.
            loop {
                let info = client
                    .get_cluster(Empty {})
                    .await
                    .map_err(status_error)?
                    .into_inner();
                if !info.ca_rotation_in_progress {
                    break;
                }
                if !args.quiet {
                    eprintln!(
                        "rotating the root CA: {} node(s) still on the old root",
                        info.nodes_on_old_ca
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let info = client
        .get_cluster(Empty {})
        .await
        .map_err(status_error)?
        .into_inner();
    println!("{}", info.root_ca_pem);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        swarm: SwarmCommand,
    }

    fn autolock(args: &[&str]) -> Result<Option<bool>, clap::Error> {
        let cli = Cli::try_parse_from([&["swarm", "update"], args].concat())?;
        let SwarmCommand::Update(update) = cli.swarm else {
            panic!("parsed as update");
        };
        Ok(update.autolock)
    }

    #[test]
    fn autolock_takes_docker_forms() {
        assert_eq!(autolock(&[]).unwrap(), None);
        assert_eq!(autolock(&["--autolock"]).unwrap(), Some(true));
        assert_eq!(autolock(&["--autolock=true"]).unwrap(), Some(true));
        assert_eq!(autolock(&["--autolock=false"]).unwrap(), Some(false));
        let error = autolock(&["--autolock=maybe"]).unwrap_err().to_string();
        assert!(error.contains("maybe"), "{error}");
    }
}
