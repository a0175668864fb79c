//! Nothing acknowledged is lost: many writers propose at once (so writes
//! share Raft entries and log flushes), the manager is SIGKILLed while
//! writes are in flight, and after a restart from its data directory every
//! write it acknowledged is there.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use shoal_api::pb::{
    Config, ConfigSpec, Empty, Meta, control_client::ControlClient,
    membership_client::MembershipClient,
};
use shoal_manager::store::Batch;
use shoal_pki::{
    join::{self, JoinRequest},
    transport::Dialer,
};
use tonic::transport::Channel;

const WRITERS: usize = 32;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn manager(verb: &str, data: &Path, listen: &str, socket: &Path) -> Result<Killed> {
    Ok(Killed(
        Command::new(env!("CARGO_BIN_EXE_shoal-manager"))
            .arg(verb)
            .arg("--data-dir")
            .arg(data)
            .args(["--listen-addr", listen, "--hostname", "m0"])
            .arg("--socket")
            .arg(socket)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting shoal-manager")?,
    ))
}

async fn local_control(socket: &Path) -> Result<ControlClient<Channel>> {
    Ok(ControlClient::new(
        shoal_api::local_socket::channel(socket).await?,
    ))
}

/// The configs the manager serves once it answers again.
async fn configs_after_restart(socket: &Path) -> Result<BTreeSet<String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = async {
            local_control(socket)
                .await?
                .list_configs(Empty {})
                .await
                .map_err(anyhow::Error::from)
        };
        match listed.await {
            Ok(list) => {
                return Ok(list
                    .into_inner()
                    .configs
                    .into_iter()
                    .filter_map(|c| c.meta.map(|m| m.id))
                    .collect());
            }
            Err(e) if Instant::now() > deadline => return Err(e.context("listing configs")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn config_batch(id: &str) -> shoal_api::pb::StoreBatch {
    let mut batch = Batch::default();
    batch.put_config(Config {
        meta: Some(Meta {
            id: id.to_owned(),
            ..Default::default()
        }),
        spec: Some(ConfigSpec {
            name: id.to_owned(),
            data: vec![b'v'; 256],
            ..Default::default()
        }),
    });
    batch.into_proto()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_is_there_after_a_sigkill() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data: PathBuf = dir.path().join("m0");
    let socket = dir.path().join("m0.sock");
    let listen = shoal_api::test_port::unused_loopback_port()?.to_string();
    let first = manager("init", &data, &listen, &socket)?;

    let deadline = Instant::now() + Duration::from_secs(30);
    let cluster = loop {
        let info = async {
            local_control(&socket)
                .await?
                .get_cluster(Empty {})
                .await
                .map_err(anyhow::Error::from)
        };
        match info.await {
            Ok(info) => break info.into_inner(),
            Err(e) if Instant::now() > deadline => return Err(e.context("the manager's socket")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    // Membership/Propose (how followers forward writes) takes a manager
    // certificate: one for the manager token, as a joining manager gets.
    let credentials = join::join(
        &JoinRequest {
            manager: &listen,
            token: &cluster.manager_token,
            advertise_addr: "127.0.0.100",
            hostname: "writer",
        },
        None,
    )
    .await
    .context("a manager certificate for the writers")?;
    let channel = shoal_pki::transport::lazy_channel(&listen, Dialer::Node(credentials))?;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (channel, acked) = (channel.clone(), acked.clone());
        writers.spawn(async move {
            for i in 0.. {
                let id = format!("w{w:02}-{i:06}");
                match MembershipClient::new(channel.clone())
                    .propose(config_batch(&id))
                    .await
                {
                    Ok(_) => acked.lock().unwrap().push(id),
                    // The manager is gone: what was not acknowledged may
                    // or may not be there.
                    Err(_) => return,
                }
            }
        });
    }
    // Writes flow for a while, then the manager dies mid-stream.
    let started = Instant::now();
    while acked.lock().unwrap().len() < 2_000 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first); // SIGKILL
    writers.shutdown().await;
    // Every answer that reached a writer counts, also one read after the kill.
    let acknowledged: Vec<String> = acked.lock().unwrap().clone();
    if acknowledged.len() < 100 {
        bail!(
            "only {} writes acknowledged before the kill",
            acknowledged.len()
        );
    }

    let _again = manager("run", &data, &listen, &socket)?;
    let stored = configs_after_restart(&socket).await?;
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(5)]
    );
    Ok(())
}
