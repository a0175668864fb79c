//! `proxy-protocol=v2` on a published port: the agent's relay takes the
//! port's connections and writes a PROXY protocol v2 header before the
//! client's bytes. Only what the relay does is accepted: TCP (the relay has
//! no datagram path: a header per datagram would need per-client sockets
//! and state, see README), ingress mode (in host mode the mesh hands the
//! connection to the local task, no relay sees it) and not with dsr (the
//! relay's task answers the relay, not the client).
//!
//! The manager refuses these for any client; the CLI's `--publish` and the
//! compose converter refuse them before asking it. Each caller names the
//! port its own way (`invalid port 8080:80/udp: …`, `--publish "…": …`).

use crate::pb::{PortConfig, PublishMode};

/// The versions the relay writes.
pub const VERSIONS: &[&str] = &["v2"];

/// Why a port cannot have the relay's PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyProtocolError {
    #[error("proxy-protocol {0:?} is not supported (expected v2)")]
    Version(String),
    #[error("proxy-protocol=v2 is for tcp ports; Shoal does not relay {0}")]
    NotTcp(String),
    #[error(
        "proxy-protocol=v2 is for ports published in ingress mode; in host mode the task sees its client's address already"
    )]
    HostMode,
    #[error(
        "proxy-protocol=v2 and dsr (direct server return) cannot be combined: the relay is the task's peer, so the replies must come back to it"
    )]
    WithDsr,
}

/// Whether `port`'s `proxy_protocol` is one the relay can serve (an empty
/// one always is: no relay). An empty protocol is TCP, as the manager
/// stores it.
pub fn check(port: &PortConfig) -> Result<(), ProxyProtocolError> {
    if port.proxy_protocol.is_empty() {
        return Ok(());
    }
    if !VERSIONS.contains(&port.proxy_protocol.as_str()) {
        return Err(ProxyProtocolError::Version(port.proxy_protocol.clone()));
    }
    let protocol = if port.protocol.is_empty() {
        "tcp"
    } else {
        port.protocol.as_str()
    };
    if protocol != "tcp" {
        return Err(ProxyProtocolError::NotTcp(protocol.to_owned()));
    }
    if port.publish_mode() != PublishMode::Ingress {
        return Err(ProxyProtocolError::HostMode);
    }
    if port.direct_server_return {
        return Err(ProxyProtocolError::WithDsr);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(protocol: &str, mode: PublishMode, dsr: bool, proxy: &str) -> PortConfig {
        PortConfig {
            protocol: protocol.into(),
            target_port: 80,
            published_port: 8080,
            publish_mode: mode as i32,
            direct_server_return: dsr,
            proxy_protocol: proxy.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_tcp_ingress_ports_without_dsr_take_the_relay() {
        use PublishMode::{Host, Ingress};
        for ok in [
            port("tcp", Ingress, false, "v2"),
            port("", Ingress, false, "v2"),
            // No relay asked for: nothing to refuse.
            port("udp", Host, true, ""),
        ] {
            assert_eq!(check(&ok), Ok(()), "{ok:?}");
        }
        for (bad, why) in [
            (
                port("tcp", Ingress, false, "v1"),
                ProxyProtocolError::Version("v1".into()),
            ),
            (
                port("udp", Ingress, false, "v2"),
                ProxyProtocolError::NotTcp("udp".into()),
            ),
            (port("tcp", Host, false, "v2"), ProxyProtocolError::HostMode),
            (
                port("tcp", Ingress, true, "v2"),
                ProxyProtocolError::WithDsr,
            ),
        ] {
            assert_eq!(check(&bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn errors_say_what_the_relay_cannot_do() {
        let udp = port("udp", PublishMode::Ingress, false, "v2");
        assert_eq!(
            check(&udp).unwrap_err().to_string(),
            "proxy-protocol=v2 is for tcp ports; Shoal does not relay udp"
        );
        let version = port("tcp", PublishMode::Ingress, false, "v3");
        assert!(
            check(&version)
                .unwrap_err()
                .to_string()
                .contains("\"v3\" is not supported (expected v2)")
        );
    }
}
