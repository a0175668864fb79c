//! A loaded compose project as the Shoal objects of one stack: networks,
//! secrets, configs and services named `STACK_NAME` and labelled with the
//! stack, exactly as `docker stack deploy` names and labels them.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use shoal_api::pb::{
    ConfigReference, ContainerSpec, EndpointSpec, FileTarget, HealthConfig, Mount,
    NetworkAttachmentConfig, NetworkSpec, Placement, PortConfig, PublishMode, ResourceRequirements,
    Resources, RestartCondition, RestartPolicy, SecretReference, ServiceMode, ServiceSpec,
    TaskSpec, UpdateConfig, UpdateFailureAction, UpdateOrder,
};

use super::{ComposeError, Project, index, key, locate::Seg, model};
use crate::commands::service_flags as flags;

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
            ..Default::default()
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
        container.command = words(entrypoint).map_err(|m| err(&[key("entrypoint")], m))?;
    }
    if let Some(command) = &service.command {
        container.args = words(command).map_err(|m| err(&[key("command")], m))?;
    }
    if let Some(grace) = &service.stop_grace_period {
        container.stop_grace_period_ms =
            Some(ms(grace).map_err(|m| err(&[key("stop_grace_period")], m))?);
    }
    container.env = environment(project, service, lookup, at)?;
    if let Some(health) = &service.healthcheck {
        container.healthcheck =
            Some(healthcheck(health).map_err(|(k, m)| err(&[key("healthcheck"), key(k)], m))?);
    }

    for (i, volume) in service.volumes.iter().enumerate() {
        let mount = match volume {
            model::VolumeMount::Short(text) => short_volume(project, stack, text),
            model::VolumeMount::Long(long) => long_volume(project, stack, long),
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
            model::Port::Short(text) => short_ports(&text.0),
            model::Port::Long(long) => long_port(long),
        }
        .map_err(|m| err(&[key("ports"), index(i)], m))?;
        ports.extend(expanded);
    }

    let mut task = TaskSpec {
        container: Some(container),
        networks,
        ..Default::default()
    };
    let mut update = None;
    let mut rollback = None;
    let mut endpoint_mode = String::new();
    if let Some(deploy) = deploy {
        if let Some(placement) = &deploy.placement {
            task.placement = Some(Placement {
                constraints: placement.constraints.clone(),
                spread: placement
                    .preferences
                    .iter()
                    .map(|p| p.spread.clone())
                    .collect(),
                max_replicas_per_node: placement.max_replicas_per_node.map_or(0, |m| m.0),
            });
        }
        if let Some(resources) = &deploy.resources {
            let amounts = |a: &Option<model::ResourceAmounts>,
                           which: &str|
             -> Result<Option<Resources>, ComposeError> {
                let Some(a) = a else { return Ok(None) };
                if a.pids.is_some() {
                    return Err(err(
                        &[key("deploy"), key("resources"), key(which), key("pids")],
                        "pids limits are not supported".into(),
                    ));
                }
                Ok(Some(Resources {
                    pids: 0,
                    nano_cpus: a
                        .cpus
                        .as_ref()
                        .map(|c| flags::parse_cpus(&c.0))
                        .transpose()
                        .map_err(|e| {
                            err(
                                &[key("deploy"), key("resources"), key(which), key("cpus")],
                                e.to_string(),
                            )
                        })?
                        .unwrap_or(0),
                    memory_bytes: a
                        .memory
                        .as_ref()
                        .map(|m| flags::parse_bytes(&m.0))
                        .transpose()
                        .map_err(|e| {
                            err(
                                &[key("deploy"), key("resources"), key(which), key("memory")],
                                e.to_string(),
                            )
                        })?
                        .unwrap_or(0),
                }))
            };
            task.resources = Some(ResourceRequirements {
                limits: amounts(&resources.limits, "limits")?,
                reservations: amounts(&resources.reservations, "reservations")?,
                ..Default::default()
            });
        }
        if let Some(policy) = &deploy.restart_policy {
            let here = |k: &str| [key("deploy"), key("restart_policy"), key(k)];
            task.restart = Some(RestartPolicy {
                condition: match policy.condition.as_deref().unwrap_or("any") {
                    "any" => RestartCondition::Any,
                    "on-failure" => RestartCondition::OnFailure,
                    "none" => RestartCondition::None,
                    other => {
                        return Err(err(
                            &here("condition"),
                            format!("condition {other:?}: expected none, on-failure or any"),
                        ));
                    }
                } as i32,
                delay_ms: policy
                    .delay
                    .as_deref()
                    .map(ms)
                    .transpose()
                    .map_err(|m| err(&here("delay"), m))?,
                max_attempts: policy.max_attempts.map_or(0, |m| m.0),
                window_ms: policy
                    .window
                    .as_deref()
                    .map(ms)
                    .transpose()
                    .map_err(|m| err(&here("window"), m))?
                    .unwrap_or(0),
            });
        }
        for (which, config, out) in [
            ("update_config", &deploy.update_config, &mut update),
            ("rollback_config", &deploy.rollback_config, &mut rollback),
        ] {
            if let Some(config) = config {
                *out = Some(
                    update_config(config)
                        .map_err(|(k, m)| err(&[key("deploy"), key(which), key(k)], m))?,
                );
            }
        }
        if let Some(mode) = &deploy.endpoint_mode {
            if mode != "vip" && mode != "dnsrr" {
                return Err(err(
                    &[key("deploy"), key("endpoint_mode")],
                    format!("endpoint_mode {mode:?}: expected vip or dnsrr"),
                ));
            }
            endpoint_mode = mode.clone();
        }
    }
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

