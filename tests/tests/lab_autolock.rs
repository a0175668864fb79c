//! Autolock with the lab's real binaries: `shoal swarm update
//! --autolock=true` on a running cluster; a manager killed and started
//! again serves nothing (its control socket answers only with what to do,
//! its TCP port is closed) until `shoal swarm unlock` gets the right key on
//! its socket; then it rejoins and applies writes made while it was locked.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use shoal_lab::cluster::{manager_socket, node_dir};
use shoal_tests::{
    bin,
    lab_cluster::LabCluster,
    topology::{self, Host},
};

const WAIT: Duration = Duration::from_secs(30);
const LOCKED: &str = "n2";

/// `shoal ARGS` against `node`'s local socket with `stdin` fed in; the
/// output whatever the exit status.
fn shoal_on_socket(cluster: &LabCluster, node: &str, args: &[&str], stdin: &str) -> Result<Output> {
    let index: usize = node[1..].parse().context("a node name nN")?;
    let socket = manager_socket(&cluster.lab, &Host::node(index));
    let mut child = Command::new(bin("shoal")?)
        .arg("--host")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running shoal")?;
    child
        .stdin
        .take()
        .context("shoal's stdin")?
        .write_all(stdin.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// Whether a TCP connection from the lab's client to `node`'s manager port
/// is accepted.
fn manager_port_open(node: usize) -> Result<bool> {
    let addr = Host::node(node).addr;
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            topology::CLIENT_NS,
            "timeout",
            "5",
            "bash",
            "-c",
        ])
        .arg(format!("exec 3<>/dev/tcp/{addr}/2377"))
        .stderr(Stdio::null())
        .status()
        .context("probing the manager port")?;
    Ok(status.success())
}

#[test]
fn an_autolocked_manager_restarted_serves_nothing_until_unlocked_then_rejoins() -> Result<()> {
    let cluster = LabCluster::start(3, false)?;
    cluster.shoal(&["swarm", "update", "--autolock=true"])?;
    let key = cluster
        .shoal(&["swarm", "unlock-key", "-q"])?
        .trim()
        .to_owned();
    ensure!(
        key.starts_with("SHKEY-1-"),
        "an unlock key (SHKEY-1-…), got {key:?}"
    );
    ensure!(manager_port_open(2)?, "n2's manager port is open before");
    // Each manager wraps its own data key with the unlock key when it
    // applies the change: killed before that, n2 would restart unlocked.
    let keys = node_dir(&cluster.lab, &Host::node(2)).join("manager/keys.json");
    cluster.wait("n2's data key wrapped with the unlock key", WAIT, || {
        let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&keys).ok()?).ok()?;
        stored.get("kek").is_none().then_some(())
    })?;

    cluster.lab.kill_node(LOCKED)?;
    cluster.lab.start_node(LOCKED)?;

    // Locked: the socket answers, but only to say what to do.
    let why = cluster.wait("n2's socket answering as a locked manager", WAIT, || {
        let refused = shoal_on_socket(&cluster, LOCKED, &["node", "ls"], "").ok()?;
        let why = String::from_utf8_lossy(&refused.stderr).into_owned();
        (!refused.status.success() && !why.contains("cannot reach")).then_some(why)
    })?;
    ensure!(
        why.contains("shoal swarm unlock"),
        "the refusal says what to do: {why}"
    );
    ensure!(
        !manager_port_open(2)?,
        "a locked manager must serve nothing on TCP"
    );

    // A write while it is locked: it must get it once it is back.
    let secret = tempfile::NamedTempFile::new()?;
    std::fs::write(secret.path(), "made while n2 was locked")?;
    let path = secret.path().to_str().context("a UTF-8 temp path")?;
    cluster.shoal(&["secret", "create", "while_locked", path])?;

    let wrong = shoal_on_socket(
        &cluster,
        LOCKED,
        &["swarm", "unlock"],
        "SHKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    )?;
    ensure!(!wrong.status.success(), "a wrong key unlocked the manager");
    ensure!(
        !manager_port_open(2)?,
        "still locked after a wrong key: nothing on TCP"
    );

    let unlocked = shoal_on_socket(&cluster, LOCKED, &["swarm", "unlock"], &format!("{key}\n"))?;
    ensure!(
        unlocked.status.success(),
        "swarm unlock with the key failed: {}",
        String::from_utf8_lossy(&unlocked.stderr)
    );
    cluster.wait(
        "n2 serving and holding the secret made while it was locked",
        WAIT,
        || {
            let out = cluster
                .lab
                .shoal_via(&cluster.bins, LOCKED, &["secret", "ls"])
                .ok()?;
            out.contains("while_locked").then_some(())
        },
    )?;
    ensure!(manager_port_open(2)?, "n2's manager port is open again");
    cluster.wait("n2 a reachable manager again", WAIT, || {
        let rows = cluster.json_rows(&["node", "ls"]).ok()?;
        rows.iter()
            .any(|r| r["Hostname"] == LOCKED && r["ManagerStatus"] == "Reachable")
            .then_some(())
    })?;
    Ok(())
}
