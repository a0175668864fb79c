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
        });
    }
    out.sort_by_key(|p| p.published_port);
    Ok(out)
}
