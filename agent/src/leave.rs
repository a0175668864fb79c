//! Leaving the cluster from a node (`shoal swarm leave` runs `shoal-agent
//! leave`): the node asks the managers to remove it, with its own
//! certificate (only a node can make itself leave this way), waits for its
//! running agent to stop (the cluster refuses it from then on, so it
//! does), and the caller clears what the agent built. The data dir keeps
//! what this needs: the managers the agent last knew, and a lock the
//! running agent holds.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use shoal_api::pb::{LeaveRequest, dispatcher_client::DispatcherClient};
use shoal_pki::{Credentials, transport};

/// The running agent's lock on its data dir.
pub type DataDirLock = Flock<File>;

fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("LOCK")
}

fn managers_path(data_dir: &Path) -> PathBuf {
    data_dir.join("managers")
}

/// Takes the data dir's lock for a running agent: one agent per data dir,
/// and `leave` can tell when it has stopped (and which process it is).
pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock> {
    use std::io::Write;
    let path = lock_path(data_dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        anyhow::anyhow!(
            "{} is in use by another shoal-agent ({errno})",
            data_dir.display()
        )
    })?;
    lock.set_len(0)?;
    writeln!(lock, "{}", std::process::id())?;
    Ok(lock)
}

/// The pid the running agent wrote into its lock (None if no agent runs:
/// the file may hold a pid of an agent long gone, maybe reused since).
fn running_agent_pid(data_dir: &Path) -> Option<i32> {
    if !agent_running(data_dir) {
        return None;
    }
    std::fs::read_to_string(lock_path(data_dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether process `pid` still runs (it exists and is no zombie).
fn process_runs(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Asks the agent running on `data_dir` to stop (SIGTERM): one whose
/// managers are gone (the cluster's last manager left) would not notice.
pub fn stop_agent(data_dir: &Path) -> Result<()> {
    if !agent_running(data_dir) {
        return Ok(());
    }
    let pid = running_agent_pid(data_dir)
        .with_context(|| format!("no agent pid in {}", lock_path(data_dir).display()))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .with_context(|| format!("stopping the agent (pid {pid})"))
}

/// Whether an agent runs on `data_dir` now.
pub fn agent_running(data_dir: &Path) -> bool {
    let Ok(file) = File::open(lock_path(data_dir)) else {
        return false;
    };
    Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err()
}

/// Waits (up to `timeout`) for the agent on `data_dir` to stop: its lock
/// released, and then its process gone. The lock goes a moment before the
/// process does (the agent drops it last, but its exit still runs after),
/// and a `leave` that returned then left a caller seeing the agent alive
/// (once in CI).
pub async fn wait_agent_stopped(data_dir: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let pid = running_agent_pid(data_dir);
    while agent_running(data_dir) || pid.is_some_and(process_runs) {
        if Instant::now() > deadline {
            anyhow::bail!(
                "the agent on {} still runs {timeout:?} after the cluster let the node go: stop it (systemctl stop shoal-agent), then leave again",
                data_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Remembers the managers (host:port) the agent last knew, for `leave`.
pub fn save_managers(data_dir: &Path, managers: &[String]) {
    if managers.is_empty() {
        return;
    }
    let path = managers_path(data_dir);
    if let Err(error) = std::fs::write(&path, managers.join("\n") + "\n") {
        tracing::warn!(path = %path.display(), %error, "remembering the managers");
    }
}

pub fn saved_managers(data_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(managers_path(data_dir))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// How asking the cluster went.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// The leader removed the node.
    Removed,
    /// The cluster had removed it already (its certificate is refused).
    AlreadyGone,
}

/// Asks the cluster, through `managers` (following the leader they name),
/// to remove the node `credentials` names.
pub async fn ask_to_leave(
    credentials: &std::sync::Arc<Credentials>,
    managers: &[String],
) -> Result<Asked> {
    anyhow::ensure!(
        !managers.is_empty(),
        "no manager to ask: give one (--manager HOST:PORT)"
    );
    let mut targets: Vec<String> = managers.to_vec();
    let mut problems = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !targets.is_empty() {
        let addr = targets.remove(0);
        let channel =
            match transport::channel(&addr, transport::Dialer::Node(credentials.clone())).await {
                Ok(channel) => channel,
                Err(error) => {
                    problems.push(format!("{addr}: {error}"));
                    continue;
                }
            };
        let mut request = tonic::Request::new(LeaveRequest {});
        request.set_timeout(Duration::from_secs(15));
        match DispatcherClient::new(channel).leave(request).await {
            Ok(_) => return Ok(Asked::Removed),
            Err(status)
                if status.code() == tonic::Code::PermissionDenied
                    && status.message().contains("was removed") =>
            {
                return Ok(Asked::AlreadyGone);
            }
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                match status
                    .metadata()
                    .get(shoal_api::LEADER_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .filter(|l| !l.is_empty())
                {
                    // A follower names the leader: ask it next.
                    Some(leader) => targets.insert(0, leader.to_owned()),
                    // Refused for a reason (a manager must leave Raft first).
                    None => anyhow::bail!("{addr}: {}", status.message()),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                anyhow::bail!("{addr} refused: {}", status.message())
            }
            Err(status) => problems.push(format!("{addr}: {}", status.message())),
        }
    }
    anyhow::bail!(
        "no manager removed this node ({}); leave with --force to clear it here only (the cluster then still lists it: `shoal node rm` it there)",
        problems.join("; ")
    )
}

/// Forgets the node's identity: its certificate, id and managers. The
/// next `join` needs a token and makes a new node.
pub fn forget_identity(data_dir: &Path) -> Result<()> {
    let certificates = data_dir.join("certificates");
    if certificates.exists() {
        std::fs::remove_dir_all(&certificates)
            .with_context(|| format!("removing {}", certificates.display()))?;
    }
    for file in [data_dir.join("node-id"), managers_path(data_dir)] {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", file.display())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_says_whether_an_agent_runs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!agent_running(dir.path()));
        let lock = lock_data_dir(dir.path()).unwrap();
        assert!(agent_running(dir.path()));
        let pid = std::fs::read_to_string(dir.path().join("LOCK")).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        let err = lock_data_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another shoal-agent"), "{err}");
        drop(lock);
        assert!(!agent_running(dir.path()));
    }

    /// An agent whose lock goes before its process does (as every agent's
    /// does, if only for a moment): the wait lasts until the process is
    /// gone, not only the lock.
    #[tokio::test]
    async fn the_wait_outlasts_the_lock_until_the_process_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let script = "exec 9>LOCK; flock 9; echo $$ >&9; sleep 0.3; flock -u 9; sleep 0.7";
        let mut agent = std::process::Command::new("sh")
            .args(["-c", script])
            .current_dir(dir.path())
            .spawn()
            .expect("sh (and util-linux's flock, which cargo xtask setup installs)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while running_agent_pid(dir.path()) != Some(agent.id() as i32) {
            assert!(
                Instant::now() < deadline,
                "the stand-in never took the lock"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        wait_agent_stopped(dir.path(), Duration::from_secs(10))
            .await
            .unwrap();
        assert!(
            agent.try_wait().unwrap().is_some(),
            "the wait returned while the agent's process still ran"
        );
    }

    #[test]
    fn managers_are_remembered_and_the_identity_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        assert!(saved_managers(dir.path()).is_empty());
        save_managers(
            dir.path(),
            &["192.0.2.11:2377".into(), "192.0.2.12:2377".into()],
        );
        assert_eq!(
            saved_managers(dir.path()),
            ["192.0.2.11:2377", "192.0.2.12:2377"]
        );
        std::fs::create_dir_all(dir.path().join("certificates/current")).unwrap();
        std::fs::write(dir.path().join("node-id"), "n1").unwrap();
        forget_identity(dir.path()).unwrap();
        assert!(!dir.path().join("certificates").exists());
        assert!(!dir.path().join("node-id").exists());
        assert!(saved_managers(dir.path()).is_empty());
        forget_identity(dir.path()).unwrap();
    }
}
