use std::io::Write;

use super::*;

/// Small segments, so a few entries cross several.
const SMALL: u64 = 4096;

fn payload(index: u64, tag: &str) -> Vec<u8> {
    format!("{tag}-{index}-{}", "x".repeat(100)).into_bytes()
}

fn entries(range: std::ops::RangeInclusive<u64>, tag: &str) -> Vec<(u64, Vec<u8>)> {
    range.map(|i| (i, payload(i, tag))).collect()
}

fn all(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    wal.reader().read(..).unwrap()
}

#[test]
fn synced_entries_come_back_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let wanted = entries(1..=100, "a");
    {
        let mut wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        for chunk in wanted.chunks(7) {
            wal.append(chunk).unwrap();
            wal.sync().unwrap();
        }
        assert_eq!(all(&wal), wanted);
    }
    let segments = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("wal".as_ref()))
        .count();
    assert!(segments > 2, "the entries crossed segments ({segments})");
    let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
    assert_eq!(all(&wal), wanted);
    assert_eq!(wal.reader().last_index(), Some(100));
    assert_eq!(wal.reader().read(40..43).unwrap(), wanted[39..42].to_vec());
}

#[test]
fn nothing_is_readable_from_the_file_before_it_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
    wal.append(&entries(1..=3, "a")).unwrap();
    assert!(all(&wal).is_empty());
    wal.sync().unwrap();
    assert_eq!(all(&wal).len(), 3);
}

#[test]
fn a_truncation_lasts_and_later_entries_replace_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        wal.append(&entries(1..=10, "old")).unwrap();
        wal.sync().unwrap();
        // A follower's conflicting suffix: removed, then 6.. rewritten, and
        // in the same batch 9.. removed again.
        wal.truncate(6).unwrap();
        wal.append(&entries(6..=12, "new")).unwrap();
        wal.truncate(9).unwrap();
        wal.sync().unwrap();
    }
    let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
    let mut wanted = entries(1..=5, "old");
    wanted.extend(entries(6..=8, "new"));
    assert_eq!(all(&wal), wanted);
    assert_eq!(wal.reader().last_index(), Some(8));
}

#[test]
fn a_record_cut_short_at_the_end_is_dropped_and_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let mut wal = Wal::open_with(dir.path(), None, SEGMENT_BYTES).unwrap();
        wal.append(&entries(1..=3, "a")).unwrap();
        wal.sync().unwrap();
        (wal.current, wal.offset)
    };
    // A crash while the fourth record was being written: its header and
    // half its payload reached the disk.
    let mut torn = Vec::new();
    encode(&mut torn, ENTRY, 4, &payload(4, "a")).unwrap();
    let file = fs::OpenOptions::new()
        .write(true)
        .open(segment_path(dir.path(), last.0))
        .unwrap();
    file.write_all_at(&torn[..torn.len() / 2], last.1).unwrap();
    drop(file);

    let mut wal = Wal::open_with(dir.path(), None, SEGMENT_BYTES).unwrap();
    assert_eq!(all(&wal), entries(1..=3, "a"));
    assert_eq!((wal.current, wal.offset), last, "writes resume over it");
    wal.append(&entries(4..=5, "b")).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open_with(dir.path(), None, SEGMENT_BYTES).unwrap();
    let mut wanted = entries(1..=3, "a");
    wanted.extend(entries(4..=5, "b"));
    assert_eq!(all(&wal), wanted);
}

#[test]
fn damage_before_the_last_segment_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        for chunk in entries(1..=100, "a").chunks(5) {
            wal.append(chunk).unwrap();
            wal.sync().unwrap();
        }
    }
    let first = segment_path(dir.path(), 0);
    let mut bytes = fs::read(&first).unwrap();
    bytes[HEADER + 3] ^= 0xff;
    fs::File::create(&first).unwrap().write_all(&bytes).unwrap();
    let error = format!(
        "{:#}",
        Wal::open_with(dir.path(), None, SMALL).err().unwrap()
    );
    assert!(error.contains(&first.display().to_string()), "{error}");
    assert!(error.contains("damaged record at byte 0"), "{error}");
}

#[test]
fn a_purge_deletes_whole_segments_behind_it_and_hides_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let count = |dir: &Path| {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("wal".as_ref()))
            .count()
    };
    let mut wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
    for chunk in entries(1..=100, "a").chunks(5) {
        wal.append(chunk).unwrap();
        wal.sync().unwrap();
    }
    let before = count(dir.path());
    wal.purge(60).unwrap();
    assert!(count(dir.path()) < before, "old segments deleted");
    assert_eq!(all(&wal), entries(61..=100, "a"));
    drop(wal);
    // Reopened with the purged id the log store keeps: entries of a
    // segment that was kept but lies behind it stay hidden.
    let wal = Wal::open_with(dir.path(), Some(60), SMALL).unwrap();
    assert_eq!(all(&wal), entries(61..=100, "a"));
}

#[test]
fn a_record_larger_than_a_segment_gets_one_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![(2, vec![7u8; SMALL as usize * 2])];
    {
        let mut wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        wal.append(&entries(1..=1, "a")).unwrap();
        wal.append(&big).unwrap();
        wal.append(&entries(3..=3, "a")).unwrap();
        wal.sync().unwrap();
    }
    let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
    let read = all(&wal);
    assert_eq!(read.len(), 3);
    assert_eq!(read[1], big[0]);
    assert_eq!(read[2], entries(3..=3, "a")[0]);
}

#[test]
fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut wal = Wal::open_with(&log, None, SMALL).unwrap();
    wal.append(&entries(1..=100, "a")).unwrap();
    wal.sync().unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&log), 0o700);
    for item in fs::read_dir(&log).unwrap() {
        let path = item.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[test]
fn what_a_crash_left_past_the_end_does_not_read_as_damage_later() {
    let dir = tempfile::tempdir().unwrap();
    let end = {
        let mut wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        wal.append(&entries(1..=2, "a")).unwrap();
        wal.sync().unwrap();
        wal.offset
    };
    // A long record's later page reached the disk, its first did not.
    let file = fs::OpenOptions::new()
        .write(true)
        .open(segment_path(dir.path(), 0))
        .unwrap();
    file.write_all_at(&[0xab; 64], end + 300).unwrap();
    drop(file);
    {
        let mut wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        // A short record over the start, then enough to move on to later
        // segments: the first is no longer the last.
        for chunk in entries(3..=80, "b").chunks(3) {
            wal.append(chunk).unwrap();
            wal.sync().unwrap();
        }
    }
    let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
    let mut wanted = entries(1..=2, "a");
    wanted.extend(entries(3..=80, "b"));
    assert_eq!(all(&wal), wanted);
}
