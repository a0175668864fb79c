//! A service as Docker's loader holds it (`ServiceConfig` and the types
//! under it), with the Compose specification's keys Shoal honours beside
//! Docker's (`dns_opt`, `pids_limit`). Fields are in Docker's order, so
//! `stack config` prints them in the order Docker does.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::{
    entries::{self, FileReference, PortConfig, ServiceNetwork, ServiceVolume},
    forms::{self, Text},
    is_false,
    units::{Bytes, GoDuration},
};

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Ignored by a stack (images are not built); kept for `stack config`.
    #[serde(
        default,
        deserialize_with = "build",
        skip_serializing_if = "Option::is_none"
    )]
    pub build: Option<BTreeMap<String, yaml_serde::Value>>,
    #[serde(
        default,
        deserialize_with = "forms::strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cap_add: Vec<String>,
    #[serde(
        default,
        deserialize_with = "forms::strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cap_drop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroupns_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    #[serde(
        default,
        deserialize_with = "forms::command",
        skip_serializing_if = "Option::is_none"
    )]
    pub command: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "entries::file_references",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub configs: Vec<FileReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// Windows only: read, printed, refused when deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_spec: Option<BTreeMap<String, String>>,
    #[serde(
        default,
        deserialize_with = "depends_on",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    #[serde(
        default,
        deserialize_with = "forms::strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub devices: Vec<String>,
    #[serde(
        default,
        deserialize_with = "forms::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns: Vec<String>,
    /// The Compose specification's resolver options.
    #[serde(
        default,
        deserialize_with = "forms::strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns_opt: Vec<String>,
    #[serde(
        default,
        deserialize_with = "forms::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns_search: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    #[serde(
        default,
        deserialize_with = "forms::command",
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// `env_file` lines folded in once loaded; None: "from the caller's
    /// environment", printed as null.
    #[serde(
        default,
        deserialize_with = "forms::env_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub environment: BTreeMap<String, Option<String>>,
    #[serde(
        default,
        deserialize_with = "forms::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env_file: Vec<String>,
    #[serde(
        default,
        deserialize_with = "forms::strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub expose: Vec<String>,
    #[serde(
        default,
        deserialize_with = "forms::strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub external_links: Vec<String>,
    #[serde(
        default,
        deserialize_with = "forms::hosts",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub extra_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(
        default,
        deserialize_with = "forms::flag",
        skip_serializing_if = "Option::is_none"
    )]
    pub init: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    #[serde(
        default,
        deserialize_with = "forms::labels",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "forms::strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub links: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(
        default,
        deserialize_with = "entries::service_networks",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub networks: BTreeMap<String, Option<ServiceNetwork>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// The Compose specification's process limit (Docker's files put it
    /// in `deploy.resources.limits.pids`).
    #[serde(
        default,
        deserialize_with = "forms::int",
        skip_serializing_if = "Option::is_none"
    )]
    pub pids_limit: Option<i64>,
    #[serde(
        default,
        deserialize_with = "entries::ports",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<PortConfig>,
    #[serde(
        default,
        deserialize_with = "forms::plain_flag",
        skip_serializing_if = "is_false"
    )]
    pub privileged: bool,
    #[serde(
        default,
        deserialize_with = "forms::plain_flag",
        skip_serializing_if = "is_false"
    )]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    #[serde(
        default,
        deserialize_with = "entries::file_references",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub secrets: Vec<FileReference>,
    #[serde(
        default,
        deserialize_with = "forms::strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub security_opt: Vec<String>,
    #[serde(
        default,
        deserialize_with = "forms::text",
        skip_serializing_if = "Option::is_none"
    )]
    pub shm_size: Option<String>,
    #[serde(
        default,
        deserialize_with = "forms::plain_flag",
        skip_serializing_if = "is_false"
    )]
    pub stdin_open: bool,
    #[serde(
        default,
        deserialize_with = "forms::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_grace_period: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(
        default,
        deserialize_with = "forms::labels",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub sysctls: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "forms::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tmpfs: Vec<String>,
    #[serde(
        default,
        deserialize_with = "forms::plain_flag",
        skip_serializing_if = "is_false"
    )]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(
        default,
        deserialize_with = "forms::text",
        skip_serializing_if = "Option::is_none"
    )]
    pub user: Option<String>,
    #[serde(
        default,
        deserialize_with = "oom_score_adj",
        skip_serializing_if = "is_zero_i64"
    )]
    pub oom_score_adj: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<String>,
    #[serde(
        default,
        deserialize_with = "entries::volumes",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub volumes: Vec<ServiceVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

