//! The Shoal lab: several hosts on one machine, built from network namespaces.
//!
//! ```text
//!                      shoal-wan (bridge br-wan)
//!      ┌─────────────┬──────┴──────┬─────────────┬───────────────────┐
//!  shoal-n1      shoal-n2      shoal-n3         …          shoal-client
//!  eth0 .11      eth0 .12      eth0 .13                eth0 .100 + .53 (dnsmasq)
//! ```
//! All on 192.0.2.0/24 with fixed MACs and permanent neighbour entries. No
//! namespace has a route out of the lab. `xtask lab` drives it; the end-to-end
//! tests use it through [`Lab`].

pub mod cluster;
pub mod cmd;
pub mod container;
pub mod netns;
pub mod prometheus;
pub mod readiness;
pub mod state;
pub mod systemd;
pub mod topology;
pub mod upstream;

use std::{fs::File, os::fd::AsRawFd, path::PathBuf, time::Duration};

use state::StateDir;
use topology::{Host, MAX_NODES, PREFIX_LEN, UPSTREAM_DNS_ADDR, WAN_BRIDGE, WAN_NS};

/// Docker label on every container the lab or its tests start; `down` removes them.
pub const CONTAINER_LABEL: &str = "shoal.lab";
/// Root of every lab node's pinned eBPF tree (`<this>/<netns>`); `down` removes it.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/shoal/lab";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error(
        "`{command}` did not return within {waited:?} and was killed (a wedged Docker engine? see its log)"
    )]
    Overran { command: String, waited: Duration },
    #[error("`{command}` failed (exit {status:?}): {stderr}")]
    Command {
        command: String,
        status: Option<i32>,
        stderr: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("a lab has 1 to {MAX_NODES} nodes, not {0}")]
    NodeCount(usize),
    #[error("no lab host named {0:?} (hosts are n1..nN and client)")]
    NoSuchHost(String),
    #[error("the lab is not up (run `cargo xtask lab up`)")]
    NotUp,
    #[error("upstream resolver: {0}")]
    Upstream(String),
    #[error("empty command")]
    EmptyCommand,
    #[error("a thread in namespace {0} panicked")]
    Panicked(String),
    #[error("the lab runs no process {0}")]
    NoSuchProcess(String),
    #[error("{0} is not running")]
    NotRunning(String),
    #[error("{name} (pid {pid}) still runs {waited:?} after SIGKILL")]
    Undying {
        name: String,
        pid: i32,
        waited: std::time::Duration,
    },
    #[error("no lab node runs a manager (run `cargo xtask lab up --managers 1`)")]
    NoManager,
    #[error("{} is not built (run `cargo xtask build`)", .0.display())]
    MissingBinary(PathBuf),
    #[error("{problem}\n--- last lines of {}:\n{tail}", log.display())]
    Process {
        problem: String,
        log: PathBuf,
        tail: String,
    },
}

