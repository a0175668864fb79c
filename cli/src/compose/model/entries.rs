//! List entries with a short and a long syntax: ports (`8080:80/udp` or a
//! mapping), volumes (`data:/d:ro,nocopy` or a mapping), secrets and
//! configs (a name or a mapping). Short ones are parsed as Docker parses
//! them (go-connections' `ParsePortSpec`, the loader's `ParseVolume`) into
//! the long form, which is what `stack config` prints.

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer},
};

use super::forms::{self, Text};

type Fmt<'a, 'b> = &'a mut std::fmt::Formatter<'b>;

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One published port (Docker's `ServicePortConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    #[serde(default, deserialize_with = "port", skip_serializing_if = "is_zero")]
    pub target: u32,
    #[serde(default, deserialize_with = "port", skip_serializing_if = "is_zero")]
    pub published: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// The Compose specification's port name (Docker's v3 files have none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Warned about and dropped, as Docker drops an address in the short
    /// syntax: a published port answers on every node's addresses.
    #[serde(default, skip_serializing)]
    pub host_ip: Option<String>,
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match forms::uint(d)? {
        None => Ok(0),
        Some(p) if p <= 65535 => Ok(p as u32),
        Some(p) => Err(de::Error::custom(format!(
            "port {p} is out of range: ports are 0 to 65535"
        ))),
    }
}

/// A service's `ports`, short entries expanded (a range gives several).
pub fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PortConfig>, D::Error> {
    struct Entry(Vec<PortConfig>);
    impl<'de> Deserialize<'de> for Entry {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Entry;
                fn expecting(&self, f: Fmt) -> std::fmt::Result {
                    f.write_str("a port (\"8080:80\", 80) or a mapping with target")
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Entry, E> {
                    self.visit_str(&v.to_string())
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Entry, E> {
                    parse_port_spec(v).map(Entry).map_err(E::custom)
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Entry, A::Error> {
                    PortConfig::deserialize(MapAccessDeserializer::new(map)).map(|p| Entry(vec![p]))
                }
            }
            d.deserialize_any(V)
        }
    }
    let entries = Vec::<Entry>::deserialize(d)?;
    Ok(entries.into_iter().flat_map(|e| e.0).collect())
}

fn port_range(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let parse = |p: &str| p.parse::<u16>().ok().map(u32::from);
    let (a, b) = (parse(a)?, parse(b)?);
    (a <= b).then_some((a, b))
}

/// `[IP:][PUBLISHED[-END]:]TARGET[-END][/PROTO]`, as Docker expands it:
/// the ports in the order of their `TARGET/proto` keys as strings.
pub fn parse_port_spec(spec: &str) -> Result<Vec<PortConfig>, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let n = parts.len();
    let (ip, host, container) = match n {
        1 => (String::new(), "", parts[0]),
        2 => (String::new(), parts[0], parts[1]),
        3 => (parts[0].to_owned(), parts[1], parts[2]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let (container, protocol) = match container.split_once('/') {
        Some((port, proto)) => (port, proto.to_ascii_lowercase()),
        None => (container, "tcp".to_owned()),
    };
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(&ip)
        .to_owned();
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("invalid IP address: {ip}"));
    }
    if container.is_empty() {
        return Err(format!("no port specified: {spec}<empty>"));
    }
    let (start, end) =
        port_range(container).ok_or_else(|| format!("invalid containerPort: {container}"))?;
    let (host_start, host_end) = if host.is_empty() {
        (0, 0)
    } else {
        port_range(host).ok_or_else(|| format!("invalid hostPort: {host}"))?
    };
    if !host.is_empty() && end - start != host_end - host_start && end != start {
        return Err(format!(
            "invalid ranges specified for container and host Ports: {container} and {host}"
        ));
    }
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {protocol}"));
    }
    let mut ports: Vec<(String, PortConfig)> = Vec::new();
    for i in 0..=(end - start) {
        let target = start + i;
        // One target with a published range publishes each of them.
        let published: Vec<u32> = if start == end && host_start != host_end {
            (host_start..=host_end).collect()
        } else if host.is_empty() {
            vec![0]
        } else {
            vec![host_start + i]
        };
        for published in published {
            ports.push((
                format!("{target}/{protocol}"),
                PortConfig {
                    mode: "ingress".into(),
                    target,
                    published,
                    protocol: protocol.clone(),
                    host_ip: (!ip.is_empty()).then(|| ip.clone()),
                    ..Default::default()
                },
            ));
        }
    }
    ports.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(ports.into_iter().map(|(_, p)| p).collect())
}

