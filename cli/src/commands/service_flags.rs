//! Parsing `service create` flags the way Docker reads them.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use shoal_api::pb::{ConfigReference, FileTarget, Mount, PortConfig, PublishMode, SecretReference};

/// Docker's RAMInBytes: `512m`, `1g`, `1.5GiB`, `1024` (bytes); 1024-based.
pub fn parse_bytes(text: &str) -> Result<i64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("invalid size {text:?}: expected e.g. 512M or 1G"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        _ => bail!("invalid size {text:?}: unknown unit (use b, k, m, g or t)"),
    };
    Ok((number * multiplier) as i64)
}

pub fn format_bytes(bytes: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value}{}", units[unit])
    } else {
        format!("{value:.3}{}", units[unit])
    }
}

/// CPUs as a decimal (`0.5`) to nano-CPUs.
pub fn parse_cpus(text: &str) -> Result<i64> {
    let cpus: f64 = text
        .trim()
        .parse()
        .with_context(|| format!("invalid CPU value {text:?}: expected a number like 0.5"))?;
    if cpus.is_nan() || cpus <= 0.0 {
        bail!("invalid CPU value {text:?}: must be more than 0");
    }
    Ok((cpus * 1e9) as i64)
}

pub fn parse_duration(text: &str) -> Result<Duration> {
    humantime::parse_duration(text.trim())
        .with_context(|| format!("invalid duration {text:?}: expected e.g. 5s, 1m30s or 100ms"))
}

pub fn duration_ms(text: &str) -> Result<i64> {
    Ok(parse_duration(text)?.as_millis() as i64)
}

fn parse_port(text: &str, what: &str, spec: &str) -> Result<u32> {
    let port: u32 = text
        .parse()
        .with_context(|| format!("invalid {what} port {text:?} in --publish {spec:?}"))?;
    if port == 0 || port > 65535 {
        bail!("invalid {what} port {port} in --publish {spec:?}: ports are 1 to 65535");
    }
    Ok(port)
}

/// An allow-list value: IPv4 CIDRs separated by `;` (a `,` would end the
/// `--publish` field), a bare address meaning itself (`/32`). `flag` names
/// where it came from in the error.
pub fn parse_allow(value: &str, flag: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in value
        .split([';', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let cidr = if entry.contains('/') {
            entry.to_owned()
        } else {
            format!("{entry}/32")
        };
        if cidr.parse::<shoal_api::cidr::Ipv4Cidr>().is_err() {
            bail!(
                "invalid allow entry {entry:?} in {flag}: expected an IPv4 CIDR such as 192.0.2.0/24 or an address"
            );
        }
        out.push(cidr);
    }
    if out.is_empty() {
        bail!("{flag}: allow needs at least one IPv4 CIDR");
    }
    Ok(out)
}

/// `8080:80`, `8080:80/udp`, `80` (dynamic published port), each with an
/// optional `,mode=host`; or the long form
/// `published=8080,target=80,protocol=udp,mode=host`. Shoal adds
/// `allow=CIDR[;CIDR…]` (repeatable): only those clients may connect.
/// `dsr=true` (ingress mode: direct server return); `proxy-protocol=v2`
/// (ingress mode, TCP: the agent's relay writes a PROXY v2 header first).
pub fn parse_publish(spec: &str) -> Result<PortConfig> {
    let mut port = PortConfig {
        protocol: "tcp".into(),
        ..Default::default()
    };
    let mut parts = spec.split(',');
    let first = parts.next().unwrap_or_default();
    let mut fields: Vec<&str> = parts.collect();
    if first.contains('=') {
        fields.insert(0, first);
    } else {
        let (ports, protocol) = first.split_once('/').unwrap_or((first, "tcp"));
        port.protocol = protocol.to_ascii_lowercase();
        match ports.split_once(':') {
            Some((published, target)) => {
                port.published_port = parse_port(published, "published", spec)?;
                port.target_port = parse_port(target, "target", spec)?;
            }
            None => port.target_port = parse_port(ports, "target", spec)?,
        }
    }
    for field in fields {
        let (key, value) = field.split_once('=').with_context(|| {
            format!("invalid field {field:?} in --publish {spec:?}: expected key=value")
        })?;
        match key.trim() {
            "published" => port.published_port = parse_port(value, "published", spec)?,
            "target" => port.target_port = parse_port(value, "target", spec)?,
            "protocol" => port.protocol = value.to_ascii_lowercase(),
            "mode" => {
                port.publish_mode = PublishMode::from_word(value).with_context(|| {
                    format!(
                        "invalid mode {value:?} in --publish {spec:?}: expected ingress or host"
                    )
                })? as i32
            }
            "allow" => port
                .allow
                .extend(parse_allow(value, &format!("--publish {spec:?}"))?),
            "dsr" => {
                port.direct_server_return = match value.to_ascii_lowercase().as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => bail!(
                        "invalid value {other:?} for dsr in --publish {spec:?}: expected true or false"
                    ),
                }
            }
            "proxy-protocol" => {
                port.proxy_protocol = match value.to_ascii_lowercase().as_str() {
                    "v2" => "v2".into(),
                    other => bail!(
                        "invalid value {other:?} for proxy-protocol in --publish {spec:?}: expected v2"
                    ),
                }
            }
            other => bail!(
                "invalid field {other:?} in --publish {spec:?}: expected published, target, protocol, mode, allow, dsr or proxy-protocol"
            ),
        }
    }
    if port.target_port == 0 {
        bail!("--publish {spec:?}: a target port is required");
    }
    if !matches!(port.protocol.as_str(), "tcp" | "udp") {
        bail!(
            "--publish {spec:?}: protocol {:?} is not supported (tcp or udp)",
            port.protocol
        );
    }
    check_proxy_protocol(&port, spec)?;
    Ok(port)
}

