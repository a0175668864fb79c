//! The mesh bench's rows, measured in interleaved rounds: every round runs
//! each row once (a keep-alive and a new-connection wrk run), so that what
//! the shared 2-core machine's load does during the bench hits every row
//! alike. A row is reported as the median of its rounds with the min–max,
//! and a ratio of two rows as the median of the per-round ratios (each
//! round's two figures were measured a few seconds apart), with their
//! min–max: a ratio is below its target only when its whole spread is.

use std::fmt;

use anyhow::Result;

use crate::mesh::{Wrk, wrk};

/// A path the client measures.
#[derive(Clone, Copy)]
pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) url: &'static str,
}

/// wrk's settings for every rate run.
#[derive(Clone, Copy)]
pub(crate) struct Rate {
    pub(crate) connections: usize,
    pub(crate) seconds: u64,
}

/// One row's runs: a keep-alive and a new-connection run per round.
#[derive(Default)]
pub(crate) struct Runs {
    pub(crate) keep: Vec<Wrk>,
    pub(crate) close: Vec<Wrk>,
}

impl Runs {
    fn rates(&self, close: bool) -> Vec<f64> {
        let runs = if close { &self.close } else { &self.keep };
        runs.iter().map(|w| w.rps).collect()
    }

    fn p99s(&self, close: bool) -> Vec<f64> {
        let runs = if close { &self.close } else { &self.keep };
        runs.iter().map(|w| w.p99_ms).collect()
    }

    fn errors(&self) -> u64 {
        self.keep.iter().chain(&self.close).map(|w| w.errors).sum()
    }
}

/// Measures every row once, in `rows`' order rotated by `round` so that
/// no row always runs first after a set-up or last before a switch.
/// `around(row, true)` runs before a row and `around(row, false)` after it
/// (for paths that need the lab changed while they are measured).
pub(crate) fn round(
    rows: &[Row],
    runs: &mut [Runs],
    round: usize,
    rate: Rate,
    mut around: impl FnMut(&Row, bool) -> Result<()>,
) -> Result<()> {
    for i in 0..rows.len() {
        let at = (i + round) % rows.len();
        let row = &rows[at];
        around(row, true)?;
        let keep = wrk(row.url, rate.connections, 2, rate.seconds, false);
        let close = wrk(row.url, rate.connections, 2, rate.seconds, true);
        around(row, false)?;
        runs[at].keep.push(keep?);
        runs[at].close.push(close?);
    }
    Ok(())
}

/// Median and min–max of a sample.
#[derive(Clone, Copy)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    pub(crate) fn of(values: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }

    /// Where the spread lies against a lower bound.
    fn verdict(&self, target: f64) -> &'static str {
        if self.min >= target {
            "met"
        } else if self.max < target {
            "BELOW, beyond the spread"
        } else {
            "not settled: the target is inside the spread"
        }
    }
}

/// A ratio as `0.95x [0.90-1.01]`.
struct AsRatio(Spread);

impl fmt::Display for AsRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.2}x [{:.2}-{:.2}]",
            self.0.median, self.0.min, self.0.max
        )
    }
}

/// A rate as `64165 [58012-70110]`.
struct AsRate(Spread);

impl fmt::Display for AsRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{:.0} [{:.0}-{:.0}]", self.0.median, self.0.min, self.0.max);
        f.pad(&text)
    }
}

/// The rate table: per row the median of its rounds and [min-max] of both
/// rates, the median p99s and the errors of every run.
pub(crate) fn print_table(title: &str, rows: &[(&str, &Runs)]) {
    println!(
        "\n{title:<34} {:>22} {:>7} {:>20} {:>7} {:>6}",
        "keep-alive/s [min-max]", "p99 ms", "new conns/s [min-max]", "p99 ms", "errors"
    );
    for (name, runs) in rows {
        let cell = |values: Vec<f64>| Spread::of(&values).map(AsRate);
        let p99 = |values: Vec<f64>| Spread::of(&values).map_or(f64::NAN, |s| s.median);
        let (Some(keep), Some(close)) = (cell(runs.rates(false)), cell(runs.rates(true))) else {
            println!("{name:<34} (not measured)");
            continue;
        };
        println!(
            "{name:<34} {keep:>22} {:>7.2} {close:>20} {:>7.2} {:>6}",
            p99(runs.p99s(false)),
            p99(runs.p99s(true)),
            runs.errors()
        );
    }
}

