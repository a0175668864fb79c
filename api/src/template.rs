//! Swarm's templates in a service's hostname, env values and mount
//! sources/targets: `{{.Service.Name}}`, `{{.Node.ID}}`, `{{.Task.Slot}}`,
//! `{{index .Service.Labels "key"}}`, … — the subset of Go's text/template
//! that swarmkit's context offers. The manager parses them when a service
//! is created or updated (an unknown placeholder is refused there); the
//! agent expands them for each task when it creates the container.

use std::collections::BTreeMap;

use crate::pb::{ContainerSpec, NodeDescription, Task};

pub mod payload;

/// Why a template is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed {{{{ (no matching }}}})")]
    Unclosed,
    #[error("empty {{{{ }}}}: a placeholder such as .Task.Slot is expected")]
    Empty,
    #[error("unknown placeholder {0}")]
    UnknownPlaceholder(String),
    #[error(
        "unsupported action {0:?}: only placeholders (.Service.Name …) and index .Service.Labels \"key\" are supported"
    )]
    Unsupported(String),
    #[error("bad argument {0:?}: expected a quoted string such as \"key\"")]
    BadIndexArgument(String),
    #[error("index of {0}: only .Service.Labels can be indexed")]
    NotIndexable(String),
    #[error("index takes one key, got {0}")]
    IndexArity(usize),
    #[error("no service label {0:?}")]
    MissingLabel(String),
    #[error("{kind} target {target} not found (the task has no {kind} at that target)")]
    NoSuchTarget { kind: &'static str, target: String },
    #[error("{0} is only available in the content of a templated secret or config")]
    PayloadOnly(String),
}

/// One value a template can print.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    ServiceId,
    ServiceName,
    /// The whole map, printed as Go prints one: `map[a:1 b:2]`.
    ServiceLabels,
    /// `index .Service.Labels "k"` (a missing key prints nothing) or
    /// `.Service.Labels.k` (a missing key is an error, Swarm's
    /// `missingkey=error`).
    ServiceLabel {
        key: String,
        required: bool,
    },
    NodeId,
    NodeHostname,
    NodeOs,
    NodeArchitecture,
    TaskId,
    TaskName,
    TaskSlot,
    /// `env "NAME"`: the task's environment variable (templated secrets and
    /// configs only).
    Env(String),
    /// `secret "TARGET"`: the content of the task's secret at that target.
    Secret(String),
    /// `config "TARGET"`: the content of the task's config at that target.
    Config(String),
}

impl Value {
    fn field(path: &str) -> Result<Self, TemplateError> {
        Ok(match path {
            ".Service.ID" => Self::ServiceId,
            ".Service.Name" => Self::ServiceName,
            ".Service.Labels" => Self::ServiceLabels,
            ".Node.ID" => Self::NodeId,
            ".Node.Hostname" => Self::NodeHostname,
            ".Node.Platform.OS" => Self::NodeOs,
            ".Node.Platform.Architecture" => Self::NodeArchitecture,
            ".Task.ID" => Self::TaskId,
            ".Task.Name" => Self::TaskName,
            ".Task.Slot" => Self::TaskSlot,
            other => match other.strip_prefix(".Service.Labels.") {
                // Go reaches a map key by field syntax only when it is an
                // identifier.
                Some(key) if is_identifier(key) => Self::ServiceLabel {
                    key: key.to_owned(),
                    required: true,
                },
                _ => return Err(TemplateError::UnknownPlaceholder(other.to_owned())),
            },
        })
    }
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Value),
}

/// A parsed template, ready to expand for any task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// What placeholders expand to for one task on one node (swarmkit's
/// template context).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub service_id: String,
    pub service_name: String,
    pub service_labels: BTreeMap<String, String>,
    pub node_id: String,
    pub node_hostname: String,
    pub node_os: String,
    pub node_architecture: String,
    pub task_id: String,
    /// `SERVICE.SLOT.TASKID` (global services: `SERVICE.NODEID.TASKID`).
    pub task_name: String,
    /// The slot, or the node's id for a global service's task.
    pub task_slot: String,
}

