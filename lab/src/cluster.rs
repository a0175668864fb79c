//! Shoal processes on lab nodes: managers on the first M nodes (the first
//! inits, the others join), and the controls tests and chaos build on — kill
//! a node's processes (or one of them) with SIGKILL, start them again from
//! their data directories, freeze and thaw one, cut and restore a node's
//! underlay link.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    Lab, LabError, cmd, readiness,
    topology::{self, Host, WAN_NS},
};

/// The lab's default address pool (never Swarm's 10.0.0.0/8 in the lab).
pub const LAB_ADDR_POOL: &str = "198.18.0.0/15";
pub const MANAGER_PORT: u16 = 2377;
/// The visualizer's port (`shoal-manager --web-addr`, its default port).
pub const WEB_PORT: u16 = 2378;
/// The label every task container of an agent carries.
pub const TASK_LABEL: &str = "com.shoal.task.id";

/// Where a node's Shoal processes keep their files.
pub fn node_dir(lab: &Lab, host: &Host) -> PathBuf {
    lab.state().path().join(&host.name)
}

/// The manager's local control socket on a node.
pub fn manager_socket(lab: &Lab, host: &Host) -> PathBuf {
    node_dir(lab, host).join("manager.sock")
}

fn process_name(host: &Host, component: &str) -> String {
    format!("{}-{component}", host.name)
}

fn manager_args(lab: &Lab, host: &Host, web: bool) -> Vec<String> {
    let dir = node_dir(lab, host);
    let mut args = vec![
        "--data-dir".into(),
        dir.join("manager").display().to_string(),
        "--advertise-addr".into(),
        format!("{}:{MANAGER_PORT}", host.addr),
        "--listen-addr".into(),
        format!("{}:{MANAGER_PORT}", host.addr),
        "--socket".into(),
        manager_socket(lab, host).display().to_string(),
        "--hostname".into(),
        host.name.clone(),
    ];
    if web {
        // The visualizer on the node's address (TLS, client certificates)
        // and on the node's own loopback, where a browser started in the
        // node's namespace needs none (the lab's page test, the demo).
        args.extend([
            "--web-addr".into(),
            format!("{}:{WEB_PORT}", host.addr),
            "--web-addr".into(),
            format!("127.0.0.1:{WEB_PORT}"),
        ]);
    }
    args
}

