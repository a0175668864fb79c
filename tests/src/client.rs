//! The lab's client host (`shoal-client`, 192.0.2.100): the toolbox run
//! there, and what the mesh tests read from the echo's answers.
//!
//! The toolbox's `http-get` prints a line per request, `N STATUS JSON`,
//! where JSON is the echo's identity (`task`, `client`, …).

use std::{
    collections::BTreeMap,
    fmt::Display,
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Output, Stdio},
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::{bin, topology};

/// `shoal-toolbox args…` in the client's namespace, to run or spawn.
pub fn toolbox(args: &[&str]) -> Result<Command> {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", topology::CLIENT_NS])
        .arg(bin("shoal-toolbox")?)
        .args(args);
    Ok(command)
}

/// `shoal-toolbox args…` in the client's namespace, run to its end.
pub fn toolbox_output(args: &[&str]) -> Result<Output> {
    Ok(toolbox(args)?.output()?)
}

/// Fresh connections to `url` in the background, one every 20 ms, each
/// allowed 5 s (SYN retransmits included); stdout and stderr piped.
pub fn http_stream(url: &str, count: usize) -> Result<Child> {
    Ok(toolbox(&[
        "--timeout-ms",
        "5000",
        "http-get",
        url,
        "--count",
        &count.to_string(),
        "--interval-ms",
        "20",
    ])?
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()?)
}

/// The echo's JSON of one `http-get` line (`N STATUS JSON`).
pub fn answer_json(line: &str) -> Result<Value> {
    serde_json::from_str(line.splitn(3, ' ').nth(2).unwrap_or(""))
        .with_context(|| format!("not an answer: {line}"))
}

/// How many of `http-get`'s answers (its stdout) each task gave; a line
/// that is not an answer is an error.
pub fn tally_tasks(text: &str) -> Result<BTreeMap<String, usize>> {
    let mut by_task = BTreeMap::new();
    for line in text.lines() {
        let json = answer_json(line)?;
        *by_task
            .entry(json["task"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    Ok(by_task)
}

/// Replies of many segments (the tasks send GSO super-packets, which the
/// kernel's VXLAN device and the mesh's own tunnel carry) arrive whole
/// through every node: 6 fresh 4 MB answers from each `node:8080`.
pub fn big_replies_arrive_whole<N: Display>(nodes: &[N]) -> Result<()> {
    for node in nodes {
        let out = toolbox_output(&[
            "--timeout-ms",
            "10000",
            "http-get",
            &format!("http://{node}:8080/bytes/4000000"),
            "--count",
            "6",
            "--length",
        ])?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success()
                && text.lines().count() == 6
                && text.lines().all(|l| l.ends_with(" 200 4000000 bytes")),
            "4 MB through {node}: {text}"
        );
    }
    Ok(())
}

/// Sends `text` on a connection to an echo and checks it comes back.
pub fn say(stream: &mut TcpStream, text: &str) -> Result<()> {
    stream.write_all(text.as_bytes())?;
    let mut back = vec![0u8; text.len()];
    stream.read_exact(&mut back)?;
    ensure!(
        back == text.as_bytes(),
        "echoed {:?}",
        String::from_utf8_lossy(&back)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_the_echos_answers_by_task() {
        let text = "0 200 {\"task\":\"web.1\",\"client\":\"192.0.2.100\"}\n\
                    1 200 {\"task\":\"web.2\"}\n\
                    2 200 {\"task\":\"web.1\"}\n";
        let want: BTreeMap<String, usize> =
            [("web.1".to_owned(), 2), ("web.2".to_owned(), 1)].into();
        assert_eq!(tally_tasks(text).unwrap(), want);
        assert_eq!(
            answer_json(text.lines().next().unwrap()).unwrap()["client"],
            "192.0.2.100"
        );
        let error = tally_tasks("3 FAILED connection refused\n").unwrap_err();
        assert!(
            error.to_string().contains("not an answer: 3 FAILED"),
            "{error}"
        );
    }
}
