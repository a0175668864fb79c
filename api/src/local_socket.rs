//! gRPC over a manager's local socket (`/run/shoal/manager.sock`, root's
//! only, so no TLS): tonic dials TCP, so a connector hands it the Unix
//! stream instead. The CLI, the chaos runner, the bench and the tests all
//! reach a local manager this way.

use std::{path::PathBuf, time::Duration};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Error, Uri};

/// A channel to the manager listening on `socket`.
pub async fn channel(socket: impl Into<PathBuf>) -> Result<Channel, Error> {
    endpoint().connect_with_connector(connector(socket)).await
}

/// As [`channel`], giving up on a connection not made within `timeout`.
pub async fn channel_within(
    socket: impl Into<PathBuf>,
    timeout: Duration,
) -> Result<Channel, Error> {
    endpoint()
        .connect_timeout(timeout)
        .connect_with_connector(connector(socket))
        .await
}

/// The URI is a placeholder (HTTP/2 wants one): the connector dials the socket.
fn endpoint() -> Endpoint {
    Endpoint::from_static("http://[::1]:1")
}

fn connector(
    socket: impl Into<PathBuf>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let socket = socket.into();
    tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("manager.sock");
        let started = std::time::Instant::now();
        assert!(channel(&missing).await.is_err());
        assert!(
            channel_within(&missing, Duration::from_millis(200))
                .await
                .is_err()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn dials_the_socket_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manager.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let accepted = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        // The HTTP/2 handshake needs a server: the dial itself is what counts.
        let _ = channel_within(&path, Duration::from_millis(300)).await;
        tokio::time::timeout(Duration::from_secs(5), accepted)
            .await
            .expect("the connector never dialled the socket")
            .unwrap()
            .unwrap();
    }
}
