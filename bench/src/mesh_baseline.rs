//! The mesh bench's same-run comparison with an older build (`--baseline-bin-dir`,
//! which `cargo xtask bench mesh --baseline-rev REV` builds): after today's
//! rows, the lab is brought up afresh with the old binaries, the same `web`
//! service is created, and the two default rows are measured again with the
//! same wrk settings: direct (host mode, n1's task) and Shoal ingress at n3.
//! Today's default, Maglev and affinity rows are then printed against the
//! old default, raw and against each build's own direct figure (which takes
//! out what the machine's load did between the two halves of the run).

use std::{path::Path, time::Duration};

use anyhow::Result;
use shoal_lab::Lab;

use crate::mesh::{Wrk, start_with_web, wrk};

/// Measures the old build's default rows and prints the comparisons.
/// `today`: the run's rows, in the bench's order (direct first, the
/// default Shoal row third, Maglev and affinity sixth and seventh).
pub fn compare(
    lab: &Lab,
    old_bins: &Path,
    (connections, seconds): (usize, u64),
    today: &[(&str, Wrk, Wrk)],
) -> Result<()> {
    println!(
        "\nbaseline: the lab again, with the binaries in {}",
        old_bins.display()
    );
    lab.down(&mut |_| {})?;
    start_with_web(lab, old_bins)?;
    // Let every node's tables follow the last push.
    std::thread::sleep(Duration::from_secs(2));
    let measure = |url: &str| -> Result<(Wrk, Wrk)> {
        Ok((
            wrk(url, connections, 2, seconds, false)?,
            wrk(url, connections, 2, seconds, true)?,
        ))
    };
    let old_direct = measure("http://192.0.2.11:8081/")?;
    let old_shoal = measure("http://192.0.2.13:8080/")?;
    println!(
        "\n{:<32} {:>12} {:>10} {:>14} {:>10} {:>7}",
        "path (baseline build)", "keep-alive/s", "p99 ms", "new conns/s", "p99 ms", "errors"
    );
    for (name, (keep, close)) in [
        ("direct (host mode, n1's task)", &old_direct),
        ("shoal ingress (old default)", &old_shoal),
    ] {
        super::mesh::print_row(name, keep, close);
    }
    let (Some((_, today_direct_k, today_direct_c)), Some(_)) = (today.first(), today.get(2)) else {
        anyhow::bail!("the run's rows are missing");
    };
    println!(
        "baseline direct / today's direct: keep-alive {:.2}x, new connections {:.2}x (the machine between the halves)",
        old_direct.0.rps / today_direct_k.rps,
        old_direct.1.rps / today_direct_c.rps
    );
    for index in [2, 5, 6] {
        let Some((name, keep, close)) = today.get(index) else {
            continue;
        };
        let ratio = |now: &Wrk, direct: &Wrk, old: &Wrk, old_direct: &Wrk| {
            (
                now.rps / old.rps,
                (now.rps / direct.rps) / (old.rps / old_direct.rps),
            )
        };
        let k = ratio(keep, today_direct_k, &old_shoal.0, &old_direct.0);
        let c = ratio(close, today_direct_c, &old_shoal.1, &old_direct.1);
        println!(
            "{name} / baseline default: keep-alive {:.2}x ({:.2}x against each build's direct), new connections {:.2}x ({:.2}x) (target >= 0.95)",
            k.0, k.1, c.0, c.1
        );
    }
    Ok(())
}
