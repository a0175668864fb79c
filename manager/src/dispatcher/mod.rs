//! The dispatcher: the leader's side of the agent protocol. Agents register
//! (as the node their certificate names: see `api::authz`), heartbeat,
//! receive their assignments as a stream the leader pushes on every
//! relevant change, and report task status. Every call is taken as the
//! certificate's node: a session, a status report or a log line of another
//! node's is refused.

pub mod digest;
pub mod drain;
pub mod lb_policy;
pub mod liveness;
pub mod networks;
pub mod shared;
pub mod status;
pub mod stream;
pub mod touched;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use shoal_api::pb::{
    AssignmentSet, HeartbeatRequest, HeartbeatResponse, Meta, Node, NodeSpec, NodeState,
    NodeStatus, RegisterRequest, RegisterResponse, SessionRef, UpdateTaskStatusRequest,
    UpdateTaskStatusResponse, dispatcher_server,
};
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{
    api::authz,
    logs::StreamEnd,
    manager::Manager,
    store::{Batch, State},
};

pub use liveness::MISSED_HEARTBEATS;

struct Session {
    id: String,
    last_seen: Instant,
    /// The heartbeat period the node was last told (at registration and in
    /// each heartbeat's answer): it beats at that pace until its next
    /// answer tells it another, so its deadline counts from that period.
    told: Duration,
    /// How far the node's data plane is in line with the store.
    sync: drain::NodeSync,
    /// Dropped with the session (replaced by a new registration): the
    /// session's streams, which hold receivers, notice at once.
    ended: tokio::sync::watch::Sender<()>,
}

#[derive(Clone)]
pub struct Dispatcher {
    manager: Arc<Manager>,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    /// Moves when a node acknowledges an assignment set: held stops are
    /// looked at again.
    acks: Arc<tokio::sync::watch::Sender<u64>>,
    /// One scan of the state per index for every node's set.
    shared: Arc<shared::SharedCache>,
    /// Writes the nodes' task status reports, many to a write.
    statuses: status::StatusWriter,
    /// Moves each second this manager does not lead: the open streams end.
    /// One timer for all of them (a timer per stream was a thousand
    /// wakeups a second on an idle leader of a thousand nodes).
    not_leading: tokio::sync::watch::Receiver<()>,
    /// Ready nodes with a session that beats, as the liveness monitor last
    /// counted them: what the heartbeat period and the push interval grow
    /// with. (The session map also holds nodes removed or down since.)
    live_sessions: Arc<std::sync::atomic::AtomicUsize>,
}

impl Dispatcher {
    pub fn new(manager: Arc<Manager>) -> Self {
        let (tell, not_leading) = tokio::sync::watch::channel(());
        tokio::spawn(watch_leadership(manager.clone(), tell));
        Self {
            statuses: status::StatusWriter::start(manager.clone()),
            manager,
            sessions: Arc::default(),
            acks: Arc::new(tokio::sync::watch::channel(0).0),
            shared: Arc::default(),
            not_leading,
            live_sessions: Arc::default(),
        }
    }

    /// See `live_sessions`.
    fn live_sessions(&self) -> usize {
        self.live_sessions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A receiver that errs once `session_id` is no longer `node_id`'s
    /// session (None if it is not now).
    fn session_ended(
        &self,
        node_id: &str,
        session_id: &str,
    ) -> Option<tokio::sync::watch::Receiver<()>> {
        self.sessions()
            .get(node_id)
            .filter(|s| s.id == session_id)
            .map(|s| s.ended.subscribe())
    }

    /// Every session's sync, by node.
    fn synced(&self) -> HashMap<String, drain::NodeSync> {
        self.sessions()
            .iter()
            .map(|(node, s)| (node.clone(), s.sync))
            .collect()
    }

    /// Records what the session of `node_id` was sent (or computed and
    /// found unchanged) at store index `index`.
    fn computed(&self, node_id: &str, session_id: &str, index: u64, sent: bool) {
        if let Some(s) = self
            .sessions()
            .get_mut(node_id)
            .filter(|s| s.id == session_id)
        {
            if sent {
                s.sync.sent = index;
            }
            s.sync.current = index;
        }
    }

    /// Agent sessions open now (for `/metrics`).
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn period(&self, state: &State) -> Duration {
        state
            .cluster
            .as_ref()
            .and_then(|c| c.spec.as_ref())
            .map(|s| s.heartbeat_period_ms)
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(ms as u64))
            .unwrap_or(self.manager.settings.heartbeat_period)
    }

