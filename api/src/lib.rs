//! Types and protocols shared by Shoal's manager, agent and CLI.
//!
//! The protobuf definitions under `proto/` are the cluster's object model, as
//! swarmkit's `api` package is Swarm's: the manager stores these messages, the
//! agent receives them, the CLI prints them. They are compiled by protox, so a
//! fresh machine needs no `protoc`.

pub mod assignments;
pub mod base64;
pub mod capacity;
pub mod cidr;
pub mod display;
pub mod eager_end;
pub mod engine;
pub mod file_target;
pub mod id;
pub mod local_socket;
pub mod mount;
pub mod network;
pub mod node_list;
pub mod proxy_protocol;
pub mod template;
pub mod test_port;
pub mod token;
pub mod token_input;

use serde::{Deserialize, Serialize};

/// Generated protobuf messages and gRPC services (package `shoal.v1`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("shoal.v1");
}

/// Where the CLI and agents find a local manager when no address is given.
pub const DEFAULT_SOCKET: &str = "/run/shoal/manager.sock";

/// The gRPC metadata key with which a follower names the leader when it
/// refuses a call only the leader serves (agents and joining managers follow it).
pub const LEADER_METADATA: &str = "shoal-leader";

/// Set on an `Unavailable` answer to a write that may or may not have
/// been applied (its leader lost its leadership with it in flight): the
/// write must not be sent again, by a forwarding manager or by the CLI's
/// retries, since a second copy could be applied or conflict with the
/// first.
pub const UNSETTLED_METADATA: &str = "shoal-write-unsettled";

/// Metadata on a refusal that says why the caller's certificate no longer
/// counts: `demoted` (its node is a worker now) or `removed` (`node rm`).
pub const REFUSAL_METADATA: &str = "shoal-refusal";

/// The manager's TCP port for the control API, the agent protocol and Raft.
pub const DEFAULT_PORT: u16 = 2377;

/// A manager's visualizer port (`shoal-manager --web-addr`), beside 2377.
pub const VISUALIZER_PORT: u16 = 2378;

/// A manager's `/metrics` port (HTTPS; `shoal-manager --metrics-addr`):
/// dockerd's customary metrics port.
pub const MANAGER_METRICS_PORT: u16 = 9323;

/// An agent's `/metrics` port (HTTPS; `shoal-agent join --metrics-addr`),
/// the next one: a manager's host runs an agent too.
pub const AGENT_METRICS_PORT: u16 = 9324;

/// Where a daemon serves `/metrics`: `none`, an IP (at `default_port`) or
/// IP:PORT; None if `none`.
pub fn metrics_addr(
    given: &str,
    default_port: u16,
) -> Result<Option<std::net::SocketAddr>, String> {
    if given == "none" {
        return Ok(None);
    }
    if let Ok(addr) = given.parse::<std::net::SocketAddr>() {
        return Ok(Some(addr));
    }
    given
        .parse::<std::net::IpAddr>()
        .map(|ip| Some((ip, default_port).into()))
        .map_err(|_| format!("invalid --metrics-addr {given:?}: expected IP, IP:PORT or `none`"))
}

/// The connection settings every manager-to-manager and agent-to-manager
/// channel uses (`shoal_pki::transport` dials them over TLS): a short
/// connect timeout, and HTTP/2 pings every second
/// (idle or not) that give up after 3 s, so a peer cut off without closing
/// its connections is noticed in seconds and the caller moves on.
pub fn keepalive(endpoint: tonic::transport::Endpoint) -> tonic::transport::Endpoint {
    endpoint
        .connect_timeout(std::time::Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(1))
        .keep_alive_timeout(std::time::Duration::from_secs(3))
        .keep_alive_while_idle(true)
}

/// What each Shoal binary reports about itself (`shoal version`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VersionInfo {
    /// The binary's name, e.g. `shoal-agent`.
    pub component: String,
    pub version: String,
    /// The layout version of the eBPF maps the agent pins.
    pub ebpf_layout: u32,
    pub os: String,
    pub arch: String,
}

impl VersionInfo {
    /// The caller's own version information; pass `env!("CARGO_PKG_VERSION")`.
    pub fn of(component: &str, version: &str, ebpf_layout: u32) -> Self {
        Self {
            component: component.to_owned(),
            version: version.to_owned(),
            ebpf_layout,
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
        }
    }
}

/// A new random object id: 25 lowercase base-36 characters, as Swarm's.
pub fn new_id() -> String {
    token::random_base36(25)
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_docker_style_field_names() {
        let info = VersionInfo::of("shoal", "0.1.0", 1);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["Component"], "shoal");
        assert_eq!(json["EbpfLayout"], 1);
        assert_eq!(json["Os"], "linux");
    }

    #[test]
    fn ids_are_25_base36_characters_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 25);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_ne!(a, b);
    }
}

#[cfg(test)]
mod metrics_addr_tests {
    use super::*;

    #[test]
    fn metrics_addresses() {
        assert_eq!(metrics_addr("none", 9323), Ok(None));
        assert_eq!(
            metrics_addr("192.0.2.11", 9323),
            Ok(Some("192.0.2.11:9323".parse().unwrap()))
        );
        assert_eq!(
            metrics_addr("127.0.0.1:9999", 9323),
            Ok(Some("127.0.0.1:9999".parse().unwrap()))
        );
        let error = metrics_addr("nowhere", 9323).unwrap_err();
        assert!(error.contains("--metrics-addr \"nowhere\""), "{error}");
    }
}
