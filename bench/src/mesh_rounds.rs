//! The mesh bench's rows, measured in interleaved rounds. The shared 2-core
//! machine swings by ±30% between one 3-second run and the next, so a row
//! is never compared with another measured much later: within a round,
//! every row runs in short slices (`--seconds`, 1 s by default) in
//! *cycles*, each cycle a palindrome over the rows (`r0 r1 … rN rN … r1
//! r0`), and a row's figure in a cycle is the mean of its two slices. Any
//! drift of the machine that is linear over the cycle's seconds then
//! weighs on every row alike and cancels from every ratio. A ratio of two
//! rows is, per round, the median of its per-cycle ratios, and overall the
//! median of the rounds with their min–max. A ratio's verdict reads the
//! distribution-free confidence interval of that median (order statistics,
//! at least 95% where the rounds allow it): the rounds, not the cycles,
//! are the samples, since a round's cycles share one lab's set-up.

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
    /// Seconds per slice.
    pub(crate) seconds: u64,
    /// Palindrome cycles per round and per kind of load.
    pub(crate) cycles: usize,
}

/// One row's figures: per round, per cycle, a keep-alive and a
/// new-connection figure (each the mean of the cycle's two slices).
#[derive(Default)]
pub(crate) struct Runs {
    pub(crate) keep: Vec<Vec<Wrk>>,
    pub(crate) close: Vec<Vec<Wrk>>,
}

fn median(values: &[f64]) -> f64 {
    Spread::of(values).map_or(f64::NAN, |s| s.median)
}

impl Runs {
    fn rounds(&self, close: bool) -> &[Vec<Wrk>] {
        if close { &self.close } else { &self.keep }
    }

    /// Per round, the median of its cycles' rates.
    fn rates(&self, close: bool) -> Vec<f64> {
        self.rounds(close)
            .iter()
            .map(|cycles| median(&cycles.iter().map(|w| w.rps).collect::<Vec<_>>()))
            .collect()
    }

    /// Per round, the median of its cycles' p99s.
    fn p99s(&self, close: bool) -> Vec<f64> {
        self.rounds(close)
            .iter()
            .map(|cycles| median(&cycles.iter().map(|w| w.p99_ms).collect::<Vec<_>>()))
            .collect()
    }

    fn errors(&self) -> u64 {
        self.keep
            .iter()
            .chain(&self.close)
            .flatten()
            .map(|w| w.errors)
            .sum()
    }
}

/// The order of one cycle's slices over `n` rows: the rows rotated by
/// `rotation` (so that no row always opens a cycle), then the same in
/// reverse. Each row appears twice, at slots `s` and `2n - 1 - s`, whose
/// mean is the cycle's middle for every row.
fn palindrome(n: usize, rotation: usize) -> Vec<usize> {
    let forward: Vec<usize> = (0..n).map(|i| (i + rotation) % n).collect();
    forward
        .iter()
        .chain(forward.iter().rev())
        .copied()
        .collect()
}

/// The mean of a row's two slices in a cycle: the rates' mean, the larger
/// p99 (not a percentile of the union, which wrk does not give), the
/// errors of both.
fn combine(a: &Wrk, b: &Wrk) -> Wrk {
    Wrk {
        rps: (a.rps + b.rps) / 2.0,
        p99_ms: a.p99_ms.max(b.p99_ms),
        errors: a.errors + b.errors,
    }
}

/// Measures every row in `rate.cycles` palindrome cycles of keep-alive
/// slices, then as many of new-connection slices. `around(row, true)` runs
/// before a row's slice and `around(row, false)` after it (for paths that
/// need the lab changed while they are measured).
pub(crate) fn round(
    rows: &[Row],
    runs: &mut [Runs],
    round: usize,
    rate: Rate,
    mut around: impl FnMut(&Row, bool) -> Result<()>,
) -> Result<()> {
    round_with(rows, runs, round, rate.cycles, |row, close| {
        around(row, true)?;
        let run = wrk(row.url, rate.connections, 2, rate.seconds, close);
        around(row, false)?;
        run
    })
}

