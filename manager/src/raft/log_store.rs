//! The Raft log: entries in an append-only file set ([`Wal`]), the vote,
//! the committed id and the last purged id in redb.
//!
//! Group commit: openraft hands the log each entry (or a follower's
//! AppendEntries) on its own and waits for `append` to return before taking
//! the next one, so an fsync per `append` caps writes at one per fsync. Here `append` only
//! queues the entries (readers see them at once) and returns; one writer
//! thread writes everything queued with a single fsync and then tells
//! openraft, through each append's callback, that it is flushed. Truncate,
//! purge and the vote go through the same queue, so the files see every
//! operation in openraft's order. (Older managers kept entries in redb too:
//! they move to the file set the first time the log opens.)
//!
//! Entries are sealed with this manager's data key before they are queued
//! (`crate::encryption`): the file never holds a plaintext entry. The vote,
//! committed and purged ids carry no object data and stay as they are.
//! An entry is encoded in protobuf (`wire`); records written as JSON by
//! older managers are read as they are.
//!
//! Readers find queued entries, and the latest written ones, in memory
//! ([`LogTail`]); only older entries are read from the file.

use std::{
    fmt::Debug,
    ops::RangeBounds,
    path::Path,
    sync::{Arc, Mutex, mpsc},
};

use anyhow::Context;
use openraft::{
    LogState, RaftLogReader,
    storage::{IOFlushed, RaftLogStorage},
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::{
    Entry, LogId, TypeConfig, Vote,
    log_tail::{self, LogTail},
    wal::{Wal, WalReader},
    wire,
};
use crate::encryption::{Cipher, files};

/// Where older managers kept entries; moved to the [`Wal`] on open.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// A write of the log slower than this is logged: every replicated write
/// waits for it, and a follower whose writes take longer than the leader's
/// heartbeat timeout looks gone to it (etcd warns of a slow fdatasync too).
const SLOW_WRITE: std::time::Duration = std::time::Duration::from_millis(100);

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

type Result<T> = std::io::Result<T>;

enum Op {
    Append(Vec<(LogId, Vec<u8>)>, IOFlushed<TypeConfig>),
    /// Remove entries from this index on.
    Truncate(u64, oneshot::Sender<anyhow::Result<()>>),
    /// Remove entries up to this id, and remember it.
    Purge(LogId, oneshot::Sender<anyhow::Result<()>>),
    Vote(Vec<u8>, oneshot::Sender<anyhow::Result<()>>),
    /// Written with the next commit; no one waits for it.
    Committed(Vec<u8>),
}

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    wal: WalReader,
    cipher: Arc<Cipher>,
    writer: mpsc::Sender<Op>,
    /// Entries queued but not yet committed, and the latest committed ones.
    tail: Arc<Mutex<LogTail>>,
}

/// openraft takes storage errors as `io::Error`; the context chain goes
/// into its text.
fn io_error(e: anyhow::Error) -> std::io::Error {
    std::io::Error::other(format!("{e:#}"))
}

