//! Jobs through the real state machine: completions counted per slot, the
//! concurrency cap, failures and the restart policy, global jobs on nodes
//! that come later, and a new iteration on every update.

use shoal_api::pb::{
    Availability, JobStatus, Meta, NodeState, RestartCondition, RestartPolicy, Service,
    ServiceMode, ServiceSpec, Task, TaskSpec, TaskState,
};

use super::tests::World;
use crate::store::Batch;

/// Writes a job as the control API stores it (a new iteration each time).
fn job(w: &mut World, id: &str, mode: ServiceMode, total: u64, max: u64, restart: RestartPolicy) {
    let existing = w.state.services.get(id).cloned();
    let iteration = existing
        .as_ref()
        .and_then(|s| s.job_status.as_ref())
        .map_or(0, |j| j.job_iteration + 1);
    let mut b = Batch::default();
    b.put_service(Service {
        meta: existing.and_then(|s| s.meta).or(Some(Meta {
            id: id.into(),
            ..Default::default()
        })),
        spec: Some(ServiceSpec {
            name: id.into(),
            mode: mode as i32,
            replicas: total,
            max_concurrent: (mode == ServiceMode::ReplicatedJob).then_some(max),
            task: Some(TaskSpec {
                restart: Some(restart),
                ..Default::default()
            }),
            ..Default::default()
        }),
        job_status: Some(JobStatus {
            job_iteration: iteration,
            last_execution: w.now,
        }),
        ..Default::default()
    });
    w.write(b);
}

fn tasks(w: &World, service: &str) -> Vec<Task> {
    let mut v: Vec<Task> = w
        .state
        .tasks
        .values()
        .filter(|t| t.service_id == service)
        .cloned()
        .collect();
    v.sort_by_key(|t| (t.slot, t.node_id.clone()));
    v
}

fn completed(w: &World, service: &str) -> Vec<Task> {
    tasks(w, service)
        .into_iter()
        .filter(|t| t.status.as_ref().unwrap().state() == TaskState::Complete)
        .collect()
}

fn id(task: &Task) -> &str {
    task.meta.as_ref().map_or("", |m| m.id.as_str())
}

fn slots(tasks: &[Task]) -> Vec<u64> {
    tasks.iter().map(|t| t.slot).collect()
}

#[test]
fn a_replicated_job_runs_its_completions_never_more_than_max_concurrent_at_once() {
    let mut w = World::new();
    w.node("n1");
    job(
        &mut w,
        "batch",
        ServiceMode::ReplicatedJob,
        5,
        2,
        RestartPolicy::default(),
    );
    w.settle();
    assert_eq!(slots(&w.live("batch")), [1, 2], "two at a time");
    assert!(
        w.live("batch").iter().all(|t| t.job_iteration == Some(0)),
        "tasks carry the iteration"
    );
    for round in 0..5 {
        w.run_all();
        let live = w.live("batch");
        assert!(live.len() <= 2, "round {round}: {} under way", live.len());
        // One completes (exit 0): it is done, and not restarted even though
        // the policy is `any`.
        w.set_state(&live[0], TaskState::Complete, 0);
        w.settle();
        let done = completed(&w, "batch");
        assert_eq!(done.len(), round + 1);
        assert!(
            done.iter()
                .all(|t| t.desired_state() == TaskState::Complete),
            "completed tasks are desired complete"
        );
    }
    assert!(w.live("batch").is_empty(), "the job is done");
    assert_eq!(slots(&completed(&w, "batch")), [1, 2, 3, 4, 5]);
    assert_eq!(tasks(&w, "batch").len(), 5, "one task per completion");
    // Nothing more happens.
    w.now += 60_000;
    w.settle();
    assert_eq!(tasks(&w, "batch").len(), 5);
}

#[test]
fn failed_job_tasks_follow_the_restart_policy_in_their_slot() {
    let mut w = World::new();
    w.node("n1");
    let policy = RestartPolicy {
        delay_ms: Some(1_000),
        max_attempts: 1,
        ..Default::default()
    };
    job(&mut w, "flaky", ServiceMode::ReplicatedJob, 2, 1, policy);
    w.settle();
    w.run_all();
    let first = w.live("flaky").remove(0);
    assert_eq!(first.slot, 1);
    // A non-zero exit is a failure: replaced in its slot after the delay.
    w.set_state(&first, TaskState::Failed, 3);
    w.settle();
    let retry = w.live("flaky").remove(0);
    assert_ne!(id(&retry), id(&first));
    assert_eq!((retry.slot, retry.desired_state()), (1, TaskState::Ready));
    assert_eq!(retry.job_iteration, Some(0));
    assert_eq!(w.live("flaky").len(), 1, "the retry holds the only place");
    w.now += 1_000;
    w.settle();
    w.run_all();
    // Ending other than complete (here shut down with exit 0 while meant
    // to run) is a failure too; max attempts is reached, so the task stays
    // failed in slot 1, and slot 2 gets its turn (the given-up task runs no
    // more, so it does not hold the concurrency).
    let retry = w.live("flaky").remove(0);
    w.set_state(&retry, TaskState::Shutdown, 0);
    w.settle();
    let live = w.live("flaky");
    assert_eq!(slots(&live), [1, 2]);
    assert_eq!(id(&live[0]), id(&retry), "slot 1 keeps its given-up task");
    w.run_all();
    let second = w.live("flaky").into_iter().find(|t| t.slot == 2).unwrap();
    w.set_state(&second, TaskState::Complete, 0);
    w.settle();
    assert_eq!(slots(&completed(&w, "flaky")), [2]);
    assert_eq!(w.live("flaky").len(), 1, "slot 1 stays failed");

    // `none`: a failure is never retried.
    let mut w = World::new();
    w.node("n1");
    job(
        &mut w,
        "once",
        ServiceMode::ReplicatedJob,
        1,
        1,
        RestartPolicy {
            condition: RestartCondition::None as i32,
            ..Default::default()
        },
    );
    w.settle();
    w.run_all();
    let task = w.live("once").remove(0);
    w.set_state(&task, TaskState::Failed, 1);
    w.now += 60_000;
    w.settle();
    assert_eq!(tasks(&w, "once").len(), 1);
}

