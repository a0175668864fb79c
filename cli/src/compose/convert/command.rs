//! `command`, `entrypoint` and `healthcheck`: words as Compose splits them.

use shoal_api::pb::HealthConfig;

use super::ms;
use crate::compose::model;

/// A command as Compose splits a string: shell-like words, no shell.
pub(super) fn words(command: &model::Command) -> Result<Vec<String>, String> {
    match command {
        model::Command::Exec(items) => Ok(items.iter().map(|t| t.0.clone()).collect()),
        model::Command::Shell(text) => split_words(text),
    }
}

pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed ' in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unclosed \" in {text:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed \" in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

pub(super) fn healthcheck(
    health: &model::Healthcheck,
) -> Result<HealthConfig, (&'static str, String)> {
    let mut config = HealthConfig::default();
    if health.disable.is_some_and(|d| d.0) {
        config.test = vec!["NONE".into()];
        return Ok(config);
    }
    config.test = match &health.test {
        None => Vec::new(),
        Some(model::Command::Shell(s)) => vec!["CMD-SHELL".into(), s.clone()],
        Some(model::Command::Exec(items)) => {
            let items: Vec<String> = items.iter().map(|t| t.0.clone()).collect();
            match items.first().map(String::as_str) {
                Some("CMD" | "CMD-SHELL" | "NONE") => items,
                _ => {
                    return Err((
                        "test",
                        "a list test starts with CMD, CMD-SHELL or NONE".into(),
                    ));
                }
            }
        }
    };
    let duration =
        |text: &Option<String>, k: &'static str| -> Result<i64, (&'static str, String)> {
            text.as_deref()
                .map(ms)
                .transpose()
                .map(|d| d.unwrap_or(0))
                .map_err(|m| (k, m))
        };
    config.interval_ms = duration(&health.interval, "interval")?;
    config.timeout_ms = duration(&health.timeout, "timeout")?;
    config.start_period_ms = duration(&health.start_period, "start_period")?;
    config.retries = health.retries.map_or(0, |r| r.0);
    Ok(config)
}
