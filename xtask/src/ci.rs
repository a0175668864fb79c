//! `cargo xtask ci`: what `.ci/run` runs on a fresh machine. Setup, format,
//! the binaries and test images, the flag coverage against Docker's CLI,
//! then every unit and lab end-to-end test under nextest, then a short
//! chaos run (`cargo xtask chaos`) on its own 5-node lab. The lab is taken
//! down whatever happens.
//!
//! The checks that need no lab (lints with warnings denied, the eBPF crate
//! included, and the fuzz smoke run: about eleven minutes of compiling on a
//! fresh two-core machine) run beside the tests as a process of their own
//! (`cargo xtask ci-checks`) at idle CPU and I/O priority: the lab tests
//! spend most of their time waiting on containers and timers, the checks
//! take only what the tests leave, and CI ends within its 40 minutes. Their
//! output is kept apart and printed when they end; a failure fails CI.

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use shoal_lab::Lab;

use crate::{build, ci_tests, flags, fuzz, images, setup, sh};

pub fn run() -> Result<()> {
    let started = Instant::now();
    no_incremental_builds();
    stage("setup", || setup::run_for(setup::Tools::AllButFuzz))?;
    stage("fmt", || {
        sh::run(sh::cargo().args(["fmt", "--all", "--check"]))
    })?;
    let mut binaries = None;
    stage("build", || {
        binaries = Some(build::run(&build::BuildArgs::default())?);
        Ok(())
    })?;
    stage("images", images::build_all)?;
    // A report, and a check that the figure never falls. The binary the
    // build stage made: `cargo build -p shoal-cli` alone unifies other
    // features and compiled the CLI and its crates once more (a minute).
    let shoal = binaries
        .context("the build stage names its directory")?
        .join("shoal");
    stage("flag coverage", || {
        flags::run(&flags::FlagsArgs::of_binary(shoal))
    })?;
    // Compiled before the checks start, so that the tests' build never
    // waits for CPU the checks hold.
    stage("test build", || {
        sh::run(sh::cargo().args(["nextest", "run", "--profile", "ci", "--no-run"]))
    })?;
    let checks = Checks::start()?;

    let lab = Lab::new();
    // Start from a clean lab so a leftover from an earlier run cannot pass for ours.
    stage("lab down (leftovers)", || {
        lab.down(&mut |_| {}).context("lab down")
    })?;
    stage("lab up", || {
        lab.up(3, &mut |line| println!("[lab] {line}"))
            .context("lab up")
    })?;
    println!(
        "[ci] tests (stages before them took {:.0?})",
        started.elapsed()
    );
    let mut nextest = sh::cargo();
    nextest.args(["nextest", "run", "--profile", "ci", "--no-fail-fast"]);
    let tests = ci_tests::run(nextest)?;
    if let Err(error) = lab.down(&mut |_| {}) {
        eprintln!("[ci] lab down failed: {error}");
    }
    // The short chaos run brings up its own 5-node lab and takes it down.
    let chaos = stage("chaos (short run)", crate::chaos::short_run);
    let checks = stage("checks (beside the tests)", || checks.finish());
    if !tests.passed {
        tests.print_failures();
        bail!("tests failed: {}", tests.failed.join(", "));
    }
    chaos?;
    checks
}

/// `cargo xtask ci-checks`: clippy with warnings denied (its own target
/// directory, so that it never holds the lock the tests' cargo takes), the
/// eBPF crate's clippy, then every fuzz target for a few seconds.
pub fn checks() -> Result<()> {
    no_incremental_builds();
    stage("clippy", || {
        sh::run(sh::cargo().args([
            "clippy",
            "--all-targets",
            "--target-dir",
            "target/clippy",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    stage("clippy (eBPF, nightly)", clippy_ebpf)?;
    stage("cargo-fuzz", setup::ensure_cargo_fuzz)?;
    // Seconds per target from an unoptimized build (3.5 min where the
    // optimized one took 8): a crash found since the last change fails CI.
    stage("fuzz (smoke)", || fuzz::run(&fuzz::FuzzArgs::smoke()))
}

/// CI builds from a clean checkout once: incremental compilation only
/// writes state no later build reads (a tenth or more of a clean build's
/// time, and gigabytes of `target/`). Cargo and everything it runs for CI
/// inherit this.
fn no_incremental_builds() {
    // SAFETY: called first thing, before this process starts any thread
    // (the only other readers of the environment).
    unsafe { std::env::set_var("CARGO_INCREMENTAL", "0") };
}

/// The checks' process, started at idle priority with its output in a
/// file of its own.
struct Checks {
    child: Child,
    log: PathBuf,
    started: Instant,
    ended: bool,
}

impl Drop for Checks {
    /// A CI run that stops before the checks end (a stage failed) stops
    /// them: cargo and rustc would otherwise run on after it.
    fn drop(&mut self) {
        if !self.ended {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["--", &group]).status();
            let _ = self.child.wait();
        }
    }
}

impl Checks {
    fn start() -> Result<Self> {
        let log = sh::workspace_root().join("target").join("ci-checks.log");
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let xtask = std::env::current_exe().context("finding the xtask binary")?;
        // SCHED_IDLE and the idle I/O class: the tests' processes always
        // come first. Children (cargo, rustc, the fuzzers) inherit both.
        let child = Command::new("chrt")
            .args(["--idle", "0", "ionice", "-c", "3"])
            .arg(xtask)
            .arg("ci-checks")
            .current_dir(sh::workspace_root())
            // A group of its own, so that a CI run that stops early can
            // stop every process of it (see `Drop`).
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting the checks (chrt and ionice, from util-linux)")?;
        println!(
            "[ci] checks started beside the tests (clippy, eBPF clippy, fuzz smoke; output in {})",
            log.display()
        );
        Ok(Self {
            child,
            log,
            started: Instant::now(),
            ended: false,
        })
    }

    /// Waits for the checks, prints what they printed, and fails if they did.
    fn finish(mut self) -> Result<()> {
        let status = self.child.wait().context("waiting for the checks")?;
        self.ended = true;
        let output = std::fs::read_to_string(&self.log).unwrap_or_default();
        println!("----- checks' output ({}) -----", self.log.display());
        print!("{output}");
        println!(
            "----- end of the checks' output ({:.0?} after they started) -----",
            self.started.elapsed()
        );
        if !status.success() {
            bail!("the checks failed ({status}): see their output above");
        }
        Ok(())
    }
}

fn stage(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    sh::stage("ci", name, f)
}

/// The eBPF crate is not a default member (it only builds for the BPF
/// target), so the stable clippy above does not see it.
fn clippy_ebpf() -> Result<()> {
    let mut cargo = Command::new("rustup");
    cargo
        .current_dir(sh::workspace_root())
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "-p",
            "shoal-agent-ebpf",
        ])
        .args([
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
        ])
        .args(["--target-dir", "target/ebpf-clippy", "--", "-D", "warnings"])
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    sh::run(&mut cargo)
}