impl LogStore {
    /// Opens (or creates, `0600`) the log's metadata at `path` and its
    /// entries in the directory `entries`, sealed with `cipher`.
    pub fn open(path: &Path, entries: &Path, cipher: Arc<Cipher>) -> anyhow::Result<Self> {
        files::private_file(path)?;
        let db = Arc::new(Database::create(path)?);
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        let purged = read_meta::<Option<LogId>>(&db, PURGED)?.flatten();
        let mut wal = Wal::open(entries, purged.map(|p| p.index))?;
        move_entries_from_redb(&db, &mut wal)?;
        let (writer, ops) = mpsc::channel();
        let tail: Arc<Mutex<LogTail>> = Arc::default();
        let (thread_db, thread_tail, reader) = (db.clone(), tail.clone(), wal.reader());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop(&thread_db, &mut wal, &thread_tail, ops))?;
        Ok(Self {
            db,
            wal: reader,
            cipher,
            writer,
            tail,
        })
    }

    fn seal_entry(&self, entry: &Entry) -> anyhow::Result<Vec<u8>> {
        // Encoded straight into the sealed value's buffer.
        let mut buffer = Cipher::buffer(0);
        wire::encode_entry(entry, &mut buffer)?;
        Ok(self
            .cipher
            .seal_buffer(entry_context(entry.log_id.index).as_bytes(), buffer)?)
    }

    fn open_entry(&self, index: u64, sealed: &[u8]) -> anyhow::Result<Entry> {
        let plain = self.cipher.open(
            entry_context(index).as_bytes(),
            sealed,
            &format!("Raft log entry {index}"),
        )?;
        wire::decode_entry(&plain).with_context(|| format!("Raft log entry {index}"))
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, LogTail> {
        lock_tail(&self.tail)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> anyhow::Result<Option<T>> {
        read_meta(&self.db, key)
    }

    /// Queues `op` built around a reply channel and waits for the writer.
    async fn call(
        &self,
        op: impl FnOnce(oneshot::Sender<anyhow::Result<()>>) -> Op,
    ) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(op(tx))
            .map_err(|_| anyhow::anyhow!("the log writer has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the log writer has stopped"))?
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(
    db: &Database,
    key: &str,
) -> anyhow::Result<Option<T>> {
    let txn = db.begin_read()?;
    let table = txn.open_table(META)?;
    Ok(match table.get(key)? {
        Some(v) => Some(serde_json::from_slice(v.value())?),
        None => None,
    })
}

/// Moves entries an older manager kept in redb into the file set (sealed
/// as they are: same seal, same context). A crash midway moves them again.
fn move_entries_from_redb(db: &Database, wal: &mut Wal) -> anyhow::Result<()> {
    let entries: Vec<(u64, Vec<u8>)> = {
        let txn = db.begin_read()?;
        let table = txn.open_table(LOG)?;
        table
            .iter()?
            .map(|item| {
                let (index, value) = item?;
                Ok((index.value(), value.value().to_vec()))
            })
            .collect::<anyhow::Result<_>>()?
    };
    if entries.is_empty() {
        return Ok(());
    }
    tracing::info!(
        entries = entries.len(),
        "moving the Raft log's entries out of redb"
    );
    wal.append(&entries)?;
    wal.sync()?;
    let txn = db.begin_write()?;
    txn.open_table(LOG)?.retain(|_, _| false)?;
    txn.commit()?;
    Ok(())
}

/// What an entry's seal is bound to: its place in the log.
fn entry_context(index: u64) -> String {
    format!("raft-log/{index}")
}

fn lock_tail(tail: &Mutex<LogTail>) -> std::sync::MutexGuard<'_, LogTail> {
    tail.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writer thread: commits whatever is queued, in order, one fsync per
/// batch. Ends when every LogStore handle is gone.
fn write_loop(db: &Database, wal: &mut Wal, tail: &Mutex<LogTail>, ops: mpsc::Receiver<Op>) {
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while let Ok(more) = ops.try_recv() {
            batch.push(more);
        }
        let started = std::time::Instant::now();
        let result = commit(db, wal, &batch);
        let took = started.elapsed();
        if took > SLOW_WRITE {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                operations = batch.len(),
                "slow write of the Raft log (the disk is slower than Raft's timeouts allow)"
            );
        }
        let mut flushed: Vec<LogId> = Vec::new();
        for op in batch {
            let outcome = result
                .as_ref()
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{e:#}"));
            match op {
                Op::Append(entries, callback) => {
                    flushed.extend(entries.iter().map(|(id, _)| *id));
                    callback
                        .io_completed(outcome.map_err(|e| std::io::Error::other(format!("{e:#}"))));
                }
                Op::Truncate(_, reply) | Op::Purge(_, reply) | Op::Vote(_, reply) => {
                    let _ = reply.send(outcome);
                }
                Op::Committed(_) => {}
            }
        }
        if result.is_ok() {
            // Readers would now find these in the file too.
            lock_tail(tail).written(&flushed);
        }
    }
}

/// Entries go to the file set (one fsync for all of them); the vote, the
/// purged and committed ids to redb, durably only when the vote or a purge
/// is among them (the committed id may lag: see `save_committed`). A purge
/// deletes entries' files only once the purged id is durable.
fn commit(db: &Database, wal: &mut Wal, batch: &[Op]) -> anyhow::Result<()> {
    let mut entries_written = false;
    for op in batch {
        match op {
            Op::Append(entries, _) => {
                // The sealed bytes are written where they are, not copied.
                let entries: Vec<(u64, &[u8])> = entries
                    .iter()
                    .map(|(id, bytes)| (id.index, bytes.as_slice()))
                    .collect();
                wal.append(&entries)?;
                entries_written = true;
            }
            Op::Truncate(from, _) => {
                wal.truncate(*from)?;
                entries_written = true;
            }
            Op::Purge(..) | Op::Vote(..) | Op::Committed(_) => {}
        }
    }
    if entries_written {
        wal.sync()?;
    }
    let meta_ops: Vec<&Op> = batch
        .iter()
        .filter(|op| matches!(op, Op::Purge(..) | Op::Vote(..) | Op::Committed(_)))
        .collect();
    if meta_ops.is_empty() {
        return Ok(());
    }
    let durable = meta_ops
        .iter()
        .any(|op| matches!(op, Op::Purge(..) | Op::Vote(..)));
    let mut txn = db.begin_write()?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })?;
    {
        let mut meta = txn.open_table(META)?;
        for op in &meta_ops {
            match op {
                Op::Purge(upto, _) => {
                    meta.insert(PURGED, serde_json::to_vec(&Some(upto))?.as_slice())?;
                }
                Op::Vote(bytes, _) => {
                    meta.insert(VOTE, bytes.as_slice())?;
                }
                Op::Committed(bytes) => {
                    meta.insert(COMMITTED, bytes.as_slice())?;
                }
                Op::Append(..) | Op::Truncate(..) => {}
            }
        }
    }
    txn.commit()?;
    for op in meta_ops {
        if let Op::Purge(upto, _) = op {
            wal.purge(upto.index)?;
        }
    }
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>> {
        // The tail is a contiguous run up to the last entry, and an entry
        // leaves it only once it is in the file: what lies before the tail's
        // first index is in the file.
        let (kept, first) = {
            let tail = self.tail();
            (tail.range(range.clone()), tail.first_index())
        };
        let Some(older) = log_tail::before(&range, first) else {
            return Ok(kept);
        };
        let read = || -> anyhow::Result<Vec<Entry>> {
            self.wal
                .read(older)?
                .into_iter()
                .map(|(index, sealed)| self.open_entry(index, &sealed))
                .collect()
        };
        let mut entries = read().map_err(io_error)?;
        entries.extend(kept);
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>> {
        self.read_meta(VOTE).map_err(io_error)
    }

    /// What replication sends a follower in one AppendEntries: at most
    /// [`super::MAX_BYTES_PER_APPEND`] of writes (and at least one entry).
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>> {
        let mut entries = self.try_get_log_entries(start..end).await?;
        entries.truncate(within_append_budget(&entries));
        Ok(entries)
    }
}

