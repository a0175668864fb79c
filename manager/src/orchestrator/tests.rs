//! Orchestration rules, applied to hand-built states through the real
//! state machine (so each pass sees the previous one's writes).

use shoal_api::pb::{
    Availability, Meta, Node, NodeSpec, NodeState, NodeStatus, RestartCondition, RestartPolicy,
    Service, ServiceMode, ServiceSpec, Task, TaskSpec, TaskState, TaskStatus,
};

use shoal_api::pb::{ContainerSpec, UpdateConfig, UpdateFailureAction, UpdateOrder};

use super::{
    reconcile::{is_live, reconcile},
    update,
};
use crate::store::{Batch, State};

/// A store and a clock the orchestrator runs against (the jobs tests use
/// it too).
pub(super) struct World {
    pub(super) state: State,
    index: u64,
    pub(super) now: i64,
    /// Every write's change event, as the store would send them.
    pub(super) events: Vec<crate::store::StoreEvent>,
}

impl World {
    pub(super) fn new() -> Self {
        Self {
            state: State::default(),
            index: 0,
            now: 1_000_000,
            events: Vec::new(),
        }
    }

    pub(super) fn write(&mut self, batch: Batch) {
        self.index += 1;
        let changes = self
            .state
            .apply(self.index, &batch.into_proto())
            .expect("no conflict");
        self.events.push(crate::store::StoreEvent {
            index: self.index,
            changes,
        });
    }

    /// Runs the orchestrator until it has nothing more to change.
    pub(super) fn settle(&mut self) {
        for _ in 0..10 {
            let plan = reconcile(&self.state, self.now);
            if plan.batch.is_empty() {
                return;
            }
            self.write(plan.batch);
        }
        panic!("the orchestrator did not settle");
    }

