//! Docker's per-container options as a service spec holds them, read and
//! checked one way for every client: the CLI parses its flags with these
//! readers, the compose converter can parse its keys with them, the manager
//! refuses a spec they refuse, and the agent hands the engine what they
//! accepted. Forms and words are Docker's: `--ulimit nofile=1024:2048`,
//! `--host name:ip`, `--cap-add NET_ADMIN`, `--generic-resource gpu=2`.

use std::net::IpAddr;

use crate::pb::{GenericResource, Ulimit, generic_resource};

/// The ulimits Docker takes by name (go-units' table; `as` is left out
/// there too).
pub const ULIMITS: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// The Linux capabilities (capabilities(7)), as the engine names them.
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's word for every capability at once.
pub const ALL_CAPABILITIES: &str = "ALL";

/// Sysctls a container has its own copy of (IPC, message queues, its
/// network namespace, its UTS name): the only ones the engine sets.
const NAMESPACED_SYSCTLS: [&str; 9] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
    "kernel.domainname",
];
const NAMESPACED_SYSCTL_PREFIXES: [&str; 2] = ["fs.mqueue.", "net."];

/// `nofile=1024:2048` or `nofile=1024` (hard = soft), as `--ulimit` and
/// go-units read it. -1 stands for unlimited.
pub fn parse_ulimit(text: &str) -> Result<Ulimit, String> {
    let (name, values) = text
        .split_once('=')
        .ok_or_else(|| format!("invalid ulimit argument: {text} (expected NAME=SOFT[:HARD])"))?;
    let name = name.trim();
    let number = |v: &str| {
        v.trim()
            .parse::<i64>()
            .map_err(|_| format!("invalid ulimit {text}: {v:?} is not a number"))
    };
    let (soft, hard) = match values.split_once(':') {
        Some((soft, hard)) => (number(soft)?, number(hard)?),
        None => {
            let soft = number(values)?;
            (soft, soft)
        }
    };
    let ulimit = Ulimit {
        name: name.to_owned(),
        soft,
        hard,
    };
    check_ulimit(&ulimit)?;
    Ok(ulimit)
}

/// A ulimit's name is one Docker knows, its values are numbers or -1
/// (unlimited), and soft is at most hard.
pub fn check_ulimit(u: &Ulimit) -> Result<(), String> {
    if !ULIMITS.contains(&u.name.as_str()) {
        return Err(format!(
            "invalid ulimit type: {:?} (expected one of {})",
            u.name,
            ULIMITS.join(", ")
        ));
    }
    for (which, value) in [("soft", u.soft), ("hard", u.hard)] {
        if value < -1 {
            return Err(format!(
                "invalid ulimit {}: {which} limit {value} is negative (-1 means unlimited)",
                u.name
            ));
        }
    }
    // -1 is unlimited: more than any number.
    let rank = |v: i64| if v == -1 { u64::MAX } else { v as u64 };
    if rank(u.soft) > rank(u.hard) {
        return Err(format!(
            "invalid ulimit {}: soft limit must be less than or equal to hard limit: {} > {}",
            u.name, u.soft, u.hard
        ));
    }
    Ok(())
}

/// A ulimit as `--ulimit` takes it (and Docker prints it).
pub fn format_ulimit(u: &Ulimit) -> String {
    format!("{}={}:{}", u.name, u.soft, u.hard)
}