    /// The heartbeat period nodes are told now: the cluster's, spread over
    /// more time when the nodes with a session would beat faster together
    /// than the leader's bound (`liveness::spread`).
    fn period_to_tell(&self, state: &State) -> Duration {
        liveness::spread(
            self.period(state),
            self.live_sessions(),
            self.manager.settings.max_heartbeats_per_second,
        )
    }

    /// Records the heartbeat period a node's session is being told.
    fn tell_period(&self, node_id: &str, period: Duration) {
        if let Some(session) = self.sessions().get_mut(node_id) {
            session.told = period;
        }
    }

    /// Agents are served by the leader only. A follower names the leader;
    /// a leader cut off from the quorum sends its agents to the others (it
    /// can record nothing, and the others will elect a new leader), so that
    /// nodes which are up are not marked down for following it.
    fn require_leader(&self) -> Result<(), Status> {
        if self.manager.is_leader() {
            Ok(())
        } else if self.manager.leads_without_quorum() {
            Err(Status::unavailable(
                "this manager is cut off from a quorum of managers; register with another",
            ))
        } else {
            Err(self.manager.not_leader())
        }
    }

    /// The calling node, if `session` is its current session.
    fn check_session<T>(
        &self,
        request: &Request<T>,
        session: Option<&SessionRef>,
    ) -> Result<String, Status> {
        let session = session.ok_or_else(|| Status::invalid_argument("missing session"))?;
        let caller = authz::certified_node(request)?;
        if caller.node_id != session.node_id {
            return Err(Status::permission_denied(format!(
                "this certificate is node {}'s; the session is node {}'s",
                caller.node_id, session.node_id
            )));
        }
        let mut sessions = self.sessions();
        match sessions.get_mut(&session.node_id) {
            Some(s) if s.id == session.session_id => {
                s.last_seen = Instant::now();
                Ok(session.node_id.clone())
            }
            _ => Err(Status::not_found(
                "session expired or unknown; register again",
            )),
        }
    }

    /// Marks nodes down that missed their heartbeats; runs on the leader,
    /// from the start of each term (see `liveness`).
    pub async fn monitor(self) {
        let term_began = Instant::now();
        loop {
            let period = self.period(&*self.manager.store.read().await);
            tokio::time::sleep(period / 2).await;
            let now = Instant::now();
            let result = self
                .manager
                .update(|state| {
                    let mut batch = Batch::default();
                    let mut down = Vec::new();
                    let sessions = self.sessions();
                    let mut live = 0;
                    for node in state.nodes.values() {
                        let id = node.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
                        if node.status.as_ref().map(|s| s.state()) != Some(NodeState::Ready) {
                            continue;
                        }
                        let heard = sessions.get(id).map(|s| liveness::Heard {
                            last_seen: s.last_seen,
                            told: s.told,
                        });
                        let missed = liveness::missed(heard, term_began, now, period);
                        live += usize::from(heard.is_some() && !missed);
                        if missed {
                            tracing::warn!(
                                node = id,
                                "node missed {MISSED_HEARTBEATS} heartbeats: down"
                            );
                            let mut node = node.clone();
                            let status = node.status.get_or_insert_with(Default::default);
                            status.state = NodeState::Down as i32;
                            status.message = "heartbeat failure".into();
                            batch.put_node(node);
                            down.push(id.to_owned());
                        }
                    }
                    self.live_sessions
                        .store(live, std::sync::atomic::Ordering::Relaxed);
                    Ok::<_, crate::manager::WriteError>(Some((batch, down)))
                })
                .await;
            match result {
                // `service logs` without follow stops waiting for them.
                Ok(down) => {
                    for node in down.into_iter().flatten() {
                        self.manager.logs.node_down(&node);
                    }
                }
                Err(error) => tracing::warn!(%error, "marking nodes down failed"),
            }
        }
    }
}

