//! The managers' Raft network against slow, silent and old peers on real
//! TLS connections.

use futures_util::StreamExt;

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
    let refusal =
        crate::api::membership::decode::<AppendEntriesRequest<TypeConfig>>(&message).unwrap_err();
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