fn oom_score_adj<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(forms::int(d)?.unwrap_or(0))
}

/// `build: ./dir` or a mapping: printed as Docker prints it (`context:`),
/// never used.
fn build<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, yaml_serde::Value>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Build {
        Context(String),
        Long(BTreeMap<String, yaml_serde::Value>),
    }
    Ok(Option::<Build>::deserialize(d)?.map(|b| match b {
        Build::Context(context) => BTreeMap::from([("context".into(), context.into())]),
        Build::Long(map) => map,
    }))
}

/// A list of services, or the Compose specification's mapping of them.
fn depends_on<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum DependsOn {
        List(Vec<String>),
        Map(BTreeMap<String, yaml_serde::Value>),
    }
    Ok(match Option::<DependsOn>::deserialize(d)? {
        None => Vec::new(),
        Some(DependsOn::List(list)) => list,
        Some(DependsOn::Map(map)) => map.into_keys().collect(),
    })
}

/// `ulimits.NAME`: one number for both limits, or `{soft, hard}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ulimit {
    pub single: i64,
    pub soft: i64,
    pub hard: i64,
}

impl Ulimit {
    /// (soft, hard) as the engine takes them.
    pub fn limits(&self) -> (i64, i64) {
        if self.single != 0 {
            (self.single, self.single)
        } else {
            (self.soft, self.hard)
        }
    }
}

impl Serialize for Ulimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.single != 0 {
            return s.serialize_i64(self.single);
        }
        // Docker leaves zero limits out (`core: 0` prints as `{}`).
        #[derive(Serialize)]
        struct Pair {
            #[serde(skip_serializing_if = "is_zero_i64")]
            soft: i64,
            #[serde(skip_serializing_if = "is_zero_i64")]
            hard: i64,
        }
        Pair {
            soft: self.soft,
            hard: self.hard,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Ulimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Ulimit;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a mapping with soft and hard")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ulimit, E> {
                let single = forms::int(de::value::U64Deserializer::<E>::new(v))?.unwrap_or(0);
                Ok(Ulimit {
                    single,
                    ..Default::default()
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ulimit, E> {
                Ok(Ulimit {
                    single: v,
                    ..Default::default()
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ulimit, E> {
                Err(E::custom(format!(
                    "expected a whole number (or soft and hard), found {v:?}"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ulimit, E> {
                let single = forms::int(de::value::StrDeserializer::<E>::new(v))?.unwrap_or(0);
                self.visit_i64(single)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Ulimit, A::Error> {
                // Docker's schema wants both; what Docker prints for
                // `core: 0` (`{}`) reads back as zeros here.
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Pair {
                    #[serde(default, deserialize_with = "forms::int")]
                    soft: Option<i64>,
                    #[serde(default, deserialize_with = "forms::int")]
                    hard: Option<i64>,
                }
                let pair = Pair::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Ulimit {
                    single: 0,
                    soft: pair.soft.unwrap_or(0),
                    hard: pair.hard.unwrap_or(0),
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    #[serde(
        default,
        deserialize_with = "forms::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    #[serde(
        default,
        deserialize_with = "health_test",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub test: Vec<String>,
    #[serde(
        default,
        deserialize_with = "forms::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<GoDuration>,
    #[serde(
        default,
        deserialize_with = "forms::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<GoDuration>,
    #[serde(
        default,
        deserialize_with = "forms::uint",
        skip_serializing_if = "Option::is_none"
    )]
    pub retries: Option<u64>,
    #[serde(
        default,
        deserialize_with = "forms::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_period: Option<GoDuration>,
    #[serde(
        default,
        deserialize_with = "forms::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_interval: Option<GoDuration>,
    #[serde(
        default,
        deserialize_with = "forms::plain_flag",
        skip_serializing_if = "is_false"
    )]
    pub disable: bool,
}

/// A string is run by the shell (`CMD-SHELL`); a list is as written.
fn health_test<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Test {
        Shell(String),
        List(Vec<Text>),
    }
    Ok(match Option::<Test>::deserialize(d)? {
        None => Vec::new(),
        Some(Test::Shell(s)) => vec!["CMD-SHELL".into(), s],
        Some(Test::List(items)) => items.into_iter().map(|t| t.0).collect(),
    })
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    #[serde(
        default,
        deserialize_with = "forms::uint",
        skip_serializing_if = "Option::is_none"
    )]
    pub replicas: Option<u64>,
    #[serde(
        default,
        deserialize_with = "forms::labels",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint_mode: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    #[serde(
        default,
        deserialize_with = "forms::uint",
        skip_serializing_if = "Option::is_none"
    )]
    pub parallelism: Option<u64>,
    #[serde(
        default,
        deserialize_with = "plain_duration",
        skip_serializing_if = "GoDuration::is_zero"
    )]
    pub delay: GoDuration,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failure_action: String,
    #[serde(
        default,
        deserialize_with = "plain_duration",
        skip_serializing_if = "GoDuration::is_zero"
    )]
    pub monitor: GoDuration,
    #[serde(
        default,
        deserialize_with = "plain_float",
        skip_serializing_if = "is_zero_f64"
    )]
    pub max_failure_ratio: f64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub order: String,
}

