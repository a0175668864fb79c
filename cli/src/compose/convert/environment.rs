//! A service's environment: `env_file` lines, then `environment`.

use std::collections::BTreeMap;

use super::{super::ComposeError, Lookup};
use crate::compose::{Project, index, key, locate::Seg, model};

/// `env_file` lines, then `environment` (which wins), as KEY=VALUE.
pub(super) fn environment(
    project: &Project,
    service: &model::Service,
    lookup: Lookup,
    at: &dyn Fn(&[Seg]) -> Vec<Seg>,
) -> Result<Vec<String>, ComposeError> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (i, path) in service.env_file.iter().flat_map(|e| e.to_vec()).enumerate() {
        let full = project.dir.join(&path);
        let text = std::fs::read_to_string(&full).map_err(|e| {
            project.error_at(
                &at(&[key("env_file"), index(i)]),
                format!("cannot read {}: {e}", full.display()),
            )
        })?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            match line.split_once('=') {
                Some((k, v)) => {
                    let v = v.trim();
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                        .unwrap_or(v);
                    env.insert(k.trim().to_owned(), v.to_owned());
                }
                None => {
                    if let Some(v) = lookup(line) {
                        env.insert(line.to_owned(), v);
                    }
                }
            }
        }
    }
    match &service.environment {
        None => {}
        Some(model::KeyValues::Map(map)) => {
            for (k, v) in map {
                match v {
                    Some(v) => {
                        env.insert(k.clone(), v.0.clone());
                    }
                    None => {
                        if let Some(v) = lookup(k) {
                            env.insert(k.clone(), v);
                        }
                    }
                }
            }
        }
        Some(model::KeyValues::List(items)) => {
            for item in items {
                match item.split_once('=') {
                    Some((k, v)) => {
                        env.insert(k.to_owned(), v.to_owned());
                    }
                    None => {
                        if let Some(v) = lookup(item) {
                            env.insert(item.clone(), v);
                        }
                    }
                }
            }
        }
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}
