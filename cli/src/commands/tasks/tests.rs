//! Task listings: Docker's rows, history, truncation and filters.

use shoal_api::pb::{
    Meta, Node, NodeDescription, Service, ServiceSpec, Task, TaskState, TaskStatus,
};

use super::*;

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

fn service() -> Service {
    Service {
        meta: Some(Meta {
            id: "svc".into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            name: "web".into(),
            labels: [("tier".to_owned(), "front".to_owned())].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node() -> Node {
    Node {
        meta: Some(Meta {
            id: "node1".into(),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: "n1".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn tasks() -> Vec<Task> {
    vec![
        task(
            "bbbbbbbbbbbbbbbb",
            1,
            1,
            TaskState::Shutdown,
            TaskState::Failed,
            "task: non-zero exit (1) after a long time of trying hard",
        ),
        task(
            "cccccccccccccccc",
            10,
            3,
            TaskState::Running,
            TaskState::Running,
            "",
        ),
        task(
            "aaaaaaaaaaaaaaaa",
            1,
            2,
            TaskState::Running,
            TaskState::Running,
            "",
        ),
    ]
}

fn render(filters: &[&str], no_trunc: bool, no_resolve: bool, format: &str, quiet: bool) -> String {
    let flags: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
    let filters = task_filters(&flags, &[service()], &[node()], Some("node1")).unwrap();
    let format: Format = format.parse().unwrap();
    let options = PsOptions {
        no_trunc,
        no_resolve,
        format: &format,
    };
    task_listing(&[service()], &tasks(), &[node()], &filters, &options)
        .render(&format, quiet)
        .unwrap()
}

#[test]
fn tables_sort_by_slot_naturally_and_show_history_under_it() {
    let table = render(&[], false, false, "table", false);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID             NAME        IMAGE     NODE "),
        "{table}"
    );
    assert!(
        lines[1].starts_with("aaaaaaaaaaaa   web.1                 n1 "),
        "{table}"
    );
    assert!(lines[1].contains("Running 8 seconds ago"), "{table}");
    assert!(
        lines[2].starts_with("bbbbbbbbbbbb    \\_ web.1   "),
        "{table}"
    );
    assert!(
        lines[2].contains("Shutdown") && lines[2].contains("Failed 8 seconds ago"),
        "{table}"
    );
    // Docker cuts errors to 30 columns and quotes them.
    assert!(
        lines[2].contains("\"task: non-zero exit (1) after…\""),
        "{table}"
    );
    assert!(lines[3].starts_with("cccccccccccc   web.10 "), "{table}");
}

#[test]
fn json_rows_carry_dockers_fields_whole_with_no_trunc() {
    let json = render(&[], true, false, "json", false);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
        assert!(rows[0].get(field).is_some(), "missing {field}: {}", rows[0]);
    }
    assert_eq!(rows[0]["ID"], "aaaaaaaaaaaaaaaa");
    assert_eq!(rows[0]["Node"], "n1");
    // Only tables indent the history.
    assert_eq!(rows[1]["Name"], "web.1");
    assert_eq!(
        rows[1]["Error"],
        "\"task: non-zero exit (1) after a long time of trying hard\""
    );
}

#[test]
fn no_resolve_shows_ids_for_services_and_nodes() {
    let names = render(&[], false, true, "{{.Name}} {{.Node}}", false);
    assert_eq!(names, "svc.1 node1\nsvc.1 node1\nsvc.10 node1\n");
}

#[test]
fn filters_take_dockers_keys_and_any_of_a_repeated_key() {
    assert_eq!(
        render(&["desired-state=running"], false, false, "table", true),
        "aaaaaaaaaaaa\ncccccccccccc\n"
    );
    assert_eq!(
        render(&["id=b", "id=c"], false, false, "table", true),
        "bbbbbbbbbbbb\ncccccccccccc\n"
    );
    assert_eq!(
        render(&["name=web.10"], false, false, "table", true),
        "cccccccccccc\n"
    );
    assert_eq!(
        render(
            &["node=n1", "label=tier=front", "service=web"],
            false,
            false,
            "{{.ID}}",
            false
        )
        .lines()
        .count(),
        3
    );
    assert_eq!(
        render(&["node=self"], false, false, "{{.ID}}", false)
            .lines()
            .count(),
        3
    );
    assert_eq!(
        render(&["label=tier=back"], false, false, "{{.ID}}", false),
        ""
    );

    let refuse = |flag: &str| {
        task_filters(&[flag.to_owned()], &[service()], &[node()], None)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refuse("desired-state=sleeping"),
        "Invalid desired-state filter: 'sleeping'"
    );
    assert_eq!(refuse("colour=red"), "invalid filter 'colour'");
    assert!(refuse("node=n9").contains("n9"));
}

#[test]
fn natural_order_compares_numbers_as_numbers() {
    assert_eq!(natural_cmp("web.2", "web.10"), Ordering::Less);
    assert_eq!(natural_cmp("web.10", "web.10"), Ordering::Equal);
    assert_eq!(natural_cmp("a", "b"), Ordering::Less);
    assert_eq!(natural_cmp("web.1", "web.1.x"), Ordering::Less);
}

#[test]
fn a_running_tasks_health_shows_as_docker_ps_words_it() {
    use shoal_api::pb::TaskHealth;
    let mut status = TaskStatus {
        state: TaskState::Running as i32,
        ..Default::default()
    };
    assert_eq!(health_suffix(&status), "", "no check: nothing to say");
    status.health = TaskHealth::Healthy as i32;
    assert_eq!(health_suffix(&status), " (healthy)");
    status.health = TaskHealth::Failing as i32;
    assert_eq!(health_suffix(&status), " (unhealthy)");
    status.state = TaskState::Shutdown as i32;
    assert_eq!(health_suffix(&status), "", "only while it runs");
}
