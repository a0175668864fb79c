//! `shoal network create`: Docker's flags, the IPAM ones consolidated as
//! Docker's CLI does it (each `--ip-range`, `--gateway` and `--aux-address`
//! goes with the `--subnet` that contains it).

use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Result, bail};
use clap::Args;
use shoal_api::{
    cidr::Ipv4Cidr,
    pb::{IpamConfig, NetworkSpec},
};

use crate::commands::service_flags::parse_label;

#[derive(Args)]
pub struct CreateArgs {
    /// Name of the network.
    name: String,
    /// Driver to manage the Network: only `overlay` is supported.
    #[arg(short, long, default_value = "overlay")]
    driver: String,
    /// Subnet in CIDR format that represents a network segment; repeatable
    /// (default: the next free one of the cluster's address pool).
    #[arg(long)]
    subnet: Vec<String>,
    /// Allocate container ip from a sub-range (of the subnet containing it); repeatable.
    #[arg(long)]
    ip_range: Vec<String>,
    /// IPv4 Gateway for the master subnet (of the subnet containing it; default: its first address); repeatable.
    #[arg(long)]
    gateway: Vec<String>,
    /// Auxiliary IPv4 addresses kept from containers (name=ip, in a subnet); repeatable.
    #[arg(long)]
    aux_address: Vec<String>,
    /// IP Address Management Driver: only `default` is supported.
    #[arg(long, default_value = "default")]
    ipam_driver: String,
    /// Set IPAM driver specific options (key=value); repeatable.
    #[arg(long)]
    ipam_opt: Vec<String>,
    /// Enable or disable IPv4 address assignment (Shoal's overlays need it: only true).
    #[arg(long, value_name = "true|false", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    ipv4: Option<bool>,
    /// Enable or disable IPv6 address assignment (Shoal's overlays carry IPv4 only: only false).
    #[arg(long, value_name = "true|false", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    ipv6: Option<bool>,
    /// Enable manual container attachment (`shoal network connect`).
    #[arg(long)]
    attachable: bool,
    /// Restrict external access to the network.
    #[arg(long)]
    internal: bool,
    /// Create swarm routing-mesh network (the cluster has one from init: refused).
    #[arg(long)]
    ingress: bool,
    /// Control the network's scope (only `swarm`).
    #[arg(long)]
    scope: Option<String>,
    /// Create a configuration only network (subnets for --config-from).
    #[arg(long)]
    config_only: bool,
    /// The network from which to copy the configuration.
    #[arg(long)]
    config_from: Option<String>,
    /// Set metadata on a network (key=value); repeatable.
    #[arg(long)]
    label: Vec<String>,
    /// Set driver specific options (key=value); none is supported yet, so any is an error.
    #[arg(short, long)]
    opt: Vec<String>,
}

