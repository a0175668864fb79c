//! DNS over TCP (RFC 7766), on the same address as UDP and with the same
//! answers: each message framed by a 2-byte length (§8), several queries
//! per connection, answered as they are ready (§6.2.1.1 allows any order:
//! a forwarded query does not hold up the local answers behind it), never
//! truncated below 65535 bytes.
//!
//! Bounds, so that no client can hold the server: at most
//! [`MAX_TCP_CONNECTIONS`] open at once (past that a new one is closed at
//! once), a connection idle for [`TCP_IDLE`] (or stalled inside a message,
//! or not reading its answers) is closed, a query is at most
//! [`MAX_QUERY`] bytes as over UDP, and at most [`PIPELINE`] answers wait
//! to be written per connection. A length shorter than a DNS header, a
//! message that is not a query, or an asker that is not one of this node's
//! tasks closes the connection.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{OwnedSemaphorePermit, mpsc},
    time::timeout,
};

use super::{DnsServer, Reply, Transport, message::MAX_QUERY};

/// Open TCP connections at once, over all networks.
pub const MAX_TCP_CONNECTIONS: usize = 128;
/// How long a connection may sit idle (or stall mid-message, or leave an
/// answer unread) before it is closed. RFC 7766 §6.2.3 leaves the figure
/// to the server and asks for seconds, not minutes, under load.
pub const TCP_IDLE: Duration = if cfg!(test) {
    Duration::from_millis(400)
} else {
    Duration::from_secs(10)
};
/// Answers waiting to be written on one connection.
pub const PIPELINE: usize = 16;
/// A DNS header's length: no shorter message is a query.
const HEADER: usize = 12;

/// The task accepting one address's TCP connections.
pub struct Acceptor(tokio::task::JoinHandle<()>);

impl Acceptor {
    /// Accepts on `listener` for `network` (on the current tokio runtime).
    pub fn start(
        server: Arc<DnsServer>,
        listener: std::net::TcpListener,
        network: &str,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        Ok(Self(tokio::spawn(accept(
            server,
            listener,
            network.to_owned(),
        ))))
    }

    pub fn alive(&self) -> bool {
        !self.0.is_finished()
    }

    /// Stops accepting; open connections end with their idle timeout.
    pub fn stop(&self) {
        self.0.abort();
    }
}

async fn accept(server: Arc<DnsServer>, listener: tokio::net::TcpListener, network: String) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, say: wait rather than spin.
                tracing::debug!(%error, "DNS: accepting a TCP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let SocketAddr::V4(peer) = peer else {
            continue;
        };
        let asker = *peer.ip();
        if !server.records().is_local(asker) {
            server.refused.fetch_add(1, Ordering::Relaxed);
            server.log_turned_away();
            continue;
        }
        let Ok(permit) = server.tcp_slots.clone().try_acquire_owned() else {
            tracing::debug!(%asker, "DNS: {MAX_TCP_CONNECTIONS} TCP connections open, closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        tokio::spawn(connection(
            server.clone(),
            reader,
            writer,
            asker,
            network.clone(),
            permit,
        ));
    }
}

/// Serves one connection until the client closes it, breaks a bound, or
/// sends what is not a query; then writes what is already answered.
pub async fn connection(
    server: Arc<DnsServer>,
    mut reader: impl AsyncRead + Unpin,
    mut writer: impl AsyncWrite + Unpin,
    asker: Ipv4Addr,
    network: String,
    _permit: OwnedSemaphorePermit,
) {
    let (answers, mut to_write) = mpsc::channel::<Vec<u8>>(PIPELINE);
    let write = async move {
        let mut framed = Vec::new();
        while let Some(answer) = to_write.recv().await {
            // Answers are cut to fit 65535 bytes; a longer one is a bug
            // to drop, not a length to wrap.
            let Ok(len) = u16::try_from(answer.len()) else {
                continue;
            };
            framed.clear();
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&answer);
            if !matches!(
                timeout(TCP_IDLE, writer.write_all(&framed)).await,
                Ok(Ok(()))
            ) {
                tracing::debug!(%asker, "DNS over TCP: the client does not read, closing");
                return;
            }
        }
        let _ = writer.shutdown().await;
    };
    let read = async move {
        loop {
            let query = match read_message(&mut reader).await {
                Ok(Some(query)) => query,
                Ok(None) => return,
                Err(why) => {
                    tracing::debug!(%asker, "DNS over TCP: {why}, closing");
                    return;
                }
            };
            match server.answer_over(&query, asker, &network, Transport::Tcp) {
                Reply::Send(answer) => {
                    server.answers.count(&answer);
                    if answers.send(answer).await.is_err() {
                        return;
                    }
                }
                Reply::Forward => match server.forward_slot(&query) {
                    Ok(permit) => {
                        let (server, answers) = (server.clone(), answers.clone());
                        tokio::spawn(async move {
                            let answer =
                                server.forwarded(query, asker, Transport::Tcp, permit).await;
                            if let Some(answer) = answer {
                                let _ = answers.send(answer).await;
                            }
                        });
                    }
                    Err(servfail) => {
                        if let Some(answer) = servfail
                            && answers.send(answer).await.is_err()
                        {
                            return;
                        }
                    }
                },
                Reply::Refuse | Reply::Drop => {
                    tracing::debug!(%asker, "DNS over TCP: not a query, closing");
                    return;
                }
            }
        }
    };
    tokio::join!(read, write);
}

/// One length-prefixed message (RFC 7766 §8). `Ok(None)`: the client
/// closed the connection between messages, as it may.
async fn read_message(
    reader: &mut (impl AsyncRead + Unpin),
) -> Result<Option<Vec<u8>>, &'static str> {
    let mut len = [0u8; 2];
    match timeout(TCP_IDLE, reader.read_exact(&mut len)).await {
        Err(_) => return Err("idle too long"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(_)) => return Err("reading failed"),
        Ok(Ok(_)) => {}
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len < HEADER {
        return Err("a length shorter than a DNS header");
    }
    if len > MAX_QUERY {
        return Err("a query longer than 4096 bytes");
    }
    let mut message = vec![0u8; len];
    match timeout(TCP_IDLE, reader.read_exact(&mut message)).await {
        Ok(Ok(_)) => Ok(Some(message)),
        Ok(Err(_)) => Err("closed inside a message"),
        Err(_) => Err("stalled inside a message"),
    }
}
