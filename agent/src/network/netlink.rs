//! Typed netlink calls (rtnetlink) for the overlay: bridges, VXLAN devices,
//! veth pairs, addresses, routes, FDB and neighbour entries — in the agent's
//! own network namespace or, for a container's side, in the container's.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, FromRawFd, IntoRawFd},
};

use anyhow::{Context, Result, bail};
use futures_util::TryStreamExt;
use rtnetlink::{
    Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        address::AddressAttribute,
        link::{LinkAttribute, LinkMessage},
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
        },
    },
    sys::{Socket, TokioSocket, protocols::NETLINK_ROUTE},
};

/// `EEXIST`, as netlink reports it.
fn exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

/// A netlink connection bound to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

/// One link as the overlay code needs it.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub controller: Option<u32>,
    pub mac: Option<[u8; 6]>,
}

fn link_of(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        controller: None,
        mac: None,
    };
    for attr in &m.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Controller(c) => link.controller = Some(*c),
            LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            _ => {}
        }
    }
    link
}

/// A neighbour (IP → MAC) or FDB (MAC → remote VTEP) entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
}

fn entry_of(m: &NeighbourMessage) -> Option<Entry> {
    let mut ip = None;
    let mut mac = None;
    for attr in &m.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(*v4),
            // A bridge-family (FDB) dump does not say the address's family:
            // the VTEP comes as four raw bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) if raw.len() == 4 => {
                ip = <[u8; 4]>::try_from(raw.as_slice()).ok().map(Ipv4Addr::from)
            }
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                mac = <[u8; 6]>::try_from(l.as_slice()).ok()
            }
            _ => {}
        }
    }
    Some(Entry { mac: mac?, ip: ip? })
}

