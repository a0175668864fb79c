//! Differential tests: every case of `cli/tests/compose-corpus/` is
//! resolved by `docker stack config` (Docker's own compose loader, which
//! needs no engine and no swarm) and by `shoal stack config`, and the two
//! resolved models are compared field by field — as parsed YAML, not as
//! text. A case that one tool refuses must be refused by the other.
//!
//! Every difference fails the test unless `ALLOWED.md` lists it for that
//! case with its reason (a deliberate difference); an allowance that no
//! longer happens fails too, so the list stays true.
//!
//! A case is a directory: `compose.yml`, or `compose.1.yml`,
//! `compose.2.yml`… merged in order (`-c` each); `env` (optional) holds
//! `KEY=VALUE` lines set for both tools (nothing else of the caller's
//! environment is passed, but `PATH`); any other file is the case's
//! material (env files, secrets, a `.env` neither tool may read).
//!
//! A second test deploys, through the converter, every file Shoal prints:
//! what `stack config` prints must load and convert again to the same
//! model (a round trip).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use yaml_serde::Value;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compose-corpus")
}

struct Case {
    name: String,
    dir: PathBuf,
    files: Vec<String>,
    env: Vec<(String, String)>,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(corpus()).expect("the corpus directory") {
        let dir = entry.expect("a corpus entry").path();
        if !dir.is_dir() {
            continue;
        }
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("a case directory")
            .map(|e| {
                e.expect("a case file")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n == "compose.yml" || (n.starts_with("compose.") && n.ends_with(".yml")))
            .collect();
        files.sort_by_key(|n| {
            n.trim_start_matches("compose.")
                .trim_end_matches(".yml")
                .parse::<u32>()
                .unwrap_or(0)
        });
        assert!(!files.is_empty(), "{} has no compose file", dir.display());
        let env = std::fs::read_to_string(dir.join("env"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        cases.push(Case {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            dir,
            files,
            env,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    cases
}

fn run(program: &str, case: &Case) -> Output {
    run_with(program, case, &[])
}

fn run_with(program: &str, case: &Case, flags: &[&str]) -> Output {
    let mut command = Command::new(program);
    command
        .current_dir(&case.dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/home/corpus")
        // Docker's CLI wants a config directory it may create.
        .env(
            "DOCKER_CONFIG",
            std::env::temp_dir().join("shoal-corpus-docker"),
        )
        .args(["stack", "config"])
        .args(flags);
    for file in &case.files {
        command.args(["-c", file]);
    }
    for (k, v) in &case.env {
        command.env(k, v);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("running {program} (is it installed?): {e}"))
}

fn shoal() -> &'static str {
    env!("CARGO_BIN_EXE_shoal")
}

/// `path: what differs`, for every leaf where the two documents differ.
fn differences(path: &str, docker: &Value, shoal: &Value, out: &mut Vec<String>) {
    match (docker, shoal) {
        (Value::Mapping(d), Value::Mapping(s)) => {
            let keys: BTreeSet<String> = d
                .keys()
                .chain(s.keys())
                .map(|k| match k {
                    Value::String(k) => k.clone(),
                    other => yaml_serde::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                })
                .collect();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let get = |m: &yaml_serde::Mapping| m.get(k.as_str()).cloned();
                match (get(d), get(s)) {
                    (Some(a), Some(b)) => differences(&sub, &a, &b, out),
                    (Some(a), None) => out.push(format!("{sub}: only Docker has {}", show(&a))),
                    (None, Some(b)) => out.push(format!("{sub}: only Shoal has {}", show(&b))),
                    (None, None) => {}
                }
            }
        }
        (Value::Sequence(d), Value::Sequence(s)) => {
            if d.len() != s.len() {
                out.push(format!(
                    "{path}: Docker has {} items, Shoal {}: {} vs {}",
                    d.len(),
                    s.len(),
                    show(docker),
                    show(shoal)
                ));
                return;
            }
            for (i, (a, b)) in d.iter().zip(s).enumerate() {
                differences(&format!("{path}[{i}]"), a, b, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: Docker {} vs Shoal {}", show(a), show(b))),
    }
}

fn show(value: &Value) -> String {
    let text = yaml_serde::to_string(value).unwrap_or_default();
    let text = text.trim().replace('\n', " ");
    if text.len() > 120 {
        format!("{}…", &text[..120])
    } else {
        text
    }
}

/// `ALLOWED.md`: under `## case`, lines `- \`path\`: reason`.
fn allowed() -> BTreeMap<String, BTreeMap<String, String>> {
    let text = std::fs::read_to_string(corpus().join("ALLOWED.md")).expect("ALLOWED.md");
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut case = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("## ") {
            case = Some(name.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("- `")
            && let Some((path, reason)) = rest.split_once("`: ")
        {
            let case = case.clone().expect("an allowance under a ## case heading");
            assert!(!reason.trim().is_empty(), "{case} {path}: no reason given");
            out.entry(case)
                .or_default()
                .insert(path.to_owned(), reason.to_owned());
        }
    }
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// The key of a difference for the allow-list: its path, or `refusal`
/// when only one tool refuses the case.
fn key_of(difference: &str) -> &str {
    difference.split(": ").next().unwrap_or(difference)
}

#[test]
fn shoal_resolves_every_case_as_docker_does() {
    let allowed = allowed();
    let mut unexplained = Vec::new();
    let mut stale = Vec::new();
    let mut compared = 0;
    for case in cases() {
        let docker = run("docker", &case);
        let shoal = run(shoal(), &case);
        let mut found = Vec::new();
        match (docker.status.success(), shoal.status.success()) {
            (true, true) => {
                let parse = |who: &str, out: &Output| -> Value {
                    yaml_serde::from_slice(&out.stdout).unwrap_or_else(|e| {
                        panic!("{}: {who}'s output is not YAML: {e}", case.name)
                    })
                };
                differences(
                    "",
                    &parse("Docker", &docker),
                    &parse("Shoal", &shoal),
                    &mut found,
                );
                compared += 1;
            }
            (false, false) => {}
            (true, false) => found.push(format!(
                "refusal: only Shoal refuses it: {}",
                text(&shoal.stderr)
            )),
            (false, true) => found.push(format!(
                "refusal: only Docker refuses it: {}",
                text(&docker.stderr)
            )),
        }
        let allowances = allowed.get(&case.name).cloned().unwrap_or_default();
        let mut used = BTreeSet::new();
        for difference in &found {
            let key = key_of(difference);
            if allowances.contains_key(key) {
                used.insert(key.to_owned());
            } else {
                unexplained.push(format!("{}: {difference}", case.name));
            }
        }
        for path in allowances.keys() {
            if !used.contains(path) {
                stale.push(format!(
                    "{}: `{path}` is allowed but no longer differs",
                    case.name
                ));
            }
        }
    }
    assert!(
        unexplained.is_empty() && stale.is_empty(),
        "differences from `docker stack config` that ALLOWED.md does not explain:\n  {}\n\
         allowances that no longer apply:\n  {}",
        unexplained.join("\n  "),
        stale.join("\n  ")
    );
    assert!(compared >= 20, "only {compared} cases resolved by both");
}

/// What `shoal stack config` prints loads and converts again, to the same
/// resolved model: a printed file deploys.
#[test]
fn what_stack_config_prints_resolves_again_to_itself() {
    let scratch = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for case in cases() {
        let first = run(shoal(), &case);
        if !first.status.success() {
            continue;
        }
        // Beside the case's own files: `env_file` stays relative.
        let dir = scratch.path().join(&case.name);
        std::fs::create_dir(&dir).unwrap();
        for entry in std::fs::read_dir(&case.dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
            }
        }
        std::fs::write(dir.join("printed.yml"), &first.stdout).unwrap();
        let again = Case {
            name: case.name.clone(),
            dir,
            files: vec!["printed.yml".into()],
            env: case.env.clone(),
        };
        // The printed file is final: its `$` are values, not variables.
        let second = run_with(shoal(), &again, &["--skip-interpolation"]);
        assert!(
            second.status.success(),
            "{}: shoal refuses what it printed:\n{}\n--- printed:\n{}",
            case.name,
            text(&second.stderr),
            text(&first.stdout)
        );
        let a: Value = yaml_serde::from_slice(&first.stdout).unwrap();
        let b: Value = yaml_serde::from_slice(&second.stdout).unwrap();
        let mut found = Vec::new();
        differences("", &a, &b, &mut found);
        assert!(
            found.is_empty(),
            "{}: printed again, the model changes:\n  {}",
            case.name,
            found.join("\n  ")
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} cases round-tripped");
}

/// `-c -` reads the file from the standard input, as Docker's does; paths
/// in it are relative to the working directory.
#[test]
fn the_standard_input_is_read_as_a_file() {
    use std::io::Write;
    let case = cases()
        .into_iter()
        .find(|c| c.name == "volumes-short")
        .expect("the volumes-short case");
    let file = std::fs::read(case.dir.join(&case.files[0])).unwrap();
    let piped = |program: &str| {
        let mut child = Command::new(program)
            .current_dir(&case.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", "/home/corpus")
            .env(
                "DOCKER_CONFIG",
                std::env::temp_dir().join("shoal-corpus-docker"),
            )
            .args(["stack", "config", "-c", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&file).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{program}: {}", text(&out.stderr));
        yaml_serde::from_slice::<Value>(&out.stdout).unwrap()
    };
    let from_file: Value = yaml_serde::from_slice(&run(shoal(), &case).stdout).unwrap();
    let (docker, shoal) = (piped("docker"), piped(shoal()));
    let mut found = Vec::new();
    differences("", &docker, &shoal, &mut found);
    differences("", &from_file, &shoal, &mut found);
    assert!(found.is_empty(), "{}", found.join("\n"));
}
