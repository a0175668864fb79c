//! Raft messages between managers over the Membership gRPC service.
//! AppendEntries, the message every write rides on, goes in a binary
//! encoding (`wire`); votes and snapshots, rare, as openraft's own types
//! in JSON. A peer that predates the binary encoding refuses it as a bad
//! message: it then gets JSON, the form it knows.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{StreamExt, stream::BoxStream};
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

    /// Opens an AppendStream and sends `input` on it as openraft makes its
    /// requests; answers come back in order. See [`STREAM_STALL_INTERVALS`]
    /// for when a silent follower ends it.
    async fn open_append_stream<S>(
        &mut self,
        input: S,
        option: &RPCOption,
    ) -> RpcResult<BoxStream<'static, RpcResult<StreamAppendResult<TypeConfig>>>>
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let mut client = self.client()?;
        let stall = option.soft_ttl() * STREAM_STALL_INTERVALS;
        let sent = Arc::new(AtomicU64::new(0));
        let counted = sent.clone();
        // The requests end when the answers are dropped (see `AnswerReader`).
        let (input, requests_end) = futures_util::stream::abortable(input);
        let requests = input.map(move |rpc| {
            counted.fetch_add(1, Ordering::Relaxed);
            // An entry that cannot be encoded (its membership not JSON)
            // goes as an empty message, which the follower refuses: the
            // stream ends with its error and openraft opens another.
            let binary = wire::encode_append(&rpc).unwrap_or_else(|e| {
                tracing::error!(error = %e, "encoding AppendEntries");
                Vec::new()
            });
            RaftMessage {
                binary,
                ..Default::default()
            }
        });
        // Bounded: a follower that takes the connection but not the stream
        // would hold openraft's replication here, where it cannot cancel.
        let opened = tokio::time::timeout(stall, client.append_stream(requests)).await;
        let Ok(opened) = opened else {
            requests_end.abort();
            return Err(network_error(&std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("AppendStream not opened in {} ms", stall.as_millis()),
            )));
        };
        let answers = match opened {
            Ok(answers) => answers.into_inner(),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(
                    peer = self.target,
                    "this peer predates pipelined AppendEntries: sending them one at a time"
                );
                self.unary_only = true;
                return Err(network_error(&status));
            }
            Err(status) => {
                self.client = None;
                return Err(unreachable(&status));
            }
        };
        let reader = AnswerReader {
            answers,
            requests_end,
            sent,
            answered: 0,
            stall,
            health: self.health.clone(),
            target: self.target,
        };
        Ok(
            futures_util::stream::unfold(Some(reader), |reader| async move {
                let mut reader = reader?;
                let answer = reader.next().await?;
                let go_on = matches!(answer, Ok(Ok(_)));
                Some((answer, go_on.then_some(reader)))
            })
            .boxed(),
        )
    }
}

/// Reads a follower's answers on an AppendStream.
///
/// Dropped (openraft is done with the stream: an error, a conflict, a stall,
/// another leader), it ends the requests too. The requests are sent by
/// hyper's connection task, not by whoever holds the answers, and h2 does
/// not reset a stream whose receiving half is dropped; left running, the
/// old stream would go on taking entries from openraft's replication state,
/// which the next stream shares, and send them where no one reads the
/// answers.
struct AnswerReader {
    answers: tonic::Streaming<RaftMessage>,
    requests_end: futures_util::stream::AbortHandle,
    /// Requests sent, and answers read.
    sent: Arc<AtomicU64>,
    answered: u64,
    stall: Duration,
    health: PeerHealth,
    target: RaftId,
}

impl Drop for AnswerReader {
    fn drop(&mut self) {
        self.requests_end.abort();
    }
}

impl AnswerReader {
    /// The next answer; None when the follower ended the stream.
    async fn next(&mut self) -> Option<RpcResult<StreamAppendResult<TypeConfig>>> {
        let message = loop {
            // Waits without limit while nothing is asked (the stream idles
            // between writes); with a request out, the answer must come
            // within `stall`.
            let check = if self.sent.load(Ordering::Relaxed) > self.answered {
                self.stall
            } else {
                self.stall / STREAM_STALL_INTERVALS
            };
            match tokio::time::timeout(check, self.answers.message()).await {
                Ok(message) => break message,
                Err(_)
                    if self.sent.load(Ordering::Relaxed) > self.answered && check == self.stall =>
                {
                    return Some(Err(network_error(&std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no answer to an AppendEntries in {} ms",
                            self.stall.as_millis()
                        ),
                    ))));
                }
                Err(_) => continue,
            }
        };
        match message {
            Ok(Some(message)) => {
                self.answered += 1;
                self.health.answered(self.target);
                Some(wire::decode_stream_reply(&message.binary).map_err(|e| network_error(&e)))
            }
            Ok(None) => None,
            Err(status) => Some(Err(unreachable(&status))),
        }
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
mod tests {
    use super::*;

