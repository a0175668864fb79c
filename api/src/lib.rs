//! Types shared by Shoal's manager, agent and CLI.
//!
//! The control API's protobuf definitions join this crate with the manager
//! ([2/6]); they will be compiled by a pure-Rust protobuf compiler (protox),
//! so a fresh machine needs no `protoc`.

pub mod socket;

use serde::{Deserialize, Serialize};

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
}
