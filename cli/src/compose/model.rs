//! The Compose file as Shoal reads it, typed. Unknown keys are errors
//! (`deny_unknown_fields`); keys that mean nothing in a cluster are taken
//! out with a warning before these types see the file (see `IGNORED`).
//! Scalars that Compose lets users write either way (`replicas: "2"`,
//! `SERVICE_PORTS: 80`, `mode: "0400"`) are accepted either way.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, de};

/// Keys of a service that `docker stack deploy` ignores: warned about and
/// dropped, so files written for `docker compose` deploy unchanged.
pub const IGNORED_SERVICE_KEYS: &[&str] = &[
    "build",
    "cap_add",
    "cap_drop",
    "cgroup_parent",
    "container_name",
    "depends_on",
    "devices",
    "external_links",
    "links",
    "network_mode",
    "pull_policy",
    "profiles",
    "restart",
    "security_opt",
    "userns_mode",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeFile {
    /// Optional and informative only, as in the Compose specification.
    #[serde(default, rename = "version")]
    pub _version: Option<Text>,
    /// The Compose project name; a stack's name comes from the command.
    #[serde(default, rename = "name")]
    pub _name: Option<String>,
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub networks: BTreeMap<String, Option<Network>>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<Volume>>,
    #[serde(default)]
    pub configs: BTreeMap<String, FileObject>,
    #[serde(default)]
    pub secrets: BTreeMap<String, FileObject>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub image: Option<String>,
    pub command: Option<Command>,
    pub entrypoint: Option<Command>,
    pub environment: Option<KeyValues>,
    pub env_file: Option<OneOrMany>,
    pub healthcheck: Option<Healthcheck>,
    pub hostname: Option<String>,
    pub user: Option<Text>,
    pub working_dir: Option<String>,
    pub stop_grace_period: Option<String>,
    pub stop_signal: Option<String>,
    pub labels: Option<KeyValues>,
    #[serde(default)]
    pub ports: Vec<Port>,
    pub networks: Option<ServiceNetworks>,
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    pub tmpfs: Option<OneOrMany>,
    #[serde(default)]
    pub configs: Vec<FileReference>,
    #[serde(default)]
    pub secrets: Vec<FileReference>,
    pub deploy: Option<Deploy>,
}

/// A string, or a number or boolean read as one.
#[derive(Debug, Clone, PartialEq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A whole number, written as one or as a string (`"3"`, `${REPLICAS}`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int(pub u64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                u64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int, E> {
                v.trim()
                    .parse()
                    .map(Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A file mode: `0440` (octal, as Compose files write it) or a number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a file mode such as 0440")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Mode, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .map(Mode)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Mode, E> {
                Err(E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Mode, E> {
                let digits = v.strip_prefix("0o").unwrap_or(v);
                u32::from_str_radix(digits, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .map(Mode)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A yes/no, written as one or as `"true"`/`"false"`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Flag, E> {
                match v {
                    "true" | "True" | "TRUE" => Ok(Flag(true)),
                    "false" | "False" | "FALSE" => Ok(Flag(false)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum Command {
    Shell(String),
    Exec(Vec<Text>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// `environment` and `labels`: a list of `KEY=VALUE` or a mapping (a
/// value left empty in a mapping: taken from the caller's environment for
/// `environment`, empty for labels).
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a list of KEY=VALUE strings or a mapping")]
pub enum KeyValues {
    List(Vec<String>),
    Map(BTreeMap<String, Option<Text>>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    pub test: Option<Command>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<Int>,
    pub start_period: Option<String>,
    pub disable: Option<Flag>,
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a port (\"8080:80\", 80) or a mapping with target"
)]
pub enum Port {
    Short(Text),
    Long(LongPort),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongPort {
    pub target: Int,
    pub published: Option<Text>,
    pub protocol: Option<String>,
    pub mode: Option<String>,
    pub name: Option<String>,
    pub host_ip: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a list of network names or a mapping of them")]
pub enum ServiceNetworks {
    List(Vec<String>),
    Map(BTreeMap<String, Option<ServiceNetwork>>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetwork {
    #[serde(default)]
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a volume (\"data:/path\") or a mapping with type and target"
)]
pub enum VolumeMount {
    Short(String),
    Long(LongVolume),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongVolume {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: Option<String>,
    pub target: String,
    pub read_only: Option<Flag>,
    pub bind: Option<BindOptions>,
    pub volume: Option<VolumeOptions>,
    pub tmpfs: Option<TmpfsOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindOptions {
    pub propagation: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeOptions {
    pub nocopy: Option<Flag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmpfsOptions {
    pub size: Option<Text>,
    pub mode: Option<Mode>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a name or a mapping with source")]
pub enum FileReference {
    Short(String),
    Long(LongFileReference),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongFileReference {
    pub source: String,
    pub target: Option<String>,
    pub uid: Option<Text>,
    pub gid: Option<Text>,
    pub mode: Option<Mode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub mode: Option<String>,
    pub replicas: Option<Int>,
    pub placement: Option<Placement>,
    pub resources: Option<Resources>,
    pub restart_policy: Option<RestartPolicy>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    pub endpoint_mode: Option<String>,
    pub labels: Option<KeyValues>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub preferences: Vec<Preference>,
    pub max_replicas_per_node: Option<Int>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preference {
    pub spread: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub limits: Option<ResourceAmounts>,
    pub reservations: Option<ResourceAmounts>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceAmounts {
    pub cpus: Option<Text>,
    pub memory: Option<Text>,
    pub pids: Option<Int>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    pub condition: Option<String>,
    pub delay: Option<String>,
    pub max_attempts: Option<Int>,
    pub window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    pub parallelism: Option<Int>,
    pub delay: Option<String>,
    pub failure_action: Option<String>,
    pub monitor: Option<String>,
    pub max_failure_ratio: Option<Text>,
    pub order: Option<String>,
}

/// `external: true` or the older `external: {name: N}`.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "true, false or a mapping with name")]
pub enum External {
    Flag(Flag),
    Named { name: String },
}

impl External {
    pub fn is_external(&self) -> bool {
        match self {
            Self::Flag(f) => f.0,
            Self::Named { .. } => true,
        }
    }
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Named { name } => Some(name),
            Self::Flag(_) => None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub driver: Option<String>,
    #[serde(default)]
    pub driver_opts: BTreeMap<String, Text>,
    pub external: Option<External>,
    pub name: Option<String>,
    pub attachable: Option<Flag>,
    pub internal: Option<Flag>,
    pub ipam: Option<Ipam>,
    pub labels: Option<KeyValues>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipam {
    pub driver: Option<String>,
    #[serde(default)]
    pub config: Vec<IpamConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamConfig {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub driver: Option<String>,
    #[serde(default)]
    pub driver_opts: BTreeMap<String, Text>,
    pub external: Option<External>,
    pub name: Option<String>,
}

/// A config or a secret: from a file, or one that already exists.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileObject {
    pub file: Option<String>,
    pub external: Option<External>,
    pub name: Option<String>,
    pub labels: Option<KeyValues>,
}