/// A handle on the lab described by the state directory.
pub struct Lab {
    state: StateDir,
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab {
    pub fn new() -> Self {
        Self {
            state: StateDir::from_env(),
        }
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// Number of nodes of the running lab, if it is up.
    pub fn nodes(&self) -> Option<usize> {
        let recorded = self.state.recorded()?;
        netns::exists(WAN_NS).then_some(recorded.nodes)
    }

    pub fn host(&self, name: &str) -> Result<Host, LabError> {
        let nodes = self.nodes().ok_or(LabError::NotUp)?;
        topology::host_named(name, nodes).ok_or_else(|| LabError::NoSuchHost(name.to_owned()))
    }

    /// The pinned eBPF tree a lab node's agent uses.
    pub fn bpffs_root(host: &Host) -> PathBuf {
        PathBuf::from(BPFFS_ROOT).join(&host.netns)
    }

    /// Builds the lab, or completes it: every step checks before it acts,
    /// and `progress` hears one line per step taken or skipped. Growing a lab
    /// adds nodes; asking for fewer nodes than run leaves the extra ones.
    pub fn up(&self, nodes: usize, progress: &mut dyn FnMut(&str)) -> Result<(), LabError> {
        if !(1..=MAX_NODES).contains(&nodes) {
            return Err(LabError::NodeCount(nodes));
        }
        let _lock = self.lock()?;
        self.state.create()?;
        let nodes = nodes.max(self.state.recorded().map_or(0, |r| r.nodes));

        let created = netns::ensure(WAN_NS)?;
        progress(&format!("{} namespace {WAN_NS}", verb(created)));
        let bridge_missing = cmd::ip_in(WAN_NS, &["link", "show", WAN_BRIDGE]).is_err();
        if bridge_missing {
            cmd::ip_in(WAN_NS, &["link", "add", WAN_BRIDGE, "type", "bridge"])?;
        }
        cmd::ip_in(WAN_NS, &["link", "set", WAN_BRIDGE, "up"])?;
        // The underlay bridge plays a physical switch, which runs no host's
        // iptables: with br_netfilter loaded (Docker loads it), every frame
        // it forwarded would go through netfilter's hooks in this namespace.
        for family in ["iptables", "ip6tables", "arptables"] {
            let key = format!("net/bridge/bridge-nf-call-{family}");
            if netns::run_in(WAN_NS, {
                let path = format!("/proc/sys/{key}");
                move || std::path::Path::new(&path).exists()
            })? {
                netns::write_sysctl(WAN_NS, &key, "0")?;
            }
        }
        progress(&format!(
            "{} underlay bridge {WAN_BRIDGE}",
            verb(bridge_missing)
        ));

        let hosts = topology::hosts(nodes);
        for host in &hosts {
            let created = plug_host(host)?;
            progress(&format!(
                "{} host {} ({}) at {}",
                verb(created),
                host.name,
                host.netns,
                host.addr
            ));
        }
        for host in &hosts {
            for peer in hosts.iter().filter(|p| *p != host) {
                set_neighbour(host, &peer.addr.to_string(), &peer.mac())?;
            }
            if host.name != "client" {
                set_neighbour(host, &UPSTREAM_DNS_ADDR.to_string(), &Host::client().mac())?;
            }
        }
        progress("set permanent neighbour entries on every host (no ARP in the lab)");

        let started = upstream::ensure(&self.state)?;
        progress(&format!(
            "{} upstream resolver (dnsmasq) at {UPSTREAM_DNS_ADDR}",
            if started { "started" } else { "kept" }
        ));
        self.state.record(&state::Recorded { nodes })?;
        Ok(())
    }

    /// Removes everything `up` and the tests made: processes, containers,
    /// namespaces (and with them every link), pinned eBPF objects, state.
    pub fn down(&self, progress: &mut dyn FnMut(&str)) -> Result<(), LabError> {
        let _lock = self.lock()?;
        for record in self.state.processes() {
            self.state.stop(&record, Duration::from_secs(3));
            progress(&format!("stopped {} (pid {})", record.name, record.pid));
        }
        let removed = container::remove_labelled(CONTAINER_LABEL)?;
        if removed > 0 {
            progress(&format!("removed {removed} lab containers"));
        }
        for ns in netns::list_with_prefix("shoal-") {
            // Anything still running inside would keep the namespace alive.
            for pid in netns::pids(&ns) {
                state::terminate(pid, Duration::from_secs(2), || {
                    std::path::Path::new(&format!("/proc/{pid}")).exists()
                });
                progress(&format!("stopped stray pid {pid} in {ns}"));
            }
            netns::delete(&ns)?;
            progress(&format!("deleted namespace {ns}"));
        }
        match std::fs::remove_dir_all(BPFFS_ROOT) {
            Ok(()) => progress(&format!("removed pinned eBPF objects under {BPFFS_ROOT}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LabError::Io {
                    what: format!("removing {BPFFS_ROOT}"),
                    source,
                });
            }
        }
        cluster::unmount_under(self.state.path());
        self.state.remove()?;
        progress(&format!("removed {}", self.state.path().display()));
        Ok(())
    }

    /// A human-readable report of the lab.
    pub fn status(&self) -> String {
        let mut out = format!("state directory: {}\n", self.state.path().display());
        let Some(nodes) = self.nodes() else {
            out.push_str("lab: down\n");
            return out;
        };
        out.push_str(&format!(
            "lab: up, {nodes} nodes\n\nHOST      NAMESPACE       ADDRESS       LINK\n"
        ));
        for host in topology::hosts(nodes) {
            let link = cmd::ip_in(&host.netns, &["-br", "link", "show", "eth0"])
                .map(|o| {
                    let text = String::from_utf8_lossy(&o.stdout).into_owned();
                    text.split_whitespace().nth(1).unwrap_or("?").to_owned()
                })
                .unwrap_or_else(|_| "missing".into());
            out.push_str(&format!(
                "{:<9} {:<15} {:<13} {}\n",
                host.name, host.netns, host.addr, link
            ));
        }
        out.push_str("\nPROCESS          NAMESPACE       PID      STATE    LOG\n");
        for p in self.state.processes() {
            let alive = if p.alive() { "running" } else { "dead" };
            out.push_str(&format!(
                "{:<16} {:<15} {:<8} {:<8} {}\n",
                p.name,
                p.netns,
                p.pid,
                alive,
                p.log.display()
            ));
        }
        out
    }

    /// Serialises `up` and `down` across processes (tests run in parallel).
    fn lock(&self) -> Result<File, LabError> {
        let path = "/run/shoal-lab.lock";
        let file = File::create(path).map_err(|source| LabError::Io {
            what: format!("opening {path}"),
            source,
        })?;
        // SAFETY: flock on an open descriptor; the lock goes with the File.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(LabError::Io {
                what: format!("locking {path}"),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(file)
    }
}

fn verb(created: bool) -> &'static str {
    if created { "created" } else { "kept" }
}