/// The per-round ratio `a / b` of both rates, as medians with [min-max];
/// rounds pair by index.
pub(crate) fn ratio(a: &Runs, b: &Runs) -> [Option<Spread>; 2] {
    [false, true].map(|close| {
        let per_round: Vec<f64> = a
            .rates(close)
            .iter()
            .zip(b.rates(close))
            .map(|(x, y)| x / y)
            .collect();
        Spread::of(&per_round)
    })
}

/// `(a / a_direct) / (b / b_direct)` per round: the two builds' rows, each
/// against the direct path measured in its own lab just before or after.
pub(crate) fn ratio_against_direct(
    (a, a_direct): (&Runs, &Runs),
    (b, b_direct): (&Runs, &Runs),
) -> [Option<Spread>; 2] {
    [false, true].map(|close| {
        let per_round: Vec<f64> = (a.rates(close).iter().zip(a_direct.rates(close)))
            .zip(b.rates(close).iter().zip(b_direct.rates(close)))
            .map(|((x, xd), (y, yd))| (x / xd) / (y / yd))
            .collect();
        Spread::of(&per_round)
    })
}

/// Prints `label: keep-alive R [min-max], new connections R [min-max]`,
/// with the verdict of each against `target` (a lower bound) if given.
pub(crate) fn print_ratio(label: &str, [keep, close]: [Option<Spread>; 2], target: Option<f64>) {
    let show = |s: Option<Spread>| match (s, target) {
        (None, _) => "n/a".to_owned(),
        (Some(s), None) => AsRatio(s).to_string(),
        (Some(s), Some(t)) => format!("{} ({})", AsRatio(s), s.verdict(t)),
    };
    let target = target.map_or(String::new(), |t| format!(" [target >= {t}]"));
    println!(
        "{label}: keep-alive {}, new connections {}{target}",
        show(keep),
        show(close)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(keep: &[f64], close: &[f64]) -> Runs {
        let w = |rps: f64| Wrk {
            rps,
            p99_ms: 1.0,
            errors: 0,
        };
        Runs {
            keep: keep.iter().copied().map(w).collect(),
            close: close.iter().copied().map(w).collect(),
        }
    }

    #[test]
    fn median_of_odd_and_even_samples_and_the_spread() {
        let s = Spread::of(&[5.0, 1.0, 3.0]).expect("three values");
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0]).expect("four values");
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn ratio_is_the_median_of_per_round_ratios_not_of_medians() {
        // The machine halves its speed in round 2: both rows see it.
        let a = runs(&[90.0, 45.0, 90.0], &[10.0, 5.0, 10.0]);
        let b = runs(&[100.0, 50.0, 100.0], &[10.0, 5.0, 10.0]);
        let [keep, close] = ratio(&a, &b);
        let keep = keep.expect("keep-alive ratio");
        assert!((keep.median - 0.9).abs() < 1e-9);
        assert!((keep.max - keep.min).abs() < 1e-9);
        assert!((close.expect("close ratio").median - 1.0).abs() < 1e-9);
    }

    #[test]
    fn ratio_against_each_builds_direct_takes_out_the_machine_between_labs() {
        // Build b's lab ran on a machine 20% slower: its direct shows it.
        let a = runs(&[80.0], &[8.0]);
        let a_direct = runs(&[100.0], &[10.0]);
        let b = runs(&[64.0], &[6.4]);
        let b_direct = runs(&[80.0], &[8.0]);
        let [keep, _] = ratio_against_direct((&a, &a_direct), (&b, &b_direct));
        assert!((keep.expect("ratio").median - 1.0).abs() < 1e-9);
    }

    #[test]
    fn verdict_reads_the_whole_spread() {
        let s = |min, max| Spread {
            median: (min + max) / 2.0,
            min,
            max,
        };
        assert_eq!(s(0.96, 1.1).verdict(0.95), "met");
        assert_eq!(s(0.80, 0.94).verdict(0.95), "BELOW, beyond the spread");
        assert!(s(0.90, 1.0).verdict(0.95).starts_with("not settled"));
    }
}
