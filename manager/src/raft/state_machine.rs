//! The state machine: applies batches to the in-memory [`Store`] and writes
//! the changed objects through to redb.
//!
//! The state file trails memory by up to [`FLUSH_INTERVAL`], and its
//! commits are not fsynced: the fsynced log holds every committed entry, and
//! openraft re-applies the entries after the last applied id the state file
//! recorded (written in the same transaction as the objects). Writing once
//! per interval instead of once per entry is what lets the store keep up
//! with many concurrent writers.
//!
//! **The state file is the snapshot**, as etcd's bbolt file is. Building a
//! snapshot writes what is unwritten in one durable commit (which makes
//! every earlier commit durable) that also records the snapshot's meta, and
//! keeps a redb read transaction open at that commit. redb's reads see the
//! file as it was when they began, so that transaction is the snapshot's
//! content for as long as it is held, while later writes go on around it.
//! The objects are copied out of it only when a follower needs them. The
//! log is purged only behind a snapshot built here, a durable commit, so
//! the file never falls behind what the log still holds. A follower that
//! installs a leader's snapshot purges its log only after the install: the
//! install commits durably before it returns, and openraft 0.10 holds the
//! purge until the install is done (`Command::PurgeLog` waits on
//! `Condition::Snapshot`; 0.9 could purge first).
//!
//! Before this, every manager copied its whole store at every snapshot
//! point, encoded it, sealed it and wrote it durably: 90 MB for ~275,000
//! objects, all three managers on one disk at the same index, and Raft's
//! fsyncs waited behind them (the write rate fell to ~1× etcd's in those
//! rounds; `shoal-bench control-plane`, 2026-12-03). Now taking a snapshot
//! costs one flush. Serving one (to a follower, and to openraft at start,
//! which wants only its meta) still reads and decodes every object, as
//! reading the old copy did.
//!
//! Every object is sealed with this manager's data key
//! (`crate::encryption`) on its way to the file, bound to its key; the file
//! holds no plaintext object. Snapshots leave here (to openraft, to
//! followers) in plaintext. Once the manager runs, all file work runs on a
//! blocking thread, never on the runtime's workers, which answer Raft's
//! heartbeats.

use std::{collections::BTreeMap, io::Cursor, path::Path, sync::Arc};

use anyhow::Context;
use futures_util::TryStreamExt;
use openraft::{
    EntryPayload, RaftSnapshotBuilder,
    storage::{EntryResponder, RaftStateMachine},
};
use prost::Message;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use shoal_api::pb::{Kind, Object};

use super::{
    ApplyResult, Entry, LogId, Snapshot, SnapshotData, SnapshotMeta as SnapshotMetadata,
    StoredMembership as Membership, TypeConfig,
};
use crate::{
    encryption::{Cipher, files},
    store::{Access, Change, State, Store, StoreEvent, state::object_key},
};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";
const SNAPSHOT_META: &str = "snapshot_meta";
/// Where earlier versions kept a sealed copy of the whole store; removed at
/// the next snapshot.
const OLD_SNAPSHOT_DATA: &str = "snapshot_data";

type Result<T> = std::io::Result<T>;

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
    applied: Option<LogId>,
    membership: Membership,
}

