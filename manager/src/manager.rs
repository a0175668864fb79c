//! One manager: its Raft node, its view of the store, and the way every
//! component writes (through the leader, guarded by versions).

use openraft::async_runtime::WatchReceiver as _;
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use openraft::{BasicNode, error::ClientWriteError};
use shoal_api::{
    UNSETTLED_METADATA,
    eager_end::EagerEndService,
    pb::{Proposal, StoreBatch, membership_client::MembershipClient},
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{
    group_commit::GroupCommit,
    raft::{Payload, Raft, RaftId, network},
    store::{Batch, State, Store},
};

/// Why a write did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("no leader is elected right now; retry in a few seconds")]
    NoLeader,
    /// No leader within the wait: what it takes to have one.
    #[error("{0}")]
    NoQuorum(String),
    #[error("forwarding to the leader at {addr}: {message}")]
    Forward { addr: String, message: String },
    #[error(
        "the write was not committed within {0:?} (is a quorum of managers reachable?); it may still be applied: check before retrying"
    )]
    NotCommitted(Duration),
    /// An attempt may have been applied and its answer was lost (its
    /// leader lost its leadership with the entry in flight, or the
    /// forwarded call failed), so a retry's conflict may be with that
    /// attempt itself: neither success nor the conflict can be told.
    #[error("the write may or may not have been applied ({0}): check before retrying")]
    Unsettled(String),
    #[error("raft: {0}")]
    Raft(String),
}

impl From<WriteError> for tonic::Status {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Conflict(m) => tonic::Status::aborted(m),
            WriteError::Unsettled(_) => {
                let mut status = tonic::Status::unavailable(e.to_string());
                status.metadata_mut().insert(
                    UNSETTLED_METADATA,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                status
            }
            WriteError::NoLeader
            | WriteError::NoQuorum(_)
            | WriteError::Forward { .. }
            | WriteError::NotCommitted(_) => tonic::Status::unavailable(e.to_string()),
            WriteError::Raft(m) => tonic::Status::internal(m),
        }
    }
}

/// Settings every component reads.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Default for new clusters; the Cluster object's value wins once set.
    pub heartbeat_period: Duration,
    /// How long a leader goes on acting as one (serving agents, running the
    /// scheduler and orchestrators) without a quorum acknowledging it. Past
    /// this it is probably cut off and the others elect a new leader, so it
    /// sends its agents elsewhere instead of holding them. Twice the longest
    /// election timeout: a healthy leader is acknowledged every heartbeat.
    pub leader_lease: Duration,
    /// How long a call waits for a leader while none is known (an election,
    /// a partition): longer than an election, so calls made during one
    /// succeed instead of failing; bounded, so a cluster without quorum
    /// answers with a clear error.
    pub leader_wait: Duration,
    /// What one request may ask of the cluster.
    pub limits: crate::limits::Limits,
    /// The most heartbeats a second the leader asks of all nodes together.
    /// Past `period × this` nodes each is told a longer period (see
    /// `dispatcher::liveness::spread`).
    pub max_heartbeats_per_second: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            heartbeat_period: Duration::from_secs(5),
            leader_lease: Duration::from_secs(4),
            leader_wait: Duration::from_secs(10),
            limits: Default::default(),
            max_heartbeats_per_second: crate::dispatcher::liveness::MAX_HEARTBEATS_PER_SECOND,
        }
    }
}

/// Where a call that only the leader serves goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This manager leads (with a quorum behind it).
    Local,
    /// The leader is the manager at this API address.
    Leader(String),
}

/// Who a manager is among the managers.
#[derive(Debug, Clone)]
pub struct Member {
    pub raft_id: RaftId,
    /// host:port other managers and agents reach it at.
    pub addr: String,
    pub hostname: String,
}

