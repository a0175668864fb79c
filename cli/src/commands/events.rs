//! `shoal events`: the cluster's object changes as `docker events` prints
//! swarm events (`2026-…Z service update <id> (name=web, …)`), streamed by
//! the manager the CLI talks to from its store's watch; `--since` replays
//! what that manager still keeps (its last 1024 events since it started).

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use shoal_api::pb::{Event, EventsRequest};

use crate::{
    client::{Client, status_error},
    output::{
        filter::Filters,
        template::{GoTemplate, to_value},
    },
    timestamp,
};

/// The filter keys `shoal events` takes (Docker's, for what Shoal has).
const FILTER_KEYS: &[&str] = &[
    "type", "event", "scope", "service", "node", "task", "network", "secret", "config",
];

/// The event types a manager sends.
const TYPES: &[&str] = &["service", "node", "task", "network", "secret", "config"];

#[derive(Args)]
pub struct EventsArgs {
    /// Filter output based on conditions provided (type, event, scope, service, node, task, network, secret, config).
    #[arg(short, long = "filter", value_name = "FILTER")]
    filter: Vec<String>,
    /// Format output using a custom template: 'json' (each event as JSON) or a Go TEMPLATE.
    #[arg(long)]
    format: Option<String>,
    /// Show all events created since timestamp (replayed from the manager's last 1024 events).
    #[arg(long)]
    since: Option<String>,
    /// Stream events until this timestamp.
    #[arg(long)]
    until: Option<String>,
}

/// The checked `--filter`s.
fn event_filters(flags: &[String]) -> Result<Filters> {
    let filters = Filters::parse(flags, FILTER_KEYS)?;
    for kind in filters.get("type") {
        if !TYPES.contains(&kind.as_str()) {
            bail!(
                "invalid filter 'type={kind}': shoal sends {} events",
                TYPES.join(", ")
            );
        }
    }
    for scope in filters.get("scope") {
        if scope != "swarm" && scope != "local" {
            bail!("invalid filter 'scope={scope}': use swarm or local");
        }
    }
    Ok(filters)
}

/// Whether `event` passes `filters`, as Docker's daemon decides: each key
/// given must match; an object key matches the event's actor by ID or name
/// prefix. A task's events also pass `service=` and `node=` by the task's
/// service name and node ID.
fn passes(filters: &Filters, event: &Event) -> bool {
    let name = event
        .attributes
        .get("name")
        .map(String::as_str)
        .unwrap_or("");
    let actor = |key: &str| {
        filters.prefix(key, &event.actor_id) || filters.prefix(key, name) || {
            let of_task = (event.r#type == "task")
                .then(|| event.attributes.get(key))
                .flatten();
            of_task.is_some_and(|v| filters.prefix(key, v))
        }
    };
    filters.exact("type", &event.r#type)
        && filters.exact("event", &event.action)
        && filters.exact("scope", "swarm")
        && ["service", "node", "task", "network", "secret", "config"]
            .iter()
            .all(|key| actor(key))
}

/// The event as Docker's API gives it (what `--format` sees).
fn event_json(event: &Event) -> Value {
    let attributes: serde_json::Map<String, Value> = event
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "Type": event.r#type,
        "Action": event.action,
        "Actor": { "ID": event.actor_id, "Attributes": attributes },
        "scope": "swarm",
        "time": event.time_nano.div_euclid(1_000_000_000),
        "timeNano": event.time_nano,
    })
}

/// Docker's line: time, type, action, actor, then the attributes sorted.
fn line(event: &Event) -> String {
    let mut out = format!(
        "{} {} {} {}",
        timestamp::rfc3339_nano_fixed(event.time_nano),
        event.r#type,
        event.action,
        event.actor_id
    );
    if !event.attributes.is_empty() {
        let mut attributes: Vec<String> = event
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        attributes.sort();
        out.push_str(&format!(" ({})", attributes.join(", ")));
    }
    out
}

