//! What every component reads of a network's addresses.

use crate::pb::{IpamConfig, Network};

/// A network's address blocks as allocated: its `subnets`, or for a network
/// stored before they existed its one `subnet` and `gateway`.
pub fn blocks(network: &Network) -> Vec<IpamConfig> {
    if !network.subnets.is_empty() {
        return network.subnets.clone();
    }
    if network.subnet.is_empty() {
        return Vec::new();
    }
    vec![IpamConfig {
        subnet: network.subnet.clone(),
        gateway: network.gateway.clone(),
        ..Default::default()
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_from_before_subnets_has_its_one_block() {
        let old = Network {
            subnet: "198.18.1.0/24".into(),
            gateway: "198.18.1.1".into(),
            ..Default::default()
        };
        assert_eq!(blocks(&old).len(), 1);
        assert_eq!(blocks(&old)[0].gateway, "198.18.1.1");
        let new = Network {
            subnets: vec![IpamConfig::default(), IpamConfig::default()],
            ..old
        };
        assert_eq!(blocks(&new).len(), 2);
        assert!(blocks(&Network::default()).is_empty());
    }
}
