//! Variable interpolation in string values, exactly as Docker's stack
//! loader does it (`cli/compose/template`): `$V` and `${V}`, `${V:-d}`
//! (unset or empty), `${V-d}` (unset), `${V:?err}` (unset or empty),
//! `${V?err}` (unset), `$$` for a `$`. Names are letters, digits and `_`,
//! not starting with a digit, in either case.
//!
//! Docker's quirks are kept, since files are written against them:
//! defaults do not nest (`${A:-${B}}` with A unset is the text `${B}`),
//! a default runs to the first `}` and an unbraced one to the end of the
//! string (`$A-x y` is `x y` with A unset), the operator is found anywhere
//! in the expression (`:-` first, then `-`, `:?`, `?`), and a `$` that
//! starts nothing (`5$`, `$1`, `${A:+x}`) is an error. One quirk is not
//! kept: Docker forgets an error when a later variable of the same string
//! resolves (`${A:?set A} ${B}` passes); Shoal reports it.
//!
//! The scan is one pass with no recursion: no input can nest it.

/// Why a string could not be interpolated, in Docker's words.
#[derive(Debug, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${V:?message}` / `${V?message}` with V missing.
    Required { name: String, message: String },
    /// A `$` that starts no variable; holds the whole string.
    Invalid(String),
}

impl std::fmt::Display for InterpolateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quoted = match self {
            Self::Required { name, message } => {
                format!("required variable {name} is missing a value: {message}")
            }
            Self::Invalid(text) => text.clone(),
        };
        write!(
            f,
            "invalid interpolation format: {quoted:?}; you may need to escape any $ with another $"
        )
    }
}

fn name_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(c) if *c == b'_' || c.is_ascii_alphabetic() => {}
        _ => return 0,
    }
    bytes
        .iter()
        .position(|c| !(*c == b'_' || c.is_ascii_alphanumeric()))
        .unwrap_or(bytes.len())
}

/// The length of Docker's `(?::?[-?][^}]*)?` at the start of `text`.
fn operator_len(text: &str) -> usize {
    let after_colon = text.strip_prefix(':').unwrap_or(text);
    if !after_colon.starts_with(['-', '?']) {
        return 0;
    }
    let colon = text.len() - after_colon.len();
    let rest = &after_colon[1..];
    colon + 1 + rest.find('}').unwrap_or(rest.len())
}

/// Interpolates `text`, looking variables up with `lookup`.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let invalid = || InterpolateError::Invalid(text.to_owned());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let name = name_len(after);
        if name > 0 {
            let len = name + operator_len(&after[name..]);
            out.push_str(&substitute(&after[..len], lookup)?);
            rest = &after[len..];
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            return Err(invalid());
        };
        let name = name_len(body);
        let len = name + operator_len(&body[name..]);
        if name == 0 || body.as_bytes().get(len) != Some(&b'}') {
            return Err(invalid());
        }
        out.push_str(&substitute(&body[..len], lookup)?);
        rest = &body[len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One `NAME[OP ARG]`, with Docker's order of operators.
fn substitute(
    expression: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    if let Some((name, default)) = expression.split_once(":-") {
        return Ok(lookup(name)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned()));
    }
    if let Some((name, default)) = expression.split_once('-') {
        return Ok(lookup(name).unwrap_or_else(|| default.to_owned()));
    }
    for (operator, empty_is_missing) in [(":?", true), ("?", false)] {
        if let Some((name, message)) = expression.split_once(operator) {
            return match lookup(name) {
                Some(v) if !(empty_is_missing && v.is_empty()) => Ok(v),
                _ => Err(InterpolateError::Required {
                    name: name.to_owned(),
                    message: message.to_owned(),
                }),
            };
        }
    }
    Ok(lookup(expression).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TAG" => Some("1.2".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, InterpolateError> {
        interpolate(text, &env)
    }

    #[test]
    fn every_form_docker_defines() {
        assert_eq!(run("web:$TAG").unwrap(), "web:1.2");
        assert_eq!(run("web:${TAG}-x").unwrap(), "web:1.2-x");
        assert_eq!(run("${UNSET:-d}/${EMPTY:-d}").unwrap(), "d/d");
        assert_eq!(run("${UNSET-d}/${EMPTY-d}").unwrap(), "d/");
        assert_eq!(run("${EMPTY?no}|${TAG:?no}").unwrap(), "|1.2");
        assert_eq!(run("$$HOME costs $$5").unwrap(), "$HOME costs $5");
        assert_eq!(run("$UNSET.").unwrap(), ".");
        assert_eq!(run("${tag}").unwrap(), "");
    }

    /// Each checked against `docker stack config` 28.2.
    #[test]
    fn docker_s_quirks_are_kept() {
        assert_eq!(run("${UNSET:-${PORT}}").unwrap(), "${PORT}");
        assert_eq!(run("${UNSET:-${B:-x}}").unwrap(), "${B:-x}");
        assert_eq!(run("${UNSET:-a}}").unwrap(), "a}");
        assert_eq!(run("$UNSET-foo bar").unwrap(), "foo bar");
        assert_eq!(run("$TAG-foo bar").unwrap(), "1.2");
        assert_eq!(run("${UNSET?x:-y}").unwrap(), "y");
        assert_eq!(run("$TAG_1$TAG").unwrap(), "1.2");
        for invalid in [
            "cost: 5$",
            "$1",
            "${9}",
            "$-",
            "${TAG:+set}",
            "${TAG",
            "${}",
        ] {
            assert_eq!(
                run(invalid),
                Err(InterpolateError::Invalid(invalid.into())),
                "{invalid}"
            );
        }
    }

    #[test]
    fn required_ones_say_which_in_docker_s_words() {
        let error = run("${DB_PASSWORD:?set it in .env}").unwrap_err();
        assert_eq!(
            error,
            InterpolateError::Required {
                name: "DB_PASSWORD".into(),
                message: "set it in .env".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "invalid interpolation format: \"required variable DB_PASSWORD is missing a value: \
             set it in .env\"; you may need to escape any $ with another $"
        );
        assert!(matches!(
            run("${EMPTY:?}"),
            Err(InterpolateError::Required { .. })
        ));
        assert!(run("${EMPTY?}").is_ok());
        // Docker would forget this error because ${TAG} resolves after it.
        assert!(run("${UNSET:?need} ${TAG}").is_err());
    }

    #[test]
    fn a_deeply_nested_default_is_one_linear_pass() {
        let depth = 5_000;
        let text = format!("{}x{}", "${A:-".repeat(depth), "}".repeat(depth));
        let started = Instant::now();
        let out = run(&text).unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        // As Docker: the first default runs to the first `}`.
        assert_eq!(
            out,
            format!("{}x{}", "${A:-".repeat(depth - 1), "}".repeat(depth - 1))
        );
    }
}
