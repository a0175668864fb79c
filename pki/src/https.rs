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

/// The caller's identity if its certificate has one of the `allowed`
/// roles; else the refusal to send, naming what is needed (401 with no
/// certificate, 403 with the wrong one).
pub fn require_role(
    peer: &PeerInfo,
    allowed: &[crate::Role],
    what: &str,
) -> std::result::Result<Arc<crate::Identity>, Response<Body>> {
    let roles = allowed
        .iter()
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(" or ");
    match &peer.identity {
        None => Err(text(
            StatusCode::UNAUTHORIZED,
            format!(
                "{what} needs a client certificate of this cluster ({roles}: `shoal cert issue --role admin`)\n"
            ),
        )),
        Some(identity) if !allowed.contains(&identity.role) => Err(text(
            StatusCode::FORBIDDEN,
            format!(
                "a {} certificate does not allow reading {what} ({roles} only)\n",
                identity.role.name()
            ),
        )),
        Some(identity) => Ok(identity.clone()),
    }
}
