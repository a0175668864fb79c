//! The state machine against its file: snapshots held while writes go on,
//! restarts, installs, authorization, a failed write, sealing.

use std::sync::atomic::{AtomicU64, Ordering};

use openraft::RaftSnapshotBuilder;
use shoal_api::pb::{Config, ConfigSpec, Meta, Proposal};

use super::*;
use crate::{encryption::keys::SecretKey, raft::Payload, store::Batch};

fn config(name: &str) -> Config {
    Config {
        meta: Some(Meta {
            id: name.to_owned(),
            ..Default::default()
        }),
        spec: Some(ConfigSpec {
            name: name.to_owned(),
            data: vec![b'v'; 256],
            ..Default::default()
        }),
    }
}

fn name(i: usize) -> String {
    format!("config-{i:05}")
}

/// A state machine on a state file in `dir`, and the store it applies to.
async fn open(dir: &Path, cipher: &Arc<Cipher>) -> (StateMachine, Store) {
    std::fs::create_dir_all(dir).unwrap();
    let store = Store::new();
    let machine = StateMachine::open(&dir.join("state.redb"), store.clone(), cipher.clone())
        .await
        .unwrap();
    (machine, store)
}

fn key() -> Arc<Cipher> {
    Arc::new(Cipher::new(&SecretKey::generate().unwrap()).unwrap())
}

/// Applies, as the entry at `index`, a batch that creates the configs
/// `created` and deletes the configs `deleted` (created at `deleted_at`).
async fn apply(
    machine: &mut StateMachine,
    index: u64,
    created: std::ops::Range<usize>,
    deleted: std::ops::Range<usize>,
    deleted_at: u64,
) {
    let mut batch = Batch::default();
    for i in created {
        batch.put_config(config(&name(i)));
    }
    for i in deleted {
        batch.delete(Kind::Config, &name(i), deleted_at);
    }
    let results = machine
        .apply_entries(vec![Entry {
            log_id: crate::raft::log_id(1, 1, index),
            payload: EntryPayload::Normal(Payload::new(Proposal {
                batches: vec![batch.into_proto()],
            })),
        }])
        .await;
    assert_eq!(results[0].conflicts, vec![None], "entry {index} applied");
}

/// Installs `snapshot` (as a leader sent it) on `machine`.
async fn install(machine: &mut StateMachine, snapshot: &Snapshot) {
    let data = Cursor::new(snapshot.snapshot.get_ref().clone());
    machine
        .install_snapshot(&snapshot.meta, data)
        .await
        .unwrap();
}

/// The config names a snapshot's data holds, in order.
fn names_in(snapshot: &Snapshot) -> Vec<String> {
    let body = SnapshotBody::decode(snapshot.snapshot.get_ref().as_slice()).unwrap();
    body.objects
        .into_iter()
        .map(|o| match o.object {
            Some(shoal_api::pb::object::Object::Config(c)) => c.spec.unwrap().name,
            other => panic!("not a config: {other:?}"),
        })
        .collect()
}

/// A snapshot is the store at its index, however the store moves on
/// after it: the held read of the file does not see later writes,
/// flushed or not.
#[tokio::test]
async fn a_snapshot_holds_the_store_at_its_index_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut machine, store) = open(dir.path(), &key()).await;
    assert!(machine.get_current_snapshot().await.unwrap().is_none());
    apply(&mut machine, 1, 0..100, 0..0, 0).await;
    let built = machine.build_snapshot().await.unwrap();
    assert_eq!(built.meta.last_log_id.unwrap().index, 1);

    // Later writes: 50 more, 10 of the first deleted, and flushed.
    apply(&mut machine, 2, 100..150, 0..10, 1).await;
    machine.file.flush().unwrap();
    assert_eq!(store.read().await.objects().count(), 140);

    let snapshot = machine.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(snapshot.meta, built.meta);
    assert_eq!(names_in(&snapshot), (0..100).map(name).collect::<Vec<_>>());

    // The next snapshot moves to the store as it is now.
    let next = machine.build_snapshot().await.unwrap();
    assert_eq!(next.meta.last_log_id.unwrap().index, 2);
    let snapshot = machine.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(names_in(&snapshot), (10..150).map(name).collect::<Vec<_>>());
}