/// A command as Compose splits a string: shell-like words, no shell.
fn words(command: &model::Command) -> Result<Vec<String>, String> {
    match command {
        model::Command::Exec(items) => Ok(items.iter().map(|t| t.0.clone()).collect()),
        model::Command::Shell(text) => split_words(text),
    }
}

pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed ' in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unclosed \" in {text:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed \" in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `env_file` lines, then `environment` (which wins), as KEY=VALUE.
fn environment(
    project: &Project,
    service: &model::Service,
    lookup: Lookup,
    at: &dyn Fn(&[Seg]) -> Vec<Seg>,
) -> Result<Vec<String>, ComposeError> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (i, path) in service.env_file.iter().flat_map(|e| e.to_vec()).enumerate() {
        let full = project.dir.join(&path);
        let text = std::fs::read_to_string(&full).map_err(|e| {
            project.error_at(
                &at(&[key("env_file"), index(i)]),
                format!("cannot read {}: {e}", full.display()),
            )
        })?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            match line.split_once('=') {
                Some((k, v)) => {
                    let v = v.trim();
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                        .unwrap_or(v);
                    env.insert(k.trim().to_owned(), v.to_owned());
                }
                None => {
                    if let Some(v) = lookup(line) {
                        env.insert(line.to_owned(), v);
                    }
                }
            }
        }
    }
    match &service.environment {
        None => {}
        Some(model::KeyValues::Map(map)) => {
            for (k, v) in map {
                match v {
                    Some(v) => {
                        env.insert(k.clone(), v.0.clone());
                    }
                    None => {
                        if let Some(v) = lookup(k) {
                            env.insert(k.clone(), v);
                        }
                    }
                }
            }
        }
        Some(model::KeyValues::List(items)) => {
            for item in items {
                match item.split_once('=') {
                    Some((k, v)) => {
                        env.insert(k.to_owned(), v.to_owned());
                    }
                    None => {
                        if let Some(v) = lookup(item) {
                            env.insert(item.clone(), v);
                        }
                    }
                }
            }
        }
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

fn healthcheck(health: &model::Healthcheck) -> Result<HealthConfig, (&'static str, String)> {
    let mut config = HealthConfig::default();
    if health.disable.is_some_and(|d| d.0) {
        config.test = vec!["NONE".into()];
        return Ok(config);
    }
    config.test = match &health.test {
        None => Vec::new(),
        Some(model::Command::Shell(s)) => vec!["CMD-SHELL".into(), s.clone()],
        Some(model::Command::Exec(items)) => {
            let items: Vec<String> = items.iter().map(|t| t.0.clone()).collect();
            match items.first().map(String::as_str) {
                Some("CMD" | "CMD-SHELL" | "NONE") => items,
                _ => {
                    return Err((
                        "test",
                        "a list test starts with CMD, CMD-SHELL or NONE".into(),
                    ));
                }
            }
        }
    };
    let duration =
        |text: &Option<String>, k: &'static str| -> Result<i64, (&'static str, String)> {
            text.as_deref()
                .map(ms)
                .transpose()
                .map(|d| d.unwrap_or(0))
                .map_err(|m| (k, m))
        };
    config.interval_ms = duration(&health.interval, "interval")?;
    config.timeout_ms = duration(&health.timeout, "timeout")?;
    config.start_period_ms = duration(&health.start_period, "start_period")?;
    config.retries = health.retries.map_or(0, |r| r.0);
    Ok(config)
}

