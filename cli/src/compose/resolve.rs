//! What Docker's loader settles in each file before merging it: `env_file`
//! lines folded into `environment` (verbatim: quotes kept, no `export`),
//! unset environment values taken from the caller's environment, relative
//! bind sources and secret/config files made absolute against the first
//! file's directory, and the deprecated `external: {name: N}` moved to
//! `name`.

use std::{
    collections::BTreeMap,
    path::{Component, Path, PathBuf},
};

use super::{
    Lookup,
    locate::Seg,
    model::{ComposeFile, External},
};

/// A problem found here: where, and what.
pub type Problem = (Vec<Seg>, String);

fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

/// Settles `file` (from a file of `version`) against `dir`.
pub fn resolve(
    file: &mut ComposeFile,
    dir: &Path,
    lookup: Lookup,
    warnings: &mut Vec<String>,
) -> Result<(), Problem> {
    for (name, service) in &mut file.services {
        let at = |rest: &[Seg]| {
            let mut path = vec![key("services"), key(name)];
            path.extend_from_slice(rest);
            path
        };
        let mut environment = BTreeMap::new();
        for (i, env_file) in service.env_file.iter().enumerate() {
            let path = absolute(dir, env_file);
            let lines = read_env_file(Path::new(&path), lookup)
                .map_err(|m| (at(&[key("env_file"), Seg::Index(i)]), m))?;
            let vars = lines
                .into_iter()
                .map(|line| match line.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (line, None),
                })
                .collect();
            update_environment(&mut environment, vars, lookup);
        }
        update_environment(
            &mut environment,
            std::mem::take(&mut service.environment),
            lookup,
        );
        service.environment = environment;

        for (i, volume) in service.volumes.iter_mut().enumerate() {
            if volume.kind != "bind" {
                continue;
            }
            if volume.source.is_empty() {
                return Err((
                    at(&[key("volumes"), Seg::Index(i)]),
                    "invalid mount config for type \"bind\": field Source must not be empty".into(),
                ));
            }
            let mut source = volume.source.clone();
            if let Some(rest) = source.strip_prefix('~') {
                match lookup("HOME") {
                    Some(home) => source = format!("{home}{rest}"),
                    None => warnings.push(format!(
                        "cannot expand '~' in {source:?}, because the environment lacks HOME"
                    )),
                }
            }
            volume.source = absolute(dir, &source);
        }
    }

    let version = file.version.clone();
    let at_least = |v: &str| version_at_least(&version, v);
    for (name, network) in &mut file.networks {
        if !network.external.external {
            continue;
        }
        external_name(
            "network",
            name,
            &mut network.name,
            &mut network.external,
            at_least("3.5"),
            warnings,
        )
        .map_err(|m| (vec![key("networks"), key(name)], m))?;
    }
    for (name, volume) in &mut file.volumes {
        if !volume.external.external {
            continue;
        }
        let conflict = |k: &str| {
            (
                vec![key("volumes"), key(name), key(k)],
                format!(
                    "conflicting parameters \"external\" and {k:?} specified for volume {name:?}"
                ),
            )
        };
        if !volume.driver.is_empty() {
            return Err(conflict("driver"));
        }
        if !volume.driver_opts.is_empty() {
            return Err(conflict("driver_opts"));
        }
        if !volume.labels.is_empty() {
            return Err(conflict("labels"));
        }
        external_name(
            "volume",
            name,
            &mut volume.name,
            &mut volume.external,
            at_least("3.4"),
            warnings,
        )
        .map_err(|m| (vec![key("volumes"), key(name)], m))?;
    }
    for (kind, section, objects) in [
        ("secret", "secrets", &mut file.secrets),
        ("config", "configs", &mut file.configs),
    ] {
        for (name, object) in objects.iter_mut() {
            let at = vec![key(section), key(name)];
            if object.external.external {
                external_name(
                    kind,
                    name,
                    &mut object.name,
                    &mut object.external,
                    at_least("3.5"),
                    warnings,
                )
                .map_err(|m| (at.clone(), m))?;
            } else if !object.driver.is_empty() {
                if !object.file.is_empty() {
                    return Err((
                        at,
                        format!(
                            "{kind} {name}: {kind}.driver and {kind}.file conflict; only use {kind}.driver"
                        ),
                    ));
                }
            } else {
                object.file = absolute(dir, &object.file);
            }
        }
    }
    Ok(())
}

