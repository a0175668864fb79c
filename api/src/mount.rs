//! A mount's options (`tmpfs-size=64m`, `bind-propagation=rslave`, …):
//! which apply to which mount type and how their values read. The manager
//! checks a service's mounts with these rules and the agent applies the
//! options with the same readers, so what one accepts the other can do.

/// Bind propagation modes, as Docker names them.
pub const PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// `64m`, `1g`, `4096` as bytes (1024-based, as Docker reads them).
pub fn parse_size(text: &str) -> Option<i64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.trim_end_matches('b');
    let (number, multiplier) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    number
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .and_then(|n| n.checked_mul(multiplier))
}

/// A file mode in octal (`1777`, `0755`).
pub fn parse_mode(text: &str) -> Option<i64> {
    i64::from_str_radix(text.trim(), 8)
        .ok()
        .filter(|m| (0..=0o7777).contains(m))
}

/// `true`/`false` (and `1`/`0`); an option given without a value is true.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Whether option `key=value` fits a mount of type `kind`; the reason when
/// it does not.
pub fn check_option(kind: &str, key: &str, value: &str) -> Result<(), String> {
    let applies_to = match key {
        "bind-propagation" | "consistency" => "bind",
        "volume-driver" | "volume-label" | "volume-nocopy" | "volume-opt" => "volume",
        "tmpfs-size" | "tmpfs-mode" => "tmpfs",
        _ => return Err(format!("unknown mount option {key:?}")),
    };
    if applies_to != kind {
        return Err(format!(
            "option {key:?} applies to {applies_to} mounts, not to a {kind} mount"
        ));
    }
    let ok = match key {
        "bind-propagation" => PROPAGATIONS.contains(&value),
        "consistency" => matches!(value, "default" | "consistent" | "cached" | "delegated"),
        // Volumes are created by the agent with Docker's local driver.
        "volume-driver" => value == "local",
        "volume-label" | "volume-opt" => value.split_once('=').is_some_and(|(k, _)| !k.is_empty()),
        "volume-nocopy" => parse_bool(value).is_some(),
        "tmpfs-size" => parse_size(value).is_some(),
        _ => parse_mode(value).is_some(),
    };
    if ok {
        return Ok(());
    }
    let expected = match key {
        "bind-propagation" => "one of private, rprivate, shared, rshared, slave or rslave",
        "consistency" => "default, consistent, cached or delegated",
        "volume-driver" => "local (the only volume driver Shoal uses)",
        "volume-label" | "volume-opt" => "KEY=VALUE",
        "volume-nocopy" => "true or false",
        "tmpfs-size" => "a size such as 64m or 1g",
        _ => "an octal mode such as 1777",
    };
    Err(format!("invalid {key} {value:?}: expected {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_modes() {
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_mode("1777"), Some(0o1777));
        assert_eq!(parse_mode("999"), None);
    }

    #[test]
    fn options_fit_their_mount_type() {
        assert!(check_option("tmpfs", "tmpfs-size", "64m").is_ok());
        assert!(check_option("bind", "bind-propagation", "rslave").is_ok());
        assert!(check_option("volume", "volume-nocopy", "true").is_ok());
        assert_eq!(
            check_option("bind", "tmpfs-size", "64m").unwrap_err(),
            "option \"tmpfs-size\" applies to tmpfs mounts, not to a bind mount"
        );
        assert_eq!(
            check_option("tmpfs", "tmpfs-size", "big").unwrap_err(),
            "invalid tmpfs-size \"big\": expected a size such as 64m or 1g"
        );
        assert!(check_option("volume", "volume-driver", "nfs").is_err());
        assert!(check_option("bind", "bind-propagation", "sideways").is_err());
        assert!(check_option("bind", "colour", "red").is_err());
    }
}
