//! `cargo xtask install`: release binaries into `<prefix>/bin` and systemd
//! units (from deploy/systemd, with their paths filled in) into
//! `<prefix>/lib/systemd/system`.

use std::{fs, path::PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use crate::{build, sh};

#[derive(Args)]
pub struct InstallArgs {
    /// Installation prefix.
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
}

pub fn run(args: &InstallArgs) -> Result<()> {
    let built = build::run(&build::BuildArgs { release: true })?;
    let bin_dir = args.prefix.join("bin");
    let unit_dir = args.prefix.join("lib/systemd/system");
    for dir in [&bin_dir, &unit_dir] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for binary in build::BINARIES {
        let to = bin_dir.join(binary);
        // Replace rather than overwrite: a running binary cannot be written to.
        let staged = bin_dir.join(format!(".{binary}.new"));
        fs::copy(built.join(binary), &staged).with_context(|| format!("copying {binary}"))?;
        fs::rename(&staged, &to).with_context(|| format!("installing {}", to.display()))?;
        println!("[install] {}", to.display());
    }
    let templates = sh::workspace_root().join("deploy/systemd");
    for entry in
        fs::read_dir(&templates).with_context(|| format!("reading {}", templates.display()))?
    {
        let path = entry?.path();
        let Some(name) = path.file_name() else {
            continue;
        };
        let text = fs::read_to_string(&path)?.replace("@BINDIR@", &bin_dir.display().to_string());
        let to = unit_dir.join(name);
        fs::write(&to, text).with_context(|| format!("writing {}", to.display()))?;
        println!("[install] {}", to.display());
    }
    println!(
        "[install] enable with: systemctl link {0}/shoal-manager.service {0}/shoal-agent.service",
        unit_dir.display()
    );
    Ok(())
}
