//! `shoal cert issue`: client certificates for using the control API over
//! TCP (mutual TLS).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use shoal_api::pb::IssueClientCertificateRequest;

use crate::client::{Client, status_error};

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
    /// How long it is valid (by default and at most: the cluster's --cert-expiry).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    expiry: Option<Duration>,
}

pub async fn run(client: &mut Client, command: CertCommand) -> Result<()> {
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
            crate::tls::write_dir(
                &args.out,
                &issued.trust_pem,
                &issued.chain_pem,
                &key.key_pem,
            )
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
