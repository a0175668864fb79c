//! The lab never reports success over a missing binary or a dead process:
//! it refuses, by path, to start a binary that is not built, and a cluster
//! is up only once each manager answers and each agent's node is `Ready`.
//! A failure carries the tail of the log of the process at fault.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use crate::{Lab, LabError, cluster, state::ProcessRecord, topology};

/// How long `start_cluster` waits for every manager and node.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Log lines quoted when a process is at fault.
const TAIL_LINES: usize = 20;

/// `bin_dir/name` as a string, if it is an executable file.
pub fn require_binary(bin_dir: &Path, name: &str) -> Result<String, LabError> {
    use std::os::unix::fs::PermissionsExt;
    let path = bin_dir.join(name);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
            Ok(path.display().to_string())
        }
        _ => Err(LabError::MissingBinary(path)),
    }
}

/// The last `lines` lines of a log (empty if it cannot be read).
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An error about a lab process, quoting the end of its log.
pub fn process_error(record: &ProcessRecord, problem: String) -> LabError {
    LabError::Process {
        problem,
        log: record.log.clone(),
        tail: log_tail(&record.log, TAIL_LINES),
    }
}

/// Fails at once if `record`'s process has exited.
pub fn ensure_alive(record: &ProcessRecord) -> Result<(), LabError> {
    if record.alive() {
        return Ok(());
    }
    Err(process_error(
        record,
        format!("{} (pid {}) exited", record.name, record.pid),
    ))
}

/// Waits until a manager's control socket accepts connections; fails as
/// soon as its process exits, and after `timeout`.
pub fn wait_for_socket(
    record: &ProcessRecord,
    socket: &Path,
    timeout: Duration,
) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        ensure_alive(record)?;
        if Instant::now() > deadline {
            return Err(process_error(
                record,
                format!(
                    "{} did not answer on {} within {timeout:?}",
                    record.name,
                    socket.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node's row in `shoal node ls --format json`.
fn node_status(rows: &[serde_json::Value], hostname: &str) -> Option<String> {
    rows.iter()
        .find(|row| row["Hostname"] == hostname)
        .map(|row| row["Status"].as_str().unwrap_or("?").to_owned())
}

impl Lab {
    /// Starts managers on n1..nM and an agent on every node (each kept if it
    /// runs), then waits until the cluster is up (see [`Lab::wait_ready`]).
    pub fn start_cluster(
        &self,
        managers: usize,
        bin_dir: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), LabError> {
        self.start_managers(managers, bin_dir, progress)?;
        // Managers run tasks too, as in Swarm: an agent on every node.
        self.start_agents(bin_dir, progress)?;
        let nodes = self.nodes().ok_or(LabError::NotUp)?;
        let hosts: Vec<_> = (1..=nodes).map(topology::Host::node).collect();
        self.wait_ready(bin_dir, &hosts, READY_TIMEOUT, progress)
    }

    /// Waits until the manager of `host` serves the CLI through its own
    /// socket (a socket accepts connections before its manager knows a
    /// leader); fails as soon as its process exits, and after `timeout`.
    pub fn wait_manager_answers(
        &self,
        cli: &str,
        host: &topology::Host,
        manager: &ProcessRecord,
        timeout: Duration,
    ) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        let host_arg = format!("unix://{}", cluster::manager_socket(self, host).display());
        loop {
            ensure_alive(manager)?;
            let last = match crate::cmd::run(cli, &["--host", &host_arg, "node", "ls", "-q"]) {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            if Instant::now() > deadline {
                return Err(process_error(
                    manager,
                    format!(
                        "the manager on {} does not answer after {timeout:?}: {last}",
                        host.name
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the manager of each of `hosts` that runs one answers the
    /// CLI through its own socket, and the node of each that runs an agent
    /// is `Ready`. Fails at once when one of them has exited, else after
    /// `timeout`, naming the one that is not there yet and quoting its log.
    pub fn wait_ready(
        &self,
        bin_dir: &Path,
        hosts: &[topology::Host],
        timeout: Duration,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), LabError> {
        let cli = require_binary(bin_dir, "shoal")?;
        let deadline = Instant::now() + timeout;
        let record = |host: &topology::Host, component: &str| {
            self.state().process(&format!("{}-{component}", host.name))
        };
        for host in hosts {
            let Some(manager) = record(host, "manager") else {
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_manager_answers(&cli, host, &manager, left)?;
            progress(&format!("manager on {} answers", host.name));
        }
        for host in hosts {
            let Some(agent) = record(host, "agent") else {
                continue;
            };
            let mut status = None;
            loop {
                ensure_alive(&agent)?;
                let rows = self
                    .shoal(bin_dir, &["node", "ls", "--format", "json"])
                    .map(|out| {
                        out.lines()
                            .filter_map(|l| serde_json::from_str(l).ok())
                            .collect::<Vec<_>>()
                    });
                if let Ok(rows) = rows {
                    status = node_status(&rows, &host.name);
                }
                if status.as_deref() == Some("Ready") {
                    break;
                }
                if Instant::now() > deadline {
                    let status = status.unwrap_or_else(|| "not registered".to_owned());
                    return Err(process_error(
                        &agent,
                        format!(
                            "node {} is not Ready after {timeout:?} (it is {status})",
                            host.name
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            progress(&format!("node {} is Ready", host.name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_non_executable_binary_is_refused_by_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let err = require_binary(dir.path(), "shoal-agent").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}/shoal-agent is not built (run `cargo xtask build`)",
                dir.path().display()
            )
        );
        let plain = dir.path().join("shoal");
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(require_binary(dir.path(), "shoal").is_err());
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            require_binary(dir.path(), "shoal").unwrap(),
            plain.display().to_string()
        );
    }

    #[test]
    fn a_dead_process_is_named_with_its_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("n2-agent.log");
        let lines: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
        std::fs::write(&log, lines.join("\n")).unwrap();
        let record = ProcessRecord {
            name: "n2-agent".into(),
            netns: "shoal-n2".into(),
            // No process has pid 0 of its own in /proc.
            pid: 0,
            command: vec![],
            restart: None,
            env: None,
            log: log.clone(),
        };
        let err = ensure_alive(&record).unwrap_err().to_string();
        assert!(err.starts_with("n2-agent (pid 0) exited"), "{err}");
        assert!(err.contains(&log.display().to_string()), "{err}");
        assert!(
            err.contains("line 11\n") && err.ends_with("line 30"),
            "{err}"
        );
        assert!(!err.contains("line 10\n"), "{err}");
    }

    #[test]
    fn node_status_is_found_by_hostname() {
        let rows: Vec<serde_json::Value> = [
            r#"{"Hostname":"n1","Status":"Ready"}"#,
            r#"{"Hostname":"n2","Status":"Down"}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        assert_eq!(node_status(&rows, "n2").as_deref(), Some("Down"));
        assert_eq!(node_status(&rows, "n3"), None);
    }
}
