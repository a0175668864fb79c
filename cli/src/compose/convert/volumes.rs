//! Mounts from a service's volumes (already in their long form), as
//! Docker's `convertVolumeToMount` makes them: a named volume must be
//! declared and takes its stack name, labels and driver options from the
//! declaration; options of another mount type are refused.

use shoal_api::pb::Mount;

use super::Names;
use crate::compose::{Project, model};

pub(super) fn mount(
    project: &Project,
    names: &Names,
    volume: &model::ServiceVolume,
) -> Result<Mount, String> {
    let mut mount = Mount {
        r#type: volume.kind.clone(),
        source: volume.source.clone(),
        target: volume.target.clone(),
        read_only: volume.read_only,
        ..Default::default()
    };
    if !volume.consistency.is_empty() {
        mount
            .options
            .insert("consistency".into(), volume.consistency.clone());
    }
    let incompatible =
        |what: &str, kind: &str| Err(format!("{what} options are incompatible with type {kind}"));
    match volume.kind.as_str() {
        "volume" | "" => {
            mount.r#type = "volume".into();
            if volume.tmpfs.is_some() {
                return incompatible("tmpfs", "volume");
            }
            if volume.bind.is_some() {
                return incompatible("bind", "volume");
            }
            if volume.volume.as_ref().is_some_and(|v| v.nocopy) {
                mount.options.insert("volume-nocopy".into(), "true".into());
            }
            if volume.source.is_empty() {
                return target(mount);
            }
            let Some(declared) = project.file.volumes.get(&volume.source) else {
                return Err(format!(
                    "undefined volume {:?}: declare it in the top-level volumes",
                    volume.source
                ));
            };
            if project.is_cluster_volume(&volume.source) {
                return Err(format!(
                    "volume {:?} is a cluster (CSI) volume (x-cluster-spec): Shoal's nodes create local volumes only",
                    volume.source
                ));
            }
            mount.source = if declared.name.is_empty() {
                names.scoped(&volume.source)
            } else {
                declared.name.clone()
            };
            if declared.external.external {
                return target(mount);
            }
            if !declared.driver.is_empty() && declared.driver != "local" {
                return Err(format!(
                    "volume {:?} uses driver {:?}: Shoal's nodes create local volumes only",
                    volume.source, declared.driver
                ));
            }
            mount.volume_labels = names.labels(&declared.labels).into_iter().collect();
            mount.volume_driver_opts = declared.driver_opts.clone().into_iter().collect();
        }
        "bind" => {
            if volume.source.is_empty() {
                return Err("invalid bind source, source cannot be empty".into());
            }
            if volume.volume.is_some() {
                return incompatible("volume", "bind");
            }
            if volume.tmpfs.is_some() {
                return incompatible("tmpfs", "bind");
            }
            if let Some(bind) = volume.bind.as_ref().filter(|b| !b.propagation.is_empty()) {
                mount
                    .options
                    .insert("bind-propagation".into(), bind.propagation.clone());
            }
        }
        "tmpfs" => {
            if !volume.source.is_empty() {
                return Err("invalid tmpfs source, source must be empty".into());
            }
            if volume.bind.is_some() {
                return incompatible("bind", "tmpfs");
            }
            if volume.volume.is_some() {
                return incompatible("volume", "tmpfs");
            }
            if let Some(tmpfs) = &volume.tmpfs {
                if tmpfs.size != 0 {
                    mount
                        .options
                        .insert("tmpfs-size".into(), tmpfs.size.to_string());
                }
                if let Some(mode) = tmpfs.mode {
                    mount
                        .options
                        .insert("tmpfs-mode".into(), format!("{mode:o}"));
                }
            }
        }
        "npipe" | "cluster" | "image" => {
            return Err(format!(
                "volume type {:?} is not supported: Shoal mounts volume, bind and tmpfs",
                volume.kind
            ));
        }
        _ => return Err("volume type must be volume, bind, tmpfs, npipe, or cluster".into()),
    }
    target(mount)
}

fn target(mount: Mount) -> Result<Mount, String> {
    if !mount.target.starts_with('/') {
        return Err(format!(
            "invalid mount target {:?}: it must be an absolute path",
            mount.target
        ));
    }
    Ok(mount)
}

/// `tmpfs: /run` or `/run:size=64m,mode=1777`.
pub(super) fn short_tmpfs(text: &str) -> Result<Mount, String> {
    let (path, options) = text.split_once(':').unwrap_or((text, ""));
    let mut mount = Mount {
        r#type: "tmpfs".into(),
        target: path.to_owned(),
        ..Default::default()
    };
    for option in options.split(',').filter(|o| !o.is_empty()) {
        let (k, v) = option.split_once('=').unwrap_or((option, ""));
        let k = match k {
            "size" => "tmpfs-size",
            "mode" => "tmpfs-mode",
            _ => return Err(format!("tmpfs option {k:?}: expected size or mode")),
        };
        mount.options.insert(k.into(), v.into());
    }
    target(mount)
}