    #[test]
    fn a_peer_without_the_binary_encoding_is_recognised_by_its_refusal() {
        // What a manager before the binary encoding does with a binary
        // AppendEntries: it reads the (empty) JSON field.
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new(1, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        let message = RaftMessage {
            binary: wire::encode_append(&rpc).unwrap(),
            ..Default::default()
        };
        let refusal = crate::api::membership::decode::<AppendEntriesRequest<TypeConfig>>(&message)
            .unwrap_err();
        assert!(predates_binary(&refusal), "{refusal:?}");
        // Other failures are not taken for it: the peer stays on binary.
        assert!(!predates_binary(&tonic::Status::unavailable("down")));
        assert!(!predates_binary(&tonic::Status::invalid_argument(
            "bad binary AppendEntries: not protobuf"
        )));
    }

    /// A Membership server that answers AppendEntries after `delays` (one
    /// per call, then at once), and AppendStreams as `stream` says.
    struct SlowPeer {
        delays: Mutex<std::collections::VecDeque<Duration>>,
        stream: StreamMode,
        /// Told when a Silent stream's requests end (or it is reset).
        requests_ended: Arc<tokio::sync::Notify>,
    }

    impl SlowPeer {
        /// No unary delays; AppendStreams as `stream` says.
        fn streaming(stream: StreamMode) -> Self {
            Self {
                delays: Mutex::default(),
                stream,
                requests_ended: Default::default(),
            }
        }
    }

    #[derive(Clone, Copy)]
    enum StreamMode {
        /// Answers nothing until this many requests have arrived, then
        /// each in order (the last id each request carried).
        AnswerAfter(usize),
        /// Reads every request and answers none.
        Silent,
        /// Has no AppendStream (a manager that predates it).
        Unimplemented,
    }

    struct NotifyOnDrop(Arc<tokio::sync::Notify>);

    impl Drop for NotifyOnDrop {
        fn drop(&mut self) {
            self.0.notify_one();
        }
    }

    /// What a follower that takes everything answers to `message`.
    fn matched(message: &RaftMessage) -> RaftMessage {
        let rpc = wire::decode_append(&message.binary).unwrap();
        let last = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        RaftMessage {
            binary: wire::encode_stream_reply(&Ok(last)),
            ..Default::default()
        }
    }

    #[tonic::async_trait]
    impl shoal_api::pb::membership_server::Membership for SlowPeer {
        async fn join_manager(
            &self,
            _: tonic::Request<shoal_api::pb::JoinManagerRequest>,
        ) -> Result<tonic::Response<shoal_api::pb::JoinManagerResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn append_entries(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            let delay = self.delays.lock().unwrap().pop_front();
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let binary = wire::encode_reply(&Ok(AppendEntriesResponse::Success))
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
            Ok(tonic::Response::new(RaftMessage {
                binary,
                ..Default::default()
            }))
        }
        type AppendStreamStream = crate::api::membership::AnswerStream;
        async fn append_stream(
            &self,
            request: tonic::Request<tonic::Streaming<RaftMessage>>,
        ) -> Result<tonic::Response<Self::AppendStreamStream>, tonic::Status> {
            let incoming = request.into_inner();
            let answers: Self::AppendStreamStream = match self.stream {
                StreamMode::Unimplemented => return Err(tonic::Status::unimplemented("test")),
                StreamMode::Silent => {
                    // Told when the requests end, or the leader resets the
                    // stream and the server drops it.
                    let ended = NotifyOnDrop(self.requests_ended.clone());
                    Box::pin(futures_util::stream::unfold(
                        (incoming, ended),
                        |(mut incoming, ended)| async move {
                            while let Ok(Some(_)) = incoming.message().await {}
                            drop(ended);
                            None
                        },
                    ))
                }
                StreamMode::AnswerAfter(first) => Box::pin(futures_util::stream::unfold(
                    (incoming, std::collections::VecDeque::new(), first),
                    |(mut incoming, mut held, mut first)| async move {
                        while held.len() < first {
                            match incoming.message().await {
                                Ok(Some(message)) => held.push_back(matched(&message)),
                                _ => break,
                            }
                        }
                        first = 0;
                        let answer = match held.pop_front() {
                            Some(answer) => answer,
                            None => matched(&incoming.message().await.ok()??),
                        };
                        Some((Ok(answer), (incoming, held, first)))
                    },
                )),
            };
            Ok(tonic::Response::new(answers))
        }
        async fn vote(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn install_snapshot(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn install_full_snapshot(
            &self,
            _: tonic::Request<tonic::Streaming<RaftMessage>>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn propose(
            &self,
            _: tonic::Request<shoal_api::pb::StoreBatch>,
        ) -> Result<tonic::Response<shoal_api::pb::ProposeResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn check_manager(
            &self,
            _: tonic::Request<shoal_api::pb::Empty>,
        ) -> Result<tonic::Response<shoal_api::pb::Empty>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
    }

    fn manager(ca: &shoal_pki::CertificateAuthority, id: &str) -> Arc<shoal_pki::Credentials> {
        let (chain_pem, key_pem) = ca
            .issue_with_new_key(&shoal_pki::NodeRequest {
                node_id: id,
                role: shoal_pki::Role::Manager,
                cluster_id: "c",
                validity: Duration::from_secs(3600),
            })
            .unwrap();
        shoal_pki::Credentials::new(shoal_pki::credentials::CredentialFiles {
            chain_pem,
            key_pem,
            roots_pem: ca.cert_pem().to_owned(),
        })
        .unwrap()
    }

    /// Serves `service` with mutual TLS on a free port; returns a leader's
    /// peer for it and the count of connections the server accepted.
    async fn serve(service: SlowPeer) -> (Network, Peer, Arc<std::sync::atomic::AtomicUsize>) {
        let ca = shoal_pki::CertificateAuthority::create("c").unwrap();
        let listener = shoal_pki::transport::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        let incoming = tokio_stream::StreamExt::map(
            shoal_pki::transport::incoming(
                listener,
                shoal_pki::transport::server_config(manager(&ca, "m2")).unwrap(),
            ),
            move |connection| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                connection
            },
        );
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(shoal_api::pb::membership_server::MembershipServer::new(
                    service,
                ))
                .serve_with_incoming(incoming),
        );

        let mut network = Network::new(manager(&ca, "m1"));
        let peer = network
            .new_client(2, &BasicNode { addr: addr.clone() })
            .await;
        (network, peer, connections)
    }

    fn request(index: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new(1, 1),
            prev_log_id: index.checked_sub(1).map(|i| crate::raft::log_id(1, 1, i)),
            entries: vec![crate::raft::Entry {
                log_id: crate::raft::log_id(1, 1, index),
                payload: openraft::EntryPayload::Blank,
            }],
            leader_commit: None,
        }
    }

    /// openraft gives an AppendEntries one heartbeat interval and then drops
    /// it. A follower that answers later is slow, not gone: the leader keeps
    /// its connection and reports a timeout (openraft backs off only for an
    /// unreachable peer), and the next AppendEntries is answered on
    /// the same connection. Before, the call carried a gRPC deadline of the
    /// same length, tonic could end it first, and the connection was
    /// dropped and the peer reported unreachable.
    #[tokio::test]
    async fn a_late_answer_is_a_timeout_on_the_same_connection() {
        let (network, mut peer, connections) = serve(SlowPeer {
            delays: Mutex::new([Duration::from_millis(600)].into()),
            stream: StreamMode::Unimplemented,
            requests_ended: Default::default(),
        })
        .await;
        let heartbeat = Duration::from_millis(200);
        let rpc = || AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new(1, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        // What openraft does: its own timeout around the call, with the
        // interval in the option too. Here its timeout is the longer one,
        // so that the call's own end, if it had one, would come first
        // (in openraft both expire together, and either could).
        let first = tokio::time::timeout(
            2 * heartbeat,
            peer.append_entries(rpc(), RPCOption::new(heartbeat)),
        )
        .await;
        assert!(
            first.is_err(),
            "the call ended before openraft's timeout: {first:?}"
        );
        let second = tokio::time::timeout(
            Duration::from_secs(10),
            peer.append_entries(rpc(), RPCOption::new(heartbeat)),
        )
        .await
        .expect("the second AppendEntries was not answered");
        assert!(
            matches!(second, Ok(AppendEntriesResponse::Success)),
            "{second:?}"
        );
        assert_eq!(
            connections.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the slow peer's connection was dropped and dialled again"
        );
        assert!(network.health.answered_within(2, Duration::from_secs(10)));
    }

    /// The AppendStream answers nothing until three requests are in: a
    /// leader that waited for each answer before sending the next would
    /// never get one. Answers come back in order, on one connection.
    #[tokio::test]
    async fn appends_go_out_without_waiting_for_answers() {
        let (_network, mut peer, connections) =
            serve(SlowPeer::streaming(StreamMode::AnswerAfter(3))).await;
        let (requests, input) = tokio::sync::mpsc::unbounded_channel();
        for index in 1..=3 {
            requests.send(request(index)).unwrap();
        }
        let input = tokio_stream::wrappers::UnboundedReceiverStream::new(input);
        let answers = tokio::time::timeout(Duration::from_secs(10), async {
            let answers = peer
                .stream_append(input, RPCOption::new(Duration::from_secs(1)))
                .await
                .expect("the stream opens");
            answers.take(3).collect::<Vec<_>>().await
        })
        .await
        .expect("the requests waited for answers: not pipelined");
        let indexes: Vec<u64> = answers
            .into_iter()
            .map(|a| a.unwrap().unwrap().unwrap().index)
            .collect();
        assert_eq!(indexes, vec![1, 2, 3]);
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A follower that takes requests and never answers ends the stream
    /// with an error once the oldest has waited the stall limit; one that
    /// is merely idle (nothing asked) keeps it open.
    #[tokio::test]
    async fn a_silent_follower_ends_the_stream() {
        let (_network, mut peer, _) = serve(SlowPeer::streaming(StreamMode::Silent)).await;
        let (requests, input) = tokio::sync::mpsc::unbounded_channel();
        let input = tokio_stream::wrappers::UnboundedReceiverStream::new(input);
        let option = RPCOption::new(Duration::from_millis(20));
        let stall = option.soft_ttl() * STREAM_STALL_INTERVALS;
        let mut answers = peer
            .stream_append(input, option)
            .await
            .expect("the stream opens");
        // Nothing asked: no error, however long.
        assert!(
            tokio::time::timeout(3 * stall, answers.next())
                .await
                .is_err(),
            "an idle stream ended"
        );
        requests.send(request(1)).unwrap();
        let started = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(10), answers.next())
            .await
            .expect("a silent follower kept the stream open");
        assert!(
            matches!(ended, Some(Err(RPCError::Network(_)))),
            "{ended:?}"
        );
        assert!(
            started.elapsed() >= stall,
            "ended after {:?}",
            started.elapsed()
        );
    }

    /// A peer without AppendStream is sent AppendEntries one at a time: the
    /// first stream fails, the ones after go unary.
    #[tokio::test]
    async fn a_peer_without_append_stream_gets_them_one_at_a_time() {
        let (_network, mut peer, _) = serve(SlowPeer::streaming(StreamMode::Unimplemented)).await;
        let option = RPCOption::new(Duration::from_secs(1));
        let first_refused = matches!(
            peer.stream_append(futures_util::stream::iter([request(1)]), option.clone())
                .await,
            Err(RPCError::Network(_))
        );
        assert!(first_refused);
        let answers: Vec<_> = peer
            .stream_append(futures_util::stream::iter([request(1)]), option)
            .await
            .expect("the unary stream opens")
            .collect()
            .await;
        assert_eq!(answers.len(), 1);
        assert_eq!(
            answers[0]
                .as_ref()
                .unwrap()
                .as_ref()
                .unwrap()
                .unwrap()
                .index,
            1
        );
    }

    /// Once openraft drops a stream's answers (here: after a stall), its
    /// requests end too. They are sent by the connection's task, not by
    /// whoever holds the answers, and h2 does not reset a stream whose
    /// receiving half is dropped: left alone, the old stream would go on
    /// taking entries from openraft's replication state, which the next
    /// stream shares, for a follower no one listens to.
    #[tokio::test]
    async fn dropped_answers_end_the_requests() {
        let requests_ended = Arc::new(tokio::sync::Notify::new());
        let (_network, mut peer, _) = serve(SlowPeer {
            delays: Mutex::default(),
            stream: StreamMode::Silent,
            requests_ended: requests_ended.clone(),
        })
        .await;
        let (requests, input) = tokio::sync::mpsc::unbounded_channel();
        let input = tokio_stream::wrappers::UnboundedReceiverStream::new(input);
        let answers = peer
            .stream_append(input, RPCOption::new(Duration::from_millis(200)))
            .await
            .expect("the stream opens");
        requests.send(request(1)).unwrap();
        drop(answers);
        // The sender is still held: only the drop can end the requests.
        tokio::time::timeout(Duration::from_secs(10), requests_ended.notified())
            .await
            .expect("the requests went on after their answers were dropped");
        drop(requests);
    }
}
