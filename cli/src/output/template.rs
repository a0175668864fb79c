//! Docker's `--format` templates: Go's text/template (the `gotmpl` crate)
//! with the functions Docker's CLI adds (`json`, `join`, `split`, `title`,
//! `lower`, `upper`, `pad`, `truncate`; `println` is Go's own), executed on
//! the JSON values Docker's templates see.

use std::{collections::BTreeMap, sync::Arc};

use gotmpl::{MissingKey, Template, Value};

/// A template Docker would refuse, or one that failed on a value: Docker
/// words both "template parsing error: …".
#[derive(Debug, thiserror::Error)]
#[error("template parsing error: {0}")]
pub struct TemplateError(String);

impl From<String> for TemplateError {
    fn from(text: String) -> Self {
        Self(text)
    }
}

fn error(text: impl Into<String>) -> gotmpl::TemplateError {
    gotmpl::TemplateError::Exec(text.into())
}

/// A parsed `--format` template.
pub struct GoTemplate(Template);

impl GoTemplate {
    /// `text` with Docker's functions; a field the data lacks is an error,
    /// as it is on Docker's typed contexts and on inspect's raw fallback.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let template = docker_functions(Template::new("")).missing_key(MissingKey::Error);
        template
            .parse(text)
            .map(Self)
            .map_err(|e| TemplateError(e.to_string()))
    }

    /// `text` as Docker renders a table's header row: its column-naming
    /// functions return their first argument untouched, and a field with no
    /// header prints as Go prints a missing key.
    pub fn parse_header(text: &str) -> Result<Self, TemplateError> {
        let mut template = Template::new("");
        for name in [
            "json", "split", "join", "title", "lower", "upper", "truncate",
        ] {
            template = template.func(name, |args| Ok(args.first().cloned().unwrap_or(Value::Nil)));
        }
        template
            .func("pad", pad)
            .parse(text)
            .map(Self)
            .map_err(|e| TemplateError(e.to_string()))
    }

    pub fn execute(&self, data: &Value) -> Result<String, TemplateError> {
        self.0
            .execute_to_string(data)
            .map_err(|e| TemplateError(e.to_string()))
    }
}

fn docker_functions(template: Template) -> Template {
    template
        .func("json", |args| {
            let value = args.first().map(to_json).unwrap_or(serde_json::Value::Null);
            Ok(Value::String(value.to_string().into()))
        })
        .func("split", |args| {
            let [text, sep] = two(args, "split")?;
            let (text, sep) = (text_of(text), text_of(sep));
            // Go's strings.Split: an empty separator splits into characters.
            let parts: Vec<Value> = if sep.is_empty() {
                text.chars()
                    .map(|c| Value::String(c.to_string().into()))
                    .collect()
            } else {
                text.split(sep.as_str())
                    .map(|p| Value::String(p.into()))
                    .collect()
            };
            Ok(Value::List(parts.into()))
        })
        .func("join", |args| {
            let [items, sep] = two(args, "join")?;
            let sep = text_of(sep);
            let joined = match items {
                Value::Nil => String::new(),
                Value::List(items) => items
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(&sep),
                // Docker joins a map's values, sorted, "to keep a consistent order".
                Value::Map(map) => {
                    let mut values: Vec<String> = map.values().map(Value::to_string).collect();
                    values.sort();
                    values.join(&sep)
                }
                other => return Err(error(format!("expected slice, got {}", other.type_name()))),
            };
            Ok(Value::String(joined.into()))
        })
        .func("title", |args| {
            Ok(Value::String(title(&text_of(one(args, "title")?)).into()))
        })
        .func("lower", |args| {
            Ok(Value::String(
                text_of(one(args, "lower")?).to_lowercase().into(),
            ))
        })
        .func("upper", |args| {
            Ok(Value::String(
                text_of(one(args, "upper")?).to_uppercase().into(),
            ))
        })
        .func("pad", pad)
        .func("truncate", |args| {
            let [text, length] = two(args, "truncate")?;
            let text = text_of(text);
            let length = length
                .as_int()
                .ok_or_else(|| error("truncate: the length must be a number"))?;
            let length = usize::try_from(length).unwrap_or(0);
            Ok(Value::String(
                text.chars().take(length).collect::<String>().into(),
            ))
        })
}

/// `pad TEXT PREFIX SUFFIX`: spaces around non-empty text.
fn pad(args: &[Value]) -> gotmpl::Result<Value> {
    let (text, prefix, suffix) = match args {
        [text, prefix, suffix] => (text_of(text), prefix, suffix),
        _ => return Err(arg_count("pad", 3, args.len())),
    };
    if text.is_empty() {
        return Ok(Value::String("".into()));
    }
    let spaces = |v: &Value| {
        " ".repeat(
            v.as_int()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0),
        )
    };
    Ok(Value::String(
        format!("{}{text}{}", spaces(prefix), spaces(suffix)).into(),
    ))
}

fn arg_count(name: &str, expected: usize, got: usize) -> gotmpl::TemplateError {
    gotmpl::TemplateError::ArgCount {
        name: name.to_owned(),
        expected,
        got,
    }
}

fn one<'a>(args: &'a [Value], name: &str) -> gotmpl::Result<&'a Value> {
    match args {
        [value] => Ok(value),
        _ => Err(arg_count(name, 1, args.len())),
    }
}

fn two<'a>(args: &'a [Value], name: &str) -> gotmpl::Result<[&'a Value; 2]> {
    match args {
        [a, b] => Ok([a, b]),
        _ => Err(arg_count(name, 2, args.len())),
    }
}

/// A string argument as Go's fmt would print any other.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// Go's (deprecated) strings.Title: the first letter of every word upper-cased.
pub fn title(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_separator = true;
    for c in text.chars() {
        if after_separator {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        after_separator = !(c.is_alphanumeric() || c == '_');
    }
    out
}

/// A JSON value as the template engine sees it: objects as maps (fields by
/// name, sorted as Go ranges over maps), arrays as lists.
pub fn to_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::Uint(u)
            } else {
                Value::Float(n.as_f64().unwrap_or_default())
            }
        }
        serde_json::Value::String(s) => Value::String(s.as_str().into()),
        serde_json::Value::Array(items) => Value::List(items.iter().map(to_value).collect()),
        serde_json::Value::Object(map) => Value::Map(Arc::new(
            map.iter()
                .map(|(k, v)| (Arc::from(k.as_str()), to_value(v)))
                .collect::<BTreeMap<_, _>>(),
        )),
    }
}

/// The way back, for `json`: what Go's encoding/json writes for the value.
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Uint(u) => (*u).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::String(s) => serde_json::Value::String(s.to_string()),
        Value::List(items) => items.iter().map(to_json).collect(),
        Value::Map(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| (k.to_string(), to_json(v)))
                .collect(),
        ),
    }
}

/// Docker's `Format.templateString`: `table` and the spaces around the
/// template go, and the two-character escapes `\t` and `\n` become the
/// characters (shells pass them literally).
pub fn template_text(format: &str) -> String {
    let text = format.strip_prefix("table").unwrap_or(format);
    text.trim_matches(' ')
        .replace("\\t", "\t")
        .replace("\\n", "\n")
}
