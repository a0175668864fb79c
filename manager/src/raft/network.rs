//! Raft messages between managers over the Membership gRPC service. The
//! payloads are openraft's own request and response types as JSON.

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
use shoal_api::pb::{RaftMessage, membership_client::MembershipClient};
use shoal_pki::transport::Dialer;
use tonic::transport::Channel;

use super::{RaftId, TypeConfig};

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
    client: Option<MembershipClient<Channel>>,
    health: PeerHealth,
    dialer: Dialer,
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
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<RaftId, BasicNode, E>>;

impl Peer {
    fn client(&mut self) -> Result<MembershipClient<Channel>, NetworkError> {
        if self.client.is_none() {
            // Connects on first use. HTTP/2 pings find a peer that vanished
            // without closing the connection (a partition, a powered-off
            // host) within seconds: calls on it then fail instead of
            // waiting for TCP to give up, minutes later.
            let channel = shoal_pki::transport::lazy_channel(&self.addr, self.dialer.clone())
                .map_err(|e| NetworkError::new(&e))?;
            self.client =
                Some(MembershipClient::new(channel).max_decoding_message_size(256 * 1024 * 1024));
        }
        Ok(self.client.clone().expect("just set"))
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
        let mut client = self.client().map_err(RPCError::Network)?;
        let mut message = tonic::Request::new(RaftMessage { json });
        message.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::Append => client.append_entries(message).await,
            Method::Vote => client.vote(message).await,
            Method::Snapshot => client.install_snapshot(message).await,
        };
        let reply = match reply {
            Ok(reply) => {
                self.health.answered(self.target);
                reply.into_inner()
            }
            Err(status) => {
                // Drop the channel: the next call reconnects (the peer may
                // have restarted on a new connection).
                self.client = None;
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
        };
        let result: Result<Resp, E> = serde_json::from_slice(&reply.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
    }
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
