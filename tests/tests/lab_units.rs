//! The installed systemd units run the real daemons, and README's "Run it on
//! your hosts" works as written. Each lab node is installed and set up with
//! that section's own commands, read from README.md, and its processes are
//! started with the exact command lines of the units in deploy/systemd:
//! `ExecStart=` parsed, the install paths filled in for the node,
//! `EnvironmentFile=` values read as systemd reads them, and nothing else in
//! the environment but systemd's `PATH`. The cluster formed that way must
//! have every node Ready and serve a stack through the routing mesh.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use shoal_lab::{
    cluster,
    readiness::{self, READY_TIMEOUT},
    state::ProcessRecord,
    systemd::{InstallPaths, Invocation, Unit},
    topology::{self, Host},
};
use shoal_tests::{Lab, NODES, bin, lab, lab_cluster::LabCluster};

/// The section's example managers, in order.
const README_MANAGERS: [&str; 3] = ["10.0.0.11", "10.0.0.12", "10.0.0.13"];
/// How the section writes a join token.
const README_TOKEN: &str = "SHTKN-1-…";
/// Where a host keeps its configuration (`cargo xtask install`'s default).
const HOST_CONFDIR: &str = "/etc/shoal";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_owned()
}

/// The command lines of README's "Run it on your hosts" section.
fn readme_commands() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("README.md"))?;
    let start = text
        .find("\n## Run it on your hosts\n")
        .context("README has no \"Run it on your hosts\" section")?;
    let section = &text[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];
    let mut commands = Vec::new();
    let mut in_code = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if in_code && !line.trim().is_empty() && !line.starts_with('#') {
            // Drop a trailing comment.
            let command = line.split("  #").next().unwrap_or(line).trim();
            commands.push(command.to_owned());
        }
    }
    Ok(commands)
}

/// The one README command that starts with `prefix`.
fn readme_command(commands: &[String], prefix: &str) -> Result<String> {
    match commands
        .iter()
        .filter(|c| c.starts_with(prefix))
        .collect::<Vec<_>>()
        .as_slice()
    {
        [one] => Ok((*one).clone()),
        found => bail!(
            "README's section has {} commands starting with {prefix:?}: {found:?}",
            found.len()
        ),
    }
}

/// A README command for this lab: its example addresses, token and
/// configuration directory replaced.
fn localise(command: &str, addresses: &[(&str, String)], token: &str, confdir: &Path) -> String {
    let mut out = command
        .replace(README_TOKEN, token)
        .replace(HOST_CONFDIR, &confdir.display().to_string());
    for (example, lab) in addresses {
        out = out.replace(example, lab);
    }
    out
}

/// Each README manager address as the lab node of the same rank.
fn lab_managers() -> Vec<(&'static str, String)> {
    README_MANAGERS
        .iter()
        .enumerate()
        .map(|(i, example)| (*example, Host::node(i + 1).addr.to_string()))
        .collect()
}

/// A lab node's installation: its own paths (the socket where the lab
/// looks for a node's manager), units rendered as `cargo xtask install`
/// renders them.
struct NodeInstall {
    host: Host,
    paths: InstallPaths,
    units: PathBuf,
}

impl NodeInstall {
    fn new(lab: &Lab, host: Host, bins: &Path) -> Result<Self> {
        let dir = cluster::node_dir(lab, &host);
        let node = Self {
            paths: InstallPaths {
                bindir: bins.to_owned(),
                confdir: dir.join("etc"),
                statedir: dir.join("lib"),
                rundir: dir.clone(),
            },
            units: dir.join("units"),
            host,
        };
        for (from, to) in [("systemd", &node.units), ("shoal", &node.paths.confdir)] {
            std::fs::create_dir_all(to)?;
            for entry in std::fs::read_dir(repo().join("deploy").join(from))? {
                let path = entry?.path();
                let text = node.paths.render(
                    &path.display().to_string(),
                    &std::fs::read_to_string(&path)?,
                )?;
                std::fs::write(to.join(path.file_name().context("a file")?), text)?;
            }
        }
        Ok(node)
    }

    /// Appends lab-only settings to one of the node's env files.
    fn add_env(&self, file: &str, lines: &[String]) -> Result<()> {
        use std::io::Write;
        let path = self.paths.confdir.join(file);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
        writeln!(
            f,
            "# The lab's own, after the installed file's\n{}",
            lines.join("\n")
        )?;
        Ok(())
    }

