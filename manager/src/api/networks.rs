//! `network create|ls|rm` on the leader: the spec checked and completed
//! (Docker's IPAM settings: several subnets, ranges, gateways, auxiliary
//! addresses, `--config-from`), then allocated and written.

use std::net::Ipv4Addr;

use shoal_api::{
    cidr::Ipv4Cidr,
    pb::{IpamConfig, Kind, Meta, Network, NetworkSpec},
};
use tonic::Status;

use super::control::{meta_id, not_found, validate_name};
use crate::{
    allocator::{Ipam, ipam::holds_addresses},
    manager::Manager,
    store::{Batch, State},
};

/// Subnets one network may have: each is a gateway address on every
/// node's bridge and a route in each of its containers.
pub const MAX_SUBNETS: usize = 16;

fn invalid(spec: &NetworkSpec, message: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("network {}: {message}", spec.name))
}

/// An IPv4 CIDR, or the error that says what it is instead.
fn ipv4_cidr(spec: &NetworkSpec, what: &str, text: &str) -> Result<Ipv4Cidr, Status> {
    if text.contains(':') {
        return Err(invalid(
            spec,
            format!("{what} {text} is IPv6: Shoal's overlays carry IPv4 only"),
        ));
    }
    text.parse()
        .map_err(|e| invalid(spec, format!("{what}: {e}")))
}

fn ipv4_addr(spec: &NetworkSpec, what: &str, text: &str) -> Result<Ipv4Addr, Status> {
    if text.contains(':') {
        return Err(invalid(
            spec,
            format!("{what} {text} is IPv6: Shoal's overlays carry IPv4 only"),
        ));
    }
    text.parse().map_err(|_| {
        invalid(
            spec,
            format!("invalid {what} {text:?}: expected an IPv4 address"),
        )
    })
}

/// Checks a spec as `network create` gives it and puts it in its stored
/// form: the driver defaulted, `subnet`/`gateway` moved into
/// `ipam_configs`, each block's addresses inside its subnet.
pub fn validate(spec: &mut NetworkSpec) -> Result<(), Status> {
    validate_name("network", &spec.name)?;
    if spec.driver.is_empty() {
        spec.driver = if spec.config_only { "null" } else { "overlay" }.into();
    }
    let expected = if spec.config_only { "null" } else { "overlay" };
    if spec.driver != expected {
        return Err(invalid(
            spec,
            format!(
                "driver {:?} is not supported: Shoal networks are overlays (-d overlay){}",
                spec.driver,
                if spec.config_only {
                    "; a --config-only network has no driver"
                } else {
                    ""
                }
            ),
        ));
    }
    if spec.ingress {
        return Err(invalid(
            spec,
            "the cluster has its ingress network already (created at init)",
        ));
    }
    if let Some((key, _)) = spec.options.iter().next() {
        let why = if key == "encrypted" {
            "overlay encryption is not implemented yet"
        } else {
            "no driver option is supported yet"
        };
        return Err(invalid(
            spec,
            format!("option {key:?} is not supported ({why})"),
        ));
    }
    if spec.config_only && !spec.config_from.is_empty() {
        return Err(invalid(
            spec,
            "a --config-only network cannot take its configuration --config-from another",
        ));
    }
    if spec.config_only && (spec.attachable || spec.internal) {
        return Err(invalid(
            spec,
            "a --config-only network holds settings only: it cannot be --attachable or --internal",
        ));
    }
    if spec.ipam_configs.is_empty() && !(spec.subnet.is_empty() && spec.gateway.is_empty()) {
        spec.ipam_configs.push(IpamConfig {
            subnet: std::mem::take(&mut spec.subnet),
            gateway: std::mem::take(&mut spec.gateway),
            ..Default::default()
        });
    }
    spec.subnet.clear();
    spec.gateway.clear();
    if spec.ipam_configs.len() > MAX_SUBNETS {
        return Err(invalid(
            spec,
            format!("{} subnets: at most {MAX_SUBNETS}", spec.ipam_configs.len()),
        ));
    }
    if !spec.config_from.is_empty() && !spec.ipam_configs.is_empty() {
        return Err(invalid(
            spec,
            "a network created --config-from another takes its subnets from it: give no --subnet, --ip-range, --gateway or --aux-address",
        ));
    }
    let configs = spec.ipam_configs.clone();
    for (i, config) in configs.iter().enumerate() {
        if config.subnet.is_empty() {
            return Err(invalid(
                spec,
                "every ip-range, gateway or aux-address must have a corresponding subnet",
            ));
        }
        let subnet = ipv4_cidr(spec, "subnet", &config.subnet)?.trunc();
        for earlier in &configs[..i] {
            if ipv4_cidr(spec, "subnet", &earlier.subnet)?.overlaps(&subnet) {
                return Err(invalid(
                    spec,
                    "multiple overlapping subnet configuration is not supported",
                ));
            }
        }
        if !config.ip_range.is_empty() {
            let range = ipv4_cidr(spec, "ip-range", &config.ip_range)?;
            if !subnet.contains(range.network()) || range.prefix < subnet.prefix {
                return Err(invalid(
                    spec,
                    format!("no matching subnet for range {}", config.ip_range),
                ));
            }
        }
        if !config.gateway.is_empty() {
            let gateway = ipv4_addr(spec, "gateway", &config.gateway)?;
            if !subnet.contains(gateway) {
                return Err(invalid(
                    spec,
                    format!("no matching subnet for gateway {gateway}"),
                ));
            }
        }
        for (name, aux) in &config.aux_addresses {
            let addr = ipv4_addr(spec, &format!("aux-address {name}"), aux)?;
            if !subnet.contains(addr) {
                return Err(invalid(
                    spec,
                    format!("no matching subnet for aux-address {addr}"),
                ));
            }
        }
    }
    Ok(())
}

