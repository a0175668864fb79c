//! The cluster's root CA as the store keeps it, and join tokens.
//!
//! The root CA is created at `init` and kept in the replicated Cluster
//! object, so every manager can issue node certificates; the digest of its
//! certificate is the first half of every join token.

use std::time::Duration;

use anyhow::Context;
use shoal_api::{
    pb::{Cluster, NodeRole},
    token::{self, JoinToken},
};
use shoal_pki::{CertificateAuthority, NodeRequest, Role};

/// How long node certificates are valid unless the cluster says otherwise
/// (Swarm's 90 days); they renew themselves past half of it.
pub const DEFAULT_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);

/// The shortest certificate life a cluster may set: renewal must have
/// time to happen.
pub const MIN_CERT_EXPIRY: Duration = Duration::from_secs(10);

pub fn cert_expiry(cluster: &Cluster) -> Duration {
    cluster
        .spec
        .as_ref()
        .map(|s| s.cert_expiry_ms)
        .filter(|ms| *ms > 0)
        .map(|ms| Duration::from_millis(ms as u64).max(MIN_CERT_EXPIRY))
        .unwrap_or(DEFAULT_CERT_EXPIRY)
}

/// The CA that signs node certificates now.
pub fn authority(cluster: &Cluster) -> anyhow::Result<CertificateAuthority> {
    Ok(
        CertificateAuthority::from_pem(&cluster.root_ca_cert_pem, &cluster.root_ca_key_pem)
            .context("the cluster's root CA")?
            .with_chain(&cluster.cross_signed_pem),
    )
}

/// Every root nodes should trust now.
pub fn trust_pem(cluster: &Cluster) -> String {
    trusted(cluster).to_owned()
}

/// [`trust_pem`], borrowed.
pub fn trusted(cluster: &Cluster) -> &str {
    if cluster.trust_pem.is_empty() {
        &cluster.root_ca_cert_pem
    } else {
        &cluster.trust_pem
    }
}

pub fn cluster_id(cluster: &Cluster) -> &str {
    cluster.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// A certificate for `node_id` as `role`, for the key of `csr_der`: its
/// chain (PEM).
pub fn issue(
    cluster: &Cluster,
    csr_der: &[u8],
    node_id: &str,
    role: Role,
) -> anyhow::Result<String> {
    Ok(authority(cluster)?.issue(
        csr_der,
        &NodeRequest {
            node_id,
            role,
            cluster_id: cluster_id(cluster),
            validity: cert_expiry(cluster),
        },
    )?)
}

/// The role a node role has in certificates.
pub fn cert_role(role: NodeRole) -> Role {
    match role {
        NodeRole::Manager => Role::Manager,
        NodeRole::Worker => Role::Worker,
    }
}

/// The digest of a PEM certificate, as join tokens carry it.
pub fn digest_of_pem(cert_pem: &str) -> anyhow::Result<String> {
    let der = pem::parse(cert_pem).context("parsing the root CA certificate")?;
    Ok(token::ca_digest(der.contents()))
}

/// The join token for `role` in `cluster`.
pub fn join_token(cluster: &Cluster, role: NodeRole) -> anyhow::Result<JoinToken> {
    let digest = digest_of_pem(&cluster.root_ca_cert_pem)?;
    let secret = match role {
        NodeRole::Worker => &cluster.worker_secret,
        NodeRole::Manager => &cluster.manager_secret,
    };
    Ok(JoinToken::new(&digest, secret))
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenRefused {
    #[error(transparent)]
    Malformed(#[from] token::TokenError),
    #[error(
        "the join token belongs to another cluster (its CA digest does not match this cluster's root CA)"
    )]
    WrongCluster,
    #[error("invalid join token: the secret is not this cluster's current {0} token (rotated?)")]
    WrongSecret(&'static str),
}

/// Checks `text` against the cluster; returns the role it grants.
pub fn check_token(
    cluster: &Cluster,
    text: &str,
    wanted: Option<NodeRole>,
) -> Result<NodeRole, TokenRefused> {
    let token = JoinToken::parse(text)?;
    let digest =
        digest_of_pem(&cluster.root_ca_cert_pem).map_err(|_| TokenRefused::WrongCluster)?;
    if token.ca_digest != digest {
        return Err(TokenRefused::WrongCluster);
    }
    // Compared as digests: the time a comparison takes says nothing about
    // how much of a secret a guess got right.
    let same = |secret: &str| {
        use sha2::Digest;
        sha2::Sha256::digest(token.secret.as_bytes()) == sha2::Sha256::digest(secret.as_bytes())
    };
    let role = if same(&cluster.manager_secret) {
        NodeRole::Manager
    } else if same(&cluster.worker_secret) {
        NodeRole::Worker
    } else {
        return Err(TokenRefused::WrongSecret(match wanted {
            Some(NodeRole::Manager) => "manager",
            _ => "join",
        }));
    };
    if wanted == Some(NodeRole::Manager) && role != NodeRole::Manager {
        return Err(TokenRefused::WrongSecret("manager"));
    }
    Ok(role)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        let ca = CertificateAuthority::create("c1").unwrap();
        Cluster {
            root_ca_cert_pem: ca.cert_pem().to_owned(),
            root_ca_key_pem: ca.key_pem(),
            worker_secret: token::new_secret(),
            manager_secret: token::new_secret(),
            ..Default::default()
        }
    }

    #[test]
    fn tokens_grant_their_role_and_name_the_problem_otherwise() {
        let (a, b) = (cluster(), cluster());
        let worker = join_token(&a, NodeRole::Worker).unwrap().to_string();
        let manager = join_token(&a, NodeRole::Manager).unwrap().to_string();
        assert_eq!(check_token(&a, &worker, None), Ok(NodeRole::Worker));
        assert_eq!(
            check_token(&a, &manager, Some(NodeRole::Manager)),
            Ok(NodeRole::Manager)
        );
        assert_eq!(
            check_token(&a, &worker, Some(NodeRole::Manager)),
            Err(TokenRefused::WrongSecret("manager"))
        );
        assert_eq!(
            check_token(&b, &worker, None),
            Err(TokenRefused::WrongCluster)
        );
        let err = check_token(&b, &worker, None).unwrap_err().to_string();
        assert!(err.contains("another cluster"), "{err}");
        assert!(matches!(
            check_token(&a, "SHTKN-1-x-y", None),
            Err(TokenRefused::Malformed(_))
        ));
    }
}
