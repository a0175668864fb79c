//! Secrets and configs for one task: written to a tmpfs mounted for that
//! task alone (never to the node's disk), sized to what it holds and made
//! read-only once written ([`super::task_dir`]), then bind-mounted
//! read-only into the container — secrets at `/run/secrets/<target>`,
//! configs at their target path — with the uid, gid and mode the service
//! asked for; a templated one's content is expanded for the task first
//! ([`super::templated`]). The task's `/etc/resolv.conf` is written beside
//! them.

use std::{
    borrow::Cow,
    collections::HashMap,
    io::Write,
    net::Ipv4Addr,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use anyhow::{Context, Result};
use bollard::models::{Mount, MountType};
use shoal_api::{
    file_target, mount,
    pb::{AssignmentSet, FileTarget, Task},
    template,
};

use super::{
    task_dir::{self, TaskDir},
    templated,
};

/// One file of the task's directory, before it is written.
struct Planned<'a> {
    /// The file's name in the task's directory.
    name: String,
    data: Cow<'a, [u8]>,
    uid: u32,
    gid: u32,
    mode: u32,
    /// Where the container sees it.
    target: String,
}

/// The uid, gid and mode of a secret's or config's file; the manager
/// refused bad ones already, so an error here means a spec from elsewhere.
fn owner(kind: &str, name: &str, file: &FileTarget) -> Result<(u32, u32, u32)> {
    let id = |what: &str, text: &str| {
        file_target::owner_id(text)
            .map_err(|problem| anyhow::anyhow!("{kind} {name}: {what} {text:?}: {problem}"))
    };
    let mode = file_target::mode(file.mode)
        .map_err(|problem| anyhow::anyhow!("{kind} {name}: mode {:o}: {problem}", file.mode))?;
    Ok((id("uid", &file.uid)?, id("gid", &file.gid)?, mode))
}

/// The task's secrets and configs, with their data from `set`.
fn plan<'a>(
    task: &Task,
    set: &'a AssignmentSet,
    context: &template::Context,
) -> Result<Vec<Planned<'a>>> {
    let container = task
        .spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .cloned()
        .unwrap_or_default();
    let mut planned = Vec::new();
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
        let (uid, gid, mode) = owner("secret", &r.secret_name, &file)?;
        let spec = secret.spec.as_ref();
        let data = templated::content(
            "secret",
            &r.secret_name,
            spec.map_or(&[][..], |s| &s.data),
            spec.map_or("", |s| &s.template_driver),
            task,
            set,
            context,
        )?;
        planned.push(Planned {
            name: format!("secret-{i}"),
            data,
            uid,
            gid,
            mode,
            target: if name.starts_with('/') {
                name
            } else {
                format!("/run/secrets/{name}")
            },
        });
    }
    for (i, r) in container.configs.iter().enumerate() {
        let config = set
            .configs
            .iter()
            .find(|c| c.meta.as_ref().is_some_and(|m| m.id == r.config_id))
            .with_context(|| format!("config {} was not delivered with the task", r.config_name))?;
        let file = r.file.clone().unwrap_or_default();
        let (uid, gid, mode) = owner("config", &r.config_name, &file)?;
        let spec = config.spec.as_ref();
        let data = templated::content(
            "config",
            &r.config_name,
            spec.map_or(&[][..], |c| &c.data),
            spec.map_or("", |c| &c.template_driver),
            task,
            set,
            context,
        )?;
        planned.push(Planned {
            name: format!("config-{i}"),
            data,
            uid,
            gid,
            mode,
            // A relative target is under `/`, as Docker places configs.
            target: if file.name.is_empty() {
                format!("/{}", r.config_name)
            } else if file.name.starts_with('/') {
                file.name.clone()
            } else {
                format!("/{}", file.name)
            },
        });
    }
    Ok(planned)
}

