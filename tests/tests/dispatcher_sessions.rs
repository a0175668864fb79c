//! A node's assignment stream and its session, in process (a real manager,
//! a simulated agent speaking the real protocol over mutual TLS): the
//! stream of a session ends, saying so, once the node registers again,
//! with no timer of its own to notice (the leader holds none per stream),
//! and the new session's stream gets the node's set.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use shoal_api::pb::{SessionRef, dispatcher_client::DispatcherClient};
use shoal_pki::transport::{self, Dialer};
use shoal_tests::cluster::{TestCluster, register_node};
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