pub struct Manager {
    pub raft: Raft,
    pub store: Store,
    pub raft_id: RaftId,
    /// host:port other managers and agents reach this one at.
    pub addr: String,
    pub hostname: String,
    pub settings: Settings,
    pub peer_health: network::PeerHealth,
    /// Log requests in flight (`service logs`), answered by agents.
    pub logs: crate::logs::LogBroker,
    /// The events `shoal events` streams, recorded from this manager's own
    /// store (see [`crate::events`]).
    pub events: Arc<crate::events::EventLog>,
    /// Each node's load-balancer counters, as its last heartbeat said (on
    /// the leader; observability, not replicated state).
    pub counters: std::sync::Mutex<BTreeMap<String, Vec<shoal_api::pb::ServiceCounters>>>,
    proposals: mpsc::UnboundedSender<Queued>,
    /// Orders read-modify-write cycles, so components rarely meet version
    /// conflicts (which stay as the safety net), and lets the cycles queued
    /// during one Raft round share the next.
    writes: GroupCommit,
    /// This manager's certificate and key, and the roots it trusts.
    pub credentials: Arc<shoal_pki::Credentials>,
    /// One TLS channel per peer manager, kept: a handshake per forwarded
    /// call would cost more than the call.
    channels: std::sync::Mutex<std::collections::HashMap<String, tonic::transport::Channel>>,
    /// Turns true once this manager's node has left the cluster (`shoal
    /// swarm leave --force`): the daemon then stops and clears its state.
    pub left: tokio::sync::watch::Sender<bool>,
    /// What `/metrics` reports that is counted as it happens.
    pub metrics: Arc<crate::metrics::ManagerMetrics>,
}

impl Manager {
    pub fn new(
        raft: Raft,
        store: Store,
        member: Member,
        settings: Settings,
        peer_health: network::PeerHealth,
        credentials: Arc<shoal_pki::Credentials>,
    ) -> Arc<Self> {
        let Member {
            raft_id,
            addr,
            hostname,
        } = member;
        let (proposals, queue) = mpsc::unbounded_channel();
        tokio::spawn(batch_proposals(raft.clone(), queue));
        Arc::new_cyclic(|this: &std::sync::Weak<Self>| Self {
            writes: GroupCommit::start(store.clone(), {
                let this = this.clone();
                move |batch| {
                    let this = this.clone();
                    async move {
                        match this.upgrade() {
                            Some(manager) => manager.propose(batch).await,
                            None => Err(WriteError::Raft("the manager is shutting down".into())),
                        }
                    }
                }
            }),
            proposals,
            raft,
            store,
            raft_id,
            addr,
            hostname,
            logs: crate::logs::LogBroker::new(settings.limits.clone()),
            events: Default::default(),
            settings,
            peer_health,
            counters: Default::default(),
            credentials,
            channels: Default::default(),
            left: tokio::sync::watch::channel(false).0,
            metrics: Default::default(),
        })
    }

