//! Compose files as `docker stack deploy` reads them (Docker 28's
//! `cli/compose/loader`), checked against `docker stack config` by the
//! differential tests in `cli/tests/compose_differential.rs`:
//!
//! 1. each file is parsed with bounds ([`yaml`]: first document, BOM
//!    skipped, depth and alias expansion limited), refused if it uses a
//!    key Docker forbids, interpolated ([`interpolate`]), stripped of its
//!    `x-*` keys ([`extras`]), read into the typed [`model`] (every short
//!    form into its long one), and settled ([`resolve`]: env files, paths,
//!    external names);
//! 2. the files are merged in order by Docker's rules ([`merge`]);
//! 3. [`convert`] turns the result into Shoal objects; `stack config` runs
//!    it too, so that what it prints deploys.
//!
//! Keys a stack cannot use are warned about with their place, in Docker's
//! words ([`properties`]); every problem names its file, line, column and
//! key path.

mod bounded;
pub mod convert;
mod extras;
mod interpolate;
mod locate;
mod merge;
pub mod model;
mod properties;
mod resolve;
mod yaml;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use locate::Seg;
pub use model::ComposeFile;
use yaml::Value;

/// Looks a variable up in the caller's environment.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

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
        if !self.file.as_os_str().is_empty() {
            write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ComposeError {}

/// One file's text, kept to locate errors found after merging.
pub struct Source {
    /// Its path as given, or `-` for the standard input.
    pub name: PathBuf,
    pub text: String,
}

impl Source {
    /// Reads `path`, or the standard input for `-`.
    pub fn read(path: &Path) -> Result<Self, ComposeError> {
        let error = |message: String| ComposeError {
            file: path.to_owned(),
            line: 1,
            column: 1,
            path: String::new(),
            message,
        };
        let bytes = if path == Path::new("-") {
            bounded::read_stream(std::io::stdin(), Path::new("the standard input"))
        } else {
            bounded::read(path)
        }
        .map_err(error)?;
        let text = String::from_utf8(bytes).map_err(|_| error("not UTF-8 text".into()))?;
        Ok(Self {
            name: path.to_owned(),
            text: yaml::strip_bom(&text).to_owned(),
        })
    }

    fn error(&self, path: &[Seg], message: impl Into<String>, at_key: bool) -> ComposeError {
        let found = locate::find(&self.text, path);
        ComposeError {
            file: self.name.clone(),
            line: found.line,
            column: if at_key {
                found.key_column
            } else {
                found.column
            },
            path: locate::display(path),
            message: message.into(),
        }
    }
}

/// How to load.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `stack config --skip-interpolation`: variables stay as written.
    pub skip_interpolation: bool,
}

/// Merged, interpolated and typed compose files.
pub struct Project {
    pub file: ComposeFile,
    pub warnings: Vec<String>,
    extras: extras::Extras,
    sources: Vec<Source>,
}

impl Project {
    /// An error about `path`'s value, located in the last file that sets it.
    pub fn error_at(&self, path: &[Seg], message: impl Into<String>) -> ComposeError {
        let mut best: Option<(usize, &Source)> = None;
        for source in self.sources.iter().rev() {
            let found = locate::find(&source.text, path);
            if best.is_none_or(|(depth, _)| found.depth > depth) {
                best = Some((found.depth, source));
            }
            if found.depth == path.len() {
                break;
            }
        }
        match best {
            Some((_, source)) => source.error(path, message, false),
            None => ComposeError {
                file: PathBuf::new(),
                line: 1,
                column: 1,
                path: locate::display(path),
                message: message.into(),
            },
        }
    }

