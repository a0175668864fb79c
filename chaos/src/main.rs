//! `shoal-chaos`: what `cargo xtask chaos` runs (see the crate's docs).

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use shoal_chaos::run::{self, Options};

#[derive(Parser)]
#[command(
    name = "shoal-chaos",
    about = "Faults in a seeded order on a 5-node lab cluster (3 managers) under store writes and mesh load; checks linearizability and address uniqueness, reports failover, node-loss and failed-request figures"
)]
struct Cli {
    /// How long to inject faults (rounds of all five faults; at least one round).
    #[arg(long, default_value_t = 3.0)]
    minutes: f64,
    /// The schedule's seed (printed; the same seed gives the same schedule). Default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Where shoal-manager, shoal-agent, shoal and shoal-toolbox are.
    #[arg(long, default_value = "target/debug")]
    bin_dir: PathBuf,
    /// Concurrent store clients (a failover prober runs besides them).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Leave the lab up at the end.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let options = Options {
        minutes: cli.minutes,
        seed,
        bin_dir: cli.bin_dir,
        clients: cli.clients.max(1),
        keep: cli.keep,
    };
    match run::run(&options) {
        Ok(report) => {
            print!("{report}");
            if report.failures().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("shoal-chaos (seed {seed}): {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_argument_says_what_it_does() {
        shoal_help_check::assert_documented(&super::Cli::command());
    }
}
