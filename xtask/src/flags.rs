//! `cargo xtask flags`: how many of Docker 28's Swarm-mode flags `shoal`
//! has. Reads `docker GROUP --help` for the subcommands of each group
//! (node, service, stack, swarm, secret, config, network), `docker GROUP
//! CMD --help` for their flags, and `shoal GROUP CMD --help` for ours; a
//! flag counts when `shoal` has the same long name. Flags that cannot
//! apply to Shoal are left out, each with its reason ([`EXCLUDED`]).
//! Prints each command's missing flags and the overall figure, and fails
//! below [`MINIMUM_PERCENT`] (raise it as the figure rises: it may only go
//! up).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::sh;

/// Docker's command groups of Swarm mode.
pub const GROUPS: &[&str] = &[
    "node", "service", "stack", "swarm", "secret", "config", "network",
];

/// The figure may not fall below this (percent of the flags that apply).
pub const MINIMUM_PERCENT: f64 = 94.3;

/// Flags of Docker's that cannot apply to Shoal: (command, flag, reason).
pub const EXCLUDED: &[(&str, &str, &str)] = &[
    (
        "service create",
        "credential-spec",
        "Windows only (managed service accounts)",
    ),
    (
        "service update",
        "credential-spec",
        "Windows only (managed service accounts)",
    ),
    (
        "service create",
        "isolation",
        "Windows only: process/hyperv isolation; Linux has only 'default'",
    ),
    (
        "service update",
        "isolation",
        "Windows only: process/hyperv isolation; Linux has only 'default'",
    ),
    (
        "service create",
        "with-registry-auth",
        "registry: Shoal sends no registry credentials to nodes",
    ),
    (
        "service update",
        "with-registry-auth",
        "registry: Shoal sends no registry credentials to nodes",
    ),
    (
        "stack deploy",
        "with-registry-auth",
        "registry: Shoal sends no registry credentials to nodes",
    ),
    (
        "service create",
        "no-resolve-image",
        "registry: Shoal never queries a registry for digests",
    ),
    (
        "service update",
        "no-resolve-image",
        "registry: Shoal never queries a registry for digests",
    ),
    (
        "stack deploy",
        "resolve-image",
        "registry: Shoal never queries a registry for digests",
    ),
];

#[derive(clap::Args, Default)]
pub struct FlagsArgs {
    /// The Docker CLI to measure against (28.x); default: `docker` on the PATH.
    #[arg(long)]
    docker: Option<PathBuf>,
    /// The shoal binary to measure; default: build it and use target/debug/shoal.
    #[arg(long)]
    shoal: Option<PathBuf>,
}

impl FlagsArgs {
    /// Measures the `shoal` binary at `path` against the `docker` on the PATH.
    pub fn of_binary(path: PathBuf) -> Self {
        Self {
            docker: None,
            shoal: Some(path),
        }
    }
}

/// One flag: its long name, and its one-letter form if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub long: String,
    pub short: Option<char>,
}

/// The flags listed under `Options:` in a `--help` text (Docker's or
/// clap's layout), `--help` itself left out.
pub fn parse_flags(help: &str) -> Vec<Flag> {
    let mut flags = Vec::new();
    let mut in_options = false;
    for line in help.lines() {
        if !line.starts_with(' ') {
            in_options = line.trim_end().ends_with("Options:") || line.trim_end() == "Flags:";
            continue;
        }
        if !in_options {
            continue;
        }
        let text = line.trim_start();
        let (short, rest) = match text.strip_prefix('-') {
            Some(after) if !after.starts_with('-') => {
                let mut chars = after.chars();
                let short = chars.next();
                let rest = chars.as_str().trim_start_matches(',').trim_start();
                (short, rest)
            }
            Some(_) => (None, text),
            None => continue,
        };
        let Some(long) = rest.strip_prefix("--") else {
            continue;
        };
        let long: String = long
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if long.is_empty() || long == "help" {
            continue;
        }
        flags.push(Flag { long, short });
    }
    flags
}

/// The subcommands under `Commands:` of a group's `--help`.
pub fn parse_commands(help: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if !line.starts_with(' ') {
            in_commands = line.trim_end() == "Commands:";
            continue;
        }
        if in_commands && let Some(name) = line.split_whitespace().next() {
            commands.push(name.to_owned());
        }
    }
    commands
}

