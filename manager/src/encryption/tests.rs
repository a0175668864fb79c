//! A real manager (Raft on disk, gRPC on loopback) writes a secret and the
//! cluster's keys; nothing of them is readable in any file of its data
//! directory, and it restarts from that directory with all of it.

use openraft::async_runtime::WatchReceiver as _;
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use shoal_api::pb::{
    ConfigSpec, Empty, SecretSpec, UnlockRequest, UpdateClusterRequest,
    control_client::ControlClient, lock_client::LockClient,
};
use tonic::transport::Channel;

use crate::{
    daemon::{self, Bootstrap, Options, RunningManager},
    manager::Settings,
    raft::Timing,
};

const MARKER: &str = "at-rest-marker-5b1d7e0c4a9f2e83d6c1b7a05f4e9d2c";

fn options(dir: &Path, name: &str) -> Options {
    let listen = shoal_api::test_port::unused_loopback_port().expect("a free loopback port");
    Options {
        data_dir: dir.join(name),
        listen,
        advertise: listen.to_string(),
        socket: Some(dir.join(format!("{name}.sock"))),
        hostname: name.into(),
        metrics: None,
        timing: Timing {
            heartbeat_ms: 100,
            election_min_ms: 600,
            election_max_ms: 1200,
            // Snapshots (and the purge of the log behind them) happen here.
            snapshot_every: 20,
        },
        settings: Settings::default(),
    }
}

fn init(autolock: bool) -> Bootstrap {
    Bootstrap::Init {
        default_addr_pool: vec!["198.18.0.0/15".into()],
        subnet_size: 24,
        autolock,
    }
}

/// A control client over mutual TLS, with an admin certificate.
async fn control(manager: &RunningManager) -> ControlClient<Channel> {
    let dialer = manager.admin_dialer().await.unwrap();
    let channel = shoal_pki::transport::channel(manager.addr(), dialer)
        .await
        .unwrap();
    ControlClient::new(channel)
}

