//! HTTPS endpoints beside gRPC (`/metrics` on managers and agents): the
//! same TLS 1.3 with the node's current certificate and client certificates
//! checked against the cluster's roots, speaking HTTP/1.1 or HTTP/2 as the
//! client offers (Prometheus speaks HTTP/1.1). What a caller may read is
//! the handler's to decide from the [`PeerInfo`] it is given: a peer with
//! no certificate gets one too, with no identity, so the handler can say
//! why it is refused rather than the handshake failing silently.

use std::{convert::Infallible, future::Future, sync::Arc};

use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::CONTENT_TYPE,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

use crate::{Credentials, PeerInfo, Result, transport};

/// The HTTP types handlers speak, so that they need no hyper of their own.
pub use hyper;

/// A response body: the endpoints answer small texts whole.
pub type Body = Full<Bytes>;

/// The server side of an HTTPS endpoint: [`transport::server_config`] with
/// HTTP/1.1 offered beside HTTP/2.
pub fn server_config(credentials: Arc<Credentials>) -> Result<Arc<ServerConfig>> {
    let mut config = Arc::unwrap_or_clone(transport::server_config(credentials)?);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A plain-text response with `status`.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves `handler` on the TLS connections `listener` accepts, until the
/// listener's task is dropped. Each connection's peer is read once, at the
/// handshake (as for gRPC).
pub async fn serve<H, F>(
    listener: TcpListener,
    credentials: Arc<Credentials>,
    handler: H,
) -> Result<()>
where
    H: Fn(PeerInfo, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut connections = transport::incoming(listener, server_config(credentials)?);
    while let Some(connection) = connections.next().await {
        let Ok(connection) = connection else { continue };
        let peer = connection.peer().clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let remote = transport::describe(peer.remote_addr);
            let service = service_fn(move |request| {
                let answer = handler(peer.clone(), request);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            if let Err(error) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(connection), service)
                .await
            {
                tracing::debug!(%remote, %error, "HTTPS connection ended");
            }
        });
    }
    Ok(())
}

/// Why a caller may not read an endpoint, and the status that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    pub fn into_response(self) -> Response<Body> {
        text(self.status, self.message)
    }
}

/// The caller's identity if its certificate has one of the `allowed`
/// roles; else the refusal to send, naming what is needed (401 with no
/// certificate, 403 with the wrong one).
pub fn require_role(
    peer: &PeerInfo,
    allowed: &[crate::Role],
    what: &str,
) -> std::result::Result<Arc<crate::Identity>, Refusal> {
    let roles = allowed
        .iter()
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(" or ");
    match &peer.identity {
        None => Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            message: format!(
                "{what} needs a client certificate of this cluster ({roles}: `shoal cert issue --role admin`)\n"
            ),
        }),
        Some(identity) if !allowed.contains(&identity.role) => Err(Refusal {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "a {} certificate does not allow reading {what} ({roles} only)\n",
                identity.role.name()
            ),
        }),
        Some(identity) => Ok(identity.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{CertificateAuthority, NodeRequest, Role, credentials::CredentialFiles, transport};

    fn issue(ca: &CertificateAuthority, id: &str, role: Role) -> (String, String) {
        ca.issue_with_new_key(&NodeRequest {
            node_id: id,
            role,
            cluster_id: "c",
            validity: Duration::from_secs(3600),
        })
        .unwrap()
    }

    /// The status line of `GET path` over HTTP/1.1 to `addr`, checking the
    /// server as `server_name`, with the client certificate given.
    async fn get(
        addr: std::net::SocketAddr,
        server_name: &'static str,
        roots: &str,
        client: Option<(String, String)>,
        path: &str,
    ) -> String {
        let identity = client.map(|(chain, key)| {
            let key = rustls::pki_types::PrivateKeyDer::try_from(
                pem::parse(key).unwrap().into_contents(),
            )
            .unwrap();
            (crate::certs_from_pem(&chain).unwrap(), key)
        });
        let roots = Arc::new(crate::credentials::root_store(roots).unwrap());
        let mut config = transport::client_config(roots, identity).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(server_name).unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = String::new();
        let _ = tls.read_to_string(&mut answer).await;
        answer.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn only_the_allowed_roles_read_and_others_are_told_why() {
        let ca = CertificateAuthority::create("c").unwrap();
        let roots = ca.cert_pem().to_owned();
        let (chain_pem, key_pem) = issue(&ca, "w1", Role::Worker);
        let server = Credentials::new(CredentialFiles {
            chain_pem,
            key_pem,
            roots_pem: roots.clone(),
        })
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            server,
            |peer, request: Request<Incoming>| async move {
                match require_role(&peer, &[Role::Manager, Role::Admin], "/metrics") {
                    Ok(who) => text(StatusCode::OK, format!("{} {}", who.node_id, request.uri())),
                    Err(refusal) => refusal.into_response(),
                }
            },
        ));
        let admin = issue(&ca, "op", Role::Admin);
        let manager = issue(&ca, "m1", Role::Manager);
        let worker = issue(&ca, "w2", Role::Worker);
        // A worker's endpoint answers to the name its certificate carries.
        let server_name = "shoal-worker";
        assert_eq!(
            get(addr, server_name, &roots, Some(admin), "/metrics").await,
            "HTTP/1.1 200 OK"
        );
        assert_eq!(
            get(addr, server_name, &roots, Some(manager), "/metrics").await,
            "HTTP/1.1 200 OK"
        );
        assert_eq!(
            get(addr, server_name, &roots, Some(worker), "/metrics").await,
            "HTTP/1.1 403 Forbidden"
        );
        assert_eq!(
            get(addr, server_name, &roots, None, "/metrics").await,
            "HTTP/1.1 401 Unauthorized"
        );
    }
}
