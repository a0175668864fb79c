//! The state machine: applies batches to the in-memory [`Store`] and writes
//! the changed objects through to redb.
//!
//! The state file trails memory by up to [`FLUSH_INTERVAL`], and its
//! commits are not fsynced: the fsynced log holds every committed entry, and
//! openraft re-applies the entries after the last applied id the state file
//! recorded (written in the same transaction as the objects). Writing once
//! per interval instead of once per entry is what lets the store keep up
//! with many concurrent writers. Snapshots flush first and are written
//! durably (a durable redb commit makes every earlier commit durable), so the
//! state file never falls behind the last snapshot, behind which the log is
//! purged.
//!
//! Every object and the snapshot body are sealed with this manager's data
//! key (`crate::encryption`) on their way to the file, bound to their key
//! (an object) or to the snapshot's id; the file holds no plaintext object.
//! Snapshots leave here (to openraft, to followers) in plaintext.
//!
//! A snapshot's encoding, sealing and file writes run on a blocking thread,
//! never on the runtime's workers. A store of ~275,000 objects makes a
//! 90 MB snapshot, and building it in place held a worker for about a
//! second. Every manager builds its own at the same index, so all three
//! stopped answering Raft's heartbeats at once and an election followed
//! mid-load (`shoal-bench control-plane`, 2026-12-03).

use std::{collections::BTreeMap, io::Cursor, path::Path, sync::Arc};

use anyhow::Context;
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, storage::RaftStateMachine,
};
use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use shoal_api::pb::{Kind, Object};

use super::{ApplyResult, RaftId, TypeConfig};
use crate::{
    encryption::{Cipher, files},
    store::{Change, State, Store, StoreEvent, state::object_key},
};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";
const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_DATA: &str = "snapshot_data";

type Result<T> = std::result::Result<T, StorageError<RaftId>>;
type Membership = StoredMembership<RaftId, openraft::BasicNode>;

/// What a snapshot holds besides openraft's metadata.
#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotBody {
    #[prost(message, repeated, tag = "1")]
    objects: Vec<Object>,
}

/// The last applied id and membership. Changed only while the store's write
/// lock is held, so a reader holding the read lock sees them match the state.
#[derive(Clone, Default)]
struct Progress {
    applied: Option<LogId<RaftId>>,
    membership: Membership,
}

/// How long applied changes may wait in memory before the state file gets them.
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Applied changes the state file does not hold yet, by object key (the
/// latest write of an object wins), and the progress they bring it to.
/// Each object is encoded into a [`Cipher::buffer`], sealed in place when
/// it is written.
#[derive(Default)]
struct Unwritten {
    objects: BTreeMap<String, Option<Vec<u8>>>,
    progress: Option<Progress>,
}

#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    cipher: Arc<Cipher>,
    store: Store,
    progress: Arc<std::sync::Mutex<Progress>>,
    unwritten: Arc<std::sync::Mutex<Unwritten>>,
}

/// What an object's seal is bound to: its key in the state file.
fn object_context(key: &str) -> String {
    format!("state/{key}")
}

/// What a snapshot body's seal is bound to.
const SNAPSHOT_CONTEXT: &[u8] = b"snapshot";

fn seal_object(cipher: &Cipher, key: &str, object: &Object) -> anyhow::Result<Vec<u8>> {
    Ok(cipher.seal_buffer(object_context(key).as_bytes(), encode_for_sealing(object))?)
}

/// `object`'s protobuf in a buffer [`Cipher::seal_buffer`] seals in place.
fn encode_for_sealing(object: &Object) -> Vec<u8> {
    let mut buffer = Cipher::buffer(object.encoded_len());
    object
        .encode(&mut buffer)
        .expect("a Vec grows to hold any message");
    buffer
}

fn open_object(cipher: &Cipher, key: &str, sealed: &[u8]) -> anyhow::Result<Object> {
    let bytes = cipher.open(
        object_context(key).as_bytes(),
        sealed,
        &format!("state object {key}"),
    )?;
    Ok(Object::decode(bytes.as_slice())?)
}

fn open_snapshot(cipher: &Cipher, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(cipher.open(SNAPSHOT_CONTEXT, sealed, "the snapshot")?)
}

