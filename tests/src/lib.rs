//! Helpers for the end-to-end tests in `tests/`: a lab that is up, the
//! workspace's binaries, and traffic sources and sinks inside lab hosts.
//!
//! The tests need root, Docker, the test images (`cargo xtask images`) and
//! the binaries (`cargo build`); `cargo xtask ci` provides all of them.

use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

pub mod chromium;
pub mod client;
pub mod cluster;
pub mod lab_cluster;
pub mod packets;

use anyhow::{Context, Result, bail, ensure};
pub use shoal_lab::{Lab, cmd, container, netns, topology};

/// Nodes in the lab the tests share.
pub const NODES: usize = 3;

/// The shared lab, brought up if it is not (idempotent and locked, so
/// concurrent test processes agree).
pub fn lab() -> Result<Lab> {
    let lab = Lab::new();
    lab.up(NODES, &mut |_| {})?;
    Ok(lab)
}

/// Fails with a clear message when the test images are missing.
pub fn require_images() -> Result<()> {
    for image in ["shoal/echo:1", "shoal/echo:2", "shoal/toolbox:latest"] {
        if cmd::run("docker", &["image", "inspect", image]).is_err() {
            bail!("image {image} is missing: run `cargo xtask images`");
        }
    }
    Ok(())
}

/// A workspace binary: `$SHOAL_BIN_DIR/<name>`, else next to this test's
/// `deps/` directory (target/debug).
pub fn bin(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("SHOAL_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe()?;
            exe.parent()
                .and_then(|deps| deps.parent())
                .context("test binary has no target dir")?
                .to_owned()
        }
    };
    let path = dir.join(name);
    ensure!(
        path.exists(),
        "{} not found: build it first (`cargo build --bins`)",
        path.display()
    );
    Ok(path)
}

/// Runs a workspace binary inside a lab host's network namespace; returns stdout.
pub fn run_in_host(netns: &str, binary: &str, args: &[&str]) -> Result<String> {
    let program = bin(binary)?;
    let output = cmd::in_netns(netns, &program.display().to_string())
        .args(args)
        .output()
        .with_context(|| format!("running {binary} in {netns}"))?;
    ensure!(
        output.status.success(),
        "{binary} {} in {netns} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The running containers of a service (by the agent's label), full ids,
/// sorted.
pub fn containers_of(service: &str) -> Result<Vec<String>> {
    let filter = format!("label=com.shoal.service.name={service}");
    let out = cmd::stdout("docker", &["ps", "-q", "--no-trunc", "--filter", &filter])?;
    let mut ids: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
    ids.sort();
    Ok(ids)
}

/// The main process of a container (its network namespace is `/proc/PID/ns/net`).
pub fn pid_of(container: &str) -> Result<String> {
    Ok(
        cmd::stdout("docker", &["inspect", "-f", "{{.State.Pid}}", container])?
            .trim()
            .to_owned(),
    )
}

/// `GET PATH` from the `shoal/echo` server inside `container` (port 80,
/// from its own network namespace): `/file/PATH` is what the container
/// reads at PATH. Status and body.
pub fn get_in_container(container: &str, path: &str) -> Result<(u16, String)> {
    let pid = pid_of(container)?;
    let ns = format!("/proc/{pid}/ns/net");
    let path = path.to_owned();
    let response = netns::run_in_path(&ns, move || {
        shoal_testbins::http::get(
            "127.0.0.1:80".parse().expect("address"),
            "localhost",
            &path,
            Duration::from_secs(3),
        )
    })??;
    Ok((response.status, response.body))
}

/// Runs `/toolbox ARGS` inside a `shoal/toolbox` container: its own
/// resolv.conf, so service names resolve through the node's DNS.
pub fn toolbox_in(container: &str, args: &[&str]) -> Result<std::process::Output> {
    let mut all = vec!["exec", container, "/toolbox"];
    all.extend(args);
    Ok(std::process::Command::new("docker").args(&all).output()?)
}

/// A UDP echo responder running in a lab host until dropped.
pub struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    pub fn start(netns: &str, bind: SocketAddr) -> Result<Self> {
        let socket = netns::run_in(netns, move || UdpSocket::bind(bind))??;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends `count` datagrams of `payload` bytes from a lab host to `to`, one at
/// a time, waiting for each echo; returns how many came back.
pub fn udp_round_trips(netns: &str, to: SocketAddr, count: usize, payload: usize) -> Result<usize> {
    let socket = netns::run_in(netns, || UdpSocket::bind("0.0.0.0:0"))??;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let data = vec![0x5au8; payload];
    let mut buf = [0u8; 2048];
    let mut echoed = 0;
    for _ in 0..count {
        socket.send_to(&data, to)?;
        if matches!(socket.recv_from(&mut buf), Ok((n, _)) if n == payload) {
            echoed += 1;
        }
    }
    Ok(echoed)
}

/// Lists that `lab down` must restore: namespaces and every container.
pub fn host_snapshot() -> Result<(String, String)> {
    let netns = cmd::stdout("ip", &["netns", "list"])?;
    let containers = cmd::stdout("docker", &["ps", "-a", "--format", "{{.ID}} {{.Names}}"])?;
    Ok((netns, containers))
}

/// Whether a live (not zombie) process runs `program`, by its command name.
pub fn process_running(program: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // "<pid> (<comm>) <state> …"; comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            return false;
        };
        let state = stat[close + 1..].trim_start().chars().next();
        &stat[open + 1..close] == program && state != Some('Z')
    })
}
