//! Reading a whole eBPF hash table in batches (`BPF_MAP_LOOKUP_BATCH`,
//! Linux 5.6 and later): one system call per [`BATCH`] entries, where an
//! iterator of keys makes two per entry (the next key, then its value).
//!
//! Why it matters: the sweeper (`sweep`) reads the mesh's connection
//! tables every few seconds, and they hold up to 262,144 entries. Read
//! entry by entry, a table of 20,662 entries (an entry node of direct
//! server return, whose closed connections it cannot see end) cost the
//! idle agent 2.3% of a core on the lab's VM; in batches 0.5%, all its
//! other work included (bench/RESULTS.md, 2026-12-03).
//!
//! A batch's cursor is also a bucket index: an entry removed while the
//! table is read (the LRU evicting one, a connection ending) does not
//! send the read back to the first bucket, as a vanished key does for
//! `BPF_MAP_GET_NEXT_KEY`.
//!
//! The `bpf(2)` call is made here directly (aya 0.14 has no batch
//! operations); this is one of the agent's eBPF edges where `unsafe` is
//! expected.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd, BorrowedFd},
};

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries per call: 1,024 connection-table entries are ~40 KiB of keys
/// and values, and no bucket of a table holds anywhere near that many
/// (a bucket larger than a batch is refused with ENOSPC, and the caller
/// falls back to reading entry by entry).
pub const BATCH: usize = 1024;

/// The `batch` member of `union bpf_attr`, as the kernel lays it out.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    /// Where the previous call stopped (0: start at the first bucket).
    in_batch: u64,
    /// Where this call stopped, for the next.
    out_batch: u64,
    keys: u64,
    values: u64,
    /// In: room for this many entries; out: how many were written.
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Calls `f` with every entry of the hash table `map` (keys of type `K`,
/// values of type `V`, the sizes the table was created with), a batch at a
/// time. An error means the kernel refused a batch (too old a kernel:
/// EINVAL); entries read before it were already given to `f`.
pub fn read_all<K, V>(map: BorrowedFd<'_>, mut f: impl FnMut(K, V)) -> io::Result<()>
where
    K: aya::Pod + Default,
    V: aya::Pod + Default,
{
    let mut keys = vec![K::default(); BATCH];
    let mut values = vec![V::default(); BATCH];
    // The bucket cursor of a hash table is a u32; None: from the start.
    let mut cursor: Option<u32> = None;
    loop {
        let mut next: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: cursor.as_ref().map_or(0, |c| std::ptr::from_ref(c) as u64),
            out_batch: std::ptr::addr_of_mut!(next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` for this command, and
        // every pointer in it refers to memory that outlives the call and
        // has room for what the kernel writes there: `count` entries of
        // `K` and of `V` (plain old data, any bytes valid), and one u32
        // cursor. The kernel writes back only into these and into `attr`.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::addr_of_mut!(attr),
                size_of::<BatchAttr>(),
            )
        };
        let done = if ret < 0 {
            let error = io::Error::last_os_error();
            // ENOENT: the last batch, which may still carry entries.
            if error.raw_os_error() != Some(libc::ENOENT) {
                return Err(error);
            }
            true
        } else {
            false
        };
        let read = (attr.count as usize).min(BATCH);
        for (key, value) in keys[..read].iter().zip(&values[..read]) {
            f(*key, *value);
        }
        if done {
            return Ok(());
        }
        cursor = Some(next);
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, os::fd::AsFd};

    use aya::maps::{HashMap as BpfHashMap, IterableMap, MapData};
    use shoal_agent_common::{CtEntry, CtKey};

    use super::*;

    /// A hash table of connection entries made for the test (the batch
    /// read is the same code in the kernel for `MESH_CT`'s LRU kind); None
    /// where no eBPF map can be made (not root, no BPF).
    fn table(entries: u32) -> Option<BpfHashMap<MapData, CtKey, CtEntry>> {
        match BpfHashMap::create(entries, 0) {
            Ok(map) => Some(map),
            Err(error) => {
                eprintln!("skipped: cannot create an eBPF map here ({error})");
                None
            }
        }
    }

    fn key(i: u32) -> CtKey {
        CtKey {
            saddr: i,
            daddr: !i,
            sport: (i & 0xffff) as u16,
            dport: 80,
            proto: 6,
            ..Default::default()
        }
    }

    #[test]
    fn every_entry_is_read_once_across_batches() {
        let Some(mut map) = table(8192) else { return };
        // More than four batches' worth, so the cursor is carried over.
        let count = 4 * BATCH as u32 + 123;
        for i in 0..count {
            let entry = CtEntry {
                addr: i,
                syn_seq: i.wrapping_mul(7),
                ..Default::default()
            };
            map.insert(key(i), entry, 0).expect("insert");
        }
        let mut seen: HashMap<CtKey, CtEntry> = HashMap::new();
        read_all::<CtKey, CtEntry>(map.map().fd().as_fd(), |k, v| {
            assert!(seen.insert(k, v).is_none(), "{k:?} read twice");
        })
        .expect("a batched read");
        assert_eq!(seen.len(), count as usize);
        for i in 0..count {
            let v = seen.get(&key(i)).expect("every key read");
            assert_eq!((v.addr, v.syn_seq), (i, i.wrapping_mul(7)));
        }
    }

    #[test]
    fn an_empty_table_reads_as_nothing() {
        let Some(map) = table(16) else { return };
        let mut read = 0;
        read_all::<CtKey, CtEntry>(map.map().fd().as_fd(), |_, _| read += 1).expect("read");
        assert_eq!(read, 0);
    }

    #[test]
    fn a_refused_batch_is_an_error_not_a_panic() {
        // A file that is not a map: the kernel refuses the call.
        let file = std::fs::File::open("/dev/null").expect("open");
        let error = read_all::<CtKey, CtEntry>(file.as_fd(), |_, _| {}).expect_err("refused");
        assert!(error.raw_os_error().is_some(), "{error}");
    }
}
