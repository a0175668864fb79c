use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use shoal_api::pb::{Meta, Node, NodeSpec};

use super::*;

/// A Raft stand-in: applies each proposed batch to the store as the state
/// machine does (all or nothing, versions become the index), a round of
/// `ROUND` each, one at a time; fails the rounds it is told to.
#[derive(Clone)]
struct FakeRaft {
    store: Store,
    index: Arc<AtomicU64>,
    rounds: Arc<AtomicU64>,
    fail: Arc<AtomicBool>,
}

const ROUND: Duration = Duration::from_millis(20);

impl FakeRaft {
    fn new(store: &Store) -> Self {
        Self {
            store: store.clone(),
            index: Arc::new(AtomicU64::new(1)),
            rounds: Arc::default(),
            fail: Arc::default(),
        }
    }

    fn writer(&self) -> GroupCommit {
        let raft = self.clone();
        GroupCommit::start(self.store.clone(), move |batch| {
            let raft = raft.clone();
            async move {
                tokio::time::sleep(ROUND).await;
                raft.rounds.fetch_add(1, Ordering::SeqCst);
                if raft.fail.load(Ordering::SeqCst) {
                    return Err(WriteError::NotCommitted(ROUND));
                }
                let index = raft.index.fetch_add(1, Ordering::SeqCst) + 1;
                let mut state = raft.store.write().await;
                state
                    .apply(index, &batch)
                    .map(|_| index)
                    .map_err(|c| WriteError::Conflict(c.to_string()))
            }
        })
    }
}

fn node(id: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn put(node: Node) -> Batch {
    let mut batch = Batch::default();
    batch.put_node(node);
    batch
}

/// Appends `n` to node `id`'s "seq" label, as read now.
async fn append(writer: &GroupCommit, id: &str, n: usize) -> Result<Option<()>, WriteError> {
    writer
        .update(|state| {
            let mut node = state
                .nodes
                .get(id)
                .cloned()
                .unwrap_or_else(|| node(id, &[]));
            let labels = &mut node.spec.get_or_insert_with(Default::default).labels;
            let seq = labels.entry("seq".into()).or_default();
            if !seq.is_empty() {
                seq.push(',');
            }
            seq.push_str(&n.to_string());
            Ok(Some((put(node), ())))
        })
        .await
}

/// Runs `futures` together, polling them in order (so each queues before
/// the next), and returns their outputs in order.
async fn join_in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test]
async fn concurrent_updates_all_land_in_fewer_rounds() {
    let store = Store::new();
    let raft = FakeRaft::new(&store);
    let writer = Arc::new(raft.writer());
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..200 {
        let writer = writer.clone();
        calls.spawn(async move {
            writer
                .update(|_| Ok::<_, WriteError>(Some((put(node(&format!("n{i}"), &[])), i))))
                .await
        });
    }
    let mut answered = Vec::new();
    while let Some(done) = calls.join_next().await {
        answered.push(done.unwrap().unwrap().unwrap());
    }
    answered.sort();
    assert_eq!(answered, (0..200).collect::<Vec<_>>());
    let state = store.read().await;
    assert_eq!(state.nodes.len(), 200, "every write landed");
    assert!(
        state
            .nodes
            .values()
            .all(|n| n.meta.as_ref().unwrap().version < PENDING_VERSION),
        "only committed versions are stored"
    );
    let rounds = raft.rounds.load(Ordering::SeqCst);
    assert!(rounds < 50, "200 writes shared rounds: {rounds} rounds");
}

#[tokio::test]
async fn order_is_kept_and_each_sees_the_writes_before_it() {
    let store = Store::new();
    let raft = FakeRaft::new(&store);
    let writer = raft.writer();
    // Polled in order: queued in order; all in a few groups.
    let calls: Vec<_> = (0..50).map(|n| append(&writer, "a", n)).collect();
    for done in join_in_order(calls).await {
        done.unwrap();
    }
    let state = store.read().await;
    let want: Vec<String> = (0..50).map(|n| n.to_string()).collect();
    assert_eq!(
        state.nodes["a"].spec.as_ref().unwrap().labels["seq"],
        want.join(","),
        "no write was lost and they applied in the order queued"
    );
    assert!(raft.rounds.load(Ordering::SeqCst) < 50);
}

#[tokio::test]
async fn one_refusal_does_not_sink_the_others() {
    let store = Store::new();
    let raft = FakeRaft::new(&store);
    let writer = raft.writer();
    let refused = writer.update(|_| -> Result<Option<(Batch, ())>, WriteError> {
        Err(WriteError::Conflict("refused by its closure".into()))
    });
    let nothing = writer.update(|_| Ok::<_, WriteError>(None::<(Batch, ())>));
    let (a, refused, b, nothing, c) = tokio::join!(
        append(&writer, "a", 1),
        refused,
        append(&writer, "b", 2),
        nothing,
        append(&writer, "c", 3)
    );
    assert!(matches!(refused, Err(WriteError::Conflict(m)) if m == "refused by its closure"));
    assert!(matches!(nothing, Ok(None)));
    for done in [a, b, c] {
        assert!(matches!(done, Ok(Some(()))));
    }
    let state = store.read().await;
    let ids: Vec<&str> = state.nodes.keys().map(String::as_str).collect();
    assert_eq!(ids, ["a", "b", "c"]);
}

