//! Applying assignment sets apart from the session that receives them.
//!
//! The engine's work for a set (netlink, containers) can take long (a
//! dockerd restarting, a slow engine under load) and is not safe to cut
//! half-way. Done inside the session, it held the session: a node whose
//! manager died or lost leadership meanwhile went to the next one only once
//! the work ended. As swarmkit's agent hands sets to its worker, one task
//! per agent applies them, for as long as the agent runs and across
//! sessions: a session hands over each set and goes on (heartbeats, a new
//! leader, log requests), and hears when the set is applied.
//!
//! The applier keeps its own copy of the set, built from the same messages
//! (a complete set, then deltas): messages that arrive while a set is
//! being applied are taken together, so only the newest set is applied
//! next, and nothing copies a whole set.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use shoal_api::{
    assignments::Receiver,
    pb::{AssignmentSet, TaskStatusUpdate},
};
use tokio::sync::{Notify, mpsc, watch};

use super::{AbortOnDrop, Executor};

/// Which handed-over set was applied last: a session tells its own
/// (`session`) from an earlier session's, and its messages by `hand`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The session that handed the message over (see [`Applier::hand`]).
    pub session: u64,
    /// The session's count of messages handed over when it handed this one.
    pub hand: u64,
    /// The applied set's version (0: the manager numbers none).
    pub version: u64,
}

/// The agent's one applier of assignment sets; dropping it stops the task.
pub struct Applier {
    queue: Arc<Mutex<VecDeque<(u64, u64, AssignmentSet)>>>,
    wake: Arc<Notify>,
    applied: watch::Receiver<Applied>,
    _task: AbortOnDrop<()>,
}

impl Applier {
    /// Starts the task; what the executor reports goes to `report`.
    pub fn start(
        executor: Arc<dyn Executor>,
        report: mpsc::UnboundedSender<TaskStatusUpdate>,
    ) -> Self {
        let queue: Arc<Mutex<VecDeque<(u64, u64, AssignmentSet)>>> = Arc::default();
        let wake = Arc::new(Notify::new());
        let (applied_tx, applied) = watch::channel(Applied::default());
        let task = tokio::spawn(apply_forever(
            executor,
            report,
            queue.clone(),
            wake.clone(),
            applied_tx,
        ));
        Self {
            queue,
            wake,
            applied,
            _task: AbortOnDrop(task),
        }
    }

    /// Hands over an assignment message, in its stream's order (the
    /// session checked the order: a stream's first message is complete).
    pub fn hand(&self, session: u64, hand: u64, message: AssignmentSet) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((session, hand, message));
        self.wake.notify_one();
    }

    /// Which set was applied last; changes once per set applied.
    pub fn applied(&self) -> watch::Receiver<Applied> {
        self.applied.clone()
    }
}

