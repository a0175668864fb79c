//! The tail of the Raft log, kept in memory beside the file.
//!
//! It holds every entry the writer thread has not committed to the file yet
//! (readers must see an entry as soon as `append` returns), and the latest
//! entries that are in the file: openraft reads each entry back right after
//! appending it — to send it to each follower and to apply it once
//! committed — and from the file that is a read, an AES-GCM open and a JSON
//! parse per entry per reader (with hundreds of writes in an entry). The
//! tail is always a contiguous run of the log up to its last entry, so
//! whatever lies before it is in the file.

use std::{
    collections::BTreeMap,
    ops::{Bound, RangeBounds},
};

use super::{Entry, LogId};

/// Entries already in the file kept at most, and their sealed size at most
/// (readers take an entry within a few entries of its append).
const KEEP_ENTRIES: usize = 64;
const KEEP_BYTES: usize = 16 << 20;

struct Kept {
    entry: Entry,
    /// The entry's size in the file.
    bytes: usize,
    in_file: bool,
}

#[derive(Default)]
pub struct LogTail {
    entries: BTreeMap<u64, Kept>,
    /// Sum of `bytes` of the entries in the file.
    bytes_in_file: usize,
    count_in_file: usize,
}

impl LogTail {
    /// An entry appended (and queued for the file), `bytes` long there.
    pub fn push(&mut self, entry: Entry, bytes: usize) {
        let index = entry.log_id.index;
        let replaced = self.entries.insert(
            index,
            Kept {
                entry,
                bytes,
                in_file: false,
            },
        );
        if let Some(old) = replaced {
            self.forget(&old);
        }
    }

    /// The writer committed these entries to the file: they may now make
    /// room for newer ones ([`trim`](Self::trim)).
    pub fn written(&mut self, ids: &[LogId]) {
        for id in ids {
            if let Some(kept) = self.entries.get_mut(&id.index)
                && kept.entry.log_id == *id
                && !kept.in_file
            {
                kept.in_file = true;
                self.bytes_in_file += kept.bytes;
                self.count_in_file += 1;
            }
        }
    }

    /// Drops the oldest entries the file holds past the limits. Called by
    /// the appender, not the writer thread: an entry's memory is best freed
    /// by the threads that allocate entries.
    pub fn trim(&mut self) {
        // Oldest first, and only what the file holds: the tail stays a
        // contiguous run ending at the last entry.
        while self.count_in_file > KEEP_ENTRIES || self.bytes_in_file > KEEP_BYTES {
            let Some(first) = self.entries.first_entry() else {
                break;
            };
            if !first.get().in_file {
                break;
            }
            let kept = first.remove();
            self.forget(&kept);
        }
    }

    /// Removes entries from `index` on (a conflicting log).
    pub fn truncate(&mut self, index: u64) {
        for (_, kept) in self.entries.split_off(&index) {
            self.forget(&kept);
        }
    }

    /// Removes entries up to `index` (compacted into a snapshot).
    pub fn purge(&mut self, index: u64) {
        let rest = match index.checked_add(1) {
            Some(next) => self.entries.split_off(&next),
            None => BTreeMap::new(),
        };
        for kept in std::mem::replace(&mut self.entries, rest).into_values() {
            self.forget(&kept);
        }
    }

    /// The first index the tail holds: every entry before it is in the file.
    pub fn first_index(&self) -> Option<u64> {
        self.entries.keys().next().copied()
    }

    pub fn last_log_id(&self) -> Option<LogId> {
        self.entries.values().next_back().map(|k| k.entry.log_id)
    }

    /// The entries of `range` the tail holds, in order.
    pub fn range(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        if is_empty(&range) {
            return Vec::new();
        }
        self.entries
            .range(range)
            .map(|(_, kept)| kept.entry.clone())
            .collect()
    }

    fn forget(&mut self, kept: &Kept) {
        if kept.in_file {
            self.bytes_in_file -= kept.bytes;
            self.count_in_file -= 1;
        }
    }
}

