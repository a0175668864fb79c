//! The UDP receive loop: plain threads on one socket, as a classic DNS
//! server's loop (a lookup is a few microseconds; a waking
//! async task costs about as much again and adds jitter). It takes up to
//! [`DnsServer::udp_batch`] datagrams per `recvmmsg` (whatever is queued,
//! waiting for the first only) and sends the plain answers of a batch with
//! one `sendmmsg`: two system calls per batch instead of two per query.
//! Forwarding (which waits on the network) runs on the tokio runtime.
//!
//! Of the loops on one socket only the first waits for datagrams; the
//! others ([`Role::Helper`]) sleep until it finds a backlog (a batch came
//! back full) and then take batches without waiting until the queue is
//! empty. Loops all waiting on one socket each woke for a few datagrams
//! (a mean batch of 3 against 54 for one loop under dnsperf's load) and
//! spent 20–40% more CPU per query in wake-ups and context switches.
//!
//! Nothing shared is written per query: the answer codes are tallied per
//! batch, the batch counts in the loop's own [`LoopCounters`].

use std::{
    io::{IoSlice, IoSliceMut},
    net::{SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg};

use super::{
    DnsServer, Reply, Transport,
    answer_codes::AnswerCodes,
    message::{MAX_QUERY, UDP_LIMIT},
    plain_a,
};

/// The most datagrams one `recvmmsg` takes.
pub const MAX_BATCH: usize = 64;

/// What one receive loop did: written by that loop alone (a store to a
/// line no other core writes), read by [`DnsServer::udp_batching`].
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct LoopCounters {
    receives: AtomicU64,
    datagrams: AtomicU64,
}

impl LoopCounters {
    /// Receive calls that returned datagrams, and the datagrams they took.
    pub fn read(&self) -> (u64, u64) {
        (
            self.receives.load(Ordering::Relaxed),
            self.datagrams.load(Ordering::Relaxed),
        )
    }
}

/// What a loop does when the socket's queue is empty.
pub enum Role {
    /// Waits for the next datagram; wakes these helpers when a receive
    /// call comes back full.
    First(Vec<std::thread::Thread>),
    /// Sleeps until woken (`unpark`), then takes what is queued without
    /// waiting, until nothing is.
    Helper,
}

pub fn serve(
    server: Arc<DnsServer>,
    socket: UdpSocket,
    network: String,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
    counters: Arc<LoopCounters>,
    role: Role,
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
    let (mut receives, mut datagrams) = (0u64, 0u64);
    let mut tallies = [0u64; 16];
    let (helpers, flags) = match &role {
        Role::First(helpers) => (helpers.as_slice(), MsgFlags::MSG_WAITFORONE),
        Role::Helper => (&[][..], MsgFlags::MSG_DONTWAIT),
    };
    let mut draining = false;
    while !stop.load(Ordering::Relaxed) {
        if matches!(role, Role::Helper) && !draining {
            // Woken by the first loop (or to stop): stop is checked again.
            std::thread::park();
            draining = true;
            continue;
        }
        received.clear();
        {
            let mut slices: Vec<[IoSliceMut; 1]> = inbox
                .iter_mut()
                .map(|buf| [IoSliceMut::new(&mut buf[..])])
                .collect();
            match recvmmsg(fd, &mut recv_headers, slices.iter_mut(), flags, None) {
                Ok(messages) => received.extend(messages.filter_map(|m| {
                    let from = m.address?;
                    Some((m.bytes, SocketAddrV4::new(from.ip(), from.port())))
                })),
                Err(nix::errno::Errno::EAGAIN) => {
                    // A helper found the queue empty: back to sleep.
                    draining = false;
                    continue;
                }
                Err(error) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    tracing::debug!(%error, "DNS receive");
                    continue;
                }
            }
        }
        if received.len() == batch {
            // A backlog: the helpers take from it too.
            for helper in helpers {
                helper.unpark();
            }
        }
        receives += 1;
        datagrams += received.len() as u64;
        counters.receives.store(receives, Ordering::Relaxed);
        counters.datagrams.store(datagrams, Ordering::Relaxed);
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
                AnswerCodes::tally(&mut tallies, out);
                to.push(Some(SockaddrIn::from(peer)));
                continue;
            }
            general(&server, &socket, query, peer, &network, &runtime);
        }
        server.answers.add(&mut tallies);
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