/// An entry's batches (one per write its proposers made) reach the
/// store's subscribers as one event: sent per batch, the 600 of one
/// entry of 1,000 writers' load overflowed the events' channel within
/// a few applies, and every subscriber re-read the whole state.
#[tokio::test]
async fn an_entry_of_many_writes_is_one_change_event() {
    let dir = tempfile::tempdir().unwrap();
    let (mut machine, store) = open(dir.path(), &key()).await;
    let mut events = store.subscribe();
    let batches = (0..600)
        .map(|i| {
            let mut batch = Batch::default();
            batch.put_config(config(&name(i)));
            batch.into_proto()
        })
        .collect();
    let results = machine
        .apply_entries(vec![Entry {
            log_id: crate::raft::log_id(1, 1, 1),
            payload: EntryPayload::Normal(Payload::new(Proposal { batches })),
        }])
        .await;
    assert_eq!(results[0].conflicts, vec![None; 600]);
    let event = events.try_recv().expect("the entry's event");
    assert_eq!((event.index, event.changes.len()), (1, 600));
    assert!(
        events.try_recv().is_err(),
        "more than one event for one entry"
    );
}

/// A restarted manager offers the state file where it stopped, which is
/// at or past its last snapshot, and loads every object from it.
#[tokio::test]
async fn a_restarted_manager_offers_its_state_file_as_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let cipher = key();
    {
        let (mut machine, _) = open(dir.path(), &cipher).await;
        apply(&mut machine, 1, 0..30, 0..0, 0).await;
        machine.build_snapshot().await.unwrap();
        apply(&mut machine, 2, 30..40, 0..5, 1).await;
        machine.file.flush().unwrap();
    }
    let (mut machine, store) = open(dir.path(), &cipher).await;
    assert_eq!(store.read().await.objects().count(), 35);
    let snapshot = machine.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(snapshot.meta.last_log_id.unwrap().index, 2);
    assert_eq!(names_in(&snapshot), (5..40).map(name).collect::<Vec<_>>());
    let (applied, _) = machine.applied_state().await.unwrap();
    assert_eq!(applied.unwrap().index, 2);
}

/// A follower installs a leader's snapshot: its store and state file
/// become the snapshot's (what it had is gone), and it offers the same
/// snapshot on.
#[tokio::test]
async fn an_installed_snapshot_replaces_the_store_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, _) = open(&dir.path().join("leader"), &key()).await;
    apply(&mut leader, 1, 0..20, 0..0, 0).await;
    apply(&mut leader, 2, 20..25, 0..0, 0).await;
    leader.build_snapshot().await.unwrap();
    let sent = leader.get_current_snapshot().await.unwrap().unwrap();

    let follower_dir = dir.path().join("follower");
    let cipher = key();
    let (mut follower, store) = open(&follower_dir, &cipher).await;
    apply(&mut follower, 1, 100..110, 0..0, 0).await;
    install(&mut follower, &sent).await;
    assert_eq!(store.read().await.objects().count(), 25);
    let offered = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(offered.meta, sent.meta);
    assert_eq!(names_in(&offered), names_in(&sent));
    drop(follower);
    let (_, store) = open(&follower_dir, &cipher).await;
    assert_eq!(store.read().await.objects().count(), 25);
}