/// Tells the streams, each second this manager does not lead, to look (they
/// end). Stops with the dispatcher (no receiver left).
async fn watch_leadership(manager: Arc<Manager>, tell: tokio::sync::watch::Sender<()>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if tell.is_closed() || (!manager.is_leader() && tell.send(()).is_err()) {
            return;
        }
    }
}

/// What woke a node's stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// A write to the store: the set is rebuilt only if its inputs moved.
    Store,
    /// Something the store's fingerprint does not cover (log requests,
    /// acknowledgements or the clock for a held stop): rebuilt.
    Other,
}

/// The least time between two looks at one node's set (so between two
/// pushes to it too), up to 100 nodes.
const MIN_PUSH_INTERVAL: Duration = Duration::from_millis(50);
/// The most it grows to with the number of nodes (swarmkit batches a
/// node's assignment changes for up to 500 ms too).
const MAX_PUSH_INTERVAL: Duration = Duration::from_millis(500);

/// The least time between two looks at one node's set when `nodes` have a
/// session: 50 ms per hundred nodes, from 50 ms to 500 ms. A lone change
/// goes out at once (the interval only spaces looks); under a burst of
/// writes that reaches every node (thousands of services created), each
/// look rebuilds a set, and a thousand nodes looking every 50 ms were 20,000
/// rebuilds a second, most of a leader's work while the burst lasted.
fn push_interval(nodes: usize) -> Duration {
    let hundreds = u32::try_from(nodes.div_ceil(100))
        .unwrap_or(u32::MAX)
        .max(1);
    MIN_PUSH_INTERVAL
        .saturating_mul(hundreds)
        .min(MAX_PUSH_INTERVAL)
}

/// What a node must know now: its non-finished assigned tasks and the
/// secrets and configs they use, cut from a scan of the same (or a slightly
/// older) state that every node's set shares. Built whole: the tests'
/// reference for what a stream's messages add up to (a stream builds it
/// from what changed, `stream::NodeStream::rebuilt`).
#[cfg(test)]
pub fn assignment_set_from(state: &State, shared: &shared::Shared, node_id: &str) -> AssignmentSet {
    let tasks = shared.tasks_of(state, node_id);
    let mut set = set_around(state, shared, node_id, &Uses::of_tasks(&tasks));
    set.tasks = tasks.into_iter().cloned().collect();
    set
}

/// The secrets, configs and networks a node's live tasks name.
#[derive(Default)]
pub struct Uses<'a> {
    pub secrets: BTreeSet<&'a str>,
    pub configs: BTreeSet<&'a str>,
    pub networks: BTreeSet<&'a str>,
}