/// One mount of a service (Docker's `ServiceVolumeConfig`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceVolume {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(
        default,
        deserialize_with = "forms::plain_flag",
        skip_serializing_if = "is_false"
    )]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub consistency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<BindOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsOptions>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindOptions {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub propagation: String,
    /// The Compose specification's; binds on a cluster never create paths.
    #[serde(default, skip_serializing)]
    pub create_host_path: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeOptions {
    #[serde(
        default,
        deserialize_with = "forms::plain_flag",
        skip_serializing_if = "is_false"
    )]
    pub nocopy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmpfsOptions {
    #[serde(
        default,
        deserialize_with = "tmpfs_size",
        skip_serializing_if = "is_zero64"
    )]
    pub size: i64,
    /// The Compose specification's tmpfs mode (Docker's v3 files have none).
    #[serde(
        default,
        deserialize_with = "forms::mode",
        skip_serializing_if = "Option::is_none"
    )]
    pub mode: Option<u32>,
}

fn is_zero64(n: &i64) -> bool {
    *n == 0
}

/// Bytes as a number (Docker), or a size such as `64m` (the Compose
/// specification).
fn tmpfs_size<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(Option::<super::units::Bytes>::deserialize(d)?.map_or(0, |b| b.0))
}

/// A service's `volumes`, short entries parsed into the long form.
pub fn volumes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ServiceVolume>, D::Error> {
    struct Entry(ServiceVolume);
    impl<'de> Deserialize<'de> for Entry {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Entry;
                fn expecting(&self, f: Fmt) -> std::fmt::Result {
                    f.write_str("a volume (\"data:/path\") or a mapping with type and target")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Entry, E> {
                    parse_volume(v).map(Entry).map_err(E::custom)
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Entry, A::Error> {
                    ServiceVolume::deserialize(MapAccessDeserializer::new(map)).map(Entry)
                }
            }
            d.deserialize_any(V)
        }
    }
    Ok(Vec::<Entry>::deserialize(d)?
        .into_iter()
        .map(|e| e.0)
        .collect())
}

const PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// `[SOURCE:]TARGET[:OPTIONS]`, as Docker's loader parses it (including
/// its reading of `x:` as a Windows drive).
pub fn parse_volume(spec: &str) -> Result<ServiceVolume, String> {
    let mut volume = ServiceVolume::default();
    match spec.chars().count() {
        0 => return Err("invalid empty volume spec".into()),
        1 | 2 => {
            volume.target = spec.to_owned();
            volume.kind = "volume".into();
            return Ok(volume);
        }
        _ => {}
    }
    let mut buffer = String::new();
    let chars: Vec<char> = spec.chars().collect();
    for (i, c) in chars.iter().copied().map(Some).chain([None]).enumerate() {
        let windows_drive = c == Some(':')
            && buffer.chars().count() == 1
            && buffer.chars().all(char::is_alphabetic);
        if windows_drive || !(c == Some(':') || c.is_none()) {
            buffer.push(chars[i]);
            continue;
        }
        let at_end = c.is_none();
        if buffer.is_empty() {
            return Err(format!(
                "invalid spec: {spec}: empty section between colons"
            ));
        }
        if volume.source.is_empty() && at_end {
            volume.target = std::mem::take(&mut buffer);
        } else if volume.source.is_empty() {
            volume.source = std::mem::take(&mut buffer);
        } else if volume.target.is_empty() {
            volume.target = std::mem::take(&mut buffer);
        } else if !at_end {
            return Err(format!("invalid spec: {spec}: too many colons"));
        } else {
            for option in buffer.split(',') {
                match option {
                    "ro" => volume.read_only = true,
                    "rw" => volume.read_only = false,
                    "nocopy" => {
                        volume.volume = Some(VolumeOptions { nocopy: true });
                    }
                    p if PROPAGATIONS.contains(&p) => {
                        volume.bind = Some(BindOptions {
                            propagation: p.to_owned(),
                            ..Default::default()
                        });
                    }
                    // `z`, `Z`, `cached`, `delegated`… mean nothing to a
                    // service, as to Docker.
                    _ => {}
                }
            }
            buffer.clear();
        }
    }
    volume.kind = if volume.source.is_empty() || !is_file_path(&volume.source) {
        "volume".into()
    } else {
        "bind".into()
    };
    Ok(volume)
}

/// Docker's test for a bind source: `.`, `/` or `~` first (or a Windows
/// path).
pub fn is_file_path(source: &str) -> bool {
    if source.starts_with(['.', '/', '~']) || source.starts_with("\\\\") {
        return true;
    }
    let mut chars = source.chars();
    matches!((chars.next(), chars.next()), (Some(c), Some(':')) if c.is_alphabetic())
}

/// A secret or config a service uses (Docker's `FileReferenceConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileReference {
    pub source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(
        default,
        deserialize_with = "text_or_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub uid: String,
    #[serde(
        default,
        deserialize_with = "text_or_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub gid: String,
    #[serde(
        default,
        deserialize_with = "forms::mode",
        skip_serializing_if = "Option::is_none"
    )]
    pub mode: Option<u32>,
}

