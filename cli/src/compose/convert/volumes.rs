//! Mounts: named volumes, bind mounts and tmpfs, short and long syntax.

use std::path::Path;

use shoal_api::pb::Mount;

use crate::compose::{Project, model};

fn is_path(source: &str) -> bool {
    source.starts_with('/') || source.starts_with('.') || source.starts_with('~')
}

fn host_path(project: &Project, source: &str) -> String {
    if let Some(rest) = source.strip_prefix("~/") {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        return Path::new(&home).join(rest).display().to_string();
    }
    let path = project.dir.join(source);
    // Normalise `./x` and `a/../b` without touching the filesystem.
    let mut out = std::path::PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_relative() {
        std::env::current_dir()
            .map(|d| d.join(&out))
            .unwrap_or(out)
            .display()
            .to_string()
    } else {
        out.display().to_string()
    }
}

fn volume_name(project: &Project, stack: &str, name: &str) -> Result<String, String> {
    match project.file.volumes.get(name) {
        None => Err(format!(
            "volume {name:?} is not declared in the top-level volumes"
        )),
        Some(None) => Ok(format!("{stack}_{name}")),
        Some(Some(volume)) => {
            if let Some(driver) = volume.driver.as_deref().filter(|d| *d != "local") {
                return Err(format!(
                    "volume {name:?} uses driver {driver:?}: only local volumes are supported"
                ));
            }
            if !volume.driver_opts.is_empty() {
                return Err(format!("volume {name:?}: driver_opts are not supported"));
            }
            Ok(match &volume.external {
                Some(e) if e.is_external() => e
                    .name()
                    .or(volume.name.as_deref())
                    .unwrap_or(name)
                    .to_owned(),
                _ => volume
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{stack}_{name}")),
            })
        }
    }
}

/// `SOURCE:TARGET[:MODE]` or `TARGET` (an anonymous volume).
pub(super) fn short_volume(project: &Project, stack: &str, text: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => ("", *target, ""),
        [source, target] => (*source, *target, ""),
        [source, target, mode] => (*source, *target, *mode),
        _ => return Err(format!("{text:?}: expected SOURCE:TARGET[:ro]")),
    };
    let mut read_only = false;
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        match m {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "z" | "Z" | "cached" | "delegated" | "consistent" | "nocopy" => {}
            other => {
                return Err(format!(
                    "{text:?}: unknown mode {other:?} (expected ro or rw)"
                ));
            }
        }
    }
    if !target.starts_with('/') {
        return Err(format!("{text:?}: the target must be an absolute path"));
    }
    let (kind, source) = if source.is_empty() {
        ("volume", String::new())
    } else if is_path(source) {
        ("bind", host_path(project, source))
    } else {
        ("volume", volume_name(project, stack, source)?)
    };
    Ok(Mount {
        r#type: kind.into(),
        source,
        target: target.into(),
        read_only,
        options: Default::default(),
    })
}

pub(super) fn long_volume(
    project: &Project,
    stack: &str,
    long: &model::LongVolume,
) -> Result<Mount, String> {
    let mut mount = Mount {
        r#type: long.kind.clone(),
        target: long.target.clone(),
        read_only: long.read_only.is_some_and(|f| f.0),
        ..Default::default()
    };
    if !long.target.starts_with('/') {
        return Err(format!("target {:?} must be an absolute path", long.target));
    }
    match long.kind.as_str() {
        "bind" => {
            let source = long
                .source
                .as_deref()
                .ok_or("a bind mount needs a source")?;
            mount.source = host_path(project, source);
            if let Some(p) = long.bind.as_ref().and_then(|b| b.propagation.as_ref()) {
                mount.options.insert("bind-propagation".into(), p.clone());
            }
        }
        "volume" => {
            if let Some(source) = long.source.as_deref() {
                mount.source = volume_name(project, stack, source)?;
            }
            if long
                .volume
                .as_ref()
                .and_then(|v| v.nocopy)
                .is_some_and(|f| f.0)
            {
                mount.options.insert("volume-nocopy".into(), "true".into());
            }
        }
        "tmpfs" => {
            if let Some(t) = &long.tmpfs {
                if let Some(size) = &t.size {
                    mount.options.insert("tmpfs-size".into(), size.0.clone());
                }
                if let Some(mode) = t.mode {
                    mount
                        .options
                        .insert("tmpfs-mode".into(), format!("{:o}", mode.0));
                }
            }
        }
        other => return Err(format!("type {other:?}: expected bind, volume or tmpfs")),
    }
    Ok(mount)
}