/// A task's slot as templates and names show it: its number, or the node's
/// id for a global service's task (which has none).
pub fn task_slot(task: &Task) -> String {
    if task.slot > 0 {
        task.slot.to_string()
    } else {
        task.node_id.clone()
    }
}

/// Swarm's name of a task: `SERVICE.SLOT.TASKID` (global services:
/// `SERVICE.NODEID.TASKID`); also its container's name.
pub fn task_name(task: &Task) -> String {
    let id = task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    format!("{}.{}.{id}", task.service_name, task_slot(task))
}

impl Context {
    /// The context of `task` on the node `node` describes.
    pub fn new(task: &Task, node: &NodeDescription) -> Self {
        let platform = node.platform.clone().unwrap_or_default();
        Self {
            service_id: task.service_id.clone(),
            service_name: task.service_name.clone(),
            service_labels: task.service_labels.clone().into_iter().collect(),
            node_id: task.node_id.clone(),
            node_hostname: node.hostname.clone(),
            node_os: platform.os,
            node_architecture: platform.architecture,
            task_id: task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
            task_name: task_name(task),
            task_slot: task_slot(task),
        }
    }

    /// Parses and expands `text` in one go.
    pub fn expand(&self, text: &str) -> Result<String, TemplateError> {
        Template::parse(text)?.expand(self)
    }
}

