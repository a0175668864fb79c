//! `cargo xtask install`: release binaries into `<prefix>/bin`, the systemd
//! units of deploy/systemd (their paths filled in) into
//! `<prefix>/lib/systemd/system`, and the env files of deploy/shoal into
//! `<sysconfdir>/shoal` unless they are there already (they are the
//! operator's once installed). README's "Run it on your hosts" goes on.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use clap::Args;
use shoal_lab::systemd::InstallPaths;

use crate::{build, sh};

#[derive(Args)]
pub struct InstallArgs {
    /// Installation prefix (binaries in PREFIX/bin, units in PREFIX/lib/systemd/system).
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Where the configuration goes (SYSCONFDIR/shoal: env files, join token).
    #[arg(long, default_value = "/etc")]
    sysconfdir: PathBuf,
}

pub fn run(args: &InstallArgs) -> Result<()> {
    let built = build::run(&build::BuildArgs { release: true })?;
    let paths = InstallPaths::host(&args.prefix, &args.sysconfdir);
    let unit_dir = args.prefix.join("lib/systemd/system");
    for dir in [&paths.bindir, &unit_dir, &paths.confdir] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for binary in build::BINARIES {
        let to = paths.bindir.join(binary);
        // Replace rather than overwrite: a running binary cannot be written to.
        let staged = paths.bindir.join(format!(".{binary}.new"));
        fs::copy(built.join(binary), &staged).with_context(|| format!("copying {binary}"))?;
        fs::rename(&staged, &to).with_context(|| format!("installing {}", to.display()))?;
        println!("[install] {}", to.display());
    }
    let deploy = sh::workspace_root().join("deploy");
    for (template, to) in templates(&deploy.join("systemd"), &unit_dir)? {
        fs::write(&to, render(&paths, &template)?)
            .with_context(|| format!("writing {}", to.display()))?;
        println!("[install] {}", to.display());
    }
    for (template, to) in templates(&deploy.join("shoal"), &paths.confdir)? {
        if to.exists() {
            println!("[install] {}: exists, kept", to.display());
            continue;
        }
        fs::write(&to, render(&paths, &template)?)
            .with_context(|| format!("writing {}", to.display()))?;
        println!("[install] {}", to.display());
    }
    println!(
        "[install] next: systemctl daemon-reload, then README's \"Run it on your hosts\" \
         (the units are in {}; systemd reads /usr/local/lib/systemd/system by itself)",
        unit_dir.display()
    );
    Ok(())
}

/// The files of a template directory, each with where it is installed.
fn templates(dir: &Path, to: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            out.push((path.clone(), to.join(name)));
        }
    }
    out.sort();
    Ok(out)
}

fn render(paths: &InstallPaths, template: &Path) -> Result<String> {
    let text =
        fs::read_to_string(template).with_context(|| format!("reading {}", template.display()))?;
    Ok(paths.render(&template.display().to_string(), &text)?)
}
