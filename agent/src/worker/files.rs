//! Secrets and configs for one task: written to a tmpfs mounted for that
//! task alone (never to the node's disk) and bind-mounted read-only into
//! the container — secrets at `/run/secrets/<target>`, configs at their
//! target path — with the uid, gid and mode the service asked for.

use std::{
    collections::HashMap,
    ffi::CString,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use bollard::models::{Mount, MountType};
use shoal_api::{
    mount,
    pb::{AssignmentSet, FileTarget, Task},
};

/// The task's tmpfs directory under `run_dir`.
pub fn task_dir(run_dir: &Path, task_id: &str) -> PathBuf {
    run_dir.join("tasks").join(task_id)
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("a path with a NUL byte")
}

fn mount_tmpfs(dir: &Path) -> Result<()> {
    let target = c_path(dir)?;
    let (source, fstype) = (c"tmpfs", c"tmpfs");
    let options = c"size=1m,mode=0755";
    // SAFETY: mount(2) with valid NUL-terminated strings; the agent is root
    // and owns `dir`. There is no safe wrapper in the dependencies, and this
    // is the only mount the agent makes.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting a tmpfs at {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn is_mounted(dir: &Path) -> bool {
    let wanted = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(wanted.as_str()))
        })
        .unwrap_or(false)
}

fn write_file(path: &Path, data: &[u8], file: &FileTarget) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    let mode = if file.mode == 0 { 0o444 } else { file.mode };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let uid: u32 = file.uid.parse().unwrap_or(0);
    let gid: u32 = file.gid.parse().unwrap_or(0);
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    Ok(())
}

/// Writes the task's secrets and configs; returns the mounts for them.
pub fn prepare(run_dir: &Path, task: &Task, set: &AssignmentSet) -> Result<Vec<Mount>> {
    let container = task
        .spec
        .as_ref()
        .and_then(|s| s.container.clone())
        .unwrap_or_default();
    if container.secrets.is_empty() && container.configs.is_empty() {
        return Ok(Vec::new());
    }
    let id = task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
    let dir = task_dir(run_dir, &id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if !is_mounted(&dir) {
        mount_tmpfs(&dir)?;
    }
    let mut mounts = Vec::new();
    for (i, r) in container.secrets.iter().enumerate() {
        let secret = set
            .secrets
            .iter()
            .find(|s| s.meta.as_ref().is_some_and(|m| m.id == r.secret_id))
            .with_context(|| format!("secret {} was not delivered with the task", r.secret_name))?;
        let file = r.file.clone().unwrap_or_default();
        let name = if file.name.is_empty() {
            r.secret_name.clone()
        } else {
            file.name.clone()
        };
        let source = dir.join(format!("secret-{i}"));
        write_file(
            &source,
            &secret.spec.clone().unwrap_or_default().data,
            &file,
        )?;
        let target = if name.starts_with('/') {
            name
        } else {
            format!("/run/secrets/{name}")
        };
        mounts.push(bind(&source, &target));
    }
    for (i, r) in container.configs.iter().enumerate() {
        let config = set
            .configs
            .iter()
            .find(|c| c.meta.as_ref().is_some_and(|m| m.id == r.config_id))
            .with_context(|| format!("config {} was not delivered with the task", r.config_name))?;
        let file = r.file.clone().unwrap_or_default();
        // A relative target is under `/`, as Docker places configs.
        let target = if file.name.is_empty() {
            format!("/{}", r.config_name)
        } else if file.name.starts_with('/') {
            file.name.clone()
        } else {
            format!("/{}", file.name)
        };
        let source = dir.join(format!("config-{i}"));
        write_file(
            &source,
            &config.spec.clone().unwrap_or_default().data,
            &file,
        )?;
        mounts.push(bind(&source, &target));
    }
    Ok(mounts)
}

/// The task's `/etc/resolv.conf`: the node's DNS server on the task's
/// network, so service names resolve (written beside its secrets).
pub fn resolv_conf(run_dir: &Path, task_id: &str, nameserver: std::net::Ipv4Addr) -> Result<Mount> {
    let dir = task_dir(run_dir, task_id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("resolv.conf");
    std::fs::write(&path, format!("nameserver {nameserver}\noptions ndots:0\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    Ok(bind(&path, "/etc/resolv.conf"))
}

fn bind(source: &Path, target: &str) -> Mount {
    Mount {
        target: Some(target.to_owned()),
        source: Some(source.display().to_string()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        ..Default::default()
    }
}

/// Unmounts and removes the task's tmpfs, if it has one.
pub fn remove(run_dir: &Path, task_id: &str) {
    let dir = task_dir(run_dir, task_id);
    if is_mounted(&dir)
        && let Ok(target) = c_path(&dir)
    {
        // SAFETY: umount2(2) on a path we mounted; MNT_DETACH lets it go
        // even while a dying container still holds a bind of it.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The service's `--mount`s as Docker mounts. Named volumes use the local
/// driver; Docker creates them on first use and keeps them when the task is
/// replaced.
pub fn service_mounts(task: &Task) -> Vec<Mount> {
    let container = task
        .spec
        .as_ref()
        .and_then(|s| s.container.clone())
        .unwrap_or_default();
    container
        .mounts
        .iter()
        .map(|m| {
            let typ = match m.r#type.as_str() {
                "bind" => MountType::BIND,
                "tmpfs" => MountType::TMPFS,
                _ => MountType::VOLUME,
            };
            // The manager checked each option against its type
            // (`shoal_api::mount::check_option`); these read them the same way.
            let option = |key: &str| m.options.get(key).map(String::as_str);
            let pair = |key: &str| {
                option(key)
                    .and_then(|kv| kv.split_once('='))
                    .map(|(k, v)| HashMap::from([(k.to_owned(), v.to_owned())]))
            };
            let tmpfs_options =
                (typ == MountType::TMPFS).then(|| bollard::models::MountTmpfsOptions {
                    size_bytes: option("tmpfs-size").and_then(mount::parse_size),
                    mode: option("tmpfs-mode").and_then(mount::parse_mode),
                    ..Default::default()
                });
            let bind_options =
                option("bind-propagation")
                    .and_then(|p| p.parse().ok())
                    .map(|propagation| bollard::models::MountBindOptions {
                        propagation: Some(propagation),
                        ..Default::default()
                    });
            let volume_options =
                (typ == MountType::VOLUME).then(|| bollard::models::MountVolumeOptions {
                    no_copy: option("volume-nocopy").and_then(mount::parse_bool),
                    labels: pair("volume-label"),
                    driver_config: pair("volume-opt").map(|options| {
                        bollard::models::MountVolumeOptionsDriverConfig {
                            name: Some("local".into()),
                            options: Some(options),
                        }
                    }),
                    ..Default::default()
                });
            Mount {
                target: Some(m.target.clone()),
                source: (!m.source.is_empty()).then(|| m.source.clone()),
                typ: Some(typ),
                read_only: Some(m.read_only),
                consistency: option("consistency").map(str::to_owned),
                bind_options,
                volume_options,
                tmpfs_options,
                ..Default::default()
            }
        })
        .collect()
}
