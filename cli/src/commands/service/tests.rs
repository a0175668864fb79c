//! Unit tests of the service listings, filters and spec building.

use super::create::health_test;
use super::list::Filters;
use super::list::task_listing;
use super::*;
use shoal_api::pb::{Meta, NodeDescription, TaskStatus};
use shoal_api::pb::{Node, ServiceSpec, Task, TaskState};

fn task(
    id: &str,
    slot: u64,
    created_at: i64,
    desired: TaskState,
    state: TaskState,
    err: &str,
) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            created_at,
            ..Default::default()
        }),
        service_id: "svc".into(),
        slot,
        node_id: "node1".into(),
        desired_state: desired as i32,
        status: Some(TaskStatus {
            state: state as i32,
            timestamp: shoal_api::now_ms() - 8_000,
            err: err.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn health_cmd_takes_shell_or_exec_form() {
    assert_eq!(
        health_test("curl -f localhost").unwrap(),
        ["CMD-SHELL", "curl -f localhost"]
    );
    assert_eq!(
        health_test(r#"["/echo","healthcheck"]"#).unwrap(),
        ["CMD", "/echo", "healthcheck"]
    );
    assert_eq!(health_test(r#"["CMD","/x"]"#).unwrap(), ["CMD", "/x"]);
    assert!(
        health_test("[nope")
            .unwrap_err()
            .to_string()
            .contains("JSON array")
    );
}

#[test]
fn ps_shows_history_rows_states_and_docker_json_fields() {
    let service = Service {
        meta: Some(Meta {
            id: "svc".into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            name: "web".into(),
            ..Default::default()
        }),
        previous_spec: None,
        endpoint: None,
        update_status: None,
        job_status: None,
    };
    let node = Node {
        meta: Some(Meta {
            id: "node1".into(),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: "n1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let tasks = vec![
        task(
            "aaaaaaaaaaaaaaaa",
            1,
            2,
            TaskState::Running,
            TaskState::Running,
            "",
        ),
        task(
            "bbbbbbbbbbbbbbbb",
            1,
            1,
            TaskState::Shutdown,
            TaskState::Failed,
            "task: non-zero exit (1)",
        ),
    ];
    let none = Filters::parse(&[]).unwrap();
    let table = task_listing(
        std::slice::from_ref(&service),
        &tasks,
        std::slice::from_ref(&node),
        &none,
        false,
        Format::Table,
    )
    .render(Format::Table, false);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID "), "{table}");
    assert!(lines[1].starts_with("aaaaaaaaaaaa   web.1 "), "{table}");
    assert!(lines[1].contains("Running 8 seconds ago"), "{table}");
    assert!(
        lines[2].contains(" \\_ web.1 ")
            && lines[2].contains("Shutdown")
            && lines[2].contains("Failed 8 seconds ago"),
        "{table}"
    );
    assert!(lines[2].contains("\"task: non-zero exit (1)\""), "{table}");

    let json = task_listing(
        std::slice::from_ref(&service),
        &tasks,
        std::slice::from_ref(&node),
        &none,
        true,
        Format::Json,
    )
    .render(Format::Json, false);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    for field in [
        "ID",
        "Name",
        "Image",
        "Node",
        "DesiredState",
        "CurrentState",
        "Error",
        "Ports",
    ] {
        assert!(first.get(field).is_some(), "missing {field}: {first}");
    }
    assert_eq!(first["ID"], "aaaaaaaaaaaaaaaa", "--no-trunc keeps full IDs");
    assert_eq!(first["Node"], "n1");

    let running = Filters::parse(&["desired-state=running".into()]).unwrap();
    let only = task_listing(&[service], &tasks, &[node], &running, false, Format::Table)
        .render(Format::Table, true);
    assert_eq!(only, "aaaaaaaaaaaa\n");
    assert!(Filters::parse(&["desired-state=sleeping".into()]).is_err());
}
