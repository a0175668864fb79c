//! One compose service as a Shoal service spec (Docker's
//! `convert.Service`).

use shoal_api::pb::{
    EndpointSpec, LogDriver, NetworkAttachmentConfig, PublishMode, ServiceSpec, TaskSpec,
};

use super::{IMAGE_LABEL, Names, container, deploy, lb, ports, warning};
use crate::compose::{ComposeError, Project, key, locate::Seg, model};

pub(super) fn spec(
    project: &Project,
    names: &Names,
    service_name: &str,
    service: &model::Service,
    warnings: &mut Vec<String>,
) -> Result<ServiceSpec, ComposeError> {
    let at = |rest: &[Seg]| -> Vec<Seg> {
        let mut path = vec![key("services"), key(service_name)];
        path.extend_from_slice(rest);
        path
    };
    let err = |rest: &[Seg], message: String| project.error_at(&at(rest), message);
    let image = service
        .image
        .clone()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| {
            err(
                &[],
                format!(
                    "invalid image reference for service {service_name}: no image specified \
                     (a stack runs images, it does not build them)"
                ),
            )
        })?;

    let container = container::container(project, names, service, image.clone(), &at, warnings)?;
    let networks = attachments(project, names, service, &at, warnings)?;
    let mut ports = ports::ports(&service.ports).map_err(|(i, m)| err(&[key("ports"), i], m))?;
    if let Some(lists) = project
        .extras
        .services
        .get(service_name)
        .and_then(|keys| keys.get(ports::ALLOW_KEY))
    {
        ports::allow(&mut ports, lists).map_err(|(k, m)| err(&[k], m))?;
    }
    if let Some(dsr) = project
        .extras
        .services
        .get(service_name)
        .and_then(|keys| keys.get(ports::DSR_KEY))
    {
        ports::direct_return(dsr, &mut ports).map_err(|(i, m)| {
            let mut path = vec![key(ports::DSR_KEY)];
            path.extend(i.map(crate::compose::index));
            err(&path, m)
        })?;
    }
    if let Some(listed) = project
        .extras
        .services
        .get(service_name)
        .and_then(|keys| keys.get(ports::PROXY_PROTOCOL_KEY))
    {
        ports::proxy_protocol(listed, &mut ports).map_err(|(i, m)| {
            let mut path = vec![key(ports::PROXY_PROTOCOL_KEY)];
            path.extend(i.map(crate::compose::index));
            err(&path, m)
        })?;
    }

    let mut task = TaskSpec {
        container: Some(container),
        networks,
        log_driver: service.logging.as_ref().map(|l| LogDriver {
            name: l.driver.clone(),
            options: l.options.clone().into_iter().collect(),
        }),
        ..Default::default()
    };
    let default_deploy = model::Deploy::default();
    let deploy = service.deploy.as_ref().unwrap_or(&default_deploy);
    let settings = deploy::apply(deploy, service, &mut task, &err)?;
    if service.restart.is_some() && deploy.restart_policy.is_some() {
        warnings.push(warning(
            project,
            &at(&[key("restart")]),
            "Ignoring restart: deploy.restart_policy is the service's restart policy",
        ));
    }
    if settings.endpoint_mode == "dnsrr"
        && ports
            .iter()
            .any(|p| p.publish_mode() == PublishMode::Ingress)
    {
        return Err(err(
            &[key("ports")],
            "a dnsrr service can publish ports only with mode: host (the routing mesh balances over a VIP)".into(),
        ));
    }
    let (lb, affinity) = lb::from_labels(&deploy.labels)
        .map_err(|(label, m)| err(&[key("deploy"), key("labels"), key(label)], m))?;
    let mut labels = names.labels(&deploy.labels);
    labels.insert(IMAGE_LABEL.into(), image);
    Ok(ServiceSpec {
        name: names.scoped(service_name),
        labels,
        task: Some(task),
        mode: settings.mode as i32,
        replicas: settings.replicas,
        max_concurrent: settings.max_concurrent,
        endpoint: Some(EndpointSpec {
            mode: settings.endpoint_mode,
            ports,
            lb,
            affinity,
        }),
        update: settings.update,
        rollback: settings.rollback,
    })
}

/// The networks a service joins, sorted by name as Docker sorts them.
fn attachments(
    project: &Project,
    names: &Names,
    service: &model::Service,
    at: &dyn Fn(&[Seg]) -> Vec<Seg>,
    warnings: &mut Vec<String>,
) -> Result<Vec<NetworkAttachmentConfig>, ComposeError> {
    if service.networks.is_empty() {
        return Ok(vec![NetworkAttachmentConfig {
            target: names.networks["default"].clone(),
            aliases: Vec::new(),
        }]);
    }
    let mut networks = Vec::new();
    for (n, options) in &service.networks {
        let options = options.clone().unwrap_or_default();
        let here = |k: &str| at(&[key("networks"), key(n), key(k)]);
        // Docker gives tasks no fixed address in a stack and passes these
        // on unused: said, not refused.
        for (k, set) in [
            ("ipv4_address", !options.ipv4_address.is_empty()),
            ("ipv6_address", !options.ipv6_address.is_empty()),
            ("driver_opts", !options.driver_opts.is_empty()),
        ] {
            if set {
                warnings.push(warning(
                    project,
                    &here(k),
                    "Ignoring it: a service's tasks get their addresses from the network",
                ));
            }
        }
        networks.push(NetworkAttachmentConfig {
            target: names.networks[n].clone(),
            aliases: options.aliases,
        });
    }
    networks.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(networks)
}