fn plain_duration<'de, D: Deserializer<'de>>(d: D) -> Result<GoDuration, D::Error> {
    Ok(forms::duration(d)?.unwrap_or_default())
}

fn plain_float<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(forms::float(d)?.unwrap_or(0.0))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Reservations>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.limits.is_none() && self.reservations.is_none()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(
        default,
        deserialize_with = "cpus",
        skip_serializing_if = "String::is_empty"
    )]
    pub cpus: String,
    #[serde(default, skip_serializing_if = "Bytes::is_zero")]
    pub memory: Bytes,
    #[serde(
        default,
        deserialize_with = "oom_score_adj",
        skip_serializing_if = "is_zero_i64"
    )]
    pub pids: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservations {
    #[serde(
        default,
        deserialize_with = "cpus",
        skip_serializing_if = "String::is_empty"
    )]
    pub cpus: String,
    #[serde(default, skip_serializing_if = "Bytes::is_zero")]
    pub memory: Bytes,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generic_resources: Vec<GenericResource>,
}

fn cpus<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(forms::text(d)?.unwrap_or_default())
}

/// `{discrete_resource_spec: {kind: gpu, value: 2}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discrete_resource_spec: Option<DiscreteResource>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscreteResource {
    #[serde(default)]
    pub kind: String,
    #[serde(default, deserialize_with = "oom_score_adj")]
    pub value: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub condition: String,
    #[serde(
        default,
        deserialize_with = "forms::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay: Option<GoDuration>,
    #[serde(
        default,
        deserialize_with = "forms::uint",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_attempts: Option<u64>,
    #[serde(
        default,
        deserialize_with = "forms::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(
        default,
        deserialize_with = "forms::strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<Preference>,
    #[serde(
        default,
        deserialize_with = "max_replicas",
        skip_serializing_if = "is_zero_u64"
    )]
    pub max_replicas_per_node: u64,
}

impl Placement {
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
            && self.preferences.is_empty()
            && self.max_replicas_per_node == 0
    }
}

fn max_replicas<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(forms::uint(d)?.unwrap_or(0))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preference {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub spread: String,
}
