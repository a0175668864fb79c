//! `cargo xtask lab …`: the multi-host lab (see lab/src/lib.rs for its shape).

use anyhow::{Result, bail};
use clap::Subcommand;
use shoal_lab::{Lab, cmd};

use crate::{build, images};

#[derive(Subcommand)]
pub enum LabCommand {
    /// Create the lab, or complete it (idempotent).
    /// With managers, it first builds the binaries and the test images, and
    /// returns once every manager answers and every node is Ready.
    Up {
        /// Number of nodes n1..nN (1 to 9), each a network namespace on the lab's underlay.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Managers on n1..nM (the first inits the cluster, the others join), and
        /// an agent on every node; 0: no cluster.
        #[arg(long, default_value_t = 1)]
        managers: usize,
    },
    /// Remove every namespace, link, process, container and pin of the lab.
    Down,
    /// Show the hosts, processes and the state directory.
    Status,
    /// Run a command in a lab host's network namespace: `lab exec n1 -- ip addr`.
    Exec {
        /// n1..nN, client (or the namespace name).
        host: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run the `shoal` CLI against the lab cluster: `lab shoal -- node ls`.
    Shoal {
        /// The `shoal` arguments, after `--`.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Kill every Shoal process of a node with SIGKILL.
    Kill {
        /// The node (n1..nN).
        node: String,
    },
    /// Start a node's killed Shoal processes again, from their data directories.
    Start {
        /// The node (n1..nN).
        node: String,
    },
    /// Cut a node's underlay link.
    Isolate {
        /// The node (n1..nN).
        node: String,
    },
    /// Restore a node's underlay link.
    Heal {
        /// The node (n1..nN).
        node: String,
    },
}

/// Where the lab finds Shoal's binaries: the workspace's debug build.
fn bin_dir() -> std::path::PathBuf {
    crate::sh::workspace_root().join("target/debug")
}

pub fn run(command: LabCommand) -> Result<()> {
    let lab = Lab::new();
    match command {
        LabCommand::Up { nodes, managers } => {
            if managers > 0 {
                // Every binary the cluster runs, and the images its tasks
                // use: each is quick when nothing changed.
                build::run(&build::BuildArgs::default())?;
                images::build_all()?;
            }
            lab.up(nodes, &mut |line| println!("[lab] {line}"))?;
            if managers > 0 {
                lab.start_cluster(managers, &bin_dir(), &mut |line| println!("[lab] {line}"))?;
            }
            println!("[lab] up: state in {}", lab.state().path().display());
            if managers > 0 {
                println!("[lab] cluster: cargo xtask lab shoal -- node ls");
            }
        }
        LabCommand::Shoal { args } => {
            let host = lab.shoal_host()?;
            let status = std::process::Command::new(bin_dir().join("shoal"))
                .arg("--host")
                .arg(&host)
                .args(&args)
                .status()?;
            if let Some(code) = status.code().filter(|c| *c != 0) {
                std::process::exit(code);
            }
        }
        LabCommand::Kill { node } => {
            for name in lab.kill_node(&node)? {
                println!("[lab] killed {name}");
            }
        }
        LabCommand::Start { node } => {
            for name in lab.start_node(&node)? {
                println!("[lab] started {name}");
            }
            let host = lab.host(&node)?;
            lab.wait_ready(
                &bin_dir(),
                &[host],
                shoal_lab::readiness::READY_TIMEOUT,
                &mut |line| println!("[lab] {line}"),
            )?;
        }
        LabCommand::Isolate { node } => {
            lab.isolate(&node)?;
            println!("[lab] {node}: underlay link down");
        }
        LabCommand::Heal { node } => {
            lab.heal(&node)?;
            println!("[lab] {node}: underlay link up");
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