impl Template {
    /// Parses `text`, refusing what Swarm would refuse (unknown
    /// placeholders, unclosed actions) and what Shoal does not support.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        Self::parse_with(text, false)
    }

    /// `functions`: `env`, `secret` and `config` may be called (the content
    /// of a templated secret or config).
    fn parse_with(text: &str, functions: bool) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut trim_next = false;
        while let Some(start) = rest.find("{{") {
            let mut literal = &rest[..start];
            if trim_next {
                literal = literal.trim_start();
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
            let mut inner = &after[..end];
            // Go's trim markers: `{{- ` and ` -}}` eat the white space
            // beside the action.
            if let Some(stripped) = inner.strip_prefix("- ") {
                literal = literal.trim_end();
                inner = stripped;
            }
            trim_next = false;
            if let Some(stripped) = inner.strip_suffix(" -") {
                trim_next = true;
                inner = stripped;
            }
            if !literal.is_empty() {
                parts.push(Part::Text(literal.to_owned()));
            }
            parts.push(Part::Value(action(inner, functions)?));
            rest = &after[end + 2..];
        }
        let literal = if trim_next { rest.trim_start() } else { rest };
        if !literal.is_empty() {
            parts.push(Part::Text(literal.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The text for one task.
    pub fn expand(&self, context: &Context) -> Result<String, TemplateError> {
        self.expand_with(context, None)
    }

    fn expand_with(
        &self,
        context: &Context,
        payload: Option<&payload::Payload>,
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value(value) => out.push_str(&value_of(value, context, payload)?),
            }
        }
        Ok(out)
    }
}

fn value_of(
    value: &Value,
    c: &Context,
    payload: Option<&payload::Payload>,
) -> Result<String, TemplateError> {
    let payload_only = |name: &str| TemplateError::PayloadOnly(name.to_owned());
    Ok(match value {
        Value::Env(name) => payload.ok_or_else(|| payload_only("env"))?.env(name),
        Value::Secret(target) => payload
            .ok_or_else(|| payload_only("secret"))?
            .secret(target)?,
        Value::Config(target) => payload
            .ok_or_else(|| payload_only("config"))?
            .config(target)?,
        Value::ServiceId => c.service_id.clone(),
        Value::ServiceName => c.service_name.clone(),
        Value::ServiceLabels => go_map(&c.service_labels),
        Value::ServiceLabel { key, required } => match c.service_labels.get(key) {
            Some(v) => v.clone(),
            None if *required => return Err(TemplateError::MissingLabel(key.clone())),
            None => String::new(),
        },
        Value::NodeId => c.node_id.clone(),
        Value::NodeHostname => c.node_hostname.clone(),
        Value::NodeOs => c.node_os.clone(),
        Value::NodeArchitecture => c.node_architecture.clone(),
        Value::TaskId => c.task_id.clone(),
        Value::TaskName => c.task_name.clone(),
        Value::TaskSlot => c.task_slot.clone(),
    })
}

/// A map as Go's fmt prints it: keys sorted, `map[k:v k2:v2]`.
fn go_map(map: &BTreeMap<String, String>) -> String {
    let entries: Vec<String> = map.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("map[{}]", entries.join(" "))
}

/// What one `{{ … }}` holds.
fn action(inner: &str, functions: bool) -> Result<Value, TemplateError> {
    let words = words(inner)?;
    match words.as_slice() {
        [] => Err(TemplateError::Empty),
        [field] if field.starts_with('.') => Value::field(field),
        [function, args @ ..] if function == "index" => index(args),
        [function, arg] if matches!(function.as_str(), "env" | "secret" | "config") => {
            if !functions {
                return Err(TemplateError::PayloadOnly(function.clone()));
            }
            let arg = string_literal(arg)?;
            Ok(match function.as_str() {
                "env" => Value::Env(arg),
                "secret" => Value::Secret(arg),
                _ => Value::Config(arg),
            })
        }
        _ => Err(TemplateError::Unsupported(inner.trim().to_owned())),
    }
}

/// `index .Service.Labels "key"`.
fn index(args: &[String]) -> Result<Value, TemplateError> {
    let Some((target, keys)) = args.split_first() else {
        return Err(TemplateError::IndexArity(0));
    };
    if target != ".Service.Labels" {
        return Err(match Value::field(target) {
            Ok(_) => TemplateError::NotIndexable(target.clone()),
            Err(e) => e,
        });
    }
    match keys {
        // Go's index with no keys gives the map itself.
        [] => Ok(Value::ServiceLabels),
        [key] => Ok(Value::ServiceLabel {
            key: string_literal(key)?,
            required: false,
        }),
        more => Err(TemplateError::IndexArity(more.len())),
    }
}

/// A Go string literal: `"…"` with backslash escapes, or `` `…` `` raw.
fn string_literal(word: &str) -> Result<String, TemplateError> {
    let bad = || TemplateError::BadIndexArgument(word.to_owned());
    if let Some(raw) = word
        .strip_prefix('`')
        .and_then(|w| w.strip_suffix('`'))
        .filter(|_| word.len() >= 2)
    {
        return Ok(raw.to_owned());
    }
    let body = word
        .strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .filter(|_| word.len() >= 2)
        .ok_or_else(bad)?;
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next().ok_or_else(bad)? {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '\\' => '\\',
            '"' => '"',
            '\'' => '\'',
            _ => return Err(bad()),
        });
    }
    Ok(out)
}

