//! Where the first subnets of a cluster's address pools go, at init: the
//! ingress network's subnet, and the check that the subnet size asked for
//! (`--default-addr-pool-mask-length`) fits the pool.

use std::net::Ipv4Addr;

/// A pool or subnet size that cannot be used, named as the operator wrote it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("invalid address pool {0:?}: expected CIDR like 10.0.0.0/8")]
    NotCidr(String),
    #[error("address pool {pool} cannot hold /{size} subnets")]
    TooSmall { pool: String, size: u32 },
}

/// The ingress network holds one address per node (its entry to the mesh)
/// besides the VIPs of the services that publish ports: Swarm's /24 leaves
/// room for ~250 nodes and then refuses the rest their ingress address.
/// Shoal gives it a /20 (4,094 addresses) when the pool is that large and
/// the subnets asked for are not larger still, at the end of the pool (as
/// Docker's first ingress, 10.255.0.0/16): the subnets users pick by hand
/// from a pool's start (10.0.1.0/24, …) stay free.
const INGRESS_PREFIX: u32 = 20;

/// A pool's network address and prefix length.
fn parse(pool: &str) -> Result<(Ipv4Addr, u32), PoolError> {
    let not_cidr = || PoolError::NotCidr(pool.to_owned());
    let (base, bits) = pool.split_once('/').ok_or_else(not_cidr)?;
    let base: Ipv4Addr = base.parse().map_err(|_| not_cidr())?;
    let bits: u32 = bits.parse().map_err(|_| not_cidr())?;
    if bits > 32 {
        return Err(not_cidr());
    }
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    Ok((Ipv4Addr::from(u32::from(base) & mask), bits))
}

/// Checks that `pool` can hold subnets of `/size`.
pub fn check_subnet_size(pool: &str, size: u32) -> Result<(), PoolError> {
    first_subnet(pool, size).map(|_| ())
}

/// The ingress network's subnet in `pool` (the cluster's first pool) and its
/// gateway: a /[`INGRESS_PREFIX`] at the pool's end, or a `/subnet_size` if
/// that is larger, but never larger than the pool itself.
pub fn ingress_subnet(pool: &str, subnet_size: u32) -> Result<(String, String), PoolError> {
    let (_, pool_bits) = parse(pool)?;
    last_subnet(pool, INGRESS_PREFIX.min(subnet_size).max(pool_bits))
}

/// The last `/size` subnet of `pool`, and its first address (the gateway).
fn last_subnet(pool: &str, size: u32) -> Result<(String, String), PoolError> {
    let (network, bits) = parse(pool)?;
    first_subnet(pool, size)?;
    // Both sizes are powers of two and the pool holds the subnet.
    let offset = (1u64 << (32 - bits)) - (1u64 << (32 - size));
    let last = u32::from(network) + offset as u32;
    Ok((
        format!("{}/{size}", Ipv4Addr::from(last)),
        Ipv4Addr::from(last + 1).to_string(),
    ))
}

/// The first `/size` subnet of `pool`, and its first address (the gateway).
fn first_subnet(pool: &str, size: u32) -> Result<(String, String), PoolError> {
    let (network, bits) = parse(pool)?;
    if bits > size || size > 30 {
        return Err(PoolError::TooSmall {
            pool: pool.to_owned(),
            size,
        });
    }
    Ok((
        format!("{network}/{size}"),
        Ipv4Addr::from(u32::from(network) + 1).to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_subnet_of_a_pool() {
        assert_eq!(
            first_subnet("198.18.0.0/15", 24).unwrap(),
            ("198.18.0.0/24".into(), "198.18.0.1".into())
        );
        assert!(matches!(
            first_subnet("10.0.0.0", 24),
            Err(PoolError::NotCidr(_))
        ));
        assert!(matches!(
            first_subnet("10.0.0.0/33", 24),
            Err(PoolError::NotCidr(_))
        ));
        assert!(matches!(
            first_subnet("10.0.0.0/25", 24),
            Err(PoolError::TooSmall { size: 24, .. })
        ));
        assert!(check_subnet_size("10.0.0.0/8", 31).is_err());
        assert!(check_subnet_size("10.0.0.0/8", 24).is_ok());
    }

    #[test]
    fn ingress_gets_a_slash_20_at_the_end_unless_the_pool_or_the_subnets_say_otherwise() {
        let ingress = |pool, size| ingress_subnet(pool, size).unwrap().0;
        assert_eq!(
            ingress("198.18.0.0/15", 24),
            "198.19.240.0/20",
            "the lab's pool"
        );
        assert_eq!(
            ingress("10.0.0.0/8", 24),
            "10.255.240.0/20",
            "the default pool"
        );
        assert_eq!(
            ingress("10.0.0.0/8", 16),
            "10.255.0.0/16",
            "larger subnets asked"
        );
        assert_eq!(
            ingress("10.9.0.0/22", 24),
            "10.9.0.0/22",
            "a pool under a /20"
        );
        assert_eq!(
            ingress("10.9.0.0/24", 24),
            "10.9.0.0/24",
            "a pool of one subnet"
        );
        assert_eq!(
            ingress_subnet("10.0.0.0/8", 24).unwrap().1,
            "10.255.240.1",
            "the gateway is the subnet's first address"
        );
        // Init refuses such a pool first (`check_subnet_size`).
        assert_eq!(
            ingress("10.0.0.0/25", 24),
            "10.0.0.0/25",
            "a pool under the subnets"
        );
        assert!(ingress_subnet("10.0.0.0", 24).is_err());
    }
}
