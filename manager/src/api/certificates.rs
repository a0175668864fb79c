//! The control API's certificate calls: client certificates for
//! operators, certificate lifetime, and root CA rotation. (Kept out of
//! `control.rs`, which the trait's other calls fill.)

use std::time::Duration;

use shoal_api::pb::{IssueClientCertificateRequest, NodeCertificate, UpdateCertificatesRequest};
use shoal_pki::Role;
use tonic::Status;

use crate::{api::authz, ca, certificates, manager::Manager, store::Batch};

pub async fn issue_client_certificate(
    manager: &Manager,
    caller: Option<&authz::Caller>,
    request: IssueClientCertificateRequest,
) -> Result<NodeCertificate, Status> {
    if request.role != "admin" {
        return Err(Status::invalid_argument(format!(
            "--role {:?}: only admin client certificates are issued (nodes get theirs when they join)",
            request.role
        )));
    }
    let expiry = match request.expiry_ms {
        0 => None,
        ms if ms < 0 => return Err(Status::invalid_argument("the expiry must be positive")),
        ms => Some(Duration::from_millis(ms as u64)),
    };
    let state = manager.store.read().await;
    let cluster = state
        .cluster
        .as_ref()
        .ok_or_else(|| Status::unavailable("the cluster is not initialised"))?;
    // A client's name is its own id: a removed admin is not a node.
    let id = format!("admin-{}", shoal_api::new_id());
    let authority = ca::authority(cluster).map_err(|e| Status::internal(format!("{e:#}")))?;
    let chain_pem = authority
        .issue(
            &request.csr_der,
            &shoal_pki::NodeRequest {
                node_id: &id,
                role: Role::Admin,
                cluster_id: ca::cluster_id(cluster),
                // Never longer than the cluster's node certificates: client
                // certificates cannot be revoked one by one (a CA rotation
                // cuts them all), so they must not outlive the nodes'.
                validity: expiry
                    .unwrap_or_else(|| ca::cert_expiry(cluster))
                    .min(ca::cert_expiry(cluster)),
            },
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    tracing::info!(client = %id, by = ?caller.and_then(authz::Caller::node_id), "issued an admin client certificate");
    Ok(NodeCertificate {
        node_id: id,
        chain_pem,
        trust_pem: ca::trust_pem(cluster),
        cluster_id: ca::cluster_id(cluster).to_owned(),
    })
}

pub async fn update_certificates(
    manager: &Manager,
    request: UpdateCertificatesRequest,
) -> Result<(), Status> {
    if request.cert_expiry_ms != 0 {
        let expiry = Duration::from_millis(request.cert_expiry_ms.max(0) as u64);
        if expiry < ca::MIN_CERT_EXPIRY {
            return Err(Status::invalid_argument(format!(
                "--cert-expiry {expiry:?} is too short: at least {:?}",
                ca::MIN_CERT_EXPIRY
            )));
        }
    }
    manager
        .update(|state| -> Result<_, Status> {
            let mut cluster = state
                .cluster
                .clone()
                .ok_or_else(|| Status::unavailable("the cluster is not initialised"))?;
            if request.cert_expiry_ms != 0 {
                cluster
                    .spec
                    .get_or_insert_with(Default::default)
                    .cert_expiry_ms = request.cert_expiry_ms;
            }
            if request.rotate_ca {
                cluster = certificates::rotate(&cluster)
                    .map_err(|e| Status::internal(format!("rotating the root CA: {e:#}")))?;
            }
            let mut batch = Batch::default();
            batch.put_cluster(cluster);
            Ok(Some((batch, ())))
        })
        .await?;
    if request.rotate_ca {
        tracing::info!("the root CA is rotating: nodes renew their certificates with the new one");
    }
    Ok(())
}