#[tokio::test]
async fn a_failed_proposal_applies_nothing_of_its_group() {
    let store = Store::new();
    let raft = FakeRaft::new(&store);
    let writer = raft.writer();
    append(&writer, "a", 1).await.unwrap();
    let before = store.read().await.clone();
    raft.fail.store(true, Ordering::SeqCst);
    let (a, b, c) = tokio::join!(
        append(&writer, "a", 2),
        append(&writer, "b", 3),
        writer.update(|state| {
            let mut batch = Batch::default();
            let version = state.version_of(Kind::Node, "a");
            batch.delete(Kind::Node, "a", version);
            Ok::<_, WriteError>(Some((batch, ())))
        })
    );
    for done in [a, b, c] {
        assert!(matches!(done, Err(WriteError::NotCommitted(_))), "{done:?}");
    }
    assert_eq!(
        *store.read().await,
        before,
        "the working copy was put back: nothing of the group is seen"
    );
    raft.fail.store(false, Ordering::SeqCst);
    append(&writer, "a", 4).await.unwrap();
    let state = store.read().await;
    assert_eq!(state.nodes["a"].spec.as_ref().unwrap().labels["seq"], "1,4");
}

#[tokio::test]
async fn a_version_read_before_an_uncommitted_write_conflicts_with_it() {
    let store = Store::new();
    let raft = FakeRaft::new(&store);
    let writer = raft.writer();
    append(&writer, "a", 1).await.unwrap();
    let read = store.read().await.nodes["a"].clone();
    // A client read the node; a write to it is queued first; the client's
    // write names the version it read: a lost update, refused as it would
    // be after the first write committed.
    let stale = writer.update(|_| Ok::<_, WriteError>(Some((put(read.clone()), ()))));
    let (first, stale) = tokio::join!(append(&writer, "a", 2), stale);
    first.unwrap();
    assert!(matches!(stale, Err(WriteError::Conflict(_))), "{stale:?}");
    let state = store.read().await;
    assert_eq!(state.nodes["a"].spec.as_ref().unwrap().labels["seq"], "1,2");
}

#[tokio::test]
async fn deleting_and_creating_again_in_one_group_applies_both() {
    let store = Store::new();
    let raft = FakeRaft::new(&store);
    let writer = raft.writer();
    append(&writer, "a", 1).await.unwrap();
    let delete = writer.update(|state| {
        let mut batch = Batch::default();
        batch.delete(Kind::Node, "a", state.version_of(Kind::Node, "a"));
        Ok::<_, WriteError>(Some((batch, ())))
    });
    let create = writer.update(|state| {
        assert!(
            !state.nodes.contains_key("a"),
            "the delete queued first is seen"
        );
        Ok::<_, WriteError>(Some((put(node("a", &[("again", "yes")])), ())))
    });
    let (delete, create) = tokio::join!(delete, create);
    delete.unwrap();
    create.unwrap();
    let state = store.read().await;
    let labels: HashMap<_, _> = state.nodes["a"]
        .spec
        .clone()
        .unwrap()
        .labels
        .into_iter()
        .collect();
    assert_eq!(labels.get("again").map(String::as_str), Some("yes"));
    assert!(!labels.contains_key("seq"));
}

/// Deletes node `id` if it is there; a refusal naming it otherwise.
async fn delete(writer: &GroupCommit, id: &str) -> Result<Option<()>, WriteError> {
    writer
        .update(|state| {
            if !state.nodes.contains_key(id) {
                return Err(WriteError::Conflict(format!("{id}: not found")));
            }
            let mut batch = Batch::default();
            batch.delete(Kind::Node, id, state.version_of(Kind::Node, id));
            Ok(Some((batch, ())))
        })
        .await
}

#[tokio::test]
async fn a_refusal_resting_on_its_groups_writes_is_answered_once_they_commit() {
    let store = Store::new();
    let raft = FakeRaft::new(&store);
    let writer = raft.writer();
    append(&writer, "a", 1).await.unwrap();
    // The second delete sees the first's uncommitted delete and refuses: by
    // the time it is told so, the committed state must say so too (a read
    // right after it must not find the node).
    type Told<'a> =
        std::pin::Pin<Box<dyn Future<Output = (Result<Option<()>, WriteError>, bool)> + 'a>>;
    let first: Told = Box::pin(async { (delete(&writer, "a").await, false) });
    let second: Told = Box::pin(async {
        let answer = delete(&writer, "a").await;
        (answer, store.read().await.nodes.contains_key("a"))
    });
    let mut told = join_in_order(vec![first, second]).await;
    let (second, still_there) = told.pop().unwrap();
    let (first, _) = told.pop().unwrap();
    assert!(matches!(first, Ok(Some(()))), "{first:?}");
    assert!(
        matches!(&second, Err(WriteError::Conflict(m)) if m == "a: not found"),
        "{second:?}"
    );
    assert!(
        !still_there,
        "refused before the delete it rests on committed"
    );

    // When the group fails, the refusal it rested on is not given: the
    // caller gets the group's error (the node is still there).
    append(&writer, "b", 1).await.unwrap();
    raft.fail.store(true, Ordering::SeqCst);
    let (first, second) = tokio::join!(delete(&writer, "b"), delete(&writer, "b"));
    assert!(
        matches!(first, Err(WriteError::NotCommitted(_))),
        "{first:?}"
    );
    assert!(
        matches!(second, Err(WriteError::NotCommitted(_))),
        "{second:?}"
    );
    assert!(store.read().await.nodes.contains_key("b"));
}
