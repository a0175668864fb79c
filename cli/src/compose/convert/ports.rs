//! Published ports (already in their long form) as the endpoint's ports,
//! sorted by published port as Docker sorts them; a service's
//! `x-shoal-allow` gives ports their allow-lists.

use shoal_api::pb::{PortConfig, PublishMode};

use crate::{
    commands::service_flags::parse_allow,
    compose::{index, key, locate::Seg, model, yaml::Value},
};

/// The service key of the ports' allow-lists: Docker's loader refuses
/// unknown keys inside a port (`Additional property allow is not
/// allowed`), but keeps a service's `x-*` keys. A mapping from a published
/// port (`"8080"`, `"53/udp"`) to its CIDRs (a list, or one string with
/// `;` between them).
pub const ALLOW_KEY: &str = "x-shoal-allow";

pub(super) fn ports(ports: &[model::PortConfig]) -> Result<Vec<PortConfig>, (Seg, String)> {
    let mut out = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let fail = |m: String| (index(i), m);
        let protocol = if port.protocol.is_empty() {
            "tcp".to_owned()
        } else {
            port.protocol.to_ascii_lowercase()
        };
        if protocol != "tcp" && protocol != "udp" {
            return Err(fail(format!(
                "protocol {protocol:?}: Shoal publishes tcp and udp ports"
            )));
        }
        let mode = match port.mode.as_str() {
            "" | "ingress" => PublishMode::Ingress,
            "host" => PublishMode::Host,
            other => return Err(fail(format!("mode {other:?}: expected ingress or host"))),
        };
        if port.target == 0 {
            return Err(fail("target 0: a target port is 1 to 65535".into()));
        }
        out.push(PortConfig {
            name: port.name.clone(),
            protocol,
            target_port: port.target,
            published_port: port.published,
            publish_mode: mode as i32,
            ..Default::default()
        });
    }
    out.sort_by_key(|p| p.published_port);
    Ok(out)
}

/// Gives `ports` the allow-lists of a service's `x-shoal-allow` value;
/// an entry naming no published port of the service is an error.
pub(super) fn allow(ports: &mut [PortConfig], value: &Value) -> Result<(), (Seg, String)> {
    let fail = |m: String| (key(ALLOW_KEY), m);
    let Some(lists) = value.as_mapping() else {
        return Err(fail(
            "expected a mapping of published ports to CIDRs, e.g. \"8080\": [192.0.2.0/24]".into(),
        ));
    };
    for (port, cidrs) in lists {
        let name = match port {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(fail("a key is not a published port".into())),
        };
        let (number, protocol) = name.split_once('/').unwrap_or((name.as_str(), "tcp"));
        let number: u32 = number.parse().map_err(|_| {
            fail(format!(
                "{name:?} is not a published port (e.g. 8080 or 53/udp)"
            ))
        })?;
        let text = match cidrs {
            Value::String(s) => s.clone(),
            Value::Sequence(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| fail(format!("port {name}: CIDRs are strings")))?
                .join(";"),
            _ => return Err(fail(format!("port {name}: expected a list of CIDRs"))),
        };
        let list = parse_allow(&text, &format!("{ALLOW_KEY} port {name}"))
            .map_err(|e| fail(e.to_string()))?;
        let target = ports
            .iter_mut()
            .find(|p| p.published_port == number && p.protocol == protocol.to_ascii_lowercase())
            .ok_or_else(|| fail(format!("port {name}: the service publishes no such port")))?;
        target.allow = list;
    }
    Ok(())
}

/// The service's extension key for direct server return: Docker's schema
/// allows no extra key in a port entry (not even `x-*`: `docker stack
/// config` refuses it), so the ports are listed at the service's level,
/// as published ports (`8080`, `"8096/udp"`).
pub const DSR_KEY: &str = "x-shoal-dsr";

/// The service's extension key for PROXY protocol v2 (a list like
/// `x-shoal-dsr`'s, for the same reason): `x-shoal-proxy-protocol: [8080]`.
pub const PROXY_PROTOCOL_KEY: &str = "x-shoal-proxy-protocol";

/// Marks the ports `x-shoal-dsr` names (`value`: the key's value) for
/// direct server return; each must be a port the service publishes in
/// ingress mode. Errors name the list entry.
pub(super) fn direct_return(
    value: &crate::compose::yaml::Value,
    ports: &mut [PortConfig],
) -> Result<(), (Option<usize>, String)> {
    for (_, index) in listed_ingress_ports(value, ports)? {
        ports[index].direct_server_return = true;
    }
    Ok(())
}

/// Marks the ports `x-shoal-proxy-protocol` names for the relay's PROXY
/// protocol v2 header; each must be a port the service publishes in
/// ingress mode, and one the relay can serve (`shoal_api::proxy_protocol`:
/// TCP, not with `x-shoal-dsr`).
pub(super) fn proxy_protocol(
    value: &crate::compose::yaml::Value,
    ports: &mut [PortConfig],
) -> Result<(), (Option<usize>, String)> {
    for (i, index) in listed_ingress_ports(value, ports)? {
        let marked = PortConfig {
            proxy_protocol: shoal_api::proxy_protocol::VERSIONS[0].into(),
            ..ports[index].clone()
        };
        if let Err(why) = shoal_api::proxy_protocol::check(&marked) {
            return Err((
                Some(i),
                format!("{}/{}: {why}", marked.published_port, marked.protocol),
            ));
        }
        ports[index] = marked;
    }
    Ok(())
}

/// A list's error: the entry it names (none: the whole list) and why.
type ListError = (Option<usize>, String);