/// Writes what is unwritten; a no-op when nothing is.
fn flush(
    db: &Database,
    cipher: &Cipher,
    unwritten: &std::sync::Mutex<Unwritten>,
) -> anyhow::Result<()> {
    let taken = std::mem::take(&mut *unwritten.lock().unwrap_or_else(|e| e.into_inner()));
    let Some(progress) = taken.progress else {
        return Ok(());
    };
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::None)?;
    {
        let mut objects = txn.open_table(OBJECTS)?;
        for (key, value) in taken.objects {
            match value {
                Some(buffer) => {
                    let sealed = cipher.seal_buffer(object_context(&key).as_bytes(), buffer)?;
                    drop(objects.insert(key.as_str(), sealed.as_slice())?)
                }
                None => drop(objects.remove(key.as_str())?),
            }
        }
        write_progress(&mut txn.open_table(META)?, &progress)?;
    }
    txn.commit()?;
    Ok(())
}

/// The applied id and membership, in the state file's meta table.
fn write_progress(meta: &mut redb::Table<&str, &[u8]>, progress: &Progress) -> anyhow::Result<()> {
    meta.insert(APPLIED, serde_json::to_vec(&progress.applied)?.as_slice())?;
    meta.insert(
        MEMBERSHIP,
        serde_json::to_vec(&progress.membership)?.as_slice(),
    )?;
    Ok(())
}

fn key(kind: Kind, id: &str) -> String {
    format!("{}/{id}", kind.as_str_name())
}

fn fail(e: impl std::fmt::Display) -> openraft::AnyError {
    openraft::AnyError::error(e.to_string())
}

/// Runs `work` on a blocking thread (see the module comment).
async fn off_the_runtime<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await?
}

