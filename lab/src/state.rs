//! The lab's state directory: what is up, which processes run where, and
//! their logs. `lab status` prints it; `lab down` removes it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::LabError;

pub const DEFAULT_DIR: &str = "/run/shoal-lab";

/// What `lab up` built, saved as `lab.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recorded {
    pub nodes: usize,
}

/// A process the lab started, saved as `procs/<name>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub name: String,
    pub netns: String,
    pub pid: i32,
    pub command: Vec<String>,
    /// What brings the process back after a kill (e.g. `run` instead of
    /// `init`), when that differs from `command`.
    #[serde(default)]
    pub restart: Option<Vec<String>>,
    /// The whole environment the process gets, as systemd gives a service
    /// one; None: it inherits the lab's.
    #[serde(default)]
    pub env: Option<Vec<(String, String)>>,
    pub log: PathBuf,
}

impl ProcessRecord {
    /// Whether any thread of the process still runs. The main thread's
    /// state alone is not enough: after a SIGKILL it turns zombie while
    /// other threads are still exiting, and those still hold the
    /// process's open files, so an agent's data-dir lock outlives the
    /// "dead" process and a restart at that moment is refused.
    pub fn alive(&self) -> bool {
        let Ok(threads) = fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return false;
        };
        threads.flatten().any(|thread| {
            fs::read_to_string(thread.path().join("stat")).is_ok_and(|stat| !is_zombie(&stat))
        })
    }
}

/// Whether a `/proc/.../stat` line shows a zombie (state `Z`, after the
/// command name in parentheses, which may itself hold `)`).
fn is_zombie(stat: &str) -> bool {
    stat.rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .starts_with('Z')
}

