//! Rebalancing, only when asked: `shoal service rebalance SERVICE`, and with
//! `swarm update --rebalance on-node-ready` every replicated service when a
//! node becomes Ready. Swarm never moves a running task; by default neither
//! does Shoal.
//!
//! A rebalance marks the tasks that must move (`Task.rebalance`) and starts
//! the service's rolling update: [`super::update`] replaces marked tasks as
//! it replaces outdated ones, with the service's update config (parallelism,
//! delay, order), and the scheduler puts each new task on the eligible node
//! with the fewest of the service's tasks — the one that was short.

use std::collections::{BTreeMap, HashSet};

use shoal_api::pb::{
    Availability, NodeState, Rebalance, RebalanceResponse, Service, ServiceMode, Task,
};
use tonic::Status;

use super::{reconcile::id, update};
use crate::{
    manager::{Manager, WriteError},
    scheduler::{
        constraint::Constraint,
        placement::{accepts_tasks, occupies_node},
    },
    store::{Batch, State},
};

/// The message of a rolling update started by a rebalance; a failing task
/// then pauses it rather than rolling the spec back (nothing in the spec
/// changed).
pub const MESSAGE: &str = "rebalance in progress";

/// Whether `service`'s update under way is a rebalance.
pub fn is_rebalance(service: &Service) -> bool {
    service
        .update_status
        .as_ref()
        .is_some_and(|s| s.message == MESSAGE)
}

/// Why `service` cannot be rebalanced now, if it cannot.
fn refusal(service: &Service) -> Option<String> {
    let spec = service.spec.as_ref()?;
    let name = &spec.name;
    if spec.mode() != ServiceMode::Replicated {
        return Some(format!(
            "service {name} is {}: only replicated services are rebalanced",
            spec.mode().word()
        ));
    }
    let state = service
        .update_status
        .as_ref()
        .map(|s| s.state.as_str())
        .unwrap_or_default();
    if state == update::UPDATING || state == update::ROLLBACK_STARTED {
        return Some(format!(
            "service {name} is being updated ({state}): rebalance it once that is done"
        ));
    }
    None
}

/// The tasks of `service` to move so that its eligible nodes hold as even a
/// share as can be (at most one apart): taken from the fullest nodes.
pub fn tasks_to_move<'a>(state: &'a State, service: &'a Service) -> Vec<&'a Task> {
    let service_id = id(&service.meta);
    let constraints = service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.placement.as_ref())
        .map(|p| Constraint::parse_all(&p.constraints).unwrap_or_default())
        .unwrap_or_default();
    // Node id → the service's tasks on it, for every node that takes them.
    let mut on: BTreeMap<&str, Vec<&Task>> = state
        .nodes
        .iter()
        .filter(|(_, n)| accepts_tasks(n) && constraints.iter().all(|c| c.matches(n)))
        .map(|(id, _)| (id.as_str(), Vec::new()))
        .collect();
    if on.len() < 2 {
        return Vec::new();
    }
    for task in state.tasks_of_service(service_id) {
        if occupies_node(task)
            && let Some(tasks) = on.get_mut(task.node_id.as_str())
        {
            tasks.push(task);
        }
    }
    for tasks in on.values_mut() {
        tasks.sort_by_key(|t| t.slot);
    }
    let mut counts: BTreeMap<&str, usize> = on.iter().map(|(n, t)| (*n, t.len())).collect();
    let mut moving = Vec::new();
    // The fullest and emptiest nodes while they differ by more than one.
    let uneven = |counts: &BTreeMap<&'a str, usize>| {
        let (&fullest, &most) = counts
            .iter()
            .max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n)))?;
        let (&emptiest, &least) = counts.iter().min_by_key(|(n, c)| (**c, **n))?;
        (most > least + 1).then_some((fullest, most, emptiest, least))
    };
    while let Some((fullest, most, emptiest, least)) = uneven(&counts) {
        let Some(task) = on.get_mut(fullest).and_then(|t| t.pop()) else {
            break;
        };
        moving.push(task);
        counts.insert(fullest, most - 1);
        counts.insert(emptiest, least + 1);
    }
    moving
}

