//! The cluster's root CA and join tokens.
//!
//! The root CA is created at `init` and stored in the replicated Cluster
//! object; the digest of its certificate is the first half of every join
//! token. (Node certificates and mutual TLS on the API are not issued yet:
//! today the CA anchors token validation.)

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use shoal_api::{
    pb::{Cluster, NodeRole},
    token::{self, JoinToken},
};

pub struct RootCa {
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn create_root_ca(cluster_id: &str) -> anyhow::Result<RootCa> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("shoal-root-ca-{cluster_id}"));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // Valid from the start of last year for 20 years: clock skew between
    // nodes never makes a fresh CA "not yet valid".
    let year = 1970 + (shoal_api::now_ms() / 1000 / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 20, 1, 1);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(RootCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
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
    let role = if token.secret == cluster.manager_secret {
        NodeRole::Manager
    } else if token.secret == cluster.worker_secret {
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
        let ca = create_root_ca("c1").unwrap();
        Cluster {
            root_ca_cert_pem: ca.cert_pem,
            root_ca_key_pem: ca.key_pem,
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