/// Docker's NormalizeCapability: upper case, `CAP_` prefixed, `ALL` kept.
pub fn normalize_capability(text: &str) -> String {
    let upper = text.trim().to_ascii_uppercase();
    if upper == ALL_CAPABILITIES || upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// Whether the engine knows `text` (any case, with or without `CAP_`, or `ALL`).
pub fn is_capability(text: &str) -> bool {
    let normal = normalize_capability(text);
    normal == ALL_CAPABILITIES || CAPABILITIES.contains(&normal.as_str())
}

/// Docker's EffectiveCapAddCapDrop: both lists normalized, sorted and
/// without duplicates; `ALL` stands alone in its list; a capability in both
/// is added, not dropped.
pub fn effective_capabilities(add: &[String], drop: &[String]) -> (Vec<String>, Vec<String>) {
    let set = |list: &[String]| {
        let mut out: std::collections::BTreeSet<String> =
            list.iter().map(|c| normalize_capability(c)).collect();
        if out.contains(ALL_CAPABILITIES) {
            out = [ALL_CAPABILITIES.to_owned()].into();
        }
        out
    };
    let add = set(add);
    let drop = set(drop);
    let drop = drop.difference(&add).cloned().collect();
    (add.into_iter().collect(), drop)
}

/// Whether the engine can set sysctl `name` in a container: those the
/// container has its own copy of (IPC, message queues, its network and UTS
/// namespaces). The reason when not.
pub fn check_sysctl(name: &str, value: &str) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !well_formed {
        return Err(format!(
            "invalid sysctl {name:?}: a name is dot-separated words of letters, digits, '_', '-' and '/'"
        ));
    }
    if value.contains(['\0', '\n']) {
        return Err(format!(
            "invalid sysctl {name}={value:?}: the value holds a NUL or newline"
        ));
    }
    let namespaced = NAMESPACED_SYSCTLS.contains(&name)
        || NAMESPACED_SYSCTL_PREFIXES
            .iter()
            .any(|p| name.starts_with(p));
    if !namespaced {
        return Err(format!(
            "invalid sysctl {name}: not in a separate kernel namespace, the engine refuses it \
             (allowed: net.*, fs.mqueue.*, kernel.shm*, kernel.msg*, kernel.sem, kernel.domainname)"
        ));
    }
    Ok(())
}

/// `NAME=VALUE` (`--sysctl`): the pair, checked.
pub fn parse_sysctl(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("invalid sysctl {text:?}: expected NAME=VALUE"))?;
    check_sysctl(name.trim(), value)?;
    Ok((name.trim().to_owned(), value.to_owned()))
}

/// An address as `--dns` and `--host` take it (brackets around IPv6 allowed).
fn ip_address(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(t);
    t.parse().ok()
}

/// Docker's special `--host` address: the node's gateway, resolved by the engine.
pub const HOST_GATEWAY: &str = "host-gateway";

/// `--host name:ip` (or `name=ip`, as Docker 25+) as the spec's hosts(5)
/// line, `IP name`, the way Docker's CLI turns one into the other.
pub fn parse_host(text: &str) -> Result<String, String> {
    let (name, ip) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(|| format!("bad format for add-host: {text:?} (expected HOST:IP)"))?;
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "bad format for add-host: {text:?} (expected HOST:IP)"
        ));
    }
    if ip != HOST_GATEWAY && ip_address(ip).is_none() {
        return Err(format!("invalid IP address in add-host: {ip:?}"));
    }
    let ip = ip
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(ip);
    Ok(format!("{ip} {name}"))
}

/// A spec's hosts line, `IP_ADDRESS HOSTNAME [ALIAS...]`: an address (or
/// `host-gateway`) and at least one name.
pub fn check_host_line(line: &str) -> Result<(), String> {
    let mut fields = line.split_whitespace();
    let ip = fields.next().unwrap_or_default();
    if ip != HOST_GATEWAY && ip_address(ip).is_none() {
        return Err(format!(
            "invalid host {line:?}: {ip:?} is not an IP address (expected \"IP_ADDRESS HOSTNAME [ALIAS...]\")"
        ));
    }
    let names: Vec<&str> = fields.collect();
    if names.is_empty() {
        return Err(format!(
            "invalid host {line:?}: no host name (expected \"IP_ADDRESS HOSTNAME [ALIAS...]\")"
        ));
    }
    if let Some(bad) = names
        .iter()
        .find(|n| n.contains([':', '#', '\0']) || n.starts_with('-'))
    {
        return Err(format!("invalid host {line:?}: {bad:?} is not a host name"));
    }
    Ok(())
}

/// The engine's `--add-host` form of a spec's hosts line: `name:ip` for
/// the name and each alias.
pub fn extra_hosts(line: &str) -> Vec<String> {
    let mut fields = line.split_whitespace();
    let Some(ip) = fields.next() else {
        return Vec::new();
    };
    fields.map(|name| format!("{name}:{ip}")).collect()
}

/// A DNS server address (`--dns`).
pub fn check_nameserver(text: &str) -> Result<IpAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("invalid DNS server {text:?}: expected an IP address"))
}

/// A DNS search domain (`--dns-search`): letters, digits, '-' in
/// dot-separated labels, or `.` (no search domain), as Docker's
/// ValidateDNSSearch.
pub fn check_dns_search(text: &str) -> Result<(), String> {
    let t = text.trim_matches(' ');
    if t == "." {
        return Ok(());
    }
    let t = t.strip_suffix('.').unwrap_or(t);
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if t.len() >= 255 || !t.chars().any(|c| c.is_ascii_alphabetic()) || !t.split('.').all(label_ok)
    {
        return Err(format!(
            "invalid DNS search domain {text:?}: {t} is not a valid domain"
        ));
    }
    Ok(())
}