impl StateMachine {
    /// Opens the state file (or creates it, `0600`), its values sealed with
    /// `cipher`, and loads every object into `store`.
    pub async fn open(path: &Path, store: Store, cipher: Arc<Cipher>) -> anyhow::Result<Self> {
        files::private_file(path)?;
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(OBJECTS)?;
        txn.open_table(META)?;
        txn.commit()?;
        let mut state = State::default();
        let (applied, membership): (Option<LogId<RaftId>>, Membership) = {
            let txn = db.begin_read()?;
            for item in txn.open_table(OBJECTS)?.iter()? {
                let (key, value) = item?;
                state.put(open_object(&cipher, key.value(), value.value())?);
            }
            let meta = txn.open_table(META)?;
            let applied = match meta.get(APPLIED)? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => None,
            };
            let membership = match meta.get(MEMBERSHIP)? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => Membership::default(),
            };
            (applied, membership)
        };
        let mut progress = Progress {
            applied,
            membership,
        };
        // A state file behind the snapshot (which never happens when the
        // snapshot flushed first) starts from the snapshot instead.
        {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            if let (Some(m), Some(data)) = (meta.get(SNAPSHOT_META)?, meta.get(SNAPSHOT_DATA)?) {
                let snapshot: SnapshotMeta<RaftId, openraft::BasicNode> =
                    serde_json::from_slice(m.value())?;
                if snapshot.last_log_id > progress.applied {
                    tracing::warn!("state file behind its snapshot: loading the snapshot");
                    state = State::default();
                    let body = open_snapshot(&cipher, data.value())?;
                    for object in SnapshotBody::decode(body.as_slice())?.objects {
                        state.put(object);
                    }
                    progress = Progress {
                        applied: snapshot.last_log_id,
                        membership: snapshot.last_membership,
                    };
                }
            }
        }
        *store.write().await = state;
        store.publish_reset(progress.applied.map(|a| a.index).unwrap_or(0));
        let db = Arc::new(db);
        let unwritten: Arc<std::sync::Mutex<Unwritten>> = Arc::default();
        // Flushes in the background; ends when the state machine is gone.
        let (weak_db, weak_unwritten) = (Arc::downgrade(&db), Arc::downgrade(&unwritten));
        let flush_cipher = cipher.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FLUSH_INTERVAL).await;
                let (Some(db), Some(unwritten)) = (weak_db.upgrade(), weak_unwritten.upgrade())
                else {
                    return;
                };
                let cipher = flush_cipher.clone();
                let result =
                    tokio::task::spawn_blocking(move || flush(&db, &cipher, &unwritten)).await;
                if let Ok(Err(error)) = result {
                    tracing::error!(error = %format!("{error:#}"), "writing the state file");
                }
            }
        });
        Ok(Self {
            db,
            cipher,
            store,
            progress: Arc::new(std::sync::Mutex::new(progress)),
            unwritten,
        })
    }

    fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_progress(&self, progress: Progress) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = progress;
    }

    /// Queues applied changes for the state file.
    fn remember<'a>(&self, changes: impl Iterator<Item = &'a Change>, progress: &Progress) {
        let mut unwritten = self.unwritten.lock().unwrap_or_else(|e| e.into_inner());
        for change in changes {
            match change {
                Change::Put(object) => {
                    if let Some((kind, id)) = object_key(object) {
                        unwritten
                            .objects
                            .insert(key(kind, &id), Some(encode_for_sealing(object)));
                    }
                }
                Change::Delete(r) => {
                    unwritten.objects.insert(key(r.kind(), &r.id), None);
                }
            }
        }
        unwritten.progress = Some(progress.clone());
    }

    fn current_snapshot(&self) -> anyhow::Result<Option<Snapshot<TypeConfig>>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        let (Some(meta), Some(data)) = (table.get(SNAPSHOT_META)?, table.get(SNAPSHOT_DATA)?)
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta: serde_json::from_slice(meta.value())?,
            snapshot: Box::new(Cursor::new(open_snapshot(&self.cipher, data.value())?)),
        }))
    }

    fn save_snapshot(
        &self,
        meta: &SnapshotMeta<RaftId, openraft::BasicNode>,
        data: &[u8],
    ) -> anyhow::Result<()> {
        let sealed = self.cipher.seal(SNAPSHOT_CONTEXT, data)?;
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(META)?;
            table.insert(SNAPSHOT_META, serde_json::to_vec(meta)?.as_slice())?;
            table.insert(SNAPSHOT_DATA, sealed.as_slice())?;
        }
        txn.commit()?; // durable: see the module comment
        Ok(())
    }

    /// Replaces the state file's objects and progress with an installed
    /// snapshot's, and keeps the snapshot (one durable commit).
    fn write_installed(
        &self,
        state: &State,
        progress: &Progress,
        meta: &SnapshotMeta<RaftId, openraft::BasicNode>,
        data: &[u8],
    ) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut objects = txn.open_table(OBJECTS)?;
            objects.retain(|_, _| false)?;
            for object in state.objects() {
                if let Some((kind, id)) = object_key(&object) {
                    let key = key(kind, &id);
                    let sealed = seal_object(&self.cipher, &key, &object)?;
                    objects.insert(key.as_str(), sealed.as_slice())?;
                }
            }
            let mut table = txn.open_table(META)?;
            write_progress(&mut table, progress)?;
            table.insert(SNAPSHOT_META, serde_json::to_vec(meta)?.as_slice())?;
            let sealed = self.cipher.seal(SNAPSHOT_CONTEXT, data)?;
            table.insert(SNAPSHOT_DATA, sealed.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        // Progress changes only under the write lock: read with the lock
        // held, it matches the objects copied under it.
        let state = self.store.read_owned().await;
        let progress = self.progress();
        let last = progress.applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: progress.membership,
            snapshot_id: format!(
                "{}-{}",
                last.map(|l| l.leader_id.term).unwrap_or(0),
                last.map(|l| l.index).unwrap_or(0)
            ),
        };
        let machine = self.clone();
        let saved = meta.clone();
        let data = off_the_runtime(move || {
            let body = SnapshotBody {
                objects: state.objects().collect(),
            };
            drop(state);
            // The state file must not trail the snapshot (see the module comment).
            flush(&machine.db, &machine.cipher, &machine.unwritten)
                .context("writing the state file before the snapshot")?;
            let data = body.encode_to_vec();
            machine.save_snapshot(&saved, &data)?;
            Ok(data)
        })
        .await
        .map_err(|e| {
            StorageIOError::write_snapshot(Some(meta.signature()), fail(format!("{e:#}")))
        })?;
        tracing::info!(
            index = last.map(|l| l.index).unwrap_or(0),
            bytes = data.len(),
            "snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<RaftId>>, Membership)> {
        let progress = self.progress();
        Ok((progress.applied, progress.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        let mut events = Vec::new();
        let mut progress = self.progress();
        {
            let mut state = self.store.write().await;
            for entry in entries {
                let index = entry.log_id.index;
                progress.applied = Some(entry.log_id);
                let mut result = ApplyResult {
                    index,
                    conflicts: Vec::new(),
                };
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(proposal) => {
                        for batch in &proposal.0.batches {
                            match state.apply(index, batch) {
                                Ok(changes) => {
                                    events.push(StoreEvent { index, changes });
                                    result.conflicts.push(None);
                                }
                                Err(conflict) => result.conflicts.push(Some(conflict.to_string())),
                            }
                        }
                    }
                    EntryPayload::Membership(m) => {
                        progress.membership = StoredMembership::new(Some(entry.log_id), m);
                    }
                }
                results.push(result);
            }
            self.set_progress(progress.clone());
        }
        self.remember(events.iter().flat_map(|e| &e.changes), &progress);
        for event in events {
            self.store.publish(event);
        }
        // One wake-up for the watchers per apply call, not per batch.
        self.store
            .publish_applied(progress.applied.map(|l| l.index).unwrap_or(0));
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        let progress = Progress {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        // What was queued is older than the snapshot that replaces it.
        *self.unwritten.lock().unwrap_or_else(|e| e.into_inner()) = Unwritten::default();
        let (machine, installed, written) = (self.clone(), meta.clone(), progress.clone());
        let state = off_the_runtime(move || {
            let body = SnapshotBody::decode(data.as_slice()).context("decoding the snapshot")?;
            let mut state = State::default();
            for object in body.objects {
                state.put(object);
            }
            machine.write_installed(&state, &written, &installed, &data)?;
            Ok(state)
        })
        .await
        .map_err(|e| {
            StorageIOError::write_snapshot(Some(meta.signature()), fail(format!("{e:#}")))
        })?;
        let index = progress.applied.map(|l| l.index).unwrap_or(0);
        {
            let mut guard = self.store.write().await;
            *guard = state;
            self.set_progress(progress);
        }
        self.store.publish_reset(index);
        tracing::info!(index, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let machine = self.clone();
        off_the_runtime(move || machine.current_snapshot())
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, fail(format!("{e:#}"))).into())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use openraft::RaftSnapshotBuilder;
    use shoal_api::pb::{Config, ConfigSpec, Meta, object};

    use super::*;
    use crate::encryption::keys::SecretKey;

    /// The runtime's one thread stays free while a snapshot is built: a
    /// task that only counts and yields keeps counting meanwhile. Built
    /// in place (as before), the count would stop for the whole build;
    /// the counter only moves at the build's few await points.
    #[tokio::test(flavor = "current_thread")]
    async fn a_snapshot_is_built_off_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let cipher = Arc::new(Cipher::new(&SecretKey::generate().unwrap()).unwrap());
        let store = Store::new();
        let mut machine = StateMachine::open(&dir.path().join("state.redb"), store.clone(), cipher)
            .await
            .unwrap();
        {
            let mut state = store.write().await;
            for i in 0..20_000 {
                let name = format!("config-{i:05}");
                state.put(Object {
                    object: Some(object::Object::Config(Config {
                        meta: Some(Meta {
                            id: name.clone(),
                            ..Default::default()
                        }),
                        spec: Some(ConfigSpec {
                            name,
                            data: vec![b'v'; 256],
                            ..Default::default()
                        }),
                    })),
                });
            }
        }
        let counted = Arc::new(AtomicU64::new(0));
        let counter = counted.clone();
        let counting = tokio::spawn(async move {
            loop {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        });
        tokio::task::yield_now().await;
        let before = counted.load(Ordering::Relaxed);
        let snapshot = machine.build_snapshot().await.unwrap();
        let during = counted.load(Ordering::Relaxed) - before;
        counting.abort();

        let body = SnapshotBody::decode(snapshot.snapshot.get_ref().as_slice()).unwrap();
        assert_eq!(body.objects.len(), 20_000);
        // Thousands of yields in the ~10+ ms of encoding, sealing and an
        // fsync'd write; in place there would be a handful.
        assert!(during > 1_000, "the runtime ran {during} other steps");
        // And it is the snapshot the state file keeps.
        let kept = machine.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(kept.meta, snapshot.meta);
    }
}
