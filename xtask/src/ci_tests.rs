//! The test stage of `cargo xtask ci`: nextest, with its report passed
//! through as it comes and the failures remembered. CI's log is often read
//! from its end, and the chaos run and the checks' output come after the
//! tests: so a failed run ends by naming the tests that failed and
//! repeating nextest's closing report (their output), instead of leaving
//! them 4,000 lines up.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
};

use anyhow::{Context, Result};

/// The most lines of nextest's closing report repeated at the end.
const CLOSING_LINES: usize = 150;

/// What the tests came to.
pub struct TestRun {
    pub passed: bool,
    /// The tests nextest reported failed, timed out or killed, in order,
    /// each once.
    pub failed: Vec<String>,
    /// nextest's report from its "Summary" line on: the failures again,
    /// with their output (profile `ci`: `failure-output = immediate-final`).
    pub closing: Vec<String>,
}

impl TestRun {
    /// Prints the failures where a reader of the log's end sees them.
    pub fn print_failures(&self) {
        if self.passed {
            return;
        }
        let from = self.closing.len().saturating_sub(CLOSING_LINES);
        println!(
            "----- nextest's closing report again (its last {} lines) -----",
            self.closing.len() - from
        );
        for line in &self.closing[from..] {
            println!("{line}");
        }
        println!("----- end of nextest's closing report -----");
        match self.failed.as_slice() {
            [] => println!("[ci] the tests failed, none named (see nextest's report)"),
            failed => {
                println!("[ci] {} test(s) failed:", failed.len());
                for name in failed {
                    println!("[ci]   {name}");
                }
            }
        }
    }
}

/// Runs `cargo` (a nextest command), passing its report through.
pub fn run(mut cargo: Command) -> Result<TestRun> {
    let mut child = cargo
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo nextest")?;
    let report = child.stderr.take().context("nextest's report pipe")?;
    let mut failed = Vec::new();
    let mut closing: Option<Vec<String>> = None;
    let mut echo = std::io::stderr();
    for line in BufReader::new(report).split(b'\n') {
        let line = line.context("reading nextest's report")?;
        let line = String::from_utf8_lossy(&line).into_owned();
        // A broken stderr must not stop the tests; their result still counts.
        let _ = writeln!(echo, "{line}");
        if let Some(name) = failed_test(&line)
            && !failed.iter().any(|known| known == name)
        {
            failed.push(name.to_owned());
        }
        match &mut closing {
            Some(lines) => lines.push(line),
            None if line.trim_start().starts_with("Summary [") => closing = Some(vec![line]),
            None => {}
        }
    }
    let status = child.wait().context("waiting for cargo nextest")?;
    Ok(TestRun {
        passed: status.success(),
        failed,
        closing: closing.unwrap_or_default(),
    })
}

/// The test a nextest status line says failed: `FAIL [ 1.2s] (3/765)
/// crate::binary test`, `TIMEOUT [...]`, `SIGKILL [...]`, and so on (the
/// counter is absent in the closing report).
fn failed_test(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let (status, rest) = line.split_once(" [")?;
    let failure = matches!(status, "FAIL" | "TIMEOUT" | "ABORT" | "LEAK-FAIL")
        || (status.starts_with("SIG")
            && status.len() > 3
            && status[3..].chars().all(|c| c.is_ascii_uppercase()));
    if !failure {
        return None;
    }
    let (_, after) = rest.split_once("] ")?;
    let after = after.trim_start();
    let name = match after.strip_prefix('(') {
        Some(counted) => counted.split_once(") ")?.1,
        None => after,
    };
    let name = name.trim();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::{failed_test, run};

    #[test]
    fn a_failed_run_keeps_its_failures_and_closing_report() {
        let mut report = std::process::Command::new("sh");
        report.args([
            "-c",
            "printf '%s\\n' \
             '        PASS [   0.1s] (1/3) c::b ok_one' \
             '        FAIL [   0.2s] (2/3) c::b bad_one' \
             '  stdout ───' \
             '     TIMEOUT [  60.0s] (3/3) c::b slow_one' \
             '     Summary [  60.3s] 3 tests run: 1 passed, 2 failed' \
             '        FAIL [   0.2s] c::b bad_one' \
             '     TIMEOUT [  60.0s] c::b slow_one' >&2; exit 100",
        ]);
        let tests = run(report).expect("runs");
        assert!(!tests.passed);
        assert_eq!(tests.failed, ["c::b bad_one", "c::b slow_one"]);
        assert_eq!(tests.closing.len(), 3);
        assert!(tests.closing[0].contains("Summary"));
    }

    #[test]
    fn failures_are_named_with_and_without_the_counter() {
        assert_eq!(
            failed_test("        FAIL [  12.902s] (678/765) shoal-tests::elections calls_succeed"),
            Some("shoal-tests::elections calls_succeed")
        );
        assert_eq!(
            failed_test("     TIMEOUT [ 120.002s] shoal-tests::lab_dns_tcp big_answers"),
            Some("shoal-tests::lab_dns_tcp big_answers")
        );
        assert_eq!(
            failed_test("     SIGSEGV [   0.100s] (1/2) shoal-agent relay::tests::x"),
            Some("shoal-agent relay::tests::x")
        );
    }

    #[test]
    fn other_lines_name_nothing() {
        for line in [
            "        PASS [   0.008s] (60/60) shoal-api token_input::tests::stdin",
            "        SLOW [> 30.000s] (───────) shoal-tests::lab_partitions a_cut",
            "     Summary [   0.340s] 60 tests run: 60 passed, 0 skipped",
            "    test calls_fail ... FAILED",
            "  FAIL",
            "",
        ] {
            assert_eq!(failed_test(line), None, "{line}");
        }
    }
}
