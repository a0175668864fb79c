//! `shoal service logs SERVICE|TASK`: task output from every node, each
//! line prefixed as Docker's CLI prefixes it
//! (`[TIME ]SERVICE.SLOT.TASK@NODE    | [DETAILS ]LINE`), stderr lines on
//! stderr.

use std::{collections::HashMap, io::Write};

use anyhow::{Context, Result, bail};
use clap::Args;
use shoal_api::pb::{LogLine, LogsRequest, Node, Service, ServiceMode, Task};

use super::{service_id, service_name, services};
use crate::{
    client::{self, Client, status_error},
    commands::resolve,
    output::short,
    timestamp,
};

#[derive(Args)]
pub struct LogsArgs {
    /// The service or task whose output to fetch (ID, name or ID prefix).
    #[arg(value_name = "SERVICE|TASK")]
    target: String,
    /// Follow log output.
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs ("all" or a number).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes).
    #[arg(long)]
    since: Option<String>,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Do not map IDs to Names in output.
    #[arg(long)]
    no_resolve: bool,
    /// Do not truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Do not include task IDs in output.
    #[arg(long)]
    no_task_ids: bool,
    /// Do not neatly format logs.
    #[arg(long)]
    raw: bool,
    /// Show extra details provided to logs.
    #[arg(long)]
    details: bool,
}

/// What the command reads: a service or one of its tasks.
#[derive(Debug)]
enum Target {
    Service(Box<Service>),
    Task(Box<Task>),
}