fn named<'a>(state: &'a State, query: &str) -> Option<&'a Network> {
    state.networks.get(query).or_else(|| {
        state
            .networks
            .values()
            .find(|n| n.spec.as_ref().is_some_and(|s| s.name == query))
    })
}

/// `--config-from`: the config-only network's IPAM settings, copied in.
fn take_config(state: &State, spec: &mut NetworkSpec) -> Result<(), Status> {
    if spec.config_from.is_empty() {
        return Ok(());
    }
    let source = named(state, &spec.config_from).ok_or_else(|| {
        Status::not_found(format!(
            "network {}: config network {} not found",
            spec.name, spec.config_from
        ))
    })?;
    let source_spec = source.spec.clone().unwrap_or_default();
    if !source_spec.config_only {
        return Err(Status::failed_precondition(format!(
            "network {}: {} is not a configuration-only network (create it with --config-only)",
            spec.name, source_spec.name
        )));
    }
    spec.config_from = source_spec.name;
    spec.ipam_configs = source_spec.ipam_configs;
    for (key, value) in source_spec.ipam_options {
        spec.ipam_options.entry(key).or_insert(value);
    }
    Ok(())
}

pub async fn create(manager: &Manager, mut spec: NetworkSpec) -> Result<Network, Status> {
    validate(&mut spec)?;
    let network = manager
        .update(|state| -> Result<_, Status> {
            if named(state, &spec.name).is_some() {
                return Err(Status::already_exists(format!(
                    "network {} already exists",
                    spec.name
                )));
            }
            let mut spec = spec.clone();
            take_config(state, &mut spec)?;
            let id = shoal_api::new_id();
            let mut network = Ipam::from_state(state)
                .network(&id, &spec)
                .map_err(|e| Status::invalid_argument(format!("network {}: {e}", spec.name)))?;
            network.meta = Some(Meta {
                id,
                ..Default::default()
            });
            let mut batch = Batch::default();
            batch.put_network(network.clone());
            Ok(Some((batch, network)))
        })
        .await?
        .unwrap_or_default();
    let id = meta_id(&network.meta).to_owned();
    let stored = manager.store.read().await.networks.get(&id).cloned();
    Ok(stored.unwrap_or(network))
}

/// Who holds a network: services that name it, tasks that still have an
/// address on it, networks created from it (`--config-from`).
pub fn users(state: &State, id: &str) -> Vec<String> {
    let name = state
        .networks
        .get(id)
        .and_then(|n| n.spec.as_ref())
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let mut users: Vec<String> = state
        .services
        .values()
        .filter(|s| {
            s.spec
                .iter()
                .flat_map(|x| &x.task)
                .flat_map(|t| &t.networks)
                .any(|n| n.target == id)
        })
        .map(|s| s.spec.as_ref().map(|x| x.name.clone()).unwrap_or_default())
        .collect();
    // Tasks of removed services still stopping hold addresses.
    users.extend(
        state
            .tasks
            .values()
            .filter(|t| holds_addresses(t) && t.networks.iter().any(|n| n.network_id == id))
            .map(|t| t.service_name.clone()),
    );
    users.extend(
        state
            .networks
            .values()
            .filter_map(|n| n.spec.as_ref())
            .filter(|s| !name.is_empty() && s.config_from == name)
            .map(|s| format!("network {}", s.name)),
    );
    users.sort();
    users.dedup();
    users
}

pub async fn remove(manager: &Manager, id: &str) -> Result<(), Status> {
    manager
        .update(|state| -> Result<_, Status> {
            let network = state
                .networks
                .get(id)
                .ok_or_else(|| not_found("network", id))?;
            let spec = network.spec.clone().unwrap_or_default();
            if spec.ingress {
                return Err(Status::failed_precondition(
                    "the ingress network carries the routing mesh and cannot be removed",
                ));
            }
            let users = users(state, id);
            if !users.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "network {} is in use by the following service: {}",
                    spec.name,
                    users.join(", ")
                )));
            }
            let mut batch = Batch::default();
            batch.delete(
                Kind::Network,
                id,
                network.meta.as_ref().map(|m| m.version).unwrap_or(0),
            );
            Ok(Some((batch, ())))
        })
        .await?;
    Ok(())
}

