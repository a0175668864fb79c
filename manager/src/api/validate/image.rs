//! An image reference as Docker reads one (distribution's grammar):
//! `[domain[:port]/]path[:tag][@digest]`, the path in lowercase.

use super::{Check, invalid};

/// Docker's limit on a repository name.
const MAX_NAME: usize = 255;

pub(super) fn check(image: &str) -> Check {
    if image.trim().is_empty() {
        return invalid!("a service needs an image");
    }
    match problem(image) {
        None => Ok(()),
        Some(why) => invalid!("invalid image {image:?}: invalid reference format: {why}"),
    }
}

/// What is wrong with `reference`, if anything.
fn problem(reference: &str) -> Option<&'static str> {
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest
        && !digest_ok(digest)
    {
        return Some("the digest is not ALGORITHM:HEX (e.g. sha256:…)");
    }
    // A tag follows the last ':' after the last '/' (a ':' before it is a
    // registry's port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag
        && !tag_ok(tag)
    {
        return Some(
            "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        );
    }
    if name.is_empty() {
        return Some("the repository name is empty");
    }
    if name.len() > MAX_NAME {
        return Some("the repository name is longer than 255 characters");
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // The first component is a registry when it looks like a host.
    if components.len() > 1 && (components[0].contains(['.', ':']) || components[0] == "localhost")
    {
        if !domain_ok(components[0]) {
            return Some("the registry is not HOST[:PORT]");
        }
        components.remove(0);
    }
    if components
        .iter()
        .any(|c| c.chars().any(|c| c.is_ascii_uppercase()))
    {
        return Some("repository name must be lowercase");
    }
    if !components.iter().all(|c| path_component_ok(c)) {
        return Some(
            "each part of the repository name is lowercase letters and digits, separated by '.', '_', '__' or '-'",
        );
    }
    None
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `host[:port]`, the host's labels letters, digits and inner '-'.
fn domain_ok(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `[\w][\w.-]{0,127}`
fn tag_ok(tag: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    (1..=128).contains(&tag.len())
        && tag.chars().next().is_some_and(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-')
}

/// `algorithm:hex`, the hex at least 32 characters.
fn digest_ok(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    !algorithm.is_empty()
        && algorithm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '_' | '-'))
        && hex.len() >= 32
        && hex
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '=' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::problem;

    #[test]
    fn docker_references_are_accepted() {
        for good in [
            "nginx",
            "nginx:1.25-alpine",
            "shoal/echo:1",
            "library/busybox:latest",
            "registry.example.com:5000/team/app:v2.1",
            "localhost/app",
            "localhost:5000/a__b/c-d.e:tag_1",
            "ghcr.io/owner/repo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "app:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "[::1]:5000/app",
        ] {
            assert_eq!(problem(good), None, "{good}");
        }
    }

    #[test]
    fn malformed_references_are_refused() {
        assert_eq!(problem("Nginx"), Some("repository name must be lowercase"));
        assert_eq!(
            problem("Registry.Example.com/app"),
            None,
            "a registry host may have capitals"
        );
        for bad in [
            "nginx:",
            "nginx:-x",
            "has space",
            "a//b",
            "-lead",
            "app@sha256:short",
            "app:tag:more",
            ":tag",
            "host:port:1/app",
        ] {
            assert!(problem(bad).is_some(), "{bad} was accepted");
        }
    }
}
