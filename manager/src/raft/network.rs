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
        message.set_timeout(option.hard_ttl());
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
}
