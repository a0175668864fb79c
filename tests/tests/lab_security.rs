//! Lab: the threats of "anyone who reaches 2377 owns the cluster", each
//! tried from `shoal-client` (a host on the underlay that is no member)
//! against the real managers and agents: no certificate, a certificate of
//! another CA, a worker's certificate used for control or Raft calls, a
//! worker naming another node, a removed node coming back; and the life
//! cycle: a rotated worker token and a new leader lock out no one, and a
//! root CA rotation under traffic fails no request and restarts no task.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use shoal_api::pb::{
    Empty, HeartbeatRequest, RaftMessage, RegisterRequest, RemoveNodeRequest, SessionRef,
    StoreBatch, control_client::ControlClient, dispatcher_client::DispatcherClient,
    membership_client::MembershipClient,
};
use shoal_pki::{CertificateAuthority, NodeRequest, Role, transport::Dialer};
use shoal_tests::{bin, lab_cluster::LabCluster, topology};

const WAIT: Duration = Duration::from_secs(60);
const MANAGER: &str = "192.0.2.11:2377";

/// Runs `f` on a runtime inside the client namespace: its sockets are the
/// outsider's.
fn from_client<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send>>
    + Send
    + 'static,
) -> Result<T> {
    shoal_lab::netns::run_in(topology::CLIENT_NS, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(f()))
    })?
}

/// The gRPC code of a call's failure, or "ok".
fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// A client certificate issued through the CLI (`shoal cert issue`).
fn admin_dir(cluster: &LabCluster) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("admin");
    cluster.shoal(&[
        "cert",
        "issue",
        "--out",
        out.to_str().context("utf-8 path")?,
    ])?;
    Ok(dir)
}

fn admin_dialer(dir: &std::path::Path) -> Result<Dialer> {
    let read = |f: &str| std::fs::read_to_string(dir.join("admin").join(f));
    Ok(Dialer::with_certificate(
        &read("cert.pem")?,
        &read("key.pem")?,
        &read("ca.pem")?,
    )?)
}