/// A resolver option (`--dns-option ndots:2`): one word, as resolv.conf's
/// `options` line holds them.
pub fn check_dns_option(text: &str) -> Result<(), String> {
    if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c == '\0') {
        return Err(format!(
            "invalid DNS option {text:?}: one word is expected (e.g. ndots:2, timeout:1, edns0)"
        ));
    }
    Ok(())
}

/// A supplementary group (`--group`): a name or a number.
pub fn check_group(text: &str) -> Result<(), String> {
    if text.is_empty()
        || text
            .chars()
            .any(|c| c.is_whitespace() || c == ':' || c == '\0')
    {
        return Err(format!(
            "invalid group {text:?}: a group name or number is expected"
        ));
    }
    Ok(())
}

/// The range of `--oom-score-adj`.
pub const OOM_SCORE_ADJ: std::ops::RangeInclusive<i64> = -1000..=1000;

/// Docker's generic resources, `KIND=VALUE` each (`gpu=2`, `gpu=UUID1`):
/// a number makes a discrete count, anything else one named instance; a
/// kind given several times holds named instances only (swarmkit's
/// genericresource.Parse).
pub fn parse_generic_resources(terms: &[String]) -> Result<Vec<GenericResource>, String> {
    let mut by_kind: Vec<(String, Vec<String>)> = Vec::new();
    for term in terms {
        let (kind, value) = match term.split('=').collect::<Vec<_>>().as_slice() {
            [k, v] if !k.trim().is_empty() && !v.trim().is_empty() => {
                (k.trim().to_owned(), v.trim().to_owned())
            }
            _ => {
                return Err(format!(
                    "invalid generic resource {term:?}: expected KIND=VALUE (gpu=2, or gpu=UUID for a named one)"
                ));
            }
        };
        match by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, values)) => values.push(value),
            None => by_kind.push((kind, vec![value])),
        }
    }
    let mut out = Vec::new();
    for (kind, values) in by_kind {
        let numbers: Vec<Option<i64>> = values.iter().map(|v| v.parse().ok()).collect();
        match numbers.as_slice() {
            [Some(n)] => out.push(discrete(&kind, *n)),
            all if all.iter().all(Option::is_none) => {
                out.extend(values.iter().map(|v| named(&kind, v)))
            }
            _ => {
                return Err(format!(
                    "invalid generic resource {kind}: a count and named instances are mixed in {values:?}"
                ));
            }
        }
    }
    for r in &out {
        check_generic_resource(r)?;
    }
    Ok(out)
}

pub fn discrete(kind: &str, count: i64) -> GenericResource {
    GenericResource {
        kind: kind.to_owned(),
        value: Some(generic_resource::Value::Discrete(count)),
    }
}

pub fn named(kind: &str, name: &str) -> GenericResource {
    GenericResource {
        kind: kind.to_owned(),
        value: Some(generic_resource::Value::Named(name.to_owned())),
    }
}

/// A kind of letters, digits, '_', '-' and '.'; a count of at least 1 or a
/// name with no space or '=' in it.
pub fn check_generic_resource(r: &GenericResource) -> Result<(), String> {
    let kind_ok = !r.kind.is_empty()
        && r.kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !kind_ok {
        return Err(format!(
            "invalid generic resource kind {:?}: use letters, digits, '_', '-' and '.'",
            r.kind
        ));
    }
    match &r.value {
        Some(generic_resource::Value::Discrete(n)) if *n < 1 => Err(format!(
            "invalid generic resource {}={n}: a count is at least 1",
            r.kind
        )),
        Some(generic_resource::Value::Named(name))
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '=') =>
        {
            Err(format!(
                "invalid generic resource {}={name:?}: a name with no space or '='",
                r.kind
            ))
        }
        None => Err(format!(
            "invalid generic resource {}: neither a count nor a name",
            r.kind
        )),
        _ => Ok(()),
    }
}

/// A generic resource as `--generic-resource` takes it.
pub fn format_generic_resource(r: &GenericResource) -> String {
    match &r.value {
        Some(generic_resource::Value::Discrete(n)) => format!("{}={n}", r.kind),
        Some(generic_resource::Value::Named(name)) => format!("{}={name}", r.kind),
        None => r.kind.clone(),
    }
}