fn update_config(config: &model::UpdateConfig) -> Result<UpdateConfig, (&'static str, String)> {
    Ok(UpdateConfig {
        parallelism: config.parallelism.map(|p| p.0),
        delay_ms: config
            .delay
            .as_deref()
            .map(ms)
            .transpose()
            .map_err(|m| ("delay", m))?
            .unwrap_or(0),
        failure_action: match config.failure_action.as_deref().unwrap_or("pause") {
            "pause" => UpdateFailureAction::Pause,
            "continue" => UpdateFailureAction::Continue,
            "rollback" => UpdateFailureAction::Rollback,
            other => {
                return Err((
                    "failure_action",
                    format!("{other:?}: expected pause, continue or rollback"),
                ));
            }
        } as i32,
        monitor_ms: config
            .monitor
            .as_deref()
            .map(ms)
            .transpose()
            .map_err(|m| ("monitor", m))?,
        max_failure_ratio: match &config.max_failure_ratio {
            None => 0.0,
            Some(r) => {
                r.0.parse::<f32>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or((
                        "max_failure_ratio",
                        format!("{:?}: expected a number from 0 to 1", r.0),
                    ))?
            }
        },
        order: match config.order.as_deref().unwrap_or("stop-first") {
            "stop-first" => UpdateOrder::StopFirst,
            "start-first" => UpdateOrder::StartFirst,
            other => {
                return Err((
                    "order",
                    format!("{other:?}: expected stop-first or start-first"),
                ));
            }
        } as i32,
    })
}

/// `[HOST_IP:][PUBLISHED[-END]:]TARGET[-END][/PROTO]`.
fn short_ports(text: &str) -> Result<Vec<PortConfig>, String> {
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((spec, proto)) => (spec, proto.to_owned()),
        None => (text, "tcp".to_owned()),
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(format!(
            "protocol {protocol:?} in {text:?}: expected tcp or udp"
        ));
    }
    let parts: Vec<&str> = spec.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [target] => (None, *target),
        [published, target] => (Some(*published), *target),
        [_ip, ..] => {
            return Err(format!(
                "{text:?}: a host IP cannot be given: a published port answers on every node's addresses"
            ));
        }
        [] => unreachable!("split yields one part at least"),
    };
    let range = |r: &str| -> Result<(u32, u32), String> {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let port = |p: &str| -> Result<u32, String> {
            p.trim()
                .parse::<u32>()
                .ok()
                .filter(|p| (1..=65535).contains(p))
                .ok_or_else(|| format!("invalid port {p:?} in {text:?}: ports are 1 to 65535"))
        };
        let (a, b) = (port(a)?, port(b)?);
        if b < a {
            return Err(format!("invalid range {r:?} in {text:?}"));
        }
        Ok((a, b))
    };
    let targets = range(target)?;
    let published = published.map(range).transpose()?;
    if let Some(p) = published
        && p.1 - p.0 != targets.1 - targets.0
    {
        return Err(format!(
            "{text:?}: the published and target ranges differ in size"
        ));
    }
    Ok((0..=targets.1 - targets.0)
        .map(|i| PortConfig {
            name: String::new(),
            protocol: protocol.clone(),
            target_port: targets.0 + i,
            published_port: published.map_or(0, |p| p.0 + i),
            publish_mode: PublishMode::Ingress as i32,
        })
        .collect())
}

fn long_port(long: &model::LongPort) -> Result<Vec<PortConfig>, String> {
    if long.host_ip.is_some() {
        return Err(
            "host_ip cannot be given: a published port answers on every node's addresses".into(),
        );
    }
    let protocol = long.protocol.clone().unwrap_or_else(|| "tcp".into());
    if protocol != "tcp" && protocol != "udp" {
        return Err(format!("protocol {protocol:?}: expected tcp or udp"));
    }
    let mode = match long.mode.as_deref().unwrap_or("ingress") {
        "ingress" => PublishMode::Ingress,
        "host" => PublishMode::Host,
        other => return Err(format!("mode {other:?}: expected ingress or host")),
    };
    let target = u32::try_from(long.target.0)
        .ok()
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| format!("target {}: ports are 1 to 65535", long.target.0))?;
    let published = match &long.published {
        None => 0,
        Some(p) => {
            p.0.parse::<u32>()
                .ok()
                .filter(|p| (1..=65535).contains(p))
                .ok_or_else(|| format!("published {:?}: expected a port from 1 to 65535", p.0))?
        }
    };
    Ok(vec![PortConfig {
        name: long.name.clone().unwrap_or_default(),
        protocol,
        target_port: target,
        published_port: published,
        publish_mode: mode as i32,
    }])
}

