//! A node's assignment stream and its session, in process (a real manager,
//! a simulated agent speaking the real protocol over mutual TLS): the
//! stream of a session ends, saying so, once the node registers again,
//! with no timer of its own to notice (the leader holds none per stream),
//! and the new session's stream gets the node's set. A node whose sets
//! take longer to apply than the heartbeats it may miss stays up, and
//! follows a new leader while it applies one. A followed `service logs` goes on, each line once, across a node's new
//! session.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use shoal_api::pb::{
    AssignmentSet, HeartbeatRequest, LogLine, LogMessage, LogsRequest, NodeState, SessionRef,
    TaskState, TaskStatus, TaskStatusUpdate, UpdateTaskStatusRequest,
    dispatcher_client::DispatcherClient,
};
use shoal_tests::cluster::{TestCluster, register_node, replicated, settings, wait_until};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

async fn register(client: &mut DispatcherClient<Channel>) -> Result<SessionRef> {
    Ok(register_node(client, "twice").await?.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_stream_ends_when_the_node_registers_again() -> Result<()> {
    let cluster = TestCluster::start(1).await?;
    let (_, mut client) = cluster.raw_node("twice").await?;

    let first = register(&mut client).await?;
    let mut old = client.assignments(first.clone()).await?.into_inner();
    let set = tokio::time::timeout(WAIT, old.message())
        .await
        .context("the first session's set")??
        .context("the stream ended before its first set")?;
    ensure!(
        !set.delta && set.version > 0,
        "the first push is a complete set"
    );

    let second = register(&mut client).await?;
    ensure!(second.session_id != first.session_id, "a new session");
    // The old stream's next item is its end, whatever else happens.
    match tokio::time::timeout(WAIT, old.message()).await {
        Err(_) => bail!("the replaced session's stream still open after {WAIT:?}"),
        Ok(Ok(Some(set))) => bail!("the replaced session got a push: {set:?}"),
        Ok(Ok(None)) => bail!("the replaced session's stream ended without saying why"),
        Ok(Err(status)) => ensure!(
            status.code() == tonic::Code::NotFound && status.message().contains("register again"),
            "the replaced session's stream ended with {status:?}"
        ),
    }
    // Opening a stream for the old session is refused; the new one's works.
    let refused = client.assignments(first).await;
    ensure!(
        refused.as_ref().err().map(|s| s.code()) == Some(tonic::Code::NotFound),
        "a stream of the replaced session: {refused:?}"
    );
    let mut new = client.assignments(second).await?.into_inner();
    let set = tokio::time::timeout(WAIT, new.message())
        .await
        .context("the new session's set")??
        .context("the new stream ended")?;
    ensure!(!set.delta, "the new session's first push is complete");
    Ok(())
}

/// A node beats while it applies a set or reports: applying may take an
/// engine under load longer than the three heartbeats a node may miss, and
/// a status report waits up to 10 s through a leader election. Beating in
/// the same loop as those, a live node was marked down and its tasks
/// replaced (the likely cause of `visualizer_scale` placing 350 tasks per
/// node instead of 200 in a loaded suite run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_slow_to_apply_its_set_is_not_marked_down() -> Result<()> {
    // Twice the other tests' period: a beat slowed past its one-period
    // deadline by a loaded machine ends a session whatever else it does,
    // and this test is about what else it does.
    const HEARTBEAT: Duration = Duration::from_millis(600);
    let mut cluster = TestCluster::start_with_settings(
        1,
        shoal_manager::manager::Settings {
            heartbeat_period: HEARTBEAT,
            ..settings()
        },
    )
    .await?;
    cluster.add_agent("slow", &[]).await?;
    let node_id = cluster.agents[0].node_id();
    // Four heartbeat periods a set: one more than a node may miss.
    cluster.agents[0].executor.set_apply_delay(HEARTBEAT * 4);
    let mut control = cluster.control().await?;
    control.create_service(replicated("web", 2)).await?;
    // Watched until both run and five more periods have passed (room for
    // the monitor to act on a missed beat).
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    let mut all_running_at = None;
    loop {
        let node = cluster
            .nodes()
            .await?
            .into_iter()
            .find(|n| n.meta.as_ref().is_some_and(|m| m.id == node_id))
            .context("the node")?;
        let state = node.status.as_ref().map(|s| s.state());
        ensure!(
            state == Some(NodeState::Ready),
            "the node is {state:?} while applying its sets: {:?}",
            node.status
        );
        let running = cluster.agents[0].executor.running_count();
        let now = tokio::time::Instant::now();
        if running == 2 {
            let since = *all_running_at.get_or_insert(now);
            if now - since >= HEARTBEAT * 5 {
                break;
            }
        }
        ensure!(now < deadline, "{running} of 2 tasks running");
        tokio::time::sleep(HEARTBEAT / 3).await;
    }
    let tasks = cluster.tasks().await?;
    ensure!(
        tasks.len() == 2,
        "tasks replaced: {} tasks for 2 replicas",
        tasks.len()
    );
    Ok(())
}

/// A node still applying a set (an engine slow to start a task) follows a
/// new leader at once: sets are applied apart from the session. Applied
/// inside it, the node stayed with the stopped leader until the set was
/// applied (a minute here), and the cluster marked it down meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_applying_a_set_follows_a_new_leader_meanwhile() -> Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let leader = cluster.wait_for_leader(WAIT).await?;
    cluster.add_agent("busy", &[]).await?;
    let leader_addr = cluster.options(leader).advertise.clone();
    let mut state = cluster.agents[0].state.clone();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| s.connected_to.as_deref() == Some(leader_addr.as_str())),
    )
    .await
    .context("the node's session with the leader")??;
    let executor = cluster.agents[0].executor.clone();
    let (begun, applied) = executor.sets_begun_and_applied();
    executor.set_apply_delay(Duration::from_secs(60));
    let mut control = cluster.control().await?;
    control.create_service(replicated("web", 1)).await?;
    wait_until(WAIT, "the node to begin applying the service's set", || {
        let executor = executor.clone();
        async move { (executor.sets_begun_and_applied().0 > begun).then_some(()) }
    })
    .await?;

    cluster.stop_manager(leader).await;
    let new_leader = cluster.wait_for_leader(WAIT).await?;
    let new_addr = cluster.options(new_leader).advertise.clone();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| s.connected_to.as_deref() == Some(new_addr.as_str())),
    )
    .await
    .context("the node's session with the new leader while it applies a set")??;
    ensure!(
        executor.sets_begun_and_applied().1 == applied,
        "the set was applied before the node moved: nothing was proven"
    );
    Ok(())
}

