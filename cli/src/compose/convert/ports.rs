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
            allow: Vec::new(),
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
}