/// What one Docker command has that `shoal` lacks.
#[derive(Debug)]
pub struct Coverage {
    pub command: String,
    pub applies: usize,
    pub present: usize,
    pub missing: Vec<String>,
    /// Present, but Docker's one-letter form is not ours.
    pub short_differs: Vec<String>,
    /// `shoal` has no such command at all.
    pub no_command: bool,
}

/// Compares one command's flags.
pub fn compare(command: &str, docker: &[Flag], shoal: Option<&[Flag]>) -> Coverage {
    let applies: Vec<&Flag> = docker
        .iter()
        .filter(|f| {
            !EXCLUDED
                .iter()
                .any(|(c, flag, _)| *c == command && *flag == f.long)
        })
        .collect();
    let ours = shoal.unwrap_or(&[]);
    let mut missing = Vec::new();
    let mut short_differs = Vec::new();
    for flag in &applies {
        match ours.iter().find(|o| o.long == flag.long) {
            None => missing.push(format!("--{}", flag.long)),
            Some(o) if flag.short.is_some() && o.short != flag.short => {
                short_differs.push(format!("-{}", flag.short.unwrap_or('?')))
            }
            Some(_) => {}
        }
    }
    Coverage {
        command: command.to_owned(),
        applies: applies.len(),
        present: applies.len() - missing.len(),
        missing,
        short_differs,
        no_command: shoal.is_none(),
    }
}

/// Docker's CLI hides flags newer than the API of the engine it reaches,
/// so it is asked with no engine to reach: every flag of 28.x shows.
const NO_ENGINE: (&str, &str) = ("DOCKER_HOST", "unix:///nonexistent/shoal-flags/docker.sock");

