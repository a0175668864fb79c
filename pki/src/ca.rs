//! The cluster's root CA: created at `init`, kept (encrypted) in the
//! replicated store, and used by any manager to sign node certificates.
//!
//! A node sends a certificate signing request (CSR) made with its own key;
//! the CA takes only the public key from it. Subject, names, usages and
//! lifetime are the CA's choice, so a node cannot ask for more than its
//! join token (or its node object) gives it.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateSigningRequestDer;

use crate::{PkiError, Result, Role};

/// How long a root CA is valid: long enough never to be the reason a
/// cluster stops (rotate it with `shoal swarm ca --rotate`).
const ROOT_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);

/// Certificates start this long before they are issued, so that a node
/// whose clock is a little behind the CA's still accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// What a node certificate says.
#[derive(Debug, Clone)]
pub struct NodeRequest<'a> {
    pub node_id: &'a str,
    pub role: Role,
    pub cluster_id: &'a str,
    pub validity: Duration,
}

/// A root CA with its private key.
pub struct CertificateAuthority {
    cert_pem: String,
    key: KeyPair,
    /// Certificates sent after each leaf: during a rotation, the new root
    /// cross-signed by the old one, so nodes that trust only the old root
    /// still accept certificates the new one issued.
    chain_pem: String,
}

impl CertificateAuthority {
    /// A new self-signed root for `cluster_id`.
    pub fn create(cluster_id: &str) -> Result<Self> {
        let key = KeyPair::generate().map_err(PkiError::rcgen("generating the CA key"))?;
        let now = SystemTime::now();
        // A random part: a rotated root has another name than the one before.
        let params = root_params(
            &format!("shoal root CA {}", random_hex(4)),
            cluster_id,
            now - CLOCK_SKEW,
            now + ROOT_VALIDITY,
        );
        let cert = params
            .self_signed(&key)
            .map_err(PkiError::rcgen("signing the root CA"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            key,
            chain_pem: String::new(),
        })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(PkiError::rcgen("reading the CA key"))?;
        // The certificate must parse and carry this key's public half.
        let der = crate::certs_from_pem(cert_pem)?.remove(0);
        let (_, cert) = <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<_>>::from_der(&der)
            .map_err(|e| PkiError::Invalid(format!("CA certificate: {e}")))?;
        if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(PkiError::Invalid(
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key,
            chain_pem: String::new(),
        })
    }

    /// Sends `chain_pem` after every certificate this CA issues.
    pub fn with_chain(mut self, chain_pem: &str) -> Self {
        self.chain_pem = chain_pem.to_owned();
        self
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The root certificate's DER.
    pub fn cert_der(&self) -> Result<Vec<u8>> {
        Ok(crate::certs_from_pem(&self.cert_pem)?.remove(0).to_vec())
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(PkiError::rcgen("reading the CA certificate"))
    }

    /// Signs the public key of a node's CSR; returns the certificate chain
    /// (PEM, leaf first).
    pub fn issue(&self, csr_der: &[u8], request: &NodeRequest) -> Result<String> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(PkiError::rcgen("reading the certificate signing request"))?;
        let cert = node_params(request)?
            .signed_by(&csr.public_key, &self.issuer()?)
            .map_err(PkiError::rcgen("signing the node certificate"))?;
        Ok(format!("{}{}", cert.pem(), self.chain_pem))
    }

    /// A new key and its certificate, for a manager's own identity at
    /// `init` and for operators' client certificates: (chain PEM, key PEM).
    pub fn issue_with_new_key(&self, request: &NodeRequest) -> Result<(String, String)> {
        let key = KeyAndCsr::generate_raw()?;
        let cert = node_params(request)?
            .signed_by(&key, &self.issuer()?)
            .map_err(PkiError::rcgen("signing the certificate"))?;
        Ok((
            format!("{}{}", cert.pem(), self.chain_pem),
            key.serialize_pem(),
        ))
    }

    /// Like [`issue_with_new_key`](Self::issue_with_new_key), the
    /// certificate also naming `addresses` (IP subject alternative names):
    /// for servers that peers dial and check by address, such as the etcd
    /// members the control-plane benchmark runs beside Shoal's managers.
    pub fn issue_with_new_key_for_addresses(
        &self,
        request: &NodeRequest,
        addresses: &[std::net::IpAddr],
    ) -> Result<(String, String)> {
        let key = KeyAndCsr::generate_raw()?;
        let mut params = node_params(request)?;
        params
            .subject_alt_names
            .extend(addresses.iter().map(|ip| SanType::IpAddress(*ip)));
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(PkiError::rcgen("signing the certificate"))?;
        Ok((
            format!("{}{}", cert.pem(), self.chain_pem),
            key.serialize_pem(),
        ))
    }

