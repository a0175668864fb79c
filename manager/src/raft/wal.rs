//! The Raft log's entries in an append-only, preallocated file set (a
//! write-ahead log, as etcd keeps its own).
//!
//! Why not redb, which holds everything else: a durable redb commit copies
//! B-tree pages, grows the file and rewrites its header, and the fsync after
//! it then also waits for the file system's journal. Every replicated write
//! waits for that fsync on the leader and on a follower. Here a batch of
//! entries is one contiguous write into zeros written beforehand, so
//! `fdatasync` flushes those pages and nothing else (measured on this
//! machine's disk: ~1 ms, against ~2–7 ms for an append that grows a file).
//!
//! Layout: `DIR/<seq>.wal` segments of [`SEGMENT_BYTES`] (longer only when
//! one record does not fit), each a run of records followed by zeros:
//!
//! ```text
//! u32 payload length | u32 CRC-32 of the rest | u8 kind | u64 index | payload
//! ```
//!
//! Kind 1 is an entry at `index` (its payload sealed by the log store);
//! kind 2 removes every entry from `index` on (openraft's truncate); a later
//! entry at an index replaces an earlier one. A record cut short by a crash
//! can only be the last one of the last segment (it was never flushed, so
//! never acknowledged): reading stops there and the next write overwrites
//! it. A bad record anywhere else is damage, and opening fails naming it.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

use anyhow::{Context, Result, bail};

use crate::encryption::files;

/// A segment's preallocated size.
pub const SEGMENT_BYTES: u64 = 16 << 20;

const HEADER: usize = 4 + 4 + 1 + 8;
const ENTRY: u8 = 1;
const TRUNCATE: u8 = 2;

/// Where an entry's sealed bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    segment: u64,
    offset: u64,
    len: u32,
}

/// What readers share with the writer: each entry's place, and the open
/// segments (a reader keeps a segment open while it reads, even if a purge
/// deletes its file meanwhile).
#[derive(Default)]
struct Index {
    entries: BTreeMap<u64, Location>,
    segments: BTreeMap<u64, Arc<File>>,
}

/// The writer's side. Only the log's writer thread holds it.
pub struct Wal {
    dir: PathBuf,
    index: Arc<Mutex<Index>>,
    /// The segment being written, and where its next record goes.
    current: u64,
    offset: u64,
    /// The highest index each segment holds a record for (purge deletes a
    /// segment once all of them are purged).
    highest: BTreeMap<u64, u64>,
    /// The next segment, being zeroed in the background.
    next: Option<JoinHandle<Result<PathBuf>>>,
    segment_bytes: u64,
    /// Written since the last sync, in order, for readers once it is
    /// flushed: an entry's place, or (None) a truncation from that index.
    unpublished: Vec<(u64, Option<Location>)>,
}

/// A cheap handle readers use.
#[derive(Clone)]
pub struct WalReader {
    index: Arc<Mutex<Index>>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.wal"))
}

fn lock(index: &Mutex<Index>) -> std::sync::MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

