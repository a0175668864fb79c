//! How real agents keep tasks' secrets, and where join tokens are not: a
//! secret's file has the spec's owner and mode on a tmpfs of its task's
//! own that is read-only and small, under a run dir only root can enter;
//! an owner that is not a number is refused when the service is created;
//! and no agent's or manager's command line in the lab carries a token.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use shoal_tests::{cmd, containers_of, lab_cluster::LabCluster};

const WAIT: Duration = Duration::from_secs(30);

/// One line of `/proc/PID/mountinfo`: mount point, per-mount options,
/// file system type and the file system's own (super block) options.
#[derive(Debug)]
struct MountInfo {
    point: String,
    options: Vec<String>,
    fstype: String,
    super_options: Vec<String>,
}

fn mountinfo(pid: &str) -> Result<Vec<MountInfo>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    text.lines()
        .map(|line| {
            // ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL…] - TYPE SOURCE SUPER
            let (left, right) = line
                .split_once(" - ")
                .with_context(|| format!("mountinfo line {line:?}"))?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let split = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
            Ok(MountInfo {
                point: left.get(4).context("no mount point")?.to_string(),
                options: split(left.get(5).context("no options")?),
                fstype: right.first().context("no type")?.to_string(),
                super_options: split(right.get(2).context("no super options")?),
            })
        })
        .collect()
}

/// The host path Docker bind-mounted at `destination` in `container`.
fn bind_source(container: &str, destination: &str) -> Result<PathBuf> {
    let format = format!(
        "{{{{range .Mounts}}}}{{{{if eq .Destination \"{destination}\"}}}}{{{{.Source}}}}{{{{end}}}}{{{{end}}}}"
    );
    let source = cmd::stdout("docker", &["inspect", "-f", &format, container])?;
    let source = source.trim();
    ensure!(
        !source.is_empty(),
        "{container} has no mount at {destination}"
    );
    Ok(PathBuf::from(source))
}

fn mode_and_owner(path: &Path) -> Result<(u32, u32, u32)> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    Ok((meta.permissions().mode() & 0o7777, meta.uid(), meta.gid()))
}

