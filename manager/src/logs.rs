//! The log broker: `shoal service logs` asks the leader, which asks the
//! agents of the nodes running the service's tasks (through their
//! assignment sets); their lines flow back through `PublishLogs` into the
//! caller's stream. Nothing is stored: a log request lives as long as its
//! caller listens.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Mutex,
};

use shoal_api::pb::{LogLine, LogRequest};
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::limits::{LimitError, Limits};

struct Subscription {
    /// Task ids per node.
    nodes: BTreeMap<String, Vec<String>>,
    follow: bool,
    tail: u64,
    since_ns: i64,
    /// Nodes that have not finished sending (non-follow requests end when
    /// every node is done).
    pending: HashSet<String>,
    lines: mpsc::Sender<Result<LogLine, Status>>,
}

/// What a log request asks of every node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Go on sending lines as they come.
    pub follow: bool,
    /// Lines per task from the end; 0: all.
    pub tail: u64,
    /// Only lines logged at or after this time (Unix ns); 0: all.
    pub since_ns: i64,
}

pub struct LogBroker {
    subscriptions: Mutex<HashMap<String, Subscription>>,
    /// Bumped when requests change, so assignment streams push them.
    changed: watch::Sender<u64>,
    /// How many requests may be open at once.
    limits: Limits,
}

impl Default for LogBroker {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl LogBroker {
    pub fn new(limits: Limits) -> Self {
        Self {
            subscriptions: Mutex::default(),
            changed: watch::channel(0).0,
            limits,
        }
    }

    fn subscriptions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Subscription>> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Starts a request for `nodes` (node → task ids); the receiver gets the
    /// lines. It ends when every node finished (unless following) or when
    /// the caller drops it. Refused when the limit of open requests is
    /// reached (each holds a log reader per task on its nodes).
    pub fn subscribe(
        &self,
        nodes: BTreeMap<String, Vec<String>>,
        options: LogOptions,
    ) -> Result<mpsc::Receiver<Result<LogLine, Status>>, LimitError> {
        let LogOptions {
            follow,
            tail,
            since_ns,
        } = options;
        let (lines, receiver) = mpsc::channel(1024);
        if nodes.is_empty() {
            return Ok(receiver); // nothing runs: the stream ends at once
        }
        let id = shoal_api::new_id();
        let pending = nodes.keys().cloned().collect();
        let mut subscriptions = self.subscriptions();
        subscriptions.retain(|_, s| !s.lines.is_closed());
        self.limits.check_log_streams(subscriptions.len())?;
        subscriptions.insert(
            id,
            Subscription {
                nodes,
                follow,
                tail,
                since_ns,
                pending,
                lines,
            },
        );
        drop(subscriptions);
        self.bump();
        Ok(receiver)
    }

    /// The requests a node must answer now.
    pub fn requests_for(&self, node_id: &str) -> Vec<LogRequest> {
        let mut subscriptions = self.subscriptions();
        subscriptions.retain(|_, s| !s.lines.is_closed());
        let mut out: Vec<LogRequest> = subscriptions
            .iter()
            .filter(|(_, s)| s.pending.contains(node_id))
            .filter_map(|(id, s)| {
                s.nodes.get(node_id).map(|tasks| LogRequest {
                    id: id.clone(),
                    task_ids: tasks.clone(),
                    follow: s.follow,
                    tail: s.tail,
                    since_ns: s.since_ns,
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Passes lines on; false when nobody listens any more.
    pub async fn publish(&self, request_id: &str, lines: Vec<LogLine>) -> bool {
        let sender = match self.subscriptions().get(request_id) {
            Some(s) => s.lines.clone(),
            None => return false,
        };
        for line in lines {
            if sender.send(Ok(line)).await.is_err() {
                self.subscriptions().remove(request_id);
                self.bump();
                return false;
            }
        }
        true
    }

    /// A node finished its part of a request.
    pub fn node_done(&self, request_id: &str, node_id: &str) {
        let mut subscriptions = self.subscriptions();
        let finished = subscriptions.get_mut(request_id).is_some_and(|s| {
            s.pending.remove(node_id);
            s.pending.is_empty()
        });
        if finished {
            subscriptions.remove(request_id); // dropping the sender ends the stream
        }
        drop(subscriptions);
        self.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(follow: bool, tail: u64) -> LogOptions {
        LogOptions {
            follow,
            tail,
            since_ns: 0,
        }
    }

    #[tokio::test]
    async fn lines_flow_to_the_caller_and_the_stream_ends_when_nodes_are_done() {
        let broker = LogBroker::default();
        let nodes = BTreeMap::from([
            ("n1".to_string(), vec!["t1".to_string()]),
            ("n2".to_string(), vec!["t2".to_string()]),
        ]);
        let mut rx = broker.subscribe(nodes, opts(false, 10)).unwrap();
        let requests = broker.requests_for("n1");
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].task_ids, ["t1"]);
        assert!(broker.requests_for("n3").is_empty());
        let id = requests[0].id.clone();
        let line = LogLine {
            task_id: "t1".into(),
            data: b"hello\n".to_vec(),
            ..Default::default()
        };
        assert!(broker.publish(&id, vec![line]).await);
        assert_eq!(rx.recv().await.unwrap().unwrap().data, b"hello\n");
        broker.node_done(&id, "n1");
        assert!(
            broker.requests_for("n1").is_empty(),
            "a node that finished is not asked again"
        );
        broker.node_done(&id, "n2");
        assert!(
            rx.recv().await.is_none(),
            "the stream ends when every node is done"
        );
        // A caller that goes away ends the request.
        let rx = broker
            .subscribe(
                BTreeMap::from([("n1".to_string(), vec!["t1".to_string()])]),
                opts(true, 0),
            )
            .unwrap();
        let id = broker.requests_for("n1")[0].id.clone();
        drop(rx);
        assert!(!broker.publish(&id, vec![LogLine::default()]).await);
        assert!(broker.requests_for("n1").is_empty());
    }

    #[test]
    fn every_node_is_asked_with_the_callers_options() {
        let broker = LogBroker::default();
        let options = LogOptions {
            follow: true,
            tail: 5,
            since_ns: 1_700_000_000_123_456_789,
        };
        let _rx = broker
            .subscribe(
                BTreeMap::from([("n1".to_string(), vec!["t1".to_string()])]),
                options,
            )
            .unwrap();
        let request = &broker.requests_for("n1")[0];
        assert_eq!(
            (request.follow, request.tail, request.since_ns),
            (true, 5, 1_700_000_000_123_456_789)
        );
    }

    #[tokio::test]
    async fn open_streams_are_bounded_and_a_closed_one_frees_its_place() {
        let broker = LogBroker::new(Limits {
            max_log_streams: 2,
            ..Default::default()
        });
        let nodes = || BTreeMap::from([("n1".to_string(), vec!["t1".to_string()])]);
        let first = broker.subscribe(nodes(), opts(true, 0)).unwrap();
        let _second = broker.subscribe(nodes(), opts(true, 0)).unwrap();
        let err = broker.subscribe(nodes(), opts(true, 0)).unwrap_err();
        assert!(err.to_string().contains("--max-log-streams"), "{err}");
        assert_eq!(
            broker.requests_for("n1").len(),
            2,
            "the refused one asks nothing"
        );
        // A request on no node holds no place.
        broker.subscribe(BTreeMap::new(), opts(true, 0)).unwrap();
        drop(first);
        broker
            .subscribe(nodes(), opts(true, 0))
            .expect("a caller that left frees its place");
    }
}