fn text_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(forms::text(d)?.unwrap_or_default())
}

/// A service's `secrets` or `configs`: names or mappings with a source.
pub fn file_references<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<FileReference>, D::Error> {
    struct Entry(FileReference);
    impl<'de> Deserialize<'de> for Entry {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Entry;
                fn expecting(&self, f: Fmt) -> std::fmt::Result {
                    f.write_str("a name or a mapping with source")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Entry, E> {
                    Ok(Entry(FileReference {
                        source: v.to_owned(),
                        ..Default::default()
                    }))
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Entry, A::Error> {
                    FileReference::deserialize(MapAccessDeserializer::new(map)).map(Entry)
                }
            }
            d.deserialize_any(V)
        }
    }
    Ok(Vec::<Entry>::deserialize(d)?
        .into_iter()
        .map(|e| e.0)
        .collect())
}

/// How a service joins one network.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetwork {
    #[serde(
        default,
        deserialize_with = "forms::strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub aliases: Vec<String>,
    #[serde(
        default,
        deserialize_with = "forms::string_map",
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    pub driver_opts: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipv4_address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipv6_address: String,
}

/// A service's `networks`: a list of names or a mapping of them.
pub fn service_networks<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, Option<ServiceNetwork>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = std::collections::BTreeMap<String, Option<ServiceNetwork>>;
        fn expecting(&self, f: Fmt) -> std::fmt::Result {
            f.write_str("a list of network names or a mapping of them")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = std::collections::BTreeMap::new();
            while let Some(name) = seq.next_element::<String>()? {
                out.insert(name, None);
            }
            Ok(out)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = std::collections::BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                let network = map.next_value::<Option<ServiceNetwork>>()?;
                out.insert(name, network);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(spec: &str) -> Vec<(u32, u32, String)> {
        parse_port_spec(spec)
            .unwrap()
            .into_iter()
            .map(|p| (p.published, p.target, p.protocol))
            .collect()
    }

    #[test]
    fn short_ports_expand_as_docker_expands_them() {
        assert_eq!(ports("80"), [(0, 80, "tcp".into())]);
        assert_eq!(ports("8080:80/UDP"), [(8080, 80, "udp".into())]);
        assert_eq!(ports(":5601"), [(0, 5601, "tcp".into())]);
        assert_eq!(
            ports("9000-9001:80-81"),
            [(9000, 80, "tcp".into()), (9001, 81, "tcp".into())]
        );
        assert_eq!(
            ports("80-82:80"),
            [
                (80, 80, "tcp".into()),
                (81, 80, "tcp".into()),
                (82, 80, "tcp".into())
            ]
        );
        // Keys sort as strings: 100/tcp before 99/tcp.
        assert_eq!(
            ports("99-100"),
            [(0, 100, "tcp".into()), (0, 99, "tcp".into())]
        );
        let with_ip = parse_port_spec("127.0.0.1:8080:80").unwrap();
        assert_eq!(with_ip[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            parse_port_spec("[::1]:8080:80").unwrap()[0]
                .host_ip
                .as_deref(),
            Some("::1")
        );
        for (bad, error) in [
            ("80-81:90-92", "invalid ranges specified"),
            ("70000", "invalid containerPort: 70000"),
            ("x:80", "invalid hostPort: x"),
            ("80/icmp", "invalid proto: icmp"),
            ("1.2.3:80:80", "invalid IP address"),
            ("80:", "no port specified"),
        ] {
            let got = parse_port_spec(bad).unwrap_err();
            assert!(got.contains(error), "{bad}: {got}");
        }
    }

    #[test]
    fn short_volumes_parse_as_docker_parses_them() {
        let v = parse_volume("data:/d:nocopy").unwrap();
        assert_eq!((v.kind.as_str(), v.source.as_str()), ("volume", "data"));
        assert!(v.volume.unwrap().nocopy);
        let v = parse_volume("/:/host:ro,rslave").unwrap();
        assert_eq!(v.kind, "bind");
        assert!(v.read_only);
        assert_eq!(v.bind.unwrap().propagation, "rslave");
        let v = parse_volume("/data").unwrap();
        assert_eq!((v.kind.as_str(), v.target.as_str()), ("volume", "/data"));
        assert_eq!(parse_volume("./x:/x:z").unwrap().kind, "bind");
        for (bad, error) in [
            (":/media", "empty section between colons"),
            ("data:/a:ro:x", "too many colons"),
            ("", "invalid empty volume spec"),
        ] {
            let got = parse_volume(bad).unwrap_err();
            assert!(got.contains(error), "{bad}: {got}");
        }
    }
}
