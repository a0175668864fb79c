//! The one place that knows which YAML crate Shoal uses: `yaml_serde`, the
//! maintained fork of the archived `serde_yaml` (same data model, same
//! error positions). Everything else sees [`Value`] and [`parse`].

pub use yaml_serde::{Mapping, Value};

use super::locate::Seg;

/// A YAML syntax error's place and message (line and column from 1).
#[derive(Debug)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses one document, with anchors resolved and `<<` merge keys applied.
pub fn parse(text: &str) -> Result<Value, SyntaxError> {
    let mut value: Value = yaml_serde::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        // The crate appends "at line L column C"; the caller prints its own.
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        SyntaxError {
            line,
            column,
            message,
        }
    })?;
    value.apply_merge().map_err(|e| SyntaxError {
        line: 1,
        column: 1,
        message: format!("merge key: {e}"),
    })?;
    // An empty file is an empty project, not a null one.
    Ok(match value {
        Value::Null => Value::Mapping(Mapping::new()),
        other => other,
    })
}

/// The document back as YAML text (`stack config`).
pub fn to_string(value: &impl serde::Serialize) -> Result<String, String> {
    yaml_serde::to_string(value).map_err(|e| e.to_string())
}

/// Typed reading of a value; on failure, the key path and what went wrong.
pub fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, (Vec<Seg>, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path: Vec<Seg> = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                _ => None,
            })
            .collect();
        (path, e.inner().to_string())
    })
}