impl Netlink {
    /// A connection in the calling thread's network namespace.
    pub fn here() -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection().context("opening netlink")?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// A connection inside the network namespace of process `pid` (a
    /// container's). The socket is opened on a short-lived thread that
    /// enters the namespace: a socket keeps the namespace it was made in.
    pub async fn in_netns_of(pid: u32) -> Result<Self> {
        let fd = std::thread::spawn(move || -> Result<i32> {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
                .with_context(|| format!("opening the network namespace of process {pid}"))?;
            // SAFETY: setns(2) on an fd we own, on a thread that exits right
            // after; no other code runs in that namespace on this thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!(
                    "entering the network namespace of process {pid}: {}",
                    std::io::Error::last_os_error()
                );
            }
            let socket = Socket::new(NETLINK_ROUTE).context("opening netlink")?;
            Ok(socket.into_raw_fd())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the netns thread panicked"))??;
        // SAFETY: `fd` is the netlink socket made above, owned by nobody else.
        let socket = unsafe { TokioSocket::from_raw_fd(fd) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(m)) => Ok(Some(link_of(&m))),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
        }
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .context("listing links")?;
        Ok(links.iter().map(link_of).collect())
    }

    /// The link that holds `addr`, and its MTU (the underlay).
    pub async fn link_with_address(&self, addr: Ipv4Addr) -> Result<Link> {
        let mut addrs = self.handle.address().get().execute();
        while let Some(m) = addrs.try_next().await.context("listing addresses")? {
            let holds = m.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Address(IpAddr::V4(v4)) | AddressAttribute::Local(IpAddr::V4(v4)) if *v4 == addr)
            });
            if holds {
                let links = self.links().await?;
                if let Some(link) = links.into_iter().find(|l| l.index == m.header.index) {
                    return Ok(link);
                }
            }
        }
        bail!("no interface here holds the advertise address {addr}")
    }

    /// Every IPv4 address on any link of this namespace.
    pub async fn ipv4_addresses(&self) -> Result<Vec<Ipv4Addr>> {
        let mut out = Vec::new();
        let mut addrs = self.handle.address().get().execute();
        while let Some(m) = addrs.try_next().await.context("listing addresses")? {
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V4(v4))
                | AddressAttribute::Local(IpAddr::V4(v4)) = a
                    && !out.contains(v4)
                {
                    out.push(*v4);
                }
            }
        }
        Ok(out)
    }

    pub async fn delete_link(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
            Err(e) => Err(e).context("deleting a link"),
        }
    }

    /// A bridge named `name`, up, created if missing.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<Link> {
        if self.link(name).await?.is_none() {
            let message = LinkBridge::new(name).mtu(mtu).up().build();
            if let Err(e) = self.handle.link().add(message).execute().await
                && !exists(&e)
            {
                return Err(e).with_context(|| format!("creating bridge {name}"));
            }
        }
        self.link(name)
            .await?
            .with_context(|| format!("bridge {name} vanished"))
    }

    /// A VXLAN device (UDP 4789, no learning, ARP answered from its
    /// neighbour table) plugged into `bridge`, created if missing.
    pub async fn ensure_vxlan(
        &self,
        name: &str,
        vni: u32,
        local: Ipv4Addr,
        underlay: u32,
        mtu: u32,
        bridge: u32,
    ) -> Result<Link> {
        if self.link(name).await?.is_none() {
            let message = LinkVxlan::new(name, vni)
                .port(shoal_agent_common::VXLAN_PORT)
                .local(local)
                .dev(underlay)
                .learning(false)
                .proxy(true)
                .mtu(mtu)
                .controller(bridge)
                .up()
                .build();
            if let Err(e) = self.handle.link().add(message).execute().await
                && !exists(&e)
            {
                return Err(e).with_context(|| format!("creating VXLAN device {name} (id {vni})"));
            }
        }
        self.link(name)
            .await?
            .with_context(|| format!("VXLAN device {name} vanished"))
    }

    /// Adds `addr/prefix` to the link (nothing if it is there).
    pub async fn ensure_address(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if exists(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("adding address {addr}/{prefix}")),
        }
    }

    /// A veth pair: `host` stays here (MTU set), `peer` is to be moved.
    pub async fn create_veth(&self, host: &str, peer: &str, mtu: u32) -> Result<(Link, Link)> {
        let message = LinkVeth::new(host, peer).mtu(mtu).build();
        if let Err(e) = self.handle.link().add(message).execute().await
            && !exists(&e)
        {
            return Err(e).with_context(|| format!("creating veth pair {host}/{peer}"));
        }
        let host_link = self.link(host).await?.context("veth vanished")?;
        let peer_link = self.link(peer).await?.context("veth peer vanished")?;
        Ok((host_link, peer_link))
    }

    /// Plugs a link into a bridge and brings it up.
    pub async fn plug(&self, index: u32, bridge: u32) -> Result<()> {
        let message = LinkUnspec::new_with_index(index)
            .controller(bridge)
            .up()
            .build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .context("plugging a veth into its bridge")
    }

    /// Moves a link into the network namespace of process `pid`.
    pub async fn move_to_netns_of(&self, index: u32, pid: u32) -> Result<()> {
        let message = LinkUnspec::new_with_index(index).setns_by_pid(pid).build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .with_context(|| format!("moving a veth into the namespace of process {pid}"))
    }

    /// Names a link, sets its MAC and MTU and brings it up.
    pub async fn configure(&self, index: u32, name: &str, mac: [u8; 6], mtu: u32) -> Result<()> {
        let message = LinkUnspec::new_with_index(index)
            .name(name.to_owned())
            .address(mac.to_vec())
            .mtu(mtu)
            .build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .with_context(|| format!("naming and addressing {name}"))?;
        self.up(index).await
    }

    pub async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        let message = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .context("setting a MAC address")
    }

    pub async fn up(&self, index: u32) -> Result<()> {
        let message = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .context("bringing a link up")
    }

    /// A default route through `gateway`.
    pub async fn default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(gateway)
            .build();
        match self.handle.route().add(route).execute().await {
            Ok(()) => Ok(()),
            Err(e) if exists(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("adding a default route via {gateway}")),
        }
    }

    /// Whether the namespace has an IPv4 default route.
    pub async fn has_default_route(&self) -> Result<bool> {
        let mut routes = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(route) = routes.try_next().await.context("listing routes")? {
            if route.header.destination_prefix_length == 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// An on-link route to `subnet` out of the link (another subnet of the
    /// same overlay: one layer 2 segment, no gateway between them).
    pub async fn link_route(&self, index: u32, subnet: Ipv4Addr, prefix: u8) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(subnet, prefix)
            .output_interface(index)
            .scope(rtnetlink::packet_route::route::RouteScope::Link)
            .build();
        match self.handle.route().add(route).execute().await {
            Ok(()) => Ok(()),
            Err(e) if exists(&e) => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("adding an on-link route to {subnet}/{prefix}"))
            }
        }
    }

    /// Permanent FDB entries of a VXLAN device (MAC → remote VTEP).
    pub async fn fdb(&self, index: u32) -> Result<Vec<(Entry, NeighbourMessage)>> {
        self.entries(index, AddressFamily::Bridge).await
    }

    /// Permanent IPv4 neighbour entries of a link.
    pub async fn neighbours(&self, index: u32) -> Result<Vec<(Entry, NeighbourMessage)>> {
        self.entries(index, AddressFamily::Inet).await
    }

    async fn entries(
        &self,
        index: u32,
        family: AddressFamily,
    ) -> Result<Vec<(Entry, NeighbourMessage)>> {
        let messages: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .context("listing neighbour entries")?;
        Ok(messages
            .into_iter()
            .filter(|m| m.header.ifindex == index)
            .filter_map(|m| entry_of(&m).map(|e| (e, m)))
            .collect())
    }

    /// `MAC → remote VTEP` on a VXLAN device.
    pub async fn set_fdb(&self, index: u32, entry: &Entry) -> Result<()> {
        self.handle
            .neighbours()
            .add_bridge(index, &entry.mac)
            .destination(IpAddr::V4(entry.ip))
            .flags(NeighbourFlags::Own)
            .replace()
            .execute()
            .await
            .with_context(|| format!("adding the FDB entry for {}", entry.ip))
    }

    /// `MAC` lives behind bridge port `index` (`bridge fdb replace MAC dev
    /// PORT master static`).
    pub async fn set_local_fdb(&self, index: u32, mac: &[u8; 6]) -> Result<()> {
        self.handle
            .neighbours()
            .add_bridge(index, mac)
            .flags(NeighbourFlags::Controller)
            .state(NeighbourState::Noarp)
            .replace()
            .execute()
            .await
            .context("adding the bridge entry of a task's MAC")
    }

    /// `IP → MAC`, permanent.
    pub async fn set_neighbour(&self, index: u32, entry: &Entry) -> Result<()> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(entry.ip))
            .link_layer_address(&entry.mac)
            .replace()
            .execute()
            .await
            .with_context(|| format!("adding the neighbour entry for {}", entry.ip))
    }

    /// Deletes `MAC → remote VTEP` from a VXLAN device's FDB. The request
    /// is built afresh: the kernel matches a dumped entry's extra
    /// attributes too and answers ENOENT, leaving stale entries behind.
    pub async fn delete_fdb(&self, index: u32, entry: &Entry) -> Result<()> {
        let mut request = self
            .handle
            .neighbours()
            .add_bridge(index, &entry.mac)
            .destination(IpAddr::V4(entry.ip))
            .flags(NeighbourFlags::Own);
        let message = request.message_mut().clone();
        match self.handle.neighbours().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENOENT => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting the FDB entry for {}", entry.ip)),
        }
    }

    pub async fn delete_entry(&self, message: NeighbourMessage) -> Result<()> {
        match self.handle.neighbours().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENOENT => Ok(()),
            Err(e) => Err(e).context("deleting a neighbour entry"),
        }
    }
}
