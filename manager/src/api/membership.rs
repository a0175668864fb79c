//! The Membership service: Raft traffic between managers, writes forwarded
//! by followers, and manager joins. Only managers' certificates reach it
//! (see `authz`).

use std::sync::Arc;

use futures_util::StreamExt;
use openraft::BasicNode;
use shoal_api::pb::{
    Empty, JoinManagerRequest, JoinManagerResponse, ManagerStatus, Meta, Node, NodeDescription,
    NodeRole, NodeSpec, NodeState, NodeStatus, ProposeResponse, RaftMessage, StoreBatch,
    membership_server::Membership,
};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    api::authz,
    manager::Manager,
    raft::{network::SnapshotHead, wire},
    store::Batch,
};

/// A follower's answers on an AppendStream.
pub type AnswerStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<RaftMessage, Status>> + Send>>;

pub struct MembershipService {
    pub manager: Arc<Manager>,
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(m: &RaftMessage) -> Result<T, Status> {
    serde_json::from_slice(&m.json)
        .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    serde_json::to_vec(value)
        .map(|json| {
            Response::new(RaftMessage {
                json,
                ..Default::default()
            })
        })
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl Membership for MembershipService {
    async fn join_manager(
        &self,
        request: Request<JoinManagerRequest>,
    ) -> Result<Response<JoinManagerResponse>, Status> {
        // The node is the one the caller's manager certificate names (issued
        // for a manager token); the request only says where its Raft is.
        let (node_id, caller_issuer) = {
            let caller = authz::certified_node(&request)?;
            (caller.node_id.clone(), caller.issuer.clone())
        };
        let request = request.into_inner();
        let manager = &self.manager;
        if !manager.is_leader() {
            return Err(manager.not_leader());
        }
        let cluster_id = {
            let state = manager.store.read().await;
            let cluster = state
                .cluster
                .as_ref()
                .ok_or_else(|| Status::unavailable("the cluster is not initialised"))?;
            if let Some(taken) = state.nodes.values().find(|n| {
                n.manager_status
                    .as_ref()
                    .is_some_and(|m| m.raft_id == request.raft_id)
                    && n.meta.as_ref().is_some_and(|m| m.id != node_id)
            }) {
                return Err(Status::already_exists(format!(
                    "Raft id {} belongs to node {}",
                    request.raft_id,
                    taken.meta.clone().unwrap_or_default().id
                )));
            }
            cluster.meta.clone().unwrap_or_default().id
        };
        let node = BasicNode::new(request.addr.clone());
        manager
            .raft
            .add_learner(request.raft_id, node, true)
            .await
            .map_err(|e| {
                Status::unavailable(format!("adding {} as a learner: {e}", request.addr))
            })?;
        let mut voters: std::collections::BTreeSet<u64> = manager.voters().into_iter().collect();
        voters.insert(request.raft_id);
        manager
            .raft
            .change_membership(voters, false)
            .await
            .map_err(|e| Status::unavailable(format!("making {} a voter: {e}", request.addr)))?;
        manager
            .update(|state| -> Result<_, Status> {
                // The node the CA created when it issued the certificate, or
                // the promoted worker's node on this host it took.
                let mut node = state.nodes.get(&node_id).cloned().unwrap_or_else(|| {
                    let mut node = new_manager_node(&request.hostname, &request.addr);
                    node.meta.get_or_insert_with(Default::default).id = node_id.clone();
                    node
                });
                node.role = NodeRole::Manager as i32;
                node.spec.get_or_insert_with(Default::default).desired_role =
                    NodeRole::Manager as i32;
                node.manager_status = Some(ManagerStatus {
                    raft_id: request.raft_id,
                    addr: request.addr.clone(),
                    cert_issuer: caller_issuer.clone(),
                    ..Default::default()
                });
                let mut batch = Batch::default();
                batch.put_node(node);
                Ok(Some((batch, ())))
            })
            .await?;
        tracing::info!(raft_id = request.raft_id, addr = %request.addr, "manager joined");
        Ok(Response::new(JoinManagerResponse {
            cluster_id,
            node_id,
        }))
    }

    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.get_ref();
        if message.binary.is_empty() {
            // A leader that predates the binary encoding.
            let rpc = decode(message)?;
            return encode(&self.manager.raft.append_entries(rpc).await);
        }
        // Not "bad raft message": that is how a sender learns its peer
        // predates the binary encoding (`raft::network`).
        let started = std::time::Instant::now();
        let rpc = wire::decode_append(&message.binary)
            .map_err(|e| Status::invalid_argument(format!("bad binary AppendEntries: {e}")))?;
        let entries = rpc.entries.len();
        let reply = self.manager.raft.append_entries(rpc).await;
        let took = started.elapsed();
        // The leader waits one heartbeat interval (200 ms by default) for this answer.
        if took > std::time::Duration::from_millis(100) {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                entries,
                bytes = message.binary.len(),
                "slow AppendEntries"
            );
        }
        let binary = wire::encode_reply(&reply).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftMessage {
            binary,
            ..Default::default()
        }))
    }

    type AppendStreamStream = AnswerStream;

    /// AppendEntries pipelined (see `raft::network`): each request goes to
    /// Raft as it arrives, in order, and each answer back as it is ready.
    async fn append_stream(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let incoming = request.into_inner();
        // A request that cannot be read ends the requests; the answers then
        // end with why.
        let refused: Arc<std::sync::Mutex<Option<Status>>> = Arc::default();
        let noted = refused.clone();
        let requests = futures_util::stream::unfold(Some(incoming), move |incoming| {
            let noted = noted.clone();
            async move {
                let mut incoming = incoming?;
                let refusal = match incoming.message().await {
                    Ok(Some(message)) => match wire::decode_append(&message.binary) {
                        Ok(rpc) => return Some((rpc, Some(incoming))),
                        Err(e) => {
                            Status::invalid_argument(format!("bad binary AppendEntries: {e}"))
                        }
                    },
                    Ok(None) => return None,
                    Err(status) => status,
                };
                *noted.lock().unwrap_or_else(|e| e.into_inner()) = Some(refusal);
                None
            }
        });
        let answers = self
            .manager
            .raft
            .stream_append(requests)
            .map(|answer| match answer {
                Ok(answer) => Ok(RaftMessage {
                    binary: wire::encode_stream_reply(&answer),
                    ..Default::default()
                }),
                Err(fatal) => Err(Status::unavailable(format!("raft has stopped: {fatal}"))),
            });
        let why = futures_util::stream::once(async move {
            refused.lock().unwrap_or_else(|e| e.into_inner()).take()
        })
        .filter_map(|refusal| async move { refusal.map(Err) });
        Ok(Response::new(Box::pin(answers.chain(why))))
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(request.get_ref())?;
        encode(&self.manager.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        _: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        Err(Status::failed_precondition(
            "this manager takes snapshots whole (InstallFullSnapshot), not in chunks: \
             the leader runs an older shoal-manager; upgrade it",
        ))
    }

    /// A whole snapshot from the leader (see `raft::network`), installed
    /// once its last piece is in.
    async fn install_full_snapshot(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (head, data) = receive_snapshot(request.into_inner()).await?;
        let snapshot = crate::raft::Snapshot {
            meta: head.meta,
            snapshot: std::io::Cursor::new(data),
        };
        encode(
            &self
                .manager
                .raft
                .install_full_snapshot(head.vote, snapshot)
                .await,
        )
    }

    async fn propose(
        &self,
        request: Request<StoreBatch>,
    ) -> Result<Response<ProposeResponse>, Status> {
        if !self.manager.is_leader() {
            return Err(Status::unavailable(
                "not the leader (leadership moved while forwarding)",
            ));
        }
        let index = self.manager.propose(request.into_inner()).await?;
        Ok(Response::new(ProposeResponse { index }))
    }

    /// The authorization layer has judged the caller by the time this
    /// runs: reaching here means it is a manager (see `crate::demotion`).
    async fn check_manager(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }
}