/// What a task's assigned generic resources say in its environment, as
/// swarmkit's executor puts them: `DOCKER_RESOURCE_GPU=UUID1,UUID2` for
/// named ones, `DOCKER_RESOURCE_GPU=2` for a count.
pub fn resource_env(assigned: &[GenericResource]) -> Vec<String> {
    let mut by_kind: Vec<(String, Vec<String>)> = Vec::new();
    for r in assigned {
        let value = match &r.value {
            Some(generic_resource::Value::Discrete(n)) => n.to_string(),
            Some(generic_resource::Value::Named(name)) => name.clone(),
            None => continue,
        };
        let key = format!(
            "DOCKER_RESOURCE_{}",
            r.kind.to_ascii_uppercase().replace(['-', '.'], "_")
        );
        match by_kind.iter_mut().find(|(k, _)| *k == key) {
            Some((_, values)) => values.push(value),
            None => by_kind.push((key, vec![value])),
        }
    }
    by_kind
        .into_iter()
        .map(|(k, v)| format!("{k}={}", v.join(",")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_read_as_docker_reads_them() {
        let u = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("nofile", 1024, 2048));
        let u = parse_ulimit("nproc=64").unwrap();
        assert_eq!((u.soft, u.hard), (64, 64));
        let u = parse_ulimit("memlock=-1:-1").unwrap();
        assert_eq!((u.soft, u.hard), (-1, -1));
        assert!(parse_ulimit("memlock=1024:-1").is_ok(), "unlimited hard");
        let err = parse_ulimit("nofiles=1").unwrap_err();
        assert!(err.starts_with("invalid ulimit type: \"nofiles\""), "{err}");
        let err = parse_ulimit("nofile=2048:1024").unwrap_err();
        assert!(
            err.contains("soft limit must be less than or equal to hard limit: 2048 > 1024"),
            "{err}"
        );
        let err = parse_ulimit("nofile=-1:1024").unwrap_err();
        assert!(
            err.contains("-1 > 1024"),
            "unlimited soft over a hard: {err}"
        );
        assert!(parse_ulimit("nofile=-5").unwrap_err().contains("negative"));
        assert!(parse_ulimit("nofile").unwrap_err().contains("NAME=SOFT"));
        assert!(
            parse_ulimit("nofile=lots")
                .unwrap_err()
                .contains("not a number")
        );
        assert_eq!(format_ulimit(&parse_ulimit("core=0").unwrap()), "core=0:0");
    }

    #[test]
    fn capabilities_normalize_as_docker_and_add_beats_drop() {
        assert_eq!(normalize_capability("net_admin"), "CAP_NET_ADMIN");
        assert_eq!(normalize_capability(" CAP_SYS_TIME "), "CAP_SYS_TIME");
        assert_eq!(normalize_capability("all"), "ALL");
        assert!(is_capability("NET_ADMIN") && is_capability("cap_bpf") && is_capability("ALL"));
        assert!(!is_capability("NET_ADMINS") && !is_capability(""));
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (add, drop) = effective_capabilities(
            &s(&["net_admin", "CAP_NET_ADMIN", "sys_time"]),
            &s(&["ALL", "SYS_TIME"]),
        );
        assert_eq!(add, ["CAP_NET_ADMIN", "CAP_SYS_TIME"]);
        assert_eq!(drop, ["ALL"]);
        let (add, drop) = effective_capabilities(&s(&["ALL", "chown"]), &s(&["chown", "kill"]));
        assert_eq!((add, drop), (s(&["ALL"]), s(&["CAP_CHOWN", "CAP_KILL"])));
    }

    #[test]
    fn only_namespaced_sysctls_pass() {
        assert!(check_sysctl("net.core.somaxconn", "1024").is_ok());
        assert!(check_sysctl("net.ipv4.conf.eth0/1.forwarding", "1").is_ok());
        assert!(check_sysctl("kernel.shmmax", "1").is_ok());
        assert!(check_sysctl("fs.mqueue.msg_max", "20").is_ok());
        let err = check_sysctl("vm.swappiness", "10").unwrap_err();
        assert!(err.contains("not in a separate kernel namespace"), "{err}");
        let err = check_sysctl("net..core", "1").unwrap_err();
        assert!(err.contains("dot-separated"), "{err}");
        assert!(check_sysctl("net.a b", "1").is_err());
        assert!(check_sysctl("net.core.x", "1\n2").is_err());
        assert_eq!(
            parse_sysctl("net.core.somaxconn=1024").unwrap(),
            ("net.core.somaxconn".into(), "1024".into())
        );
        assert!(
            parse_sysctl("net.core.somaxconn")
                .unwrap_err()
                .contains("NAME=VALUE")
        );
    }

    #[test]
    fn hosts_turn_into_hosts_lines_and_back() {
        assert_eq!(parse_host("db:10.0.0.5").unwrap(), "10.0.0.5 db");
        assert_eq!(parse_host("db=10.0.0.5").unwrap(), "10.0.0.5 db");
        assert_eq!(parse_host("v6:::1").unwrap(), "::1 v6");
        assert_eq!(parse_host("v6=[fd00::1]").unwrap(), "fd00::1 v6");
        assert_eq!(parse_host("gw:host-gateway").unwrap(), "host-gateway gw");
        assert!(
            parse_host("db")
                .unwrap_err()
                .contains("bad format for add-host")
        );
        assert!(parse_host(":1.2.3.4").is_err());
        let err = parse_host("db:10.0.0.300").unwrap_err();
        assert!(err.contains("invalid IP address in add-host"), "{err}");
        assert!(check_host_line("10.0.0.5 db db.local").is_ok());
        assert!(check_host_line("::1 v6").is_ok());
        assert!(
            check_host_line("10.0.0.5")
                .unwrap_err()
                .contains("no host name")
        );
        assert!(
            check_host_line("db 10.0.0.5")
                .unwrap_err()
                .contains("not an IP address")
        );
        assert!(check_host_line("10.0.0.5 a:b").is_err());
        assert_eq!(
            extra_hosts("10.0.0.5 db db.local"),
            ["db:10.0.0.5", "db.local:10.0.0.5"]
        );
    }

    #[test]
    fn dns_settings_are_checked_by_their_kind() {
        assert!(check_nameserver("192.0.2.53").is_ok());
        assert!(check_nameserver("fd00::53").is_ok());
        assert!(
            check_nameserver("dns.example")
                .unwrap_err()
                .contains("invalid DNS server")
        );
        assert!(check_dns_search("example.com").is_ok());
        assert!(check_dns_search("example.com.").is_ok());
        assert!(check_dns_search(".").is_ok());
        assert!(check_dns_search("-bad.com").is_err());
        assert!(
            check_dns_search("1.2.3.4").is_err(),
            "no letter: not a domain"
        );
        assert!(check_dns_search("a b").is_err());
        assert!(check_dns_option("ndots:2").is_ok());
        assert!(check_dns_option("ndots: 2").is_err());
        assert!(check_dns_option("").is_err());
        assert!(check_group("audio").is_ok() && check_group("1001").is_ok());
        assert!(check_group("a b").is_err() && check_group("").is_err());
    }

    #[test]
    fn generic_resources_are_counts_or_named_instances() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_generic_resources(&s(&["gpu=2"])).unwrap(),
            [discrete("gpu", 2)]
        );
        assert_eq!(
            parse_generic_resources(&s(&["gpu=UUID1", "gpu=UUID2", "ssd=fast"])).unwrap(),
            [
                named("gpu", "UUID1"),
                named("gpu", "UUID2"),
                named("ssd", "fast")
            ]
        );
        let err = parse_generic_resources(&s(&["gpu=2", "gpu=UUID1"])).unwrap_err();
        assert!(err.contains("mixed"), "{err}");
        let err = parse_generic_resources(&s(&["gpu"])).unwrap_err();
        assert!(err.contains("expected KIND=VALUE"), "{err}");
        assert!(parse_generic_resources(&s(&["gpu=a=b"])).is_err());
        let err = parse_generic_resources(&s(&["gpu=0"])).unwrap_err();
        assert!(err.contains("at least 1"), "{err}");
        assert!(parse_generic_resources(&s(&["gpu=-2"])).is_err());
        assert!(parse_generic_resources(&s(&["g p u=2"])).is_err());
        assert_eq!(format_generic_resource(&named("gpu", "UUID1")), "gpu=UUID1");
        assert_eq!(
            resource_env(&[named("gpu", "a"), named("gpu", "b"), discrete("ssd-x", 3)]),
            ["DOCKER_RESOURCE_GPU=a,b", "DOCKER_RESOURCE_SSD_X=3"]
        );
    }
}
