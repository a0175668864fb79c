//! The log broker: `shoal service logs` asks the leader, which asks the
//! agents of the nodes running the service's tasks (through their
//! assignment sets); their lines flow back through `PublishLogs` into the
//! caller's stream. Nothing is stored: a log request lives as long as its
//! caller listens.
//!
//! A node may answer a request more than once: a followed request stays
//! asked of a node whose stream broke off (its session ended: a network
//! cut, a new certificate, an agent restart), and the node's next session
//! reads each task's log again from the request's start. The broker passes
//! on only what is newer than the last line it passed of that task (a
//! task's lines come in time order), so the caller sees every line once.
//!
//! A node that cannot answer (down when asked, or marked down before it
//! finished) does not hold a request without follow open: the caller gets
//! the other nodes' lines, then Docker's error naming it ("warning:
//! incomplete log stream. some logs could not be retrieved for the
//! following reasons: node … is not available"). A followed request keeps
//! asking it: it may come back.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
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
    /// Per task, the engine's time (Unix ns) of the last line passed on:
    /// a line no later than it was passed on already.
    passed_ns: HashMap<String, i64>,
    /// Nodes that could not answer: named in the error that ends the
    /// caller's stream.
    unavailable: BTreeSet<String>,
    lines: mpsc::Sender<Result<LogLine, Status>>,
}

/// Docker's words for a log stream some nodes could not add to.
fn incomplete(unavailable: &BTreeSet<String>) -> Status {
    let reasons: Vec<String> = unavailable
        .iter()
        .map(|node| format!("node {node} is not available"))
        .collect();
    Status::unknown(format!(
        "warning: incomplete log stream. some logs could not be retrieved for the following reasons: {}",
        reasons.join(", ")
    ))
}

/// Ends a request's stream: after its lines, the error naming the nodes
/// that could not answer, if any.
fn end(subscription: Subscription) {
    if subscription.unavailable.is_empty() {
        return; // dropping the sender ends the stream
    }
    let error = incomplete(&subscription.unavailable);
    let lines = subscription.lines;
    match lines.try_send(Err(error)) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        // A slow reader's buffer is full: the error waits its turn.
        Err(mpsc::error::TrySendError::Full(error)) => {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = lines.send(error).await;
                });
            }
        }
    }
}

impl Subscription {
    /// Keeps the lines not passed on yet, and notes them as passed.
    fn take_new(&mut self, lines: Vec<LogLine>) -> Vec<LogLine> {
        lines
            .into_iter()
            .filter(|line| {
                // A line without the engine's time cannot be told apart.
                if line.timestamp_ns <= 0 {
                    return true;
                }
                let passed = self.passed_ns.entry(line.task_id.clone()).or_insert(0);
                let new = line.timestamp_ns > *passed;
                *passed = (*passed).max(line.timestamp_ns);
                new
            })
            .collect()
    }
}

