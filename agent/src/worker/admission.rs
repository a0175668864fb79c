//! What the agent lets start, so that no assignment can take its host
//! down: at most as many tasks as the node holds
//! ([`shoal_api::capacity::tasks_per_node`], the number the manager's
//! scheduler also respects; a task past it is rejected with a message
//! naming the limit, never started), and at most a few container starts at
//! once (each start is a burst of work for the engine: with hundreds at
//! once, a 2-core host stops answering).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Container starts at once, by default: enough to start a node's tasks
/// quickly, few enough that the engine keeps answering.
pub const DEFAULT_CONCURRENT_STARTS: usize = 4;

pub struct Admission {
    /// The most tasks the node holds (None: its description gave no number).
    capacity: Option<u64>,
    starts: Arc<Semaphore>,
}

impl Admission {
    pub fn new(capacity: Option<u64>, concurrent_starts: usize) -> Self {
        Self {
            capacity,
            starts: Arc::new(Semaphore::new(concurrent_starts.max(1))),
        }
    }

    /// Whether one more task may start while `holding` run or start here;
    /// the rejection message when not.
    pub fn admit(&self, holding: usize) -> Result<(), String> {
        match self.capacity {
            Some(capacity) if holding as u64 >= capacity => Err(format!(
                "node at its task limit: it runs {holding} tasks and holds at most {capacity} \
                 (shoal-agent join --max-tasks; by default from its memory and process ids)"
            )),
            _ => Ok(()),
        }
    }

    /// Waits for a turn to start a container; the turn ends when the
    /// permit is dropped.
    pub async fn start_turn(&self) -> Option<OwnedSemaphorePermit> {
        self.starts.clone().acquire_owned().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    #[test]
    fn tasks_past_the_nodes_capacity_are_refused_naming_the_limit() {
        let admission = Admission::new(Some(3), 4);
        assert!(admission.admit(0).is_ok());
        assert!(admission.admit(2).is_ok());
        let err = admission.admit(3).unwrap_err();
        assert!(err.contains("holds at most 3"), "{err}");
        assert!(err.contains("--max-tasks"), "{err}");
        assert!(Admission::new(None, 4).admit(100_000).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_than_the_allowed_starts_run_at_once() {
        let admission = Arc::new(Admission::new(None, 4));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let starts: Vec<_> = (0..20)
            .map(|_| {
                let (admission, running, most) = (admission.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    let _turn = admission.start_turn().await;
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for start in starts {
            start.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 4, "starts at once");
    }
}