impl Progress {
    fn snapshot_meta(&self) -> SnapshotMetadata {
        let last = self.applied;
        SnapshotMetadata {
            last_log_id: last,
            last_membership: self.membership.clone(),
        }
    }
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

/// The current snapshot: a read of the state file at a durable commit.
struct Held {
    meta: SnapshotMetadata,
    read: ReadTransaction,
}

/// The state file and what is on its way to it.
struct File {
    // Declared before `db` so that it is dropped first: the database then
    // closes with no read of it open.
    snapshot: std::sync::Mutex<Option<Arc<Held>>>,
    db: Database,
    cipher: Arc<Cipher>,
    unwritten: std::sync::Mutex<Unwritten>,
    /// Held by whoever writes the file, from taking the unwritten changes
    /// to the commit (and, for a snapshot, to the read that holds it): the
    /// file's commits then land in the order of the changes they carry,
    /// and a snapshot's read sees exactly its durable commit.
    writing: std::sync::Mutex<()>,
    /// Why a write failed after taking changes it then did not write. Every
    /// later write is refused: it would record an applied id past changes
    /// the file never got, and the file is what followers are sent. A
    /// restarted manager applies them again from the log.
    failed: std::sync::Mutex<Option<String>>,
}

#[derive(Clone)]
pub struct StateMachine {
    file: Arc<File>,
    store: Store,
    progress: Arc<std::sync::Mutex<Progress>>,
}

/// What an object's seal is bound to: its key in the state file.
fn object_context(key: &str) -> String {
    format!("state/{key}")
}

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

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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

/// The applied id and membership the state file records.
fn read_progress(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> anyhow::Result<Progress> {
    Ok(Progress {
        applied: match meta.get(APPLIED)? {
            Some(v) => serde_json::from_slice(v.value())?,
            None => None,
        },
        membership: match meta.get(MEMBERSHIP)? {
            Some(v) => serde_json::from_slice(v.value())?,
            None => Membership::default(),
        },
    })
}

impl File {
    /// Writes what is unwritten into `txn` and returns the progress the
    /// file is at once `txn` commits. Call with `writing` held.
    fn write_unwritten(&self, txn: &WriteTransaction) -> anyhow::Result<Progress> {
        let taken = std::mem::take(&mut *lock(&self.unwritten));
        let mut meta = txn.open_table(META)?;
        let Some(progress) = taken.progress else {
            return read_progress(&meta);
        };
        let mut objects = txn.open_table(OBJECTS)?;
        for (key, value) in taken.objects {
            match value {
                Some(buffer) => {
                    let sealed = self
                        .cipher
                        .seal_buffer(object_context(&key).as_bytes(), buffer)?;
                    drop(objects.insert(key.as_str(), sealed.as_slice())?)
                }
                None => drop(objects.remove(key.as_str())?),
            }
        }
        write_progress(&mut meta, &progress)?;
        Ok(progress)
    }

    /// Writes what is unwritten, not durably; a no-op when nothing is.
    fn flush(&self) -> anyhow::Result<()> {
        let _writing = lock(&self.writing);
        if lock(&self.unwritten).progress.is_none() {
            return Ok(());
        }
        self.or_fail(|| {
            let started = std::time::Instant::now();
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::None)?;
            self.write_unwritten(&txn)?;
            txn.commit()?;
            warn_if_slow("writing the state file", started);
            Ok(())
        })
    }

    /// Makes the file durable where it is, with everything unwritten, and
    /// holds it there as the snapshot (see the module comment). `None`
    /// while nothing was ever applied.
    fn take_snapshot(&self) -> anyhow::Result<Option<SnapshotMetadata>> {
        let _writing = lock(&self.writing);
        self.or_fail(|| {
            let started = std::time::Instant::now();
            let txn = self.db.begin_write()?; // durable
            let progress = self.write_unwritten(&txn)?;
            if progress.applied.is_none() {
                return Ok(None);
            }
            let meta = progress.snapshot_meta();
            {
                let mut table = txn.open_table(META)?;
                table.insert(SNAPSHOT_META, serde_json::to_vec(&meta)?.as_slice())?;
                table.remove(OLD_SNAPSHOT_DATA)?;
            }
            txn.commit()?;
            warn_if_slow("taking a snapshot", started);
            self.hold(meta.clone())?;
            Ok(Some(meta))
        })
    }

    /// Runs a write that takes the unwritten changes (with `writing`
    /// held); refuses it after an earlier one failed, and remembers its
    /// failure (see `failed`).
    fn or_fail<T>(&self, write: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        if let Some(earlier) = lock(&self.failed).as_ref() {
            anyhow::bail!(
                "the state file missed changes when a write failed ({earlier}); restart the manager to apply them again from the log"
            );
        }
        write().inspect_err(|error| *lock(&self.failed) = Some(format!("{error:#}")))
    }

    /// Holds a read of the file as it is now as the snapshot `meta`
    /// describes. Call with `writing` held, right after the durable commit.
    fn hold(&self, meta: SnapshotMetadata) -> anyhow::Result<()> {
        let read = self.db.begin_read()?;
        *lock(&self.snapshot) = Some(Arc::new(Held { meta, read }));
        Ok(())
    }

    /// The held snapshot with its objects, read out of the file.
    fn current_snapshot(&self) -> anyhow::Result<Option<Snapshot>> {
        let Some(held) = lock(&self.snapshot).clone() else {
            return Ok(None);
        };
        let mut body = SnapshotBody::default();
        for item in held.read.open_table(OBJECTS)?.iter()? {
            let (key, value) = item?;
            body.objects
                .push(open_object(&self.cipher, key.value(), value.value())?);
        }
        Ok(Some(Snapshot {
            meta: held.meta.clone(),
            snapshot: Cursor::new(body.encode_to_vec()),
        }))
    }

    /// Replaces the file's objects and progress with an installed
    /// snapshot's in one durable commit, and holds it as the snapshot.
    fn install(&self, state: &State, progress: &Progress) -> anyhow::Result<()> {
        let _writing = lock(&self.writing);
        // What was queued is older than the snapshot that replaces it.
        *lock(&self.unwritten) = Unwritten::default();
        let meta = progress.snapshot_meta();
        let written = (|| {
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
                table.insert(SNAPSHOT_META, serde_json::to_vec(&meta)?.as_slice())?;
                table.remove(OLD_SNAPSHOT_DATA)?;
            }
            txn.commit()?;
            self.hold(meta)
        })();
        // Once installed, the file is the snapshot's: whatever an earlier
        // write missed is replaced. Failed, it missed what was cleared.
        *lock(&self.failed) = written.as_ref().err().map(|e| format!("{e:#}"));
        written
    }
}

