//! `x-*` extension keys: material for anchors, or notes for other tools.
//! They are taken out of a file before its typed reading and kept where
//! Docker's loader keeps them, so that `stack config` prints them where
//! `docker stack config` does: at the top level (the first file's), in
//! services (merged key by key), and in secrets, configs and external
//! networks and volumes.

use std::collections::BTreeMap;

use super::yaml::{Mapping, Value};

type Keys = BTreeMap<String, Value>;

#[derive(Debug, Default, Clone)]
pub struct Extras {
    pub top: Keys,
    pub services: BTreeMap<String, Keys>,
    /// By section (`networks`, `volumes`, `secrets`, `configs`), then name.
    pub objects: BTreeMap<&'static str, BTreeMap<String, Keys>>,
}

fn take(mapping: &mut Mapping) -> Keys {
    let keys: Vec<Value> = mapping
        .keys()
        .filter(|k| k.as_str().is_some_and(|k| k.starts_with("x-")))
        .cloned()
        .collect();
    keys.into_iter()
        .filter_map(|k| {
            let v = mapping.remove(&k)?;
            Some((k.as_str()?.to_owned(), v))
        })
        .collect()
}

impl Extras {
    /// Takes the `x-*` keys out of one file's document.
    pub fn take(document: &mut Value) -> Self {
        let mut extras = Self::default();
        let Some(top) = document.as_mapping_mut() else {
            return extras;
        };
        extras.top = take(top);
        for section in ["services", "networks", "volumes", "secrets", "configs"] {
            let Some(objects) = top.get_mut(section).and_then(Value::as_mapping_mut) else {
                continue;
            };
            let mut found = BTreeMap::new();
            for (name, object) in objects.iter_mut() {
                let (Some(name), Some(object)) = (name.as_str(), object.as_mapping_mut()) else {
                    continue;
                };
                let keys = take(object);
                if !keys.is_empty() {
                    found.insert(name.to_owned(), keys);
                }
            }
            if section == "services" {
                extras.services = found;
            } else {
                let section = match section {
                    "networks" => "networks",
                    "volumes" => "volumes",
                    "secrets" => "secrets",
                    _ => "configs",
                };
                extras.objects.insert(section, found);
            }
        }
        extras
    }

    /// A later file's extras over these: services' merge key by key, an
    /// object's are the later definition's (the object is replaced whole);
    /// the top level's stay the first file's, as in Docker.
    pub fn merge(&mut self, over: Self, redefined: &BTreeMap<&'static str, Vec<String>>) {
        for (service, keys) in over.services {
            self.services.entry(service).or_default().extend(keys);
        }
        for (section, names) in redefined {
            if let Some(objects) = self.objects.get_mut(section) {
                for name in names {
                    objects.remove(name);
                }
            }
        }
        for (section, objects) in over.objects {
            self.objects.entry(section).or_default().extend(objects);
        }
    }

    /// Puts the extras back into a printed document.
    pub fn restore(&self, document: &mut Value, keep: &dyn Fn(&str, &str, &str) -> bool) {
        let Some(top) = document.as_mapping_mut() else {
            return;
        };
        for (k, v) in &self.top {
            top.insert(Value::String(k.clone()), v.clone());
        }
        let sections = std::iter::once(("services", &self.services)).chain(
            self.objects
                .iter()
                .map(|(section, objects)| (*section, objects)),
        );
        for (section, objects) in sections {
            let Some(printed) = top.get_mut(section).and_then(Value::as_mapping_mut) else {
                continue;
            };
            for (name, keys) in objects {
                let Some(object) = printed.get_mut(name.as_str()) else {
                    continue;
                };
                for (k, v) in keys {
                    if section != "services" && !keep(section, name, k) {
                        continue;
                    }
                    if object.is_null() {
                        *object = Value::Mapping(Mapping::new());
                    }
                    if let Some(object) = object.as_mapping_mut() {
                        object.insert(Value::String(k.clone()), v.clone());
                    }
                }
            }
        }
    }
}
