//! What a manager tells Prometheus (`/metrics`, served by [`endpoint`]).
//!
//! Two kinds of series: events counted as they happen (proposals, leader
//! changes, heartbeats, scheduler passes) live in [`ManagerMetrics`] for
//! the manager's life; what describes the present (Raft's term and
//! indexes, the store's objects, tasks by state, agent sessions) is read
//! at each scrape into a registry made for that scrape, so nothing stale
//! lingers (a state no task is in any more has no series).

pub mod endpoint;

use openraft::async_runtime::WatchReceiver as _;
use std::{collections::BTreeMap, sync::atomic::AtomicU64};

use prometheus_client::{
    encoding::{EncodeLabelSet, text},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{raft::Raft, store::State};

/// The content type of [`ManagerMetrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Counted as it happens, for the manager's life.
pub struct ManagerMetrics {
    registry: Registry,
    /// Store batches proposed through this manager (`rate()` of it:
    /// proposals/s), forwarded ones included.
    pub proposals: Counter,
    /// Times the leader this manager knows changed (none → one counts).
    pub leader_changes: Counter,
    /// Heartbeats this manager's dispatcher accepted (leader only).
    pub heartbeats: Counter,
    /// How long one scheduler pass took (read state, place, write).
    pub scheduler_pass: Histogram,
    /// Assignment messages pushed to agents, and their encoded bytes, by
    /// kind (`complete` or `delta`).
    assignments: Family<KindLabel, Counter>,
    assignment_bytes: Family<KindLabel, Counter>,
}

impl Default for ManagerMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let proposals = Counter::default();
        let leader_changes = Counter::default();
        let heartbeats = Counter::default();
        // 100 µs … ~3.3 s: a pass is sub-millisecond on a small cluster
        // and grows with thousands of pending tasks.
        let scheduler_pass = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "shoal_raft_proposals",
            "Store batches proposed through this manager",
            proposals.clone(),
        );
        registry.register(
            "shoal_raft_leader_changes",
            "Changes of the Raft leader this manager has seen",
            leader_changes.clone(),
        );
        registry.register(
            "shoal_dispatcher_heartbeats",
            "Agent heartbeats accepted by this manager's dispatcher",
            heartbeats.clone(),
        );
        registry.register(
            "shoal_scheduler_pass_seconds",
            "Time of one scheduler pass (read the state, place tasks, write)",
            scheduler_pass.clone(),
        );
        let assignments = Family::<KindLabel, Counter>::default();
        let assignment_bytes = Family::<KindLabel, Counter>::default();
        registry.register(
            "shoal_dispatcher_assignments",
            "Assignment messages pushed to agents, complete sets or deltas",
            assignments.clone(),
        );
        registry.register(
            "shoal_dispatcher_assignment_bytes",
            "Encoded bytes of the assignment messages pushed to agents",
            assignment_bytes.clone(),
        );
        Self {
            registry,
            proposals,
            leader_changes,
            heartbeats,
            scheduler_pass,
            assignments,
            assignment_bytes,
        }
    }
}

impl ManagerMetrics {
    /// Counts one assignment message pushed to an agent.
    pub fn assignment_pushed(&self, message: &shoal_api::pb::AssignmentSet) {
        let kind = KindLabel {
            kind: if message.delta { "delta" } else { "complete" },
        };
        self.assignments.get_or_create(&kind).inc();
        self.assignment_bytes
            .get_or_create(&kind)
            .inc_by(prost::Message::encoded_len(message) as u64);
    }
}

/// What a scrape reads of the present, besides the counters.
pub struct Snapshot<'a> {
    pub raft: &'a openraft::RaftMetrics<crate::raft::TypeConfig>,
    pub state: &'a State,
    /// Agent sessions this manager's dispatcher holds (0 on followers).
    pub sessions: usize,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

