//! Group commit for [`crate::manager::Manager::update`]: read-modify-write
//! cycles share Raft rounds instead of queueing for one each.
//!
//! Callers queue; one writer gives each its turn in order. On its turn a
//! caller runs its closure on the working copy (the committed state with
//! every earlier write of the group applied), and its batch is applied to
//! that copy for the next caller to see. The group is then proposed as ONE
//! batch (one Raft entry, one fsync'd round) and every caller is answered
//! after it commits. Serializable as before: each closure sees every write
//! queued before it. A closure that refuses (an error, nothing to write)
//! affects only itself, and if it saw earlier writes of its group it is
//! answered only once they commit (its answer rests on them); a group that fails to commit fails for every caller
//! in it, and nothing of it is applied (it is one batch: the state machine
//! applies all of it or none).
//!
//! The working copy is the store's own state, changed in place under its
//! write lock while the group is built (a copy of a 100,000-task state per
//! group would cost more than the round) and put back exactly as it was
//! before the lock is released: readers never see an uncommitted write. The
//! lock is held only while closures run, never across the Raft round.

use std::{
    collections::{HashMap, hash_map::Entry},
    future::Future,
    sync::{Arc, Mutex},
};

use shoal_api::pb::{Kind, Object, StoreAction, StoreBatch, object, store_action};
use tokio::sync::{OwnedRwLockWriteGuard, mpsc, oneshot};

use crate::{
    manager::WriteError,
    store::{Batch, State, Store, state::object_key},
};

/// The version an object written earlier in the group carries in the
/// working copy: no stored object has it, so a caller that names a version
/// it read before (a client's `--version`) conflicts with the uncommitted
/// write, as it would after that write committed.
pub const PENDING_VERSION: u64 = u64::MAX;

/// Callers per group, at most.
const MAX_MEMBERS: usize = 512;
/// A group stops taking callers past this many bytes (each caller's batch
/// is bounded by the per-pass limits, so the entry stays under
/// [`crate::limits::MAX_BYTES_PER_ENTRY`]).
const MAX_GROUP_BYTES: usize = crate::limits::MAX_BYTES_PER_ENTRY / 2;
/// Times a caller's closure is run again after a conflict.
const MAX_RETRIES: usize = 5;

/// How a group fared, as each of its callers is told.
type Outcome = Result<u64, WriteError>;

/// A caller waiting for its turn.
struct Request {
    turn: oneshot::Sender<Turn>,
    /// The group's outcome, for a caller that wrote in it or decided on
    /// its writes.
    outcome: oneshot::Sender<Outcome>,
}

/// A caller's turn: the working copy, and where to say whether it joined
/// the group (dropped unsent: it did not).
struct Turn {
    working: Arc<Mutex<Option<Working>>>,
    joined: oneshot::Sender<()>,
}

/// The group being built: the store's state under its write lock with the
/// group's writes applied, what to put back, and the group's batch.
struct Working {
    state: OwnedRwLockWriteGuard<State>,
    /// Each object the group touched as it was before the group (None: it
    /// did not exist; the cluster object is kept whole).
    before: HashMap<(Kind, String), Option<Object>>,
    actions: Vec<StoreAction>,
    bytes: usize,
}

impl Working {
    fn new(state: OwnedRwLockWriteGuard<State>) -> Self {
        Self {
            state,
            before: HashMap::new(),
            actions: Vec::new(),
            bytes: 0,
        }
    }

    /// Applies one caller's batch to the working copy and adds it to the
    /// group; on a conflict with the working copy nothing changes.
    fn add(&mut self, batch: StoreBatch) -> Result<(), WriteError> {
        let keys: Vec<(Kind, String)> = batch.actions.iter().filter_map(key).collect();
        let mut first_touched = Vec::new();
        for k in &keys {
            if let Entry::Vacant(e) = self.before.entry(k.clone()) {
                e.insert(get(&self.state, k));
                first_touched.push(k.clone());
            }
        }
        if let Err(conflict) = self.state.apply(PENDING_VERSION, &batch) {
            // Nothing was applied: the objects only this batch touched need
            // no putting back.
            for k in first_touched {
                self.before.remove(&k);
            }
            return Err(WriteError::Conflict(conflict.to_string()));
        }
        // The group is one batch, checked against the state before it: a
        // write of an object written earlier in the group expects the
        // version the object had before the group (the state machine checks
        // every action of a batch before applying any).
        for mut action in batch.actions {
            if let Some(k) = key(&action) {
                action.expected_version = self
                    .before
                    .get(&k)
                    .and_then(|o| o.as_ref())
                    .map_or(0, |o| version(o, &k));
            }
            self.bytes += prost::Message::encoded_len(&action);
            self.actions.push(action);
        }
        Ok(())
    }