#[test]
fn outsiders_get_nothing_and_nodes_only_what_their_certificate_names() -> Result<()> {
    let cluster = LabCluster::start(3, true)?;
    let worker_token = cluster.shoal(&["join-token", "--quiet", "worker"])?;
    let worker_token = worker_token.trim().to_owned();
    let roots = cluster.shoal(&["swarm", "ca"])?;
    let certs = admin_dir(&cluster)?;
    let admin = admin_dialer(certs.path())?;
    let victim = cluster
        .json_rows(&["node", "ls"])?
        .iter()
        .find(|r| r["Hostname"] == "n3")
        .and_then(|r| r["ID"].as_str().map(str::to_owned))
        .context("node n3")?;

    let report = from_client(move || {
        Box::pin(async move {
            let mut report = BTreeMap::new();
            // Plaintext gRPC: nothing answers it.
            let plain = tonic::transport::Channel::from_static("http://192.0.2.11:2377")
                .connect()
                .await;
            let plain = match plain {
                Ok(channel) => code(ControlClient::new(channel).list_nodes(Empty {}).await),
                Err(e) => format!("no connection: {e}"),
            };
            report.insert("plaintext control", plain);

            // TLS without a certificate: only the CA service answers.
            let anonymous =
                shoal_pki::transport::channel(MANAGER, Dialer::anonymous(&roots)?).await?;
            report.insert(
                "no cert: control",
                code(
                    ControlClient::new(anonymous.clone())
                        .get_cluster(Empty {})
                        .await,
                ),
            );
            report.insert(
                "no cert: raft",
                code(
                    MembershipClient::new(anonymous.clone())
                        .append_entries(RaftMessage {
                            json: b"{}".to_vec(),
                            ..Default::default()
                        })
                        .await,
                ),
            );
            report.insert(
                "no cert: propose",
                code(
                    MembershipClient::new(anonymous.clone())
                        .propose(StoreBatch::default())
                        .await,
                ),
            );
            report.insert(
                "no cert: register",
                code(
                    DispatcherClient::new(anonymous)
                        .register(RegisterRequest::default())
                        .await,
                ),
            );

            // A certificate of another CA: refused at the handshake.
            let other = CertificateAuthority::create("other")?;
            let (chain, key) = other.issue_with_new_key(&NodeRequest {
                node_id: "intruder",
                role: Role::Manager,
                cluster_id: "other",
                validity: Duration::from_secs(3600),
            })?;
            let forged = Dialer::with_certificate(&chain, &key, &roots)?;
            let forged = match shoal_pki::transport::channel(MANAGER, forged).await {
                Ok(channel) => code(ControlClient::new(channel).get_cluster(Empty {}).await),
                Err(e) => format!("no connection: {e}"),
            };
            report.insert("other CA: control", forged);

            // A worker: joins with the token (that is what a token is for),
            // then may use the dispatcher as itself and nothing else.
            let worker = shoal_agent::identity::obtain(
                None,
                &[MANAGER.to_owned()],
                Some(&worker_token),
                "",
                "intruder",
            )
            .await?;
            let worker_id = worker.identity().node_id;
            let channel =
                shoal_pki::transport::channel(MANAGER, Dialer::Node(worker.clone())).await?;
            report.insert(
                "worker: control",
                code(
                    ControlClient::new(channel.clone())
                        .get_cluster(Empty {})
                        .await,
                ),
            );
            report.insert(
                "worker: raft",
                code(
                    MembershipClient::new(channel.clone())
                        .vote(RaftMessage {
                            json: b"{}".to_vec(),
                            ..Default::default()
                        })
                        .await,
                ),
            );
            report.insert(
                "worker: propose",
                code(
                    MembershipClient::new(channel.clone())
                        .propose(StoreBatch::default())
                        .await,
                ),
            );
            // Registration goes to the leader; follow its redirect.
            let mut dispatcher = None;
            for addr in ["192.0.2.11:2377", "192.0.2.12:2377", "192.0.2.13:2377"] {
                let channel =
                    shoal_pki::transport::channel(addr, Dialer::Node(worker.clone())).await?;
                let mut client = DispatcherClient::new(channel);
                if let Ok(registered) = client
                    .register(RegisterRequest {
                        advertise_addr: "192.0.2.100".into(),
                        ..Default::default()
                    })
                    .await
                {
                    dispatcher = Some((client, registered.into_inner(), addr));
                    break;
                }
            }
            let (mut client, registered, leader) =
                dispatcher.context("no manager took the worker's registration")?;
            report.insert(
                "worker: registers as itself",
                if registered.node_id == worker_id {
                    "ok".into()
                } else {
                    format!("as {}", registered.node_id)
                },
            );
            let as_victim = client
                .heartbeat(HeartbeatRequest {
                    session: Some(SessionRef {
                        node_id: victim.clone(),
                        session_id: registered.session_id.clone(),
                        deltas: false,
                    }),
                    counters: Vec::new(),
                })
                .await;
            report.insert("worker: heartbeat as another node", code(as_victim));

            // Removed: its certificate is refused from then on.
            let admin_channel = shoal_pki::transport::channel(leader, admin.clone()).await?;
            let mut control = ControlClient::new(admin_channel);
            report.insert(
                "admin: control over TCP",
                code(control.get_cluster(Empty {}).await),
            );
            control
                .remove_node(RemoveNodeRequest {
                    id: worker_id.clone(),
                    force: true,
                })
                .await?;
            let again = shoal_pki::transport::channel(leader, Dialer::Node(worker.clone())).await?;
            report.insert(
                "removed: register",
                code(
                    DispatcherClient::new(again)
                        .register(RegisterRequest::default())
                        .await,
                ),
            );
            let renewed = shoal_pki::join::renew_through(leader, &worker).await;
            report.insert(
                "removed: renew",
                match renewed {
                    Ok(()) => "ok".into(),
                    Err(s) => format!("{:?}: {}", s.code(), s.message()),
                },
            );
            Ok(report)
        })
    })?;
    eprintln!("{report:#?}");
    let expect = |what: &str, wanted: &str| -> Result<()> {
        let got = report
            .get(what)
            .with_context(|| format!("{what} not tried"))?;
        ensure!(
            got.starts_with(wanted),
            "{what}: expected {wanted}, got {got}"
        );
        Ok(())
    };
    ensure!(
        report["plaintext control"] != "ok",
        "plaintext gRPC was answered"
    );
    for what in [
        "no cert: control",
        "no cert: raft",
        "no cert: propose",
        "no cert: register",
    ] {
        expect(what, "Unauthenticated")?;
    }
    ensure!(
        report["other CA: control"] != "ok",
        "a certificate of another CA was accepted"
    );
    for what in [
        "worker: control",
        "worker: raft",
        "worker: propose",
        "worker: heartbeat as another node",
    ] {
        expect(what, "PermissionDenied")?;
    }
    expect("worker: registers as itself", "ok")?;
    expect("admin: control over TCP", "ok")?;
    expect("removed: register", "PermissionDenied")?;
    expect("removed: renew", "PermissionDenied")?;
    ensure!(
        report["removed: register"].contains("removed"),
        "{}",
        report["removed: register"]
    );

    // The real CLI from outside, with the issued certificate.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", topology::CLIENT_NS])
        .arg(bin("shoal")?)
        .args(["--host", "tcp://192.0.2.12:2377", "--cert-path"])
        .arg(certs.path().join("admin"))
        .args(["node", "ls"])
        .output()?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("n3"),
        "remote CLI: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", topology::CLIENT_NS])
        .arg(bin("shoal")?)
        .args([
            "--host",
            "tcp://192.0.2.12:2377",
            "--cert-path",
            "/nonexistent",
            "node",
            "ls",
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("shoal cert issue"),
        "without a certificate: {err}"
    );
    Ok(())
}

