//! Who may call what, decided from the caller's certificate (never from
//! the request), before any service sees the call.
//!
//! | service    | unix socket (root) | manager cert | admin cert | worker cert | none |
//! |------------|--------------------|--------------|------------|-------------|------|
//! | Ca         | yes                | yes          | yes        | yes         | yes  |
//! | Control    | yes                | yes          | yes        | no          | no   |
//! | Membership | no                 | yes          | no         | no          | no   |
//! | Dispatcher | no                 | yes          | no         | yes         | no   |
//!
//! On top of the certificate, the cluster's own record decides: a node
//! that `node rm` removed is refused everywhere, and a manager that was
//! demoted keeps no manager rights through the certificate it still holds.
//! The caller's [`Caller`] goes on in the request's extensions, so the
//! dispatcher knows which node calls from its certificate alone.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use shoal_pki::{Identity, PeerInfo, Role};
use tonic::{Status, codegen::http, transport::server::UdsConnectInfo};

use crate::{manager::Manager, store::Access};

/// Who made a call.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A process on this host, through the root-only control socket.
    Local,
    /// The holder of a certificate of this cluster, verified by TLS (read
    /// once per connection, shared by its calls).
    Certified(Arc<Identity>),
}

impl Caller {
    /// The node a certified caller is.
    pub fn node_id(&self) -> Option<&str> {
        match self {
            Caller::Certified(identity) => Some(&identity.node_id),
            Caller::Local => None,
        }
    }
}

/// The caller of a request that passed [`Authorize`].
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::unauthenticated("the caller was not authenticated"))
}

/// The certified node a request comes from (dispatcher, renewal).
pub fn certified_node<T>(request: &tonic::Request<T>) -> Result<&Identity, Status> {
    match caller(request)? {
        Caller::Certified(identity) => Ok(identity),
        Caller::Local => Err(Status::permission_denied(
            "this call needs a node certificate",
        )),
    }
}

/// The address a request came from over TCP (None: the local socket).
pub fn remote_addr<T>(request: &tonic::Request<T>) -> Option<SocketAddr> {
    PeerInfo::of(request).and_then(|peer| peer.remote_addr)
}

fn who<B>(request: &http::Request<B>) -> Option<Caller> {
    let extensions = request.extensions();
    if let Some(peer) = extensions.get::<PeerInfo>() {
        return peer.identity.clone().map(Caller::Certified);
    }
    extensions.get::<UdsConnectInfo>().map(|_| Caller::Local)
}

/// The service a gRPC path names: `/shoal.v1.Control/ListNodes` → `Control`.
fn service_of(path: &str) -> &str {
    path.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .trim_start_matches("shoal.v1.")
}

/// The method a gRPC path names: `/shoal.v1.Control/ListNodes` → `ListNodes`.
fn method_of(path: &str) -> &str {
    path.trim_start_matches('/').split('/').nth(1).unwrap_or("")
}

/// Whether `caller` may call `method` of `service`, given the cluster's
/// record.
pub fn decide(
    access: &Access,
    service: &str,
    method: &str,
    caller: Option<&Caller>,
) -> Result<(), Status> {
    if service == "Ca" {
        return Ok(());
    }
    let identity = match caller {
        Some(Caller::Local) => {
            return if service == "Control" {
                Ok(())
            } else {
                Err(Status::permission_denied(format!(
                    "{service} is not served on the local socket"
                )))
            };
        }
        Some(Caller::Certified(identity)) => identity,
        None => {
            return Err(Status::unauthenticated(format!(
                "{service} needs a client certificate of this cluster (TLS, issued at join or by `shoal cert issue`)"
            )));
        }
    };
    let allowed: &[Role] = match service {
        "Control" => &[Role::Manager, Role::Admin],
        "Membership" => &[Role::Manager],
        "Dispatcher" => &[Role::Manager, Role::Worker],
        _ => &[],
    };
    if !allowed.contains(&identity.role) {
        return Err(Status::permission_denied(format!(
            "a {} certificate does not allow {service} calls",
            identity.role.name()
        )));
    }
    if access.removed.contains(&identity.node_id) {
        return Err(refusal(
            format!(
                "node {} was removed from the cluster; its certificate is no longer accepted",
                identity.node_id
            ),
            "removed",
        ));
    }
    // A certificate says what the node was when it was issued; the store
    // says what it is now. A demoted manager is a worker, whatever its
    // certificate says. (A node this manager does not know yet, e.g. one
    // that joined at an index not applied here, is judged by certificate.)
    // A manager certificate of a node the cluster does not know is taken
    // for Raft's own messages only: a manager that has just joined has an
    // empty store while the leader sends it the log. Anything that acts on
    // the cluster (control calls, proposals, joins) needs a known manager.
    let raft_message = service == "Membership"
        && matches!(
            method,
            "AppendEntries" | "AppendStream" | "Vote" | "InstallSnapshot" | "InstallFullSnapshot"
        );
    if identity.role == Role::Manager
        && service != "Dispatcher"
        && !raft_message
        && access.cluster_known
        && !access.nodes.contains_key(&identity.node_id)
    {
        return Err(Status::permission_denied(format!(
            "node {} is not a manager of this cluster",
            identity.node_id
        )));
    }
    if identity.role == Role::Manager
        && service != "Dispatcher"
        && let Some(&manager) = access.nodes.get(&identity.node_id)
    {
        // (A promoted node whose manager is joining is one already.)
        if !manager {
            return Err(refusal(
                format!("node {} is no longer a manager", identity.node_id),
                "demoted",
            ));
        }
    }
    Ok(())
}