fn help_of(program: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .arg("--help")
        .env(NO_ENGINE.0, NO_ENGINE.1)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn docker_version(docker: &Path) -> Result<String> {
    let output = Command::new(docker)
        .args(["version", "--format", "{{.Client.Version}}"])
        .env(NO_ENGINE.0, NO_ENGINE.1)
        .output()
        .with_context(|| format!("running {}", docker.display()))?;
    // The client's version prints even when no daemon answers.
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !version.starts_with("28.") {
        bail!(
            "flag coverage is measured against Docker 28's CLI; {} is {version:?} \
             (set --docker to a 28.x client)",
            docker.display()
        );
    }
    Ok(version)
}

fn shoal_binary(args: &FlagsArgs) -> Result<PathBuf> {
    if let Some(path) = &args.shoal {
        return Ok(path.clone());
    }
    sh::run(sh::cargo().args(["build", "-p", "shoal-cli", "--bin", "shoal"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| sh::workspace_root().join("target"));
    Ok(target.join("debug").join("shoal"))
}

/// Measures every command of [`GROUPS`].
pub fn measure(docker: &Path, shoal: &Path) -> Result<Vec<Coverage>> {
    let mut all = Vec::new();
    for group in GROUPS {
        let help = help_of(docker, &[group])
            .with_context(|| format!("`{} {group} --help` failed", docker.display()))?;
        for command in parse_commands(&help) {
            let docker_help = help_of(docker, &[group, &command])
                .with_context(|| format!("`docker {group} {command} --help` failed"))?;
            let shoal_help = help_of(shoal, &[group, &command]);
            let ours = shoal_help.as_deref().map(parse_flags);
            all.push(compare(
                &format!("{group} {command}"),
                &parse_flags(&docker_help),
                ours.as_deref(),
            ));
        }
    }
    Ok(all)
}

/// The report, and the figure in percent.
pub fn report(all: &[Coverage]) -> (String, f64) {
    let mut out = String::new();
    let width = all.iter().map(|c| c.command.len()).max().unwrap_or(0);
    for c in all {
        let mut line = format!("{:<width$}  {:>3}/{:<3}", c.command, c.present, c.applies);
        if c.no_command {
            line.push_str("  no such shoal command");
        }
        if !c.missing.is_empty() {
            line.push_str(&format!("  missing: {}", c.missing.join(" ")));
        }
        if !c.short_differs.is_empty() {
            line.push_str(&format!(
                "  short form differs: {}",
                c.short_differs.join(" ")
            ));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str("excluded (cannot apply to Shoal):\n");
    for (command, flag, reason) in EXCLUDED {
        out.push_str(&format!("  {command} --{flag}: {reason}\n"));
    }
    let applies: usize = all.iter().map(|c| c.applies).sum();
    let present: usize = all.iter().map(|c| c.present).sum();
    let percent = if applies == 0 {
        0.0
    } else {
        100.0 * present as f64 / applies as f64
    };
    out.push_str(&format!(
        "flag coverage: {present} of {applies} flags that apply ({percent:.1}%); minimum {MINIMUM_PERCENT:.1}%\n"
    ));
    (out, percent)
}

/// The Docker 28 CLI: the one asked for, else `docker` on the PATH, else
/// the one machines of this kind ship in /usr/local/bin (the engine's
/// package may put an older client first on the PATH).
fn docker_28(args: &FlagsArgs) -> Result<(PathBuf, String)> {
    if let Some(docker) = &args.docker {
        return Ok((docker.clone(), docker_version(docker)?));
    }
    let on_path = PathBuf::from("docker");
    match docker_version(&on_path) {
        Ok(version) => Ok((on_path, version)),
        Err(error) => {
            let shipped = PathBuf::from("/usr/local/bin/docker");
            docker_version(&shipped)
                .map(|version| (shipped, version))
                .map_err(|_| error)
        }
    }
}

pub fn run(args: &FlagsArgs) -> Result<()> {
    let (docker, version) = docker_28(args)?;
    let shoal = shoal_binary(args)?;
    println!("[flags] Docker {version} against {}", shoal.display());
    let all = measure(&docker, &shoal)?;
    let (text, percent) = report(&all);
    print!("{text}");
    if percent < MINIMUM_PERCENT {
        bail!("flag coverage {percent:.1}% is below its minimum of {MINIMUM_PERCENT:.1}%");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_LS: &str = "
Usage:  docker node ls [OPTIONS]

List nodes in the swarm

Aliases:
  docker node ls, docker node list

Options:
  -f, --filter filter   Filter output based on conditions provided
      --format string   Format output using a custom template:
                        'table':            Print output in table format
                        with column headers (default)
  -q, --quiet           Only display IDs
";

    const SHOAL_LS: &str = "List nodes in the cluster.

Usage: shoal node ls [OPTIONS]

Options:
  -f, --filter <FILTER>   Filter output based on conditions provided
  -H, --host <HOST>       The manager to talk to
      --format <FORMAT>   Format output [default: table]
  -h, --help              Print help
";

    #[test]
    fn flags_are_read_from_both_layouts() {
        let docker = parse_flags(DOCKER_LS);
        assert_eq!(
            docker,
            [
                Flag {
                    long: "filter".into(),
                    short: Some('f')
                },
                Flag {
                    long: "format".into(),
                    short: None
                },
                Flag {
                    long: "quiet".into(),
                    short: Some('q')
                },
            ]
        );
        let shoal = parse_flags(SHOAL_LS);
        assert_eq!(shoal.len(), 3, "{shoal:?}");
        assert!(shoal.iter().all(|f| f.long != "help"));
    }

    #[test]
    fn commands_are_read_from_a_groups_help() {
        let help = "
Usage:  docker node COMMAND

Manage Swarm nodes

Commands:
  demote      Demote one or more nodes from manager in the swarm
  inspect     Display detailed information on one or more nodes

Run 'docker node COMMAND --help' for more information on a command.
";
        assert_eq!(parse_commands(help), ["demote", "inspect"]);
    }

    #[test]
    fn missing_flags_excluded_ones_and_missing_commands_are_counted() {
        let docker = parse_flags(DOCKER_LS);
        let shoal = parse_flags(SHOAL_LS);
        let c = compare("node ls", &docker, Some(&shoal));
        assert_eq!((c.present, c.applies), (2, 3));
        assert_eq!(c.missing, ["--quiet"]);

        let create = [
            Flag {
                long: "isolation".into(),
                short: None,
            },
            Flag {
                long: "init".into(),
                short: None,
            },
        ];
        let c = compare("service create", &create, None);
        assert_eq!((c.present, c.applies), (0, 1), "--isolation does not apply");
        assert!(c.no_command);
        let (text, percent) = report(&[c]);
        assert!(
            text.contains("service create    0/1    no such shoal command  missing: --init"),
            "{text}"
        );
        assert!(
            text.contains("service create --isolation: Windows only"),
            "{text}"
        );
        assert_eq!(percent, 0.0);
    }

    #[test]
    fn a_short_form_that_differs_is_reported() {
        let docker = [Flag {
            long: "detach".into(),
            short: Some('d'),
        }];
        let shoal = [Flag {
            long: "detach".into(),
            short: None,
        }];
        let c = compare("service scale", &docker, Some(&shoal));
        assert_eq!((c.present, c.short_differs.len()), (1, 1));
    }
}
