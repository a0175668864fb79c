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

#[test]
fn a_task_of_no_service_makes_the_pass_whole() {
    // A `network connect` attachment ending: only a whole pass forgets it.
    let mut w = World::new();
    w.node("n1");
    let from = w.events.len();
    let mut batch = Batch::default();
    batch.put_task(Task {
        meta: Some(Meta {
            id: "attachment".into(),
            ..Default::default()
        }),
        node_id: "n1".into(),
        ..Default::default()
    });
    w.write(batch);
    assert!(dirty_since(&w, from).is_everything());
}

#[test]
fn a_restart_held_by_its_window_is_due_when_the_window_reopens() {
    let mut w = World::new();
    w.node("n1");
    let policy = RestartPolicy {
        delay_ms: Some(0),
        max_attempts: 1,
        window_ms: 10_000,
        ..Default::default()
    };
    w.service("a", ServiceMode::Replicated, 1, policy);
    w.settle();
    w.run_all();
    let first = w.live("a").remove(0);
    w.set_state(&first, TaskState::Failed, 1);
    w.settle();
    let restarted_at = w.now;
    w.run_all();
    w.now += 2_000;
    let second = w.live("a").remove(0);
    assert_ne!(second.meta, first.meta, "the first failure restarts");
    let from = w.events.len();
    w.set_state(&second, TaskState::Failed, 1);
    // The narrow pass over this service keeps the task (one attempt in
    // the window) and says when to come back: nothing else may write.
    let plan = dirty_since(&w, from).reconcile(&w.state, w.now);
    assert!(task_writes(plan.batch.into_proto()).is_empty());
    assert_eq!(plan.wake_at, Some(restarted_at + 10_000));
    w.now = restarted_at + 10_000;
    w.settle();
    assert_ne!(
        w.live("a").remove(0).meta,
        second.meta,
        "restarted once the window reopened"
    );
}
