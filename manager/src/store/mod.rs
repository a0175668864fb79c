//! The cluster store: one versioned state machine replicated by Raft.
//!
//! Writes are [`Batch`]es proposed to the leader and applied by every manager
//! in log order; readers take a consistent [`State`] under a read lock, and
//! consumers (orchestrators, scheduler, dispatcher) follow the
//! [`StoreEvent`] watch stream.

pub mod access;
pub mod batch;
pub(crate) mod service_index;
pub mod state;
pub(crate) mod task_index;

use std::sync::Arc;

use tokio::sync::{RwLock, broadcast, watch};

pub use access::Access;
pub use batch::Batch;
pub use state::{Change, Conflict, State};

/// What one applied log entry changed.
#[derive(Debug, Clone)]
pub struct StoreEvent {
    pub index: u64,
    pub changes: Vec<Change>,
}

/// The in-memory view of the replicated state, shared by the state machine
/// (the only writer) and every reader on this manager.
#[derive(Clone)]
pub struct Store {
    state: Arc<RwLock<State>>,
    events: broadcast::Sender<Arc<StoreEvent>>,
    applied: watch::Sender<u64>,
    /// Bumped when the state is replaced wholesale (no change events).
    resets: watch::Sender<u64>,
    /// What authorization reads of the applied state (see [`Access`]).
    access: watch::Sender<Arc<Access>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            events: broadcast::channel(4096).0,
            applied: watch::channel(0).0,
            resets: watch::channel(0).0,
            access: watch::channel(Arc::default()).0,
        }
    }

    pub async fn read(&self) -> tokio::sync::RwLockReadGuard<'_, State> {
        self.state.read().await
    }

    pub(crate) async fn write(&self) -> tokio::sync::RwLockWriteGuard<'_, State> {
        self.state.write().await
    }

    /// The write lock, held by the group-commit writer across callers'
    /// turns (see [`crate::group_commit`]).
    pub(crate) async fn write_owned(&self) -> tokio::sync::OwnedRwLockWriteGuard<State> {
        self.state.clone().write_owned().await
    }

    /// What authorization reads of the applied state, without the lock.
    pub fn access(&self) -> Arc<Access> {
        self.access.borrow().clone()
    }

    /// Copies what authorization reads from `state`, the applied state
    /// (never the group commit's working copy: see [`Access`]).
    pub(crate) fn refresh_access(&self, state: &State) {
        let access = Access::of(state);
        self.access.send_if_modified(|current| {
            let changed = **current != access;
            if changed {
                *current = Arc::new(access);
            }
            changed
        });
    }

    /// Change events, in log order. A receiver that falls behind gets
    /// `Lagged` and should re-read the state.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoreEvent>> {
        self.events.subscribe()
    }

    /// The index of the last applied entry; changes on every apply.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Sends one applied entry's changes to event subscribers.
    pub(crate) fn publish(&self, event: StoreEvent) {
        if !event.changes.is_empty() {
            let _ = self.events.send(Arc::new(event));
        }
    }

    /// Moves the applied index (after `publish`ing what it applied).
    pub(crate) fn publish_applied(&self, index: u64) {
        self.applied.send_replace(index);
    }

    /// Marks the state as replaced wholesale (snapshot install).
    pub(crate) fn publish_reset(&self, index: u64) {
        self.resets.send_modify(|n| *n += 1);
        self.applied.send_replace(index);
    }

    /// Changes whenever the state is replaced wholesale: followers of the
    /// change events must re-read it.
    pub fn resets(&self) -> watch::Receiver<u64> {
        self.resets.subscribe()
    }
}
