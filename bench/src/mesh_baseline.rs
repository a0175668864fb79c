//! The mesh bench's same-run comparison with an older build (`--baseline-bin-dir`,
//! which `cargo xtask bench mesh --baseline-rev REV` builds): in every
//! round, after today's rows, the lab is brought up afresh with the old
//! binaries, the same `web` service is created, and the two default rows
//! are measured again with the same wrk settings: direct (host mode, n1's
//! task) and Shoal ingress at n3. Today's rows are then printed against
//! the old default round by round, raw and against each build's own
//! direct figure (which takes out what the machine's load did between the
//! two labs of a round).

use std::path::Path;

use anyhow::Result;
use shoal_lab::Lab;

use crate::{
    mesh::{settle, start_with_web},
    mesh_rounds::{self, Row, Runs},
};

/// The rows measured with the old build, direct first.
pub const ROWS: [Row; 2] = [
    Row {
        name: "direct (host mode, n1's task)",
        url: "http://192.0.2.11:8081/",
    },
    Row {
        name: "shoal ingress (old default)",
        url: "http://192.0.2.13:8080/",
    },
];

/// Starts the lab afresh with the old build and its `web` service.
pub fn start(lab: &Lab, old_bins: &Path) -> Result<()> {
    lab.down(&mut |_| {})?;
    start_with_web(lab, old_bins)?;
    settle();
    Ok(())
}

/// Prints the old build's rows, then `today`'s rows (name, runs) against
/// its default; `direct`: today's direct row, from the same rounds.
pub fn print(old_bins: &Path, old: &[Runs; 2], direct: &Runs, today: &[(&str, &Runs)]) {
    let title = format!("path (baseline: {})", old_bins.display());
    let rows: Vec<(&str, &Runs)> = ROWS.iter().map(|r| r.name).zip(old).collect();
    mesh_rounds::print_table(&title, &rows);
    println!();
    let [old_direct, old_default] = old;
    mesh_rounds::print_ratio(
        "baseline direct / today's direct (the machine between the two labs of a round)",
        mesh_rounds::ratio_between_labs(old_direct, direct),
        None,
    );
    for (name, runs) in today {
        mesh_rounds::print_ratio(
            &format!("{name} / baseline default"),
            mesh_rounds::ratio_between_labs(runs, old_default),
            Some(0.95),
        );
        mesh_rounds::print_ratio(
            "  the same, each against its own lab's direct",
            mesh_rounds::ratio_against_direct((runs, direct), (old_default, old_direct)),
            Some(0.95),
        );
    }
}