/// A refusal of a certificate that no longer counts, saying why in
/// metadata too: a demoted or removed manager acts on it (`demotion`).
fn refusal(message: String, why: &'static str) -> Status {
    let mut status = Status::permission_denied(message);
    status.metadata_mut().insert(
        shoal_api::REFUSAL_METADATA,
        tonic::metadata::MetadataValue::from_static(why),
    );
    status
}

/// The tower layer that puts [`decide`] in front of every service.
#[derive(Clone)]
pub struct AuthorizeLayer {
    pub manager: Arc<Manager>,
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;
    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            manager: self.manager.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    manager: Arc<Manager>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Authorize<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is the one that is ready (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let manager = self.manager.clone();
        Box::pin(async move {
            let caller = who(&request);
            let path = request.uri().path();
            let verdict = decide(
                &manager.store.access(),
                service_of(path),
                method_of(path),
                caller.as_ref(),
            );
            match (verdict, caller) {
                (Ok(()), Some(caller)) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                (Ok(()), None) => inner.call(request).await,
                (Err(status), caller) => {
                    tracing::info!(
                        path = %request.uri().path(),
                        caller = ?caller.as_ref().and_then(Caller::node_id),
                        reason = %status.message(),
                        "refused a call"
                    );
                    Ok(status.into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use shoal_api::pb::{Cluster, Meta, Node, NodeRole};

    use super::*;
    use crate::store::State;

    fn certified(id: &str, role: Role) -> Caller {
        Caller::Certified(Arc::new(Identity {
            node_id: id.into(),
            role,
            cluster_id: "c".into(),
            not_before: SystemTime::now(),
            not_after: SystemTime::now(),
            issuer: String::new(),
        }))
    }

    fn state() -> State {
        let mut state = State {
            cluster: Some(Cluster {
                removed_nodes: vec!["gone".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        for (id, role) in [("m1", NodeRole::Manager), ("demoted", NodeRole::Worker)] {
            state.nodes.insert(
                id.into(),
                Node {
                    meta: Some(Meta {
                        id: id.into(),
                        ..Default::default()
                    }),
                    role: role as i32,
                    ..Default::default()
                },
            );
        }
        state
    }

    #[test]
    fn each_service_takes_only_its_roles() {
        let state = Access::of(&state());
        let ok = |service, caller: Option<Caller>| {
            decide(&state, service, "Call", caller.as_ref()).is_ok()
        };
        // Anyone may use the CA service (joining nodes have no certificate).
        assert!(ok("Ca", None));
        // Without a certificate, nothing else.
        for service in ["Control", "Membership", "Dispatcher", "Other"] {
            assert!(!ok(service, None), "{service}");
        }
        // The root-only socket is the operator's: control only.
        assert!(ok("Control", Some(Caller::Local)));
        assert!(!ok("Membership", Some(Caller::Local)));
        assert!(!ok("Dispatcher", Some(Caller::Local)));
        // Workers: their agent protocol only.
        let worker = || Some(certified("w1", Role::Worker));
        assert!(ok("Dispatcher", worker()));
        assert!(!ok("Control", worker()));
        assert!(!ok("Membership", worker()));
        // Admins: control only.
        let admin = || Some(certified("a1", Role::Admin));
        assert!(ok("Control", admin()));
        assert!(!ok("Membership", admin()));
        assert!(!ok("Dispatcher", admin()));
        // Managers: all of it.
        for service in ["Control", "Membership", "Dispatcher"] {
            assert!(
                ok(service, Some(certified("m1", Role::Manager))),
                "{service}"
            );
        }
        assert!(!ok("Other", Some(certified("m1", Role::Manager))));
    }

    #[test]
    fn the_store_overrules_the_certificate() {
        let state = Access::of(&state());
        let decide =
            |service, method, id, role| decide(&state, service, method, Some(&certified(id, role)));
        let why = |err: &Status| {
            err.metadata()
                .get(shoal_api::REFUSAL_METADATA)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let err = decide("Dispatcher", "Register", "gone", Role::Worker).unwrap_err();
        assert!(err.message().contains("removed"), "{}", err.message());
        assert_eq!(why(&err).as_deref(), Some("removed"));
        let err = decide("Membership", "CheckManager", "demoted", Role::Manager).unwrap_err();
        assert!(
            err.message().contains("no longer a manager"),
            "{}",
            err.message()
        );
        // The metadata a demoted manager acts on (`crate::demotion`).
        assert_eq!(why(&err).as_deref(), Some("demoted"));
        assert!(decide("Membership", "CheckManager", "m1", Role::Manager).is_ok());
        // Its agent may still talk to the dispatcher.
        assert!(decide("Dispatcher", "Register", "demoted", Role::Manager).is_ok());
        // A manager certificate the cluster never issued a node for (one
        // minted with a copied CA key) acts on nothing; Raft's messages
        // reach a manager that has just joined before its store knows anyone.
        for (service, method) in [
            ("Control", "ListNodes"),
            ("Membership", "Propose"),
            ("Membership", "JoinManager"),
        ] {
            let err = decide(service, method, "minted", Role::Manager).unwrap_err();
            assert!(
                err.message().contains("not a manager"),
                "{service}/{method}: {}",
                err.message()
            );
        }
        assert!(decide("Membership", "AppendEntries", "minted", Role::Manager).is_ok());
    }

    #[test]
    fn paths_name_their_service() {
        assert_eq!(service_of("/shoal.v1.Control/ListNodes"), "Control");
        assert_eq!(service_of("/shoal.v1.Ca/GetRootCa"), "Ca");
        assert_eq!(
            service_of("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health"
        );
        assert_eq!(service_of(""), "");
        assert_eq!(method_of("/shoal.v1.Membership/Vote"), "Vote");
    }
}
