//! `GET /metrics` over HTTPS (`--metrics-addr`, default port 9323):
//! mutual TLS as for the control API, and readable by whoever may call the
//! control API (a manager or admin certificate of this cluster, not
//! removed or demoted since, judged by `api::authz::decide`). Prometheus
//! scrapes it with `tls_config` (`ca_file`, `cert_file`, `key_file`,
//! `server_name: shoal-manager`).

use openraft::async_runtime::WatchReceiver as _;
use std::sync::Arc;

use shoal_pki::{
    PeerInfo, Role,
    https::{
        self, Body,
        hyper::{
            self, Method, Request, Response, StatusCode, body::Incoming, header::CONTENT_TYPE,
        },
    },
};
use tokio::net::TcpListener;

use crate::{
    api::authz::{self, Caller},
    dispatcher::Dispatcher,
    manager::Manager,
};

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    manager: Arc<Manager>,
    dispatcher: Dispatcher,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving /metrics (HTTPS, manager or admin client certificate)");
    let credentials = manager.credentials.clone();
    https::serve(listener, credentials, move |peer, request| {
        let (manager, dispatcher) = (manager.clone(), dispatcher.clone());
        async move { answer(&manager, &dispatcher, &peer, &request).await }
    })
    .await?;
    Ok(())
}

async fn answer(
    manager: &Manager,
    dispatcher: &Dispatcher,
    peer: &PeerInfo,
    request: &Request<Incoming>,
) -> Response<Body> {
    if request.uri().path() != "/metrics" {
        return https::text(StatusCode::NOT_FOUND, "only /metrics is served here\n");
    }
    if request.method() != Method::GET {
        return https::text(StatusCode::METHOD_NOT_ALLOWED, "/metrics takes GET\n");
    }
    let identity = match https::require_role(peer, &[Role::Manager, Role::Admin], "/metrics") {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    // The cluster's record decides too: removed or demoted nodes' old
    // certificates read nothing, as for control calls.
    if let Err(status) = authz::decide(
        &manager.store.access(),
        "Control",
        "Metrics",
        Some(&Caller::Certified(identity)),
    ) {
        return https::text(StatusCode::FORBIDDEN, format!("{}\n", status.message()));
    }
    let state = manager.store.read().await;
    let raft = manager.raft.metrics().borrow_watched().clone();
    let rendered = manager.metrics.render(&super::Snapshot {
        raft: &raft,
        state: &state,
        sessions: dispatcher.session_count(),
    });
    drop(state);
    match rendered {
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
