//! `GET /metrics` over HTTPS (`shoal-agent join --metrics-addr`, default
//! port 9324): TLS with the node's own certificate, readable with a
//! manager or admin client certificate of the cluster (what may read the
//! cluster's state through the control API; a worker's certificate may
//! not read another node's traffic). Prometheus scrapes it with
//! `tls_config` (`ca_file`, `cert_file`, `key_file`, `server_name:
//! shoal-worker`, the name every node certificate carries).

use std::sync::Arc;

use shoal_pki::{
    Credentials, PeerInfo, Role,
    https::{
        self, Body,
        hyper::{
            self, Method, Request, Response, StatusCode, body::Incoming, header::CONTENT_TYPE,
        },
    },
};
use tokio::net::TcpListener;

use super::Sources;

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    credentials: Arc<Credentials>,
    sources: Sources,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving /metrics (HTTPS, manager or admin client certificate)");
    https::serve(listener, credentials, move |peer, request| {
        let sources = sources.clone();
        async move { answer(&sources, &peer, &request) }
    })
    .await?;
    Ok(())
}

fn answer(sources: &Sources, peer: &PeerInfo, request: &Request<Incoming>) -> Response<Body> {
    if request.uri().path() != "/metrics" {
        return https::text(StatusCode::NOT_FOUND, "only /metrics is served here\n");
    }
    if request.method() != Method::GET {
        return https::text(StatusCode::METHOD_NOT_ALLOWED, "/metrics takes GET\n");
    }
    if let Err(refusal) = https::require_role(peer, &[Role::Manager, Role::Admin], "/metrics") {
        return refusal.into_response();
    }
    match super::render(&sources.read()) {
        Ok(text) => {
            let mut response = https::text(StatusCode::OK, text);
            response.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(super::CONTENT_TYPE),
            );
            response
        }
        Err(error) => {
            tracing::warn!(%error, "encoding metrics");
            https::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            )
        }
    }
}