#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// `$SHOAL_LAB_DIR`, else `/run/shoal-lab` (tmpfs: gone with a reboot,
    /// like the namespaces it describes).
    pub fn from_env() -> Self {
        let dir =
            std::env::var_os("SHOAL_LAB_DIR").map_or_else(|| DEFAULT_DIR.into(), PathBuf::from);
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("procs")
    }

    pub fn create(&self) -> Result<(), LabError> {
        for dir in [self.dir.clone(), self.logs(), self.procs()] {
            fs::create_dir_all(&dir).map_err(|source| LabError::Io {
                what: format!("creating {}", dir.display()),
                source,
            })?;
        }
        Ok(())
    }

    pub fn recorded(&self) -> Option<Recorded> {
        let text = fs::read_to_string(self.dir.join("lab.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn record(&self, recorded: &Recorded) -> Result<(), LabError> {
        self.write_json(&self.dir.join("lab.json"), recorded)
    }

    pub fn processes(&self) -> Vec<ProcessRecord> {
        let Ok(entries) = fs::read_dir(self.procs()) else {
            return Vec::new();
        };
        let mut all: Vec<ProcessRecord> = entries
            .filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
            .filter_map(|text| serde_json::from_str(&text).ok())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn process(&self, name: &str) -> Option<ProcessRecord> {
        self.processes().into_iter().find(|p| p.name == name)
    }

    /// Starts a long-running process in `netns` (its own process group, so a
    /// terminal's Ctrl-C does not reach it), logging to `logs/<name>.log`.
    pub fn spawn(
        &self,
        name: &str,
        netns: &str,
        command: &[String],
    ) -> Result<ProcessRecord, LabError> {
        self.spawn_with_restart(name, netns, command, None, None)
    }

    /// As `spawn`, recording the command that restarts the process.
    pub fn spawn_restartable(
        &self,
        name: &str,
        netns: &str,
        command: &[String],
        restart: &[String],
    ) -> Result<ProcessRecord, LabError> {
        self.spawn_with_restart(name, netns, command, Some(restart.to_vec()), None)
    }

    /// As `spawn`, with `env` as the process's whole environment (as systemd
    /// starts a service); it restarts the same way.
    pub fn spawn_service(
        &self,
        name: &str,
        netns: &str,
        command: &[String],
        env: &[(String, String)],
    ) -> Result<ProcessRecord, LabError> {
        self.spawn_with_restart(name, netns, command, None, Some(env.to_vec()))
    }

    /// Starts `record`'s process again (its restart command, else its
    /// command, with its environment).
    pub fn respawn(&self, record: &ProcessRecord) -> Result<ProcessRecord, LabError> {
        let command = record.restart.clone().unwrap_or(record.command.clone());
        self.spawn_with_restart(
            &record.name,
            &record.netns,
            &command,
            Some(command.clone()),
            record.env.clone(),
        )
    }

    fn spawn_with_restart(
        &self,
        name: &str,
        netns: &str,
        command: &[String],
        restart: Option<Vec<String>>,
        env: Option<Vec<(String, String)>>,
    ) -> Result<ProcessRecord, LabError> {
        self.create()?;
        let log = self.logs().join(format!("{name}.log"));
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| LabError::Io {
                what: format!("opening {}", log.display()),
                source,
            })?;
        let err_file = file.try_clone().map_err(|source| LabError::Io {
            what: format!("opening {}", log.display()),
            source,
        })?;
        let (program, args) = command.split_first().ok_or(LabError::EmptyCommand)?;
        let mut child = crate::cmd::in_netns(netns, program);
        use std::os::unix::process::CommandExt;
        child
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file)
            .process_group(0);
        if let Some(env) = &env {
            child.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        }
        let child = child.spawn().map_err(|source| LabError::Spawn {
            command: command.join(" "),
            source,
        })?;
        let record = ProcessRecord {
            name: name.to_owned(),
            netns: netns.to_owned(),
            pid: child.id() as i32,
            command: command.to_vec(),
            restart,
            env,
            log,
        };
        self.write_json(&self.procs().join(format!("{name}.json")), &record)?;
        // The child is reaped by init once this process exits; it is ours until then.
        std::mem::forget(child);
        Ok(record)
    }

    /// Stops a recorded process (TERM, then KILL after `grace`) and forgets it.
    pub fn stop(&self, record: &ProcessRecord, grace: Duration) {
        terminate(record.pid, grace, || record.alive());
        let _ = fs::remove_file(self.procs().join(format!("{}.json", record.name)));
    }

    pub fn remove(&self) -> Result<(), LabError> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LabError::Io {
                what: format!("removing {}", self.dir.display()),
                source,
            }),
        }
    }

    fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), LabError> {
        let text = serde_json::to_string_pretty(value).expect("lab state serializes");
        fs::write(path, text).map_err(|source| LabError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
    }
}

/// Sends TERM, waits up to `grace` for `alive` to turn false, then KILL.
pub fn terminate(pid: i32, grace: Duration, alive: impl Fn() -> bool) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive() {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // Reap it if it is our own child (ECHILD otherwise, which is fine).
    // SAFETY: a null status pointer is allowed.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32) -> ProcessRecord {
        ProcessRecord {
            name: "sleeper".into(),
            netns: String::new(),
            pid: pid as i32,
            command: vec![],
            restart: None,
            env: None,
            log: PathBuf::new(),
        }
    }

    #[test]
    fn a_killed_process_is_dead_while_still_a_zombie() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let sleeper = record(child.id());
        assert!(sleeper.alive());
        child.kill().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        while sleeper.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Not reaped yet: /proc still lists it, as a zombie.
        assert!(fs::metadata(format!("/proc/{}", child.id())).is_ok());
        assert!(!sleeper.alive(), "a zombie counts as dead");
        child.wait().expect("reap");
        assert!(!sleeper.alive(), "a reaped process counts as dead");
    }

    #[test]
    fn the_state_follows_the_last_parenthesis_of_a_stat_line() {
        assert!(is_zombie("42 (a) b) Z 1 42"));
        assert!(!is_zombie("42 (Z) S 1 42"));
        assert!(!is_zombie("42 (a) (b) R 1 42"));
    }
}