    pub(super) fn node(&mut self, id: &str) {
        let mut b = Batch::default();
        b.put_node(Node {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                state: NodeState::Ready as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        self.write(b);
    }

    pub(super) fn service(
        &mut self,
        id: &str,
        mode: ServiceMode,
        replicas: u64,
        restart: RestartPolicy,
    ) {
        let existing = self.state.services.get(id).cloned();
        let mut b = Batch::default();
        b.put_service(Service {
            meta: existing.and_then(|s| s.meta).or(Some(Meta {
                id: id.into(),
                ..Default::default()
            })),
            spec: Some(ServiceSpec {
                name: id.into(),
                mode: mode as i32,
                replicas,
                task: Some(TaskSpec {
                    restart: Some(restart),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            previous_spec: None,
            endpoint: None,
            update_status: None,
            job_status: None,
        });
        self.write(b);
    }

    /// What `service update --image` writes.
    fn update_image(
        &mut self,
        id: &str,
        image: &str,
        update: UpdateConfig,
        rollback: UpdateConfig,
    ) {
        let mut service = self.state.services[id].clone();
        let mut spec = service.spec.clone().unwrap();
        spec.task.as_mut().unwrap().container = Some(ContainerSpec {
            image: image.into(),
            ..Default::default()
        });
        // As a stack file gives them: the same configs in both specs.
        spec.update = Some(update);
        spec.rollback = Some(rollback);
        let mut previous = service.spec.take().unwrap();
        previous.update = Some(update);
        previous.rollback = Some(rollback);
        service.previous_spec = Some(previous);
        service.spec = Some(spec);
        service.update_status = Some(update::started(self.now, false, "update in progress"));
        let mut b = Batch::default();
        b.put_service(service);
        self.write(b);
    }

    fn images(&self, service: &str) -> Vec<String> {
        self.live(service)
            .iter()
            .map(|t| {
                t.spec
                    .as_ref()
                    .and_then(|s| s.container.as_ref())
                    .map(|c| c.image.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    fn update_state(&self, service: &str) -> String {
        self.state.services[service]
            .update_status
            .clone()
            .unwrap_or_default()
            .state
    }

    /// What an agent would report: every live assigned-or-not task runs.
    pub(super) fn run_all(&mut self) {
        let mut b = Batch::default();
        for t in self.state.tasks.values() {
            if t.desired_state() == TaskState::Running
                && t.status.as_ref().unwrap().state() < TaskState::Running
            {
                let mut t = t.clone();
                if t.node_id.is_empty() {
                    t.node_id = "n1".into();
                }
                t.status = Some(TaskStatus {
                    state: TaskState::Running as i32,
                    ..Default::default()
                });
                b.put_task(t);
            }
        }
        self.write(b);
    }

    pub(super) fn set_state(&mut self, task: &Task, state: TaskState, exit_code: i32) {
        let mut t = self.state.tasks[&task.meta.as_ref().unwrap().id].clone();
        t.status = Some(TaskStatus {
            state: state as i32,
            exit_code,
            ..Default::default()
        });
        let mut b = Batch::default();
        b.put_task(t);
        self.write(b);
    }

    pub(super) fn live(&self, service: &str) -> Vec<Task> {
        let mut v: Vec<Task> = self
            .state
            .tasks
            .values()
            .filter(|t| t.service_id == service && is_live(t))
            .cloned()
            .collect();
        v.sort_by_key(|t| t.slot);
        v
    }
}

#[test]
fn replicated_slots_scale_up_and_down_from_the_top() {
    let mut w = World::new();
    w.service("web", ServiceMode::Replicated, 3, RestartPolicy::default());
    w.settle();
    assert_eq!(
        w.live("web").iter().map(|t| t.slot).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    w.service("web", ServiceMode::Replicated, 1, RestartPolicy::default());
    w.settle();
    assert_eq!(
        w.live("web").iter().map(|t| t.slot).collect::<Vec<_>>(),
        vec![1]
    );
    w.service("web", ServiceMode::Replicated, 2, RestartPolicy::default());
    w.settle();
    assert_eq!(
        w.live("web").iter().map(|t| t.slot).collect::<Vec<_>>(),
        vec![1, 2]
    );
}

#[test]
fn restart_policy_delay_max_attempts_and_on_failure() {
    let mut w = World::new();
    w.node("n1");
    let policy = RestartPolicy {
        delay_ms: Some(5_000),
        max_attempts: 2,
        ..Default::default()
    };
    w.service("web", ServiceMode::Replicated, 1, policy);
    w.settle();
    w.run_all();
    for attempt in 1..=2 {
        let task = w.live("web").remove(0);
        w.set_state(&task, TaskState::Failed, 1);
        w.settle();
        let next = w.live("web").remove(0);
        assert_ne!(next.meta, task.meta);
        assert_eq!(
            next.desired_state(),
            TaskState::Ready,
            "the restart waits for its delay"
        );
        assert_eq!(next.restarts.len(), attempt);
        w.now += 5_000;
        w.settle();
        assert_eq!(w.live("web")[0].desired_state(), TaskState::Running);
        w.run_all();
    }
    // The third failure exceeds max attempts: the failed task stays.
    let task = w.live("web").remove(0);
    w.set_state(&task, TaskState::Failed, 1);
    w.settle();
    assert_eq!(
        w.live("web")[0].meta.as_ref().unwrap().id,
        task.meta.as_ref().unwrap().id
    );

    let mut w = World::new();
    w.node("n1");
    w.service(
        "job",
        ServiceMode::Replicated,
        1,
        RestartPolicy {
            condition: RestartCondition::OnFailure as i32,
            ..Default::default()
        },
    );
    w.settle();
    w.run_all();
    let task = w.live("job").remove(0);
    w.set_state(&task, TaskState::Complete, 0);
    w.settle();
    assert_eq!(
        w.live("job")[0].meta.as_ref().unwrap().id,
        task.meta.as_ref().unwrap().id,
        "on-failure restarted a task that exited 0"
    );
}

#[test]
fn tasks_of_a_down_node_move_and_history_is_capped() {
    let mut w = World::new();
    w.node("n1");
    w.service(
        "web",
        ServiceMode::Replicated,
        1,
        RestartPolicy {
            delay_ms: Some(0),
            ..Default::default()
        },
    );
    w.settle();
    w.run_all();
    let mut down = w.state.nodes["n1"].clone();
    down.status.as_mut().unwrap().state = NodeState::Down as i32;
    let mut b = Batch::default();
    b.put_node(down);
    w.write(b);
    w.settle();
    let live = w.live("web");
    assert_eq!(live.len(), 1);
    assert!(
        live[0].node_id.is_empty(),
        "the replacement waits for the scheduler"
    );
    // Many failures: at most 5 tasks of the slot are kept.
    for _ in 0..8 {
        w.run_all();
        let task = w.live("web").remove(0);
        w.set_state(&task, TaskState::Failed, 2);
        w.settle();
    }
    let all = w
        .state
        .tasks
        .values()
        .filter(|t| t.service_id == "web")
        .count();
    assert_eq!(all, 5, "history limit");
}

#[test]
fn global_tasks_follow_nodes_and_removed_services_are_cleaned_up() {
    let mut w = World::new();
    w.node("n1");
    w.node("n2");
    w.service("agent", ServiceMode::Global, 0, RestartPolicy::default());
    w.settle();
    let nodes: Vec<String> = w.live("agent").iter().map(|t| t.node_id.clone()).collect();
    assert_eq!(nodes.len(), 2);
    let mut drained = w.state.nodes["n2"].clone();
    drained.spec.as_mut().unwrap().availability = Availability::Drain as i32;
    let mut b = Batch::default();
    b.put_node(drained);
    w.write(b);
    w.settle();
    assert_eq!(
        w.live("agent")
            .iter()
            .map(|t| t.node_id.as_str())
            .collect::<Vec<_>>(),
        vec!["n1"]
    );

    // Removing the service: running tasks are told to go, then deleted
    // once they report they stopped.
    let mut b = Batch::default();
    b.delete(
        shoal_api::pb::Kind::Service,
        "agent",
        w.state.services["agent"].meta.as_ref().unwrap().version,
    );
    w.write(b);
    w.run_all();
    w.settle();
    let left: Vec<Task> = w
        .state
        .tasks
        .values()
        .filter(|t| t.service_id == "agent")
        .cloned()
        .collect();
    assert!(left.iter().all(|t| t.desired_state() == TaskState::Remove
        || t.status.as_ref().unwrap().state().is_terminal()));
    for t in left
        .iter()
        .filter(|t| t.desired_state() == TaskState::Remove)
    {
        w.set_state(t, TaskState::Shutdown, 0);
    }
    w.settle();
    assert_eq!(
        w.state
            .tasks
            .values()
            .filter(|t| t.service_id == "agent")
            .count(),
        0
    );
}

#[test]
fn a_rolling_update_replaces_tasks_in_batches_with_a_delay_then_completes() {
    let mut w = World::new();
    w.node("n1");
    w.service("web", ServiceMode::Replicated, 4, RestartPolicy::default());
    w.settle();
    w.run_all();
    w.settle();
    let config = UpdateConfig {
        parallelism: Some(2),
        delay_ms: 2_000,
        ..Default::default()
    };
    w.update_image("web", "echo:2", config, UpdateConfig::default());
    w.settle();
    // First batch: two slots replaced (stop-first), the others untouched.
    let images = w.images("web");
    assert_eq!(
        images.iter().filter(|i| *i == "echo:2").count(),
        2,
        "{images:?}"
    );
    assert_eq!(w.live("web").len(), 4);
    w.run_all();
    w.settle();
    w.now += 1_000;
    w.settle();
    assert_eq!(
        w.images("web").iter().filter(|i| *i == "echo:2").count(),
        2,
        "waits for the delay"
    );
    w.now += 1_000;
    w.settle();
    assert_eq!(w.images("web"), ["echo:2"; 4]);
    w.run_all();
    w.settle();
    assert_eq!(
        w.update_state("web"),
        update::UPDATING,
        "monitored before completing"
    );
    w.now += 5_000;
    w.settle();
    assert_eq!(w.update_state("web"), update::COMPLETED);
    // Nothing moves once complete.
    let ids: Vec<_> = w.live("web").iter().map(|t| t.meta.clone()).collect();
    w.now += 60_000;
    w.settle();
    assert_eq!(
        ids,
        w.live("web")
            .iter()
            .map(|t| t.meta.clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_failing_update_rolls_back_by_itself_and_start_first_overlaps() {
    let mut w = World::new();
    w.node("n1");
    let no_restart = RestartPolicy {
        condition: RestartCondition::None as i32,
        ..Default::default()
    };
    w.service("web", ServiceMode::Replicated, 2, no_restart);
    w.settle();
    w.run_all();
    w.settle();
    let update = UpdateConfig {
        parallelism: Some(1),
        failure_action: UpdateFailureAction::Rollback as i32,
        ..Default::default()
    };
    let rollback = UpdateConfig {
        parallelism: Some(2),
        order: UpdateOrder::StartFirst as i32,
        monitor_ms: Some(0),
        ..Default::default()
    };
    w.update_image("web", "missing:1", update, rollback);
    w.settle();
    let new = w
        .live("web")
        .into_iter()
        .find(|t| t.spec.as_ref().unwrap().container.as_ref().unwrap().image == "missing:1")
        .expect("one task replaced");
    w.now += 100;
    let mut t = w.state.tasks[&new.meta.as_ref().unwrap().id].clone();
    t.node_id = "n1".into();
    t.status = Some(TaskStatus {
        state: TaskState::Rejected as i32,
        timestamp: w.now,
        err: "image missing:1 is not on this node".into(),
        ..Default::default()
    });
    let mut b = Batch::default();
    b.put_task(t);
    w.write(b);
    w.settle();
    assert_eq!(w.update_state("web"), update::ROLLBACK_STARTED);
    let spec = w.state.services["web"].spec.clone().unwrap();
    assert_eq!(spec.task.unwrap().container.unwrap_or_default().image, "");
    // Start-first: the rejected slot's replacement starts while nothing
    // else stops; once it runs, the rollback completes.
    w.run_all();
    w.settle();
    w.run_all();
    w.settle();
    w.now += 1_000;
    w.settle();
    assert_eq!(w.images("web"), ["", ""]);
    assert_eq!(w.update_state("web"), update::ROLLBACK_COMPLETED);
}

/// Node n1 reports the first live task of `web` running `image` in
/// `state`, now.
fn report_first_new(w: &mut World, image: &str, state: TaskState) {
    let mut t = w
        .live("web")
        .into_iter()
        .find(|t| t.spec.as_ref().unwrap().container.as_ref().unwrap().image == image)
        .expect("the first batch started")
        .clone();
    t.node_id = "n1".into();
    t.status = Some(TaskStatus {
        state: state as i32,
        timestamp: w.now,
        ..Default::default()
    });
    let mut b = Batch::default();
    b.put_task(t);
    w.write(b);
}

/// A container whose creation and start outlast the monitor window (a
/// loaded host: the agent reports it Ready until it runs) is not a failed
/// task: the update waits for it and completes. (lab_stacks' update with
/// parallelism 0 rolled back when four starts at once took past 2 s.)
#[test]
fn a_slow_start_past_the_monitor_window_is_not_a_failure() {
    let mut w = World::new();
    w.node("n1");
    w.service("web", ServiceMode::Replicated, 1, RestartPolicy::default());
    w.settle();
    w.run_all();
    w.settle();
    let update = UpdateConfig {
        parallelism: Some(1),
        monitor_ms: Some(2_000),
        failure_action: UpdateFailureAction::Rollback as i32,
        ..Default::default()
    };
    w.update_image("web", "slow:1", update, UpdateConfig::default());
    w.settle();
    // Created, not yet started, for three monitor windows.
    report_first_new(&mut w, "slow:1", TaskState::Ready);
    w.settle();
    w.now += 6_000;
    w.settle();
    assert_eq!(
        w.update_state("web"),
        update::UPDATING,
        "still waiting for it"
    );
    // It runs: the update completes, nothing rolled back.
    w.run_all();
    w.settle();
    w.now += 3_000;
    w.settle();
    assert_eq!(w.update_state("web"), update::COMPLETED);
    assert_eq!(w.images("web"), ["slow:1"]);
}

#[test]
fn a_task_never_healthy_within_the_monitor_window_pauses_the_update() {
    let mut w = World::new();
    w.node("n1");
    w.service("web", ServiceMode::Replicated, 3, RestartPolicy::default());
    w.settle();
    w.run_all();
    w.settle();
    let update = UpdateConfig {
        parallelism: Some(1),
        monitor_ms: Some(3_000),
        ..Default::default()
    };
    w.update_image("web", "unhealthy:1", update, UpdateConfig::default());
    w.settle();
    // Its container runs but its health check never passes: Starting.
    report_first_new(&mut w, "unhealthy:1", TaskState::Starting);
    w.settle();
    w.now += 2_000;
    w.settle();
    assert_eq!(
        w.update_state("web"),
        update::UPDATING,
        "still within the window"
    );
    w.now += 2_000;
    w.settle();
    assert_eq!(w.update_state("web"), update::PAUSED);
    let status = w.state.services["web"].update_status.clone().unwrap();
    assert!(
        status.message.contains("update paused due to failure"),
        "{}",
        status.message
    );
    // Paused: the other two tasks keep the old image.
    let old = w.images("web").iter().filter(|i| i.is_empty()).count();
    assert_eq!(old, 2);
}

#[test]
fn a_global_start_first_update_overlaps_old_and_new_on_each_node() {
    let mut w = World::new();
    w.node("n1");
    w.node("n2");
    w.service("agent", ServiceMode::Global, 0, RestartPolicy::default());
    w.settle();
    w.run_all();
    w.settle();
    assert_eq!(w.live("agent").len(), 2);
    let update = UpdateConfig {
        parallelism: Some(1),
        order: UpdateOrder::StartFirst as i32,
        monitor_ms: Some(0),
        ..Default::default()
    };
    w.update_image("agent", "agent:2", update, UpdateConfig::default());
    w.settle();
    // One node runs old and new side by side; nothing was stopped.
    assert_eq!(w.live("agent").len(), 3);
    w.run_all();
    w.settle();
    w.now += 1;
    w.settle();
    w.run_all();
    w.settle();
    w.now += 1;
    w.settle();
    assert_eq!(w.images("agent"), ["agent:2", "agent:2"]);
    let nodes: std::collections::BTreeSet<String> =
        w.live("agent").iter().map(|t| t.node_id.clone()).collect();
    assert_eq!(nodes.len(), 2, "one task per node");
    assert_eq!(w.update_state("agent"), update::COMPLETED);
}

/// Runs passes until nothing changes; the size of each pass's batch.
fn passes(w: &mut World) -> Vec<(usize, usize)> {
    let mut sizes = Vec::new();
    for _ in 0..100 {
        let plan = reconcile(&w.state, w.now);
        if plan.batch.is_empty() {
            return sizes;
        }
        let proto = plan.batch.into_proto();
        sizes.push((proto.actions.len(), prost::Message::encoded_len(&proto)));
        w.index += 1;
        w.state.apply(w.index, &proto).expect("no conflict");
    }
    panic!("the orchestrator did not settle in 100 passes");
}

#[test]
fn a_big_scale_is_written_over_several_small_passes() {
    use crate::limits::{MAX_BYTES_PER_PASS, MAX_WRITES_PER_PASS};
    let mut w = World::new();
    w.node("n1");
    w.service(
        "web",
        ServiceMode::Replicated,
        2_500,
        RestartPolicy::default(),
    );
    let sizes = passes(&mut w);
    assert_eq!(
        sizes.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [MAX_WRITES_PER_PASS, MAX_WRITES_PER_PASS, 500]
    );
    let mut slots: Vec<u64> = w.state.tasks.values().map(|t| t.slot).collect();
    slots.sort();
    assert_eq!(slots, (1..=2_500).collect::<Vec<_>>(), "one task per slot");

    // Tasks carry their spec: a big spec makes passes smaller, by bytes.
    let mut w = World::new();
    w.node("n1");
    w.service(
        "big",
        ServiceMode::Replicated,
        100,
        RestartPolicy::default(),
    );
    let mut service = w.state.services["big"].clone();
    let spec = service.spec.as_mut().unwrap();
    spec.task.as_mut().unwrap().container = Some(ContainerSpec {
        image: "shoal/echo:1".into(),
        env: vec![format!("BLOB={}", "x".repeat(64 * 1024))],
        ..Default::default()
    });
    let mut b = Batch::default();
    b.put_service(service);
    w.write(b);
    let sizes = passes(&mut w);
    assert!(sizes.len() >= 6, "{} passes", sizes.len());
    for (_, bytes) in &sizes {
        assert!(
            *bytes < MAX_BYTES_PER_PASS + 70 * 1024,
            "a pass wrote {bytes} bytes"
        );
    }
    assert_eq!(w.state.tasks.len(), 100);

    // Removing the big service forgets its 2,500 tasks a pass at a time.
    let mut w = World::new();
    w.node("n1");
    w.service(
        "web",
        ServiceMode::Replicated,
        2_500,
        RestartPolicy::default(),
    );
    passes(&mut w);
    let mut b = Batch::default();
    let version = w.state.services["web"].meta.as_ref().unwrap().version;
    b.delete(shoal_api::pb::Kind::Service, "web", version);
    w.write(b);
    let sizes = passes(&mut w);
    assert!(
        sizes.iter().all(|(n, _)| *n <= MAX_WRITES_PER_PASS),
        "{sizes:?}"
    );
    assert!(w.state.tasks.is_empty());
}