    /// A mutual-TLS channel to the manager at `addr`, with this manager's
    /// certificate.
    pub fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, shoal_pki::PkiError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = shoal_pki::transport::lazy_channel(
            addr,
            shoal_pki::transport::Dialer::Node(self.credentials.clone()),
        )?;
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    pub fn leader_id(&self) -> Option<RaftId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Whether this manager leads and a quorum acknowledged it within the
    /// lease. Raft alone keeps a cut-off leader believing it leads until it
    /// hears of a newer term; everything that acts as the leader (the
    /// dispatcher, the scheduler, the orchestrators) asks this instead.
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        if metrics.current_leader != Some(self.raft_id) {
            return false;
        }
        // The only voter is its own quorum. openraft records a quorum's
        // acknowledgement only when a follower answers, so alone it would
        // look cut off once the lease passed.
        let mut voters = metrics.membership_config.membership().voter_ids();
        if voters.next() == Some(self.raft_id) && voters.next().is_none() {
            return true;
        }
        metrics
            .last_quorum_acked
            .as_ref()
            .is_some_and(|acked| openraft::Instant::elapsed(&**acked) <= self.settings.leader_lease)
    }

    /// Raft says this manager leads, but no quorum acknowledged it within
    /// the lease: it is cut off from the other managers.
    pub fn leads_without_quorum(&self) -> bool {
        self.leader_id() == Some(self.raft_id) && !self.is_leader()
    }

    /// Where a leader-only call goes, waiting (until `deadline`) while no
    /// leader is known, this manager leads without a quorum, or the known
    /// leader is `avoid` (one that just failed to answer: a new one is being
    /// elected).
    pub async fn route(
        &self,
        deadline: tokio::time::Instant,
        avoid: Option<&str>,
    ) -> Result<Route, tonic::Status> {
        let mut metrics = self.raft.metrics();
        loop {
            if self.is_leader() {
                return Ok(Route::Local);
            }
            if let Some(addr) = self
                .leader_addr()
                .filter(|a| !self.leads_without_quorum() && avoid != Some(a.as_str()))
            {
                return Ok(Route::Leader(addr));
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return Err(self.no_leader_status());
            }
        }
    }

    /// The error a call gets when no leader could be found in time.
    pub fn no_leader_status(&self) -> tonic::Status {
        let voters = self.voters().len();
        tonic::Status::unavailable(format!(
            "no leader was elected within {:?}: a quorum ({} of {voters}) of managers must be reachable from this one ({})",
            self.settings.leader_wait,
            voters / 2 + 1,
            self.addr
        ))
    }

    /// Raft's latest metrics of this manager (a copy).
    pub fn raft_metrics(&self) -> openraft::RaftMetrics<crate::raft::TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// The API address of every manager in the membership, by Raft id.
    pub fn members(&self) -> BTreeMap<RaftId, String> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    }

    pub fn voters(&self) -> Vec<RaftId> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// The leader's API address, when one is known.
    pub fn leader_addr(&self) -> Option<String> {
        let leader = self.leader_id()?;
        let metrics = self.raft.metrics().borrow_watched().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n: &BasicNode| n.addr.clone())
    }

    /// The answer a follower gives to calls only the leader serves: the
    /// leader's address in the message and in the `shoal-leader` metadata
    /// (which agents and joining managers follow).
    pub fn not_leader(&self) -> tonic::Status {
        let leader = self.leader_addr().unwrap_or_default();
        let mut status = tonic::Status::failed_precondition(format!(
            "not the leader; the leader is at {}",
            if leader.is_empty() {
                "(none elected)"
            } else {
                &leader
            }
        ));
        if let Ok(value) = leader.parse() {
            status
                .metadata_mut()
                .insert(shoal_api::LEADER_METADATA, value);
        }
        status
    }

    /// A service's counters summed over the nodes.
    pub fn service_counters(&self, service_id: &str) -> shoal_api::pb::ServiceCounters {
        let all = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut sum = shoal_api::pb::ServiceCounters {
            service_id: service_id.to_owned(),
            ..Default::default()
        };
        for c in all
            .values()
            .flatten()
            .filter(|c| c.service_id == service_id)
        {
            sum.connections += c.connections;
            sum.packets += c.packets;
            sum.bytes += c.bytes;
        }
        sum
    }

    /// Waits (up to `timeout`) until some manager leads.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<RaftId> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = metrics.borrow_watched().current_leader {
                return Some(leader);
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Proposes a batch: applied by the leader's Raft when this manager
    /// leads, forwarded to the leader otherwise. Returns the log index.
    /// While no leader is known (an election) it waits for one, up to
    /// `settings.leader_wait`; a leader that stops answering is given up
    /// for the next one within the same bound.
    pub async fn propose(&self, batch: StoreBatch) -> Result<u64, WriteError> {
        self.metrics.proposals.inc();
        let deadline = tokio::time::Instant::now() + self.settings.leader_wait;
        let mut avoid: Option<String> = None;
        // Why an earlier attempt may have been applied, once one may have.
        let mut lost: Option<String> = None;
        loop {
            let outcome = self.propose_once(&batch, deadline).await;
            let retry = match settle(outcome, lost.as_deref()) {
                Err(WriteError::NoLeader) => None,
                Err(WriteError::Forward { addr, message }) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(WriteError::Forward { addr, message });
                    }
                    // The leader may have appended it before the call
                    // failed: a later conflict may be with this attempt.
                    lost = Some(format!("forwarding to {addr} failed: {message}"));
                    Some(addr)
                }
                done => return done,
            };
            tracing::debug!(avoid = ?retry, "no leader for a write yet; waiting for one");
            avoid = retry.or(avoid);
            // Raft may name no leader for a moment more than `route` sees.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Err(status) = self.route(deadline, avoid.as_deref()).await {
                return Err(WriteError::NoQuorum(status.message().to_owned()));
            }
        }
    }

    async fn propose_once(
        &self,
        batch: &StoreBatch,
        deadline: tokio::time::Instant,
    ) -> Result<u64, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.proposals
            .send((batch.clone(), reply, deadline))
            .map_err(|_| WriteError::Raft("the manager is shutting down".into()))?;
        match answer.await {
            Ok(Proposed::Applied(index)) => Ok(index),
            Ok(Proposed::Refused(conflict)) => Err(WriteError::Conflict(conflict)),
            Ok(Proposed::Failed(message)) => Err(WriteError::Raft(message)),
            Ok(Proposed::NotCommitted) => Err(WriteError::NotCommitted(self.settings.leader_wait)),
            Ok(Proposed::Unsettled(why)) => Err(WriteError::Unsettled(why)),
            Err(_) => Err(WriteError::Raft("the manager is shutting down".into())),
            Ok(Proposed::NotLeader(None)) => Err(WriteError::NoLeader),
            Ok(Proposed::NotLeader(Some(node))) => {
                let forward = |message: String| WriteError::Forward {
                    addr: node.addr.clone(),
                    message,
                };
                let channel = self
                    .channel(&node.addr)
                    .map_err(|e| forward(e.to_string()))?;
                let mut request = tonic::Request::new(batch.clone());
                request
                    .set_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
                // The batch in one DATA frame that ends its stream.
                let reply = MembershipClient::new(EagerEndService::new(channel))
                    .propose(request)
                    .await
                    .map_err(|status| match status.code() {
                        tonic::Code::Aborted => WriteError::Conflict(status.message().to_owned()),
                        _ if status.metadata().contains_key(UNSETTLED_METADATA) => {
                            WriteError::Unsettled(format!(
                                "the leader at {}: {}",
                                node.addr,
                                status.message()
                            ))
                        }
                        _ => forward(status.message().to_owned()),
                    })?;
                Ok(reply.into_inner().index)
            }
        }
    }

    /// Reads the state, builds a batch and proposes it, retrying when a
    /// concurrent write changed what was read. `build` returns `Ok(None)`
    /// when there is nothing to write. `build` sees every write queued
    /// before it, committed or not; the writes queued during one Raft round
    /// are committed together in the next (see [`crate::group_commit`]).
    pub async fn update<T, E>(
        &self,
        build: impl FnMut(&State) -> Result<Option<(Batch, T)>, E>,
    ) -> Result<Option<T>, E>
    where
        E: From<WriteError>,
    {
        self.writes.update(build).await
    }

    /// Waits until the state this manager serves includes every write the
    /// leader acknowledged before the call (a linearizable read).
    /// Bounded by `settings.leader_wait`: a leader cut off from the quorum
    /// cannot confirm it still leads.
    pub async fn linearizable(&self) -> Result<(), tonic::Status> {
        match tokio::time::timeout(
            self.settings.leader_wait,
            self.raft
                .ensure_linearizable(openraft::ReadPolicy::ReadIndex),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(tonic::Status::unavailable(format!("not the leader: {e}"))),
            Err(_) => Err(tonic::Status::unavailable(format!(
                "this manager could not confirm its leadership with a quorum within {:?}",
                self.settings.leader_wait
            ))),
        }
    }
}