/// Whether a manager binary has the visualizer (`--web-addr`): a build
/// older than it does not, and a bench may run one beside today's
/// (`cargo xtask bench mesh --baseline-rev`).
fn has_visualizer(manager_bin: &str) -> bool {
    std::process::Command::new(manager_bin)
        .args(["run", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--web-addr"))
}

/// How long a starting manager has to open its control socket.
const MANAGER_START_TIMEOUT: Duration = Duration::from_secs(20);

impl Lab {
    /// Starts managers on nodes n1..nM that do not run one (idempotent). A
    /// node whose manager has a data directory restarts from it.
    pub fn start_managers(
        &self,
        managers: usize,
        bin_dir: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), LabError> {
        let nodes = self.nodes().ok_or(LabError::NotUp)?;
        if managers > nodes {
            return Err(LabError::NodeCount(managers));
        }
        let manager_bin = readiness::require_binary(bin_dir, "shoal-manager")?;
        // Joining managers ask the first for a token with the CLI.
        let cli = readiness::require_binary(bin_dir, "shoal")?;
        let web = has_visualizer(&manager_bin);
        let first = topology::Host::node(1);
        for index in 1..=managers {
            let host = topology::Host::node(index);
            let name = process_name(&host, "manager");
            if self.state().process(&name).is_some_and(|p| p.alive()) {
                progress(&format!("kept manager on {}", host.name));
                continue;
            }
            let data_dir = node_dir(self, &host).join("manager");
            std::fs::create_dir_all(node_dir(self, &host)).map_err(|source| LabError::Io {
                what: format!("creating {}", node_dir(self, &host).display()),
                source,
            })?;
            let common = manager_args(self, &host, web);
            let mut command = vec![manager_bin.clone()];
            let how = if data_dir.join("manager.json").exists() {
                command.push("run".into());
                command.extend(common.clone());
                "restarted"
            } else if index == 1 {
                command.extend([
                    "init".into(),
                    "--default-addr-pool".into(),
                    LAB_ADDR_POOL.into(),
                ]);
                command.extend(common.clone());
                "initialised the cluster with a manager"
            } else {
                let token = self.shoal(bin_dir, &["join-token", "--quiet", "manager"])?;
                let file = write_token_file(&node_dir(self, &host), "manager", &token)?;
                command.extend(["join".into(), "--token-file".into(), file]);
                command.extend(common.clone());
                command.push(format!("{}:{MANAGER_PORT}", first.addr));
                "joined a manager"
            };
            let mut restart = vec![manager_bin.clone(), "run".into()];
            restart.extend(common);
            let record = self
                .state()
                .spawn_restartable(&name, &host.netns, &command, &restart)?;
            readiness::wait_for_socket(
                &record,
                &manager_socket(self, &host),
                MANAGER_START_TIMEOUT,
            )?;
            // The next manager's join and the agents' need a leader.
            self.wait_manager_answers(&cli, &host, &record, MANAGER_START_TIMEOUT)?;
            progress(&format!(
                "{how} on {} ({}:{MANAGER_PORT})",
                host.name, host.addr
            ));
        }
        Ok(())
    }

    /// Starts an agent on every lab node that does not run one (idempotent),
    /// joined with the worker token; it restarts with the same node id.
    pub fn start_agents(
        &self,
        bin_dir: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), LabError> {
        self.start_agents_with(bin_dir, &[], progress)
    }

    /// As `start_agents`, each agent given `extra_args` too (tests lower
    /// its limits: `--max-tasks 3`); restarts keep them.
    pub fn start_agents_with(
        &self,
        bin_dir: &Path,
        extra_args: &[String],
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), LabError> {
        let nodes = self.nodes().ok_or(LabError::NotUp)?;
        for index in 1..=nodes {
            let host = topology::Host::node(index);
            let started = self.start_agent_with(&host.name, bin_dir, extra_args)?;
            progress(&format!(
                "{} agent on {}",
                if started { "started" } else { "kept" },
                host.name
            ));
        }
        Ok(())
    }

    /// Starts the agent of one node unless it runs; true if it started one.
    pub fn start_agent(&self, node: &str, bin_dir: &Path) -> Result<bool, LabError> {
        self.start_agent_with(node, bin_dir, &[])
    }

    fn start_agent_with(
        &self,
        node: &str,
        bin_dir: &Path,
        extra_args: &[String],
    ) -> Result<bool, LabError> {
        let host = self.host(node)?;
        let name = process_name(&host, "agent");
        if self.state().process(&name).is_some_and(|p| p.alive()) {
            return Ok(false);
        }
        let agent_bin = readiness::require_binary(bin_dir, "shoal-agent")?;
        let token = self.shoal(bin_dir, &["join-token", "--quiet", "worker"])?;
        let token_file = write_token_file(&node_dir(self, &host), "agent", &token)?;
        let first = topology::Host::node(1);
        let mut command = vec![
            agent_bin,
            "--bpffs".into(),
            Lab::bpffs_root(&host).display().to_string(),
            "join".into(),
            "--token-file".into(),
            token_file,
            "--advertise-addr".into(),
            host.addr.to_string(),
            "--hostname".into(),
            host.name.clone(),
            "--data-dir".into(),
            node_dir(self, &host).join("agent").display().to_string(),
            "--run-dir".into(),
            node_dir(self, &host)
                .join("agent-run")
                .display()
                .to_string(),
            "--container-label".into(),
            format!("{}=1", crate::CONTAINER_LABEL),
            "--dns-upstream".into(),
            topology::UPSTREAM_DNS_ADDR.to_string(),
            format!("{}:{MANAGER_PORT}", first.addr),
        ];
        command.extend_from_slice(extra_args);
        self.state()
            .spawn_restartable(&name, &host.netns, &command, &command)?;
        Ok(true)
    }

    /// The address (`unix://…`) of a live manager's control socket.
    pub fn shoal_host(&self) -> Result<String, LabError> {
        let nodes = self.nodes().ok_or(LabError::NotUp)?;
        topology::hosts(nodes)
            .iter()
            .filter(|h| {
                self.state()
                    .process(&process_name(h, "manager"))
                    .is_some_and(|p| p.alive())
            })
            .map(|h| manager_socket(self, h))
            .find(|s| std::os::unix::net::UnixStream::connect(s).is_ok())
            .map(|s| format!("unix://{}", s.display()))
            .ok_or(LabError::NoManager)
    }

    /// Runs the `shoal` CLI against the lab cluster; returns its stdout.
    pub fn shoal(&self, bin_dir: &Path, args: &[&str]) -> Result<String, LabError> {
        let host = self.shoal_host()?;
        self.shoal_at(bin_dir, &host, args)
    }

    /// Runs the `shoal` CLI against the manager on `node` (tests that cut a
    /// node off ask one on the connected side); returns its stdout.
    pub fn shoal_via(&self, bin_dir: &Path, node: &str, args: &[&str]) -> Result<String, LabError> {
        let socket = manager_socket(self, &self.host(node)?);
        self.shoal_at(bin_dir, &format!("unix://{}", socket.display()), args)
    }

    fn shoal_at(&self, bin_dir: &Path, host: &str, args: &[&str]) -> Result<String, LabError> {
        let cli = readiness::require_binary(bin_dir, "shoal")?;
        let mut all = vec!["--host", host];
        all.extend_from_slice(args);
        // Programs drive the cluster and wait for what they need; progress
        // displays are for people.
        let output = cmd::run_with_env(&cli, &all, &[("SHOAL_DETACH", "true")])?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// SIGKILLs every Shoal process of `node` (their records stay, so
    /// `start_node` can bring them back).
    pub fn kill_node(&self, node: &str) -> Result<Vec<String>, LabError> {
        let host = self.host(node)?;
        let mut killed = Vec::new();
        for record in self
            .state()
            .processes()
            .into_iter()
            .filter(|p| p.netns == host.netns && p.alive())
        {
            kill_record(&record)?;
            killed.push(record.name);
        }
        Ok(killed)
    }

    /// Starts again every killed Shoal process of `node`, from its data dir.
    pub fn start_node(&self, node: &str) -> Result<Vec<String>, LabError> {
        let host = self.host(node)?;
        let mut started = Vec::new();
        for record in self
            .state()
            .processes()
            .into_iter()
            .filter(|p| p.netns == host.netns && !p.alive())
        {
            self.respawn_record(&record)?;
            started.push(record.name);
        }
        Ok(started)
    }

    /// The record of the running lab process `name` (`n2-manager`).
    fn running(&self, name: &str) -> Result<crate::state::ProcessRecord, LabError> {
        let record = self
            .state()
            .process(name)
            .ok_or_else(|| LabError::NoSuchProcess(name.to_owned()))?;
        if !record.alive() {
            return Err(LabError::NotRunning(name.to_owned()));
        }
        Ok(record)
    }

    /// SIGKILLs the one lab process `name` (`n2-manager`, `n4-agent`), the
    /// node's other processes untouched; its record stays, so
    /// `start_process` brings it back.
    pub fn kill_process(&self, name: &str) -> Result<(), LabError> {
        kill_record(&self.running(name)?)
    }

    /// Starts the killed lab process `name` again from its data dir (a
    /// manager once its socket is open); one still running is left alone.
    pub fn start_process(&self, name: &str) -> Result<(), LabError> {
        let record = self
            .state()
            .process(name)
            .ok_or_else(|| LabError::NoSuchProcess(name.to_owned()))?;
        if !record.alive() {
            self.respawn_record(&record)?;
        }
        Ok(())
    }

    /// Freezes the lab process `name` (SIGSTOP): it keeps its sockets and
    /// memory but answers nothing until `resume_process`, as a process
    /// stalled by its host would.
    pub fn pause_process(&self, name: &str) -> Result<(), LabError> {
        signal(&self.running(name)?, libc::SIGSTOP);
        Ok(())
    }

    /// Lets a process frozen by `pause_process` run again (SIGCONT).
    pub fn resume_process(&self, name: &str) -> Result<(), LabError> {
        signal(&self.running(name)?, libc::SIGCONT);
        Ok(())
    }

    fn respawn_record(&self, record: &crate::state::ProcessRecord) -> Result<(), LabError> {
        let restarted = self.state().respawn(record)?;
        if let Some(node) = record.name.strip_suffix("-manager") {
            let host = self.host(node)?;
            readiness::wait_for_socket(
                &restarted,
                &manager_socket(self, &host),
                MANAGER_START_TIMEOUT,
            )?;
        }
        Ok(())
    }

    /// Stops every Shoal process of the lab and forgets their state (the lab
    /// itself stays up): the next `start_managers` creates a new cluster.
    pub fn stop_cluster(&self) -> Result<(), LabError> {
        for record in self.state().processes() {
            if record.name.ends_with("-manager") || record.name.ends_with("-agent") {
                self.state().stop(&record, Duration::from_secs(3));
            }
        }
        // Task containers of the agents (they outlive agents by design), and
        // the per-task tmpfs mounts agents made for secrets.
        crate::container::remove_labelled(TASK_LABEL)?;
        unmount_under(self.state().path());
        if let Some(nodes) = self.nodes() {
            for host in topology::hosts(nodes) {
                let dir = node_dir(self, &host);
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(LabError::Io {
                            what: format!("removing {}", dir.display()),
                            source,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Cuts `node`'s underlay link (its port on the lab bridge goes down).
    pub fn isolate(&self, node: &str) -> Result<(), LabError> {
        let host = self.host(node)?;
        cmd::ip_in(WAN_NS, &["link", "set", &host.wan_port(), "down"])?;
        Ok(())
    }

    /// Restores `node`'s underlay link.
    pub fn heal(&self, node: &str) -> Result<(), LabError> {
        let host = self.host(node)?;
        cmd::ip_in(WAN_NS, &["link", "set", &host.wan_port(), "up"])?;
        Ok(())
    }
}

/// Sends `sig` to a lab process.
fn signal(record: &crate::state::ProcessRecord, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(record.pid, sig) };
}

/// SIGKILLs a lab process and waits until every thread of it is gone (its
/// files, locks and sockets closed), so that starting it again cannot race
/// its own remains. A process that outlives the wait is an error: the lab
/// would otherwise go on with a node it believes dead.
fn kill_record(record: &crate::state::ProcessRecord) -> Result<(), LabError> {
    signal(record, libc::SIGKILL);
    let deadline = Instant::now() + KILL_WAIT;
    while record.alive() {
        if Instant::now() > deadline {
            return Err(LabError::Undying {
                name: record.name.clone(),
                pid: record.pid,
                waited: KILL_WAIT,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Reaped if it was this process's child (a lab test's); else a no-op.
    // SAFETY: a null status pointer is allowed.
    unsafe { libc::waitpid(record.pid, std::ptr::null_mut(), libc::WNOHANG) };
    Ok(())
}

/// How long a SIGKILLed process may take to exit: threads blocked in the
/// kernel (netlink, BPF, a slow disk) finish their call first.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// Writes a join token for `component` of a node into an owner-only file
/// in its dir and returns the file's path: tokens never go on a command
/// line, where every user of the host could read them.
fn write_token_file(dir: &Path, component: &str, token: &str) -> Result<String, LabError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let path = dir.join(format!("{component}-join-token"));
    let io = |source| LabError::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    // A file left by an earlier cluster goes: one made now is 0600 from the start.
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    writeln!(file, "{}", token.trim()).map_err(io)?;
    Ok(path.display().to_string())
}

/// Unmounts every mount below `dir` (deepest first): agents mount a tmpfs
/// per task for secrets, and a killed agent leaves them behind.
pub fn unmount_under(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    let mut targets: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for target in targets {
        if let Ok(path) = std::ffi::CString::new(target) {
            // SAFETY: umount2(2) with a valid path; detaching is what we want
            // for mounts a dead process left.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
