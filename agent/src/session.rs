//! The agent's side of the dispatcher protocol: register (as the node the
//! node's certificate names, over mutual TLS), heartbeat, follow the assignment stream, report task status, and move to
//! the new leader whenever leadership changes. What runs the tasks is an
//! [`Executor`]: Docker in production, a simulation in manager tests. It
//! applies the sets in a task of its own (`apply`), so that a slow engine
//! never holds up the session.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use shoal_api::assignments::Receiver;
use shoal_api::pb::{
    AssignmentSet, HeartbeatRequest, LogLine, LogMessage, LogRequest, NodeDescription,
    RegisterRequest, SessionRef, TaskStatusUpdate, UpdateTaskStatusRequest,
    dispatcher_client::DispatcherClient,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

mod apply;

/// Lines of task output, as an executor produces them.
pub type LogStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = LogLine> + Send>>;

/// Runs what the manager assigns and reports what happens to it.
#[tonic::async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Brings the node in line with `set` (complete each time); status
    /// changes go to `report`, now or later.
    async fn reconcile(
        &self,
        set: &AssignmentSet,
        report: &mpsc::UnboundedSender<TaskStatusUpdate>,
    );

    /// What this node's load balancer counted per service (none by default).
    fn counters(&self) -> Vec<shoal_api::pb::ServiceCounters> {
        Vec::new()
    }

    /// The output of the requested tasks that run here (none by default).
    fn logs(&self, _request: &LogRequest) -> Option<LogStream> {
        None
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// host:port of managers to try, in order.
    pub managers: Vec<String>,
    /// The node's certificate (see `identity`): it says which node this is.
    pub credentials: Arc<shoal_pki::Credentials>,
    pub advertise_addr: String,
    pub description: NodeDescription,
    pub labels: BTreeMap<String, String>,
}

/// Where the session stands, for callers and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    pub node_id: String,
    pub connected_to: Option<String>,
    /// Every manager, as the last registration listed them.
    pub managers: Vec<String>,
    pub cluster_id: String,
    /// Why the cluster no longer takes this node (it was removed): the
    /// session ended for good.
    pub refused: Option<String>,
    /// The roots the cluster trusts (PEM) and the one that issues now, as
    /// the last assignments said: the identity task follows a CA rotation.
    pub trust_pem: String,
    pub root_issuer: String,
    /// Assignment messages received over this node's life, and their
    /// encoded bytes (what the manager pushed: deltas after the first).
    pub assignments_received: u64,
    pub assignment_bytes: u64,
    /// Of those, the complete sets (a stream's first message, or every
    /// one from a manager that sends no deltas).
    pub complete_assignments: u64,
    /// The encoded size of the complete set the messages add up to (as of
    /// the last complete message, or within [`SET_BYTES_EVERY`] after
    /// deltas): what one push would cost without deltas.
    pub set_bytes: u64,
}

/// How often the size of the set deltas add up to is measured.
pub const SET_BYTES_EVERY: Duration = Duration::from_secs(1);

/// The longest a registration or a status report may take: the manager
/// holds a call up to 10 s while a leader is elected, and answers after.
const CALL_DEADLINE: Duration = Duration::from_secs(15);

/// Waits between attempts to reach a manager: short at first (a new
/// leader is usually known at once), growing while none answers, so a
/// node cut off from every manager retries calmly and still re-registers
/// within a heartbeat period of the network coming back.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// A call with a deadline: a manager that stopped answering fails it.
async fn bounded<T>(
    what: &str,
    limit: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(limit, call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "{what}: no answer within {limit:?}"
        ))),
    }
}

