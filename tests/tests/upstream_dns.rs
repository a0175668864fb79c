//! The lab's upstream resolver answers its fake zone from every node.

use std::{net::SocketAddr, time::Duration};

use anyhow::Result;
use shoal_testbins::dns::{Answer, resolve_a};
use shoal_tests::{NODES, lab, netns, topology};

fn ask(netns_name: &str, name: &'static str) -> Result<Answer> {
    let server = SocketAddr::from((topology::UPSTREAM_DNS_ADDR, 53));
    Ok(netns::run_in(netns_name, move || {
        resolve_a(server, name, Duration::from_secs(2))
    })??)
}

#[test]
fn upstream_zone_resolves_from_every_node() -> Result<()> {
    let _lab = lab()?;
    for node in 1..=NODES {
        let host = topology::Host::node(node);
        for (name, addr) in topology::UPSTREAM_RECORDS {
            assert_eq!(
                ask(&host.netns, name)?,
                Answer::Addresses(vec![addr]),
                "{name} from {}",
                host.name
            );
        }
        assert_eq!(ask(&host.netns, "missing.upstream.test")?, Answer::NxDomain);
    }
    Ok(())
}

#[test]
fn names_outside_the_zone_are_refused_not_forwarded() -> Result<()> {
    let _lab = lab()?;
    assert_eq!(ask("shoal-n1", "example.com")?, Answer::Error(5));
    Ok(())
}
