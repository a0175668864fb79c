//! Published ports (already in their long form) as the endpoint's ports,
//! sorted by published port as Docker sorts them.

use shoal_api::pb::{PortConfig, PublishMode};

use crate::compose::{index, locate::Seg, model};

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

/// The service's extension key for direct server return: Docker's schema
/// allows no extra key in a port entry (not even `x-*`: `docker stack
/// config` refuses it), so the ports are listed at the service's level,
/// as published ports (`8080`, `"8096/udp"`).
pub const DSR_KEY: &str = "x-shoal-dsr";

/// Marks the ports `x-shoal-dsr` names (`value`: the key's value) for
/// direct server return; each must be a port the service publishes in
/// ingress mode. Errors name the list entry.
pub(super) fn direct_return(
    value: &crate::compose::yaml::Value,
    ports: &mut [PortConfig],
) -> Result<(), (Option<usize>, String)> {
    let Some(list) = value.as_sequence() else {
        return Err((
            None,
            "expected a list of published ports (8080, \"8096/udp\")".into(),
        ));
    };
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
        let found = ports.iter_mut().find(|p| {
            p.published_port == published
                && p.protocol == protocol
                && p.publish_mode() == PublishMode::Ingress
        });
        match found {
            Some(p) => p.direct_server_return = true,
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