/// What the relay behind `proxy-protocol=v2` cannot do, refused before the
/// manager is asked (it refuses the same, for any client: one rule).
fn check_proxy_protocol(port: &PortConfig, spec: &str) -> Result<()> {
    shoal_api::proxy_protocol::check(port).map_err(|why| anyhow!("--publish {spec:?}: {why}"))
}

fn parse_bool(value: Option<&str>, key: &str, spec: &str) -> Result<bool> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => {
            bail!("invalid value {other:?} for {key} in --mount {spec:?}: expected true or false")
        }
    }
}

/// `type=bind|volume|tmpfs,source=…,target=…[,readonly][,…]`, as Docker.
pub fn parse_mount(spec: &str) -> Result<Mount> {
    let mut mount = Mount {
        r#type: "volume".into(),
        ..Default::default()
    };
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (field.trim(), None),
        };
        let need = |value: Option<&str>| {
            value.map(str::to_owned).with_context(|| {
                format!("invalid field {key:?} in --mount {spec:?}: a value is required")
            })
        };
        match key {
            "type" => mount.r#type = need(value)?,
            "source" | "src" => mount.source = need(value)?,
            "target" | "destination" | "dst" => mount.target = need(value)?,
            "readonly" | "ro" => mount.read_only = parse_bool(value, key, spec)?,
            "volume-driver" | "volume-label" | "volume-nocopy" | "volume-opt" | "tmpfs-size"
            | "tmpfs-mode" | "bind-propagation" | "consistency" => {
                mount
                    .options
                    .insert(key.to_owned(), value.unwrap_or("true").to_owned());
            }
            other => bail!("unexpected key {other:?} in --mount {spec:?}"),
        }
    }
    // The manager checks the same (shoal_api::mount), for every client.
    for (key, value) in &mount.options {
        if let Err(why) = shoal_api::mount::check_option(&mount.r#type, key, value) {
            bail!("invalid --mount {spec:?}: {why}");
        }
    }
    if !matches!(mount.r#type.as_str(), "bind" | "volume" | "tmpfs") {
        bail!(
            "invalid mount type {:?} in --mount {spec:?}: expected bind, volume or tmpfs",
            mount.r#type
        );
    }
    if mount.target.is_empty() {
        bail!("--mount {spec:?}: target is required");
    }
    if mount.r#type == "bind" && mount.source.is_empty() {
        bail!("--mount {spec:?}: source is required for a bind mount");
    }
    // Docker's words; the source is a path on each node.
    if mount.r#type == "bind" && !mount.source.starts_with('/') {
        bail!(
            "invalid --mount {spec:?}: invalid mount path: '{}' mount path must be absolute",
            mount.source
        );
    }
    if !mount.target.starts_with('/') {
        bail!(
            "invalid --mount {spec:?}: invalid mount path: '{}' mount path must be absolute",
            mount.target
        );
    }
    if mount.r#type == "tmpfs" && !mount.source.is_empty() {
        bail!("--mount {spec:?}: a tmpfs mount takes no source");
    }
    Ok(mount)
}