/// The ports a service-level list (`[8080, "8096/udp"]`) names: for each
/// entry, its index in the list and the index of the port in `ports`,
/// which must be published by the service in ingress mode.
fn listed_ingress_ports(
    value: &crate::compose::yaml::Value,
    ports: &[PortConfig],
) -> Result<Vec<(usize, usize)>, ListError> {
    let Some(list) = value.as_sequence() else {
        return Err((
            None,
            "expected a list of published ports (8080, \"8096/udp\")".into(),
        ));
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let text = match (item.as_u64(), item.as_str()) {
            (Some(n), _) => n.to_string(),
            (None, Some(s)) => s.trim().to_owned(),
            _ => {
                return Err((
                    Some(i),
                    "expected a published port (8080 or \"8096/udp\")".into(),
                ));
            }
        };
        let (port, protocol) = text.split_once('/').unwrap_or((&text, "tcp"));
        let protocol = protocol.to_ascii_lowercase();
        let published: u32 = port
            .parse()
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| (Some(i), format!("{text:?} is not a published port")))?;
        let found = ports.iter().position(|p| {
            p.published_port == published
                && p.protocol == protocol
                && p.publish_mode() == PublishMode::Ingress
        });
        match found {
            Some(index) => out.push((i, index)),
            None => {
                return Err((
                    Some(i),
                    format!(
                        "{published}/{protocol} is not a port this service publishes in ingress mode"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(port: u32, protocol: &str) -> PortConfig {
        PortConfig {
            protocol: protocol.into(),
            target_port: 80,
            published_port: port,
            ..Default::default()
        }
    }

    fn port(published: u32, protocol: &str, mode: PublishMode) -> PortConfig {
        PortConfig {
            protocol: protocol.into(),
            target_port: 80,
            published_port: published,
            publish_mode: mode as i32,
            ..Default::default()
        }
    }

    #[test]
    fn x_shoal_allow_lists_each_published_port() {
        let mut ports = vec![published(8080, "tcp"), published(53, "udp")];
        let value: Value = crate::compose::yaml::parse(
            "\"8080\": [192.0.2.0/24, 198.18.0.1]\n53/udp: 10.0.0.0/8;192.0.2.100/32\n",
        )
        .unwrap();
        allow(&mut ports, &value).unwrap();
        assert_eq!(ports[0].allow, ["192.0.2.0/24", "198.18.0.1/32"]);
        assert_eq!(ports[1].allow, ["10.0.0.0/8", "192.0.2.100/32"]);
        let wrong: Value = crate::compose::yaml::parse("\"9090\": [192.0.2.0/24]\n").unwrap();
        let (_, message) = allow(&mut ports, &wrong).unwrap_err();
        assert!(message.contains("9090"), "{message}");
        let bad: Value = crate::compose::yaml::parse("\"8080\": [192.0.2.0/40]\n").unwrap();
        let (_, message) = allow(&mut ports, &bad).unwrap_err();
        assert!(message.contains("192.0.2.0/40"), "{message}");
    }

    #[test]
    fn dsr_marks_the_listed_ingress_ports() {
        let mut ports = vec![
            port(8080, "tcp", PublishMode::Ingress),
            port(8096, "udp", PublishMode::Ingress),
            port(8081, "tcp", PublishMode::Host),
        ];
        let value: crate::compose::yaml::Value =
            yaml_serde::from_str("[8080, \"8096/udp\"]").unwrap();
        direct_return(&value, &mut ports).unwrap();
        let marked: Vec<bool> = ports.iter().map(|p| p.direct_server_return).collect();
        assert_eq!(marked, [true, true, false]);

        for (bad, why) in [
            (
                "[8081]",
                "8081/tcp is not a port this service publishes in ingress mode",
            ),
            ("[\"8080/udp\"]", "8080/udp is not a port"),
            ("[\"x\"]", "\"x\" is not a published port"),
            ("8080", "expected a list"),
        ] {
            let value: crate::compose::yaml::Value = yaml_serde::from_str(bad).unwrap();
            let (_, message) = direct_return(&value, &mut ports).unwrap_err();
            assert!(message.contains(why), "{bad}: {message}");
        }
    }

    #[test]
    fn proxy_protocol_marks_the_listed_tcp_ingress_ports() {
        let mut ports = vec![
            port(8080, "tcp", PublishMode::Ingress),
            port(8096, "udp", PublishMode::Ingress),
            port(8081, "tcp", PublishMode::Host),
        ];
        let value: crate::compose::yaml::Value = yaml_serde::from_str("[8080]").unwrap();
        proxy_protocol(&value, &mut ports).unwrap();
        let marked: Vec<&str> = ports.iter().map(|p| p.proxy_protocol.as_str()).collect();
        assert_eq!(marked, ["v2", "", ""]);
        for (bad, why) in [
            (
                "[\"8096/udp\"]",
                "8096/udp: proxy-protocol=v2 is for tcp ports; Shoal does not relay udp",
            ),
            (
                "[8081]",
                "8081/tcp is not a port this service publishes in ingress mode",
            ),
            ("{}", "expected a list"),
        ] {
            let value: crate::compose::yaml::Value = yaml_serde::from_str(bad).unwrap();
            let (_, message) = proxy_protocol(&value, &mut ports).unwrap_err();
            assert!(message.contains(why), "{bad}: {message}");
        }
        // With `x-shoal-dsr` on the same port: the manager's rule, refused
        // here with the list entry named.
        let dsr: crate::compose::yaml::Value = yaml_serde::from_str("[8080]").unwrap();
        direct_return(&dsr, &mut ports).unwrap();
        let (entry, message) = proxy_protocol(&value, &mut ports).unwrap_err();
        assert_eq!(entry, Some(0));
        assert!(
            message.starts_with(
                "8080/tcp: proxy-protocol=v2 and dsr (direct server return) cannot be combined"
            ),
            "{message}"
        );
    }
}
