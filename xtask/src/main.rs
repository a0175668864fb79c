//! `cargo xtask …`: everything a developer or CI does beyond plain cargo.

mod baseline;
mod bench;
mod build;
mod chaos;
mod ci;
mod ci_tests;
mod demo;
mod demo_metrics;
mod flags;
mod fuzz;
mod images;
mod install;
mod lab;
mod setup;
mod sh;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Shoal's developer tasks", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks (idempotent; one line per step).
    Setup,
    /// Build the eBPF object, embed it in shoal-agent, and build the binaries.
    Build(build::BuildArgs),
    /// Install the binaries and systemd units.
    Install(install::InstallArgs),
    /// Build the test images (shoal/echo:1, shoal/echo:2, shoal/toolbox) into Docker.
    Images,
    /// Run the multi-host lab (network namespaces on this machine).
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Run the main job: a lab cluster serving a demo (see README).
    Demo(demo::DemoArgs),
    /// Inject faults in a seeded order into a 5-node lab cluster under load; check and report.
    Chaos(chaos::ChaosArgs),
    /// Run a benchmark against its named peer (release build).
    Bench(bench::BenchArgs),
    /// Measure `shoal`'s coverage of Docker 28's Swarm-mode flags (fails below the minimum).
    Flags(flags::FlagsArgs),
    /// Run the fuzz targets in fuzz/ for a few seconds each (fails on a crash).
    Fuzz(fuzz::FuzzArgs),
    /// Run what CI runs: setup, fmt, clippy, flag coverage, unit tests, lab end-to-end tests.
    Ci,
    /// CI's checks that need no lab (clippy, the eBPF crate's clippy, the
    /// fuzz smoke run): `ci` runs them at idle priority beside the tests.
    #[command(hide = true)]
    CiChecks,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::run(),
        Command::Build(args) => build::run(&args).map(|_| ()),
        Command::Install(args) => install::run(&args),
        Command::Images => images::build_all(),
        Command::Lab(command) => lab::run(command),
        Command::Demo(args) => demo::run(&args),
        Command::Chaos(args) => chaos::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Flags(args) => flags::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Ci => ci::run(),
        Command::CiChecks => ci::checks(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_and_argument_says_what_it_does() {
        shoal_help_check::assert_documented(&super::Cli::command());
    }
}
