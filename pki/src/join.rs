//! How a node gets its certificate, and keeps it valid.
//!
//! Joining (swarmkit's way): fetch the root CA from the manager over TLS
//! that checks nothing yet, and compare its digest with the one in the join
//! token: a token of another cluster, or a machine in the middle, fails
//! here, before the token's secret is sent. Then send the token and a CSR
//! over TLS that checks the manager against that CA. The key never leaves
//! the node; the token is used once.
//!
//! Renewing: past a random point of the second half of the certificate's
//! life, send a new CSR with the current certificate; no token, no restart.

use std::{path::Path, sync::Arc, time::Duration};

use shoal_api::{
    pb::{
        CheckJoinTokenRequest, IssueNodeCertificateRequest, NodeCertificate, NodeRole,
        RenewNodeCertificateRequest, RootCaRequest, ca_client::CaClient,
    },
    token::{JoinToken, ca_digest},
};

use crate::{
    Credentials, KeyAndCsr, PkiError,
    credentials::CredentialFiles,
    transport::{self, Dialer},
};

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Token(#[from] shoal_api::token::TokenError),
    #[error("cannot reach the manager at {addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error(
        "the join token belongs to another cluster: the manager at {0} has a different root CA (or someone is in between)"
    )]
    WrongCluster(String),
    #[error("the manager at {addr} refused to issue a certificate: {message}")]
    Refused { addr: String, message: String },
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// What a node says about itself when it joins.
pub struct JoinRequest<'a> {
    pub manager: &'a str,
    pub token: &'a str,
    pub advertise_addr: &'a str,
    pub hostname: &'a str,
}

/// Joins through the manager at `request.manager` and keeps the
/// credentials in `dir` (in memory only without one: simulated nodes).
pub async fn join(
    request: &JoinRequest<'_>,
    dir: Option<&Path>,
) -> Result<Arc<Credentials>, JoinError> {
    join_sealed(request, dir, None).await
}

/// The root CA of the manager at `addr`, checked against the digest in
/// `token`: the PEM to trust it by.
async fn verified_root(addr: &str, token: &JoinToken) -> Result<String, JoinError> {
    let unreachable = |e: &dyn std::fmt::Display| JoinError::Unreachable {
        addr: addr.to_owned(),
        message: e.to_string(),
    };
    let channel = transport::channel(addr, Dialer::UnverifiedServer)
        .await
        .map_err(|e| unreachable(&e))?;
    let root = CaClient::new(channel)
        .get_root_ca(RootCaRequest {})
        .await
        .map_err(|s| unreachable(&s.message()))?
        .into_inner();
    let root_der = crate::certs_from_pem(&root.cert_pem)?.remove(0);
    if ca_digest(&root_der) != token.ca_digest {
        return Err(JoinError::WrongCluster(addr.to_owned()));
    }
    Ok(root.cert_pem)
}

/// Which role `token` joins as, asked of the manager at `addr` once its
/// root CA matches the token (as [`join`] checks it): `shoal swarm join`
/// sets a host up as a manager or as a worker from it.
pub async fn token_role(addr: &str, token: &str) -> Result<NodeRole, JoinError> {
    let parsed = JoinToken::parse(token)?;
    let trusted = verified_root(addr, &parsed).await?;
    let channel = transport::channel(addr, Dialer::anonymous(&trusted)?)
        .await
        .map_err(|e| JoinError::Unreachable {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?;
    let client = CaClient::new(channel);
    let answer = retry_unavailable(|| {
        let mut client = client.clone();
        let request = CheckJoinTokenRequest {
            token: token.to_owned(),
        };
        async move { client.check_join_token(request).await }
    })
    .await
    .map_err(|s| JoinError::Refused {
        addr: addr.to_owned(),
        message: s.message().to_owned(),
    })?;
    NodeRole::from_word(&answer.role).ok_or_else(|| JoinError::Refused {
        addr: addr.to_owned(),
        message: format!("unknown role {:?}", answer.role),
    })
}

/// As [`join`], the key kept sealed by `seal`.
pub async fn join_sealed(
    request: &JoinRequest<'_>,
    dir: Option<&Path>,
    seal: Option<Arc<dyn crate::KeySeal>>,
) -> Result<Arc<Credentials>, JoinError> {
    let token = JoinToken::parse(request.token)?;
    let addr = request.manager;
    let unreachable = |e: &dyn std::fmt::Display| JoinError::Unreachable {
        addr: addr.to_owned(),
        message: e.to_string(),
    };
    let root_pem = verified_root(addr, &token).await?;
    // From here on the manager must prove it holds a manager certificate of
    // that CA.
    // Only the root whose digest the token names: anything else in that
    // unverified answer (its trust list) could be a man in the middle's.
    // The roots to trust from then on come with the certificate, over TLS
    // that this root verified.
    let trusted = &root_pem;
    let key = KeyAndCsr::generate()?;
    // From the advertised address: the manager matches it with the address
    // the request comes from before giving a manager host's node away.
    let host = request
        .advertise_addr
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(request.advertise_addr);
    let source = host.trim_matches(['[', ']']).parse().ok();
    let channel = transport::channel_from(addr, Dialer::anonymous(trusted)?, source)
        .await
        .map_err(|e| unreachable(&e))?;
    let client = CaClient::new(channel);
    let issued = retry_unavailable(|| {
        let mut client = client.clone();
        let request = IssueNodeCertificateRequest {
            token: request.token.to_owned(),
            csr_der: key.csr_der.clone(),
            advertise_addr: request.advertise_addr.to_owned(),
            hostname: request.hostname.to_owned(),
        };
        async move { client.issue_node_certificate(request).await }
    })
    .await
    .map_err(|s| JoinError::Refused {
        addr: addr.to_owned(),
        message: s.message().to_owned(),
    })?;
    let files = files(issued, key.key_pem);
    Ok(match dir {
        Some(dir) => Credentials::create_sealed_in(dir, files, seal)?,
        None => Credentials::new(files)?,
    })
}

fn files(issued: NodeCertificate, key_pem: String) -> CredentialFiles {
    CredentialFiles {
        chain_pem: issued.chain_pem,
        key_pem,
        roots_pem: issued.trust_pem,
    }
}

/// Calls `call` again while the manager answers `Unavailable` (an election
/// under way), for up to 30 s.
async fn retry_unavailable<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut pause = Duration::from_millis(200);
    loop {
        match call().await {
            Ok(answer) => return Ok(answer.into_inner()),
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() + pause < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(status) => return Err(status),
        }
    }
}

/// Asks the manager at `addr` to renew `credentials` and puts the new
/// certificate in place.
pub async fn renew_through(
    addr: &str,
    credentials: &Arc<Credentials>,
) -> Result<(), tonic::Status> {
    let key = KeyAndCsr::generate().map_err(|e| tonic::Status::internal(e.to_string()))?;
    let channel = transport::channel(addr, Dialer::Node(credentials.clone()))
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{addr}: {e}")))?;
    let issued = CaClient::new(channel)
        .renew_node_certificate(RenewNodeCertificateRequest {
            csr_der: key.csr_der,
        })
        .await?
        .into_inner();
    credentials
        .replace(files(issued, key.key_pem))
        .map_err(|e| tonic::Status::internal(e.to_string()))
}

/// A number in [0, 1) from the kernel's random source: where in the second
/// half of its life this certificate renews.
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// How long until `credentials` should renew (zero if it is past due).
pub fn until_renewal(credentials: &Credentials, jitter: f64) -> Duration {
    credentials
        .identity()
        .renew_at(jitter)
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
}