/// `name` or `source=name,target=t,uid=0,gid=0,mode=0444`.
fn parse_file_reference(spec: &str, flag: &str, default_mode: u32) -> Result<(String, FileTarget)> {
    let mut source = String::new();
    let mut file = FileTarget {
        uid: "0".into(),
        gid: "0".into(),
        mode: default_mode,
        ..Default::default()
    };
    if !spec.contains('=') {
        return Ok((spec.to_owned(), file));
    }
    for field in spec.split(',') {
        let (key, value) = field.split_once('=').with_context(|| {
            format!("invalid field {field:?} in {flag} {spec:?}: expected key=value")
        })?;
        match key {
            "source" | "src" => source = value.to_owned(),
            "target" => file.name = value.to_owned(),
            "uid" => file.uid = value.to_owned(),
            "gid" => file.gid = value.to_owned(),
            "mode" => {
                file.mode = u32::from_str_radix(value, 8).with_context(|| {
                    format!("invalid mode {value:?} in {flag} {spec:?}: expected octal like 0444")
                })?
            }
            other => bail!(
                "invalid field {other:?} in {flag} {spec:?}: expected source, target, uid, gid or mode"
            ),
        }
    }
    if source.is_empty() {
        bail!("{flag} {spec:?}: source is required");
    }
    Ok((source, file))
}

pub fn parse_secret(spec: &str) -> Result<SecretReference> {
    let (name, file) = parse_file_reference(spec, "--secret", 0o444)?;
    Ok(SecretReference {
        secret_name: name,
        file: Some(file),
        ..Default::default()
    })
}

pub fn parse_config(spec: &str) -> Result<ConfigReference> {
    let (name, file) = parse_file_reference(spec, "--config", 0o444)?;
    Ok(ConfigReference {
        config_name: name,
        file: Some(file),
        ..Default::default()
    })
}

/// `K=V`, or `K` alone to take the value from the caller's environment.
pub fn parse_env(spec: &str) -> Result<String> {
    let name = spec.split_once('=').map_or(spec, |(name, _)| name);
    if name.is_empty() {
        // Docker's words.
        bail!("invalid environment variable: {spec} (expected KEY=VALUE)");
    }
    if spec.contains('=') {
        return Ok(spec.to_owned());
    }
    Ok(format!(
        "{spec}={}",
        std::env::var(spec).unwrap_or_default()
    ))
}

/// `k=v` or `k` (empty value).
/// `--network NAME` or Docker's long form `name=NAME,alias=A[,alias=B]`.
pub fn parse_network(spec: &str) -> Result<shoal_api::pb::NetworkAttachmentConfig> {
    let mut out = shoal_api::pb::NetworkAttachmentConfig::default();
    if !spec.contains('=') {
        out.target = spec.to_owned();
        return Ok(out);
    }
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("name" | "target", v)) => out.target = v.to_owned(),
            Some(("alias", v)) if !v.is_empty() => out.aliases.push(v.to_owned()),
            _ => bail!(
                "invalid --network {spec:?}: unknown part {part:?} (expected name=NET[,alias=NAME])"
            ),
        }
    }
    if out.target.is_empty() {
        bail!("invalid --network {spec:?}: name=NET is missing");
    }
    Ok(out)
}

