use openraft::EntryPayload;
use shoal_api::pb::{Proposal, StoreBatch};

use super::*;
use crate::{encryption::keys::SecretKey, raft::Payload};

fn entry(index: u64) -> Entry {
    Entry {
        log_id: crate::raft::log_id(2, 1, index),
        payload: EntryPayload::Normal(Payload::new(Proposal {
            batches: vec![StoreBatch::default(); index as usize],
        })),
    }
}

/// How managers before the binary format sealed an entry: openraft's JSON.
fn sealed_as_json(cipher: &Cipher, entry: &Entry) -> Vec<u8> {
    let mut buffer = Cipher::buffer(0);
    serde_json::to_writer(&mut buffer, entry).unwrap();
    cipher
        .seal_buffer(entry_context(entry.log_id.index).as_bytes(), buffer)
        .unwrap()
}

#[tokio::test]
async fn a_log_written_as_json_by_an_older_manager_is_read_and_continued() {
    let dir = tempfile::tempdir().unwrap();
    let entries_dir = dir.path().join("entries");
    let cipher = Arc::new(Cipher::new(&SecretKey::generate().unwrap()).unwrap());
    // Entries 1–3 as an older manager left them, 4–5 as this one writes
    // them (what `LogStore::seal_entry` seals).
    let sealed = |i: u64| {
        let mut buffer = Cipher::buffer(0);
        wire::encode_entry(&entry(i), &mut buffer).unwrap();
        cipher
            .seal_buffer(entry_context(i).as_bytes(), buffer)
            .unwrap()
    };
    {
        let mut wal = Wal::open(&entries_dir, None).unwrap();
        let mut records: Vec<(u64, Vec<u8>)> = (1..=3)
            .map(|i| (i, sealed_as_json(&cipher, &entry(i))))
            .collect();
        records.extend((4..=5).map(|i| (i, sealed(i))));
        wal.append(&records).unwrap();
        wal.sync().unwrap();
    }
    let mut store =
        LogStore::open(&dir.path().join("log.redb"), &entries_dir, cipher.clone()).unwrap();
    let read = store.try_get_log_entries(1..=5).await.unwrap();
    assert_eq!(read, (1..=5).map(entry).collect::<Vec<_>>());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(entry(5).log_id));
}

/// An entry of `bytes` of writes (one batch holding one put of that size).
fn entry_of(index: u64, bytes: usize) -> Entry {
    let batch = StoreBatch {
        actions: vec![shoal_api::pb::StoreAction {
            action: Some(shoal_api::pb::store_action::Action::Put(
                shoal_api::pb::Object {
                    object: Some(shoal_api::pb::object::Object::Config(
                        shoal_api::pb::Config {
                            spec: Some(shoal_api::pb::ConfigSpec {
                                data: vec![0; bytes],
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    )),
                },
            )),
            ..Default::default()
        }],
    };
    Entry {
        log_id: crate::raft::log_id(2, 1, index),
        payload: EntryPayload::Normal(Payload::new(Proposal {
            batches: vec![batch],
        })),
    }
}

#[test]
fn one_append_carries_at_most_its_budget_of_writes_and_at_least_one_entry() {
    let quarter = crate::raft::MAX_BYTES_PER_APPEND / 4;
    // Small entries: all of them.
    let small: Vec<_> = (1..=16).map(|i| entry_of(i, 300)).collect();
    assert_eq!(within_append_budget(&small), 16);
    // Entries of a quarter of the budget (and a little more): three fit.
    let large: Vec<_> = (1..=16).map(|i| entry_of(i, quarter)).collect();
    assert_eq!(within_append_budget(&large), 3);
    // One entry over the budget on its own is still sent, alone.
    let huge = vec![
        entry_of(1, 2 * crate::raft::MAX_BYTES_PER_APPEND),
        entry_of(2, 10),
    ];
    assert_eq!(within_append_budget(&huge), 1);
    assert_eq!(within_append_budget(&[]), 0);
}