/// How one proposed batch fared.
enum Proposed {
    Applied(u64),
    Refused(String),
    NotLeader(Option<BasicNode>),
    /// Not committed by the proposer's deadline (no quorum answers).
    NotCommitted,
    /// This manager led when it proposed the entry and lost its
    /// leadership before the entry committed: its successor may still
    /// commit it (it may already hold it), so it must not be proposed
    /// again, there or here.
    Unsettled(String),
    Failed(String),
}

/// A retry's outcome, given why an earlier attempt may have been applied
/// (`lost`, None when none may have): a conflict may then be with that
/// attempt itself, so it settles nothing (chaos, 2026-12-03: a create
/// forwarded to a leader that was cut off was committed by its successor,
/// the retry conflicted with it, and the caller was told "exists" about
/// its own write).
fn settle(outcome: Result<u64, WriteError>, lost: Option<&str>) -> Result<u64, WriteError> {
    match (outcome, lost) {
        (Err(WriteError::Conflict(conflict)), Some(lost)) => Err(WriteError::Unsettled(format!(
            "{lost}; the retry then conflicted ({conflict}), perhaps with that attempt"
        ))),
        (outcome, _) => outcome,
    }
}

type Queued = (StoreBatch, oneshot::Sender<Proposed>, tokio::time::Instant);