/// Docker's `--tail`: "all" or a count of lines per task (None: all).
fn parse_tail(tail: &str) -> Result<Option<u64>> {
    match tail {
        "all" | "" => Ok(None),
        n => n.parse::<u64>().map(Some).with_context(|| {
            format!(r#"invalid --tail {n:?}: tail value must be a positive integer or "all""#)
        }),
    }
}

/// A service by id, name or id prefix, else a task by id or id prefix
/// (Docker asks for a service first, then a task).
fn find_target(services: &[Service], tasks: &[Task], query: &str) -> Result<Target> {
    let is_service = |s: &Service| {
        service_id(s) == query || service_name(s) == query || service_id(s).starts_with(query)
    };
    if services.iter().any(is_service) {
        let s = resolve("service", query, services, service_id, service_name)?;
        return Ok(Target::Service(Box::new(s.clone())));
    }
    fn task_id(t: &Task) -> &str {
        t.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
    }
    let matches: Vec<&Task> = match tasks.iter().find(|t| task_id(t) == query) {
        Some(exact) => vec![exact],
        None => tasks
            .iter()
            .filter(|t| !query.is_empty() && task_id(t).starts_with(query))
            .collect(),
    };
    match matches.as_slice() {
        [one] => Ok(Target::Task(Box::new((*one).clone()))),
        [] => bail!("no such task or service: {query}"),
        many => bail!(
            "task {query} is ambiguous ({} matches by ID prefix)",
            many.len()
        ),
    }
}

fn digits(n: u64) -> usize {
    n.to_string().len()
}

/// Names for the prefix: services and nodes by id, and how wide the slot
/// column is (Docker pads after the node to the widest slot).
struct Formatter {
    services: HashMap<String, String>,
    nodes: HashMap<String, String>,
    padding: usize,
    no_resolve: bool,
    no_trunc: bool,
    no_task_ids: bool,
    timestamps: bool,
    details: bool,
}

/// Go's `url.QueryEscape`: what the engine writes details with.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Formatter {
    /// `SERVICE.SLOT[.TASK]@NODE` and its padding.
    fn context(&self, line: &LogLine) -> String {
        let service = if self.no_resolve {
            line.service_id.clone()
        } else {
            self.services
                .get(&line.service_id)
                .cloned()
                .unwrap_or_else(|| line.service_id.clone())
        };
        let node = if self.no_resolve {
            line.node_id.clone()
        } else {
            self.nodes
                .get(&line.node_id)
                .cloned()
                .unwrap_or_else(|| line.node_id.clone())
        };
        let mut name = format!("{service}.{}", line.slot);
        if !self.no_task_ids {
            name.push('.');
            name.push_str(&short(&line.task_id, self.no_trunc));
        }
        let padding = self.padding.saturating_sub(digits(line.slot));
        format!("{name}@{node}{}", " ".repeat(padding))
    }

    /// One line as Docker's CLI prints it.
    fn pretty(&self, line: &LogLine) -> Vec<u8> {
        let mut out = Vec::with_capacity(line.data.len() + 64);
        if self.timestamps {
            out.extend_from_slice(timestamp::rfc3339_nano_fixed(line.timestamp_ns).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(self.context(line).as_bytes());
        out.extend_from_slice(b"    | ");
        if self.details {
            let pairs: Vec<String> = line
                .details
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.extend_from_slice(pairs.join(",").as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&line.data);
        out
    }

    /// One line as the engine sends it (`--raw`): the details include the
    /// line's node, service and task, query-escaped.
    fn raw(&self, line: &LogLine) -> Vec<u8> {
        let mut out = Vec::with_capacity(line.data.len() + 32);
        if self.timestamps {
            out.extend_from_slice(timestamp::rfc3339_nano_fixed(line.timestamp_ns).as_bytes());
            out.push(b' ');
        }
        if self.details {
            let mut details = line.details.clone();
            for (key, value) in [
                ("com.docker.swarm.node.id", &line.node_id),
                ("com.docker.swarm.service.id", &line.service_id),
                ("com.docker.swarm.task.id", &line.task_id),
            ] {
                details.insert(key.to_owned(), value.clone());
            }
            let pairs: Vec<String> = details
                .iter()
                .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
                .collect();
            out.extend_from_slice(pairs.join(",").as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&line.data);
        out
    }
}

fn tty(spec: Option<&shoal_api::pb::TaskSpec>) -> bool {
    spec.and_then(|t| t.container.as_ref())
        .is_some_and(|c| c.tty)
}

pub async fn run(client: &mut Client, args: LogsArgs) -> Result<()> {
    let tail = parse_tail(&args.tail)?;
    let mut since_ns = match &args.since {
        Some(since) => timestamp::since_ns(since, chrono::Local::now())?,
        None => 0,
    };
    if tail == Some(0) {
        // No past lines: nothing at all, or only what comes from now on.
        if !args.follow {
            return Ok(());
        }
        since_ns = since_ns.max(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0));
    }
    let all: Vec<Service> = services(client)
        .await?
        .into_iter()
        .filter_map(|s| s.service)
        .collect();
    let needs_tasks = !all.iter().any(|s| {
        service_id(s) == args.target
            || service_name(s) == args.target
            || service_id(s).starts_with(&args.target)
    });
    let tasks = if needs_tasks {
        client::tasks(client).await?
    } else {
        Vec::new()
    };
    let (request, padding, is_tty) = match find_target(&all, &tasks, &args.target)? {
        Target::Service(s) => {
            let spec = s.spec.clone().unwrap_or_default();
            let padding = if spec.mode() == ServiceMode::Replicated {
                digits(spec.replicas)
            } else {
                1
            };
            let request = LogsRequest {
                service_id: service_id(s.as_ref()).to_owned(),
                ..Default::default()
            };
            (request, padding, tty(spec.task.as_ref()))
        }
        Target::Task(t) => {
            let request = LogsRequest {
                task_id: t.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
                ..Default::default()
            };
            (request, digits(t.slot), tty(t.spec.as_ref()))
        }
    };
    // A TTY's output has no lines to prefix (Docker's wording).
    if is_tty && !args.raw {
        bail!("tty service logs only supported with --raw");
    }
    let request = LogsRequest {
        follow: args.follow,
        tail: tail.unwrap_or(0),
        since_ns,
        ..request
    };
    let nodes: Vec<Node> = if args.no_resolve || args.raw {
        Vec::new()
    } else {
        client::nodes(client).await?
    };
    let formatter = Formatter {
        services: all
            .iter()
            .map(|s| (service_id(s).to_owned(), service_name(s).to_owned()))
            .collect(),
        nodes: nodes
            .iter()
            .filter_map(|n| {
                let id = n.meta.as_ref()?.id.clone();
                let name = n.description.as_ref()?.hostname.clone();
                Some((id, name))
            })
            .collect(),
        padding,
        no_resolve: args.no_resolve,
        no_trunc: args.no_trunc,
        no_task_ids: args.no_task_ids,
        timestamps: args.timestamps,
        details: args.details,
    };
    let mut stream = client
        .service_logs(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    while let Some(line) = stream.message().await.map_err(status_error)? {
        let bytes = if args.raw {
            formatter.raw(&line)
        } else {
            formatter.pretty(&line)
        };
        let out: &mut dyn Write = if line.stream == "stderr" {
            &mut stderr
        } else {
            &mut stdout
        };
        out.write_all(&bytes)?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shoal_api::pb::{Meta, ServiceSpec};

    use super::*;

    fn formatter() -> Formatter {
        Formatter {
            services: HashMap::from([("s1".into(), "web".into())]),
            nodes: HashMap::from([("n1".into(), "node-1".into())]),
            padding: 2,
            no_resolve: false,
            no_trunc: false,
            no_task_ids: false,
            timestamps: false,
            details: false,
        }
    }

    fn line() -> LogLine {
        LogLine {
            task_id: "abcdefghijklmnopqrstuvwxy".into(),
            node_id: "n1".into(),
            service_id: "s1".into(),
            slot: 3,
            data: b"hello\n".to_vec(),
            timestamp_ns: 1_357_133_017_000_000_001,
            details: BTreeMap::from([
                ("zone".to_string(), "east side".to_string()),
                ("app".to_string(), "web".to_string()),
            ]),
            ..Default::default()
        }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_are_prefixed_as_dockers_cli_prefixes_them() {
        let f = formatter();
        // Slot 3 of a service of 10+ replicas: one space of padding.
        assert_eq!(
            text(f.pretty(&line())),
            "web.3.abcdefghijkl@node-1     | hello\n"
        );
        let f = Formatter {
            no_trunc: true,
            timestamps: true,
            ..formatter()
        };
        assert_eq!(
            text(f.pretty(&line())),
            "2013-01-02T13:23:37.000000001Z web.3.abcdefghijklmnopqrstuvwxy@node-1     | hello\n"
        );
        let f = Formatter {
            no_task_ids: true,
            no_resolve: true,
            padding: 1,
            ..formatter()
        };
        assert_eq!(text(f.pretty(&line())), "s1.3@n1    | hello\n");
    }

    #[test]
    fn details_come_sorted_before_the_line_and_raw_lines_keep_the_engines_form() {
        let f = Formatter {
            details: true,
            ..formatter()
        };
        assert_eq!(
            text(f.pretty(&line())),
            "web.3.abcdefghijkl@node-1     | app=web,zone=east side hello\n"
        );
        // No details: an empty field, as Docker prints it.
        let mut plain = line();
        plain.details.clear();
        assert_eq!(
            text(f.pretty(&plain)),
            "web.3.abcdefghijkl@node-1     |  hello\n"
        );
        assert_eq!(text(formatter().raw(&line())), "hello\n");
        assert_eq!(
            text(f.raw(&line())),
            "app=web,com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,\
             com.docker.swarm.task.id=abcdefghijklmnopqrstuvwxy,zone=east+side hello\n"
        );
    }

    fn service(id: &str, name: &str) -> Service {
        Service {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(id: &str) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_service_is_looked_for_first_then_a_task() {
        let services = [service("s1abc", "web")];
        let tasks = [task("t1abc"), task("t1abd"), task("t2xyz")];
        assert!(matches!(
            find_target(&services, &tasks, "web").unwrap(),
            Target::Service(_)
        ));
        assert!(matches!(
            find_target(&services, &tasks, "s1").unwrap(),
            Target::Service(_)
        ));
        let Target::Task(t) = find_target(&services, &tasks, "t2").unwrap() else {
            panic!("a task")
        };
        assert_eq!(t.meta.unwrap().id, "t2xyz");
        let err = find_target(&services, &tasks, "t1ab")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ambiguous"), "{err}");
        let err = find_target(&services, &tasks, "nope")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "no such task or service: nope");
    }

    #[test]
    fn tail_is_all_or_a_count() {
        assert_eq!(parse_tail("all").unwrap(), None);
        assert_eq!(parse_tail("10").unwrap(), Some(10));
        assert_eq!(parse_tail("0").unwrap(), Some(0));
        let err = parse_tail("-1").unwrap_err().to_string();
        assert!(err.contains("positive integer"), "{err}");
    }
}
