//! What `shoal service logs` asks for: the tasks whose output it wants (a
//! service's, or one task's), by node, and what the caller needs to name
//! each line (the task's service and slot), which agents do not know.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use shoal_api::pb::{LogLine, LogsRequest, NodeState, TaskState};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::Status;

use crate::{logs::LogOptions, manager::Manager, store::State};

/// The tasks a request reads, by node, and who each task is.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// Node id → task ids on it.
    pub nodes: BTreeMap<String, Vec<String>>,
    /// Task id → (service id, slot).
    pub tasks: HashMap<String, (String, u64)>,
}

/// The request's options for the broker.
pub fn options(request: &LogsRequest) -> Result<LogOptions, Status> {
    if request.since_ns < 0 {
        return Err(Status::invalid_argument(format!(
            "since {} is before 1970: give a time after the epoch",
            request.since_ns
        )));
    }
    Ok(LogOptions {
        follow: request.follow,
        tail: request.tail,
        since_ns: request.since_ns,
    })
}

/// The tasks `request` names: every task of its service that was placed on
/// a node, or its one task. Unknown ids are NOT_FOUND, as Docker's "no such
/// task or service".
pub fn targets(state: &State, request: &LogsRequest) -> Result<Targets, Status> {
    let tasks: Vec<_> = match (request.service_id.is_empty(), request.task_id.is_empty()) {
        (false, true) => {
            if !state.services.contains_key(&request.service_id) {
                return Err(Status::not_found(format!(
                    "no such service: {}",
                    request.service_id
                )));
            }
            state.tasks_of_service(&request.service_id).collect()
        }
        (true, false) => {
            let task = state
                .tasks
                .get(&request.task_id)
                .ok_or_else(|| Status::not_found(format!("no such task: {}", request.task_id)))?;
            vec![task]
        }
        (false, false) => {
            return Err(Status::invalid_argument(
                "give a service or a task, not both",
            ));
        }
        (true, true) => return Err(Status::invalid_argument("give a service or a task")),
    };
    let mut out = Targets::default();
    for task in tasks.into_iter().filter(|t| !t.node_id.is_empty()) {
        let id = task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
        out.nodes
            .entry(task.node_id.clone())
            .or_default()
            .push(id.clone());
        out.tasks.insert(id, (task.service_id.clone(), task.slot));
    }
    for ids in out.nodes.values_mut() {
        ids.sort();
    }
    Ok(out)
}

/// Takes out of `targets` the nodes that are not Ready (down, or never
/// heard from since a restart): they cannot answer, and a request without
/// follow names them at its end rather than waiting for them, as Docker's
/// does. Returns their ids.
pub fn take_unavailable(state: &State, targets: &mut Targets) -> BTreeSet<String> {
    let ready = |node: &str| {
        state
            .nodes
            .get(node)
            .and_then(|n| n.status.as_ref())
            .is_some_and(|s| s.state() == NodeState::Ready)
    };
    let down: BTreeSet<String> = targets
        .nodes
        .keys()
        .filter(|node| !ready(node))
        .cloned()
        .collect();
    targets.nodes.retain(|node, _| !down.contains(node));
    down
}

/// The broker's lines with each task's service and slot filled in.
pub fn annotated(
    lines: mpsc::Receiver<Result<LogLine, Status>>,
    tasks: HashMap<String, (String, u64)>,
) -> impl Stream<Item = Result<LogLine, Status>> + Send + 'static {
    ReceiverStream::new(lines).map(move |line| {
        line.map(|mut line| {
            if let Some((service_id, slot)) = tasks.get(&line.task_id) {
                line.service_id.clone_from(service_id);
                line.slot = *slot;
            }
            line
        })
    })
}

/// Whether a task's container exists on its node (its logs can be read).
fn started(state: &State, task_id: &str) -> bool {
    state
        .tasks
        .get(task_id)
        .and_then(|t| t.status.as_ref())
        .is_some_and(|s| s.state() >= TaskState::Starting)
}

/// The tasks of `service_id` whose containers exist that `seen` does not
/// hold yet (started since: a restart, a scale, an update).
pub fn new_tasks(state: &State, service_id: &str, seen: &HashSet<String>) -> Targets {
    let request = LogsRequest {
        service_id: service_id.to_owned(),
        ..Default::default()
    };
    let mut out = targets(state, &request).unwrap_or_default();
    out.tasks.retain(|id, _| !seen.contains(id));
    out.tasks.retain(|id, _| started(state, id));
    for ids in out.nodes.values_mut() {
        ids.retain(|id| out.tasks.contains_key(id));
    }
    out.nodes.retain(|_, ids| !ids.is_empty());
    out
}

