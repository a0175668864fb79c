//! The host `shoal swarm init|join|leave` run on, as `cargo xtask install`
//! set it up: the daemons' binaries beside `shoal`, their configuration
//! in `/etc/shoal` (`SHOAL_CONFDIR`), their state in `/var/lib/shoal`
//! (`SHOAL_STATEDIR`), and systemd running their units. The daemons stay
//! `shoal-manager` and `shoal-agent`: these commands prepare their state
//! with the daemons' own subcommands, write their env files and token, and
//! hand them to systemd.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// Docker's words, for a host already in a cluster or in none.
pub const ALREADY_IN_SWARM: &str = "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.";
pub const NOT_IN_SWARM: &str = "This node is not part of a swarm";

#[derive(Debug, Clone)]
pub struct Host {
    pub bindir: PathBuf,
    pub confdir: PathBuf,
    pub statedir: PathBuf,
}

impl Host {
    /// The installed layout, or the one `SHOAL_CONFDIR` / `SHOAL_STATEDIR`
    /// name (an install with other `--sysconfdir`, or a test's).
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        let bindir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_owned))
            .unwrap_or_default();
        Self {
            bindir,
            confdir: var("SHOAL_CONFDIR", "/etc/shoal"),
            statedir: var("SHOAL_STATEDIR", "/var/lib/shoal"),
        }
    }

    pub fn manager_dir(&self) -> PathBuf {
        self.statedir.join("manager")
    }

    pub fn agent_dir(&self) -> PathBuf {
        self.statedir.join("agent")
    }

    /// A manager of a cluster keeps its state here.
    pub fn has_manager(&self) -> bool {
        self.manager_dir().join("manager.json").exists()
    }

    /// An agent that joined keeps its certificate here.
    pub fn has_agent(&self) -> bool {
        self.agent_dir()
            .join("certificates")
            .join("current")
            .exists()
    }

    pub fn refuse_if_joined(&self) -> Result<()> {
        if self.has_manager() || self.has_agent() {
            bail!(ALREADY_IN_SWARM);
        }
        Ok(())
    }

    /// A daemon's binary: beside `shoal`, else on the PATH.
    pub fn binary(&self, name: &str) -> PathBuf {
        let beside = self.bindir.join(name);
        if beside.exists() {
            beside
        } else {
            PathBuf::from(name)
        }
    }

    /// Runs a daemon's subcommand to its end (with `stdin` fed, if any);
    /// its stdout, or an error quoting its stderr.
    pub fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String> {
        let binary = self.binary(program);
        let mut child = Command::new(&binary)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", binary.display()))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            bail!(
                "{program} {} failed: {last}",
                args.first().map(String::as_str).unwrap_or("")
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn env_file(&self, name: &str) -> PathBuf {
        self.confdir.join(name)
    }

    /// Sets `name` in an env file (`manager.env`, `agent.env`), keeping
    /// every other line.
    pub fn set_env(&self, file: &str, name: &str, value: &str) -> Result<()> {
        let path = self.env_file(file);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::create_dir_all(&self.confdir)
            .with_context(|| format!("creating {}", self.confdir.display()))?;
        std::fs::write(&path, set_env(&text, name, value))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// A value of an env file, unquoted.
    pub fn env(&self, file: &str, name: &str) -> Option<String> {
        env_value(&std::fs::read_to_string(self.env_file(file)).ok()?, name)
    }

    /// The worker token where the agent's unit reads it, owner-only.
    pub fn write_token(&self, token: &str) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(&self.confdir)
            .with_context(|| format!("creating {}", self.confdir.display()))?;
        let path = self.confdir.join("join-token");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(file, "{token}")?;
        Ok(())
    }
}

/// `text` with `NAME=value` in place of its `NAME=` line (or added).
pub fn set_env(text: &str, name: &str, value: &str) -> String {
    let line = if value.contains(char::is_whitespace) {
        format!("{name}=\"{value}\"")
    } else {
        format!("{name}={value}")
    };
    let prefix = format!("{name}=");
    let mut replaced = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(&prefix) && !replaced {
                replaced = true;
                line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !replaced {
        out.push(line);
    }
    out.join("\n") + "\n"
}

/// The value of `NAME=` in an env file, its quotes taken off.
pub fn env_value(text: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix(&prefix))
        .next_back()
        .map(|v| v.trim().trim_matches('"').to_owned())
}

