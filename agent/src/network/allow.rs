//! The allow-lists of published ports from a push (see `datapath::allow`):
//! each port's `allow` CIDRs and the node's `ingress_allow`. Programmed
//! before the ports themselves, so a port never answers without its list.

use std::sync::Mutex;

use anyhow::{Context, Result};
use shoal_api::{cidr::Ipv4Cidr, pb::AssignmentSet};

use crate::datapath::{
    BpfRoot,
    allow::{AllowMaps, AllowTables},
    mesh::{ensure_maps, proto_number},
};

/// The lists of this push. An entry that is no IPv4 CIDR (the manager
/// refuses them; an older one may not) is left out with a warning, and a
/// list left with nothing admits no one rather than everyone.
pub fn tables(set: &AssignmentSet) -> AllowTables {
    let mut t = AllowTables {
        node: cidrs(&set.ingress_allow, "this node's --ingress-allow"),
        ..Default::default()
    };
    for p in set.published.iter().filter(|p| !p.allow.is_empty()) {
        let (Some(proto), Ok(port)) = (proto_number(&p.protocol), u16::try_from(p.published_port))
        else {
            continue;
        };
        let what = format!("port {port}/{}", p.protocol);
        t.ports.insert((port, proto), cidrs(&p.allow, &what));
    }
    t
}

fn cidrs(list: &[String], what: &str) -> Vec<Ipv4Cidr> {
    let parsed: Vec<Ipv4Cidr> = list
        .iter()
        .filter_map(|entry| match entry.parse() {
            Ok(cidr) => Some(cidr),
            Err(_) => {
                tracing::warn!("allow-list of {what}: {entry:?} is not an IPv4 CIDR, left out");
                None
            }
        })
        .collect();
    if parsed.is_empty() && !list.is_empty() {
        // Nothing valid: 0.0.0.0/32 is a list that matches no client.
        return vec![Ipv4Cidr::new(std::net::Ipv4Addr::UNSPECIFIED, 32).expect("/32 is valid")];
    }
    parsed
}

/// The node's allow-list maps, opened at the first push that needs them.
#[derive(Default)]
pub struct Allow {
    maps: Mutex<Option<AllowMaps>>,
}

impl Allow {
    pub fn apply(&self, root: &BpfRoot, set: &AssignmentSet) -> Result<()> {
        let tables = tables(set);
        let mut maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        if maps.is_none() {
            ensure_maps(root)?;
            *maps = Some(AllowMaps::open(root)?);
        }
        maps.as_mut().context("allow-list maps")?.sync(&tables)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::pb::PublishedPort;

    use super::*;

    #[test]
    fn each_port_and_the_node_get_their_list() {
        let set = AssignmentSet {
            published: vec![
                PublishedPort {
                    protocol: "udp".into(),
                    published_port: 5353,
                    allow: vec!["192.0.2.100/32".into()],
                    ..Default::default()
                },
                PublishedPort {
                    protocol: "tcp".into(),
                    published_port: 8080,
                    ..Default::default()
                },
            ],
            ingress_allow: vec!["198.18.0.0/15".into()],
            ..Default::default()
        };
        let t = tables(&set);
        assert_eq!(t.ports.len(), 1, "a port without a list has none");
        assert_eq!(
            t.ports[&(5353, 17)],
            vec!["192.0.2.100/32".parse().unwrap()]
        );
        assert_eq!(t.node, vec!["198.18.0.0/15".parse().unwrap()]);
    }

    #[test]
    fn a_list_of_only_bad_entries_admits_no_one() {
        let set = AssignmentSet {
            ingress_allow: vec!["nonsense".into()],
            ..Default::default()
        };
        assert_eq!(tables(&set).node, vec!["0.0.0.0/32".parse().unwrap()]);
    }
}