    /// `next`'s certificate signed by this CA: a node that trusts only this
    /// root accepts certificates `next` issues when this comes with them.
    pub fn cross_sign(&self, next: &CertificateAuthority) -> Result<String> {
        // The same name and key as `next`'s own certificate, so a chain
        // through either one reaches the same issuer.
        let der = crate::certs_from_pem(&next.cert_pem)?.remove(0);
        let (_, parsed) = <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<_>>::from_der(&der)
            .map_err(|e| PkiError::Invalid(format!("new root CA: {e}")))?;
        let subject = parsed.subject();
        let first = |attr: Option<&x509_parser::x509::AttributeTypeAndValue>| {
            attr.and_then(|a| a.as_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let cn = first(subject.iter_common_name().next());
        let org = first(subject.iter_organization().next());
        let validity = parsed.validity();
        let time = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
        };
        let cert = root_params(
            &cn,
            &org,
            time(validity.not_before),
            time(validity.not_after),
        )
        .signed_by(&next.key, &self.issuer()?)
        .map_err(PkiError::rcgen("cross-signing the new root CA"))?;
        Ok(cert.pem())
    }
}

use crate::credentials::KeyAndCsr;

fn root_params(
    common_name: &str,
    cluster_id: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, cluster_id);
    params.distinguished_name = name;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from_slice(&random_bytes(16)));
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params
}

fn node_params(request: &NodeRequest) -> Result<CertificateParams> {
    if request.node_id.is_empty()
        || !request
            .node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(PkiError::Invalid(format!(
            "invalid node id {:?} for a certificate",
            request.node_id
        )));
    }
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, request.node_id);
    name.push(DnType::OrganizationalUnitName, request.role.unit());
    name.push(DnType::OrganizationName, request.cluster_id);
    params.distinguished_name = name;
    // Managers answer to the one name clients check; every certificate
    // also names its role, as Swarm's do.
    let mut names = vec![request.role.unit().to_owned()];
    if request.role == Role::Manager {
        names.push(crate::MANAGER_SERVER_NAME.to_owned());
    }
    names.dedup();
    for dns in names {
        params.subject_alt_names.push(SanType::DnsName(
            dns.try_into()
                .map_err(PkiError::rcgen("certificate name"))?,
        ));
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(&random_bytes(16)));
    let now = SystemTime::now();
    params.not_before = (now - CLOCK_SKEW.min(request.validity / 4)).into();
    params.not_after = (now + request.validity).into();
    Ok(params)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the kernel's random source is available");
    // A positive serial number, as RFC 5280 asks.
    bytes[0] &= 0x7f;
    bytes
}

fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    #[test]
    fn issues_what_the_ca_decides_not_what_the_csr_asks() {
        let ca = CertificateAuthority::create("cluster1").unwrap();
        // The CSR asks to be a manager called "admin"; the CA makes it
        // worker n1.
        let key = KeyAndCsr::generate().unwrap();
        let chain = ca
            .issue(
                &key.csr_der,
                &NodeRequest {
                    node_id: "n1",
                    role: Role::Worker,
                    cluster_id: "cluster1",
                    validity: Duration::from_secs(3600),
                },
            )
            .unwrap();
        let certs = crate::certs_from_pem(&chain).unwrap();
        let id = Identity::of_der(&certs[0]).unwrap();
        assert_eq!(id.node_id, "n1");
        assert_eq!(id.role, Role::Worker);
        assert_eq!(id.cluster_id, "cluster1");
        let life = id.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(life <= Duration::from_secs(3600) && life > Duration::from_secs(3500));
    }

    #[test]
    fn refuses_node_ids_that_are_not_ids() {
        let ca = CertificateAuthority::create("c").unwrap();
        for bad in ["", "a/b", "x,OU=shoal-manager"] {
            assert!(
                ca.issue_with_new_key(&NodeRequest {
                    node_id: bad,
                    role: Role::Worker,
                    cluster_id: "c",
                    validity: Duration::from_secs(60),
                })
                .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_the_addresses_asked_for_beside_the_role() {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let ca = CertificateAuthority::create("c").unwrap();
        let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let (chain, _key) = ca
            .issue_with_new_key_for_addresses(
                &NodeRequest {
                    node_id: "etcd0",
                    role: Role::Manager,
                    cluster_id: "c",
                    validity: Duration::from_secs(3600),
                },
                &[loopback],
            )
            .unwrap();
        let der = crate::certs_from_pem(&chain).unwrap().remove(0);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let names = cert.subject_alternative_name().unwrap().unwrap();
        let names = &names.value.general_names;
        assert!(
            names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])),
            "{names:?}"
        );
        assert!(
            names.contains(&GeneralName::DNSName(crate::MANAGER_SERVER_NAME)),
            "{names:?}"
        );
        assert_eq!(Identity::of_der(&der).unwrap().node_id, "etcd0");
    }

    #[test]
    fn round_trips_through_pem() {
        let ca = CertificateAuthority::create("c").unwrap();
        let again = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        let other = CertificateAuthority::create("c").unwrap();
        let err = CertificateAuthority::from_pem(ca.cert_pem(), &other.key_pem())
            .err()
            .expect("a key of another CA is refused")
            .to_string();
        assert!(err.contains("does not belong"), "{err}");
    }
}
