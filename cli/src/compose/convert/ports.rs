//! Published ports, short (`8080:80/udp`) and long syntax.

use shoal_api::pb::{PortConfig, PublishMode};

use crate::compose::model;

/// `[HOST_IP:][PUBLISHED[-END]:]TARGET[-END][/PROTO]`.
pub(super) fn short_ports(text: &str) -> Result<Vec<PortConfig>, String> {
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

pub(super) fn long_port(long: &model::LongPort) -> Result<Vec<PortConfig>, String> {
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