fn checksum(kind: u8, index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn encode(buffer: &mut Vec<u8>, kind: u8, index: u64, payload: &[u8]) -> Result<()> {
    let len = u32::try_from(payload.len()).context("a Raft log record over 4 GiB")?;
    buffer.extend_from_slice(&len.to_le_bytes());
    buffer.extend_from_slice(&checksum(kind, index, payload).to_le_bytes());
    buffer.push(kind);
    buffer.extend_from_slice(&index.to_le_bytes());
    buffer.extend_from_slice(payload);
    Ok(())
}

/// A file of `bytes` zeros at `path`, flushed, mode `0600`.
fn zeroed(path: &Path, bytes: u64) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut file = files::private_file(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])
            .with_context(|| format!("preallocating {}", path.display()))?;
        left -= n as u64;
    }
    file.sync_all()
        .with_context(|| format!("flushing {}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Zeroes whatever follows the last good record of the segment being
/// written: the rest of a record cut short, or pages of one that reached the
/// disk out of order. New records are written over it, and anything left
/// behind them would read as damage once the segment is no longer the last.
fn clear_after(file: &File, end: u64) -> Result<()> {
    let size = file.metadata()?.len();
    let mut rest = vec![0u8; size.saturating_sub(end) as usize];
    file.read_exact_at(&mut rest, end)?;
    if rest.iter().all(|b| *b == 0) {
        return Ok(());
    }
    rest.fill(0);
    file.write_all_at(&rest, end)?;
    file.sync_data()?;
    Ok(())
}

/// A replayed segment's records, in order, and where its records end.
struct Replayed {
    records: Vec<(u8, u64, Location)>,
    end: u64,
    /// Whether reading stopped at a bad record rather than at zeros.
    torn: bool,
}

fn replay_segment(file: &File, seq: u64) -> Result<Replayed> {
    let size = file.metadata()?.len();
    let mut records = Vec::new();
    let mut offset = 0u64;
    let mut header = [0u8; HEADER];
    loop {
        if offset + HEADER as u64 > size {
            return Ok(Replayed {
                records,
                end: offset,
                torn: false,
            });
        }
        file.read_exact_at(&mut header, offset)?;
        if header.iter().all(|b| *b == 0) {
            return Ok(Replayed {
                records,
                end: offset,
                torn: false,
            });
        }
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let kind = header[8];
        let index = u64::from_le_bytes(header[9..17].try_into().expect("8 bytes"));
        let start = offset + HEADER as u64;
        let torn = Replayed {
            records: Vec::new(),
            end: offset,
            torn: true,
        };
        if start + u64::from(len) > size || !matches!(kind, ENTRY | TRUNCATE) {
            return Ok(Replayed { records, ..torn });
        }
        let mut payload = vec![0u8; len as usize];
        file.read_exact_at(&mut payload, start)?;
        if checksum(kind, index, &payload) != crc {
            return Ok(Replayed { records, ..torn });
        }
        records.push((
            kind,
            index,
            Location {
                segment: seq,
                offset: start,
                len,
            },
        ));
        offset = start + u64::from(len);
    }
}

impl Wal {
    /// Opens the log in `dir` (created `0700` if missing), replaying every
    /// segment; entries at or below `purged` are left out.
    pub fn open(dir: &Path, purged: Option<u64>) -> Result<Self> {
        Self::open_with(dir, purged, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, purged: Option<u64>, segment_bytes: u64) -> Result<Self> {
        files::private_dir(dir)?;
        let mut seqs = Vec::new();
        for item in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let name = item?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name.strip_suffix(".wal") {
                let seq: u64 = seq.parse().with_context(|| {
                    format!("{}: a segment name that is not a number", dir.display())
                })?;
                seqs.push(seq);
            } else if name.ends_with(".tmp") {
                // A segment being zeroed when the manager stopped.
                let _ = fs::remove_file(dir.join(&*name));
            }
        }
        seqs.sort_unstable();
        let mut index = Index::default();
        let mut highest = BTreeMap::new();
        let mut end = 0;
        for (i, seq) in seqs.iter().copied().enumerate() {
            let path = segment_path(dir, seq);
            let file = Arc::new(files::private_file(&path)?);
            let replayed = replay_segment(&file, seq)
                .with_context(|| format!("reading {}", path.display()))?;
            let last = i + 1 == seqs.len();
            if replayed.torn && !last {
                bail!(
                    "{}: a damaged record at byte {} in a segment that is not the last one",
                    path.display(),
                    replayed.end
                );
            }
            for (kind, at, location) in replayed.records {
                highest
                    .entry(seq)
                    .and_modify(|h: &mut u64| *h = (*h).max(at))
                    .or_insert(at);
                // Both kinds drop what follows: an entry replaces the
                // conflicting suffix it was written over.
                index.entries.split_off(&at);
                if kind == ENTRY && purged.is_none_or(|p| at > p) {
                    index.entries.insert(at, location);
                }
            }
            if replayed.torn {
                tracing::warn!(
                    segment = %path.display(),
                    offset = replayed.end,
                    "the Raft log ends in a record cut short (a crash while writing it); it is dropped"
                );
            }
            end = replayed.end;
            if last {
                clear_after(&file, end).with_context(|| format!("clearing {}", path.display()))?;
            }
            index.segments.insert(seq, file);
        }
        let (current, offset) = match seqs.last() {
            Some(seq) => (*seq, end),
            None => {
                let path = segment_path(dir, 0);
                zeroed(&path, segment_bytes)?;
                sync_dir(dir)?;
                index
                    .segments
                    .insert(0, Arc::new(files::private_file(&path)?));
                (0, 0)
            }
        };
        let mut wal = Self {
            dir: dir.to_owned(),
            index: Arc::new(Mutex::new(index)),
            current,
            offset,
            highest,
            next: None,
            segment_bytes,
            unpublished: Vec::new(),
        };
        wal.prepare_next();
        Ok(wal)
    }

    pub fn reader(&self) -> WalReader {
        WalReader {
            index: self.index.clone(),
        }
    }

    fn prepare_next(&mut self) {
        let path = self.dir.join(format!("{:016}.tmp", self.current + 1));
        let bytes = self.segment_bytes;
        self.next = Some(std::thread::spawn(move || {
            zeroed(&path, bytes)?;
            Ok(path)
        }));
    }

    /// Moves on to the next segment (zeroed meanwhile).
    fn roll_over(&mut self) -> Result<()> {
        let prepared = match self.next.take().map(JoinHandle::join) {
            Some(Ok(Ok(path))) => path,
            Some(Ok(Err(e))) => return Err(e.context("preparing the next Raft log segment")),
            Some(Err(_)) => bail!("preparing the next Raft log segment panicked"),
            None => bail!("no next Raft log segment under way"),
        };
        let seq = self.current + 1;
        let path = segment_path(&self.dir, seq);
        fs::rename(&prepared, &path)
            .with_context(|| format!("renaming {} to {}", prepared.display(), path.display()))?;
        // Records in it are acknowledged once flushed: its name must last.
        sync_dir(&self.dir)?;
        let file = Arc::new(files::private_file(&path)?);
        lock(&self.index).segments.insert(seq, file);
        self.current = seq;
        self.offset = 0;
        self.prepare_next();
        Ok(())
    }

    fn current_file(&self) -> Result<Arc<File>> {
        lock(&self.index)
            .segments
            .get(&self.current)
            .cloned()
            .context("the current Raft log segment is not open")
    }

    /// Writes one run of records (not yet flushed: see [`sync`](Self::sync));
    /// returns where each record's payload went.
    fn write(&mut self, records: &[(u8, u64, &[u8])]) -> Result<Vec<Location>> {
        let bytes: u64 = records
            .iter()
            .map(|(_, _, p)| (HEADER + p.len()) as u64)
            .sum();
        if self.offset > 0 && self.offset + bytes > self.segment_bytes {
            // What the old segment got must be durable before the next
            // flush, which flushes only the new one.
            self.flush()?;
            self.roll_over()?;
        }
        let mut buffer = Vec::with_capacity(bytes as usize);
        let mut locations = Vec::with_capacity(records.len());
        for (kind, index, payload) in records {
            locations.push(Location {
                segment: self.current,
                offset: self.offset + (buffer.len() + HEADER) as u64,
                len: payload.len() as u32,
            });
            encode(&mut buffer, *kind, *index, payload)?;
            let highest = self.highest.entry(self.current).or_insert(*index);
            *highest = (*highest).max(*index);
        }
        self.current_file()?
            .write_all_at(&buffer, self.offset)
            .context("writing the Raft log")?;
        self.offset += bytes;
        Ok(locations)
    }

    /// Writes entries (index, sealed bytes); readers find them in the file
    /// once [`sync`](Self::sync) returns.
    pub fn append<B: AsRef<[u8]>>(&mut self, entries: &[(u64, B)]) -> Result<()> {
        let records: Vec<_> = entries
            .iter()
            .map(|(index, bytes)| (ENTRY, *index, bytes.as_ref()))
            .collect();
        let locations = self.write(&records)?;
        self.unpublished.extend(
            entries
                .iter()
                .map(|(i, _)| *i)
                .zip(locations.into_iter().map(Some)),
        );
        Ok(())
    }

    /// Removes entries from `from` on.
    pub fn truncate(&mut self, from: u64) -> Result<()> {
        self.write(&[(TRUNCATE, from, &[])])?;
        self.unpublished.push((from, None));
        Ok(())
    }

    /// Makes what was written durable, then readable from the file in the
    /// order it was written. What fails to flush is never published.
    pub fn sync(&mut self) -> Result<()> {
        let unpublished = std::mem::take(&mut self.unpublished);
        self.flush()?;
        let mut index = lock(&self.index);
        for (at, location) in unpublished {
            // An entry replaces what followed it; a truncation removes it.
            index.entries.split_off(&at);
            if let Some(location) = location {
                index.entries.insert(at, location);
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.current_file()?
            .sync_data()
            .context("flushing the Raft log")
    }

    /// Forgets entries up to `upto` (their purge is already durable) and
    /// deletes the segments that hold nothing else.
    pub fn purge(&mut self, upto: u64) -> Result<()> {
        // Oldest first, and only a run of them from the oldest: a truncation
        // in a segment acts on the segments before it.
        let doomed: Vec<u64> = self
            .highest
            .iter()
            .take_while(|(seq, highest)| **seq != self.current && **highest <= upto)
            .map(|(seq, _)| *seq)
            .collect();
        {
            let mut index = lock(&self.index);
            index.entries = index.entries.split_off(&(upto.saturating_add(1)));
            for seq in &doomed {
                index.segments.remove(seq);
            }
        }
        for seq in doomed {
            self.highest.remove(&seq);
            let path = segment_path(&self.dir, seq);
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }
}

impl WalReader {
    /// The sealed bytes of the entries of `range` the file holds, in order.
    pub fn read(&self, range: impl std::ops::RangeBounds<u64>) -> Result<Vec<(u64, Vec<u8>)>> {
        let wanted: Vec<(u64, Location, Arc<File>)> = {
            let index = lock(&self.index);
            index
                .entries
                .range(range)
                .map(|(at, location)| {
                    let file = index
                        .segments
                        .get(&location.segment)
                        .cloned()
                        .with_context(|| format!("Raft log entry {at}: its segment is gone"))?;
                    Ok((*at, *location, file))
                })
                .collect::<Result<_>>()?
        };
        wanted
            .into_iter()
            .map(|(at, location, file)| {
                let mut bytes = vec![0u8; location.len as usize];
                file.read_exact_at(&mut bytes, location.offset)
                    .with_context(|| format!("reading Raft log entry {at}"))?;
                Ok((at, bytes))
            })
            .collect()
    }

    /// The last index the file holds.
    pub fn last_index(&self) -> Option<u64> {
        lock(&self.index).entries.keys().next_back().copied()
    }
}

#[cfg(test)]
mod tests;