/// Keeps a session with the cluster's leader until the task is dropped.
pub async fn run(
    config: SessionConfig,
    executor: Arc<dyn Executor>,
    state: watch::Sender<SessionState>,
) {
    let mut managers = config.managers.clone();
    let mut next = 0usize;
    let mut pause = RETRY_FIRST;
    // Status reports outlive sessions: the executor may report a change
    // while no manager is reachable, and a report a manager did not
    // acknowledge is sent again to the next one (a task reported stopped
    // to nobody would hold its addresses and slot for good).
    let (report_tx, mut report_rx) = mpsc::unbounded_channel::<TaskStatusUpdate>();
    let mut reports = Reports::default();
    // Sets are applied apart from the sessions, by one task for the
    // agent's life (see `apply`): a set still being applied when a session
    // ends goes on to its end while the next session begins.
    let applier = apply::Applier::start(executor.clone(), report_tx.clone());
    let mut sessions = 0u64;
    // The node's certificate renews itself for as long as the session runs.
    let renewal = tokio::spawn(crate::identity::keep_renewed(
        config.credentials.clone(),
        state.subscribe(),
    ));
    let _renewal = AbortOnDrop(renewal);
    loop {
        let addr = managers[next % managers.len()].clone();
        let channel = ReportChannel {
            rx: &mut report_rx,
            unsent: &mut reports,
        };
        sessions += 1;
        let applying = Applying {
            applier: &applier,
            session: sessions,
        };
        let outcome = session(&config, &addr, executor.clone(), &state, channel, applying).await;
        if state.borrow().connected_to.is_some() {
            pause = RETRY_FIRST; // this attempt got a session: start calm again
        }
        match outcome {
            Ok(Redirect::To(leader)) => {
                tracing::info!(%leader, "the leader moved; following it");
                if !managers.contains(&leader) {
                    managers.push(leader.clone());
                }
                next = managers.iter().position(|m| *m == leader).unwrap_or(0);
                continue;
            }
            Ok(Redirect::Again) => {
                // A new certificate: the same manager, at once, through a
                // new connection that presents it.
                continue;
            }
            Ok(Redirect::Managers(list)) => {
                for m in list {
                    if !managers.contains(&m) {
                        managers.push(m);
                    }
                }
            }
            Err(error) => {
                if let Some(Refused(message)) = error.downcast_ref::<Refused>() {
                    tracing::error!(%addr, %message, "the cluster refuses this node");
                    state.send_modify(|s| {
                        s.connected_to = None;
                        s.refused = Some(message.clone());
                    });
                    return;
                }
                tracing::warn!(%addr, error = %format!("{error:#}"), "session ended")
            }
        }
        // Managers learnt at registration are tried too when this one fails.
        for m in state.borrow().managers.clone() {
            if !managers.contains(&m) {
                managers.push(m);
            }
        }
        state.send_modify(|s| s.connected_to = None);
        next += 1;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// Task status reports not yet acknowledged by a manager, newest per task,
/// and the version of the last assignment set this node applied if the
/// manager has not heard of it yet.
#[derive(Default)]
struct Reports(BTreeMap<String, TaskStatusUpdate>, u64);

impl Reports {
    fn add(&mut self, update: TaskStatusUpdate) {
        if let Some(status) = &update.status {
            crate::metrics::task_reported(status.state());
        }
        self.0.insert(update.task_id.clone(), update);
    }

    /// This node's tables now hold assignment set `version`: the manager
    /// waits for that before it stops a task other nodes stopped using.
    fn applied(&mut self, version: u64) {
        self.1 = version;
    }

    /// Sends every unacknowledged report; they are forgotten only once the
    /// manager took them.
    async fn flush(
        &mut self,
        client: &mut DispatcherClient<Channel>,
        session: &SessionRef,
    ) -> anyhow::Result<()> {
        if self.0.is_empty() && self.1 == 0 {
            return Ok(());
        }
        let updates = self.0.values().cloned().collect();
        let request = UpdateTaskStatusRequest {
            session: Some(session.clone()),
            updates,
            applied_version: self.1,
        };
        bounded(
            "reporting task status",
            CALL_DEADLINE,
            client.update_task_status(request),
        )
        .await
        .map_err(|status| anyhow::anyhow!("reporting task status: {}", status.message()))?;
        self.0.clear();
        self.1 = 0;
        Ok(())
    }
}

/// Aborts a background task when dropped (the certificate's renewal ends
/// with the agent's session loop, the heartbeats with their session).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The cluster refused this node's certificate (`node rm`): retrying
/// cannot help.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// Where a session takes the executor's reports from and keeps the unsent.
struct ReportChannel<'a> {
    rx: &'a mut mpsc::UnboundedReceiver<TaskStatusUpdate>,
    unsent: &'a mut Reports,
}

/// Where a session hands its sets over, and the number that tells its
/// sets from an earlier session's.
struct Applying<'a> {
    applier: &'a apply::Applier,
    session: u64,
}

enum Redirect {
    To(String),
    Managers(Vec<String>),
    /// The node's certificate changed: register again with it.
    Again,
}

