//! A TLS connection a manager accepted, with who is on the other end read
//! once, at the handshake.
//!
//! tonic hands each request of a connection the connection's
//! [`Connected::connect_info`]. Its own TLS info carries the peer's raw
//! certificates, so every call would parse the certificate again (X.509
//! parsing and a SHA-256 of the issuer: the largest single cost mutual TLS
//! added to a replicated write). [`PeerInfo`] carries the parsed
//! [`Identity`] instead, shared by every request of the connection.
//!
//! Its writes are gathered (see [`GatherWrites`]): the answers to the
//! calls one Raft entry commits leave in one TLS write, not one each.

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
    tls: GatherWrites<TlsStream<TcpStream>>,
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
        Self {
            tls: GatherWrites::new(tls),
            peer,
        }
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
        self.tls.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

/// Lets a burst of writes wait one turn of the scheduler before it goes
/// out, so that what else is ready to be written joins it.
///
/// HTTP/2's connection task writes and flushes whatever it holds each time
/// it runs. A Raft entry commits the writes of many calls at once; each
/// call's task hands its answer to the connection and wakes it, and the
/// woken connection ran before the next call's task: each answer left in a
/// TLS record and a `writev` of its own (0.7 `writev` per write at 64
/// writers, `shoal-bench control-plane`, 2026-12-02; ~11% of the leader's
/// CPU). grpc-go, etcd's server, writes only once its queue is empty.
///
/// Here the first write after a flush returns `Pending` once, having woken
/// its task; tokio runs a task that woke itself after the tasks already
/// queued, so the other answers reach the connection first and leave with
/// it. Every later write until the flush goes straight through: a burst
/// waits one turn, never more.
pub struct GatherWrites<W> {
    inner: W,
    /// This burst waited its turn; cleared by a flush.
    waited: bool,
}

impl<W> GatherWrites<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            waited: false,
        }
    }

    /// True when the write may go now; else wakes the task to come back.
    fn may_write(&mut self, cx: &mut Context<'_>) -> bool {
        if self.waited {
            return true;
        }
        self.waited = true;
        cx.waker().wake_by_ref();
        false
    }
}

impl<W: AsyncRead + Unpin> AsyncRead for GatherWrites<W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for GatherWrites<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.may_write(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.may_write(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if flushed.is_ready() {
            self.waited = false;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::Wake,
    };

    use super::*;

    /// Records every write that reached it.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_burst_waits_one_turn_and_then_goes_through_until_the_flush() {
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut writer = GatherWrites::new(Recorder::default());
        let mut w = Pin::new(&mut writer);

        // The burst's first write waits a turn, its task woken to come back.
        assert!(w.as_mut().poll_write(&mut cx, b"first").is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(w.inner.writes.is_empty());

        // Back, it goes, and so does the rest of the burst: no more waits.
        assert!(matches!(
            w.as_mut().poll_write(&mut cx, b"first"),
            Poll::Ready(Ok(5))
        ));
        let slices = [io::IoSlice::new(b"sec"), io::IoSlice::new(b"ond")];
        assert!(w.as_mut().poll_write_vectored(&mut cx, &slices).is_ready());
        assert!(w.as_mut().poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(w.inner.writes, vec![b"first".to_vec(), b"sec".to_vec()]);

        // After the flush the next burst waits its turn again.
        assert!(w.as_mut().poll_write(&mut cx, b"third").is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert!(w.as_mut().poll_write(&mut cx, b"third").is_ready());
        assert_eq!(w.inner.writes.len(), 3);
    }
}
