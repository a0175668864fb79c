//! `cargo xtask fuzz [TARGET] [--seconds N] [--dev]`: builds the cargo-fuzz
//! targets in `fuzz/` (nightly, libFuzzer; no sanitizer: the code under test
//! is safe Rust, and debug assertions and overflow checks stay on;
//! optimized unless `--dev`) and runs
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
    /// Build without optimizations: half the build time, a tenth of the
    /// runs per second. For short runs (CI's smoke pass), where the build
    /// is most of the time.
    #[arg(long)]
    pub dev: bool,
}

impl FuzzArgs {
    /// CI's pass: every target for a few seconds from a quick build. It
    /// replays the seeds and whatever earlier runs found, and explores a
    /// little; the hours of search are runs by hand with an optimized build.
    pub fn smoke() -> Self {
        Self {
            target: None,
            seconds: 5,
            dev: true,
        }
    }

    /// No sanitizer (safe Rust); parallel codegen: the build is most of the
    /// time a short run takes on two cores.
    fn build_flags(&self) -> Vec<&'static str> {
        let mut flags = vec!["--sanitizer", "none", "--codegen-units", "16"];
        if self.dev {
            flags.push("--dev");
        }
        flags
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
        sh::run(cargo_fuzz().arg("build").args(args.build_flags()))
    })?;
    let target_dir = target_dir();
    for target in targets {
        sh::stage("fuzz", target, || run_one(&target_dir, target, args))?;
    }
    Ok(())
}

fn run_one(target_dir: &Path, target: &str, args: &FuzzArgs) -> Result<()> {
    let corpus = target_dir.join("fuzz-corpus").join(target);
    let artifacts = target_dir.join("fuzz-artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir)?;
    }
    let seeds = sh::workspace_root().join("fuzz").join("seeds").join(target);
    let status = cargo_fuzz()
        .args(["run"])
        .args(args.build_flags())
        .arg(target)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
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
