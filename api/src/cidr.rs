//! IPv4 prefixes in CIDR form, as the manager's allocator hands them out and
//! the agent programs them (`198.18.1.5/24`: an address and its prefix).

use std::{fmt, net::Ipv4Addr, str::FromStr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected an IPv4 address and prefix, like 10.0.0.0/24")]
pub struct CidrError(pub String);

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Self { addr, prefix })
    }

    pub fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The first address of the prefix (`10.0.1.0` for `10.0.1.5/24`).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The same prefix with its host bits cleared.
    pub fn trunc(&self) -> Self {
        Self {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    /// How many addresses the prefix holds.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    pub fn overlaps(&self, other: &Self) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// The `n`th address of the prefix, if it holds that many.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(u32::from(self.network()) + n as u32))
    }

    /// Addresses a host may take: all but the network and broadcast ones.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let last = self.size().saturating_sub(1);
        (1..last).filter_map(|n| self.nth(n))
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        Self::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_measures_prefixes() {
        let c: Ipv4Cidr = "198.18.1.5/24".parse().unwrap();
        assert_eq!(c.to_string(), "198.18.1.5/24");
        assert_eq!(c.network(), Ipv4Addr::new(198, 18, 1, 0));
        assert_eq!(c.size(), 256);
        assert!(c.contains(Ipv4Addr::new(198, 18, 1, 255)));
        assert!(!c.contains(Ipv4Addr::new(198, 18, 2, 0)));
        assert_eq!(c.hosts().count(), 254);
        assert_eq!(c.hosts().next(), Some(Ipv4Addr::new(198, 18, 1, 1)));
        let pool: Ipv4Cidr = "198.18.0.0/15".parse().unwrap();
        assert!(pool.overlaps(&c) && c.overlaps(&pool));
        assert!(!c.overlaps(&"198.18.2.0/24".parse().unwrap()));
        for bad in ["198.18.0.0", "198.18.0.0/33", "x/8", "1.2.3/8", ""] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }
}