/// How many of `entries`, from the first, fit in one AppendEntries.
fn within_append_budget(entries: &[Entry]) -> usize {
    let mut bytes = 0;
    for (i, entry) in entries.iter().enumerate() {
        if let openraft::EntryPayload::Normal(payload) = &entry.payload {
            bytes += prost::Message::encoded_len(payload.0.as_ref());
        }
        if bytes > super::MAX_BYTES_PER_APPEND && i > 0 {
            return i;
        }
    }
    entries.len()
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let purged: Option<LogId> = self
            .read_meta::<Option<LogId>>(PURGED)
            .map(Option::flatten)
            .map_err(io_error)?;
        let last_pending = self.tail().last_log_id();
        let last_file = || -> anyhow::Result<Option<LogId>> {
            let Some(last) = self.wal.last_index() else {
                return Ok(None);
            };
            Ok(match self.wal.read(last..=last)?.pop() {
                Some((index, sealed)) => Some(self.open_entry(index, &sealed)?.log_id),
                None => None,
            })
        };
        let last = match last_pending {
            Some(id) => Some(id),
            None => last_file().map_err(io_error)?,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<()> {
        let bytes = serde_json::to_vec(vote).map_err(std::io::Error::other)?;
        self.call(|reply| Op::Vote(bytes, reply))
            .await
            .map_err(io_error)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<()> {
        // Not waited for: it only saves re-applying entries after a restart,
        // and an older value is safe (the leader tells the commit again).
        let bytes = serde_json::to_vec(&committed).map_err(std::io::Error::other)?;
        let _ = self.writer.send(Op::Committed(bytes));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>> {
        self.read_meta::<Option<LogId>>(COMMITTED)
            .map(Option::flatten)
            .map_err(io_error)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        {
            let mut tail = self.tail();
            for entry in entries {
                let bytes = self.seal_entry(&entry).map_err(io_error)?;
                let size = bytes.len();
                encoded.push((entry.log_id, bytes));
                tail.push(entry, size);
            }
            tail.trim();
        }
        self.writer
            .send(Op::Append(encoded, callback))
            .map_err(|_| std::io::Error::other("the log writer has stopped"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_kept: Option<LogId>) -> Result<()> {
        let from = last_kept.map_or(0, |id| id.index + 1);
        self.tail().truncate(from);
        self.call(|reply| Op::Truncate(from, reply))
            .await
            .map_err(io_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<()> {
        self.tail().purge(log_id.index);
        self.call(|reply| Op::Purge(log_id, reply))
            .await
            .map_err(io_error)
    }
}

#[cfg(test)]
#[path = "log_store/tests.rs"]
mod tests;
