//! Placement rules, on hand-built states.

use shoal_api::pb::{
    Availability, EndpointSpec, Meta, Node, NodeDescription, NodeSpec, NodeState, NodeStatus,
    Placement, PortConfig, PublishMode, ResourceRequirements, Resources, Service, ServiceSpec,
    Task, TaskSpec, TaskState, TaskStatus,
};

use super::placement::{Outcome, plan};
use crate::limits::Limits;
use crate::store::State;

fn node(id: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: id.into(),
            resources: Some(Resources {
                pids: Default::default(),
                nano_cpus: 2_000_000_000,
                memory_bytes: 1 << 30,
            }),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn task(id: &str, service: &str, slot: u64, placement: Placement) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        service_id: service.into(),
        slot,
        spec: Some(TaskSpec {
            placement: Some(placement),
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: TaskState::Pending as i32,
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

fn state(nodes: Vec<Node>, tasks: Vec<Task>) -> State {
    let mut s = State::default();
    for n in nodes {
        s.nodes.insert(n.meta.clone().unwrap().id, n);
    }
    for t in tasks {
        s.tasks.insert(t.meta.clone().unwrap().id, t);
    }
    s
}

fn assigned(s: &State) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for d in plan(s, &Limits::default()) {
        if let Outcome::Assign(n) = d.outcome {
            *out.entry(n).or_default() += 1;
        }
    }
    out
}

#[test]
fn spreads_a_service_evenly_then_by_total_load() {
    let mut tasks: Vec<Task> = (1..=6)
        .map(|i| task(&format!("t{i}"), "web", i, Placement::default()))
        .collect();
    // n1 already runs an unrelated task: with ties on "web", n1 comes last.
    let mut busy = task("other", "db", 1, Placement::default());
    busy.node_id = "n1".into();
    busy.status.as_mut().unwrap().state = TaskState::Running as i32;
    tasks.push(busy);
    let s = state(
        vec![node("n1", &[]), node("n2", &[]), node("n3", &[])],
        tasks,
    );
    let decisions = plan(&s, &Limits::default());
    assert_eq!(
        assigned(&s),
        [("n1".into(), 2), ("n2".into(), 2), ("n3".into(), 2)].into()
    );
    let first = decisions.iter().find(|d| d.task_id == "t1").unwrap();
    assert_ne!(
        first.outcome,
        Outcome::Assign("n1".into()),
        "the loaded node got the first task"
    );
}

#[test]
fn filters_constraints_availability_and_down_nodes() {
    let mut drained = node("n2", &[("zone", "east")]);
    drained.spec.as_mut().unwrap().availability = Availability::Drain as i32;
    let mut down = node("n3", &[("zone", "east")]);
    down.status.as_mut().unwrap().state = NodeState::Down as i32;
    let east = Placement {
        constraints: vec!["node.labels.zone==east".into()],
        ..Default::default()
    };
    let s = state(
        vec![
            node("n1", &[("zone", "west")]),
            drained,
            down,
            node("n4", &[("zone", "east")]),
        ],
        vec![
            task("t1", "web", 1, east.clone()),
            task("t2", "web", 2, east),
        ],
    );
    assert_eq!(assigned(&s), [("n4".into(), 2)].into());

    let s = state(
        vec![node("n1", &[("zone", "west")])],
        vec![task(
            "t1",
            "web",
            1,
            Placement {
                constraints: vec!["node.labels.zone==east".into()],
                ..Default::default()
            },
        )],
    );
    assert_eq!(
        plan(&s, &Limits::default())[0].outcome,
        Outcome::Unplaceable(
            "no suitable node (scheduling constraints not satisfied on 1 node)".into()
        )
    );
}

#[test]
fn respects_resources_and_max_replicas_per_node() {
    let t = |id: &str, slot| {
        let mut t = task(id, "big", slot, Placement::default());
        t.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
            generic_reservations: Default::default(),
            reservations: Some(Resources {
                pids: Default::default(),
                nano_cpus: 1_500_000_000,
                memory_bytes: 0,
            }),
            limits: None,
        });
        t
    };
    let s = state(
        vec![node("n1", &[]), node("n2", &[])],
        vec![t("a", 1), t("b", 2), t("c", 3)],
    );
    let decisions = plan(&s, &Limits::default());
    assert_eq!(assigned(&s).values().sum::<usize>(), 2);
    let left = decisions
        .iter()
        .find(|d| !matches!(d.outcome, Outcome::Assign(_)))
        .unwrap();
    assert_eq!(
        left.outcome,
        Outcome::Unplaceable("no suitable node (insufficient resources on 2 nodes)".into())
    );

    let max1 = Placement {
        max_replicas_per_node: 1,
        ..Default::default()
    };
    let s = state(
        vec![node("n1", &[]), node("n2", &[])],
        (1..=3)
            .map(|i| task(&format!("t{i}"), "web", i, max1.clone()))
            .collect(),
    );
    assert_eq!(assigned(&s), [("n1".into(), 1), ("n2".into(), 1)].into());
}