/// Docker's `updateEnvironment`: a value left empty or unset takes the
/// caller's, when the caller has the variable.
fn update_environment(
    environment: &mut BTreeMap<String, Option<String>>,
    vars: BTreeMap<String, Option<String>>,
    lookup: Lookup,
) {
    for (k, v) in vars {
        let v = match (v, lookup(&k)) {
            (None, Some(found)) => Some(found),
            (Some(v), Some(found)) if v.is_empty() => Some(found),
            (v, _) => v,
        };
        environment.insert(k, v);
    }
}

/// An env file's lines as Docker's `kvfile` reads them: blank lines and
/// `#` comments skipped, leading white space trimmed, the rest verbatim
/// (quotes kept); a line without `=` is looked up, and dropped if unset.
pub fn read_env_file(path: &Path, lookup: Lookup) -> Result<Vec<String>, String> {
    let bytes = super::bounded::read(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("invalid env file ({}): not UTF-8 text", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let invalid = |why: String| {
            format!(
                "invalid env file ({}): line {}: {why}",
                path.display(),
                number + 1
            )
        };
        let (name, has_value) = match line.split_once('=') {
            Some((name, _)) => (name, true),
            None => (line, false),
        };
        if name.is_empty() {
            return Err(invalid(format!("no variable name on line '{line}'")));
        }
        if name.contains([' ', '\t']) {
            return Err(invalid(format!("variable '{name}' contains whitespaces")));
        }
        if has_value {
            lines.push(line.to_owned());
        } else if let Some(value) = lookup(line) {
            lines.push(format!("{line}={value}"));
        }
    }
    Ok(lines)
}

fn external_name(
    kind: &str,
    key: &str,
    name: &mut String,
    external: &mut External,
    deprecated: bool,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    if !external.name.is_empty() {
        if !name.is_empty() {
            return Err(format!(
                "{kind} {key}: {kind}.external.name and {kind}.name conflict; only use {kind}.name"
            ));
        }
        if deprecated {
            warnings.push(format!(
                "{kind} {key}: {kind}.external.name is deprecated in favor of {kind}.name"
            ));
        }
        *name = std::mem::take(&mut external.name);
    } else if name.is_empty() {
        *name = key.to_owned();
    }
    Ok(())
}

/// Go's `versions.GreaterThanOrEqualTo` on dotted numbers.
fn version_at_least(version: &str, than: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (a, b) = (parts(version), parts(than));
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x > y;
        }
    }
    true
}

/// `path` against `dir` unless absolute, cleaned as Go's `filepath.Join`
/// cleans it (`.` and `..` folded, no file system access).
pub fn absolute(dir: &Path, path: &str) -> String {
    let joined = if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        dir.join(path)
    };
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_are_read_verbatim_as_docker_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.env");
        std::fs::write(
            &path,
            "\u{feff}X=\"quoted\"\n# comment\n  W= 5 \nV=a#b\nZ\nMISSING\n\n",
        )
        .unwrap();
        let lookup = |k: &str| (k == "Z").then(|| "zz".to_owned());
        assert_eq!(
            read_env_file(&path, &lookup).unwrap(),
            ["X=\"quoted\"", "W= 5 ", "V=a#b", "Z=zz"]
        );
        std::fs::write(&path, "export Y=2\n").unwrap();
        let error = read_env_file(&path, &lookup).unwrap_err();
        assert!(
            error.contains("line 1: variable 'export Y' contains whitespaces"),
            "{error}"
        );
    }

    #[test]
    fn paths_are_joined_and_cleaned() {
        let dir = Path::new("/srv/app");
        assert_eq!(absolute(dir, "./x"), "/srv/app/x");
        assert_eq!(absolute(dir, "../y/./z"), "/srv/y/z");
        assert_eq!(absolute(dir, "/abs"), "/abs");
        assert_eq!(absolute(dir, ""), "/srv/app");
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(version_at_least("3.10", "3.5"));
        assert!(!version_at_least("3.4", "3.5"));
        assert!(version_at_least("3.5", "3.5"));
    }
}
