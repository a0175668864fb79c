//! Autolock end to end, in process: three managers initialised with
//! `--autolock`; one restarted without its key serves nothing on TCP, and
//! rejoins once unlocked on its socket; after `unlock-key --rotate` only
//! the new key unlocks it.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use shoal_api::pb::{
    Empty, SecretSpec, UnlockRequest, control_client::ControlClient, lock_client::LockClient,
};
use shoal_manager::daemon::{self, Bootstrap, RunningManager};
use shoal_tests::cluster::{TestCluster, unix_channel, wait_until};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(15);

fn key_file(cluster: &TestCluster, i: usize) -> Result<String> {
    let path = cluster.options(i).data_dir.join("keys.json");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Starts manager `i` again; with autolock it waits for its key.
fn restart(cluster: &TestCluster, i: usize) -> JoinHandle<Result<RunningManager>> {
    tokio::spawn(daemon::start(
        cluster.options(i).clone(),
        Bootstrap::Restart,
    ))
}

/// Waits until the locked manager `i` serves its unlock socket, and checks
/// it serves nothing on TCP meanwhile.
async fn locked(cluster: &TestCluster, i: usize) -> Result<LockClient<tonic::transport::Channel>> {
    let socket = cluster.options(i).socket.clone().context("a socket")?;
    wait_until(WAIT, "the locked manager's socket", || async {
        socket.exists().then_some(())
    })
    .await?;
    // It stays locked: still nothing on TCP a while later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listen = cluster.options(i).listen;
    ensure!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "a locked manager must serve nothing on TCP ({listen} answered)"
    );
    let channel = unix_channel(&socket).await?;
    let status = ControlClient::new(channel.clone())
        .list_nodes(Empty {})
        .await
        .expect_err("a locked manager answers no Control call");
    ensure!(
        status.message().contains("shoal swarm unlock"),
        "the answer says what to do: {status:?}"
    );
    Ok(LockClient::new(channel))
}

async fn unlock(
    lock: &mut LockClient<tonic::transport::Channel>,
    key: &str,
) -> Result<(), tonic::Status> {
    lock.unlock(UnlockRequest {
        unlock_key: key.to_owned(),
    })
    .await
    .map(|_| ())
}

/// Manager `i` applies a write made after it came back: it rejoined.
async fn rejoined(cluster: &TestCluster, i: usize, name: &str) -> Result<()> {
    cluster
        .control()
        .await?
        .create_secret(SecretSpec {
            name: name.into(),
            data: b"x".to_vec(),
            ..Default::default()
        })
        .await?;
    let manager = cluster.managers[i].as_ref().context("running")?;
    wait_until(
        WAIT,
        "the unlocked manager to apply a new write",
        || async {
            let state = manager.manager.store.read().await;
            state
                .secrets
                .values()
                .any(|s| s.spec.as_ref().is_some_and(|s| s.name == name))
                .then_some(())
        },
    )
    .await
}

fn not_wrapped_locally(text: &str) -> bool {
    !text.contains("\"kek\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locked_manager_serves_nothing_and_rejoins_after_unlock_with_the_current_key()
-> Result<()> {
    let mut cluster = TestCluster::start_autolocked(3).await?;
    let first_key = cluster
        .unlock_key
        .clone()
        .context("init --autolock gives a key")?;
    let leader = cluster.wait_for_leader(WAIT).await?;
    let i = (leader + 1) % 3;
    // A manager that joined wraps its data key with the cluster's unlock
    // key once it has the Cluster object.
    wait_until(
        WAIT,
        "every manager to wrap its key with the unlock key",
        || async {
            (0..3)
                .all(|m| key_file(&cluster, m).is_ok_and(|t| not_wrapped_locally(&t)))
                .then_some(())
        },
    )
    .await?;

    cluster.stop_manager(i).await;
    let pending = restart(&cluster, i);
    let mut lock = locked(&cluster, i).await?;
    let wrong = shoal_manager::encryption::UnlockKey::generate()?.to_string();
    let status = unlock(&mut lock, &wrong).await.expect_err("a wrong key");
    ensure!(
        status.message() == "invalid key: it does not unlock this manager's data",
        "{status:?}"
    );
    ensure!(!pending.is_finished(), "still locked after a wrong key");
    unlock(&mut lock, &first_key).await?;
    cluster.managers[i] = Some(pending.await??);
    rejoined(&cluster, i, "after-unlock").await?;

    // Rotation: every manager re-wraps; the old key no longer unlocks.
    let before = key_file(&cluster, i)?;
    let new_key = cluster
        .control()
        .await?
        .rotate_unlock_key(Empty {})
        .await?
        .into_inner()
        .unlock_key;
    ensure!(new_key != first_key && new_key.starts_with("SHKEY-1-"));
    wait_until(
        WAIT,
        "the manager to re-wrap its key with the new one",
        || async {
            key_file(&cluster, i)
                .is_ok_and(|t| t != before)
                .then_some(())
        },
    )
    .await?;
    cluster.stop_manager(i).await;
    let pending = restart(&cluster, i);
    let mut lock = locked(&cluster, i).await?;
    let status = unlock(&mut lock, &first_key)
        .await
        .expect_err("the key from before the rotation");
    ensure!(status.message().contains("invalid key"), "{status:?}");
    unlock(&mut lock, &new_key).await?;
    cluster.managers[i] = Some(pending.await??);
    rejoined(&cluster, i, "after-rotation").await?;
    ensure!(
        !Path::new(&cluster.options(i).data_dir.join("keys.json.tmp")).exists(),
        "no half-written key file is left"
    );
    Ok(())
}