/// [`round`] with the measurement given: `measure(row, close)` runs one
/// slice.
fn round_with(
    rows: &[Row],
    runs: &mut [Runs],
    round: usize,
    cycles: usize,
    mut measure: impl FnMut(&Row, bool) -> Result<Wrk>,
) -> Result<()> {
    for close in [false, true] {
        let mut per_row: Vec<Vec<Wrk>> = rows.iter().map(|_| Vec::new()).collect();
        for cycle in 0..cycles {
            let mut slices: Vec<Vec<Wrk>> = rows.iter().map(|_| Vec::new()).collect();
            for at in palindrome(rows.len(), round + cycle) {
                slices[at].push(measure(&rows[at], close)?);
            }
            for (row, two) in per_row.iter_mut().zip(&slices) {
                if let [a, b] = two.as_slice() {
                    row.push(combine(a, b));
                }
            }
        }
        for (runs, cycles) in runs.iter_mut().zip(per_row) {
            if close {
                runs.close.push(cycles);
            } else {
                runs.keep.push(cycles);
            }
        }
    }
    Ok(())
}

/// Median and min–max of a sample, and a confidence interval of its
/// median.
#[derive(Clone, Copy)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    /// The median's confidence interval: the order statistics
    /// `[x(k), x(n+1-k)]`, which hold the population's median with
    /// probability `confidence` whatever the distribution.
    pub(crate) low: f64,
    pub(crate) high: f64,
    pub(crate) confidence: f64,
}

/// The confidence the bench asks of a median's interval.
const CONFIDENCE: f64 = 0.95;

/// For `n` samples, the number `t` of samples trimmed from each end so that
/// `[x(t+1), x(n-t)]` (1-based) holds the population median with
/// probability at least [`CONFIDENCE`], as many as that allows, and the
/// interval's exact confidence: each sample lies below the median with
/// probability 1/2, so the interval misses it only when at most `t` of
/// the `n` samples lie on one side, `2 P(Binomial(n, 1/2) <= t)`. Below 6
/// samples even min–max holds it with less than 95% (5: 93.75%); then
/// nothing is trimmed and the confidence is what min–max gives.
fn median_interval(n: usize) -> (usize, f64) {
    let confidence = |t: usize| {
        // P(Binomial(n, 1/2) <= t), summed in f64 (n is a few dozen rounds).
        let mut term = 0.5f64.powi(n as i32);
        let mut tail = term;
        for i in 1..=t {
            term *= (n + 1 - i) as f64 / i as f64;
            tail += term;
        }
        (1.0 - 2.0 * tail).max(0.0)
    };
    let mut trimmed = 0;
    while 2 * (trimmed + 1) < n && confidence(trimmed + 1) >= CONFIDENCE {
        trimmed += 1;
    }
    (trimmed, confidence(trimmed))
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
        let (trimmed, confidence) = median_interval(n);
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            low: sorted[trimmed],
            high: sorted[n - 1 - trimmed],
            confidence,
        })
    }

    /// Where the median's confidence interval lies against a lower bound.
    fn verdict(&self, target: f64) -> &'static str {
        if self.low >= target {
            "met"
        } else if self.high < target {
            "BELOW, beyond the interval"
        } else {
            "not settled: the target is inside the interval"
        }
    }
}

/// A ratio as `0.95x [0.90-1.01]`, with the median's interval when it is
/// narrower than min–max: `0.95x [0.85-1.04; 96% CI 0.92-0.99]`.
struct AsRatio(Spread);

impl fmt::Display for AsRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.0;
        write!(f, "{:.2}x [{:.2}-{:.2}", s.median, s.min, s.max)?;
        if (s.low, s.high) != (s.min, s.max) {
            write!(
                f,
                "; {:.0}% CI {:.2}-{:.2}",
                s.confidence * 100.0,
                s.low,
                s.high
            )?;
        }
        f.write_str("]")
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

