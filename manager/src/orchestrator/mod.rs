//! The orchestrators: keep each service's tasks as its spec says, on the
//! leader, whenever the store changes or a delayed restart comes due.

pub mod dirty;
pub mod jobs;
pub mod rebalance;
pub mod reconcile;
pub mod update;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::manager::{Manager, WriteError};
use dirty::Dirty;

/// How often a pass looks at every service even when no change named it:
/// a backstop for what the change events cannot name (a deleted task's
/// service) and for any decision that waits on something else than a
/// write or the clock.
const FULL_PASS_EVERY: Duration = Duration::from_secs(60);

pub async fn run(manager: Arc<Manager>) {
    let mut applied = manager.store.applied();
    let mut changes = manager.store.subscribe();
    // Subscribed before the first pass, which looks at everything: no
    // change after it is missed.
    let mut dirty = Dirty::everything();
    let mut last_full = Instant::now();
    // When a delayed restart, a rolling update's step or an attachment's
    // end comes due: a whole pass then (which finds them all again).
    let mut due_at: Option<i64> = None;
    loop {
        dirty.take_events(&mut changes);
        let now = shoal_api::now_ms();
        if last_full.elapsed() >= FULL_PASS_EVERY || due_at.is_some_and(|at| at <= now) {
            dirty.mark_everything();
        }
        let whole = dirty.is_everything();
        if !whole && dirty.is_empty() {
            // Nothing a pass decides on changed (and nothing is due): no
            // pass, and no turn at the store's write lock.
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(next_sleep(due_at, last_full)) => {}
            }
            continue;
        }
        let mut wake_at = None;
        let mut full_batch = false;
        let written = manager
            .update(|state| {
                let plan = dirty.reconcile(state, shoal_api::now_ms());
                wake_at = plan.wake_at;
                full_batch = plan.batch.is_full();
                Ok::<_, WriteError>(Some((plan.batch, ())))
            })
            .await;
        match written {
            // A full batch may have left services of the scope for the next
            // pass: they stay marked.
            Ok(_) if !full_batch => dirty.clear(),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "orchestrator write failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if whole {
            last_full = Instant::now();
            due_at = wake_at;
        } else if let Some(at) = wake_at {
            due_at = Some(due_at.map_or(at, |d| d.min(at)));
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(next_sleep(due_at, last_full)) => {}
        }
    }
}

/// How long to wait for a change before a pass is due anyway.
fn next_sleep(due_at: Option<i64>, last_full: Instant) -> Duration {
    let until_due = due_at.map_or(FULL_PASS_EVERY, |at| {
        Duration::from_millis((at - shoal_api::now_ms()).clamp(0, 60_000) as u64)
    });
    until_due.min(FULL_PASS_EVERY.saturating_sub(last_full.elapsed()))
}

#[cfg(test)]
mod dirty_tests;
#[cfg(test)]
mod jobs_tests;
#[cfg(test)]
mod tests;
