//! Raft replication of the store with openraft 0.9.
//!
//! Why 0.9: it is openraft's released line (0.9.25); 0.10 exists only as
//! alphas whose storage and network traits still change between releases.
//! The log and the state machine each live in their own redb file, so log
//! appends (fsynced) never wait behind state-machine writes.

pub mod log_store;
pub mod network;
pub mod state_machine;

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use shoal_api::pb::StoreBatch;

openraft::declare_raft_types!(
    /// Shoal's Raft types: entries carry store batches.
    pub TypeConfig:
        D = StoreBatch,
        R = ApplyResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type RaftId = u64;

/// What applying one entry returned to its proposer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApplyResult {
    pub index: u64,
    /// Set when the batch was refused (a version conflict); nothing applied.
    pub conflict: Option<String>,
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

impl Timing {
    pub fn config(&self, cluster_name: &str) -> anyhow::Result<openraft::Config> {
        let config = openraft::Config {
            cluster_name: cluster_name.to_owned(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}

fn io_err<E: std::error::Error + 'static>(e: &E) -> openraft::AnyError {
    openraft::AnyError::new(e)
}