/// Writes a new file: created `0600` (never through a symlink), filled,
/// then given its owner and mode (chown before chmod, which would clear
/// setuid bits otherwise).
fn write_file(path: &Path, data: &[u8], uid: u32, gid: u32, mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
        .with_context(|| format!("chown {uid}:{gid} {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    Ok(())
}

/// Writes the task's secrets, configs and, given the node's DNS server on
/// the task's network, its `/etc/resolv.conf`; returns the mounts for
/// them. A task with secrets or configs gets a tmpfs sized to them, sealed
/// read-only once written. `context` expands templated contents.
pub fn prepare(
    run_dir: &Path,
    task: &Task,
    set: &AssignmentSet,
    nameserver: Option<Ipv4Addr>,
    context: &template::Context,
) -> Result<Vec<Mount>> {
    let id = task
        .meta
        .as_ref()
        .map(|m| m.id.as_str())
        .unwrap_or_default();
    let dir = TaskDir::of(run_dir, id)?;
    let planned = plan(task, set, context)?;
    let container = task
        .spec
        .as_ref()
        .and_then(|s| s.container.clone())
        .unwrap_or_default();
    let resolv = nameserver.map(|ns| super::engine_options::resolv_conf(ns, &container));
    if planned.is_empty() && resolv.is_none() {
        return Ok(Vec::new());
    }
    let tmpfs = !planned.is_empty();
    if tmpfs {
        let lengths = planned.iter().map(|p| p.data.len());
        let size = task_dir::tmpfs_size(lengths.chain(resolv.as_ref().map(String::len)));
        dir.mount_tmpfs(size, planned.len() + usize::from(resolv.is_some()))?;
    } else {
        dir.create()?;
    }
    let mut mounts = Vec::new();
    for p in &planned {
        let source = dir.path().join(&p.name);
        write_file(&source, &p.data, p.uid, p.gid, p.mode)?;
        mounts.push(bind(&source, &p.target));
    }
    if let Some(text) = resolv {
        let path = dir.path().join("resolv.conf");
        // A retried task without a tmpfs finds the last try's file.
        let _ = std::fs::remove_file(&path);
        write_file(&path, text.as_bytes(), 0, 0, 0o644)?;
        mounts.push(bind(&path, "/etc/resolv.conf"));
    }
    if tmpfs {
        dir.seal()?;
    }
    Ok(mounts)
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
    match TaskDir::of(run_dir, task_id) {
        Ok(dir) => dir.remove(),
        Err(error) => tracing::warn!(%error, "not removing a task's files"),
    }
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
            // One pair from the `volume-label`/`volume-opt` option, any
            // number from the mount's own maps (compose's declarations).
            let pairs = |key: &str, more: &std::collections::BTreeMap<String, String>| {
                let mut map: HashMap<String, String> = option(key)
                    .and_then(|kv| kv.split_once('='))
                    .map(|(k, v)| HashMap::from([(k.to_owned(), v.to_owned())]))
                    .unwrap_or_default();
                map.extend(more.iter().map(|(k, v)| (k.clone(), v.clone())));
                (!map.is_empty()).then_some(map)
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
                    labels: pairs("volume-label", &m.volume_labels),
                    driver_config: pairs("volume-opt", &m.volume_driver_opts).map(|options| {
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

#[cfg(test)]
mod tests {
    //! These mount real tmpfs file systems: they need root, as the agent does.

    use std::os::unix::fs::MetadataExt;

    use shoal_api::pb::{ContainerSpec, Meta, Secret, SecretReference, SecretSpec, TaskSpec};

    use super::*;

    fn task_with(id: &str, file: FileTarget) -> (Task, AssignmentSet) {
        let task = Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    secrets: vec![SecretReference {
                        secret_id: "s1".into(),
                        secret_name: "pw".into(),
                        file: Some(file),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let set = AssignmentSet {
            secrets: vec![Secret {
                meta: Some(Meta {
                    id: "s1".into(),
                    ..Default::default()
                }),
                spec: Some(SecretSpec {
                    name: "pw".into(),
                    data: b"hunter2".to_vec(),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        };
        (task, set)
    }

    #[test]
    fn declared_volume_labels_and_options_reach_the_volume() {
        let mut mount = shoal_api::pb::Mount {
            r#type: "volume".into(),
            source: "app_data".into(),
            target: "/data".into(),
            ..Default::default()
        };
        mount.options.insert("volume-label".into(), "one=1".into());
        mount
            .volume_labels
            .insert("com.docker.stack.namespace".into(), "app".into());
        mount.volume_labels.insert("tier".into(), "db".into());
        mount
            .volume_driver_opts
            .insert("type".into(), "tmpfs".into());
        mount
            .volume_driver_opts
            .insert("device".into(), "tmpfs".into());
        let task = Task {
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    mounts: vec![mount],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = service_mounts(&task)[0].volume_options.clone().unwrap();
        let labels = options.labels.unwrap();
        assert_eq!(labels.len(), 3);
        assert_eq!(labels["tier"], "db");
        assert_eq!(labels["one"], "1");
        let driver = options.driver_config.unwrap();
        assert_eq!(driver.options.unwrap()["type"], "tmpfs");
    }

    /// The mount options of the file system mounted at `dir`.
    fn mount_of(dir: &Path) -> Option<(String, String)> {
        let wanted = dir.display().to_string();
        std::fs::read_to_string("/proc/self/mounts")
            .ok()?
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&wanted.as_str()))
            .map(|f| (f[2].to_owned(), f[3].to_owned()))
    }

    #[test]
    fn secrets_land_on_a_small_sealed_tmpfs_with_their_owner_and_mode() {
        let run = tempfile::tempdir().unwrap();
        task_dir::secure_run_dir(run.path()).unwrap();
        let file = FileTarget {
            name: "pw".into(),
            uid: "1000".into(),
            gid: "1001".into(),
            mode: 0o440,
        };
        let (task, set) = task_with("t1", file);
        let mounts = prepare(
            run.path(),
            &task,
            &set,
            Some(Ipv4Addr::new(10, 0, 0, 2)),
            &Default::default(),
        )
        .unwrap();
        let dir = TaskDir::of(run.path(), "t1").unwrap();
        let result = std::panic::catch_unwind(|| {
            let targets: Vec<_> = mounts.iter().filter_map(|m| m.target.clone()).collect();
            assert_eq!(targets, ["/run/secrets/pw", "/etc/resolv.conf"]);
            let secret = dir.path().join("secret-0");
            assert_eq!(std::fs::read(&secret).unwrap(), b"hunter2");
            let meta = std::fs::metadata(&secret).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid(), meta.mode() & 0o7777),
                (1000, 1001, 0o440)
            );
            let (fstype, options) = mount_of(dir.path()).expect("a tmpfs on the task's dir");
            assert_eq!(fstype, "tmpfs");
            let options: Vec<&str> = options.split(',').collect();
            assert!(
                options.contains(&"ro") && options.contains(&"mode=700"),
                "{options:?}"
            );
            // Two small files: the floor of 4 pages.
            let size = format!("size={}k", task_dir::tmpfs_size([]) / 1024);
            assert!(options.contains(&size.as_str()), "{options:?}");
            // Sealed: not even root adds a file.
            let err = std::fs::write(dir.path().join("more"), "x").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        });
        remove(run.path(), "t1");
        assert!(mount_of(dir.path()).is_none() && !dir.path().exists());
        result.unwrap();
    }

    #[test]
    fn a_retried_task_gets_a_fresh_tmpfs() {
        let run = tempfile::tempdir().unwrap();
        task_dir::secure_run_dir(run.path()).unwrap();
        let (task, set) = task_with("t2", FileTarget::default());
        prepare(run.path(), &task, &set, None, &Default::default()).unwrap();
        let again = prepare(run.path(), &task, &set, None, &Default::default());
        let dir = TaskDir::of(run.path(), "t2").unwrap();
        let meta = std::fs::metadata(dir.path().join("secret-0"));
        remove(run.path(), "t2");
        again.unwrap();
        // Docker's defaults: root, 0444.
        let meta = meta.unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (0, 0, 0o444)
        );
    }

    #[test]
    fn bad_owners_and_task_ids_write_nothing() {
        let run = tempfile::tempdir().unwrap();
        task_dir::secure_run_dir(run.path()).unwrap();
        let file = FileTarget {
            uid: "root".into(),
            ..Default::default()
        };
        let (task, set) = task_with("t3", file);
        let err = prepare(run.path(), &task, &set, None, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(r#"secret pw: uid "root": a number"#),
            "{err}"
        );
        assert!(!run.path().join("tasks/t3").exists());
        for id in ["../../escape", "a/b", ""] {
            let (task, set) = task_with(id, FileTarget::default());
            let err = prepare(run.path(), &task, &set, None, &Default::default())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("invalid task id"), "{id:?}: {err}");
        }
        assert!(!run.path().join("escape").exists());
        let tasks: Vec<_> = std::fs::read_dir(run.path().join("tasks"))
            .unwrap()
            .collect();
        assert!(tasks.is_empty(), "{tasks:?}");
    }
}