fn is_path(source: &str) -> bool {
    source.starts_with('/') || source.starts_with('.') || source.starts_with('~')
}

fn host_path(project: &Project, source: &str) -> String {
    if let Some(rest) = source.strip_prefix("~/") {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        return Path::new(&home).join(rest).display().to_string();
    }
    let path = project.dir.join(source);
    // Normalise `./x` and `a/../b` without touching the filesystem.
    let mut out = std::path::PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_relative() {
        std::env::current_dir()
            .map(|d| d.join(&out))
            .unwrap_or(out)
            .display()
            .to_string()
    } else {
        out.display().to_string()
    }
}

fn volume_name(project: &Project, stack: &str, name: &str) -> Result<String, String> {
    match project.file.volumes.get(name) {
        None => Err(format!(
            "volume {name:?} is not declared in the top-level volumes"
        )),
        Some(None) => Ok(format!("{stack}_{name}")),
        Some(Some(volume)) => {
            if let Some(driver) = volume.driver.as_deref().filter(|d| *d != "local") {
                return Err(format!(
                    "volume {name:?} uses driver {driver:?}: only local volumes are supported"
                ));
            }
            if !volume.driver_opts.is_empty() {
                return Err(format!("volume {name:?}: driver_opts are not supported"));
            }
            Ok(match &volume.external {
                Some(e) if e.is_external() => e
                    .name()
                    .or(volume.name.as_deref())
                    .unwrap_or(name)
                    .to_owned(),
                _ => volume
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{stack}_{name}")),
            })
        }
    }
}

/// `SOURCE:TARGET[:MODE]` or `TARGET` (an anonymous volume).
fn short_volume(project: &Project, stack: &str, text: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => ("", *target, ""),
        [source, target] => (*source, *target, ""),
        [source, target, mode] => (*source, *target, *mode),
        _ => return Err(format!("{text:?}: expected SOURCE:TARGET[:ro]")),
    };
    let mut read_only = false;
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        match m {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "z" | "Z" | "cached" | "delegated" | "consistent" | "nocopy" => {}
            other => {
                return Err(format!(
                    "{text:?}: unknown mode {other:?} (expected ro or rw)"
                ));
            }
        }
    }
    if !target.starts_with('/') {
        return Err(format!("{text:?}: the target must be an absolute path"));
    }
    let (kind, source) = if source.is_empty() {
        ("volume", String::new())
    } else if is_path(source) {
        ("bind", host_path(project, source))
    } else {
        ("volume", volume_name(project, stack, source)?)
    };
    Ok(Mount {
        r#type: kind.into(),
        source,
        target: target.into(),
        read_only,
        options: Default::default(),
    })
}

fn long_volume(project: &Project, stack: &str, long: &model::LongVolume) -> Result<Mount, String> {
    let mut mount = Mount {
        r#type: long.kind.clone(),
        target: long.target.clone(),
        read_only: long.read_only.is_some_and(|f| f.0),
        ..Default::default()
    };
    if !long.target.starts_with('/') {
        return Err(format!("target {:?} must be an absolute path", long.target));
    }
    match long.kind.as_str() {
        "bind" => {
            let source = long
                .source
                .as_deref()
                .ok_or("a bind mount needs a source")?;
            mount.source = host_path(project, source);
            if let Some(p) = long.bind.as_ref().and_then(|b| b.propagation.as_ref()) {
                mount.options.insert("bind-propagation".into(), p.clone());
            }
        }
        "volume" => {
            if let Some(source) = long.source.as_deref() {
                mount.source = volume_name(project, stack, source)?;
            }
            if long
                .volume
                .as_ref()
                .and_then(|v| v.nocopy)
                .is_some_and(|f| f.0)
            {
                mount.options.insert("volume-nocopy".into(), "true".into());
            }
        }
        "tmpfs" => {
            if let Some(t) = &long.tmpfs {
                if let Some(size) = &t.size {
                    mount.options.insert("tmpfs-size".into(), size.0.clone());
                }
                if let Some(mode) = t.mode {
                    mount
                        .options
                        .insert("tmpfs-mode".into(), format!("{:o}", mode.0));
                }
            }
        }
        other => return Err(format!("type {other:?}: expected bind, volume or tmpfs")),
    }
    Ok(mount)
}
