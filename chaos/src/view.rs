//! What the cluster says about itself (nodes, leader, tasks, services),
//! asked of whichever manager answers first: the fault driver picks its
//! targets with it and times recoveries.

use std::{collections::BTreeMap, time::Duration};

use shoal_api::pb::{Empty, NodeState, Service, Task, TaskState};

use crate::control::Manager;

pub struct View {
    /// Hostname by node id.
    pub hostnames: BTreeMap<String, String>,
    /// Hostnames of Ready nodes.
    pub ready: Vec<String>,
    pub leader: Option<String>,
    /// Hostnames of the managers the leader sees reachable (itself included).
    pub reachable_managers: Vec<String>,
    pub tasks: Vec<Task>,
    pub services: Vec<Service>,
}

impl View {
    /// Hostnames of the nodes running a task of `service` (by name), one
    /// entry per running task.
    pub fn running(&self, service: &str) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|t| t.service_name == service)
            .filter(|t| t.desired_state() == TaskState::Running)
            .filter(|t| t.status.as_ref().map(|s| s.state()) == Some(TaskState::Running))
            .map(|t| {
                self.hostnames
                    .get(&t.node_id)
                    .cloned()
                    .unwrap_or_else(|| t.node_id.clone())
            })
            .collect()
    }
}

/// Asks the managers in turn (each given `timeout`); None if none answers.
pub async fn ask(managers: &mut [Manager], timeout: Duration) -> Option<View> {
    for manager in managers.iter_mut() {
        let Some(mut client) = manager.client().await else {
            continue;
        };
        let view = tokio::time::timeout(timeout, async {
            let nodes = client.list_nodes(Empty {}).await.ok()?.into_inner().nodes;
            let tasks = client.list_tasks(Empty {}).await.ok()?.into_inner().tasks;
            let services = client
                .list_services(Empty {})
                .await
                .ok()?
                .into_inner()
                .services
                .into_iter()
                .filter_map(|s| s.service)
                .collect();
            Some((nodes, tasks, services))
        })
        .await;
        let Ok(Some((nodes, tasks, services))) = view else {
            manager.forget();
            continue;
        };
        let hostname = |n: &shoal_api::pb::Node| {
            n.description
                .as_ref()
                .map(|d| d.hostname.clone())
                .unwrap_or_default()
        };
        return Some(View {
            hostnames: nodes
                .iter()
                .filter_map(|n| Some((n.meta.as_ref()?.id.clone(), hostname(n))))
                .collect(),
            ready: nodes
                .iter()
                .filter(|n| n.status.as_ref().map(|s| s.state()) == Some(NodeState::Ready))
                .map(hostname)
                .collect(),
            leader: nodes
                .iter()
                .find(|n| n.manager_status.as_ref().is_some_and(|m| m.leader))
                .map(hostname),
            reachable_managers: nodes
                .iter()
                .filter(|n| {
                    n.manager_status
                        .as_ref()
                        .is_some_and(|m| m.leader || m.reachability == "reachable")
                })
                .map(hostname)
                .collect(),
            tasks,
            services,
        });
    }
    None
}