/// `service logs -f` of a service, as Docker's: the lines of its tasks,
/// and of every task it starts while the caller listens.
pub fn follow_service(
    manager: Arc<Manager>,
    service_id: String,
    options: LogOptions,
    first: Targets,
    lines: mpsc::Receiver<Result<LogLine, Status>>,
) -> impl Stream<Item = Result<LogLine, Status>> + Send + 'static {
    let (tx, rx) = mpsc::channel(1024);
    let forward = |lines, tasks, tx: mpsc::Sender<_>| {
        tokio::spawn(async move {
            let mut lines = Box::pin(annotated(lines, tasks));
            while let Some(line) = lines.next().await {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        });
    };
    let asked: Vec<String> = first.tasks.keys().cloned().collect();
    forward(lines, first.tasks, tx.clone());
    tokio::spawn(async move {
        let mut applied = manager.store.applied();
        // Tasks asked for before their container existed gave nothing:
        // they are asked for again once it does.
        let mut seen: HashSet<String> = {
            let state = manager.store.read().await;
            asked.into_iter().filter(|t| started(&state, t)).collect()
        };
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                changed = applied.changed() => if changed.is_err() { return },
            }
            let found = {
                let state = manager.store.read().await;
                if !state.services.contains_key(&service_id) {
                    return;
                }
                new_tasks(&state, &service_id, &seen)
            };
            if found.tasks.is_empty() {
                continue;
            }
            seen.extend(found.tasks.keys().cloned());
            // A new task's lines are all new: every one of them.
            let options = LogOptions { tail: 0, ..options };
            // Followed: a node that is down now is asked all the same, and
            // answers when it comes back.
            match manager
                .logs
                .subscribe(found.nodes, options, BTreeSet::new())
            {
                Ok(lines) => forward(lines, found.tasks, tx.clone()),
                Err(error) => {
                    let _ = tx.send(Err(error.into())).await;
                    return;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use shoal_api::pb::{Meta, Service, Task};

    use super::*;

    fn task(id: &str, service: &str, slot: u64, node: &str) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            service_id: service.into(),
            slot,
            node_id: node.into(),
            ..Default::default()
        }
    }

    fn state() -> State {
        let mut state = State::default();
        state.services.insert("s1".into(), Service::default());
        for t in [
            task("t1", "s1", 1, "n1"),
            task("t2", "s1", 2, "n2"),
            task("t3", "s1", 3, "n1"),
            task("pending", "s1", 4, ""),
            task("other", "s2", 1, "n1"),
        ] {
            state.tasks.insert(t.meta.as_ref().unwrap().id.clone(), t);
        }
        state
    }

    #[test]
    fn a_service_reads_its_placed_tasks_by_node() {
        let request = LogsRequest {
            service_id: "s1".into(),
            ..Default::default()
        };
        let targets = targets(&state(), &request).unwrap();
        assert_eq!(
            targets.nodes,
            BTreeMap::from([
                ("n1".into(), vec!["t1".into(), "t3".into()]),
                ("n2".into(), vec!["t2".into()]),
            ])
        );
        assert_eq!(targets.tasks["t2"], ("s1".into(), 2));
        assert!(!targets.tasks.contains_key("pending"));
    }

    #[test]
    fn a_task_reads_only_itself_and_unknown_ids_are_not_found() {
        let request = LogsRequest {
            task_id: "t2".into(),
            ..Default::default()
        };
        let found = targets(&state(), &request).unwrap();
        assert_eq!(
            found.nodes,
            BTreeMap::from([("n2".into(), vec!["t2".into()])])
        );
        for request in [
            LogsRequest {
                task_id: "nope".into(),
                ..Default::default()
            },
            LogsRequest {
                service_id: "nope".into(),
                ..Default::default()
            },
        ] {
            let err = targets(&state(), &request).unwrap_err();
            assert_eq!(err.code(), tonic::Code::NotFound);
            assert!(err.message().contains("nope"), "{}", err.message());
        }
        let both = LogsRequest {
            service_id: "s1".into(),
            task_id: "t1".into(),
            ..Default::default()
        };
        assert_eq!(
            targets(&state(), &both).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn a_time_before_the_epoch_is_refused() {
        let request = LogsRequest {
            since_ns: -1,
            ..Default::default()
        };
        assert!(options(&request).unwrap_err().message().contains("1970"));
    }

    #[test]
    fn a_follower_learns_of_tasks_placed_since() {
        let mut state = state();
        for t in state.tasks.values_mut() {
            t.status = Some(shoal_api::pb::TaskStatus {
                state: TaskState::Running as i32,
                ..Default::default()
            });
        }
        let seen: HashSet<String> = ["t1", "t2", "t3"].map(String::from).into();
        assert!(new_tasks(&state, "s1", &seen).tasks.is_empty());
        let mut restarted = task("t4", "s1", 1, "n2");
        restarted.status = Some(shoal_api::pb::TaskStatus {
            state: TaskState::Assigned as i32,
            ..Default::default()
        });
        state.tasks.insert("t4".into(), restarted);
        // Not before its container exists.
        assert!(new_tasks(&state, "s1", &seen).tasks.is_empty());
        state.tasks.get_mut("t4").unwrap().status = Some(shoal_api::pb::TaskStatus {
            state: TaskState::Starting as i32,
            ..Default::default()
        });
        let found = new_tasks(&state, "s1", &seen);
        assert_eq!(
            found.nodes,
            BTreeMap::from([("n2".into(), vec!["t4".into()])])
        );
        assert_eq!(found.tasks["t4"], ("s1".into(), 1));
    }

    #[tokio::test]
    async fn lines_get_their_tasks_service_and_slot() {
        let (tx, rx) = mpsc::channel(4);
        let tasks = HashMap::from([("t2".to_string(), ("s1".to_string(), 2))]);
        tx.send(Ok(LogLine {
            task_id: "t2".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
        drop(tx);
        let lines: Vec<_> = annotated(rx, tasks).collect().await;
        let line = lines[0].as_ref().unwrap();
        assert_eq!((line.service_id.as_str(), line.slot), ("s1", 2));
    }
}
