//! `cargo xtask images`: the test images, with no registry. Each is a static
//! binary from `testbins`, put in an otherwise empty rootfs and brought into
//! Docker with `docker import`; `shoal/glibc` adds the host's own `getent`
//! and the libraries `ldd` lists, so that a test can resolve names the way
//! every dynamically linked program in a container does (glibc's stub
//! resolver: no EDNS, TCP after a truncated answer).

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::sh;

const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

struct Image {
    tag: &'static str,
    binary: &'static str,
    /// Path of the binary inside the image.
    path: &'static str,
    env: &'static [&'static str],
    entrypoint: &'static str,
    cmd: Option<&'static str>,
    expose: &'static [&'static str],
    /// Host programs copied in at their own paths, with their libraries.
    host_programs: &'static [&'static str],
    /// Further files: path in the image, contents.
    files: &'static [(&'static str, &'static str)],
}

const IMAGES: [Image; 4] = [
    Image {
        tag: "shoal/echo:1",
        binary: "shoal-echo",
        path: "/echo",
        env: &["SHOAL_ECHO_VERSION=1"],
        entrypoint: r#"["/echo"]"#,
        cmd: None,
        expose: &["80/tcp", "80/udp", "7/tcp"],
        host_programs: &[],
        files: &[],
    },
    Image {
        tag: "shoal/echo:2",
        binary: "shoal-echo",
        path: "/echo",
        env: &["SHOAL_ECHO_VERSION=2"],
        entrypoint: r#"["/echo"]"#,
        cmd: None,
        expose: &["80/tcp", "80/udp", "7/tcp"],
        host_programs: &[],
        files: &[],
    },
    Image {
        tag: "shoal/toolbox:latest",
        binary: "shoal-toolbox",
        path: "/toolbox",
        env: &[],
        entrypoint: r#"["/toolbox"]"#,
        cmd: Some(r#"["idle"]"#),
        expose: &[],
        host_programs: &[],
        files: &[],
    },
    // The toolbox idling, plus glibc's `getent` (`getent ahosts NAME` is
    // getaddrinfo). glibc 2.34+ has its files and dns NSS modules in libc.
    Image {
        tag: "shoal/glibc:latest",
        binary: "shoal-toolbox",
        path: "/toolbox",
        env: &[],
        entrypoint: r#"["/toolbox"]"#,
        cmd: Some(r#"["idle"]"#),
        expose: &[],
        host_programs: &["/usr/bin/getent"],
        files: &[("etc/nsswitch.conf", "hosts: files dns\n")],
    },
];

pub fn build_all() -> Result<()> {
    // Static glibc binaries: the images hold nothing else. --target keeps the
    // static flag off build scripts and out of the host build's cache.
    let mut cargo = sh::cargo();
    cargo
        .args([
            "build",
            "--release",
            "-p",
            "shoal-testbins",
            "--target",
            STATIC_TARGET,
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    sh::run(&mut cargo)?;
    let bin_dir = sh::workspace_root()
        .join("target")
        .join(STATIC_TARGET)
        .join("release");
    for image in &IMAGES {
        import(image, &bin_dir.join(image.binary))?;
    }
    Ok(())
}

fn import(image: &Image, binary: &Path) -> Result<()> {
    let mut digest = sha256(binary)?;
    let host_files = host_files(image.host_programs)?;
    for file in &host_files {
        digest.push_str(&sha256(Path::new(file))?[..16]);
    }
    let marker = format!("SHOAL_IMAGE_DIGEST={digest}");
    let current = sh::output(
        "docker",
        &[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Env}}",
            image.tag,
        ],
    );
    if current.is_some_and(|env| env.contains(&marker)) {
        println!("[images] {}: up to date, skipped", image.tag);
        return Ok(());
    }
    let rootfs = tempdir(image.binary)?;
    let target = rootfs.join(image.path.trim_start_matches('/'));
    fs::copy(binary, &target).with_context(|| format!("copying {}", binary.display()))?;
    for dir in ["tmp", "etc", "run", "data"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    // Docker bind-mounts these three over whatever the image has.
    for file in ["etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        fs::write(rootfs.join(file), "")?;
    }
    for file in &host_files {
        let to = rootfs.join(file.trim_start_matches('/'));
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::copy(file, &to).with_context(|| format!("copying {file}"))?;
    }
    for (path, contents) in image.files {
        fs::write(rootfs.join(path), contents)?;
    }
    let mut import = Command::new("docker");
    import.arg("import");
    for env in image.env.iter().copied().chain([marker.as_str()]) {
        import.args(["--change", &format!("ENV {env}")]);
    }
    import.args(["--change", &format!("ENTRYPOINT {}", image.entrypoint)]);
    if let Some(cmd) = image.cmd {
        import.args(["--change", &format!("CMD {cmd}")]);
    }
    for port in image.expose {
        import.args(["--change", &format!("EXPOSE {port}")]);
    }
    let tarball = rootfs.with_extension("tar");
    sh::run(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&rootfs)
            .args(["-cf"])
            .arg(&tarball)
            .arg("."),
    )?;
    import.arg(&tarball).arg(image.tag);
    let out = import.output().context("running docker import")?;
    if !out.status.success() {
        bail!(
            "docker import {}: {}",
            image.tag,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = fs::remove_dir_all(&rootfs);
    let _ = fs::remove_file(&tarball);
    println!("[images] {}: imported", image.tag);
    Ok(())
}

/// `programs` and every library `ldd` lists for them, sorted (copied at
/// the paths the loader looks for, links followed).
fn host_files(programs: &[&str]) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for program in programs {
        files.push((*program).to_owned());
        let listed = sh::output("ldd", &[program])
            .with_context(|| format!("ldd {program}: is it installed?"))?;
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vDSO has no file.
        for word in listed.split_whitespace().filter(|w| w.starts_with('/')) {
            files.push(word.to_owned());
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn sha256(path: &Path) -> Result<String> {
    let out = sh::output("sha256sum", &[&path.display().to_string()])
        .with_context(|| format!("hashing {}", path.display()))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_owned())
}

fn tempdir(name: &str) -> Result<std::path::PathBuf> {
    let dir = sh::workspace_root().join("target/images").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