fn leader_of(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(shoal_api::LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

async fn session(
    config: &SessionConfig,
    addr: &str,
    executor: Arc<dyn Executor>,
    state: &watch::Sender<SessionState>,
    reports: ReportChannel<'_>,
    applying: Applying<'_>,
) -> anyhow::Result<Redirect> {
    // TLS shows a certificate once, at the handshake: when the node's is
    // renewed (or a CA rotation replaces it), the session starts again on a
    // new connection, so that the managers see, and record, the certificate
    // the node now holds (and stores) rather than the one it was sent.
    let mut credentials = config.credentials.watch();
    let presented = config.credentials.files().chain_pem;
    let channel = shoal_pki::transport::node_session_channel(
        addr,
        shoal_pki::transport::Dialer::Node(config.credentials.clone()),
    )?;
    let mut client = DispatcherClient::new(channel);
    let request = RegisterRequest {
        description: Some(config.description.clone()),
        advertise_addr: config.advertise_addr.clone(),
        labels: config.labels.clone(),
    };
    let registered = bounded("registering", CALL_DEADLINE, client.register(request)).await;
    let registered = match registered {
        Ok(r) => r,
        Err(status) => {
            if let Some(leader) = leader_of(&status) {
                return Ok(Redirect::To(leader));
            }
            if status.code() == tonic::Code::PermissionDenied {
                return Err(Refused(status.message().to_owned()).into());
            }
            anyhow::bail!("registering: {}", status.message());
        }
    };
    let session = SessionRef {
        node_id: registered.node_id.clone(),
        session_id: registered.session_id.clone(),
        deltas: true,
    };
    // (Cloned first: borrowing inside send_replace would deadlock.)
    let before = state.borrow().clone();
    state.send_replace(SessionState {
        node_id: registered.node_id.clone(),
        connected_to: Some(addr.to_owned()),
        managers: registered.managers.clone(),
        cluster_id: registered.cluster_id.clone(),
        refused: None,
        ..before
    });
    tracing::info!(node = %registered.node_id, manager = %addr, "registered");

    let ReportChannel {
        rx: report_rx,
        unsent,
    } = reports;
    // The complete set the stream's messages (a complete one, then deltas)
    // add up to: what the executor applies each time.
    let mut assignments = Receiver::default();
    // Sets this session handed over to be applied, and the last of them
    // applied (what an earlier session handed over is not this one's).
    let mut applied = applying.applier.applied();
    applied.borrow_and_update();
    let (mut handed, mut applied_hand) = (0u64, 0u64);
    // Log requests of the sets handed over, by set: answered once their
    // set is applied, so that the tasks it starts are there to answer.
    let mut log_requests: Vec<(u64, Vec<LogRequest>)> = Vec::new();
    // Heartbeats go on by themselves: a status report or a set being
    // applied may take longer than the heartbeats a node may miss (a report
    // waits up to 10 s for a leader election, and the manager marks a node
    // down after three missed beats).
    let period = Duration::from_millis(registered.heartbeat_period_ms.max(50) as u64);
    let mut beating = AbortOnDrop(tokio::spawn(heartbeats(
        client.clone(),
        session.clone(),
        period,
        executor.clone(),
    )));
    // Calls to the manager below are raced against the heartbeats' end:
    // when a beat fails, the session moves on at once rather than after
    // the call's own deadline (each is safe to drop: a report stays queued
    // until acknowledged, and a new session begins with a complete set).
    let mut stream =
        match unless_beats_end(&mut beating, open_assignments(&mut client, &session)).await {
            Raced::Done(opened) => opened?,
            Raced::BeatsEnded(ended) => return ended,
        };
    // Log streams end with the session that shipped them: a manager that
    // went silent would otherwise hold them (and the engine's log
    // followers) open for good.
    let mut shipping: Vec<AbortOnDrop<()>> = Vec::new();
    let mut answered = std::collections::HashSet::new();
    let mut sized: Option<tokio::time::Instant> = None;
    // What earlier sessions could not report goes first.
    match unless_beats_end(&mut beating, unsent.flush(&mut client, &session)).await {
        Raced::Done(flushed) => flushed?,
        Raced::BeatsEnded(ended) => return ended,
    }
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(message)) => {
                    let bytes = prost::Message::encoded_len(&message) as u64;
                    let complete = u64::from(!message.delta);
                    // The applier builds the same set from the same
                    // messages (its own copy: nothing copies a whole set
                    // while one is being applied).
                    let handing = message.clone();
                    let set = match assignments.take(message) {
                        Ok(set) => set,
                        Err(gap) => {
                            // Start over from a complete set: a new stream
                            // begins with one.
                            tracing::warn!(%gap, "asking the manager for a complete assignment set");
                            stream = match unless_beats_end(&mut beating, open_assignments(&mut client, &session)).await {
                                Raced::Done(opened) => opened?,
                                Raced::BeatsEnded(ended) => return ended,
                            };
                            assignments = Receiver::default();
                            continue;
                        }
                    };
                    // The whole set's size is an encoding pass over all
                    // of it: on a complete message it is the message's,
                    // and after deltas it is measured at most once a
                    // second, not on every push.
                    let set_bytes = if complete == 1 {
                        Some(bytes)
                    } else if sized.is_none_or(|at| at.elapsed() >= SET_BYTES_EVERY) {
                        sized = Some(tokio::time::Instant::now());
                        Some(prost::Message::encoded_len(set) as u64)
                    } else {
                        None
                    };
                    // Counted without waking the state's watchers (the
                    // identity task reloads the roots when woken).
                    state.send_if_modified(|s| {
                        s.assignments_received += 1;
                        s.assignment_bytes += bytes;
                        s.complete_assignments += complete;
                        if let Some(set_bytes) = set_bytes {
                            s.set_bytes = set_bytes;
                        }
                        false
                    });
                    if !set.trust_pem.is_empty() {
                        state.send_if_modified(|s| {
                            let changed = s.trust_pem != set.trust_pem || s.root_issuer != set.root_issuer;
                            s.trust_pem.clone_from(&set.trust_pem);
                            s.root_issuer.clone_from(&set.root_issuer);
                            changed
                        });
                    }
                    handed += 1;
                    if !set.log_requests.is_empty() {
                        log_requests.push((handed, set.log_requests.clone()));
                    }
                    applying.applier.hand(applying.session, handed, handing);
                }
                Ok(None) => return Ok(Redirect::Managers(registered.managers)),
                Err(status) => return match leader_of(&status) {
                    Some(leader) => Ok(Redirect::To(leader)),
                    None => Err(anyhow::anyhow!("assignment stream: {}", status.message())),
                },
            },
            Ok(()) = applied.changed() => {
                let done = *applied.borrow_and_update();
                if done.session != applying.session {
                    continue;
                }
                applied_hand = done.hand;
                if done.version != 0 {
                    // What the executor reported while applying it goes
                    // with the acknowledgement, in one call.
                    while let Ok(more) = report_rx.try_recv() {
                        unsent.add(more);
                    }
                    unsent.applied(done.version);
                    match unless_beats_end(&mut beating, unsent.flush(&mut client, &session)).await {
                        Raced::Done(flushed) => flushed?,
                        Raced::BeatsEnded(ended) => return ended,
                    }
                }
                // Sets handed over after this one are still to be applied;
                // those before it were passed over for it.
                let (ready, later): (Vec<_>, Vec<_>) =
                    log_requests.drain(..).partition(|(hand, _)| *hand <= done.hand);
                log_requests = later;
                for request in ready.iter().flat_map(|(_, requests)| requests) {
                    if answered.insert(request.id.clone()) {
                        shipping.retain(|task| !task.0.is_finished());
                        shipping.extend(ship_logs(client.clone(), &session, request, executor.logs(request)));
                    }
                }
            }
            ended = &mut beating.0 => return heartbeats_ended(ended),
            Ok(()) = credentials.changed() => {
                if config.credentials.files().chain_pem != presented {
                    tracing::info!(manager = %addr, "the node's certificate changed: registering again with it");
                    return Ok(Redirect::Again);
                }
            }
            // While a set of this session is being applied, its reports
            // wait to go with its acknowledgement (one call, not two).
            Some(first) = report_rx.recv(), if applied_hand == handed => {
                unsent.add(first);
                while let Ok(more) = report_rx.try_recv() {
                    unsent.add(more);
                }
                match unless_beats_end(&mut beating, unsent.flush(&mut client, &session)).await {
                    Raced::Done(flushed) => flushed?,
                    Raced::BeatsEnded(ended) => return ended,
                }
            }
        }
    }
}

