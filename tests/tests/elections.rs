//! Calls made while a new leader is elected are held by the managers until
//! one is, not failed: real managers (Raft on disk, gRPC on loopback), the
//! leader stopped under a steady stream of writes and reads through every
//! other manager, with plain gRPC clients (no retries of their own).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use shoal_api::pb::{Empty, SecretSpec, control_client::ControlClient};
use shoal_tests::cluster::{TestCluster, settings};
use tokio::task::JoinSet;

const WAIT: Duration = Duration::from_secs(15);

/// What one stream of calls saw.
#[derive(Debug, Default)]
struct Seen {
    manager: String,
    succeeded: usize,
    /// Calls that failed although they started after the leader was lost:
    /// the elections the managers must hold calls through.
    failed_mid_election: Vec<String>,
    /// Calls in flight at the moment the leader stopped: their outcome is
    /// unknown to the manager that forwarded them, and they may fail, but
    /// only with an error that says so.
    failed_in_flight: Vec<String>,
    slowest: Duration,
    /// Names of the secrets whose creation was acknowledged.
    acknowledged: Vec<String>,
}

async fn calls(
    addr: String,
    dialer: shoal_pki::transport::Dialer,
    write: bool,
    lost_at: Arc<std::sync::Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
) -> Result<Seen> {
    let channel = shoal_pki::transport::channel(&addr, dialer).await?;
    let mut control = ControlClient::new(channel);
    let mut seen = Seen {
        manager: addr.clone(),
        ..Default::default()
    };
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let started = Instant::now();
        let name = format!("{}-{n}", addr.replace([':', '.'], "-"));
        let outcome = if write {
            control
                .create_secret(SecretSpec {
                    name: name.clone(),
                    data: b"x".to_vec(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
        } else {
            control.list_secrets(Empty {}).await.map(|_| ())
        };
        seen.slowest = seen.slowest.max(started.elapsed());
        match outcome {
            Ok(()) => {
                seen.succeeded += 1;
                if write {
                    seen.acknowledged.push(name);
                }
            }
            Err(status) => {
                let lost = *lost_at.lock().unwrap_or_else(|e| e.into_inner());
                let line = format!(
                    "{} call {n} after {:?}: {:?} {}",
                    if write { "write" } else { "read" },
                    started.elapsed(),
                    status.code(),
                    status.message()
                );
                match lost {
                    Some(lost) if started >= lost => seen.failed_mid_election.push(line),
                    _ => seen.failed_in_flight.push(line),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_through_every_manager_succeed_while_a_new_leader_is_elected() -> Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let old = cluster.wait_for_leader(WAIT).await?;
    let lost_at = Arc::new(std::sync::Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let mut streams = JoinSet::new();
    let dialer = cluster.admin_dialer().await?;
    for (i, manager) in cluster.managers.iter().enumerate() {
        let Some(manager) = manager else { continue };
        if i == old {
            continue; // its calls end with it
        }
        for write in [true, false] {
            streams.spawn(calls(
                manager.addr().to_owned(),
                dialer.clone(),
                write,
                lost_at.clone(),
                stop.clone(),
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    *lost_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    cluster.stop_manager(old).await;
    let new = cluster.wait_for_leader(WAIT).await?;
    ensure!(new != old, "the stopped manager still leads");
    // Calls go on under the new leader for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);

    let mut acknowledged = Vec::new();
    let mut report = Vec::new();
    while let Some(seen) = streams.join_next().await {
        let seen = seen??;
        report.push(format!(
            "{}: {} ok, slowest {:?}, failed mid-election {:?}, in flight {:?}",
            seen.manager,
            seen.succeeded,
            seen.slowest,
            seen.failed_mid_election,
            seen.failed_in_flight
        ));
        ensure!(seen.succeeded > 0, "no call succeeded: {report:?}");
        ensure!(
            seen.failed_mid_election.is_empty(),
            "calls failed during the election: {report:?}"
        );
        ensure!(
            seen.failed_in_flight.len() <= 1,
            "more than the one call in flight at the loss failed: {report:?}"
        );
        ensure!(
            seen.slowest < settings().leader_wait + Duration::from_secs(2),
            "a call took longer than the bound: {report:?}"
        );
        acknowledged.extend(seen.acknowledged);
    }
    eprintln!("{}", report.join("\n"));
    // Nothing acknowledged is lost.
    let mut control = cluster.control().await?;
    let names: std::collections::BTreeSet<String> = control
        .list_secrets(Empty {})
        .await?
        .into_inner()
        .secrets
        .into_iter()
        .filter_map(|s| s.spec.map(|s| s.name))
        .collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|n| !names.contains(*n))
        .collect();
    ensure!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_quorum_calls_fail_after_the_bound_with_a_clear_error() -> Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let leader = cluster.wait_for_leader(WAIT).await?;
    let survivor = (leader + 1) % 3;
    for i in 0..3 {
        if i != survivor {
            cluster.stop_manager(i).await;
        }
    }
    let addr = cluster.managers[survivor]
        .as_ref()
        .map(|m| m.addr().to_owned())
        .unwrap_or_default();
    let mut control = ControlClient::new(
        shoal_pki::transport::channel(&addr, cluster.admin_dialer().await?).await?,
    );
    let started = Instant::now();
    let error = control
        .create_secret(SecretSpec {
            name: "lonely".into(),
            data: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("a write without a quorum must fail");
    let took = started.elapsed();
    ensure!(
        error.code() == tonic::Code::Unavailable,
        "{:?}: {}",
        error.code(),
        error.message()
    );
    ensure!(
        error.message().contains("quorum"),
        "the error does not say what is missing: {}",
        error.message()
    );
    let bound = settings().leader_wait;
    ensure!(
        took >= bound - Duration::from_secs(1) && took < bound + Duration::from_secs(5),
        "failed after {took:?}, not after the {bound:?} bound: {}",
        error.message()
    );
    Ok(())
}
