//! Shoal's public key infrastructure.
//!
//! Every node (manager or worker) holds a key it generated itself and a
//! certificate the cluster's root CA signed, as Swarm's nodes do: the subject
//! says who the node is (CN = node id, OU = role, O = cluster id). Every TCP
//! connection between Shoal's parts is TLS 1.3; the managers ask for a client
//! certificate and decide what a caller may do from it, never from what the
//! request claims.
//!
//! - [`ca`]: the root CA: create it, issue node certificates from a CSR,
//!   cross-sign a new root when the CA rotates.
//! - [`identity`]: who a certificate names ([`Identity`], [`Role`]).
//! - [`credentials`]: a node's own key, certificate and trusted roots, which
//!   renewal and CA rotation replace while connections keep running.
//! - [`transport`]: rustls configurations over those credentials, the TLS
//!   listener a tonic server serves, and tonic channels that dial over TLS.
//! - [`connection`]: an accepted TLS connection and who it is with
//!   ([`PeerInfo`]), read once per connection.
//! - [`https`]: HTTPS endpoints (metrics) on the same TLS, peer read once.
//! - [`join`]: getting a certificate for a join token, and renewing it.

pub mod ca;
pub mod connection;
pub mod credentials;
pub mod https;
pub mod identity;
pub mod join;
pub mod transport;

pub use ca::{CertificateAuthority, NodeRequest};
pub use connection::PeerInfo;
pub use credentials::{Credentials, KeyAndCsr, KeySeal};
pub use identity::{Identity, Role};

/// What went wrong with a key, a certificate or a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{what}: {source}")]
    Rustls {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PkiError {
    pub(crate) fn rcgen(what: &'static str) -> impl FnOnce(rcgen::Error) -> Self {
        move |source| Self::Rcgen { what, source }
    }
    pub(crate) fn rustls(what: &'static str) -> impl FnOnce(rustls::Error) -> Self {
        move |source| Self::Rustls { what, source }
    }
}

pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// The name every manager's certificate carries and every client checks:
/// a node dials a manager of its cluster, whatever its address.
pub const MANAGER_SERVER_NAME: &str = "shoal-manager";

/// The certificates in a PEM text, in order.
pub fn certs_from_pem(text: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let blocks =
        pem::parse_many(text).map_err(|e| PkiError::Invalid(format!("certificate PEM: {e}")))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| rustls::pki_types::CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(PkiError::Invalid("no certificate in PEM text".into()));
    }
    Ok(certs)
}

/// DER certificates as one PEM text.
pub fn pem_of_certs<'a>(certs: impl IntoIterator<Item = &'a [u8]>) -> String {
    certs
        .into_iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())))
        .collect()
}

/// The SHA-256 of a certificate's DER, hex: how the cluster names a root CA.
pub fn fingerprint(cert_der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(cert_der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
