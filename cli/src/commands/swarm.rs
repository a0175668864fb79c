//! `shoal swarm update --cert-expiry`, `shoal swarm ca` and `shoal cert
//! issue`: the cluster's certificates.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use shoal_api::pb::{Empty, IssueClientCertificateRequest, UpdateCertificatesRequest};

use crate::client::{Client, status_error};

#[derive(Subcommand)]
pub enum SwarmCommand {
    /// Update the swarm.
    Update(UpdateArgs),
    /// Display and rotate the root CA.
    Ca(CaArgs),
}

#[derive(Args)]
pub struct UpdateArgs {
    /// Validity period for node certificates (ns|us|ms|s|m|h).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    cert_expiry: Option<Duration>,
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

#[derive(Subcommand)]
pub enum CertCommand {
    /// Issue a client certificate for using the control API over TCP.
    ///
    /// Writes ca.pem, cert.pem and key.pem (0600) to DIR; then
    /// `SHOAL_HOST=tcp://MANAGER:2377 SHOAL_CERT_PATH=DIR shoal ...`. The key
    /// is made here and never leaves this machine.
    Issue(IssueArgs),
}

#[derive(Args)]
pub struct IssueArgs {
    /// What the certificate may do: admin (the control API).
    #[arg(long, default_value = "admin")]
    role: String,
    /// Directory to write ca.pem, cert.pem and key.pem to.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// How long it is valid (default: the cluster's --cert-expiry).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    expiry: Option<Duration>,
}

pub async fn run(client: &mut Client, command: SwarmCommand) -> Result<()> {
    match command {
        SwarmCommand::Update(args) => {
            let Some(expiry) = args.cert_expiry else {
                anyhow::bail!("nothing to update: give --cert-expiry");
            };
            client
                .update_certificates(UpdateCertificatesRequest {
                    cert_expiry_ms: expiry.as_millis() as i64,
                    rotate_ca: false,
                })
                .await
                .map_err(status_error)?;
            println!("Swarm updated.");
            Ok(())
        }
        SwarmCommand::Ca(args) => ca(client, args).await,
    }
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
                    eprintln!("rotating the root CA: {} node(s) still on the old root", info.nodes_on_old_ca);
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

pub async fn cert(client: &mut Client, command: CertCommand) -> Result<()> {
    match command {
        CertCommand::Issue(args) => {
            let key = shoal_pki::KeyAndCsr::generate()?;
            let issued = client
                .issue_client_certificate(IssueClientCertificateRequest {
                    role: args.role.clone(),
                    csr_der: key.csr_der,
                    expiry_ms: args.expiry.map(|d| d.as_millis() as i64).unwrap_or(0),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            crate::tls::write_dir(&args.out, &issued.trust_pem, &issued.chain_pem, &key.key_pem)
                .with_context(|| format!("writing the certificate to {}", args.out.display()))?;
            println!(
                "Issued {} certificate {} in {} (ca.pem, cert.pem, key.pem)",
                args.role,
                issued.node_id,
                args.out.display()
            );
            Ok(())
        }
    }
}
