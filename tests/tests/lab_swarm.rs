//! `shoal swarm init|join|leave` on lab hosts, as an operator types them
//! on hosts installed with `cargo xtask install`: init on n1, a worker token
//! on n2, a manager token on n3, then each leaves. The lab's hosts have no
//! systemd: each gets a stand-in `systemctl` (`SHOAL_SYSTEMCTL`) that starts
//! the daemons with the command lines the units in deploy/systemd run, from
//! the env files the commands wrote.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use shoal_lab::cluster;
use shoal_tests::{
    Lab, bin, cmd, lab,
    lab_cluster::LabCluster,
    topology::{self, Host},
};

const WAIT: Duration = Duration::from_secs(60);

/// One lab host set up as `cargo xtask install` sets one up: its env files
/// (with the lab's own options) and a `systemctl` for its units.
struct HostSetup {
    host: Host,
    dir: PathBuf,
    bins: PathBuf,
}

impl HostSetup {
    fn new(lab: &Lab, index: usize, bins: &Path) -> Result<Self> {
        let host = Host::node(index);
        let dir = cluster::node_dir(lab, &host);
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc)?;
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/shoal");
        for file in ["manager.env", "agent.env"] {
            std::fs::copy(repo.join(file), etc.join(file))?;
        }
        // The lab's own: names (the hosts share the machine's), eBPF trees,
        // its resolver and container label.
        let append = |file: &str, lines: &[String]| -> Result<()> {
            let path = etc.join(file);
            let text = std::fs::read_to_string(&path)? + &lines.join("\n") + "\n";
            Ok(std::fs::write(path, text)?)
        };
        append(
            "manager.env",
            &[format!("SHOAL_MANAGER_OPTS=\"--hostname {}\"", host.name)],
        )?;
        append(
            "agent.env",
            &[
                format!(
                    "SHOAL_AGENT_OPTS=\"--hostname {} --container-label {}=1 --dns-upstream {}\"",
                    host.name,
                    shoal_lab::CONTAINER_LABEL,
                    topology::UPSTREAM_DNS_ADDR
                ),
                format!("SHOAL_BPFFS={}", Lab::bpffs_root(&host).display()),
            ],
        )?;
        let setup = Self {
            host,
            dir,
            bins: bins.to_owned(),
        };
        setup.write_systemctl()?;
        Ok(setup)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("manager.sock")
    }

    /// The units' `ExecStart=` lines with this host's paths, started in
    /// the background (the pid kept for the cleanup).
    fn write_systemctl(&self) -> Result<()> {
        let (dir, bin, etc) = (
            self.dir.display().to_string(),
            self.bins.display().to_string(),
            self.dir.join("etc").display().to_string(),
        );
        let script = format!(
            r#"#!/bin/sh
# systemctl for a lab host, which has no systemd.
case "$1" in
enable)
  [ "$2" = "--now" ] || exit 1
  case "$3" in
  shoal-manager.service)
    set -a; . {etc}/manager.env; set +a
    setsid {bin}/shoal-manager run --data-dir {dir}/manager --socket {dir}/manager.sock $SHOAL_MANAGER_OPTS >>{dir}/manager.log 2>&1 </dev/null &
    echo $! >{dir}/manager.pid ;;
  shoal-agent.service)
    set -a; . {etc}/agent.env; set +a
    setsid {bin}/shoal-agent join --token-file {etc}/join-token --data-dir {dir}/agent --run-dir {dir}/agent-run $SHOAL_AGENT_OPTS $SHOAL_MANAGERS >>{dir}/agent.log 2>&1 </dev/null &
    echo $! >{dir}/agent.pid ;;
  *) exit 1 ;;
  esac ;;
is-enabled|is-active) exit 1 ;;
disable) exit 0 ;;
*) exit 1 ;;
esac
"#
        );
        let path = self.dir.join("systemctl");
        std::fs::write(&path, script)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    }

    /// `shoal ARGS` on this host, against its own manager socket.
    fn shoal(&self, args: &[&str]) -> Result<Output> {
        let socket = format!("unix://{}", self.socket().display());
        Ok(cmd::in_netns(
            &self.host.netns,
            &self.bins.join("shoal").display().to_string(),
        )
        .args(["--host", &socket])
        .args(args)
        .env("SHOAL_STATEDIR", &self.dir)
        .env("SHOAL_CONFDIR", self.dir.join("etc"))
        .env("SHOAL_SYSTEMCTL", self.dir.join("systemctl"))
        .env("SHOAL_BPFFS", Lab::bpffs_root(&self.host))
        .output()?)
    }

    /// As `shoal`, which must succeed: its stdout.
    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.shoal(args)?;
        ensure!(
            out.status.success(),
            "shoal {} on {}: {}",
            args.join(" "),
            self.host.name,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// As `shoal`, which must fail: its stderr.
    fn fails(&self, args: &[&str]) -> Result<String> {
        let out = self.shoal(args)?;
        ensure!(
            !out.status.success(),
            "shoal {} on {} succeeded",
            args.join(" "),
            self.host.name
        );
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// The daemons the stand-in started that still run.
    fn running(&self) -> Vec<&'static str> {
        ["manager", "agent"]
            .into_iter()
            .filter(|d| {
                std::fs::read_to_string(self.dir.join(format!("{d}.pid")))
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                    .is_some_and(alive)
            })
            .collect()
    }

    fn kill(&self) {
        for d in self.running() {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(format!("{d}.pid"))) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", pid.trim()])
                    .status();
            }
        }
    }
}