#[test]
fn a_secret_has_its_owner_and_mode_on_a_small_read_only_tmpfs_only_root_reaches() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), "sesame")?;
    let path = file.path().display().to_string();
    cluster.shoal(&["secret", "create", "pw", &path])?;
    cluster.shoal(&["config", "create", "app_conf", &path])?;

    // Owners are numbers: a name is refused at create time, naming the
    // service, the secret and the field; so is a mode past 0o7777.
    let refused = cluster
        .shoal(&[
            "service",
            "create",
            "--name",
            "named",
            "--secret",
            "source=pw,target=pw,uid=root",
            "shoal/echo:1",
        ])
        .expect_err("a secret owned by a user name was accepted")
        .to_string();
    ensure!(
        refused.contains(r#"service named: invalid secret pw uid "root": a number is expected"#),
        "{refused}"
    );
    let refused = cluster
        .shoal(&[
            "service",
            "create",
            "--name",
            "odd",
            "--config",
            "source=app_conf,target=/app.conf,mode=17777",
            "shoal/echo:1",
        ])
        .expect_err("a config mode past 0o7777 was accepted")
        .to_string();
    ensure!(
        refused.contains("service odd: invalid config app_conf mode 17777"),
        "{refused}"
    );
    ensure!(
        cluster.json_rows(&["service", "ls"])?.is_empty(),
        "a refused service was created"
    );

    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "vault",
        "--secret",
        "source=pw,target=pw,uid=1000,gid=1001,mode=0440",
        "--config",
        "source=app_conf,target=/etc/app.conf,uid=33,gid=34,mode=0404",
        "shoal/echo:1",
    ])?;
    let container = cluster.wait("vault running", WAIT, || {
        containers_of("vault").ok()?.into_iter().next()
    })?;
    let pid = cmd::stdout("docker", &["inspect", "-f", "{{.State.Pid}}", &container])?;
    let pid = pid.trim();
    let root = PathBuf::from(format!("/proc/{pid}/root"));

    // The files, as the container sees them.
    ensure!(std::fs::read_to_string(root.join("run/secrets/pw"))? == "sesame");
    let secret = mode_and_owner(&root.join("run/secrets/pw"))?;
    ensure!(
        secret == (0o440, 1000, 1001),
        "secret mode {:o} uid {} gid {}",
        secret.0,
        secret.1,
        secret.2
    );
    let config = mode_and_owner(&root.join("etc/app.conf"))?;
    ensure!(
        config == (0o404, 33, 34),
        "config mode {:o} uid {} gid {}",
        config.0,
        config.1,
        config.2
    );

    // Each is a tmpfs, read-only in the container and as a file system
    // (sealed: nothing on the host adds to it either), sized to its
    // files: the floor of 4 pages, not a fixed 1 MiB.
    let mounts = mountinfo(pid)?;
    for point in ["/run/secrets/pw", "/etc/app.conf"] {
        let mount = mounts
            .iter()
            .rfind(|m| m.point == point)
            .with_context(|| format!("no mount at {point} in the container"))?;
        ensure!(mount.fstype == "tmpfs", "{point}: {mount:?}");
        ensure!(
            mount.options.iter().any(|o| o == "ro"),
            "{point} is writable in the container: {mount:?}"
        );
        ensure!(
            mount.super_options.iter().any(|o| o == "ro"),
            "{point}'s tmpfs is writable: {mount:?}"
        );
        let size = mount
            .super_options
            .iter()
            .find_map(|o| {
                o.strip_prefix("size=")?
                    .strip_suffix('k')?
                    .parse::<u64>()
                    .ok()
            })
            .with_context(|| format!("{point}: no size in {mount:?}"))?;
        ensure!(size <= 64, "{point}'s tmpfs is {size} KiB for 12 bytes");
    }

    // On the host: the task's dir, its `tasks` dir and the agent's run dir
    // are root's alone.
    let source = bind_source(&container, "/run/secrets/pw")?;
    let task_dir = source.parent().context("the secret's dir")?;
    let tasks = task_dir.parent().context("the tasks dir")?;
    let run_dir = tasks.parent().context("the run dir")?;
    ensure!(
        tasks.file_name().is_some_and(|n| n == "tasks"),
        "{}",
        source.display()
    );
    for dir in [task_dir, tasks, run_dir] {
        let (mode, uid, gid) = mode_and_owner(dir)?;
        ensure!(
            (mode, uid, gid) == (0o700, 0, 0),
            "{} is mode {mode:04o} uid {uid} gid {gid}",
            dir.display()
        );
    }
    let err = std::fs::write(task_dir.join("more"), "x").expect_err("the tmpfs took a file");
    ensure!(
        err.kind() == std::io::ErrorKind::ReadOnlyFilesystem,
        "{err}"
    );
    Ok(())
}

/// The arguments of every running process whose program is one of `names`.
fn command_lines(names: &[&str]) -> Result<Vec<(String, Vec<String>)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may exit meanwhile.
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let program = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .map(|n| n.to_string_lossy().into_owned());
        if let Some(program) = program.filter(|p| names.contains(&p.as_str())) {
            found.push((program, args));
        }
    }
    Ok(found)
}

#[test]
fn no_agent_or_manager_has_a_join_token_on_its_command_line() -> Result<()> {
    // Two managers: the second joined with the manager token, every agent
    // with the worker token.
    let cluster = LabCluster::start(2, true)?;
    let nodes = cluster.lab.nodes().unwrap_or(0);
    let found = command_lines(&["shoal-agent", "shoal-manager"])?;
    let count = |name: &str| found.iter().filter(|(p, _)| p == name).count();
    ensure!(
        count("shoal-agent") >= nodes && count("shoal-manager") >= 2,
        "expected {nodes} agents and 2 managers, found {found:?}"
    );
    for (program, args) in &found {
        ensure!(
            !args.iter().any(|a| a.contains("SHTKN-")),
            "{program} has a join token on its command line: {args:?}"
        );
    }
    // The joining manager's and the agents' tokens came from files.
    ensure!(
        found
            .iter()
            .filter(|(p, _)| p == "shoal-agent")
            .all(|(_, args)| args.iter().any(|a| a == "--token-file")),
        "{found:?}"
    );
    Ok(())
}
