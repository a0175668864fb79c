//! Stopping a task without failing a request. Docker removes a stopping
//! container's endpoint from its load balancer and sleeps a fixed time
//! before the stop signal, hoping every node has heard; swarmkit does
//! nothing of the kind. Here every node acknowledges each assignment set
//! once its data plane holds it, and a running task that is to stop is
//! shown to its node as still meant to run until every Ready node has
//! applied a set where the task takes no new connection (its endpoint is
//! `draining`), or `DRAIN_WAIT_LIMIT` after the stop was decided, so a
//! node that does not answer holds up no stop for long. Its open
//! connections then finish within its stop grace period.

use std::collections::HashMap;

use shoal_api::pb::{AssignmentSet, NodeState, TaskState};

use crate::store::State;

/// The longest a stop waits for the nodes' acknowledgements (ms). A node
/// that misses it is probably down (a heartbeat failure takes three
/// periods: 15 s on Swarm's 5 s, longer past 500 nodes).
pub const DRAIN_WAIT_LIMIT_MS: i64 = 3_000;

/// How far one node's data plane is known to be in line with the store.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeSync {
    /// The store index of the last set sent to the node.
    pub sent: u64,
    /// The highest set version the node said it applied.
    pub acked: u64,
    /// The latest index a set was computed at for the node (when equal to
    /// the one sent, nothing new was sent).
    pub current: u64,
}

impl NodeSync {
    /// The store index this node's tables reflect: the latest computed one
    /// once it applied the last set it was sent (later ones changed nothing
    /// for it), else the one it acknowledged.
    pub fn synced_to(&self) -> u64 {
        if self.acked >= self.sent {
            self.current.max(self.acked)
        } else {
            self.acked
        }
    }
}

/// Rewrites `set` (node `node_id`'s) so that each of its running tasks
/// that is to stop, and that other nodes may still send connections to,
/// stays running until every Ready node is synced past the stop. Returns
/// the earliest time (Unix ms) a held stop goes out anyway, if any is held.
pub fn hold_stops(
    set: &mut AssignmentSet,
    state: &State,
    synced: &HashMap<String, NodeSync>,
    now_ms: i64,
) -> Option<i64> {
    let mut next = None;
    for task in &mut set.tasks {
        if !crate::store::task_index::may_hold_stop(task) {
            continue;
        }
        let (decided_at, version) = task
            .meta
            .as_ref()
            .map(|m| (m.updated_at, m.version))
            .unwrap_or_default();
        let deadline = decided_at + DRAIN_WAIT_LIMIT_MS;
        if now_ms >= deadline {
            continue;
        }
        let lagging = state
            .nodes
            .iter()
            .filter(|(_, n)| n.status.as_ref().map(|s| s.state()) == Some(NodeState::Ready))
            .any(|(id, _)| synced.get(id).is_none_or(|s| s.synced_to() < version));
        if lagging {
            task.desired_state = TaskState::Running as i32;
            next = Some(next.map_or(deadline, |n: i64| n.min(deadline)));
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::{Meta, NetworkAttachment, Node, NodeStatus, Task, TaskStatus};

    fn state_with_nodes(ids: &[&str]) -> State {
        let mut state = State::default();
        for id in ids {
            state.nodes.insert(
                (*id).into(),
                Node {
                    status: Some(NodeStatus {
                        state: NodeState::Ready as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
        }
        state
    }

    fn stopping(version: u64, decided_at: i64) -> AssignmentSet {
        AssignmentSet {
            tasks: vec![Task {
                meta: Some(Meta {
                    id: "t".into(),
                    version,
                    updated_at: decided_at,
                    ..Default::default()
                }),
                desired_state: TaskState::Shutdown as i32,
                status: Some(TaskStatus {
                    state: TaskState::Running as i32,
                    ..Default::default()
                }),
                networks: vec![NetworkAttachment::default()],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn synced(pairs: &[(&str, NodeSync)]) -> HashMap<String, NodeSync> {
        pairs.iter().map(|(id, s)| ((*id).into(), *s)).collect()
    }

    #[test]
    fn a_stop_waits_until_every_ready_node_applied_it() {
        let state = state_with_nodes(&["n1", "n2"]);
        let behind = NodeSync {
            sent: 10,
            acked: 9,
            current: 10,
        };
        let applied = NodeSync {
            sent: 10,
            acked: 10,
            current: 12,
        };
        let mut set = stopping(11, 1_000);
        let held = hold_stops(
            &mut set,
            &state,
            &synced(&[("n1", applied), ("n2", behind)]),
            1_500,
        );
        assert_eq!(held, Some(1_000 + DRAIN_WAIT_LIMIT_MS));
        assert_eq!(set.tasks[0].desired_state(), TaskState::Running, "held");

        let mut set = stopping(11, 1_000);
        let held = hold_stops(
            &mut set,
            &state,
            &synced(&[("n1", applied), ("n2", applied)]),
            1_500,
        );
        assert_eq!(held, None);
        assert_eq!(
            set.tasks[0].desired_state(),
            TaskState::Shutdown,
            "every node applied a set computed after the stop"
        );
    }

    #[test]
    fn a_silent_node_holds_a_stop_for_a_bounded_time_only() {
        let state = state_with_nodes(&["n1", "n2"]);
        let mut set = stopping(11, 1_000);
        let held = hold_stops(
            &mut set,
            &state,
            &HashMap::new(),
            1_000 + DRAIN_WAIT_LIMIT_MS,
        );
        assert_eq!(held, None);
        assert_eq!(set.tasks[0].desired_state(), TaskState::Shutdown);
    }

    #[test]
    fn tasks_that_take_no_connections_stop_at_once() {
        let state = state_with_nodes(&["n1"]);
        let mut set = stopping(11, 1_000);
        set.tasks[0].status.as_mut().unwrap().state = TaskState::Starting as i32;
        assert_eq!(hold_stops(&mut set, &state, &HashMap::new(), 1_001), None);
        let mut set = stopping(11, 1_000);
        set.tasks[0].networks.clear();
        assert_eq!(hold_stops(&mut set, &state, &HashMap::new(), 1_001), None);
    }

    #[test]
    fn a_node_is_synced_to_what_it_applied_and_what_changed_nothing_for_it() {
        let s = NodeSync {
            sent: 5,
            acked: 5,
            current: 9,
        };
        assert_eq!(s.synced_to(), 9);
        let s = NodeSync {
            sent: 7,
            acked: 5,
            current: 9,
        };
        assert_eq!(s.synced_to(), 5, "the last set sent is not applied yet");
    }
}
