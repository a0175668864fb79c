//! The node's identity: its certificate, obtained once with a join token
//! and renewed in the background with the certificate alone.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use shoal_pki::{Credentials, join};
use tokio::sync::watch;

use crate::session::SessionState;

/// The credentials kept in `dir`, or new ones for `token` from the first
/// of `managers` that issues them. A node that has credentials never sends
/// its token again (so rotating the token locks out no one).
pub async fn obtain(
    dir: Option<&Path>,
    managers: &[String],
    token: Option<&str>,
    advertise_addr: &str,
    hostname: &str,
) -> anyhow::Result<Arc<Credentials>> {
    if let Some(dir) = dir
        && let Some(credentials) = Credentials::load(dir)?
    {
        return Ok(credentials);
    }
    let token = token.context(
        "this node has no certificate yet: give the cluster's join token (--token-file, --token-stdin, SHOAL_JOIN_TOKEN or --token)",
    )?;
    let mut last = None;
    for manager in managers {
        let request = join::JoinRequest {
            manager,
            token,
            advertise_addr,
            hostname,
        };
        match join::join(&request, dir).await {
            Ok(credentials) => {
                tracing::info!(node = %credentials.identity().node_id, %manager, "joined: the cluster issued this node's certificate");
                return Ok(credentials);
            }
            // A wrong token is wrong everywhere.
            Err(error @ (join::JoinError::WrongCluster(_) | join::JoinError::Token(_))) => {
                return Err(error.into());
            }
            Err(error @ join::JoinError::Refused { .. }) => return Err(error.into()),
            Err(error) => {
                tracing::warn!(%manager, error = %error, "could not join through this manager");
                last = Some(error);
            }
        }
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no manager address given")))
}

/// How long to wait after a failed renewal before the next try.
const RETRY: Duration = Duration::from_secs(5);

/// Renews the node's certificate past a random point of the second half
/// of its life, or at once when the cluster's CA rotated, through the
/// manager the session talks to (or any it knows), until the task is
/// dropped. Trusts the roots the cluster says it trusts.
pub async fn keep_renewed(
    credentials: Arc<Credentials>,
    mut session: watch::Receiver<SessionState>,
) {
    let jitter = join::jitter();
    loop {
        let (trust, root) = {
            let state = session.borrow_and_update();
            (state.trust_pem.clone(), state.root_issuer.clone())
        };
        if !trust.is_empty()
            && let Err(error) = credentials.replace_roots(&trust)
        {
            tracing::warn!(%error, "trusting the cluster's roots");
        }
        let rotated = !root.is_empty() && credentials.identity().issuer != root;
        if !rotated {
            tokio::select! {
                _ = tokio::time::sleep(join::until_renewal(&credentials, jitter)) => {}
                changed = session.changed() => {
                    if changed.is_err() { return }
                    continue;
                }
            }
        }
        let candidates: Vec<String> = {
            let state = session.borrow();
            state
                .connected_to
                .iter()
                .chain(state.managers.iter())
                .cloned()
                .collect()
        };
        let mut renewed = false;
        for addr in candidates {
            match join::renew_through(&addr, &credentials).await {
                Ok(()) => {
                    let identity = credentials.identity();
                    tracing::info!(manager = %addr, not_after = ?identity.not_after, "renewed this node's certificate");
                    renewed = true;
                    break;
                }
                Err(status) => {
                    tracing::warn!(manager = %addr, error = %status.message(), "renewing the certificate failed");
                }
            }
        }
        if !renewed {
            tokio::time::sleep(RETRY).await;
        }
    }
}
