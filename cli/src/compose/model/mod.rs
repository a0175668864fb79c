//! The Compose file as Docker's stack loader holds it (`cli/compose/types`):
//! every short form already read into its long one, so that merging,
//! printing (`stack config`) and converting see one shape. Unknown keys are
//! errors (`deny_unknown_fields`), as Docker's schema makes them; `x-*`
//! keys are taken out before these types see a file (see [`super::extras`]).
//! Serialising a value gives what `docker stack config` prints for it:
//! empty and zero fields left out, sizes as strings of digits, durations as
//! Go prints them.

pub mod entries;
pub mod forms;
mod service;
pub mod units;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

pub use entries::{FileReference, PortConfig, ServiceNetwork, ServiceVolume};
pub use service::*;

fn is_false(b: &bool) -> bool {
    !*b
}

/// A whole compose file, or several merged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeFile {
    /// Informative only; printed as Docker prints it (its newest schema's
    /// number when a file gives none).
    #[serde(default, deserialize_with = "version")]
    pub version: String,
    /// The Compose specification's project name: a stack's name comes from
    /// the command line, so it is read and left out.
    #[serde(
        default,
        rename = "name",
        skip_serializing,
        deserialize_with = "forms::text"
    )]
    pub _name: Option<String>,
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(
        default,
        deserialize_with = "objects",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub networks: BTreeMap<String, Network>,
    #[serde(
        default,
        deserialize_with = "objects",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, Volume>,
    #[serde(
        default,
        deserialize_with = "objects",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub secrets: BTreeMap<String, FileObject>,
    #[serde(
        default,
        deserialize_with = "objects",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub configs: BTreeMap<String, FileObject>,
}

/// The newest schema Docker 28's loader knows: what it prints for a file
/// without `version`.
pub const DEFAULT_VERSION: &str = "3.13";

fn version<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(forms::text(d)?.unwrap_or_default())
}

/// A mapping of named objects whose value may be left empty (`data:`).
fn objects<'de, D, T>(d: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<BTreeMap<String, Option<T>>>::deserialize(d)?
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// `external: true`, or the older `external: {name: N}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct External {
    pub external: bool,
    /// The deprecated form's name; the loader moves it to the object's
    /// `name`, as Docker's does.
    pub name: String,
}

impl External {
    pub fn is_unset(&self) -> bool {
        !self.external && self.name.is_empty()
    }
}

impl Serialize for External {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.name.is_empty() {
            return s.serialize_bool(self.external);
        }
        let mut map = BTreeMap::new();
        map.insert("name", &self.name);
        map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for External {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = External;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or a mapping with name")
            }
            fn visit_unit<E: de::Error>(self) -> Result<External, E> {
                Ok(External::default())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<External, E> {
                Ok(External {
                    external: v,
                    name: String::new(),
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<External, E> {
                let flag = forms::flag(de::value::StrDeserializer::<E>::new(v))?;
                self.visit_bool(flag.unwrap_or(false))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<External, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Named {
                    #[serde(default)]
                    name: String,
                }
                let named = Named::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(External {
                    external: true,
                    name: named.name,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A top-level network (Docker's `NetworkConfig`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    #[serde(
        default,
        deserialize_with = "forms::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Ipam::is_empty")]
    pub ipam: Ipam,
    #[serde(default, skip_serializing_if = "External::is_unset")]
    pub external: External,
    #[serde(
        default,
        deserialize_with = "forms::plain_flag",
        skip_serializing_if = "is_false"
    )]
    pub internal: bool,
    #[serde(
        default,
        deserialize_with = "forms::plain_flag",
        skip_serializing_if = "is_false"
    )]
    pub attachable: bool,
    #[serde(
        default,
        deserialize_with = "forms::labels",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipam {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<IpamPool>,
}

impl Ipam {
    fn is_empty(&self) -> bool {
        self.driver.is_empty() && self.config.is_empty()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamPool {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    /// The Compose specification's gateway (Docker's v3 files have none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
}

/// A top-level volume (Docker's `VolumeConfig`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    #[serde(
        default,
        deserialize_with = "forms::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "External::is_unset")]
    pub external: External,
    #[serde(
        default,
        deserialize_with = "forms::labels",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
}

/// A top-level secret or config (Docker's `FileObjectConfig`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileObject {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Absolute once loaded (relative to the first file's directory).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file: String,
    #[serde(default, skip_serializing_if = "External::is_unset")]
    pub external: External,
    #[serde(
        default,
        deserialize_with = "forms::labels",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    #[serde(
        default,
        deserialize_with = "forms::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub driver_opts: BTreeMap<String, String>,
    /// `golang`: the data is a template expanded for each task.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub template_driver: String,
}
