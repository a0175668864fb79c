//! Docker's env files (`--env-file`, pkg/kvfile): one `KEY=VALUE` per line,
//! taken as written (quotes and trailing spaces are part of the value, no
//! `export`, no interpolation); `#` lines and blank lines skipped; a `KEY`
//! alone takes the caller's value of it, or is left out when it has none.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// The variables of the env file at `path`; `lookup` gives the caller's
/// environment.
pub fn read(path: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("--env-file {}", path.display()))?;
    parse(&bytes, lookup).with_context(|| format!("invalid env file ({})", path.display()))
}

pub fn parse(bytes: &[u8], lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let number = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(line) = std::str::from_utf8(raw) else {
            bail!("invalid utf8 bytes at line {number}");
        };
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, has_value) = match line.split_once('=') {
            Some((key, _)) => (key, true),
            None => (line, false),
        };
        if key.is_empty() {
            bail!("no variable name on line {number}: '{line}'");
        }
        if key.contains([' ', '\t']) {
            bail!("variable '{key}' contains whitespaces (line {number})");
        }
        if has_value {
            out.push(line.to_owned());
        } else if let Some(value) = lookup(key) {
            out.push(format!("{key}={value}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(key: &str) -> Option<String> {
        (key == "HOME_DIR").then(|| "/home/me".to_owned())
    }

    #[test]
    fn lines_are_taken_as_written() {
        let text = "\u{feff}# comment\n\n  A=1\nB=\"quoted\" \nC='x'\r\nHOME_DIR\nUNSET\nE=a=b\n";
        assert_eq!(
            parse(text.as_bytes(), &lookup).unwrap(),
            [
                "A=1",
                "B=\"quoted\" ",
                "C='x'",
                "HOME_DIR=/home/me",
                "E=a=b"
            ]
        );
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let err = parse(b"A=1\n=x\n", &lookup).unwrap_err().to_string();
        assert_eq!(err, "no variable name on line 2: '=x'");
        let err = parse(b"MY VAR=1\n", &lookup).unwrap_err().to_string();
        assert!(
            err.starts_with("variable 'MY VAR' contains whitespaces"),
            "{err}"
        );
        // No shell syntax: `export` is not skipped, as Docker's.
        let err = parse(b"export D=2\n", &lookup).unwrap_err().to_string();
        assert!(
            err.starts_with("variable 'export D' contains whitespaces"),
            "{err}"
        );
        let err = parse(b"A=\xff\n", &lookup).unwrap_err().to_string();
        assert_eq!(err, "invalid utf8 bytes at line 1");
        let dir = tempfile::tempdir().unwrap();
        let err = read(&dir.path().join("nope"), &lookup)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--env-file "), "{err}");
    }
}