fn statuses(cluster: &LabCluster) -> Result<BTreeMap<String, String>> {
    Ok(cluster
        .json_rows(&["node", "ls"])?
        .iter()
        .map(|r| {
            (
                r["Hostname"].as_str().unwrap_or("").to_owned(),
                r["Status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect())
}

fn task_ids(cluster: &LabCluster) -> Result<BTreeSet<String>> {
    Ok(running_tasks(cluster)?.into_keys().collect())
}

/// The running `web` tasks, each with its node's hostname.
fn running_tasks(cluster: &LabCluster) -> Result<BTreeMap<String, String>> {
    Ok(cluster
        .json_rows(&["service", "ps", "web"])?
        .iter()
        .filter(|r| {
            r["CurrentState"]
                .as_str()
                .unwrap_or("")
                .starts_with("Running")
        })
        .filter_map(|r| {
            Some((
                r["ID"].as_str()?.to_owned(),
                r["Node"].as_str().unwrap_or("").to_owned(),
            ))
        })
        .collect())
}

#[test]
fn a_rotated_token_and_a_new_leader_lock_out_no_one_and_the_ca_rotates_under_traffic() -> Result<()>
{
    let cluster = LabCluster::start(3, true)?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "--publish",
        "8080:80",
        "shoal/echo:1",
    ])?;
    let first = cluster.wait("3 running web tasks", WAIT, || {
        running_tasks(&cluster).ok().filter(|t| t.len() == 3)
    })?;

    // Agents never send the token again: rotating it and electing a new
    // leader (every agent registers anew) leaves every node Ready.
    cluster.shoal(&["join-token", "--rotate", "worker"])?;
    let old = cluster.wait("a leader", WAIT, || cluster.leader_via("n1"))?;
    let via = if old == "n1" { "n2" } else { "n1" };
    let pids = shoal_lab::netns::pids(&format!("shoal-{old}"));
    let manager_pids: Vec<i32> = pids
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("shoal-manager"))
        })
        .collect();
    ensure!(!manager_pids.is_empty(), "no manager process on {old}");
    for pid in &manager_pids {
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
    }
    cluster.wait("a new leader", WAIT, || {
        cluster.leader_via(via).filter(|l| *l != old)
    })?;
    // The old leader's node stays Ready too: its agent moves to another
    // manager with its certificate.
    cluster.wait("every node Ready under the new leader", WAIT, || {
        let rows = cluster.json_rows_via(via, &["node", "ls"]).ok()?;
        rows.iter().all(|r| r["Status"] == "Ready").then_some(())
    })?;

    cluster.lab.kill_node(&old)?;
    cluster.lab.start_node(&old)?;
    cluster.wait("the old leader back and every node Ready", WAIT, || {
        let now = statuses(&cluster).ok()?;
        (now.len() == 3 && now.values().all(|s| s == "Ready")).then_some(())
    })?;
    // Neither the leader's death nor the kill of its node touches a task on
    // another node. The old leader's own task may be replaced: a node gone
    // longer than three heartbeats (a slow restart under load) is rightly
    // marked down and its task rescheduled.
    let tasks = cluster.wait("3 running web tasks after the restart", WAIT, || {
        task_ids(&cluster).ok().filter(|t| t.len() == 3)
    })?;
    let elsewhere: Vec<&String> = first
        .iter()
        .filter(|(_, node)| **node != old)
        .map(|(id, _)| id)
        .collect();
    ensure!(
        elsewhere.iter().all(|id| tasks.contains(*id)),
        "a task off the killed node {old} was replaced: before {first:?}, after {tasks:?}"
    );

    // CA rotation under traffic through every node.
    let load = std::process::Command::new("ip")
        .args(["netns", "exec", topology::CLIENT_NS])
        .arg(bin("shoal-toolbox")?)
        .args([
            "--timeout-ms",
            "1000",
            "http-get",
            "http://192.0.2.12:8080/",
        ])
        .args(["--count", "400", "--interval-ms", "25"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let before = cluster
        .lab
        .shoal_via(&cluster.bins, via, &["swarm", "ca"])?;
    let rotated = cluster
        .lab
        .shoal_via(&cluster.bins, via, &["swarm", "ca", "--rotate", "--quiet"])
        .context("swarm ca --rotate")?;
    ensure!(
        rotated.trim() != before.trim(),
        "the root CA did not change"
    );
    let output = load.wait_with_output()?;
    let lines = String::from_utf8_lossy(&output.stdout);
    let ok = lines.lines().filter(|l| l.contains(" 200 ")).count();
    let failed: Vec<&str> = lines.lines().filter(|l| !l.contains(" 200 ")).collect();
    eprintln!(
        "CA rotation under traffic: {ok} answered, {} failed",
        failed.len()
    );
    ensure!(
        ok > 0 && failed.is_empty(),
        "failed during the rotation: {failed:?}"
    );
    let after = task_ids(&cluster)?;
    ensure!(
        after == tasks,
        "tasks restarted during the rotation: running before {tasks:?}, after {after:?}"
    );
    let now = statuses(&cluster)?;
    ensure!(
        now.iter()
            .filter(|(n, _)| **n != old)
            .all(|(_, s)| s == "Ready"),
        "{now:?}"
    );
    // New connections work on the new root: the CLI, and an agent that
    // restarts (it renewed on the new root during the rotation).
    cluster.lab.kill_node(&old)?;
    cluster.lab.start_node(&old)?;
    cluster.wait("the old leader back and every node Ready", WAIT, || {
        let now = statuses(&cluster).ok()?;
        (now.len() == 3 && now.values().all(|s| s == "Ready")).then_some(())
    })?;
    let tokens = cluster.shoal(&["join-token", "--quiet", "worker"])?;
    if !tokens.contains("SHTKN-1-") {
        bail!("no worker token after the rotation: {tokens}");
    }
    Ok(())
}
