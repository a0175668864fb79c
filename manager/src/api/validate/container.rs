//! The container part of a service spec: image, env, hostname, mounts,
//! working directory, health check, stop signal (secret and config files
//! are `files`'s).
//! Templated fields are checked as written (placeholders known) and as
//! they expand for a sample task (an absolute path, a valid hostname…).

use std::collections::BTreeSet;

use shoal_api::{
    mount::check_option,
    pb::{ContainerSpec, HealthConfig, Mount},
    template::{Context, expand_container},
};

use super::{Check, Invalid, image, invalid, labels};

/// The kernel's limit on a hostname (`HOST_NAME_MAX`).
const MAX_HOSTNAME: usize = 64;

pub(super) fn check(c: &ContainerSpec, context: &Context) -> Check {
    image::check(&c.image)?;
    labels("container label", &c.labels)?;
    env(&c.env)?;
    let expanded = expand_container(c, context).map_err(|e| Invalid(e.to_string()))?;
    if !c.hostname.is_empty() {
        hostname(&c.hostname, &expanded.hostname)?;
    }
    mounts(&c.mounts, &expanded.mounts)?;
    if !c.dir.is_empty() && !c.dir.starts_with('/') {
        return invalid!(
            "invalid workdir {:?}: the working directory must be an absolute path",
            c.dir
        );
    }
    if let Some(health) = &c.healthcheck {
        healthcheck(health)?;
    }
    if let Some(grace) = c.stop_grace_period_ms.filter(|g| *g < 0) {
        return invalid!("invalid stop-grace-period {grace}ms: cannot be negative");
    }
    if !c.stop_signal.is_empty() && !is_signal(&c.stop_signal) {
        return invalid!(
            "invalid stop-signal {:?}: not a signal (e.g. SIGTERM, SIGINT or 15)",
            c.stop_signal
        );
    }
    Ok(())
}

/// How a templated value reads in an error: as written, and as expanded
/// when that differs.
fn shown(raw: &str, expanded: &str) -> String {
    if raw == expanded {
        format!("{raw:?}")
    } else {
        format!("{raw:?} (for a task: {expanded:?})")
    }
}

/// `NAME=VALUE` or `NAME` (the container gets no such variable); Docker
/// refuses an empty name.
fn env(entries: &[String]) -> Check {
    for entry in entries {
        let name = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
        if name.is_empty() {
            return invalid!("invalid env {entry:?}: empty variable name (expected NAME=VALUE)");
        }
        if entry.contains('\0') {
            return invalid!("invalid env {entry:?}: contains a NUL byte");
        }
    }
    Ok(())
}

/// Dot-separated labels of letters, digits, '-' and '_' (Docker accepts
/// '_', which stack service names hold), at most 64 characters in all.
fn hostname(raw: &str, expanded: &str) -> Check {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if expanded.len() > MAX_HOSTNAME {
        return invalid!(
            "invalid hostname {}: longer than {MAX_HOSTNAME} characters",
            shown(raw, expanded)
        );
    }
    if !expanded.split('.').all(label_ok) {
        return invalid!(
            "invalid hostname {}: use letters, digits, '-' and '_' in labels separated by '.', \
             none empty or starting or ending with '-'",
            shown(raw, expanded)
        );
    }
    Ok(())
}