/// A service may attach to any network but a config-only one.
pub fn check_attachable_by_service(network: &Network) -> Result<(), Status> {
    let spec = network.spec.clone().unwrap_or_default();
    if spec.config_only {
        return Err(Status::failed_precondition(format!(
            "network {} is a configuration-only network: services attach to a network created --config-from it",
            spec.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(configs: Vec<IpamConfig>) -> NetworkSpec {
        NetworkSpec {
            name: "n".into(),
            ipam_configs: configs,
            ..Default::default()
        }
    }

    fn block(subnet: &str, range: &str, gateway: &str) -> IpamConfig {
        IpamConfig {
            subnet: subnet.into(),
            ip_range: range.into(),
            gateway: gateway.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_subnet_and_gateway_become_the_first_block() {
        let mut s = NetworkSpec {
            name: "n".into(),
            subnet: "10.1.0.0/24".into(),
            gateway: "10.1.0.254".into(),
            ..Default::default()
        };
        validate(&mut s).unwrap();
        assert_eq!(s.driver, "overlay");
        assert_eq!(s.ipam_configs, vec![block("10.1.0.0/24", "", "10.1.0.254")]);
        assert!(s.subnet.is_empty() && s.gateway.is_empty());
    }

    #[test]
    fn bad_ipam_settings_are_refused_as_docker_words_them() {
        let mut aux = block("10.1.0.0/24", "", "");
        aux.aux_addresses.insert("a".into(), "10.2.0.1".into());
        for (configs, why) in [
            (
                vec![block("", "10.1.0.0/25", "")],
                "must have a corresponding subnet",
            ),
            (
                vec![block("10.1.0.0/24", "10.2.0.0/25", "")],
                "no matching subnet for range 10.2.0.0/25",
            ),
            (
                vec![block("10.1.0.0/24", "", "10.2.0.1")],
                "no matching subnet for gateway 10.2.0.1",
            ),
            (vec![aux], "no matching subnet for aux-address 10.2.0.1"),
            (
                vec![block("10.1.0.0/16", "", ""), block("10.1.2.0/24", "", "")],
                "multiple overlapping subnet",
            ),
            (vec![block("fd00::/64", "", "")], "IPv6"),
            (vec![block("10.1.0.0", "", "")], "invalid CIDR"),
        ] {
            let err = validate(&mut spec(configs)).unwrap_err();
            assert!(err.message().contains(why), "{why}: {}", err.message());
            assert!(
                err.message().starts_with("network n: "),
                "{}",
                err.message()
            );
        }
        let many = (0..=MAX_SUBNETS)
            .map(|i| block(&format!("10.{i}.0.0/24"), "", ""))
            .collect();
        assert!(
            validate(&mut spec(many))
                .unwrap_err()
                .message()
                .contains("at most")
        );
    }

    #[test]
    fn config_only_and_config_from_are_exclusive_ways() {
        let mut only = spec(vec![block("10.1.0.0/24", "", "")]);
        only.config_only = true;
        validate(&mut only).unwrap();
        assert_eq!(only.driver, "null");
        let mut both = only.clone();
        both.config_from = "x".into();
        assert!(validate(&mut both).is_err());
        let mut from = spec(vec![block("10.1.0.0/24", "", "")]);
        from.config_from = "cfg".into();
        let err = validate(&mut from).unwrap_err();
        assert!(
            err.message().contains("takes its subnets from it"),
            "{}",
            err.message()
        );

        let mut state = State::default();
        state.networks.insert(
            "c".into(),
            Network {
                meta: Some(Meta {
                    id: "c".into(),
                    ..Default::default()
                }),
                spec: Some(NetworkSpec {
                    ipam_options: [("opt".to_string(), "1".to_string())].into(),
                    name: "cfg".into(),
                    ..only.clone()
                }),
                ..Default::default()
            },
        );
        let mut from = NetworkSpec {
            name: "n".into(),
            config_from: "cfg".into(),
            ..Default::default()
        };
        take_config(&state, &mut from).unwrap();
        assert_eq!(from.ipam_configs, only.ipam_configs);
        assert_eq!(from.ipam_options["opt"], "1");
        // Its source is held by it.
        state.networks.insert(
            "n".into(),
            Network {
                spec: Some(from),
                ..Default::default()
            },
        );
        assert_eq!(users(&state, "c"), ["network n"]);
        assert!(check_attachable_by_service(&state.networks["c"]).is_err());
        let mut not_config = NetworkSpec {
            name: "m".into(),
            config_from: "n".into(),
            ..Default::default()
        };
        let err = take_config(&state, &mut not_config).unwrap_err();
        assert!(
            err.message().contains("not a configuration-only"),
            "{}",
            err.message()
        );
    }
}