#[test]
fn a_replicated_job_task_on_a_node_that_goes_down_moves() {
    let mut w = World::new();
    w.node("n1");
    job(
        &mut w,
        "batch",
        ServiceMode::ReplicatedJob,
        1,
        1,
        RestartPolicy::default(),
    );
    w.settle();
    w.run_all();
    let task = w.live("batch").remove(0);
    let mut node = w.state.nodes["n1"].clone();
    node.status.as_mut().unwrap().state = NodeState::Down as i32;
    let mut b = Batch::default();
    b.put_node(node);
    w.write(b);
    w.settle();
    let moved = w.live("batch").remove(0);
    assert_ne!(id(&moved), id(&task));
    assert_eq!((moved.slot, moved.node_id.as_str()), (1, ""));
}

#[test]
fn a_global_job_runs_once_per_eligible_node_including_later_ones() {
    let mut w = World::new();
    w.node("n1");
    w.node("n2");
    w.node("n3");
    let mut node = w.state.nodes["n3"].clone();
    node.spec.as_mut().unwrap().availability = Availability::Drain as i32;
    let mut b = Batch::default();
    b.put_node(node);
    w.write(b);
    job(
        &mut w,
        "setup",
        ServiceMode::GlobalJob,
        0,
        0,
        RestartPolicy::default(),
    );
    w.settle();
    let nodes = |tasks: Vec<Task>| {
        let mut nodes: Vec<String> = tasks.into_iter().map(|t| t.node_id).collect();
        nodes.sort();
        nodes
    };
    assert_eq!(
        nodes(w.live("setup")),
        ["n1", "n2"],
        "not on a drained node"
    );
    assert!(w.live("setup").iter().all(|t| t.slot == 0));
    w.run_all();
    for task in w.live("setup") {
        w.set_state(&task, TaskState::Complete, 0);
    }
    w.settle();
    assert!(w.live("setup").is_empty());
    assert_eq!(nodes(completed(&w, "setup")), ["n1", "n2"]);
    // A node that joins later runs it too, once.
    w.node("n4");
    w.settle();
    assert_eq!(nodes(w.live("setup")), ["n4"]);
    w.run_all();
    let late = w.live("setup").remove(0);
    w.set_state(&late, TaskState::Complete, 0);
    w.settle();
    w.settle();
    assert_eq!(nodes(completed(&w, "setup")), ["n1", "n2", "n4"]);
    assert_eq!(tasks(&w, "setup").len(), 3);
}

#[test]
fn an_update_runs_the_job_again_as_a_new_iteration() {
    let mut w = World::new();
    w.node("n1");
    job(
        &mut w,
        "batch",
        ServiceMode::ReplicatedJob,
        2,
        2,
        RestartPolicy::default(),
    );
    w.settle();
    w.run_all();
    let live = w.live("batch");
    // One completes; the other is still running when the job is updated.
    w.set_state(&live[0], TaskState::Complete, 0);
    w.settle();
    job(
        &mut w,
        "batch",
        ServiceMode::ReplicatedJob,
        3,
        2,
        RestartPolicy::default(),
    );
    w.settle();
    let all = tasks(&w, "batch");
    let old: Vec<&Task> = all.iter().filter(|t| t.job_iteration == Some(0)).collect();
    assert_eq!(old.len(), 2, "the first iteration's tasks stay as history");
    let stopped = old.iter().find(|t| id(t) == id(&live[1])).unwrap();
    assert_eq!(
        stopped.desired_state(),
        TaskState::Shutdown,
        "its task under way stops"
    );
    let current = w.live("batch");
    assert_eq!(slots(&current), [1, 2], "the new iteration starts over");
    assert!(current.iter().all(|t| t.job_iteration == Some(1)));
    for _ in 0..3 {
        w.run_all();
        let task = w.live("batch").remove(0);
        w.set_state(&task, TaskState::Complete, 0);
        w.settle();
    }
    let done: Vec<u64> = completed(&w, "batch")
        .iter()
        .filter(|t| t.job_iteration == Some(1))
        .map(|t| t.slot)
        .collect();
    assert_eq!(done, [1, 2, 3]);
    assert!(w.live("batch").is_empty());
}

#[test]
fn a_task_of_an_earlier_iteration_that_completes_late_is_marked_done_not_stopped() {
    let mut w = World::new();
    w.node("n1");
    job(
        &mut w,
        "batch",
        ServiceMode::ReplicatedJob,
        1,
        1,
        RestartPolicy::default(),
    );
    w.settle();
    w.run_all();
    let first = w.live("batch").remove(0);
    // The update lands, and the old task completes before the orchestrator
    // looks.
    job(
        &mut w,
        "batch",
        ServiceMode::ReplicatedJob,
        1,
        1,
        RestartPolicy::default(),
    );
    w.set_state(&first, TaskState::Complete, 0);
    w.settle();
    let old = &w.state.tasks[id(&first)];
    assert_eq!(old.desired_state(), TaskState::Complete);
    let live = w.live("batch");
    assert_eq!(live.len(), 1);
    assert_eq!(
        live[0].job_iteration,
        Some(1),
        "the new iteration still runs"
    );
}
