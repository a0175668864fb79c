//! A loaded compose project as the Shoal objects of one stack: networks,
//! secrets, configs and services named `STACK_NAME` and labelled with the
//! stack, exactly as `docker stack deploy` names and labels them.

use std::collections::{BTreeMap, BTreeSet};

use shoal_api::pb::{
    ConfigReference, ContainerSpec, EndpointSpec, FileTarget, Mount, NetworkAttachmentConfig,
    NetworkSpec, PublishMode, SecretReference, ServiceMode, ServiceSpec, TaskSpec,
};

use super::{ComposeError, Project, index, key, locate::Seg, model};
use crate::commands::service_flags as flags;

mod command;
mod deploy;
mod environment;
mod ports;
mod volumes;

/// The label every object of a stack carries (Docker's name for it).
pub const STACK_LABEL: &str = "com.docker.stack.namespace";

/// A secret or config the stack needs.
#[derive(Debug, Clone, PartialEq)]
pub struct FileObject {
    /// The name in the cluster.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// None: external, it must already exist.
    pub data: Option<Vec<u8>>,
    /// Where it was declared, for errors found when deploying.
    pub declared: String,
}

#[derive(Debug, Default)]
pub struct Stack {
    /// Networks the stack creates.
    pub networks: Vec<NetworkSpec>,
    /// Networks that must exist already.
    pub external_networks: Vec<String>,
    pub secrets: Vec<FileObject>,
    pub configs: Vec<FileObject>,
    pub services: Vec<ServiceSpec>,
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The stack `name` of `project`; `lookup` fills variables left empty in
/// `environment` mappings (`- FOO`), as Compose does.
pub fn convert(project: &Project, name: &str, lookup: Lookup) -> Result<Stack, ComposeError> {
    validate_stack_name(name).map_err(|m| ComposeError {
        file: Default::default(),
        line: 0,
        column: 0,
        path: String::new(),
        message: m,
    })?;
    let file = &project.file;
    if file.services.is_empty() {
        return Err(project.error_at(&[key("services")], "the stack has no services"));
    }
    let scoped = |key: &str| format!("{name}_{key}");
    let stack_labels = |extra: Option<&model::KeyValues>,
                        at: &[Seg]|
     -> Result<BTreeMap<String, String>, ComposeError> {
        let mut labels = labels(extra, project, at)?;
        labels.insert(STACK_LABEL.into(), name.into());
        Ok(labels)
    };
    let mut stack = Stack::default();

    // Networks: a service without `networks` joins the stack's `default`.
    let mut used_networks = BTreeSet::new();
    for (service_name, service) in &file.services {
        match &service.networks {
            None => {
                used_networks.insert("default".to_owned());
            }
            Some(model::ServiceNetworks::List(names)) => {
                for (i, n) in names.iter().enumerate() {
                    if !file.networks.contains_key(n) && n != "default" {
                        return Err(project.error_at(
                            &[
                                key("services"),
                                key(service_name),
                                key("networks"),
                                index(i),
                            ],
                            format!("network {n:?} is not declared in the top-level networks"),
                        ));
                    }
                    used_networks.insert(n.clone());
                }
            }
            Some(model::ServiceNetworks::Map(map)) => {
                for n in map.keys() {
                    if !file.networks.contains_key(n) && n != "default" {
                        return Err(project.error_at(
                            &[key("services"), key(service_name), key("networks"), key(n)],
                            format!("network {n:?} is not declared in the top-level networks"),
                        ));
                    }
                    used_networks.insert(n.clone());
                }
            }
        }
    }
    let mut network_names = BTreeMap::new();
    for n in &used_networks {
        let at = [key("networks"), key(n)];
        let declared = file.networks.get(n).and_then(Option::as_ref);
        let default = model::Network::default();
        let network = declared.unwrap_or(&default);
        if let Some(external) = network.external.as_ref().filter(|e| e.is_external()) {
            let cluster_name = external
                .name()
                .or(network.name.as_deref())
                .unwrap_or(n)
                .to_owned();
            stack.external_networks.push(cluster_name.clone());
            network_names.insert(n.clone(), cluster_name);
            continue;
        }
        let driver = network.driver.as_deref().unwrap_or("overlay");
        if driver != "overlay" {
            return Err(project.error_at(
                &[key("networks"), key(n), key("driver")],
                format!("driver {driver:?}: a stack's networks are overlays (driver: overlay)"),
            ));
        }
        if let Some(opt) = network.driver_opts.keys().next() {
            return Err(project.error_at(
                &[key("networks"), key(n), key("driver_opts"), key(opt)],
                format!("driver option {opt:?} is not supported by Shoal's overlay"),
            ));
        }
        let cluster_name = network.name.clone().unwrap_or_else(|| scoped(n));
        let (mut subnet, mut gateway) = (String::new(), String::new());
        if let Some(ipam) = &network.ipam {
            if let Some(driver) = ipam.driver.as_deref().filter(|d| *d != "default") {
                return Err(project.error_at(
                    &[key("networks"), key(n), key("ipam"), key("driver")],
                    format!("IPAM driver {driver:?}: only the default one is supported"),
                ));
            }
            if ipam.config.len() > 1 {
                return Err(project.error_at(
                    &[
                        key("networks"),
                        key(n),
                        key("ipam"),
                        key("config"),
                        index(1),
                    ],
                    "one subnet per network: Shoal's overlays are IPv4 with a single subnet",
                ));
            }
            if let Some(config) = ipam.config.first() {
                subnet = config.subnet.clone().unwrap_or_default();
                gateway = config.gateway.clone().unwrap_or_default();
            }
        }
        stack.networks.push(NetworkSpec {
            name: cluster_name.clone(),
            labels: stack_labels(
                network.labels.as_ref(),
                &[at[0].clone(), at[1].clone(), key("labels")],
            )?,
            driver: "overlay".into(),
            internal: network.internal.is_some_and(|f| f.0),
            attachable: network.attachable.is_some_and(|f| f.0),
            ingress: false,
            subnet,
            gateway,
            options: Default::default(),
        });
        network_names.insert(n.clone(), cluster_name);
    }

    // Secrets and configs that some service uses (Docker creates only those).
    let mut secret_names = BTreeMap::new();
    let mut config_names = BTreeMap::new();
    for (kind, declared, out, names) in [
        (
            "secrets",
            &file.secrets,
            &mut stack.secrets,
            &mut secret_names,
        ),
        (
            "configs",
            &file.configs,
            &mut stack.configs,
            &mut config_names,
        ),
    ] {
        let used: BTreeSet<&str> = file
            .services
            .values()
            .flat_map(|s| {
                if kind == "secrets" {
                    &s.secrets
                } else {
                    &s.configs
                }
            })
            .map(|r| match r {
                model::FileReference::Short(s) => s.as_str(),
                model::FileReference::Long(l) => l.source.as_str(),
            })
            .collect();
        for (object_name, object) in declared {
            if !used.contains(object_name.as_str()) {
                continue;
            }
            let at = [key(kind), key(object_name)];
            let external = object.external.as_ref().filter(|e| e.is_external());
            let (cluster_name, data) = match (external, &object.file) {
                (Some(e), _) => (
                    e.name()
                        .or(object.name.as_deref())
                        .unwrap_or(object_name)
                        .to_owned(),
                    None,
                ),
                (None, Some(path)) => {
                    let full = project.dir.join(path);
                    let data = std::fs::read(&full).map_err(|e| {
                        project.error_at(
                            &[at[0].clone(), at[1].clone(), key("file")],
                            format!("cannot read {}: {e}", full.display()),
                        )
                    })?;
                    (
                        object.name.clone().unwrap_or_else(|| scoped(object_name)),
                        Some(data),
                    )
                }
                (None, None) => {
                    return Err(project.error_at(
                        &at,
                        "needs `file:` (its content) or `external: true` (one that exists)",
                    ));
                }
            };
            out.push(FileObject {
                name: cluster_name.clone(),
                labels: stack_labels(
                    object.labels.as_ref(),
                    &[at[0].clone(), at[1].clone(), key("labels")],
                )?,
                data,
                declared: format!("{kind}.{object_name}"),
            });
            names.insert(object_name.clone(), cluster_name);
        }
    }

    for (service_name, service) in &file.services {
        let at = |rest: &[Seg]| -> Vec<Seg> {
            let mut path = vec![key("services"), key(service_name)];
            path.extend_from_slice(rest);
            path
        };
        let spec = service_spec(
            project,
            name,
            service_name,
            service,
            &network_names,
            &secret_names,
            &config_names,
            lookup,
            &at,
        )?;
        stack.services.push(spec);
    }
    Ok(stack)
}

/// Stack names become prefixes of object names: Docker's rules.
fn validate_stack_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid stack name {name:?}: letters, digits, '-', '_' and '.', starting with a letter or digit"
        ))
    }
}