/// How a node's stream of lines for a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The node said its lines ended (or the manager ended it: nobody
    /// listens, or the request is no longer the node's to answer).
    Finished,
    /// It ended without the node saying so (the node's session ended, the
    /// connection was lost): the node did not finish.
    BrokeOff,
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
    /// the caller drops it; `unavailable` nodes (down: not asked) are named
    /// in an error at its end. Refused when the limit of open requests is
    /// reached (each holds a log reader per task on its nodes).
    pub fn subscribe(
        &self,
        nodes: BTreeMap<String, Vec<String>>,
        options: LogOptions,
        unavailable: BTreeSet<String>,
    ) -> Result<mpsc::Receiver<Result<LogLine, Status>>, LimitError> {
        let LogOptions {
            follow,
            tail,
            since_ns,
        } = options;
        let (lines, receiver) = mpsc::channel(1024);
        if nodes.is_empty() {
            // Nothing to ask: the stream ends at once.
            end(Subscription {
                nodes,
                follow,
                tail,
                since_ns,
                pending: HashSet::new(),
                passed_ns: HashMap::new(),
                unavailable,
                lines,
            });
            return Ok(receiver);
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
                passed_ns: HashMap::new(),
                unavailable,
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

    /// Passes on the lines not passed on before (see the module's note);
    /// false when nobody listens any more.
    pub async fn publish(&self, request_id: &str, lines: Vec<LogLine>) -> bool {
        let (sender, lines) = match self.subscriptions().get_mut(request_id) {
            Some(s) => (s.lines.clone(), s.take_new(lines)),
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

    /// A node's stream for a request ended. A followed request that broke
    /// off stays asked of the node, whose next session answers it again;
    /// otherwise the node is done with it, and one that broke off is named
    /// at the end of the caller's stream (its part may be missing lines).
    pub fn node_stream_ended(&self, request_id: &str, node_id: &str, end: StreamEnd) {
        if end == StreamEnd::BrokeOff {
            let mut subscriptions = self.subscriptions();
            let Some(subscription) = subscriptions.get_mut(request_id) else {
                return;
            };
            if subscription.follow {
                return;
            }
            if subscription.pending.contains(node_id) {
                subscription.unavailable.insert(node_id.to_owned());
            }
        }
        self.node_done(request_id, node_id);
    }

    /// A node finished its part of a request.
    pub fn node_done(&self, request_id: &str, node_id: &str) {
        let mut subscriptions = self.subscriptions();
        let finished = subscriptions.get_mut(request_id).is_some_and(|s| {
            s.pending.remove(node_id);
            s.pending.is_empty()
        });
        let ended = if finished {
            subscriptions.remove(request_id)
        } else {
            None
        };
        drop(subscriptions);
        if let Some(subscription) = ended {
            end(subscription);
        }
        self.bump();
    }

    /// A node went down: requests without follow stop waiting for it and
    /// will name it when they end (followed ones keep asking: it may come
    /// back and answer).
    pub fn node_down(&self, node_id: &str) {
        let mut subscriptions = self.subscriptions();
        let mut ended = Vec::new();
        for (id, s) in subscriptions.iter_mut() {
            if !s.follow && s.pending.remove(node_id) {
                s.unavailable.insert(node_id.to_owned());
                if s.pending.is_empty() {
                    ended.push(id.clone());
                }
            }
        }
        let ended: Vec<Subscription> = ended
            .iter()
            .filter_map(|id| subscriptions.remove(id))
            .collect();
        drop(subscriptions);
        ended.into_iter().for_each(end);
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
        let mut rx = broker
            .subscribe(nodes, opts(false, 10), BTreeSet::new())
            .unwrap();
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
                BTreeSet::new(),
            )
            .unwrap();
        let id = broker.requests_for("n1")[0].id.clone();
        drop(rx);
        assert!(!broker.publish(&id, vec![LogLine::default()]).await);
        assert!(broker.requests_for("n1").is_empty());
    }

    fn line(task: &str, timestamp_ns: i64) -> LogLine {
        LogLine {
            task_id: task.into(),
            timestamp_ns,
            data: format!("{task}@{timestamp_ns}\n").into_bytes(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_node_answering_again_passes_on_only_lines_not_passed_before() {
        let broker = LogBroker::default();
        let nodes = BTreeMap::from([("n1".to_string(), vec!["t1".into(), "t2".into()])]);
        let mut rx = broker
            .subscribe(nodes, opts(true, 0), BTreeSet::new())
            .unwrap();
        let id = broker.requests_for("n1")[0].id.clone();
        let first = vec![line("t1", 10), line("t2", 5), line("t1", 20)];
        assert!(broker.publish(&id, first).await);
        // The node's next session reads both logs again from the start,
        // and on: t1's third line and t2's second are new; so is a line
        // without the engine's time, which cannot be told apart.
        let again = vec![
            line("t1", 10),
            line("t2", 5),
            line("t1", 20),
            line("t2", 15),
            line("t1", 30),
            line("t1", 0),
        ];
        assert!(broker.publish(&id, again).await);
        let mut seen = Vec::new();
        while let Ok(Some(Ok(line))) =
            tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv()).await
        {
            seen.push(String::from_utf8(line.data).unwrap());
        }
        assert_eq!(
            seen,
            [
                "t1@10\n", "t2@5\n", "t1@20\n", "t2@15\n", "t1@30\n", "t1@0\n"
            ]
        );
    }

    #[test]
    fn a_followed_request_that_broke_off_is_asked_again_of_the_node() {
        let broker = LogBroker::default();
        let nodes = || BTreeMap::from([("n1".to_string(), vec!["t1".to_string()])]);
        let _follow = broker
            .subscribe(nodes(), opts(true, 0), BTreeSet::new())
            .unwrap();
        let id = broker.requests_for("n1")[0].id.clone();
        broker.node_stream_ended(&id, "n1", StreamEnd::BrokeOff);
        assert_eq!(
            broker.requests_for("n1").len(),
            1,
            "still asked: the node's next session answers it"
        );
        broker.node_stream_ended(&id, "n1", StreamEnd::Finished);
        assert!(broker.requests_for("n1").is_empty(), "the node finished");
    }

    #[tokio::test]
    async fn without_follow_a_node_that_broke_off_is_done_and_named() {
        // The caller is not kept waiting for a node that may not come
        // back, and learns that its part may be short.
        let broker = LogBroker::default();
        let nodes = BTreeMap::from([("n1".to_string(), vec!["t1".to_string()])]);
        let mut rx = broker
            .subscribe(nodes, opts(false, 0), BTreeSet::new())
            .unwrap();
        let id = broker.requests_for("n1")[0].id.clone();
        assert!(broker.publish(&id, vec![line("t1", 10)]).await);
        broker.node_stream_ended(&id, "n1", StreamEnd::BrokeOff);
        assert!(broker.requests_for("n1").is_empty());
        let (lines, error) = drain(&mut rx).await;
        assert_eq!(lines, ["t1@10\n"]);
        assert!(error.unwrap().ends_with("node n1 is not available"));
    }

    /// Everything the caller's stream holds until it ends: lines as text,
    /// then the error that ended it, if any.
    async fn drain(
        rx: &mut mpsc::Receiver<Result<LogLine, Status>>,
    ) -> (Vec<String>, Option<String>) {
        let mut lines = Vec::new();
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await {
                Ok(Some(Ok(line))) => lines.push(String::from_utf8(line.data).unwrap()),
                Ok(Some(Err(status))) => {
                    assert!(rx.recv().await.is_none(), "nothing after the error");
                    return (lines, Some(status.message().to_owned()));
                }
                Ok(None) => return (lines, None),
                Err(_) => panic!("the stream did not end: {lines:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_node_down_when_asked_is_named_after_the_others_lines_as_docker_does() {
        let broker = LogBroker::default();
        let nodes = BTreeMap::from([("n1".to_string(), vec!["t1".to_string()])]);
        let down = BTreeSet::from(["n2".to_string()]);
        let mut rx = broker.subscribe(nodes, opts(false, 0), down).unwrap();
        let id = broker.requests_for("n1")[0].id.clone();
        assert!(
            broker.requests_for("n2").is_empty(),
            "a down node is not asked"
        );
        assert!(broker.publish(&id, vec![line("t1", 10)]).await);
        broker.node_stream_ended(&id, "n1", StreamEnd::Finished);
        let (lines, error) = drain(&mut rx).await;
        assert_eq!(lines, ["t1@10\n"]);
        assert_eq!(
            error.as_deref(),
            Some(
                "warning: incomplete log stream. some logs could not be retrieved for the following reasons: node n2 is not available"
            )
        );
        // Every node down: the error at once.
        let down = BTreeSet::from(["n1".to_string(), "n2".to_string()]);
        let mut rx = broker
            .subscribe(BTreeMap::new(), opts(false, 0), down)
            .unwrap();
        let (lines, error) = drain(&mut rx).await;
        assert!(lines.is_empty());
        assert!(
            error
                .unwrap()
                .ends_with("node n1 is not available, node n2 is not available")
        );
    }

    #[tokio::test]
    async fn a_node_that_goes_down_before_it_answers_ends_the_wait_but_not_a_follow() {
        let broker = LogBroker::default();
        let nodes = || {
            BTreeMap::from([
                ("n1".to_string(), vec!["t1".to_string()]),
                ("n2".to_string(), vec!["t2".to_string()]),
            ])
        };
        let mut once = broker
            .subscribe(nodes(), opts(false, 0), BTreeSet::new())
            .unwrap();
        let _follow = broker
            .subscribe(nodes(), opts(true, 0), BTreeSet::new())
            .unwrap();
        let ids: Vec<String> = broker
            .requests_for("n1")
            .into_iter()
            .map(|r| r.id)
            .collect();
        let once_id = ids
            .iter()
            .find(|id| {
                !broker
                    .requests_for("n1")
                    .iter()
                    .any(|r| &r.id == *id && r.follow)
            })
            .unwrap()
            .clone();
        assert!(broker.publish(&once_id, vec![line("t1", 10)]).await);
        broker.node_stream_ended(&once_id, "n1", StreamEnd::Finished);
        // n2 never answered: it goes down.
        broker.node_down("n2");
        let (lines, error) = drain(&mut once).await;
        assert_eq!(lines, ["t1@10\n"]);
        assert!(error.unwrap().ends_with("node n2 is not available"));
        let asked: Vec<bool> = broker.requests_for("n2").iter().map(|r| r.follow).collect();
        assert_eq!(asked, [true], "the followed request still asks n2");
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
                BTreeSet::new(),
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
        let first = broker
            .subscribe(nodes(), opts(true, 0), BTreeSet::new())
            .unwrap();
        let _second = broker
            .subscribe(nodes(), opts(true, 0), BTreeSet::new())
            .unwrap();
        let err = broker
            .subscribe(nodes(), opts(true, 0), BTreeSet::new())
            .unwrap_err();
        assert!(err.to_string().contains("--max-log-streams"), "{err}");
        assert_eq!(
            broker.requests_for("n1").len(),
            2,
            "the refused one asks nothing"
        );
        // A request on no node holds no place.
        broker
            .subscribe(BTreeMap::new(), opts(true, 0), BTreeSet::new())
            .unwrap();
        drop(first);
        broker
            .subscribe(nodes(), opts(true, 0), BTreeSet::new())
            .expect("a caller that left frees its place");
    }
}
