//! Plugging containers into overlays: a veth per container and network,
//! the host end on the network's bridge (its VIP programs attached), the
//! other end named and addressed in the container. A task's container gets
//! all its networks at start; a container the node's engine runs for
//! someone else (`network connect`) gets one more interface at a time.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
};

use anyhow::{Context, Result};
use shoal_api::{
    cidr::Ipv4Cidr,
    pb::{AssignmentSet, NetworkAttachment, Task},
};

use super::{
    Blocks, Overlay, is_ingress, is_internal, mac_of,
    netlink::{Link, Netlink},
    routes::{self, RouteCandidate},
    veth_names,
};
use crate::datapath::mesh;

fn task_id(task: &Task) -> &str {
    task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

impl Overlay {
    /// Plugs the container of `task` (process `pid`) into each of its
    /// networks: `eth0`, `eth1`, … in the task's order, addresses from the
    /// allocator, a default route through ingress if the task is on it
    /// (it publishes ports), else through the first network that has
    /// egress (none on internal networks).
    pub async fn attach(&self, task: &Task, pid: u32) -> Result<()> {
        if task.networks.is_empty() {
            return Ok(());
        }
        let inside = Netlink::in_netns_of(pid).await?;
        if let Some(lo) = inside.link("lo").await? {
            inside.up(lo.index).await?;
        }
        let mut routes = Vec::with_capacity(task.networks.len());
        for (i, attachment) in task.networks.iter().enumerate() {
            let route = self
                .plug(task_id(task), attachment, pid, &inside, &format!("eth{i}"))
                .await?;
            routes.push(route);
        }
        // Ingress if the task is on it: its published ports' replies must
        // leave by it (see `routes`).
        if let Some(gateway) = routes::default_gateway(&routes) {
            inside.default_route(gateway).await?;
        }
        Ok(())
    }

    /// Plugs a container that is no task's (`network connect`; process
    /// `pid`) into the attachment task's network, as its next free `ethN`.
    /// Its routes stay as they are, but for a default route through the
    /// network when it has none and the network has egress. Plugging an
    /// attachment that is plugged already does nothing.
    pub async fn attach_container(&self, task: &Task, pid: u32) -> Result<()> {
        if self.is_attached(task).await {
            return Ok(());
        }
        let attachment = task
            .networks
            .first()
            .context("the attachment names no network")?;
        let inside = Netlink::in_netns_of(pid).await?;
        let taken: Vec<String> = inside.links().await?.into_iter().map(|l| l.name).collect();
        let name = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !taken.contains(n))
            .context("no free interface name")?;
        let route = self
            .plug(task_id(task), attachment, pid, &inside, &name)
            .await?;
        if !inside.has_default_route().await?
            && let Some(gateway) = routes::default_gateway(&[route])
        {
            inside.default_route(gateway).await?;
        }
        Ok(())
    }

    /// Task veths here that lost their VIP programs get them back (see
    /// [`mesh::ensure_vips`]): containers adopted across an agent upgrade
    /// keep their veths but not the old layout's programs.
    pub(super) fn ensure_task_veths(&self, set: &AssignmentSet, links: &[Link]) {
        let Some(root) = &self.bpf_root else {
            return;
        };
        let veths: HashMap<&str, u32> = links.iter().map(|l| (l.name.as_str(), l.index)).collect();
        // One veth per (task, network), plugged with the attachment's
        // first address: the first endpoint of a veth is its source.
        let mut seen = HashSet::new();
        let here: Vec<(u32, Ipv4Addr)> = set
            .endpoints
            .iter()
            .filter_map(|e| {
                let (veth, _) = veth_names(&e.task_id, &e.network_id);
                Some((*veths.get(veth.as_str())?, e.addr.parse().ok()?))
            })
            .filter(|(veth, _)| seen.insert(*veth))
            .collect();
        let ensured = mesh::ensure_vips(root, &here);
        if ensured.attached > 0 {
            tracing::info!(
                veths = ensured.attached,
                "gave task veths their VIP programs back (a new data-plane layout or build)"
            );
        }
        if ensured.sources > 0 {
            tracing::info!(
                veths = ensured.sources,
                "wrote task veths' source addresses back (lost to a sweep of gone interfaces)"
            );
        }
    }

    /// Unplugs every network of `task`: its host-side veths go, and with
    /// them the container's ends.
    pub async fn detach(&self, task: &Task) -> Result<()> {
        for attachment in &task.networks {
            let (host, _) = veth_names(task_id(task), &attachment.network_id);
            if let Some(link) = self.nl.link(&host).await? {
                if let Some(root) = &self.bpf_root {
                    mesh::forget_interface(root, link.index);
                }
                self.nl.delete_link(link.index).await?;
            }
        }
        Ok(())
    }

    /// One network into the container (`inside`, process `pid`) as
    /// interface `name`; what the default-route choice needs of it.
    async fn plug(
        &self,
        task_id: &str,
        attachment: &NetworkAttachment,
        pid: u32,
        inside: &Netlink,
        name: &str,
    ) -> Result<RouteCandidate> {
        let network = self.network(&attachment.network_id).with_context(|| {
            format!(
                "network {} is not assigned to this node",
                attachment.network_id
            )
        })?;
        let addr: Ipv4Cidr = attachment
            .addresses
            .first()
            .with_context(|| format!("no address on network {}", attachment.network_id))?
            .parse()?;
        let devices = {
            let _guard = self.changing.lock().await;
            self.ensure_network(&network).await?
        };
        let (host, peer) = veth_names(task_id, &attachment.network_id);
        if let Some(stale) = self.nl.link(&host).await? {
            self.nl.delete_link(stale.index).await?;
        }
        let (host_link, peer_link) = self.nl.create_veth(&host, &peer, self.mtu).await?;
        self.nl.plug(host_link.index, devices.bridge).await?;
        // The task's MAC is here now: a static bridge entry replaces
        // whatever the bridge learned when its address (and so its MAC)
        // belonged to a task on another node.
        self.nl
            .set_local_fdb(host_link.index, &mac_of(addr.addr))
            .await?;
        if let Some(root) = &self.bpf_root {
            mesh::forget_interface(root, host_link.index);
            mesh::attach_vip(root, host_link.index, addr.addr)?;
        }
        self.nl.move_to_netns_of(peer_link.index, pid).await?;
        let moved = inside
            .link(&peer)
            .await?
            .context("the veth did not arrive in the container")?;
        inside
            .configure(moved.index, name, mac_of(addr.addr), self.mtu)
            .await?;
        inside
            .ensure_address(moved.index, addr.addr, addr.prefix)
            .await?;
        // The network's other subnets are on the same segment.
        for (subnet, _) in Blocks::of(&network)?.0 {
            if !subnet.contains(addr.addr) {
                inside
                    .link_route(moved.index, subnet.network(), subnet.prefix)
                    .await?;
            }
        }
        if is_ingress(&network) && self.bpf_root.is_some() {
            self.with_maps(|maps| maps.add_local_task(addr.addr, host_link.index))?;
        }
        if self.bpf_root.is_some()
            && let Ok(gateway) = network.gateway.parse()
        {
            self.dns_plugged(crate::datapath::dns::Asker {
                ifindex: host_link.index,
                addr: addr.addr,
                gateway,
            });
        }
        Ok(RouteCandidate {
            ingress: is_ingress(&network),
            internal: is_internal(&network),
            gateway: network.gateway.parse().ok(),
        })
    }
}