/// Whether a process runs (a zombie no one reaped yet does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// Kills what the stand-ins started, then the lab's cleanup.
struct Guard<'a>(&'a [HostSetup], &'a LabCluster);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        for setup in self.0 {
            setup.kill();
        }
        let _ = self.1.lab.stop_cluster();
    }
}

/// `node ls` of the manager on `setup`: (hostname, status, manager status).
fn nodes(setup: &HostSetup) -> Result<Vec<(String, String, String)>> {
    let out = setup.ok(&["node", "ls", "--format", "json"])?;
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
            Ok((s("Hostname"), s("Status"), s("ManagerStatus")))
        })
        .collect()
}

#[test]
fn hosts_init_join_and_leave_a_swarm_with_dockers_commands_and_words() -> Result<()> {
    shoal_tests::require_images()?;
    let lab = lab()?;
    lab.stop_cluster()?;
    let bins = bin("shoal")?.parent().context("bin dir")?.to_owned();
    for name in ["shoal-manager", "shoal-agent"] {
        bin(name)?;
    }
    let cluster = LabCluster { lab, bins };
    let hosts = (1..=3)
        .map(|i| HostSetup::new(&cluster.lab, i, &cluster.bins))
        .collect::<Result<Vec<_>>>()?;
    let _guard = Guard(&hosts, &cluster);
    let (n1, n2, n3) = (&hosts[0], &hosts[1], &hosts[2]);

    // init: Docker's words, and the join line to copy.
    let out = n1.ok(&[
        "swarm",
        "init",
        "--advertise-addr",
        "192.0.2.11",
        "--default-addr-pool",
        "198.18.0.0/15",
        "--task-history-limit",
        "3",
    ])?;
    ensure!(
        out.starts_with("Swarm initialized: current node ("),
        "{out}"
    );
    ensure!(out.contains(") is now a manager."), "{out}");
    let join_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("shoal swarm join --token "))
        .with_context(|| format!("no join line in {out}"))?;
    let words: Vec<&str> = join_line.split_whitespace().collect();
    ensure!(
        words.len() == 6 && words[5] == "192.0.2.11:2377",
        "{join_line}"
    );
    let worker_token = words[4].to_owned();
    ensure!(out.contains("run 'shoal swarm join-token manager' and follow the instructions"));
    let again = n1.fails(&["swarm", "init", "--advertise-addr", "192.0.2.11"])?;
    ensure!(
        again.contains("This node is already part of a swarm."),
        "{again}"
    );

    // A worker, then a manager (its token from join-token).
    let out = n2.ok(&["swarm", "join", "--token", &worker_token, "192.0.2.11:2377"])?;
    ensure!(
        out.trim() == "This node joined a swarm as a worker.",
        "{out}"
    );
    let manager_token = n1.ok(&["swarm", "join-token", "-q", "manager"])?;
    let out = n3.ok(&[
        "swarm",
        "join",
        "--token",
        manager_token.trim(),
        "--advertise-addr",
        "192.0.2.13",
        "192.0.2.11:2377",
    ])?;
    ensure!(
        out.trim() == "This node joined a swarm as a manager.",
        "{out}"
    );
    let ready = || -> Option<Vec<(String, String, String)>> {
        let nodes = nodes(n1).ok()?;
        (nodes.len() == 3 && nodes.iter().all(|(_, s, _)| s == "Ready")).then_some(nodes)
    };
    let listed = cluster.wait("three Ready nodes", WAIT, ready)?;
    ensure!(
        listed.iter().filter(|(_, _, m)| !m.is_empty()).count() == 2,
        "two managers: {listed:?}"
    );
    let hostnames: Vec<&str> = listed.iter().map(|(h, _, _)| h.as_str()).collect();
    ensure!(hostnames == ["n1", "n2", "n3"], "{hostnames:?}");

    // A service across them, then the hosts leave one by one.
    n1.ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "-d",
        "shoal/echo:1",
    ])?;
    cluster.wait("web on every host", WAIT, || {
        let out = n1.ok(&["service", "ls", "--format", "json"]).ok()?;
        out.contains("\"3/3\"").then_some(())
    })?;
    ensure!(n2.ok(&["swarm", "leave"])?.trim() == "Node left the swarm.");
    ensure!(n2.running().is_empty(), "n2 still runs {:?}", n2.running());
    ensure!(
        n3.fails(&["swarm", "leave"])?
            .contains("participating as a manager")
    );
    ensure!(n3.ok(&["swarm", "leave", "--force"])?.trim() == "Node left the swarm.");
    ensure!(n3.running().is_empty(), "n3 still runs {:?}", n3.running());
    let left = nodes(n1)?;
    ensure!(left.len() == 1 && left[0].0 == "n1", "{left:?}");
    cluster.wait("web's tasks on n1", WAIT, || {
        let out = n1.ok(&["service", "ls", "--format", "json"]).ok()?;
        out.contains("\"3/3\"").then_some(())
    })?;
    // The last manager: Docker's warning, then it goes with --force.
    let err = n1.fails(&["swarm", "leave"])?;
    ensure!(
        err.contains("Removing the last manager erases all current state of the swarm."),
        "{err}"
    );
    ensure!(n1.ok(&["swarm", "leave", "--force"])?.trim() == "Node left the swarm.");
    ensure!(n1.running().is_empty(), "n1 still runs {:?}", n1.running());
    ensure!(
        !n1.dir.join("manager").exists(),
        "n1 kept its manager state"
    );
    let err = n1.fails(&["swarm", "leave"])?;
    ensure!(err.contains("This node is not part of a swarm"), "{err}");
    Ok(())
}