/// Beats for whichever session `session` holds, every `period`.
async fn beat(
    mut client: DispatcherClient<Channel>,
    session: watch::Receiver<SessionRef>,
    period: Duration,
) {
    let mut ticks = tokio::time::interval(period);
    loop {
        ticks.tick().await;
        let beat = HeartbeatRequest {
            session: Some(session.borrow().clone()),
            counters: Vec::new(),
        };
        let _ = client.heartbeat(beat).await;
    }
}

/// The next set on `stream` that `check` accepts.
async fn set_where(
    stream: &mut tonic::Streaming<AssignmentSet>,
    what: &str,
    check: impl Fn(&AssignmentSet) -> bool,
) -> Result<AssignmentSet> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let set = tokio::time::timeout_at(deadline, stream.message())
            .await
            .with_context(|| format!("no set with {what} within {WAIT:?}"))??
            .with_context(|| format!("the stream ended before a set with {what}"))?;
        if check(&set) {
            return Ok(set);
        }
    }
}

fn log_message(session: &SessionRef, request: &str, lines: Vec<LogLine>) -> LogMessage {
    LogMessage {
        session: Some(session.clone()),
        request_id: request.into(),
        lines,
        end: false,
    }
}

/// Task `task`'s line `n`, logged by the engine at `n` seconds.
fn line(task: &str, n: i64) -> LogLine {
    LogLine {
        task_id: task.into(),
        stream: "stdout".into(),
        data: format!("line {n}\n").into_bytes(),
        timestamp_ns: n * 1_000_000_000,
        ..Default::default()
    }
}