/// Logs a write of the state file that took longer than a flush interval
/// many times over: the disk is falling behind.
fn warn_if_slow(what: &str, started: std::time::Instant) {
    let took = started.elapsed();
    if took > 4 * FLUSH_INTERVAL {
        tracing::warn!(took_ms = took.as_millis() as u64, "slow: {what}");
    }
}

fn key(kind: Kind, id: &str) -> String {
    format!("{}/{id}", kind.as_str_name())
}

/// openraft takes storage errors as `io::Error`; the context chain goes
/// into its text.
fn io_error(e: anyhow::Error) -> std::io::Error {
    std::io::Error::other(format!("{e:#}"))
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
        let (progress, had_snapshot) = {
            let txn = db.begin_read()?;
            for item in txn.open_table(OBJECTS)?.iter()? {
                let (key, value) = item?;
                state.put(open_object(&cipher, key.value(), value.value())?);
            }
            let meta = txn.open_table(META)?;
            (read_progress(&meta)?, meta.get(SNAPSHOT_META)?.is_some())
        };
        let file = Arc::new(File {
            snapshot: Default::default(),
            db,
            cipher,
            unwritten: Default::default(),
            writing: Default::default(),
            failed: Default::default(),
        });
        // The snapshot a restarted manager offers is the file where it
        // stopped: at or after its last snapshot, since only the commits
        // after a durable one can be lost.
        if had_snapshot {
            file.take_snapshot()
                .context("holding the state file as the snapshot")?;
        }
        store.refresh_access(&state);
        *store.write().await = state;
        store.publish_reset(progress.applied.map(|a| a.index).unwrap_or(0));
        // Flushes in the background; ends when the state machine is gone.
        let weak = Arc::downgrade(&file);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FLUSH_INTERVAL).await;
                let Some(file) = weak.upgrade() else {
                    return;
                };
                let result = tokio::task::spawn_blocking(move || file.flush()).await;
                if let Ok(Err(error)) = result {
                    tracing::error!(error = %format!("{error:#}"), "writing the state file");
                }
            }
        });
        Ok(Self {
            file,
            store,
            progress: Arc::new(std::sync::Mutex::new(progress)),
        })
    }

    fn progress(&self) -> Progress {
        lock(&self.progress).clone()
    }

    fn set_progress(&self, progress: Progress) {
        *lock(&self.progress) = progress;
    }

    /// Queues applied changes for the state file.
    fn remember<'a>(&self, changes: impl Iterator<Item = &'a Change>, progress: &Progress) {
        let mut unwritten = lock(&self.file.unwritten);
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
}

