//! A TLS connection a manager accepted, with who is on the other end read
//! once, at the handshake.
//!
//! tonic hands each request of a connection the connection's
//! [`Connected::connect_info`]. Its own TLS info carries the peer's raw
//! certificates, so every call would parse the certificate again (X.509
//! parsing and a SHA-256 of the issuer: the largest single cost mutual TLS
//! added to a replicated write). [`PeerInfo`] carries the parsed
//! [`Identity`] instead, shared by every request of the connection.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::Identity;

/// Who a server-side TLS connection is with.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's address; None if the socket could not tell.
    pub remote_addr: Option<SocketAddr>,
    /// Who the peer's verified client certificate names; None: it
    /// presented none (or one that names no Shoal node).
    pub identity: Option<Arc<Identity>>,
}

impl PeerInfo {
    /// The connection info of the TLS connection a request came on; None
    /// for requests that came another way (the local socket).
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
        request.extensions().get::<PeerInfo>()
    }
}

/// A server-side TLS connection (see the module comment).
pub struct TlsConnection {
    tls: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl TlsConnection {
    /// Wraps an accepted connection, reading its peer's identity now.
    pub fn new(tls: TlsStream<TcpStream>) -> Self {
        let (tcp, session) = tls.get_ref();
        let identity = session
            .peer_certificates()
            .and_then(crate::transport::peer_identity)
            .map(Arc::new);
        let peer = PeerInfo {
            remote_addr: tcp.peer_addr().ok(),
            identity,
        };
        Self { tls, peer }
    }

    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

// The stream itself is the TLS stream's, every method passed on (the
// vectored write too: HTTP/2 writes its frames that way).
impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}
