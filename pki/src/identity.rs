//! Who a certificate names: node id, role and cluster, read from its subject.

use std::time::{Duration, SystemTime};

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{PkiError, Result};

/// What a certificate allows its holder to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A manager: Raft, membership, the control API, and its own agent.
    Manager,
    /// A worker's agent: the dispatcher, as itself only.
    Worker,
    /// An operator's client (`shoal cert issue --role admin`): the control API.
    Admin,
}

impl Role {
    /// The certificate's organizational unit for this role.
    pub fn unit(self) -> &'static str {
        match self {
            Role::Manager => "shoal-manager",
            Role::Worker => "shoal-worker",
            Role::Admin => "shoal-admin",
        }
    }

    pub fn from_unit(unit: &str) -> Option<Self> {
        [Role::Manager, Role::Worker, Role::Admin]
            .into_iter()
            .find(|r| r.unit() == unit)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "manager" => Ok(Role::Manager),
            "worker" => Ok(Role::Worker),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected manager, worker or admin"
            )),
        }
    }
}

/// The subject of a Shoal certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The node id (for admin certificates, the id of the client).
    pub node_id: String,
    pub role: Role,
    pub cluster_id: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Fingerprint of the issuer's name and key: which root signed it.
    pub issuer: String,
}

impl Identity {
    /// Reads the subject of a DER certificate. Checks nothing about its
    /// signature: callers use it on certificates TLS has verified, or on
    /// their own.
    pub fn of_der(der: &[u8]) -> Result<Self> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| PkiError::Invalid(format!("certificate: {e}")))?;
        let subject = cert.subject();
        let first = |attrs: Vec<&x509_parser::x509::AttributeTypeAndValue>| {
            attrs
                .first()
                .and_then(|a| a.as_str().ok())
                .map(str::to_owned)
        };
        let node_id = first(subject.iter_common_name().collect())
            .ok_or_else(|| PkiError::Invalid("certificate has no common name".into()))?;
        let unit = first(subject.iter_organizational_unit().collect())
            .ok_or_else(|| PkiError::Invalid("certificate has no organizational unit".into()))?;
        let role = Role::from_unit(&unit).ok_or_else(|| {
            PkiError::Invalid(format!("certificate role {unit:?} is not a Shoal role"))
        })?;
        let cluster_id = first(subject.iter_organization().collect()).unwrap_or_default();
        let time = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
        };
        let validity = cert.validity();
        Ok(Self {
            node_id,
            role,
            cluster_id,
            not_before: time(validity.not_before),
            not_after: time(validity.not_after),
            issuer: crate::fingerprint(cert.issuer().as_raw()),
        })
    }

    /// When the holder should ask for a new certificate: at a point between
    /// 30% and 50% of its lifetime (before half-life, so that a manager
    /// unreachable for a while still leaves time), spread per node so that
    /// a cluster issued at once does not renew at once.
    pub fn renew_at(&self, jitter: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life.mul_f64(0.3 + 0.2 * jitter.clamp(0.0, 1.0))
    }
}

/// The fingerprint of a certificate's *subject* name: what
/// [`Identity::issuer`] is for the certificates it issues.
pub fn subject_fingerprint(cert_der: &[u8]) -> Result<String> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| PkiError::Invalid(format!("certificate: {e}")))?;
    Ok(crate::fingerprint(cert.subject().as_raw()))
}
