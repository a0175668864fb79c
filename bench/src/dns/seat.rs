//! Where a container sits, for the `dns` bench's veth rows: a namespace of
//! its own behind a veth whose host side, in the node's namespace, holds
//! the resolver address (as a network's gateway on its bridge) and the
//! agent's own `vip_out` program, attached by the agent's own code, with
//! its DNS maps synced from the same records the server answers from. A
//! query from here takes a container's path: answered at the veth when it
//! is the plain case, by the server behind it otherwise.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use shoal_agent::{
    datapath::{
        BpfRoot,
        dns::{Asker, DnsCounts, DnsMaps},
        ifindex_of, mesh, remove_all,
    },
    dns::Records,
};
use shoal_lab::{cmd, netns};

/// The container's namespace (the bench's own, not the lab's).
pub const CONTAINER_NS: &str = "shoal-dnsbench";
const HOST_VETH: &str = "shdnsbench0";
const PEER_VETH: &str = "shdnsbench1";
/// The network's gateway (the resolver) and the container's address.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 19, 250, 1);
pub const CONTAINER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 250, 2);

pub struct Seat {
    root: BpfRoot,
    maps: DnsMaps,
}

impl Seat {
    /// The namespace and veth, `vip_out` on the veth's host side in
    /// `node_ns`, and the DNS maps holding `records`.
    pub fn set_up(node_ns: &str, records: &Records) -> Result<Seat> {
        netns::delete(CONTAINER_NS)?;
        netns::ensure(CONTAINER_NS)?;
        let _ = cmd::ip_in(node_ns, &["link", "del", HOST_VETH]);
        cmd::ip_in(
            node_ns,
            &[
                "link",
                "add",
                HOST_VETH,
                "type",
                "veth",
                "peer",
                "name",
                PEER_VETH,
                "netns",
                CONTAINER_NS,
            ],
        )?;
        let gateway = format!("{GATEWAY}/24");
        let addr = format!("{CONTAINER_ADDR}/24");
        cmd::ip_in(node_ns, &["addr", "add", &gateway, "dev", HOST_VETH])?;
        cmd::ip_in(node_ns, &["link", "set", HOST_VETH, "up"])?;
        cmd::ip_in(CONTAINER_NS, &["addr", "add", &addr, "dev", PEER_VETH])?;
        cmd::ip_in(CONTAINER_NS, &["link", "set", PEER_VETH, "up"])?;
        let root = BpfRoot::new(format!(
            "/sys/fs/bpf/shoal-bench-dns-{}",
            std::process::id()
        ));
        let attach_root = root.clone();
        let ifindex = netns::run_in(node_ns, move || -> Result<u32> {
            let ifindex = ifindex_of(HOST_VETH)?;
            mesh::attach_vip(&attach_root, ifindex, CONTAINER_ADDR)?;
            Ok(ifindex)
        })??;
        let mut maps = DnsMaps::open(&root).context("the DNS maps the attach pinned")?;
        maps.sync(
            records,
            &[Asker {
                ifindex,
                addr: CONTAINER_ADDR,
                gateway: GATEWAY,
            }],
        )?;
        println!(
            "veth seat: {CONTAINER_NS} ({CONTAINER_ADDR}) -> {GATEWAY} over {HOST_VETH} \
             (ifindex {ifindex} in {node_ns}) with vip_out attached; {} names in the DNS map",
            maps.names_held()
        );
        Ok(Seat { root, maps })
    }

    /// What the veth's program answered and passed so far.
    pub fn counts(&self) -> Result<DnsCounts> {
        Ok(self.maps.counts()?)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        // The veth goes with the namespace; the links with their pins.
        let _ = netns::delete(CONTAINER_NS);
        let _ = remove_all(&self.root);
    }
}