    /// The resolved model as `docker stack config` prints it.
    pub fn to_yaml(&self) -> String {
        let mut document = match yaml_serde::to_value(&self.file) {
            Ok(document) => document,
            Err(e) => return format!("# cannot print: {e}\n"),
        };
        let file = &self.file;
        // Docker keeps the extras of external networks and volumes only
        // (and a volume's `x-cluster-spec`, a field of its own there).
        let keep = |section: &str, name: &str, key: &str| match section {
            "networks" => file.networks.get(name).is_some_and(|n| n.external.external),
            "volumes" => {
                key == CLUSTER_SPEC || file.volumes.get(name).is_some_and(|v| v.external.external)
            }
            _ => true,
        };
        self.extras.restore(&mut document, &keep);
        yaml::to_string(&document).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

/// Docker's key for a cluster (CSI) volume's options, under a volume.
pub const CLUSTER_SPEC: &str = "x-cluster-spec";

impl Project {
    /// Whether the top-level volume `name` is a cluster (CSI) volume.
    pub fn is_cluster_volume(&self, name: &str) -> bool {
        self.extras
            .objects
            .get("volumes")
            .and_then(|v| v.get(name))
            .is_some_and(|keys| keys.contains_key(CLUSTER_SPEC))
    }
}

/// Key path helpers for callers building errors.
pub fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

pub fn index(i: usize) -> Seg {
    Seg::Index(i)
}

/// Reads and loads `files` in order (`-` is the standard input); variables
/// come from `lookup`.
pub fn load(files: &[PathBuf], lookup: Lookup, options: Options) -> Result<Project, ComposeError> {
    let sources = files
        .iter()
        .map(|f| Source::read(f))
        .collect::<Result<Vec<_>, _>>()?;
    let first = files.first().map(PathBuf::as_path);
    let dir = match first {
        None => PathBuf::from("."),
        Some(p) if p == Path::new("-") => std::env::current_dir().unwrap_or_default(),
        Some(p) => {
            let absolute = std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
            absolute.parent().map(Path::to_owned).unwrap_or_default()
        }
    };
    load_sources(sources, dir, lookup, options)
}

/// Loads files already read; relative paths in them are against `dir`.
pub fn load_sources(
    sources: Vec<Source>,
    dir: PathBuf,
    lookup: Lookup,
    options: Options,
) -> Result<Project, ComposeError> {
    if sources.is_empty() {
        return Err(ComposeError {
            file: PathBuf::new(),
            line: 0,
            column: 0,
            path: String::new(),
            message: "Specify a Compose file (with --compose-file)".into(),
        });
    }
    let mut warnings = Vec::new();
    let mut merged: Option<(ComposeFile, extras::Extras)> = None;
    for source in &sources {
        let (file, extras) = load_one(source, &dir, lookup, options, &mut warnings)?;
        merged = Some(match merged {
            None => (file, extras),
            Some((mut base, mut base_extras)) => {
                let redefined: BTreeMap<&'static str, Vec<String>> = [
                    ("networks", file.networks.keys().cloned().collect()),
                    ("volumes", file.volumes.keys().cloned().collect()),
                    ("secrets", file.secrets.keys().cloned().collect()),
                    ("configs", file.configs.keys().cloned().collect()),
                ]
                .into_iter()
                .collect();
                merge::merge(&mut base, file);
                base_extras.merge(extras, &redefined);
                (base, base_extras)
            }
        });
    }
    let (file, extras) = merged.unwrap_or_default();
    Ok(Project {
        file,
        warnings,
        extras,
        sources,
    })
}

/// One file, up to its settled model.
fn load_one(
    source: &Source,
    dir: &Path,
    lookup: Lookup,
    options: Options,
    warnings: &mut Vec<String>,
) -> Result<(ComposeFile, extras::Extras), ComposeError> {
    let mut value = yaml::parse(&source.text).map_err(|e| ComposeError {
        file: source.name.clone(),
        line: e.line,
        column: e.column,
        path: String::new(),
        message: e.message,
    })?;
    if !value.is_mapping() {
        return Err(source.error(&[], "top-level object must be a mapping", false));
    }
    if let Some((path, message)) = properties::forbidden(&value) {
        return Err(source.error(&path, message, true));
    }
    if !options.skip_interpolation {
        let mut at = Vec::new();
        interpolate_all(&mut value, lookup, &mut at)
            .map_err(|(path, message)| source.error(&path, message, false))?;
    }
    properties::warn(&mut value, source, warnings);
    warn_port_addresses(&value, source, warnings);
    let extras = extras::Extras::take(&mut value);
    let mut file = yaml::from_value::<ComposeFile>(value).map_err(|(path, message)| {
        let unknown_key = message.starts_with("unknown field");
        source.error(&path, friendly(&message), unknown_key)
    })?;
    file.version = match file.version.as_str() {
        "" | "3" => model::DEFAULT_VERSION.to_owned(),
        other => other.to_owned(),
    };
    resolve::resolve(&mut file, dir, lookup, warnings)
        .map_err(|(path, message)| source.error(&path, message, false))?;
    Ok((file, extras))
}

fn interpolate_all(
    value: &mut Value,
    lookup: Lookup,
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

/// `127.0.0.1:8080:80`: Docker warns that the address is ignored (a
/// published port answers on every node); so does Shoal, with the place.
fn warn_port_addresses(value: &Value, source: &Source, warnings: &mut Vec<String>) {
    let Some(services) = value.get("services").and_then(Value::as_mapping) else {
        return;
    };
    for (name, service) in services {
        let Some(ports) = service.get("ports").and_then(Value::as_sequence) else {
            continue;
        };
        for (i, port) in ports.iter().enumerate() {
            let path = [
                key("services"),
                key(&key_text(name)),
                key("ports"),
                index(i),
            ];
            let address = match port {
                Value::String(spec) => model::entries::parse_port_spec(spec)
                    .ok()
                    .and_then(|p| p.into_iter().next())
                    .and_then(|p| {
                        let ip = p.host_ip.filter(|ip| !is_unspecified(ip))?;
                        let host_port = spec.rsplit_once(':')?.0.rsplit(':').next()?;
                        Some(format!(
                            "{}:{}:{}/{}",
                            bracketed(&ip),
                            host_port,
                            p.target,
                            p.protocol
                        ))
                    }),
                Value::Mapping(_) => port
                    .get("host_ip")
                    .and_then(Value::as_str)
                    .filter(|ip| !is_unspecified(ip))
                    .map(|ip| format!("{} (host_ip)", bracketed(ip))),
                _ => None,
            };
            if let Some(address) = address {
                warnings.push(format!(
                    "{}: {}: ignoring IP-address ({address}) service will listen on '0.0.0.0'",
                    properties::place(source, &path),
                    locate::display(&path),
                ));
            }
        }
    }
}

fn is_unspecified(ip: &str) -> bool {
    ip.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
}

fn bracketed(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
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
            "u64" | "u32" | "i64" | "u16" => "a whole number",
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
