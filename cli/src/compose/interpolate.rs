//! Compose variable interpolation in string values: `$V`, `${V}`,
//! `${V:-default}` (unset or empty), `${V-default}` (unset),
//! `${V:?error}` (unset or empty), `${V?error}` (unset), `$$` for a `$`.
//! Defaults may themselves hold variables (`${A:-${B}}`), as Compose allows.

/// Why a string could not be interpolated.
#[derive(Debug, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${V:?message}` / `${V?message}` with V missing.
    Required { name: String, message: String },
    /// `${` without its `}`, or a name that is not one.
    Syntax(String),
}

impl std::fmt::Display for InterpolateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Required { name, message } if message.is_empty() => {
                write!(f, "required variable {name} is missing a value")
            }
            Self::Required { name, message } => {
                write!(f, "required variable {name} is missing a value: {message}")
            }
            Self::Syntax(what) => write!(f, "invalid interpolation: {what}"),
        }
    }
}

/// Interpolates `text`, looking variables up with `lookup`.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body).ok_or_else(|| {
                InterpolateError::Syntax(format!("{text:?} has `${{` without `}}`"))
            })?;
            out.push_str(&braced(&body[..end], lookup)?);
            rest = &body[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                // A lone `$` (e.g. "cost: 5$") stays as it is.
                out.push('$');
                rest = after;
            } else {
                out.push_str(&lookup(&after[..len]).unwrap_or_default());
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The `}` closing a `${`, allowing nested `${...}` in defaults.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn name_len(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, c)) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(*c == '_' || c.is_ascii_alphanumeric()))
        .map_or(text.len(), |(i, _)| i)
}

fn braced(body: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, InterpolateError> {
    let len = name_len(body);
    if len == 0 {
        return Err(InterpolateError::Syntax(format!(
            "${{{body}}} names no variable"
        )));
    }
    let name = &body[..len];
    let value = lookup(name);
    let op = &body[len..];
    let (unset_only, op) = match op.strip_prefix(':') {
        Some(op) => (false, op),
        None => (true, op),
    };
    // `:-`/`:?` treat an empty value as missing; `-`/`?` only an unset one.
    let missing = match &value {
        None => true,
        Some(v) => !unset_only && v.is_empty(),
    };
    if op.is_empty() && unset_only {
        return Ok(value.unwrap_or_default());
    }
    if let Some(default) = op.strip_prefix('-') {
        return if missing {
            interpolate(default, lookup)
        } else {
            Ok(value.unwrap_or_default())
        };
    }
    if let Some(message) = op.strip_prefix('?') {
        return if missing {
            Err(InterpolateError::Required {
                name: name.to_owned(),
                message: interpolate(message, lookup)?,
            })
        } else {
            Ok(value.unwrap_or_default())
        };
    }
    if let Some(alternative) = op.strip_prefix('+') {
        return if missing {
            Ok(String::new())
        } else {
            interpolate(alternative, lookup)
        };
    }
    Err(InterpolateError::Syntax(format!(
        "${{{body}}}: unknown operator"
    )))
}

#[cfg(test)]
mod tests {
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
    fn every_form_compose_defines() {
        assert_eq!(run("web:$TAG").unwrap(), "web:1.2");
        assert_eq!(run("web:${TAG}-x").unwrap(), "web:1.2-x");
        assert_eq!(run("${UNSET:-d}/${EMPTY:-d}").unwrap(), "d/d");
        assert_eq!(run("${UNSET-d}/${EMPTY-d}").unwrap(), "d/");
        assert_eq!(run("${EMPTY?no}|${TAG:?no}").unwrap(), "|1.2");
        assert_eq!(run("$$HOME costs 5$").unwrap(), "$HOME costs 5$");
        assert_eq!(run("${UNSET:-${PORT}}").unwrap(), "8080");
        assert_eq!(run("${TAG:+set}${UNSET:+set}").unwrap(), "set");
        assert_eq!(run("$UNSET.").unwrap(), ".");
    }

    #[test]
    fn required_and_malformed_ones_say_which() {
        assert_eq!(
            run("${DB_PASSWORD:?set it in .env}"),
            Err(InterpolateError::Required {
                name: "DB_PASSWORD".into(),
                message: "set it in .env".into()
            })
        );
        assert!(matches!(
            run("${EMPTY:?}"),
            Err(InterpolateError::Required { .. })
        ));
        assert!(run("${EMPTY?}").is_ok());
        assert!(matches!(run("${TAG"), Err(InterpolateError::Syntax(_))));
        assert!(matches!(run("${}"), Err(InterpolateError::Syntax(_))));
        assert!(matches!(run("${TAG!x}"), Err(InterpolateError::Syntax(_))));
    }
}
