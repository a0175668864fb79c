//! A manager restarted with autolock on: until `shoal swarm unlock` gives
//! it the key, it serves nothing on TCP (Raft has not started) and only the
//! Lock service on its local socket; every Control call there is answered
//! with what to do, as Docker does.

use std::{
    convert::Infallible,
    path::Path,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use anyhow::{Context as _, Result, bail};
use shoal_api::pb::{
    Empty, UnlockRequest,
    lock_server::{Lock, LockServer},
};
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status, codegen::http, server::NamedService};

use super::{SecretKey, UnlockKey, keyfile::WrappedDek};

/// What every other call on a locked manager's socket gets (Docker's words).
pub const LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. \
                          Please use `shoal swarm unlock` to unlock it.";
pub const NOT_LOCKED: &str = "this manager is not locked";

type Unlocked = (SecretKey, UnlockKey);

/// Serves the Lock service on `socket` until a call gives the key that
/// opens `wrapped`; returns the data key and that unlock key.
pub async fn wait_for_unlock(socket: Option<&Path>, wrapped: WrappedDek) -> Result<Unlocked> {
    let Some(socket) = socket else {
        bail!(
            "this manager's data is locked (autolock) and it has no control socket to be unlocked on"
        );
    };
    let listener = crate::daemon::bind_socket(socket)?;
    tracing::warn!(
        socket = %socket.display(),
        "this manager is locked (autolock): it serves nothing until `shoal swarm unlock` gives it the unlock key"
    );
    let (unlocked_tx, unlocked_rx) = oneshot::channel();
    let service = Locked {
        wrapped: Arc::new(wrapped),
        unlocked: Arc::new(Mutex::new(Some(unlocked_tx))),
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LockServer::new(service))
            .add_service(LockedControl)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );
    let unlocked = unlocked_rx
        .await
        .context("the unlock service stopped before the manager was unlocked")?;
    // A graceful stop: the caller's answer goes out before the socket closes.
    let _ = stop_tx.send(());
    if let Ok(Err(error)) = server.await {
        tracing::warn!(%error, "the unlock service stopped with an error");
    }
    let _ = std::fs::remove_file(socket);
    tracing::info!("unlocked: starting");
    Ok(unlocked)
}

struct Locked {
    wrapped: Arc<WrappedDek>,
    unlocked: Arc<Mutex<Option<oneshot::Sender<Unlocked>>>>,
}

#[tonic::async_trait]
impl Lock for Locked {
    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<Empty>, Status> {
        let key = UnlockKey::parse(&request.get_ref().unlock_key)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let dek = self.wrapped.open(&key.0).map_err(|e| {
            tracing::warn!("an unlock with a wrong key was refused");
            Status::invalid_argument(e.to_string())
        })?;
        let sender = self
            .unlocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // None: a concurrent unlock got there first; the key was right anyway.
        if let Some(sender) = sender {
            let _ = sender.send((dek, key));
        }
        Ok(Response::new(Empty {}))
    }
}

/// The Lock service of a manager that runs: it has nothing to unlock.
pub struct NotLocked;

#[tonic::async_trait]
impl Lock for NotLocked {
    async fn unlock(&self, _: Request<UnlockRequest>) -> Result<Response<Empty>, Status> {
        Err(Status::failed_precondition(NOT_LOCKED))
    }
}

/// Stands for the Control service while locked: every call is answered
/// [`LOCKED`] (not "unimplemented"), with a code the CLI does not retry.
#[derive(Clone)]
struct LockedControl;

impl NamedService for LockedControl {
    const NAME: &'static str = "shoal.v1.Control";
}

impl<B> tonic::codegen::Service<http::Request<B>> for LockedControl {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<B>) -> Self::Future {
        std::future::ready(Ok(Status::failed_precondition(LOCKED).into_http()))
    }
}