    /// Puts the state back as it was before the group and releases it;
    /// the group's batch.
    fn finish(mut self) -> StoreBatch {
        self.put_back();
        StoreBatch {
            actions: std::mem::take(&mut self.actions),
        }
    }

    /// Puts back every object the group touched, as it was before.
    fn put_back(&mut self) {
        for ((kind, id), object) in self.before.drain() {
            match (kind, object) {
                (Kind::Cluster, object) => {
                    self.state.cluster = object.and_then(|o| match o.object {
                        Some(object::Object::Cluster(c)) => Some(c),
                        _ => None,
                    })
                }
                (_, Some(object)) => self.state.put(object),
                (kind, None) => self.state.delete(kind, &id),
            }
        }
    }
}

/// A group dropped unfinished (its writer cancelled at shutdown) still
/// leaves the state as it was: no uncommitted write is ever kept.
impl Drop for Working {
    fn drop(&mut self) {
        self.put_back();
    }
}

fn key(action: &StoreAction) -> Option<(Kind, String)> {
    match action.action.as_ref()? {
        store_action::Action::Put(object) => object_key(object),
        store_action::Action::Delete(r) => Some((r.kind(), r.id.clone())),
    }
}

/// The object `k` names in `state`, whole (the cluster whatever its id:
/// putting it back restores exactly what was there).
fn get(state: &State, (kind, id): &(Kind, String)) -> Option<Object> {
    use object::Object as O;
    let object = match kind {
        Kind::Node => O::Node(state.nodes.get(id)?.clone()),
        Kind::Service => O::Service(state.services.get(id)?.clone()),
        Kind::Task => O::Task(state.tasks.get(id)?.clone()),
        Kind::Network => O::Network(state.networks.get(id)?.clone()),
        Kind::Secret => O::Secret(state.secrets.get(id)?.clone()),
        Kind::Config => O::Config(state.configs.get(id)?.clone()),
        Kind::Cluster => O::Cluster(state.cluster.clone()?),
    };
    Some(Object {
        object: Some(object),
    })
}

/// The version `object` had before the group, as the state machine sees
/// it for key `k` (a cluster object of another id counts as none).
fn version(object: &Object, k: &(Kind, String)) -> u64 {
    use object::Object as O;
    if object_key(object).as_ref() != Some(k) {
        return 0;
    }
    let meta = match object.object.as_ref() {
        Some(O::Node(o)) => &o.meta,
        Some(O::Service(o)) => &o.meta,
        Some(O::Task(o)) => &o.meta,
        Some(O::Network(o)) => &o.meta,
        Some(O::Secret(o)) => &o.meta,
        Some(O::Config(o)) => &o.meta,
        Some(O::Cluster(o)) => &o.meta,
        None => return 0,
    };
    meta.as_ref().map_or(0, |m| m.version)
}

/// The queue of callers; the writer that serves it runs until the last
/// handle is dropped.
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Request>,
}

