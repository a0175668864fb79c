//! `shoal swarm leave` on real managers (in process, mutual TLS on
//! loopback): a node makes itself leave with its own certificate, the
//! cluster forgets it and moves its tasks; a manager leaves Raft first,
//! the leader too; the last one only when forced.

use std::time::Duration;

use anyhow::{Result, ensure};
use shoal_api::pb::{
    LeaveClusterRequest, LeaveRequest, control_client::ControlClient,
    dispatcher_client::DispatcherClient,
};
use shoal_pki::transport::{self, Dialer};
use shoal_tests::cluster::{TestCluster, replicated, wait_until};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_leaves_with_its_own_certificate_and_its_tasks_move() -> Result<()> {
    let mut cluster = TestCluster::start(1).await?;
    let a = cluster.add_agent("a", &[]).await?;
    cluster.add_agent("b", &[]).await?;
    let mut control = cluster.control().await?;
    let service = control
        .create_service(replicated("web", 4))
        .await?
        .into_inner();
    let id = service.meta.unwrap_or_default().id;
    wait_until(WAIT, "4 tasks on 2 nodes", || async {
        let per_node = cluster.running_per_node(&id).await.ok()?;
        (per_node.len() == 2 && per_node.values().sum::<usize>() == 4).then_some(())
    })
    .await?;
    let leaving = cluster.agents[a].node_id();
    let addr = cluster.manager_addrs()[0].clone();
    let credentials = cluster.agents[a].credentials.clone();
    let mut dispatcher =
        DispatcherClient::new(transport::channel(&addr, Dialer::Node(credentials.clone())).await?);
    dispatcher.leave(LeaveRequest {}).await?;

    // Gone from the node list; its tasks run on the other node now.
    let nodes = cluster.nodes().await?;
    ensure!(
        !nodes
            .iter()
            .any(|n| n.meta.as_ref().is_some_and(|m| m.id == leaving)),
        "the node that left is still listed"
    );
    wait_until(WAIT, "the 4 tasks on b alone", || async {
        let per_node = cluster.running_per_node(&id).await.ok()?;
        (per_node.get("b") == Some(&4) && per_node.len() == 1).then_some(())
    })
    .await?;
    // Its certificate is refused from now on: leaving again says so.
    let err = dispatcher.leave(LeaveRequest {}).await.unwrap_err();
    ensure!(
        err.code() == tonic::Code::PermissionDenied && err.message().contains("was removed"),
        "{err:?}"
    );
    // An operator's certificate names no node to make leave.
    let admin = cluster.admin_dialer().await?;
    let err = DispatcherClient::new(transport::channel(&addr, admin).await?)
        .leave(LeaveRequest {})
        .await
        .unwrap_err();
    ensure!(err.code() == tonic::Code::PermissionDenied, "{err:?}");
    Ok(())
}

/// A Control client on manager `to` with manager `from`'s certificate.
async fn as_manager(
    cluster: &TestCluster,
    from: usize,
    to: usize,
) -> Result<ControlClient<tonic::transport::Channel>> {
    let credentials = cluster.managers[from]
        .as_ref()
        .expect("running")
        .manager
        .credentials
        .clone();
    let addr = cluster.manager_addrs()[to].clone();
    Ok(ControlClient::new(
        transport::channel(&addr, Dialer::Node(credentials)).await?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn managers_leave_raft_then_the_cluster_the_leader_too_and_the_last_only_when_forced()
-> Result<()> {
    let cluster = TestCluster::start(3).await?;
    let leader = cluster.wait_for_leader(WAIT).await?;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let manager = |i: usize| {
        cluster.managers[i]
            .as_ref()
            .expect("running")
            .manager
            .clone()
    };
    let node_of = |i: usize| manager(i).credentials.identity().node_id;

    // A certified manager must ask the leader itself (a follower would
    // forward the call as itself).
    let err = as_manager(&cluster, followers[0], followers[1])
        .await?
        .leave_cluster(LeaveClusterRequest { force: false })
        .await
        .unwrap_err();
    ensure!(err.code() == tonic::Code::FailedPrecondition, "{err:?}");

    // A follower leaves: out of Raft, out of the node list.
    as_manager(&cluster, followers[0], leader)
        .await?
        .leave_cluster(LeaveClusterRequest { force: false })
        .await?;
    ensure!(
        !manager(leader)
            .voters()
            .contains(&manager(followers[0]).raft_id),
        "the follower still votes"
    );
    let nodes = cluster.nodes().await?;
    ensure!(
        nodes.len() == 2
            && !nodes.iter().any(|n| n
                .meta
                .as_ref()
                .is_some_and(|m| m.id == node_of(followers[0]))),
        "{nodes:?}"
    );

    // The leader leaves itself: it steps down, the last other manager
    // leads and removes it.
    let last = followers[1];
    as_manager(&cluster, leader, leader)
        .await?
        .leave_cluster(LeaveClusterRequest { force: false })
        .await?;
    ensure!(
        *manager(leader).left.borrow(),
        "the leader was not told it left"
    );
    wait_until(WAIT, "the last manager to lead", || async {
        manager(last).is_leader().then_some(())
    })
    .await?;
    let mut control = as_manager(&cluster, last, last).await?;
    let nodes = control
        .list_nodes(shoal_api::pb::Empty {})
        .await?
        .into_inner()
        .nodes;
    ensure!(
        nodes.len() == 1
            && nodes[0]
                .meta
                .as_ref()
                .is_some_and(|m| m.id == node_of(last)),
        "{nodes:?}"
    );
    ensure!(manager(last).voters() == [manager(last).raft_id]);

    // The last manager leaves only with --force.
    let err = control
        .leave_cluster(LeaveClusterRequest { force: false })
        .await
        .unwrap_err();
    ensure!(err.message().contains("last manager"), "{err:?}");
    ensure!(!*manager(last).left.borrow());
    control
        .leave_cluster(LeaveClusterRequest { force: true })
        .await?;
    ensure!(*manager(last).left.borrow());
    Ok(())
}
