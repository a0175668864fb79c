//! `cargo xtask build`: the agent's build script compiles `agent-ebpf` for
//! `bpfel-unknown-none` with nightly and embeds it, so building the workspace
//! on stable is the whole job; this command names what it produced.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::sh;

pub const BINARIES: [&str; 3] = ["shoal", "shoal-agent", "shoal-manager"];

#[derive(Args, Default)]
pub struct BuildArgs {
    /// Optimised build (target/release).
    #[arg(long)]
    pub release: bool,
}

/// Builds the binaries; returns the directory holding them.
pub fn run(args: &BuildArgs) -> Result<PathBuf> {
    let mut cargo = sh::cargo();
    cargo.args([
        "build",
        "--bins",
        "-p",
        "shoal-agent",
        "-p",
        "shoal-manager",
        "-p",
        "shoal-cli",
        // The lab tests run the toolbox in the client namespace; nextest
        // builds test targets only, so a clean checkout needs it built here.
        "-p",
        "shoal-testbins",
        // `cargo xtask chaos` and CI's short chaos run.
        "-p",
        "shoal-chaos",
    ]);
    if args.release {
        cargo.arg("--release");
    }
    sh::run(&mut cargo)?;
    // Where cargo put them: $CARGO_TARGET_DIR when set (relative to the
    // workspace root, where `cargo xtask` runs cargo), else target/.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .map(|dir| sh::workspace_root().join(dir))
        .unwrap_or_else(|| sh::workspace_root().join("target"));
    let dir = target.join(if args.release { "release" } else { "debug" });
    for binary in BINARIES {
        println!("[build] {}", dir.join(binary).display());
    }
    Ok(dir)
}