#[test]
fn spread_preference_balances_label_values_first() {
    // Two nodes in zone a, one in zone b: zone b gets half the tasks.
    let pref = Placement {
        spread: vec!["node.labels.zone".into()],
        ..Default::default()
    };
    let s = state(
        vec![
            node("a1", &[("zone", "a")]),
            node("a2", &[("zone", "a")]),
            node("b1", &[("zone", "b")]),
        ],
        (1..=4)
            .map(|i| task(&format!("t{i}"), "web", i, pref.clone()))
            .collect(),
    );
    let got = assigned(&s);
    assert_eq!(got.get("b1"), Some(&2), "{got:?}");
    assert_eq!(got.get("a1").unwrap() + got.get("a2").unwrap(), 2);
}

#[test]
fn host_mode_ports_do_not_collide() {
    let mut s = state(
        vec![node("n1", &[]), node("n2", &[])],
        (1..=3)
            .map(|i| task(&format!("t{i}"), "dns", i, Placement::default()))
            .collect(),
    );
    s.services.insert(
        "dns".into(),
        Service {
            meta: Some(Meta {
                id: "dns".into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                endpoint: Some(EndpointSpec {
                    ports: vec![PortConfig {
                        protocol: "udp".into(),
                        target_port: 53,
                        published_port: 53,
                        publish_mode: PublishMode::Host as i32,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            previous_spec: None,
            endpoint: None,
            update_status: None,
            job_status: None,
        },
    );
    assert_eq!(assigned(&s), [("n1".into(), 1), ("n2".into(), 1)].into());
    let reasons: Vec<_> = plan(&s, &Limits::default())
        .into_iter()
        .filter_map(|d| match d.outcome {
            Outcome::Unplaceable(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec!["no suitable node (host-mode port already in use on 2 nodes)".to_string()]
    );
}

fn running_on(mut t: Task, node: &str) -> Task {
    t.node_id = node.into();
    t.status.as_mut().unwrap().state = TaskState::Running as i32;
    t
}

fn reasons(s: &State, limits: &Limits) -> Vec<String> {
    plan(s, limits)
        .into_iter()
        .filter_map(|d| match d.outcome {
            Outcome::Unplaceable(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn a_node_takes_no_more_tasks_than_the_managers_limit() {
    let limits = Limits {
        max_tasks_per_node: 2,
        ..Default::default()
    };
    // n1 already runs a task of another service: it has room for one more.
    let mut tasks: Vec<Task> = (1..=5)
        .map(|i| task(&format!("t{i}"), "web", i, Placement::default()))
        .collect();
    tasks.push(running_on(
        task("other", "db", 1, Placement::default()),
        "n1",
    ));
    // A task being shut down no longer holds its place.
    let mut leaving = running_on(task("old", "db", 2, Placement::default()), "n2");
    leaving.desired_state = TaskState::Shutdown as i32;
    tasks.push(leaving);
    let s = state(vec![node("n1", &[]), node("n2", &[])], tasks);
    let mut placed = std::collections::BTreeMap::new();
    for d in plan(&s, &limits) {
        if let Outcome::Assign(n) = d.outcome {
            *placed.entry(n).or_insert(0) += 1;
        }
    }
    assert_eq!(placed, [("n1".into(), 1), ("n2".into(), 2)].into());
    assert_eq!(
        reasons(&s, &limits),
        vec!["no suitable node (2 nodes at their task limit of 2 tasks)".to_string(); 2]
    );
}

#[test]
fn a_node_takes_no_more_tasks_than_its_memory_pids_or_agent_allow() {
    // 64 MiB holds 2 tasks (32 MiB each); the agent of n2 says 1
    // (`--max-tasks 1`); n3 has plenty of memory but 96 process ids (3
    // tasks of 32).
    let mut small = node("n1", &[]);
    small
        .description
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .memory_bytes = 64 << 20;
    let mut capped = node("n2", &[]);
    capped.description.as_mut().unwrap().max_tasks = 1;
    let mut few_pids = node("n3", &[]);
    few_pids.description.as_mut().unwrap().pids_max = 96;
    let s = state(
        vec![small, capped, few_pids],
        (1..=10)
            .map(|i| task(&format!("t{i}"), "web", i, Placement::default()))
            .collect(),
    );
    assert_eq!(
        assigned(&s),
        [("n1".into(), 2), ("n2".into(), 1), ("n3".into(), 3)].into()
    );
    assert_eq!(
        reasons(&s, &Limits::default()),
        vec!["no suitable node (3 nodes at their task limit of 1 to 3 tasks)".to_string(); 4]
    );
}

#[test]
fn a_global_task_for_a_full_node_stays_pending_naming_the_limit() {
    let limits = Limits {
        max_tasks_per_node: 1,
        ..Default::default()
    };
    let mut global = task("g1", "agent", 0, Placement::default());
    global.node_id = "n1".into();
    let s = state(
        vec![node("n1", &[])],
        vec![
            running_on(task("busy", "web", 1, Placement::default()), "n1"),
            global,
        ],
    );
    assert_eq!(
        reasons(&s, &limits),
        vec!["no suitable node (1 node at its task limit of 1 task)".to_string()]
    );
}

#[test]
fn a_generic_reservation_lands_only_where_a_node_offers_it_and_uses_it_up() {
    use shoal_api::engine::{discrete, named};
    let gpu_task = |id: &str, slot| {
        let mut t = task(id, "ml", slot, Placement::default());
        t.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
            generic_reservations: vec![discrete("gpu", 1)],
            ..Default::default()
        });
        t
    };
    let offering = |id: &str, resources| {
        let mut n = node(id, &[]);
        n.description.as_mut().unwrap().generic_resources = resources;
        n
    };
    // n1 offers nothing, n2 two named GPUs, n3 one counted GPU; a task
    // already on n2 holds UUID1.
    let mut held = running_on(gpu_task("old", 9), "n2");
    held.assigned_generic_resources = vec![named("gpu", "UUID1")];
    let s = state(
        vec![
            node("n1", &[]),
            offering("n2", vec![named("gpu", "UUID1"), named("gpu", "UUID2")]),
            offering("n3", vec![discrete("gpu", 1)]),
        ],
        vec![gpu_task("a", 1), gpu_task("b", 2), gpu_task("c", 3), held],
    );
    let decisions = plan(&s, &Limits::default());
    let placed: Vec<(String, Vec<_>)> = decisions
        .iter()
        .filter_map(|d| match &d.outcome {
            Outcome::Assign(n) => Some((n.clone(), d.generic.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(placed.len(), 2, "{decisions:?}");
    assert!(
        placed.contains(&("n2".into(), vec![named("gpu", "UUID2")])),
        "{placed:?}"
    );
    assert!(
        placed.contains(&("n3".into(), vec![discrete("gpu", 1)])),
        "{placed:?}"
    );
    assert_eq!(
        reasons(&s, &Limits::default()),
        ["no suitable node (insufficient resources on 3 nodes)"]
    );
    // The scheduler's write tells the task what it took.
    let batch = super::assignments(&s, &Limits::default()).into_proto();
    let written: Vec<Task> = batch
        .actions
        .into_iter()
        .filter_map(|a| match a.action {
            Some(shoal_api::pb::store_action::Action::Put(shoal_api::pb::Object {
                object: Some(shoal_api::pb::object::Object::Task(t)),
            })) => Some(t),
            _ => None,
        })
        .collect();
    assert!(
        written
            .iter()
            .any(|t| t.node_id == "n2" && t.assigned_generic_resources == [named("gpu", "UUID2")]),
        "{written:?}"
    );
}
