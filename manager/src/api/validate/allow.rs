//! Allow-lists of client addresses for published ports: a port's
//! (`--publish …,allow=CIDR`) and a node's (`node update --ingress-allow`).

use shoal_api::cidr::Ipv4Cidr;

use super::{Check, invalid};

/// CIDRs one list may hold: the data plane holds every list of a node in
/// one table (`ALLOW_MAX_CIDRS`), so no single list may take most of it.
pub const MAX_ALLOW_CIDRS: usize = 256;

/// Every entry of `list` is an IPv4 CIDR (`192.0.2.0/24`, `192.0.2.100/32`);
/// `what` names the list in the error (`port 8080/tcp`, `node n1`).
pub fn allow_list(what: &str, list: &[String]) -> Check {
    if list.len() > MAX_ALLOW_CIDRS {
        return invalid!(
            "allow-list of {what}: {} entries, at most {MAX_ALLOW_CIDRS}",
            list.len()
        );
    }
    for entry in list {
        if entry.parse::<Ipv4Cidr>().is_err() {
            return invalid!(
                "allow-list of {what}: {entry:?} is not an IPv4 CIDR (e.g. 192.0.2.0/24 or 192.0.2.100/32)"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_cidrs_and_names_the_bad_entry() {
        let good = ["192.0.2.0/24".to_owned(), "198.18.0.1/32".to_owned()];
        assert!(allow_list("port 80/tcp", &good).is_ok());
        assert!(allow_list("port 80/tcp", &[]).is_ok());
        for bad in ["192.0.2.1", "192.0.2.0/33", "2001:db8::/32", "any"] {
            let err = allow_list("port 80/tcp", &[bad.to_owned()]).unwrap_err();
            assert!(
                err.0.contains("port 80/tcp") && err.0.contains(bad),
                "{}",
                err.0
            );
        }
        let many = vec!["10.0.0.0/8".to_owned(); MAX_ALLOW_CIDRS + 1];
        assert!(
            allow_list("node n1", &many)
                .unwrap_err()
                .0
                .contains("at most")
        );
    }
}