/// `key=value` pairs of a repeatable map flag, named in errors.
fn key_values(flag: &str, values: &[String]) -> Result<BTreeMap<String, String>> {
    values
        .iter()
        .map(|o| {
            let (k, v) = o.split_once('=').unwrap_or((o, ""));
            if k.is_empty() {
                bail!("invalid {flag} {o:?}: expected key=value");
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn ipv4_cidr(flag: &str, text: &str) -> Result<Ipv4Cidr> {
    if text.contains(':') {
        bail!("invalid {flag} {text}: IPv6 is not supported (Shoal's overlays carry IPv4 only)");
    }
    Ok(text.parse()?)
}

fn ipv4_addr(flag: &str, text: &str) -> Result<Ipv4Addr> {
    if text.contains(':') {
        bail!("invalid {flag} {text}: IPv6 is not supported (Shoal's overlays carry IPv4 only)");
    }
    text.parse()
        .map_err(|_| anyhow::anyhow!("invalid {flag} {text:?}: expected an IPv4 address"))
}

/// Docker's `createIPAMConfig`: one block per subnet, each range, gateway
/// and auxiliary address put with the subnet that contains it.
pub fn ipam_configs(
    subnets: &[String],
    ranges: &[String],
    gateways: &[String],
    aux: &BTreeMap<String, String>,
) -> Result<Vec<IpamConfig>> {
    if subnets.len() < ranges.len() || subnets.len() < gateways.len() {
        bail!("every ip-range or gateway must have a corresponding subnet");
    }
    let mut blocks: Vec<(Ipv4Cidr, IpamConfig)> = Vec::new();
    for s in subnets {
        let subnet = ipv4_cidr("--subnet", s)?;
        if blocks.iter().any(|(b, _)| b.overlaps(&subnet)) {
            bail!("multiple overlapping subnet configuration is not supported");
        }
        blocks.push((
            subnet,
            IpamConfig {
                subnet: s.clone(),
                ..Default::default()
            },
        ));
    }
    for r in ranges {
        let range = ipv4_cidr("--ip-range", r)?;
        let mut matched = false;
        for (subnet, block) in blocks.iter_mut().filter(|(s, _)| s.contains(range.addr)) {
            if !block.ip_range.is_empty() {
                bail!(
                    "cannot configure multiple ranges ({r}, {}) on the same subnet ({subnet})",
                    block.ip_range
                );
            }
            block.ip_range = r.clone();
            matched = true;
        }
        if !matched {
            bail!("no matching subnet for range {r}");
        }
    }
    for g in gateways {
        let gateway = ipv4_addr("--gateway", g)?;
        let mut matched = false;
        for (subnet, block) in blocks.iter_mut().filter(|(s, _)| s.contains(gateway)) {
            if !block.gateway.is_empty() {
                bail!(
                    "cannot configure multiple gateways ({g}, {}) for the same subnet ({subnet})",
                    block.gateway
                );
            }
            block.gateway = g.clone();
            matched = true;
        }
        if !matched {
            bail!("no matching subnet for gateway {g}");
        }
    }
    for (name, a) in aux.iter().filter(|(_, a)| !a.is_empty()) {
        let addr = ipv4_addr("--aux-address", a)?;
        let mut matched = false;
        for (_, block) in blocks.iter_mut().filter(|(s, _)| s.contains(addr)) {
            block.aux_addresses.insert(name.clone(), a.clone());
            matched = true;
        }
        if !matched {
            bail!("no matching subnet for aux-address {a}");
        }
    }
    Ok(blocks.into_iter().map(|(_, b)| b).collect())
}

impl CreateArgs {
    /// The spec to send, refusing what Shoal's overlays cannot do with an
    /// error that says so.
    pub fn spec(self) -> Result<NetworkSpec> {
        if self.ipv6 == Some(true) {
            bail!(
                "--ipv6 is not supported: Shoal's overlay data plane (VXLAN, eBPF, DNS) carries IPv4 only"
            );
        }
        if self.ipv4 == Some(false) {
            bail!("--ipv4=false is not supported: Shoal's overlays carry IPv4 only");
        }
        if self.ipam_driver != "default" {
            bail!(
                "--ipam-driver {:?} is not supported: only the default IPAM",
                self.ipam_driver
            );
        }
        if let Some(scope) = self.scope.as_deref().filter(|s| *s != "swarm") {
            bail!(
                "--scope {scope:?} is not supported: Shoal networks span the swarm (--scope swarm)"
            );
        }
        if self.ingress {
            bail!(
                "--ingress: the cluster has its ingress network from init, and it cannot be replaced"
            );
        }
        let aux = key_values("--aux-address", &self.aux_address)?;
        let driver = if self.config_only && self.driver == "overlay" {
            "null".to_owned()
        } else {
            self.driver
        };
        Ok(NetworkSpec {
            name: self.name,
            labels: self
                .label
                .iter()
                .map(|l| parse_label(l))
                .collect::<Result<_>>()?,
            driver,
            internal: self.internal,
            attachable: self.attachable,
            ingress: false,
            subnet: String::new(),
            gateway: String::new(),
            options: key_values("--opt", &self.opt)?.into_iter().collect(),
            ipam_configs: ipam_configs(&self.subnet, &self.ip_range, &self.gateway, &aux)?,
            ipam_options: key_values("--ipam-opt", &self.ipam_opt)?
                .into_iter()
                .collect(),
            config_only: self.config_only,
            config_from: self.config_from.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ranges_gateways_and_aux_addresses_go_with_their_subnet() {
        let aux = BTreeMap::from([("printer".to_string(), "10.2.0.9".to_string())]);
        let blocks = ipam_configs(
            &strings(&["10.1.0.0/24", "10.2.0.0/24"]),
            &strings(&["10.2.0.128/25"]),
            &strings(&["10.2.0.254", "10.1.0.1"]),
            &aux,
        )
        .unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            (
                blocks[0].subnet.as_str(),
                blocks[0].ip_range.as_str(),
                blocks[0].gateway.as_str()
            ),
            ("10.1.0.0/24", "", "10.1.0.1")
        );
        assert_eq!(
            (
                blocks[1].subnet.as_str(),
                blocks[1].ip_range.as_str(),
                blocks[1].gateway.as_str()
            ),
            ("10.2.0.0/24", "10.2.0.128/25", "10.2.0.254")
        );
        assert_eq!(blocks[1].aux_addresses["printer"], "10.2.0.9");
        assert!(
            ipam_configs(&[], &[], &[], &BTreeMap::new())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn mismatches_are_refused_with_dockers_words() {
        let none = BTreeMap::new();
        for (subnets, ranges, gateways, why) in [
            (
                vec![],
                vec!["10.1.0.0/25"],
                vec![],
                "every ip-range or gateway must have a corresponding subnet",
            ),
            (
                vec!["10.1.0.0/24"],
                vec!["10.2.0.0/25"],
                vec![],
                "no matching subnet for range 10.2.0.0/25",
            ),
            (
                vec!["10.1.0.0/24"],
                vec![],
                vec!["10.2.0.1"],
                "no matching subnet for gateway 10.2.0.1",
            ),
            (
                vec!["10.1.0.0/16", "10.1.1.0/24"],
                vec![],
                vec![],
                "multiple overlapping subnet",
            ),
            (
                vec!["10.1.0.0/24", "10.2.0.0/24"],
                vec!["10.1.0.0/25", "10.1.0.128/25"],
                vec![],
                "cannot configure multiple ranges",
            ),
            (vec!["fd00::/64"], vec![], vec![], "IPv6 is not supported"),
        ] {
            let err = ipam_configs(
                &strings(&subnets),
                &strings(&ranges),
                &strings(&gateways),
                &none,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CreateArgs,
    }

    fn spec(args: &[&str]) -> Result<NetworkSpec> {
        Cli::try_parse_from([&["create"], args].concat())?
            .args
            .spec()
    }

    #[test]
    fn what_the_overlays_cannot_do_is_refused_and_the_rest_passes() {
        for (args, why) in [
            (vec!["--ipv6", "n"], "IPv4 only"),
            (vec!["--ipv4=false", "n"], "IPv4 only"),
            (vec!["--scope", "local", "n"], "--scope swarm"),
            (vec!["--ipam-driver", "other", "n"], "only the default IPAM"),
            (vec!["--ingress", "n"], "ingress network from init"),
        ] {
            let err = spec(&args).unwrap_err().to_string();
            assert!(err.contains(why), "{args:?}: {err}");
        }
        let s = spec(&[
            "--scope",
            "swarm",
            "--ipv6=false",
            "--attachable",
            "--ipam-opt",
            "a=1",
            "--subnet",
            "10.9.0.0/24",
            "--label",
            "k=v",
            "n",
        ])
        .unwrap();
        assert!(s.attachable);
        assert_eq!(s.ipam_options["a"], "1");
        assert_eq!(s.ipam_configs[0].subnet, "10.9.0.0/24");
        assert_eq!(s.labels["k"], "v");
        let only = spec(&["--config-only", "--subnet", "10.9.0.0/24", "cfg"]).unwrap();
        assert!(only.config_only);
        assert_eq!(only.driver, "null");
        let from = spec(&["--config-from", "cfg", "n"]).unwrap();
        assert_eq!(
            (from.config_from.as_str(), from.driver.as_str()),
            ("cfg", "overlay")
        );
    }
}
