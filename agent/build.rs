//! Compiles `agent-ebpf` for the BPF target (nightly, `-Z build-std=core`, via
//! `rustup run nightly`) and leaves the object in OUT_DIR, where `src/datapath`
//! embeds it with `include_bytes_aligned!`. `cargo xtask setup` installs what
//! this needs (the nightly rust-src component and bpf-linker).
//!
//! This does what aya-build does, with one difference: the BPF build has one
//! target directory (`target/ebpf`) for every build of the agent. Clippy, the
//! dev and release builds, the test build and the fuzz build each run this
//! script with their own OUT_DIR; with aya-build's per-OUT_DIR directory each
//! of them compiled `core` and the programs again (45 s apiece on two cores,
//! three times in CI). Here the first compiles and the others find it built.
//! The inner cargo locks its own directory, never the outer build's.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

const PACKAGE: &str = "shoal-agent-ebpf";

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../agent-ebpf");
    for watched in [ebpf_dir.clone(), manifest_dir.join("../agent-common/src")] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let target = match env::var("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => bail!("no BPF target for endianness {other:?}"),
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let target_dir = shared_target_dir(&manifest_dir);

    // Unit separators: CARGO_ENCODED_RUSTFLAGS's way to keep flags whole.
    let rustflags =
        format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf");
    let output = Command::new("rustup")
        .args(["run", "nightly", "cargo", "build", "--package", PACKAGE])
        .args(["--bins", "--release", "--target", target])
        .args(["-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&ebpf_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        // The outer (stable) cargo's compiler and wrappers are not for this build.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_BUILD_RUSTC")
        .env_remove("CARGO_BUILD_RUSTC_WRAPPER")
        .env_remove("CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .output()
        .context("running `rustup run nightly cargo build` for the eBPF programs")?;
    if !output.status.success() {
        // Cargo shows a build script's warnings: the compiler's words reach the reader.
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            println!("cargo:warning={line}");
        }
        bail!("building {PACKAGE} for {target} failed ({})", output.status);
    }

    let built = target_dir.join(target).join("release").join(PACKAGE);
    let out = PathBuf::from(env::var("OUT_DIR")?).join(PACKAGE);
    std::fs::copy(&built, &out)
        .with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
    Ok(())
}

/// `$CARGO_TARGET_DIR/ebpf` when the builder set one (a relative one taken
/// from the workspace root, where cargo is run), else the workspace's
/// `target/ebpf`: beside the outer build's own directories, never inside
/// one it holds a lock on. Absolute: the inner cargo runs elsewhere.
fn shared_target_dir(manifest_dir: &Path) -> PathBuf {
    let workspace = manifest_dir.join("..");
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                workspace.join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| workspace.join("target"));
    target.join("ebpf")
}
