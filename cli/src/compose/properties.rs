//! Service keys a stack does not use, in Docker's three lists
//! (`cli/compose/types`): unsupported ones and deprecated ones are warned
//! about with their place and left out of the services, forbidden ones
//! refuse the file. The wording is Docker's, so that a warning reads the
//! same whichever tool printed it.

use super::{
    Source,
    locate::{self, Seg},
    yaml::Value,
};

/// Docker 28's unsupported options, less the ones Shoal honours:
/// `restart` (the restart policy when `deploy.restart_policy` is absent,
/// as Docker itself does despite listing it) and `domainname` (set on the
/// container). `isolation` and `credential_spec` are Windows-only.
pub const UNSUPPORTED: &[&str] = &[
    "build",
    "cgroupns_mode",
    "cgroup_parent",
    "credential_spec",
    "devices",
    "external_links",
    "ipc",
    "isolation",
    "links",
    "mac_address",
    "network_mode",
    "pid",
    "privileged",
    "security_opt",
    "shm_size",
    "userns_mode",
];

/// Keys of the Compose specification that Docker's v3 schema refuses and
/// that mean nothing to a stack: Shoal warns and drops them, so that files
/// written for `docker compose` deploy.
pub const COMPOSE_ONLY: &[&str] = &["pull_policy", "profiles", "platform", "scale"];

pub const DEPRECATED: &[(&str, &str)] = &[
    (
        "container_name",
        "Setting the container name is not supported.",
    ),
    (
        "expose",
        "Exposing ports is unnecessary - services on the same network can access each other's containers on any port.",
    ),
];

pub const FORBIDDEN: &[(&str, &str)] = &[
    ("extends", "Support for `extends` is not implemented yet."),
    (
        "volume_driver",
        "Instead of setting the volume driver on the service, define a volume using the top-level `volumes` option and specify the driver there.",
    ),
    (
        "volumes_from",
        "To share a volume between services, define it using the top-level `volumes` option and reference it from each service that shares it using the service-level `volumes` option.",
    ),
    ("cpu_quota", "Set resource limits using deploy.resources"),
    ("cpu_shares", "Set resource limits using deploy.resources"),
    ("cpuset", "Set resource limits using deploy.resources"),
    ("mem_limit", "Set resource limits using deploy.resources"),
    (
        "memswap_limit",
        "Set resource limits using deploy.resources",
    ),
];

/// `file:line:column: ` of `path` in `source`, at its key.
pub fn place(source: &Source, path: &[Seg]) -> String {
    let found = locate::find(&source.text, path);
    format!(
        "{}:{}:{}",
        source.name.display(),
        found.line,
        found.key_column
    )
}

fn service_paths(value: &Value) -> impl Iterator<Item = (String, &Value)> {
    value
        .get("services")
        .and_then(Value::as_mapping)
        .into_iter()
        .flat_map(|services| services.iter())
        .filter_map(|(name, service)| Some((name.as_str()?.to_owned(), service)))
}

/// The first forbidden key of any service: Docker refuses the file.
pub fn forbidden(value: &Value) -> Option<(Vec<Seg>, String)> {
    for (name, service) in service_paths(value) {
        for (key, why) in FORBIDDEN {
            if service.get(*key).is_some() {
                return Some((
                    vec![
                        Seg::Key("services".into()),
                        Seg::Key(name.clone()),
                        Seg::Key((*key).into()),
                    ],
                    format!("Compose file contains unsupported options: {key}: {why}"),
                ));
            }
        }
    }
    None
}

/// Warnings for the unsupported and deprecated keys of `value`'s services;
/// the Compose-only keys are taken out.
pub fn warn(value: &mut Value, source: &Source, warnings: &mut Vec<String>) {
    let Some(services) = value.get_mut("services").and_then(Value::as_mapping_mut) else {
        return;
    };
    for (name, service) in services.iter_mut() {
        let (Some(name), Some(service)) = (name.as_str(), service.as_mapping_mut()) else {
            continue;
        };
        let at = |key: &str| {
            let path = [
                Seg::Key("services".into()),
                Seg::Key(name.to_owned()),
                Seg::Key(key.to_owned()),
            ];
            format!("{}: {}", place(source, &path), locate::display(&path))
        };
        for key in UNSUPPORTED {
            if service.contains_key(*key) {
                warnings.push(format!("{}: Ignoring unsupported options: {key}", at(key)));
            }
        }
        for key in COMPOSE_ONLY {
            if service.remove(*key).is_some() {
                warnings.push(format!("{}: Ignoring unsupported options: {key}", at(key)));
            }
        }
        for (key, why) in DEPRECATED {
            if service.contains_key(*key) {
                warnings.push(format!(
                    "{}: Ignoring deprecated options: {key}: {why}",
                    at(key)
                ));
            }
        }
    }
}
