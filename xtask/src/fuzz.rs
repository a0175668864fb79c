//! `cargo xtask fuzz [TARGET] [--seconds N]`: builds the cargo-fuzz targets
//! in `fuzz/` (nightly, libFuzzer; no sanitizer: the code under test is
//! safe Rust, and debug assertions and overflow checks stay on) and runs
//! each for N seconds from its seed corpus (`fuzz/seeds/TARGET`) plus
//! what earlier runs found (`target/fuzz-corpus/TARGET`). A crash, a
//! failed check, a hang past 10 s or a run past 2 GiB fails the command
//! and leaves the input in `target/fuzz-artifacts/TARGET/`, to replay
//! with `cargo +nightly fuzz run -s none TARGET FILE`.
//!
//! The `ebpf` target loads the data plane's programs into the kernel (root,
//! bpffs at /sys/fs/bpf); it attaches them nowhere and needs no lab.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Result, bail};
use clap::Args;

use crate::sh;

/// Every target, in the order they run.
pub const TARGETS: [&str; 4] = ["flags", "dns", "compose", "ebpf"];

#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// One target (flags, dns, compose, ebpf); all of them when left out.
    pub target: Option<String>,
    /// How long each target runs, in seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

impl Default for FuzzArgs {
    fn default() -> Self {
        Self {
            target: None,
            seconds: 5,
        }
    }
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    let targets: Vec<&str> = match &args.target {
        None => TARGETS.to_vec(),
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!(
            "no fuzz target {t:?}: the targets are {}",
            TARGETS.join(", ")
        ),
    };
    if args.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    sh::stage("fuzz", "build", || {
        sh::run(cargo_fuzz().arg("build").args(BUILD_FLAGS))
    })?;
    let target_dir = target_dir();
    for target in targets {
        sh::stage("fuzz", target, || {
            run_one(&target_dir, target, args.seconds)
        })?;
    }
    Ok(())
}

/// No sanitizer (safe Rust); parallel codegen: the build is most of the
/// time a short run takes on two cores.
const BUILD_FLAGS: [&str; 4] = ["--sanitizer", "none", "--codegen-units", "16"];

fn run_one(target_dir: &Path, target: &str, seconds: u64) -> Result<()> {
    let corpus = target_dir.join("fuzz-corpus").join(target);
    let artifacts = target_dir.join("fuzz-artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir)?;
    }
    let seeds = sh::workspace_root().join("fuzz").join("seeds").join(target);
    let status = cargo_fuzz()
        .args(["run"])
        .args(BUILD_FLAGS)
        .arg(target)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(["-timeout=10", "-rss_limit_mb=2048", "-max_len=4096"])
        .args(["-print_final_stats=1"])
        // A target that reads a path the fuzzer names must not wait on a terminal.
        .stdin(Stdio::null())
        .status()?;
    if !status.success() {
        bail!(
            "fuzz target {target} failed ({status}): the input is in {}",
            artifacts.display()
        );
    }
    Ok(())
}

fn cargo_fuzz() -> Command {
    let mut command = Command::new("rustup");
    command
        .current_dir(sh::workspace_root())
        .args(["run", "nightly", "cargo", "fuzz"])
        // cargo-fuzz runs $CARGO when set: `cargo xtask`'s (stable) would
        // build everything again with other fingerprints.
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    command
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| sh::workspace_root().join("target"))
}