/// The part of `range` before `first` (the tail's first index), to read
/// from the file; None when there is none.
pub fn before(
    range: &impl RangeBounds<u64>,
    first: Option<u64>,
) -> Option<(Bound<u64>, Bound<u64>)> {
    let start = range.start_bound().cloned();
    let end = match (range.end_bound().cloned(), first) {
        (end, None) => end,
        (Bound::Included(e), Some(f)) if e < f => Bound::Included(e),
        (Bound::Excluded(e), Some(f)) if e <= f => Bound::Excluded(e),
        (_, Some(f)) => Bound::Excluded(f),
    };
    let part = (start, end);
    (!is_empty(&part)).then_some(part)
}

/// Whether `range` holds no index (BTreeMap and redb refuse such ranges).
fn is_empty(range: &impl RangeBounds<u64>) -> bool {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => match s.checked_add(1) {
            Some(s) => s,
            None => return true,
        },
        Bound::Unbounded => 0,
    };
    match range.end_bound() {
        Bound::Included(e) => start > *e,
        Bound::Excluded(e) => start >= *e,
        Bound::Unbounded => false,
    }
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;

    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            log_id: crate::raft::log_id(term, 1, index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn keeps_what_is_not_in_the_file_and_the_latest_that_are() {
        let mut tail = LogTail::default();
        let n = KEEP_ENTRIES as u64 + 10;
        for i in 1..=n {
            tail.push(entry(i, 1), 100);
        }
        // Nothing is written yet: nothing may go.
        assert_eq!(tail.first_index(), Some(1));
        let ids: Vec<_> = (1..=n - 5).map(|i| entry(i, 1).log_id).collect();
        tail.written(&ids);
        assert_eq!(tail.first_index(), Some(1), "trimmed by the appender only");
        tail.trim();
        // The oldest written ones made room: the latest KEEP_ENTRIES written
        // ones stay, and the five unwritten ones whatever the limit.
        assert_eq!(tail.first_index(), Some(n - 5 - KEEP_ENTRIES as u64 + 1));
        assert_eq!(tail.last_log_id().unwrap().index, n);
        assert_eq!(
            indexes(&tail.range(n - 6..)),
            vec![n - 6, n - 5, n - 4, n - 3, n - 2, n - 1, n]
        );
        assert!(
            tail.range((Bound::Included(5), Bound::Excluded(3)))
                .is_empty()
        );
    }

    #[test]
    fn bytes_bound_it_too() {
        let mut tail = LogTail::default();
        for i in 1..=4 {
            tail.push(entry(i, 1), KEEP_BYTES / 3);
        }
        tail.written(&(1..=4).map(|i| entry(i, 1).log_id).collect::<Vec<_>>());
        tail.trim();
        assert_eq!(tail.first_index(), Some(2));
    }

    #[test]
    fn a_replaced_entry_is_not_marked_written_by_its_predecessor() {
        let mut tail = LogTail::default();
        tail.push(entry(1, 1), 10);
        tail.push(entry(2, 1), 10);
        tail.truncate(2);
        tail.push(entry(2, 2), 10);
        tail.written(&[entry(1, 1).log_id, entry(2, 1).log_id]);
        assert_eq!(tail.count_in_file, 1);
        assert_eq!(tail.last_log_id().unwrap(), entry(2, 2).log_id);
        tail.purge(1);
        assert_eq!((tail.count_in_file, tail.bytes_in_file), (0, 0));
        assert_eq!(tail.first_index(), Some(2));
        tail.purge(u64::MAX);
        assert_eq!(tail.first_index(), None);
    }

    #[test]
    fn the_file_is_read_only_before_the_tail() {
        let part = |r: (Bound<u64>, Bound<u64>), first| before(&r, first);
        use Bound::*;
        assert_eq!(
            part((Included(3), Excluded(9)), None),
            Some((Included(3), Excluded(9)))
        );
        assert_eq!(
            part((Included(3), Excluded(9)), Some(5)),
            Some((Included(3), Excluded(5)))
        );
        assert_eq!(
            part((Included(3), Included(4)), Some(5)),
            Some((Included(3), Included(4)))
        );
        assert_eq!(
            part((Included(3), Unbounded), Some(5)),
            Some((Included(3), Excluded(5)))
        );
        assert_eq!(part((Included(5), Unbounded), Some(5)), None);
        assert_eq!(part((Included(7), Excluded(9)), Some(5)), None);
        assert_eq!(part((Unbounded, Unbounded), Some(0)), None);
        assert_eq!(part((Excluded(u64::MAX), Unbounded), None), None);
    }
}