/// `service logs -f` goes on across a node's new session (a network cut,
/// a renewed certificate, an agent restart), each line once. The node's
/// stream for the request ends without its last message when its session
/// ends: the request stays asked of the node, whose next session reads the
/// task's log again from the start, and only what is newer than the last
/// line passed on reaches the caller. (Before, a stream that ended in any
/// way counted as the node being done: the caller heard no more from it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_log_goes_on_once_across_a_nodes_new_session() -> Result<()> {
    let cluster = TestCluster::start(1).await?;
    let (_, mut client) = cluster.raw_node("logger").await?;
    let (first, period) = register_node(&mut client, "logger").await?;
    let (session_tx, session_rx) = watch::channel(first.clone());
    let beats = tokio::spawn(beat(client.clone(), session_rx, period));

    let mut control = cluster.control().await?;
    let service = control
        .create_service(replicated("web", 1))
        .await?
        .into_inner();
    let service_id = service.meta.context("the service's meta")?.id;
    let mut sets = client.assignments(first.clone()).await?.into_inner();
    let set = set_where(&mut sets, "web's task", |s| !s.tasks.is_empty()).await?;
    let task = set.tasks[0]
        .meta
        .as_ref()
        .context("the task's meta")?
        .id
        .clone();
    client
        .update_task_status(UpdateTaskStatusRequest {
            session: Some(first.clone()),
            updates: vec![TaskStatusUpdate {
                task_id: task.clone(),
                status: Some(TaskStatus {
                    state: TaskState::Running as i32,
                    ..Default::default()
                }),
            }],
            applied_version: set.version,
        })
        .await?;
    wait_until(WAIT, "web's task running", || async {
        let tasks = cluster.tasks().await.ok()?;
        let running = tasks.iter().find(|t| {
            t.meta.as_ref().is_some_and(|m| m.id == task)
                && t.status.as_ref().map(|s| s.state()) == Some(TaskState::Running)
        });
        running.map(|_| ())
    })
    .await?;

    let mut logs = control
        .service_logs(LogsRequest {
            service_id,
            follow: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut next_line = async || -> Result<String> {
        let line = tokio::time::timeout(WAIT, logs.message())
            .await
            .context("no log line within the wait")??
            .context("the caller's log stream ended")?;
        Ok(String::from_utf8(line.data)?)
    };
    let asked = set_where(&mut sets, "a log request", |s| !s.log_requests.is_empty()).await?;
    let request = asked.log_requests[0].id.clone();

    // The first session answers with three lines, then its stream is cut
    // short (the agent drops its sender when the session ends).
    let (lines_tx, lines_rx) = mpsc::channel(8);
    let mut publisher = client.clone();
    let shipped =
        tokio::spawn(async move { publisher.publish_logs(ReceiverStream::new(lines_rx)).await });
    lines_tx
        .send(log_message(&first, &request, Vec::new()))
        .await?;
    let three = (1..=3).map(|n| line(&task, n)).collect();
    lines_tx.send(log_message(&first, &request, three)).await?;
    for n in 1..=3 {
        ensure!(next_line().await? == format!("line {n}\n"));
    }
    drop(lines_tx);
    tokio::time::timeout(WAIT, shipped)
        .await
        .context("the manager did not end the cut stream")???;

    // The node's next session is asked again, and reads the log again
    // from the start: the caller gets lines 4 and 5 next, not 1 to 3.
    let (second, _) = register_node(&mut client, "logger").await?;
    session_tx.send_replace(second.clone());
    let mut sets = client.assignments(second.clone()).await?.into_inner();
    let set = set_where(&mut sets, "the complete set", |_| true).await?;
    ensure!(
        set.log_requests.iter().any(|r| r.id == request),
        "the followed request is no longer asked of the node after its stream broke off: {:?}",
        set.log_requests
    );
    let (lines_tx, lines_rx) = mpsc::channel(8);
    let mut publisher = client.clone();
    let _shipping =
        tokio::spawn(async move { publisher.publish_logs(ReceiverStream::new(lines_rx)).await });
    lines_tx
        .send(log_message(&second, &request, Vec::new()))
        .await?;
    let five = (1..=5).map(|n| line(&task, n)).collect();
    lines_tx.send(log_message(&second, &request, five)).await?;
    for n in 4..=5 {
        let got = next_line().await?;
        ensure!(
            got == format!("line {n}\n"),
            "after the new session the caller got {got:?}, not line {n}"
        );
    }
    beats.abort();
    Ok(())
}

/// Every node's id, hostname and state, for a failure's message.
async fn node_states(cluster: &TestCluster) -> String {
    let Ok(nodes) = cluster.nodes().await else {
        return "(unreadable)".into();
    };
    let states: Vec<String> = nodes
        .iter()
        .map(|n| {
            format!(
                "{} {} {:?}",
                n.meta.as_ref().map_or("", |m| m.id.as_str()),
                n.description.as_ref().map_or("", |d| d.hostname.as_str()),
                n.status.as_ref().map(|s| s.state())
            )
        })
        .collect();
    states.join("; ")
}

/// Waits until the manager has marked `node` down.
async fn marked_down(cluster: &TestCluster, node: &str) -> Result<()> {
    wait_until(WAIT, "the node marked down", || async {
        let nodes = cluster.nodes().await.ok()?;
        let found = nodes
            .iter()
            .find(|n| n.meta.as_ref().is_some_and(|m| m.id == node))?;
        (found.status.as_ref()?.state() == NodeState::Down).then_some(())
    })
    .await
}

/// Whatever ends `logs`: Ok(()) if it closed, the status if it failed.
async fn stream_end(logs: &mut tonic::Streaming<LogLine>) -> Result<Result<(), tonic::Status>> {
    tokio::time::timeout(WAIT, async {
        loop {
            match logs.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(status) => return Err(status),
            }
        }
    })
    .await
    .context("the log stream still waits for a node after the wait")
}