/// Beats for `session` every `period` (or the period a manager's answer
/// tells) until a beat fails: then says where to go next.
async fn heartbeats(
    mut client: DispatcherClient<Channel>,
    session: SessionRef,
    mut period: Duration,
    executor: Arc<dyn Executor>,
) -> anyhow::Result<Redirect> {
    let mut heartbeat = tokio::time::interval(period);
    loop {
        heartbeat.tick().await;
        // A heartbeat not answered within a period is as good as lost: the
        // manager is gone or cut off. Going elsewhere now keeps this node
        // from being marked down while it is up.
        let beat = HeartbeatRequest {
            session: Some(session.clone()),
            counters: executor.counters(),
        };
        match bounded("heartbeat", period, client.heartbeat(beat)).await {
            // `swarm update --dispatcher-heartbeat` reaches a node in the
            // answer: it beats at the new pace from now on.
            Ok(answer) => {
                let told_ms = answer.period_ms;
                let told = Duration::from_millis(told_ms.max(50) as u64);
                if told_ms > 0 && told != period {
                    tracing::info!(?told, "the cluster changed the heartbeat period");
                    period = told;
                    heartbeat =
                        tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                }
            }
            Err(status) => {
                if status.code() == tonic::Code::PermissionDenied {
                    return Err(Refused(status.message().to_owned()).into());
                }
                return match leader_of(&status) {
                    Some(leader) => Ok(Redirect::To(leader)),
                    None => Err(anyhow::anyhow!("heartbeat: {}", status.message())),
                };
            }
        }
    }
}

