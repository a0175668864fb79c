//! `shoal swarm update --dispatcher-heartbeat|--task-history-limit|--rebalance`: the
//! cluster-wide settings the dispatcher and the orchestrator read from the
//! Cluster object at each use, so a change takes effect at once.

use std::time::Duration;

use shoal_api::pb::{ClusterSpec, Rebalance, UpdateClusterRequest};
use tonic::Status;

use crate::{manager::Manager, store::Batch};

/// The shortest and longest heartbeat period taken: agents beat that often,
/// and a node is down after three missed beats.
pub const HEARTBEAT_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));
/// The most finished tasks kept per slot.
pub const MAX_TASK_HISTORY: u64 = 1000;

/// Checks the settings `request` gives and applies them to `spec`; true if
/// anything changed.
pub fn apply(spec: &mut ClusterSpec, request: &UpdateClusterRequest) -> Result<bool, Status> {
    let mut changed = false;
    if let Some(ms) = request.heartbeat_period_ms {
        let (min, max) = HEARTBEAT_RANGE;
        if ms < min.as_millis() as i64 || ms > max.as_millis() as i64 {
            return Err(Status::invalid_argument(format!(
                "dispatcher heartbeat period {ms}ms is out of range: from {min:?} to {max:?}"
            )));
        }
        changed |= spec.heartbeat_period_ms != ms;
        spec.heartbeat_period_ms = ms;
    }
    if let Some(limit) = request.task_history_limit {
        if !(1..=MAX_TASK_HISTORY).contains(&limit) {
            return Err(Status::invalid_argument(format!(
                "task history limit {limit} is out of range: from 1 to {MAX_TASK_HISTORY}"
            )));
        }
        changed |= spec.task_history_limit != limit;
        spec.task_history_limit = limit;
    }
    if let Some(rebalance) = request.rebalance {
        if Rebalance::try_from(rebalance).is_err() {
            return Err(Status::invalid_argument(format!(
                "rebalance {rebalance} is unknown: use {}",
                Rebalance::words().join(" or ")
            )));
        }
        changed |= spec.rebalance != rebalance;
        spec.rebalance = rebalance;
    }
    Ok(changed)
}

pub async fn update(manager: &Manager, request: &UpdateClusterRequest) -> Result<(), Status> {
    if request.heartbeat_period_ms.is_none()
        && request.task_history_limit.is_none()
        && request.rebalance.is_none()
    {
        return Ok(());
    }
    manager
        .update(|state| -> Result<_, Status> {
            let mut cluster = state
                .cluster
                .clone()
                .ok_or_else(|| Status::unavailable("the cluster is not initialised"))?;
            if !apply(cluster.spec.get_or_insert_default(), request)? {
                return Ok(None);
            }
            let mut batch = Batch::default();
            batch.put_cluster(cluster);
            Ok(Some((batch, ())))
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_apply_within_their_ranges() {
        let mut spec = ClusterSpec {
            heartbeat_period_ms: 5000,
            task_history_limit: 5,
            ..Default::default()
        };
        let request = UpdateClusterRequest {
            heartbeat_period_ms: Some(2000),
            task_history_limit: Some(10),
            ..Default::default()
        };
        assert!(apply(&mut spec, &request).unwrap());
        assert_eq!(
            (spec.heartbeat_period_ms, spec.task_history_limit),
            (2000, 10)
        );
        assert!(
            !apply(&mut spec, &request).unwrap(),
            "no change the second time"
        );
        for bad in [
            UpdateClusterRequest {
                heartbeat_period_ms: Some(0),
                ..Default::default()
            },
            UpdateClusterRequest {
                task_history_limit: Some(0),
                ..Default::default()
            },
        ] {
            let err = apply(&mut spec, &bad).unwrap_err();
            assert!(err.message().contains("out of range"), "{}", err.message());
        }
    }

    #[test]
    fn rebalance_defaults_to_never_and_takes_only_known_values() {
        let mut spec = ClusterSpec::default();
        assert_eq!(spec.rebalance(), Rebalance::Never);
        let on = UpdateClusterRequest {
            rebalance: Some(Rebalance::OnNodeReady as i32),
            ..Default::default()
        };
        assert!(apply(&mut spec, &on).unwrap());
        assert_eq!(spec.rebalance(), Rebalance::OnNodeReady);
        let bad = UpdateClusterRequest {
            rebalance: Some(7),
            ..Default::default()
        };
        let err = apply(&mut spec, &bad).unwrap_err();
        assert!(
            err.message().contains("never or on-node-ready"),
            "{}",
            err.message()
        );
    }
}
