//! The run's verdict and figures: (1) the history linearizable (no
//! acknowledged write lost, no stale read), (2) no address handed out
//! twice, (3) leader failover, (4) node loss to tasks running elsewhere,
//! (5) failed requests, split by blame.

use std::{
    fmt::{self, Write as _},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use crate::{
    failures::{self, Window},
    linearize::{self, Operation, Violation},
    model::Input,
    schedule::Step,
    stats,
    traffic::{Request, Route},
    workload::Counters,
};

pub struct Scan {
    pub when: String,
    /// Addresses allocated in the store, and held inside containers.
    pub allocations: usize,
    pub held: usize,
    pub store: Vec<String>,
    pub containers: Vec<String>,
}

pub struct Inputs {
    pub seed: u64,
    pub steps: Vec<Step>,
    pub history: Vec<Operation>,
    pub counters: Arc<Counters>,
    pub requests: Vec<Request>,
    pub windows: Vec<Window>,
    /// When each leader kill happened (µs since the start).
    pub leader_kills: Vec<u64>,
    pub node_loss: Vec<Duration>,
    pub not_rescheduled: Vec<String>,
    pub scans: Vec<Scan>,
    pub errors: Vec<String>,
    pub elapsed: Duration,
}

pub struct Report {
    inputs: Inputs,
    violations: Vec<Violation>,
    failovers: Vec<Duration>,
}

fn is_write(input: &Input) -> bool {
    !matches!(input, Input::Read)
}

/// For each kill time: until the first write invoked after it was answered.
pub fn failovers(history: &[Operation], kills: &[u64]) -> Vec<Duration> {
    kills
        .iter()
        .filter_map(|&killed| {
            history
                .iter()
                .filter(|op| is_write(&op.input) && op.invoke >= killed)
                .filter_map(|op| op.complete)
                .min()
                .map(|done| Duration::from_micros(done - killed))
        })
        .collect()
}

/// Failed requests grouped into bursts (a gap of more than 2 s starts a
/// new one): when, how many, on which routes, and the first error.
pub fn bursts(failed: &[&Request]) -> Vec<String> {
    let mut sorted: Vec<&Request> = failed.to_vec();
    sorted.sort_by_key(|r| r.at);
    let mut groups: Vec<Vec<&Request>> = Vec::new();
    for request in sorted {
        match groups.last_mut() {
            Some(group) if request.at <= group[group.len() - 1].at + 2_000_000 => {
                group.push(request)
            }
            _ => groups.push(vec![request]),
        }
    }
    groups
        .iter()
        .map(|g| {
            let mut routes: Vec<String> = g.iter().map(|r| r.path.to_string()).collect();
            routes.sort();
            routes.dedup();
            format!(
                "{} .. {}: {} failed ({}); first: {}",
                seconds(g[0].at),
                seconds(g[g.len() - 1].at),
                g.len(),
                routes.join(", "),
                g[0].detail
            )
        })
        .collect()
}

fn seconds(us: u64) -> String {
    if us == u64::MAX {
        "never".into()
    } else {
        format!("{:.3} s", us as f64 / 1e6)
    }
}

impl Report {
    pub fn build(inputs: Inputs) -> Self {
        let violations = linearize::check(&inputs.history);
        let failovers = failovers(&inputs.history, &inputs.leader_kills);
        Self {
            inputs,
            violations,
            failovers,
        }
    }

    fn duplicates(&self) -> Vec<String> {
        self.inputs
            .scans
            .iter()
            .flat_map(|s| {
                s.store
                    .iter()
                    .map(move |d| format!("{}: in the store: {d}", s.when))
                    .chain(
                        s.containers
                            .iter()
                            .map(move |d| format!("{}: in containers: {d}", s.when)),
                    )
            })
            .collect()
    }

    /// What failed, empty if the run passed.
    pub fn failures(&self) -> Vec<String> {
        let mut failed = Vec::new();
        if !self.violations.is_empty() {
            failed.push(format!(
                "(1) {} name(s) with a history that is not linearizable",
                self.violations.len()
            ));
        }
        let dups = self.duplicates();
        if !dups.is_empty() {
            failed.push(format!("(2) {} address(es) handed out twice", dups.len()));
        }
        let split = failures::split(&self.inputs.requests, &self.inputs.windows);
        if !split.others.is_empty() {
            failed.push(format!(
                "(5) {} failed request(s) not explained by a fault (goal 0)",
                split.others.len()
            ));
        }
        for error in &self.inputs.errors {
            failed.push(format!("fault driver: {error}"));
        }
        failed
    }
}

fn describe(op: &Operation) -> String {
    let client = if op.client == usize::MAX {
        "final".to_owned()
    } else {
        format!("client {}", op.client)
    };
    format!(
        "  {client:>9}  {:>11} .. {:<11}  {:?} -> {:?}",
        seconds(op.invoke),
        op.complete.map_or("unknown".into(), seconds),
        op.input,
        op.output
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inputs;
        let mut out = String::new();
        writeln!(
            out,
            "== chaos report: seed {}, {:.0} s, {} faults",
            i.seed,
            i.elapsed.as_secs_f64(),
            i.windows.len()
        )?;
        let c = &i.counters;
        writeln!(
            out,
            "store: {} calls, {} with no answer (unknown), {} refused; {} operations checked",
            c.calls.load(Ordering::Relaxed),
            c.unknown.load(Ordering::Relaxed),
            c.refused.load(Ordering::Relaxed),
            i.history.len()
        )?;
        if self.violations.is_empty() {
            writeln!(
                out,
                "(1) linearizable: yes (no acknowledged write lost, no stale read)"
            )?;
        } else {
            writeln!(out, "(1) linearizable: NO")?;
            for v in &self.violations {
                writeln!(
                    out,
                    "  {}: {} operations linearized, then stuck in state {:?}; the history around it:",
                    v.key, v.prefix_len, v.state
                )?;
                for op in &v.slice {
                    writeln!(out, "{}", describe(op))?;
                }
            }
        }
        let dups = self.duplicates();
        writeln!(
            out,
            "(2) addresses handed out twice: {} ({} scans of the store and of the containers)",
            dups.len(),
            i.scans.len()
        )?;
        if let Some(last) = i.scans.last() {
            writeln!(
                out,
                "  the last scan saw {} allocations in the store and {} addresses in containers",
                last.allocations, last.held
            )?;
        }
        for d in &dups {
            writeln!(out, "  {d}")?;
        }
        writeln!(
            out,
            "(3) leader failover, kill -> a write succeeds: {}",
            stats::summary(&self.failovers)
        )?;
        writeln!(
            out,
            "(4) node loss -> its tasks running elsewhere: {}",
            stats::summary(&i.node_loss)
        )?;
        for why in &i.not_rescheduled {
            writeln!(out, "  {why}")?;
        }
        let split = failures::split(&i.requests, &i.windows);
        writeln!(
            out,
            "(5) requests: {} made, {} failed: {} to a node being faulted, {} others (goal 0)",
            split.total,
            split.faulted.len() + split.others.len(),
            split.faulted.len(),
            split.others.len()
        )?;
        for route in [Route::Mesh, Route::Vip, Route::Dns] {
            let made = i.requests.iter().filter(|r| r.path == route).count();
            let faulted = split.faulted.iter().filter(|r| r.path == route).count();
            let others = split.others.iter().filter(|r| r.path == route).count();
            writeln!(
                out,
                "  {route:<24} {made:>6} made, {faulted:>4} faulted, {others:>4} others"
            )?;
        }
        for burst in bursts(&split.others) {
            writeln!(out, "  others: {burst}")?;
        }
        for r in split.others.iter().take(20) {
            writeln!(
                out,
                "  other: {} via {} {}: {}",
                seconds(r.at),
                r.via,
                r.path,
                r.detail
            )?;
        }
        writeln!(out, "faults:")?;
        for w in &i.windows {
            writeln!(
                out,
                "  {:<14} {:<3} {} .. {} (backends on {:?})",
                w.fault.to_string(),
                w.node,
                seconds(w.from),
                seconds(w.to),
                w.backends
            )?;
        }
        let failed = self.failures();
        if failed.is_empty() {
            writeln!(out, "PASSED (seed {})", i.seed)?;
        } else {
            writeln!(
                out,
                "FAILED (seed {}; `cargo xtask chaos --seed {0}` repeats the schedule):",
                i.seed
            )?;
            for f in failed {
                writeln!(out, "  {f}")?;
            }
        }
        let _ = &i.steps;
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Output;

    fn write(invoke: u64, complete: Option<u64>) -> Operation {
        Operation {
            client: 0,
            key: "k".into(),
            input: Input::Update {
                id: "a".into(),
                value: 1,
            },
            output: if complete.is_some() {
                Output::Updated
            } else {
                Output::Unknown
            },
            invoke,
            complete,
        }
    }

    fn inputs(history: Vec<Operation>, requests: Vec<Request>, scans: Vec<Scan>) -> Inputs {
        Inputs {
            seed: 9,
            steps: Vec::new(),
            history,
            counters: Arc::new(Counters::default()),
            requests,
            windows: Vec::new(),
            leader_kills: Vec::new(),
            node_loss: Vec::new(),
            not_rescheduled: Vec::new(),
            scans,
            errors: Vec::new(),
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_clean_run_passes_and_each_kind_of_evidence_fails_it() {
        let clean = Report::build(inputs(vec![write(0, None)], Vec::new(), Vec::new()));
        assert!(clean.failures().is_empty(), "{clean}");
        assert!(clean.to_string().contains("PASSED (seed 9)"));

        // A read that misses an acknowledged create.
        let lost = vec![
            Operation {
                input: Input::Create { value: 1 },
                output: Output::Created { id: "a".into() },
                ..write(0, Some(10))
            },
            Operation {
                input: Input::Read,
                output: Output::Read(None),
                ..write(20, Some(30))
            },
        ];
        let report = Report::build(inputs(lost, Vec::new(), Vec::new()));
        assert_eq!(report.failures().len(), 1);
        let text = report.to_string();
        assert!(text.contains("linearizable: NO"), "{text}");
        assert!(text.contains("--seed 9"), "{text}");
        assert!(text.contains("Read(None)"), "the slice is printed: {text}");

        let scan = Scan {
            when: "at the end".into(),
            allocations: 2,
            held: 2,
            store: Vec::new(),
            containers: vec!["198.18.1.2 held by container a, container b".into()],
        };
        let report = Report::build(inputs(Vec::new(), Vec::new(), vec![scan]));
        assert!(report.failures()[0].starts_with("(2) 1 address"));

        let failed = Request {
            at: 5,
            until: 6,
            path: Route::Mesh,
            via: "n1".into(),
            ok: false,
            detail: "FAILED timed out".into(),
        };
        let report = Report::build(inputs(Vec::new(), vec![failed], Vec::new()));
        assert!(report.failures()[0].starts_with("(5) 1 failed request"));
    }

    #[test]
    fn failures_more_than_2_s_apart_are_separate_bursts() {
        let at = |t: u64| Request {
            at: t,
            until: t + 1,
            path: Route::Mesh,
            via: "n1".into(),
            ok: false,
            detail: format!("FAILED at {t}"),
        };
        let requests = [at(1_000_000), at(2_500_000), at(9_000_000)];
        let refs: Vec<&Request> = requests.iter().rev().collect();
        let bursts = bursts(&refs);
        assert_eq!(bursts.len(), 2, "{bursts:?}");
        assert!(
            bursts[0].starts_with("1.000 s .. 2.500 s: 2 failed"),
            "{bursts:?}"
        );
        assert!(bursts[1].contains("FAILED at 9000000"), "{bursts:?}");
    }

    #[test]
    fn failover_runs_to_the_first_answered_write_invoked_after_the_kill() {
        let history = vec![
            write(0, Some(2_500_000)), // invoked before the kill
            write(1_100_000, None),    // no answer
            write(1_200_000, Some(4_000_000)),
            write(3_000_000, Some(3_500_000)),
        ];
        assert_eq!(
            failovers(&history, &[1_000_000]),
            vec![Duration::from_micros(2_500_000)]
        );
    }
}
