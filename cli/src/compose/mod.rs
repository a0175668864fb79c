//! Compose files as `docker stack deploy` reads them: one or more files,
//! merged in order, with `x-*` extension fields dropped, variables
//! interpolated from the caller's environment, YAML anchors and merge keys
//! resolved, cluster-meaningless keys warned about and ignored, and every
//! other problem reported with its file, line, column and key path.
//! Turning the result into Shoal objects is [`convert`]'s job.

pub mod convert;
mod interpolate;
mod locate;
pub mod model;
mod yaml;

use std::path::{Path, PathBuf};

use locate::Seg;
pub use model::ComposeFile;
use yaml::{Mapping, Value};

/// A problem in a compose file, with where it is.
#[derive(Debug)]
pub struct ComposeError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// `services.web.deploy.replicas`; empty for a syntax error.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ComposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ComposeError {}

/// The files' sources, kept to locate errors found after merging.
struct Source {
    path: PathBuf,
    text: String,
}

/// Merged, interpolated and typed compose files.
pub struct Project {
    pub file: ComposeFile,
    /// The merged document, for `stack config`.
    pub merged: Value,
    /// Relative paths in the files are relative to the first file's directory.
    pub dir: PathBuf,
    pub warnings: Vec<String>,
    sources: Vec<Source>,
}

impl Project {
    /// An error about `path`'s value, located in the last file that sets it.
    pub fn error_at(&self, path: &[Seg], message: impl Into<String>) -> ComposeError {
        self.error_near(path, message, false)
    }

    fn error_near(&self, path: &[Seg], message: impl Into<String>, at_key: bool) -> ComposeError {
        let (mut best_depth, mut best) = (0, None);
        for source in self.sources.iter().rev() {
            let found = locate::find(&source.text, path);
            let column = if at_key {
                found.key_column
            } else {
                found.column
            };
            if found.depth > best_depth || best.is_none() {
                best_depth = found.depth;
                best = Some((source, found.line, column));
            }
            if found.depth == path.len() {
                break;
            }
        }
        let (source, line, column) = best.map_or((None, 1, 1), |(s, l, c)| (Some(s), l, c));
        ComposeError {
            file: source.map(|s| s.path.clone()).unwrap_or_default(),
            line,
            column,
            path: locate::display(path),
            message: message.into(),
        }
    }