/// What a call raced against the session's heartbeats came to.
enum Raced<T> {
    Done(T),
    /// The heartbeats ended first, saying where to go next.
    BeatsEnded(anyhow::Result<Redirect>),
}

/// `call`, unless the session's heartbeats end first.
async fn unless_beats_end<T>(
    beating: &mut AbortOnDrop<anyhow::Result<Redirect>>,
    call: impl std::future::Future<Output = T>,
) -> Raced<T> {
    tokio::select! {
        done = call => Raced::Done(done),
        ended = &mut beating.0 => Raced::BeatsEnded(heartbeats_ended(ended)),
    }
}

fn heartbeats_ended(
    ended: Result<anyhow::Result<Redirect>, tokio::task::JoinError>,
) -> anyhow::Result<Redirect> {
    ended.unwrap_or_else(|e| Err(anyhow::anyhow!("heartbeat task: {e}")))
}

/// Opens the session's assignment stream, asking for deltas after the
/// first (complete) set.
async fn open_assignments(
    client: &mut DispatcherClient<Channel>,
    session: &SessionRef,
) -> anyhow::Result<tonic::Streaming<AssignmentSet>> {
    bounded(
        "opening the assignment stream",
        CALL_DEADLINE,
        client.assignments(session.clone()),
    )
    .await
    .map_err(|s| anyhow::anyhow!("{}", s.message()))
}

/// Answers one log request: a first (empty) message says which node
/// answers, then the lines, then a last (empty) message says they ended.
/// A stream cut short (the session ended and dropped these tasks) ends
/// without that last message: a followed request is then asked again of
/// the node's next session.
fn ship_logs(
    mut client: DispatcherClient<Channel>,
    session: &SessionRef,
    request: &LogRequest,
    lines: Option<LogStream>,
) -> [AbortOnDrop<()>; 2] {
    let (session, request_id) = (session.clone(), request.id.clone());
    let (tx, rx) = mpsc::channel::<LogMessage>(256);
    let read = tokio::spawn(async move {
        let message = |lines, end| LogMessage {
            session: Some(session.clone()),
            request_id: request_id.clone(),
            lines,
            end,
        };
        if tx.send(message(Vec::new(), false)).await.is_err() {
            return;
        }
        if let Some(mut lines) = lines {
            while let Some(line) = lines.next().await {
                if tx.send(message(vec![line], false)).await.is_err() {
                    return; // nobody listens any more
                }
            }
        }
        let _ = tx.send(message(Vec::new(), true)).await;
    });
    let send = tokio::spawn(async move {
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        if let Err(status) = client.publish_logs(stream).await {
            tracing::debug!(error = %status.message(), "log stream ended");
        }
    });
    [AbortOnDrop(read), AbortOnDrop(send)]
}