/// Every way `needle` may be stored: as it is, and inside base64 (as Raft
/// entries carry protobuf) at each of the three alignments.
fn forms(needle: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![needle.to_vec()];
    for shift in 0..3 {
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(needle);
        let text = shoal_api::base64::encode(&shifted);
        let skip = (shift * 8).div_ceil(6);
        forms.push(text.as_bytes()[skip..text.len() - 4].to_vec());
    }
    forms
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The files of `dir` holding any form of any of `needles`, with its name.
fn found_in(dir: &Path, needles: &[(&str, Vec<u8>)]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files_under(dir) {
        let Ok(bytes) = std::fs::read(&file) else {
            continue; // a socket
        };
        for (name, needle) in needles {
            for form in forms(needle) {
                if bytes.windows(form.len()).any(|w| w == form.as_slice()) {
                    found.push(format!("{name} in {}", file.display()));
                    break;
                }
            }
        }
    }
    found
}

/// What must never be readable: the secret's data, the CA key, the tokens'
/// secrets and (autolock) the unlock key.
async fn needles(manager: &RunningManager) -> Vec<(&'static str, Vec<u8>)> {
    let state = manager.manager.store.read().await;
    let cluster = state.cluster.clone().expect("initialised");
    let key_body = cluster
        .root_ca_key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    let mut needles = vec![
        ("the secret's data", MARKER.as_bytes().to_vec()),
        ("the CA key (PEM body)", key_body.into_bytes()),
        (
            "the CA key (PEM)",
            cluster.root_ca_key_pem.clone().into_bytes(),
        ),
        (
            "the worker token secret",
            cluster.worker_secret.into_bytes(),
        ),
        (
            "the manager token secret",
            cluster.manager_secret.into_bytes(),
        ),
    ];
    if !cluster.manager_unlock_key.is_empty() {
        needles.push(("the unlock key", cluster.manager_unlock_key));
    }
    needles
}

/// A secret with the marker, then enough writes for snapshots and purges.
async fn write_state(manager: &RunningManager) {
    let mut client = control(manager).await;
    client
        .create_secret(SecretSpec {
            name: "db_password".into(),
            data: MARKER.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 0..130 {
        client
            .create_config(ConfigSpec {
                name: format!("c{i}"),
                data: b"filler".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_readable_on_disk_and_a_restart_reads_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (o1, o2) = (options(dir.path(), "m1"), options(dir.path(), "m2"));
    let first = daemon::start(o1.clone(), init(false)).await.unwrap();
    write_state(&first).await;
    let (snapshot, purged) = {
        let metrics = first.manager.raft.metrics();
        let metrics = metrics.borrow_watched();
        (metrics.snapshot, metrics.purged)
    };
    assert!(snapshot.is_some(), "a snapshot was built");
    assert!(purged.is_some(), "the log behind it was purged");
    // Joins after the log was purged: it installs the leader's snapshot.
    let (_, manager_token) = first.init_tokens.clone().unwrap();
    let second = daemon::start(
        o2.clone(),
        Bootstrap::Join {
            token: manager_token,
            remote: first.addr().to_owned(),
        },
    )
    .await
    .unwrap();
    wait_for("the second manager to hold the secret", async || {
        !second.manager.store.read().await.secrets.is_empty()
    })
    .await;
    let needles = needles(&first).await;
    // Past the state file's flush interval: it holds the objects too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    second.shutdown().await;
    first.shutdown().await;

    let found = found_in(dir.path(), &needles);
    assert!(found.is_empty(), "readable on disk: {found:#?}");
    // The scan does find what is kept in plaintext: this manager's address.
    let address = [("the address", o1.advertise.as_bytes().to_vec())];
    assert!(!found_in(&o1.data_dir, &address).is_empty());
    for data_dir in [&o1.data_dir, &o2.data_dir] {
        assert_eq!(mode(data_dir), 0o700, "{}", data_dir.display());
        for file in files_under(data_dir) {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        for name in ["raft-log.redb", "state.redb", "keys.json", "manager.json"] {
            assert!(data_dir.join(name).exists(), "{name}");
        }
    }

    let again = daemon::start(o1, Bootstrap::Restart).await.unwrap();
    let other = daemon::start(o2, Bootstrap::Restart).await.unwrap();
    wait_for("a leader after the restart", async || {
        again.manager.is_leader() || other.manager.is_leader()
    })
    .await;
    let state = again.manager.store.read().await;
    let secret = state.secrets.values().next().expect("the secret is back");
    assert_eq!(secret.spec.as_ref().unwrap().data, MARKER.as_bytes());
    assert_eq!(state.configs.len(), 130);
    assert_eq!(
        state.cluster.as_ref().unwrap().root_ca_key_pem.as_bytes(),
        needles[2].1.as_slice()
    );
    drop(state);
    // The restarted cluster takes writes.
    let leader = if again.manager.is_leader() {
        &again
    } else {
        &other
    };
    control(leader)
        .await
        .create_config(ConfigSpec {
            name: "after-restart".into(),
            data: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    other.shutdown().await;
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_with_another_key_or_no_key_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (o1, o2) = (options(dir.path(), "m1"), options(dir.path(), "m2"));
    for o in [&o1, &o2] {
        let m = daemon::start(o.clone(), init(false)).await.unwrap();
        m.shutdown().await;
    }
    // Another manager's key file: a KEK that opens a DEK that opens nothing here.
    std::fs::copy(o2.data_dir.join("keys.json"), o1.data_dir.join("keys.json")).unwrap();
    let error = format!(
        "{:#}",
        daemon::start(o1.clone(), Bootstrap::Restart)
            .await
            .err()
            .unwrap()
    );
    assert!(
        error.contains("cannot decrypt") && error.contains("another key"),
        "{error}"
    );
    // A damaged KEK.
    let text = std::fs::read_to_string(o2.data_dir.join("keys.json")).unwrap();
    let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut damaged = stored.clone();
    damaged["kek"] = shoal_api::base64::encode(&[7u8; 32]).into();
    std::fs::write(o2.data_dir.join("keys.json"), damaged.to_string()).unwrap();
    let error = format!(
        "{:#}",
        daemon::start(o2.clone(), Bootstrap::Restart)
            .await
            .err()
            .unwrap()
    );
    assert!(error.contains("does not open its data key"), "{error}");
    // A data dir from before encryption at rest.
    std::fs::remove_file(o2.data_dir.join("keys.json")).unwrap();
    let error = format!(
        "{:#}",
        daemon::start(o2, Bootstrap::Restart).await.err().unwrap()
    );
    assert!(
        error.contains("plaintext") && error.contains("join again"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_manager_serves_nothing_until_the_right_key() {
    let dir = tempfile::tempdir().unwrap();
    let o1 = options(dir.path(), "m1");
    let first = daemon::start(o1.clone(), init(true)).await.unwrap();
    let key = first
        .init_unlock_key
        .clone()
        .expect("init --autolock prints a key");
    assert!(key.starts_with("SHKEY-1-"), "{key}");
    let keys = std::fs::read_to_string(o1.data_dir.join("keys.json")).unwrap();
    assert!(!keys.contains("kek"), "{keys}");
    first.shutdown().await;

    let socket = o1.socket.clone().unwrap();
    let restart = tokio::spawn(daemon::start(o1.clone(), Bootstrap::Restart));
    wait_for("the unlock socket", async || socket.exists()).await;
    assert!(
        tokio::net::TcpStream::connect(o1.listen).await.is_err(),
        "nothing listens on TCP while locked"
    );
    let channel = shoal_api::local_socket::channel(&socket).await.unwrap();
    let status = ControlClient::new(channel.clone())
        .get_cluster(Empty {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("shoal swarm unlock"),
        "{status:?}"
    );
    let mut lock = LockClient::new(channel);
    for (wrong, expected) in [
        (
            crate::encryption::UnlockKey::generate()
                .unwrap()
                .to_string(),
            "invalid key",
        ),
        ("SWMKEY-1-abc".to_owned(), "expected SHKEY-1-"),
    ] {
        let status = lock
            .unlock(UnlockRequest { unlock_key: wrong })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(expected), "{status:?}");
    }
    assert!(!restart.is_finished());
    lock.unlock(UnlockRequest {
        unlock_key: key.clone(),
    })
    .await
    .unwrap();
    let running = restart.await.unwrap().unwrap();
    let mut client = control(&running).await;
    assert!(
        client
            .get_cluster(Empty {})
            .await
            .unwrap()
            .into_inner()
            .autolock_managers
    );

    // Autolock off: the KEK is back in the file and a restart needs no key.
    client
        .update_cluster(UpdateClusterRequest {
            autolock_managers: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_for("the key file to hold a local KEK", async || {
        std::fs::read_to_string(o1.data_dir.join("keys.json"))
            .unwrap()
            .contains("kek")
    })
    .await;
    let status = client.get_unlock_key(Empty {}).await.unwrap_err();
    assert_eq!(status.message(), "no unlock key is set");
    let status = client.rotate_unlock_key(Empty {}).await.unwrap_err();
    assert_eq!(
        status.message(),
        "cannot rotate because autolock is not turned on"
    );
    running.shutdown().await;
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        daemon::start(o1, Bootstrap::Restart),
    )
    .await
    .expect("no wait for a key")
    .unwrap();
    again.shutdown().await;
}