/// Docker's rule for a local volume's name.
fn volume_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn mounts(raw: &[Mount], expanded: &[Mount]) -> Check {
    let mut targets = BTreeSet::new();
    for (m, e) in raw.iter().zip(expanded) {
        let kind = m.r#type.as_str();
        if !matches!(kind, "bind" | "volume" | "tmpfs") {
            return invalid!(
                "invalid mount type {kind:?} (target {:?}): expected bind, volume or tmpfs",
                m.target
            );
        }
        if m.target.is_empty() {
            return invalid!(
                "invalid {kind} mount (source {:?}): a target is required",
                m.source
            );
        }
        if !e.target.starts_with('/') {
            return invalid!(
                "invalid mount target {}: the mount path must be absolute",
                shown(&m.target, &e.target)
            );
        }
        if e.target.trim_end_matches('/').is_empty() {
            return invalid!(
                "invalid mount target \"/\": a mount cannot replace the container's root"
            );
        }
        if !targets.insert(e.target.trim_end_matches('/')) {
            return invalid!("duplicate mount point {:?}", m.target);
        }
        let source = shown(&m.source, &e.source);
        match kind {
            "bind" if m.source.is_empty() => {
                return invalid!(
                    "invalid bind mount (target {:?}): a source is required",
                    m.target
                );
            }
            "bind" if !e.source.starts_with('/') => {
                return invalid!(
                    "invalid mount source {source}: a bind mount's source must be an absolute path on the node"
                );
            }
            "volume" if !m.source.is_empty() && !volume_name_ok(&e.source) => {
                return invalid!(
                    "invalid mount source {source}: a volume name is 2 or more letters, digits, '_', '.' or '-', \
                     starting with a letter or digit (a host directory needs type=bind and an absolute path)"
                );
            }
            "tmpfs" if !m.source.is_empty() => {
                return invalid!(
                    "invalid tmpfs mount (target {:?}): a tmpfs mount takes no source",
                    m.target
                );
            }
            _ => {}
        }
        for (key, value) in &m.options {
            if let Err(why) = check_option(kind, key, value) {
                return invalid!("invalid mount (target {:?}): {why}", m.target);
            }
        }
        // A named volume's labels and driver options (from a compose
        // file's top-level volumes) apply to the volume it creates.
        let declared = [
            ("labels", &m.volume_labels),
            ("driver options", &m.volume_driver_opts),
        ];
        for (what, map) in declared {
            if map.is_empty() {
                continue;
            }
            if kind != "volume" {
                return invalid!(
                    "invalid {kind} mount (target {:?}): volume {what} apply to volume mounts only",
                    m.target
                );
            }
            if map.keys().any(String::is_empty) {
                return invalid!(
                    "invalid volume mount (target {:?}): volume {what} need a non-empty key",
                    m.target
                );
            }
        }
    }
    Ok(())
}

/// Docker's forms: `["CMD", args…]`, `["CMD-SHELL", command]`, `["NONE"]`
/// or nothing (the image's own check).
fn healthcheck(h: &HealthConfig) -> Check {
    let form_ok = match h.test.first().map(String::as_str) {
        None => true,
        Some("NONE") => h.test.len() == 1,
        Some("CMD") => h.test.len() >= 2,
        Some("CMD-SHELL") => h.test.len() == 2,
        Some(_) => false,
    };
    if !form_ok {
        return invalid!(
            "invalid healthcheck test {:?}: expected [\"CMD\", program, args…], [\"CMD-SHELL\", command] or [\"NONE\"]",
            h.test
        );
    }
    for (what, ms) in [
        ("health-interval", h.interval_ms),
        ("health-timeout", h.timeout_ms),
        ("health-start-period", h.start_period_ms),
        ("health-start-interval", h.start_interval_ms),
    ] {
        if ms < 0 {
            return invalid!("invalid {what} {ms}ms: cannot be negative");
        }
    }
    Ok(())
}

/// Docker's ParseSignal: a number, or a name with or without `SIG`.
fn is_signal(text: &str) -> bool {
    if let Ok(n) = text.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMES: [&str; 34] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
    ];
    if NAMES.contains(&name) || name == "RTMIN" || name == "RTMAX" {
        return true;
    }
    let offset = |rest: &str| rest.parse::<u32>().is_ok_and(|n| (1..=15).contains(&n));
    name.strip_prefix("RTMIN+").is_some_and(offset)
        || name.strip_prefix("RTMAX-").is_some_and(offset)
}
