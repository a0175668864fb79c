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

use openraft::{
    BasicNode, RaftNetwork, RaftNetworkFactory,
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable},
    network::RPCOption,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use shoal_api::{
    eager_end::EagerEndService,
    pb::{RaftMessage, membership_client::MembershipClient},
};
use shoal_pki::transport::Dialer;
use tonic::transport::Channel;

use super::{RaftId, TypeConfig, wire};

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
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<RaftId, BasicNode, E>>;

impl Peer {
    fn client(&mut self) -> Result<MembershipClient<EagerEndService<Channel>>, NetworkError> {
        if self.client.is_none() {
            // Connects on first use. HTTP/2 pings find a peer that vanished
            // without closing the connection (a partition, a powered-off
            // host) within seconds: calls on it then fail instead of
            // waiting for TCP to give up, minutes later.
            let channel = shoal_pki::transport::lazy_channel(&self.addr, self.dialer.clone())
                .map_err(|e| NetworkError::new(&e))?;
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
    /// AppendEntries and votes carry no gRPC deadline: openraft times them
    /// out itself (at the heartbeat interval) by dropping this future, which
    /// resets the one stream, keeps the connection and counts as a timeout,
    /// after which the entries go again with the next write or heartbeat,
    /// on the same connection. With a deadline of
    /// the same length tonic could end the call first, with an error
    /// status: the connection was dropped, openraft took the peer for
    /// unreachable and waited 500 ms, and the next attempt had to fit a new
    /// TLS handshake into the same 200 ms. A loaded follower that answered
    /// in 250 ms was never caught up again, and writes at 1,000 writers went
    /// uncommitted for 10 s (`shoal-bench control-plane`, 2026-12-03).
    async fn send(
        &mut self,
        method: Method,
        message: RaftMessage,
        option: &RPCOption,
    ) -> Result<RaftMessage, tonic::Status> {
        let mut client = self
            .client()
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut message = tonic::Request::new(message);
        if let Method::Snapshot = method {
            message.set_timeout(option.hard_ttl());
        }
        let reply = match method {
            Method::Append => client.append_entries(message).await,
            Method::Vote => client.vote(message).await,
            Method::Snapshot => client.install_snapshot(message).await,
        };
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

    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        request: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
        RPCError<RaftId, BasicNode, E>: From<openraft::error::RemoteError<RaftId, BasicNode, E>>,
    {
        let json =
            serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let message = RaftMessage {
            json,
            ..Default::default()
        };
        let reply = self
            .send(method, message, option)
            .await
            .map_err(|status| RPCError::Unreachable(Unreachable::new(&status)))?;
        let result: Result<Resp, E> = serde_json::from_slice(&reply.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
    }

    /// AppendEntries in the binary encoding; `Ok(None)` when the peer
    /// predates it (and refused it as a bad message).
    async fn append_binary(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> RpcResult<Option<AppendEntriesResponse<RaftId>>, RaftError<RaftId>> {
        let binary =
            wire::encode_append(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let message = RaftMessage {
            binary,
            ..Default::default()
        };
        let reply = match self.send(Method::Append, message, option).await {
            Ok(reply) => reply,
            Err(status) if predates_binary(&status) => return Ok(None),
            Err(status) => return Err(RPCError::Unreachable(Unreachable::new(&status))),
        };
        match wire::decode_reply(&reply.binary) {
            Ok(Ok(response)) => Ok(Some(response)),
            Ok(Err(e)) => Err(RPCError::RemoteError(openraft::error::RemoteError::new(
                0, e,
            ))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
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
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftId>, RaftError<RaftId>> {
        if !self.json_only {
            if let Some(response) = self.append_binary(&rpc, &option).await? {
                return Ok(response);
            }
            tracing::info!(
                peer = self.target,
                "this peer predates binary Raft messages: sending it JSON"
            );
            self.json_only = true;
        }
        self.call(Method::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftId>, RaftError<RaftId, InstallSnapshotError>> {
        self.call(Method::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<RaftId>, RaftError<RaftId>> {
        self.call(Method::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::Vote;

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
    /// per call, then at once) and counts its TLS connections.
    struct SlowPeer {
        delays: Mutex<std::collections::VecDeque<Duration>>,
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

    /// openraft gives an AppendEntries one heartbeat interval and then drops
    /// it. A follower that answers later is slow, not gone: the leader keeps
    /// its connection and reports a timeout (openraft backs off 500 ms only
    /// for an unreachable peer), and the next AppendEntries is answered on
    /// the same connection. Before, the call carried a gRPC deadline of the
    /// same length, tonic could end it first, and the connection was
    /// dropped and the peer reported unreachable.
    #[tokio::test]
    async fn a_late_answer_is_a_timeout_on_the_same_connection() {
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
        let service = SlowPeer {
            delays: Mutex::new([Duration::from_millis(600)].into()),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(shoal_api::pb::membership_server::MembershipServer::new(
                    service,
                ))
                .serve_with_incoming(incoming),
        );

        let mut network = Network::new(manager(&ca, "m1"));
        let mut peer = network
            .new_client(2, &BasicNode { addr: addr.clone() })
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
}