impl<'a> Uses<'a> {
    pub fn of_tasks(tasks: &[&'a shoal_api::pb::Task]) -> Self {
        let mut uses = Self::default();
        for task in tasks {
            if let Some(c) = task.spec.as_ref().and_then(|s| s.container.as_ref()) {
                uses.secrets
                    .extend(c.secrets.iter().map(|r| r.secret_id.as_str()));
                uses.configs
                    .extend(c.configs.iter().map(|r| r.config_id.as_str()));
            }
            uses.networks
                .extend(task.networks.iter().map(|n| n.network_id.as_str()));
        }
        uses
    }

    /// As the store's index sums them up (no task looked at).
    pub fn of_live(live: &'a crate::store::task_index::LiveOnNode) -> Self {
        let keys = |m: &'a BTreeMap<String, u32>| m.keys().map(String::as_str).collect();
        Self {
            secrets: keys(&live.secrets),
            configs: keys(&live.configs),
            networks: keys(&live.networks),
        }
    }
}

/// Node `node_id`'s set but its tasks: what its live tasks use (`uses`),
/// and what every node holds.
pub fn set_around(
    state: &State,
    shared: &shared::Shared,
    node_id: &str,
    uses: &Uses,
) -> AssignmentSet {
    let secrets = uses
        .secrets
        .iter()
        .filter_map(|id| state.secrets.get(*id).cloned())
        .collect();
    let configs = uses
        .configs
        .iter()
        .filter_map(|id| state.configs.get(*id).cloned())
        .collect();
    let role = state.nodes.get(node_id).map(|n| n.role).unwrap_or_default();
    let view = networks::view(&shared.networks, state, node_id, &uses.networks);
    AssignmentSet {
        secrets,
        configs,
        role,
        log_requests: Vec::new(),
        networks: view.networks,
        endpoints: view.endpoints,
        services: view.services,
        ingress_addr: view.ingress_addr,
        published: view.published,
        ingress_allow: state
            .nodes
            .get(node_id)
            .and_then(|n| n.spec.as_ref())
            .map(|s| s.ingress_allow.clone())
            .unwrap_or_default(),
        trust_pem: shared.trust_pem.clone(),
        root_issuer: shared.root_issuer.clone(),
        // Sent apart: `Sender::next_shared`.
        nodes: Vec::new(),
        version: 0,
        lb_policies: shared.lb_policies.as_ref().clone(),
        ..Default::default()
    }
}

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<AssignmentSet, Status>> + Send>>;

#[tonic::async_trait]
impl dispatcher_server::Dispatcher for Dispatcher {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        self.require_leader()?;
        let peer_ip = authz::remote_addr(&request).map(|a| a.ip().to_string());
        let caller = authz::certified_node(&request)?.clone();
        let node_id = caller.node_id.clone();
        let request = request.into_inner();
        let addr = if request.advertise_addr.is_empty() {
            peer_ip.unwrap_or_default()
        } else {
            request.advertise_addr.clone()
        };
        let hostname = request
            .description
            .as_ref()
            .map(|d| d.hostname.clone())
            .unwrap_or_default();
        if let Some(description) = &request.description {
            crate::api::validate::node_generic_resources(&description.generic_resources)?;
        }
        self.manager
            .update(|state| -> Result<_, Status> {
                if state.cluster.is_none() {
                    return Err(Status::unavailable("the cluster is not initialised"));
                }
                // The node again, the node a manager on this host created
                // before its agent came (the CA gave the agent its id), or
                // a node registering for the first time.
                let existing = state.nodes.get(&node_id).cloned();
                let first = existing.is_none();
                let mut node = existing.unwrap_or_else(|| Node {
                    meta: Some(Meta {
                        id: node_id.clone(),
                        ..Default::default()
                    }),
                    spec: Some(NodeSpec::default()),
                    ..Default::default()
                });
                if first {
                    node.spec.get_or_insert_with(Default::default).labels = request.labels.clone();
                }
                node.description = request.description.clone();
                node.cert_issuer.clone_from(&caller.issuer);
                node.status = Some(NodeStatus {
                    state: NodeState::Ready as i32,
                    message: String::new(),
                    addr: addr.clone(),
                });
                let mut batch = Batch::default();
                batch.put_node(node);
                Ok(Some((batch, ())))
            })
            .await?;
        let session_id = shoal_api::new_id();
        self.sessions().insert(
            node_id.clone(),
            Session {
                id: session_id.clone(),
                last_seen: Instant::now(),
                told: self.manager.settings.heartbeat_period,
                sync: drain::NodeSync::default(),
                ended: tokio::sync::watch::channel(()).0,
            },
        );
        let (period, cluster_id) = {
            let state = self.manager.store.read().await;
            let cluster_id = state
                .cluster
                .as_ref()
                .and_then(|c| c.meta.as_ref())
                .map(|m| m.id.clone())
                .unwrap_or_default();
            (self.period_to_tell(&state), cluster_id)
        };
        let mut managers: Vec<String> = self.manager.members().into_values().collect();
        managers.sort_by_key(|a| Some(a) != self.manager.leader_addr().as_ref());
        tracing::info!(node = %node_id, %hostname, %addr, "agent registered");
        self.tell_period(&node_id, period);
        Ok(Response::new(RegisterResponse {
            node_id,
            session_id,
            heartbeat_period_ms: period.as_millis() as i64,
            managers,
            cluster_id,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.require_leader()?;
        let node_id = self.check_session(&request, request.get_ref().session.as_ref())?;
        self.manager.metrics.heartbeats.inc();
        self.manager
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node_id.clone(), request.into_inner().counters);
        let (down, period) = {
            let state = self.manager.store.read().await;
            let down = state
                .nodes
                .get(&node_id)
                .is_some_and(|n| n.status.as_ref().map(|s| s.state()) != Some(NodeState::Ready));
            (down, self.period_to_tell(&state))
        };
        if down {
            // A node that was marked down and heartbeats again is back.
            self.manager
                .update(|state| -> Result<_, Status> {
                    let Some(mut node) = state.nodes.get(&node_id).cloned() else {
                        return Ok(None);
                    };
                    let status = node.status.get_or_insert_with(Default::default);
                    status.state = NodeState::Ready as i32;
                    status.message.clear();
                    let mut batch = Batch::default();
                    batch.put_node(node);
                    Ok(Some((batch, ())))
                })
                .await?;
        }
        self.tell_period(&node_id, period);
        Ok(Response::new(HeartbeatResponse {
            period_ms: period.as_millis() as i64,
        }))
    }

    type AssignmentsStream = AssignmentStream;

    async fn assignments(
        &self,
        request: Request<SessionRef>,
    ) -> Result<Response<AssignmentStream>, Status> {
        self.require_leader()?;
        let node_id = self.check_session(&request, Some(request.get_ref()))?;
        let session = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let this = self.clone();
        let mut ended = self
            .session_ended(&node_id, &session.session_id)
            .ok_or_else(|| Status::not_found("session expired or unknown; register again"))?;
        let mut not_leading = self.not_leading.clone();
        not_leading.mark_unchanged();
        tokio::spawn(async move {
            let mut applied = this.manager.store.applied();
            let mut log_requests = this.manager.logs.changes();
            let mut acks = this.acks.subscribe();
            // The first push is complete; later ones are deltas to an
            // agent that asked for them.
            let mut stream = stream::NodeStream::new(session.deltas);
            let mut last_looked = std::time::Instant::now() - MAX_PUSH_INTERVAL;
            let mut wake = Some(Wake::Store);
            // When a stop held back for the nodes' acknowledgements goes
            // out anyway (Unix ms), if one is held.
            let mut held: Option<i64> = None;
            loop {
                let still_current = this
                    .sessions()
                    .get(&node_id)
                    .is_some_and(|s| s.id == session.session_id);
                if !still_current || !this.manager.is_leader() {
                    let _ = tx
                        .send(Err(Status::not_found("session ended; register again")))
                        .await;
                    return;
                }
                // A burst of writes (a stack deploy, thousands of services)
                // becomes one look per interval, not one per write: a look
                // costs little, but a thousand streams looking at every
                // write was O(nodes) per write on the leader.
                if let Some(cause) = wake {
                    let since = last_looked.elapsed();
                    let interval = push_interval(this.live_sessions());
                    if since < interval {
                        tokio::time::sleep(interval - since).await;
                    }
                    last_looked = std::time::Instant::now();
                    // The index first: the state read after it is at
                    // least as new, so the set holds everything up to it.
                    let index = *applied.borrow_and_update();
                    let message = {
                        let state = this.manager.store.read().await;
                        let shared = this.shared.at(&this.manager.store, &state, index).await;
                        // Only a set whose inputs moved is rebuilt (see
                        // `stream`): a change elsewhere costs this stream a
                        // lookup and at most a node list delta.
                        if stream.must_compute(&shared, &node_id, cause == Wake::Other) {
                            let rebuilt = stream.rebuilt(
                                &state,
                                &shared,
                                &node_id,
                                index,
                                this.manager.logs.requests_for(&node_id),
                                // Every session's sync is gathered only for a
                                // set with a stop to hold (a copy per node per
                                // change is a thousand squared at scale).
                                |set| {
                                    drain::hold_stops(
                                        set,
                                        &state,
                                        &this.synced(),
                                        shoal_api::now_ms(),
                                    )
                                },
                            );
                            held = rebuilt.held;
                            rebuilt.message
                        } else {
                            stream.unchanged(&shared.nodes, index)
                        }
                    };
                    let news = message.is_some();
                    if let Some(message) = message {
                        this.manager.metrics.assignment_pushed(&message);
                        if tx.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                    this.computed(&node_id, &session.session_id, index, news);
                }
                let hold_ends = async {
                    match held {
                        Some(at) => {
                            let wait = (at - shoal_api::now_ms()).max(0) as u64;
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                wake = tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return } else { Some(Wake::Store) },
                    _ = log_requests.changed() => Some(Wake::Other),
                    _ = acks.changed(), if held.is_some() => Some(Wake::Other),
                    _ = hold_ends => Some(Wake::Other),
                    _ = tx.closed() => return,
                    // A replaced session or lost leadership, looked at
                    // above; with nothing changed nothing is recomputed.
                    _ = ended.changed() => None,
                    _ = not_leading.changed() => None,
                };
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn publish_logs(
        &self,
        request: Request<tonic::Streaming<shoal_api::pb::LogMessage>>,
    ) -> Result<Response<shoal_api::pb::PublishLogsResponse>, Status> {
        self.require_leader()?;
        let caller = request.extensions().get::<authz::Caller>().cloned();
        let mut stream = request.into_inner();
        let mut current: Option<(String, String)> = None; // (request, node)
        let end = loop {
            match stream.message().await {
                Ok(Some(mut message)) => {
                    let mut check = Request::new(());
                    if let Some(caller) = &caller {
                        check.extensions_mut().insert(caller.clone());
                    }
                    let node_id = self.check_session(&check, message.session.as_ref())?;
                    // Only lines for a request this node was asked to
                    // answer (and that someone still listens to).
                    if !self
                        .manager
                        .logs
                        .requests_for(&node_id)
                        .iter()
                        .any(|r| r.id == message.request_id)
                    {
                        tracing::debug!(node = %node_id, request = %message.request_id, "log lines for a request not sent to this node (or ended): dropped");
                        break StreamEnd::Finished;
                    }
                    // Lines say which node they come from: the one that
                    // sent them, whatever they claim.
                    for line in &mut message.lines {
                        line.node_id.clone_from(&node_id);
                    }
                    let last = message.end;
                    current = Some((message.request_id.clone(), node_id));
                    if !self
                        .manager
                        .logs
                        .publish(&message.request_id, message.lines)
                        .await
                    {
                        break StreamEnd::Finished; // nobody listens any more: end the agent's stream
                    }
                    if last {
                        break StreamEnd::Finished;
                    }
                }
                // Closed without its last message: cut short by the node.
                Ok(None) => break StreamEnd::BrokeOff,
                Err(status) => {
                    tracing::debug!(error = %status.message(), "log stream from an agent broke off");
                    break StreamEnd::BrokeOff;
                }
            }
        };
        if let Some((request_id, node_id)) = current {
            self.manager
                .logs
                .node_stream_ended(&request_id, &node_id, end);
        }
        Ok(Response::new(shoal_api::pb::PublishLogsResponse {}))
    }

    async fn leave(
        &self,
        request: Request<shoal_api::pb::LeaveRequest>,
    ) -> Result<Response<shoal_api::pb::LeaveResponse>, Status> {
        self.require_leader()?;
        // The node is the one the certificate names; the request names none.
        let node_id = authz::certified_node(&request)?.node_id.clone();
        crate::api::leave::worker_leaves(&self.manager, &node_id).await?;
        Ok(Response::new(shoal_api::pb::LeaveResponse {}))
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        self.require_leader()?;
        let node_id = self.check_session(&request, request.get_ref().session.as_ref())?;
        let request = request.into_inner();
        if request.applied_version != 0 {
            if let Some(s) = self.sessions().get_mut(&node_id) {
                s.sync.acked = s.sync.acked.max(request.applied_version);
            }
            self.acks.send_modify(|n| *n += 1);
        }
        if request.updates.is_empty() {
            return Ok(Response::new(UpdateTaskStatusResponse {}));
        }
        self.statuses.write(&node_id, request.updates).await?;
        Ok(Response::new(UpdateTaskStatusResponse {}))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn looks_are_spaced_by_the_number_of_nodes_within_bounds() {
        use super::push_interval;
        use std::time::Duration;
        let ms = Duration::from_millis;
        assert_eq!(push_interval(0), ms(50));
        assert_eq!(push_interval(5), ms(50));
        assert_eq!(push_interval(100), ms(50));
        assert_eq!(push_interval(101), ms(100));
        assert_eq!(push_interval(1000), ms(500));
        assert_eq!(push_interval(5000), ms(500));
        assert_eq!(push_interval(usize::MAX), ms(500));
    }

    use super::*;
    use shoal_api::pb::{
        ContainerSpec, Secret, SecretReference, SecretSpec, Task, TaskSpec, TaskState, TaskStatus,
    };

    fn task(id: &str, node: &str, secret: &str, state: TaskState) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            node_id: node.into(),
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    secrets: vec![SecretReference {
                        secret_id: secret.into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            desired_state: TaskState::Running as i32,
            ..Default::default()
        }
    }

    #[test]
    fn a_node_gets_its_live_tasks_and_only_the_secrets_they_use() {
        let mut state = State::default();
        for (id, node, secret, s) in [
            ("t1", "n1", "s1", TaskState::Running),
            ("t2", "n2", "s2", TaskState::Running),
            ("t3", "n1", "s3", TaskState::Failed),
            ("t4", "n1", "s3", TaskState::Pending),
        ] {
            state.tasks.insert(id.into(), task(id, node, secret, s));
        }
        for id in ["s1", "s2", "s3"] {
            state.secrets.insert(
                id.into(),
                Secret {
                    meta: Some(Meta {
                        id: id.into(),
                        ..Default::default()
                    }),
                    spec: Some(SecretSpec {
                        name: id.into(),
                        data: b"x".to_vec(),
                        ..Default::default()
                    }),
                },
            );
        }
        let set = assignment_set_from(&state, &shared::Shared::of(&state, 0), "n1");
        let tasks: Vec<_> = set
            .tasks
            .iter()
            .map(|t| t.meta.as_ref().unwrap().id.as_str())
            .collect();
        assert_eq!(tasks, ["t1"], "finished and unassigned tasks are not sent");
        let secrets: Vec<_> = set
            .secrets
            .iter()
            .map(|s| s.meta.as_ref().unwrap().id.as_str())
            .collect();
        assert_eq!(secrets, ["s1"], "only the secrets of this node's tasks");
    }
}
