//! The orchestrators: keep each service's tasks as its spec says, on the
//! leader, whenever the store changes or a delayed restart comes due.

pub mod jobs;
pub mod rebalance;
pub mod reconcile;
pub mod update;

use std::{sync::Arc, time::Duration};

use crate::manager::{Manager, WriteError};

pub async fn run(manager: Arc<Manager>) {
    let mut applied = manager.store.applied();
    loop {
        let mut wake_at = None;
        let written = manager
            .update(|state| {
                let plan = reconcile::reconcile(state, shoal_api::now_ms());
                wake_at = plan.wake_at;
                Ok::<_, WriteError>(Some((plan.batch, ())))
            })
            .await;
        if let Err(error) = written {
            tracing::warn!(%error, "orchestrator write failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let sleep = match wake_at {
            Some(at) => Duration::from_millis((at - shoal_api::now_ms()).clamp(0, 60_000) as u64),
            None => Duration::from_secs(60),
        };
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

#[cfg(test)]
mod jobs_tests;
#[cfg(test)]
mod tests;
