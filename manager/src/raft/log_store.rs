//! The Raft log in redb: entries by index, plus the vote, the committed id
//! and the last purged id. Every append is fsynced before openraft hears
//! that it is flushed.

use std::{fmt::Debug, ops::RangeBounds, path::Path, sync::Arc};

use openraft::{
    Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote,
    storage::{LogFlushed, RaftLogStorage},
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{RaftId, TypeConfig, io_err};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

type Result<T> = std::result::Result<T, StorageError<RaftId>>;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> anyhow::Result<Option<T>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(match table.get(key)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    fn write_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(value)?;
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(key, bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }
}

fn anyhow_io(e: anyhow::Error) -> openraft::AnyError {
    openraft::AnyError::error(format!("{e:#}"))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let read = || -> anyhow::Result<Vec<Entry<TypeConfig>>> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(LOG)?;
            let mut entries = Vec::new();
            for item in table.range(range)? {
                let (_, value) = item?;
                entries.push(serde_json::from_slice(value.value())?);
            }
            Ok(entries)
        };
        read().map_err(|e| StorageIOError::read_logs(anyhow_io(e)).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let purged: Option<LogId<RaftId>> = self
            .read_meta(PURGED)
            .map_err(|e| StorageIOError::read_logs(anyhow_io(e)))?;
        let last = || -> anyhow::Result<Option<LogId<RaftId>>> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(LOG)?;
            Ok(match table.last()? {
                Some((_, value)) => {
                    let entry: Entry<TypeConfig> = serde_json::from_slice(value.value())?;
                    Some(entry.log_id)
                }
                None => None,
            })
        };
        let last = last().map_err(|e| StorageIOError::read_logs(anyhow_io(e)))?;
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> Result<()> {
        self.write_meta(VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(anyhow_io(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftId>>> {
        self.read_meta(VOTE)
            .map_err(|e| StorageIOError::read_vote(anyhow_io(e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftId>>) -> Result<()> {
        self.write_meta(COMMITTED, &committed)
            .map_err(|e| StorageIOError::write(anyhow_io(e)).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftId>>> {
        self.read_meta::<Option<LogId<RaftId>>>(COMMITTED)
            .map(Option::flatten)
            .map_err(|e| StorageIOError::read(anyhow_io(e)).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, serde_json::to_vec(&e)?)))
            .collect::<std::result::Result<_, serde_json::Error>>()
            .map_err(|e| StorageIOError::write_logs(io_err(&e)))?;
        let db = self.db.clone();
        // redb blocks on fsync: keep it off the Raft core's async thread.
        let result = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(LOG)?;
                for (index, bytes) in &encoded {
                    table.insert(index, bytes.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(io_err(&e)))?;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(format!("{e:#}"))));
                Err(StorageIOError::write_logs(anyhow_io(e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> Result<()> {
        let run = || -> anyhow::Result<()> {
            let txn = self.db.begin_write()?;
            txn.open_table(LOG)?
                .retain_in(log_id.index.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        };
        run().map_err(|e| StorageIOError::write_logs(anyhow_io(e)).into())
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> Result<()> {
        let run = || -> anyhow::Result<()> {
            let bytes = serde_json::to_vec(&Some(log_id))?;
            let txn = self.db.begin_write()?;
            txn.open_table(META)?.insert(PURGED, bytes.as_slice())?;
            txn.open_table(LOG)?
                .retain_in(..=log_id.index, |_, _| false)?;
            txn.commit()?;
            Ok(())
        };
        run().map_err(|e| StorageIOError::write_logs(anyhow_io(e)).into())
    }
}
