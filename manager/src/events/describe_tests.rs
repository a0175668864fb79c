use shoal_api::pb::{
    Config, ConfigSpec, Kind, Meta, Node, NodeDescription, NodeSpec, NodeState, NodeStatus, Object,
    ObjectRef, Service, ServiceSpec, Task, TaskState, TaskStatus, object,
};

use super::*;

fn service(version: u64, replicas: u64) -> Change {
    Change::Put(Box::new(Object {
        object: Some(object::Object::Service(Service {
            meta: Some(Meta {
                id: "s1".into(),
                version,
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                name: "web".into(),
                replicas,
                ..Default::default()
            }),
            ..Default::default()
        })),
    }))
}

fn node(version: u64, state: NodeState) -> Change {
    Change::Put(Box::new(Object {
        object: Some(object::Object::Node(Node {
            meta: Some(Meta {
                id: "n1".into(),
                version,
                ..Default::default()
            }),
            spec: Some(NodeSpec::default()),
            description: Some(NodeDescription {
                hostname: "host1".into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        })),
    }))
}

fn task(version: u64, state: TaskState, message: &str) -> Change {
    Change::Put(Box::new(Object {
        object: Some(object::Object::Task(Task {
            meta: Some(Meta {
                id: "t1".into(),
                version,
                ..Default::default()
            }),
            service_id: "s1".into(),
            slot: 2,
            node_id: "n1".into(),
            status: Some(TaskStatus {
                state: state as i32,
                message: message.into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
    }))
}

fn attrs(event: &Event) -> Vec<String> {
    let mut out: Vec<String> = event
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    out.sort();
    out
}

#[test]
fn a_service_is_created_updated_and_removed() {
    let mut s = Summaries::default();
    let created = s.apply(&service(1, 2), 5).unwrap();
    assert_eq!(
        (created.r#type.as_str(), created.action.as_str()),
        ("service", "create")
    );
    assert_eq!(created.actor_id, "s1");
    assert_eq!(created.time_nano, 5);
    assert_eq!(attrs(&created), ["name=web"]);
    let scaled = s.apply(&service(2, 3), 6).unwrap();
    assert_eq!(scaled.action, "update");
    assert_eq!(
        attrs(&scaled),
        ["name=web", "replicas.new=3", "replicas.old=2"]
    );
    let removed = s
        .apply(
            &Change::Delete(ObjectRef {
                kind: Kind::Service as i32,
                id: "s1".into(),
            }),
            7,
        )
        .unwrap();
    assert_eq!(removed.action, "remove");
    assert_eq!(attrs(&removed), ["name=web"]);
}

#[test]
fn a_version_already_seen_makes_no_event() {
    let mut s = Summaries::default();
    s.apply(&service(1, 2), 0);
    s.apply(&service(3, 4), 0);
    assert!(s.apply(&service(2, 3), 0).is_none());
    assert!(s.apply(&service(3, 4), 0).is_none());
}

#[test]
fn a_node_going_down_says_old_and_new_state() {
    let mut s = Summaries::default();
    s.apply(&node(1, NodeState::Ready), 0);
    // The same state rewritten (a heartbeat's bookkeeping) is no event.
    assert!(s.apply(&node(2, NodeState::Ready), 0).is_none());
    let down = s.apply(&node(3, NodeState::Down), 0).unwrap();
    assert_eq!(
        attrs(&down),
        ["name=host1", "state.new=down", "state.old=ready"]
    );
}

#[test]
fn tasks_report_state_changes_only() {
    let mut s = Summaries::default();
    s.apply(&service(1, 2), 0);
    let created = s.apply(&task(2, TaskState::Pending, ""), 0).unwrap();
    assert_eq!(attrs(&created), ["name=web.2", "node=n1", "service=web"]);
    assert!(s.apply(&task(3, TaskState::Pending, "still"), 0).is_none());
    let running = s.apply(&task(4, TaskState::Running, ""), 0).unwrap();
    assert_eq!(
        attrs(&running),
        [
            "name=web.2",
            "node=n1",
            "service=web",
            "state.new=running",
            "state.old=pending"
        ]
    );
}

#[test]
fn the_state_read_at_start_is_no_event_and_resync_finds_what_was_missed() {
    let mut state = State::default();
    let Change::Put(first) = service(1, 2) else {
        unreachable!()
    };
    state.put(*first);
    let mut s = Summaries::of(&state);
    assert!(s.apply(&service(1, 2), 0).is_none());
    // Missed: the service scaled, then was removed.
    let Change::Put(scaled) = service(2, 5) else {
        unreachable!()
    };
    state.put(*scaled);
    let events = s.resync(&state, 9);
    assert_eq!(events.len(), 1);
    assert_eq!(attrs(&events[0])[1..], ["replicas.new=5", "replicas.old=2"]);
    state.delete(Kind::Service, "s1");
    let events = s.resync(&state, 10);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].action, "remove");
}

fn config(version: u64, label: &str) -> Change {
    Change::Put(Box::new(Object {
        object: Some(object::Object::Config(Config {
            meta: Some(Meta {
                id: "c1".into(),
                version,
                ..Default::default()
            }),
            spec: Some(ConfigSpec {
                name: "app.conf".into(),
                data: b"listen 80".to_vec(),
                labels: [("tier".to_owned(), label.to_owned())].into(),
                ..Default::default()
            }),
        })),
    }))
}

#[test]
fn each_new_version_of_a_config_is_an_update_and_a_version_seen_is_nothing() {
    let mut summaries = Summaries::default();
    let actions = |summaries: &mut Summaries, change: &Change| {
        summaries
            .apply(change, 1)
            .map(|e| (e.r#type, e.action, e.actor_id, e.attributes["name"].clone()))
    };
    let said = |action: &str| {
        Some((
            "config".to_owned(),
            action.to_owned(),
            "c1".to_owned(),
            "app.conf".to_owned(),
        ))
    };
    assert_eq!(actions(&mut summaries, &config(3, "a")), said("create"));
    assert_eq!(actions(&mut summaries, &config(3, "a")), None);
    assert_eq!(actions(&mut summaries, &config(7, "b")), said("update"));
    let removed = Change::Delete(ObjectRef {
        kind: Kind::Config as i32,
        id: "c1".into(),
    });
    assert_eq!(actions(&mut summaries, &removed), said("remove"));
    assert_eq!(actions(&mut summaries, &removed), None);
}