/// Gives a host its namespace and its `eth0` on the underlay bridge.
fn plug_host(host: &Host) -> Result<bool, LabError> {
    let created = netns::ensure(&host.netns)?;
    let port = host.wan_port();
    let missing = cmd::ip_in(&host.netns, &["link", "show", "eth0"]).is_err();
    if missing {
        // A half-built earlier attempt may have left the bridge side alone.
        let _ = cmd::ip_in(WAN_NS, &["link", "del", &port]);
        cmd::run(
            "ip",
            &[
                "link",
                "add",
                &port,
                "netns",
                WAN_NS,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &host.netns,
            ],
        )?;
    }
    cmd::ip_in(WAN_NS, &["link", "set", &port, "master", WAN_BRIDGE, "up"])?;
    cmd::ip_in(
        &host.netns,
        &["link", "set", "eth0", "address", &host.mac()],
    )?;
    let cidr = format!("{}/{PREFIX_LEN}", host.addr);
    cmd::ip_in(&host.netns, &["addr", "replace", &cidr, "dev", "eth0"])?;
    if host.name == "client" {
        let dns = format!("{UPSTREAM_DNS_ADDR}/{PREFIX_LEN}");
        cmd::ip_in(&host.netns, &["addr", "replace", &dns, "dev", "eth0"])?;
        netns::write_sysctl(
            &host.netns,
            "net/ipv4/ip_local_port_range",
            &format!("{} 65535", topology::CLIENT_EPHEMERAL_PORTS_START),
        )?;
    } else {
        // Nodes route for the containers they will host.
        netns::write_sysctl(&host.netns, "net/ipv4/ip_forward", "1")?;
    }
    cmd::ip_in(&host.netns, &["link", "set", "eth0", "up"])?;
    Ok(created || missing)
}

fn set_neighbour(host: &Host, addr: &str, mac: &str) -> Result<(), LabError> {
    cmd::ip_in(
        &host.netns,
        &[
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    )?;
    Ok(())
}
