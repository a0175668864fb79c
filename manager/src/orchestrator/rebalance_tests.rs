//! Rebalancing against hand-built states, through the real orchestrator,
//! update and scheduler passes.

use shoal_api::pb::{
    Availability, Meta, Node, NodeSpec, NodeState, NodeStatus, Placement, Service, ServiceMode,
    ServiceSpec, TaskSpec, TaskState, UpdateConfig,
};

use super::{super::tests::World, *};
use crate::limits::Limits;

fn add_node(world: &mut World, id: &str, availability: Availability) {
    let mut b = Batch::default();
    b.put_node(Node {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            availability: availability as i32,
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    world.write(b);
}

fn add_service(world: &mut World, mode: ServiceMode, replicas: u64, constraints: &[&str]) {
    let mut b = Batch::default();
    b.put_service(Service {
        meta: Some(Meta {
            id: "web".into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            name: "web".into(),
            mode: mode as i32,
            replicas,
            task: Some(TaskSpec {
                placement: Some(Placement {
                    constraints: constraints.iter().map(|c| c.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update: Some(UpdateConfig {
                parallelism: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    world.write(b);
}

/// What the allocator, scheduler and agents would do: NEW → PENDING →
/// assigned → RUNNING, and tasks told to stop stop.
fn cluster_pass(world: &mut World) {
    world.settle();
    let mut b = Batch::default();
    for task in world.state.tasks.values() {
        let state = task.status.as_ref().map(|s| s.state()).unwrap_or_default();
        let mut next = task.clone();
        let status = next.status.get_or_insert_default();
        if task.desired_state() > TaskState::Running && state < TaskState::Complete {
            status.state = TaskState::Shutdown as i32;
        } else if state == TaskState::New {
            status.state = TaskState::Pending as i32;
        } else if state == TaskState::Assigned {
            status.state = TaskState::Running as i32;
            status.timestamp = world.now;
        } else {
            continue;
        }
        b.put_task(next);
    }
    if !b.is_empty() {
        world.write(b);
    }
    let assigned = crate::scheduler::assignments(&world.state, &Limits::default());
    if !assigned.is_empty() {
        world.write(assigned);
    }
}

fn running(world: &World) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for task in world.state.tasks.values() {
        if occupies_node(task) {
            *out.entry(task.node_id.clone()).or_default() += 1;
        }
    }
    out
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

/// Two nodes running four tasks, then a third node that is Ready.
fn world_with_a_new_node() -> World {
    let mut world = World::new();
    add_node(&mut world, "n1", Availability::Active);
    add_node(&mut world, "n2", Availability::Active);
    add_service(&mut world, ServiceMode::Replicated, 4, &[]);
    for _ in 0..4 {
        cluster_pass(&mut world);
    }
    assert_eq!(running(&world), counts(&[("n1", 2), ("n2", 2)]));
    add_node(&mut world, "n3", Availability::Active);
    world
}

#[test]
fn nothing_moves_without_a_rebalance() {
    let mut world = world_with_a_new_node();
    for _ in 0..10 {
        world.now += 10_000;
        cluster_pass(&mut world);
    }
    assert_eq!(running(&world), counts(&[("n1", 2), ("n2", 2)]));
}

#[test]
fn a_rebalance_moves_one_task_onto_the_new_node_by_rolling_update() {
    let mut world = world_with_a_new_node();
    let service = world.state.services["web"].clone();
    assert_eq!(tasks_to_move(&world.state, &service).len(), 1);
    let mut b = Batch::default();
    assert_eq!(mark(&world.state, &service, world.now, &mut b), 1);
    world.write(b);
    for _ in 0..10 {
        world.now += 10_000;
        cluster_pass(&mut world);
    }
    let mut after = running(&world);
    assert_eq!(after.remove("n3"), Some(1), "{after:?}");
    assert_eq!(after.values().sum::<usize>(), 3);
    let service = &world.state.services["web"];
    let status = service.update_status.as_ref().unwrap();
    assert_eq!(status.state, update::COMPLETED);
    assert!(tasks_to_move(&world.state, service).is_empty());
    // The rebalance changed no spec.
    assert!(service.previous_spec.is_none());
}

#[test]
fn an_even_spread_and_a_single_node_move_nothing() {
    let mut world = World::new();
    add_node(&mut world, "n1", Availability::Active);
    add_service(&mut world, ServiceMode::Replicated, 3, &[]);
    for _ in 0..4 {
        cluster_pass(&mut world);
    }
    let service = world.state.services["web"].clone();
    assert!(tasks_to_move(&world.state, &service).is_empty());
    add_node(&mut world, "n2", Availability::Active);
    // 3 on n1, 0 on n2: moves one (2/1 is as even as 3 gets).
    assert_eq!(tasks_to_move(&world.state, &service).len(), 1);
}

#[test]
fn nodes_the_service_may_not_use_are_left_out() {
    let mut world = World::new();
    add_node(&mut world, "n1", Availability::Active);
    add_node(&mut world, "n2", Availability::Active);
    add_service(&mut world, ServiceMode::Replicated, 4, &["node.id!=n3"]);
    for _ in 0..4 {
        cluster_pass(&mut world);
    }
    add_node(&mut world, "n3", Availability::Active);
    add_node(&mut world, "n4", Availability::Drain);
    let service = world.state.services["web"].clone();
    assert!(tasks_to_move(&world.state, &service).is_empty());
}

#[test]
fn global_services_and_updates_under_way_are_refused_by_name() {
    let mut world = World::new();
    add_node(&mut world, "n1", Availability::Active);
    add_service(&mut world, ServiceMode::Global, 0, &[]);
    let service = world.state.services["web"].clone();
    let why = refusal(&service).unwrap();
    assert!(why.contains("web is global"), "{why}");
    let mut updating = service.clone();
    updating.spec.as_mut().unwrap().mode = ServiceMode::Replicated as i32;
    updating.update_status = Some(update::started(0, false, "update in progress"));
    let why = refusal(&updating).unwrap();
    assert!(why.contains("being updated"), "{why}");
}

#[test]
fn mark_all_skips_services_with_nothing_to_move() {
    let world = world_with_a_new_node();
    let batch = mark_all(&world.state, world.now);
    // One task marked and the service's update started.
    assert_eq!(batch.len(), 2);
    // Once balanced, nothing more is marked.
    let mut balanced = world_with_a_new_node();
    let service = balanced.state.services["web"].clone();
    let mut b = Batch::default();
    mark(&balanced.state, &service, balanced.now, &mut b);
    balanced.write(b);
    for _ in 0..10 {
        balanced.now += 10_000;
        cluster_pass(&mut balanced);
    }
    assert!(mark_all(&balanced.state, balanced.now).is_empty());
}
