//! The visualizer: a web page every manager serves (`shoal-manager
//! --web-addr`) drawing nodes as columns and their tasks as cards, kept
//! live by server-sent events from the store's watch ([`events`]).
//!
//! Protected as the control API is. On any address but loopback it is
//! served over TLS 1.3 with this manager's certificate and asks for a
//! client certificate: a manager or admin certificate of this cluster
//! (`shoal cert issue`) passes, decided per request by the control API's
//! own rules ([`crate::api::authz::decide`]: a removed node or a demoted
//! manager is refused too). On a loopback address it is plain HTTP for
//! whoever is on this host (reach it from elsewhere with `ssh -L`), as a
//! browser cannot present a certificate it was not given.
//!
//! The page is `assets/` (plain HTML, CSS and JS), embedded in the binary.

pub mod events;
pub mod view;

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use shoal_pki::Identity;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::StreamExt;

use crate::{api::authz, manager::Manager};

/// The visualizer's port when `--web-addr` is not given: beside the
/// manager's 2377, on the address the manager listens on.
pub const DEFAULT_PORT: u16 = shoal_api::VISUALIZER_PORT;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

type Body = BoxBody<Bytes, Infallible>;

/// How a connection proved who it is.
#[derive(Clone)]
enum Peer {
    /// A loopback connection: whoever is on this host.
    Local,
    /// A TLS connection, with the identity its certificate names (None:
    /// no certificate of this cluster).
    Tls(Option<Arc<Identity>>),
}

/// Binds `addr` and serves the page there until the process ends: plain
/// HTTP on loopback, TLS with client certificates elsewhere (module doc).
/// Returns the bound address (port 0 picks one).
pub async fn serve(manager: Arc<Manager>, addr: SocketAddr) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("visualizer: listening on {addr} (--web-addr)"))?;
    let addr = listener.local_addr().unwrap_or(addr);
    if addr.ip().is_loopback() {
        tracing::info!(%addr, "visualizer served on loopback (plain HTTP, this host only)");
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((tcp, _)) => connection(manager.clone(), tcp, Peer::Local),
                    Err(error) => {
                        tracing::warn!(%error, "visualizer: accepting a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
    } else {
        // The control API's TLS setup, with HTTP/1.1 offered beside h2:
        // browsers speak either.
        let mut config =
            (*shoal_pki::transport::server_config(manager.credentials.clone())?).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut incoming = shoal_pki::transport::incoming(listener, Arc::new(config));
        tracing::info!(%addr, "visualizer served over TLS (manager or admin client certificate)");
        tokio::spawn(async move {
            while let Some(accepted) = incoming.next().await {
                let Ok(tls) = accepted else { continue };
                let peer = Peer::Tls(tls.peer().identity.clone());
                connection(manager.clone(), tls, peer);
            }
        });
    }
    Ok(addr)
}

fn connection<S>(manager: Arc<Manager>, stream: S, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |request| {
            let (manager, peer) = (manager.clone(), peer.clone());
            async move { Ok::<_, Infallible>(respond(manager, &peer, request).await) }
        });
        if let Err(error) = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await
        {
            tracing::debug!(%error, "visualizer connection ended");
        }
    });
}

async fn respond(manager: Arc<Manager>, peer: &Peer, request: Request<Incoming>) -> Response<Body> {
    if let Err((status, message)) = authorize(&manager, peer).await {
        return text(status, message);
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served here".into(),
        );
    }
    match request.uri().path() {
        "/" | "/index.html" => asset("text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => asset("text/javascript; charset=utf-8", APP_JS),
        "/style.css" => asset("text/css; charset=utf-8", STYLE_CSS),
        "/events" => Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-store")
            .body(BodyExt::boxed(StreamBody::new(events::feed(manager))))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response".into())),
        other => text(StatusCode::NOT_FOUND, format!("{other}: no such page")),
    }
}

/// The control API's rules, per request (a certificate may be revoked
/// while its connection stays open).
async fn authorize(manager: &Manager, peer: &Peer) -> Result<(), (StatusCode, String)> {
    let identity = match peer {
        Peer::Local => return Ok(()),
        Peer::Tls(identity) => identity,
    };
    let caller = identity.clone().map(authz::Caller::Certified);
    authz::decide(
        &manager.store.access(),
        "Control",
        "Visualizer",
        caller.as_ref(),
    )
    .map_err(|status| {
        let code = if identity.is_none() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        (code, format!("visualizer: {}", status.message()))
    })
}

fn asset(content_type: &'static str, body: &'static str) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        // Everything the page loads is its own: no CDN, no inline script.
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:",
        )
        .body(BodyExt::boxed(Full::new(Bytes::from_static(
            body.as_bytes(),
        ))))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response".into()))
}

fn text(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(message + "\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