/// `opts` (words) with `flag VALUE` set: replaced if there, else added.
pub fn with_flag(opts: &str, flag: &str, value: &str) -> String {
    let mut words: Vec<String> = opts.split_whitespace().map(str::to_owned).collect();
    match words.iter().position(|w| w == flag) {
        Some(i) if i + 1 < words.len() => words[i + 1] = value.to_owned(),
        Some(_) => words.push(value.to_owned()),
        None => words.extend([flag.to_owned(), value.to_owned()]),
    }
    words.join(" ")
}

/// Runs the daemons' systemd units: systemd when it runs this host (or
/// the program `SHOAL_SYSTEMCTL` names), else nothing.
pub struct Units {
    systemctl: Option<String>,
}

impl Units {
    pub fn detect() -> Self {
        let systemctl = std::env::var("SHOAL_SYSTEMCTL").ok().or_else(|| {
            Path::new("/run/systemd/system")
                .exists()
                .then(|| "systemctl".to_owned())
        });
        Self { systemctl }
    }

    fn systemctl(&self, args: &[&str]) -> Result<bool> {
        let Some(program) = &self.systemctl else {
            return Ok(false);
        };
        let status = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("running {program}"))?;
        Ok(status.success())
    }

    /// `systemctl enable --now shoal-UNIT`; without systemd, says what to
    /// run instead.
    pub fn start(&self, unit: &str, by_hand: &str) -> Result<()> {
        if self.systemctl.is_none() {
            bail!(
                "systemd does not run this host: start the {unit} yourself ({by_hand}), or set SHOAL_SYSTEMCTL"
            );
        }
        if !self.systemctl(&["enable", "--now", &format!("shoal-{unit}.service")])? {
            bail!("systemctl enable --now shoal-{unit} failed (see systemctl status shoal-{unit})");
        }
        Ok(())
    }

    /// Stops a unit and keeps it from starting again, if systemd has it;
    /// true if it did.
    pub fn stop(&self, unit: &str) -> Result<bool> {
        let name = format!("shoal-{unit}.service");
        let known = self.systemctl(&["is-enabled", "--quiet", &name])?
            || self.systemctl(&["is-active", "--quiet", &name])?;
        if !known {
            return Ok(false);
        }
        if !self.systemctl(&["disable", "--now", &name])? {
            bail!("systemctl disable --now {name} failed");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_are_replaced_or_added_and_read_back() {
        let text = "# managers\nSHOAL_MANAGERS=\n\nSHOAL_AGENT_OPTS=\"--label a=b\"\n";
        let set = set_env(text, "SHOAL_MANAGERS", "10.0.0.11:2377 10.0.0.12:2377");
        assert!(
            set.contains("SHOAL_MANAGERS=\"10.0.0.11:2377 10.0.0.12:2377\"\n"),
            "{set}"
        );
        assert!(set.starts_with("# managers\n"));
        assert_eq!(
            env_value(&set, "SHOAL_MANAGERS").as_deref(),
            Some("10.0.0.11:2377 10.0.0.12:2377")
        );
        assert_eq!(
            env_value(&set, "SHOAL_AGENT_OPTS").as_deref(),
            Some("--label a=b")
        );
        let added = set_env("", "SHOAL_MANAGER_OPTS", "--listen-addr 10.0.0.11:2377");
        assert_eq!(
            added,
            "SHOAL_MANAGER_OPTS=\"--listen-addr 10.0.0.11:2377\"\n"
        );
        assert_eq!(env_value("", "X"), None);
    }

    #[test]
    fn a_flag_in_opts_is_replaced_or_added() {
        assert_eq!(with_flag("", "--listen-addr", "a:1"), "--listen-addr a:1");
        assert_eq!(
            with_flag("--hostname h --listen-addr a:1", "--listen-addr", "b:2"),
            "--hostname h --listen-addr b:2"
        );
        assert_eq!(
            with_flag("--label x", "--advertise-addr", "10.0.0.5"),
            "--label x --advertise-addr 10.0.0.5"
        );
    }

    #[test]
    fn a_host_in_a_swarm_is_told_so() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host {
            bindir: dir.path().into(),
            confdir: dir.path().join("etc"),
            statedir: dir.path().join("lib"),
        };
        host.refuse_if_joined().unwrap();
        std::fs::create_dir_all(host.agent_dir().join("certificates/current")).unwrap();
        assert_eq!(
            host.refuse_if_joined().unwrap_err().to_string(),
            ALREADY_IN_SWARM
        );
        host.write_token("SHTKN-1-x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("etc/join-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
