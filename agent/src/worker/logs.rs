//! Task output for `shoal service logs`: each container's log read from
//! the engine with its timestamps, cut at `--since`, and the log driver's
//! extra attributes (what `docker logs --details` shows) worked out from
//! the container as Docker's drivers work them out.

use std::collections::BTreeMap;

use bollard::{
    Docker,
    container::LogOutput,
    query_parameters::{InspectContainerOptions, LogsOptions},
};
use shoal_api::pb::{LogLine, LogRequest};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::session::LogStream;

/// One task's container, as the log request needs it.
#[derive(Debug, Clone)]
pub struct TaskContainer {
    pub task_id: String,
    /// `SERVICE.SLOT` (or `SERVICE.NODE`).
    pub task_name: String,
    pub container: String,
}

/// The lines of every container in `tasks`, merged as they come.
pub fn stream(
    docker: &Docker,
    node_id: &str,
    tasks: Vec<TaskContainer>,
    request: &LogRequest,
) -> LogStream {
    let options = LogsOptions {
        follow: request.follow,
        stdout: true,
        stderr: true,
        // The engine takes whole seconds: the lines of the second before
        // come too and are cut here.
        since: i32::try_from(request.since_ns.max(0) / 1_000_000_000).unwrap_or(i32::MAX),
        timestamps: true,
        tail: if request.tail == 0 {
            "all".into()
        } else {
            request.tail.to_string()
        },
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel(256);
    for task in tasks {
        let (docker, tx, options) = (docker.clone(), tx.clone(), options.clone());
        let (node_id, since_ns) = (node_id.to_owned(), request.since_ns);
        tokio::spawn(async move {
            let details = match docker
                .inspect_container(&task.container, None::<InspectContainerOptions>)
                .await
            {
                Ok(inspect) => container_details(&inspect),
                Err(error) => {
                    tracing::debug!(task = %task.task_id, %error, "inspecting a task's container for its log details");
                    BTreeMap::new()
                }
            };
            let mut lines = docker.logs(&task.container, Some(options));
            while let Some(item) = lines.next().await {
                let (stream, data) = match item {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                        ("stdout", message)
                    }
                    Ok(LogOutput::StdErr { message }) => ("stderr", message),
                    Ok(LogOutput::StdIn { .. }) => continue,
                    Err(error) => {
                        tracing::debug!(task = %task.task_id, %error, "reading a task's log");
                        return;
                    }
                };
                let (timestamp_ns, message) = split_timestamp(&data);
                if timestamp_ns < since_ns {
                    continue;
                }
                let line = LogLine {
                    task_id: task.task_id.clone(),
                    task_name: task.task_name.clone(),
                    node_id: node_id.clone(),
                    stream: stream.into(),
                    data: message.to_vec(),
                    timestamp: timestamp_ns / 1_000_000,
                    timestamp_ns,
                    details: details.clone().into_iter().collect(),
                    ..Default::default()
                };
                if tx.send(line).await.is_err() {
                    return; // nobody listens any more
                }
            }
        });
    }
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The engine's timestamp in front of a line (`--timestamps`: RFC 3339
/// with nanoseconds, then a space) as Unix ns, and the line after it. A
/// line without one (a TTY's raw output may split lines anywhere) is
/// stamped now.
pub fn split_timestamp(data: &[u8]) -> (i64, &[u8]) {
    let parsed = data.iter().position(|b| *b == b' ').and_then(|space| {
        let text = std::str::from_utf8(&data[..space]).ok()?;
        Some((parse_rfc3339(text)?, &data[space + 1..]))
    });
    parsed.unwrap_or_else(|| (shoal_api::now_ms() * 1_000_000, data))
}

/// `2024-01-02T15:04:05.123456789Z` (or with a `+hh:mm` offset, any
/// number of fraction digits) as Unix nanoseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(b.get(range)?).ok()?.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, d) in fraction[..digits].bytes().enumerate().take(9) {
            nanos += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest[1..].split_once(':')?;
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(seconds * 1_000_000_000 + nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The log driver's extra attributes of an inspected container.
fn container_details(
    inspect: &bollard::models::ContainerInspectResponse,
) -> BTreeMap<String, String> {
    let config = inspect.config.clone().unwrap_or_default();
    let options = inspect
        .host_config
        .as_ref()
        .and_then(|h| h.log_config.as_ref())
        .and_then(|l| l.config.clone())
        .unwrap_or_default();
    extra_attributes(
        &options.into_iter().collect(),
        &config.labels.unwrap_or_default().into_iter().collect(),
        &config.env.unwrap_or_default(),
    )
}

/// Docker's `logger.Info.ExtraAttributes`: the container labels the
/// driver's `labels` option names (or `labels-regex` matches), and the
/// environment variables its `env` option names (or `env-regex` matches).
/// A regex that does not compile adds nothing (Docker refuses it when the
/// container is created).
pub fn extra_attributes(
    log_options: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    env: &[String],
) -> BTreeMap<String, String> {
    let mut extra = BTreeMap::new();
    let named = |option: &str| -> Vec<String> {
        log_options
            .get(option)
            .filter(|v| !v.is_empty())
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let regex = |option: &str| {
        log_options
            .get(option)
            .filter(|v| !v.is_empty())
            .and_then(|v| regex::Regex::new(v).ok())
    };
    for key in named("labels") {
        if let Some(value) = labels.get(&key) {
            extra.insert(key, value.clone());
        }
    }
    if let Some(re) = regex("labels-regex") {
        for (key, value) in labels.iter().filter(|(k, _)| re.is_match(k)) {
            extra.insert(key.clone(), value.clone());
        }
    }
    let vars: BTreeMap<&str, &str> = env.iter().filter_map(|e| e.split_once('=')).collect();
    for key in named("env") {
        if let Some(value) = vars.get(key.as_str()) {
            extra.insert(key, (*value).to_owned());
        }
    }
    if let Some(re) = regex("env-regex") {
        for (key, value) in vars.iter().filter(|(k, _)| re.is_match(k)) {
            extra.insert((*key).to_owned(), (*value).to_owned());
        }
    }
    extra
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_timestamps_parse_to_unix_nanoseconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-01-02T13:23:37.123456789Z"),
            Some(1_704_201_817_123_456_789)
        );
        // Offsets, short fractions, more than nanoseconds.
        assert_eq!(
            parse_rfc3339("2024-01-02T14:23:37.5+01:00"),
            Some(1_704_201_817_500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-01-02T13:23:37.1234567891Z"),
            Some(1_704_201_817_123_456_789)
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000_000)
        );
        for bad in [
            "",
            "hello",
            "2024-13-02T13:23:37Z",
            "2024-01-02T13:23:37",
            "2024-01-02T13:23:37.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_timestamp_is_split_off_the_line() {
        let (ns, line) = split_timestamp(b"2024-01-02T13:23:37.000000001Z hello world\n");
        assert_eq!(
            (ns, line),
            (1_704_201_817_000_000_001, &b"hello world\n"[..])
        );
        // No timestamp: the whole line, stamped now.
        let before = shoal_api::now_ms() * 1_000_000;
        let (ns, line) = split_timestamp(b"partial tty output");
        assert!(ns >= before);
        assert_eq!(line, b"partial tty output");
    }

    #[test]
    fn details_are_the_labels_and_env_the_driver_options_name() {
        let options = BTreeMap::from([
            ("labels".to_string(), "app,missing".to_string()),
            ("env".to_string(), "REGION".to_string()),
            ("env-regex".to_string(), "^TIER".to_string()),
            ("max-size".to_string(), "10m".to_string()),
        ]);
        let labels = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("other".to_string(), "x".to_string()),
        ]);
        let env = [
            "REGION=eu".to_string(),
            "TIER_A=1".to_string(),
            "SECRETISH=no".to_string(),
        ];
        let got = extra_attributes(&options, &labels, &env);
        assert_eq!(
            got,
            BTreeMap::from([
                ("app".to_string(), "web".to_string()),
                ("REGION".to_string(), "eu".to_string()),
                ("TIER_A".to_string(), "1".to_string()),
            ])
        );
        assert!(extra_attributes(&BTreeMap::new(), &labels, &env).is_empty());
    }
}