impl ManagerMetrics {
    /// The text exposition of every series (OpenMetrics).
    pub fn render(&self, now: &Snapshot<'_>) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        text::encode_registry(&mut out, &self.registry)?;
        text::encode_registry(&mut out, &present(now))?;
        text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// Counts leader changes until Raft stops. Watches the server metrics,
/// which change with the vote, the leader or the membership only (the full
/// metrics are sent at every turn of openraft's loop, several times per
/// write entry).
pub async fn count_leader_changes(raft: Raft, metrics: std::sync::Arc<ManagerMetrics>) {
    let mut watch = raft.server_metrics();
    let mut leader = watch.borrow_and_update().current_leader;
    while watch.changed().await.is_ok() {
        let now = watch.borrow_and_update().current_leader;
        if now != leader && now.is_some() {
            metrics.leader_changes.inc();
        }
        leader = now;
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let gauge: Gauge = Gauge::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

/// A registry holding the present's series, for one scrape.
fn present(now: &Snapshot<'_>) -> Registry {
    let mut registry = Registry::default();
    let raft = now.raft;
    let index = |i: Option<u64>| i.map_or(0, |i| i as i64);
    gauge(
        &mut registry,
        "shoal_raft_term",
        "Current Raft term",
        raft.current_term as i64,
    );
    gauge(
        &mut registry,
        "shoal_raft_last_log_index",
        "Index of the last entry in this manager's Raft log",
        index(raft.last_log_index),
    );
    gauge(
        &mut registry,
        "shoal_raft_apply_index",
        "Index of the last entry applied to this manager's store",
        index(raft.last_applied.map(|l| l.index)),
    );
    if let Some(commit) = raft.local_committed {
        gauge(
            &mut registry,
            "shoal_raft_commit_index",
            "Index of the last entry this manager knows a quorum of managers holds",
            commit.index as i64,
        );
    }
    gauge(
        &mut registry,
        "shoal_raft_is_leader",
        "1 if this manager is the Raft leader",
        i64::from(raft.current_leader == Some(raft.id)),
    );
    gauge(
        &mut registry,
        "shoal_raft_has_leader",
        "1 if this manager knows a Raft leader",
        i64::from(raft.current_leader.is_some()),
    );
    let state = now.state;
    let objects: Family<KindLabel, Gauge> = Family::default();
    for (kind, count) in [
        ("node", state.nodes.len()),
        ("service", state.services.len()),
        ("task", state.tasks.len()),
        ("network", state.networks.len()),
        ("secret", state.secrets.len()),
        ("config", state.configs.len()),
        ("cluster", usize::from(state.cluster.is_some())),
    ] {
        objects.get_or_create(&KindLabel { kind }).set(count as i64);
    }
    registry.register(
        "shoal_store_objects",
        "Objects in this manager's store, by kind",
        objects,
    );
    let mut by_state: BTreeMap<&'static str, i64> = BTreeMap::new();
    for task in state.tasks.values() {
        let word = task
            .status
            .as_ref()
            .map_or(shoal_api::pb::TaskState::New, |s| s.state())
            .word();
        *by_state.entry(word).or_default() += 1;
    }
    let tasks: Family<StateLabel, Gauge> = Family::default();
    for (state, count) in by_state {
        tasks.get_or_create(&StateLabel { state }).set(count);
    }
    registry.register("shoal_tasks", "Tasks in the store, by state", tasks);
    gauge(
        &mut registry,
        "shoal_dispatcher_sessions",
        "Agent sessions this manager's dispatcher holds (the leader's)",
        now.sessions as i64,
    );
    if let Some(acked) = &raft.last_quorum_acked {
        let ack: Gauge<f64, AtomicU64> = Gauge::default();
        ack.set(openraft::Instant::elapsed(&**acked).as_secs_f64());
        registry.register(
            "shoal_raft_quorum_ack_age_seconds",
            "Since a quorum last acknowledged this leader (leader only)",
            ack,
        );
    }
    registry
}

/// The value of one series in a text exposition, for tests.
#[cfg(test)]
fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[cfg(test)]
mod tests;
