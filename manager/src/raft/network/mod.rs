//! Raft messages between managers over the Membership gRPC service.
//! AppendEntries, the message every write rides on, goes in a binary
//! encoding (`wire`); votes and snapshots, rare, as openraft's own types
//! in JSON. A peer that predates the binary encoding refuses it as a bad
//! message: it then gets JSON, the form it knows. A follower that serves
//! the AppendStream call gets its AppendEntries pipelined on one stream
//! ([`append_stream`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::stream::BoxStream;
use openraft::{
    BasicNode, RaftNetworkFactory, RaftNetworkV2,
    error::{NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable},
    network::{RPCOption, stream_append_sequential},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
        VoteRequest, VoteResponse,
    },
};
use shoal_api::{
    eager_end::EagerEndService,
    pb::{RaftMessage, membership_client::MembershipClient},
};
use shoal_pki::transport::Dialer;
use tonic::transport::Channel;

mod append_stream;

use super::{RaftId, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote, wire};

/// When each peer last answered a Raft message: the leader's view of which
/// managers are reachable (`node ls`'s MANAGER STATUS).
#[derive(Clone, Default)]
pub struct PeerHealth(Arc<Mutex<HashMap<RaftId, Instant>>>);

impl PeerHealth {
    fn answered(&self, peer: RaftId) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, Instant::now());
    }

    /// Whether `peer` answered within `window`.
    pub fn answered_within(&self, peer: RaftId, window: Duration) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .is_some_and(|at| at.elapsed() <= window)
    }
}

/// Opens a lazily connected channel to each peer, with mutual TLS: a peer
/// must hold a manager certificate of this cluster, and so must we.
#[derive(Clone)]
pub struct Network {
    pub health: PeerHealth,
    dialer: Dialer,
}

impl Network {
    pub fn new(credentials: Arc<shoal_pki::Credentials>) -> Self {
        Self {
            health: PeerHealth::default(),
            dialer: Dialer::Node(credentials),
        }
    }
}

pub struct Peer {
    target: RaftId,
    addr: String,
    client: Option<MembershipClient<EagerEndService<Channel>>>,
    health: PeerHealth,
    dialer: Dialer,
    /// The peer refused a binary AppendEntries (it predates them).
    json_only: bool,
    /// The peer has no AppendStream (it predates it): AppendEntries go to
    /// it one at a time.
    unary_only: bool,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: RaftId, node: &BasicNode) -> Self::Network {
        Peer {
            target,
            addr: node.addr.clone(),
            client: None,
            health: self.health.clone(),
            dialer: self.dialer.clone(),
            json_only: false,
            unary_only: false,
        }
    }
}

type RpcResult<T> = Result<T, RPCError<TypeConfig>>;

/// A snapshot goes in messages of this much data: each one a frame that
/// neither side holds twice for long.
const SNAPSHOT_PIECE: usize = 1 << 20;

/// How long a whole snapshot of `pieces` may take to send and install:
/// `install` (openraft's snapshot timeout), and a second per piece (a
/// transfer slower than 1 MiB/s between managers is a failed one).
fn snapshot_deadline(install: Duration, pieces: usize) -> Duration {
    install + Duration::from_secs(pieces as u64)
}

/// A follower that has not answered the oldest AppendEntries of a stream
/// for this many of openraft's soft TTLs (3/4 of a heartbeat interval:
/// 1.5 s in all by default) is taken for stuck, and the stream is opened
/// again; so is a unary AppendEntries. Not one interval, as openraft 0.9's
/// calls had: a loaded follower answers late, and a slow answer is not a
/// lost one.
const STREAM_STALL_INTERVALS: u32 = 10;

fn network_error(e: &(impl std::error::Error + 'static)) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(e))
}

fn unreachable(status: &tonic::Status) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(status))
}

/// A follower's own error (its Raft has stopped): to the leader, the
/// follower is not there.
fn remote_failure(e: &(impl std::error::Error + 'static)) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(e))
}

/// What the first message of a snapshot carries besides data.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct SnapshotHead {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    /// The data's length: a follower installs nothing else (an empty or cut
    /// snapshot would replace its whole store).
    pub bytes: u64,
}

impl Peer {
    fn client(&mut self) -> RpcResult<MembershipClient<EagerEndService<Channel>>> {
        if self.client.is_none() {
            // Connects on first use. HTTP/2 pings find a peer that vanished
            // without closing the connection (a partition, a powered-off
            // host) within seconds: calls on it then fail instead of
            // waiting for TCP to give up, minutes later.
            let channel = shoal_pki::transport::lazy_channel(&self.addr, self.dialer.clone())
                .map_err(|e| network_error(&e))?;
            // Each message in one DATA frame that ends its stream.
            self.client = Some(
                MembershipClient::new(EagerEndService::new(channel))
                    .max_decoding_message_size(256 * 1024 * 1024),
            );
        }
        Ok(self.client.clone().expect("just set"))
    }

    /// Sends `message`; an error status drops the channel (the next call
    /// reconnects: the peer may have restarted on a new connection).
    ///
    /// AppendEntries and votes carry no gRPC deadline: they are timed out by
    /// dropping this future (openraft does for votes; `append_entries` does
    /// after [`STREAM_STALL_INTERVALS`]), which resets the one stream, keeps
    /// the connection and counts as a timeout, after which the entries go
    /// again on the same connection. With a deadline of
    /// the same length tonic could end the call first, with an error
    /// status: the connection was dropped, openraft took the peer for
    /// unreachable and backed off, and the next attempt had to fit a new
    /// TLS handshake into the same 200 ms. A loaded follower that answered
    /// in 250 ms was never caught up again, and writes at 1,000 writers went
    /// uncommitted for 10 s (`shoal-bench control-plane`, 2026-12-03).
    async fn send(
        &mut self,
        method: Method,
        message: RaftMessage,
    ) -> Result<RaftMessage, tonic::Status> {
        let mut client = self
            .client()
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let message = tonic::Request::new(message);
        let reply = match method {
            Method::Append => client.append_entries(message).await,
            Method::Vote => client.vote(message).await,
        };
        self.answered(reply)
    }

