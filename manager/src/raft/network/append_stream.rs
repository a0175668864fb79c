//! AppendStream: openraft's pipelined AppendEntries on one bidirectional
//! gRPC stream per follower. The leader sends entries without waiting for
//! the previous answer; answers come back in order.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, stream::BoxStream};
use openraft::{
    network::RPCOption,
    raft::{AppendEntriesRequest, StreamAppendResult},
};
use shoal_api::pb::RaftMessage;

use super::{Peer, PeerHealth, RpcResult, STREAM_STALL_INTERVALS, network_error, unreachable};
use crate::raft::{RaftId, TypeConfig, wire};

impl Peer {
    /// Opens an AppendStream and sends `input` on it as openraft makes its
    /// requests; answers come back in order. See [`STREAM_STALL_INTERVALS`]
    /// for when a silent follower ends it.
    pub(super) async fn open_append_stream<S>(
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
