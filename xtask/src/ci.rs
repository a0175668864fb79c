//! `cargo xtask ci`: what `.ci/run` runs on a fresh machine. Setup, format,
//! lints (warnings denied, the eBPF crate included), the binaries and test
//! images, the flag coverage against Docker's CLI, then every unit and lab end-to-end test under
//! nextest, then a short chaos run (`cargo xtask chaos`) on its own 5-node lab. The lab is taken
//! down whatever happens.

use std::{process::Command, time::Instant};

use anyhow::{Context, Result, bail};
use shoal_lab::Lab;

use crate::{build, flags, fuzz, images, setup, sh};

pub fn run() -> Result<()> {
    let started = Instant::now();
    stage("setup", setup::run)?;
    stage("fmt", || {
        sh::run(sh::cargo().args(["fmt", "--all", "--check"]))
    })?;
    stage("clippy", || {
        sh::run(sh::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))
    })?;
    stage("clippy (eBPF, nightly)", clippy_ebpf)?;
    let mut binaries = None;
    stage("build", || {
        binaries = Some(build::run(&build::BuildArgs::default())?);
        Ok(())
    })?;
    stage("images", images::build_all)?;
    // Seconds per target from an unoptimized build (3.5 min where the
    // optimized one took 8): a crash found since the last change fails CI.
    stage("fuzz (smoke)", || fuzz::run(&fuzz::FuzzArgs::smoke()))?;
    // A report, and a check that the figure never falls. The binary the
    // build stage made: `cargo build -p shoal-cli` alone unifies other
    // features and compiled the CLI and its crates once more (a minute).
    let shoal = binaries
        .context("the build stage names its directory")?
        .join("shoal");
    stage("flag coverage", || {
        flags::run(&flags::FlagsArgs::of_binary(shoal))
    })?;

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
    let tests = sh::cargo()
        .args(["nextest", "run", "--profile", "ci", "--no-fail-fast"])
        .status()
        .context("running cargo nextest")?;
    if let Err(error) = lab.down(&mut |_| {}) {
        eprintln!("[ci] lab down failed: {error}");
    }
    // The short chaos run brings up its own 5-node lab and takes it down.
    let chaos = stage("chaos (short run)", crate::chaos::short_run);
    if !tests.success() {
        bail!("tests failed");
    }
    chaos
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
