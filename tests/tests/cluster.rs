//! The manager end to end: three managers (Raft on disk, gRPC on loopback)
//! and simulated agents that speak the real agent protocol.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, Result, ensure};
use shoal_api::pb::{
    Availability, Empty, IdRequest, NodeState, RestartCondition, RestartPolicy, SecretSpec,
    ServiceMode, TaskState, UpdateClusterRequest, UpdateNodeRequest, UpdateServiceRequest,
};
use shoal_tests::cluster::{HEARTBEAT, TestCluster, is_running, replicated, wait_until};

const WAIT: Duration = Duration::from_secs(15);

async fn three_nodes() -> Result<TestCluster> {
    let mut cluster = TestCluster::start(3).await?;
    for (host, zone) in [("n1", "a"), ("n2", "b"), ("n3", "c")] {
        cluster.add_agent(host, &[("zone", zone)]).await?;
    }
    Ok(cluster)
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_spreads_scale_removes_highest_slots_and_drain_moves_tasks() -> Result<()> {
    let cluster = three_nodes().await?;
    let mut control = cluster.control().await?;
    let service = control
        .create_service(replicated("web", 6))
        .await?
        .into_inner();
    let id = service.meta.clone().unwrap_or_default().id;
    let want = counts(&[("n1", 2), ("n2", 2), ("n3", 2)]);
    wait_until(WAIT, "2 running tasks on each node", || async {
        (cluster.running_per_node(&id).await.ok()? == want).then_some(())
    })
    .await?;

    // Scale down to 2: slots 3..6 go, 1 and 2 stay.
    let current = control.list_services(Empty {}).await?.into_inner().services[0]
        .service
        .clone()
        .unwrap_or_default();
    let mut spec = current.spec.clone().unwrap_or_default();
    spec.replicas = 2;
    control
        .update_service(UpdateServiceRequest {
            id: id.clone(),
            version: current.meta.unwrap_or_default().version,
            spec: Some(spec),
            rollback: false,
        })
        .await?;
    let slots = wait_until(WAIT, "2 running slots", || async {
        let mut slots: Vec<u64> = cluster
            .tasks()
            .await
            .ok()?
            .iter()
            .filter(|t| is_running(t))
            .map(|t| t.slot)
            .collect();
        slots.sort();
        (slots.len() == 2).then_some(slots)
    })
    .await?;
    ensure!(
        slots == vec![1, 2],
        "scale down kept slots {slots:?}, not the lowest"
    );

    // Drain n1: its tasks move to the other nodes.
    let nodes = cluster.nodes().await?;
    let n1 = nodes
        .iter()
        .find(|n| n.description.as_ref().is_some_and(|d| d.hostname == "n1"))
        .cloned()
        .unwrap_or_default();
    let mut spec = n1.spec.clone().unwrap_or_default();
    spec.availability = Availability::Drain as i32;
    let mut scale = control.list_services(Empty {}).await?.into_inner().services[0]
        .service
        .clone()
        .unwrap_or_default();
    let mut s = scale.spec.clone().unwrap_or_default();
    s.replicas = 6;
    control
        .update_service(UpdateServiceRequest {
            id: id.clone(),
            version: scale.meta.take().unwrap_or_default().version,
            spec: Some(s),
            rollback: false,
        })
        .await?;
    control
        .update_node(UpdateNodeRequest {
            id: n1.meta.clone().unwrap_or_default().id,
            version: n1.meta.unwrap_or_default().version,
            spec: Some(spec),
        })
        .await?;
    let want = counts(&[("n2", 3), ("n3", 3)]);
    wait_until(WAIT, "all 6 tasks off the drained node", || async {
        (cluster.running_per_node(&id).await.ok()? == want).then_some(())
    })
    .await?;
    ensure!(
        cluster.agents[0].executor.running().is_empty(),
        "the drained node still runs tasks"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_stops_heartbeating_is_down_and_its_tasks_move() -> Result<()> {
    let mut cluster = three_nodes().await?;
    let mut control = cluster.control().await?;
    let id = control
        .create_service(replicated("api", 3))
        .await?
        .into_inner()
        .meta
        .unwrap_or_default()
        .id;
    wait_until(WAIT, "one task per node", || async {
        (cluster.running_per_node(&id).await.ok()? == counts(&[("n1", 1), ("n2", 1), ("n3", 1)]))
            .then_some(())
    })
    .await?;
    let lost = cluster.agents.remove(2); // n3's agent stops (its session ends)
    let lost_id = lost.node_id();
    drop(lost);
    let started = std::time::Instant::now();
    wait_until(WAIT, "n3 marked down", || async {
        let nodes = cluster.nodes().await.ok()?;
        let n3 = nodes
            .iter()
            .find(|n| n.meta.as_ref().is_some_and(|m| m.id == lost_id))?;
        (n3.status.as_ref()?.state() == NodeState::Down).then_some(())
    })
    .await?;
    let down_after = started.elapsed();
    ensure!(
        down_after >= HEARTBEAT * 2,
        "marked down after only {down_after:?}"
    );
    wait_until(WAIT, "3 running tasks on n1 and n2", || async {
        let per = cluster.running_per_node(&id).await.ok()?;
        (!per.contains_key("n3") && per.values().sum::<usize>() == 3).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_policy_replaces_failed_tasks_and_none_means_none() -> Result<()> {
    let mut cluster = TestCluster::start(1).await?;
    cluster.add_agent("n1", &[]).await?;
    let mut control = cluster.control().await?;
    let mut spec = replicated("flaky", 1);
    spec.task.as_mut().unwrap().restart = Some(RestartPolicy {
        delay_ms: Some(200),
        ..Default::default()
    });
    let flaky = control
        .create_service(spec)
        .await?
        .into_inner()
        .meta
        .unwrap_or_default()
        .id;
    let mut spec = replicated("oneshot", 1);
    spec.task.as_mut().unwrap().restart = Some(RestartPolicy {
        condition: RestartCondition::None as i32,
        ..Default::default()
    });
    let oneshot = control
        .create_service(spec)
        .await?
        .into_inner()
        .meta
        .unwrap_or_default()
        .id;
    let running = |service: String| {
        let cluster = &cluster;
        async move {
            cluster
                .tasks()
                .await
                .ok()?
                .into_iter()
                .find(|t| t.service_id == service && is_running(t))
        }
    };
    let first = wait_until(WAIT, "flaky running", || running(flaky.clone())).await?;
    let one = wait_until(WAIT, "oneshot running", || running(oneshot.clone())).await?;
    let executor = cluster.agents[0].executor.clone();
    ensure!(
        executor.exit(&first.meta.clone().unwrap_or_default().id, 1),
        "the sim did not run flaky's task"
    );
    ensure!(
        executor.exit(&one.meta.clone().unwrap_or_default().id, 1),
        "the sim did not run oneshot's task"
    );
    let second = wait_until(WAIT, "flaky replaced", || async {
        let t = running(flaky.clone()).await?;
        (t.meta != first.meta).then_some(t)
    })
    .await?;
    ensure!(
        second.slot == first.slot,
        "the replacement took slot {} not {}",
        second.slot,
        first.slot
    );
    ensure!(
        second.restarts.len() == 1,
        "restart count {:?}",
        second.restarts
    );
    let history: Vec<_> = cluster
        .tasks()
        .await?
        .into_iter()
        .filter(|t| t.service_id == flaky)
        .collect();
    ensure!(
        history.len() == 2,
        "flaky has {} tasks, expected the failed one kept as history",
        history.len()
    );
    ensure!(history.iter().any(|t| {
        t.status
            .as_ref()
            .is_some_and(|s| s.state() == TaskState::Failed && s.exit_code == 1)
    }));
    // `none`: the failed task stays, nothing replaces it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let oneshot_tasks: Vec<_> = cluster
        .tasks()
        .await?
        .into_iter()
        .filter(|t| t.service_id == oneshot)
        .collect();
    ensure!(
        oneshot_tasks.len() == 1,
        "restart-condition none restarted the task: {} tasks",
        oneshot_tasks.len()
    );
    ensure!(
        oneshot_tasks[0]
            .status
            .as_ref()
            .is_some_and(|s| s.state() == TaskState::Failed)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn global_services_run_once_per_node_including_late_joiners() -> Result<()> {
    let mut cluster = TestCluster::start(1).await?;
    cluster.add_agent("n1", &[]).await?;
    cluster.add_agent("n2", &[]).await?;
    let mut control = cluster.control().await?;
    let mut spec = replicated("agentd", 0);
    spec.mode = ServiceMode::Global as i32;
    let id = control
        .create_service(spec)
        .await?
        .into_inner()
        .meta
        .unwrap_or_default()
        .id;
    wait_until(WAIT, "one task on each of 2 nodes", || async {
        (cluster.running_per_node(&id).await.ok()? == counts(&[("n1", 1), ("n2", 1)])).then_some(())
    })
    .await?;
    cluster.add_agent("n3", &[]).await?;
    wait_until(WAIT, "one task on the node that joined later", || async {
        (cluster.running_per_node(&id).await.ok()? == counts(&[("n1", 1), ("n2", 1), ("n3", 1)]))
            .then_some(())
    })
    .await?;
    // Replicas with global mode is refused, with a clear error.
    let mut bad = replicated("bad", 3);
    bad.mode = ServiceMode::Global as i32;
    let err = control.create_service(bad).await.unwrap_err();
    ensure!(
        err.message()
            .contains("replicas can only be used with replicated mode"),
        "{}",
        err.message()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_loss_elects_a_new_leader_and_loses_no_acknowledged_write() -> Result<()> {
    let mut cluster = three_nodes().await?;
    let mut control = cluster.control().await?;
    let id = control
        .create_service(replicated("web", 3))
        .await?
        .into_inner()
        .meta
        .unwrap_or_default()
        .id;
    // Acknowledged writes, through whichever manager the client reaches.
    for i in 0..20 {
        control
            .create_secret(SecretSpec {
                name: format!("s{i}"),
                data: vec![b'x'; 64],
                ..Default::default()
            })
            .await?;
    }
    let old = cluster.wait_for_leader(WAIT).await?;
    cluster.stop_manager(old).await;
    let started = std::time::Instant::now();
    let new = cluster.wait_for_leader(WAIT).await?;
    let elected_in = started.elapsed();
    ensure!(new != old);
    ensure!(
        elected_in < Duration::from_secs(5),
        "a new leader took {elected_in:?}"
    );
    let mut control = cluster.control().await?;
    let secrets = control.list_secrets(Empty {}).await?.into_inner().secrets;
    ensure!(
        secrets.len() == 20,
        "{} of 20 acknowledged secrets survived",
        secrets.len()
    );
    ensure!(
        secrets
            .iter()
            .all(|s| s.spec.as_ref().is_some_and(|s| s.data.is_empty())),
        "secret data was returned"
    );
    // The new leader serves writes and keeps the tasks running.
    control
        .create_secret(SecretSpec {
            name: "after".into(),
            data: b"y".to_vec(),
            ..Default::default()
        })
        .await?;
    wait_until(WAIT, "3 running tasks under the new leader", || async {
        (cluster
            .running_per_node(&id)
            .await
            .ok()?
            .values()
            .sum::<usize>()
            == 3)
            .then_some(())
    })
    .await?;

    // The old leader restarts from its data directory and catches up.
    cluster.restart_manager(old).await?;
    let restarted = cluster.managers[old].as_ref().unwrap().manager.clone();
    wait_until(
        WAIT,
        "the restarted manager to hold all 21 secrets",
        || async { (restarted.store.read().await.secrets.len() == 21).then_some(()) },
    )
    .await?;
    ensure!(restarted.store.read().await.services.contains_key(&id));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_with_a_clear_error_and_writes_nothing() -> Result<()> {
    let cluster = TestCluster::start(1).await?;
    let mut control = cluster.control().await?;
    let err = control
        .remove_service(IdRequest { id: "nope".into() })
        .await
        .unwrap_err();
    ensure!(
        err.message().contains("service nope not found"),
        "{}",
        err.message()
    );
    let mut spec = replicated("c", 1);
    spec.task.as_mut().unwrap().placement = Some(shoal_api::pb::Placement {
        constraints: vec!["node.labels.zone=east".into()],
        ..Default::default()
    });
    let err = control.create_service(spec).await.unwrap_err();
    ensure!(
        err.message().contains("expected KEY==VALUE"),
        "{}",
        err.message()
    );
    // Fields that would make every task fail on its node are refused at
    // create time, naming the field (issue 13: these used to be accepted).
    type Change = fn(&mut shoal_api::pb::ContainerSpec);
    let bad: [(Change, &str); 4] = [
        (
            |c| {
                c.mounts.push(shoal_api::pb::Mount {
                    r#type: "bind".into(),
                    source: "relative".into(),
                    target: "/data".into(),
                    ..Default::default()
                })
            },
            "invalid mount source \"relative\": a bind mount's source must be an absolute path",
        ),
        (
            |c| c.env.push("=noval".into()),
            "invalid env \"=noval\": empty variable name",
        ),
        (
            |c| c.hostname = "{{.Bogus}}".into(),
            "invalid hostname \"{{.Bogus}}\": unknown placeholder .Bogus",
        ),
        (
            |c| c.env.push("NODE={{.Node.ID".into()),
            "invalid env \"NODE={{.Node.ID\": unclosed {{",
        ),
    ];
    for (change, want) in bad {
        let mut spec = replicated("c", 1);
        change(spec.task.as_mut().unwrap().container.as_mut().unwrap());
        let err = control.create_service(spec).await.unwrap_err();
        ensure!(
            err.code() == tonic::Code::InvalidArgument && err.message().starts_with(want),
            "wanted {want:?}, got {:?} {:?}",
            err.code(),
            err.message()
        );
    }
    ensure!(
        control
            .list_services(Empty {})
            .await?
            .into_inner()
            .services
            .is_empty(),
        "a refused service was written"
    );

    // The same holds for an update: the stored service does not change.
    let mut good = replicated("tpl", 1);
    good.labels.insert("tier".into(), "front".into());
    good.task.as_mut().unwrap().container.as_mut().unwrap().env = vec![
        "NODE={{.Node.ID}}".into(),
        "TIER={{index .Service.Labels \"tier\"}}".into(),
    ];
    let created = control.create_service(good.clone()).await?.into_inner();
    let meta = created.meta.clone().unwrap_or_default();
    let mut bad = good.clone();
    bad.task
        .as_mut()
        .unwrap()
        .container
        .as_mut()
        .unwrap()
        .hostname = "{{.Bogus}}".into();
    let err = control
        .update_service(UpdateServiceRequest {
            id: meta.id.clone(),
            version: meta.version,
            spec: Some(bad),
            rollback: false,
        })
        .await
        .unwrap_err();
    ensure!(
        err.message().contains("unknown placeholder .Bogus"),
        "{}",
        err.message()
    );
    let stored = control.list_services(Empty {}).await?.into_inner().services;
    let stored = stored
        .iter()
        .filter_map(|s| s.service.as_ref())
        .find(|s| s.meta.as_ref().is_some_and(|m| m.id == meta.id))
        .cloned()
        .unwrap_or_default();
    ensure!(
        stored.meta.unwrap_or_default().version == meta.version
            && stored.spec.as_ref() == created.spec.as_ref(),
        "a refused update was written"
    );
    // Templates stay as written in the store; each task carries the
    // service's labels, which the agent expands them with.
    let task = wait_until(WAIT, "a task of tpl", || async {
        cluster
            .tasks()
            .await
            .ok()?
            .into_iter()
            .find(|t| t.service_id == meta.id)
    })
    .await?;
    ensure!(
        task.service_labels.get("tier").map(String::as_str) == Some("front"),
        "{:?}",
        task.service_labels
    );
    control.remove_service(IdRequest { id: meta.id }).await?;

    // A secret a service uses cannot be removed; the error names the service.
    let secret = control
        .create_secret(SecretSpec {
            name: "pw".into(),
            data: b"x".to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut spec = replicated("db", 1);
    let container = spec.task.as_mut().unwrap().container.as_mut().unwrap();
    container.secrets.push(shoal_api::pb::SecretReference {
        secret_name: "pw".into(),
        ..Default::default()
    });
    control.create_service(spec).await?;
    let err = control
        .remove_secret(IdRequest {
            id: secret.meta.unwrap_or_default().id,
        })
        .await
        .unwrap_err();
    ensure!(
        err.message()
            .contains("secret pw is in use by the following service: db"),
        "{}",
        err.message()
    );

    // A token of another cluster is refused before anything is sent.
    let other = TestCluster::start(1).await?;
    let dir = tempfile::tempdir()?;
    let listen = shoal_api::test_port::unused_loopback_port()?;
    let options = shoal_manager::daemon::Options {
        data_dir: dir.path().join("m"),
        listen,
        advertise: listen.to_string(),
        socket: None,
        hostname: "x".into(),
        metrics: None,
        timing: shoal_tests::cluster::timing(),
        settings: Default::default(),
    };
    let remote = cluster.manager_addrs()[0].clone();
    let result = shoal_manager::daemon::start(
        options,
        shoal_manager::daemon::Bootstrap::Join {
            token: other.manager_token.clone(),
            remote,
        },
    )
    .await;
    let Err(err) = result else {
        anyhow::bail!("a manager joined with another cluster's token")
    };
    ensure!(
        format!("{err:#}").contains("belongs to another cluster"),
        "{err:#}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promote_takes_effect_when_a_manager_joins_on_the_node_and_demote_leaves_raft() -> Result<()>
{
    let mut cluster = TestCluster::start(1).await?;
    // A worker on the "host" where the second manager will run.
    cluster.add_agent_at("n2", "127.0.0.2", &[]).await?;
    let mut control = cluster.control().await?;
    let worker = cluster
        .nodes()
        .await?
        .into_iter()
        .find(|n| n.description.as_ref().is_some_and(|d| d.hostname == "n2"))
        .unwrap_or_default();
    let mut spec = worker.spec.clone().unwrap_or_default();
    spec.desired_role = shoal_api::pb::NodeRole::Manager as i32;
    let meta = worker.meta.clone().unwrap_or_default();
    let updated = control
        .update_node(UpdateNodeRequest {
            id: meta.id.clone(),
            version: meta.version,
            spec: Some(spec),
        })
        .await?
        .into_inner();
    ensure!(
        updated.role() == shoal_api::pb::NodeRole::Worker,
        "no manager runs there yet"
    );

    // The manager that joins on that host takes the promoted node.
    let second = cluster.add_manager("n2", "127.0.0.2").await?;
    let nodes = cluster.nodes().await?;
    ensure!(
        nodes.len() == 2,
        "joining made another node: {} nodes",
        nodes.len()
    );
    let promoted = nodes
        .iter()
        .find(|n| n.meta.as_ref().is_some_and(|m| m.id == meta.id))
        .cloned()
        .unwrap_or_default();
    ensure!(
        promoted.role() == shoal_api::pb::NodeRole::Manager,
        "role {:?}",
        promoted.role()
    );
    ensure!(
        promoted
            .manager_status
            .as_ref()
            .is_some_and(|m| m.reachability == "reachable" || m.leader)
    );
    let raft_id = cluster.managers[second].as_ref().unwrap().manager.raft_id;
    let leader = cluster.managers[0].as_ref().unwrap().manager.clone();
    ensure!(leader.voters().contains(&raft_id));

    // Demote: out of the Raft voters, a worker again.
    let mut spec = promoted.spec.clone().unwrap_or_default();
    spec.desired_role = shoal_api::pb::NodeRole::Worker as i32;
    let m = promoted.meta.clone().unwrap_or_default();
    let demoted = control
        .update_node(UpdateNodeRequest {
            id: m.id,
            version: m.version,
            spec: Some(spec),
        })
        .await?
        .into_inner();
    ensure!(demoted.role() == shoal_api::pb::NodeRole::Worker && demoted.manager_status.is_none());
    ensure!(
        !leader.voters().contains(&raft_id),
        "the demoted manager still votes"
    );
    // The demoted manager learns it from its peers and erases what only
    // managers hold (the Raft log with the CA key, its data key, its
    // manager certificate), as swarmkit's do.
    let data_dir = cluster.options(second).data_dir.clone();
    let mut running = cluster.managers[second].take().context("running")?;
    let why = tokio::time::timeout(Duration::from_secs(60), running.demoted())
        .await
        .context("the demoted manager never learned that it was demoted")?;
    ensure!(why.contains("no longer a manager"), "reason: {why}");
    running.shutdown_and_erase().await?;
    let left: Vec<String> = std::fs::read_dir(&data_dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    ensure!(left == ["LOCK"], "left in the data directory: {left:?}");
    // The managers that stay are not disturbed by it.
    ensure!(
        cluster.wait_for_leader(WAIT).await? == 0,
        "the leader changed"
    );
    // The last manager cannot be demoted.
    let me = cluster
        .nodes()
        .await?
        .into_iter()
        .find(|n| n.manager_status.as_ref().is_some_and(|s| s.leader))
        .unwrap_or_default();
    let mut spec = me.spec.clone().unwrap_or_default();
    spec.desired_role = shoal_api::pb::NodeRole::Worker as i32;
    let err = control
        .update_node(UpdateNodeRequest {
            id: me.meta.clone().unwrap_or_default().id,
            version: 0,
            spec: Some(spec),
        })
        .await
        .unwrap_err();
    ensure!(err.message().contains("last manager"), "{}", err.message());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_compact_the_log_and_bring_lagging_and_new_managers_up_to_date() -> Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let mut control = cluster.control().await?;
    let leader = cluster.wait_for_leader(WAIT).await?;
    let follower = (0..3).find(|i| *i != leader).unwrap_or(1);
    cluster.stop_manager(follower).await;
    // More entries than the snapshot interval (200 in tests) while it is away.
    for i in 0..500 {
        control
            .create_config(shoal_api::pb::ConfigSpec {
                name: format!("c{i}"),
                data: vec![b'x'; 32],
                ..Default::default()
            })
            .await?;
    }
    let leader_manager = cluster.managers[leader].as_ref().unwrap().manager.clone();
    let metrics = wait_until(
        WAIT,
        "a snapshot and a purged log on the leader",
        || async {
            let m = leader_manager.raft_metrics();
            (m.snapshot.is_some() && m.purged.is_some()).then_some(m)
        },
    )
    .await?;
    ensure!(
        metrics.purged.unwrap().index >= 200,
        "purged only up to {:?}",
        metrics.purged
    );

    // The follower restarts behind the purged log: it catches up by snapshot.
    cluster.restart_manager(follower).await?;
    let back = cluster.managers[follower].as_ref().unwrap().manager.clone();
    wait_until(
        WAIT,
        "the restarted follower to hold all 500 configs",
        || async { (back.store.read().await.configs.len() == 500).then_some(()) },
    )
    .await?;
    // So does a manager that joins now.
    let new = cluster.add_manager("late", "127.0.0.3").await?;
    let late = cluster.managers[new].as_ref().unwrap().manager.clone();
    wait_until(WAIT, "the new manager to hold all 500 configs", || async {
        (late.store.read().await.configs.len() == 500).then_some(())
    })
    .await?;
    let leader_state = leader_manager.store.read().await.clone();
    ensure!(
        *late.store.read().await == leader_state,
        "the new manager's state differs from the leader's"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_managers_tolerate_two_losses_and_refuse_writes_without_quorum() -> Result<()> {
    let mut cluster = TestCluster::start(5).await?;
    let first = cluster.wait_for_leader(WAIT).await?;
    cluster.stop_manager(first).await;
    let other = (0..5).find(|i| *i != first).unwrap_or(1);
    cluster.stop_manager(other).await;
    cluster.wait_for_leader(WAIT).await?;
    let control = cluster.control().await?;
    // The manager the client reaches may learn of the new leader a moment
    // after it is elected: it says so ("retry"), and the retry succeeds.
    wait_until(WAIT, "a write with two managers down", || {
        let mut control = control.clone();
        async move {
            let spec = SecretSpec {
                name: "two-down".into(),
                data: b"x".to_vec(),
                ..Default::default()
            };
            control.create_secret(spec).await.ok().map(|_| ())
        }
    })
    .await?;

    // A third loss leaves 2 of 5: no quorum, so writes fail and say why.
    let third = cluster.leader_index().unwrap_or(0);
    cluster.stop_manager(third).await;
    let control = cluster.control().await?;
    let refused = wait_until(WAIT * 2, "a write refused for want of a leader", || {
        let mut control = control.clone();
        async move {
            let spec = SecretSpec {
                name: "no-quorum".into(),
                data: b"y".to_vec(),
                ..Default::default()
            };
            // Managers hold a call while no leader is known, up to their
            // bound; only then do they refuse it.
            let bound = shoal_tests::cluster::settings().leader_wait + Duration::from_secs(5);
            match tokio::time::timeout(bound, control.create_secret(spec)).await {
                Ok(Err(status)) => Some(status.message().to_owned()),
                _ => None,
            }
        }
    })
    .await?;
    ensure!(
        refused.contains("leader"),
        "refusal names the missing leader: {refused}"
    );

    // One manager back: quorum again, and what was acknowledged is there.
    cluster.restart_manager(first).await?;
    cluster.wait_for_leader(WAIT).await?;
    let names = wait_until(WAIT, "secrets readable with quorum back", || {
        let mut control = control.clone();
        async move {
            let list = control
                .list_secrets(Empty {})
                .await
                .ok()?
                .into_inner()
                .secrets;
            Some(
                list.into_iter()
                    .map(|s| s.spec.unwrap_or_default().name)
                    .collect::<Vec<_>>(),
            )
        }
    })
    .await?;
    ensure!(
        names.contains(&"two-down".to_string()),
        "acknowledged write lost: {names:?}"
    );
    ensure!(
        !names.contains(&"no-quorum".to_string()),
        "a refused write was applied: {names:?}"
    );
    Ok(())
}

/// Scales `id` to `replicas` through whichever manager the client reaches,
/// retrying while a leader is being elected.
async fn scale(cluster: &TestCluster, id: &str, replicas: u64) -> Result<()> {
    let mut tries = 0;
    loop {
        match try_scale(cluster, id, replicas).await {
            Err(e) if tries < 30 => {
                tries += 1;
                eprintln!("scale: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            done => return done,
        }
    }
}

async fn try_scale(cluster: &TestCluster, id: &str, replicas: u64) -> Result<()> {
    let mut control = cluster.control().await?;
    let services = control.list_services(Empty {}).await?.into_inner().services;
    let current = services
        .into_iter()
        .filter_map(|s| s.service)
        .find(|s| s.meta.as_ref().is_some_and(|m| m.id == id))
        .ok_or_else(|| anyhow::anyhow!("service {id} is gone"))?;
    let mut spec = current.spec.clone().unwrap_or_default();
    spec.replicas = replicas;
    control
        .update_service(UpdateServiceRequest {
            id: id.to_owned(),
            version: current.meta.unwrap_or_default().version,
            spec: Some(spec),
            rollback: false,
        })
        .await?;
    Ok(())
}

async fn wait_running(cluster: &TestCluster, id: &str, n: usize) -> Result<()> {
    let waited = wait_until(WAIT, &format!("{n} running tasks"), || async {
        let sum: usize = cluster.running_per_node(id).await.ok()?.values().sum();
        (sum == n).then_some(())
    })
    .await;
    if waited.is_err() {
        let mut states = BTreeMap::new();
        for t in cluster.tasks().await.unwrap_or_default() {
            let s = t.status.clone().unwrap_or_default();
            *states
                .entry(format!("{:?}/{:?} {}", s.state(), t.desired_state(), s.err))
                .or_insert(0) += 1;
        }
        eprintln!("task states: {states:#?}");
    }
    waited
}

/// Every address the cluster holds on `network`: live task attachments,
/// VIPs and the gateway. Fails on a duplicate.
async fn addresses_in_use(cluster: &TestCluster, network: &str) -> Result<Vec<String>> {
    cluster.wait_for_leader(WAIT).await?;
    let mut control = cluster.control().await?;
    let networks = control.list_networks(Empty {}).await?.into_inner().networks;
    let net = networks
        .iter()
        .find(|n| n.meta.as_ref().is_some_and(|m| m.id == network))
        .ok_or_else(|| anyhow::anyhow!("network {network} is gone"))?;
    let mut taken = vec![net.gateway.clone()];
    for service in control.list_services(Empty {}).await?.into_inner().services {
        for vip in service
            .service
            .unwrap_or_default()
            .endpoint
            .unwrap_or_default()
            .virtual_ips
        {
            if vip.network_id == network {
                taken.push(vip.addr.split('/').next().unwrap_or("").to_owned());
            }
        }
    }
    for task in cluster.tasks().await? {
        let state = task.status.as_ref().map(|s| s.state()).unwrap_or_default();
        if state.is_terminal() {
            continue;
        }
        for a in task.networks.iter().filter(|a| a.network_id == network) {
            for addr in &a.addresses {
                taken.push(addr.split('/').next().unwrap_or("").to_owned());
            }
        }
    }
    let mut sorted = taken.clone();
    sorted.sort();
    sorted.dedup();
    ensure!(
        sorted.len() == taken.len(),
        "an address is held twice: {} held, {} distinct",
        taken.len(),
        sorted.len()
    );
    Ok(taken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn addresses_are_never_handed_out_twice_across_leader_changes() -> Result<()> {
    let mut cluster = three_nodes().await?;
    let mut control = cluster.control().await?;
    // A /26: 62 hosts, so addresses are reused as tasks come and go.
    let network = control
        .create_network(shoal_api::pb::NetworkSpec {
            name: "appnet".into(),
            subnet: "198.18.64.0/26".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let network_id = network.meta.clone().unwrap_or_default().id;
    ensure!(
        network.vxlan_id >= 4096 && network.gateway == "198.18.64.1",
        "{network:?}"
    );
    let mut spec = replicated("web", 20);
    spec.task.get_or_insert_with(Default::default).networks =
        vec![shoal_api::pb::NetworkAttachmentConfig {
            target: "appnet".into(),
            aliases: vec![],
        }];
    let id = control
        .create_service(spec)
        .await?
        .into_inner()
        .meta
        .unwrap_or_default()
        .id;
    wait_running(&cluster, &id, 20).await?;
    ensure!(addresses_in_use(&cluster, &network_id).await?.len() == 22);

    // Scale up and lose the leader while it allocates; twice.
    for (up, down) in [(45, 10), (50, 30)] {
        scale(&cluster, &id, up).await?;
        let leader = cluster.wait_for_leader(WAIT).await?;
        cluster.stop_manager(leader).await;
        cluster.wait_for_leader(WAIT).await?;
        wait_running(&cluster, &id, up as usize).await?;
        addresses_in_use(&cluster, &network_id).await?;
        // Freed addresses go back to the pool and come out once.
        scale(&cluster, &id, down).await?;
        wait_running(&cluster, &id, down as usize).await?;
        cluster.restart_manager(leader).await?;
    }
    scale(&cluster, &id, 60).await?;
    wait_running(&cluster, &id, 60).await?;
    let taken = addresses_in_use(&cluster, &network_id).await?;
    ensure!(
        taken.len() == 62,
        "{} addresses in use: {taken:?}",
        taken.len()
    );
    // The network is full: one more task waits with the reason.
    scale(&cluster, &id, 61).await?;
    let reason = wait_until(WAIT, "a task that cannot get an address", || async {
        cluster.tasks().await.ok()?.into_iter().find_map(|t| {
            let err = t.status.map(|s| s.err).unwrap_or_default();
            err.contains("no free address").then_some(err)
        })
    })
    .await?;
    ensure!(reason.contains("appnet"), "{reason}");
    // A network in use cannot go.
    let err = control
        .remove_network(IdRequest {
            id: network_id.clone(),
        })
        .await
        .unwrap_err();
    ensure!(
        err.message()
            .contains("in use by the following service: web"),
        "{}",
        err.message()
    );
    Ok(())
}

/// The leader bounds the heartbeats it asks for: eight nodes on the tests'
/// 300 ms period would beat 27 times a second; with a bound of 4 a second
/// each is told 2 s instead (Nomad's rule), the leader hears about 4 a
/// second, and no node goes down for beating at the pace it was told.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_leaders_bound_nodes_are_told_a_longer_period_and_stay_ready() -> Result<()> {
    const NODES: usize = 8;
    const BOUND: u32 = 4;
    let settings = shoal_manager::manager::Settings {
        max_heartbeats_per_second: BOUND,
        ..shoal_tests::cluster::settings()
    };
    let mut cluster = TestCluster::start_with_settings(1, settings).await?;
    for i in 0..NODES {
        cluster.add_agent(&format!("n{i}"), &[]).await?;
    }
    let manager = cluster.managers[0]
        .as_ref()
        .context("manager 0 runs")?
        .manager
        .clone();
    // Every node has beaten at the pace it was told when it registered
    // (shorter for the first ones) and been told the spread period since.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window = Duration::from_secs(6);
    let before = manager.metrics.heartbeats.get();
    let started = std::time::Instant::now();
    while started.elapsed() < window {
        let nodes = cluster.nodes().await?;
        let not_ready: Vec<_> = nodes
            .iter()
            .filter(|n| n.status.as_ref().map(|s| s.state()) != Some(NodeState::Ready))
            .filter_map(|n| Some(n.description.as_ref()?.hostname.clone()))
            // The agents' nodes (the manager runs no agent here).
            .filter(|host| host.starts_with('n'))
            .collect();
        ensure!(
            not_ready.is_empty(),
            "{not_ready:?} not Ready while beating at a spread period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let heard = manager.metrics.heartbeats.get() - before;
    // 8 nodes every 2 s for 6 s: 24, give or take a beat each at the window's edges.
    let bound = u64::from(BOUND) * window.as_secs();
    ensure!(
        (bound - NODES as u64..=bound + NODES as u64).contains(&heard),
        "{heard} heartbeats in {window:?} from {NODES} nodes: the bound is {BOUND} a second \
         (unbounded at {HEARTBEAT:?} they would be {})",
        NODES as u64 * window.as_millis() as u64 / HEARTBEAT.as_millis() as u64
    );
    Ok(())
}

/// `swarm update --dispatcher-heartbeat` lowered on a running cluster:
/// every node learns the new period from its next heartbeat's answer and
/// stays Ready. (Agents used to keep the period they registered with, so
/// a node beating every second against a 3 × 100 ms deadline flapped Down.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lowered_heartbeat_period_reaches_every_node_and_none_goes_down() -> Result<()> {
    let mut cluster = TestCluster::start(1).await?;
    let mut control = cluster.control().await?;
    let period = |ms| UpdateClusterRequest {
        heartbeat_period_ms: Some(ms),
        ..Default::default()
    };
    // The agents register while the period is 1 s, then it drops to 100 ms.
    control.update_cluster(period(1000)).await?;
    for host in ["n1", "n2"] {
        cluster.add_agent(host, &[]).await?;
    }
    control.update_cluster(period(100)).await?;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let nodes = cluster.nodes().await?;
        let down: Vec<_> = nodes
            .iter()
            .filter_map(|n| {
                let host = n.description.as_ref()?.hostname.clone();
                let ready = n.status.as_ref().map(|s| s.state()) == Some(NodeState::Ready);
                // The agents' nodes (the manager runs no agent here).
                (host.starts_with('n') && !ready).then_some(host)
            })
            .collect();
        ensure!(
            down.is_empty(),
            "{down:?} not Ready {:?} after the period went from 1s to 100ms",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
