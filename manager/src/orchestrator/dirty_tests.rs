//! Passes over the services a change named: they decide for those
//! services only, as a whole pass would for them.

use shoal_api::pb::{
    Kind, Meta, Node, NodeSpec, NodeState, NodeStatus, RestartPolicy, ServiceMode, StoreBatch,
    Task, TaskState, TaskStatus, object::Object as O, store_action::Action,
};

use super::{dirty::Dirty, reconcile::reconcile, tests::World};
use crate::store::Batch;

/// The changes the world's writes since event `from` made.
fn dirty_since(world: &World, from: usize) -> Dirty {
    let mut dirty = Dirty::default();
    for event in &world.events[from..] {
        dirty.note(event);
    }
    dirty
}

/// The tasks a batch writes, as (service, desired state, node).
fn task_writes(batch: StoreBatch) -> Vec<(String, TaskState, String)> {
    batch
        .actions
        .into_iter()
        .filter_map(|a| match a.action {
            Some(Action::Put(object)) => match object.object {
                Some(O::Task(t)) => Some((t.service_id.clone(), t.desired_state(), t.node_id)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn place(world: &mut World, service: &str, node: &str) {
    let mut batch = Batch::default();
    for task in world.state.tasks_of_service(service) {
        let mut task = task.clone();
        task.node_id = node.into();
        task.status = Some(TaskStatus {
            state: TaskState::Running as i32,
            ..Default::default()
        });
        batch.put_task(task);
    }
    world.write(batch);
}

#[test]
fn a_change_to_one_service_reconciles_that_service_only() {
    let mut w = World::new();
    w.node("n1");
    for id in ["a", "b"] {
        w.service(id, ServiceMode::Replicated, 2, RestartPolicy::default());
    }
    w.settle();
    let from = w.events.len();
    w.service("a", ServiceMode::Replicated, 3, RestartPolicy::default());
    let dirty = dirty_since(&w, from);
    // b is scaled too, by a write this pass has not heard of yet.
    w.service("b", ServiceMode::Replicated, 3, RestartPolicy::default());

    let plan = dirty.reconcile(&w.state, w.now);
    let writes = task_writes(plan.batch.into_proto());
    assert_eq!(
        writes,
        [("a".to_owned(), TaskState::Running, String::new())],
        "a's new slot, nothing of b"
    );
    // A whole pass finds both.
    let whole = task_writes(reconcile(&w.state, w.now).batch.into_proto());
    let services: Vec<&str> = whole.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(services, ["a", "b"]);
}

#[test]
fn a_node_going_down_reconciles_the_services_on_it_only() {
    let mut w = World::new();
    w.node("n1");
    w.node("n2");
    for id in ["a", "b"] {
        w.service(id, ServiceMode::Replicated, 1, RestartPolicy::default());
    }
    w.settle();
    place(&mut w, "a", "n1");
    place(&mut w, "b", "n2");
    let from = w.events.len();
    let mut batch = Batch::default();
    batch.put_node(Node {
        meta: w.state.nodes["n2"].meta.clone(),
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            state: NodeState::Down as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    w.write(batch);
    let dirty = dirty_since(&w, from);
    assert!(!dirty.is_everything());

    let writes = task_writes(dirty.reconcile(&w.state, w.now).batch.into_proto());
    assert_eq!(
        writes,
        [
            ("b".to_owned(), TaskState::Shutdown, "n2".to_owned()),
            ("b".to_owned(), TaskState::Running, String::new()),
        ],
        "b's task on n2 stops and its slot starts again; a is not looked at"
    );
}

#[test]
fn changes_that_name_no_service_make_the_pass_whole() {
    let mut w = World::new();
    w.node("n1");
    w.service("a", ServiceMode::Replicated, 1, RestartPolicy::default());
    w.settle();
    assert!(
        dirty_since(&w, w.events.len() - 1)
            .reconcile(&w.state, w.now)
            .batch
            .is_empty()
    );

    // A deleted task: whose it was is not in the event.
    let task: Task = w.state.tasks.values().next().cloned().expect("a task");
    let from = w.events.len();
    let mut batch = Batch::default();
    let meta: Meta = task.meta.clone().unwrap_or_default();
    batch.delete(Kind::Task, &meta.id, meta.version);
    w.write(batch);
    let dirty = dirty_since(&w, from);
    assert!(dirty.is_everything());
    // The whole pass puts the slot back.
    let writes = task_writes(dirty.reconcile(&w.state, w.now).batch.into_proto());
    assert_eq!(
        writes,
        [("a".to_owned(), TaskState::Running, String::new())]
    );
}
