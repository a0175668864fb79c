//! `--publish …,proxy-protocol=v2`: the agent's relay takes the port's
//! connections and writes a PROXY protocol v2 header before the client's
//! bytes. Only what the relay does is accepted: TCP (the relay has no
//! datagram path: a header per datagram would need per-client sockets
//! and state, see README), ingress mode (in host mode the mesh hands the
//! connection to the local task, no relay sees it) and not with dsr (the
//! relay's task answers the relay, not the client).

use shoal_api::pb::{PortConfig, PublishMode};

use super::{Check, invalid};

/// The versions the relay writes.
const VERSIONS: &[&str] = &["v2"];

/// `shown`: the port as errors name it (`8080:80/tcp`).
pub fn check(shown: &str, protocol: &str, port: &PortConfig) -> Check {
    if port.proxy_protocol.is_empty() {
        return Ok(());
    }
    if !VERSIONS.contains(&port.proxy_protocol.as_str()) {
        return invalid!(
            "invalid port {shown}: proxy-protocol {:?} is not supported (expected v2)",
            port.proxy_protocol
        );
    }
    if protocol != "tcp" {
        return invalid!(
            "invalid port {shown}: proxy-protocol=v2 is for tcp ports; Shoal does not relay {protocol}"
        );
    }
    if port.publish_mode() != PublishMode::Ingress {
        return invalid!(
            "invalid port {shown}: proxy-protocol=v2 is for ports published in ingress mode; in host mode the task sees its client's address already"
        );
    }
    if port.direct_server_return {
        return invalid!(
            "invalid port {shown}: proxy-protocol=v2 and dsr (direct server return) cannot be combined: the relay is the task's peer, so the replies must come back to it"
        );
    }
    Ok(())
}
