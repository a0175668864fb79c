use shoal_api::pb::{Task, TaskState, TaskStatus};

use super::*;
use crate::store::State;

fn task(id: &str, state: TaskState) -> Task {
    Task {
        service_id: id.into(),
        status: Some(TaskStatus {
            state: state as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn rendered(metrics: &ManagerMetrics, state: &State, sessions: usize) -> String {
    let raft = openraft::RaftMetrics::new_initial(1);
    metrics
        .render(&Snapshot {
            raft: &raft,
            state,
            sessions,
        })
        .expect("encodes")
}

#[test]
fn present_state_is_read_at_each_scrape() {
    let metrics = ManagerMetrics::default();
    let mut state = State::default();
    for (id, s) in [
        ("a", TaskState::Running),
        ("b", TaskState::Running),
        ("c", TaskState::Failed),
    ] {
        state.tasks.insert(id.into(), task(id, s));
    }
    let text = rendered(&metrics, &state, 2);
    assert_eq!(value_of(&text, "shoal_tasks{state=\"running\"}"), Some(2.0));
    assert_eq!(value_of(&text, "shoal_tasks{state=\"failed\"}"), Some(1.0));
    assert_eq!(
        value_of(&text, "shoal_store_objects{kind=\"task\"}"),
        Some(3.0)
    );
    assert_eq!(
        value_of(&text, "shoal_store_objects{kind=\"service\"}"),
        Some(0.0)
    );
    assert_eq!(value_of(&text, "shoal_dispatcher_sessions"), Some(2.0));
    assert_eq!(value_of(&text, "shoal_raft_term"), Some(0.0));
    assert_eq!(value_of(&text, "shoal_raft_has_leader"), Some(0.0));
    assert!(text.ends_with("# EOF\n"), "one exposition, one EOF: {text}");

    // A state no task is in any more leaves no series behind.
    state.tasks.remove("c");
    let text = rendered(&metrics, &state, 0);
    assert_eq!(value_of(&text, "shoal_tasks{state=\"failed\"}"), None);
}

#[test]
fn counters_accumulate_across_scrapes() {
    let metrics = ManagerMetrics::default();
    let state = State::default();
    metrics.proposals.inc();
    metrics.proposals.inc();
    metrics.heartbeats.inc();
    metrics.scheduler_pass.observe(0.002);
    let delta = shoal_api::pb::AssignmentSet {
        delta: true,
        sequence: 2,
        ..Default::default()
    };
    metrics.assignment_pushed(&delta);
    metrics.assignment_pushed(&delta);
    let text = rendered(&metrics, &state, 0);
    assert_eq!(
        value_of(&text, "shoal_dispatcher_assignments_total{kind=\"delta\"}"),
        Some(2.0)
    );
    assert_eq!(
        value_of(
            &text,
            "shoal_dispatcher_assignment_bytes_total{kind=\"delta\"}"
        ),
        Some(2.0 * prost::Message::encoded_len(&delta) as f64)
    );
    assert_eq!(value_of(&text, "shoal_raft_proposals_total"), Some(2.0));
    assert_eq!(
        value_of(&text, "shoal_dispatcher_heartbeats_total"),
        Some(1.0)
    );
    assert_eq!(
        value_of(&text, "shoal_raft_leader_changes_total"),
        Some(0.0)
    );
    assert_eq!(
        value_of(&text, "shoal_scheduler_pass_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        text.matches("# TYPE shoal_raft_proposals counter").count(),
        1,
        "{text}"
    );
}
