//! `cargo xtask setup`: installs, idempotently, what a fresh Debian machine of
//! the project's kind lacks. Each step prints one line: what it did or why it
//! skipped. Versions and recipes: ../shared/FACTS.md and README.

use std::{process::Command, thread, time::Duration};

use anyhow::{Context, Result, bail};

use crate::sh;

/// bpf-linker built against rustc's own LLVM: needs no system LLVM.
const BPF_LINKER_VERSION: &str = "0.10.4";
/// `cargo xtask fuzz`'s driver (libFuzzer through libfuzzer-sys 0.4).
const CARGO_FUZZ_VERSION: &str = "0.13.1";
const DOCKERD_LOG: &str = "/var/log/shoal-dockerd.log";

pub fn run() -> Result<()> {
    run_for(Tools::All)
}

/// What a setup installs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tools {
    All,
    /// All but cargo-fuzz, which CI installs with its background checks
    /// (the fuzz smoke run is the only user).
    AllButFuzz,
}

pub fn run_for(tools: Tools) -> Result<()> {
    // The cargo tools compile (bpf-linker for minutes) while the packages
    // below download and unpack: CPU beside network and disk, not two
    // builds on two cores.
    let cargo_tools = std::thread::spawn(|| -> Result<()> {
        ensure_cargo_tool(
            "bpf-linker",
            &["--version"],
            &["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")],
        )?;
        ensure_cargo_tool(
            "cargo-nextest",
            &["nextest", "--version"],
            &["install", "cargo-nextest", "--locked"],
        )
    });
    let mut apt = Apt::default();
    // Binaries the lab and the agent call, and the package that provides each.
    for (binary, package) in [
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("dnsmasq", "dnsmasq-base"),
        ("tar", "tar"),
        // Overlay egress (masquerade) and internal networks' drop rule.
        ("iptables", "iptables"),
        // The control-plane bench's peer.
        ("etcd", "etcd-server"),
        // The dns bench's load generator (its peer is dnsmasq, above).
        ("dnsperf", "dnsperf"),
        // The DNS lab test's client (UDP without EDNS, +tcp, ANY).
        ("dig", "bind9-dnsutils"),
        // The mesh bench's load generator and peers.
        ("wrk", "wrk"),
        ("haproxy", "haproxy"),
        // The metrics test's scraper, and its client for Prometheus's API.
        ("prometheus", "prometheus"),
        // The visualizer's page test (headless, over the DevTools pipe)
        // and its certificate check.
        ("chromium", "chromium"),
        ("curl", "curl"),
    ] {
        ensure_binary(&mut apt, binary, package)?;
    }
    ensure_docker(&mut apt)?;
    ensure_nightly_rust_src()?;
    ensure_stable_components()?;
    cargo_tools
        .join()
        .map_err(|_| anyhow::anyhow!("installing the cargo tools panicked"))??;
    if tools == Tools::All {
        ensure_cargo_fuzz()?;
    }
    ensure_bpffs()?;
    println!("[setup] done");
    Ok(())
}

fn step(what: &str, outcome: &str) {
    println!("[setup] {what}: {outcome}");
}

#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn install(&mut self, packages: &[&str]) -> Result<()> {
        if !self.updated {
            sh::run(Command::new("apt-get").args(["update", "-q"]))?;
            self.updated = true;
        }
        sh::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    }
}

fn has_binary(binary: &str) -> bool {
    sh::succeeds("sh", &["-c", &format!("command -v {binary}")])
}

fn ensure_binary(apt: &mut Apt, binary: &str, package: &str) -> Result<()> {
    let what = format!("{binary} ({package})");
    if has_binary(binary) {
        step(&what, "present, skipped");
        return Ok(());
    }
    apt.install(&[package])?;
    step(&what, "installed");
    Ok(())
}

fn docker_answers() -> bool {
    sh::succeeds("docker", &["info", "--format", "{{.ServerVersion}}"])
}

fn ensure_docker(apt: &mut Apt) -> Result<()> {
    if docker_answers() {
        step("docker engine", "answers, skipped");
        return Ok(());
    }
    if !has_binary("dockerd") {
        apt.install(&["docker.io"])?;
        step("docker engine (docker.io)", "installed");
    }
    // No init system to rely on in CI: start the daemon ourselves.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(DOCKERD_LOG)
        .with_context(|| format!("opening {DOCKERD_LOG}"))?;
    use std::os::unix::process::CommandExt;
    let mut dockerd = Command::new("dockerd");
    dockerd
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // dockerd outlives this command: it must keep no descriptor this
    // process inherited (a `flock` around CI holds the lab's lock through
    // one, and a dockerd started under it held the lock for good), and
    // it must not die with the shell session that ran setup (a job runner
    // that cleans up its session's processes once the job ends killed
    // dockerd under every later test): a session of its own, as a daemon.
    // SAFETY: setsid(2) and close_range(2) are async-signal-safe and touch
    // only the child, after stdio is set up.
    unsafe {
        dockerd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    dockerd.spawn().context("starting dockerd")?;
    for _ in 0..60 {
        if docker_answers() {
            step(
                "docker engine",
                &format!("started dockerd (log {DOCKERD_LOG})"),
            );
            return Ok(());
        }
        thread::sleep(Duration::from_millis(500));
    }
    bail!("dockerd did not answer within 30 s; see {DOCKERD_LOG}")
}

fn ensure_nightly_rust_src() -> Result<()> {
    let toolchains = sh::output("rustup", &["toolchain", "list"]).context("rustup is required")?;
    if toolchains.lines().any(|l| l.starts_with("nightly")) {
        step("nightly toolchain", "present, skipped");
    } else {
        sh::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
        step("nightly toolchain", "installed");
    }
    let installed = sh::output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        step(
            "nightly rust-src (for -Z build-std=core)",
            "present, skipped",
        );
    } else {
        sh::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
        step("nightly rust-src (for -Z build-std=core)", "installed");
    }
    Ok(())
}

fn ensure_stable_components() -> Result<()> {
    for (component, probe) in [
        ("rustfmt", ["fmt", "--version"]),
        ("clippy", ["clippy", "--version"]),
    ] {
        if sh::succeeds("cargo", &probe) {
            step(component, "present, skipped");
        } else {
            sh::run(Command::new("rustup").args(["component", "add", component]))?;
            step(component, "installed");
        }
    }
    Ok(())
}

fn ensure_cargo_tool(name: &str, probe: &[&str], install: &[&str]) -> Result<()> {
    let probe_program = if name.starts_with("cargo-") {
        "cargo"
    } else {
        name
    };
    if sh::succeeds(probe_program, probe) {
        step(name, "present, skipped");
        return Ok(());
    }
    sh::run(sh::cargo().args(install))?;
    step(name, "installed");
    Ok(())
}

/// cargo-fuzz at its pinned version: another one is replaced.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let found = sh::output("cargo", &["fuzz", "--version"]);
    if found
        .as_deref()
        .is_some_and(|v| v.split_whitespace().last() == Some(CARGO_FUZZ_VERSION))
    {
        step("cargo-fuzz", "present, skipped");
        return Ok(());
    }
    sh::run(sh::cargo().args([
        "install",
        "--locked",
        "--force",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
    ]))?;
    step("cargo-fuzz", "installed");
    Ok(())
}

fn ensure_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        step("bpffs at /sys/fs/bpf", "mounted, skipped");
        return Ok(());
    }
    sh::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    step("bpffs at /sys/fs/bpf", "mounted");
    Ok(())
}