impl GroupCommit {
    /// Starts the writer: it builds groups on `store`'s state and hands
    /// each to `propose`, which returns once the group is applied (or
    /// failed).
    pub fn start<P, F>(store: Store, propose: P) -> Self
    where
        P: Fn(StoreBatch) -> F + Send + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let (queue, requests) = mpsc::unbounded_channel();
        tokio::spawn(write_groups(store, requests, propose));
        Self { queue }
    }

    /// Runs `build` on the state with every earlier write applied and
    /// commits its batch with the group it joins, running it again (up to
    /// [`MAX_RETRIES`] times) when the group met a conflict. `build`
    /// returns `Ok(None)` when there is nothing to write.
    pub async fn update<T, E>(
        &self,
        mut build: impl FnMut(&State) -> Result<Option<(Batch, T)>, E>,
    ) -> Result<Option<T>, E>
    where
        E: From<WriteError>,
    {
        let mut attempts = 0;
        loop {
            let (turn, my_turn) = oneshot::channel();
            let (outcome, committed) = oneshot::channel();
            self.queue
                .send(Request { turn, outcome })
                .map_err(|_| shutting_down())?;
            let Turn { working, joined } = my_turn.await.map_err(|_| shutting_down())?;
            // From here to the end of the turn nothing awaits: the turn
            // cannot be cancelled half-way.
            let (turned, saw_pending) = {
                let mut slot = working.lock().unwrap_or_else(|e| e.into_inner());
                let Some(working) = slot.as_mut() else {
                    return Err(shutting_down().into());
                };
                let saw_pending = !working.actions.is_empty();
                let turned = match build(&working.state) {
                    Err(e) => Turned::Answer(Err(e)),
                    Ok(None) => Turned::Answer(Ok(None)),
                    Ok(Some((batch, value))) if batch.is_empty() => Turned::Answer(Ok(Some(value))),
                    Ok(Some((batch, value))) => match working.add(batch.into_proto()) {
                        Ok(()) => Turned::Wrote(value),
                        Err(WriteError::Conflict(_)) if attempts < MAX_RETRIES => Turned::Again,
                        Err(e) => Turned::Answer(Err(e.into())),
                    },
                };
                (turned, saw_pending)
            };
            let answer = match turned {
                Turned::Again => {
                    attempts += 1;
                    continue;
                }
                Turned::Wrote(value) => Ok(Some(value)),
                // Decided on committed state only: nothing to wait for.
                Turned::Answer(answer) if !saw_pending => return answer,
                // Decided on writes of the group not yet committed (a
                // refusal because an earlier caller deleted the object, a
                // read of what it wrote): answered only once they are, or
                // the caller could act on a write that then fails, or read
                // the committed state back without it (chaos seed 1: an
                // update refused NotFound, then a read still finding it).
                Turned::Answer(answer) => answer,
            };
            let _ = joined.send(());
            match committed.await.map_err(|_| shutting_down())? {
                Ok(_) => return answer,
                // The group it wrote in, or decided on, was not applied.
                Err(WriteError::Conflict(_)) if attempts < MAX_RETRIES => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// What a caller's turn came to.
enum Turned<T, E> {
    /// Its batch joined the group.
    Wrote(T),
    /// Its answer, with nothing to write.
    Answer(Result<Option<T>, E>),
    /// Its batch conflicted with the working copy: run it again.
    Again,
}

fn shutting_down() -> WriteError {
    WriteError::Raft("the manager is shutting down".into())
}

async fn write_groups<P, F>(
    store: Store,
    mut requests: mpsc::UnboundedReceiver<Request>,
    propose: P,
) where
    P: Fn(StoreBatch) -> F,
    F: Future<Output = Outcome>,
{
    let slot = Arc::new(Mutex::new(None::<Working>));
    while let Some(first) = requests.recv().await {
        *slot.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Working::new(store.write_owned().await));
        let mut members = Vec::new();
        let mut next = Some(first);
        while let Some(Request { turn, outcome }) = next.take() {
            let (joined, has_joined) = oneshot::channel();
            let given = turn.send(Turn {
                working: slot.clone(),
                joined,
            });
            // A caller that went away (its call was cancelled) is skipped;
            // one that wrote nothing, or whose batch conflicted with the
            // working copy, dropped `joined`.
            if given.is_ok() && has_joined.await.is_ok() {
                members.push(outcome);
            }
            let bytes = slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map_or(0, |w| w.bytes);
            if members.len() >= MAX_MEMBERS || bytes >= MAX_GROUP_BYTES {
                break;
            }
            next = requests.try_recv().ok();
        }
        let working = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        // The state is put back and its lock released before the round.
        let Some(batch) = working.map(Working::finish) else {
            continue;
        };
        if members.is_empty() {
            continue;
        }
        let outcome = propose(batch).await;
        for member in members {
            let _ = member.send(outcome.clone());
        }
    }
}

#[cfg(test)]
#[path = "group_commit_tests.rs"]
mod tests;
