//! A loaded compose project as the Shoal objects of one stack: networks,
//! secrets, configs and services named `STACK_NAME` and labelled with the
//! stack, as `docker stack deploy` names, labels and converts them
//! (`cli/compose/convert`). `stack config` runs this too, so a file it
//! prints deploys and one deploy refuses it refuses with the same words.

mod container;
mod deploy;
mod health;
mod lb;
mod ports;
mod service;
mod volumes;

use std::collections::{BTreeMap, BTreeSet};

use shoal_api::pb::{NetworkSpec, ServiceSpec};

use super::{ComposeError, Project, key, locate::Seg, model};

/// The label every object of a stack carries (Docker's name for it).
pub const STACK_LABEL: &str = "com.docker.stack.namespace";
/// The label on a stack's services naming the image the file gave.
pub const IMAGE_LABEL: &str = "com.docker.stack.image";

/// A secret or config the stack needs.
#[derive(Debug, Clone, PartialEq)]
pub struct FileObject {
    /// The name in the cluster.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// None: external, it must already exist.
    pub data: Option<Vec<u8>>,
    /// `golang`: the data is a template expanded for each task.
    pub template_driver: String,
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
    /// What the stack leaves out, with where (printed before deploying).
    pub warnings: Vec<String>,
}

/// Names of the stack's objects: `STACK_NAME`, or the name a file gives.
pub(crate) struct Names<'a> {
    pub stack: &'a str,
    pub networks: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub configs: BTreeMap<String, String>,
}

impl Names<'_> {
    pub fn scoped(&self, name: &str) -> String {
        format!("{}_{name}", self.stack)
    }

    pub fn labels(&self, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut labels = extra.clone();
        labels.insert(STACK_LABEL.into(), self.stack.into());
        labels
    }
}

/// The stack `name` of `project`.
pub fn convert(project: &Project, name: &str) -> Result<Stack, ComposeError> {
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
    let mut stack = Stack::default();
    let mut names = Names {
        stack: name,
        networks: BTreeMap::new(),
        secrets: BTreeMap::new(),
        configs: BTreeMap::new(),
    };
    networks(project, &mut names, &mut stack)?;
    for (section, declared, out) in [
        ("secrets", &file.secrets, &mut stack.secrets),
        ("configs", &file.configs, &mut stack.configs),
    ] {
        for (object_name, object) in declared {
            let converted = file_object(project, &names, section, object_name, object)?;
            if section == "secrets" {
                names
                    .secrets
                    .insert(object_name.clone(), converted.name.clone());
            } else {
                names
                    .configs
                    .insert(object_name.clone(), converted.name.clone());
            }
            out.push(converted);
        }
    }
    for (service_name, service) in &file.services {
        let spec = service::spec(project, &names, service_name, service, &mut stack.warnings)?;
        stack.services.push(spec);
    }
    Ok(stack)
}

/// The networks the services use (a service without `networks` joins the
/// stack's `default`), as Docker creates them: declared ones unused by any
/// service are left out.
fn networks(project: &Project, names: &mut Names, stack: &mut Stack) -> Result<(), ComposeError> {
    let file = &project.file;
    let mut used = BTreeSet::new();
    for (service_name, service) in &file.services {
        if service.networks.is_empty() {
            used.insert("default".to_owned());
        }
        for n in service.networks.keys() {
            if !file.networks.contains_key(n) && n != "default" {
                return Err(project.error_at(
                    &[key("services"), key(service_name), key("networks"), key(n)],
                    format!("undefined network {n:?}: declare it in the top-level networks"),
                ));
            }
            used.insert(n.clone());
        }
    }
    let default = model::Network::default();
    for n in &used {
        let network = file.networks.get(n).unwrap_or(&default);
        let at = |k: &str| [key("networks"), key(n), key(k)];
        if network.external.external {
            stack.external_networks.push(network.name.clone());
            names.networks.insert(n.clone(), network.name.clone());
            continue;
        }
        let driver = if network.driver.is_empty() {
            "overlay"
        } else {
            network.driver.as_str()
        };
        if driver != "overlay" {
            return Err(project.error_at(
                &at("driver"),
                format!("driver {driver:?}: a stack's networks are overlays (driver: overlay)"),
            ));
        }
        if let Some(opt) = network.driver_opts.keys().next() {
            return Err(project.error_at(
                &[key("networks"), key(n), key("driver_opts"), key(opt)],
                format!("driver option {opt:?} is not supported by Shoal's overlay"),
            ));
        }
        let ipam = &network.ipam;
        if !ipam.driver.is_empty() && ipam.driver != "default" {
            return Err(project.error_at(
                &[key("networks"), key(n), key("ipam"), key("driver")],
                format!(
                    "IPAM driver {:?}: only the default one is supported",
                    ipam.driver
                ),
            ));
        }
        if ipam.config.len() > 1 {
            return Err(project.error_at(
                &[
                    key("networks"),
                    key(n),
                    key("ipam"),
                    key("config"),
                    Seg::Index(1),
                ],
                "one subnet per network: Shoal's overlays are IPv4 with a single subnet",
            ));
        }
        let pool = ipam.config.first();
        let cluster_name = if network.name.is_empty() {
            names.scoped(n)
        } else {
            network.name.clone()
        };
        stack.networks.push(NetworkSpec {
            name: cluster_name.clone(),
            labels: names.labels(&network.labels),
            driver: "overlay".into(),
            internal: network.internal,
            attachable: network.attachable,
            ingress: false,
            subnet: pool.map(|p| p.subnet.clone()).unwrap_or_default(),
            gateway: pool.map(|p| p.gateway.clone()).unwrap_or_default(),
            ..Default::default()
        });
        names.networks.insert(n.clone(), cluster_name);
    }
    Ok(())
}

/// A declared secret or config: every one that is not external is created
/// (used or not), as Docker does.
fn file_object(
    project: &Project,
    names: &Names,
    section: &str,
    object_name: &str,
    object: &model::FileObject,
) -> Result<FileObject, ComposeError> {
    let at = |k: &str| [key(section), key(object_name), key(k)];
    let cluster_name = if object.name.is_empty() {
        names.scoped(object_name)
    } else {
        object.name.clone()
    };
    let data = if object.external.external {
        None
    } else if !object.driver.is_empty() {
        return Err(project.error_at(
            &at("driver"),
            format!(
                "driver {:?}: secret drivers are not supported; give the content with `file:`",
                object.driver
            ),
        ));
    } else {
        Some(
            super::bounded::read(std::path::Path::new(&object.file))
                .map_err(|message| project.error_at(&at("file"), message))?,
        )
    };
    if !object.template_driver.is_empty() && object.template_driver != "golang" {
        return Err(project.error_at(
            &at("template_driver"),
            format!(
                "template driver {:?}: the only one is golang",
                object.template_driver
            ),
        ));
    }
    Ok(FileObject {
        name: cluster_name,
        labels: names.labels(&object.labels),
        data,
        template_driver: object.template_driver.clone(),
        declared: format!("{section}.{object_name}"),
    })
}

/// A warning about `path`'s value, with its place, as the loader's read.
fn warning(project: &Project, path: &[Seg], message: &str) -> String {
    let at = project.error_at(path, "");
    format!(
        "{}:{}:{}: {}: {message}",
        at.file.display(),
        at.line,
        at.column,
        at.path
    )
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
