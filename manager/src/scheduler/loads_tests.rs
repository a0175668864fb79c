//! The store's kept node loads against a walk of every task, through
//! generated histories: puts and reports, moves, shutdowns, deletes, and a
//! group commit put back, with reservations, generic resources (counted
//! and named) and host-mode ports. After each step both ways must see the
//! same loads and make the same plan.

use shoal_api::{
    engine::{discrete, named},
    pb::{
        EndpointSpec, Kind, Meta, Node, NodeDescription, NodeStatus, Object, PortConfig,
        PublishMode, ResourceRequirements, Resources, Service, ServiceSpec, Task, TaskSpec,
        TaskState, TaskStatus, object,
    },
};

use super::placement::{Loads, node_loads, plan_with};
use crate::{limits::Limits, store::State};

use crate::test_rng::Rng;

const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];
/// Plain, host-mode port 8080, a counted GPU, a named GPU.
const SERVICES: [&str; 4] = ["plain", "host-port", "gpu", "named-gpu"];

fn node(id: &str) -> Node {
    let generic = match id {
        "n2" => vec![discrete("gpu", 2)],
        "n3" => vec![named("gpu", "UUID1"), named("gpu", "UUID2")],
        _ => Vec::new(),
    };
    Node {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: id.into(),
            resources: Some(Resources {
                nano_cpus: 4_000_000_000,
                memory_bytes: 8 << 30,
                pids: 0,
            }),
            generic_resources: generic,
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: shoal_api::pb::NodeState::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(id: &str) -> Service {
    let ports = if id == "host-port" {
        vec![PortConfig {
            protocol: "tcp".into(),
            target_port: 80,
            published_port: 8080,
            publish_mode: PublishMode::Host as i32,
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    Service {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            name: id.into(),
            endpoint: Some(EndpointSpec {
                ports,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn put(object: object::Object) -> Object {
    Object {
        object: Some(object),
    }
}

/// A task of a random service in a random state, on a random node or none.
fn random_task(rng: &mut Rng, id: &str) -> Task {
    let service_id = *rng.pick(&SERVICES);
    let states = [
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Running,
        TaskState::Failed,
        TaskState::Shutdown,
    ];
    let observed = *rng.pick(&states);
    let node_id = if observed == TaskState::Pending && rng.below(2) == 0 {
        String::new()
    } else {
        rng.pick(&NODES).to_string()
    };
    let desired = *rng.pick(&[TaskState::Running, TaskState::Running, TaskState::Shutdown]);
    let generic = match service_id {
        "gpu" | "named-gpu" => vec![discrete("gpu", 1)],
        _ => Vec::new(),
    };
    let assigned = if service_id == "named-gpu" && observed >= TaskState::Assigned {
        let uuid = *rng.pick(&["UUID1", "UUID2"]);
        vec![named("gpu", uuid)]
    } else {
        Vec::new()
    };
    Task {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        service_id: service_id.into(),
        slot: rng.below(4),
        node_id,
        spec: Some(TaskSpec {
            resources: Some(ResourceRequirements {
                reservations: Some(Resources {
                    nano_cpus: rng.below(4) as i64 * 250_000_000,
                    memory_bytes: rng.below(4) as i64 * (512 << 20),
                    pids: 0,
                }),
                generic_reservations: generic,
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: observed as i32,
            ..Default::default()
        }),
        desired_state: desired as i32,
        assigned_generic_resources: assigned,
        ..Default::default()
    }
}

fn check(state: &State, step: usize) {
    assert!(state.task_index_is_whole(), "step {step}");
    let limits = Limits::default();
    assert_eq!(
        node_loads(state, &limits, Loads::Kept),
        node_loads(state, &limits, Loads::Walked),
        "loads at step {step}"
    );
    assert_eq!(
        plan_with(state, &limits, Loads::Kept),
        plan_with(state, &limits, Loads::Walked),
        "plan at step {step}"
    );
}

#[test]
fn kept_node_loads_equal_a_walk_of_every_task_through_generated_histories() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut state = State::default();
        for id in NODES {
            state.put(put(object::Object::Node(node(id))));
        }
        for id in SERVICES {
            state.put(put(object::Object::Service(service(id))));
        }
        let mut next_id = 0u32;
        for step in 0..60 {
            let ids: Vec<String> = state.tasks.keys().cloned().collect();
            let mut tasks = Vec::new();
            let mut delete = Vec::new();
            for _ in 0..=rng.below(4) {
                match rng.below(10) {
                    // A new task.
                    0..=3 => {
                        next_id += 1;
                        tasks.push(random_task(&mut rng, &format!("t{next_id:04}")));
                    }
                    // An existing task anew: reported, moved, shut down.
                    4..=7 if !ids.is_empty() => {
                        let id = rng.pick(&ids).clone();
                        if !delete.contains(&id) && !tasks.iter().any(|t: &Task| meta_id(t) == id) {
                            tasks.push(random_task(&mut rng, &id));
                        }
                    }
                    // A task deleted.
                    _ if !ids.is_empty() => {
                        let id = rng.pick(&ids).clone();
                        if !delete.contains(&id) && !tasks.iter().any(|t| meta_id(t) == id) {
                            delete.push(id);
                        }
                    }
                    _ => {}
                }
            }
            // Now and then a group commit fails: what it changed is put back.
            let before = (rng.below(8) == 0).then(|| state.clone());
            state.apply_tasks(step as u64 + 1, tasks, &delete);
            if let Some(before) = before {
                for (id, t) in &before.tasks {
                    if state.tasks.get(id) != Some(t) {
                        state.put(put(object::Object::Task(t.clone())));
                    }
                }
                let gone: Vec<String> = state
                    .tasks
                    .keys()
                    .filter(|id| !before.tasks.contains_key(*id))
                    .cloned()
                    .collect();
                for id in gone {
                    state.delete(Kind::Task, &id);
                }
            }
            check(&state, step);
        }
    }
}

fn meta_id(task: &Task) -> String {
    task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}
