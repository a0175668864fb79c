//! `cargo xtask lab …`: the multi-host lab (see lab/src/lib.rs for its shape).

use anyhow::{Result, bail};
use clap::Subcommand;
use shoal_lab::{Lab, cmd};

#[derive(Subcommand)]
pub enum LabCommand {
    /// Create the lab, or complete it (idempotent).
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// Remove every namespace, link, process, container and pin of the lab.
    Down,
    /// Show the hosts, processes and the state directory.
    Status,
    /// Run a command in a lab host's network namespace: `lab exec n1 -- ip addr`.
    Exec {
        /// n1..nN, client (or the namespace name).
        host: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

pub fn run(command: LabCommand) -> Result<()> {
    let lab = Lab::new();
    match command {
        LabCommand::Up { nodes } => {
            lab.up(nodes, &mut |line| println!("[lab] {line}"))?;
            println!("[lab] up: state in {}", lab.state().path().display());
        }
        LabCommand::Down => lab.down(&mut |line| println!("[lab] {line}"))?,
        LabCommand::Status => print!("{}", lab.status()),
        LabCommand::Exec { host, command } => {
            let host = lab.host(&host)?;
            let (program, args) = command.split_first().expect("clap requires a command");
            let status = cmd::in_netns(&host.netns, program).args(args).status()?;
            // Pass the command's exit code through, as `ip netns exec` does.
            match status.code() {
                Some(0) => {}
                Some(code) => std::process::exit(code),
                None => bail!("{} was killed by a signal ({status})", command.join(" ")),
            }
        }
    }
    Ok(())
}
