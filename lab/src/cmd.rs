//! Running the system tools the lab is built with (iproute2, nsenter, docker),
//! with errors that say which command failed and what it printed.

use std::process::{Command, Output};

use crate::LabError;

/// Runs a command to completion; a non-zero exit is an error carrying stderr.
pub fn run(program: &str, args: &[&str]) -> Result<Output, LabError> {
    run_with_env(program, args, &[])
}

/// [`run`] with extra environment variables.
pub fn run_with_env(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Output, LabError> {
    let output = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .map_err(|source| LabError::Spawn {
            command: render(program, args),
            source,
        })?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: render(program, args),
            status: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

/// Runs a command and returns its stdout as text.
pub fn stdout(program: &str, args: &[&str]) -> Result<String, LabError> {
    Ok(String::from_utf8_lossy(&run(program, args)?.stdout).into_owned())
}

/// `ip` inside a namespace (`ip -n NS …`).
pub fn ip_in(netns: &str, args: &[&str]) -> Result<Output, LabError> {
    let mut full = vec!["-n", netns];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// A command builder that runs `program` in the network namespace `netns`
/// only: unlike `ip netns exec`, nsenter keeps the mount namespace, so the
/// host's bpffs and Docker socket stay visible.
pub fn in_netns(netns: &str, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{netns}"))
        .arg("--")
        .arg(program);
    command
}

fn render(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}