/// `service logs` without follow, with a task on a node that cannot answer,
/// ends naming that node as Docker's does ("warning: incomplete log
/// stream. some logs could not be retrieved for the following reasons: node
/// … is not available") instead of waiting for it: a node already down is
/// not asked, and one that goes down before it answers ends the wait when
/// it is marked down. (Before, the call waited for them for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_logs_name_a_node_that_cannot_answer_instead_of_waiting() -> Result<()> {
    // A period well above the other tests' 300 ms: the test asserts which
    // nodes are down, and on a loaded machine a beat late by a few hundred
    // milliseconds would mark a live node down too.
    let mut cluster = TestCluster::start_with_settings(
        1,
        shoal_manager::manager::Settings {
            heartbeat_period: Duration::from_secs(1),
            ..settings()
        },
    )
    .await?;
    for host in ["up", "lost", "slow"] {
        cluster.add_agent(host, &[]).await?;
    }
    let mut control = cluster.control().await?;
    let service_id = control
        .create_service(replicated("web", 3))
        .await?
        .into_inner()
        .meta
        .context("the service's meta")?
        .id;
    wait_until(WAIT, "one web task per node", || async {
        let per_node = cluster.running_per_node(&service_id).await.ok()?;
        (per_node.len() == 3).then_some(())
    })
    .await?;
    let incomplete = |node: &str| {
        format!(
            "warning: incomplete log stream. some logs could not be retrieved for the following reasons: node {node} is not available"
        )
    };
    // Down when asked: not asked, named at the end.
    let lost = cluster.agents.remove(1);
    let lost_id = lost.node_id();
    drop(lost);
    marked_down(&cluster, &lost_id).await?;
    let request = LogsRequest {
        service_id: service_id.clone(),
        ..Default::default()
    };
    let mut logs = control.service_logs(request.clone()).await?.into_inner();
    match stream_end(&mut logs).await? {
        Err(status) => ensure!(
            status.message() == incomplete(&lost_id),
            "the stream ended with {status:?}; nodes: {}",
            node_states(&cluster).await
        ),
        Ok(()) => bail!("the stream ended without naming the down node {lost_id}"),
    }

    // Up when asked, then lost before it answers: a node applying a set
    // (here for a minute) answers log requests only after it.
    let slow = cluster.agents.remove(1);
    let slow_id = slow.node_id();
    slow.executor.set_apply_delay(Duration::from_secs(60));
    let seen = slow.executor.log_requests_seen();
    let mut logs = control.service_logs(request).await?.into_inner();
    // The request reached the node (in a set it is now applying), then
    // the node's session ends.
    wait_until(WAIT, "the request's set to reach the slow node", || async {
        (slow.executor.log_requests_seen() > seen).then_some(())
    })
    .await?;
    drop(slow);
    // Both are named, in the order of their ids.
    let mut named = [lost_id.as_str(), slow_id.as_str()];
    named.sort_unstable();
    let expected = format!(
        "{}, node {} is not available",
        incomplete(named[0]),
        named[1]
    );
    match stream_end(&mut logs).await? {
        Err(status) => ensure!(
            status.message() == expected,
            "the stream ended with {status:?}; nodes: {}",
            node_states(&cluster).await
        ),
        Ok(()) => bail!("the stream ended without naming the lost nodes"),
    }
    Ok(())
}