    /// The merged, interpolated document as YAML (`stack config`).
    pub fn to_yaml(&self) -> String {
        yaml::to_string(&self.merged).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

/// Key path helpers for callers building errors.
pub fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

pub fn index(i: usize) -> Seg {
    Seg::Index(i)
}

/// Loads `files` in order; variables come from `lookup`.
pub fn load(
    files: &[PathBuf],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Project, ComposeError> {
    let mut merged = Value::Mapping(Mapping::new());
    let mut sources = Vec::new();
    let mut warnings = Vec::new();
    for path in files {
        let text = read(path)?;
        let mut value = yaml::parse(&text).map_err(|e| ComposeError {
            file: path.clone(),
            line: e.line,
            column: e.column,
            path: String::new(),
            message: e.message,
        })?;
        let source = Source {
            path: path.clone(),
            text,
        };
        if !value.is_mapping() {
            return Err(located(
                &source,
                &[],
                "a compose file must be a mapping (services: ...)",
            ));
        }
        drop_extensions(&mut value);
        let mut at = Vec::new();
        interpolate_all(&mut value, lookup, &mut at)
            .map_err(|(path, message)| located(&source, &path, message))?;
        drop_ignored(&mut value, &source, &mut warnings);
        merge(&mut merged, value);
        sources.push(source);
    }
    let project = Project {
        file: ComposeFile::default(),
        merged,
        dir: files
            .first()
            .and_then(|f| f.parent())
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .unwrap_or(Path::new("."))
            .to_owned(),
        warnings,
        sources,
    };
    let file =
        yaml::from_value::<ComposeFile>(project.merged.clone()).map_err(|(path, message)| {
            let unknown_key = message.starts_with("unknown field");
            project.error_near(&path, friendly(&message), unknown_key)
        })?;
    Ok(Project { file, ..project })
}

fn read(path: &Path) -> Result<String, ComposeError> {
    let error = |message: String| ComposeError {
        file: path.to_owned(),
        line: 1,
        column: 1,
        path: String::new(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| error(format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|_| error("not UTF-8 text".into()))
}

fn located(source: &Source, path: &[Seg], message: impl Into<String>) -> ComposeError {
    let (_, line, column) = locate::locate(&source.text, path);
    ComposeError {
        file: source.path.clone(),
        line,
        column,
        path: locate::display(path),
        message: message.into(),
    }
}

/// `x-*` keys hold anchors' material for the rest of the file; they are
/// not part of the application.
fn drop_extensions(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            map.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with("x-")));
            for (_, v) in map.iter_mut() {
                drop_extensions(v);
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(drop_extensions),
        _ => {}
    }
}

fn interpolate_all(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    at: &mut Vec<Seg>,
) -> Result<(), (Vec<Seg>, String)> {
    match value {
        Value::String(text) if text.contains('$') => {
            *text =
                interpolate::interpolate(text, lookup).map_err(|e| (at.clone(), e.to_string()))?;
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                at.push(Seg::Key(key_text(k)));
                interpolate_all(v, lookup, at)?;
                at.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                at.push(Seg::Index(i));
                interpolate_all(v, lookup, at)?;
                at.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "?".into(),
    }
}

fn drop_ignored(value: &mut Value, source: &Source, warnings: &mut Vec<String>) {
    let Some(services) = value.get_mut("services").and_then(Value::as_mapping_mut) else {
        return;
    };
    for (name, service) in services.iter_mut() {
        let Some(service) = service.as_mapping_mut() else {
            continue;
        };
        let name = key_text(name);
        for ignored in model::IGNORED_SERVICE_KEYS {
            if service.remove(*ignored).is_some() {
                let path = [
                    Seg::Key("services".into()),
                    Seg::Key(name.clone()),
                    Seg::Key((*ignored).into()),
                ];
                let found = locate::find(&source.text, &path);
                let (line, column) = (found.line, found.key_column);
                warnings.push(format!(
                    "{}:{line}:{column}: ignoring {}: it means nothing in a cluster (as `docker stack deploy` does)",
                    source.path.display(),
                    locate::display(&path),
                ));
            }
        }
    }
}

/// Compose's merge of a later file into an earlier one: mappings merge key
/// by key; lists that name things (ports, volumes, secrets, configs, …)
/// are concatenated; anything else is replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (k, v) in over {
                match base.get_mut(&k) {
                    Some(existing) => {
                        let concat = matches!(
                            k.as_str(),
                            Some(
                                "ports"
                                    | "volumes"
                                    | "secrets"
                                    | "configs"
                                    | "expose"
                                    | "dns"
                                    | "tmpfs"
                                    | "constraints"
                                    | "preferences"
                            )
                        );
                        match (existing, v) {
                            (Value::Sequence(a), Value::Sequence(b)) if concat => {
                                for item in b {
                                    if !a.contains(&item) {
                                        a.push(item);
                                    }
                                }
                            }
                            (existing, v) => merge(existing, v),
                        }
                    }
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// serde's "invalid type: string \"two\", expected an integer" as
/// "expected an integer, found \"two\"".
fn friendly(message: &str) -> String {
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    if let Some(rest) = rest
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let found = found
            .strip_prefix("string ")
            .or_else(|| found.strip_prefix("integer "))
            .or_else(|| found.strip_prefix("floating point "))
            .or_else(|| found.strip_prefix("boolean "))
            .map(|v| v.trim_matches('`').to_owned())
            .unwrap_or_else(|| match found {
                "map" => "a mapping".into(),
                "sequence" => "a list".into(),
                "unit value" => "nothing".into(),
                other => other.into(),
            });
        let expected = match expected {
            "u64" | "u32" | "i64" | "u16" => "an integer",
            "a string" | "string" => "a string",
            "a boolean" | "bool" => "true or false",
            other => other,
        };
        return format!("expected {expected}, found {found}");
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return match rest.split_once(", ") {
            Some((field, known)) => {
                format!("unknown key {field}: Shoal cannot honour it ({known})")
            }
            None => format!("unknown key {rest}: Shoal cannot honour it"),
        };
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("{field} is required here");
    }
    message.to_owned()
}

#[cfg(test)]
mod tests;