    /// The CLI's environment on this node: its manager's socket, no
    /// progress display.
    fn cli_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "SHOAL_HOST".into(),
                format!(
                    "unix://{}",
                    self.paths.rundir.join("manager.sock").display()
                ),
            ),
            ("SHOAL_DETACH".into(), "true".into()),
        ]
    }

    /// Runs a README command (`shoal…` from the bin dir) in the node's
    /// network namespace with `extra` arguments; returns its stdout.
    fn run(&self, command: &str, extra: &[String]) -> Result<String> {
        let mut words = command.split_whitespace();
        let program = words.next().context("an empty command")?;
        let output = shoal_tests::cmd::in_netns(
            &self.host.netns,
            &self.paths.bindir.join(program).display().to_string(),
        )
        .args(words)
        .args(extra)
        .envs(self.cli_env())
        .output()?;
        ensure!(
            output.status.success(),
            "{command} {} on {}: {}",
            extra.join(" "),
            self.host.name,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs a README line `echo TEXT | COMMAND` as `run` runs COMMAND,
    /// with TEXT on its standard input (how a token stays out of `ps`).
    fn run_piped(&self, line: &str, extra: &[String]) -> Result<String> {
        use std::io::Write;
        let (input, command) = line
            .strip_prefix("echo ")
            .and_then(|rest| rest.split_once(" | "))
            .with_context(|| format!("{line:?} is not `echo TEXT | COMMAND`"))?;
        let mut words = command.split_whitespace();
        let program = words.next().context("an empty command")?;
        let mut child = shoal_tests::cmd::in_netns(
            &self.host.netns,
            &self.paths.bindir.join(program).display().to_string(),
        )
        .args(words)
        .args(extra)
        .envs(self.cli_env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
        child
            .stdin
            .take()
            .context("a piped stdin")?
            .write_all(format!("{input}\n").as_bytes())?;
        let output = child.wait_with_output()?;
        ensure!(
            output.status.success(),
            "{command} {} on {}: {}",
            extra.join(" "),
            self.host.name,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs a README shell line (pipes, sed) on the node's files.
    fn shell(&self, line: &str) -> Result<()> {
        let output = Command::new("sh").args(["-c", line]).output()?;
        ensure!(
            output.status.success(),
            "`{line}`: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// `systemctl start shoal-UNIT`: the unit's ExecStart= as systemd would
    /// run it, recorded as the lab's `NODE-UNIT` process.
    fn start(&self, lab: &Lab, unit: &str) -> Result<(ProcessRecord, Invocation)> {
        let file = self.units.join(format!("shoal-{unit}.service"));
        let invocation = Unit::read(&file)?.invocation()?;
        let record = lab.state().spawn_service(
            &format!("{}-{unit}", self.host.name),
            &self.host.netns,
            &invocation.argv,
            &invocation.env,
        )?;
        Ok((record, invocation))
    }
}

/// A running process's arguments, as the kernel has them.
fn cmdline(pid: i32) -> Result<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

#[test]
fn nodes_set_up_as_readme_says_and_run_by_the_units_serve_a_stack() -> Result<()> {
    let lab = lab()?;
    lab.stop_cluster()?;
    let bins = bin("shoal-manager")?
        .parent()
        .context("bin dir")?
        .to_owned();
    for name in ["shoal", "shoal-agent", "shoal-toolbox"] {
        bin(name)?;
    }
    // Stops every process and removes the nodes' files, however it ends.
    let cluster = LabCluster { lab, bins };
    let readme = readme_commands()?;
    let nodes = (1..=NODES)
        .map(|i| NodeInstall::new(&cluster.lab, Host::node(i), &cluster.bins))
        .collect::<Result<Vec<_>>>()?;
    let mut units = Vec::new();

    // Lab-only settings: names (the nodes share the machine's hostname),
    // each node's eBPF tree, the lab's resolver, the lab's container label.
    for node in &nodes {
        node.add_env(
            "manager.env",
            &[format!(
                "SHOAL_MANAGER_OPTS=\"--hostname {}\"",
                node.host.name
            )],
        )?;
    }
    // Where the README's commands write by default, the node writes its own.
    let manager_flags = |node: &NodeInstall| {
        vec![
            "--data-dir".to_owned(),
            node.paths.statedir.join("manager").display().to_string(),
            "--socket".into(),
            node.paths.rundir.join("manager.sock").display().to_string(),
            "--hostname".into(),
            node.host.name.clone(),
        ]
    };

    // 2. The first manager: init, then the unit serves it.
    let first = &nodes[0];
    let init = readme_command(&readme, "shoal-manager init")?;
    let mut flags = manager_flags(first);
    flags.extend([
        "--default-addr-pool".into(),
        shoal_lab::cluster::LAB_ADDR_POOL.into(),
    ]);
    let out = first.run(
        &localise(&init, &lab_managers(), "", &first.paths.confdir),
        &flags,
    )?;
    ensure!(out.contains("Cluster initialized"), "{out}");
    let socket = |node: &NodeInstall| node.paths.rundir.join("manager.sock");
    let (record, invocation) = first.start(&cluster.lab, "manager")?;
    readiness::wait_for_socket(&record, &socket(first), Duration::from_secs(20))?;
    units.push((record, invocation));
    let manager_token = first
        .run(
            &readme_command(&readme, "shoal join-token --quiet manager")?,
            &[],
        )?
        .trim()
        .to_owned();
    let worker_token = first
        .run(
            &readme_command(&readme, "shoal join-token --quiet worker")?,
            &[],
        )?
        .trim()
        .to_owned();

    // 3. The other managers: join, then the unit serves each.
    let join = readme_command(&readme, "echo SHTKN-1-… | shoal-manager join")?;
    for node in &nodes[1..] {
        // The section's second manager stands for "this one".
        let addresses = [
            (README_MANAGERS[1], node.host.addr.to_string()),
            (README_MANAGERS[0], first.host.addr.to_string()),
        ];
        let command = localise(&join, &addresses, &manager_token, &node.paths.confdir);
        node.run_piped(&command, &manager_flags(node))?;
        let (record, invocation) = node.start(&cluster.lab, "manager")?;
        readiness::wait_for_socket(&record, &socket(node), Duration::from_secs(20))?;
        units.push((record, invocation));
    }

    // 4. Every node: the token file, the managers, then the agent's unit.
    let token_line = readme_command(&readme, "echo SHTKN-1-… | install")?;
    let managers_line = readme_command(&readme, "sed -i 's/^SHOAL_MANAGERS=")?;
    for node in &nodes {
        node.shell(&localise(
            &token_line,
            &[],
            &worker_token,
            &node.paths.confdir,
        ))?;
        node.shell(&localise(
            &managers_line,
            &lab_managers(),
            "",
            &node.paths.confdir,
        ))?;
        node.add_env(
            "agent.env",
            &[
                format!(
                    "SHOAL_AGENT_OPTS=\"--hostname {} --container-label {}=1 --dns-upstream {}\"",
                    node.host.name,
                    shoal_lab::CONTAINER_LABEL,
                    topology::UPSTREAM_DNS_ADDR
                ),
                format!("SHOAL_BPFFS={}", Lab::bpffs_root(&node.host).display()),
            ],
        )?;
        units.push(node.start(&cluster.lab, "agent")?);
    }
    let hosts: Vec<Host> = nodes.iter().map(|n| n.host.clone()).collect();
    cluster
        .lab
        .wait_ready(&cluster.bins, &hosts, READY_TIMEOUT, &mut |_| {})?;

    // Each process runs exactly its unit's command line, and the agents'
    // token stays out of it.
    for (record, invocation) in &units {
        ensure!(
            cmdline(record.pid)? == invocation.argv,
            "{} runs {:?}, its unit says {:?}",
            record.name,
            cmdline(record.pid)?,
            invocation.argv
        );
        ensure!(
            !invocation.argv.iter().any(|a| a.contains("SHTKN")),
            "{}: a token on the command line: {:?}",
            record.name,
            invocation.argv
        );
    }
    let agent = &units[NODES].1.argv;
    ensure!(
        agent.ends_with(
            &lab_managers()
                .iter()
                .map(|(_, a)| a.clone())
                .collect::<Vec<_>>()
        ),
        "the agent joins through {agent:?}"
    );

    // 5. Every node Ready, then a stack, served on every node.
    let out = first.run(&readme_command(&readme, "shoal node ls")?, &[])?;
    for node in &nodes {
        ensure!(
            out.lines()
                .any(|l| l.contains(&format!(" {} ", node.host.name)) && l.contains(" Ready ")),
            "{} is not Ready:\n{out}",
            node.host.name
        );
    }
    let deploy = readme_command(&readme, "shoal stack deploy")?;
    let compose = repo().join("tests/stacks/fleetman.yml");
    first.run(
        &deploy.replace("docker-compose.yml", &compose.display().to_string()),
        &[],
    )?;
    cluster.wait("the stack to converge", Duration::from_secs(60), || {
        let rows = cluster.json_rows(&["stack", "services", "app"]).ok()?;
        (rows.len() == 2
            && rows
                .iter()
                .all(|r| r["Replicas"] == "2/2" || r["Replicas"] == "1/1"))
        .then_some(())
    })?;
    let toolbox = bin("shoal-toolbox")?;
    for node in &nodes {
        let url = format!("http://{}:80/", node.host.addr);
        cluster.wait(&format!("{url} to answer"), Duration::from_secs(30), || {
            let out =
                shoal_tests::cmd::in_netns(topology::CLIENT_NS, &toolbox.display().to_string())
                    .args(["http-get", &url])
                    .output()
                    .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains(" 200 ")
                .then_some(())
        })?;
    }
    Ok(())
}

/// The README's commands run with the binaries' defaults (no `--data-dir`
/// on `init`, no `--host` on `shoal`, `leave` without flags): those must be
/// the paths the installed units use.
#[test]
fn the_units_use_the_paths_the_binaries_default_to() -> Result<()> {
    let confdir = tempfile::tempdir()?;
    let paths = InstallPaths {
        confdir: confdir.path().to_owned(),
        ..InstallPaths::host(Path::new("/usr/local"), Path::new("/etc"))
    };
    for env in ["agent.env", "manager.env"] {
        let template = repo().join("deploy/shoal").join(env);
        let text = paths.render(env, &std::fs::read_to_string(template)?)?;
        std::fs::write(confdir.path().join(env), text)?;
    }
    let argv = |unit: &str| -> Result<Vec<String>> {
        let template = repo().join("deploy/systemd").join(unit);
        let text = paths.render(unit, &std::fs::read_to_string(template)?)?;
        Ok(Unit::parse(unit, &text)?.invocation()?.argv)
    };
    let flag = |argv: &[String], name: &str| -> Result<String> {
        let at = argv
            .iter()
            .position(|a| a == name)
            .with_context(|| format!("no {name} in {argv:?}"))?;
        argv.get(at + 1).cloned().context("a value")
    };
    let help = |program: &str, args: &[&str]| -> Result<String> {
        shoal_tests::cmd::stdout(&bin(program)?.display().to_string(), args).map_err(Into::into)
    };

    let manager = argv("shoal-manager.service")?;
    ensure!(
        manager[0] == "/usr/local/bin/shoal-manager" && manager[1] == "run",
        "{manager:?}"
    );
    let init_help = help("shoal-manager", &["init", "--help"])?;
    for name in ["--data-dir", "--socket"] {
        let value = flag(&manager, name)?;
        ensure!(
            init_help.contains(&format!("[default: {value}]")),
            "the unit's {name} {value} is not init's default:\n{init_help}"
        );
    }
    ensure!(flag(&manager, "--socket")? == shoal_api::DEFAULT_SOCKET);

    let agent = argv("shoal-agent.service")?;
    ensure!(
        agent[0] == "/usr/local/bin/shoal-agent" && agent[1] == "join",
        "{agent:?}"
    );
    let leave_help = help("shoal-agent", &["leave", "--help"])?;
    let data_dir = flag(&agent, "--data-dir")?;
    ensure!(
        leave_help.contains(&format!("[default: {data_dir}]")),
        "`leave` would not find the unit's data dir {data_dir}:\n{leave_help}"
    );
    // README writes the token where the unit reads it.
    let token_file = flag(&agent, "--token-file")?;
    ensure!(Path::new(&token_file) == paths.confdir.join("join-token"));
    let host_confdir = InstallPaths::host(Path::new("/usr/local"), Path::new("/etc")).confdir;
    ensure!(host_confdir == Path::new(HOST_CONFDIR));
    let readme = readme_commands()?;
    // Every unit README starts is one `cargo xtask install` installs.
    let started: Vec<&String> = readme
        .iter()
        .filter(|c| c.starts_with("systemctl enable --now "))
        .collect();
    ensure!(started.len() == 3, "{started:?}");
    for command in started {
        let unit = command.trim_start_matches("systemctl enable --now ");
        let file = repo()
            .join("deploy/systemd")
            .join(format!("{unit}.service"));
        ensure!(file.exists(), "`{command}`: no {}", file.display());
    }
    let token_line = readme_command(&readme, "echo SHTKN-1-… | install")?;
    ensure!(
        token_line.ends_with(&format!(" {HOST_CONFDIR}/join-token")),
        "README writes the token with `{token_line}`, the unit reads {HOST_CONFDIR}/join-token"
    );
    Ok(())
}
