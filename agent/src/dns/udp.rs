//! The UDP receive loop: a plain thread per core on one socket, as a
//! classic DNS server's loop (a lookup is a few microseconds; a waking
//! async task costs about as much again and adds jitter). It takes up to
//! [`DnsServer::udp_batch`] datagrams per `recvmmsg` (whatever is queued,
//! waiting for the first only) and sends the plain answers of a batch with
//! one `sendmmsg`: two system calls per batch instead of two per query.
//! Forwarding (which waits on the network) runs on the tokio runtime.

use std::{
    io::{IoSlice, IoSliceMut},
    net::{SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg};

use super::{
    DnsServer, Reply, Transport,
    message::{MAX_QUERY, UDP_LIMIT},
    plain_a,
};

/// The most datagrams one `recvmmsg` takes.
pub const MAX_BATCH: usize = 64;

pub fn serve(
    server: Arc<DnsServer>,
    socket: UdpSocket,
    network: String,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
) {
    let batch = server.udp_batch.clamp(1, MAX_BATCH);
    let fd = socket.as_raw_fd();
    let mut inbox = vec![[0u8; MAX_QUERY]; batch];
    let mut received: Vec<(usize, SocketAddrV4)> = Vec::with_capacity(batch);
    let mut outbox: Vec<Vec<u8>> = (0..batch).map(|_| Vec::with_capacity(UDP_LIMIT)).collect();
    let mut to: Vec<Option<SockaddrIn>> = Vec::with_capacity(batch);
    let mut recv_headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let mut send_headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let (mut generation, mut records) =
        (server.generation.load(Ordering::Acquire), server.records());
    // This thread's own rotation: a shared counter is a cache line both
    // cores would write per query.
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        received.clear();
        {
            let mut slices: Vec<[IoSliceMut; 1]> = inbox
                .iter_mut()
                .map(|buf| [IoSliceMut::new(&mut buf[..])])
                .collect();
            match recvmmsg(
                fd,
                &mut recv_headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(messages) => received.extend(messages.filter_map(|m| {
                    let from = m.address?;
                    Some((m.bytes, SocketAddrV4::new(from.ip(), from.port())))
                })),
                Err(error) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    tracing::debug!(%error, "DNS receive");
                    continue;
                }
            }
        }
        let now = server.generation.load(Ordering::Acquire);
        if now != generation {
            (generation, records) = (now, server.records());
        }
        to.clear();
        for (&(len, peer), datagram) in received.iter().zip(&inbox) {
            let query = &datagram[..len];
            let asker = *peer.ip();
            turn = turn.wrapping_add(1);
            let out = &mut outbox[to.len()];
            if plain_a::answer(&records, query, asker, &network, turn, out) {
                server.answers.count(out);
                to.push(Some(SockaddrIn::from(peer)));
                continue;
            }
            general(&server, &socket, query, peer, &network, &runtime);
        }
        send_all(fd, &mut send_headers, &outbox[..to.len()], &to);
    }
}

/// Sends `answers[i]` to `to[i]` in one call. When the first fails (its
/// asker gone, say) it is skipped and the rest sent again; a failure past
/// the first loses the rest of the batch, as a dropped datagram would
/// (the askers retry). The count of a partial send is not read: nix's
/// results for `sendmmsg` would read addresses it never wrote.
fn send_all(
    fd: std::os::fd::RawFd,
    headers: &mut MultiHeaders<SockaddrIn>,
    answers: &[Vec<u8>],
    to: &[Option<SockaddrIn>],
) {
    let mut first = 0;
    while first < answers.len() {
        let slices: Vec<[IoSlice; 1]> =
            answers[first..].iter().map(|a| [IoSlice::new(a)]).collect();
        match sendmmsg(fd, headers, &slices, &to[first..], [], MsgFlags::empty()) {
            Ok(_) => return,
            Err(error) => {
                tracing::debug!(%error, "DNS send");
                first += 1;
            }
        }
    }
}

/// A query the plain path left: answered by the general path, forwarded,
/// or turned away.
fn general(
    server: &Arc<DnsServer>,
    socket: &UdpSocket,
    query: &[u8],
    peer: SocketAddrV4,
    network: &str,
    runtime: &tokio::runtime::Handle,
) {
    let asker = *peer.ip();
    match server.answer(query, asker, network) {
        Reply::Send(bytes) => {
            server.answers.count(&bytes);
            let _ = socket.send_to(&bytes, peer);
        }
        Reply::Forward => {
            let query = query.to_vec();
            let permit = match server.forward_slot(&query) {
                Ok(permit) => permit,
                Err(servfail) => {
                    if let Some(answer) = servfail {
                        let _ = socket.send_to(&answer, peer);
                    }
                    return;
                }
            };
            let Ok(socket) = socket.try_clone() else {
                return;
            };
            let server = server.clone();
            runtime.spawn(async move {
                let answer = server.forwarded(query, asker, Transport::Udp, permit).await;
                if let Some(answer) = answer {
                    let _ = socket.send_to(&answer, SocketAddr::V4(peer));
                }
            });
        }
        Reply::Refuse => server.log_turned_away(),
        Reply::Drop => {}
    }
}