/// Authorization reads a copy of the applied nodes and removals (so a
/// call is judged without the store's lock): an apply that changes them
/// refreshes it, and a restarted manager has it from its state file.
#[tokio::test]
async fn authorization_follows_the_applied_nodes_and_removals() {
    use shoal_api::pb::{Cluster, Node, NodeRole, NodeSpec};
    let node = |id: &str, role: NodeRole| Node {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            desired_role: role as i32,
            ..Default::default()
        }),
        role: role as i32,
        ..Default::default()
    };
    let entry = |index: u64, batch: Batch| Entry {
        log_id: crate::raft::log_id(1, 1, index),
        payload: EntryPayload::Normal(Payload::new(Proposal {
            batches: vec![batch.into_proto()],
        })),
    };
    let dir = tempfile::tempdir().unwrap();
    let cipher = key();
    let (mut machine, store) = open(dir.path(), &cipher).await;
    assert_eq!(*store.access(), Access::default());

    let mut batch = Batch::default();
    batch.put_cluster(Cluster {
        meta: Some(Meta {
            id: "cluster".into(),
            ..Default::default()
        }),
        removed_nodes: vec!["gone".into()],
        ..Default::default()
    });
    batch.put_node(node("m1", NodeRole::Manager));
    batch.put_node(node("w1", NodeRole::Worker));
    machine.apply_entries(vec![entry(1, batch)]).await;
    let access = store.access();
    assert!(access.cluster_known);
    assert!(access.removed.contains("gone"));
    assert_eq!(access.nodes.get("m1"), Some(&true));
    assert_eq!(access.nodes.get("w1"), Some(&false));

    // m1 demoted: the next call is judged on it.
    let mut batch = Batch::default();
    let mut demoted = node("m1", NodeRole::Worker);
    demoted.meta.as_mut().unwrap().version = 1;
    batch.put_node(demoted);
    let results = machine.apply_entries(vec![entry(2, batch)]).await;
    assert_eq!(results[0].conflicts, vec![None]);
    assert_eq!(store.access().nodes.get("m1"), Some(&false));
    // A write of nothing authorization reads leaves the copy as it is.
    let before = store.access();
    apply(&mut machine, 3, 0..5, 0..0, 0).await;
    assert!(Arc::ptr_eq(&before, &store.access()));

    machine.file.flush().unwrap();
    drop(machine);
    let (_, store) = open(dir.path(), &cipher).await;
    assert_eq!(*store.access(), *before);
}

/// After a write that lost the changes it took, no later write may
/// record an applied id past them (the file is what followers are
/// sent); installing a snapshot replaces what was missed.
#[tokio::test]
async fn after_a_failed_write_the_file_refuses_writes_until_a_snapshot_is_installed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut machine, _) = open(dir.path(), &key()).await;
    apply(&mut machine, 1, 0..10, 0..0, 0).await;
    let failed: anyhow::Result<()> = machine.file.or_fail(|| Err(anyhow::anyhow!("disk full")));
    assert!(failed.is_err());

    apply(&mut machine, 2, 10..20, 0..0, 0).await;
    let refused = machine.file.flush().unwrap_err().to_string();
    assert!(refused.contains("disk full"), "{refused}");
    assert!(refused.contains("restart the manager"), "{refused}");
    assert!(machine.build_snapshot().await.is_err());
    assert!(machine.get_current_snapshot().await.unwrap().is_none());

    let (mut leader, _) = open(&dir.path().join("leader"), &key()).await;
    apply(&mut leader, 1, 0..5, 0..0, 0).await;
    leader.build_snapshot().await.unwrap();
    let sent = leader.get_current_snapshot().await.unwrap().unwrap();
    install(&mut machine, &sent).await;
    apply(&mut machine, 2, 5..8, 0..0, 0).await;
    machine.file.flush().unwrap();
    assert_eq!(
        machine
            .build_snapshot()
            .await
            .unwrap()
            .meta
            .last_log_id
            .unwrap()
            .index,
        2
    );
}

/// The state file holds no object's content in plaintext, snapshot
/// included (the ids are its keys).
#[tokio::test]
async fn the_state_file_holds_no_plaintext_object() {
    let dir = tempfile::tempdir().unwrap();
    let (mut machine, _) = open(dir.path(), &key()).await;
    apply(&mut machine, 1, 0..10, 0..0, 0).await;
    machine.build_snapshot().await.unwrap();
    drop(machine);
    let bytes = std::fs::read(dir.path().join("state.redb")).unwrap();
    assert!(!bytes.windows(64).any(|w| w.iter().all(|b| *b == b'v')));
}

/// The runtime's one thread stays free while a snapshot is taken and
/// read: a task that only counts and yields keeps counting meanwhile.
/// Done in place, the count would stop for the whole of it.
#[tokio::test(flavor = "current_thread")]
async fn a_snapshot_is_taken_and_read_off_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (mut machine, _) = open(dir.path(), &key()).await;
    apply(&mut machine, 1, 0..20_000, 0..0, 0).await;
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
    machine.build_snapshot().await.unwrap();
    let snapshot = machine.get_current_snapshot().await.unwrap().unwrap();
    let during = counted.load(Ordering::Relaxed) - before;
    counting.abort();

    assert_eq!(names_in(&snapshot).len(), 20_000);
    // Thousands of yields in the sealing, the fsync'd write and the
    // reading of 20,000 objects; in place there would be a handful.
    assert!(during > 1_000, "the runtime ran {during} other steps");
}