impl StateMachine {
    /// Applies committed entries, in order, under one hold of the store's
    /// write lock, and publishes their changes; what each returns to its
    /// proposer.
    async fn apply_entries(&mut self, entries: Vec<Entry>) -> Vec<ApplyResult> {
        let mut results = Vec::with_capacity(entries.len());
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
                        // One event per entry, not per batch: an entry of
                        // 1,000 writers' load holds ~500 batches, and the
                        // events' channel holds 4,096. Sent per batch, a few
                        // applies overflowed it before a subscriber ran; the
                        // subscribers then re-read the whole state, under
                        // its read lock, and with ~500,000 objects no write
                        // was applied for 10 s (`shoal-bench control-plane`,
                        // 2026-12-03).
                        let mut changes = Vec::new();
                        for batch in &proposal.0.batches {
                            match state.apply(index, batch) {
                                Ok(applied) => {
                                    changes.extend(applied);
                                    result.conflicts.push(None);
                                }
                                Err(conflict) => result.conflicts.push(Some(conflict.to_string())),
                            }
                        }
                        events.push(StoreEvent { index, changes });
                    }
                    EntryPayload::Membership(m) => {
                        progress.membership = Membership::new(Some(entry.log_id), m);
                    }
                }
                results.push(result);
            }
            if Access::touched_by(events.iter().flat_map(|e| &e.changes)) {
                self.store.refresh_access(&state);
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
        results
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    /// Makes the state file durable where it is and holds it as the
    /// snapshot: the store as of an applied id at most one apply call behind
    /// memory's, which openraft allows. No object is copied here.
    ///
    /// The snapshot returned carries the meta and no data: openraft keeps
    /// only the meta of a snapshot it had built (`core/sm/worker.rs`) and asks [`RaftStateMachine::get_current_snapshot`]
    /// for the data when a follower needs it, which reads the held snapshot
    /// out of the file.
    async fn build_snapshot(&mut self) -> Result<Snapshot> {
        let file = self.file.clone();
        let meta = off_the_runtime(move || file.take_snapshot())
            .await
            .map_err(io_error)?
            .unwrap_or_default();
        if let Some(last) = meta.last_log_id {
            tracing::info!(index = last.index, "snapshot taken");
        }
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(Vec::new()),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership)> {
        let progress = self.progress();
        Ok((progress.applied, progress.membership))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<()>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        // All of them under one hold of the store's lock; the proposers are
        // answered once the changes are published.
        let (entries, responders): (Vec<Entry>, Vec<_>) =
            entries.try_collect::<Vec<_>>().await?.into_iter().unzip();
        let results = self.apply_entries(entries).await;
        for (responder, result) in responders.into_iter().zip(results) {
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetadata,
        snapshot: SnapshotData,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        let progress = Progress {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let (file, written) = (self.file.clone(), progress.clone());
        let state = off_the_runtime(move || {
            let body = SnapshotBody::decode(data.as_slice()).context("decoding the snapshot")?;
            let mut state = State::default();
            for object in body.objects {
                state.put(object);
            }
            file.install(&state, &written)?;
            Ok(state)
        })
        .await
        .map_err(io_error)?;
        let index = progress.applied.map(|l| l.index).unwrap_or(0);
        {
            let mut guard = self.store.write().await;
            self.store.refresh_access(&state);
            *guard = state;
            self.set_progress(progress);
        }
        self.store.publish_reset(index);
        tracing::info!(index, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>> {
        let file = self.file.clone();
        off_the_runtime(move || file.current_snapshot())
            .await
            .map_err(io_error)
    }
}

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;