fn labels(
    values: Option<&model::KeyValues>,
    project: &Project,
    at: &[Seg],
) -> Result<BTreeMap<String, String>, ComposeError> {
    let mut out = BTreeMap::new();
    match values {
        None => {}
        Some(model::KeyValues::Map(map)) => {
            for (k, v) in map {
                out.insert(
                    k.clone(),
                    v.as_ref().map(|t| t.0.clone()).unwrap_or_default(),
                );
            }
        }
        Some(model::KeyValues::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                if k.is_empty() {
                    let mut path = at.to_vec();
                    path.push(index(i));
                    return Err(project.error_at(&path, format!("label {item:?} has no key")));
                }
                out.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn service_spec(
    project: &Project,
    stack: &str,
    service_name: &str,
    service: &model::Service,
    network_names: &BTreeMap<String, String>,
    secret_names: &BTreeMap<String, String>,
    config_names: &BTreeMap<String, String>,
    lookup: Lookup,
    at: &dyn Fn(&[Seg]) -> Vec<Seg>,
) -> Result<ServiceSpec, ComposeError> {
    let err = |rest: &[Seg], message: String| project.error_at(&at(rest), message);
    let image = service
        .image
        .clone()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| {
            err(
                &[],
                "image is required: a stack runs images, it does not build them".into(),
            )
        })?;
    let deploy = service.deploy.as_ref();
    let mode = match deploy
        .and_then(|d| d.mode.as_deref())
        .unwrap_or("replicated")
    {
        "replicated" => ServiceMode::Replicated,
        "global" => ServiceMode::Global,
        other => {
            return Err(err(
                &[key("deploy"), key("mode")],
                format!("mode {other:?}: expected replicated or global"),
            ));
        }
    };
    let replicas = deploy.and_then(|d| d.replicas).map(|r| r.0);
    if mode == ServiceMode::Global && replicas.is_some() {
        return Err(err(
            &[key("deploy"), key("replicas")],
            "replicas can only be used with mode: replicated".into(),
        ));
    }

    let mut container_labels = labels(service.labels.as_ref(), project, &at(&[key("labels")]))?;
    container_labels.insert(STACK_LABEL.into(), stack.into());
    let mut service_labels = labels(
        deploy.and_then(|d| d.labels.as_ref()),
        project,
        &at(&[key("deploy"), key("labels")]),
    )?;
    service_labels.insert(STACK_LABEL.into(), stack.into());

    let mut container = ContainerSpec {
        image,
        labels: container_labels,
        hostname: service.hostname.clone().unwrap_or_default(),
        user: service
            .user
            .as_ref()
            .map(|u| u.0.clone())
            .unwrap_or_default(),
        dir: service.working_dir.clone().unwrap_or_default(),
        stop_signal: service.stop_signal.clone().unwrap_or_default(),
        ..Default::default()
    };
    if let Some(entrypoint) = &service.entrypoint {
        container.command = command::words(entrypoint).map_err(|m| err(&[key("entrypoint")], m))?;
    }
    if let Some(command) = &service.command {
        container.args = command::words(command).map_err(|m| err(&[key("command")], m))?;
    }
    if let Some(grace) = &service.stop_grace_period {
        container.stop_grace_period_ms =
            Some(ms(grace).map_err(|m| err(&[key("stop_grace_period")], m))?);
    }
    container.env = environment::environment(project, service, lookup, at)?;
    if let Some(health) = &service.healthcheck {
        container.healthcheck = Some(
            command::healthcheck(health).map_err(|(k, m)| err(&[key("healthcheck"), key(k)], m))?,
        );
    }

    for (i, volume) in service.volumes.iter().enumerate() {
        let mount = match volume {
            model::VolumeMount::Short(text) => volumes::short_volume(project, stack, text),
            model::VolumeMount::Long(long) => volumes::long_volume(project, stack, long),
        }
        .map_err(|m| err(&[key("volumes"), index(i)], m))?;
        container.mounts.push(mount);
    }
    for (i, tmpfs) in service.tmpfs.iter().flat_map(|t| t.to_vec()).enumerate() {
        let (target, options) = tmpfs.split_once(':').unwrap_or((&tmpfs, ""));
        let mut mount = Mount {
            r#type: "tmpfs".into(),
            target: target.to_owned(),
            ..Default::default()
        };
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let (k, v) = option.split_once('=').unwrap_or((option, ""));
            let k = if k == "size" {
                "tmpfs-size"
            } else if k == "mode" {
                "tmpfs-mode"
            } else {
                return Err(err(
                    &[key("tmpfs"), index(i)],
                    format!("tmpfs option {k:?}: expected size or mode"),
                ));
            };
            mount.options.insert(k.into(), v.into());
        }
        container.mounts.push(mount);
    }

    for (kind, refs, names) in [
        ("secrets", &service.secrets, secret_names),
        ("configs", &service.configs, config_names),
    ] {
        for (i, reference) in refs.iter().enumerate() {
            let (source, target, uid, gid, mode) = match reference {
                model::FileReference::Short(s) => (s.clone(), None, None, None, None),
                model::FileReference::Long(l) => (
                    l.source.clone(),
                    l.target.clone(),
                    l.uid.as_ref().map(|t| t.0.clone()),
                    l.gid.as_ref().map(|t| t.0.clone()),
                    l.mode.map(|m| m.0),
                ),
            };
            let Some(cluster_name) = names.get(&source) else {
                return Err(err(
                    &[key(kind), index(i)],
                    format!("{kind} {source:?} is not declared in the top-level {kind}"),
                ));
            };
            let file = FileTarget {
                name: match (kind, target) {
                    (_, Some(t)) => t,
                    ("secrets", None) => source.clone(),
                    (_, None) => format!("/{source}"),
                },
                uid: uid.unwrap_or_else(|| "0".into()),
                gid: gid.unwrap_or_else(|| "0".into()),
                mode: mode.unwrap_or(0o444),
            };
            if kind == "secrets" {
                container.secrets.push(SecretReference {
                    secret_id: String::new(),
                    secret_name: cluster_name.clone(),
                    file: Some(file),
                });
            } else {
                container.configs.push(ConfigReference {
                    config_id: String::new(),
                    config_name: cluster_name.clone(),
                    file: Some(file),
                });
            }
        }
    }

    let mut networks = Vec::new();
    match &service.networks {
        None => networks.push(NetworkAttachmentConfig {
            target: network_names["default"].clone(),
            aliases: Vec::new(),
        }),
        Some(model::ServiceNetworks::List(names)) => {
            for n in names {
                networks.push(NetworkAttachmentConfig {
                    target: network_names[n].clone(),
                    aliases: Vec::new(),
                });
            }
        }
        Some(model::ServiceNetworks::Map(map)) => {
            for (n, options) in map {
                let options = options.as_ref();
                if options.and_then(|o| o.ipv4_address.as_ref()).is_some() {
                    return Err(err(
                        &[key("networks"), key(n), key("ipv4_address")],
                        "fixed task addresses are not supported: a service's tasks share its VIP"
                            .into(),
                    ));
                }
                networks.push(NetworkAttachmentConfig {
                    target: network_names[n].clone(),
                    aliases: options.map(|o| o.aliases.clone()).unwrap_or_default(),
                });
            }
        }
    }

    let mut ports = Vec::new();
    for (i, port) in service.ports.iter().enumerate() {
        let expanded = match port {
            model::Port::Short(text) => ports::short_ports(&text.0),
            model::Port::Long(long) => ports::long_port(long),
        }
        .map_err(|m| err(&[key("ports"), index(i)], m))?;
        ports.extend(expanded);
    }

    let mut task = TaskSpec {
        container: Some(container),
        networks,
        ..Default::default()
    };
    let deploy::Settings {
        update,
        rollback,
        endpoint_mode,
    } = match deploy {
        Some(deploy) => deploy::apply(deploy, &mut task, &err)?,
        None => deploy::Settings::default(),
    };
    if endpoint_mode == "dnsrr"
        && ports
            .iter()
            .any(|p| p.publish_mode() == PublishMode::Ingress)
    {
        return Err(err(
            &[key("ports")],
            "a dnsrr service can publish ports only with mode: host (the routing mesh balances over a VIP)".into(),
        ));
    }
    Ok(ServiceSpec {
        name: format!("{stack}_{service_name}"),
        labels: service_labels,
        task: Some(task),
        mode: mode as i32,
        replicas: match mode {
            ServiceMode::Replicated => replicas.unwrap_or(1),
            ServiceMode::Global => 0,
        },
        endpoint: Some(EndpointSpec {
            mode: endpoint_mode,
            ports,
        }),
        update,
        rollback,
    })
}

fn ms(text: &str) -> Result<i64, String> {
    flags::duration_ms(text).map_err(|e| format!("{e:#}"))
}
