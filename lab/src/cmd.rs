//! Running the system tools the lab is built with (iproute2, nsenter, docker),
//! with errors that say which command failed and what it printed.

use std::{
    io::Read,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::LabError;

/// How long any one command may run. Every command the lab runs returns in
/// seconds; one that does not is wedged (Docker 20.10's `rm -f` once waited
/// forever for an exit event its engine had lost), and the caller gets an
/// error naming it well before the test harness kills the whole test.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(90);

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
    let output = output_within(
        Command::new(program).args(args).envs(env.iter().copied()),
        COMMAND_DEADLINE,
    )
    .map_err(|error| match error {
        Waited::Spawn(source) => LabError::Spawn {
            command: render(program, args),
            source,
        },
        Waited::Overran(waited) => LabError::Overran {
            command: render(program, args),
            waited,
        },
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

#[derive(Debug)]
enum Waited {
    Spawn(std::io::Error),
    Overran(Duration),
}

/// `Command::output` with a deadline: past it the child is killed. Its
/// output is read on threads of its own so a full pipe cannot stall it.
fn output_within(command: &mut Command, deadline: Duration) -> Result<Output, Waited> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Waited::Spawn)?;
    let read_all = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read_all(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read_all(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        match child.try_wait().map_err(Waited::Spawn)? {
            Some(status) => break status,
            None if started.elapsed() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Waited::Overran(started.elapsed()));
            }
            // Polling: std has no wait with a timeout, and a lab command is
            // a fork of a short-lived tool, so 20 ms costs nothing.
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_deadline_is_killed_and_named() {
        let started = Instant::now();
        let result = output_within(Command::new("sleep").arg("30"), Duration::from_millis(200));
        assert!(matches!(result, Err(Waited::Overran(w)) if w >= Duration::from_millis(200)));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "killed, not waited for"
        );
    }

    #[test]
    fn output_larger_than_a_pipe_is_read_whole_with_the_exit_code() {
        // 1 MiB on stdout: more than a pipe holds, so the child would block
        // if nothing read it while we wait.
        let output = output_within(
            Command::new("sh").args(["-c", "head -c 1048576 /dev/zero; echo oops >&2; exit 3"]),
            Duration::from_secs(30),
        )
        .expect("ran");
        assert_eq!(output.stdout.len(), 1 << 20);
        assert_eq!(output.stderr, b"oops\n");
        assert_eq!(output.status.code(), Some(3));
    }

    #[test]
    fn run_reports_a_failure_with_its_stderr() {
        let error = run("sh", &["-c", "echo bad thing >&2; exit 2"]).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("bad thing") && text.contains("exit Some(2)"),
            "{text}"
        );
    }
}