async fn apply_forever(
    executor: Arc<dyn Executor>,
    report: mpsc::UnboundedSender<TaskStatusUpdate>,
    queue: Arc<Mutex<VecDeque<(u64, u64, AssignmentSet)>>>,
    wake: Arc<Notify>,
    applied: watch::Sender<Applied>,
) {
    let mut set = Receiver::default();
    loop {
        // A permit stored by `notify_one` while a set was being applied
        // wakes this at once: nothing handed over is missed.
        wake.notified().await;
        let messages = std::mem::take(&mut *queue.lock().unwrap_or_else(|e| e.into_inner()));
        let mut last = None;
        for (session, hand, message) in messages {
            match set.take(message) {
                Ok(_) => last = Some((session, hand)),
                // Not expected (the session checked the order): the set
                // waits for the complete one a new stream begins with.
                Err(gap) => {
                    tracing::warn!(%gap, "assignment messages out of order; waiting for a complete set");
                    set = Receiver::default();
                    last = None;
                }
            }
        }
        let (Some((session, hand)), Some(current)) = (last, set.current()) else {
            continue;
        };
        let tag = Applied {
            session,
            hand,
            version: current.version,
        };
        executor.reconcile(current, &report).await;
        applied.send_replace(tag);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Records the versions it applies; each apply waits for a permit.
    struct Gated {
        applied: Mutex<Vec<u64>>,
        /// The task ids of the last set applied.
        tasks: Mutex<Vec<String>>,
        gate: tokio::sync::Semaphore,
        /// Applies begun.
        began: watch::Sender<usize>,
    }

    impl Default for Gated {
        fn default() -> Self {
            Self {
                applied: Mutex::default(),
                tasks: Mutex::default(),
                gate: tokio::sync::Semaphore::new(0),
                began: watch::Sender::new(0),
            }
        }
    }

    impl Gated {
        async fn begun(&self, n: usize) {
            let mut began = self.began.subscribe();
            tokio::time::timeout(Duration::from_secs(5), began.wait_for(|b| *b >= n))
                .await
                .expect("the apply began")
                .expect("the executor lives");
        }
    }

    #[tonic::async_trait]
    impl Executor for Gated {
        async fn reconcile(
            &self,
            set: &AssignmentSet,
            _report: &mpsc::UnboundedSender<TaskStatusUpdate>,
        ) {
            self.began.send_modify(|b| *b += 1);
            if let Ok(permit) = self.gate.acquire().await {
                permit.forget();
            }
            self.applied.lock().unwrap().push(set.version);
            *self.tasks.lock().unwrap() = set
                .tasks
                .iter()
                .map(shoal_api::assignments::task_key)
                .collect();
        }
    }

    /// A complete set (sequence 0: from a manager that numbers none).
    fn set(version: u64) -> AssignmentSet {
        AssignmentSet {
            version,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn sets_handed_over_during_an_apply_are_coalesced_to_the_newest() {
        let executor = Arc::new(Gated::default());
        let (report, _reports) = mpsc::unbounded_channel();
        let applier = Applier::start(executor.clone(), report);
        let mut applied = applier.applied();
        applier.hand(1, 1, set(10));
        // The first set is being applied (held at the gate) while three more come.
        executor.begun(1).await;
        for (hand, version) in [(2, 11), (3, 12), (4, 13)] {
            applier.hand(1, hand, set(version));
        }
        executor.gate.add_permits(10);
        let last = tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|a| a.hand == 4))
            .await
            .expect("the newest set applied")
            .expect("the applier runs");
        assert_eq!(
            *last,
            Applied {
                session: 1,
                hand: 4,
                version: 13
            }
        );
        assert_eq!(*executor.applied.lock().unwrap(), vec![10, 13]);
    }

    #[tokio::test]
    async fn an_apply_under_way_does_not_hold_up_the_hand_over() {
        let executor = Arc::new(Gated::default());
        let (report, _reports) = mpsc::unbounded_channel();
        let applier = Applier::start(executor.clone(), report);
        applier.hand(1, 1, set(1));
        executor.begun(1).await;
        // The engine is stuck: handing over still returns at once, and
        // the next session's set is the one applied once it is free.
        applier.hand(2, 1, set(7));
        assert_eq!(*applier.applied().borrow(), Applied::default());
        executor.gate.add_permits(2);
        let mut applied = applier.applied();
        let last =
            tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|a| a.session == 2))
                .await
                .expect("the second session's set applied")
                .expect("the applier runs");
        assert_eq!(last.version, 7);
        assert_eq!(*executor.applied.lock().unwrap(), vec![1, 7]);
    }

    #[tokio::test]
    async fn deltas_handed_over_during_an_apply_build_the_newest_set() {
        use shoal_api::pb::{Meta, Task};
        let task = |id: &str| Task {
            meta: Some(Meta {
                id: id.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let executor = Arc::new(Gated::default());
        let (report, _reports) = mpsc::unbounded_channel();
        let applier = Applier::start(executor.clone(), report);
        let mut sender = shoal_api::assignments::Sender::new(true);
        let mut next = |version, tasks: &[Task]| {
            sender
                .next(AssignmentSet {
                    version,
                    tasks: tasks.to_vec(),
                    ..Default::default()
                })
                .expect("a change")
        };
        let mut tasks = vec![task("a")];
        let mut version = 1;
        applier.hand(1, 1, next(version, &tasks));
        executor.begun(1).await;
        // While the first is applied: three deltas (b, c added; a removed).
        for (hand, change) in [(2, "+b"), (3, "+c"), (4, "-a")] {
            match change.split_at(1) {
                ("+", id) => tasks.push(task(id)),
                (_, id) => tasks.retain(|t| shoal_api::assignments::task_key(t) != id),
            }
            version += 1;
            let message = next(version, &tasks);
            assert!(message.delta, "a delta");
            applier.hand(1, hand, message);
        }
        executor.gate.add_permits(2);
        let mut applied = applier.applied();
        let last = tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|a| a.hand == 4))
            .await
            .expect("the newest set applied")
            .expect("the applier runs");
        assert_eq!(last.version, 4);
        assert_eq!(*executor.applied.lock().unwrap(), vec![1, 4]);
        assert_eq!(*executor.tasks.lock().unwrap(), vec!["b", "c"]);
    }
}
