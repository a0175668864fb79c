//! The release binaries of an older revision, for a bench that compares
//! them with today's in the same run (`cargo xtask bench mesh
//! --baseline-rev REV`). The revision's tree is exported with `git
//! archive` (no worktree: the repository's metadata is left alone) into
//! target/baseline/REV/src and built there into its own target dir, once;
//! a later run reuses the binaries.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};

use crate::sh;

/// Builds `rev`'s binaries if they are not there yet; their directory.
pub fn build(rev: &str) -> Result<PathBuf> {
    let root = sh::workspace_root();
    let commit = sh::output(
        "git",
        &[
            "-C",
            &root.display().to_string(),
            "rev-parse",
            "--verify",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .with_context(|| format!("--baseline-rev {rev:?} names no commit of this repository"))?;
    let commit = commit.trim();
    let dir = root.join("target/baseline").join(commit);
    let src = dir.join("src");
    let bins = dir.join("target/release");
    if ["shoal", "shoal-manager", "shoal-agent"]
        .iter()
        .all(|b| bins.join(b).exists())
    {
        println!(
            "[bench] baseline {rev} ({commit}): built already in {}",
            bins.display()
        );
        return Ok(bins);
    }
    if !src.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
        let archive = std::process::Command::new("git")
            .args([
                "-C",
                &root.display().to_string(),
                "archive",
                "--format=tar",
                commit,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running git archive")?;
        let status = std::process::Command::new("tar")
            .args(["-x", "-C", &src.display().to_string()])
            .stdin(archive.stdout.context("git archive's output")?)
            .status()
            .context("running tar")?;
        ensure!(
            status.success(),
            "unpacking {rev} into {} failed",
            src.display()
        );
    }
    println!(
        "[bench] building baseline {rev} ({commit}) in {}",
        dir.display()
    );
    sh::run(
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .args(["build", "--release", "-q", "--bins"]),
    )?;
    Ok(bins)
}
