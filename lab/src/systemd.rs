//! The systemd units in `deploy/`, read the way systemd reads them: their
//! paths filled in for an installation (`cargo xtask install` does this on a
//! real host; a lab node gets its own paths), `Environment=` and
//! `EnvironmentFile=` values parsed with systemd's quoting rules, and
//! `ExecStart=` expanded into the argument vector systemd would execute.
//! The lab starts nodes from them, so the units cannot drift from the code.
//!
//! Only what Shoal's units use is supported; anything else (specifiers
//! other than `%%`, `ExecStart=` prefixes other than `-`, `$NAME` inside a
//! word) is an error naming it rather than a silent difference.

use std::path::{Path, PathBuf};

/// What a unit or environment file does not say the way this module reads it.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("{file}: line {line}: {problem}")]
    Syntax {
        file: String,
        line: usize,
        problem: String,
    },
    #[error("{file}: {problem}")]
    Unit { file: String, problem: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where an installation puts things; every `@NAME@` in a template is one of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallPaths {
    /// The binaries (`@BINDIR@`).
    pub bindir: PathBuf,
    /// Configuration: env files and the join token (`@CONFDIR@`).
    pub confdir: PathBuf,
    /// Persistent state: the manager's and the agent's data dirs (`@STATEDIR@`).
    pub statedir: PathBuf,
    /// Runtime files: the control socket, tasks' tmpfs mounts (`@RUNDIR@`).
    pub rundir: PathBuf,
}

impl InstallPaths {
    /// A host's paths under `prefix` (binaries) and `sysconfdir` (`/etc`).
    pub fn host(prefix: &Path, sysconfdir: &Path) -> Self {
        Self {
            bindir: prefix.join("bin"),
            confdir: sysconfdir.join("shoal"),
            statedir: "/var/lib/shoal".into(),
            rundir: "/run/shoal".into(),
        }
    }

    /// Fills a template's placeholders in; `what` names it in errors.
    pub fn render(&self, what: &str, template: &str) -> Result<String, UnitError> {
        let mut text = template.to_owned();
        for (placeholder, path) in [
            ("@BINDIR@", &self.bindir),
            ("@CONFDIR@", &self.confdir),
            ("@STATEDIR@", &self.statedir),
            ("@RUNDIR@", &self.rundir),
        ] {
            text = text.replace(placeholder, &path.display().to_string());
        }
        for (index, line) in text.lines().enumerate() {
            if let Some(unknown) = placeholder_in(line) {
                return Err(UnitError::Syntax {
                    file: what.to_owned(),
                    line: index + 1,
                    problem: format!(
                        "unknown placeholder {unknown} (known: @BINDIR@ @CONFDIR@ @STATEDIR@ @RUNDIR@)"
                    ),
                });
            }
        }
        Ok(text)
    }
}

fn placeholder_in(line: &str) -> Option<&str> {
    let start = line.find('@')?;
    let rest = &line[start + 1..];
    let end = rest.find('@')?;
    let name = &rest[..end];
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .then(|| &line[start..start + end + 2])
}

/// One `[Service]` unit's settings that matter for starting it.
#[derive(Debug)]
pub struct Unit {
    file: String,
    exec_start: String,
    environment: Vec<(String, String)>,
    /// Paths, and whether a missing file is fine (the `-` prefix).
    environment_files: Vec<(PathBuf, bool)>,
}

/// The command systemd would run: its arguments and its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// systemd's `PATH` for services (systemd.exec(5), "Environment variables
/// in spawned processes").
pub const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Unit {
    /// Parses a unit's text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, UnitError> {
        let syntax = |line: usize, problem: String| UnitError::Syntax {
            file: file.to_owned(),
            line,
            problem,
        };
        let mut section = String::new();
        let mut exec_start = Vec::new();
        let mut environment = Vec::new();
        let mut environment_files = Vec::new();
        for (line_no, line) in logical_lines(text, " ") {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(syntax(
                    line_no,
                    format!("expected Key=Value, found {line:?}"),
                ));
            };
            if section != "Service" {
                continue;
            }
            let value = value.trim();
            match key.trim() {
                "ExecStart" => exec_start.push(value.to_owned()),
                "Environment" => {
                    for word in split_words(value).map_err(|p| syntax(line_no, p))? {
                        environment.push(assignment(&word).map_err(|p| syntax(line_no, p))?);
                    }
                }
                "EnvironmentFile" => {
                    let (path, optional) = match value.strip_prefix('-') {
                        Some(path) => (path, true),
                        None => (value, false),
                    };
                    environment_files.push((PathBuf::from(path), optional));
                }
                _ => {}
            }
        }
        let exec_start = match exec_start.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(UnitError::Unit {
                    file: file.to_owned(),
                    problem: "no ExecStart= in [Service]".into(),
                });
            }
            _ => {
                return Err(UnitError::Unit {
                    file: file.to_owned(),
                    problem: "more than one ExecStart= (only oneshot units may have several)"
                        .into(),
                });
            }
        };
        Ok(Self {
            file: file.to_owned(),
            exec_start,
            environment,
            environment_files,
        })
    }

    /// Reads a unit file.
    pub fn read(path: &Path) -> Result<Self, UnitError> {
        Self::parse(&path.display().to_string(), &read(path)?)
    }

    pub fn environment_files(&self) -> impl Iterator<Item = &Path> {
        self.environment_files.iter().map(|(p, _)| p.as_path())
    }

    /// What systemd would execute: `Environment=`, then each
    /// `EnvironmentFile=` in order (later values win), then `ExecStart=`
    /// with `$NAME` (zero or more arguments: blanks separate, quotes group) and
    /// `${NAME}` (one argument, or part of one) replaced.
    pub fn invocation(&self) -> Result<Invocation, UnitError> {
        let mut env = vec![("PATH".to_owned(), SERVICE_PATH.to_owned())];
        let mut set = |pairs: Vec<(String, String)>| {
            for (key, value) in pairs {
                env.retain(|(k, _)| *k != key);
                env.push((key, value));
            }
        };
        set(self.environment.clone());
        for (path, optional) in &self.environment_files {
            match std::fs::read_to_string(path) {
                Ok(text) => set(parse_environment_file(&path.display().to_string(), &text)?),
                Err(e) if *optional && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(UnitError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        let argv = expand_exec(&self.file, &self.exec_start, &env)?;
        Ok(Invocation { argv, env })
    }
}

fn read(path: &Path) -> Result<String, UnitError> {
    std::fs::read_to_string(path).map_err(|source| UnitError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Lines with `\`-newline continuations joined by `joiner` (a unit file's
/// backslash becomes a space, an environment file's vanishes), each with the
/// number of its first line.
fn logical_lines(text: &str, joiner: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, line) in text.lines().enumerate() {
        let (start, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        match line.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push_str(joiner);
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(line);
                out.push((start, joined));
            }
        }
    }
    out.extend(pending);
    out
}

fn assignment(word: &str) -> Result<(String, String), String> {
    let (key, value) = word
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, found {word:?}"))?;
    if !valid_name(key) {
        return Err(format!("invalid variable name {key:?}"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits a setting's value into words: whitespace separates them, single
/// and double quotes group, a backslash escapes the next character (C
/// escapes `\n` `\t` too).
fn split_words(value: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' | '"' => {
                let quoted = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated {c} quote in {value:?}")),
                        Some(end) if end == c => break,
                        Some('\\') => quoted.push(unescape(chars.next(), value)?),
                        Some(other) => quoted.push(other),
                    }
                }
            }
            '\\' => word
                .get_or_insert_with(String::new)
                .push(unescape(chars.next(), value)?),
            other => word.get_or_insert_with(String::new).push(other),
        }
    }
    words.extend(word);
    Ok(words)
}

fn unescape(c: Option<char>, value: &str) -> Result<char, String> {
    match c {
        Some('n') => Ok('\n'),
        Some('t') => Ok('\t'),
        Some(c @ ('\\' | '"' | '\'' | ' ' | '$')) => Ok(c),
        Some(c) => Err(format!("unsupported escape \\{c} in {value:?}")),
        None => Err(format!("a trailing backslash in {value:?}")),
    }
}

/// `ExecStart=`'s words with specifiers and variables replaced.
fn expand_exec(file: &str, line: &str, env: &[(String, String)]) -> Result<Vec<String>, UnitError> {
    let fail = |problem: String| UnitError::Unit {
        file: file.to_owned(),
        problem: format!("ExecStart={line}: {problem}"),
    };
    let line = line.strip_prefix('-').unwrap_or(line);
    if let Some(prefix) = line.chars().next().filter(|c| "@:+!".contains(*c)) {
        return Err(fail(format!("the {prefix} prefix is not supported")));
    }
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let mut argv = Vec::new();
    for word in split_words(line).map_err(fail)? {
        let word = specifiers(&word).map_err(fail)?;
        if let Some(name) = word.strip_prefix('$').filter(|n| valid_name(n)) {
            argv.extend(split_value(lookup(name)));
            continue;
        }
        argv.push(braced_variables(&word, lookup).map_err(fail)?);
    }
    match argv.first() {
        Some(program) if program.starts_with('/') => Ok(argv),
        Some(program) => Err(fail(format!("{program:?} is not an absolute path"))),
        None => Err(fail("no command".into())),
    }
}

/// A variable's value used as `$NAME`, split as systemd's
/// `replace_env_argv` splits it (`EXTRACT_RELAX|EXTRACT_UNQUOTE`): blanks
/// separate words, quotes group and go, a backslash keeps the next
/// character as it is, an unterminated quote ends with the value.
fn split_value(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) => word.get_or_insert_with(String::new).extend(chars.next()),
            (c, Some(q)) if c == q => quote = None,
            (c, Some(_)) => word.get_or_insert_with(String::new).push(c),
            ('\'' | '"', None) => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (c, None) if c.is_whitespace() => words.extend(word.take()),
            (c, None) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// `%%` is a `%`; other specifiers are not used by Shoal's units.
fn specifiers(word: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(s) => return Err(format!("the specifier %{s} is not supported")),
            None => return Err("a lone % at the end".into()),
        }
    }
    Ok(out)
}

fn braced_variables<'a>(word: &str, lookup: impl Fn(&str) -> &'a str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {word:?}"))?;
            out.push_str(lookup(&after[..end]));
            rest = &after[end + 1..];
        } else {
            return Err(format!(
                "$NAME inside the word {word:?}: write ${{NAME}}, or $NAME as a word of its own"
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses an `EnvironmentFile=` file as systemd does: `NAME=VALUE` lines,
/// `#` and `;` comment lines, values unquoted (trailing blanks dropped) or
/// quoted with `'…'` or `"…"`, `\` escaping the next character.
pub fn parse_environment_file(file: &str, text: &str) -> Result<Vec<(String, String)>, UnitError> {
    let mut out = Vec::new();
    for (line_no, line) in logical_lines(text, "") {
        let syntax = |problem: String| UnitError::Syntax {
            file: file.to_owned(),
            line: line_no,
            problem,
        };
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let (key, value) = trimmed
            .split_once('=')
            .ok_or_else(|| syntax(format!("expected NAME=VALUE, found {trimmed:?}")))?;
        let key = key.trim_end();
        if !valid_name(key) {
            return Err(syntax(format!("invalid variable name {key:?}")));
        }
        out.push((key.to_owned(), env_value(value.trim()).map_err(syntax)?));
    }
    Ok(out)
}

fn env_value(value: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(c) => out.push(c),
                    None => return Err(format!("unterminated ' quote in {value:?}")),
                }
            },
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\' | '`' | '$')) => out.push(c),
                        Some(c) => {
                            out.push('\\');
                            out.push(c);
                        }
                        None => return Err(format!("unterminated \" quote in {value:?}")),
                    },
                    Some(c) => out.push(c),
                    None => return Err(format!("unterminated \" quote in {value:?}")),
                }
            },
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn placeholders_are_filled_and_unknown_ones_refused() {
        let paths = InstallPaths::host(Path::new("/usr/local"), Path::new("/etc"));
        let text = paths
            .render(
                "u",
                "ExecStart=@BINDIR@/a --c @CONFDIR@/t --d @STATEDIR@/m @RUNDIR@/s",
            )
            .unwrap();
        assert_eq!(
            text,
            "ExecStart=/usr/local/bin/a --c /etc/shoal/t --d /var/lib/shoal/m /run/shoal/s"
        );
        let err = paths
            .render("u.service", "a\nExecStart=@LIBDIR@/x")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "u.service: line 2: unknown placeholder @LIBDIR@ (known: @BINDIR@ @CONFDIR@ @STATEDIR@ @RUNDIR@)"
        );
        // An address like user@host is no placeholder.
        assert!(paths.render("u", "Documentation=mailto:a@b.c").is_ok());
    }

    #[test]
    fn dollar_name_splits_into_words_and_braces_keep_one() {
        let vars = env(&[
            (
                "OPTS",
                r#"--a 1  --b --label 'zone=east west' c\ d "" e"f g""#,
            ),
            ("EMPTY", ""),
            ("DIR", "/x y"),
        ]);
        let argv = expand_exec(
            "u",
            "/bin/p run $OPTS $EMPTY $UNSET ${DIR}/data pre${DIR} $$HOME 100%%",
            &vars,
        )
        .unwrap();
        assert_eq!(
            argv,
            [
                "/bin/p",
                "run",
                "--a",
                "1",
                "--b",
                "--label",
                "zone=east west",
                "c d",
                "",
                "ef g",
                "/x y/data",
                "pre/x y",
                "$HOME",
                "100%"
            ]
        );
    }

    #[test]
    fn quotes_group_words_in_exec_start() {
        let argv = expand_exec("u", r#"-/bin/p "a b" 'c d' e\ f"#, &[]).unwrap();
        assert_eq!(argv, ["/bin/p", "a b", "c d", "e f"]);
    }

    #[test]
    fn unsupported_exec_start_forms_are_named() {
        for (line, expected) in [
            ("/bin/p %h", "the specifier %h is not supported"),
            ("+/bin/p", "the + prefix is not supported"),
            ("p --x", "\"p\" is not an absolute path"),
            ("/bin/p --dir=$DIR", "$NAME inside the word"),
            ("/bin/p \"open", "unterminated \" quote"),
        ] {
            let err = expand_exec("u.service", line, &[]).unwrap_err().to_string();
            assert!(err.contains(expected), "{line}: {err}");
            assert!(err.starts_with("u.service: ExecStart="), "{err}");
        }
    }

    #[test]
    fn environment_files_follow_systemds_quoting() {
        let text = "# comment\n; also\n\nA=plain value   \nB=\"double \\\"q\\\" $x\"\nC='single \\n'\n  D = spaced\nE=\nF=a\\\nb\n";
        let parsed = parse_environment_file("f", text).unwrap();
        assert_eq!(
            parsed,
            env(&[
                ("A", "plain value"),
                ("B", "double \"q\" $x"),
                ("C", "single \\n"),
                ("D", "spaced"),
                ("E", ""),
                ("F", "ab"),
            ])
        );
        let err = parse_environment_file("agent.env", "ok=1\nnot an assignment\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "agent.env: line 2: expected NAME=VALUE, found \"not an assignment\""
        );
        let err = parse_environment_file("agent.env", "1X=2\n").unwrap_err();
        assert!(err.to_string().contains("invalid variable name \"1X\""));
    }

    #[test]
    fn a_unit_runs_with_its_environment_and_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.env");
        let second = dir.path().join("second.env");
        std::fs::write(&first, "OPTS=--from-first\nKEEP=kept\n").unwrap();
        std::fs::write(&second, "OPTS=\"--from second\"\n").unwrap();
        let text = format!(
            "[Unit]\nDescription=x\n[Service]\nEnvironment=OPTS=--default \"SPACED=a b\"\n\
             EnvironmentFile={}\nEnvironmentFile=-{}\nEnvironmentFile=-{}/missing.env\n\
             ExecStart=/bin/p \\\n  $OPTS ${{KEEP}} ${{SPACED}}\n[Install]\nWantedBy=multi-user.target\n",
            first.display(),
            second.display(),
            dir.path().display()
        );
        let unit = Unit::parse("u", &text).unwrap();
        let run = unit.invocation().unwrap();
        assert_eq!(run.argv, ["/bin/p", "--from", "second", "kept", "a b"]);
        assert!(run.env.contains(&("PATH".into(), SERVICE_PATH.into())));
        assert!(run.env.contains(&("OPTS".into(), "--from second".into())));

        let missing = Unit::parse(
            "u",
            &format!(
                "[Service]\nEnvironmentFile={}/none.env\nExecStart=/bin/p",
                dir.path().display()
            ),
        )
        .unwrap();
        assert!(
            missing
                .invocation()
                .unwrap_err()
                .to_string()
                .contains("none.env")
        );
    }

    #[test]
    fn a_unit_needs_exactly_one_exec_start() {
        let err = Unit::parse("u.service", "[Service]\nRestart=on-failure\n").unwrap_err();
        assert_eq!(err.to_string(), "u.service: no ExecStart= in [Service]");
        let err = Unit::parse("u.service", "[Service]\nExecStart=/a\nExecStart=/b\n").unwrap_err();
        assert!(err.to_string().contains("more than one ExecStart="));
    }
}