pub fn parse_label(spec: &str) -> Result<(String, String)> {
    let (k, v) = spec.split_once('=').unwrap_or((spec, ""));
    if k.is_empty() {
        bail!("invalid label {spec:?}: expected key=value");
    }
    Ok((k.to_owned(), v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_short_and_long_forms() {
        assert_eq!(parse_network("back").unwrap().target, "back");
        let n = parse_network("name=back,alias=db,alias=store").unwrap();
        assert_eq!((n.target.as_str(), n.aliases.len()), ("back", 2));
        let err = parse_network("name=back,ip=1.2.3.4")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown part \"ip=1.2.3.4\""), "{err}");
        assert!(parse_network("alias=x").is_err());
    }

    #[test]
    fn sizes_cpus_and_durations() {
        assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("12x").is_err());
        assert_eq!(parse_cpus("0.5").unwrap(), 500_000_000);
        assert!(parse_cpus("-1").is_err());
        assert_eq!(duration_ms("1m30s").unwrap(), 90_000);
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn publish_allow_lists() {
        let p = parse_publish("8080:80,allow=192.0.2.0/24,allow=198.18.0.1").unwrap();
        assert_eq!(p.allow, ["192.0.2.0/24", "198.18.0.1/32"]);
        let p =
            parse_publish("published=53,target=53,protocol=udp,allow=10.0.0.0/8;192.0.2.100/32")
                .unwrap();
        assert_eq!(p.allow, ["10.0.0.0/8", "192.0.2.100/32"]);
        let err = parse_publish("8080:80,allow=192.0.2.0/33")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("192.0.2.0/33") && err.contains("--publish"),
            "{err}"
        );
        assert!(parse_publish("8080:80,allow=").is_err());
        assert_eq!(
            parse_allow("192.0.2.100, 10.0.0.0/8", "--ingress-allow").unwrap(),
            ["192.0.2.100/32", "10.0.0.0/8"]
        );
    }

    #[test]
    fn publish_forms() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (
                p.published_port,
                p.target_port,
                p.protocol.as_str(),
                p.publish_mode()
            ),
            (8080, 80, "tcp", PublishMode::Ingress)
        );
        let p = parse_publish("53:53/udp,mode=host").unwrap();
        assert_eq!(
            (p.published_port, p.protocol.as_str(), p.publish_mode()),
            (53, "udp", PublishMode::Host)
        );
        let p = parse_publish("published=9000,target=90,protocol=udp").unwrap();
        assert_eq!(
            (p.published_port, p.target_port, p.protocol.as_str()),
            (9000, 90, "udp")
        );
        assert_eq!(parse_publish("80").unwrap().published_port, 0);
        assert!(
            parse_publish("8080:0")
                .unwrap_err()
                .to_string()
                .contains("1 to 65535")
        );
        assert!(parse_publish("8080:80/sctp").is_err());
        let p = parse_publish("published=8080,target=80,dsr=true").unwrap();
        assert!(p.direct_server_return && p.publish_mode() == PublishMode::Ingress);
        assert!(!parse_publish("8080:80").unwrap().direct_server_return);
        assert!(
            parse_publish("8080:80,dsr=maybe")
                .unwrap_err()
                .to_string()
                .contains("dsr")
        );
        let p = parse_publish("published=8080,target=80,proxy-protocol=v2").unwrap();
        assert_eq!(p.proxy_protocol, "v2");
        assert!(parse_publish("8080:80").unwrap().proxy_protocol.is_empty());
        let refused = |spec: &str| parse_publish(spec).unwrap_err().to_string();
        assert!(refused("8080:80,proxy-protocol=v1").contains("expected v2"));
        assert!(refused("8080:80/udp,proxy-protocol=v2").contains("Shoal does not relay udp"));
        assert!(refused("8080:80,mode=host,proxy-protocol=v2").contains("ingress mode"));
        assert!(refused("8080:80,dsr=true,proxy-protocol=v2").contains("cannot be combined"));
        assert!(
            parse_publish("8080:80,mode=mesh")
                .unwrap_err()
                .to_string()
                .contains("ingress or host")
        );
    }

    #[test]
    fn mount_forms() {
        let m = parse_mount("type=bind,source=/srv,target=/data,readonly").unwrap();
        assert_eq!(
            (
                m.r#type.as_str(),
                m.source.as_str(),
                m.target.as_str(),
                m.read_only
            ),
            ("bind", "/srv", "/data", true)
        );
        let m = parse_mount("src=cache,dst=/cache").unwrap();
        assert_eq!(m.r#type, "volume");
        assert!(
            parse_mount("type=tmpfs,target=/t,tmpfs-size=64m")
                .unwrap()
                .options
                .contains_key("tmpfs-size")
        );
        assert!(parse_mount("type=nfs,target=/x").is_err());
        assert!(
            parse_mount("type=bind,target=/x")
                .unwrap_err()
                .to_string()
                .contains("source is required")
        );
        assert!(
            parse_mount("type=volume,target=/x,colour=red")
                .unwrap_err()
                .to_string()
                .contains("colour")
        );
        let err = parse_mount("type=bind,source=relative,target=/x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid mount path: 'relative' mount path must be absolute"),
            "{err}"
        );
        assert!(parse_mount("type=volume,source=v1,target=rel").is_err());
        let err = parse_mount("type=bind,source=/srv,target=/x,tmpfs-size=1m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("applies to tmpfs mounts"), "{err}");
        // Templates are the manager's to check once expanded.
        assert!(parse_mount("type=bind,source=/srv/{{.Task.Slot}},target=/x").is_ok());
    }

    #[test]
    fn env_forms() {
        assert_eq!(parse_env("A=1").unwrap(), "A=1");
        assert_eq!(parse_env("A=").unwrap(), "A=");
        assert_eq!(parse_env("ID={{.Node.ID}}").unwrap(), "ID={{.Node.ID}}");
        let err = parse_env("=noval").unwrap_err().to_string();
        assert!(
            err.starts_with("invalid environment variable: =noval"),
            "{err}"
        );
        assert!(parse_env("").is_err());
    }

    #[test]
    fn secret_forms() {
        let s = parse_secret("db_password").unwrap();
        assert_eq!(s.secret_name, "db_password");
        let s = parse_secret("source=db,target=pw,uid=100,mode=0400").unwrap();
        let f = s.file.unwrap();
        assert_eq!(
            (
                s.secret_name.as_str(),
                f.name.as_str(),
                f.uid.as_str(),
                f.mode
            ),
            ("db", "pw", "100", 0o400)
        );
        assert!(parse_secret("target=pw").is_err());
    }
}