/// Splits an action into words, keeping quoted strings whole.
fn words(inner: &str) -> Result<Vec<String>, TemplateError> {
    let mut words = Vec::new();
    let mut chars = inner.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' || c == '`' {
            word.push(c);
            chars.next();
            let mut closed = false;
            while let Some(d) = chars.next() {
                word.push(d);
                if d == '\\' && c == '"' {
                    if let Some(e) = chars.next() {
                        word.push(e);
                    }
                } else if d == c {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err(TemplateError::BadIndexArgument(word));
            }
        } else {
            while let Some(&d) = chars.peek() {
                if d.is_whitespace() {
                    break;
                }
                word.push(d);
                chars.next();
            }
        }
        words.push(word);
    }
    Ok(words)
}

/// Where in a container spec a template sat, for error messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {error}")]
pub struct FieldError {
    /// `hostname`, `env`, `mount source` or `mount target`.
    pub field: &'static str,
    pub value: String,
    pub error: TemplateError,
}

/// The container spec with every templated field expanded for one task:
/// the hostname, the value of each env entry (the name is left as is, as
/// Swarm does), and each mount's source and target.
pub fn expand_container(
    container: &ContainerSpec,
    context: &Context,
) -> Result<ContainerSpec, FieldError> {
    fn field_error(field: &'static str, value: &str) -> impl FnOnce(TemplateError) -> FieldError {
        let value = value.to_owned();
        move |error| FieldError {
            field,
            value,
            error,
        }
    }
    let mut out = container.clone();
    out.hostname = context
        .expand(&container.hostname)
        .map_err(field_error("hostname", &container.hostname))?;
    for entry in &mut out.env {
        if let Some((name, value)) = entry.split_once('=') {
            let expanded = context
                .expand(value)
                .map_err(field_error("env", entry.as_str()))?;
            *entry = format!("{name}={expanded}");
        }
    }
    for mount in &mut out.mounts {
        mount.source = context
            .expand(&mount.source)
            .map_err(field_error("mount source", &mount.source))?;
        mount.target = context
            .expand(&mount.target)
            .map_err(field_error("mount target", &mount.target))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{Meta, Mount, Platform};

    fn context() -> Context {
        Context {
            service_id: "svc1".into(),
            service_name: "web".into(),
            service_labels: [("tier", "front"), ("app.name", "shop")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            node_id: "node1".into(),
            node_hostname: "host1".into(),
            node_os: "linux".into(),
            node_architecture: "x86_64".into(),
            task_id: "task1".into(),
            task_name: "web.3.task1".into(),
            task_slot: "3".into(),
        }
    }

    fn expand(text: &str) -> Result<String, TemplateError> {
        context().expand(text)
    }

    #[test]
    fn every_placeholder_expands() {
        let cases = [
            ("{{.Service.Name}}", "web"),
            ("{{.Service.ID}}", "svc1"),
            ("{{.Service.Labels}}", "map[app.name:shop tier:front]"),
            ("{{.Node.ID}}", "node1"),
            ("{{.Node.Hostname}}", "host1"),
            ("{{.Node.Platform.OS}}", "linux"),
            ("{{.Node.Platform.Architecture}}", "x86_64"),
            ("{{.Task.ID}}", "task1"),
            ("{{.Task.Name}}", "web.3.task1"),
            ("{{.Task.Slot}}", "3"),
        ];
        for (template, want) in cases {
            assert_eq!(expand(template).unwrap(), want, "{template}");
        }
        assert_eq!(
            expand("{{.Service.Name}}-{{ .Task.Slot }}.{{.Node.Hostname}}").unwrap(),
            "web-3.host1"
        );
        assert_eq!(expand("plain").unwrap(), "plain");
        assert_eq!(expand("").unwrap(), "");
        // A lone `}}` is text, as in Go.
        assert_eq!(expand("a}}b").unwrap(), "a}}b");
    }

    #[test]
    fn an_empty_label_map_prints_as_go_prints_it() {
        let empty = Context::default();
        assert_eq!(empty.expand("{{.Service.Labels}}").unwrap(), "map[]");
    }

    #[test]
    fn index_reads_a_service_label() {
        assert_eq!(
            expand(r#"{{index .Service.Labels "app.name"}}"#).unwrap(),
            "shop"
        );
        assert_eq!(
            expand("{{ index .Service.Labels `tier` }}").unwrap(),
            "front"
        );
        // A missing key prints nothing with index (Go's zero value)…
        assert_eq!(
            expand(r#"x{{index .Service.Labels "nope"}}y"#).unwrap(),
            "xy"
        );
        // …but is an error through field syntax (Swarm's missingkey=error).
        assert_eq!(expand("{{.Service.Labels.tier}}").unwrap(), "front");
        assert_eq!(
            expand("{{.Service.Labels.nope}}"),
            Err(TemplateError::MissingLabel("nope".into()))
        );
        assert_eq!(
            expand(r#"{{index .Service.Labels "a" "b"}}"#),
            Err(TemplateError::IndexArity(2))
        );
        assert_eq!(
            expand(r#"{{index .Task.ID "a"}}"#),
            Err(TemplateError::NotIndexable(".Task.ID".into()))
        );
        assert_eq!(
            expand("{{index .Service.Labels tier}}"),
            Err(TemplateError::BadIndexArgument("tier".into()))
        );
        assert!(matches!(
            expand(r#"{{index .Service.Labels "open}}"#),
            Err(TemplateError::BadIndexArgument(_))
        ));
    }

    #[test]
    fn unknown_and_malformed_templates_are_refused_naming_the_problem() {
        let err = Template::parse("{{.Bogus}}").unwrap_err();
        assert_eq!(err, TemplateError::UnknownPlaceholder(".Bogus".into()));
        assert_eq!(err.to_string(), "unknown placeholder .Bogus");
        // Go's field names are case-sensitive.
        assert!(matches!(
            Template::parse("{{.service.name}}"),
            Err(TemplateError::UnknownPlaceholder(_))
        ));
        assert_eq!(
            Template::parse("open{{.Task.Slot"),
            Err(TemplateError::Unclosed)
        );
        assert_eq!(Template::parse("{{ }}"), Err(TemplateError::Empty));
        assert!(matches!(
            Template::parse("{{if .Task.Slot}}x{{end}}"),
            Err(TemplateError::Unsupported(_))
        ));
        assert!(matches!(
            Template::parse("{{.Task.Slot .Task.ID}}"),
            Err(TemplateError::Unsupported(_))
        ));
    }

    #[test]
    fn trim_markers_eat_the_white_space_beside_them() {
        assert_eq!(expand("a  {{- .Task.Slot -}}  b").unwrap(), "a3b");
        assert_eq!(expand("a {{.Task.Slot}} b").unwrap(), "a 3 b");
    }

    #[test]
    fn a_context_comes_from_the_task_and_the_node() {
        let task = Task {
            meta: Some(Meta {
                id: "t1".into(),
                ..Default::default()
            }),
            service_id: "s1".into(),
            service_name: "web".into(),
            service_labels: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
            node_id: "n1".into(),
            slot: 2,
            ..Default::default()
        };
        let node = NodeDescription {
            hostname: "host1".into(),
            platform: Some(Platform {
                os: "linux".into(),
                architecture: "aarch64".into(),
            }),
            ..Default::default()
        };
        let c = Context::new(&task, &node);
        assert_eq!(
            c.expand("{{.Task.Name}} {{.Task.Slot}} {{.Node.ID}} {{.Node.Platform.Architecture}} {{.Service.Labels}}")
                .unwrap(),
            "web.2.t1 2 n1 aarch64 map[k:v]"
        );
        // A global service's task has no slot: the node's id stands in.
        let global = Task { slot: 0, ..task };
        assert_eq!(task_name(&global), "web.n1.t1");
        assert_eq!(Context::new(&global, &node).task_slot, "n1");
    }

    #[test]
    fn a_container_expands_hostname_env_values_and_mounts() {
        let container = ContainerSpec {
            hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
            env: vec![
                "NODE={{.Node.ID}}".into(),
                "{{.Task.Slot}}=kept".into(),
                "BARE".into(),
            ],
            mounts: vec![Mount {
                r#type: "bind".into(),
                source: "/srv/{{.Service.Name}}/{{.Task.Slot}}".into(),
                target: "/data/{{.Node.Hostname}}".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = expand_container(&container, &context()).unwrap();
        assert_eq!(out.hostname, "web-3");
        assert_eq!(out.env, ["NODE=node1", "{{.Task.Slot}}=kept", "BARE"]);
        assert_eq!(out.mounts[0].source, "/srv/web/3");
        assert_eq!(out.mounts[0].target, "/data/host1");

        let bad = ContainerSpec {
            env: vec!["X={{.Bogus}}".into()],
            ..Default::default()
        };
        let err = expand_container(&bad, &context()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid env "X={{.Bogus}}": unknown placeholder .Bogus"#
        );
        let bad = ContainerSpec {
            hostname: "{{.Bogus}}".into(),
            ..Default::default()
        };
        assert_eq!(
            expand_container(&bad, &context()).unwrap_err().to_string(),
            r#"invalid hostname "{{.Bogus}}": unknown placeholder .Bogus"#
        );
    }
}
