//! A node's assignment stream and its session, in process (a real manager,
//! a simulated agent speaking the real protocol over mutual TLS): the
//! stream of a session ends, saying so, once the node registers again,
//! with no timer of its own to notice (the leader holds none per stream),
//! and the new session's stream gets the node's set. A node whose sets
//! take longer to apply than the heartbeats it may miss stays up.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use shoal_api::pb::{NodeState, SessionRef, dispatcher_client::DispatcherClient};
use shoal_pki::transport::{self, Dialer};
use shoal_tests::cluster::{TestCluster, register_node, replicated, settings};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

async fn register(client: &mut DispatcherClient<Channel>) -> Result<SessionRef> {
    Ok(register_node(client, "twice").await?.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_stream_ends_when_the_node_registers_again() -> Result<()> {
    let cluster = TestCluster::start(1).await?;
    let addr = cluster.manager_addrs()[0].clone();
    let node = shoal_agent::identity::obtain(
        None,
        &cluster.manager_addrs(),
        Some(&cluster.worker_token),
        "",
        "twice",
    )
    .await?;
    let channel = transport::channel(&addr, Dialer::Node(node)).await?;
    let mut client = DispatcherClient::new(channel);

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