/// A whole snapshot's head and data, as `raft::network` sends them: the
/// head (JSON) in the first message, the data in the `binary` of all, in
/// order, exactly as long as the head says.
async fn receive_snapshot(
    pieces: impl futures_util::Stream<Item = Result<RaftMessage, Status>>,
) -> Result<(SnapshotHead, Vec<u8>), Status> {
    let mut pieces = std::pin::pin!(pieces);
    let first = pieces
        .next()
        .await
        .ok_or_else(|| Status::invalid_argument("an empty snapshot stream"))??;
    let head: SnapshotHead = decode(&first)?;
    let mut data = first.binary;
    while let Some(piece) = pieces.next().await {
        data.extend_from_slice(&piece?.binary);
    }
    if data.len() as u64 != head.bytes {
        return Err(Status::invalid_argument(format!(
            "a snapshot of {} bytes announced, {} received",
            head.bytes,
            data.len()
        )));
    }
    Ok((head, data))
}

/// The Node object of a manager host, before its agent registers.
pub fn new_manager_node(hostname: &str, addr: &str) -> Node {
    let ip = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    Node {
        meta: Some(Meta {
            id: shoal_api::new_id(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            desired_role: NodeRole::Manager as i32,
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: hostname.to_owned(),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Unknown as i32,
            message: "waiting for the node's agent".into(),
            addr: ip.to_owned(),
        }),
        role: NodeRole::Manager as i32,
        manager_status: None,
        ingress_addr: String::new(),
        cert_issuer: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{SnapshotMeta, Vote};

    fn head(bytes: u64) -> RaftMessage {
        let head = SnapshotHead {
            vote: Vote::new(2, 1),
            meta: SnapshotMeta {
                last_log_id: Some(crate::raft::log_id(2, 1, 40)),
                last_membership: Default::default(),
            },
            bytes,
        };
        RaftMessage {
            json: serde_json::to_vec(&head).unwrap(),
            binary: b"ab".to_vec(),
        }
    }

    fn piece(data: &[u8]) -> Result<RaftMessage, Status> {
        Ok(RaftMessage {
            json: Vec::new(),
            binary: data.to_vec(),
        })
    }

    #[tokio::test]
    async fn a_snapshot_is_its_pieces_in_order() {
        let pieces = futures_util::stream::iter([Ok(head(6)), piece(b"cd"), piece(b"ef")]);
        let (head, data) = receive_snapshot(pieces).await.unwrap();
        assert_eq!(data, b"abcdef");
        assert_eq!(head.meta.last_log_id.map(|l| l.index), Some(40));
    }

    /// An empty or cut snapshot would replace the follower's whole store
    /// with less: it is refused, naming the sizes.
    #[tokio::test]
    async fn a_snapshot_shorter_than_announced_is_refused() {
        let pieces = futures_util::stream::iter([Ok(head(6)), piece(b"cd")]);
        let refused = receive_snapshot(pieces).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("6 bytes announced, 4 received"),
            "{refused:?}"
        );
    }

    /// What a manager on openraft 0.9 sent: a chunk, its data in JSON and
    /// no announced size. Installed, it would have emptied the store.
    #[tokio::test]
    async fn a_chunk_of_the_old_protocol_is_not_a_snapshot() {
        let old = serde_json::json!({
            "vote": {"leader_id": {"term": 2, "node_id": 1}, "committed": true},
            "meta": {"last_log_id": null, "last_membership": {"log_id": null, "membership": {"configs": [], "nodes": {}}}, "snapshot_id": "2-40"},
            "offset": 0,
            "data": [1, 2, 3],
            "done": true
        });
        let message = RaftMessage {
            json: serde_json::to_vec(&old).unwrap(),
            binary: Vec::new(),
        };
        let refused = receive_snapshot(futures_util::stream::iter([Ok(message)]))
            .await
            .unwrap_err();
        assert!(
            refused.message().starts_with("bad raft message"),
            "{refused:?}"
        );
    }
}