/// Marks the tasks of `service` that must move and starts its rolling
/// update; how many move.
fn mark(state: &State, service: &Service, now: i64, batch: &mut Batch) -> usize {
    let moving = tasks_to_move(state, service);
    if moving.is_empty() {
        return 0;
    }
    for task in &moving {
        let mut marked = (*task).clone();
        marked.rebalance = true;
        batch.put_task(marked);
    }
    let mut next = service.clone();
    next.update_status = Some(update::started(now, false, MESSAGE));
    batch.put_service(next);
    moving.len()
}

/// `shoal service rebalance`: on the leader.
pub async fn request(manager: &Manager, service_id: &str) -> Result<RebalanceResponse, Status> {
    let answer = manager
        .update(|state| -> Result<_, Status> {
            let service = state
                .services
                .get(service_id)
                .ok_or_else(|| Status::not_found(format!("service {service_id} not found")))?;
            if let Some(why) = refusal(service) {
                return Err(Status::failed_precondition(why));
            }
            let mut batch = Batch::default();
            let moving = mark(state, service, shoal_api::now_ms(), &mut batch);
            let answer = RebalanceResponse {
                service: Some(service.clone()),
                moving: moving as u32,
            };
            Ok(Some((batch, answer)))
        })
        .await?;
    answer.ok_or_else(|| Status::internal("the rebalance wrote nothing"))
}

/// Nodes that take tasks now.
fn ready_nodes(state: &State) -> HashSet<String> {
    state
        .nodes
        .iter()
        .filter(|(_, n)| {
            n.status
                .as_ref()
                .is_some_and(|s| s.state() == NodeState::Ready)
                && n.spec
                    .as_ref()
                    .map(|s| s.availability())
                    .unwrap_or_default()
                    == Availability::Active
        })
        .map(|(id, _)| id.clone())
        .collect()
}

fn setting(state: &State) -> Rebalance {
    state
        .cluster
        .as_ref()
        .and_then(|c| c.spec.as_ref())
        .map(|s| s.rebalance())
        .unwrap_or_default()
}

/// Every replicated service that can be rebalanced, marked.
fn mark_all(state: &State, now: i64) -> Batch {
    let mut batch = Batch::default();
    for service in state.services.values() {
        if refusal(service).is_none() && !batch.is_full() {
            let moving = mark(state, service, now, &mut batch);
            if moving > 0 {
                let name = service.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("");
                tracing::info!(
                    service = name,
                    moving,
                    "rebalancing onto a node that became ready"
                );
            }
        }
    }
    batch
}

/// On the leader: with `--rebalance on-node-ready`, rebalances every
/// replicated service when a node becomes Ready (or active again). Nodes
/// ready when this leader starts count as seen.
pub async fn follow(manager: std::sync::Arc<Manager>) {
    let mut applied = manager.store.applied();
    let mut ready = ready_nodes(&*manager.store.read().await);
    loop {
        if applied.changed().await.is_err() {
            return;
        }
        let (now_ready, on) = {
            let state = manager.store.read().await;
            (
                ready_nodes(&state),
                setting(&state) == Rebalance::OnNodeReady,
            )
        };
        let arrived = now_ready.difference(&ready).next().is_some();
        ready = now_ready;
        if !(arrived && on) {
            continue;
        }
        let written = manager
            .update(|state| Ok::<_, WriteError>(Some((mark_all(state, shoal_api::now_ms()), ()))))
            .await;
        if let Err(error) = written {
            tracing::warn!(%error, "rebalance on node ready failed");
        }
    }
}

#[cfg(test)]
#[path = "rebalance_tests.rs"]
mod tests;
