//! What the visualizer page is sent: a small JSON view of nodes, services
//! and tasks (not the stored objects: specs, secrets' references and
//! certificates stay on the manager), and the changes of one applied log
//! entry in the same terms.

use serde_json::{Value, json};
use shoal_api::pb::{Kind, Node, Service, Task, TaskState, object};

use crate::store::{Change, State};

/// Every node, service and shown task, for a page that starts (or one
/// that fell behind the watch and must start over).
pub fn snapshot(state: &State, manager: &str) -> Value {
    json!({
        "manager": manager,
        "nodes": state.nodes.values().map(node).collect::<Vec<_>>(),
        "services": state.services.values().map(service).collect::<Vec<_>>(),
        "tasks": state.tasks.values().filter(|t| shown(t)).map(task).collect::<Vec<_>>(),
    })
}

/// The changes of one log entry the page draws, or None when it changed
/// nothing drawn (networks, secrets, configs, the cluster object).
pub fn changes(changes: &[Change]) -> Option<Value> {
    let mut put = Vec::new();
    let mut delete = Vec::new();
    for change in changes {
        match change {
            Change::Put(o) => match &o.object {
                Some(object::Object::Node(n)) => put.push(json!({"kind": "node", "node": node(n)})),
                Some(object::Object::Service(s)) => {
                    put.push(json!({"kind": "service", "service": service(s)}))
                }
                // A task that went to history leaves the page as a delete.
                Some(object::Object::Task(t)) if shown(t) => {
                    put.push(json!({"kind": "task", "task": task(t)}))
                }
                Some(object::Object::Task(t)) => {
                    delete.push(json!({"kind": "task", "id": id(&t.meta)}))
                }
                _ => {}
            },
            Change::Delete(r) => {
                let kind = match r.kind() {
                    Kind::Node => "node",
                    Kind::Service => "service",
                    Kind::Task => "task",
                    _ => continue,
                };
                delete.push(json!({"kind": kind, "id": r.id}));
            }
        }
    }
    (!put.is_empty() || !delete.is_empty()).then(|| json!({"put": put, "delete": delete}))
}

/// Swarm's visualizer shows what runs or is meant to: a task that ended
/// and is not wanted any more is history (`service ps` shows it, not the
/// page).
fn shown(task: &Task) -> bool {
    let current = task.status.as_ref().map(|s| s.state()).unwrap_or_default();
    task.desired_state() <= TaskState::Running || !current.is_terminal()
}

fn id(meta: &Option<shoal_api::pb::Meta>) -> String {
    meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}

fn node(node: &Node) -> Value {
    let spec = node.spec.clone().unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    json!({
        "id": id(&node.meta),
        "hostname": node.description.as_ref().map(|d| d.hostname.as_str()).unwrap_or(""),
        "role": node.role().word(),
        "status": status.state().word(),
        "availability": spec.availability().word(),
        "labels": spec.labels,
        "addr": status.addr,
        "leader": node.manager_status.as_ref().is_some_and(|m| m.leader),
    })
}

fn service(service: &Service) -> Value {
    let spec = service.spec.clone().unwrap_or_default();
    json!({
        "id": id(&service.meta),
        "name": spec.name,
        "mode": spec.mode().word(),
        "replicas": spec.replicas,
    })
}

fn task(task: &Task) -> Value {
    let status = task.status.clone().unwrap_or_default();
    let container = task.spec.as_ref().and_then(|s| s.container.as_ref());
    let image = container.map(|c| c.image.as_str()).unwrap_or("");
    let has_health = container
        .and_then(|c| c.healthcheck.as_ref())
        .is_some_and(|h| !h.test.is_empty() && h.test.first().map(String::as_str) != Some("NONE"));
    json!({
        "id": id(&task.meta),
        "node": task.node_id,
        "service_id": task.service_id,
        "service": task.service_name,
        "slot": task.slot,
        "image": image,
        "tag": image_tag(image),
        "state": status.state().word(),
        "desired": task.desired_state().word(),
        "health": health(has_health, status.state(), &status.err),
        "error": status.err,
    })
}

/// The tag an image reference names (`shoal/echo:2` → `2`; `latest` when
/// it names none, as Docker reads it; a digest reference shows the digest's
/// first characters).
fn image_tag(image: &str) -> String {
    if let Some((_, digest)) = image.split_once('@') {
        return digest.chars().take(19).collect();
    }
    let name = image.rsplit('/').next().unwrap_or(image);
    match name.rsplit_once(':') {
        Some((_, tag)) => tag.to_string(),
        None if image.is_empty() => String::new(),
        None => "latest".into(),
    }
}

/// Docker's health words for a task with a health check; empty without
/// one. The agent reports `starting` until the check passes, and fails a
/// task whose container turned unhealthy.
fn health(has_health: bool, state: TaskState, err: &str) -> &'static str {
    if !has_health {
        return "";
    }
    match state {
        TaskState::Starting => "starting",
        TaskState::Running => "healthy",
        TaskState::Failed if err.contains("unhealthy") => "unhealthy",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::{Meta, Object, ObjectRef, TaskStatus};

    fn a_task(id: &str, state: TaskState, desired: TaskState) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            desired_state: desired as i32,
            ..Default::default()
        }
    }

    #[test]
    fn tags_as_docker_reads_references() {
        assert_eq!(image_tag("shoal/echo:2"), "2");
        assert_eq!(image_tag("registry:5000/echo"), "latest");
        assert_eq!(image_tag("nginx"), "latest");
        assert_eq!(
            image_tag("a@sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
    }

    #[test]
    fn history_leaves_the_page_as_a_delete() {
        let running = a_task("t1", TaskState::Running, TaskState::Running);
        let stopping = a_task("t2", TaskState::Running, TaskState::Shutdown);
        let gone = a_task("t3", TaskState::Shutdown, TaskState::Shutdown);
        let put = |t: &Task| {
            Change::Put(Box::new(Object {
                object: Some(object::Object::Task(t.clone())),
            }))
        };
        let out = changes(&[put(&running), put(&stopping), put(&gone)]).unwrap();
        let ids: Vec<_> = out["put"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["task"]["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["t1", "t2"]);
        assert_eq!(out["delete"][0]["id"], "t3");
        // What the page does not draw is no event at all.
        let network = Change::Delete(ObjectRef {
            kind: Kind::Network as i32,
            id: "n".into(),
        });
        assert!(changes(&[network]).is_none());
    }

    #[test]
    fn health_words_only_for_tasks_with_a_check() {
        assert_eq!(health(false, TaskState::Running, ""), "");
        assert_eq!(health(true, TaskState::Starting, ""), "starting");
        assert_eq!(health(true, TaskState::Running, ""), "healthy");
        assert_eq!(
            health(true, TaskState::Failed, "task: unhealthy container"),
            "unhealthy"
        );
    }
}
