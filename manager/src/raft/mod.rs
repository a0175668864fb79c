//! Raft replication of the store with openraft 0.10 (pinned to one alpha).
//!
//! Why 0.10 while it is still in alphas: its leader replicates in pipeline
//! mode (`network::Peer::stream_append`), sending entries to a follower
//! while earlier ones are still unanswered. openraft 0.9, the released
//! line, keeps one AppendEntries in flight per follower: entries proposed
//! meanwhile wait for its whole round, and at 64 writers the write rate was
//! bound by it (bench/RESULTS.md, issue 18). The version is pinned exactly
//! (`=0.10.0-alpha.37`): its traits still change between alphas.
//! The log and the state machine each live in their own files, so log
//! appends (fsynced) never wait behind state-machine writes: the log's
//! entries in an append-only file set (`wal`), its vote and ids and the
//! state machine in redb.

pub mod log_store;
mod log_tail;
pub mod network;
pub mod state_machine;
mod wal;
pub mod wire;

use std::{io::Cursor, sync::Arc};

use prost::Message;
use serde::{Deserialize, Serialize};
use shoal_api::pb::Proposal;

openraft::declare_raft_types!(
    /// Shoal's Raft types: entries carry store batches.
    pub TypeConfig:
        D = Payload,
        R = ApplyResult,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
pub type RaftId = u64;
/// A leader's identity as entries and log ids carry it: term and node.
pub type LeaderId = openraft::type_config::alias::CommittedLeaderIdOf<TypeConfig>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// What a snapshot's bytes travel in.
pub type SnapshotData = Cursor<Vec<u8>>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// The id of an entry written by leader `node` in `term`, at `index`.
pub fn log_id(term: u64, node: RaftId, index: u64) -> LogId {
    LogId::new(
        LeaderId {
            term,
            node_id: node,
        },
        index,
    )
}

/// An entry's proposal, carried inside openraft's JSON messages and log
/// records as base64 of its protobuf encoding: a quarter of the size of
/// JSON's number-per-byte arrays, and far cheaper to parse.
///
/// Shared, not copied: openraft clones entries on their way to the log, to
/// each follower and to the state machine, and an entry carries up to
/// hundreds of writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload(pub Arc<Proposal>);

impl Payload {
    pub fn new(proposal: Proposal) -> Self {
        Self(Arc::new(proposal))
    }
}

/// How openraft logs an entry: its writes counted, not listed.
impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "proposal of {} batches", self.0.batches.len())
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&shoal_api::base64::encode(&self.0.encode_to_vec()))
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let bytes = shoal_api::base64::decode(&text).map_err(serde::de::Error::custom)?;
        Proposal::decode(bytes.as_slice())
            .map(Payload::new)
            .map_err(serde::de::Error::custom)
    }
}

/// What applying one entry returned to its proposer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApplyResult {
    pub index: u64,
    /// Per batch of the entry: why it was refused (a version conflict;
    /// nothing of it applied), or None when it applied.
    pub conflicts: Vec<Option<String>>,
}

/// Raft timing, Swarm's by default (tick 1 s, election after 10 ticks)
/// scaled down: managers on one LAN elect within seconds, not tens of them.
#[derive(Debug, Clone)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Entries between snapshots; the log is compacted behind each one.
    pub snapshot_every: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: 200,
            election_min_ms: 1000,
            election_max_ms: 2000,
            snapshot_every: 10_000,
        }
    }
}

/// Entries per AppendEntries, at most. openraft 0.9 gave every
/// AppendEntries one heartbeat interval (200 ms) to be answered, whatever
/// it carried, and backed off and sent it again when it was not (a stream
/// now waits longer: see `network::STREAM_STALL_INTERVALS`). At its
/// default of 300 entries a follower that fell behind under load (1,000
/// writers, entries of hundreds of writes) could be sent megabytes at a
/// time; on a busy 2-core host its answers then came after the 200 ms,
/// again and again, and elections followed (`shoal-bench control-plane`,
/// 2026-12-03). Smaller requests take more round trips to catch up, but
/// each one is answered in time.
pub const MAX_ENTRIES_PER_APPEND: u64 = 16;

/// Bytes of writes per AppendEntries, at most (one entry is sent whatever
/// its size). Entries differ in size by a thousand times (one write at a
/// time, or 512 from 1,000 writers), so a bound in entries alone still let
/// 16 entries of 1,000 writers' load make 2.6 MB requests; on a slow day a
/// follower that had fallen behind got them after the 200 ms, each time the
/// same one, and never caught up, and writes went uncommitted for 10 s
/// (`shoal-bench control-plane`, 2026-12-03, "slow AppendEntries ...
/// entries=16 bytes=2640450" then "timeout after 200ms", again and again).
pub const MAX_BYTES_PER_APPEND: usize = 1 << 20;

/// What a follower gets to install a snapshot, besides the time to receive
/// it: decoding and writing every object durably (seconds for hundreds of
/// thousands of objects on a busy host).
pub const SNAPSHOT_TIMEOUT_MS: u64 = 10_000;

impl Timing {
    pub fn config(&self, cluster_name: &str) -> anyhow::Result<openraft::Config> {
        let config = openraft::Config {
            cluster_name: cluster_name.to_owned(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: 100,
            max_payload_entries: MAX_ENTRIES_PER_APPEND,
            // The base of a whole snapshot's deadline (see
            // `network::snapshot_deadline`); openraft's 200 ms was meant
            // for one chunk.
            install_snapshot_timeout: SNAPSHOT_TIMEOUT_MS,
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}
