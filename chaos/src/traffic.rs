//! Load through the data plane while faults happen, every request kept
//! with its time and outcome:
//! - `mesh`: new connections to the published port on every node's
//!   address, from the lab's client namespace (`shoal-toolbox load`);
//! - `vip` and `dns`: from a toolbox task on the service's overlay, the
//!   service's name looked up through the node's DNS, then requests to the
//!   VIP it names (`/toolbox http-get http://web/`), round after round.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use shoal_lab::{cmd, topology};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    Mesh,
    Vip,
    Dns,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Route::Mesh => "mesh (published port)",
            Route::Vip => "VIP (from a container)",
            Route::Dns => "DNS (from a container)",
        })
    }
}

/// One request.
#[derive(Clone, Debug)]
pub struct Request {
    /// When it was sent, microseconds since the run began; it was in
    /// flight at some point of [at, until] (a failure may come at the end
    /// of its timeout; requests from a container are timed by their round).
    pub at: u64,
    pub until: u64,
    pub path: Route,
    /// The node the request entered (mesh) or came from (vip, dns).
    pub via: String,
    /// None: it failed, with the reason in `detail`.
    pub ok: bool,
    pub detail: String,
}

pub type Log = Arc<Mutex<Vec<Request>>>;

/// How long one request may take before it counts as failed.
const TIMEOUT_US: u64 = 2_000_000;

fn push(log: &Log, request: Request) {
    log.lock().unwrap_or_else(|e| e.into_inner()).push(request);
}

/// The lab node (`n3`) whose address is `addr`.
fn node_of(addr: &str) -> String {
    let ip = addr.split(':').next().unwrap_or("");
    (1..=topology::MAX_NODES)
        .map(topology::Host::node)
        .find(|h| h.addr.to_string() == ip)
        .map(|h| h.name)
        .unwrap_or_else(|| addr.to_owned())
}

/// `shoal-toolbox load` from the client namespace to `port` on every node,
/// until stopped (SIGTERM ends it after the requests in flight).
pub struct MeshLoad {
    child: Child,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl MeshLoad {
    pub fn start(
        bin_dir: &Path,
        nodes: usize,
        port: u16,
        rate: u32,
        start: Instant,
        log: Log,
    ) -> Result<Self> {
        let toolbox = bin_dir.join("shoal-toolbox");
        let entries: Vec<String> = (1..=nodes)
            .map(|i| format!("{}:{port}", topology::Host::node(i).addr))
            .collect();
        let mut command = cmd::in_netns(topology::CLIENT_NS, &toolbox.display().to_string());
        command
            .args(["--timeout-ms", &(TIMEOUT_US / 1000).to_string(), "load"])
            .args(&entries)
            .args(["--rate", &rate.to_string(), "--workers", "8"])
            .args(["--seconds", "86400"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let began = start.elapsed().as_micros() as u64;
        let mut child = command.spawn().context("starting shoal-toolbox load")?;
        let stdout = child.stdout.take().context("load stdout")?;
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                // `<ms> <entry> <task>` or `<ms> <entry> FAILED <why>`.
                let mut parts = line.splitn(3, ' ');
                let (Some(ms), Some(entry), Some(rest)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let Ok(ms) = ms.parse::<u64>() else { continue };
                let failed = rest.starts_with("FAILED");
                let at = began + ms * 1000;
                push(
                    &log,
                    Request {
                        at,
                        until: at + TIMEOUT_US,
                        path: Route::Mesh,
                        via: node_of(entry),
                        ok: !failed,
                        detail: rest.to_owned(),
                    },
                );
            }
        });
        Ok(Self {
            child,
            reader: Some(reader),
        })
    }

    pub fn stop(mut self) {
        let _ = cmd::run("kill", &["-TERM", &self.child.id().to_string()]);
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The running container of the toolbox service and its node's id.
fn toolbox_container(service: &str) -> Option<(String, String)> {
    let filter = format!("label=com.shoal.service.name={service}");
    let out = cmd::stdout(
        "docker",
        &[
            "ps",
            "--filter",
            &filter,
            "--format",
            "{{.ID}} {{.Label \"com.shoal.node.id\"}}",
        ],
    )
    .ok()?;
    let line = out.lines().next()?;
    let (id, node) = line.split_once(' ')?;
    Some((id.to_owned(), node.to_owned()))
}

/// Rounds of one DNS lookup and `per_round` requests to the VIP from the
/// toolbox task, until `stop`. `hostname_of` maps node ids to hostnames.
pub fn vip_rounds(
    toolbox_service: &str,
    target: &str,
    per_round: u32,
    start: Instant,
    log: Log,
    stop: Arc<AtomicBool>,
    hostname_of: impl Fn(&str) -> String,
) {
    let url = format!("http://{target}/");
    while !stop.load(Ordering::Relaxed) {
        let Some((container, node_id)) = toolbox_container(toolbox_service) else {
            // No client container (being rescheduled): no request made.
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        let node = hostname_of(&node_id);
        let round = start.elapsed().as_micros() as u64;
        let output = Command::new("docker")
            .args(["exec", &container, "/toolbox", "--timeout-ms"])
            .arg((TIMEOUT_US / 1000).to_string())
            .args(["http-get", &url, "--count", &per_round.to_string()])
            .args(["--interval-ms", "50"])
            .output();
        let Ok(output) = output else {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The requests of a round are timed by the round: `docker exec`
        // adds a delay of its own before the first.
        let until = start.elapsed().as_micros() as u64;
        let request = |path, ok, detail: String, at| Request {
            at,
            until,
            path,
            via: node.clone(),
            ok,
            detail,
        };
        if stdout.trim().is_empty() {
            if stderr.contains("No such container") || stderr.contains("is not running") {
                // The client container went away under us: no request made.
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            // The lookup failed (http-get resolves the name first).
            push(
                &log,
                request(Route::Dns, false, stderr.trim().to_owned(), round),
            );
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        push(&log, request(Route::Dns, true, String::new(), round));
        for line in stdout.lines() {
            // `<n> 200 <json>` or `<n> error <why>`.
            let ok = line.split(' ').nth(1) == Some("200");
            push(&log, request(Route::Vip, ok, line.to_owned(), round));
        }
    }
}
