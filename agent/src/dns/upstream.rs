//! Forwarding a name that is not the cluster's to upstream resolvers: over
//! UDP, and again over TCP when the upstream truncated an answer that a
//! TCP asker must get whole.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

use super::{Transport, UPSTREAM_TIMEOUT, message::MAX_QUERY};

/// Asks each upstream in turn; the first answer wins.
pub async fn forward(
    query: &[u8],
    upstreams: &[SocketAddr],
    transport: Transport,
) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let Some(answer) = over_udp(query, *upstream).await else {
            tracing::debug!(%upstream, "DNS upstream did not answer");
            continue;
        };
        let truncated = answer.get(2).is_some_and(|flags| flags & 0x02 != 0);
        if truncated && transport == Transport::Tcp {
            match over_tcp(query, *upstream).await {
                Some(whole) => return Some(whole),
                // Its truncated answer is still an answer.
                None => tracing::debug!(%upstream, "DNS upstream did not answer over TCP"),
            }
        }
        return Some(answer);
    }
    None
}

async fn over_udp(query: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(query).await.ok()?;
    let mut buf = vec![0u8; MAX_QUERY];
    match timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf)).await {
        Ok(Ok(len)) if len >= 2 && buf[..2] == query[..2] => {
            buf.truncate(len);
            Some(buf)
        }
        _ => None,
    }
}

/// One query over a fresh TCP connection (RFC 7766 framing), within
/// [`UPSTREAM_TIMEOUT`] in all.
async fn over_tcp(query: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await.ok()?;
        let len = u16::try_from(query.len()).ok()?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await.ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).await.ok()?;
        (answer.len() >= 2 && answer[..2] == query[..2]).then_some(answer)
    };
    timeout(UPSTREAM_TIMEOUT, exchange).await.ok().flatten()
}