    /// Notes an answer; an error status drops the channel.
    fn answered<T>(
        &mut self,
        reply: Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, tonic::Status> {
        match reply {
            Ok(reply) => {
                self.health.answered(self.target);
                Ok(reply.into_inner())
            }
            Err(status) => {
                self.client = None;
                Err(status)
            }
        }
    }

    /// A JSON request whose answer is openraft's `Result<Resp, RaftError>`.
    async fn call<Req, Resp>(&mut self, method: Method, request: &Req) -> RpcResult<Resp>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let json = serde_json::to_vec(request).map_err(|e| network_error(&e))?;
        let message = RaftMessage {
            json,
            ..Default::default()
        };
        let reply = self
            .send(method, message)
            .await
            .map_err(|status| unreachable(&status))?;
        let result: Result<Resp, RaftError<TypeConfig>> =
            serde_json::from_slice(&reply.json).map_err(|e| network_error(&e))?;
        result.map_err(|e| remote_failure(&e))
    }

    /// AppendEntries in the binary encoding; `Ok(None)` when the peer
    /// predates it (and refused it as a bad message).
    async fn append_binary(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
    ) -> RpcResult<Option<AppendEntriesResponse<TypeConfig>>> {
        let binary = wire::encode_append(rpc).map_err(|e| network_error(&e))?;
        let message = RaftMessage {
            binary,
            ..Default::default()
        };
        let reply = match self.send(Method::Append, message).await {
            Ok(reply) => reply,
            Err(status) if predates_binary(&status) => return Ok(None),
            Err(status) => return Err(unreachable(&status)),
        };
        match wire::decode_reply(&reply.binary) {
            Ok(Ok(response)) => Ok(Some(response)),
            Ok(Err(e)) => Err(remote_failure(&e)),
            Err(e) => Err(network_error(&e)),
        }
    }

    /// AppendEntries on its own, binary or (to a peer that predates it) JSON.
    async fn append_unary(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> RpcResult<AppendEntriesResponse<TypeConfig>> {
        if !self.json_only {
            if let Some(response) = self.append_binary(&rpc).await? {
                return Ok(response);
            }
            tracing::info!(
                peer = self.target,
                "this peer predates binary Raft messages: sending it JSON"
            );
            self.json_only = true;
        }
        self.call(Method::Append, &rpc).await
    }
}

/// How a manager without the binary encoding refuses a binary message: it
/// finds no JSON in it (see `api::membership`).
fn predates_binary(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::InvalidArgument
        && status.message().starts_with("bad raft message")
}

enum Method {
    Append,
    Vote,
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = SnapshotData;

    /// One at a time, to a peer without AppendStream (openraft 0.10 leaves
    /// the timeout of these to the network).
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<TypeConfig>> {
        let stall = option.soft_ttl() * STREAM_STALL_INTERVALS;
        tokio::time::timeout(stall, self.append_unary(rpc))
            .await
            .unwrap_or_else(|_| {
                Err(network_error(&std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer to an AppendEntries in {} ms", stall.as_millis()),
                )))
            })
    }

    /// Pipelined: openraft hands over each AppendEntries as soon as its
    /// entries are in the leader's log (before they are flushed there), and
    /// they go on one HTTP/2 stream without waiting for the answers before.
    /// With one AppendEntries at a time (openraft 0.9), the entries proposed
    /// while one was out waited for its whole round (the follower's flush
    /// and the way back) before they were even sent.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> futures_util::future::BoxFuture<
        's,
        RpcResult<BoxStream<'s, RpcResult<StreamAppendResult<TypeConfig>>>>,
    >
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        if self.unary_only || self.json_only {
            return stream_append_sequential(self, input, option);
        }
        Box::pin(async move { self.open_append_stream(input, &option).await })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        self.call(Method::Vote, &rpc).await
    }

    /// The whole snapshot on one client stream, in pieces of
    /// [`SNAPSHOT_PIECE`]; the follower installs it when the last arrives.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = snapshot.snapshot.into_inner();
        let head = serde_json::to_vec(&SnapshotHead {
            vote,
            meta: snapshot.meta,
            bytes: data.len() as u64,
        })
        .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let pieces = data.len().div_ceil(SNAPSHOT_PIECE);
        // Each piece copied out as it goes, not all at once.
        let messages = std::iter::once(RaftMessage {
            json: head,
            binary: Vec::new(),
        })
        .chain((0..pieces).map(move |i| {
            let end = data.len().min((i + 1) * SNAPSHOT_PIECE);
            RaftMessage {
                json: Vec::new(),
                binary: data[i * SNAPSHOT_PIECE..end].to_vec(),
            }
        }));
        let mut client = self
            .client()
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(futures_util::stream::iter(messages));
        request.set_timeout(snapshot_deadline(option.hard_ttl(), pieces));
        let reply = tokio::select! {
            reply = client.install_full_snapshot(request) => reply,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let reply = self
            .answered(reply)
            .map_err(|status| StreamingError::Unreachable(Unreachable::new(&status)))?;
        let result: Result<SnapshotResponse<TypeConfig>, openraft::error::Fatal<TypeConfig>> =
            serde_json::from_slice(&reply.json)
                .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}

#[cfg(test)]
mod tests;