/// Per round, the median of the per-cycle ratios `a / b` (the two rows
/// measured in the same cycles of the same lab), for both rates, as the
/// median of the rounds with [min-max] and its interval.
pub(crate) fn ratio(a: &Runs, b: &Runs) -> [Option<Spread>; 2] {
    [false, true].map(|close| Spread::of(&paired(a, b, close)))
}

/// Per round, the median of `a`'s per-cycle ratios to `b`.
fn paired(a: &Runs, b: &Runs, close: bool) -> Vec<f64> {
    a.rounds(close)
        .iter()
        .zip(b.rounds(close))
        .map(|(a, b)| {
            let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| x.rps / y.rps).collect();
            median(&ratios)
        })
        .collect()
}

/// The per-round ratio of two rows measured in different labs (no cycle of
/// one pairs with a cycle of the other): each round's median rate over the
/// other's.
pub(crate) fn ratio_between_labs(a: &Runs, b: &Runs) -> [Option<Spread>; 2] {
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

/// `(a / a_direct) / (b / b_direct)` per round: two builds' (or two set-ups')
/// rows, each against the direct path measured in the same cycles of its
/// own lab, which takes out what the machine did between the two labs.
pub(crate) fn ratio_against_direct(
    (a, a_direct): (&Runs, &Runs),
    (b, b_direct): (&Runs, &Runs),
) -> [Option<Spread>; 2] {
    [false, true].map(|close| {
        let per_round: Vec<f64> = paired(a, a_direct, close)
            .iter()
            .zip(paired(b, b_direct, close))
            .map(|(x, y)| x / y)
            .collect();
        Spread::of(&per_round)
    })
}

/// Prints `label: keep-alive R [min-max], new connections R [min-max]`,
/// with the verdict of each against `target` (a lower bound) if given,
/// read from the median's confidence interval.
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
        // One cycle per round.
        Runs {
            keep: keep.iter().map(|&r| vec![w(r)]).collect(),
            close: close.iter().map(|&r| vec![w(r)]).collect(),
        }
    }

    #[test]
    fn a_cycle_is_a_palindrome_over_the_rotated_rows() {
        assert_eq!(palindrome(3, 0), [0, 1, 2, 2, 1, 0]);
        assert_eq!(palindrome(3, 4), [1, 2, 0, 0, 2, 1]);
        assert_eq!(palindrome(1, 7), [0, 0]);
    }

    #[test]
    fn a_drift_linear_over_a_cycle_cancels_from_every_ratio() {
        // Three rows at 100, 90 and 50 per second on a machine that loses
        // 0.5% of its first speed with every slice, through both rounds.
        let rows = [
            Row {
                name: "a",
                url: "a",
            },
            Row {
                name: "b",
                url: "b",
            },
            Row {
                name: "c",
                url: "c",
            },
        ];
        let truth = |row: &Row| match row.name {
            "a" => 100.0,
            "b" => 90.0,
            _ => 50.0,
        };
        let mut slot = 0;
        let mut runs: Vec<Runs> = rows.iter().map(|_| Runs::default()).collect();
        for r in 0..2 {
            round_with(&rows, &mut runs, r, 3, |row, close| {
                slot += 1;
                let rps = truth(row) * (1.0 - 0.005 * slot as f64);
                Ok(Wrk {
                    rps: if close { rps / 10.0 } else { rps },
                    p99_ms: slot as f64,
                    errors: u64::from(row.name == "c"),
                })
            })
            .expect("a simulated round");
        }
        // 2 rounds x 2 kinds x 3 cycles x 6 slices.
        assert_eq!(slot, 72);
        assert_eq!(runs[0].keep.len(), 2);
        assert_eq!(runs[0].keep[0].len(), 3);
        // Two slices of row c per cycle, each with one error.
        assert_eq!(runs[2].errors(), 2 * 2 * 3 * 2);
        for (x, y, want) in [(1, 0, 0.9), (2, 0, 0.5), (2, 1, 50.0 / 90.0)] {
            for spread in ratio(&runs[x], &runs[y]) {
                let s = spread.expect("a ratio");
                assert!((s.min - want).abs() < 1e-9, "{x}/{y}: {}", s.min);
                assert!((s.max - want).abs() < 1e-9, "{x}/{y}: {}", s.max);
            }
        }
        // A row's own figure keeps the drift; only the ratios cancel it.
        assert!(runs[0].rates(false)[0] < 100.0);
    }

    #[test]
    fn a_rounds_ratio_is_the_median_of_its_cycles_ratios() {
        let w = |rps: f64| Wrk {
            rps,
            p99_ms: 1.0,
            errors: 0,
        };
        // One round, three cycles; the machine was twice as fast in the
        // second cycle, and the third cycle's b was thrown off.
        let a = Runs {
            keep: vec![vec![w(90.0), w(180.0), w(90.0)]],
            close: vec![vec![w(9.0), w(18.0), w(9.0)]],
        };
        let b = Runs {
            keep: vec![vec![w(100.0), w(200.0), w(40.0)]],
            close: vec![vec![w(10.0), w(20.0), w(10.0)]],
        };
        let [keep, close] = ratio(&a, &b);
        assert!((keep.expect("keep").median - 0.9).abs() < 1e-9);
        assert!((close.expect("close").median - 0.9).abs() < 1e-9);
        // Between labs, the rounds' median rates: 90 / 100.
        let [keep, _] = ratio_between_labs(&a, &b);
        assert!((keep.expect("keep").median - 0.9).abs() < 1e-9);
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
    fn verdict_reads_the_medians_interval() {
        let s = |low, high| Spread {
            median: (low + high) / 2.0,
            min: low,
            max: high,
            low,
            high,
            confidence: 0.96,
        };
        assert_eq!(s(0.96, 1.1).verdict(0.95), "met");
        assert_eq!(s(0.80, 0.94).verdict(0.95), "BELOW, beyond the interval");
        assert!(s(0.90, 1.0).verdict(0.95).starts_with("not settled"));
    }

    #[test]
    fn the_medians_interval_trims_only_what_95_percent_allows() {
        // Exact coverages: 1 - 2 P(Bin(n, 1/2) <= t).
        let (t, c) = median_interval(5);
        assert_eq!(t, 0, "5 rounds: min-max is all there is");
        assert!((c - 0.9375).abs() < 1e-12);
        assert_eq!(median_interval(8).0, 0); // t=1 would be 93.0%
        let (t, c) = median_interval(9);
        assert_eq!(t, 1);
        assert!((c - (1.0 - 2.0 * 10.0 / 512.0)).abs() < 1e-12); // 96.1%
        assert_eq!(median_interval(11).0, 1); // t=2 would be 93.5%
        let (t, c) = median_interval(12);
        assert_eq!(t, 2);
        assert!((c - (1.0 - 2.0 * 79.0 / 4096.0)).abs() < 1e-12); // 96.1%
        assert_eq!(median_interval(1), (0, 0.0));
        assert!(median_interval(40).1 >= CONFIDENCE);
    }

    #[test]
    fn one_wild_round_of_twelve_does_not_decide_the_verdict() {
        // Eleven rounds at or above the target, one the machine threw off.
        let mut ratios = vec![
            0.97, 0.99, 1.02, 0.98, 1.05, 1.0, 0.96, 1.01, 0.99, 1.03, 0.98,
        ];
        ratios.push(0.70);
        let s = Spread::of(&ratios).expect("twelve values");
        assert_eq!((s.min, s.max), (0.70, 1.05));
        assert_eq!((s.low, s.high), (0.97, 1.02));
        assert_eq!(s.verdict(0.95), "met");
        // With five rounds the same wild round leaves it unsettled.
        let s = Spread::of(&[0.97, 0.99, 1.02, 0.98, 0.70]).expect("five values");
        assert!(s.verdict(0.95).starts_with("not settled"));
        assert_eq!(
            AsRatio(Spread::of(&ratios).expect("twelve")).to_string(),
            "0.99x [0.70-1.05; 96% CI 0.97-1.02]"
        );
    }
}