pub async fn run(client: &mut Client, args: EventsArgs) -> Result<()> {
    let filters = event_filters(&args.filter)?;
    let now = chrono::Local::now();
    let since_ns = args
        .since
        .as_deref()
        .map(|s| timestamp::since_ns(s, now).context("--since"))
        .transpose()?;
    let until_ns = args
        .until
        .as_deref()
        .map(|s| timestamp::since_ns(s, now).context("--until"))
        .transpose()?;
    let template = match args.format.as_deref() {
        None | Some("") => None,
        Some("json") => Some(GoTemplate::parse("{{json .}}")?),
        Some(text) => Some(GoTemplate::parse(text)?),
    };
    let mut stream = client
        .events(EventsRequest { since_ns, until_ns })
        .await
        .map_err(status_error)?
        .into_inner();
    while let Some(event) = stream.message().await.map_err(status_error)? {
        if !passes(&filters, &event) {
            continue;
        }
        let text = match &template {
            Some(t) => t.execute(&to_value(&event_json(&event)))?,
            None => line(&event),
        };
        println!("{text}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, action: &str, id: &str, attributes: &[(&str, &str)]) -> Event {
        Event {
            r#type: kind.into(),
            action: action.into(),
            actor_id: id.into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            time_nano: 1_764_497_577_123_456_789,
        }
    }

    fn filters(flags: &[&str]) -> Filters {
        event_filters(&flags.iter().map(|f| f.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn prints_as_docker_prints_a_swarm_event() {
        let e = event(
            "service",
            "update",
            "abc123",
            &[
                ("replicas.old", "2"),
                ("name", "web"),
                ("replicas.new", "3"),
            ],
        );
        assert_eq!(
            line(&e),
            "2025-11-30T10:12:57.123456789Z service update abc123 (name=web, replicas.new=3, replicas.old=2)"
        );
        let bare = event("node", "remove", "n1", &[]);
        assert!(line(&bare).ends_with(" node remove n1"));
    }

    #[test]
    fn json_has_dockers_fields() {
        let e = event("node", "update", "n1", &[("name", "host1")]);
        let out = GoTemplate::parse("{{json .}}")
            .unwrap()
            .execute(&to_value(&event_json(&e)))
            .unwrap();
        let back: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["Type"], "node");
        assert_eq!(back["Action"], "update");
        assert_eq!(back["Actor"]["ID"], "n1");
        assert_eq!(back["Actor"]["Attributes"]["name"], "host1");
        assert_eq!(back["scope"], "swarm");
        assert_eq!(back["time"], 1_764_497_577);
        assert_eq!(back["timeNano"], 1_764_497_577_123_456_789_i64);
        let custom = GoTemplate::parse("{{.Type}} {{.Actor.Attributes.name}}")
            .unwrap()
            .execute(&to_value(&event_json(&e)))
            .unwrap();
        assert_eq!(custom, "node host1");
    }

    #[test]
    fn filters_match_as_dockers_daemon() {
        let svc = event("service", "create", "s1abc", &[("name", "web")]);
        let task = event(
            "task",
            "update",
            "t1",
            &[("name", "web.1"), ("service", "web"), ("node", "n9")],
        );
        let node = event("node", "update", "n9", &[("name", "host9")]);
        assert!(passes(&filters(&[]), &svc));
        assert!(passes(&filters(&["type=service"]), &svc));
        assert!(!passes(&filters(&["type=service"]), &task));
        assert!(passes(&filters(&["type=service", "type=node"]), &node));
        assert!(passes(&filters(&["service=web"]), &svc));
        assert!(passes(&filters(&["service=s1"]), &svc));
        assert!(passes(&filters(&["service=web"]), &task));
        assert!(!passes(&filters(&["service=web"]), &node));
        assert!(passes(&filters(&["node=n9"]), &task));
        assert!(passes(&filters(&["node=host9"]), &node));
        assert!(passes(&filters(&["event=create"]), &svc));
        assert!(!passes(&filters(&["event=create"]), &task));
        assert!(!passes(&filters(&["scope=local"]), &svc));
    }

    #[test]
    fn bad_filters_name_the_problem() {
        let bad = |f: &str| event_filters(&[f.to_string()]).unwrap_err().to_string();
        assert_eq!(bad("colour=red"), "invalid filter 'colour'");
        assert!(bad("type=container").contains("invalid filter 'type=container'"));
        assert!(bad("scope=global").contains("use swarm or local"));
    }
}
