//! Which of a task's networks its default route goes through.
//!
//! A task that publishes a port is on the ingress network (the allocator
//! puts it there first, in host mode too), and every connection to a
//! published port reaches it there: the routing mesh hands it to the
//! task's ingress interface. The mesh turns the task's replies back into
//! `node:published → client` as they leave that interface (`vip_out` on
//! its host-side veth, `mesh_reply` on the ingress bridge), so the replies
//! must leave by it. In ingress mode they do whatever the routes: they go
//! to a node's ingress address, on the ingress subnet. In host mode they go
//! to the client itself, an address outside every overlay, so they follow
//! the default route; through another network they would leave unrewritten
//! and the client would never see them. Hence the ingress network is the
//! default route of every task on it, as Swarm's tasks have
//! `docker_gwbridge`, the network their host-mode ports arrive by.
//!
//! Two other ways were weighed. Rules by source address (`from <ingress
//! address> lookup …`) would leave the default route where it was, but a
//! UDP server on `0.0.0.0` replies with `sendto`, and the kernel picks that
//! reply's source address from the default route (another network's
//! address), so no rule on the source matches it. Catching the stray
//! replies in eBPF on the task's other veths would work for those, but
//! with strict reverse-path filtering in the container (`rp_filter=1`, the
//! default of some distributions) the client's packets never reach the
//! task: they arrive on the ingress interface while the route back to the
//! client leaves by another one.
//!
//! What the task does on its own is unchanged in effect: its connections
//! to the outside are masqueraded by the node from ingress as from any
//! other network; the subnets of its other networks stay on-link (service
//! VIPs, tasks, and the DNS server at the gateway of its first network with
//! names). A task not on ingress takes the first network with egress;
//! internal networks give no route.

use std::net::Ipv4Addr;

/// What the default-route choice needs to know of one of a task's networks.
#[derive(Debug, Clone, Copy)]
pub struct RouteCandidate {
    pub ingress: bool,
    pub internal: bool,
    pub gateway: Option<Ipv4Addr>,
}

/// The gateway of the task's default route: ingress's if the task is on
/// it, else the first network (in the task's order) with egress; none if
/// every network is internal.
pub fn default_gateway(networks: &[RouteCandidate]) -> Option<Ipv4Addr> {
    let with_egress = || {
        networks
            .iter()
            .filter(|n| !n.internal)
            .filter_map(|n| Some((n.ingress, n.gateway?)))
    };
    with_egress()
        .find(|(ingress, _)| *ingress)
        .or_else(|| with_egress().next())
        .map(|(_, gateway)| gateway)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(ingress: bool, internal: bool, gateway: &str) -> RouteCandidate {
        RouteCandidate {
            ingress,
            internal,
            gateway: gateway.parse().ok(),
        }
    }

    #[test]
    fn a_task_on_ingress_leaves_by_ingress_whatever_else_it_is_on() {
        let ingress = net(true, false, "10.0.0.1");
        let stack = net(false, false, "10.0.1.1");
        let back = net(false, false, "10.0.2.1");
        let want = Some("10.0.0.1".parse().unwrap());
        assert_eq!(default_gateway(&[ingress, stack, back]), want);
        // Whatever the order the networks come in.
        assert_eq!(default_gateway(&[stack, back, ingress]), want);
        assert_eq!(default_gateway(&[ingress]), want);
        // An internal network beside ingress changes nothing.
        assert_eq!(
            default_gateway(&[net(false, true, "10.0.3.1"), ingress]),
            want
        );
    }

    #[test]
    fn a_task_off_ingress_leaves_by_its_first_network_with_egress() {
        let sealed = net(false, true, "10.0.3.1");
        let app = net(false, false, "10.0.1.1");
        let other = net(false, false, "10.0.2.1");
        assert_eq!(
            default_gateway(&[sealed, app, other]),
            Some("10.0.1.1".parse().unwrap())
        );
        assert_eq!(default_gateway(&[sealed]), None);
        assert_eq!(default_gateway(&[]), None);
        // A network whose gateway cannot be read is skipped.
        assert_eq!(
            default_gateway(&[net(false, false, "not an address"), other]),
            Some("10.0.2.1".parse().unwrap())
        );
    }
}