/// Raft entries in flight at once; while they are, new batches queue up and
/// share the next entry (group commit at the proposal level: entries must
/// carry many writes). Measured with pipelined replication at 64 writers
/// (2026-12-04): 2 in flight no better than 1, 4 worse (more entries, each
/// with its fsyncs and round of messages, for the same writes).
const ENTRIES_IN_FLIGHT: usize = 1;
/// Batches per entry, at most.
const BATCHES_PER_ENTRY: usize = 512;

async fn batch_proposals(raft: Raft, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let in_flight = Arc::new(Semaphore::new(ENTRIES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (batch, reply, mut deadline) = first;
        let mut bytes = prost::Message::encoded_len(&batch);
        let (mut batches, mut replies) = (vec![batch], vec![reply]);
        while batches.len() < BATCHES_PER_ENTRY && bytes < crate::limits::MAX_BYTES_PER_ENTRY {
            let Ok((batch, reply, patience)) = queue.try_recv() else {
                break;
            };
            bytes += prost::Message::encoded_len(&batch);
            batches.push(batch);
            replies.push(reply);
            // The entry waits no longer than its most patient proposer: a
            // leader cut off from the quorum never commits it, and while it
            // waits no other entry could be proposed here.
            deadline = deadline.max(patience);
        }
        let raft = raft.clone();
        // Whether this manager thought it led when it proposed: then a
        // "forward to the leader" answer may come after the entry was
        // appended here (and replicated), not before.
        let leading = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow_watched();
            metrics.current_leader == Some(metrics.id)
        };
        tokio::spawn(async move {
            let write = raft.client_write(Payload::new(Proposal { batches }));
            let outcome = tokio::time::timeout_at(deadline, write).await.ok();
            drop(permit);
            let Some(outcome) = outcome else {
                for reply in replies {
                    let _ = reply.send(Proposed::NotCommitted);
                }
                return;
            };
            for (i, reply) in replies.into_iter().enumerate() {
                let answer = match &outcome {
                    Ok(response) => match response.data.conflicts.get(i).cloned().flatten() {
                        Some(conflict) => Proposed::Refused(conflict),
                        None => Proposed::Applied(response.data.index),
                    },
                    Err(openraft::error::RaftError::APIError(
                        ClientWriteError::ForwardToLeader(_),
                    )) if leading => Proposed::Unsettled(
                        "this manager lost its leadership with the write in flight".into(),
                    ),
                    Err(openraft::error::RaftError::APIError(
                        ClientWriteError::ForwardToLeader(f),
                    )) => Proposed::NotLeader(f.leader_node.clone()),
                    Err(openraft::error::RaftError::Fatal(e)) => Proposed::Failed(format!(
                        "this manager's Raft stopped ({e}) with the write in flight: it may or may not be applied"
                    )),
                    Err(e) => Proposed::Failed(e.to_string()),
                };
                let _ = reply.send(answer);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_after_an_attempt_that_may_have_been_applied_settles_nothing() {
        let lost = Some("forwarding to 192.0.2.11:2377 failed: broken pipe");
        let retried = settle(Err(WriteError::Conflict("exists".into())), lost);
        let Err(WriteError::Unsettled(why)) = retried else {
            panic!("{retried:?}");
        };
        assert!(
            why.contains("192.0.2.11:2377") && why.contains("exists"),
            "{why}"
        );
        // The same conflict with no such attempt before it is a conflict.
        let first = settle(Err(WriteError::Conflict("exists".into())), None);
        assert!(matches!(first, Err(WriteError::Conflict(_))), "{first:?}");
        // A success or another error is what it is, either way.
        assert!(matches!(settle(Ok(7), lost), Ok(7)));
        assert!(matches!(
            settle(Err(WriteError::NoLeader), lost),
            Err(WriteError::NoLeader)
        ));
    }

    #[test]
    fn an_unsettled_write_tells_a_forwarding_manager_not_to_propose_it_again() {
        let status = tonic::Status::from(WriteError::Unsettled("leadership lost".into()));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.metadata().contains_key(UNSETTLED_METADATA));
        assert!(
            status
                .message()
                .contains("may or may not have been applied")
        );
        let other = tonic::Status::from(WriteError::NotCommitted(Duration::from_secs(5)));
        assert!(!other.metadata().contains_key(UNSETTLED_METADATA));
    }
}
